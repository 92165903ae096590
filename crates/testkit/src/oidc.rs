//! A real OpenID provider (the npm package `oidc-provider`, run by Node.js) with one static
//! client and accounts defined by the test, plus a tiny browser that logs in through its
//! development login and consent pages.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::TestkitError;
use crate::binaries::require;
use crate::process::ServerProcess;

const SCRIPT: &str = include_str!("../assets/oidc-provider.mjs");
/// The npm package and version range the provider comes from.
pub const NPM_PACKAGE: &str = "oidc-provider@9";

/// Where scripts/setup installs the npm packages tests use (`K8SHELL_NPM_CACHE` overrides).
pub fn npm_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("K8SHELL_NPM_CACHE") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME").map_or_else(
        || {
            std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("/root"), PathBuf::from)
                .join(".cache")
        },
        PathBuf::from,
    );
    cache.join("k8shell/npm")
}

/// A running provider, removed on drop.
#[derive(Debug)]
pub struct OidcProvider {
    _process: ServerProcess,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    _dir: TempDir,
}

impl OidcProvider {
    /// Starts a provider whose client may redirect to `redirect_uris`; `accounts` maps a login
    /// name (the `sub`) to its claims (`email`, `groups`, `preferred_username`, …).
    pub fn start(
        redirect_uris: &[&str],
        accounts: &serde_json::Value,
    ) -> Result<Self, TestkitError> {
        Self::start_on(redirect_uris, accounts, "127.0.0.1", None)
    }

    /// Like [`OidcProvider::start`], listening on `host`, inside the network namespace
    /// `netns` (a path such as `/var/run/netns/NAME`) if given.
    pub fn start_on(
        redirect_uris: &[&str],
        accounts: &serde_json::Value,
        host: &str,
        netns: Option<&Path>,
    ) -> Result<Self, TestkitError> {
        let node = require("node", "nodejs", &[])?;
        let package = npm_cache().join("node_modules/oidc-provider/lib/index.js");
        if !package.exists() {
            return Err(TestkitError::Failed {
                what: "the OpenID provider".to_owned(),
                detail: format!(
                    "the npm package {NPM_PACKAGE} is not installed in {}; install it with\n\n    \
                     npm install --prefix {} {NPM_PACKAGE}\n\n(or run scripts/setup)",
                    npm_cache().display(),
                    npm_cache().display()
                ),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("k8shell-oidc-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating the OIDC temp dir", e))?;
        let script = dir.path().join("provider.mjs");
        std::fs::write(&script, SCRIPT).map_err(|e| TestkitError::io("writing provider.mjs", e))?;
        let client_id = "k8shell".to_owned();
        let client_secret = "k8shell-test-client-secret".to_owned();
        let setup = serde_json::json!({
            "clientId": client_id,
            "clientSecret": client_secret,
            "redirectUris": redirect_uris,
            "accounts": accounts,
            "host": host,
        });
        let mut command = match netns {
            Some(netns) => {
                // nsenter executes node in place: the PID stopped later is node's.
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net={}", netns.display()))
                    .arg("--")
                    .arg(node);
                command
            }
            None => Command::new(node),
        };
        command
            .arg(&script)
            .arg(&package)
            .env("K8SHELL_OIDC", setup.to_string());
        let log = dir.path().join("provider.log");
        let mut process = ServerProcess::spawn("oidc-provider", command, &log, libc::SIGTERM)?;
        let mut port = None;
        process.wait_until("READY on stdout", || {
            port = std::fs::read_to_string(&log).ok().and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("READY "))
                    .and_then(|p| p.trim().parse::<u16>().ok())
            });
            port.is_some()
        })?;
        let port = port.ok_or_else(|| TestkitError::Failed {
            what: "oidc-provider".to_owned(),
            detail: "no port".to_owned(),
        })?;
        Ok(Self {
            _process: process,
            issuer: format!("http://{host}:{port}"),
            client_id,
            client_secret,
            _dir: dir,
        })
    }
}

/// A minimal browser for plain-HTTP pages on loopback: cookies, redirects, and the provider's
/// login and consent forms.
#[derive(Debug, Default)]
pub struct Browser {
    cookies: BTreeMap<String, String>,
}

