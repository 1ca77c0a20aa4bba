//! Which HTTP requests the local servers (the dashboard, the MCP endpoint
//! of `serve --http`) answer at all, whatever the route.
//!
//! DNS rebinding: a page on `evil.example` makes its name resolve to
//! 127.0.0.1, and the browser then sends the page's requests to our port as
//! same-origin requests of that page. They carry `Host: evil.example:PORT`,
//! so a server that answers only requests naming itself (an IP address or
//! `localhost`, with its own port) cannot be reached that way. A present `Origin` must be the server's own origin
//! (the MCP transport specification, "Security Warning", asks servers to
//! validate it and answer 403 otherwise). A state-changing request
//! (any method but GET, HEAD and OPTIONS) that a browser marks as coming
//! from another site (`Sec-Fetch-Site: cross-site` or `same-site`, which
//! covers pages of other ports on this machine) is refused too. A server
//! given a token answers only requests that carry it
//! (`Authorization: Bearer TOKEN`, compared in constant time).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// What of a request the rule looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Incoming<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// `Host`.
    pub host: Option<&'a str>,
    /// `Origin`.
    pub origin: Option<&'a str>,
    /// `Sec-Fetch-Site`, which browsers send with every request.
    pub fetch_site: Option<&'a str>,
    /// `Authorization`.
    pub authorization: Option<&'a str>,
}

