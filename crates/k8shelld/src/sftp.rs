//! SFTP (version 3, what OpenSSH speaks).
//!
//! The daemon does not touch files for the user itself: each `Sftp` stream starts
//! `k8shelld sftp-server` as the workspace user (through the same path as Exec), and the bytes of
//! the stream are that process's stdin and stdout. File permissions are therefore the kernel's,
//! applied to the user, not re-implemented here.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt as _;
use k8shell_proto::k8shelld::v1::SftpData;
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tonic::{Status as GrpcStatus, Streaming};

use crate::Shared;
use crate::spawn::{self, Program, Streams};

const CHUNK: usize = 64 * 1024;
const OUTPUT_QUEUE: usize = 4;
/// The largest read answered at once (OpenSSH asks for 32 KiB or 255 KiB).
const MAX_READ: u32 = 256 * 1024;
/// Directory entries per READDIR answer.
const DIR_BATCH: usize = 128;

/// The subcommand that serves SFTP on stdin/stdout.
pub const SUBCOMMAND: &str = "sftp-server";

/// Starts the per-stream SFTP server as the workspace user and connects it to the stream.
pub async fn sftp(
    shared: Arc<Shared>,
    mut input: Streaming<SftpData>,
) -> Result<mpsc::Receiver<Result<SftpData, GrpcStatus>>, GrpcStatus> {
    let server = shared
        .config
        .sftp_server
        .clone()
        .or_else(|| std::env::current_exe().ok())
        .ok_or_else(|| GrpcStatus::internal("cannot locate the k8shelld binary for SFTP"))?;
    let program = Program {
        executable: Some((server, vec![SUBCOMMAND.to_owned()])),
        ..Program::default()
    };
    let process = spawn::spawn(&shared.reaper, &shared.account, &program, Streams::Pipes)
        .map_err(|e| GrpcStatus::failed_precondition(e.to_string()))?;
    let Some((stdin, stdout, stderr)) = process.pipes else {
        return Err(GrpcStatus::internal("SFTP server started without pipes"));
    };
    let (Ok(mut stdin), Ok(mut stdout), Ok(mut stderr)) = (
        pipe::Sender::from_owned_fd(stdin),
        pipe::Receiver::from_owned_fd(stdout),
        pipe::Receiver::from_owned_fd(stderr),
    ) else {
        return Err(GrpcStatus::internal("cannot use the SFTP server's pipes"));
    };
    tracing::info!(pid = process.pid, "sftp started");
    let guard = shared.track(process.pid)?;
    let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
    let exit = process.exit;
    tokio::spawn(async move {
        let upstream = async move {
            while let Some(Ok(message)) = input.next().await {
                if stdin.write_all(&message.data).await.is_err() {
                    break;
                }
            }
            // Dropping stdin ends the server.
        };
        let downstream = async move {
            let mut buf = vec![0; CHUNK];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let data = SftpData {
                            data: buf[..n].to_vec(),
                        };
                        if tx.send(Ok(data)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let errors = async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            if !text.trim().is_empty() {
                tracing::warn!(stderr = %text.trim(), "sftp server complained");
            }
        };
        tokio::join!(upstream, downstream, errors);
        let status = exit.await;
        tracing::info!(?status, "sftp ended");
        drop(guard);
    });
    Ok(rx)
}

/// Serves SFTP on stdin/stdout until the client closes stdin (the `sftp-server` subcommand).
/// k8shelld gives it pipes, which are read and written through epoll; tokio's own stdin and
/// stdout would hand every read and write to a blocking thread.
pub async fn serve_stdio() {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let home = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    match stdio_pipes() {
        Some((stdin, stdout)) => {
            let stream = StdioStream {
                io: tokio::io::join(stdin, stdout),
                _done: done_tx,
            };
            russh_sftp::server::run(stream, FsHandler::new(home)).await;
        }
        None => {
            let stream = StdioStream {
                io: tokio::io::join(tokio::io::stdin(), tokio::io::stdout()),
                _done: done_tx,
            };
            russh_sftp::server::run(stream, FsHandler::new(home)).await;
        }
    }
    // The server task drops the stream when the client goes away.
    let _ = done_rx.await;
}

/// stdin and stdout as non-blocking pipes, when they are pipes.
fn stdio_pipes() -> Option<(pipe::Receiver, pipe::Sender)> {
    use std::os::fd::AsFd as _;
    let stdin = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let stdout = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    Some((
        pipe::Receiver::from_owned_fd(stdin).ok()?,
        pipe::Sender::from_owned_fd(stdout).ok()?,
    ))
}

/// stdin + stdout as one stream, signalling when the SFTP task drops it.
struct StdioStream<R, W> {
    io: tokio::io::Join<R, W>,
    _done: tokio::sync::oneshot::Sender<()>,
}

impl<R: tokio::io::AsyncRead + Unpin, W: Unpin> tokio::io::AsyncRead for StdioStream<R, W> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<R: Unpin, W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StdioStream<R, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Files are read and written with pread and pwrite on the spot: this process serves one client,
/// and a page-cache hit is faster than a hop to a blocking thread.
enum Open {
    File(std::fs::File),
    Dir { entries: Vec<File>, sent: usize },
}

/// Answers SFTP requests with plain file-system calls, made by the workspace user's process.
struct FsHandler {
    home: PathBuf,
    handles: HashMap<String, Open>,
    next_handle: u64,
}

impl FsHandler {
    fn new(home: PathBuf) -> Self {
        Self {
            home,
            handles: HashMap::new(),
            next_handle: 0,
        }
    }

    fn insert(&mut self, open: Open) -> String {
        self.next_handle += 1;
        let handle = self.next_handle.to_string();
        self.handles.insert(handle.clone(), open);
        handle
    }

    fn path(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.home.clone()
        } else {
            self.home.join(path)
        }
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_owned(),
        language_tag: "en-US".to_owned(),
    }
}

