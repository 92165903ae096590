//! `Forward`: a TCP connection from inside the workspace (SSH `direct-tcpip`), with half-close
//! in both directions.

use std::sync::Arc;

use futures_util::StreamExt as _;
use k8shell_proto::k8shelld::v1::{
    Connected, Eof, ForwardInput, ForwardOutput, forward_input, forward_output,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::Shared;

const CHUNK: usize = 64 * 1024;
const OUTPUT_QUEUE: usize = 4;

/// Connects to the target named by the first message and returns the output stream.
pub async fn forward(
    shared: Arc<Shared>,
    mut input: Streaming<ForwardInput>,
) -> Result<mpsc::Receiver<Result<ForwardOutput, Status>>, Status> {
    let target = match input.next().await {
        Some(Ok(ForwardInput {
            input: Some(forward_input::Input::Target(target)),
        })) => target,
        Some(Err(status)) => return Err(status),
        _ => {
            return Err(Status::invalid_argument(
                "the first Forward message must be `target`",
            ));
        }
    };
    let port = u16::try_from(target.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Status::invalid_argument(format!("invalid port {}", target.port)))?;
    let host = target.host.trim_matches(['[', ']']).to_owned();
    if host.is_empty() {
        return Err(Status::invalid_argument("empty target host"));
    }
    let timeout = shared.config.connect_timeout;
    let stream = match tokio::time::timeout(timeout, connect(&host, port)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Status::unavailable(format!(
                "connection to {host}:{port} refused inside the workspace"
            )));
        }
        Ok(Err(e)) => {
            return Err(Status::unavailable(format!(
                "cannot connect to {host}:{port} inside the workspace: {e}"
            )));
        }
        Err(_) => {
            return Err(Status::deadline_exceeded(format!(
                "no answer from {host}:{port} within {timeout:?}"
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%host, port, %peer, "forward connected");
    let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
    let _ = tx
        .send(Ok(output(forward_output::Output::Connected(Connected {
            peer,
        }))))
        .await;
    tokio::spawn(pump(stream, input, tx));
    Ok(rx)
}

/// Connects to `host:port`. `localhost` is the loopback interface (RFC 6761) even in images
/// without /etc/hosts, where a static k8shelld could not resolve it: VS Code and `ssh -D`
/// clients ask for it by name.
async fn connect(host: &str, port: u16) -> std::io::Result<TcpStream> {
    if host.eq_ignore_ascii_case("localhost") {
        match TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)).await {
            Ok(stream) => Ok(stream),
            Err(v4) => TcpStream::connect((std::net::Ipv6Addr::LOCALHOST, port))
                .await
                .map_err(|_| v4),
        }
    } else {
        TcpStream::connect((host, port)).await
    }
}

fn output(output: forward_output::Output) -> ForwardOutput {
    ForwardOutput {
        output: Some(output),
    }
}

async fn pump(
    stream: TcpStream,
    mut input: Streaming<ForwardInput>,
    tx: mpsc::Sender<Result<ForwardOutput, Status>>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let upstream = async move {
        while let Some(Ok(message)) = input.next().await {
            match message.input {
                Some(forward_input::Input::Data(bytes))
                    if writer.write_all(&bytes).await.is_err() =>
                {
                    return;
                }
                Some(forward_input::Input::Eof(_)) => break,
                _ => {}
            }
        }
        // Client half-closed (or went away): so does our side of the connection.
        let _ = writer.shutdown().await;
    };
    let downstream = async move {
        let mut buf = vec![0; CHUNK];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx
                        .send(Ok(output(forward_output::Output::Eof(Eof {}))))
                        .await;
                    return;
                }
                Ok(n) => {
                    let data = forward_output::Output::Data(buf[..n].to_vec());
                    if tx.send(Ok(output(data))).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::join!(upstream, downstream);
}
