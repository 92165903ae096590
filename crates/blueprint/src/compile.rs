//! The compiler: a blueprint file, evaluated by nickel-lang-core in-process against the contract,
//! exported to JSON, read into [`WorkspaceSpec`], its file sources inlined, and hashed.

use std::path::{Path, PathBuf};

use nickel_lang_core::error::report::{ColorOpt, report_as_str};
use nickel_lang_core::eval::cache::CacheImpl;
use nickel_lang_core::program::{Program, ProgramBuilder};
use nickel_lang_core::serialize::{self, ExportFormat};

use crate::spec::WorkspaceSpec;

/// The contract, as shipped with this build (also `blueprints/k8shell.ncl`).
pub const CONTRACT: &str = include_str!("../../../blueprints/k8shell.ncl");

/// Version of the image builders' output; part of every image tag, so that a change in how images
/// are built gives new tags.
pub const BUILDER_VERSION: &str = "1";

/// What is wrong with a blueprint.
#[derive(Debug, thiserror::Error)]
pub enum BlueprintError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Nickel's own diagnostics (file, line, the field whose contract broke), rendered.
    #[error("{rendered}")]
    Nickel { rendered: String },
    #[error("{file}: `{field}`: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
}

/// A compiled blueprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub spec: WorkspaceSpec,
    /// The spec as canonical JSON (keys sorted): what the hash covers.
    pub canonical_json: String,
    /// Hex SHA-256 of the builder version and the parts of the spec that make the image.
    pub hash: String,
}

impl Compiled {
    /// The image tag of this blueprint: same spec and builder, same tag.
    pub fn image_tag(&self) -> String {
        format!("bp-{}", &self.hash[..32])
    }
}

/// Where the embedded contract is written so that blueprints anywhere can `import "k8shell.ncl"`.
fn contract_dir() -> Result<PathBuf, BlueprintError> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let hash = ring::digest::digest(&ring::digest::SHA256, CONTRACT.as_bytes());
    let short: String = hash.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = base.join("k8shell").join("nickel").join(short);
    let path = dir.join("k8shell.ncl");
    if !path.exists() {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let temp = dir.join(format!("k8shell.ncl.{}", std::process::id()));
            std::fs::write(&temp, CONTRACT)?;
            std::fs::rename(&temp, &path)
        };
        write().map_err(|source| BlueprintError::Read {
            path: path.clone(),
            source,
        })?;
    }
    Ok(dir)
}

/// Compiles the blueprint in `path`.
pub fn compile_file(path: &Path) -> Result<Compiled, BlueprintError> {
    let read_error = |source| BlueprintError::Read {
        path: path.to_owned(),
        source,
    };
    let absolute = std::fs::canonicalize(path).map_err(read_error)?;
    let display = path.display().to_string();
    let quoted = serde_json::to_string(&absolute.to_string_lossy())
        .map_err(|e| read_error(std::io::Error::other(e)))?;
    if quoted.contains("%{") {
        return Err(read_error(std::io::Error::other(
            "the path contains `%{`, which Nickel would read as interpolation: rename it",
        )));
    }
    // The contract is applied here, so a blueprint file may be a plain record.
    let main =
        format!("let k8shell = import \"k8shell.ncl\" in (import {quoted}) | k8shell.Blueprint");
    let json = evaluate(&main, &display)?;
    let base_dir = absolute.parent().unwrap_or(Path::new("/"));
    finish(&json, &display, base_dir)
}