fn io_error(error: std::io::Error) -> StatusReply {
    use std::io::ErrorKind;
    let code = match error.kind() {
        ErrorKind::NotFound => StatusCode::NoSuchFile,
        ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    };
    code.with_message(error.to_string())
}

fn bad_handle() -> StatusReply {
    StatusCode::Failure.with_message("invalid handle")
}

/// Attributes as `ls -l` would describe them (OpenSSH's `ls -l` shows `longname`).
fn entry(name: String, metadata: &std::fs::Metadata) -> File {
    File::new(name, FileAttributes::from(metadata))
}

async fn apply_attrs(path: &Path, attrs: &FileAttributes) -> Result<(), StatusReply> {
    if let Some(mode) = attrs.permissions {
        tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
            .await
            .map_err(io_error)?;
    }
    if let Some(size) = attrs.size {
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .await
            .map_err(io_error)?;
        file.set_len(size).await.map_err(io_error)?;
    }
    if let (Some(atime), Some(mtime)) = (attrs.atime, attrs.mtime) {
        let times = std::fs::FileTimes::new()
            .set_accessed(std::time::UNIX_EPOCH + std::time::Duration::from_secs(atime.into()))
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.into()));
        let file = std::fs::File::options()
            .write(true)
            .open(path)
            .or_else(|_| std::fs::File::open(path))
            .map_err(io_error)?;
        file.set_times(times).map_err(io_error)?;
    }
    Ok(())
}

