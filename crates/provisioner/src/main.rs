//! `k8shell-provisioner [--config PATH]`: the provisioner.

use k8shell_common::config::ConfigLoader;
use k8shell_common::shutdown::Shutdown;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    k8shell_common::tls::install_crypto_provider();
    let config: k8shell_provisioner::Config = ConfigLoader::new("provisioner")
        .file_from_args(std::env::args_os())
        .process_env()
        .load()?;
    let _telemetry = k8shell_common::telemetry::init("provisioner", &config.telemetry)?;
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals(std::time::Duration::from_secs(30))?;
    k8shell_provisioner::run(config, shutdown).await?;
    Ok(())
}