/// Compiles a blueprint given as text (posted to the API), named `file` in errors. It is
/// evaluated on a server: it may import the contract only (an import of another path would
/// read that server's files), and its file sources must be inline.
pub fn compile_source(source: &str, file: &str) -> Result<Compiled, BlueprintError> {
    if let Some(line) = foreign_import(source) {
        return Err(invalid(
            file,
            "import",
            format!(
                "line {line} imports a file; a blueprint sent to k8shell may import only \"k8shell.ncl\": inline what it imports (`k8shell blueprint show FILE` prints the merged blueprint)"
            ),
        ));
    }
    let read_error = |source| BlueprintError::Read {
        path: PathBuf::from(file),
        source,
    };
    let dir = tempfile::tempdir().map_err(read_error)?;
    let base = Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().replace("%{", "%_{"))
        .filter(|n| !n.is_empty() && n != "..")
        .unwrap_or_else(|| "blueprint.ncl".to_owned());
    let path = dir.path().join(base);
    std::fs::write(&path, source).map_err(read_error)?;
    let temp = std::fs::canonicalize(&path).map_err(read_error)?;
    // Diagnostics name the file as the caller knows it, not the temporary copy.
    let rename = |text: String| {
        text.replace(&temp.to_string_lossy().into_owned(), file)
            .replace(&path.to_string_lossy().into_owned(), file)
    };
    compile_file(&path).map_err(|error| match error {
        BlueprintError::Nickel { rendered } => BlueprintError::Nickel {
            rendered: rename(rendered),
        },
        BlueprintError::Invalid { field, message, .. } => BlueprintError::Invalid {
            file: file.to_owned(),
            field,
            message: rename(message),
        },
        BlueprintError::Read { path, source } => BlueprintError::Read {
            path: PathBuf::from(rename(path.display().to_string())),
            source,
        },
    })
}

/// The line of the first `import` of anything but the contract (in code, strings or comments
/// alike: refusing a harmless word is better than reading a server's file).
fn foreign_import(source: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '\'';
    let mut from = 0;
    while let Some(at) = source[from..].find("import").map(|i| i + from) {
        from = at + "import".len();
        let before = source[..at].chars().next_back();
        let after = source[from..].chars().next();
        if before.is_some_and(is_ident) || after.is_some_and(is_ident) {
            continue;
        }
        if !source[from..].trim_start().starts_with("\"k8shell.ncl\"") {
            return Some(source[..at].matches('\n').count() + 1);
        }
    }
    None
}

fn evaluate(main: &str, name: &str) -> Result<String, BlueprintError> {
    let mut program: Program<CacheImpl> = ProgramBuilder::new()
        .add_source_string(main.to_owned(), format!("<blueprint {name}>"))
        .add_import_paths([contract_dir()?])
        .build()
        .map_err(|e| BlueprintError::Nickel {
            rendered: e.to_string(),
        })?;
    let value = match program.eval_full_for_export() {
        Ok(value) => value,
        Err(error) => {
            return Err(BlueprintError::Nickel {
                rendered: report_as_str(&mut program.files(), error, ColorOpt::Never),
            });
        }
    };
    serialize::to_string(ExportFormat::Json, &value).map_err(|data| {
        let error = nickel_lang_core::error::Error::export_error(program.pos_table().clone(), data);
        BlueprintError::Nickel {
            rendered: report_as_str(&mut program.files(), error, ColorOpt::Never),
        }
    })
}

fn invalid(file: &str, field: impl Into<String>, message: impl Into<String>) -> BlueprintError {
    BlueprintError::Invalid {
        file: file.to_owned(),
        field: field.into(),
        message: message.into(),
    }
}

