//! Embeds the console's built assets (`web/dist`, made by `npm run build` there, or the directory
//! named by `K8SHELL_CONSOLE_DIST`, as the Nix build does). Without them the crate still builds,
//! with a page that says how to build the console, so that the API can be built and tested
//! without Node.js; a cargo warning says so.

use std::fmt::Write as _;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo::rerun-if-env-changed=K8SHELL_CONSOLE_DIST");
    let dist = std::env::var_os("K8SHELL_CONSOLE_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("web").join("dist"));
    println!("cargo::rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        collect(&dist, &dist, &mut files);
    } else {
        println!(
            "cargo::warning=the console is not built ({} has no index.html): k8shell-api will serve a page that says so. Build it with `npm ci && npm run build` in crates/console/web (scripts/test and scripts/up do)",
            dist.display()
        );
    }
    files.sort();
    let mut out = String::from(
        "/// Every embedded file (path under `/`, without the leading slash).\npub static ASSETS: &[Asset] = &[\n",
    );
    for (relative, absolute) in &files {
        let body = std::fs::read(absolute).unwrap_or_default();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut hasher);
        let _ = writeln!(
            out,
            "    Asset {{ path: {relative:?}, content_type: {:?}, etag: \"\\\"{:016x}\\\"\", body: include_bytes!({:?}) }},",
            content_type(relative),
            hasher.finish(),
            absolute.display().to_string(),
        );
    }
    out.push_str("];\n");
    let _ = writeln!(
        out,
        "/// Whether the assets are the built console.\npub const BUILT: bool = {};",
        !files.is_empty()
    );
    let target = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("assets.rs");
    if let Err(e) = std::fs::write(&target, out) {
        println!("cargo::error=cannot write {}: {e}", target.display());
    }
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            let relative = relative.to_string_lossy().replace('\\', "/");
            files.push((relative, path));
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
