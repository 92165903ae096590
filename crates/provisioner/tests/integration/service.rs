//! The provisioner service as its callers use it, over mTLS gRPC (see `platform` for what runs).

use std::time::Duration;

use k8shell_common::events::Event;
use k8shell_common::events::types::SessionOpened;
use k8shell_proto::provisioner::v1 as pb;
use k8shell_proto::types::v1::Id;
use k8shell_provisioner::clock::Clock as _;
use tokio_stream::StreamExt as _;
use uuid::Uuid;

use crate::platform::{
    Platform, Process, alice, by_id, config_file, create, endpoint, ensure_running, get, id_of,
    wait_state,
};
use crate::support::exec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_lives_from_create_to_delete_is_adopted_after_a_restart_and_every_transition_is_published()
 {
    let mut platform = Platform::start().await;
    platform.start_provisioner().await;
    let nats = async_nats::connect(platform.nats.url()).await.unwrap();
    let mut published = nats.subscribe("k8shell.workspace.>").await.unwrap();
    let mut client = platform.client();
    let created = client
        .create(create("tiny", platform.base.blueprint(""), false))
        .await
        .unwrap()
        .into_inner();
    let id = id_of(&created);
    assert_eq!(created.blueprint, "busybox");
    assert!(
        created.image.contains("/workspaces/busybox:bp-"),
        "{}",
        created.image
    );
    // Started for its first connection: EnsureRunning answers once k8shelld does.
    let running = ensure_running(&mut client, &id).await;
    let (endpoint, uuid) = endpoint(&running);
    let channel = platform.base.ready(&endpoint, uuid).await;
    let token = platform.base.token(uuid);
    assert_eq!(
        exec(&channel, &token, "id -un; hostname").await,
        ("dev\ntiny\n".to_owned(), 0)
    );
    assert_eq!(exec(&channel, &token, "echo kept > ~/kept.txt").await.1, 0);

    // A provisioner restart adopts the running workspace: same init process, no new start.
    let init = platform.init_pid(uuid);
    platform.stop_provisioner().await;
    platform.start_provisioner().await;
    let mut client = platform.client();
    let adopted = ensure_running(&mut client, &id).await;
    assert!(!adopted.started);
    assert_eq!(platform.init_pid(uuid), init);
    let mut watch = client
        .watch(pb::WatchRequest {
            owner: "alice".to_owned(),
            id: None,
        })
        .await
        .unwrap()
        .into_inner();

    client
        .stop(pb::WorkspaceRequest {
            workspace: by_id(&id),
        })
        .await
        .unwrap();
    let stopped = wait_state(&mut watch, &id, pb::State::Stopped).await;
    assert_eq!(stopped.reason, "stop requested");
    assert_eq!(stopped.endpoint, "", "a stopped workspace has no endpoint");
    assert_eq!(platform.containers(), Vec::<String>::new());

    // A connection to a stopped workspace starts it, by owner and name; the home is kept.
    let again = client
        .ensure_running(pb::EnsureRunningRequest {
            workspace: Some(pb::Selector {
                by: Some(pb::selector::By::Name(pb::OwnerAndName {
                    owner: "alice".to_owned(),
                    name: "tiny".to_owned(),
                })),
            }),
            requester: alice(),
            deadline: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.started);
    let channel = platform.base.ready(&endpoint, uuid).await;
    assert_eq!(
        exec(&channel, &token, "cat ~/kept.txt").await,
        ("kept\n".to_owned(), 0)
    );

    client
        .delete(pb::WorkspaceRequest {
            workspace: by_id(&id),
        })
        .await
        .unwrap();
    wait_state(&mut watch, &id, pb::State::Deleted).await;
    assert!(
        !platform
            .state_dir()
            .join("workspaces")
            .join(uuid.to_string())
            .exists()
    );
    assert_eq!(platform.containers(), Vec::<String>::new());
    let listed = client
        .list(pb::ListRequest {
            owner: "alice".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.workspaces.is_empty(), "{listed:?}");

    // Every transition went to NATS, in order.
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("deleted") {
        let message = published.next().await.unwrap();
        let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(event["workspace"], id.as_str());
        assert_eq!(event["owner"], "alice");
        let subject = message.subject.to_string();
        let state = subject.strip_prefix("k8shell.workspace.").unwrap();
        assert_eq!(event["state"], state);
        states.push(state.to_owned());
    }
    assert_eq!(
        states,
        [
            "created", "starting", "running", "stopping", "stopped", "starting", "running",
            "deleting", "deleted"
        ]
    );
    platform.stop_provisioner().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_what_to_fix_and_leave_nothing() {
    let mut platform = Platform::start().await;
    platform.start_provisioner().await;
    let mut client = platform.client();
    let blueprint = platform.base.blueprint("");

    let refused = client
        .create(create("Not_A_Host", blueprint.clone(), true))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("lowercase letters"),
        "{refused:?}"
    );

    let refused = client
        .create(create(
            "broken",
            "{ name = \"x\", base = 42 }".to_owned(),
            true,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("broken.ncl"), "{refused:?}");
    assert!(refused.message().contains("base"), "{refused:?}");

    // The shipped policy gives a user three workspaces.
    for name in ["one", "two", "three"] {
        client
            .create(create(name, blueprint.clone(), true))
            .await
            .unwrap();
    }
    let taken = client
        .create(create("one", blueprint.clone(), true))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists);
    let over = client
        .create(create("four", blueprint.clone(), true))
        .await
        .unwrap_err();
    assert_eq!(over.code(), tonic::Code::PermissionDenied);
    assert!(over.message().contains("the limit is 3"), "{over:?}");
    // Too big for the policy's ceiling.
    client
        .delete(pb::WorkspaceRequest {
            workspace: Some(pb::Selector {
                by: Some(pb::selector::By::Name(pb::OwnerAndName {
                    owner: "alice".to_owned(),
                    name: "three".to_owned(),
                })),
            }),
        })
        .await
        .unwrap();
    let huge = client
        .create(create(
            "huge",
            platform
                .base
                .blueprint("resources.memory | force = \"64Gi\""),
            true,
        ))
        .await
        .unwrap_err();
    assert_eq!(huge.code(), tonic::Code::PermissionDenied);
    assert!(huge.message().contains("memory_bytes"), "{huge:?}");

    // An image that cannot be had: failed, naming it, and nothing of the workspace on disk.
    let missing = format!(
        "{}/k8shell/no-such-image:latest",
        platform.base.registry.host()
    );
    let ghost = client
        .create(create(
            "ghost",
            platform.base.blueprint_on(&missing, ""),
            false,
        ))
        .await
        .unwrap()
        .into_inner();
    let failed = client
        .ensure_running(pb::EnsureRunningRequest {
            workspace: by_id(&id_of(&ghost)),
            requester: alice(),
            deadline: None,
        })
        .await
        .unwrap_err();
    assert_eq!(failed.code(), tonic::Code::FailedPrecondition);
    assert!(
        failed.message().contains("k8shell/no-such-image"),
        "{failed:?}"
    );
    let ghost = get(&mut client, &id_of(&ghost)).await;
    assert_eq!(ghost.state(), pb::State::Failed);
    assert!(
        ghost.reason.contains("k8shell/no-such-image"),
        "{}",
        ghost.reason
    );
    assert!(
        !platform
            .state_dir()
            .join("workspaces")
            .join(id_of(&ghost))
            .exists()
    );
    assert_eq!(platform.containers(), Vec::<String>::new());
    platform.stop_provisioner().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_workspace_is_stopped_and_activity_keeps_it_running() {
    let mut platform = Platform::start().await;
    platform.start_provisioner().await;
    let mut client = platform.client();
    let created = client
        .create(create(
            "sleepy",
            platform.base.blueprint("idle_timeout | force = \"5m\""),
            false,
        ))
        .await
        .unwrap()
        .into_inner();
    let id = id_of(&created);
    assert_eq!(created.idle_timeout_seconds, 300);
    ensure_running(&mut client, &id).await;
    let mut watch = client
        .watch(pb::WatchRequest {
            owner: String::new(),
            id: Some(Id { value: id.clone() }),
        })
        .await
        .unwrap()
        .into_inner();
    let clock = platform.clock.clone();

    // Minute 4: the proxy reports typing.
    clock.advance(Duration::from_secs(4 * 60));
    client
        .touch(pb::TouchRequest {
            workspace: by_id(&id),
            at: None,
        })
        .await
        .unwrap();
    // Minute 8: a session opens (the session service's event on NATS).
    clock.advance(Duration::from_secs(4 * 60));
    let nats = async_nats::connect(platform.nats.url()).await.unwrap();
    let mut opened = Event::new(SessionOpened {
        session_id: Uuid::now_v7(),
        user: "alice".to_owned(),
        workspace: Uuid::parse_str(&id).unwrap(),
        kind: k8shell_common::events::types::SessionKind::Ssh,
        client_ip: "192.0.2.7".parse().unwrap(),
    });
    // At the store's precision (microseconds), so that it can be compared below.
    let now = clock.now();
    opened.at = now
        .replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap();
    nats.publish(
        opened.subject(),
        serde_json::to_vec(&opened).unwrap().into(),
    )
    .await
    .unwrap();
    nats.flush().await.unwrap();
    let touched_at = k8shell_proto::types::v1::timestamp(opened.at);
    k8shell_testkit::poll_until("the session to count as activity", || {
        let mut client = client.clone();
        let (id, touched_at) = (id.clone(), touched_at);
        async move {
            let ws = get(&mut client, &id).await;
            (ws.last_activity_at == Some(touched_at)).then_some(())
        }
    })
    .await;
    // Minute 12: idle for 4 minutes only; reconciler passes look at that time.
    clock.advance(Duration::from_secs(4 * 60));
    let seen = clock.reads();
    k8shell_testkit::poll_until("two reconciler passes at minute 12", || {
        let passes = clock.reads().saturating_sub(seen);
        async move { (passes >= 3).then_some(()) }
    })
    .await;
    let still = get(&mut client, &id).await;
    assert_eq!(still.state(), pb::State::Running, "{}", still.reason);
    // Minute 14: six minutes without activity.
    clock.advance(Duration::from_secs(2 * 60));
    let stopped = wait_state(&mut watch, &id, pb::State::Stopped).await;
    assert_eq!(
        stopped.reason,
        "stopped after 5m without activity (the blueprint's idle_timeout)"
    );
    assert_eq!(stopped.desired(), pb::DesiredState::Stopped);
    assert_eq!(platform.containers(), Vec::<String>::new());
    // The next connection brings it back.
    assert!(ensure_running(&mut client, &id).await.started);
    client
        .delete(pb::WorkspaceRequest {
            workspace: by_id(&id),
        })
        .await
        .unwrap();
    wait_state(&mut watch, &id, pb::State::Deleted).await;
    platform.stop_provisioner().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioner_killed_in_the_middle_of_a_start_converges_after_its_restart() {
    let platform = Platform::start().await;
    let file = config_file(&platform);
    let first = Process::start(&file);
    platform.wait_answering().await;
    let mut client = platform.client();
    let created = client
        .create(create("phoenix", platform.base.blueprint(""), false))
        .await
        .unwrap()
        .into_inner();
    let id = id_of(&created);
    let uuid = Uuid::parse_str(&id).unwrap();
    // Killed once runc has the container: the store still says `starting`.
    let container = format!("k8shell-{}", uuid.simple());
    let runc_state = platform.state_dir().join("runc").join(&container);
    k8shell_testkit::poll_until("runc to have the container", || {
        let exists = runc_state.exists();
        async move { exists.then_some(()) }
    })
    .await;
    first.kill();
    let mid = client
        .get(pb::WorkspaceRequest {
            workspace: by_id(&id),
        })
        .await;
    assert!(mid.is_err(), "the provisioner is down");

    let _second = Process::start(&file);
    platform.wait_answering().await;
    let running = ensure_running(&mut client, &id).await;
    let (endpoint, _) = endpoint(&running);
    let channel = platform.base.ready(&endpoint, uuid).await;
    assert_eq!(
        exec(&channel, &platform.base.token(uuid), "hostname").await,
        ("phoenix\n".to_owned(), 0)
    );
    // One container, one workspace, and a history that started once and ran once.
    assert_eq!(platform.containers(), vec![container]);
    let listed = client
        .list(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.workspaces.len(), 1);
    let pool = sqlx::PgPool::connect(&platform.config.database.url)
        .await
        .unwrap();
    let history: Vec<(String, String)> = sqlx::query_as(
        "SELECT from_state, to_state FROM provisioner.transitions WHERE workspace_id = $1 ORDER BY id",
    )
    .bind(uuid)
    .fetch_all(&pool)
    .await
    .unwrap();
    let history: Vec<(&str, &str)> = history
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        history,
        [
            ("", "pending"),
            ("pending", "starting"),
            ("starting", "running")
        ]
    );
    // Cleaned up through the service, as a user would.
    client
        .delete(pb::WorkspaceRequest {
            workspace: by_id(&id),
        })
        .await
        .unwrap();
    k8shell_testkit::poll_until("the workspace to be deleted", || {
        let containers = platform.containers();
        async move { containers.is_empty().then_some(()) }
    })
    .await;
}