/// Why a request is refused, or `Ok` when the server may answer it.
///
/// `port` is the port the server listens on; `token`, when set, must come
/// with every request. A host is acceptable when it names an IP address or
/// `localhost` (any case), with `port` when a port is given: rebinding
/// needs a DNS name, so every other name is refused. An origin is
/// acceptable when it is `http://` plus an acceptable host with `port`.
pub fn check(port: u16, token: Option<&str>, request: &Incoming<'_>) -> Result<(), &'static str> {
    if let Some(token) = token {
        let given = request.authorization.and_then(|value| value.strip_prefix("Bearer ")).unwrap_or_default();
        if !same_secret(given, token) {
            return Err("this server needs its token: send Authorization: Bearer TOKEN");
        }
    }
    let changes_state = !matches!(request.method, "GET" | "HEAD" | "OPTIONS");
    if changes_state && matches!(request.fetch_site, Some("cross-site" | "same-site")) {
        return Err("a page of another site may not act on this server (Sec-Fetch-Site)");
    }
    check_names(port, request.host, request.origin)
}

/// Equal, in a time that does not depend on where they differ.
pub fn same_secret(given: &str, secret: &str) -> bool {
    given.len() == secret.len() && given.bytes().zip(secret.bytes()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

fn check_names(port: u16, host: Option<&str>, origin: Option<&str>) -> Result<(), &'static str> {
    let Some(host) = host else { return Err("a request must name the server in its Host header") };
    if !names_this_server(host, port, false) {
        return Err("the Host header names another server (a DNS-rebinding page?); use http://127.0.0.1 or localhost");
    }
    match origin {
        None => Ok(()),
        Some(origin) => match origin.strip_prefix("http://") {
            Some(rest) if names_this_server(rest, port, true) => Ok(()),
            _ => Err("requests from pages of other sites are refused (Origin)"),
        },
    }
}

/// `authority` is an IP address or `localhost`, with `port` (required
/// when `need_port`, as an origin always carries a non-default port).
fn names_this_server(authority: &str, port: u16, need_port: bool) -> bool {
    let Some((name, given_port)) = split_port(authority) else { return false };
    let port_ok = match given_port {
        Some(given) => given == port,
        None => !need_port && port == 80,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    port_ok && (name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok())
}

/// (name, port if given); `None` when a port is given but is not a number.
fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    // `[::1]:8080`, `[::1]`, `127.0.0.1:8080`, `localhost`.
    if let Some(end) = authority.rfind(']') {
        let (name, rest) = authority.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Some((name, Some(port.parse().ok()?))),
            None if rest.is_empty() => Some((name, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        // An unbracketed IPv6 address has several colons and no port.
        Some((name, _)) if name.contains(':') => Some((authority, None)),
        Some((name, port)) => Some((name, Some(port.parse().ok()?))),
        None => Some((authority, None)),
    }
}

/// The axum middleware: refuses with 403 and the reason, before any route.
pub async fn guard(
    State((port, token)): State<(u16, Option<std::sync::Arc<str>>)>,
    request: Request,
    next: Next,
) -> Response {
    let headers: &HeaderMap = request.headers();
    let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let incoming = Incoming {
        method: request.method().as_str(),
        host: value(header::HOST),
        origin: value(header::ORIGIN),
        fetch_site: value(axum::http::HeaderName::from_static("sec-fetch-site")),
        authorization: value(header::AUTHORIZATION),
    };
    match check(port, token.as_deref(), &incoming) {
        Ok(()) => next.run(request).await,
        Err(reason) => (StatusCode::FORBIDDEN, reason).into_response(),
    }
}

/// `router` behind [`guard`], for a server listening on `port`, which
/// needs `token` with every request when one is given.
pub fn guarded(router: axum::Router, port: u16, token: Option<String>) -> axum::Router {
    let token: Option<std::sync::Arc<str>> = token.filter(|t| !t.is_empty()).map(Into::into);
    router.layer(axum::middleware::from_fn_with_state((port, token), guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_naming_this_server_from_its_own_pages_are_answered() {
        let ok =
            |host, origin| check(8091, None, &Incoming { method: "GET", host, origin, ..Incoming::default() }).is_ok();
        #[rustfmt::skip]
        let cases: &[(Option<&str>, Option<&str>, bool)] = &[
            (Some("127.0.0.1:8091"), None, true),
            (Some("localhost:8091"), None, true),
            (Some("LOCALHOST:8091"), None, true),
            (Some("[::1]:8091"), None, true),
            (Some("192.168.1.20:8091"), None, true),
            (Some("127.0.0.1:8091"), Some("http://127.0.0.1:8091"), true),
            (Some("127.0.0.1:8091"), Some("http://localhost:8091"), true),
            // DNS rebinding: a name that resolves here.
            (Some("evil.example:8091"), None, false),
            (Some("evil.example"), None, false),
            (Some("localhost.evil.example:8091"), None, false),
            (Some("127.0.0.1.nip.io:8091"), None, false),
            // Another port, a missing or malformed Host.
            (Some("127.0.0.1:9999"), None, false),
            (Some("127.0.0.1"), None, false),
            (Some("127.0.0.1:x"), None, false),
            (None, None, false),
            // Foreign or odd origins.
            (Some("127.0.0.1:8091"), Some("https://evil.example"), false),
            (Some("127.0.0.1:8091"), Some("http://evil.example:8091"), false),
            (Some("127.0.0.1:8091"), Some("http://127.0.0.1:9999"), false),
            (Some("127.0.0.1:8091"), Some("https://127.0.0.1:8091"), false),
            (Some("127.0.0.1:8091"), Some("null"), false),
        ];
        for &(host, origin, expected) in cases {
            assert_eq!(ok(host, origin), expected, "Host {host:?}, Origin {origin:?}");
        }
        let plain = Incoming { method: "GET", host: Some("localhost"), ..Incoming::default() };
        assert!(check(80, None, &plain).is_ok(), "port 80 may go unsaid in Host");
    }

    /// (method, Sec-Fetch-Site, Authorization, the server's token, answered).
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>, bool);

    #[test]
    fn actions_from_other_sites_and_calls_without_the_token_are_refused() {
        let host = Some("127.0.0.1:8091");
        #[rustfmt::skip]
        let cases: &[Case<'_>] = &[
            // (method, Sec-Fetch-Site, Authorization, token, answered)
            ("POST", None, None, None, true),                       // a client that is no browser
            ("POST", Some("same-origin"), None, None, true),        // the server's own page
            ("POST", Some("none"), None, None, true),               // typed in the address bar
            ("POST", Some("cross-site"), None, None, false),
            ("POST", Some("same-site"), None, None, false),         // another port of localhost
            ("DELETE", Some("cross-site"), None, None, false),
            ("GET", Some("cross-site"), None, None, true),          // reads: Host and Origin decide
            ("POST", None, Some("Bearer s3cret"), Some("s3cret"), true),
            ("GET", None, Some("Bearer s3cret"), Some("s3cret"), true),
            ("GET", None, None, Some("s3cret"), false),
            ("POST", None, Some("Bearer s3cre"), Some("s3cret"), false),
            ("POST", None, Some("Bearer s3cretX"), Some("s3cret"), false),
            ("POST", None, Some("s3cret"), Some("s3cret"), false),  // not a bearer credential
        ];
        for &(method, fetch_site, authorization, token, expected) in cases {
            let incoming = Incoming { method, host, origin: None, fetch_site, authorization };
            assert_eq!(check(8091, token, &incoming).is_ok(), expected, "{incoming:?} token {token:?}");
        }
    }
}
