//! Evaluating a blueprint sent to the API in a child process (`k8shell-api
//! __evaluate-blueprint FILE`) with limits on CPU time and memory: a Nickel program can loop or
//! grow without end, and it must cost its sender an error, not the server a core or its memory.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

/// The hidden first argument that makes `k8shell-api` an evaluator.
pub const ARGUMENT: &str = "__evaluate-blueprint";
/// CPU seconds an evaluation may use.
const CPU_SECONDS: u64 = 10;
/// Address space an evaluation may use.
const MEMORY_BYTES: u64 = 1 << 30;
/// Wall-clock limit (an evaluation that sleeps on I/O still ends).
const WALL: Duration = Duration::from_secs(20);

/// What the child answers on stdout.
#[derive(Debug, Serialize, Deserialize)]
pub enum Outcome {
    Compiled {
        spec: serde_json::Value,
        image_tag: String,
    },
    Invalid {
        message: String,
    },
}

/// Runs in the child: reads the source on stdin, compiles, answers as JSON on stdout.
pub fn child_main(file: &str) -> std::process::ExitCode {
    let mut source = String::new();
    if std::io::Read::read_to_string(&mut std::io::stdin(), &mut source).is_err() {
        return std::process::ExitCode::FAILURE;
    }
    let outcome = match k8shell_blueprint::compile_source(&source, file) {
        Ok(compiled) => Outcome::Compiled {
            spec: serde_json::from_str(&compiled.canonical_json).unwrap_or_default(),
            image_tag: compiled.image_tag(),
        },
        Err(error) => Outcome::Invalid {
            message: error.to_string(),
        },
    };
    match serde_json::to_string(&outcome) {
        Ok(text) => {
            println!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(_) => std::process::ExitCode::FAILURE,
    }
}

/// Why no outcome came back.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error("the blueprint took more than its limits ({CPU_SECONDS} s of CPU, 1 GiB): simplify it")]
    Limits,
    #[error("the evaluator could not run: {0}")]
    Spawn(String),
}

/// Evaluates `source` in `evaluator` (the `k8shell-api` binary) under the limits.
pub async fn evaluate(
    evaluator: &Path,
    source: &str,
    file: &str,
) -> Result<Outcome, EvaluateError> {
    let mut command = tokio::process::Command::new(evaluator);
    command
        .arg(ARGUMENT)
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            use nix::sys::resource::{Resource, setrlimit};
            setrlimit(Resource::RLIMIT_CPU, CPU_SECONDS, CPU_SECONDS)?;
            setrlimit(Resource::RLIMIT_AS, MEMORY_BYTES, MEMORY_BYTES)?;
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| EvaluateError::Spawn(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(source.as_bytes())
            .await
            .map_err(|e| EvaluateError::Spawn(e.to_string()))?;
    }
    let output = tokio::time::timeout(WALL, child.wait_with_output())
        .await
        .map_err(|_| EvaluateError::Limits)?
        .map_err(|e| EvaluateError::Spawn(e.to_string()))?;
    if !output.status.success() {
        return Err(EvaluateError::Limits);
    }
    serde_json::from_slice(&output.stdout).map_err(|e| EvaluateError::Spawn(e.to_string()))
}

/// The evaluator binary: configured, else this program when it is `k8shell-api`.
pub fn default_evaluator() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    (exe.file_name()? == "k8shell-api").then_some(exe)
}
