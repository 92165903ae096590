//! The services the proxy calls: identity (keys, device logins, session tokens), authz (every
//! decision), provisioner (workspaces), session (timelines and recordings), NATS (failure
//! events), and the k8shelld of each workspace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8shell_authz::client::AuthzClient;
use k8shell_common::events::EventPublisher;
use k8shell_common::tls::ReloadingTls;
use k8shell_proto::identity::v1::identity_client::IdentityClient;
use k8shell_proto::provisioner::v1::provisioner_client::ProvisionerClient;
use tonic::transport::Channel;

/// Clients of every service the proxy calls; shared by all connections.
#[derive(Debug)]
pub struct Backends {
    pub identity: IdentityClient<Channel>,
    pub authz: AuthzClient,
    pub provisioner: ProvisionerClient<Channel>,
    pub sessions: k8shell_session::Client,
    pub events: EventPublisher,
    tls: Arc<ReloadingTls>,
    /// One HTTP/2 connection per k8shelld, shared by every SSH connection to that workspace.
    k8shelld: Mutex<HashMap<String, Channel>>,
}

/// An endpoint the provisioner named that the proxy cannot use.
#[derive(Debug, thiserror::Error)]
#[error("workspace endpoint {endpoint:?}: {message}")]
pub struct EndpointError {
    endpoint: String,
    message: String,
}

impl Backends {
    pub fn new(
        identity: Channel,
        authz: Channel,
        provisioner: Channel,
        sessions: k8shell_session::Client,
        events: EventPublisher,
        tls: Arc<ReloadingTls>,
    ) -> Self {
        Self {
            identity: IdentityClient::new(identity),
            // No decision of the ssh and authentication domains is cacheable by default; a
            // policy that marks one so is trusted for a short while.
            authz: AuthzClient::new(authz, Duration::from_secs(10)),
            provisioner: ProvisionerClient::new(provisioner),
            sessions,
            events,
            tls,
            k8shelld: Mutex::new(HashMap::new()),
        }
    }

    /// The channel to the k8shelld at `endpoint` (`unix:/path` on the local runtime, `host:port`
    /// with mTLS on Kubernetes).
    pub fn k8shelld(&self, endpoint: &str) -> Result<Channel, EndpointError> {
        let mut channels = self.k8shelld.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let channel = match endpoint.strip_prefix("unix:") {
            Some(path) => k8shell_common::grpc::unix_channel(std::path::Path::new(path)),
            None => k8shell_common::grpc::mtls_channel(&format!("https://{endpoint}"), &self.tls)
                .map_err(|e| EndpointError {
                endpoint: endpoint.to_owned(),
                message: e.to_string(),
            })?,
        };
        // Workspaces come and go; forget endpoints nobody has used for a while by bounding the
        // map (a channel is cheap to make again).
        if channels.len() >= 4096 {
            channels.clear();
        }
        channels.insert(endpoint.to_owned(), channel.clone());
        Ok(channel)
    }
}
