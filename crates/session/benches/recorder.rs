//! Recording overhead and size, against the same relay without recording, in one run.
//!
//! `cargo bench -p k8shell-session --bench recorder` (K8SHELL_BENCH_MIB sets the volume,
//! default 1024).
//!
//! 1. Throughput: PTY-like output (coloured build logs, some UTF-8) flows producer → relay →
//!    consumer over Unix sockets, as ssh-proxy relays a channel. The relay either only forwards,
//!    or also tees every read into a `Recording` whose uploader streams it to a real session
//!    service (PostgreSQL, NATS, zstd chunks) at the same time. Ratio = with / without.
//! 2. Size: a synthetic hour of interactive work (typing, prompts, command output, editor
//!    redraws, idle time) recorded and stored; bytes per hour before and after compression.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/integration/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use k8shell_session::asciicast::{Code, Header};
use k8shell_session::{Recording, RecordingKind};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// About 64 KiB of a coloured build log.
fn pty_like_block() -> Vec<u8> {
    let mut block = Vec::new();
    let mut n = 0u32;
    while block.len() < 64 * 1024 {
        let line = match n % 5 {
            0 => format!(
                "\x1b[1m\x1b[32m   Compiling\x1b[0m crate-{n} v0.{}.{} (/home/dev/src/workspace/crates/crate-{n})\r\n",
                n % 7,
                n % 13
            ),
            1 => format!(
                "\x1b[1m\x1b[33mwarning\x1b[0m: unused variable: `x{n}` → prefix it with an underscore: `_x{n}`\r\n"
            ),
            2 => format!("  --> src/module_{n}.rs:{}:{}\r\n   |\r\n", n % 400, n % 80),
            3 => format!("test tests::case_{n} ... \x1b[32mok\x1b[0m\r\n"),
            _ => format!(
                "[{:>5}] résumé of step {n}: {} items processed, ∑ = {}\r\n",
                n,
                n * 17,
                n * 31
            ),
        };
        block.extend_from_slice(line.as_bytes());
        n += 1;
    }
    block
}

