//! `Exec`: a command or login shell as the workspace user, with or without a PTY, streamed both
//! ways. Every queue is bounded: a slow reader on either side slows the other side down.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8shell_proto::k8shelld::v1::{
    ExecInput, ExecOutput, ExecStart, ExitStatus, Signaled, Started, exec_input, exec_output,
    exit_status,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tonic::{Status, Streaming};

use crate::Shared;
use crate::kept::Client;
use crate::pty::{self, PtyMaster};
use crate::reaper::Exit;
use crate::signals;
use crate::spawn::{self, Program, Streams};

/// Bytes per output message (ARCHITECTURE §3: at most 64 KiB per frame).
const CHUNK: usize = 64 * 1024;
/// Output messages queued towards the client before the process is made to wait.
pub(crate) const OUTPUT_QUEUE: usize = 4;

pub type OutputSender = mpsc::Sender<Result<ExecOutput, Status>>;

/// Runs one Exec stream: returns the receiving end of its output.
pub async fn exec(
    shared: Arc<Shared>,
    user: &str,
    mut input: Streaming<ExecInput>,
) -> Result<mpsc::Receiver<Result<ExecOutput, Status>>, Status> {
    let start = match input.next().await {
        Some(Ok(ExecInput {
            input: Some(exec_input::Input::Start(start)),
        })) => start,
        Some(Ok(_)) => {
            return Err(Status::invalid_argument(
                "the first Exec message must be `start`",
            ));
        }
        Some(Err(status)) => return Err(status),
        None => {
            return Err(Status::invalid_argument(
                "Exec stream closed before `start`",
            ));
        }
    };
    // The client took its time to say what to run: refused now if k8shelld began to stop
    // meanwhile, before the command runs (a refusal after it ran could make a retry run it twice).
    shared.refuse_if_stopping()?;
    let program = program(&start);
    let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
    let shared_for_guard = Arc::clone(&shared);
    match start.pty {
        Some(pty_request) => {
            let size = pty_request.size.unwrap_or_default();
            let pty = pty::open(
                pty::winsize(size.cols, size.rows, size.width_px, size.height_px),
                &pty_request.modes,
            )
            .map_err(|e| Status::internal(format!("cannot open a PTY: {e}")))?;
            let mut program = program;
            program.term = Some(if pty_request.term.is_empty() {
                "xterm".to_owned()
            } else {
                pty_request.term
            });
            let process = spawn::spawn(
                &shared.reaper,
                &shared.account,
                &program,
                Streams::Pty(pty.slave),
            )
            .map_err(spawn_status)?;
            tracing::info!(pid = process.pid, pty = true, command = ?program.command, "exec started");
            let guard = shared_for_guard.track(process.pid)?;
            let kept = (start.keep_seconds > 0).then(|| {
                let (id, arrivals) = shared.kept.register(user);
                Kept {
                    id,
                    arrivals,
                    time: Duration::from_secs(u64::from(start.keep_seconds)),
                }
            });
            send(
                &tx,
                exec_output::Output::Started(Started {
                    pid: pid_u32(process.pid),
                    attach_id: kept.as_ref().map(|k| k.id.clone()).unwrap_or_default(),
                }),
            )
            .await;
            tokio::spawn(async move {
                run_pty(
                    shared,
                    process.pid,
                    process.exit,
                    pty.master,
                    input,
                    tx,
                    kept,
                )
                .await;
                drop(guard);
            });
        }
        None => {
            let process = spawn::spawn(&shared.reaper, &shared.account, &program, Streams::Pipes)
                .map_err(spawn_status)?;
            let Some((stdin, stdout, stderr)) = process.pipes else {
                return Err(Status::internal("process started without pipes"));
            };
            tracing::info!(pid = process.pid, pty = false, command = ?program.command, "exec started");
            let guard = shared_for_guard.track(process.pid)?;
            send(
                &tx,
                exec_output::Output::Started(Started {
                    pid: pid_u32(process.pid),
                    attach_id: String::new(),
                }),
            )
            .await;
            tokio::spawn(async move {
                run_pipes(
                    shared,
                    process.pid,
                    process.exit,
                    [stdin, stdout, stderr],
                    input,
                    tx,
                )
                .await;
                drop(guard);
            });
        }
    }
    Ok(rx)
}

fn program(start: &ExecStart) -> Program {
    Program {
        command: (!start.command.is_empty()).then(|| start.command.clone()),
        env: start
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        working_dir: (!start.working_dir.is_empty()).then(|| PathBuf::from(&start.working_dir)),
        term: None,
        executable: None,
    }
}

