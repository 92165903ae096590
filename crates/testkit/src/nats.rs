//! A throwaway nats-server with JetStream, which can be stopped and started again on the same
//! port and store (to test what survives an outage).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::binaries::require;
use crate::process::ServerProcess;
use crate::{TestkitError, free_port};

const PACKAGE: &str = "nats-server";

/// A running (or stopped) nats-server; removed on drop.
#[derive(Debug)]
pub struct Nats {
    process: Option<ServerProcess>,
    binary: PathBuf,
    port: u16,
    monitor_port: u16,
    dir: TempDir,
}

impl Nats {
    /// Starts nats-server with JetStream on free ports.
    pub fn start() -> Result<Self, TestkitError> {
        let binary = require("nats-server", PACKAGE, &[Path::new("/usr/sbin")])?;
        let dir = tempfile::Builder::new()
            .prefix("k8shell-nats-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating the NATS temp dir", e))?;
        let mut nats = Self {
            process: None,
            binary,
            port: free_port()?,
            monitor_port: free_port()?,
            dir,
        };
        nats.start_again()?;
        Ok(nats)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGINT: SIGTERM makes it exit 1). Its store stays.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts the server again on the same ports and store.
    pub fn start_again(&mut self) -> Result<(), TestkitError> {
        self.stop();
        let config = self.dir.path().join("nats.conf");
        let store = self.dir.path().join("jetstream");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\njetstream {{\n  store_dir: {:?}\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}\n",
                self.port,
                self.monitor_port,
                store.display().to_string()
            ),
        )
        .map_err(|e| TestkitError::io("writing nats.conf", e))?;
        let mut command = Command::new(&self.binary);
        command.arg("-c").arg(&config);
        let mut process = ServerProcess::spawn(
            "nats-server",
            command,
            &self.dir.path().join("nats.log"),
            libc::SIGINT,
        )?;
        let monitor_port = self.monitor_port;
        process.wait_until("JetStream health", || jetstream_healthy(monitor_port))?;
        self.process = Some(process);
        Ok(())
    }

    /// The server's log (across restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// PID of the running server, if any.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ServerProcess::pid)
    }
}

/// `GET /healthz?js-enabled-only=true` answers 200.
fn jetstream_healthy(monitor_port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", monitor_port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1:{monitor_port}\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
}
