//! Small helpers for driving clients.

use std::process::{Command, Output, Stdio};

/// Runs `command` to its end off the async runtime; returns its output.
pub async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || {
        command
            .stdin(Stdio::null())
            .output()
            .expect("the client did not start")
    })
    .await
    .unwrap()
}

/// Runs `command` with `input` file as stdin.
pub async fn run_with_input(mut command: Command, input: &std::path::Path) -> Output {
    let input = std::fs::File::open(input).unwrap();
    tokio::task::spawn_blocking(move || {
        command
            .stdin(input)
            .output()
            .expect("the client did not start")
    })
    .await
    .unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// A file of `size` bytes that compresses badly (xorshift), for checksums.
pub fn noise_file(path: &std::path::Path, size: usize) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size);
    std::fs::write(path, data).unwrap();
}

/// `sha256sum FILE` on this machine: the hex digest.
pub fn sha256(path: &std::path::Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    text(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

pub use k8shell_testplatform::free_port;
