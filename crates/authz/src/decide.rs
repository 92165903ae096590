//! Turning a request into a decision: the domain and input are checked, the current bundle
//! evaluates, anything but a well-formed decision is a deny, and the result is logged.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use serde_json::Value;
use uuid::Uuid;

use crate::bundle::Bundle;

/// The domains a policy decides.
pub const DOMAINS: &[&str] = &["onboarding", "authentication", "ssh", "provision", "api"];

/// Keys whose values never reach the decision log.
const SECRET_KEYS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "otp",
    "code",
    "cred",
    "auth",
    "cookie",
    "jwt",
    "assertion",
];

/// A decision as returned and logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub id: Uuid,
    pub domain: String,
    pub allow: bool,
    pub reasons: Vec<String>,
    pub revision: String,
    pub cacheable: bool,
    /// The policy's whole decision document.
    pub document: Value,
    /// The input with secrets replaced by `"[redacted]"`.
    pub logged_input: Value,
    pub latency_us: u64,
}

/// A request the policies cannot judge.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("unknown domain {0:?}: use one of onboarding, authentication, ssh, provision, api")]
    Domain(String),
    #[error("the input is not a JSON object: {0}")]
    Input(String),
}

/// Decides with whatever bundle is current.
pub fn decide(
    bundle: &ArcSwap<Bundle>,
    domain: &str,
    input_json: &str,
) -> Result<Decision, RequestError> {
    if !DOMAINS.contains(&domain) {
        return Err(RequestError::Domain(domain.to_owned()));
    }
    let input: Value =
        serde_json::from_str(input_json).map_err(|e| RequestError::Input(e.to_string()))?;
    if !input.is_object() {
        return Err(RequestError::Input("expected {\"v\": 1, …}".to_owned()));
    }
    let started = Instant::now();
    let bundle: Arc<Bundle> = bundle.load_full();
    let (document, allow, reasons, cacheable) = match bundle.evaluate(domain, &input) {
        Ok(Some(document)) => {
            // Deny by default: only a literal `true` allows.
            let allow = document.get("allow") == Some(&Value::Bool(true));
            let reasons = document
                .get("reasons")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let cacheable = document.get("cacheable") == Some(&Value::Bool(true));
            (document, allow, reasons, cacheable)
        }
        Ok(None) => (
            Value::Null,
            false,
            vec![format!("the policy made no {domain} decision")],
            false,
        ),
        Err(error) => {
            tracing::error!(%domain, %error, "policy evaluation failed; denying");
            (
                Value::Null,
                false,
                vec!["the policy could not decide; the request is denied".to_owned()],
                false,
            )
        }
    };
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    Ok(Decision {
        id: k8shell_common::ids::new_id(),
        domain: domain.to_owned(),
        allow,
        reasons,
        revision: bundle.revision().to_owned(),
        cacheable,
        document,
        logged_input: redact(input),
        latency_us,
    })
}

/// The input with the values of secret-looking keys replaced.
pub fn redact(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    if SECRET_KEYS.iter().any(|s| lower.contains(s)) {
                        (k, Value::String("[redacted]".to_owned()))
                    } else {
                        (k, redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let input = serde_json::json!({"v": 1, "user": {"name": "a", "api_token": "k8s_x"},
            "list": [{"password": "p"}], "method": "publickey"});
        let out = redact(input);
        assert_eq!(out["user"]["api_token"], "[redacted]");
        assert_eq!(out["list"][0]["password"], "[redacted]");
        assert_eq!(out["method"], "publickey");
    }
}
