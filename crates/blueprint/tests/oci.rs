//! The `oci` builder against a real registry (CNCF distribution) with buildah and skopeo.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use k8shell_blueprint::oci::{BuildError, OciTarget, Progress, build};
use k8shell_blueprint::{Compiled, compile_file};
use k8shell_testkit::Registry;

fn blueprint(dir: &Path, base: &str, motd: &str) -> Compiled {
    let file = dir.join("tiny.ncl");
    std::fs::write(
        &file,
        format!(
            r#"{{
  name = "tiny",
  base = "{base}",
  user = {{ name = "dev", uid = 1000, gid = 1000, shell = "/bin/sh", sudo = true }},
  setup = ["mkdir -p /opt/k8shell", "echo built > /opt/k8shell/stamp"],
  files = {{
    "/etc/motd" = {{ content = "{motd}\n" }},
    "/home/dev/.profile" = {{ content = "export TINY=1\n", owner = 'user, mode = 384 }},
  }},
  env = {{ EDITOR = "vi" }},
  ports = [{{ name = "web", port = 8080 }}],
  labels = {{ team = "platform" }},
}}"#
        ),
    )
    .unwrap();
    compile_file(&file).unwrap()
}

fn target(registry: &Registry, storage: &Path, credentials: Option<String>) -> OciTarget {
    OciTarget {
        repository: format!("{}/workspaces/tiny", registry.host()),
        tls_verify: false,
        credentials,
        auth_file: None,
        storage: storage.to_owned(),
    }
}

fn skopeo(args: &[&str]) -> serde_json::Value {
    let skopeo = k8shell_testkit::require("skopeo", "skopeo", &[]).unwrap();
    let out = Command::new(skopeo).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_blueprint_is_built_pushed_once_and_rebuilt_when_it_changes() {
    let registry = Registry::start().unwrap();
    let base = registry.push_busybox("k8shell/busybox").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let compiled = blueprint(dir.path(), &base, "hello from tiny");
    let target = target(&registry, &dir.path().join("storage"), None);
    let mut steps = Vec::new();
    let built = build(&compiled, &target, &mut |p| steps.push(p)).unwrap();
    assert!(built.pushed);
    assert!(built.reference.ends_with(&compiled.image_tag()));
    assert!(
        steps
            .iter()
            .any(|p| matches!(p, Progress::Step(s) if s.starts_with("setup step 2 of 2"))),
        "{steps:?}"
    );
    assert!(
        steps
            .iter()
            .any(|p| matches!(p, Progress::Layer(l) if l.starts_with("Copying blob"))),
        "{steps:?}"
    );

    let image = format!("docker://{}", built.reference);
    let config = skopeo(&["inspect", "--tls-verify=false", "--config", &image]);
    let config = &config["config"];
    assert_eq!(config["User"], "1000:1000");
    assert_eq!(config["WorkingDir"], "/home/dev");
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"EDITOR=vi") && env.contains(&"HOME=/home/dev"),
        "{env:?}"
    );
    assert_eq!(
        config["Labels"]["dev.k8shell.blueprint.hash"],
        compiled.hash.as_str()
    );
    assert_eq!(config["Labels"]["team"], "platform");
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "{config}");
    let manifest = skopeo(&["inspect", "--tls-verify=false", "--raw", &image]);
    assert!(
        manifest["layers"].as_array().unwrap().len() >= 2,
        "base and build layers: {manifest}"
    );

    // The files, the user and the setup step, seen from inside the pushed image.
    let storage = dir.path().join("check");
    let args = k8shell_testkit::buildah_storage_args(&storage);
    let run = |container: &str, script: &str| {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend([
            "run",
            "--isolation",
            "chroot",
            "--user",
            "0:0",
            container,
            "--",
            "/bin/sh",
            "-c",
            script,
        ]);
        let out = Command::new("buildah").args(&all).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let mut from: Vec<&str> = args.iter().map(String::as_str).collect();
    let pull = built.reference.clone();
    from.extend(["from", "--tls-verify=false", "--quiet", &pull]);
    let container =
        String::from_utf8(Command::new("buildah").args(&from).output().unwrap().stdout).unwrap();
    let container = container.trim();
    assert_eq!(run(container, "cat /etc/motd"), "hello from tiny\n");
    assert_eq!(run(container, "cat /opt/k8shell/stamp"), "built\n");
    assert_eq!(
        run(container, "stat -c '%u:%g %a' /home/dev/.profile"),
        "1000:1000 600\n"
    );
    assert!(run(container, "cat /etc/passwd").contains("dev:x:1000:1000::/home/dev:/bin/sh"));
    assert!(run(container, "cat /etc/sudoers.d/k8shell").contains("dev ALL=(ALL) NOPASSWD:ALL"));

    // The same blueprint again: found in the registry, nothing built or pushed.
    let mut again = Vec::new();
    let second = build(&compiled, &target, &mut |p| again.push(p)).unwrap();
    assert!(!second.pushed);
    assert_eq!(second.reference, built.reference);
    assert!(!again.iter().any(|p| matches!(p, Progress::Layer(_))));

    // A blueprint on top of this image whose user would take dev's uid: refused, clearly.
    let conflict = dir.path().join("conflict.ncl");
    std::fs::write(
        &conflict,
        format!(
            "{{ name = \"conflict\", base = \"{}\", user = {{ name = \"alice\", uid = 1000 }} }}",
            built.reference
        ),
    )
    .unwrap();
    let error = build(&compile_file(&conflict).unwrap(), &target, &mut |_| {}).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("uid 1000 belongs to dev in the base image"),
        "{error}"
    );

    // A file path that is a directory in the base image: refused, not swallowed.
    let into_dir = dir.path().join("into-dir.ncl");
    std::fs::write(
        &into_dir,
        format!("{{ name = \"into-dir\", base = \"{base}\", files = {{ \"/etc\" = {{ content = \"x\" }} }} }}"),
    )
    .unwrap();
    let error = build(&compile_file(&into_dir).unwrap(), &target, &mut |_| {}).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is a directory in the base image"),
        "{error}"
    );

    // A changed blueprint: a new tag.
    let changed = blueprint(dir.path(), &base, "hello again");
    let third = build(&changed, &target, &mut |_| {}).unwrap();
    assert!(third.pushed);
    assert_ne!(third.reference, built.reference);
}

#[test]
fn wrong_registry_credentials_are_a_clear_error_and_push_nothing() {
    let registry = Registry::start_with_auth("builder", "s3cret").unwrap();
    let base = registry.push_busybox("k8shell/busybox").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let compiled = blueprint(dir.path(), &base, "auth");
    let wrong = target(
        &registry,
        &dir.path().join("storage"),
        Some("builder:wrong".to_owned()),
    );
    let error = build(&compiled, &wrong, &mut |_| {}).unwrap_err();
    assert!(matches!(error, BuildError::Unauthorized { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&registry.host()) && message.contains("credentials"),
        "{message}"
    );

    // The right credentials from a docker config file, as `docker login` writes it.
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(b"builder:s3cret");
    let auth_file = dir.path().join("config.json");
    let auths = serde_json::json!({"auths": {registry.host(): {"auth": token}}});
    std::fs::write(&auth_file, auths.to_string()).unwrap();
    let mut right = target(&registry, &dir.path().join("storage"), None);
    right.auth_file = Some(auth_file);
    let built = build(&compiled, &right, &mut |_| {}).unwrap();
    assert!(
        built.pushed,
        "the failed attempt left nothing under the tag"
    );
}
