//! The `nix` builder: `nix/blueprint-image.nix` turns the compiled spec into a layered image with
//! nixpkgs' `dockerTools.streamLayeredImage`; the stream is pushed with skopeo. It needs a Nix
//! with nixpkgs (these CI machines have neither); errors say so.

use std::process::{Command, Stdio};

use crate::compile::Compiled;
use crate::oci::{BuildError, Built, OciTarget, Progress};
use crate::registry::{already_pushed, auth_args, is_unauthorized, tool, with_auth_file};

/// The Nix function, as shipped with this build.
pub const BLUEPRINT_IMAGE_NIX: &str = include_str!("../../../nix/blueprint-image.nix");

/// Builds `compiled` with Nix and pushes it to `target`, unless the registry has it already.
pub fn build(
    compiled: &Compiled,
    target: &OciTarget,
    progress: &mut dyn FnMut(Progress),
) -> Result<Built, BuildError> {
    if compiled.spec.user.sudo {
        return Err(BuildError::Step {
            step: "nix builder".to_owned(),
            detail: "`user.sudo = true` needs a setuid sudo, which images built from the Nix store cannot carry: use --builder oci, or set `user.sudo = false`".to_owned(),
        });
    }
    let (target, _auth_file) = with_auth_file(target)?;
    let target = &target;
    let tag = format!("{}-nix", compiled.image_tag());
    let reference = format!("{}:{tag}", target.repository.trim_end_matches('/'));
    if let Some(built) = already_pushed(&reference, target, progress)? {
        return Ok(built);
    }
    let nix = tool("nix", "nix-bin")?;
    let skopeo = tool("skopeo", "skopeo")?;
    let work = tempfile::Builder::new()
        .prefix("k8shell-nix-build-")
        .tempdir()?;
    let function = work.path().join("blueprint-image.nix");
    std::fs::write(&function, BLUEPRINT_IMAGE_NIX)?;
    let spec = work.path().join("spec.json");
    std::fs::write(&spec, &compiled.canonical_json)?;
    progress(Progress::Step("nix build (streamLayeredImage)".to_owned()));
    let out = Command::new(nix)
        .args([
            "--extra-experimental-features",
            "nix-command",
            "build",
            "--impure",
            "--no-link",
            "--print-out-paths",
            "--file",
        ])
        .arg(&function)
        .arg("--argstr")
        .arg("specFile")
        .arg(&spec)
        .args(["--argstr", "tag", &tag, "--argstr", "hash", &compiled.hash])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(BuildError::Step {
            step: "nix build".to_owned(),
            detail: format!(
                "{}\n(the nix builder needs Nix with nixpkgs on NIX_PATH; use --builder oci otherwise)",
                String::from_utf8_lossy(&out.stderr).trim_end()
            ),
        });
    }
    let stream = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    progress(Progress::Step("writing the image archive".to_owned()));
    let archive = work.path().join("image.tar");
    let status = Command::new(&stream)
        .stdout(std::fs::File::create(&archive)?)
        .status()?;
    if !status.success() {
        return Err(BuildError::Step {
            step: stream,
            detail: format!("exited with {status}"),
        });
    }
    progress(Progress::Step(format!("pushing {reference}")));
    let out = Command::new(skopeo)
        .args(["copy", &format!("--dest-tls-verify={}", target.tls_verify)])
        .args(auth_args(target).into_iter().map(|a| {
            if a == "--authfile" {
                "--dest-authfile".to_owned()
            } else {
                a
            }
        }))
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("docker://{reference}"))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines().filter(|l| l.starts_with("Copying")) {
        progress(Progress::Layer(line.to_owned()));
    }
    if out.status.success() {
        Ok(Built {
            reference,
            pushed: true,
        })
    } else {
        let detail = String::from_utf8_lossy(&out.stderr).into_owned();
        if is_unauthorized(&detail) {
            Err(BuildError::Unauthorized {
                registry: target.registry().to_owned(),
            })
        } else {
            Err(BuildError::Step {
                step: "skopeo copy".to_owned(),
                detail,
            })
        }
    }
}
