//! The first administrator (named after whoever started us, with their `~/.ssh/*.pub`), the
//! default workspace, the one-time console sign-in, and stopping workspaces on the way out.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8shell_proto::provisioner::v1 as pb;
use k8shell_proto::provisioner::v1::provisioner_client::ProvisionerClient;
use tonic::transport::Channel;

use crate::{Config, Error};

/// The administrator identity bootstraps, and where their keys came from.
#[derive(Debug)]
pub struct Admin {
    pub username: String,
    pub keys: Vec<String>,
    /// Files the keys were read from (for the start message).
    pub key_files: Vec<PathBuf>,
    /// Things to tell the user (renamed, unreadable keys, no keys).
    pub notes: Vec<String>,
}

impl Admin {
    pub fn bootstrap(&self) -> k8shell_identity::BootstrapAdmin {
        k8shell_identity::BootstrapAdmin {
            username: self.username.clone(),
            ssh_keys: self.keys.clone(),
            groups: vec!["admins".to_owned()],
        }
    }
}

/// The invoking user: `--admin`, else `SUDO_USER` (sudo sets it), else `USER`, else the uid's
/// name. Keys: `--admin-key` files, else `~<user>/.ssh/*.pub` of that user's home (not `$HOME`,
/// which is root's under sudo).
pub fn admin(config: &Config) -> Result<Admin, Error> {
    let mut notes = Vec::new();
    let login = config
        .admin
        .clone()
        .or_else(|| std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty()))
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "admin".to_owned());
    let username = normalize(&login);
    if !k8shell_identity::valid_username(&username) {
        return Err(Error::Setup {
            what: "naming the administrator".to_owned(),
            detail: format!(
                "{login:?} cannot be a k8shell username (lowercase letters, digits and -, starting with a letter, at most 32): pass --admin NAME"
            ),
        });
    }
    if username != login {
        notes.push(format!(
            "your k8shell username is {username} (from {login})"
        ));
    }
    let files = if config.admin_keys.is_empty() {
        let home = nix::unistd::User::from_name(&login)
            .ok()
            .flatten()
            .map(|u| u.dir)
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
            .unwrap_or_default();
        public_key_files(&home.join(".ssh"))
    } else {
        config.admin_keys.clone()
    };
    let mut keys = Vec::new();
    let mut key_files = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                notes.push(format!("skipped {}: {e}", file.display()));
                continue;
            }
        };
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim();
        // identity refuses to start on a key it cannot read: check each first.
        match k8shell_identity::sshkey::SshPublicKey::parse(line) {
            Ok(_) => {
                keys.push(line.to_owned());
                key_files.push(file);
            }
            Err(e) => notes.push(format!("skipped {}: {e}", file.display())),
        }
    }
    if keys.is_empty() {
        notes.push(format!(
            "no SSH public key found for {login} (~/.ssh/*.pub): make one with `ssh-keygen -t ed25519` and start again; meanwhile the console link below signs you in"
        ));
    }
    Ok(Admin {
        username,
        keys,
        key_files,
        notes,
    })
}

/// `Jane.Doe_2` → `jane-doe-2`.
fn normalize(login: &str) -> String {
    login
        .chars()
        .map(|c| match c {
            '.' | '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn public_key_files(ssh_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(ssh_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            name.ends_with(".pub") && !name.ends_with("-cert.pub")
        })
        .collect();
    files.sort();
    files
}

/// A fresh one-time sign-in for `username`: the offer for the api-server and the code.
pub fn one_time_login(
    username: &str,
) -> Result<(k8shell_api_server::one_time_login::OneTimeLogin, String), Error> {
    let code = crate::random_token()?;
    let offer = k8shell_api_server::one_time_login::OneTimeLogin::new(
        username,
        &code,
        SystemTime::now() + Duration::from_secs(3600),
    );
    Ok((offer, code))
}

fn state_name(state: i32) -> &'static str {
    k8shell_api_server::routes::workspaces::state_name(
        pb::State::try_from(state).unwrap_or(pb::State::Unspecified),
    )
}

