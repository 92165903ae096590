//! A `direct-tcpip` channel (`ssh -L`, `ssh -D`, VS Code): a TCP connection made from inside the
//! workspace by k8shelld, answered to the client only once it is connected.

use std::sync::Arc;

use bytes::Bytes;
use k8shell_proto::k8shelld::v1 as kpb;
use k8shell_proto::k8shelld::v1::workspace_client::WorkspaceClient;
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::connection::Shared;
use crate::inbound::{self, Step};
use k8shell_gateway::Stage;

/// Where the client wants to go, as it asked.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u32,
    pub originator: String,
}

/// Connects, answers the open request, then relays until either side is done.
pub async fn run(
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    target: Target,
    shared: Arc<Shared>,
) {
    let number = u32::from(channel.id());
    let attachment = match shared.ready().await {
        Stage::Ready(attachment) => attachment,
        _ => return reply.reject(ChannelOpenFailure::ConnectFailed).await,
    };
    let verdict = shared
        .proxy
        .gateway
        .decide_ssh(&attachment.user, &attachment.workspace, "port_forwarding")
        .await;
    let mut event = json!({"host": target.host, "port": target.port,
                           "originator": target.originator, "allow": verdict.allow,
                           "decision_id": verdict.decision_id});
    if !verdict.allow {
        attachment.event("forward", number, event);
        return reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
    }
    let Ok(bearer) = attachment.bearer(&shared.proxy.gateway).await else {
        return reply.reject(ChannelOpenFailure::ConnectFailed).await;
    };
    let (to_workspace, requests) = mpsc::channel(8);
    let first = kpb::ForwardInput {
        input: Some(kpb::forward_input::Input::Target(kpb::ForwardTarget {
            host: target.host.clone(),
            port: target.port,
        })),
    };
    if to_workspace.send(first).await.is_err() {
        return reply.reject(ChannelOpenFailure::ConnectFailed).await;
    }
    let mut request = tonic::Request::new(ReceiverStream::new(requests));
    match format!("Bearer {bearer}").parse() {
        Ok(value) => {
            request.metadata_mut().insert("authorization", value);
        }
        Err(_) => return reply.reject(ChannelOpenFailure::ConnectFailed).await,
    }
    let connect_timeout = shared.proxy.config.channels.forward_connect_timeout;
    let connected = tokio::time::timeout(connect_timeout, async {
        let mut output = WorkspaceClient::new(attachment.k8shelld.clone())
            .forward(request)
            .await?
            .into_inner();
        match output.message().await? {
            Some(kpb::ForwardOutput {
                output: Some(kpb::forward_output::Output::Connected(connected)),
            }) => Ok((output, connected.peer)),
            _ => Err(tonic::Status::unavailable("the connection was not made")),
        }
    })
    .await;
    let mut output = match connected {
        Ok(Ok((output, peer))) => {
            event["connected"] = json!(peer);
            attachment.event("forward", number, event);
            output
        }
        Ok(Err(status)) => {
            event["error"] = json!(status.message());
            attachment.event("forward", number, event);
            return reply.reject(ChannelOpenFailure::ConnectFailed).await;
        }
        Err(_) => {
            event["error"] = json!("timed out");
            attachment.event("forward", number, event);
            return reply.reject(ChannelOpenFailure::ConnectFailed).await;
        }
    };
    reply.accept().await;
    let (rx, tx) = channel.split();
    let gone = shared.closed.child_token();
    let pump_shared = Arc::clone(&shared);
    let pump = tokio::spawn(inbound::pump(
        rx,
        to_workspace,
        Arc::clone(&shared.backlog),
        gone.clone(),
        move |message| {
            let input = match message {
                ChannelMsg::Data { data } => {
                    pump_shared.input(data.len());
                    let n = data.len();
                    return Step::Send(
                        forward_input(kpb::forward_input::Input::Data(data.into())),
                        n,
                    );
                }
                ChannelMsg::Eof => kpb::forward_input::Input::Eof(kpb::Eof {}),
                _ => return Step::Skip,
            };
            Step::Send(forward_input(input), 0)
        },
    ));
    let mut eof_sent = false;
    loop {
        let message = tokio::select! {
            () = gone.cancelled() => break,
            message = output.message() => message,
        };
        match message {
            Ok(Some(kpb::ForwardOutput {
                output: Some(kpb::forward_output::Output::Data(data)),
            })) => {
                attachment.output(data.len());
                let sent = tokio::select! {
                    () = gone.cancelled() => break,
                    sent = tx.data_bytes(Bytes::from(data)) => sent,
                };
                if sent.is_err() {
                    break;
                }
            }
            Ok(Some(kpb::ForwardOutput {
                output: Some(kpb::forward_output::Output::Eof(_)),
            })) => {
                let _ = tx.eof().await;
                eof_sent = true;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    // k8shelld ends the stream when the connection is over in both directions (or failed);
    // dropping it cancels the call when the client went first.
    drop(output);
    pump.abort();
    if !gone.is_cancelled() {
        if !eof_sent {
            let _ = tx.eof().await;
        }
        let _ = tx.close().await;
    }
}

fn forward_input(input: kpb::forward_input::Input) -> kpb::ForwardInput {
    kpb::ForwardInput { input: Some(input) }
}
