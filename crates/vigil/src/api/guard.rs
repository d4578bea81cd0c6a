//! Keeps web pages out of the API.
//!
//! vigil listens on 127.0.0.1 without a token by default, and every page the user's browser
//! opens can send requests there. Three rules keep those pages from acting or reading:
//!
//! - **Host**: a page on a name it controls can point that name at 127.0.0.1 ("DNS
//!   rebinding") and then read the API as its own origin. Its requests still carry its name
//!   in `Host`, so only IP addresses, `localhost`, this machine's name and the names in
//!   `[api] hosts` are served.
//! - **Origin / `Sec-Fetch-Site`**: a state-changing request a browser sent for another site
//!   is refused.
//! - **`Content-Type: application/json`** for changes: a page can send a form, `text/plain` or
//!   an empty POST anywhere without asking, but JSON only after a CORS preflight, which vigil
//!   never grants. This holds even for browsers that send neither Origin nor Sec-Fetch-Site.
//!
//! Every answer also forbids framing (clickjacking the dashboard's buttons) and sniffing.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::Hub;
use super::error::ApiError;

/// The names a request may carry in `Host`, besides IP addresses and `localhost`.
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    names: Vec<String>,
    any: bool,
}

impl Hosts {
    /// The configured names (lowercase; `*` admits any) and this machine's own name.
    pub fn new(configured: &[String]) -> Self {
        let mut names: Vec<String> = configured.iter().filter(|n| *n != "*").cloned().collect();
        let machine = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .to_ascii_lowercase();
        if !machine.is_empty() {
            names.push(machine);
        }
        Self {
            names,
            any: configured.iter().any(|n| n == "*"),
        }
    }

    fn admits(&self, host: &str) -> bool {
        let name = host.trim_end_matches('.');
        self.any
            || name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            // Browsers resolve these to loopback themselves: nobody can rebind them.
            || name.ends_with(".localhost")
            || self.names.iter().any(|n| n == name)
    }
}

/// Why a request was refused before it reached an endpoint.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "Host `{0}` is not a name of this vigil: it answers to IP addresses, localhost and this \
         machine's name. If you reach it by this name, add it to `[api] hosts` in the config \
         (the check keeps web pages that rebind their name to this machine out)"
    )]
    UnknownHost(String),
    #[error(
        "refused a change sent by a web page from another site ({0}): changes come from the \
         CLI, vigil's own dashboard and programs, never from other pages"
    )]
    CrossSite(String),
}

/// The rules for one request's headers (a pure function of them).
pub fn check(hosts: &Hosts, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    let host = headers
        .get(header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase());
    if let Some(host) = &host
        && !hosts.admits(host_name(host))
    {
        return Err(Refusal::UnknownHost(host.clone()));
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        // Reads: the browser lets no other origin see the answer (vigil sends no CORS headers).
        return Ok(());
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = String::from_utf8_lossy(site.as_bytes()).to_ascii_lowercase();
        if site != "same-origin" && site != "none" {
            return Err(Refusal::CrossSite(format!("Sec-Fetch-Site: {site}")));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes()).to_ascii_lowercase();
        let same = host
            .as_deref()
            .is_some_and(|host| origin_authority(&origin) == Some(without_default_port(host)));
        if !same {
            return Err(Refusal::CrossSite(format!("Origin: {origin}")));
        }
    }
    Ok(())
}

/// Changes must be JSON: the one kind of body a page cannot send without a preflight.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if essence.as_deref() == Some("application/json") {
        return Ok(());
    }
    let given = match &essence {
        Some(e) => format!("`{e}`"),
        None => "no Content-Type".to_string(),
    };
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "changes must be sent with `Content-Type: application/json` (got {given}), so that \
             web pages cannot send them; e.g. curl -X POST -H 'Content-Type: application/json' \
             URL (the body may be empty)"
        ),
    ))
}

/// `name` of `name:port`, `[v6]:port` or `name`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// `host[:port]` of `scheme://host[:port]`, without the scheme's default port.
fn origin_authority(origin: &str) -> Option<&str> {
    let (scheme, authority) = origin.split_once("://")?;
    let default = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    Some(authority.strip_suffix(default).unwrap_or(authority))
}

fn without_default_port(host: &str) -> &str {
    host.strip_suffix(":80").unwrap_or(host)
}

/// The middleware: refuse what the rules refuse (journaled like a missing token), and mark
/// every answer unframable.
pub async fn guard(State(hub): State<Arc<Hub>>, request: Request, next: Next) -> Response {
    let mut response = match check(&hub.hosts, request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.to_string())
                .unwrap_or_else(|| "?".into());
            super::handlers::deny(
                &hub,
                &format!(
                    "{} {} from {peer}: {}",
                    request.method(),
                    request.uri().path(),
                    short(&refusal)
                ),
            );
            ApiError::new(StatusCode::FORBIDDEN, refusal.to_string()).into_response()
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    response
}

