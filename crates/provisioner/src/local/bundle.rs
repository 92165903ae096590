//! The OCI runtime bundle of a workspace: `config.json` (built from oci-spec's defaults, the same
//! as `runc spec`) with k8shelld as init, the home, the socket directory and the limits.

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::runtime::{RuntimeError, WorkspaceRun};

/// Where things are inside the container.
pub const K8SHELLD_IN_CONTAINER: &str = "/.k8shell/k8shelld";
pub const CONFIG_IN_CONTAINER: &str = "/etc/k8shell/k8shelld.toml";
pub const JWKS_IN_CONTAINER: &str = "/etc/k8shell/jwks.json";
pub const RUN_DIR_IN_CONTAINER: &str = "/run/k8shell";
pub const SOCKET_NAME: &str = "k8shelld.sock";

/// Host paths the bundle binds in.
#[derive(Debug)]
pub struct HostPaths<'a> {
    pub k8shelld: &'a Path,
    pub k8shelld_config: &'a Path,
    pub jwks: &'a Path,
    pub home: &'a Path,
    pub run_dir: &'a Path,
    /// `/etc/hosts` naming the workspace's hostname (sudo and others look it up).
    pub hosts: &'a Path,
    /// The host's `/etc/resolv.conf`, as of the start.
    pub resolv_conf: &'a Path,
}

/// The capabilities a workspace keeps (Docker's default set): k8shelld switches to the user,
/// sudo and package managers work, nothing reaches beyond the container.
const CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// The k8shelld configuration of a workspace.
pub fn k8shelld_config(workspace: &WorkspaceRun) -> String {
    format!(
        "workspace_id = \"{id}\"\nuser = \"{user}\"\nunix_socket = \"{run}/{socket}\"\nkill_grace = \"5s\"\n\n[jwks]\nfile = \"{jwks}\"\n",
        id = workspace.id,
        user = workspace.user,
        run = RUN_DIR_IN_CONTAINER,
        socket = SOCKET_NAME,
        jwks = JWKS_IN_CONTAINER,
    )
}

/// Open files for the workspace: up to 65536, within the hard limit this process has (a
/// container cannot be given more than its runtime holds).
fn open_files_limit() -> serde_json::Value {
    use nix::sys::resource::{Resource, getrlimit};
    let hard = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(_, hard)| hard);
    serde_json::json!({"type": "RLIMIT_NOFILE", "soft": hard.min(65536), "hard": hard})
}

/// The runtime spec: k8shelld as PID 1 with the image's environment, new pid, mount, uts, ipc,
/// net and cgroup namespaces, the hostname, bind mounts and, when `limits`, CPU and memory.
pub fn spec(
    workspace: &WorkspaceRun,
    image_env: &[String],
    paths: &HostPaths<'_>,
    limits: bool,
    netns: Option<&Path>,
) -> Result<Spec, RuntimeError> {
    let invalid = |e: serde_json::Error| RuntimeError::Step {
        step: "writing the container's config.json".to_owned(),
        detail: e.to_string(),
    };
    let mut value = serde_json::to_value(Spec::default()).map_err(invalid)?;
    value["hostname"] = workspace.name.clone().into();
    value["root"] = serde_json::json!({"path": "rootfs", "readonly": false});
    let mut env: Vec<String> = image_env.to_vec();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned());
    }
    let capabilities: Vec<&str> = CAPABILITIES.to_vec();
    value["process"] = serde_json::json!({
        "terminal": false,
        "user": {"uid": 0, "gid": 0},
        "args": [K8SHELLD_IN_CONTAINER, "--config", CONFIG_IN_CONTAINER],
        "env": env,
        "cwd": "/",
        "capabilities": {
            "bounding": capabilities, "effective": capabilities, "permitted": capabilities,
        },
        // sudo needs setuid binaries to work.
        "noNewPrivileges": false,
        // runc's default of 1024 open files is too few for k8shelld with hundreds of sessions,
        // and for editors' file watchers; sessions inherit it.
        "rlimits": [open_files_limit()],
    });
    let bind = |source: &Path, destination: &str, readonly: bool| {
        let mut options = vec!["rbind", "rprivate"];
        if readonly {
            options.push("ro");
        }
        serde_json::json!({"destination": destination, "type": "bind", "source": source, "options": options})
    };
    let mounts = value["mounts"]
        .as_array_mut()
        .ok_or_else(|| RuntimeError::Step {
            step: "writing the container's config.json".to_owned(),
            detail: "the default spec has no mounts".to_owned(),
        })?;
    mounts.push(bind(paths.k8shelld, K8SHELLD_IN_CONTAINER, true));
    mounts.push(bind(paths.k8shelld_config, CONFIG_IN_CONTAINER, true));
    mounts.push(bind(paths.jwks, JWKS_IN_CONTAINER, true));
    mounts.push(bind(paths.run_dir, RUN_DIR_IN_CONTAINER, false));
    mounts.push(bind(paths.hosts, "/etc/hosts", true));
    mounts.push(bind(paths.resolv_conf, "/etc/resolv.conf", true));
    mounts.push(bind(
        paths.home,
        &format!("/home/{}", workspace.user),
        false,
    ));
    if let (Some(netns), Some(namespaces)) = (netns, value["linux"]["namespaces"].as_array_mut()) {
        for namespace in namespaces.iter_mut().filter(|n| n["type"] == "network") {
            namespace["path"] = netns.display().to_string().into();
        }
    }
    value["linux"]["cgroupsPath"] = format!("/k8shell/ws-{}", workspace.id.simple()).into();
    value["linux"]["resources"] = if limits {
        let period: u64 = 100_000;
        // At least 1 ms per period: the kernel refuses less.
        let quota = ((workspace.cpu * period as f64) as i64).max(1000);
        serde_json::json!({
            "devices": [{"allow": false, "access": "rwm"}],
            "cpu": {"quota": quota, "period": period},
            "memory": {"limit": i64::try_from(workspace.memory_bytes).unwrap_or(i64::MAX)},
        })
    } else {
        serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]})
    };
    serde_json::from_value(value).map_err(invalid)
}
