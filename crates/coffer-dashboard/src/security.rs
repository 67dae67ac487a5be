//! What every dashboard response carries, the session cookie, and the CSRF check.

use axum::extract::OriginalUri;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::response::Response;

use crate::BASE;
use crate::session::SessionId;

/// No inline script or style, nothing from elsewhere, no framing, forms posted here only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to every dashboard response (pages, redirects, assets, errors).
pub(crate) async fn headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    response
}

/// The session cookie's name over plain HTTP.
pub const SESSION_COOKIE: &str = "coffer_session";
/// The session cookie's name when it is `Secure`: a browser takes a `__Host-` cookie only from
/// HTTPS, with `Path=/` and no `Domain`, so neither a plain-HTTP page nor a sibling host can
/// plant one.
pub const SECURE_SESSION_COOKIE: &str = "__Host-coffer_session";

fn cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// The cookie's attributes: `Path=/` (as `__Host-` requires) when secure, else the dashboard's
/// path.
fn attributes(secure: bool) -> String {
    if secure {
        "Path=/; HttpOnly; SameSite=Strict; Secure".to_owned()
    } else {
        format!("Path={BASE}; HttpOnly; SameSite=Strict")
    }
}

/// `Set-Cookie` opening a session.
pub(crate) fn session_cookie(id: &SessionId, secure: bool) -> String {
    format!(
        "{}={}; {}",
        cookie_name(secure),
        id.to_hex(),
        attributes(secure)
    )
}

/// `Set-Cookie` removing the session cookie.
pub(crate) fn cleared_cookie(secure: bool) -> String {
    format!(
        "{}=; Max-Age=0; {}",
        cookie_name(secure),
        attributes(secure)
    )
}

/// The session id the request's cookies carry, if well-formed: only the cookie of the name
/// `secure` says, and none if the request carries two of that name (one planted beside the
/// real one).
pub(crate) fn session_id(headers: &HeaderMap, secure: bool) -> Option<SessionId> {
    let name = cookie_name(secure);
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name);
    let (_, value) = found.next()?;
    if found.next().is_some() {
        return None;
    }
    SessionId::parse(value)
}

/// True if the presented CSRF token is the session's (compared in constant time).
pub(crate) fn csrf_matches(expected: &str, presented: Option<&str>) -> bool {
    match presented {
        Some(p) => {
            aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), p.as_bytes())
                .is_ok()
        }
        None => false,
    }
}

/// The host a request was sent to: its `Host`, or HTTP/2's `:authority` (which has no `Host`).
pub(crate) fn request_host(parts: &Parts) -> Option<String> {
    if let Some(host) = parts.headers.get(header::HOST) {
        return host.to_str().ok().map(str::to_owned);
    }
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |o| &o.0);
    uri.authority().map(|a| a.as_str().to_owned())
}

/// A state-changing request that the browser says comes from another site is refused whatever
/// it carries: `Sec-Fetch-Site` other than `same-origin`, or an `Origin` naming another host
/// than `host` (the request's, [`request_host`]). (Under `Referrer-Policy: no-referrer` a
/// browser sends `Origin: null` with a form POST, so `null`, like a request without either
/// header, is judged by its CSRF token alone.)
pub(crate) fn cross_origin(headers: &HeaderMap, host: Option<&str>) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && site != "same-origin"
    {
        return true;
    }
    let Some(origin) = text("origin") else {
        return headers.contains_key(header::ORIGIN);
    };
    if origin == "null" {
        return false;
    }
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    match (origin_host, host) {
        (Some(o), Some(h)) => !o.eq_ignore_ascii_case(h),
        _ => true,
    }
}

