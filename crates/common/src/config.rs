//! Service configuration: one TOML file, overridden by `K8SHELL_<SERVICE>__<KEY>` environment
//! variables, deserialized into the service's typed `Config`.
//!
//! Errors name what was wrong and where: the key, the file and its line, or the environment
//! variable that set it. Secrets never live in the file: a [`Secret`] is read from a `*_file`
//! path ([`SecretFile`]) or given by an environment variable.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_PATH_ENV: &str = "K8SHELL_CONFIG";

/// Separates nesting levels in override variables: `K8SHELL_API__TLS__CERT_FILE`.
const ENV_NESTING: &str = "__";

/// Marks, inside the merged table, a secret that came from the environment (see [`Secret`]).
const ENV_SECRET_MARKER: &str = "$k8shell-secret-from-env";

/// What went wrong while loading a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: invalid TOML: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: key `{key}`: {message}")]
    InFile {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    #[error("environment variable {var} (key `{key}`): {message}")]
    InEnv {
        var: String,
        key: String,
        message: String,
    },
    #[error("{source_name}: {message}{}", key_suffix(.key))]
    Other {
        source_name: String,
        key: String,
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    BadEnvName { var: String, message: String },
}

fn key_suffix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" (key `{key}`)")
    }
}

/// Loads the config of one service.
///
/// ```no_run
/// # #[derive(serde::Deserialize)] struct Config {}
/// let config: Config = k8shell_common::config::ConfigLoader::new("ssh-proxy")
///     .file_from_args(std::env::args_os())
///     .process_env()
///     .load()?;
/// # Ok::<(), k8shell_common::config::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConfigLoader {
    service: String,
    file: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl ConfigLoader {
    /// A loader for `service` (as in the binary name: `ssh-proxy`, `identity`, …).
    pub fn new(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            file: None,
            env: Vec::new(),
        }
    }

    /// Reads the given TOML file.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Takes the file from `--config PATH` / `--config=PATH` in `args`, else from
    /// `K8SHELL_CONFIG`; with neither, only defaults and the environment apply.
    pub fn file_from_args<I: IntoIterator<Item = OsString>>(mut self, args: I) -> Self {
        self.file = config_path_from_args(args)
            .or_else(|| std::env::var_os(CONFIG_PATH_ENV).map(PathBuf::from));
        self
    }

    /// Uses these variables instead of the process environment (tests, embedding).
    pub fn env<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// Uses the process environment (variables that are not UTF-8 are ignored).
    pub fn process_env(mut self) -> Self {
        self.env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        self
    }

    /// The prefix of this service's override variables, e.g. `K8SHELL_SSH_PROXY__`.
    pub fn env_prefix(&self) -> String {
        format!(
            "K8SHELL_{}{ENV_NESTING}",
            self.service.to_ascii_uppercase().replace('-', "_")
        )
    }

    /// Reads, merges and deserializes the config.
    pub fn load<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let (text, mut table) = match &self.file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let table = parse_table(path, &text)?;
                (Some(text), table)
            }
            None => (None, toml::Table::new()),
        };
        let overrides = self.overrides()?;
        for o in &overrides {
            insert_at(&mut table, &o.key, o.value.clone(), &o.var)?;
        }
        // A failure at an env-set key may only mean that the value was guessed as the wrong
        // TOML type (`K8SHELL_X__NAME=123` for a string) or is a secret: retry each such key
        // once with the other reading before reporting it.
        let mut retried: Vec<String> = Vec::new();
        loop {
            let error = match serde_path_to_error::deserialize::<_, T>(table.clone()) {
                Ok(config) => return Ok(config),
                Err(error) => error,
            };
            let key = dotted(error.path());
            let message = error.inner().to_string();
            if let Some(o) = overrides.iter().find(|o| o.key.join(".") == key) {
                if !retried.contains(&key) {
                    retried.push(key.clone());
                    let fallback = if message.contains(SECRET_INLINE_HINT) {
                        secret_from_env(&o.raw)
                    } else {
                        toml::Value::String(o.raw.clone())
                    };
                    insert_at(&mut table, &o.key, fallback, &o.var)?;
                    continue;
                }
                return Err(ConfigError::InEnv {
                    var: o.var.clone(),
                    key,
                    message,
                });
            }
            return Err(match (&self.file, &text) {
                (Some(path), Some(text)) => match line_of_key(text, error.path()) {
                    Some(line) => ConfigError::InFile {
                        path: path.clone(),
                        line,
                        key,
                        message,
                    },
                    None => ConfigError::Other {
                        source_name: path.display().to_string(),
                        key,
                        message,
                    },
                },
                _ => ConfigError::Other {
                    source_name: "config (no file given)".to_owned(),
                    key,
                    message,
                },
            });
        }
    }

    fn overrides(&self) -> Result<Vec<EnvOverride>, ConfigError> {
        let prefix = self.env_prefix();
        let mut out = Vec::new();
        for (var, raw) in &self.env {
            let Some(rest) = var.strip_prefix(&prefix) else {
                continue;
            };
            let key: Vec<String> = rest
                .split(ENV_NESTING)
                .map(|part| part.to_ascii_lowercase())
                .collect();
            if key.iter().any(|part| part.is_empty()) {
                return Err(ConfigError::BadEnvName {
                    var: var.clone(),
                    message: format!(
                        "empty key segment; write nested keys as {prefix}SECTION__KEY"
                    ),
                });
            }
            out.push(EnvOverride {
                var: var.clone(),
                key,
                raw: raw.clone(),
                value: guess_value(raw),
            });
        }
        // Deterministic order: the same environment always gives the same result.
        out.sort_by(|a, b| a.var.cmp(&b.var));
        Ok(out)
    }
}

