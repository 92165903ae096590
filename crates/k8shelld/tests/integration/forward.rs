//! Forward: TCP from inside the workspace, both directions, half-close, clear failures.

use k8shell_proto::k8shelld::v1::{ForwardInput, ForwardTarget, forward_input, forward_output};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::harness::{Client, Daemon};

fn target(host: &str, port: u16) -> ForwardInput {
    ForwardInput {
        input: Some(forward_input::Input::Target(ForwardTarget {
            host: host.to_owned(),
            port: u32::from(port),
        })),
    }
}

/// An echo server that, after the client half-closes, says how many bytes it got and closes.
async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0; 8192];
                let mut total = 0;
                loop {
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    total += n;
                    socket.write_all(&buf[..n]).await.unwrap();
                }
                socket
                    .write_all(format!("[{total} bytes]").as_bytes())
                    .await
                    .unwrap();
            });
        }
    });
    port
}

async fn open(
    client: &mut Client,
    host: &str,
    port: u16,
) -> Result<
    (
        mpsc::Sender<ForwardInput>,
        tonic::Streaming<k8shell_proto::k8shelld::v1::ForwardOutput>,
    ),
    tonic::Status,
> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(target(host, port)).await.unwrap();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut output = client.forward(stream).await?.into_inner();
    let first = output.message().await?.unwrap();
    assert!(
        matches!(first.output, Some(forward_output::Output::Connected(_))),
        "{first:?}"
    );
    Ok((tx, output))
}

#[tokio::test]
async fn bytes_flow_both_ways_with_half_close() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let port = echo_server().await;
    let (tx, mut output) = open(&mut client, "localhost", port).await.unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for chunk in payload.chunks(50_000) {
        tx.send(ForwardInput {
            input: Some(forward_input::Input::Data(chunk.to_vec())),
        })
        .await
        .unwrap();
    }
    tx.send(ForwardInput {
        input: Some(forward_input::Input::Eof(Default::default())),
    })
    .await
    .unwrap();
    let mut received = Vec::new();
    let mut saw_eof = false;
    while let Some(message) = output.message().await.unwrap() {
        match message.output {
            Some(forward_output::Output::Data(bytes)) => received.extend_from_slice(&bytes),
            Some(forward_output::Output::Eof(_)) => saw_eof = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_eof, "the target's close is reported");
    let trailer = b"[200000 bytes]";
    assert_eq!(&received[..payload.len()], &payload[..]);
    assert_eq!(
        &received[payload.len()..],
        trailer,
        "the server saw our half-close"
    );
}

#[tokio::test]
async fn a_closed_port_is_refused_clearly() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let status = open(&mut client, "127.0.0.1", port).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("refused"), "{status:?}");
    assert!(status.message().contains(&port.to_string()), "{status:?}");
}

#[tokio::test]
async fn an_invalid_target_says_what_is_wrong() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let status = open(&mut client, "127.0.0.1", 0).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("port"), "{status:?}");
    let status = open(&mut client, "no-such-host.invalid", 80)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}
