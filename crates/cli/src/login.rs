//! `k8shell login`: the device flow (a code confirmed in any browser), `--browser` (the same,
//! with the browser opened here and coming back to a local port), or `--ssh [KEY]` (a signed
//! challenge, from ssh-agent or a key file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use russh::keys::ssh_key::{HashAlg, LineEnding, PublicKey, SshSig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::api::Api;
use crate::output::{Format, Spinner};

const NAMESPACE: &str = "k8shell-login";

/// A device login: shows the URL and code, waits for the confirmation, returns the token.
pub async fn device(api: &Api, format: Format, open_browser: bool) -> anyhow::Result<Value> {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let client_name = format!("k8shell CLI on {}", host.trim());
    let begun = api
        .post("/api/v1/auth/device", json!({"client_name": client_name}))
        .await?;
    let code = begun["user_code"].as_str().unwrap_or_default().to_owned();
    let mut url = begun["verification_uri_complete"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut interval = Duration::from_secs(begun["interval_seconds"].as_u64().unwrap_or(5).max(1));
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(begun["expires_in_seconds"].as_u64().unwrap_or(600));
    let device_code = begun["device_code"].as_str().unwrap_or_default().to_owned();
    let callback = if open_browser {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("opening a local port for the browser to come back to")?;
        url.push_str(&format!("&callback={}", listener.local_addr()?.port()));
        Some(tokio::spawn(wait_for_browser(listener)))
    } else {
        None
    };
    eprintln!("To sign in, open {url}\nand confirm the code {code}");
    if open_browser && let Err(error) = open(&url) {
        eprintln!("(could not open a browser: {error}; open the address yourself)");
    }
    let spinner = Spinner::start(format, "waiting for the confirmation in the browser…");
    let result = loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() >= deadline {
            break Err(anyhow!(
                "the code expired before it was confirmed: run `k8shell login` again"
            ));
        }
        let polled = api
            .json(
                "POST",
                "/api/v1/auth/device/poll",
                Some(json!({"device_code": device_code})),
            )
            .await;
        let polled = match polled {
            Ok(polled) => polled,
            Err(error)
                if error
                    .downcast_ref::<crate::api::ApiError>()
                    .is_some_and(|e| e.status == 429) =>
            {
                // "slow down" (RFC 8628): ask less often from now on.
                interval += Duration::from_secs(5);
                continue;
            }
            Err(error) => break Err(error),
        };
        match polled["state"].as_str() {
            Some("approved") => break Ok(polled["access_token"].clone()),
            Some("denied") => break Err(anyhow!("the login was refused in the browser")),
            Some("expired") => {
                break Err(anyhow!(
                    "the code expired before it was confirmed: run `k8shell login` again"
                ));
            }
            _ => {}
        }
    };
    spinner.finish().await;
    if let Some(callback) = callback {
        callback.abort();
    }
    result
}

/// Answers the browser's return to the local port with a page saying it is done.
async fn wait_for_browser(listener: tokio::net::TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let mut buffer = [0u8; 2048];
        let _ = stream.read(&mut buffer).await;
        let page = "<!doctype html><title>k8shell</title><p>Signed in: you can close this tab and go back to the terminal.</p>";
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
            page.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
    }
}

fn open(url: &str) -> std::io::Result<()> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(drop)
}

/// Signs in with an SSH key: `key` (a private key file, or its `.pub` with the private key in
/// ssh-agent), or every key ssh-agent holds, in turn.
pub async fn ssh(api: &Api, username: &str, key: Option<&Path>) -> anyhow::Result<Value> {
    let mut tried = Vec::new();
    for signer in signers(key).await? {
        let challenge =
            patiently(|| api.post("/api/v1/auth/ssh/challenge", json!({"username": username})))
                .await?;
        let message = challenge["message"].as_str().unwrap_or_default();
        let signature = match signer.sign(message).await {
            Ok(signature) => signature,
            Err(error) => {
                tried.push(format!("{}: {error}", signer.name()));
                continue;
            }
        };
        let answer = patiently(|| {
            api.json(
                "POST",
                "/api/v1/auth/ssh",
                Some(
                    json!({"username": username, "challenge_id": challenge["challenge_id"],
                            "signature": signature}),
                ),
            )
        })
        .await;
        match answer {
            Ok(token) => return Ok(token),
            Err(error)
                if error
                    .downcast_ref::<crate::api::ApiError>()
                    .is_some_and(|e| e.status == 401) =>
            {
                tried.push(format!("{}: not accepted", signer.name()));
            }
            Err(error) => return Err(error),
        }
    }
    bail!(
        "no key signed you in as {username}:\n  {}\nadd your public key in the console, or ask an administrator to (`k8shell admin users add-key`)",
        if tried.is_empty() {
            "no keys found".to_owned()
        } else {
            tried.join("\n  ")
        }
    )
}

