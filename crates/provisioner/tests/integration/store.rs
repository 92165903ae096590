//! The provisioner's store on a real PostgreSQL.

use k8shell_common::db::DatabaseConfig;
use k8shell_provisioner::store::{Desired, MIGRATOR, NewWorkspace, Observed, Store, StoreError};
use time::Duration;

async fn store() -> (k8shell_testkit::Postgres, Store) {
    let pg = k8shell_testkit::Postgres::start().unwrap();
    let url = pg.create_database("k8shell").unwrap();
    let pool = k8shell_common::db::connect(&DatabaseConfig::new(url), "provisioner", &MIGRATOR)
        .await
        .unwrap();
    (pg, Store::new(pool))
}

fn new(owner: &str, name: &str, idle: i64) -> NewWorkspace {
    NewWorkspace {
        owner: owner.to_owned(),
        name: name.to_owned(),
        blueprint_source: "{ name = \"x\", base = \"docker.io/library/debian:12\" }".to_owned(),
        spec: serde_json::json!({"name": "x"}),
        image: "registry.test/workspaces/x:bp-1".to_owned(),
        runtime: "local".to_owned(),
        idle_timeout_seconds: idle,
        desired: Desired::Running,
    }
}

#[tokio::test]
async fn names_are_unique_per_owner_until_deleted() {
    let (_pg, store) = store().await;
    let first = store.create(&new("alice", "dev", 1800)).await.unwrap();
    assert_eq!(
        (first.desired, first.observed),
        (Desired::Running, Observed::Pending)
    );
    let taken = store.create(&new("alice", "dev", 1800)).await.unwrap_err();
    assert!(matches!(taken, StoreError::NameTaken { .. }));
    assert!(
        taken
            .to_string()
            .contains("alice already has a workspace named \"dev\""),
        "{taken}"
    );
    store.create(&new("bob", "dev", 1800)).await.unwrap();
    assert_eq!(store.list(Some("alice")).await.unwrap().len(), 1);
    assert_eq!(store.list(None).await.unwrap().len(), 2);

    store.set_desired(first.id, Desired::Deleted).await.unwrap();
    assert!(
        store
            .transition(
                first.id,
                Observed::Pending,
                Observed::Deleting,
                "deleting",
                None
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .transition(
                first.id,
                Observed::Deleting,
                Observed::Deleted,
                "deleted",
                None
            )
            .await
            .unwrap()
    );
    assert!(store.by_name("alice", "dev").await.unwrap().is_none());
    let again = store.create(&new("alice", "dev", 1800)).await.unwrap();
    assert_ne!(again.id, first.id, "a deleted workspace frees its name");
    let history = store.transitions(first.id).await.unwrap();
    let states: Vec<(&str, &str)> = history
        .iter()
        .map(|t| (t.from.as_str(), t.to.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("", "pending"),
            ("pending", "deleting"),
            ("deleting", "deleted")
        ]
    );
}

#[tokio::test]
async fn transitions_move_only_from_the_expected_state() {
    let (_pg, store) = store().await;
    let ws = store.create(&new("carol", "dev", 0)).await.unwrap();
    assert!(
        store
            .transition(
                ws.id,
                Observed::Pending,
                Observed::Starting,
                "pulling the image",
                None
            )
            .await
            .unwrap()
    );
    // A second reconciler (or the same one after a crash) expecting the old state changes nothing.
    assert!(
        !store
            .transition(ws.id, Observed::Pending, Observed::Starting, "again", None)
            .await
            .unwrap()
    );
    assert!(
        store
            .transition(
                ws.id,
                Observed::Starting,
                Observed::Running,
                "k8shelld answers",
                Some("unix:/run/x.sock")
            )
            .await
            .unwrap()
    );
    let running = store.get(ws.id).await.unwrap();
    assert_eq!(
        (
            running.observed,
            running.endpoint.as_str(),
            running.reason.as_str()
        ),
        (Observed::Running, "unix:/run/x.sock", "k8shelld answers")
    );
    assert_eq!(store.transitions(ws.id).await.unwrap().len(), 3);
    assert!(matches!(
        store.get(uuid::Uuid::now_v7()).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn idle_workspaces_and_unsettled_ones_are_found() {
    let (_pg, store) = store().await;
    let idle = store.create(&new("dave", "idle", 60)).await.unwrap();
    let never = store.create(&new("dave", "never", 0)).await.unwrap();
    for ws in [&idle, &never] {
        store
            .transition(ws.id, Observed::Pending, Observed::Starting, "start", None)
            .await
            .unwrap();
    }
    let unsettled: Vec<_> = store
        .unsettled()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(unsettled.len(), 2, "wanted running, still starting");
    for ws in [&idle, &never] {
        store
            .transition(ws.id, Observed::Starting, Observed::Running, "up", None)
            .await
            .unwrap();
    }
    assert!(store.unsettled().await.unwrap().is_empty());

    let now = k8shell_common::clock::now();
    let later = now + Duration::minutes(2);
    let found: Vec<_> = store
        .idle(later)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(
        found,
        [idle.id],
        "only the one with a timeout, once it has passed"
    );
    assert!(store.idle(now).await.unwrap().is_empty());
    store.touch(idle.id, later).await.unwrap();
    assert!(
        store
            .idle(later + Duration::seconds(30))
            .await
            .unwrap()
            .is_empty(),
        "activity resets the clock"
    );
    store.touch(idle.id, now).await.unwrap();
    assert!(
        store
            .idle(later + Duration::seconds(30))
            .await
            .unwrap()
            .is_empty(),
        "an older touch does not move it back"
    );

    store.set_desired(idle.id, Desired::Stopped).await.unwrap();
    let unsettled: Vec<_> = store
        .unsettled()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(unsettled, [idle.id]);
}

#[tokio::test]
async fn a_deletion_cannot_be_taken_back_and_a_failure_waits_for_a_start() {
    let (_pg, store) = store().await;
    let ws = store.create(&new("erin", "dev", 0)).await.unwrap();
    assert_eq!(store.count("erin").await.unwrap(), 1);
    store
        .transition(ws.id, Observed::Pending, Observed::Starting, "start", None)
        .await
        .unwrap();
    store
        .transition(
            ws.id,
            Observed::Starting,
            Observed::Failed,
            "no image",
            None,
        )
        .await
        .unwrap();
    assert!(
        store.unsettled().await.unwrap().is_empty(),
        "a failed workspace is not retried on its own"
    );
    store.set_desired(ws.id, Desired::Deleted).await.unwrap();
    assert_eq!(store.count("erin").await.unwrap(), 0, "no longer counts");
    assert_eq!(store.unsettled().await.unwrap().len(), 1, "but is deleted");
    let row = store.set_desired(ws.id, Desired::Running).await;
    assert!(matches!(row, Err(StoreError::NotFound(_))), "{row:?}");
    assert_eq!(store.get(ws.id).await.unwrap().desired, Desired::Deleted);
}

#[tokio::test]
async fn transitions_wait_for_publishing_in_order_with_a_fixed_event_id() {
    let (_pg, store) = store().await;
    let ws = store.create(&new("frank", "dev", 0)).await.unwrap();
    store
        .transition(ws.id, Observed::Pending, Observed::Starting, "start", None)
        .await
        .unwrap();
    let pending = store.unpublished(10).await.unwrap();
    let states: Vec<&str> = pending.iter().map(|t| t.to_state.as_str()).collect();
    assert_eq!(states, ["pending", "starting"]);
    assert!(
        pending
            .iter()
            .all(|t| t.owner == "frank" && t.workspace_id == ws.id)
    );
    // Read again before it is marked: the same events, so a repeat is a duplicate.
    assert_eq!(store.unpublished(10).await.unwrap(), pending);
    store.mark_published(&[pending[0].id]).await.unwrap();
    let rest = store.unpublished(10).await.unwrap();
    assert_eq!(rest, pending[1..]);
}
