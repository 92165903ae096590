//! Evaluation time of each example blueprint, and the time of a cached rebuild (the image exists
//! in the registry, so nothing is built) against the registry round trip it consists of.
//!
//! `cargo bench -p k8shell-blueprint --bench eval`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8shell_blueprint::compile_file;
use k8shell_blueprint::oci::{OciTarget, build};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../blueprints");
    println!("evaluation (nickel-lang-core in-process, contract applied, median of 21):");
    let mut names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ncl") && !p.ends_with("k8shell.ncl"))
        .collect();
    names.sort();
    for path in &names {
        compile_file(path).unwrap();
        let samples = (0..21)
            .map(|_| {
                let start = Instant::now();
                compile_file(path).unwrap();
                start.elapsed()
            })
            .collect();
        println!(
            "  {:<12} {:>6.1} ms",
            path.file_name().unwrap().to_string_lossy(),
            median(samples).as_secs_f64() * 1000.0
        );
    }

    let registry = k8shell_testkit::Registry::start().unwrap();
    let base = registry.push_busybox("k8shell/busybox").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.ncl");
    std::fs::write(
        &file,
        format!(
            "(import \"{}\") & {{ base | force = \"{base}\" }}",
            root.join("busybox.ncl").display()
        ),
    )
    .unwrap();
    let compiled = compile_file(&file).unwrap();
    let target = OciTarget {
        repository: format!("{}/workspaces/busybox", registry.host()),
        tls_verify: false,
        credentials: None,
        auth_file: None,
        storage: dir.path().join("storage"),
    };
    let start = Instant::now();
    let first = build(&compiled, &target, &mut |_| {}).unwrap();
    let first_time = start.elapsed();
    assert!(first.pushed);
    let cached: Vec<Duration> = (0..9)
        .map(|_| {
            let start = Instant::now();
            let compiled = compile_file(&file).unwrap();
            let again = build(&compiled, &target, &mut |_| {}).unwrap();
            assert!(!again.pushed);
            start.elapsed()
        })
        .collect();
    let inspect: Vec<Duration> = (0..9)
        .map(|_| {
            let start = Instant::now();
            let status = Command::new("skopeo")
                .args([
                    "inspect",
                    "--raw",
                    "--tls-verify=false",
                    &format!("docker://{}", first.reference),
                ])
                .output()
                .unwrap()
                .status;
            assert!(status.success());
            start.elapsed()
        })
        .collect();
    let (cached, inspect) = (median(cached), median(inspect));
    println!("busybox blueprint with the oci builder:");
    println!("  first build and push: {:.2} s", first_time.as_secs_f64());
    println!(
        "  cached rebuild (compile, then find the tag in the registry; median of 9): {:.0} ms",
        cached.as_secs_f64() * 1000.0
    );
    println!(
        "  peer: `skopeo inspect --raw` alone: {:.0} ms; ratio {:.2}",
        inspect.as_secs_f64() * 1000.0,
        cached.as_secs_f64() / inspect.as_secs_f64()
    );
}
