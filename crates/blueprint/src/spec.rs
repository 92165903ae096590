//! `WorkspaceSpec`: a blueprint after the contract, as the image builders and the provisioner use
//! it. The one definition of these types; the Nickel contract (`blueprints/k8shell.ncl`) is the
//! one definition of what is valid.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A workspace's blueprint, checked and normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// OCI image reference with a tag or a digest.
    pub base: String,
    #[serde(default)]
    pub package_manager: PackageManager,
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub setup: Vec<String>,
    /// Absolute path → file. After compilation every file has its `content` (a `source` is read).
    #[serde(default)]
    pub files: BTreeMap<String, FileSpec>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub user: UserSpec,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// e.g. `30m`; `0` never stops.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    #[serde(default)]
    pub home: HomeSpec,
    /// Git URL cloned into the home at first start; empty for none.
    #[serde(default)]
    pub dotfiles: String,
    #[serde(default)]
    pub allow: Allow,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_idle_timeout() -> String {
    "30m".to_owned()
}

/// The base image's package manager (the `oci` builder).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    #[default]
    Apt,
    Apk,
}

/// A file added to the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Relative to the blueprint file; replaced by `content` at compilation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default = "default_mode")]
    pub mode: u32,
    #[serde(default)]
    pub owner: FileOwner,
}

fn default_mode() -> u32 {
    0o644
}

/// Who owns a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileOwner {
    User,
    #[default]
    Root,
}

/// The workspace user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserSpec {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub shell: String,
    pub sudo: bool,
}

/// CPU, memory and disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// Cores; fractions allowed.
    pub cpu: f64,
    /// e.g. `4Gi`.
    pub memory: String,
    pub disk: String,
}

impl Resources {
    pub fn memory_bytes(&self) -> Option<u64> {
        size_bytes(&self.memory)
    }

    pub fn disk_bytes(&self) -> Option<u64> {
        size_bytes(&self.disk)
    }
}

/// A port the workspace serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub name: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub public: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// The home volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeSpec {
    pub size: String,
    /// A home snapshot to start from; empty for an empty home.
    pub template: String,
}

/// What SSH may do (read by the ssh policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Allow {
    pub port_forwarding: bool,
    pub sftp: bool,
    /// Outbound network access; loopback only when false.
    pub egress: bool,
}

// The defaults the contract's docs name.
impl Default for UserSpec {
    fn default() -> Self {
        Self {
            name: "dev".to_owned(),
            uid: 1000,
            gid: 1000,
            shell: "/bin/bash".to_owned(),
            sudo: false,
        }
    }
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu: 2.0,
            memory: "4Gi".to_owned(),
            disk: "20Gi".to_owned(),
        }
    }
}

impl Default for HomeSpec {
    fn default() -> Self {
        Self {
            size: "10Gi".to_owned(),
            template: String::new(),
        }
    }
}

impl Default for Allow {
    fn default() -> Self {
        Self {
            port_forwarding: true,
            sftp: true,
            egress: true,
        }
    }
}

impl WorkspaceSpec {
    /// The idle timeout, or None when the workspace never idles out.
    pub fn idle_timeout(&self) -> Option<Duration> {
        let text = self.idle_timeout.as_str();
        if text == "0" {
            return None;
        }
        let (number, unit) = text.split_at(text.len().checked_sub(1)?);
        let n: u64 = number.parse().ok()?;
        let seconds = match unit {
            "s" => Some(n),
            "m" => n.checked_mul(60),
            "h" => n.checked_mul(3600),
            "d" => n.checked_mul(86_400),
            _ => None,
        }?;
        Some(Duration::from_secs(seconds))
    }
}

/// `512Mi`, `4Gi`, … in bytes.
pub fn size_bytes(text: &str) -> Option<u64> {
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    let n: u64 = number.parse().ok()?;
    let unit = match unit {
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1u64 << 40,
        _ => return None,
    };
    n.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(size_bytes("4Gi"), Some(4 << 30));
        assert_eq!(size_bytes("512Mi"), Some(512 << 20));
        assert_eq!(size_bytes("4G"), None);
        assert_eq!(size_bytes("Gi"), None);
    }
}
