//! The browser's cookies: the session (an access token, HttpOnly) and the CSRF token the
//! console echoes in `X-CSRF-Token` on every state-changing request (double submit).

use axum::http::{HeaderMap, HeaderValue, header};

/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Cookie names and attributes.
#[derive(Debug, Clone)]
pub struct Cookies {
    secure: bool,
}

impl Cookies {
    pub fn new(secure: bool) -> Self {
        Self { secure }
    }

    /// `__Host-` names need `Secure`; without it the plain names are used.
    pub fn session_name(&self) -> &'static str {
        if self.secure {
            "__Host-k8shell-session"
        } else {
            "k8shell-session"
        }
    }

    pub fn csrf_name(&self) -> &'static str {
        if self.secure {
            "__Host-k8shell-csrf"
        } else {
            "k8shell-csrf"
        }
    }

    pub fn login_state_name(&self) -> &'static str {
        if self.secure {
            "__Host-k8shell-login"
        } else {
            "k8shell-login"
        }
    }

    /// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
    pub fn set(&self, name: &str, value: &str, max_age: u64, http_only: bool) -> HeaderValue {
        let mut text = format!("{name}={value}; Path=/; Max-Age={max_age}; SameSite=Lax");
        if http_only {
            text.push_str("; HttpOnly");
        }
        if self.secure {
            text.push_str("; Secure");
        }
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The value of cookie `name` in the request.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Equal without revealing through timing where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_cookie_among_several_headers_and_pairs() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        headers.append(header::COOKIE, HeaderValue::from_static("c=3"));
        assert_eq!(get(&headers, "b"), Some("2"));
        assert_eq!(get(&headers, "c"), Some("3"));
        assert_eq!(get(&headers, "d"), None);
    }

    #[test]
    fn secure_cookies_use_host_names_and_flags() {
        let secure = Cookies::new(true);
        let text = secure.set(secure.session_name(), "v", 60, true);
        assert_eq!(
            text,
            "__Host-k8shell-session=v; Path=/; Max-Age=60; SameSite=Lax; HttpOnly; Secure"
        );
        let plain = Cookies::new(false);
        assert_eq!(
            plain.set(plain.csrf_name(), "t", 0, false),
            "k8shell-csrf=t; Path=/; Max-Age=0; SameSite=Lax"
        );
    }

    #[test]
    fn secrets_compare_by_value() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