fn short(refusal: &Refusal) -> String {
    match refusal {
        Refusal::UnknownHost(h) => format!("Host `{h}` not accepted"),
        Refusal::CrossSite(why) => format!("cross-site ({why})"),
    }
}

/// The dashboard may run its own inline script and style (by hash: nothing injected into it
/// could run), talk to vigil, and nothing else; no answer may be framed.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let page = include_str!("dashboard.html");
    let script = inline_hash(page, "<script>", "</script>");
    let style = inline_hash(page, "<style>", "</style>");
    let policy = format!(
        "default-src 'none'; script-src {script}; style-src {style}; connect-src 'self'; \
         img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).expect("a CSP is ASCII")
});

/// `'sha256-…'` of the text between `open` and `close` (as CSP hashes inline elements).
fn inline_hash(page: &str, open: &str, close: &str) -> String {
    let body = page
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map(|(body, _)| body)
        .unwrap_or("");
    let digest = Sha256::digest(body.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn hosts(names: &[&str]) -> Hosts {
        Hosts::new(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn serves_ip_addresses_localhost_and_configured_names_only() {
        let h = hosts(&["vigil.lan"]);
        for host in [
            "127.0.0.1:9120",
            "10.0.0.5",
            "[::1]:9120",
            "localhost:9120",
            "LOCALHOST.",
            "app.localhost:9120",
            "vigil.lan:9120",
            "Vigil.LAN",
        ] {
            let r = check(&h, &Method::GET, &headers(&[("host", host)]));
            assert_eq!(r, Ok(()), "{host}");
        }
        for host in [
            "evil.example:9120",
            "127.0.0.1.evil.example",
            "vigil.lan.evil",
        ] {
            let r = check(&h, &Method::GET, &headers(&[("host", host)]));
            assert!(matches!(r, Err(Refusal::UnknownHost(_))), "{host}");
        }
        assert_eq!(
            check(
                &hosts(&["*"]),
                &Method::GET,
                &headers(&[("host", "x.example")])
            ),
            Ok(())
        );
        // HTTP/1.0 clients may send no Host; browsers always do.
        assert_eq!(check(&h, &Method::GET, &HeaderMap::new()), Ok(()));
    }

    #[test]
    fn changes_from_other_sites_are_refused() {
        let h = hosts(&[]);
        let host = ("host", "127.0.0.1:9120");
        let ok = |extra: &[(&'static str, &str)]| {
            let mut all = vec![host];
            all.extend_from_slice(extra);
            check(&h, &Method::POST, &headers(&all))
        };
        assert_eq!(ok(&[]), Ok(()));
        assert_eq!(ok(&[("origin", "http://127.0.0.1:9120")]), Ok(()));
        // Behind a proxy that terminates TLS, the page's scheme is not vigil's.
        assert_eq!(ok(&[("origin", "https://127.0.0.1:9120")]), Ok(()));
        assert_eq!(ok(&[("sec-fetch-site", "same-origin")]), Ok(()));
        assert_eq!(ok(&[("sec-fetch-site", "none")]), Ok(()));
        for bad in [
            ("origin", "http://evil.example"),
            ("origin", "http://127.0.0.1:9121"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            assert!(matches!(ok(&[bad]), Err(Refusal::CrossSite(_))), "{bad:?}");
        }
        // Default ports: a page at http://vigil.lan talks to Host vigil.lan.
        let h = hosts(&["vigil.lan"]);
        let r = check(
            &h,
            &Method::POST,
            &headers(&[("host", "vigil.lan"), ("origin", "http://vigil.lan:80")]),
        );
        assert_eq!(r, Ok(()));
        // Reads are left to the browser's same-origin policy.
        let r = check(
            &h,
            &Method::GET,
            &headers(&[("host", "vigil.lan"), ("sec-fetch-site", "cross-site")]),
        );
        assert_eq!(r, Ok(()));
    }

    #[test]
    fn changes_must_be_json() {
        assert!(require_json(&headers(&[("content-type", "application/json")])).is_ok());
        assert!(
            require_json(&headers(&[(
                "content-type",
                "Application/JSON; charset=utf-8"
            )]))
            .is_ok()
        );
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let e = require_json(&headers(&[("content-type", bad)])).unwrap_err();
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        assert!(require_json(&HeaderMap::new()).is_err());
    }

    #[test]
    fn the_policy_names_the_dashboards_own_script_and_style() {
        let csp = CSP.to_str().unwrap();
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(csp.contains("style-src 'sha256-"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(
            inline_hash("<script>alert(1)</script>", "<script>", "</script>"),
            // `echo -n 'alert(1)' | openssl dgst -sha256 -binary | base64`
            "'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"
        );
    }
}