/// Checks what the contract cannot express, inlines file sources, hashes.
fn finish(json: &str, file: &str, base_dir: &Path) -> Result<Compiled, BlueprintError> {
    let mut spec: WorkspaceSpec = serde_json::from_str(json).map_err(|e| {
        invalid(
            file,
            "(blueprint)",
            format!("the evaluated blueprint does not fit WorkspaceSpec: {e}"),
        )
    })?;
    for (path, entry) in &mut spec.files {
        let field = format!("files.\"{path}\"");
        if !path.starts_with('/') || path.split('/').any(|part| part == "..") || path.ends_with('/')
        {
            return Err(invalid(
                file,
                field,
                "file paths must be absolute, without '..', and name a file (e.g. \"/etc/motd\")",
            ));
        }
        match (entry.content.is_some(), entry.source.take()) {
            (true, Some(_)) => {
                return Err(invalid(
                    file,
                    field,
                    "give either `content` or `source`, not both",
                ));
            }
            (false, None) => {
                return Err(invalid(
                    file,
                    field,
                    "give the file's `content` or its `source` (a path next to the blueprint)",
                ));
            }
            (true, None) => {}
            (false, Some(source)) => {
                let source_path = base_dir.join(&source);
                // Only files beside the blueprint: a blueprint must not copy the builder's own
                // secrets (say ~/.docker/config.json) into the image it pushes.
                let inside = std::fs::canonicalize(&source_path)
                    .map(|p| p.starts_with(base_dir))
                    .unwrap_or(true);
                if !inside {
                    return Err(invalid(
                        file,
                        format!("{field}.source"),
                        format!(
                            "{source} is outside the blueprint's directory {}: keep sources beside the blueprint",
                            base_dir.display()
                        ),
                    ));
                }
                let bytes = std::fs::read(&source_path).map_err(|e| {
                    invalid(
                        file,
                        format!("{field}.source"),
                        format!("cannot read {}: {e}", source_path.display()),
                    )
                })?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    invalid(file, format!("{field}.source"), format!("{} is not UTF-8 text; binary files are not supported, install them in `setup` instead", source_path.display()))
                })?;
                entry.content = Some(text);
            }
        }
    }
    for name in spec.env.keys() {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(invalid(
                file,
                format!("env.{name}"),
                "environment variable names are letters, digits and '_', not starting with a digit",
            ));
        }
    }
    for (name, value) in &spec.env {
        if value.contains('$') {
            return Err(invalid(
                file,
                format!("env.{name}"),
                "values are taken literally and may not contain '$'; write the value out (e.g. \"/home/dev/go\", not \"$HOME/go\")",
            ));
        }
    }
    for key in spec.labels.keys() {
        let valid = !key.is_empty()
            && key.len() <= 128
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
        if !valid {
            return Err(invalid(
                file,
                format!("labels.{key}"),
                "label keys are letters, digits and . - _ /, at most 128",
            ));
        }
    }
    for package in &spec.packages {
        let valid = package
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && package.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_' | ':' | '=')
            });
        if !valid {
            return Err(invalid(
                file,
                "packages",
                format!(
                    "{package:?} is not a package name: letters, digits and . + - _ : =, starting with a letter or digit"
                ),
            ));
        }
    }
    if spec.user.name == "root" {
        return Err(invalid(
            file,
            "user.name",
            "the workspace user cannot be root; choose another name (sudo gives root when needed)",
        ));
    }
    let mut numbers = std::collections::BTreeSet::new();
    for port in &spec.ports {
        if !numbers.insert((port.port, port.protocol as u8)) {
            return Err(invalid(
                file,
                "ports",
                format!("port {} is listed twice for the same protocol", port.port),
            ));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for port in &spec.ports {
        if !names.insert(&port.name) {
            return Err(invalid(
                file,
                "ports",
                format!(
                    "two ports are named \"{}\": names must be unique",
                    port.name
                ),
            ));
        }
    }
    let dotfiles_host = ["https://", "ssh://", "git@"]
        .iter()
        .find_map(|p| spec.dotfiles.strip_prefix(p))
        .map(|rest| rest.split(['/', ':']).next().unwrap_or_default().to_owned());
    if !spec.dotfiles.is_empty() && dotfiles_host.as_deref().is_none_or(str::is_empty) {
        return Err(invalid(
            file,
            "dotfiles",
            "use a git URL with a host, starting with https://, ssh:// or git@ (e.g. https://github.com/you/dotfiles.git)",
        ));
    }
    let canonical_json = serde_json::to_value(&spec)
        .and_then(|value| serde_json::to_string(&value))
        .map_err(|e| invalid(file, "(blueprint)", e.to_string()))?;
    // The tag covers what goes into the image, not what only the runtime reads (resources,
    // idle timeout, home, ssh permissions, dotfiles, description): changing those rebuilds nothing.
    let image_part = serde_json::json!({
        "base": spec.base,
        "package_manager": spec.package_manager,
        "packages": spec.packages,
        "setup": spec.setup,
        "files": spec.files,
        "env": spec.env,
        "user": spec.user,
        "ports": spec.ports,
        "labels": spec.labels,
        "name": spec.name,
    });
    let image_json = serde_json::to_string(&image_part)
        .map_err(|e| invalid(file, "(blueprint)", e.to_string()))?;
    let mut hashed = Vec::with_capacity(image_json.len() + 16);
    hashed.extend_from_slice(b"k8shell-blueprint/");
    hashed.extend_from_slice(BUILDER_VERSION.as_bytes());
    hashed.push(b'\n');
    hashed.extend_from_slice(image_json.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &hashed);
    let hash = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Compiled {
        spec,
        canonical_json,
        hash,
    })
}
