//! One SSH connection: its authentication (russh's `Handler`), then the way into the workspace
//! and the channels, each run by its own task. Callbacks answer channel requests at once (russh
//! keeps one pending reply per channel, so a late answer would go to the wrong request); the
//! tasks see the same requests in order and apply the same rules.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use k8shell_proto::identity::v1 as idpb;
use russh::keys::{Algorithm, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Handle, Handler, Msg, Response, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticated, KEYBOARD_INTERACTIVE, PUBLICKEY, Refusal};
use crate::forward;
use crate::inbound::Backlog;
use crate::proxy::Proxy;
use crate::session_channel::{self, Ends, env_allowed};
use k8shell_gateway::{Attachment, ClientFacts, Stage};

/// What the tasks of an authenticated connection share.
pub struct Shared {
    pub proxy: Arc<Proxy>,
    pub handle: Handle,
    pub backlog: Arc<Backlog>,
    stage: watch::Receiver<Stage>,
    /// Channels with a terminal, for notices (termination, shutdown).
    terminals: Mutex<Vec<ChannelId>>,
    /// Why the connection ended, when the proxy ended it.
    end_reason: Mutex<Option<String>>,
    tasks: Mutex<Vec<AbortHandle>>,
    /// Channels open now (their tasks run).
    channels: Mutex<HashMap<ChannelId, Requests>>,
    /// Cancelled when the connection ended: every channel task stops.
    pub closed: CancellationToken,
    /// Cuts the TCP stream (when a disconnect is not processed in time).
    cut: CancellationToken,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// The requests a session channel made so far (for the immediate replies).
#[derive(Debug, Default, Clone, Copy)]
struct Requests {
    pty: bool,
    started: bool,
}

impl Shared {
    /// The attachment, once the connection is in its workspace.
    pub fn attachment(&self) -> Option<Arc<Attachment>> {
        match &*self.stage.borrow() {
            Stage::Ready(attachment) => Some(Arc::clone(attachment)),
            _ => None,
        }
    }

    /// Input from the user (counted once the session exists).
    pub fn input(&self, bytes: usize) {
        if let Stage::Ready(attachment) = &*self.stage.borrow() {
            attachment.input(bytes);
        }
    }

    /// Waits until the connection is in its workspace (or cannot be).
    pub async fn ready(&self) -> Stage {
        let mut stage = self.stage.clone();
        let settled = stage
            .wait_for(|s| !matches!(s, Stage::Preparing(_)))
            .await
            .map(|s| s.clone());
        settled.unwrap_or_else(|_| Stage::Refused("the connection is closing".into()))
    }

    /// Waits for the workspace; a terminal sees what is being waited for, with progress. A
    /// refusal ends the channel with its message.
    pub async fn wait_ready(&self, ends: &Ends<'_>, terminal: bool) -> Option<Arc<Attachment>> {
        if terminal {
            self.terminals
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ends.id);
            self.show_progress(ends).await;
        }
        match self.ready().await {
            Stage::Ready(attachment) => Some(attachment),
            Stage::Refused(message) => {
                ends.fail(&message).await;
                None
            }
            Stage::Preparing(_) => None,
        }
    }

