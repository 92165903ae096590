//! `k8shell blueprint check|show`, run as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn k8shell() -> Command {
    Command::new(env!("CARGO_BIN_EXE_k8shell"))
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../blueprints")
        .join(name)
}

#[test]
fn check_passes_good_files_and_fails_with_every_error_shown() {
    let good = k8shell()
        .args(["blueprint", "check"])
        .arg(example("rust.ncl"))
        .arg(example("alpine.ncl"))
        .output()
        .unwrap();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(
        stdout.contains("ok") && stdout.contains("rust.ncl") && stdout.contains("bp-"),
        "{stdout}"
    );

    let bad = k8shell()
        .args(["blueprint", "check"])
        .arg(example("rust.ncl"))
        .arg(example("invalid/memory-ceiling.ncl"))
        .arg(example("invalid/port-range.ncl"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("above the ceiling of 64Gi"), "{stderr}");
    assert!(stderr.contains("port 70000 is out of range"), "{stderr}");
    assert!(stderr.contains("2 of 3 blueprint(s) failed"), "{stderr}");
}

#[test]
fn show_prints_a_summary_or_the_spec_as_json() {
    let human = k8shell()
        .args(["blueprint", "show"])
        .arg(example("python.ncl"))
        .output()
        .unwrap();
    assert!(human.status.success());
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("port forwarding no, sftp yes"), "{text}");
    assert!(text.contains("/etc/pip.conf"), "{text}");

    let json = k8shell()
        .args(["blueprint", "show", "--json"])
        .arg(example("python.ncl"))
        .output()
        .unwrap();
    assert!(json.status.success());
    let spec: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(spec["name"], "python");
    assert_eq!(spec["allow"]["port_forwarding"], false);
    assert_eq!(spec["files"]["/etc/profile.d/venv.sh"]["mode"], 493);

    let missing = k8shell()
        .args(["blueprint", "show", "/nonexistent.ncl"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.ncl"));
}

#[test]
fn build_pushes_once_with_progress_and_refuses_bad_credentials() {
    let registry = k8shell_testkit::Registry::start_with_auth("ci", "pw").unwrap();
    let base = registry.push_busybox("k8shell/busybox").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.ncl");
    std::fs::write(
        &file,
        format!(
            "(import \"{}\") & {{ base | force = \"{base}\" }}",
            example("busybox.ncl").display()
        ),
    )
    .unwrap();
    let repo = format!("{}/workspaces/busybox", registry.host());
    let run = |creds: &str| {
        k8shell()
            .args(["blueprint", "build"])
            .arg(&file)
            .args([
                "--push",
                &repo,
                "--tls-verify=false",
                "--creds",
                creds,
                "--storage",
            ])
            .arg(dir.path().join("storage"))
            .output()
            .unwrap()
    };
    let refused = run("ci:nope");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "registry {} refused the credentials",
            registry.host()
        )),
        "{stderr}"
    );

    let first = run("ci:pw");
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout.contains("==> setup step 1 of 1")
            && stdout.contains("Copying blob")
            && stdout.contains("pushed "),
        "{stdout}"
    );
    let second = run("ci:pw");
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success() && stdout.contains("is up to date: nothing built, nothing pushed"),
        "{stdout}"
    );
}
