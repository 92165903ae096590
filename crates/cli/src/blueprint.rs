//! `k8shell blueprint …`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use k8shell_blueprint::oci::{OciTarget, Progress};
use k8shell_blueprint::{Compiled, compile_file};

/// Which builder makes the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Builder {
    /// buildah from the blueprint's base image (any Linux host).
    Oci,
    /// nixpkgs' dockerTools (needs Nix with nixpkgs).
    Nix,
}

/// `k8shell blueprint build`. (Debug by hand: it may hold credentials.)
#[derive(Args)]
pub struct BuildArgs {
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Where to push: REGISTRY/REPOSITORY (the tag is the blueprint's hash).
    #[arg(long, value_name = "REGISTRY/REPO")]
    push: String,
    #[arg(long, value_enum, default_value_t = Builder::Oci)]
    builder: Builder,
    /// Verify the registries' TLS certificates (`--tls-verify=false` for a plain-HTTP registry).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    tls_verify: bool,
    /// USER:PASSWORD for the registry; default from K8SHELL_REGISTRY_USERNAME and
    /// K8SHELL_REGISTRY_PASSWORD, else the auth file.
    #[arg(long, value_name = "USER:PASSWORD")]
    creds: Option<String>,
    /// A docker-style config.json with registry credentials (default: $REGISTRY_AUTH_FILE, then
    /// ~/.docker/config.json).
    #[arg(long, value_name = "PATH")]
    authfile: Option<PathBuf>,
    /// buildah's storage (default ~/.cache/k8shell/buildah).
    #[arg(long, value_name = "DIR")]
    storage: Option<PathBuf>,
}

impl std::fmt::Debug for BuildArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildArgs")
            .field("file", &self.file)
            .field("push", &self.push)
            .field("builder", &self.builder)
            .field("creds", &self.creds.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// `build FILE --push REGISTRY/REPO`.
pub fn build(args: &BuildArgs) -> ExitCode {
    let compiled = match compile_file(&args.file) {
        Ok(compiled) => compiled,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let from_env = match (
        std::env::var("K8SHELL_REGISTRY_USERNAME").ok(),
        std::env::var("K8SHELL_REGISTRY_PASSWORD").ok(),
    ) {
        (Some(user), Some(password)) => Some(format!("{user}:{password}")),
        (None, None) => None,
        _ => {
            eprintln!(
                "set both K8SHELL_REGISTRY_USERNAME and K8SHELL_REGISTRY_PASSWORD, or neither"
            );
            return ExitCode::FAILURE;
        }
    };
    let credentials = args.creds.clone().or(from_env);
    let auth_file = args
        .authfile
        .clone()
        .or_else(|| std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from))
        .or_else(|| {
            home.as_ref()
                .map(|h| h.join(".docker/config.json"))
                .filter(|p| p.exists())
        });
    let storage = args.storage.clone().unwrap_or_else(|| {
        home.clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(".cache/k8shell/buildah")
    });
    let target = OciTarget {
        repository: args.push.clone(),
        tls_verify: args.tls_verify,
        credentials,
        auth_file,
        storage,
    };
    let mut show = |progress: Progress| match progress {
        Progress::Step(step) => say(&format!("==> {step}")),
        Progress::Layer(line) => say(&format!("    {line}")),
    };
    let result = match args.builder {
        Builder::Oci => k8shell_blueprint::oci::build(&compiled, &target, &mut show),
        Builder::Nix => k8shell_blueprint::nix::build(&compiled, &target, &mut show),
    };
    match result {
        Ok(built) if built.pushed => {
            say(&format!("pushed {}", built.reference));
            ExitCode::SUCCESS
        }
        Ok(built) => {
            say(&format!(
                "{} is up to date: nothing built, nothing pushed",
                built.reference
            ));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `check FILE...`: every file compiled, every error shown, exit status 1 if any failed.
pub fn check(files: &[PathBuf]) -> ExitCode {
    let mut failed = 0;
    for file in files {
        match compile_file(file) {
            Ok(compiled) => say(&format!(
                "ok    {}  ({}, image tag {})",
                file.display(),
                compiled.spec.name,
                compiled.image_tag()
            )),
            Err(error) => {
                failed += 1;
                eprintln!("error {}\n{error}\n", file.display());
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{failed} of {} blueprint(s) failed", files.len());
        ExitCode::FAILURE
    }
}

/// `show FILE [--json]`.
pub fn show(file: &Path, json: bool) -> ExitCode {
    let compiled = match compile_file(file) {
        Ok(compiled) => compiled,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let text = if json {
        serde_json::to_string_pretty(&compiled.spec).map(|mut s| {
            s.push('\n');
            s
        })
    } else {
        Ok(summary(&compiled))
    };
    match text.map(|t| std::io::stdout().write_all(t.as_bytes())) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is not an error worth a message.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("writing the output: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn summary(compiled: &Compiled) -> String {
    let spec = &compiled.spec;
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("{label:<14}{value}\n"));
    };
    line("name", spec.name.clone());
    if !spec.description.is_empty() {
        line("description", spec.description.clone());
    }
    line("base", spec.base.clone());
    line("image tag", compiled.image_tag());
    line(
        "packages",
        format!(
            "{} ({})",
            spec.packages.join(" "),
            format!("{:?}", spec.package_manager).to_lowercase()
        ),
    );
    line("setup steps", spec.setup.len().to_string());
    line(
        "files",
        spec.files.keys().cloned().collect::<Vec<_>>().join(" "),
    );
    line(
        "user",
        format!(
            "{} ({}:{}), {}{}",
            spec.user.name,
            spec.user.uid,
            spec.user.gid,
            spec.user.shell,
            if spec.user.sudo { ", sudo" } else { "" }
        ),
    );
    line(
        "resources",
        format!(
            "{} cpu, {} memory, {} disk",
            spec.resources.cpu, spec.resources.memory, spec.resources.disk
        ),
    );
    line(
        "home",
        format!(
            "{}{}",
            spec.home.size,
            if spec.home.template.is_empty() {
                String::new()
            } else {
                format!(" from {}", spec.home.template)
            }
        ),
    );
    let ports: Vec<String> = spec
        .ports
        .iter()
        .map(|p| {
            format!(
                "{} {}/{:?}{}",
                p.name,
                p.port,
                p.protocol,
                if p.public { " public" } else { "" }
            )
            .to_lowercase()
        })
        .collect();
    line(
        "ports",
        if ports.is_empty() {
            "none".to_owned()
        } else {
            ports.join(", ")
        },
    );
    line(
        "idle timeout",
        if spec.idle_timeout == "0" {
            "never".to_owned()
        } else {
            spec.idle_timeout.clone()
        },
    );
    line(
        "ssh allows",
        format!(
            "port forwarding {}, sftp {}",
            yes(spec.allow.port_forwarding),
            yes(spec.allow.sftp)
        ),
    );
    if !spec.dotfiles.is_empty() {
        line("dotfiles", spec.dotfiles.clone());
    }
    out
}

fn yes(allowed: bool) -> &'static str {
    if allowed { "yes" } else { "no" }
}

/// A line on standard output; a closed pipe (`| head`) is not worth a panic.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}
