//! `k8shell-authz [--config PATH]`: the policy service.
//! `k8shell-authz test [DIR]`: loads a policy bundle and runs its Rego tests (exit 1 on failure).

use std::path::PathBuf;
use std::process::ExitCode;

use k8shell_common::config::ConfigLoader;
use k8shell_common::shutdown::Shutdown;

fn test_bundle(dir: Option<String>) -> ExitCode {
    let dir = dir.map_or_else(
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

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("test") {
        return Ok(test_bundle(args.next()));
    }
    k8shell_common::tls::install_crypto_provider();
    let config: k8shell_authz::Config = ConfigLoader::new("authz")
        .file_from_args(std::env::args_os())
        .process_env()
        .load()?;
    let _telemetry = k8shell_common::telemetry::init("authz", &config.telemetry)?;
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals(std::time::Duration::from_secs(30))?;
    k8shell_authz::run(config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
