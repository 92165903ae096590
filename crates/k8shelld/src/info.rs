//! `Info`: what the workspace is and how it is doing, from /proc and statvfs.

use std::path::Path;

use k8shell_proto::k8shelld::v1::InfoResponse;

use crate::Shared;

/// Gathers the answer; missing sources leave their fields at zero.
pub fn info(shared: &Shared) -> InfoResponse {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let os = os_name(&read("/etc/os-release"));
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let uptime_seconds = read("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(0, |s| s as u64);
    let loads: Vec<f64> = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .filter_map(|s| s.parse().ok())
        .collect();
    let meminfo = read("/proc/meminfo");
    let (home_total_bytes, home_available_bytes) = disk(&shared.account.home);
    InfoResponse {
        workspace_id: shared.config.workspace_id.to_string(),
        user: shared.account.name.clone(),
        os: if os.is_empty() {
            "Linux".to_owned()
        } else {
            os
        },
        kernel,
        uptime_seconds,
        load1: loads.first().copied().unwrap_or_default(),
        load5: loads.get(1).copied().unwrap_or_default(),
        load15: loads.get(2).copied().unwrap_or_default(),
        memory_total_bytes: meminfo_bytes(&meminfo, "MemTotal:"),
        memory_available_bytes: meminfo_bytes(&meminfo, "MemAvailable:"),
        home_total_bytes,
        home_available_bytes,
        k8shelld_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

fn os_name(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default()
}

fn meminfo_bytes(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn disk(path: &Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let fragment = s.fragment_size();
            (s.blocks() * fragment, s.blocks_available() * fragment)
        }
        Err(_) => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_and_meminfo_are_parsed() {
        assert_eq!(
            os_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(
            meminfo_bytes("MemTotal:       1024 kB\n", "MemTotal:"),
            1024 * 1024
        );
    }
}
