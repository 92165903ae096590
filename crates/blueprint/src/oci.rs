//! The `oci` builder: buildah builds the image from the base (packages, user, setup steps, files,
//! env, labels), and pushes it under a tag that is the blueprint's hash; skopeo asks the registry
//! first, so that an image that exists is neither built nor pushed again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::compile::Compiled;
use crate::registry::{already_pushed, auth_args, is_unauthorized, tool, with_auth_file};
use crate::spec::{FileOwner, PackageManager, WorkspaceSpec};

/// Where and how to push.
#[derive(Clone)]
pub struct OciTarget {
    /// `registry/repository`, e.g. `harbor.example.com/workspaces/rust`.
    pub repository: String,
    /// Verify TLS of the registries (base and target); off only for plain-HTTP test registries.
    pub tls_verify: bool,
    /// `user:password` for the target registry; otherwise the auth file.
    pub credentials: Option<String>,
    /// A docker-style `config.json` with registry credentials (`auths`), if not the default.
    pub auth_file: Option<PathBuf>,
    /// buildah's storage (root and runroot), private to the builder.
    pub storage: PathBuf,
}

impl std::fmt::Debug for OciTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciTarget")
            .field("repository", &self.repository)
            .field("tls_verify", &self.tls_verify)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[redacted]"),
            )
            .field("auth_file", &self.auth_file)
            .field("storage", &self.storage)
            .finish()
    }
}

/// What a build did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// `registry/repository:tag`.
    pub reference: String,
    /// False when the tag existed already and nothing was built.
    pub pushed: bool,
}

/// A build failure.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "`{0}` must be registry/repository (e.g. harbor.example.com/workspaces/rust), without a tag"
    )]
    Target(String),
    #[error(
        "registry {registry} refused the credentials (401/403): check `--creds`, the auth file, or `K8SHELL_REGISTRY_USERNAME`/`K8SHELL_REGISTRY_PASSWORD`"
    )]
    Unauthorized { registry: String },
    #[error("{step} failed:\n{detail}")]
    Step { step: String, detail: String },
    #[error(
        "`{tool}` is not installed; install it with `sudo apt-get install -y {package}` (or run scripts/setup)"
    )]
    Missing { tool: String, package: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Progress of a build, for the user to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A build step began (pull, packages, user, a setup step, files, config, commit, push).
    Step(String),
    /// A line of a tool's output that says something about a layer (`Copying blob …`).
    Layer(String),
}

impl OciTarget {
    pub(crate) fn registry(&self) -> &str {
        self.repository.split('/').next().unwrap_or_default()
    }
}

/// Builds `compiled` and pushes it to `target`, unless the registry has it already.
pub fn build(
    compiled: &Compiled,
    target: &OciTarget,
    progress: &mut dyn FnMut(Progress),
) -> Result<Built, BuildError> {
    let (target, _auth_file) = with_auth_file(target)?;
    let target = &target;
    let repository = target.repository.trim_end_matches('/');
    let last = repository.rsplit('/').next().unwrap_or_default();
    if !repository.contains('/') || last.contains(':') || repository.contains('@') {
        return Err(BuildError::Target(target.repository.clone()));
    }
    let reference = format!("{repository}:{}", compiled.image_tag());
    if let Some(built) = already_pushed(&reference, target, progress)? {
        return Ok(built);
    }
    let buildah = Buildah::new(target)?;
    let spec = &compiled.spec;
    progress(Progress::Step(format!("pulling {}", spec.base)));
    let base_registry = spec.base.split('/').next().unwrap_or_default();
    let mut from = vec![
        "from".to_owned(),
        "--pull".to_owned(),
        format!("--tls-verify={}", target.tls_verify),
        "--quiet".to_owned(),
    ];
    if base_registry == target.registry() {
        from.extend(auth_args(target));
    }
    from.push(spec.base.clone());
    let from: Vec<&str> = from.iter().map(String::as_str).collect();
    let container = match buildah.run_step("pull", &from, progress) {
        Err(BuildError::Step { detail, .. }) if is_unauthorized(&detail) => {
            return Err(BuildError::Unauthorized {
                registry: base_registry.to_owned(),
            });
        }
        other => other?,
    };
    let container = container.trim().to_owned();
    let result = build_in(&buildah, &container, compiled, target, &reference, progress);
    // The working container goes either way.
    let _ = buildah.output(&["rm", &container]);
    result?;
    Ok(Built {
        reference,
        pushed: true,
    })
}