/// Retries a call the server rate-limited (many agent keys to try), a few times.
async fn patiently<F, Fut>(mut call: F) -> anyhow::Result<Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let mut waits = 0;
    loop {
        match call().await {
            Err(error)
                if waits < 10
                    && error
                        .downcast_ref::<crate::api::ApiError>()
                        .is_some_and(|e| e.status == 429) =>
            {
                waits += 1;
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            other => return other,
        }
    }
}

/// A way to sign a challenge.
enum Signer {
    Agent(PublicKey, String),
    File(PathBuf, Box<russh::keys::PrivateKey>),
}

impl Signer {
    fn name(&self) -> String {
        match self {
            Self::Agent(key, comment) => {
                format!("agent key {} {comment}", key.fingerprint(HashAlg::Sha256))
            }
            Self::File(path, _) => path.display().to_string(),
        }
    }

    async fn sign(&self, message: &str) -> anyhow::Result<String> {
        let signature = match self {
            Self::File(_, key) => key.sign(NAMESPACE, HashAlg::Sha512, message.as_bytes())?,
            Self::Agent(key, _) => {
                let mut agent = russh::keys::agent::client::AgentClient::connect_env()
                    .await
                    .context("connecting to ssh-agent (SSH_AUTH_SOCK)")?;
                let data = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, message.as_bytes())?;
                // For RSA keys, ask for rsa-sha2-512: SHA-1 signatures are refused.
                let raw = agent
                    .sign_request_signature(key, Some(HashAlg::Sha512), &data)
                    .await
                    .map_err(|_| anyhow!("the agent refused to sign"))?;
                SshSig::new(key.key_data().clone(), NAMESPACE, HashAlg::Sha512, raw)?
            }
        };
        Ok(signature.to_pem(LineEnding::LF)?)
    }
}

async fn signers(key: Option<&Path>) -> anyhow::Result<Vec<Signer>> {
    let agent_keys = async {
        let mut agent = russh::keys::agent::client::AgentClient::connect_env()
            .await
            .ok()?;
        let identities = agent.request_identities().await.ok()?;
        Some(
            identities
                .into_iter()
                .filter_map(|identity| match identity {
                    russh::keys::agent::AgentIdentity::PublicKey { key, comment } => {
                        Some((key, comment))
                    }
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )
    };
    match key {
        Some(path) => {
            let private = path.with_extension("");
            let private = if path.extension().is_some_and(|e| e == "pub") {
                private
            } else {
                path.to_owned()
            };
            match russh::keys::load_secret_key(&private, None) {
                Ok(key) => Ok(vec![Signer::File(private, Box::new(key))]),
                Err(russh::keys::Error::KeyIsEncrypted) => {
                    // The agent may hold it: match by the public key.
                    let public = std::fs::read_to_string(private.with_extension("pub"))
                        .ok()
                        .and_then(|line| PublicKey::from_openssh(line.trim()).ok())
                        .ok_or_else(|| anyhow!("{} is encrypted: add it to ssh-agent with `ssh-add {}` and run again", private.display(), private.display()))?;
                    let held = agent_keys.await.unwrap_or_default();
                    let (key, comment) = held
                        .into_iter()
                        .find(|(k, _)| k.key_data() == public.key_data())
                        .ok_or_else(|| anyhow!("{} is encrypted and not in ssh-agent: run `ssh-add {}` and try again", private.display(), private.display()))?;
                    Ok(vec![Signer::Agent(key, comment)])
                }
                Err(error) => Err(anyhow!(
                    "cannot read the key {}: {error}",
                    private.display()
                )),
            }
        }
        None => {
            let held = agent_keys.await.ok_or_else(|| {
                anyhow!("no ssh-agent is running (SSH_AUTH_SOCK): start one and `ssh-add` your key, or pass the key: `k8shell login --ssh ~/.ssh/id_ed25519`")
            })?;
            if held.is_empty() {
                bail!(
                    "ssh-agent holds no keys: `ssh-add` yours, or pass it: `k8shell login --ssh ~/.ssh/id_ed25519`"
                );
            }
            Ok(held
                .into_iter()
                .map(|(key, comment)| Signer::Agent(key, comment))
                .collect())
        }
    }
}