fn spawn_status(error: spawn::SpawnError) -> Status {
    match error {
        spawn::SpawnError::EnvName(_)
        | spawn::SpawnError::Path(_)
        | spawn::SpawnError::NoWorkingDir(_) => Status::invalid_argument(error.to_string()),
        spawn::SpawnError::CannotSwitchUser { .. } => Status::permission_denied(error.to_string()),
        spawn::SpawnError::Start { .. } => Status::failed_precondition(error.to_string()),
    }
}

fn pid_u32(pid: i32) -> u32 {
    u32::try_from(pid).unwrap_or_default()
}

async fn send(tx: &OutputSender, output: exec_output::Output) -> bool {
    tx.send(Ok(ExecOutput {
        output: Some(output),
    }))
    .await
    .is_ok()
}

fn exit_output(exit: Exit) -> exec_output::Output {
    exec_output::Output::Exit(ExitStatus {
        status: Some(match exit {
            Exit::Code(code) => exit_status::Status::Code(code),
            Exit::Signal {
                signal,
                core_dumped,
            } => exit_status::Status::Signal(Signaled {
                name: signals::name_of(signal),
                core_dumped,
            }),
        }),
    })
}

/// What the client asked for, after `start`.
enum Control {
    Stdin(Vec<u8>),
    Eof,
    Resize(nix::pty::Winsize),
    Signal(Signal),
    /// The client will send nothing more (its stream ended normally).
    Closed,
    /// The client went away (the stream failed or was cancelled).
    Gone,
}

/// Turns the input stream into controls; unknown signals are ignored like sshd does.
async fn next_control(input: &mut Streaming<ExecInput>) -> Control {
    loop {
        let message = match input.next().await {
            Some(Ok(message)) => message,
            Some(Err(_)) => return Control::Gone,
            None => return Control::Closed,
        };
        match message.input {
            Some(exec_input::Input::Stdin(bytes)) => return Control::Stdin(bytes),
            Some(exec_input::Input::StdinEof(_)) => return Control::Eof,
            Some(exec_input::Input::Resize(size)) => {
                return Control::Resize(pty::winsize(
                    size.cols,
                    size.rows,
                    size.width_px,
                    size.height_px,
                ));
            }
            Some(exec_input::Input::Signal(name)) => match signals::from_name(&name) {
                Some(signal) => return Control::Signal(signal),
                None => tracing::info!(signal = %name, "ignoring an unknown signal"),
            },
            Some(exec_input::Input::Start(_) | exec_input::Input::Attach(_)) | None => {
                tracing::info!("ignoring a second `start` or `attach`");
            }
        }
    }
}

/// Ends a process group whose client is gone: HUP, then KILL after a grace period.
async fn hang_up(pid: i32, grace: Duration, exited: &mut oneshot::Receiver<Exit>) {
    let group = Pid::from_raw(pid);
    let _ = killpg(group, Signal::SIGHUP);
    if tokio::time::timeout(grace, &mut *exited).await.is_err() {
        let _ = killpg(group, Signal::SIGKILL);
    }
}

