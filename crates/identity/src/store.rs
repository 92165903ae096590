//! Users, keys and tokens in Postgres (schema `identity`).

use sqlx::PgPool;
use sqlx::Row as _;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::sshkey::SshPublicKey;

/// Whether a user may log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserState {
    Active,
    Suspended,
}

impl UserState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }

    fn parse(text: &str) -> Self {
        if text == "suspended" {
            Self::Suspended
        } else {
            Self::Active
        }
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub groups: Vec<String>,
    pub state: UserState,
    pub created_at: OffsetDateTime,
    pub last_login_at: Option<OffsetDateTime>,
}

/// A stored SSH key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub fingerprint: String,
    pub key: SshPublicKey,
    pub added_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
}

/// A stored API token (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// Names a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(Uuid),
    Name(String),
}

/// Store errors, mapped to gRPC codes once in `service`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such user")]
    NoSuchUser,
    #[error(
        "invalid username {0:?}: 1–32 characters, lowercase letters, digits and `-`, starting with a letter"
    )]
    InvalidUsername(String),
    #[error("username {0:?} is taken")]
    UsernameTaken(String),
    #[error("this key ({0}) is already registered to an account")]
    KeyTaken(String),
    #[error("no key {0} on this account")]
    NoSuchKey(String),
    #[error("no such token")]
    NoSuchToken,
    #[error("this provider account is already linked to a user")]
    AlreadyLinked,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Checks a username against the rules.
pub fn valid_username(name: &str) -> bool {
    let mut bytes = name.bytes();
    (1..=32).contains(&name.len())
        && matches!(bytes.next(), Some(b) if b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

const USER_COLUMNS: &str =
    "id, username, display_name, email, groups, state, created_at, last_login_at";
/// The same columns of `users u` in a join.
const USER_COLUMNS_U: &str =
    "u.id, u.username, u.display_name, u.email, u.groups, u.state, u.created_at, u.last_login_at";

fn user_from_row(row: &sqlx::postgres::PgRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        email: row.try_get("email")?,
        groups: row.try_get("groups")?,
        state: UserState::parse(row.try_get::<&str, _>("state")?),
        created_at: row.try_get("created_at")?,
        last_login_at: row.try_get("last_login_at")?,
    })
}

