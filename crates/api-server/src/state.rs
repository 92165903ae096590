//! What every request shares: the configuration, the services, the key cache, and the small
//! in-memory stores of the login flows.

use std::sync::Arc;

use k8shell_common::jwks::JwksCache;
use k8shell_gateway::Gateway;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::ssh_login::Challenges;
use crate::users::UserCache;

/// The shared state of the server.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub gateway: Gateway,
    pub jwks: Arc<JwksCache>,
    pub users: UserCache,
    pub challenges: Challenges,
    pub login_limit: RateLimiter,
    pub metrics: Metrics,
    /// The example blueprints by name (name → Nickel source).
    pub blueprints: Vec<crate::routes::blueprints::Example>,
    /// Cancelled when the server shuts down: terminals and event streams end.
    pub stop: CancellationToken,
    /// The open browser terminals, waited for (within `drain`) on shutdown.
    pub terminals: tokio_util::task::TaskTracker,
    /// The single-use sign-in handed over at start, if any.
    pub one_time_login: crate::one_time_login::OneTimeLogins,
}

pub type State = axum::extract::State<Arc<AppState>>;

impl AppState {
    pub fn cookies(&self) -> crate::cookies::Cookies {
        crate::cookies::Cookies::new(self.config.cookies.secure)
    }

    /// `scheme://host[:port]` of the public URL: what browsers send as `Origin`.
    pub fn origin(&self) -> String {
        origin_of(&self.config.public_url)
    }

    /// An absolute URL of ours for `path` (`/api/v1/...`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.public_url.trim_end_matches('/'))
    }
}

impl AppState {
    /// `ssh [-p PORT] LOGIN@HOST` for the ssh-proxy.
    pub fn ssh_command(&self, login: &str) -> String {
        let (host, port) = self.ssh_host_port();
        if port == 22 {
            format!("ssh {login}@{host}")
        } else {
            format!("ssh -p {port} {login}@{host}")
        }
    }

    pub fn ssh_host_port(&self) -> (String, u16) {
        if let Some(address) = &self.config.ssh_address
            && let Some((host, port)) = address.rsplit_once(':')
            && let Ok(port) = port.parse()
        {
            return (host.trim_matches(['[', ']']).to_owned(), port);
        }
        let origin = self.origin();
        let authority = origin.split_once("://").map_or(origin.as_str(), |(_, a)| a);
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        };
        (host.trim_matches(['[', ']']).to_owned(), 2222)
    }
}

/// `scheme://host[:port]` as browsers send it: lower case, no default port.
pub fn origin_of(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let origin = match url[after_scheme..].find('/') {
        Some(slash) => &url[..after_scheme + slash],
        None => url,
    }
    .to_ascii_lowercase();
    origin
        .strip_suffix(":443")
        .filter(|o| o.starts_with("https://"))
        .or_else(|| {
            origin
                .strip_suffix(":80")
                .filter(|o| o.starts_with("http://"))
        })
        .map_or_else(|| origin.clone(), str::to_owned)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_origin_is_scheme_host_and_port() {
        assert_eq!(
            super::origin_of("https://k8shell.example.com/"),
            "https://k8shell.example.com"
        );
        assert_eq!(
            super::origin_of("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            super::origin_of("https://K8shell.Example.com:443/x"),
            "https://k8shell.example.com"
        );
    }
}
