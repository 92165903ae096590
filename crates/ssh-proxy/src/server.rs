//! The listener: one task per connection, each a russh session with the proxy's keys and
//! algorithms, cut off if it is not logged in within the login grace time; and the graceful
//! shutdown: stop accepting, tell users, let sessions finish within the drain time, then end
//! the rest.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use russh::keys::PrivateKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::abortable::AbortableStream;
use crate::connection::{Connection, Shared};
use crate::proxy::Proxy;

/// The russh configuration of the proxy.
pub fn ssh_config(keys: Vec<PrivateKey>, proxy: &Proxy) -> russh::server::Config {
    russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-k8shell".into()),
        keys,
        preferred: crate::algorithms::preferred(),
        methods: proxy.methods(),
        // Every OpenSSH client starts with a `none` request: answer it at once.
        auth_rejection_time_initial: Some(Duration::ZERO),
        auth_rejection_time: proxy.config.auth.rejection_delay,
        max_auth_attempts: proxy.config.auth.max_attempts,
        // Idle shells stay; dead peers are found by keepalives.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        window_size: proxy.window_size(),
        // Clients may send channel data in packets of up to 64 KiB instead of 32: half the
        // packets, messages and writes on the way to k8shelld for bulk uploads (`ssh -L`,
        // stdin, scp). russh warns above a TCP segment's 65535 bytes.
        maximum_packet_size: 65535,
        channel_buffer_size: 16,
        event_buffer_size: 32,
        ..Default::default()
    }
}

/// One connection as the shutdown sees it.
struct Live {
    shared: Arc<OnceLock<Arc<Shared>>>,
    cut: CancellationToken,
}

/// Accepts connections on `listener` until `stop`, then drains.
pub async fn serve(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    proxy: Arc<Proxy>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let tracker = TaskTracker::new();
    let live: Arc<Mutex<HashMap<u64, Live>>> = Arc::default();
    let mut next_id = 0u64;
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors and the like: wait a little rather than spin or stop.
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "nodelay");
        }
        next_id += 1;
        let id = next_id;
        let cut = CancellationToken::new();
        let handle_slot = Arc::new(OnceLock::new());
        let handler = Connection::new(
            Arc::clone(&proxy),
            peer,
            Arc::clone(&handle_slot),
            cut.clone(),
        );
        live.lock().unwrap_or_else(PoisonError::into_inner).insert(
            id,
            Live {
                shared: Arc::clone(&handler.shared),
                cut: cut.clone(),
            },
        );
        let stream = AbortableStream::new(tcp, cut.clone());
        let (config, proxy, live) = (config.clone(), proxy.clone(), live.clone());
        tracker.spawn(async move {
            connection(config, proxy, stream, handler, peer, handle_slot, cut).await;
            live.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        });
    }
    drop(listener);
    drain(&proxy, &live, &tracker).await;
    Ok(())
}

async fn connection(
    config: Arc<russh::server::Config>,
    proxy: Arc<Proxy>,
    stream: AbortableStream<tokio::net::TcpStream>,
    handler: Connection,
    peer: SocketAddr,
    handle_slot: Arc<OnceLock<russh::server::Handle>>,
    cut: CancellationToken,
) {
    let shared = Arc::clone(&handler.shared);
    let authed: Arc<AtomicBool> = Arc::clone(&handler.authed);
    let grace = proxy.config.auth.login_grace;
    let run = async {
        let session = russh::server::run_stream(config, stream, handler).await?;
        let _ = handle_slot.set(session.handle());
        session.await
    };
    let mut run = std::pin::pin!(run);
    let outcome = tokio::select! {
        outcome = &mut run => outcome,
        () = tokio::time::sleep(grace) => {
            if authed.load(Ordering::Relaxed) {
                run.await
            } else {
                proxy.auth_failed(peer, "", "none", "not logged in within the login grace time; disconnected").await;
                cut.cancel();
                Ok(())
            }
        }
    };
    let reason = match &outcome {
        Ok(()) => "the client disconnected".to_owned(),
        Err(error) => {
            tracing::debug!(%peer, %error, "connection ended");
            format!("the connection ended: {error}")
        }
    };
    if let Some(shared) = shared.get() {
        shared.finish(&reason);
    }
}

/// Stop accepting (done), tell users, wait up to the drain time, then end what is left.
async fn drain(proxy: &Proxy, live: &Mutex<HashMap<u64, Live>>, tracker: &TaskTracker) {
    proxy.start_draining();
    tracker.close();
    let deadline = proxy.config.drain;
    let (authed, unauthenticated): (Vec<_>, Vec<_>) = {
        let live = live.lock().unwrap_or_else(PoisonError::into_inner);
        live.values()
            .map(|l| (l.shared.get().cloned(), l.cut.clone()))
            .partition(|(shared, _)| shared.is_some())
    };
    for (_, cut) in unauthenticated {
        cut.cancel();
    }
    tracing::info!(sessions = authed.len(), drain = ?deadline, "draining");
    let notice = format!(
        "\r\nk8shell: the proxy is shutting down; this connection ends within {} s\r\n",
        deadline.as_secs()
    );
    for (shared, _) in &authed {
        if let Some(shared) = shared {
            shared.notify_terminals(&notice).await;
        }
    }
    if tokio::time::timeout(deadline, tracker.wait()).await.is_ok() {
        return;
    }
    for (shared, _) in &authed {
        if let Some(shared) = shared {
            shared
                .end("the proxy shut down", "k8shell: the proxy shut down")
                .await;
        }
    }
    if tokio::time::timeout(Duration::from_secs(2), tracker.wait())
        .await
        .is_err()
    {
        for (_, cut) in &authed {
            cut.cancel();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
    }
}
