//! nats-server with JetStream, store in `<state>/nats/jetstream`, on free loopback ports
//! (the store does not depend on them), with a token drawn at each start: loopback is shared
//! with every local user, who must not publish k8shell's events (terminations, for one).

use k8shell_common::config::SecretFile;
use k8shell_common::events::NatsConfig;
use nix::sys::signal::Signal;

use crate::Error;
use crate::child::{Child, command_dying_with_us, pid_in, require_program, stop_orphan};
use crate::state::StateDir;

/// The running server.
#[derive(Debug)]
pub struct Nats {
    child: Child,
    /// How the services connect.
    pub config: NatsConfig,
}

impl Nats {
    pub async fn start(state: &StateDir) -> Result<Self, Error> {
        let binary = require_program("nats-server", "nats-server")?;
        let dir = state.dir("nats")?;
        let pid_file = dir.join("nats.pid");
        let conf = dir.join("nats.conf");
        // Two servers on one store corrupt it: a server of a killed run goes first.
        if let Some(pid) = pid_in(&pid_file) {
            stop_orphan("nats-server", pid, &conf, Signal::SIGINT).await;
        }
        let [port, monitor] = crate::free_ports()?;
        let token = crate::random_token()?;
        let token_file = dir.join("token");
        crate::state::write_private(&token_file, token.as_bytes())?;
        let text = format!(
            "listen: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\nserver_name: \"k8shell-allinone\"\n\
             authorization {{\n  token: \"{token}\"\n}}\n\
             pid_file: \"{}\"\njetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}\n",
            pid_file.display(),
            dir.join("jetstream").display()
        );
        crate::state::write_private(&conf, text.as_bytes())?;
        let mut command = command_dying_with_us(&binary, Signal::SIGINT);
        command.arg("-c").arg(&conf);
        let log = state.dir("logs")?.join("nats.log");
        // SIGINT: a clean stop (SIGTERM exits with status 1).
        let mut child = Child::spawn("nats-server", command, &log, Signal::SIGINT)?;
        let health = format!("http://127.0.0.1:{monitor}/healthz?js-enabled-only=true");
        child
            .wait_ready(|| {
                let health = health.clone();
                async move { k8shell_common::http::get(&health, None).await.is_ok() }
            })
            .await?;
        Ok(Self {
            child,
            config: NatsConfig {
                url: format!("nats://127.0.0.1:{port}"),
                token_file: Some(SecretFile(token_file)),
            },
        })
    }

    pub async fn stop(self) {
        self.child.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_holders_of_the_token_may_connect() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _) = StateDir::open(dir.path()).unwrap();
        let nats = Nats::start(&state).await.unwrap();
        let token = nats.config.token_file.as_ref().unwrap().read().unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&nats.config.token_file.as_ref().unwrap().0)
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let anonymous = async_nats::connect(nats.config.url.as_str()).await;
        assert!(
            anonymous.is_err(),
            "a connection without the token is refused"
        );
        let client = async_nats::ConnectOptions::with_token(token.expose().to_owned())
            .connect(nats.config.url.as_str())
            .await
            .unwrap();
        client.flush().await.unwrap();
        nats.stop().await;
    }
}