/// Relays `total` bytes; returns the relay's throughput in MiB/s.
async fn relay(total: usize, mut recording: Option<&mut Recording>) -> f64 {
    let (producer_end, relay_in) = std::os::unix::net::UnixStream::pair().unwrap();
    let (relay_out, consumer_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let block = pty_like_block();
    let producer = std::thread::spawn(move || {
        let mut producer_end = producer_end;
        let mut sent = 0;
        while sent < total {
            let n = block.len().min(total - sent);
            producer_end.write_all(&block[..n]).unwrap();
            sent += n;
        }
    });
    let consumer = std::thread::spawn(move || {
        let mut consumer_end = consumer_end;
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < total {
            let n = consumer_end.read(&mut buf).unwrap();
            assert!(n > 0);
            got += n;
        }
        Instant::now()
    });
    relay_in.set_nonblocking(true).unwrap();
    relay_out.set_nonblocking(true).unwrap();
    let mut input = tokio::net::UnixStream::from_std(relay_in).unwrap();
    let mut output = tokio::net::UnixStream::from_std(relay_out).unwrap();
    let mut buf = vec![0u8; 32 * 1024];
    let started = Instant::now();
    let mut moved = 0;
    while moved < total {
        let n = input.read(&mut buf).await.unwrap();
        if let Some(recording) = recording.as_deref_mut() {
            recording.output(&buf[..n]).unwrap();
        }
        output.write_all(&buf[..n]).await.unwrap();
        moved += n;
    }
    producer.join().unwrap();
    let done = consumer.join().unwrap();
    total as f64 / (1024.0 * 1024.0) / done.duration_since(started).as_secs_f64()
}

/// An hour of interactive work: (seconds since start, output).
fn interactive_hour() -> Vec<(f64, Vec<u8>)> {
    let mut events = Vec::new();
    let mut t = 0.0;
    let mut n = 0u32;
    let prompt = "\x1b[1;32mdev@ws\x1b[0m:\x1b[1;34m~/src/app\x1b[0m$ ";
    let commands = [
        "git status",
        "ls -la",
        "cargo build",
        "vim src/main.rs",
        "cargo test",
        "grep -rn TODO src",
    ];
    while t < 3600.0 {
        events.push((t, prompt.as_bytes().to_vec()));
        let command = commands[(n as usize) % commands.len()];
        // Typed at ~6 keys a second, each echoed.
        for c in command.chars() {
            t += 0.16;
            events.push((t, c.to_string().into_bytes()));
        }
        t += 0.3;
        events.push((t, b"\r\n".to_vec()));
        let output: Vec<Vec<u8>> = match command {
            "git status" => vec![format!("On branch feature-{n}\r\nChanges not staged for commit:\r\n\t\x1b[31mmodified:   src/lib.rs\x1b[0m\r\n\t\x1b[31mmodified:   src/main.rs\x1b[0m\r\n").into_bytes()],
            "ls -la" => (0..24).map(|i| format!("-rw-r--r-- 1 dev dev {:>6} Dec  1 10:{:02} file_{i}.rs\r\n", 1000 + i * 37 + n, i).into_bytes()).collect(),
            "cargo build" | "cargo test" => (0..60).map(|i| format!("\x1b[1;32m   Compiling\x1b[0m dep-{i} v1.{}.0\r\n", (i + n) % 9).into_bytes()).collect(),
            "vim src/main.rs" => (0..20).map(|i| {
                let mut screen = String::from("\x1b[H\x1b[2J");
                for row in 0..40 {
                    screen.push_str(&format!("\x1b[{};1H{:>4} fn item_{}() {{ let value = {}; }}", row + 1, row + i, row + i, row * i));
                }
                screen.into_bytes()
            }).collect(),
            _ => (0..8).map(|i| format!("src/module_{i}.rs:{}: // TODO: handle case {i}\r\n", 10 + i * n % 90).into_bytes()).collect(),
        };
        for chunk in output {
            t += if command.starts_with("vim") {
                1.5
            } else {
                0.05
            };
            events.push((t, chunk));
        }
        // Reading, thinking.
        t += 20.0 + f64::from(n % 7) * 5.0;
        n += 1;
    }
    events
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mib: usize = std::env::var("K8SHELL_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let total = mib * 1024 * 1024;
    let mut harness = harness::Harness::start().await;
    let client = harness.proxy_client(&harness.spool("spool")).await;

    // Warm-up, then alternate to spread the machine's noise over all three.
    relay(64 * 1024 * 1024, None).await;
    let (mut plain, mut live, mut spooled) = (Vec::new(), Vec::new(), Vec::new());
    let mut upload_lag = Vec::new();
    for _ in 0..2 {
        plain.push(relay(total, None).await);

        let session = client
            .open(harness::new_session("bench", "live"))
            .await
            .unwrap();
        let mut recording = session
            .record(1, RecordingKind::Pty, &Header::new(120, 40))
            .unwrap();
        live.push(relay(total, Some(&mut recording)).await);
        let relay_done = Instant::now();
        recording.finish().unwrap();
        session.close("bench").unwrap().flushed().await;
        upload_lag.push(relay_done.elapsed().as_secs_f64());

        // The proxy's own share: the service is away during the relay (as if on another
        // machine that is briefly unreachable), the upload catches up afterwards.
        let session = client
            .open(harness::new_session("bench", "spooled"))
            .await
            .unwrap();
        let mut recording = session
            .record(1, RecordingKind::Pty, &Header::new(120, 40))
            .unwrap();
        harness.stop_service().await;
        spooled.push(relay(total, Some(&mut recording)).await);
        harness.start_service().await;
        recording.finish().unwrap();
        session.close("bench").unwrap().flushed().await;
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    let (plain, live, spooled) = (best(&plain), best(&live), best(&spooled));
    println!("relay of {mib} MiB of PTY-like output over Unix sockets (best of 2):");
    println!("  without recording: {plain:.0} MiB/s");
    println!(
        "  Recorder, spool only (upload afterwards): {spooled:.0} MiB/s, ratio {:.2}",
        spooled / plain
    );
    println!(
        "  Recorder, spool + live upload to the service on the same 2 cores: {live:.0} MiB/s, ratio {:.2}",
        live / plain
    );
    println!(
        "  the live upload was complete {:.2} s after the relay ended",
        upload_lag.iter().copied().fold(f64::MAX, f64::min)
    );

    let session = client
        .open(harness::new_session("bench", "interactive"))
        .await
        .unwrap();
    let id = session.id();
    let mut recording = session
        .record(1, RecordingKind::Pty, &Header::new(120, 40))
        .unwrap();
    for (t, data) in interactive_hour() {
        recording
            .event_at(Duration::from_secs_f64(t), Code::Output, &data)
            .unwrap();
    }
    let raw_output: usize = interactive_hour().iter().map(|(_, d)| d.len()).sum();
    recording.finish().unwrap();
    session.close("bench").unwrap().flushed().await;
    let stored = harness.get(id).await.recordings.remove(0);
    println!(
        "one hour of interactive work ({} KiB of terminal output):",
        raw_output / 1024
    );
    println!(
        "  asciicast: {} KiB, stored (zstd, {} chunks): {} KiB per hour",
        stored.stored_bytes / 1024,
        stored.chunks,
        stored.compressed_bytes / 1024
    );
}
