//! The REST API as the CLI calls it: one HTTP/1.1 request per connection (plain on loopback,
//! rustls otherwise), JSON in and out, and problems turned into messages that say what to do.

use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// How long connecting may take, and then the answer's head.
const CONNECT_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

/// Where the API is and who calls it.
#[derive(Debug, Clone)]
pub struct Api {
    /// `https://k8shell.example.com` (no trailing slash).
    pub url: String,
    pub token: Option<String>,
}

/// A failed call: the HTTP status and the server's words.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl Api {
    pub fn new(url: &str, token: Option<String>) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            token,
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.json("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.json("POST", path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.json("DELETE", path, None).await
    }

    /// A call whose answer is JSON (or nothing).
    pub async fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let response = self.send(method, path, body, &[]).await?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        if !(200..300).contains(&status) {
            return Err(problem(status, &bytes).into());
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} answered {method} {path} with something that is not JSON: is K8SHELL_URL the k8shell API?",
                self.url
            )
        })
    }

    /// Every item of a paged list (`{"items": [...], "next_cursor": "..."}`).
    pub async fn get_all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page_path = match &cursor {
                Some(cursor) => format!("{path}{separator}cursor={}", encode(cursor)),
                None => path.to_owned(),
            };
            let page = self.get(&page_path).await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) if !next.is_empty() && cursor.as_deref() != Some(next) => {
                    cursor = Some(next.to_owned());
                }
                _ => return Ok(items),
            }
        }
    }

    /// A call whose answer is read as a stream (recordings).
    pub async fn stream(&self, path: &str) -> anyhow::Result<Incoming> {
        let response = self.send("GET", path, None, &[]).await?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let bytes = response.into_body().collect().await?.to_bytes();
            return Err(problem(status, &bytes).into());
        }
        Ok(response.into_body())
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<hyper::Response<Incoming>> {
        let (tls, rest) = if let Some(rest) = self.url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = self.url.strip_prefix("http://") {
            (false, rest)
        } else {
            bail!(
                "K8SHELL_URL {:?} must start with https:// (or http://)",
                self.url
            );
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = authority
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(authority, |(host, _)| host)
            .trim_matches(['[', ']']);
        let address = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        let loopback = matches!(host, "localhost" | "::1") || host.starts_with("127.");
        if !tls && !loopback && std::env::var_os("K8SHELL_ALLOW_HTTP").is_none() {
            bail!(
                "{} is plain HTTP: sign-ins and tokens would cross the network readable by anyone on the way. Use https://, or set K8SHELL_ALLOW_HTTP=1 on a network you trust",
                self.url
            );
        }
        let connect =
            tokio::time::timeout(CONNECT_WITHIN, tokio::net::TcpStream::connect(&address));
        let tcp = match connect.await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => bail!(
                "cannot reach the k8shell API at {} ({e}): check K8SHELL_URL or `--url`",
                self.url
            ),
            Err(_) => bail!(
                "the k8shell API at {} did not answer within {} s: check K8SHELL_URL or `--url`",
                self.url,
                CONNECT_WITHIN.as_secs()
            ),
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", authority)
            .header(
                "user-agent",
                concat!("k8shell-cli/", env!("CARGO_PKG_VERSION")),
            )
            .header("accept", "application/json");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(body))?;
        if tls {
            let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                .map_err(|_| anyhow!("{host:?} is not a host name"))?;
            let stream = tokio_rustls::TlsConnector::from(tls_config()?)
                .connect(name, tcp)
                .await
                .with_context(|| {
                    format!("TLS with {host} failed: if it uses a private CA, set K8SHELL_CA_FILE")
                })?;
            exchange(TokioIo::new(stream), request).await
        } else {
            exchange(TokioIo::new(tcp), request).await
        }
    }
}

async fn exchange<T>(
    io: T,
    request: hyper::Request<Full<Bytes>>,
) -> anyhow::Result<hyper::Response<Incoming>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    tokio::time::timeout(ANSWER_WITHIN, sender.send_request(request))
        .await
        .map_err(|_| {
            anyhow!(
                "the k8shell API did not answer within {} s",
                ANSWER_WITHIN.as_secs()
            )
        })?
        .map_err(Into::into)
}

/// The system's roots, plus `K8SHELL_CA_FILE` when set.
fn tls_config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = std::env::var_os("K8SHELL_CA_FILE") {
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(&path)
            .with_context(|| format!("reading K8SHELL_CA_FILE {}", path.to_string_lossy()))?
        {
            roots.add(cert?)?;
        }
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The server's problem as a message, with a hint where the status says what to do.
fn problem(status: u16, body: &[u8]) -> ApiError {
    let detail = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
    let message = match status {
        401 => format!("{detail}\n(sign in with `k8shell login`)"),
        _ => detail,
    };
    ApiError { status, message }
}

/// Percent-encodes a path segment or query value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