async fn run_pipes(
    shared: Arc<Shared>,
    pid: i32,
    mut exit: oneshot::Receiver<Exit>,
    [stdin, stdout, stderr]: [OwnedFd; 3],
    mut input: Streaming<ExecInput>,
    tx: OutputSender,
) {
    let (stdin, stdout, stderr) = match (
        pipe::Sender::from_owned_fd(stdin),
        pipe::Receiver::from_owned_fd(stdout),
        pipe::Receiver::from_owned_fd(stderr),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => {
            let _ = tx
                .send(Err(Status::internal("cannot use the process's pipes")))
                .await;
            hang_up(pid, shared.config.kill_grace, &mut exit).await;
            return;
        }
    };
    let out = tokio::spawn(pump_pipe(stdout, tx.clone(), exec_output::Output::Stdout));
    let err = tokio::spawn(pump_pipe(stderr, tx.clone(), exec_output::Output::Stderr));

    // Stdin is written by its own task, so that a process that does not read cannot keep us
    // from seeing its exit, a signal, or the client going away.
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<Vec<u8>>(OUTPUT_QUEUE);
    tokio::spawn(async move {
        let mut pipe = stdin;
        while let Some(bytes) = stdin_rx.recv().await {
            if pipe.write_all(&bytes).await.is_err() {
                // The process closed its stdin: the rest is dropped, as a pipe would.
                return;
            }
        }
    });
    let mut stdin = Some(stdin_tx);
    let mut input_open = true;
    let status = 'session: loop {
        tokio::select! {
            status = &mut exit => break status.ok(),
            _ = tx.closed() => {
                hang_up(pid, shared.config.kill_grace, &mut exit).await;
                return;
            }
            control = next_control(&mut input), if input_open => match control {
                Control::Stdin(bytes) => {
                    if let Some(sender) = &stdin {
                        tokio::select! {
                            sent = sender.send(bytes) => if sent.is_err() { stdin = None },
                            status = &mut exit => break 'session status.ok(),
                            _ = tx.closed() => {
                                hang_up(pid, shared.config.kill_grace, &mut exit).await;
                                return;
                            }
                        }
                    }
                }
                Control::Eof => stdin = None,
                Control::Closed => {
                    stdin = None;
                    input_open = false;
                }
                Control::Resize(_) => {}
                Control::Signal(signal) => {
                    let _ = killpg(Pid::from_raw(pid), signal);
                }
                Control::Gone => {
                    hang_up(pid, shared.config.kill_grace, &mut exit).await;
                    return;
                }
            },
        }
    };
    drop(stdin);
    // Output the process wrote before exiting is delivered before its status. A background
    // process that keeps the pipes open gets `kill_grace` to finish, not forever.
    let (mut out, mut err) = (out, err);
    let drained = async {
        let _ = (&mut out).await;
        let _ = (&mut err).await;
    };
    tokio::select! {
        _ = drained => {}
        _ = tx.closed() => return,
        _ = tokio::time::sleep(shared.config.kill_grace) => {
            tracing::info!(pid, "a background process keeps the output open; ending the exec");
            // The pumps hold senders of the response stream: stop them so that it ends.
            out.abort();
            err.abort();
        }
    }
    if let Some(status) = status {
        tracing::info!(pid, ?status, "exec ended");
        send(&tx, exit_output(status)).await;
    }
}

async fn pump_pipe(
    mut pipe: pipe::Receiver,
    tx: OutputSender,
    wrap: fn(Vec<u8>) -> exec_output::Output,
) {
    let mut buf = vec![0; CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if !send(&tx, wrap(buf[..n].to_vec())).await {
                    return;
                }
            }
        }
    }
}

/// A terminal kept for `Attach` when its client goes away.
#[derive(Debug)]
pub struct Kept {
    id: String,
    arrivals: mpsc::Receiver<Client>,
    time: Duration,
}

/// How much recent output a terminal keeps for a client that attaches.
const RECENT: usize = 64 * 1024;

/// Where a terminal's output goes: its client, if it has one, and always the recent tail.
#[derive(Debug, Default)]
struct Screen {
    client: Option<OutputSender>,
    recent: std::collections::VecDeque<u8>,
}

impl Screen {
    fn remember(&mut self, data: &[u8]) {
        self.recent.extend(data);
        let extra = self.recent.len().saturating_sub(RECENT);
        self.recent.drain(..extra);
    }
}

/// Resolves when the client's output closes; never while there is no client.
async fn closed(client: &Option<OutputSender>) {
    match client {
        Some(client) => client.closed().await,
        None => std::future::pending().await,
    }
}

fn lock(screen: &std::sync::Mutex<Screen>) -> std::sync::MutexGuard<'_, Screen> {
    screen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes a kept terminal from the registry however its session ends.
struct Registered(Arc<Shared>, Option<String>);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(id) = &self.1 {
            self.0.kept.forget(id);
        }
    }
}