impl russh_sftp::server::Handler for FsHandler {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.into()
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let mut options = std::fs::OpenOptions::new();
        options
            .read(pflags.contains(OpenFlags::READ))
            .write(pflags.contains(OpenFlags::WRITE) || pflags.contains(OpenFlags::APPEND))
            .append(pflags.contains(OpenFlags::APPEND))
            .truncate(pflags.contains(OpenFlags::TRUNCATE));
        if pflags.contains(OpenFlags::EXCLUDE) {
            options.create_new(true);
        } else if pflags.contains(OpenFlags::CREATE) {
            options.create(true);
        }
        options.mode(attrs.permissions.map_or(0o666, |m| m & 0o7777));
        let file = options.open(self.path(&filename)).map_err(io_error)?;
        Ok(Handle {
            id,
            handle: self.insert(Open::File(file)),
        })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(Open::File(file)) => {
                drop(file);
                Ok(ok(id))
            }
            Some(Open::Dir { .. }) => Ok(ok(id)),
            None => Err(bad_handle()),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let Some(Open::File(file)) = self.handles.get_mut(&handle) else {
            return Err(bad_handle());
        };
        let mut data = vec![0; len.min(MAX_READ) as usize];
        let mut filled = 0;
        while filled < data.len() {
            let n = file
                .read_at(&mut data[filled..], offset + filled as u64)
                .map_err(io_error)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Err(StatusCode::Eof.into());
        }
        data.truncate(filled);
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let Some(Open::File(file)) = self.handles.get_mut(&handle) else {
            return Err(bad_handle());
        };
        file.write_all_at(&data, offset).map_err(io_error)?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let metadata = tokio::fs::symlink_metadata(self.path(&path))
            .await
            .map_err(io_error)?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&metadata),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let metadata = tokio::fs::metadata(self.path(&path))
            .await
            .map_err(io_error)?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&metadata),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let Some(Open::File(file)) = self.handles.get(&handle) else {
            return Err(bad_handle());
        };
        let metadata = file.metadata().map_err(io_error)?;
        Ok(Attrs {
            id,
            attrs: FileAttributes::from(&metadata),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        apply_attrs(&self.path(&path), &attrs).await?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let Some(Open::File(file)) = self.handles.get_mut(&handle) else {
            return Err(bad_handle());
        };
        if let Some(mode) = attrs.permissions {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
                .map_err(io_error)?;
        }
        if let Some(size) = attrs.size {
            file.set_len(size).map_err(io_error)?;
        }
        // `sftp put -p` and `scp -p` preserve times through the open handle.
        if let (Some(atime), Some(mtime)) = (attrs.atime, attrs.mtime) {
            let times = std::fs::FileTimes::new()
                .set_accessed(std::time::UNIX_EPOCH + std::time::Duration::from_secs(atime.into()))
                .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.into()));
            file.set_times(times).map_err(io_error)?;
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let dir = self.path(&path);
        let mut entries = Vec::new();
        for name in [".", ".."] {
            if let Ok(metadata) = std::fs::metadata(dir.join(name)) {
                entries.push(entry(name.to_owned(), &metadata));
            }
        }
        let mut reader = tokio::fs::read_dir(&dir).await.map_err(io_error)?;
        while let Some(item) = reader.next_entry().await.map_err(io_error)? {
            let name = item.file_name().to_string_lossy().into_owned();
            if let Ok(metadata) = tokio::fs::symlink_metadata(item.path()).await {
                entries.push(entry(name, &metadata));
            }
        }
        Ok(Handle {
            id,
            handle: self.insert(Open::Dir { entries, sent: 0 }),
        })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let Some(Open::Dir { entries, sent }) = self.handles.get_mut(&handle) else {
            return Err(bad_handle());
        };
        if *sent >= entries.len() {
            return Err(StatusCode::Eof.into());
        }
        let end = (*sent + DIR_BATCH).min(entries.len());
        let files = entries[*sent..end].to_vec();
        *sent = end;
        Ok(Name { id, files })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        tokio::fs::remove_file(self.path(&filename))
            .await
            .map_err(io_error)?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let mut builder = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(
            &mut builder,
            attrs.permissions.map_or(0o777, |m| m & 0o7777),
        );
        builder.create(self.path(&path)).map_err(io_error)?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        tokio::fs::remove_dir(self.path(&path))
            .await
            .map_err(io_error)?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let full = self.path(&path);
        let resolved = std::fs::canonicalize(&full).unwrap_or_else(|_| normalize(&full));
        Ok(Name {
            id,
            files: vec![File::dummy(resolved.to_string_lossy().into_owned())],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let (from, to) = (self.path(&oldpath), self.path(&newpath));
        // SFTP v3 rename does not replace an existing file (as OpenSSH's sftp-server).
        if tokio::fs::symlink_metadata(&to).await.is_ok() {
            return Err(StatusCode::Failure.with_message(format!("{newpath} already exists")));
        }
        tokio::fs::rename(from, to).await.map_err(io_error)?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let target = tokio::fs::read_link(self.path(&path))
            .await
            .map_err(io_error)?;
        Ok(Name {
            id,
            files: vec![File::dummy(target.to_string_lossy().into_owned())],
        })
    }

    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        // OpenSSH sends the two paths in the reverse of the draft's order: the first field is
        // the target and the second the link to create. Follow OpenSSH, as every server does.
        tokio::fs::symlink(&linkpath, self.path(&targetpath))
            .await
            .map_err(io_error)?;
        Ok(ok(id))
    }
}

/// `a/./b/../c` → `a/c`, for paths that do not exist yet.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
