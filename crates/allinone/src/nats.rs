//! nats-server with JetStream, store in `<state>/nats/jetstream`, on free loopback ports
//! (the store does not depend on them).

use nix::sys::signal::Signal;

use crate::Error;
use crate::child::{Child, command_dying_with_us, pid_in, require_program, stop_orphan};
use crate::state::StateDir;

/// The running server.
#[derive(Debug)]
pub struct Nats {
    child: Child,
    pub url: String,
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
        let port = crate::free_port()?;
        let monitor = crate::free_port()?;
        let text = format!(
            "listen: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\nserver_name: \"k8shell-allinone\"\n\
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
            url: format!("nats://127.0.0.1:{port}"),
        })
    }

    pub async fn stop(self) {
        self.child.stop().await;
    }
}
