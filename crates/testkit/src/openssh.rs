//! OpenSSH's own clients (`ssh`, `scp`, `sftp`, `ssh-keygen`) pointed at a server under test,
//! with a private key, a known_hosts file holding the server's key, and none of the developer's
//! own configuration, agent or keys.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TestkitError;
use crate::binaries::require;

const PACKAGE: &str = "openssh-client";

/// A client home: keys, known_hosts, and the server's port.
#[derive(Debug)]
pub struct SshClient {
    dir: tempfile::TempDir,
    port: u16,
    host: String,
}

impl SshClient {
    /// A client for the server at `host:port`, whose host key (an authorized_keys-style line,
    /// `ssh-ed25519 AAAA…`) is trusted; host keys are then checked strictly.
    pub fn new(host: &str, port: u16, host_key: &str) -> Result<Self, TestkitError> {
        let dir = tempfile::tempdir().map_err(|e| TestkitError::io("client dir", e))?;
        let known = format!("[{host}]:{port} {}\n", host_key.trim());
        std::fs::write(dir.path().join("known_hosts"), known)
            .map_err(|e| TestkitError::io("known_hosts", e))?;
        Ok(Self {
            dir,
            port,
            host: host.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Makes an Ed25519 key pair `name` (once); returns the private key's path.
    pub fn keygen(&self, name: &str) -> Result<PathBuf, TestkitError> {
        let key = self.dir.path().join(name);
        if !key.exists() {
            let status = Command::new(require("ssh-keygen", PACKAGE, &[])?)
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&key)
                .status()
                .map_err(|e| TestkitError::io("ssh-keygen", e))?;
            if !status.success() {
                return Err(TestkitError::Failed {
                    what: "ssh-keygen".into(),
                    detail: status.to_string(),
                });
            }
        }
        Ok(key)
    }

    /// The public half of key `name` as an authorized_keys line.
    pub fn public_key(&self, name: &str) -> Result<String, TestkitError> {
        let path = self.keygen(name)?.with_extension("pub");
        std::fs::read_to_string(&path)
            .map(|k| k.trim().to_owned())
            .map_err(|e| TestkitError::io(path.display().to_string(), e))
    }

    /// Options every tool gets: this client's files only, strict host keys, no agent.
    fn options(&self, key: &Path) -> Vec<String> {
        let known = self.dir.path().join("known_hosts");
        [
            "-F".to_owned(),
            "/dev/null".to_owned(),
            "-i".to_owned(),
            key.display().to_string(),
            "-o".to_owned(),
            "IdentitiesOnly=yes".to_owned(),
            "-o".to_owned(),
            "IdentityAgent=none".to_owned(),
            "-o".to_owned(),
            format!("UserKnownHostsFile={}", known.display()),
            "-o".to_owned(),
            "GlobalKnownHostsFile=/dev/null".to_owned(),
            "-o".to_owned(),
            "StrictHostKeyChecking=yes".to_owned(),
            "-o".to_owned(),
            "ConnectTimeout=20".to_owned(),
            "-o".to_owned(),
            "LogLevel=ERROR".to_owned(),
        ]
        .into()
    }

    fn tool(&self, name: &str) -> Result<Command, TestkitError> {
        let mut command = Command::new(require(name, PACKAGE, &[])?);
        command
            .env("HOME", self.dir.path())
            .env_remove("SSH_AUTH_SOCK");
        Ok(command)
    }

    /// `ssh -p PORT … user@host` with key `key`; add options and the command.
    pub fn ssh(&self, key: &str, user: &str) -> Result<Command, TestkitError> {
        let key = self.keygen(key)?;
        let mut command = self.tool("ssh")?;
        command
            .args(self.options(&key))
            .args(["-o", "BatchMode=yes", "-p", &self.port.to_string()])
            .arg(format!("{user}@{}", self.host));
        Ok(command)
    }

    /// `ssh` with options before the destination (forwards, `-tt`, `-N`, …). OpenSSH keeps the
    /// first value of an option, so `BatchMode=no` among them replaces the default `yes`.
    pub fn ssh_with(
        &self,
        key: &str,
        user: &str,
        options: &[&str],
    ) -> Result<Command, TestkitError> {
        let key = self.keygen(key)?;
        let mut command = self.tool("ssh")?;
        command.args(options);
        if !options.contains(&"BatchMode=no") {
            command.args(["-o", "BatchMode=yes"]);
        }
        command
            .args(self.options(&key))
            .args(["-p", &self.port.to_string()])
            .arg(format!("{user}@{}", self.host));
        Ok(command)
    }

    /// `scp -P PORT …`; remote paths are `remote(user, path)`.
    pub fn scp(&self, key: &str) -> Result<Command, TestkitError> {
        let key = self.keygen(key)?;
        let mut command = self.tool("scp")?;
        command.args(self.options(&key)).args([
            "-o",
            "BatchMode=yes",
            "-P",
            &self.port.to_string(),
        ]);
        Ok(command)
    }

    /// `user@host:path` for scp.
    pub fn remote(&self, user: &str, path: &str) -> String {
        format!("{user}@{}:{path}", self.host)
    }

    /// `sftp -P PORT -b BATCH user@host`.
    pub fn sftp_batch(&self, key: &str, user: &str, batch: &Path) -> Result<Command, TestkitError> {
        let key = self.keygen(key)?;
        let mut command = self.tool("sftp")?;
        command
            .args(self.options(&key))
            .args(["-o", "BatchMode=yes", "-P", &self.port.to_string(), "-b"])
            .arg(batch)
            .arg(format!("{user}@{}", self.host));
        Ok(command)
    }
}
