//! runc, with its state in the provisioner's own directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::runtime::RuntimeError;

/// A container's state as runc reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Absent,
    Created,
    Running,
    Paused,
    Stopped,
}

#[derive(Debug, Clone)]
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
}

impl Runc {
    pub fn new(root: PathBuf) -> Result<Self, RuntimeError> {
        Ok(Self {
            binary: super::tool("runc", "runc")?,
            root,
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--root").arg(&self.root).stdin(Stdio::null());
        command
    }

    async fn checked(&self, step: &str, args: &[&str]) -> Result<String, RuntimeError> {
        let out = self
            .command()
            .args(args)
            .output()
            .await
            .map_err(RuntimeError::io(format!("running runc {step}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(RuntimeError::Step {
                step: format!("runc {step}"),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// Starts the container detached; its output goes to `log` (a pipe would stay open until
    /// the container exits).
    pub async fn run(&self, id: &str, bundle: &Path, log: &Path) -> Result<(), RuntimeError> {
        let file = std::fs::File::create(log)
            .map_err(RuntimeError::io(format!("creating {}", log.display())))?;
        let err = file
            .try_clone()
            .map_err(RuntimeError::io("duplicating the log handle"))?;
        let status = self
            .command()
            .args(["run", "--detach", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdout(file)
            .stderr(err)
            .status()
            .await
            .map_err(RuntimeError::io("running runc run"))?;
        if status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Step {
                step: "runc run".to_owned(),
                detail: std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            })
        }
    }

    pub async fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let out = self
            .command()
            .args(["state", id])
            .output()
            .await
            .map_err(RuntimeError::io("running runc state"))?;
        if !out.status.success() {
            let detail = String::from_utf8_lossy(&out.stderr);
            if detail.contains("does not exist") || detail.contains("not exist") {
                return Ok(ContainerState::Absent);
            }
            return Err(RuntimeError::Step {
                step: "runc state".to_owned(),
                detail: detail.trim().to_owned(),
            });
        }
        let state: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| RuntimeError::Step {
                step: "runc state".to_owned(),
                detail: e.to_string(),
            })?;
        Ok(match state["status"].as_str() {
            Some("running") => ContainerState::Running,
            Some("created") => ContainerState::Created,
            Some("paused") => ContainerState::Paused,
            _ => ContainerState::Stopped,
        })
    }

    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        match self.checked("kill", &["kill", id, signal]).await {
            // Already gone is what we wanted.
            Err(RuntimeError::Step { detail, .. })
                if detail.contains("not running") || detail.contains("does not exist") =>
            {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    pub async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        match self.checked("delete", &["delete", "--force", id]).await {
            Err(RuntimeError::Step { detail, .. }) if detail.contains("does not exist") => Ok(()),
            other => other.map(drop),
        }
    }
}