/// A sign-in POST has no session, so no CSRF token, to judge it by: besides what
/// [`cross_origin`] refuses, one that carries neither `Sec-Fetch-Site` nor a real `Origin`
/// (`null` or none) is refused, so another site cannot sign a browser into the attacker's
/// session (every current browser sends `Sec-Fetch-Site`).
pub(crate) fn sign_in_forged(headers: &HeaderMap, host: Option<&str>) -> bool {
    let vouched = headers.contains_key("sec-fetch-site")
        || headers
            .get(header::ORIGIN)
            .is_some_and(|o| o.as_bytes() != b"null");
    cross_origin(headers, host) || !vouched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_compare() {
        assert!(csrf_matches("abc", Some("abc")));
        assert!(!csrf_matches("abc", Some("abd")));
        assert!(!csrf_matches("abc", Some("ab")));
        assert!(!csrf_matches("abc", None));
    }

    #[test]
    fn origin_must_be_this_host() {
        let host = Some("127.0.0.1:8080");
        let mut h = HeaderMap::new();
        assert!(
            !cross_origin(&h, host),
            "no Origin: judged by the token alone"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(!cross_origin(&h, host));
        assert!(cross_origin(&h, None), "no host to compare with");
        assert!(cross_origin(&h, Some("127.0.0.1:9090")));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.test"),
        );
        assert!(cross_origin(&h, host));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(
            !cross_origin(&h, host),
            "what no-referrer makes a browser send"
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_origin(&h, host));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(cross_origin(&h, host));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(!cross_origin(&h, host));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.test"),
        );
        assert!(cross_origin(&h, host), "the Origin still counts");
    }

    #[test]
    fn a_sign_in_needs_a_browser_to_vouch_for_it() {
        let host = Some("127.0.0.1:8080");
        let mut h = HeaderMap::new();
        assert!(sign_in_forged(&h, host), "neither header");
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(sign_in_forged(&h, host), "Origin: null alone");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(!sign_in_forged(&h, host));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(!sign_in_forged(&h, host));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(sign_in_forged(&h, host));
    }

    #[test]
    fn the_host_is_the_authority_without_a_host_header() {
        let (parts, _) = axum::http::Request::builder()
            .uri("https://coffer.test:8443/dashboard/sign-in")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(request_host(&parts).as_deref(), Some("coffer.test:8443"));
        let (parts, _) = axum::http::Request::builder()
            .uri("https://coffer.test:8443/dashboard/sign-in")
            .header(header::HOST, "other.test")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(request_host(&parts).as_deref(), Some("other.test"));
    }

    #[test]
    fn cookie_parsing_finds_the_session() {
        let mut h = HeaderMap::new();
        let id = "ab".repeat(32);
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {SESSION_COOKIE}={id}")).unwrap(),
        );
        assert_eq!(session_id(&h, false).map(|s| s.to_hex()), Some(id.clone()));
        assert!(session_id(&h, true).is_none(), "not the secure cookie");
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SECURE_SESSION_COOKIE}={id}")).unwrap(),
        );
        assert_eq!(session_id(&h, true).map(|s| s.to_hex()), Some(id.clone()));
        assert!(session_id(&h, false).is_none());
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("coffer_session=nothex"),
        );
        assert!(session_id(&h, false).is_none());
        // Two of the name: neither is believed.
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!(
                "{SESSION_COOKIE}={id}; {SESSION_COOKIE}={}",
                "cd".repeat(32)
            ))
            .unwrap(),
        );
        assert!(session_id(&h, false).is_none());
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SESSION_COOKIE}={id}")).unwrap(),
        );
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SESSION_COOKIE}={id}")).unwrap(),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SESSION_COOKIE}={id}")).unwrap(),
        );
        assert!(
            session_id(&h, false).is_none(),
            "across two Cookie lines too"
        );
    }

    #[test]
    fn secure_cookies_use_the_host_prefix() {
        let id = SessionId::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(
            session_cookie(&id, true),
            format!(
                "__Host-coffer_session={}; Path=/; HttpOnly; SameSite=Strict; Secure",
                "ab".repeat(32)
            )
        );
        assert_eq!(
            session_cookie(&id, false),
            format!(
                "coffer_session={}; Path=/dashboard; HttpOnly; SameSite=Strict",
                "ab".repeat(32)
            )
        );
        assert!(cleared_cookie(true).starts_with("__Host-coffer_session=; Max-Age=0; Path=/;"));
    }
}
