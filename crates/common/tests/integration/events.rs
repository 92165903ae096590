//! Events through a real nats-server with JetStream: outages, restarts, redeliveries.

use std::sync::Arc;

use async_nats::jetstream;
use k8shell_common::events::types::AuthFailure;
use k8shell_common::events::{
    AUDIT, DeliveryConfig, DurableConsumer, Event, EventPublisher, NatsConfig, Outbox,
    OutboxConfig, connect, ensure_stream, run_delivery,
};
use k8shell_testkit::Nats;
use tokio_util::sync::CancellationToken;

fn failure(n: usize) -> Event<AuthFailure> {
    Event::new(AuthFailure {
        ip: "198.51.100.9".parse().unwrap(),
        port: 40000,
        user: format!("user{n}"),
        method: "publickey".into(),
        reason: "unknown key".into(),
    })
}

async fn jetstream(nats: &Nats) -> jetstream::Context {
    let client = connect(
        &NatsConfig {
            url: nats.url(),
            token_file: None,
        },
        "k8shell-test",
    )
    .await
    .unwrap();
    jetstream::new(client)
}

struct Delivery {
    publisher: EventPublisher,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start_delivery(dir: &std::path::Path, js: &jetstream::Context) -> Delivery {
    let mut config = OutboxConfig::new(dir);
    config.fsync = false;
    let outbox = Arc::new(Outbox::open(config).unwrap());
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_delivery(
        Arc::clone(&outbox),
        js.clone(),
        DeliveryConfig::default(),
        stop.clone(),
    ));
    Delivery {
        publisher: EventPublisher::new(outbox),
        stop,
        task: tokio::spawn(async move {
            task.await.unwrap().unwrap();
        }),
    }
}

async fn stream_messages(js: &jetstream::Context) -> u64 {
    let mut stream = js.get_stream(AUDIT.name).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test]
async fn publish_and_durable_consume_survive_a_nats_restart() {
    let mut nats = Nats::start().unwrap();
    let js = jetstream(&nats).await;
    ensure_stream(&js, &AUDIT).await.unwrap();
    let outbox_dir = tempfile::tempdir().unwrap();
    let delivery = start_delivery(outbox_dir.path(), &js);
    let events: Vec<_> = (0..6).map(failure).collect();

    for event in &events[..3] {
        delivery.publisher.publish(event).await.unwrap();
    }
    let mut consumer =
        DurableConsumer::<AuthFailure>::open(&js, &AUDIT, "shield", "k8shell.auth.failure")
            .await
            .unwrap();
    let first = consumer.next().await.unwrap();
    assert_eq!(first.event, events[0]);
    first.ack().await.unwrap();

    nats.stop();
    nats.start_again().unwrap();

    for event in &events[3..5] {
        delivery.publisher.publish(event).await.unwrap();
    }
    for expected in &events[1..5] {
        let got = consumer.next().await.unwrap();
        assert_eq!(&got.event, expected, "in publish order, across the restart");
        got.ack().await.unwrap();
    }

    // A consumer process that restarts resumes after its last acknowledgement.
    drop(consumer);
    delivery.publisher.publish(&events[5]).await.unwrap();
    let mut resumed =
        DurableConsumer::<AuthFailure>::open(&js, &AUDIT, "shield", "k8shell.auth.failure")
            .await
            .unwrap();
    let got = resumed.next().await.unwrap();
    assert_eq!(got.event, events[5]);
    got.ack().await.unwrap();
    assert_eq!(stream_messages(&js).await, 6);
    delivery.stop.cancel();
    delivery.task.await.unwrap();
}

#[tokio::test]
async fn the_outbox_delivers_events_published_while_nats_was_down_in_order_and_once() {
    let mut nats = Nats::start().unwrap();
    let js = jetstream(&nats).await;
    ensure_stream(&js, &AUDIT).await.unwrap();
    nats.stop();

    let outbox_dir = tempfile::tempdir().unwrap();
    let events: Vec<_> = (0..100).map(failure).collect();

    // The first half is accepted by a process that then goes away before NATS returns.
    let first = start_delivery(outbox_dir.path(), &js);
    for event in &events[..50] {
        first.publisher.publish(event).await.unwrap();
    }
    assert!(first.publisher.outbox().pending_bytes() > 0);
    first.stop.cancel();
    first.task.await.unwrap();
    drop(first.publisher);

    // Its successor accepts the second half, still without NATS.
    let second = start_delivery(outbox_dir.path(), &js);
    for event in &events[50..] {
        second.publisher.publish(event).await.unwrap();
    }

    nats.start_again().unwrap();

    let mut consumer =
        DurableConsumer::<AuthFailure>::open(&js, &AUDIT, "audit-log", "k8shell.auth.>")
            .await
            .unwrap();
    for expected in &events {
        let got = consumer.next().await.unwrap();
        assert_eq!(
            &got.event, expected,
            "events arrive in the order they were accepted"
        );
        got.ack().await.unwrap();
    }
    // Retries while NATS was away sent some events more than once: JetStream kept one copy each.
    assert_eq!(stream_messages(&js).await, 100);
    second.stop.cancel();
    second.task.await.unwrap();
}

