//! Networking of the local runtime: a bridge on the host with outbound NAT, and per workspace a
//! network namespace joined to it by a veth pair on an isolated bridge port (workspaces never
//! reach each other); nftables keeps them from the host's own services and masquerades outbound.
//!
//! ```text
//! host:  <bridge> 10.88.0.1/16 ── veth kv<id> ─┐          isolated ports ↛ each other,
//!                                              │               workspaces ↛ host (input),
//! netns k8shell-<id>:  eth0 10.88.x.y/16 ──────┘               masquerade to the outside
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;
use uuid::Uuid;

use crate::runtime::RuntimeError;

/// The workspace network.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Name of the host bridge (also names the nftables tables).
    pub bridge: String,
    /// The bridge's address; workspaces get the following addresses of its /16.
    pub gateway: Ipv4Addr,
}

impl NetworkConfig {
    fn table(&self) -> String {
        format!("k8shell_{}", self.bridge.replace('-', "_"))
    }
}

async fn run(step: &str, program: &str, args: &[&str]) -> Result<String, RuntimeError> {
    let binary = super::tool(
        program,
        if program == "nft" {
            "nftables"
        } else {
            "iproute2"
        },
    )?;
    let out = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(RuntimeError::io(format!("running {program}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(RuntimeError::Step {
            step: step.to_owned(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

async fn nft(step: &str, script: &str) -> Result<(), RuntimeError> {
    let dir = tempfile::tempdir().map_err(RuntimeError::io("a temp dir for nft"))?;
    let file = dir.path().join("rules.nft");
    std::fs::write(&file, script).map_err(RuntimeError::io("writing nft rules"))?;
    run(step, "nft", &["-f", &file.display().to_string()])
        .await
        .map(drop)
}

/// Creates the bridge, its address, forwarding, NAT and the isolation rules (idempotent).
pub async fn ensure_bridge(config: &NetworkConfig) -> Result<(), RuntimeError> {
    let bridge = config.bridge.as_str();
    if run("ip link show", "ip", &["link", "show", bridge])
        .await
        .is_err()
    {
        run(
            "creating the bridge",
            "ip",
            &["link", "add", bridge, "type", "bridge"],
        )
        .await?;
    }
    let address = format!("{}/16", config.gateway);
    let addresses = run("ip addr show", "ip", &["-4", "addr", "show", "dev", bridge]).await?;
    if !addresses.contains(&address) {
        run(
            "addressing the bridge",
            "ip",
            &["addr", "add", &address, "dev", bridge],
        )
        .await?;
    }
    run(
        "bringing the bridge up",
        "ip",
        &["link", "set", bridge, "up"],
    )
    .await?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(RuntimeError::io("enabling IPv4 forwarding"))?;
    let table = config.table();
    let subnet = format!(
        "{}/16",
        Ipv4Addr::from(u32::from(config.gateway) & 0xffff_0000)
    );
    // Replaced as a whole: `add table` then `delete table` makes the script idempotent.
    let rules = format!(
        "add table inet {table}\ndelete table inet {table}\n\
         table inet {table} {{\n\
           chain input {{\n    type filter hook input priority 0; policy accept;\n\
             iifname \"{bridge}\" ct state established,related accept\n\
             iifname \"{bridge}\" drop\n  }}\n\
           chain forward {{\n    type filter hook forward priority 0; policy accept;\n\
             iifname \"{bridge}\" oifname \"{bridge}\" drop\n\
             oifname \"{bridge}\" ct state established,related accept\n\
             oifname \"{bridge}\" drop\n  }}\n\
           chain postrouting {{\n    type nat hook postrouting priority 100;\n\
             ip saddr {subnet} oifname != \"{bridge}\" masquerade\n  }}\n\
         }}\n"
    );
    nft("installing the workspace firewall", &rules).await
}

/// Removes the bridge and its rules (when the runtime is torn down).
pub async fn remove_bridge(config: &NetworkConfig) -> Result<(), RuntimeError> {
    let table = config.table();
    let _ = nft(
        "removing the firewall",
        &format!("add table inet {table}\ndelete table inet {table}\n"),
    )
    .await;
    match run(
        "removing the bridge",
        "ip",
        &["link", "del", &config.bridge],
    )
    .await
    {
        Err(RuntimeError::Step { detail, .. }) if detail.contains("Cannot find device") => Ok(()),
        other => other.map(drop),
    }
}

fn netns_name(workspace: Uuid) -> String {
    format!("k8shell-{}", workspace.simple())
}

/// The path runc joins.
pub fn netns_path(workspace: Uuid) -> PathBuf {
    Path::new("/var/run/netns").join(netns_name(workspace))
}

fn veth_name(workspace: Uuid) -> String {
    // Interface names are at most 15 bytes.
    let simple = workspace.simple().to_string();
    format!("kv{}", &simple[simple.len() - 12..])
}

/// The address of a workspace: stored beside it, or the first free one.
pub fn address(
    config: &NetworkConfig,
    workspaces_dir: &Path,
    workspace: Uuid,
) -> Result<Ipv4Addr, RuntimeError> {
    let mine = workspaces_dir.join(workspace.to_string()).join("address");
    if let Ok(text) = std::fs::read_to_string(&mine)
        && let Ok(address) = text.trim().parse()
    {
        return Ok(address);
    }
    let mut taken = std::collections::BTreeSet::new();
    for entry in
        std::fs::read_dir(workspaces_dir).map_err(RuntimeError::io("listing workspaces"))?
    {
        let path = entry
            .map_err(RuntimeError::io("listing workspaces"))?
            .path()
            .join("address");
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(address) = text.trim().parse::<Ipv4Addr>()
        {
            taken.insert(address);
        }
    }
    let base = u32::from(config.gateway);
    let network = base & 0xffff_0000;
    let free = (1..0xfffe_u32)
        .map(|n| Ipv4Addr::from(network | n))
        .find(|a| *a != config.gateway && !taken.contains(a))
        .ok_or_else(|| RuntimeError::Step {
            step: "allocating an address".to_owned(),
            detail: "the workspace network is full".to_owned(),
        })?;
    std::fs::create_dir_all(mine.parent().unwrap_or(workspaces_dir))
        .map_err(RuntimeError::io("creating the workspace directory"))?;
    std::fs::write(&mine, free.to_string()).map_err(RuntimeError::io("recording the address"))?;
    Ok(free)
}

/// The workspace's namespace with its end of a veth pair (idempotent).
pub async fn attach(
    config: &NetworkConfig,
    workspace: Uuid,
    address: Ipv4Addr,
) -> Result<(), RuntimeError> {
    let netns = netns_name(workspace);
    if netns_path(workspace).exists() {
        return Ok(());
    }
    let veth = veth_name(workspace);
    let peer = format!("{veth}p");
    run(
        "creating the network namespace",
        "ip",
        &["netns", "add", &netns],
    )
    .await?;
    let result = async {
        let _ = run("clearing an old veth", "ip", &["link", "del", &veth]).await;
        run(
            "creating the veth",
            "ip",
            &["link", "add", &veth, "type", "veth", "peer", "name", &peer],
        )
        .await?;
        run(
            "joining the bridge",
            "ip",
            &["link", "set", &veth, "master", &config.bridge, "up"],
        )
        .await?;
        // Isolated bridge ports reach the bridge (the gateway), never each other.
        run(
            "isolating the port",
            "ip",
            &[
                "link",
                "set",
                "dev",
                &veth,
                "type",
                "bridge_slave",
                "isolated",
                "on",
            ],
        )
        .await?;
        run(
            "moving the veth",
            "ip",
            &["link", "set", &peer, "netns", &netns],
        )
        .await?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", netns.as_str(), "ip"];
            all.extend_from_slice(args);
            all.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()
        };
        for args in [
            inside(&["link", "set", &peer, "name", "eth0"]),
            inside(&["addr", "add", &format!("{address}/16"), "dev", "eth0"]),
            inside(&["link", "set", "eth0", "up"]),
            inside(&["link", "set", "lo", "up"]),
            inside(&[
                "route",
                "add",
                "default",
                "via",
                &config.gateway.to_string(),
            ]),
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run("configuring the workspace network", "ip", &args).await?;
        }
        Ok::<(), RuntimeError>(())
    }
    .await;
    if result.is_err() {
        let _ = detach(workspace).await;
    }
    result
}

/// Removes the namespace; the veth pair goes with it.
pub async fn detach(workspace: Uuid) -> Result<(), RuntimeError> {
    if !netns_path(workspace).exists() {
        return Ok(());
    }
    run(
        "removing the network namespace",
        "ip",
        &["netns", "del", &netns_name(workspace)],
    )
    .await
    .map(drop)
}
