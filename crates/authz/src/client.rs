//! The client other services use to ask for decisions. It denies when authz cannot be reached,
//! and remembers a decision only when the policy marked it `cacheable` (none are by default),
//! for a bounded time and number of entries.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8shell_proto::authz::v1::authz_client::AuthzClient as GrpcClient;
use k8shell_proto::authz::v1::{CheckRequest, CheckResponse};
use tonic::transport::Channel;

/// How long a caller waits for a decision before denying.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound of remembered decisions.
const CACHE_ENTRIES: usize = 10_000;

/// A decision as a caller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub allow: bool,
    pub reasons: Vec<String>,
    pub decision_id: String,
    pub revision: String,
    /// The policy's whole decision document (`admin_access`, …).
    pub document: serde_json::Value,
    /// Answered from the local cache.
    pub cached: bool,
}

impl Verdict {
    fn from_response(response: CheckResponse, cached: bool) -> Self {
        Self {
            document: serde_json::from_str(&response.decision_json).unwrap_or_default(),
            allow: response.allow,
            reasons: response.reasons,
            decision_id: response.decision_id,
            revision: response.revision,
            cached,
        }
    }

    /// What a caller does when authz cannot answer: deny, and say so.
    fn unavailable(status: &tonic::Status) -> Self {
        tracing::warn!(%status, "authz unavailable; denying");
        Self {
            allow: false,
            reasons: vec![
                "access decisions are unavailable right now; try again shortly".to_owned(),
            ],
            decision_id: String::new(),
            revision: String::new(),
            document: serde_json::Value::Null,
            cached: false,
        }
    }
}

/// Asks authz; cheap to clone.
#[derive(Debug)]
pub struct AuthzClient {
    grpc: GrpcClient<Channel>,
    cache_for: Duration,
    cache: Mutex<HashMap<(String, String), (CheckResponse, Instant)>>,
}

impl AuthzClient {
    /// A client over `channel` (see `common::grpc::mtls_channel`) that keeps cacheable
    /// decisions for `cache_for`.
    /// The gRPC client itself, for calls other than decisions (the decision log).
    pub fn grpc(&self) -> GrpcClient<Channel> {
        self.grpc.clone()
    }

    pub fn new(channel: Channel, cache_for: Duration) -> Self {
        Self {
            grpc: GrpcClient::new(channel),
            cache_for,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The decision for `input` in `domain`; denies when authz cannot answer. An invalid
    /// request (unknown domain, input that is not an object) is a deny with authz's reason.
    pub async fn check(&self, domain: &str, input: &serde_json::Value) -> Verdict {
        let key = (domain.to_owned(), input.to_string());
        if let Some((response, at)) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            && at.elapsed() < self.cache_for
        {
            return Verdict::from_response(response.clone(), true);
        }
        let request = CheckRequest {
            domain: key.0.clone(),
            input_json: key.1.clone(),
        };
        // A stalled authz must not stall the caller: no answer in time is a deny.
        let answer = tokio::time::timeout(CHECK_TIMEOUT, self.grpc.clone().check(request))
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(
                    "authz did not answer in time",
                ))
            });
        match answer {
            Ok(response) => {
                let response = response.into_inner();
                if response.cacheable {
                    let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                    if cache.len() >= CACHE_ENTRIES {
                        let cache_for = self.cache_for;
                        cache.retain(|_, (_, at)| at.elapsed() < cache_for);
                        if cache.len() >= CACHE_ENTRIES {
                            cache.clear();
                        }
                    }
                    cache.insert(key, (response.clone(), Instant::now()));
                }
                Verdict::from_response(response, false)
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => Verdict {
                allow: false,
                reasons: vec![status.message().to_owned()],
                decision_id: String::new(),
                revision: String::new(),
                document: serde_json::Value::Null,
                cached: false,
            },
            Err(status) => Verdict::unavailable(&status),
        }
    }
}
