//! The statically linked k8shelld that scripts/test builds beside the normal build, for tests
//! that run it inside a workspace root (container tests, the local runtime).

use std::path::{Path, PathBuf};

use crate::TestkitError;

const BUILD_STATIC: &str = "build it with\n\n    \
    RUSTFLAGS='-C target-feature=+crt-static' cargo build --target x86_64-unknown-linux-gnu -p k8shell-k8shelld --bin k8shelld\n\n\
    (scripts/test does)";

/// `target/x86_64-unknown-linux-gnu/<profile>/k8shelld`, found from the running test binary
/// (`target/<profile>/deps/<test>`); an error if it is missing, or older than `fresher_than`
/// (the dynamic k8shelld of the same build, for tests of k8shelld itself: a stale binary would
/// test old code).
pub fn static_k8shelld(fresher_than: Option<&Path>) -> Result<PathBuf, TestkitError> {
    let failed = |detail: String| TestkitError::Failed {
        what: "finding the static k8shelld".to_owned(),
        detail,
    };
    let exe =
        std::env::current_exe().map_err(|e| TestkitError::io("finding the test binary", e))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| failed(format!("{} is not in target/<profile>/deps", exe.display())))?;
    let profile = profile_dir.file_name().unwrap_or_default();
    let target_dir = profile_dir.parent().unwrap_or(profile_dir);
    let path = target_dir
        .join("x86_64-unknown-linux-gnu")
        .join(profile)
        .join("k8shelld");
    if !path.exists() {
        return Err(failed(format!(
            "it is missing at {}; {BUILD_STATIC}",
            path.display()
        )));
    }
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let Some(dynamic) = fresher_than
        && let (Some(static_time), Some(dynamic_time)) = (modified(&path), modified(dynamic))
        && static_time < dynamic_time
    {
        return Err(failed(format!(
            "{} is older than the current build; {BUILD_STATIC}",
            path.display()
        )));
    }
    Ok(path)
}
