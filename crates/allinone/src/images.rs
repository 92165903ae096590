//! The base images workspaces are built from, made on this machine (ADR 0013): a Debian 12
//! root file system from mmdebstrap (debootstrap as a fallback), cached as a tarball, and
//! busybox from the host's static binary. Each is pushed to the registry once, tagged by its
//! content, and the example blueprints that name them are written for the api-server.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;
use crate::child::{find_program, require_program, run};
use crate::registry::RegistryAccess;

/// The Debian suite of the base.
const SUITE: &str = "bookworm";
/// The Debian mirror used when none is given.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Everything the default blueprint wants is in the base, so building it needs no network
/// (`packages` would run apt inside the build).
const DEBIAN_PACKAGES: &str =
    "bash,ca-certificates,curl,git,less,openssh-client,sudo,vim-tiny,procps,iproute2,busybox";

/// Which base the default blueprint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Base {
    /// Debian 12, made with mmdebstrap (about 35 s and 250 MB, once per cache directory).
    Debian,
    /// busybox only: seconds, no network; for tests and machines without a Debian mirror.
    Busybox,
}

/// Buildah with the provisioner's storage (vfs: works everywhere).
struct Buildah {
    binary: PathBuf,
    storage: PathBuf,
}

impl Buildah {
    fn new(storage: &Path) -> Result<Self, Error> {
        Ok(Self {
            binary: require_program("buildah", "buildah")?,
            storage: storage.to_owned(),
        })
    }