    async fn show_progress(&self, ends: &Ends<'_>) {
        let mut stage = self.stage.clone();
        let started = tokio::time::Instant::now();
        let mut shown = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let what = match &*stage.borrow_and_update() {
                Stage::Preparing(what) => what.clone(),
                _ => break,
            };
            if !shown && !what.is_empty() {
                ends.say(&format!("k8shell: {what}…")).await;
                shown = true;
            }
            tokio::select! {
                changed = stage.changed() => if changed.is_err() { break },
                _ = tick.tick() => if shown { ends.say(".").await },
            }
        }
        if shown {
            let took = started.elapsed().as_secs_f64();
            let outcome = match &*stage.borrow() {
                Stage::Ready(_) => format!(" ready ({took:.1} s)\r\n"),
                _ => "\r\n".to_owned(),
            };
            ends.say(&outcome).await;
        }
    }

    /// Writes `text` to every terminal of the connection.
    pub async fn notify_terminals(&self, text: &str) {
        let terminals = self
            .terminals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for id in terminals {
            let notice = self.handle.data(id, Bytes::from(text.to_owned()));
            // A notice must not hold up what follows it (a disconnect, the drain).
            let _ = tokio::time::timeout(Duration::from_secs(1), notice).await;
        }
    }

    /// Ends the connection with `reason` (recorded in the session), telling the client; if the
    /// disconnect is not through within a few seconds (a client that stopped reading keeps
    /// russh's loop from it), the TCP stream is cut.
    pub async fn end(&self, reason: &str, tell_client: &str) {
        self.end_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| reason.to_owned());
        let cut = self.cut.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            cut.cancel();
        });
        let _ = tokio::time::timeout(
            Duration::from_secs(3),
            self.handle.disconnect(
                russh::Disconnect::ByApplication,
                tell_client.to_owned(),
                "en".to_owned(),
            ),
        )
        .await;
    }

    /// After the connection ended: channel and background tasks stop and the session is closed.
    pub fn finish(&self, default_reason: &str) {
        self.closed.cancel();
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        let reason = self
            .end_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| default_reason.to_owned());
        if let Stage::Ready(attachment) = &*self.stage.borrow() {
            attachment.close(&reason);
        }
    }

    fn keep(&self, task: AbortHandle) {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }

    fn with_channels<T>(&self, f: impl FnOnce(&mut HashMap<ChannelId, Requests>) -> T) -> T {
        f(&mut self.channels.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Removes a channel's bookkeeping when its task ends, however it ends.
struct ChannelGuard {
    shared: Arc<Shared>,
    id: ChannelId,
}

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        self.shared.with_channels(|c| c.remove(&self.id));
        self.shared
            .terminals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|t| *t != self.id);
    }
}

/// The `Handler` of one connection.
pub struct Connection {
    proxy: Arc<Proxy>,
    peer: SocketAddr,
    refusals: usize,
    /// A key accepted in a probe, waiting for its signature.
    offered: Option<(String, PublicKey, Authenticated)>,
    /// A device login in progress: the user name it is for, and identity's answer.
    device: Option<(String, idpb::BeginDeviceLoginResponse)>,
    authenticated: Option<Authenticated>,
    backlog: Arc<Backlog>,
    /// Set once authenticated; read by the server for shutdown and at the end.
    pub shared: Arc<OnceLock<Arc<Shared>>>,
    pub authed: Arc<AtomicBool>,
    login_deadline: tokio::time::Instant,
    handle: Arc<OnceLock<Handle>>,
    cut: CancellationToken,
    /// Device logins started on this connection (one is allowed).
    device_logins: usize,
}

impl Connection {
    pub fn new(
        proxy: Arc<Proxy>,
        peer: SocketAddr,
        handle: Arc<OnceLock<Handle>>,
        cut: CancellationToken,
    ) -> Self {
        let login_deadline = tokio::time::Instant::now() + proxy.config.auth.login_grace;
        Self {
            proxy,
            peer,
            refusals: 0,
            offered: None,
            device: None,
            authenticated: None,
            backlog: Arc::new(Backlog::default()),
            shared: Arc::new(OnceLock::new()),
            authed: Arc::new(AtomicBool::new(false)),
            login_deadline,
            handle,
            cut,
            device_logins: 0,
        }
    }

    /// Records a refused attempt; past the limit, the connection is dropped.
    async fn refuse(&mut self, user: &str, method: &str, refusal: Refusal) -> Auth {
        self.refusals += 1;
        let max = self.proxy.config.auth.max_attempts;
        let mut reason = refusal.0;
        if self.refusals >= max {
            reason.push_str(&format!(
                "; {max} attempts refused, disconnected (too many attempts)"
            ));
            if let Some(handle) = self.handle.get().cloned() {
                tokio::spawn(async move {
                    let _ = handle
                        .disconnect(
                            russh::Disconnect::NoMoreAuthMethodsAvailable,
                            "Too many authentication attempts".to_owned(),
                            "en".to_owned(),
                        )
                        .await;
                });
            }
        }
        self.proxy
            .auth_failed(self.peer, user, method, &reason)
            .await;
        Auth::reject()
    }

    fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.get()
    }

    /// Whether a new channel may open now; otherwise why not.
    fn may_open(&self) -> Result<Arc<Shared>, ChannelOpenFailure> {
        let shared = self
            .shared()
            .ok_or(ChannelOpenFailure::AdministrativelyProhibited)?;
        if self.proxy.draining() {
            return Err(ChannelOpenFailure::ResourceShortage);
        }
        if shared.with_channels(|c| c.len()) >= self.proxy.config.channels.max_per_connection {
            return Err(ChannelOpenFailure::ResourceShortage);
        }
        Ok(Arc::clone(shared))
    }

    /// Registers a new channel, or refuses it (answering the client) when it may not open.
    /// `session`: it takes requests (pty-req, env, shell, …); other channels refuse them all.
    async fn open(
        &self,
        id: ChannelId,
        reply: ChannelOpenHandle,
        session: bool,
    ) -> Option<(ChannelGuard, ChannelOpenHandle)> {
        match self.may_open() {
            Ok(shared) => {
                let requests = Requests {
                    pty: !session,
                    started: !session,
                };
                shared.with_channels(|c| c.insert(id, requests));
                Some((ChannelGuard { shared, id }, reply))
            }
            Err(reason) => {
                reply.reject(reason).await;
                None
            }
        }
    }

    fn update(&self, id: ChannelId, f: impl FnOnce(&mut Requests) -> bool) -> bool {
        self.shared()
            .is_some_and(|s| s.with_channels(|c| c.get_mut(&id).is_some_and(f)))
    }

    fn reply(session: &mut Session, id: ChannelId, ok: bool) -> Result<(), russh::Error> {
        if ok {
            session.channel_success(id)
        } else {
            session.channel_failure(id)
        }
    }
}

impl Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        // Every client asks first; russh counts it toward the attempts, so do we, but it is no
        // failure worth an event.
        self.refusals += 1;
        Ok(Auth::Reject {
            proceed_with_methods: Some(self.proxy.methods()),
            partial_success: false,
        })
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if matches!(offer.algorithm, Algorithm::Rsa { hash: None }) {
            let refusal = Refusal("ssh-rsa (SHA-1) signatures are not accepted".to_owned());
            return Ok(self.refuse(user, PUBLICKEY, refusal).await);
        }
        match self
            .proxy
            .authenticate_key(user, offer.public_key, self.peer)
            .await
        {
            Ok(authenticated) => {
                self.offered = Some((user.to_owned(), offer.public_key.clone(), authenticated));
                Ok(Auth::Accept)
            }
            Err(refusal) => Ok(self.refuse(user, PUBLICKEY, refusal).await),
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.offered.take() {
            Some((name, offered, authenticated))
                if name == user && offered.key_data() == key.public_key.key_data() =>
            {
                self.authenticated = Some(authenticated);
                Ok(Auth::Accept)
            }
            _ => {
                let refusal = Refusal("a signature for a key that was not offered".to_owned());
                Ok(self.refuse(user, PUBLICKEY, refusal).await)
            }
        }
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if !self.proxy.config.auth.device_login {
            return Ok(Auth::reject());
        }
        match (response, self.device.take()) {
            // The answer to our (prompt-less) instructions: now wait for the browser.
            (Some(_), Some((name, started))) if name == user => {
                match self
                    .proxy
                    .finish_device_login(user, &started, self.login_deadline, self.peer)
                    .await
                {
                    Ok(authenticated) => {
                        self.authenticated = Some(authenticated);
                        Ok(Auth::Accept)
                    }
                    Err(refusal) => Ok(self.refuse(user, KEYBOARD_INTERACTIVE, refusal).await),
                }
            }
            // One device login per connection: each one costs identity a pending login.
            _ if self.device_logins > 0 => {
                let refusal = Refusal("a second device login on one connection".to_owned());
                Ok(self.refuse(user, KEYBOARD_INTERACTIVE, refusal).await)
            }
            _ => match self.proxy.begin_device_login(self.peer).await {
                Ok(started) => {
                    self.device_logins += 1;
                    let instructions = format!(
                        "To log in, open {} in a browser and confirm the code {}.\n\
                         Waiting for you…",
                        started.verification_uri_complete, started.user_code
                    );
                    self.device = Some((user.to_owned(), started));
                    Ok(Auth::Partial {
                        name: "k8shell login".into(),
                        instructions: instructions.into(),
                        prompts: Vec::new().into(),
                    })
                }
                Err(refusal) => Ok(self.refuse(user, KEYBOARD_INTERACTIVE, refusal).await),
            },
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.authed.store(true, Ordering::Relaxed);
        let Some(login) = self.authenticated.take() else {
            return Err(russh::Error::NotAuthenticated);
        };
        let facts = ClientFacts {
            kind: k8shell_session::SessionKind::Ssh,
            peer: self.peer,
            version: String::from_utf8_lossy(session.remote_sshid()).into_owned(),
        };
        tracing::info!(peer = %self.peer, user = %login.user.username, method = login.method,
                       target = %login.login.target, client = %facts.version, "logged in");
        let (stage, stage_rx) = watch::channel(Stage::Preparing(String::new()));
        let shared = Arc::new(Shared {
            proxy: Arc::clone(&self.proxy),
            handle: session.handle(),
            backlog: Arc::clone(&self.backlog),
            stage: stage_rx,
            terminals: Mutex::new(Vec::new()),
            end_reason: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            channels: Mutex::new(HashMap::new()),
            closed: CancellationToken::new(),
            cut: self.cut.clone(),
        });
        let _ = self.shared.set(Arc::clone(&shared));
        let task = tokio::spawn(enter(Arc::clone(&shared), login, facts, stage));
        shared.keep(task.abort_handle());
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some((guard, reply)) = self.open(channel.id(), reply, true).await else {
            return Ok(());
        };
        tokio::spawn(async move {
            session_channel::run(channel, Arc::clone(&guard.shared)).await;
            drop(guard);
        });
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some((guard, reply)) = self.open(channel.id(), reply, false).await else {
            return Ok(());
        };
        let target = forward::Target {
            host: host_to_connect.to_owned(),
            port: port_to_connect,
            originator: format!("{originator_address}:{originator_port}"),
        };
        // Answered once connected inside the workspace.
        tokio::spawn(async move {
            forward::run(channel, reply, target, Arc::clone(&guard.shared)).await;
            drop(guard);
        });
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = self.update(channel, |r| {
            let ok = !r.pty && !r.started;
            r.pty |= ok;
            ok
        });
        Self::reply(session, channel, ok)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let allowed = env_allowed(variable_name, &self.proxy.config.channels.env_allow);
        let ok = allowed && self.update(channel, |r| !r.started);
        Self::reply(session, channel, ok)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = self.update(channel, start);
        Self::reply(session, channel, ok)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = self.update(channel, start);
        Self::reply(session, channel, ok)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = name == "sftp" && self.update(channel, start);
        Self::reply(session, channel, ok)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // No X11 forwarding; the client must hear so (russh would not answer at all).
        session.channel_failure(channel)
    }

    fn adjust_window(&mut self, _channel: ChannelId, current: u32) -> u32 {
        self.backlog.window(current.max(self.proxy.window_size()))
    }
}

