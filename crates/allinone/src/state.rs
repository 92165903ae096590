//! The state directory: its lock (one all-in-one per directory), its layout, and the choices
//! made on the first start that later starts must repeat (`allinone.toml`).

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// The locked state directory.
#[derive(Debug)]
pub struct StateDir {
    root: PathBuf,
    lock: File,
}

/// What the first start chose.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The registry child's port: image references stored in the database name it.
    pub registry_port: u16,
    /// The registry child's password (user `k8shell`).
    pub registry_password: String,
    /// The default workspace was made once; deleting it is the user's choice to respect.
    #[serde(default)]
    pub default_workspace_made: bool,
}

impl StateDir {
    /// Creates (0700) and locks `root`. Returns the PID of a previous run that did not stop
    /// cleanly, if the lock file names one.
    pub fn open(root: &Path) -> Result<(Self, Option<u32>), Error> {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        let root = root
            .canonicalize()
            .map_err(|e| Error::io(format!("resolving {}", root.display()), e))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("making {} private", root.display()), e))?;
        let path = root.join("lock");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let mut previous = String::new();
        // The kernel drops the lock when its holder dies, so a held lock is a live run.
        if let Err(e) = lock.try_lock() {
            let _ = lock.read_to_string(&mut previous);
            return Err(match e {
                std::fs::TryLockError::WouldBlock => Error::Locked {
                    dir: root,
                    pid: previous.trim().to_owned(),
                },
                std::fs::TryLockError::Error(e) => {
                    Error::io(format!("locking {}", path.display()), e)
                }
            });
        }
        lock.read_to_string(&mut previous)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let unclean = previous.trim().parse::<u32>().ok();
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| write!(lock, "{}", std::process::id()))
            .and_then(|()| lock.sync_all())
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok((Self { root, lock }, unclean))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<state>/<relative>`, created as a directory.
    pub fn dir(&self, relative: &str) -> Result<PathBuf, Error> {
        let path = self.root.join(relative);
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(path)
    }

    /// `<state>/<relative>`.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// The settings of the first start, or `first` (then saved) when there are none.
    pub fn settings(
        &self,
        first: impl FnOnce() -> Result<Settings, Error>,
    ) -> Result<Settings, Error> {
        let path = self.path("allinone.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| Error::Setup {
                what: format!("reading {}", path.display()),
                detail: format!(
                    "{e}; fix the file or move the state directory away to start afresh"
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let settings = first()?;
                self.save(&settings)?;
                Ok(settings)
            }
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    pub fn save(&self, settings: &Settings) -> Result<(), Error> {
        let path = self.path("allinone.toml");
        let text = toml::to_string(settings).map_err(|e| Error::Setup {
            what: "writing allinone.toml".to_owned(),
            detail: e.to_string(),
        })?;
        write_private(&path, text.as_bytes())
    }

    /// Records a clean stop: the next start has nothing to recover.
    pub fn mark_clean(&mut self) {
        let _ = self.lock.set_len(0);
    }
}

/// Writes a file readable by root only, through a temporary file and a rename.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let temp = path.with_extension("tmp");
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| file.write_all(contents).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&temp, path));
    written.map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_second_open_is_refused_with_the_holders_pid_and_an_unclean_stop_is_noticed() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("state");
        let (mut state, unclean) = StateDir::open(&dir).unwrap();
        assert_eq!(unclean, None);
        match StateDir::open(&dir) {
            Err(Error::Locked { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(state);
        // Not marked clean: the next start is told.
        let (again, unclean) = StateDir::open(&dir).unwrap();
        assert_eq!(unclean, Some(std::process::id()));
        state = again;
        state.mark_clean();
        drop(state);
        let (_state, unclean) = StateDir::open(&dir).unwrap();
        assert_eq!(unclean, None);
    }

    #[test]
    fn settings_are_chosen_once() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_owned();
        let (state, _) = StateDir::open(&dir).unwrap();
        let first = Settings {
            registry_port: 5000,
            registry_password: "pw".to_owned(),
            default_workspace_made: false,
        };
        assert_eq!(state.settings(|| Ok(first.clone())).unwrap(), first);
        let again = state
            .settings(|| panic!("the saved settings are used"))
            .unwrap();
        assert_eq!(again, first);
        let mode = std::fs::metadata(dir.join("allinone.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
