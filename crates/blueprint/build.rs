//! One test per file under `blueprints/` (ARCHITECTURE §2.5): each file says in a header what it
//! expects, `# test = 'pass'` or `# test = 'fail'`, and for a failure `# error = "<text>"` that the
//! message must contain.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled in another checkout sharing the target
    // directory must still look at this one.
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("../../blueprints");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &mut files)?;
    files.sort();
    let mut tests = String::new();
    for file in files {
        let relative = file.strip_prefix(&root)?.to_string_lossy().into_owned();
        if relative == "k8shell.ncl" {
            continue;
        }
        println!("cargo:rerun-if-changed={}", file.display());
        let name: String = relative
            .trim_end_matches(".ncl")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        writeln!(
            tests,
            "#[test]\nfn blueprint_{name}() {{\n    check_example({:?});\n}}\n",
            file.canonicalize()?.display().to_string()
        )?;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("blueprint_examples.rs");
    std::fs::write(out, tests)?;
    Ok(())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "ncl") {
            out.push(path);
        }
    }
    Ok(())
}
