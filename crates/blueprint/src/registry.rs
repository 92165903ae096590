//! What both builders ask of registries: does the tag exist, with which credentials, and what a
//! refusal looks like.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::oci::{BuildError, Built, OciTarget, Progress};

/// Credentials given as `user:password` go to the tools in a private temporary auth file (mode
/// 0600), never on their command lines, where `ps` would show them. Returns the target to use
/// and the file to keep until the build ends.
pub(crate) fn with_auth_file(
    target: &OciTarget,
) -> Result<(OciTarget, Option<tempfile::NamedTempFile>), BuildError> {
    use base64::Engine as _;
    use std::io::Write as _;
    let Some(credentials) = &target.credentials else {
        return Ok((target.clone(), None));
    };
    let token = base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes());
    let auths = serde_json::json!({"auths": {target.registry(): {"auth": token}}});
    let mut file = tempfile::Builder::new()
        .prefix("k8shell-auth-")
        .suffix(".json")
        .tempfile()?;
    file.write_all(auths.to_string().as_bytes())?;
    file.flush()?;
    let mut with_file = target.clone();
    with_file.credentials = None;
    with_file.auth_file = Some(file.path().to_owned());
    Ok((with_file, Some(file)))
}

pub(crate) fn auth_args(target: &OciTarget) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(creds) = &target.credentials {
        args.extend(["--creds".to_owned(), creds.clone()]);
    } else if let Some(file) = &target.auth_file {
        args.extend(["--authfile".to_owned(), file.display().to_string()]);
    }
    args
}

pub(crate) fn is_unauthorized(detail: &str) -> bool {
    // containers/image words a refusal like these; a bare "401" could be part of a digest.
    let lower = detail.to_lowercase();
    lower.contains("unauthorized")
        || lower.contains("authentication required")
        || lower.contains("invalid username/password")
        || lower.contains("403 (forbidden)")
        || lower.contains("403 forbidden")
}

/// Whether the registry has `reference` (skopeo; anonymous, basic and bearer-token auth).
pub(crate) fn exists(reference: &str, target: &OciTarget) -> Result<bool, BuildError> {
    let skopeo = tool("skopeo", "skopeo")?;
    let mut command = Command::new(skopeo);
    command.args([
        "inspect",
        "--raw",
        &format!("--tls-verify={}", target.tls_verify),
    ]);
    command.args(auth_args(target));
    command.arg(format!("docker://{reference}"));
    let out = command.stdin(Stdio::null()).output()?;
    if out.status.success() {
        return Ok(true);
    }
    let detail = String::from_utf8_lossy(&out.stderr).into_owned();
    if is_unauthorized(&detail) {
        return Err(BuildError::Unauthorized {
            registry: target.registry().to_owned(),
        });
    }
    let lower = detail.to_lowercase();
    if lower.contains("manifest unknown")
        || lower.contains("not found")
        || lower.contains("name unknown")
    {
        Ok(false)
    } else {
        Err(BuildError::Step {
            step: format!("asking the registry for {reference}"),
            detail,
        })
    }
}

pub(crate) fn tool(name: &str, package: &str) -> Result<PathBuf, BuildError> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| BuildError::Missing {
            tool: name.to_owned(),
            package: package.to_owned(),
        })
}

/// The build's answer when the registry has `reference` already (nothing to build or push).
pub(crate) fn already_pushed(
    reference: &str,
    target: &OciTarget,
    progress: &mut dyn FnMut(Progress),
) -> Result<Option<Built>, BuildError> {
    progress(Progress::Step(format!("looking for {reference}")));
    if !exists(reference, target)? {
        return Ok(None);
    }
    progress(Progress::Step(format!(
        "{reference} exists: nothing to build"
    )));
    Ok(Some(Built {
        reference: reference.to_owned(),
        pushed: false,
    }))
}
