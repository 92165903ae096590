//! The local runtime, the embedded default: each workspace is a runc container on this host, with
//! k8shelld as its init serving on a Unix socket in the workspace's own host directory.
//!
//! ```text
//! <state>/images/                        OCI layout shared by all workspaces (skopeo)
//! <state>/runc/                          runc's state
//! <state>/workspaces/<id>/bundle/        config.json and rootfs/ (umoci)
//! <state>/workspaces/<id>/home/          the user's home, kept across stop and start
//! <state>/workspaces/<id>/run/           k8shelld.sock
//! <state>/workspaces/<id>/image          the image the rootfs came from
//! ```
//!
//! With a [`NetworkConfig`], each workspace has its own network namespace on a bridge with
//! outbound NAT (see `network`); without one, loopback only.

mod bundle;
mod image;
mod network;
mod runc;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use uuid::Uuid;

pub use image::{ImageCache, RegistryAccess};
pub use network::NetworkConfig;
use runc::{ContainerState, Runc};

use crate::runtime::{Endpoint, Observed, Runtime, RuntimeError, RuntimeFuture, WorkspaceRun};

/// The local runtime's configuration.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Everything the runtime keeps (images, bundles, homes, runc state).
    pub state_dir: PathBuf,
    /// The static k8shelld, bind-mounted read-only as every container's init.
    pub k8shelld: PathBuf,
    /// The JWKS k8shelld checks session tokens with (identity's keys).
    pub jwks_file: PathBuf,
    pub registry: RegistryAccess,
    /// How long k8shelld gets to end its sessions before it is killed.
    pub stop_grace: Duration,
    /// The workspace network; None gives workspaces loopback only.
    pub network: Option<NetworkConfig>,
}

/// Workspaces as runc containers.
#[derive(Debug)]
pub struct LocalRuntime {
    config: LocalConfig,
    images: ImageCache,
    runc: Runc,
    bridge_ready: tokio::sync::OnceCell<()>,
    /// Address allocation reads and writes the workspaces' address files: one at a time.
    addressing: tokio::sync::Mutex<()>,
}

fn tool(name: &str, package: &str) -> Result<PathBuf, RuntimeError> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| RuntimeError::Missing {
            tool: name.to_owned(),
            package: package.to_owned(),
        })
}

impl LocalRuntime {
    pub fn new(config: LocalConfig) -> Result<Self, RuntimeError> {
        for dir in ["runc", "workspaces"] {
            let path = config.state_dir.join(dir);
            std::fs::create_dir_all(&path)
                .map_err(RuntimeError::io(format!("creating {}", path.display())))?;
        }
        std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(RuntimeError::io("securing the state directory"))?;
        Ok(Self {
            images: ImageCache::new(config.state_dir.join("images"), config.registry.clone()),
            runc: Runc::new(config.state_dir.join("runc"))?,
            bridge_ready: tokio::sync::OnceCell::new(),
            addressing: tokio::sync::Mutex::new(()),
            config,
        })
    }

    fn dir(&self, workspace: Uuid) -> PathBuf {
        self.config
            .state_dir
            .join("workspaces")
            .join(workspace.to_string())
    }

    fn container_id(workspace: Uuid) -> String {
        format!("k8shell-{}", workspace.simple())
    }

    /// The socket of a workspace's k8shelld.
    pub fn socket(&self, workspace: Uuid) -> PathBuf {
        self.dir(workspace).join("run").join(bundle::SOCKET_NAME)
    }

