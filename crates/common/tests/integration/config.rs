//! Config loading as a service operator meets it: files, env overrides, secrets, mistakes.

use std::path::Path;
use std::time::Duration;

use k8shell_common::config::{ConfigError, ConfigLoader, Secret, SecretFile};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxyConfig {
    listen: String,
    #[serde(default = "default_max")]
    max_sessions: u32,
    #[serde(with = "humantime_serde", default = "default_idle")]
    idle_timeout: Duration,
    #[serde(default)]
    banner: Option<String>,
    database: Database,
    #[serde(default)]
    upstreams: Vec<Upstream>,
}

fn default_max() -> u32 {
    100
}

fn default_idle() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Database {
    url: String,
    #[serde(default)]
    password_file: Option<SecretFile>,
    #[serde(default)]
    password: Option<Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Upstream {
    name: String,
    port: u16,
}

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("ssh-proxy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn loader(path: &Path) -> ConfigLoader {
    ConfigLoader::new("ssh-proxy")
        .file(path)
        .env(Vec::<(String, String)>::new())
}

const GOOD: &str = r#"
listen = "0.0.0.0:2222"
idle_timeout = "30m"

[database]
url = "postgres://k8shell@db/k8shell"

[[upstreams]]
name = "a"
port = 7000
"#;

#[test]
fn a_valid_file_loads_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config: ProxyConfig = loader(&write(dir.path(), GOOD)).load().unwrap();
    assert_eq!(config.listen, "0.0.0.0:2222");
    assert_eq!(config.max_sessions, 100);
    assert_eq!(config.idle_timeout, Duration::from_secs(1800));
    assert_eq!(config.upstreams[0].port, 7000);
    assert_eq!(config.upstreams[0].name, "a");
    assert!(config.banner.is_none());
}

#[test]
fn an_unknown_key_names_key_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace(
        "url = \"postgres://k8shell@db/k8shell\"",
        "url = \"postgres://k8shell@db/k8shell\"\npasword_file = \"/run/pg\"",
    );
    let path = write(dir.path(), &text);
    let err = loader(&path).load::<ProxyConfig>().unwrap_err();
    let text = err.to_string();
    match &err {
        ConfigError::InFile { line, key, .. } => {
            assert_eq!(*line, 7, "{text}");
            assert_eq!(key, "database.pasword_file", "{text}");
        }
        other => panic!("expected an error located in the file, got {other:?}"),
    }
    assert!(
        text.starts_with(&format!("{}:7:", path.display())),
        "{text}"
    );
    assert!(text.contains("unknown field `pasword_file`"), "{text}");
    assert!(
        text.contains("password_file"),
        "lists the expected keys: {text}"
    );
}

#[test]
fn a_wrong_type_names_key_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace("port = 7000", "port = \"seven thousand\"");
    let path = write(dir.path(), &text);
    let err = loader(&path).load::<ProxyConfig>().unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:10: key `upstreams[0].port`", path.display())),
        "{text}"
    );
    assert!(text.contains("invalid type: string"), "{text}");
}

#[test]
fn a_bad_duration_says_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &GOOD.replace("\"30m\"", "\"half an hour\""));
    let text = loader(&path).load::<ProxyConfig>().unwrap_err().to_string();
    assert!(text.contains(":3: key `idle_timeout`"), "{text}");
}

#[test]
fn a_syntax_error_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "listen = \"a\"\n\n[database\nurl = 1\n");
    let err = loader(&path).load::<ProxyConfig>().unwrap_err();
    assert!(
        matches!(err, ConfigError::Syntax { line: 3, .. }),
        "{err:?}"
    );
}

