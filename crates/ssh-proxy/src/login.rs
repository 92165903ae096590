//! What the SSH user name asks for: `alice` (her default workspace), `alice+web` (her workspace
//! `web`) or `root+alice/web` (alice's workspace `web`, for administrators and users granted
//! access).

pub use k8shell_gateway::Target;

/// The parsed user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginName {
    /// Who logs in.
    pub user: String,
    pub target: Target,
}

/// Why a user name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LoginNameError(String);

const MAX_PART: usize = 64;

impl LoginName {
    pub fn parse(text: &str) -> Result<Self, LoginNameError> {
        let (user, workspace) = match text.split_once('+') {
            Some((user, workspace)) => (user, Some(workspace)),
            None => (text, None),
        };
        check_part("user name", user)?;
        let target = match workspace {
            None => Target::Default,
            Some(workspace) => {
                let (owner, name) = workspace.split_once('/').unwrap_or((user, workspace));
                check_part("workspace owner", owner)?;
                check_part("workspace name", name)?;
                Target::Named {
                    owner: owner.to_owned(),
                    name: name.to_owned(),
                }
            }
        };
        Ok(Self {
            user: user.to_owned(),
            target,
        })
    }
}

fn check_part(what: &str, part: &str) -> Result<(), LoginNameError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if part.is_empty() || part.len() > MAX_PART || !part.chars().all(allowed) {
        return Err(LoginNameError(format!(
            "{what} {part:?} is not valid: use letters, digits, `-`, `_` and `.` \
             (at most {MAX_PART}); log in as `user`, `user+workspace` or `user+owner/workspace`"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(owner: &str, name: &str) -> Target {
        Target::Named {
            owner: owner.into(),
            name: name.into(),
        }
    }

    #[test]
    fn user_alone_means_the_default_workspace() {
        let login = LoginName::parse("alice").unwrap();
        assert_eq!(login.user, "alice");
        assert_eq!(login.target, Target::Default);
    }

    #[test]
    fn plus_names_a_workspace_of_ones_own_or_of_an_owner() {
        assert_eq!(
            LoginName::parse("alice+web").unwrap().target,
            named("alice", "web")
        );
        let admin = LoginName::parse("root+alice/web").unwrap();
        assert_eq!(admin.user, "root");
        assert_eq!(admin.target, named("alice", "web"));
    }

    #[test]
    fn malformed_names_say_what_to_type() {
        for bad in [
            "",
            "alice+",
            "+web",
            "al ice",
            "alice+a/",
            "alice+/web",
            "a+b/c/d",
        ] {
            let error = LoginName::parse(bad).unwrap_err().to_string();
            assert!(error.contains("user+workspace"), "{bad:?}: {error}");
        }
        let long = "a".repeat(65);
        assert!(LoginName::parse(&long).is_err());
    }
}