fn build_in(
    buildah: &Buildah,
    container: &str,
    compiled: &Compiled,
    target: &OciTarget,
    reference: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), BuildError> {
    let spec = &compiled.spec;
    let sh = |step: &str, script: &str, progress: &mut dyn FnMut(Progress)| {
        progress(Progress::Step(step.to_owned()));
        buildah.run_step(
            step,
            &[
                "run",
                "--isolation",
                "chroot",
                container,
                "--",
                "/bin/sh",
                "-c",
                script,
            ],
            progress,
        )
    };
    if !spec.packages.is_empty() {
        let packages = spec
            .packages
            .iter()
            .map(|p| shell_quote(p))
            .collect::<Vec<_>>()
            .join(" ");
        let script = match spec.package_manager {
            PackageManager::Apt => format!(
                "export DEBIAN_FRONTEND=noninteractive && apt-get update -qq && apt-get install -y -qq --no-install-recommends {packages} && rm -rf /var/lib/apt/lists/*"
            ),
            PackageManager::Apk => format!("apk add --no-cache {packages}"),
        };
        sh(
            &format!("installing {}", spec.packages.join(" ")),
            &script,
            progress,
        )?;
    }
    sh(
        &format!("adding user {}", spec.user.name),
        &user_script(spec),
        progress,
    )?;
    for (n, step) in spec.setup.iter().enumerate() {
        sh(
            &format!("setup step {} of {}: {step}", n + 1, spec.setup.len()),
            step,
            progress,
        )?;
    }
    if !spec.files.is_empty() {
        // A file path that is a directory in the image would swallow the file silently.
        let check = spec
            .files
            .keys()
            .map(|path| {
                let quoted = shell_quote(path);
                format!("if [ -d {quoted} ]; then echo \"files: \"{quoted}\" is a directory in the base image: name a file\" >&2; exit 1; fi")
            })
            .collect::<Vec<_>>()
            .join("; ");
        sh("checking the file paths", &check, progress)?;
        progress(Progress::Step(format!(
            "adding {} file(s)",
            spec.files.len()
        )));
        let staging = tempfile::Builder::new()
            .prefix("k8shell-files-")
            .tempdir()?;
        for (n, (path, file)) in spec.files.iter().enumerate() {
            let local = staging.path().join(n.to_string());
            std::fs::write(&local, file.content.as_deref().unwrap_or_default())?;
            let owner = match file.owner {
                FileOwner::Root => "0:0".to_owned(),
                FileOwner::User => format!("{}:{}", spec.user.uid, spec.user.gid),
            };
            let mode = format!("{:o}", file.mode);
            let local = local.display().to_string();
            buildah.run_step(
                &format!("adding {path}"),
                &[
                    "copy", "--chown", &owner, "--chmod", &mode, container, &local, path,
                ],
                progress,
            )?;
        }
    }
    progress(Progress::Step("configuring".to_owned()));
    let mut config: Vec<String> = vec!["config".into()];
    let home = format!("/home/{}", spec.user.name);
    for (key, value) in [
        ("HOME", home.as_str()),
        ("USER", spec.user.name.as_str()),
        ("SHELL", spec.user.shell.as_str()),
    ] {
        config.extend(["--env".into(), format!("{key}={value}")]);
    }
    for (key, value) in &spec.env {
        config.extend(["--env".into(), format!("{key}={value}")]);
    }
    config.extend([
        "--user".into(),
        format!("{}:{}", spec.user.uid, spec.user.gid),
    ]);
    config.extend(["--workingdir".into(), home]);
    for port in &spec.ports {
        config.extend([
            "--port".into(),
            format!("{}/{:?}", port.port, port.protocol).to_lowercase(),
        ]);
    }
    let mut labels: Vec<(String, String)> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.push(("dev.k8shell.blueprint.name".into(), spec.name.clone()));
    labels.push(("dev.k8shell.blueprint.hash".into(), compiled.hash.clone()));
    labels.push((
        "dev.k8shell.builder".into(),
        format!("oci/{}", crate::BUILDER_VERSION),
    ));
    for (key, value) in labels {
        config.extend(["--label".into(), format!("{key}={value}")]);
    }
    config.push(container.into());
    let config: Vec<&str> = config.iter().map(String::as_str).collect();
    buildah.run_step("configuring", &config, progress)?;
    progress(Progress::Step("committing".to_owned()));
    let local = format!("localhost/k8shell-build/{}", compiled.image_tag());
    buildah.run_step(
        "commit",
        &["commit", "--format", "oci", "--quiet", container, &local],
        progress,
    )?;
    progress(Progress::Step(format!("pushing {reference}")));
    let mut push = vec![
        "push".to_owned(),
        format!("--tls-verify={}", target.tls_verify),
    ];
    push.extend(auth_args(target));
    push.extend([local.clone(), format!("docker://{reference}")]);
    let push: Vec<&str> = push.iter().map(String::as_str).collect();
    let pushed = buildah.run_step("push", &push, progress);
    let _ = buildah.output(&["rmi", &local]);
    match pushed {
        Err(BuildError::Step { detail, .. }) if is_unauthorized(&detail) => {
            Err(BuildError::Unauthorized {
                registry: target.registry().to_owned(),
            })
        }
        other => other.map(drop),
    }
}

