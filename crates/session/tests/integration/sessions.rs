//! Sessions and their timelines: open, list, filter, page, close, terminate, lose, expire.

use std::time::Duration;

use k8shell_common::events::types::{SessionClosed, SessionPurged, SessionTerminated};
use k8shell_common::events::{AUDIT, DurableConsumer, EventBody};
use k8shell_proto::session::v1 as pb;
use k8shell_proto::types::v1::{PageRequest, timestamp};
use k8shell_session::RecordingKind;
use k8shell_session::asciicast::Header;
use serde_json::json;
use uuid::Uuid;

use crate::harness::{Harness, new_session};

fn id_of(session: &pb::Session) -> Uuid {
    Uuid::try_from(session.id.clone().unwrap()).unwrap()
}

async fn list(harness: &Harness, request: pb::ListRequest) -> pb::ListResponse {
    harness
        .grpc_as("api")
        .list(request)
        .await
        .unwrap()
        .into_inner()
}

/// Waits for the audit event of type `T` that `matches`.
async fn audit_event<T: EventBody + Clone>(
    harness: &Harness,
    subject: &str,
    matches: impl Fn(&T) -> bool,
) -> T {
    let js = async_nats::jetstream::new(harness.nats_client().await);
    let name = format!("test-{}", Uuid::now_v7().simple());
    let mut consumer = DurableConsumer::<T>::open(&js, &AUDIT, &name, subject)
        .await
        .unwrap();
    loop {
        let delivery = consumer.next().await.unwrap();
        let body = delivery.event.body.clone();
        delivery.ack().await.unwrap();
        if matches(&body) {
            return body;
        }
    }
}

