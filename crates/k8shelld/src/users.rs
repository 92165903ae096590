//! The workspace user, read from `/etc/passwd` and `/etc/group` directly: k8shelld is linked
//! statically, and glibc's NSS does not work in a static binary.

use std::path::{Path, PathBuf};

/// A user account, with everything needed to run a process as it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
    /// Primary and supplementary groups.
    pub groups: Vec<u32>,
}

/// Why an account could not be found.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("user {user:?} is not in {path}")]
    NoSuchUser { user: String, path: PathBuf },
    #[error("{path}:{line}: malformed entry")]
    Malformed { path: PathBuf, line: usize },
}

/// Looks `user` up in the passwd and group files.
pub fn lookup(user: &str, passwd: &Path, group: &Path) -> Result<Account, AccountError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| AccountError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let passwd_text = read(passwd)?;
    let mut account = None;
    for (index, line) in passwd_text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&user) {
            continue;
        }
        let malformed = || AccountError::Malformed {
            path: passwd.to_owned(),
            line: index + 1,
        };
        let [name, _pw, uid, gid, _gecos, home, shell] = fields[..] else {
            return Err(malformed());
        };
        let shell = if shell.is_empty() { "/bin/sh" } else { shell };
        account = Some(Account {
            name: name.to_owned(),
            uid: uid.parse().map_err(|_| malformed())?,
            gid: gid.parse().map_err(|_| malformed())?,
            home: PathBuf::from(if home.is_empty() { "/" } else { home }),
            shell: PathBuf::from(shell),
            groups: Vec::new(),
        });
        break;
    }
    let mut account = account.ok_or_else(|| AccountError::NoSuchUser {
        user: user.to_owned(),
        path: passwd.to_owned(),
    })?;
    account.groups.push(account.gid);
    // A missing group file only means no supplementary groups (minimal images).
    let group_text = match std::fs::read_to_string(group) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(AccountError::Read {
                path: group.to_owned(),
                source,
            });
        }
    };
    for line in group_text.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let [_name, _pw, gid, members] = fields[..] else {
            continue;
        };
        let Ok(gid) = gid.parse::<u32>() else {
            continue;
        };
        if members.split(',').any(|m| m == user) && !account.groups.contains(&gid) {
            account.groups.push(gid);
        }
    }
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_and_groups_are_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        let group = dir.path().join("group");
        std::fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/bash\ndev:x:1000:1000:Dev:/home/dev:\n",
        )
        .unwrap();
        std::fs::write(
            &group,
            "root:x:0:\ndev:x:1000:\ndocker:x:999:ops,dev\nwheel:x:10:root\n",
        )
        .unwrap();
        let dev = lookup("dev", &passwd, &group).unwrap();
        assert_eq!(dev.uid, 1000);
        assert_eq!(dev.home, PathBuf::from("/home/dev"));
        assert_eq!(
            dev.shell,
            PathBuf::from("/bin/sh"),
            "empty shell means /bin/sh"
        );
        assert_eq!(dev.groups, vec![1000, 999]);
        let err = lookup("nobody-here", &passwd, &group).unwrap_err();
        assert!(err.to_string().contains("nobody-here"), "{err}");
    }
}
