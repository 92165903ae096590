//! Signals drive one shutdown token; a second signal or the drain deadline forces the exit.

use std::time::Duration;

use k8shell_common::shutdown::{ForcedBy, Shutdown};
use tokio::sync::mpsc;

fn kill(signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(std::process::id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn first_signal_drains_second_signal_forces() {
    let shutdown = Shutdown::new();
    let (forced_tx, mut forced) = mpsc::unbounded_channel();
    shutdown
        .listen_for_signals_with(Duration::from_secs(3600), move |by| {
            forced_tx.send(by).unwrap();
        })
        .unwrap();
    let token = shutdown.token();
    assert!(!token.is_cancelled());

    kill("TERM");
    token.cancelled().await;
    assert!(shutdown.is_triggered());
    assert!(forced.try_recv().is_err(), "one signal only drains");

    kill("INT");
    assert_eq!(forced.recv().await, Some(ForcedBy::SecondSignal));
}

#[tokio::test(start_paused = true)]
async fn a_drain_that_overruns_its_deadline_is_forced() {
    let shutdown = Shutdown::new();
    let (forced_tx, mut forced) = mpsc::unbounded_channel();
    shutdown
        .listen_for_signals_with(Duration::from_secs(30), move |by| {
            forced_tx.send(by).unwrap();
        })
        .unwrap();
    let started = tokio::time::Instant::now();
    shutdown.trigger();
    assert_eq!(forced.recv().await, Some(ForcedBy::DrainDeadline));
    assert!(started.elapsed() >= Duration::from_secs(30));
}