#[test]
fn env_overrides_file_values_and_nested_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), GOOD);
    let config: ProxyConfig = ConfigLoader::new("ssh-proxy")
        .file(&path)
        .env([
            ("K8SHELL_SSH_PROXY__LISTEN", "127.0.0.1:2200"),
            ("K8SHELL_SSH_PROXY__MAX_SESSIONS", "7"),
            ("K8SHELL_SSH_PROXY__DATABASE__URL", "postgres://other/db"),
            // A string field given digits stays a string.
            ("K8SHELL_SSH_PROXY__BANNER", "2024"),
            // Another service's variables are not ours.
            ("K8SHELL_IDENTITY__LISTEN", "ignored"),
        ])
        .load()
        .unwrap();
    assert_eq!(config.listen, "127.0.0.1:2200");
    assert_eq!(config.max_sessions, 7);
    assert_eq!(config.database.url, "postgres://other/db");
    assert_eq!(config.banner.as_deref(), Some("2024"));
    assert_eq!(
        config.idle_timeout,
        Duration::from_secs(1800),
        "file value kept"
    );
}

#[test]
fn a_bad_env_value_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let err = ConfigLoader::new("ssh-proxy")
        .file(write(dir.path(), GOOD))
        .env([("K8SHELL_SSH_PROXY__MAX_SESSIONS", "lots")])
        .load::<ProxyConfig>()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(
            "environment variable K8SHELL_SSH_PROXY__MAX_SESSIONS (key `max_sessions`)"
        ),
        "{text}"
    );
}

#[test]
fn config_works_from_env_alone() {
    let config: ProxyConfig = ConfigLoader::new("ssh-proxy")
        .env([
            ("K8SHELL_SSH_PROXY__LISTEN", "[::]:2222"),
            ("K8SHELL_SSH_PROXY__DATABASE__URL", "postgres://x/y"),
        ])
        .load()
        .unwrap();
    assert_eq!(config.listen, "[::]:2222");
}

#[test]
fn secrets_come_from_files_and_env_never_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("pg-password");
    std::fs::write(&secret_path, "s3cr3t\n").unwrap();
    let text = GOOD.replace(
        "url = \"postgres://k8shell@db/k8shell\"",
        &format!(
            "url = \"postgres://k8shell@db/k8shell\"\npassword_file = {:?}",
            secret_path.display().to_string()
        ),
    );
    let path = write(dir.path(), &text);
    let config: ProxyConfig = loader(&path).load().unwrap();
    let secret = config
        .database
        .password_file
        .as_ref()
        .unwrap()
        .read()
        .unwrap();
    assert_eq!(secret.expose(), "s3cr3t", "trailing newline dropped");
    assert_eq!(
        format!("{secret:?} {secret}"),
        "Secret([redacted]) [redacted]"
    );

    // Written inline in the file: refused, with what to do instead.
    let inline = GOOD.replace(
        "url = \"postgres://k8shell@db/k8shell\"",
        "url = \"postgres://k8shell@db/k8shell\"\npassword = \"hunter2\"",
    );
    let err = loader(&write(dir.path(), &inline))
        .load::<ProxyConfig>()
        .unwrap_err()
        .to_string();
    assert!(err.contains(":7: key `database.password`"), "{err}");
    assert!(
        err.contains("password_file") || err.contains("_file"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2"),
        "the secret must not be echoed: {err}"
    );

    // Given by the environment: accepted, and never printed.
    let config: ProxyConfig = ConfigLoader::new("ssh-proxy")
        .file(write(dir.path(), GOOD))
        .env([("K8SHELL_SSH_PROXY__DATABASE__PASSWORD", "from-env")])
        .load()
        .unwrap();
    assert_eq!(
        config.database.password.as_ref().unwrap().expose(),
        "from-env"
    );
    assert!(!format!("{config:?}").contains("from-env"));
}

#[test]
fn a_missing_file_says_which() {
    let err = loader(Path::new("/nonexistent/k8shell.toml"))
        .load::<ProxyConfig>()
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/k8shell.toml"),
        "{err}"
    );
}

#[test]
fn config_path_comes_from_args() {
    use k8shell_common::config::config_path_from_args;
    let args = ["k8shell-api", "--config", "/etc/k8shell/api.toml"].map(Into::into);
    assert_eq!(
        config_path_from_args(args).unwrap(),
        Path::new("/etc/k8shell/api.toml")
    );
    let args = ["k8shell-api", "--config=/x.toml"].map(Into::into);
    assert_eq!(config_path_from_args(args).unwrap(), Path::new("/x.toml"));
}