/// Creates the user and its group in /etc/passwd and /etc/group directly (every base has those
/// files, not every base has useradd), its home, and sudo rights if asked.
fn user_script(spec: &WorkspaceSpec) -> String {
    let user = &spec.user;
    // The name is a checked lowercase name and the ids are numbers; the shell is a checked path,
    // quoted all the same.
    let (name, uid, gid) = (&user.name, user.uid, user.gid);
    let shell = shell_quote(&user.shell);
    let mut script = format!(
        "set -e; \
         fail() {{ echo \"$1\" >&2; exit 1; }}; \
         owner=$(awk -F: '$3 == {uid} {{ print $1 }}' /etc/passwd); \
         [ -z \"$owner\" ] || [ \"$owner\" = {name} ] || fail \"uid {uid} belongs to $owner in the base image: choose another uid\"; \
         existing=$(awk -F: '$1 == \"{name}\" {{ print $3 }}' /etc/passwd); \
         [ -z \"$existing\" ] || [ \"$existing\" = {uid} ] || fail \"user {name} exists in the base image with uid $existing: choose another name, or uid $existing\"; \
         grep -q '^{name}:' /etc/group || echo '{name}:x:{gid}:' >> /etc/group; \
         [ -n \"$existing\" ] || printf '%s\\n' \"{name}:x:{uid}:{gid}::/home/{name}:\"{shell} >> /etc/passwd; \
         if [ -f /etc/shadow ]; then grep -q '^{name}:' /etc/shadow || echo '{name}:*:19000::::::' >> /etc/shadow; fi; \
         mkdir -p /home/{name} && chown {uid}:{gid} /home/{name} && chmod 0750 /home/{name}"
    );
    if user.sudo {
        script.push_str(&format!(
            "; mkdir -p /etc/sudoers.d && echo '{name} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/k8shell && chmod 0440 /etc/sudoers.d/k8shell"
        ));
    }
    script
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// buildah with the builder's own storage.
struct Buildah {
    binary: PathBuf,
    storage: Vec<String>,
}

impl Buildah {
    fn new(target: &OciTarget) -> Result<Self, BuildError> {
        let storage: &Path = &target.storage;
        std::fs::create_dir_all(storage)?;
        Ok(Self {
            binary: tool("buildah", "buildah")?,
            storage: vec![
                "--root".to_owned(),
                storage.join("root").display().to_string(),
                "--runroot".to_owned(),
                storage.join("run").display().to_string(),
                "--storage-driver".to_owned(),
                "vfs".to_owned(),
            ],
        })
    }

    fn output(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new(&self.binary)
            .args(&self.storage)
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    /// Runs one step; its output lines about layers become progress; failure says which step.
    fn run_step(
        &self,
        step: &str,
        args: &[&str],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<String, BuildError> {
        let out = self.output(args)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stdout.lines().chain(stderr.lines()) {
            if line.starts_with("Copying blob")
                || line.starts_with("Copying config")
                || line.starts_with("Writing manifest")
            {
                progress(Progress::Layer(line.trim().to_owned()));
            }
        }
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(BuildError::Step {
                step: step.to_owned(),
                detail: format!("{stderr}{stdout}"),
            })
        }
    }
}
