//! A policy bundle: the `.rego` files and `data.json` of one directory, compiled with regorus,
//! checked by its own `*_test.rego` tests, and named by a hash of its contents (the revision).

use std::path::{Path, PathBuf};

use regorus::{Engine, Value};

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("policy bundle {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy bundle {dir}: no .rego files")]
    Empty { dir: PathBuf },
    /// Parse and compile errors name the file and line (regorus's message).
    #[error("{0}")]
    Policy(String),
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    #[error("policy tests failed: {}", .0.join(", "))]
    TestsFailed(Vec<String>),
}

/// A compiled, tested bundle.
#[derive(Debug)]
pub struct Bundle {
    engine: Engine,
    /// Engines that have evaluated before: regorus prepares a policy on first evaluation, so a
    /// reused engine decides in microseconds where a fresh clone takes hundreds.
    warm: std::sync::Mutex<Vec<Engine>>,
    revision: String,
    /// Test rules that ran (`package.rule`).
    tests: Vec<String>,
    dir: PathBuf,
}

/// The `.rego` and `.json` files of a directory, sorted (the revision must not depend on
/// directory order).
fn files(dir: &Path) -> Result<Vec<PathBuf>, BundleError> {
    let io = |source| BundleError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "rego" || e == "json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The bundle's files and their contents, read once.
fn read_all(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, BundleError> {
    files(dir)?
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).map_err(|source| BundleError::Io {
                path: path.clone(),
                source,
            })?;
            Ok((path, bytes))
        })
        .collect()
}

/// Hash of the bundle's file names and contents.
pub fn revision_of(dir: &Path) -> Result<String, BundleError> {
    Ok(hash(&read_all(dir)?))
}

