//! What every connection shares: the configuration, the gateway into workspaces, and whether the proxy is
//! shutting down.

use std::sync::atomic::{AtomicBool, Ordering};

use russh::{MethodKind, MethodSet};

use crate::Config;
use k8shell_gateway::Gateway;

/// The proxy.
#[derive(Debug)]
pub struct Proxy {
    pub config: Config,
    pub gateway: Gateway,
    draining: AtomicBool,
}

/// The receive window per channel (OpenSSH's too).
const WINDOW_SIZE: u32 = 2 * 1024 * 1024;

impl Proxy {
    pub fn new(config: Config, gateway: Gateway) -> Self {
        Self {
            config,
            gateway,
            draining: AtomicBool::new(false),
        }
    }

    /// The login methods offered: keys, and device login when configured. Never passwords.
    pub fn methods(&self) -> MethodSet {
        if self.config.auth.device_login {
            MethodSet::from(&[MethodKind::PublicKey, MethodKind::KeyboardInteractive][..])
        } else {
            MethodSet::from(&[MethodKind::PublicKey][..])
        }
    }

    pub fn window_size(&self) -> u32 {
        WINDOW_SIZE
    }

    /// New channels are refused once shutdown began.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}
