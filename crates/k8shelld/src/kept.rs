//! Terminals kept for `Attach`: an Exec with a PTY and `keep_seconds` registers here under a
//! random id, with its owner (the session token's user). `Attach` by that user hands the
//! terminal a new client; the terminal drops the old one if it still had one.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use k8shell_proto::k8shelld::v1::ExecInput;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::exec::OutputSender;

/// A client taking over a kept terminal.
#[derive(Debug)]
pub struct Client {
    pub input: Streaming<ExecInput>,
    pub output: OutputSender,
    pub size: Option<nix::pty::Winsize>,
}

#[derive(Debug)]
struct Entry {
    owner: String,
    handover: mpsc::Sender<Client>,
}

/// Every kept terminal of this workspace.
#[derive(Debug, Default)]
pub struct KeptTerminals {
    entries: Mutex<HashMap<String, Entry>>,
}

impl KeptTerminals {
    /// Registers a terminal of `owner`; returns its id and where new clients arrive.
    pub fn register(&self, owner: &str) -> (String, mpsc::Receiver<Client>) {
        // Unguessable, though only the owner's session tokens may use it anyway.
        let mut bytes = [0u8; 16];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let (handover, arrivals) = mpsc::channel(1);
        self.lock().insert(
            id.clone(),
            Entry {
                owner: owner.to_owned(),
                handover,
            },
        );
        (id, arrivals)
    }

    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Hands `client` to the terminal `id` if `user` owns it. Someone else's terminal and one
    /// that is gone look the same.
    pub async fn attach(&self, id: &str, user: &str, client: Client) -> Result<(), Status> {
        let gone = || {
            Status::not_found(
                "that terminal is gone: its shell ended or it waited too long for you",
            )
        };
        let handover = match self.lock().get(id) {
            Some(entry) if entry.owner == user => entry.handover.clone(),
            _ => return Err(gone()),
        };
        handover.send(client).await.map_err(|_| gone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
