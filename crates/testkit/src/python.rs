//! Python tools the tests use (paramiko, schemathesis), from the virtual environment that
//! scripts/setup makes outside the clone.

use std::path::PathBuf;
use std::process::Command;

use crate::TestkitError;

/// scripts/setup's virtual environment (`K8SHELL_PYTHON_ENV` overrides).
pub fn python_env() -> PathBuf {
    if let Some(dir) = std::env::var_os("K8SHELL_PYTHON_ENV") {
        return PathBuf::from(dir);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("/root"), PathBuf::from)
                .join(".cache")
        })
        .join("k8shell/python")
}

/// The environment's interpreter, once `module` imports in it.
pub fn python_with(module: &str) -> Result<PathBuf, TestkitError> {
    let python = python_env().join("bin/python");
    let imports = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if imports {
        Ok(python)
    } else {
        Err(TestkitError::Failed {
            what: format!("the Python package {module}"),
            detail: format!(
                "it is not installed in {}; run scripts/setup (it makes that virtual environment)",
                python_env().display()
            ),
        })
    }
}

/// A command the environment installed (`st` of schemathesis), once `module` imports.
pub fn python_tool(module: &str, tool: &str) -> Result<PathBuf, TestkitError> {
    python_with(module)?;
    Ok(python_env().join("bin").join(tool))
}
