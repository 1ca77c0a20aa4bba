//! Which HTTP requests the local servers (the dashboard, the MCP endpoint
//! of `serve --http`) answer at all, whatever the route.
//!
//! DNS rebinding: a page on `evil.example` makes its name resolve to
//! 127.0.0.1, and the browser then sends the page's requests to our port as
//! same-origin requests of that page. They carry `Host: evil.example:PORT`,
//! so a server that answers only requests naming itself (an IP address or
//! `localhost`, with its own port) cannot be reached that way. A present `Origin` must be the server's own origin
//! (the MCP transport specification, "Security Warning", asks servers to
//! validate it and answer 403 otherwise).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Why a request is refused, or `Ok` when the server may answer it.
///
/// `port` is the port the server listens on. `host` and `origin` are the
/// request's headers, if present. A host is acceptable when it names an IP
/// address or `localhost` (any case), with `port` when a port is given:
/// rebinding needs a DNS name, so every other name is refused. An origin is
/// acceptable when it is `http://` plus an acceptable host with `port`.
pub fn check(port: u16, host: Option<&str>, origin: Option<&str>) -> Result<(), &'static str> {
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
pub async fn guard(State(port): State<u16>, request: Request, next: Next) -> Response {
    let headers: &HeaderMap = request.headers();
    let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
    match check(port, value(header::HOST), value(header::ORIGIN)) {
        Ok(()) => next.run(request).await,
        Err(reason) => (StatusCode::FORBIDDEN, reason).into_response(),
    }
}

/// `router` behind [`guard`], for a server listening on `port`.
pub fn guarded(router: axum::Router, port: u16) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(port, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_naming_this_server_from_its_own_pages_are_answered() {
        let ok = |host, origin| check(8091, host, origin).is_ok();
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
        assert!(check(80, Some("localhost"), None).is_ok(), "port 80 may go unsaid in Host");
    }
}