#[tokio::test]
async fn sessions_are_listed_filtered_paged_and_closed_once() {
    let harness = Harness::start().await;
    let spool = harness.spool("spool");
    let client = harness.proxy_client(&spool).await;
    let alice_1 = client.open(new_session("alice", "one")).await.unwrap();
    let alice_2 = client.open(new_session("alice", "two")).await.unwrap();
    let bob = client.open(new_session("bob", "one")).await.unwrap();

    let all = list(
        &harness,
        pb::ListRequest {
            live: Some(true),
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<Uuid> = all.sessions.iter().map(id_of).collect();
    assert_eq!(ids, [bob.id(), alice_2.id(), alice_1.id()], "newest first");
    let first = &all.sessions[2];
    assert_eq!(
        first.client_addr, "192.0.2.10:50022",
        "IPv4-mapped addresses are stored as IPv4"
    );
    assert_eq!(first.client_version, "SSH-2.0-OpenSSH_9.2p1");
    assert_eq!(first.holder, "ssh-proxy");
    assert_eq!(first.workspace.as_ref().unwrap().name, "one");

    let alices = list(
        &harness,
        pb::ListRequest {
            username: "alice".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(alices.sessions.len(), 2);
    let workspace = alices.sessions[0].workspace.clone().unwrap().id;
    let by_workspace = list(
        &harness,
        pb::ListRequest {
            workspace_id: workspace,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        by_workspace.sessions.iter().map(id_of).collect::<Vec<_>>(),
        [alice_2.id()]
    );
    let future = list(
        &harness,
        pb::ListRequest {
            started_after: Some(timestamp(
                k8shell_common::clock::now() + Duration::from_secs(3600),
            )),
            ..Default::default()
        },
    )
    .await;
    assert!(future.sessions.is_empty());

    let page = |cursor: String| pb::ListRequest {
        page: Some(PageRequest { limit: 2, cursor }),
        ..Default::default()
    };
    let one = list(&harness, page(String::new())).await;
    assert_eq!(one.sessions.len(), 2);
    let cursor = one.page.unwrap().next_cursor;
    assert!(!cursor.is_empty());
    let two = list(&harness, page(cursor)).await;
    assert_eq!(
        two.sessions.iter().map(id_of).collect::<Vec<_>>(),
        [alice_1.id()]
    );
    assert!(
        two.page.unwrap().next_cursor.is_empty(),
        "the last page says so"
    );
    let bad = harness
        .grpc_as("api")
        .list(page("nonsense".into()))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let bob_id = bob.id();
    bob.add_bytes_in(10);
    bob.add_bytes_out(2048);
    bob.close("client disconnected").unwrap().flushed().await;
    let closed = harness.get(bob_id).await.session.unwrap();
    assert_eq!(closed.end_reason, "client disconnected");
    assert!(closed.ended_at.is_some());
    assert_eq!((closed.bytes_in, closed.bytes_out), (10, 2048));
    // A second close (a retry) keeps the first reason.
    let again = harness
        .grpc_as("ssh-proxy")
        .close(pb::CloseRequest {
            id: Some(bob_id.into()),
            reason: "other".into(),
            bytes_in: 0,
            bytes_out: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.end_reason, "client disconnected");
    let ended = list(
        &harness,
        pb::ListRequest {
            live: Some(false),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        ended.sessions.iter().map(id_of).collect::<Vec<_>>(),
        [bob_id]
    );
    assert!(
        !spool.join(bob_id.to_string()).exists(),
        "the spool is emptied once uploaded"
    );

    let event = audit_event::<SessionClosed>(&harness, "k8shell.session.closed", |e| {
        e.session_id == bob_id
    })
    .await;
    assert_eq!(event.bytes_out, 2048);
    drop((alice_1, alice_2));
}

#[tokio::test]
async fn the_timeline_keeps_each_event_once_in_order() {
    let harness = Harness::start().await;
    let client = harness.proxy_client(&harness.spool("spool")).await;
    let session = client.open(new_session("carol", "dev")).await.unwrap();
    let id = session.id();
    session
        .event("channel_open", 1, json!({"type": "session"}))
        .unwrap();
    session
        .event("exec", 1, json!({"command": "cargo test"}))
        .unwrap();
    session
        .event("forward", 2, json!({"target": "localhost:5432"}))
        .unwrap();
    session
        .event(
            "sftp",
            3,
            json!({"op": "write", "path": "/home/carol/notes.txt", "bytes": 4096}),
        )
        .unwrap();
    session
        .event(
            "decision",
            0,
            json!({"decision_id": "0190f1a2-7b3c-7def-8123-456789abcdef"}),
        )
        .unwrap();
    session.close("done").unwrap().flushed().await;
    let got = harness.get(id).await;
    let kinds: Vec<&str> = got.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["channel_open", "exec", "forward", "sftp", "decision"]
    );
    let sftp: serde_json::Value = serde_json::from_str(&got.timeline[3].data_json).unwrap();
    assert_eq!(
        sftp,
        json!({"op": "write", "path": "/home/carol/notes.txt", "bytes": 4096})
    );
    assert_eq!(got.timeline[3].channel, 3);

    // A holder that resends after a lost answer does not duplicate anything.
    let resent = pb::AddEventsRequest {
        session_id: Some(id.into()),
        events: got.timeline.clone(),
    };
    let stored = harness
        .grpc_as("ssh-proxy")
        .add_events(tokio_stream::iter([resent]))
        .await
        .unwrap()
        .into_inner()
        .stored;
    assert_eq!(stored, 0);
    assert_eq!(harness.get(id).await.timeline.len(), 5);
}

#[tokio::test]
async fn only_the_holder_changes_a_session_and_bad_input_says_why() {
    let harness = Harness::start().await;
    let client = harness.proxy_client(&harness.spool("spool")).await;
    let session = client.open(new_session("dave", "dev")).await.unwrap();
    let refused = harness
        .grpc_as("api")
        .close(pb::CloseRequest {
            id: Some(session.id().into()),
            reason: "x".into(),
            bytes_in: 0,
            bytes_out: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("ssh-proxy"),
        "{}",
        refused.message()
    );

    let stranger = harness
        .grpc_as("identity")
        .list(pb::ListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), tonic::Code::PermissionDenied);

    let mut bad = new_session("dave", "dev");
    bad.username = " ".into();
    let error = client.open(bad).await.unwrap_err();
    assert!(error.to_string().contains("user.username"), "{error}");
    let raw = harness
        .grpc_as("ssh-proxy")
        .open(pb::OpenRequest {
            client_addr: "somewhere".into(),
            ..open_request()
        })
        .await
        .unwrap_err();
    assert_eq!(raw.code(), tonic::Code::InvalidArgument);
    assert!(raw.message().contains("client_addr"), "{}", raw.message());
    let bad_event = session.event("Not A Kind", 0, json!({})).unwrap_err();
    assert!(bad_event.to_string().contains("lowercase"), "{bad_event}");
    let not_object = session.event("exec", 0, json!("ls")).unwrap_err();
    assert!(
        not_object.to_string().contains("JSON object"),
        "{not_object}"
    );
    session.close("done").unwrap().flushed().await;
}

fn open_request() -> pb::OpenRequest {
    pb::OpenRequest {
        id: Some(Uuid::now_v7().into()),
        user: Some(k8shell_proto::types::v1::UserRef {
            id: Some(Uuid::now_v7().into()),
            username: "erin".into(),
        }),
        workspace: Some(k8shell_proto::types::v1::WorkspaceRef {
            id: Some(Uuid::now_v7().into()),
            owner: "erin".into(),
            name: "dev".into(),
        }),
        kind: pb::SessionKind::Ssh as i32,
        client_addr: "[2001:db8::7]:4242".into(),
        client_version: "SSH-2.0-PuTTY".into(),
        admin_access: false,
    }
}

#[tokio::test]
async fn terminate_reaches_the_holder_and_is_audited() {
    let harness = Harness::start().await;
    let client = harness.proxy_client(&harness.spool("spool")).await;
    let session = client.open(new_session("frank", "dev")).await.unwrap();
    let id = session.id();
    let answer = harness
        .grpc_as("api")
        .terminate(pb::TerminateRequest {
            id: Some(id.into()),
            reason: "policy violation".into(),
            requested_by: "admin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.delivered);
    let notice = session.terminated().await;
    assert_eq!(
        (notice.reason.as_str(), notice.requested_by.as_str()),
        ("policy violation", "admin")
    );
    session
        .close(&format!("terminated: {}", notice.reason))
        .unwrap()
        .flushed()
        .await;
    let got = harness.get(id).await;
    assert_eq!(
        got.session.unwrap().end_reason,
        "terminated: policy violation"
    );
    assert!(
        got.timeline
            .iter()
            .any(|e| e.kind == "terminate" && e.data_json.contains("\"delivered\":true"))
    );
    let event = audit_event::<SessionTerminated>(&harness, "k8shell.session.terminated", |e| {
        e.session_id == id
    })
    .await;
    assert_eq!(event.requested_by, "admin");

    // A session whose proxy is gone: nobody answers, so the service ends it itself.
    let orphan = harness
        .grpc_as("ssh-proxy")
        .open(open_request())
        .await
        .unwrap()
        .into_inner();
    let orphan_id = id_of(&orphan);
    let answer = harness
        .grpc_as("api")
        .terminate(pb::TerminateRequest {
            id: Some(orphan_id.into()),
            reason: "cleanup".into(),
            requested_by: "admin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.delivered);
    let ended = harness.get(orphan_id).await.session.unwrap();
    assert_eq!(ended.end_reason, "terminated by admin: cleanup");
    let twice = harness
        .grpc_as("api")
        .terminate(pb::TerminateRequest {
            id: Some(orphan_id.into()),
            reason: "again".into(),
            requested_by: "admin".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn sessions_of_a_vanished_proxy_are_closed_as_lost() {
    let harness = Harness::start_with(|config| {
        config.lost_after = Duration::from_millis(500);
        config.retention.check_every = Duration::from_millis(100);
    })
    .await;
    let open = harness
        .grpc_as("ssh-proxy")
        .open(open_request())
        .await
        .unwrap()
        .into_inner();
    let id = id_of(&open);
    let ended = k8shell_testkit::poll_until("the session to be closed as lost", || async {
        let session = harness.get(id).await.session.unwrap();
        session.ended_at.is_some().then_some(session)
    })
    .await;
    assert!(ended.end_reason.starts_with("lost"), "{}", ended.end_reason);
    let beat = harness
        .grpc_as("ssh-proxy")
        .heartbeat(pb::HeartbeatRequest {
            id: Some(id.into()),
            bytes_in: 1,
            bytes_out: 1,
            last_activity_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !beat.live,
        "a late heartbeat learns that the session is over"
    );
}

#[tokio::test]
async fn retention_removes_old_sessions_with_their_recordings_and_audits_it() {
    let harness = Harness::start_with(|config| {
        config.retention.max_age = Duration::from_secs(1);
        config.retention.check_every = Duration::from_millis(200);
    })
    .await;
    let client = harness.proxy_client(&harness.spool("spool")).await;
    let old = client.open(new_session("gina", "dev")).await.unwrap();
    let old_id = old.id();
    let mut recording = old
        .record(1, RecordingKind::Pty, &Header::new(80, 24))
        .unwrap();
    recording.output(b"to be forgotten\r\n").unwrap();
    recording.finish().unwrap();
    old.close("done").unwrap().flushed().await;
    let kept = client.open(new_session("gina", "other")).await.unwrap();
    let recordings_dir = harness.config.recordings.dir.join(old_id.to_string());
    assert!(recordings_dir.exists());

    k8shell_testkit::poll_until("the old session to be purged", || async {
        let gone = harness
            .grpc_as("api")
            .get(pb::GetRequest {
                id: Some(old_id.into()),
            })
            .await;
        matches!(gone, Err(status) if status.code() == tonic::Code::NotFound).then_some(())
    })
    .await;
    assert!(
        !recordings_dir.exists(),
        "the recording files are deleted too"
    );
    let event = audit_event::<SessionPurged>(&harness, "k8shell.session.purged", |e| {
        e.session_id == old_id
    })
    .await;
    assert_eq!((event.user.as_str(), event.recordings), ("gina", 1));
    assert!(event.compressed_bytes > 0);
    assert!(
        harness
            .get(kept.id())
            .await
            .session
            .unwrap()
            .ended_at
            .is_none(),
        "live sessions stay"
    );
}

#[tokio::test]
async fn a_spool_belongs_to_one_proxy_at_a_time() {
    let harness = Harness::start().await;
    let spool = harness.spool("shared");
    let first = harness.proxy_client(&spool).await;
    let config = k8shell_session::ClientConfig::new(&spool);
    let second =
        k8shell_session::Client::new(harness.channel_as("ssh-proxy"), None, config.clone());
    let error = second.unwrap_err().to_string();
    assert!(
        error.contains("another process uses this recording spool"),
        "{error}"
    );
    drop(first);
    assert!(k8shell_session::Client::new(harness.channel_as("ssh-proxy"), None, config).is_ok());
}