    fn run(&self, args: &[&str]) -> Result<String, Error> {
        let mut command = Command::new(&self.binary);
        command
            .arg("--root")
            .arg(self.storage.join("root"))
            .arg("--runroot")
            .arg(self.storage.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        let what = format!("buildah {}", args.first().copied().unwrap_or_default());
        run(&what, &mut command)
    }

    /// A working container from scratch, `steps` on it, then commit and push as `reference`.
    /// On failure the working container goes (vfs keeps a whole copy of its root file system).
    fn make(
        &self,
        reference: &str,
        registry: &RegistryAccess,
        steps: impl FnOnce(&Self, &str) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let container = self.run(&["from", "scratch"])?;
        let container = container.trim();
        let made = steps(self, container).and_then(|()| self.push(container, reference, registry));
        if made.is_err() {
            let _ = self.run(&["rm", container]);
        }
        made
    }

    /// Commits `container` and pushes it as `reference`; the local copy is dropped.
    fn push(
        &self,
        container: &str,
        reference: &str,
        registry: &RegistryAccess,
    ) -> Result<(), Error> {
        let local = format!("k8shell-base-{}", std::process::id());
        self.run(&["commit", "--format", "oci", "--rm", container, &local])?;
        let target = format!("docker://{reference}");
        let tls = format!("--tls-verify={}", registry.tls_verify);
        let mut push = vec!["push", tls.as_str()];
        if let Some(auth) = registry.auth_file.as_ref().and_then(|p| p.to_str()) {
            push.extend(["--authfile", auth]);
        }
        push.extend([local.as_str(), target.as_str()]);
        let pushed = self.run(&push);
        let _ = self.run(&["rmi", &local]);
        pushed.map(drop)
    }
}

/// True when the registry has `reference`.
fn in_registry(reference: &str, registry: &RegistryAccess) -> bool {
    let Ok(skopeo) = require_program("skopeo", "skopeo") else {
        return false;
    };
    let mut command = Command::new(skopeo);
    command
        .arg("inspect")
        .arg(format!("--tls-verify={}", registry.tls_verify));
    if let Some(auth) = &registry.auth_file {
        command.arg("--authfile").arg(auth);
    }
    command
        .arg("--raw")
        .arg(format!("docker://{reference}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// busybox-static and its applet links; returns the reference.
pub fn ensure_busybox(registry: &RegistryAccess, storage: &Path) -> Result<String, Error> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        return Err(Error::Missing {
            program: "/bin/busybox".to_owned(),
            package: "busybox-static".to_owned(),
        });
    }
    let mut bytes = Vec::new();
    std::fs::File::open(busybox)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io("reading /bin/busybox", e))?;
    let reference = format!("{}/k8shell/busybox:{}", registry.host, short_digest(&bytes));
    if in_registry(&reference, registry) {
        return Ok(reference);
    }
    println!("  making the busybox base image");
    let buildah = Buildah::new(storage)?;
    buildah.make(&reference, registry, |buildah, container| {
        buildah.run(&["copy", container, "/bin/busybox", "/bin/busybox"])?;
        buildah.run(&[
        "run",
        "--isolation",
        "chroot",
        container,
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin /etc /tmp && /bin/busybox --install -s && echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && echo 'root:x:0:' > /etc/group",
        ])?;
        buildah
            .run(&["config", "--env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "--cmd", "/bin/sh", container])
            .map(drop)
    })?;
    Ok(reference)
}

/// Debian 12 from the cached tarball (made first if missing); returns the reference.
pub fn ensure_debian(
    registry: &RegistryAccess,
    storage: &Path,
    cache: &Path,
    mirror: &str,
) -> Result<String, Error> {
    let tarball = cache.join(format!("debian-12-{SUITE}.tar"));
    if !tarball.exists() {
        make_debian_tarball(cache, &tarball, mirror)?;
    }
    let digest = file_digest(&tarball)?;
    let reference = format!("{}/k8shell/debian:12-{digest}", registry.host);
    if in_registry(&reference, registry) {
        return Ok(reference);
    }
    println!("  pushing the Debian base image ({})", tarball.display());
    let buildah = Buildah::new(storage)?;
    let tar = tarball.to_string_lossy();
    buildah.make(&reference, registry, |buildah, container| {
        // `add` unpacks a local tarball (`copy` would not).
        buildah.run(&["add", container, tar.as_ref(), "/"])?;
        buildah
            .run(&[
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env",
                "LANG=C.UTF-8",
                "--cmd",
                "/bin/bash",
                container,
            ])
            .map(drop)
    })?;
    Ok(reference)
}

fn make_debian_tarball(cache: &Path, tarball: &Path, mirror: &str) -> Result<(), Error> {
    std::fs::create_dir_all(cache)
        .map_err(|e| Error::io(format!("creating {}", cache.display()), e))?;
    let partial = tarball.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    if let Some(mmdebstrap) = find_program("mmdebstrap", &["/usr/sbin"]) {
        println!(
            "  making a Debian 12 root file system with mmdebstrap from {mirror} (once; cached in {})",
            cache.display()
        );
        run(
            "mmdebstrap",
            Command::new(mmdebstrap)
                .args(["--quiet", "--variant=minbase", "--format=tar"])
                .arg(format!("--include={DEBIAN_PACKAGES}"))
                .arg(SUITE)
                .arg(&partial)
                .arg(mirror),
        )
        .map_err(offline_hint)?;
    } else if let Some(debootstrap) = find_program("debootstrap", &["/usr/sbin"]) {
        println!(
            "  making a Debian 12 root file system with debootstrap from {mirror} (once; cached in {})",
            cache.display()
        );
        let root = cache.join("debootstrap-root");
        let _ = std::fs::remove_dir_all(&root);
        run(
            "debootstrap",
            Command::new(debootstrap)
                .args(["--variant=minbase"])
                .arg(format!("--include={DEBIAN_PACKAGES}"))
                .arg(SUITE)
                .arg(&root)
                .arg(mirror),
        )
        .map_err(offline_hint)?;
        run(
            "tar",
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&partial)
                .arg("."),
        )?;
        let _ = std::fs::remove_dir_all(&root);
    } else {
        return Err(Error::Missing {
            program: "mmdebstrap".to_owned(),
            package: "mmdebstrap".to_owned(),
        });
    }
    std::fs::rename(&partial, tarball)
        .map_err(|e| Error::io(format!("keeping {}", tarball.display()), e))
}

fn offline_hint(error: Error) -> Error {
    match error {
        Error::Setup { what, detail } => Error::Setup {
            what,
            detail: format!("{detail}\n(no Debian mirror reachable? start with `--base busybox`)"),
        },
        other => other,
    }
}

/// The first 12 hex digits of the SHA-256 of `bytes`.
fn short_digest(bytes: &[u8]) -> String {
    crate::hex(&ring::digest::digest(&ring::digest::SHA256, bytes).as_ref()[..6])
}

fn file_digest(path: &Path) -> Result<String, Error> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Ok(crate::hex(&context.finish().as_ref()[..6]))
}

/// The example blueprints, naming the bases just pushed: `default` (the default workspace's)
/// and `busybox`. Rewritten at each start (the registry address is in them).
pub fn write_blueprints(
    dir: &Path,
    default_base: &str,
    busybox: &str,
    debian: bool,
) -> Result<(), Error> {
    let default = if debian {
        format!(
            r#"# The default workspace: Debian 12 with the everyday tools, from a base made on this
# machine (everything is in the base, so building this needs no network).
{{
  name = "default",
  description = "Debian 12 with bash, git, curl, sudo and vim",
  base = "{default_base}",
  package_manager = 'apt,
  env = {{ LANG = "C.UTF-8", EDITOR = "vi" }},
  user = {{ name = "dev", uid = 1000, gid = 1000, shell = "/bin/bash", sudo = true }},
  files = {{ "/etc/motd" = {{ content = "k8shell workspace (Debian 12)\n" }} }},
  resources = {{ cpu = 2, memory = "4Gi", disk = "20Gi" }},
  idle_timeout = "30m",
}}
"#
        )
    } else {
        format!(
            r#"# The default workspace: busybox (started with `--base busybox`).
{{
  name = "default",
  description = "busybox: a shell and the busybox applets",
  base = "{default_base}",
  user = {{ name = "dev", shell = "/bin/sh" }},
  files = {{ "/etc/motd" = {{ content = "k8shell workspace (busybox)\n" }} }},
  env = {{ PATH = "/bin:/usr/bin:/sbin:/usr/sbin" }},
  resources = {{ cpu = 1, memory = "1Gi", disk = "5Gi" }},
  idle_timeout = "30m",
}}
"#
        )
    };
    let busybox = format!(
        r#"# The smallest workspace: busybox and nothing else; builds in seconds.
{{
  name = "busybox",
  description = "busybox only: a shell, httpd, nc and the other applets",
  base = "{busybox}",
  user = {{ name = "dev", shell = "/bin/sh" }},
  files = {{ "/etc/motd" = {{ content = "busybox workspace\n" }} }},
  env = {{ PATH = "/bin:/usr/bin:/sbin:/usr/sbin" }},
  resources = {{ cpu = 0.5, memory = "256Mi", disk = "1Gi" }},
  idle_timeout = "30m",
}}
"#
    );
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    for (name, text) in [("default.ncl", default), ("busybox.ncl", busybox)] {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    Ok(())
}