/// Marks a session channel started, once.
fn start(requests: &mut Requests) -> bool {
    let ok = !requests.started;
    requests.started = true;
    ok
}

/// The way into the workspace, then what runs beside the channels: termination requests and
/// activity reports.
async fn enter(
    shared: Arc<Shared>,
    login: Authenticated,
    facts: ClientFacts,
    stage: watch::Sender<Stage>,
) {
    let proxy = Arc::clone(&shared.proxy);
    let attachment = match proxy
        .gateway
        .attach(login.user, &login.login.target, facts, &stage)
        .await
    {
        Ok(attachment) => attachment,
        Err(message) => {
            stage.send_replace(Stage::Refused(message.into()));
            return;
        }
    };
    stage.send_replace(Stage::Ready(Arc::clone(&attachment)));
    let Some(terminated) = attachment.terminated() else {
        return;
    };
    let mut terminated = std::pin::pin!(terminated);
    let mut touch = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            notice = &mut terminated => {
                let by = if notice.requested_by.is_empty() { "an administrator".to_owned() } else { notice.requested_by.clone() };
                shared
                    .notify_terminals(&format!(
                        "\r\nk8shell: this session was terminated by {by}: {}\r\n",
                        notice.reason
                    ))
                    .await;
                attachment.event("terminate", 0, serde_json::json!({"by": by, "reason": notice.reason}));
                shared
                    .end(
                        &format!("terminated by {by}: {}", notice.reason),
                        &format!("session terminated by {by}: {}", notice.reason),
                    )
                    .await;
                return;
            }
            _ = touch.tick() => {
                let _ = tokio::time::timeout(Duration::from_secs(5), attachment.touch_if_active(&proxy.gateway)).await;
            }
        }
    }
}
