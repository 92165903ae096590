//! PostgreSQL: one database, one schema per service, migrations embedded in each service and run
//! at start-up inside that schema (its own `_sqlx_migrations` table included).

use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::{Secret, SecretFile};

/// How a service reaches Postgres.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user@host:port/db`; the password, if any, comes from `password_file` or env.
    pub url: String,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<SecretFile>,
    /// The password itself, from `K8SHELL_<SERVICE>__DATABASE__PASSWORD` only.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Upper bound on pooled connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long a request waits for a free connection.
    #[serde(default = "default_acquire_timeout", with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

fn default_max_connections() -> u32 {
    8
}

fn default_acquire_timeout() -> Duration {
    Duration::from_secs(10)
}

impl DatabaseConfig {
    /// A config for `url` with defaults for everything else.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password_file: None,
            password: None,
            max_connections: default_max_connections(),
            acquire_timeout: default_acquire_timeout(),
        }
    }
}

/// Database errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "invalid schema name {0:?}: use lowercase letters, digits and `_`, starting with a letter"
    )]
    SchemaName(String),
    #[error("invalid database url: {0}")]
    Url(sqlx::Error),
    #[error("database password: {0}")]
    Password(std::io::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("migrations of schema {schema} failed: {source}")]
    Migrate {
        schema: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error(transparent)]
    Query(#[from] sqlx::Error),
}

/// Opens a pool whose connections work inside `schema`, creates the schema if needed and runs the
/// service's embedded migrations there.
pub async fn connect(
    config: &DatabaseConfig,
    schema: &str,
    migrator: &Migrator,
) -> Result<PgPool, DbError> {
    if !is_schema_name(schema) {
        return Err(DbError::SchemaName(schema.to_owned()));
    }
    let mut options = PgConnectOptions::from_str(&config.url).map_err(DbError::Url)?;
    let password = crate::config::resolve_secret(
        config.password.as_ref(),
        config.password_file.as_ref(),
        "database.password",
    )
    .map_err(DbError::Password)?;
    if let Some(password) = password {
        options = options.password(password.expose());
    }
    // Unqualified names (including sqlx's migration table) resolve in the service's schema.
    options = options.options([("search_path", schema)]);
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(DbError::Connect)?;
    // `schema` was checked by `is_schema_name`: only [a-z0-9_].
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
    )))
    .execute(&pool)
    .await?;
    migrator
        .run(&pool)
        .await
        .map_err(|source| DbError::Migrate {
            schema: schema.to_owned(),
            source,
        })?;
    tracing::info!(
        schema,
        migrations = migrator.iter().count(),
        "database ready"
    );
    Ok(pool)
}

fn is_schema_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        assert!(is_schema_name("identity"));
        assert!(is_schema_name("ssh_shield"));
        assert!(!is_schema_name("Identity"));
        assert!(!is_schema_name("x\"; drop"));
        assert!(!is_schema_name(""));
    }
}