/// One HTTP response.
#[derive(Debug)]
struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Browser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens `url`, logs in as `login` and consents, and returns the URL the provider finally
    /// redirects to under `redirect_prefix` (the relying party's callback, with code and state).
    pub fn log_in(
        &mut self,
        url: &str,
        login: &str,
        redirect_prefix: &str,
    ) -> Result<String, TestkitError> {
        let mut url = url.to_owned();
        let mut form: Option<Vec<(String, String)>> = None;
        for _ in 0..20 {
            let page = match form.take() {
                Some(fields) => self.request("POST", &url, Some(&fields))?,
                None => self.request("GET", &url, None)?,
            };
            if let Some(location) = page.location {
                let next = absolute(&url, &location);
                if next.starts_with(redirect_prefix) {
                    return Ok(next);
                }
                url = next;
                continue;
            }
            if page.status != 200 {
                return Err(failed(format!(
                    "{url}: HTTP {}\n{}",
                    page.status, page.body
                )));
            }
            let (action, mut fields) = parse_form(&page.body)
                .ok_or_else(|| failed(format!("{url}: no form on the page\n{}", page.body)))?;
            if page.body.contains("name=\"login\"") {
                fields.push(("login".to_owned(), login.to_owned()));
                fields.push(("password".to_owned(), "any".to_owned()));
            }
            url = absolute(&url, &action);
            form = Some(fields);
        }
        Err(failed("too many pages before the redirect".to_owned()))
    }

    /// GETs `url` once (no redirects followed); returns the status and `Location`.
    pub fn open(&mut self, url: &str) -> Result<(u16, Option<String>), TestkitError> {
        let page = self.request("GET", url, None)?;
        Ok((page.status, page.location.map(|l| absolute(url, &l))))
    }

    /// The value of a cookie this browser holds.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.get(name).cloned()
    }

    /// Every cookie, as a `Cookie` header's value.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn request(
        &mut self,
        method: &str,
        url: &str,
        form: Option<&[(String, String)]>,
    ) -> Result<Page, TestkitError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| failed(format!("only http:// URLs: {url}")))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let mut stream = TcpStream::connect(authority)
            .map_err(|e| TestkitError::io(format!("connecting to {authority}"), e))?;
        let cookies = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let body = form.map(|fields| {
            fields
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect::<Vec<_>>()
                .join("&")
        });
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {authority}\r\n");
        if !cookies.is_empty() {
            request.push_str(&format!("Cookie: {cookies}\r\n"));
        }
        if let Some(body) = &body {
            request.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            request.push_str("\r\n");
        }
        stream
            .write_all(request.as_bytes())
            .map_err(|e| TestkitError::io("sending a request", e))?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| TestkitError::io("reading a response", e))?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut location = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "location" => location = Some(value.to_owned()),
                "set-cookie" => {
                    if let Some((pair, _)) = value.split_once(';').or(Some((value, "")))
                        && let Some((k, v)) = pair.split_once('=')
                    {
                        self.cookies
                            .insert(k.trim().to_owned(), v.trim().to_owned());
                    }
                }
                _ => {}
            }
        }
        Ok(Page {
            status,
            location,
            body: body.to_owned(),
        })
    }
}

fn failed(detail: String) -> TestkitError {
    TestkitError::Failed {
        what: "browser".to_owned(),
        detail,
    }
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let origin_end = base
        .strip_prefix("http://")
        .and_then(|rest| rest.find('/'))
        .map_or(base.len(), |i| i + "http://".len());
    format!("{}{location}", &base[..origin_end])
}

/// The first form's action and hidden inputs.
fn parse_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let form_start = html.find("<form")?;
    let form = &html[form_start..];
    let form = &form[..form.find("</form>").unwrap_or(form.len())];
    let action = attribute(form, "action")?;
    let mut fields = Vec::new();
    for input in form.split("<input").skip(1) {
        let tag = &input[..input.find('>').unwrap_or(input.len())];
        if attribute(tag, "type").as_deref() == Some("hidden")
            && let (Some(name), Some(value)) = (attribute(tag, "name"), attribute(tag, "value"))
        {
            fields.push((name, value));
        }
    }
    Some((action, fields))
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].replace("&amp;", "&"))
}

fn encode(value: &str) -> String {
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

/// The query parameter `name` of `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| decode(v))
    })
}

fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
