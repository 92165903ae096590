//! `k8shell blueprint …`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use k8shell_blueprint::{Compiled, compile_file};

/// `check FILE...`: every file compiled, every error shown, exit status 1 if any failed.
pub fn check(files: &[PathBuf]) -> ExitCode {
    let mut failed = 0;
    for file in files {
        match compile_file(file) {
            Ok(compiled) => println!(
                "ok    {}  ({}, image tag {})",
                file.display(),
                compiled.spec.name,
                compiled.image_tag()
            ),
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