async fn run_pty(
    shared: Arc<Shared>,
    pid: i32,
    mut exit: oneshot::Receiver<Exit>,
    master: PtyMaster,
    input: Streaming<ExecInput>,
    tx: OutputSender,
    mut kept: Option<Kept>,
) {
    let master = Arc::new(master);
    let screen = Arc::new(std::sync::Mutex::new(Screen {
        client: Some(tx.clone()),
        recent: std::collections::VecDeque::new(),
    }));
    let (exited_tx, exited_rx) = oneshot::channel::<()>();
    let out = tokio::spawn(pump_pty(
        Arc::clone(&master),
        Arc::clone(&screen),
        exited_rx,
    ));
    let _registered = Registered(Arc::clone(&shared), kept.as_ref().map(|k| k.id.clone()));
    let mut input = Some(input);
    let mut tx = Some(tx);
    // Set while no client is attached: when the kept terminal is hung up.
    let mut alone_until: Option<tokio::time::Instant> = None;
    let status = 'session: loop {
        let gone = tokio::select! {
            status = &mut exit => break status.ok(),
            Some(client) = async { match kept.as_mut() { Some(k) => k.arrivals.recv().await, None => std::future::pending().await } } => {
                // A new client takes over: it gets the recent output first, then what follows.
                let attach_id = kept.as_ref().map(|k| k.id.clone()).unwrap_or_default();
                let started = ExecOutput { output: Some(exec_output::Output::Started(Started { pid: pid_u32(pid), attach_id })) };
                {
                    let mut s = lock(&screen);
                    let recent: Vec<u8> = s.recent.iter().copied().collect();
                    // A fresh channel has room for both.
                    let _ = client.output.try_send(Ok(started));
                    if !recent.is_empty() {
                        let _ = client.output.try_send(Ok(ExecOutput { output: Some(exec_output::Output::Stdout(recent)) }));
                    }
                    s.client = Some(client.output.clone());
                }
                if let Some(size) = client.size {
                    // The new size also makes full-screen programs redraw.
                    let _ = master.resize(size);
                }
                tracing::info!(pid, "a client attached to the terminal");
                input = Some(client.input);
                tx = Some(client.output);
                alone_until = None;
                continue;
            }
            () = async { match alone_until { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                tracing::info!(pid, "nobody attached to the kept terminal in time: hanging up");
                hang_up(pid, shared.config.kill_grace, &mut exit).await;
                return;
            }
            () = closed(&tx) => true,
            control = async { match input.as_mut() { Some(input) => next_control(input).await, None => std::future::pending().await } } => match control {
                Control::Stdin(bytes) => {
                    // Typing waits for the terminal to take it, but never past an exit or a
                    // client that went away. A failed write means the terminal is closing.
                    tokio::select! {
                        _ = master.write_all(&bytes) => false,
                        status = &mut exit => break 'session status.ok(),
                        () = closed(&tx) => true,
                    }
                }
                Control::Eof => {
                    let _ = master.send_eof().await;
                    false
                }
                Control::Closed => {
                    input = None;
                    false
                }
                Control::Resize(size) => {
                    let _ = master.resize(size);
                    false
                }
                Control::Signal(signal) => {
                    let group = master.foreground_group().unwrap_or(Pid::from_raw(pid));
                    let _ = killpg(group, signal);
                    false
                }
                Control::Gone => true,
            },
        };
        if gone {
            match kept.as_ref() {
                Some(k) => {
                    tracing::info!(pid, keep = ?k.time, "the client went away: keeping the terminal");
                    lock(&screen).client = None;
                    input = None;
                    tx = None;
                    alone_until = Some(tokio::time::Instant::now() + k.time);
                }
                None => {
                    hang_up(pid, shared.config.kill_grace, &mut exit).await;
                    return;
                }
            }
        }
    };
    let _ = exited_tx.send(());
    let _ = out.await;
    if let Some(status) = status {
        tracing::info!(pid, ?status, "exec ended");
        let client = lock(&screen).client.clone();
        if let Some(client) = client {
            send(&client, exit_output(status)).await;
        }
    }
}

/// Copies terminal output to the client until the terminal closes, or, once the process has
/// exited, until nothing more is buffered (a background job may keep the terminal open). The
/// recent tail is kept for a client that attaches later; without a client, output is only
/// kept there (the oldest dropped), so the program never waits for nobody.
async fn pump_pty(
    master: Arc<PtyMaster>,
    screen: Arc<std::sync::Mutex<Screen>>,
    mut exited: oneshot::Receiver<()>,
) {
    let mut buf = vec![0; CHUNK];
    let deliver = |data: &[u8]| {
        let mut s = lock(&screen);
        s.remember(data);
        s.client.clone()
    };
    loop {
        let read = tokio::select! {
            biased;
            read = master.read(&mut buf) => read,
            _ = &mut exited => {
                // Drain what is already there, then stop.
                while let Ok(Some(n)) = master.read_now(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    if let Some(client) = deliver(&buf[..n]) {
                        let _ = send(&client, exec_output::Output::Stdout(buf[..n].to_vec())).await;
                    }
                }
                return;
            }
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(client) = deliver(&buf[..n])
                    && !send(&client, exec_output::Output::Stdout(buf[..n].to_vec())).await
                {
                    let mut s = lock(&screen);
                    if s.client.as_ref().is_some_and(|c| c.same_channel(&client)) {
                        s.client = None;
                    }
                }
            }
        }
    }
}
