//! `k8shell-ssh-proxy [--config PATH]`: the SSH entry to workspaces.

use k8shell_common::config::ConfigLoader;
use k8shell_common::shutdown::Shutdown;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    k8shell_common::tls::install_crypto_provider();
    let config: k8shell_ssh_proxy::Config = ConfigLoader::new("ssh-proxy")
        .file_from_args(std::env::args_os())
        .process_env()
        .load()?;
    let _telemetry = k8shell_common::telemetry::init("ssh-proxy", &config.telemetry)?;
    k8shell_ssh_proxy::raise_open_files_limit();
    let shutdown = Shutdown::new();
    // The proxy drains for `drain`, then ends what is left: give it time for both.
    shutdown.listen_for_signals(config.drain + std::time::Duration::from_secs(10))?;
    k8shell_ssh_proxy::run(config, shutdown).await?;
    Ok(())
}
