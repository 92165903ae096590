//! A small HTTP/1.1 client for fetching documents from identity and OpenID providers (JWKS,
//! discovery, token exchange): hyper 1 over TCP, or rustls with a given CA for https.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject as _;

/// Upper bound of a fetched document.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Upper bound of one exchange.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A response: status and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// GETs `url`; a non-2xx status is an error.
pub async fn get(url: &str, ca_file: Option<&Path>) -> Result<String, String> {
    let response = send(url, ca_file, "GET", None, Vec::new()).await?;
    if !(200..300).contains(&response.status) {
        return Err(format!("HTTP {}", response.status));
    }
    Ok(response.body)
}

/// POSTs a form (`application/x-www-form-urlencoded`), with HTTP basic authentication if given.
pub async fn post_form(
    url: &str,
    ca_file: Option<&Path>,
    basic_auth: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> Result<Response, String> {
    let body = form
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let authorization = basic_auth.map(|(user, password)| {
        let pair = format!("{}:{}", form_encode(user), form_encode(password));
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    });
    send(url, ca_file, "POST", authorization, body.into_bytes()).await
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space); a `%` not followed by
/// two hex digits stays as it is.
pub fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn send(
    url: &str,
    ca_file: Option<&Path>,
    method: &str,
    authorization: Option<String>,
    body: Vec<u8>,
) -> Result<Response, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    let host = uri.host().ok_or("URL without a host")?.to_owned();
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("URL must start with http:// or https://".to_owned()),
    };
    if !https && !is_this_machine(&host) {
        return Err(format!(
            "plain http:// is allowed only to this machine; use https:// (with a CA file) for {host}"
        ));
    }
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(
            hyper::header::HOST,
            uri.authority().map_or(host.clone(), |a| a.to_string()),
        )
        .header(hyper::header::ACCEPT, "application/json");
    if method == "POST" {
        request = request.header(
            hyper::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    }
    if let Some(authorization) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, authorization);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        if https {
            let ca_file = ca_file.ok_or("an https URL needs a CA file (`ca_file`)")?;
            let connector = tokio_rustls::TlsConnector::from(client_config(ca_file)?);
            let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(TokioIo::new(stream), request).await
        } else {
            exchange(TokioIo::new(tcp), request).await
        }
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer from {url} within {TIMEOUT:?}"))?
}

/// `localhost`, 127.0.0.0/8 or ::1: where unencrypted HTTP cannot be intercepted.
/// Loopback, or an address of one of this machine's interfaces (packets to it never leave the
/// machine: the platform host of a lab serves its own OpenID provider on its own address). An
/// address is ours when a socket can be bound to it.
fn is_this_machine(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| {
                ip.is_loopback()
                    || (!ip.is_unspecified() && std::net::UdpSocket::bind((ip, 0)).is_ok())
            })
}

fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    for cert in certs {
        roots
            .add(cert.map_err(|e| format!("{}: {e}", ca_file.display()))?)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn exchange<T>(io: T, request: hyper::Request<Full<Bytes>>) -> Result<Response, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _closed = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    let body = String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".to_owned())?;
    Ok(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_http_is_refused_beyond_this_machine() {
        let err = get("http://identity.example:7011/jwks.json", None)
            .await
            .unwrap_err();
        assert!(err.contains("use https://"), "{err}");
        let err = get("http://192.0.2.1:7011/jwks.json", None)
            .await
            .unwrap_err();
        assert!(
            err.contains("use https://"),
            "an address of another machine: {err}"
        );
        assert!(
            is_this_machine("127.0.0.1")
                && is_this_machine("[::1]")
                && is_this_machine("localhost")
        );
        assert!(!is_this_machine("0.0.0.0") && !is_this_machine("192.0.2.1"));
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(form_encode("safe-._~"), "safe-._~");
    }
}