fn hash(contents: &[(PathBuf, Vec<u8>)]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for (path, bytes) in contents {
        context.update(path.file_name().map_or(&[][..], |n| n.as_encoded_bytes()));
        context.update(&(bytes.len() as u64).to_le_bytes());
        context.update(bytes);
    }
    let digest = context.finish();
    digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Bundle {
    /// Loads, compiles and tests the bundle in `dir`.
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        // One read: the revision names exactly what is compiled.
        let contents = read_all(dir)?;
        let revision = hash(&contents);
        let mut engine = Engine::new();
        let mut test_files = Vec::new();
        let mut policies = 0;
        for (path, bytes) in contents {
            let text = String::from_utf8(bytes).map_err(|_| BundleError::Data {
                path: path.clone(),
                message: "not UTF-8".to_owned(),
            })?;
            if path.extension().is_some_and(|e| e == "json") {
                let json: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| BundleError::Data {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                // Data merged at the root would override rules of the same path (regorus lets
                // data win): configuration lives under `config` only.
                let keys: Vec<&String> = json
                    .as_object()
                    .map(|o| o.keys().collect())
                    .unwrap_or_default();
                if json.as_object().is_none() || keys.iter().any(|k| k.as_str() != "config") {
                    return Err(BundleError::Data {
                        path: path.clone(),
                        message: format!(
                            "data must be an object with the single key \"config\", found {keys:?}"
                        ),
                    });
                }
                let data = Value::from_json_str(&text).map_err(|e| BundleError::Data {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                engine.add_data(data).map_err(|e| BundleError::Data {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                continue;
            }
            let package = engine
                .add_policy(path.display().to_string(), text.clone())
                .map_err(|e| BundleError::Policy(e.to_string()))?;
            policies += 1;
            if path
                .file_stem()
                .is_some_and(|s| s.to_string_lossy().ends_with("_test"))
            {
                test_files.push((package, text));
            }
        }
        if policies == 0 {
            return Err(BundleError::Empty {
                dir: dir.to_owned(),
            });
        }
        let mut bundle = Self {
            engine,
            warm: std::sync::Mutex::new(Vec::new()),
            revision,
            tests: Vec::new(),
            dir: dir.to_owned(),
        };
        bundle.run_tests(&test_files)?;
        Ok(bundle)
    }

    /// Runs every rule named `test_*` of the test files; each must be true.
    fn run_tests(&mut self, test_files: &[(String, String)]) -> Result<(), BundleError> {
        let mut failed = Vec::new();
        for (package, text) in test_files {
            // `package` is `data.k8shell.x_test`.
            for rule in test_rule_names(text) {
                let path = format!("{package}.{rule}");
                let mut engine = self.engine.clone();
                let passed = matches!(engine.eval_rule(path.clone()), Ok(Value::Bool(true)));
                if !passed {
                    failed.push(path.trim_start_matches("data.").to_owned());
                }
                self.tests.push(path.trim_start_matches("data.").to_owned());
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(BundleError::TestsFailed(failed))
        }
    }

    /// The bundle's revision (a hash of its files).
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The test rules that passed when it was loaded.
    pub fn tests(&self) -> &[String] {
        &self.tests
    }

    /// The directory it came from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Evaluates `data.k8shell.<domain>.decision` for `input`. `None` when the policy produced
    /// no decision (treated as deny by the caller).
    pub fn evaluate(
        &self,
        domain: &str,
        input: &serde_json::Value,
    ) -> Result<Option<serde_json::Value>, String> {
        let input = Value::from_json_str(&input.to_string()).map_err(|e| e.to_string())?;
        let mut engine = self
            .warm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| self.engine.clone());
        engine.set_input(input);
        let result = engine.eval_rule(format!("data.k8shell.{domain}.decision"));
        self.warm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(engine);
        let value = result.map_err(|e| e.to_string())?;
        if value == Value::Undefined {
            return Ok(None);
        }
        let json = value.to_json_str().map_err(|e| e.to_string())?;
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// Rule names starting with `test_` defined at the start of a line.
fn test_rule_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            name.starts_with("test_").then_some(name)
        })
        .collect();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_bundle() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
    }

    #[test]
    fn the_default_bundle_passes_its_rego_tests() {
        let bundle = Bundle::load(&default_bundle()).unwrap();
        assert!(bundle.tests().len() >= 20, "{:?}", bundle.tests());
        assert_eq!(bundle.revision().len(), 24);
    }

    #[test]
    fn a_bundle_whose_tests_fail_is_refused_with_the_rule_names() {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(default_bundle()).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
        std::fs::write(
            dir.path().join("extra_test.rego"),
            "package k8shell.extra_test\nimport rego.v1\nimport data.k8shell.ssh\n\
             test_everyone_may_enter if {\n  ssh.decision.allow with input as {\"v\": 1, \"user\": {\"username\": \"eve\", \"groups\": []}, \"workspace\": {\"id\": \"w\", \"owner\": \"alice\"}, \"request\": \"shell\"}\n}\n",
        )
        .unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy tests failed: k8shell.extra_test.test_everyone_may_enter"
        );
    }

    #[test]
    fn data_that_could_shadow_a_rule_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(default_bundle()).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
        std::fs::write(
            dir.path().join("evil.json"),
            r#"{"k8shell": {"api": {"allow": true}}}"#,
        )
        .unwrap();
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("single key \"config\""), "{err}");
    }

    #[test]
    fn a_syntax_error_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("broken.rego"),
            "package k8shell.x\n\nallow if {\n  input.a ==\n",
        )
        .unwrap();
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("broken.rego:"), "{err}");
    }

    #[test]
    fn decisions_come_back_as_json() {
        let bundle = Bundle::load(&default_bundle()).unwrap();
        let input = serde_json::json!({"v": 1, "user": {"username": "root", "groups": ["admins"]},
            "workspace": {"id": "w", "owner": "alice"}, "request": "shell"});
        let decision = bundle.evaluate("ssh", &input).unwrap().unwrap();
        assert_eq!(decision["allow"], true);
        assert_eq!(decision["admin_access"], true);
        assert!(bundle.evaluate("nonexistent", &input).is_err());
    }
}
