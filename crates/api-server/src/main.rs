//! `k8shell-api [--config PATH]`: the REST API, the browser terminal and the sign-in flows.

use k8shell_common::config::ConfigLoader;
use k8shell_common::shutdown::Shutdown;

fn main() -> anyhow::Result<std::process::ExitCode> {
    // A child that evaluates one blueprint under limits (see `evaluate`).
    let mut args = std::env::args();
    if args.nth(1).as_deref() == Some(k8shell_api_server::evaluate::ARGUMENT) {
        let file = args.next().unwrap_or_else(|| "blueprint.ncl".to_owned());
        return Ok(k8shell_api_server::evaluate::child_main(&file));
    }
    serve()?;
    Ok(std::process::ExitCode::SUCCESS)
}

#[tokio::main]
async fn serve() -> anyhow::Result<()> {
    k8shell_common::tls::install_crypto_provider();
    let config: k8shell_api_server::Config = ConfigLoader::new("api")
        .file_from_args(std::env::args_os())
        .process_env()
        .load()?;
    let _telemetry = k8shell_common::telemetry::init("api", &config.telemetry)?;
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals(config.drain + std::time::Duration::from_secs(10))?;
    k8shell_api_server::run(config, shutdown).await?;
    Ok(())
}
