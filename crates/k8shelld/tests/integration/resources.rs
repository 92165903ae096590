//! Resources: bounded memory under a large transfer, no descriptor leaks, sessions ended on stop.

use std::time::Duration;

use k8shell_proto::k8shelld::v1::exec_input;

use crate::harness::{Daemon, Ended, Exec, run, start};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_through_cat_arrives_intact_with_bounded_memory() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut exec = Exec::open(&mut client, start("cat")).await.unwrap();
    const TOTAL: usize = 1 << 30;
    const CHUNK: usize = 64 * 1024;
    let rss_before = rss_bytes();
    let input = exec.input.clone();
    let writer = tokio::spawn(async move {
        let mut hash = crc32fast::Hasher::new();
        let mut block: Vec<u8> = (0..CHUNK).map(|j| (j % 251) as u8).collect();
        for i in 0..TOTAL / CHUNK {
            // Every block differs, so a reordered or repeated block changes the checksum.
            block[..8].copy_from_slice(&(i as u64).to_le_bytes());
            hash.update(&block);
            input
                .send(crate::harness::input(exec_input::Input::Stdin(
                    block.clone(),
                )))
                .await
                .unwrap();
        }
        input
            .send(crate::harness::input(exec_input::Input::StdinEof(
                Default::default(),
            )))
            .await
            .unwrap();
        hash.finalize()
    });
    let mut received = 0usize;
    let mut hash = crc32fast::Hasher::new();
    let mut peak_rss = rss_before;
    let ended = loop {
        let message = exec.output.message().await.unwrap().unwrap();
        match message.output {
            Some(k8shell_proto::k8shelld::v1::exec_output::Output::Stdout(bytes)) => {
                received += bytes.len();
                hash.update(&bytes);
                if received % (64 << 20) < bytes.len() {
                    peak_rss = peak_rss.max(rss_bytes());
                }
            }
            Some(k8shell_proto::k8shelld::v1::exec_output::Output::Exit(status)) => break status,
            other => panic!("unexpected {other:?}"),
        }
    };
    let sent_hash = writer.await.unwrap();
    assert_eq!(received, TOTAL);
    assert_eq!(hash.finalize(), sent_hash, "checksum of what came back");
    assert!(matches!(
        ended.status,
        Some(k8shell_proto::k8shelld::v1::exit_status::Status::Code(0))
    ));
    // Client and server share this process: both together must stay far below the payload.
    let growth = peak_rss.saturating_sub(rss_before);
    assert!(
        growth < 64 << 20,
        "memory grew by {} MiB while moving 1 GiB",
        growth >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_execs_and_forwards_leave_no_descriptors_behind() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    // Warm up the connection and the runtime; the target of the forwards is ours, not theirs.
    run(&mut client, "true").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let before = open_fds();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let (out, _, ended) = run(&mut client, &format!("echo {i}")).await;
            assert_eq!(ended, Ended::Code(0));
            assert_eq!(out.trim(), i.to_string());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            drop(socket);
        }
    });
    let mut forwards = Vec::new();
    for _ in 0..100 {
        let mut client = client.clone();
        forwards.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(k8shell_proto::k8shelld::v1::ForwardInput {
                input: Some(k8shell_proto::k8shelld::v1::forward_input::Input::Target(
                    k8shell_proto::k8shelld::v1::ForwardTarget {
                        host: "127.0.0.1".into(),
                        port: u32::from(port),
                    },
                )),
            })
            .await
            .unwrap();
            drop(tx);
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            let mut output = client.forward(stream).await.unwrap().into_inner();
            while output.message().await.unwrap().is_some() {}
        }));
    }
    for task in forwards {
        task.await.unwrap();
    }
    // Descriptors are closed when the tasks finish; give the runtime a few turns to run them.
    let mut after = open_fds();
    for _ in 0..100 {
        if after <= before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = open_fds();
    }
    assert!(
        after <= before,
        "descriptors before: {before}, after: {after}"
    );
}

#[tokio::test]
async fn stopping_k8shelld_ends_running_sessions() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut exec = Exec::open(&mut client, start("echo ready; exec sleep 1000"))
        .await
        .unwrap();
    exec.read_until("ready").await;
    let pid = nix::unistd::Pid::from_raw(exec.pid as i32);
    daemon.shutdown.trigger();
    assert_eq!(exec.wait().await, Ended::Signal("TERM".into()));
    daemon.task.await.unwrap();
    assert!(
        nix::sys::signal::kill(pid, None).is_err(),
        "the session's process is gone"
    );
}

#[tokio::test]
async fn a_session_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut exec = Exec::open(&mut client, start("trap '' TERM; echo ready; sleep 1000"))
        .await
        .unwrap();
    exec.read_until("ready").await;
    daemon.shutdown.trigger();
    assert_eq!(exec.wait().await, Ended::Signal("KILL".into()));
    daemon.task.await.unwrap();
}
