//! Finding the binaries of components, or saying how to install them.

use std::path::{Path, PathBuf};

/// A binary the test needs is not installed.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{binary}` is not installed; this test needs it. Install it with:\n\n    \
     sudo apt-get install -y {package}\n\n(or run scripts/setup, which installs everything the tests need)"
)]
pub struct Missing {
    pub binary: String,
    pub package: String,
}

/// The path of `binary` on `PATH` or in one of `extra_dirs`, or an error naming `package`.
pub fn require(binary: &str, package: &str, extra_dirs: &[&Path]) -> Result<PathBuf, Missing> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    extra_dirs
        .iter()
        .map(|d| d.to_path_buf())
        .chain(path_dirs)
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| Missing {
            binary: binary.to_owned(),
            package: package.to_owned(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root (some servers refuse to).
pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_its_package() {
        let err = require("k8shell-no-such-binary", "k8shell-pkg", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("apt-get install -y k8shell-pkg"), "{text}");
        assert!(text.contains("k8shell-no-such-binary"), "{text}");
    }

    #[test]
    fn binaries_are_found_in_extra_dirs() {
        let found = require("sh", "dash", &[Path::new("/bin")]).unwrap();
        assert!(found.ends_with("sh"));
    }
}
