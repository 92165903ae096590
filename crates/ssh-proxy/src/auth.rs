//! Who is logging in: SSH keys checked by identity, device logins confirmed in the browser, and
//! authz's `authentication` decision. Refusals carry a reason for logs and the
//! `k8shell.auth.failure` event; the client only ever learns that it was refused.

use std::net::SocketAddr;
use std::time::Duration;

use k8shell_common::events::Event;
use k8shell_common::events::types::AuthFailure;
use k8shell_proto::identity::v1 as idpb;
use russh::keys::PublicKey;
use serde_json::json;

use crate::login::LoginName;
use crate::proxy::Proxy;

/// How long a call to identity may take during a login.
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(5);

/// A login that succeeded.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: idpb::User,
    pub login: LoginName,
    /// `publickey` or `keyboard-interactive`.
    pub method: &'static str,
}

/// Why a login was refused: for the operator, never for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// The method names of SSH, as events and policies spell them.
pub const PUBLICKEY: &str = "publickey";
pub const KEYBOARD_INTERACTIVE: &str = "keyboard-interactive";

impl Proxy {
    /// Checks that `key` belongs to the user `name` asks for, and that authz lets them in.
    pub async fn authenticate_key(
        &self,
        name: &str,
        key: &PublicKey,
        peer: SocketAddr,
    ) -> Result<Authenticated, Refusal> {
        let login = LoginName::parse(name).map_err(|e| Refusal(e.to_string()))?;
        let openssh = key
            .to_openssh()
            .map_err(|e| Refusal(format!("unusable key: {e}")))?;
        let request = idpb::VerifyPublicKeyRequest {
            username: login.user.clone(),
            public_key: openssh,
        };
        let answer = tokio::time::timeout(
            IDENTITY_TIMEOUT,
            self.gateway
                .backends
                .identity
                .clone()
                .verify_public_key(request),
        )
        .await;
        let user = match answer {
            Ok(Ok(user)) => user.into_inner(),
            // One reason for unknown user, unknown key and suspended user: identity does not
            // tell them apart either.
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => {
                return Err(Refusal(
                    "no such user and key (or the account is suspended)".to_owned(),
                ));
            }
            Ok(Err(status)) => {
                return Err(Refusal(format!("identity: {}", status.message())));
            }
            Err(_) => return Err(Refusal("identity did not answer in time".to_owned())),
        };
        self.decide_authentication(&user, PUBLICKEY, peer).await?;
        Ok(Authenticated {
            user,
            login,
            method: PUBLICKEY,
        })
    }

    /// Starts a device login: the URL and code the user confirms in a browser.
    pub async fn begin_device_login(
        &self,
        peer: SocketAddr,
    ) -> Result<idpb::BeginDeviceLoginResponse, Refusal> {
        let request = idpb::BeginDeviceLoginRequest {
            client_name: format!("ssh from {}", peer.ip().to_canonical()),
        };
        match tokio::time::timeout(
            IDENTITY_TIMEOUT,
            self.gateway
                .backends
                .identity
                .clone()
                .begin_device_login(request),
        )
        .await
        {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(Refusal(format!(
                "identity refused a device login: {}",
                status.message()
            ))),
            Err(_) => Err(Refusal("identity did not answer in time".to_owned())),
        }
    }

    /// Waits until the user confirmed (or refused) the device login in the browser, at most
    /// until `deadline`; the confirming user must be the one the SSH user name names.
    pub async fn finish_device_login(
        &self,
        name: &str,
        started: &idpb::BeginDeviceLoginResponse,
        deadline: tokio::time::Instant,
        peer: SocketAddr,
    ) -> Result<Authenticated, Refusal> {
        let login = LoginName::parse(name).map_err(|e| Refusal(e.to_string()))?;
        let interval = Duration::from_secs(started.interval_seconds.clamp(1, 10));
        let expires =
            tokio::time::Instant::now() + Duration::from_secs(started.expires_in_seconds.max(1));
        let deadline = deadline.min(expires);
        loop {
            let request = idpb::PollDeviceLoginRequest {
                device_code: started.device_code.clone(),
            };
            let answer = tokio::time::timeout(
                IDENTITY_TIMEOUT,
                self.gateway
                    .backends
                    .identity
                    .clone()
                    .poll_device_login(request),
            )
            .await
            .map_err(|_| Refusal("identity did not answer in time".to_owned()))?
            .map_err(|status| Refusal(format!("identity: {}", status.message())))?
            .into_inner();
            match answer.state() {
                idpb::DeviceLoginState::Approved => {
                    let user = answer
                        .user
                        .ok_or_else(|| Refusal("identity approved nobody".to_owned()))?;
                    if user.username != login.user {
                        return Err(Refusal(format!(
                            "the browser login was {}, not {}",
                            user.username, login.user
                        )));
                    }
                    self.decide_authentication(&user, KEYBOARD_INTERACTIVE, peer)
                        .await?;
                    return Ok(Authenticated {
                        user,
                        login,
                        method: KEYBOARD_INTERACTIVE,
                    });
                }
                idpb::DeviceLoginState::Denied => {
                    return Err(Refusal(
                        "the device login was refused in the browser".into(),
                    ));
                }
                idpb::DeviceLoginState::Expired => {
                    return Err(Refusal("the device login expired".into()));
                }
                idpb::DeviceLoginState::Pending | idpb::DeviceLoginState::Unspecified => {}
            }
            if tokio::time::Instant::now() + interval >= deadline {
                return Err(Refusal(
                    "the device login was not confirmed in time".to_owned(),
                ));
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// authz's `authentication` decision: account state, method, source address.
    async fn decide_authentication(
        &self,
        user: &idpb::User,
        method: &str,
        peer: SocketAddr,
    ) -> Result<(), Refusal> {
        let state = match user.state() {
            idpb::UserState::Active => "active",
            idpb::UserState::Suspended => "suspended",
            idpb::UserState::Unspecified => "unknown",
        };
        let input = json!({
            "v": 1,
            "user": {"username": user.username, "groups": user.groups, "state": state},
            "method": method,
            "source_ip": peer.ip().to_canonical().to_string(),
        });
        let verdict = self
            .gateway
            .backends
            .authz
            .check("authentication", &input)
            .await;
        if verdict.allow {
            Ok(())
        } else {
            Err(Refusal(format!(
                "authz: {} (decision {})",
                verdict.reasons.join("; "),
                verdict.decision_id
            )))
        }
    }

    /// Publishes `k8shell.auth.failure` (the SSH shield bans on these) and logs it.
    pub async fn auth_failed(&self, peer: SocketAddr, user: &str, method: &str, reason: &str) {
        // The name comes from anyone who connects: bounded and escaped in logs and events.
        let user: String = user
            .chars()
            .take(256)
            .collect::<String>()
            .escape_debug()
            .collect();
        tracing::info!(%peer, %user, %method, %reason, "authentication refused");
        let event = Event::new(AuthFailure {
            ip: peer.ip().to_canonical(),
            port: peer.port(),
            user,
            method: method.to_owned(),
            reason: reason.to_owned(),
        });
        if let Err(error) = self.gateway.backends.events.publish(&event).await {
            tracing::error!(%error, "could not keep an authentication failure event");
        }
    }
}
