//! `k8shelld [--config PATH]`: the daemon inside a workspace.
//! `k8shelld sftp-server`: serves SFTP on stdin/stdout (started by the daemon, as the user).

use anyhow::Context as _;
use k8shell_common::config::ConfigLoader;
use k8shell_common::shutdown::Shutdown;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some(k8shell_k8shelld::sftp::SUBCOMMAND) {
        k8shell_k8shelld::sftp::serve_stdio().await;
        return Ok(());
    }
    k8shell_common::tls::install_crypto_provider();
    let config: k8shell_k8shelld::Config = ConfigLoader::new("k8shelld")
        .file_from_args(std::env::args_os())
        .process_env()
        .load()?;
    config
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    let _telemetry = k8shell_common::telemetry::init("k8shelld", &config.telemetry)?;
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals(config.kill_grace + std::time::Duration::from_secs(5))?;
    k8shell_k8shelld::run(config, shutdown).await?;
    Ok(())
}