/// Makes the administrator's `default` workspace on the first start and waits until it runs
/// (its image is built now, so the first `ssh` is quick). Later starts leave it as it is.
pub async fn default_workspace(
    provisioner: &mut ProvisionerClient<Channel>,
    admin: &str,
    source: &str,
) -> Result<(), Error> {
    let listed = provisioner
        .list(pb::ListRequest {
            owner: admin.to_owned(),
        })
        .await
        .map_err(|s| Error::setup("listing workspaces", s.message()))?
        .into_inner();
    if listed
        .workspaces
        .iter()
        .any(|w| w.r#ref.as_ref().is_some_and(|r| r.name == "default"))
    {
        return Ok(());
    }
    println!(
        "  creating your default workspace (its image is built now; the first time takes a minute)"
    );
    let created = provisioner
        .create(pb::CreateRequest {
            requester: Some(pb::Requester {
                username: admin.to_owned(),
                groups: vec!["admins".to_owned()],
            }),
            name: "default".to_owned(),
            blueprint_source: source.to_owned(),
            blueprint_file: "default.ncl".to_owned(),
            stopped: false,
        })
        .await
        .map_err(|s| Error::setup("creating the default workspace", s.message()))?
        .into_inner();
    let selector = pb::Selector {
        by: created
            .r#ref
            .as_ref()
            .and_then(|r| r.id.clone())
            .map(pb::selector::By::Id),
    };
    let mut last = String::new();
    loop {
        let workspace = provisioner
            .get(pb::WorkspaceRequest {
                workspace: Some(selector.clone()),
            })
            .await
            .map_err(|s| Error::setup("following the default workspace", s.message()))?
            .into_inner();
        let now = format!(
            "{}{}",
            state_name(workspace.state),
            if workspace.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", workspace.reason)
            }
        );
        if now != last {
            println!("    {now}");
            last = now;
        }
        match pb::State::try_from(workspace.state) {
            Ok(pb::State::Running) => {
                for warning in &workspace.warnings {
                    println!("    note: {warning}");
                }
                return Ok(());
            }
            Ok(pb::State::Failed) => {
                return Err(Error::Setup {
                    what: "starting the default workspace".to_owned(),
                    detail: workspace.reason,
                });
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Asks every running workspace to stop and waits (at most `patience`) until none runs, so
/// that nothing is left running after the all-in-one; the next `ssh` starts them again.
pub async fn stop_workspaces(provisioner: &mut ProvisionerClient<Channel>, patience: Duration) {
    let running = |w: &pb::Workspace| {
        matches!(
            pb::State::try_from(w.state),
            Ok(pb::State::Running | pb::State::Starting | pb::State::Pending | pb::State::Stopping)
        ) && w.desired != pb::DesiredState::Deleted as i32
    };
    let Ok(listed) = provisioner.list(pb::ListRequest::default()).await else {
        return;
    };
    let to_stop: Vec<pb::Workspace> = listed
        .into_inner()
        .workspaces
        .into_iter()
        .filter(running)
        .collect();
    if to_stop.is_empty() {
        return;
    }
    println!("stopping {} workspace(s)", to_stop.len());
    for workspace in &to_stop {
        let by = workspace
            .r#ref
            .as_ref()
            .and_then(|r| r.id.clone())
            .map(pb::selector::By::Id);
        if let Err(status) = provisioner
            .stop(pb::WorkspaceRequest {
                workspace: Some(pb::Selector { by }),
            })
            .await
        {
            tracing::warn!(error = %status.message(), "could not stop a workspace");
        }
    }
    let start = std::time::Instant::now();
    while start.elapsed() < patience {
        match provisioner.list(pb::ListRequest::default()).await {
            Ok(listed) if !listed.get_ref().workspaces.iter().any(running) => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(_) => return,
        }
    }
    println!("some workspaces were still stopping; the next start finishes it");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_become_usernames() {
        assert_eq!(normalize("Jane.Doe_2"), "jane-doe-2");
        assert!(k8shell_identity::valid_username(&normalize("Jane.Doe_2")));
        assert_eq!(normalize("alice"), "alice");
    }

    #[test]
    fn certificates_are_not_keys() {
        let dir =
            std::env::temp_dir().join(format!("k8shell-allinone-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        for name in [
            "id_ed25519.pub",
            "id_ed25519-cert.pub",
            "id_ed25519",
            "config",
        ] {
            std::fs::write(dir.join(name), "x").unwrap_or_default();
        }
        let files = public_key_files(&dir);
        assert_eq!(files, vec![dir.join("id_ed25519.pub")]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
