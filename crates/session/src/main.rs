//! `k8shell-session [--config PATH]`: the session service.

use k8shell_common::config::ConfigLoader;
use k8shell_common::shutdown::Shutdown;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    k8shell_common::tls::install_crypto_provider();
    let config: k8shell_session::Config = ConfigLoader::new("session")
        .file_from_args(std::env::args_os())
        .process_env()
        .load()?;
    let _telemetry = k8shell_common::telemetry::init("session", &config.telemetry)?;
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals(std::time::Duration::from_secs(30))?;
    k8shell_session::run(config, shutdown).await?;
    Ok(())
}
