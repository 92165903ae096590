//! What the compiler makes of blueprints: defaults, extension by merge, inlined files, hashes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use k8shell_blueprint::compile_file;
use k8shell_blueprint::spec::{FileOwner, PackageManager, Protocol};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../blueprints")
        .join(name)
}

#[test]
fn an_extension_replaces_the_base_defaults_and_keeps_the_rest() {
    let rust = compile_file(&example("rust.ncl")).unwrap().spec;
    assert_eq!(rust.name, "rust");
    assert!(rust.packages.contains(&"cargo".to_owned()));
    assert!(
        !rust.packages.contains(&"vim-tiny".to_owned()),
        "the base's list is replaced"
    );
    assert_eq!(rust.resources.memory_bytes(), Some(8 << 30));
    assert_eq!(
        rust.idle_timeout(),
        Some(std::time::Duration::from_secs(7200))
    );
    // Inherited from debian.ncl: the user, and /etc/motd read from its source file.
    assert!(rust.user.sudo);
    let motd = &rust.files["/etc/motd"];
    assert!(
        motd.content
            .as_deref()
            .unwrap()
            .starts_with("Welcome to your k8shell workspace.")
    );
    assert_eq!(motd.source, None, "sources are inlined");
    assert_eq!((motd.mode, motd.owner), (0o644, FileOwner::Root));
    assert_eq!(rust.ports[0].protocol, Protocol::Tcp);
    assert_eq!(rust.package_manager, PackageManager::Apt);
}

#[test]
fn unset_fields_take_the_documented_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("minimal.ncl");
    std::fs::write(
        &file,
        "{ name = \"minimal\", base = \"docker.io/library/debian:12\" }",
    )
    .unwrap();
    let spec = compile_file(&file).unwrap().spec;
    assert_eq!(spec.user.name, "dev");
    assert_eq!(
        (spec.user.uid, spec.user.gid, spec.user.sudo),
        (1000, 1000, false)
    );
    assert_eq!(spec.resources.cpu, 2.0);
    assert_eq!(spec.home.size, "10Gi");
    assert!(spec.allow.port_forwarding && spec.allow.sftp);
    assert_eq!(
        spec.idle_timeout(),
        Some(std::time::Duration::from_secs(1800))
    );
}

#[test]
fn the_hash_follows_the_content_and_only_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.ncl");
    let b = dir.path().join("b.ncl");
    // The same blueprint written differently: same spec, same tag.
    std::fs::write(
        &a,
        "{ name = \"x\", base = \"docker.io/library/debian:12\", env = { A = \"1\", B = \"2\" } }",
    )
    .unwrap();
    std::fs::write(&b, "{\n  env.B = \"2\",\n  env.A = \"1\",\n  base = \"docker.io/library/debian:12\",\n  name = \"x\",\n}\n").unwrap();
    let first = compile_file(&a).unwrap();
    assert_eq!(first.hash, compile_file(&b).unwrap().hash);
    assert!(first.image_tag().starts_with("bp-"));
    std::fs::write(
        &b,
        "{ name = \"x\", base = \"docker.io/library/debian:12\", env = { A = \"1\", B = \"3\" } }",
    )
    .unwrap();
    assert_ne!(first.hash, compile_file(&b).unwrap().hash);
    // A file source's content is part of the hash.
    let with_source = dir.path().join("s.ncl");
    std::fs::write(dir.path().join("motd"), "one\n").unwrap();
    std::fs::write(&with_source, "{ name = \"x\", base = \"docker.io/library/debian:12\", files.\"/etc/motd\".source = \"motd\" }").unwrap();
    let before = compile_file(&with_source).unwrap().hash;
    std::fs::write(dir.path().join("motd"), "two\n").unwrap();
    assert_ne!(before, compile_file(&with_source).unwrap().hash);
}

#[test]
fn errors_name_the_file_the_line_and_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.ncl");
    std::fs::write(&file, "{\n  name = \"web\",\n  base = \"docker.io/library/nginx:1\",\n  ports = [{ name = \"http\", port = 0 }],\n}\n").unwrap();
    let message = compile_file(&file).unwrap_err().to_string();
    assert!(
        message.contains("port 0 is out of range: use 1 to 65535"),
        "{message}"
    );
    assert!(message.contains("web.ncl:4:"), "file and line: {message}");

    let missing = compile_file(&dir.path().join("nowhere.ncl"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nowhere.ncl"), "{missing}");

    let source_missing = dir.path().join("src.ncl");
    std::fs::write(&source_missing, "{ name = \"x\", base = \"docker.io/library/debian:12\", files.\"/etc/a\".source = \"absent.txt\" }").unwrap();
    let message = compile_file(&source_missing).unwrap_err().to_string();
    assert!(
        message.contains("files.\"/etc/a\".source") && message.contains("absent.txt"),
        "{message}"
    );
}

#[test]
fn a_blueprint_sent_as_text_compiles_and_its_errors_name_the_senders_file() {
    let busybox = std::fs::read_to_string(example("busybox.ncl")).unwrap();
    let compiled = k8shell_blueprint::compile_source(&busybox, "mine.ncl").unwrap();
    assert_eq!(compiled, compile_file(&example("busybox.ncl")).unwrap());
    let broken = busybox.replace("cpu = 0.5", "cpu = \"lots\"");
    let error = k8shell_blueprint::compile_source(&broken, "mine.ncl")
        .unwrap_err()
        .to_string();
    assert!(error.contains("mine.ncl:"), "{error}");
    assert!(!error.contains("/tmp"), "no temporary path: {error}");
}

#[test]
fn a_blueprint_sent_as_text_may_not_import_the_servers_files() {
    for source in [
        "(import \"/etc/passwd\" as 'Text) |> fun _ => { name = \"x\", base = \"b\" }",
        "let secret = import\n  \"/etc/k8shell/provisioner.toml\" in { name = \"x\", base = \"b\" }",
        "(import \"../../blueprints/debian.ncl\") & { name = \"x\" }",
    ] {
        let error = k8shell_blueprint::compile_source(source, "sent.ncl")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("may import only \"k8shell.ncl\""),
            "{source}: {error}"
        );
    }
    // The contract may be imported, and words that merely contain `import` are fine.
    let contract = "let k = import \"k8shell.ncl\" in { name = \"x\", base = \"registry.test/b:1\", description = \"important\" }";
    let compiled = k8shell_blueprint::compile_source(contract, "sent.ncl").unwrap();
    assert_eq!(compiled.spec.description, "important");
}