/// The identity store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool, for the login flow's own table.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The user linked to an OpenID provider's subject.
    pub async fn user_by_link(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS_U} FROM oidc_links l JOIN users u ON u.id = l.user_id \
             WHERE l.issuer = $1 AND l.subject = $2"
        )))
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| user_from_row(&r)).transpose()?)
    }

    /// Creates a user linked to an OpenID provider's subject, both or neither.
    pub async fn create_linked_user(
        &self,
        username: &str,
        display_name: &str,
        email: &str,
        groups: &[String],
        issuer: &str,
        subject: &str,
    ) -> Result<User, StoreError> {
        if !valid_username(username) {
            return Err(StoreError::InvalidUsername(username.to_owned()));
        }
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO users (id, username, display_name, email, groups) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (username) DO NOTHING RETURNING {USER_COLUMNS}"
        )))
        .bind(k8shell_common::ids::new_id())
        .bind(username)
        .bind(display_name)
        .bind(email)
        .bind(groups)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::UsernameTaken(username.to_owned()));
        };
        let user = user_from_row(&row)?;
        let linked = sqlx::query(
            "INSERT INTO oidc_links (issuer, subject, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(issuer)
        .bind(subject)
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
        if linked.rows_affected() == 0 {
            // Dropping the transaction rolls the new user back.
            return Err(StoreError::AlreadyLinked);
        }
        tx.commit().await?;
        Ok(user)
    }

    /// Records a login: profile and groups as the provider says now, and the time.
    pub async fn record_login(
        &self,
        user: Uuid,
        display_name: &str,
        email: &str,
        groups: &[String],
    ) -> Result<User, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE users SET last_login_at = now(), groups = $4, \
             display_name = CASE WHEN $2 = '' THEN display_name ELSE $2 END, \
             email = CASE WHEN $3 = '' THEN email ELSE $3 END \
             WHERE id = $1 RETURNING {USER_COLUMNS}"
        )))
        .bind(user)
        .bind(display_name)
        .bind(email)
        .bind(groups)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NoSuchUser)?;
        Ok(user_from_row(&row)?)
    }

    /// Creates a user.
    pub async fn create_user(
        &self,
        username: &str,
        display_name: &str,
        email: &str,
        groups: &[String],
    ) -> Result<User, StoreError> {
        self.create_user_with_keys(username, display_name, email, groups, &[])
            .await
    }

    /// A new user and their keys, all or nothing: a name or key already taken creates nothing.
    pub async fn create_user_with_keys(
        &self,
        username: &str,
        display_name: &str,
        email: &str,
        groups: &[String],
        keys: &[SshPublicKey],
    ) -> Result<User, StoreError> {
        if !valid_username(username) {
            return Err(StoreError::InvalidUsername(username.to_owned()));
        }
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO users (id, username, display_name, email, groups) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (username) DO NOTHING RETURNING {USER_COLUMNS}"
        )))
        .bind(k8shell_common::ids::new_id())
        .bind(username)
        .bind(display_name)
        .bind(email)
        .bind(groups)
        .fetch_optional(&mut *tx)
        .await?;
        let user = match row {
            Some(row) => user_from_row(&row)?,
            None => return Err(StoreError::UsernameTaken(username.to_owned())),
        };
        for key in keys {
            let fingerprint = key.fingerprint();
            let added = sqlx::query(
                "INSERT INTO ssh_keys (fingerprint, user_id, key_type, blob, comment) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (fingerprint) DO NOTHING",
            )
            .bind(&fingerprint)
            .bind(user.id)
            .bind(&key.key_type)
            .bind(&key.blob)
            .bind(&key.comment)
            .execute(&mut *tx)
            .await?;
            if added.rows_affected() == 0 {
                return Err(StoreError::KeyTaken(fingerprint));
            }
        }
        tx.commit().await?;
        Ok(user)
    }

    /// The user, by id or name.
    pub async fn user(&self, user: &UserRef) -> Result<User, StoreError> {
        let row = match user {
            UserRef::Id(id) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
                )))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
            }
            UserRef::Name(name) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
                )))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        row.map(|r| user_from_row(&r))
            .transpose()?
            .ok_or(StoreError::NoSuchUser)
    }

    /// Users ordered by username, after `after` (the cursor), at most `limit`.
    pub async fn list_users(&self, after: &str, limit: i64) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username > $1 ORDER BY username LIMIT $2"
        )))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| user_from_row(r).map_err(StoreError::from))
            .collect()
    }

    /// Sets a user's state.
    pub async fn set_state(&self, user: &UserRef, state: UserState) -> Result<User, StoreError> {
        let user = self.user(user).await?;
        sqlx::query("UPDATE users SET state = $2 WHERE id = $1")
            .bind(user.id)
            .bind(state.as_str())
            .execute(&self.pool)
            .await?;
        Ok(User { state, ..user })
    }

    /// Replaces a user's groups (bootstrap, OIDC group mapping).
    pub async fn set_groups(&self, user: Uuid, groups: &[String]) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET groups = $2 WHERE id = $1")
            .bind(user)
            .bind(groups)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Registers a key for a user; a key can belong to one account only.
    pub async fn add_key(
        &self,
        user: &UserRef,
        key: &SshPublicKey,
    ) -> Result<StoredKey, StoreError> {
        let user = self.user(user).await?;
        let fingerprint = key.fingerprint();
        let row = sqlx::query(
            "INSERT INTO ssh_keys (fingerprint, user_id, key_type, blob, comment) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (fingerprint) DO NOTHING RETURNING added_at",
        )
        .bind(&fingerprint)
        .bind(user.id)
        .bind(&key.key_type)
        .bind(&key.blob)
        .bind(&key.comment)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(StoredKey {
                fingerprint,
                key: key.clone(),
                added_at: row.try_get("added_at")?,
                last_used_at: None,
            }),
            None => Err(StoreError::KeyTaken(fingerprint)),
        }
    }

    /// Removes a key from a user.
    pub async fn remove_key(&self, user: &UserRef, fingerprint: &str) -> Result<(), StoreError> {
        let user = self.user(user).await?;
        let done = sqlx::query("DELETE FROM ssh_keys WHERE user_id = $1 AND fingerprint = $2")
            .bind(user.id)
            .bind(fingerprint)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchKey(fingerprint.to_owned()));
        }
        Ok(())
    }

    /// A user's keys, oldest first.
    pub async fn keys(&self, user: &UserRef) -> Result<Vec<StoredKey>, StoreError> {
        let user = self.user(user).await?;
        let rows = sqlx::query(
            "SELECT fingerprint, key_type, blob, comment, added_at, last_used_at FROM ssh_keys \
             WHERE user_id = $1 ORDER BY added_at, fingerprint",
        )
        .bind(user.id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredKey {
                    fingerprint: row.try_get("fingerprint")?,
                    key: SshPublicKey {
                        key_type: row.try_get("key_type")?,
                        blob: row.try_get("blob")?,
                        comment: row.try_get("comment")?,
                    },
                    added_at: row.try_get("added_at")?,
                    last_used_at: row.try_get("last_used_at")?,
                })
            })
            .collect()
    }

    /// The active user `username` owning the key with `fingerprint`; records its use.
    pub async fn user_by_key(
        &self,
        username: &str,
        fingerprint: &str,
    ) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS_U}, k.last_used_at AS used_at FROM ssh_keys k JOIN users u ON u.id = k.user_id \
             WHERE u.username = $1 AND k.fingerprint = $2 AND u.state = 'active'"
        )))
        .bind(username)
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        let touch = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE ssh_keys SET last_used_at = now() WHERE fingerprint = $1 AND {NOT_RECENT}"
        )))
        .bind(fingerprint);
        self.record_use(row, touch).await
    }

    /// Stores a new token's hash.
    pub async fn create_token(
        &self,
        user: &UserRef,
        name: &str,
        prefix: &str,
        hash: &[u8],
        expires_at: OffsetDateTime,
    ) -> Result<StoredToken, StoreError> {
        let user = self.user(user).await?;
        let id = k8shell_common::ids::new_id();
        let row = sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, prefix, hash, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at",
        )
        .bind(id)
        .bind(user.id)
        .bind(name)
        .bind(prefix)
        .bind(hash)
        .bind(expires_at)
        .fetch_one(&self.pool)
        .await?;
        Ok(StoredToken {
            id,
            user_id: user.id,
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            created_at: row.try_get("created_at")?,
            expires_at,
            revoked_at: None,
        })
    }

    /// Revokes a user's token (idempotent).
    pub async fn revoke_token(&self, user: &UserRef, id: Uuid) -> Result<StoredToken, StoreError> {
        let user = self.user(user).await?;
        let row = sqlx::query(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 AND user_id = $2 \
             RETURNING id, user_id, name, prefix, created_at, expires_at, revoked_at",
        )
        .bind(id)
        .bind(user.id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NoSuchToken)?;
        token_from_row(&row).map_err(StoreError::from)
    }

    /// A user's tokens, newest first.
    pub async fn tokens(&self, user: &UserRef) -> Result<Vec<StoredToken>, StoreError> {
        let user = self.user(user).await?;
        let rows = sqlx::query(
            "SELECT id, user_id, name, prefix, created_at, expires_at, revoked_at FROM api_tokens \
             WHERE user_id = $1 ORDER BY id DESC",
        )
        .bind(user.id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| token_from_row(r).map_err(StoreError::from))
            .collect()
    }

    /// The active owner of a valid (unexpired, unrevoked) token with this hash; records its use.
    pub async fn user_by_token_hash(&self, hash: &[u8]) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS_U}, t.last_used_at AS used_at FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now() AND u.state = 'active'"
        )))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let touch = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE api_tokens SET last_used_at = now() WHERE hash = $1 AND {NOT_RECENT}"
        )))
        .bind(hash);
        self.record_use(row, touch).await
    }

    /// The user of a key or token lookup (`row` carries `used_at`); runs `touch` when the
    /// recorded use is older than the resolution.
    async fn record_use<'q>(
        &self,
        row: Option<sqlx::postgres::PgRow>,
        touch: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Option<User>, StoreError> {
        let Some(row) = row else {
            return Ok(None);
        };
        if stale(row.try_get("used_at")?) {
            touch.execute(&self.pool).await?;
        }
        Ok(Some(user_from_row(&row)?))
    }
}

/// "Last used" is kept to the minute: a key used by many connections at once is written once a
/// minute, not once per connection (which would serialise logins on one row lock).
const USE_RESOLUTION_SECONDS: i64 = 60;
const NOT_RECENT: &str = "(last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')";

fn stale(used_at: Option<OffsetDateTime>) -> bool {
    used_at.is_none_or(|at| {
        k8shell_common::clock::now() - at >= time::Duration::seconds(USE_RESOLUTION_SECONDS)
    })
}

fn token_from_row(row: &sqlx::postgres::PgRow) -> Result<StoredToken, sqlx::Error> {
    Ok(StoredToken {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_rules() {
        for good in ["a", "alice", "dev-1", &"a".repeat(32)] {
            assert!(valid_username(good), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "Alice",
            "al_ice",
            "-a",
            &"a".repeat(33),
            "al ice",
        ] {
            assert!(!valid_username(bad), "{bad}");
        }
    }
}