#[tokio::test]
async fn a_consumer_drops_a_second_copy_of_an_event() {
    let nats = Nats::start().unwrap();
    let js = jetstream(&nats).await;
    ensure_stream(&js, &AUDIT).await.unwrap();
    let duplicate = failure(1);
    let other = failure(2);
    // Published without message ids, as a producer outside the duplicate window would.
    for event in [&duplicate, &duplicate, &other] {
        let payload = serde_json::to_vec(event).unwrap();
        js.publish(event.subject(), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut consumer =
        DurableConsumer::<AuthFailure>::open(&js, &AUDIT, "dedupe", "k8shell.auth.failure")
            .await
            .unwrap();
    let a = consumer.next().await.unwrap();
    assert_eq!(a.event, duplicate);
    a.ack().await.unwrap();
    let b = consumer.next().await.unwrap();
    assert_eq!(
        b.event, other,
        "the second copy of the first event is skipped"
    );
    b.ack().await.unwrap();
}

/// An upgrade: the AUDIT stream was made by a version that stored fewer subjects (and an operator
/// added one). The new version's events must be stored too, and nothing the old one had is lost.
#[tokio::test]
async fn a_stream_made_by_an_earlier_version_gains_the_new_subjects() {
    let nats = Nats::start().unwrap();
    let js = jetstream(&nats).await;
    let old = ["k8shell.auth.>", "k8shell.session.>", "k8shell.ops.extra"];
    js.create_stream(jetstream::stream::Config {
        name: AUDIT.name.to_owned(),
        subjects: old.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let acked = |subject: &'static str| {
        let js = js.clone();
        async move {
            match js.publish(subject, "{}".into()).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        }
    };
    assert!(
        !acked("k8shell.workspace.running").await,
        "the old stream should not store workspace events"
    );

    let mut stream = ensure_stream(&js, &AUDIT).await.unwrap();
    let mut subjects = stream.info().await.unwrap().config.subjects.clone();
    subjects.sort();
    let mut expected: Vec<String> = old
        .iter()
        .chain(&["k8shell.audit.>", "k8shell.shield.>", "k8shell.workspace.>"])
        .map(|s| (*s).to_owned())
        .collect();
    expected.sort();
    // k8shell.session.opened and the like are already under k8shell.session.> (NATS refuses
    // overlapping subjects, so they are not added again).
    assert_eq!(subjects, expected);
    assert!(acked("k8shell.workspace.running").await);
    assert!(acked("k8shell.ops.extra").await);
    assert_eq!(stream_messages(&js).await, 2);

    // Once up to date, the stream is left as it is.
    let mut again = ensure_stream(&js, &AUDIT).await.unwrap();
    assert_eq!(
        again.info().await.unwrap().config.subjects.len(),
        expected.len()
    );
}

/// An operator's stream already holds one of the new subjects: NATS refuses to give it to AUDIT
/// too. The other new subjects are still added, and the service starts on the stream.
#[tokio::test]
async fn a_subject_held_by_another_stream_does_not_keep_the_others_out() {
    let nats = Nats::start().unwrap();
    let js = jetstream(&nats).await;
    for (name, subject) in [(AUDIT.name, "k8shell.auth.>"), ("OPS", "k8shell.shield.>")] {
        js.create_stream(jetstream::stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut stream = ensure_stream(&js, &AUDIT).await.unwrap();
    let subjects = stream.info().await.unwrap().config.subjects.clone();
    assert!(
        !subjects.contains(&"k8shell.shield.>".to_owned()),
        "{subjects:?}"
    );
    for wanted in AUDIT
        .subjects
        .iter()
        .filter(|s| !s.starts_with("k8shell.shield."))
    {
        assert!(
            subjects.contains(&(*wanted).to_owned()),
            "{wanted} missing from {subjects:?}"
        );
    }
    for subject in ["k8shell.auth.failure", "k8shell.workspace.running"] {
        js.publish(subject, "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(stream_messages(&js).await, 2);
}
