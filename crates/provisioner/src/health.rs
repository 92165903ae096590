//! Whether a workspace's k8shelld answers: the gRPC health check over its endpoint, the same way
//! the proxies will reach it.

use std::sync::Arc;
use std::time::Duration;

use k8shell_common::tls::ReloadingTls;
use k8shell_proto::health::pb::HealthCheckRequest;
use k8shell_proto::health::pb::health_check_response::ServingStatus;
use k8shell_proto::health::pb::health_client::HealthClient;
use tonic::transport::Channel;

use crate::runtime::Endpoint;

/// A channel to k8shelld: its Unix socket, or TCP with mTLS as this service.
pub fn channel(endpoint: &Endpoint, tls: &Arc<ReloadingTls>) -> Result<Channel, String> {
    match endpoint {
        Endpoint::Unix(path) => Ok(k8shell_common::grpc::unix_channel(path)),
        Endpoint::Tcp(address) => {
            k8shell_common::grpc::mtls_channel(&format!("https://{address}"), tls)
                .map_err(|e| e.to_string())
        }
    }
}

/// One health check, with a short timeout.
pub async fn serving(channel: &Channel) -> bool {
    let mut client = HealthClient::new(channel.clone());
    let check = client.check(HealthCheckRequest::default());
    matches!(
        tokio::time::timeout(Duration::from_secs(2), check).await,
        Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32
    )
}

/// Waits until k8shelld answers, or says it did not within `timeout`.
pub async fn wait_serving(
    endpoint: &Endpoint,
    tls: &Arc<ReloadingTls>,
    timeout: Duration,
) -> Result<(), String> {
    let channel = channel(endpoint, tls)?;
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    loop {
        // k8shelld answers within tens of milliseconds of its start: look often at first.
        let pause = if started.elapsed() < Duration::from_secs(1) {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(100)
        };
        if serving(&channel).await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "k8shelld did not answer its health check within {}",
                humantime::format_duration(timeout)
            ));
        }
        tokio::time::sleep(pause).await;
    }
}

/// The endpoint as stored and returned: `unix:/path` or `host:port`.
pub fn endpoint_text(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Unix(path) => format!("unix:{}", path.display()),
        Endpoint::Tcp(address) => address.clone(),
    }
}

/// The stored text back as an endpoint.
pub fn parse_endpoint(text: &str) -> Option<Endpoint> {
    match text.strip_prefix("unix:") {
        Some(path) => Some(Endpoint::Unix(path.into())),
        None if !text.is_empty() => Some(Endpoint::Tcp(text.to_owned())),
        None => None,
    }
}
