//! `k8shell config-ssh`: a `Host <workspace>.k8shell` entry per workspace in a marked block of
//! `~/.ssh/config`, so that plain `ssh web.k8shell`, VS Code and JetBrains find them. Running it
//! again replaces the block; lines outside it are never touched.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use serde_json::Value;

use crate::api::Api;
use crate::output::{Format, field};

pub const START: &str = "# ------------START-K8SHELL------------";
pub const END: &str = "# ------------END-K8SHELL--------------";

pub async fn run(
    api: &Api,
    format: Format,
    config: Option<PathBuf>,
    remove: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let path = match config {
        Some(path) => path,
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".ssh/config")
        }
    };
    let current = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let block = if remove {
        String::new()
    } else {
        block(
            &api.url,
            &api.get_all("/api/v1/workspaces?limit=1000").await?,
        )?
    };
    let updated = replace_block(&current, &block)?;
    if dry_run {
        print!("{updated}");
        return Ok(());
    }
    if updated != current {
        write(&path, &updated)?;
    }
    let hosts: Vec<&str> = block
        .lines()
        .filter_map(|l| l.strip_prefix("Host "))
        .collect();
    if format == Format::Json {
        println!("{}", serde_json::json!({"config": path, "hosts": hosts}));
    } else if remove {
        println!("removed the k8shell block from {}", path.display());
    } else if hosts.is_empty() {
        println!(
            "you have no workspaces yet; the block in {} is empty",
            path.display()
        );
    } else {
        println!(
            "{}: {}\nconnect with `ssh {}`",
            path.display(),
            hosts.join(", "),
            hosts[0]
        );
    }
    Ok(())
}

/// The block for these workspaces.
fn block(url: &str, workspaces: &[Value]) -> anyhow::Result<String> {
    let mut out = format!(
        "{START}\n# Written by `k8shell config-ssh` for {url}: run it again to update this block,\n# `k8shell config-ssh --remove` to remove it. Changes made inside it are lost.\n"
    );
    for w in workspaces {
        let name = field(w, "name");
        // Written into your SSH config: only what a workspace name can be.
        let label = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if name.is_empty() || name.len() > 63 || !name.chars().all(label) {
            return Err(anyhow!(
                "the API gave a workspace the name {name:?}, which is not a DNS label; not writing it into your SSH config"
            ));
        }
        let (user, host, port) = parse_ssh_command(&field(w, "ssh_command"))
            .ok_or_else(|| anyhow!("the API gave workspace {name} no usable SSH command"))?;
        out.push_str(&format!(
            "Host {name}.k8shell\n  HostName {host}\n  Port {port}\n  User {user}\n"
        ));
    }
    out.push_str(END);
    out.push('\n');
    Ok(out)
}

/// `ssh [-p PORT] USER@HOST` → (USER, HOST, PORT).
pub fn parse_ssh_command(command: &str) -> Option<(String, String, u16)> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let mut port = 22;
    let mut target = None;
    let mut i = 1;
    while i < words.len() {
        if words[i] == "-p" {
            port = words.get(i + 1)?.parse().ok()?;
            i += 2;
        } else {
            target = Some(words[i]);
            i += 1;
        }
    }
    let (user, host) = target?.rsplit_once('@')?;
    Some((user.to_owned(), host.to_owned(), port))
}

/// `current` with the marked block replaced by `block` (appended if there is none; removed if
/// `block` is empty).
fn replace_block(current: &str, block: &str) -> anyhow::Result<String> {
    match (current.find(START), current.find(END)) {
        (Some(start), Some(end)) if end > start => {
            let after = current[end + END.len()..]
                .strip_prefix('\n')
                .unwrap_or(&current[end + END.len()..]);
            Ok(format!("{}{block}{after}", &current[..start]))
        }
        (None, None) => {
            if block.is_empty() {
                return Ok(current.to_owned());
            }
            let separator = if current.is_empty() || current.ends_with("\n\n") {
                ""
            } else if current.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            Ok(format!("{current}{separator}{block}"))
        }
        _ => Err(anyhow!(
            "the k8shell block in your SSH config is damaged (a marker is missing): fix or delete it by hand"
        )),
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    // A config that is a link (dotfile managers) is written where it points.
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let path = target.as_path();
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temp = dir.join(format!(".k8shell-config.{}", std::process::id()));
    std::fs::write(&temp, text).with_context(|| format!("writing {}", temp.display()))?;
    // ssh refuses a config others may write.
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&temp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_replaced_and_other_lines_stay() {
        let mine = "Host work\n  HostName work.example\n";
        let first = replace_block(mine, &format!("{START}\nHost a.k8shell\n{END}\n")).unwrap();
        assert!(first.starts_with(mine));
        let tail = format!("{first}Host later\n  User me\n");
        let second = replace_block(&tail, &format!("{START}\nHost b.k8shell\n{END}\n")).unwrap();
        assert!(second.contains("Host b.k8shell") && !second.contains("Host a.k8shell"));
        assert!(second.starts_with(mine) && second.ends_with("Host later\n  User me\n"));
        let removed = replace_block(&second, "").unwrap();
        assert_eq!(removed, format!("{mine}\nHost later\n  User me\n"));
        assert!(replace_block(&format!("{START}\nno end"), "x").is_err());
    }

    #[test]
    fn ssh_commands_give_user_host_and_port() {
        assert_eq!(
            parse_ssh_command("ssh -p 2222 alice+web@k8s.example"),
            Some(("alice+web".into(), "k8s.example".into(), 2222))
        );
        assert_eq!(
            parse_ssh_command("ssh alice@host"),
            Some(("alice".into(), "host".into(), 22))
        );
    }
}