    /// Image pulled, root file system unpacked (again if the image changed), home and run
    /// directories made.
    async fn prepare(&self, workspace: &WorkspaceRun) -> Result<Vec<String>, RuntimeError> {
        let dir = self.dir(workspace.id);
        let image_config = self.images.pull(&workspace.image).await?;
        let bundle = dir.join("bundle");
        let marker = dir.join("image");
        let unpacked = std::fs::read_to_string(&marker).ok();
        if unpacked.as_deref() != Some(workspace.image.as_str()) || !bundle.join("rootfs").exists()
        {
            std::fs::create_dir_all(&dir)
                .map_err(RuntimeError::io("creating the workspace directory"))?;
            // Unpacked beside, then swapped in: a crash leaves the old root or the new one.
            let fresh = dir.join("bundle.new");
            let _ = std::fs::remove_dir_all(&fresh);
            std::fs::create_dir_all(&fresh).map_err(RuntimeError::io("creating the bundle"))?;
            self.images
                .unpack(&workspace.image, &fresh.join("rootfs"))
                .await?;
            let _ = std::fs::remove_dir_all(&bundle);
            std::fs::rename(&fresh, &bundle).map_err(RuntimeError::io("installing the bundle"))?;
            std::fs::write(&marker, &workspace.image)
                .map_err(RuntimeError::io("recording the image"))?;
        }
        for sub in ["home", "run"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(RuntimeError::io(format!("creating {sub}")))?;
        }
        let home = dir.join("home");
        std::os::unix::fs::chown(&home, Some(workspace.uid), Some(workspace.gid))
            .map_err(RuntimeError::io("giving the home to the workspace user"))?;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o750))
            .map_err(RuntimeError::io("securing the home"))?;
        // Only root on the host (the proxies) may reach k8shelld's socket.
        std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o700))
            .map_err(RuntimeError::io("securing the socket directory"))?;
        std::fs::write(
            dir.join("k8shelld.toml"),
            bundle::k8shelld_config(workspace),
        )
        .map_err(RuntimeError::io("writing k8shelld's configuration"))?;
        Ok(image_config.env)
    }

    /// The workspace's address on the workspace network, if there is one.
    pub fn address(&self, workspace: Uuid) -> Option<std::net::Ipv4Addr> {
        std::fs::read_to_string(self.dir(workspace).join("address"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Joins the workspace to the network (bridge made on first use); returns its namespace.
    async fn attach_network(&self, workspace: Uuid) -> Result<Option<PathBuf>, RuntimeError> {
        let Some(network) = &self.config.network else {
            return Ok(None);
        };
        self.bridge_ready
            .get_or_try_init(|| network::ensure_bridge(network))
            .await?;
        let _one_at_a_time = self.addressing.lock().await;
        let address = network::address(
            network,
            &self.config.state_dir.join("workspaces"),
            workspace,
        )?;
        network::attach(network, workspace, address).await?;
        Ok(Some(network::netns_path(workspace)))
    }

    /// Removes the bridge and its firewall rules (the runtime is being taken down).
    pub async fn remove_network(&self) -> Result<(), RuntimeError> {
        match &self.config.network {
            Some(network) => network::remove_bridge(network).await,
            None => Ok(()),
        }
    }

    async fn write_spec(
        &self,
        workspace: &WorkspaceRun,
        env: &[String],
        limits: bool,
        netns: Option<&Path>,
    ) -> Result<(), RuntimeError> {
        let dir = self.dir(workspace.id);
        let hosts = dir.join("hosts");
        std::fs::write(
            &hosts,
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
                workspace.name
            ),
        )
        .map_err(RuntimeError::io("writing the workspace's /etc/hosts"))?;
        let resolv_conf = dir.join("resolv.conf");
        let resolvers = std::fs::read("/etc/resolv.conf").unwrap_or_default();
        std::fs::write(&resolv_conf, resolvers)
            .map_err(RuntimeError::io("writing the workspace's /etc/resolv.conf"))?;
        let paths = bundle::HostPaths {
            k8shelld: &self.config.k8shelld,
            k8shelld_config: &dir.join("k8shelld.toml"),
            jwks: &self.config.jwks_file,
            home: &dir.join("home"),
            run_dir: &dir.join("run"),
            hosts: &hosts,
            resolv_conf: &resolv_conf,
        };
        let spec = bundle::spec(workspace, env, &paths, limits, netns)?;
        spec.save(dir.join("bundle").join("config.json"))
            .map_err(|e| RuntimeError::Step {
                step: "writing config.json".to_owned(),
                detail: e.to_string(),
            })
    }

    async fn start_inner(&self, workspace: &WorkspaceRun) -> Result<Endpoint, RuntimeError> {
        let id = Self::container_id(workspace.id);
        let socket = self.socket(workspace.id);
        match self.runc.state(&id).await? {
            ContainerState::Running => return Ok(Endpoint::Unix(socket)),
            ContainerState::Absent => {}
            // A container that exited (or a start that crashed half-way): clear it first.
            _ => self.runc.delete(&id).await?,
        }
        let env = self.prepare(workspace).await?;
        // A blueprint that forbids egress gets loopback only, in a namespace of its own.
        let netns = if workspace.egress {
            self.attach_network(workspace.id).await?
        } else {
            None
        };
        let netns = netns.as_deref();
        let _ = std::fs::remove_file(&socket);
        let dir = self.dir(workspace.id);
        let log = dir.join("container.log");
        self.write_spec(workspace, &env, true, netns).await?;
        if let Err(error) = self.runc.run(&id, &dir.join("bundle"), &log).await {
            if !error.to_string().contains("cgroup") {
                let _ = self.runc.delete(&id).await;
                return Err(error);
            }
            // The host's cgroups refuse the limits: run without, and say so in the status.
            tracing::warn!(workspace = %workspace.id, %error, "starting without CPU and memory limits");
            let _ = self.runc.delete(&id).await;
            self.write_spec(workspace, &env, false, netns).await?;
            self.runc.run(&id, &dir.join("bundle"), &log).await?;
            std::fs::write(dir.join("limits-not-applied"), error.to_string())
                .map_err(RuntimeError::io("recording the missing limits"))?;
        } else {
            let _ = std::fs::remove_file(dir.join("limits-not-applied"));
        }
        Ok(Endpoint::Unix(socket))
    }

    async fn stop_inner(&self, workspace: Uuid) -> Result<(), RuntimeError> {
        let id = Self::container_id(workspace);
        if self.runc.state(&id).await? == ContainerState::Running {
            // k8shelld ends its sessions on SIGTERM (with their own grace), then exits.
            self.runc.kill(&id, "TERM").await?;
            let deadline = tokio::time::Instant::now() + self.config.stop_grace;
            while tokio::time::Instant::now() < deadline
                && self.runc.state(&id).await? == ContainerState::Running
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.runc.kill(&id, "KILL").await?;
        }
        self.runc.delete(&id).await
    }

    async fn observe_inner(&self, workspace: Uuid) -> Result<Observed, RuntimeError> {
        let id = Self::container_id(workspace);
        let dir = self.dir(workspace);
        Ok(match self.runc.state(&id).await? {
            ContainerState::Running => Observed::Running {
                endpoint: Endpoint::Unix(self.socket(workspace)),
                warnings: std::fs::read_to_string(dir.join("limits-not-applied"))
                    .map(|e| vec![format!("CPU and memory limits could not be applied: {e}")])
                    .unwrap_or_default(),
            },
            _ if dir.exists() => Observed::Stopped,
            _ => Observed::Absent,
        })
    }
}

impl Runtime for LocalRuntime {
    fn start<'a>(&'a self, workspace: &'a WorkspaceRun) -> RuntimeFuture<'a, Endpoint> {
        Box::pin(self.start_inner(workspace))
    }

    fn stop<'a>(&'a self, workspace: Uuid) -> RuntimeFuture<'a, ()> {
        Box::pin(self.stop_inner(workspace))
    }

    fn delete<'a>(&'a self, workspace: Uuid) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            self.stop_inner(workspace).await?;
            network::detach(workspace).await?;
            let dir = self.dir(workspace);
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(RuntimeError::io(format!("removing {}", dir.display()))(e))
                }
                _ => Ok(()),
            }
        })
    }

    fn observe<'a>(&'a self, workspace: Uuid) -> RuntimeFuture<'a, Observed> {
        Box::pin(self.observe_inner(workspace))
    }
}

/// Whether `path` is a mount point (for the tests' "nothing left behind").
pub fn is_mounted(path: &Path) -> bool {
    let target = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| {
            info.lines()
                .any(|line| line.split(' ').nth(4) == Some(target.as_str()))
        })
        .unwrap_or(false)
}