/// The `--config` argument, if any.
pub fn config_path_from_args<I: IntoIterator<Item = OsString>>(args: I) -> Option<PathBuf> {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(value) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(value));
        }
    }
    None
}

#[derive(Debug)]
struct EnvOverride {
    var: String,
    key: Vec<String>,
    raw: String,
    value: toml::Value,
}

/// Reads an env value as TOML when it is one (`8080`, `true`, `["a", "b"]`), else as a string.
fn guess_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn secret_from_env(raw: &str) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert(
        ENV_SECRET_MARKER.to_owned(),
        toml::Value::String(raw.to_owned()),
    );
    toml::Value::Table(t)
}

fn insert_at(
    table: &mut toml::Table,
    key: &[String],
    value: toml::Value,
    var: &str,
) -> Result<(), ConfigError> {
    let Some((last, parents)) = key.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for (depth, part) in parents.iter().enumerate() {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::BadEnvName {
                    var: var.to_owned(),
                    message: format!(
                        "`{}` is not a section, so it cannot hold `{}`",
                        key[..=depth].join("."),
                        key[depth + 1..].join(".")
                    ),
                });
            }
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

fn parse_table(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    toml::from_str::<toml::Table>(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        line: e.span().map_or(1, |s| line_at(text, s.start)),
        message: e.message().to_owned(),
    })
}

fn dotted(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// The 1-based line on which the deepest existing part of `path` is written in `text`.
fn line_of_key(text: &str, path: &serde_path_to_error::Path) -> Option<usize> {
    use serde_path_to_error::Segment;
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut table: &DeTable<'_> = doc.get_ref();
    let mut found: Option<usize> = None;
    let mut segments = path.iter().peekable();
    while let Some(seg) = segments.next() {
        let Segment::Map { key } = seg else {
            break;
        };
        let Some((k, v)) = table.get_key_value(key.as_str()) else {
            break;
        };
        found = Some(k.span().start);
        match v.get_ref() {
            DeValue::Table(inner) => table = inner,
            DeValue::Array(items) => {
                // `[[section]]` arrays: follow the index into the element's table.
                if let Some(Segment::Seq { index }) = segments.peek() {
                    let index = *index;
                    segments.next();
                    match items.get(index).map(|item| item.get_ref()) {
                        Some(DeValue::Table(inner)) => table = inner,
                        _ => break,
                    }
                } else {
                    break;
                }
            }
            _ => break,
        }
    }
    found.map(|offset| line_at(text, offset))
}

fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

const SECRET_INLINE_HINT: &str = "secrets are not written in config files";

/// A secret value (password, token, key). Its `Debug` and `Display` print `[redacted]`.
///
/// In a config struct it can only be set by an environment variable; the file names a file
/// that holds the secret instead, through a [`SecretFile`] field called `<name>_file`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret obtained elsewhere.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: the only way to see it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FromEnv {
            #[serde(rename = "$k8shell-secret-from-env")]
            value: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            FromEnv(FromEnv),
            Inline(serde::de::IgnoredAny),
        }
        match Raw::deserialize(deserializer)? {
            Raw::FromEnv(env) => Ok(Secret(env.value)),
            Raw::Inline(_) => Err(serde::de::Error::custom(format!(
                "{SECRET_INLINE_HINT}: put it in a file and set `<key>_file`, \
                 or set it in the environment"
            ))),
        }
    }
}

/// A path to a file that holds a secret (`password_file = "/run/credentials/pg"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct SecretFile(pub PathBuf);

impl SecretFile {
    /// Reads the secret; one trailing newline (as `echo` writes it) is dropped.
    pub fn read(&self) -> Result<Secret, std::io::Error> {
        let mut value = std::fs::read_to_string(&self.0).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot read secret file {}: {e}", self.0.display()),
            )
        })?;
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        Ok(Secret(value))
    }
}

/// Resolves a secret that may be given directly (env) or through a `*_file` path; the direct
/// value wins. `name` is used in the error when neither is set.
pub fn resolve_secret(
    direct: Option<&Secret>,
    file: Option<&SecretFile>,
    name: &str,
) -> Result<Option<Secret>, std::io::Error> {
    match (direct, file) {
        (Some(secret), _) => Ok(Some(secret.clone())),
        (None, Some(file)) => file.read().map(Some),
        (None, None) => {
            tracing::debug!(secret = name, "no secret configured");
            Ok(None)
        }
    }
}
