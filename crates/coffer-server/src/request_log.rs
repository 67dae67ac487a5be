//! The request line: one `response` event per request, in a `request` span that the handler's
//! own events (errors, refusals) are logged in.
//!
//! The request lines of *successful runtime reads* are the exception: a bound service may read
//! thousands of times a second, and formatting and writing a line per read was about a quarter
//! of a read's cost. They are written only while [`ACCESS_LOG_TARGET`] is enabled at `info`
//! (`coffer server|dev|edge --access-log`). Without it, a runtime read gets no span, and its
//! line is written after the fact only if the answer is not a success (refused, not found,
//! rate-limited, failed). The audit log's access events do not depend on any of this: core
//! counts every read (`Coffer::read_binding`), logged or not.

use std::borrow::Cow;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::Response;
use coffer_types::TokenId;
use tracing::Instrument;
use tracing::instrument::Instrumented;

/// The route a request was matched to, for its log line and its metrics: the router's
/// template, or the fixed template of a route dispatched before the router
/// ([`crate::runtime_front`]).
#[derive(Debug, Clone)]
pub(crate) enum RouteName {
    Matched(MatchedPath),
    Fixed(&'static str),
}

impl RouteName {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            RouteName::Matched(m) => m.as_str(),
            RouteName::Fixed(s) => s,
        }
    }
}

/// The service token a runtime response was made for, carried in the response's extensions to
/// the request's log line (`token_id`), so that a request id can be tied to the token that made
/// it. Only the id: never the token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoggedToken(pub(crate) TokenId);

/// The tracing target that, enabled at `info`, turns on the request lines of successful runtime
/// reads. The CLI enables it with `--access-log` and disables it otherwise.
pub const ACCESS_LOG_TARGET: &str = "coffer::access";

/// The prefix of the runtime API's paths.
const RUNTIME_PREFIX: &str = "/runtime/";

/// What of a path is percent-encoded in the log: controls and everything outside ASCII (line and
/// paragraph separators, no-break and zero-width spaces, bidi overrides: what could make a line
/// read otherwise than it is), and what JSON or text logs escape or quote (`"`, `\`), plus
/// space, `{` and `}` (the route templates' braces).
const LOGGED_PATH_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'\\')
    .add(b'{')
    .add(b'}');

/// The longest path logged whole, once encoded; a longer one is cut there and marked.
const MAX_LOGGED_PATH: usize = 1024;

/// Whether a request's line is written when its answer is a success: decided once, when the
/// request arrives ([`RequestLog::start`]), and handed to the handler (in the request's
/// extensions for a routed request, as an argument for the read an edge answers before its
/// router), so that a runtime handler names its token ([`LoggedToken`]) exactly when the
/// line that shows it is written ([`AccessLogged::writes_line`]). `false` only for a runtime read
/// without `--access-log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AccessLogged(pub(crate) bool);

impl AccessLogged {
    /// Whether the line of a request answered `status` is written: the one rule, used by the
    /// frame to write it and by the runtime handlers to fill it in.
    pub(crate) fn writes_line(self, status: StatusCode) -> bool {
        self.0 || !status.is_success()
    }
}

/// A handler's view of the decision; a request that did not pass through the frame (none does
/// in the server, but a test may build one) counts as logged, so a token is never left out of
/// a line that is written.
impl<S: Sync> FromRequestParts<S> for AccessLogged {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<AccessLogged>()
            .copied()
            .unwrap_or(AccessLogged(true)))
    }
}

/// One request's log line, from the moment the request arrives ([`crate::frame`]).
pub(crate) struct RequestLog {
    start: Instant,
    /// The request's span; `Span::none()` for a runtime read that is logged only if refused.
    span: tracing::Span,
    /// For such a read: what its span needs, kept until the answer says whether to log it.
    /// Cheap copies (an enum, reference-counted bytes and strings).
    deferred: Option<(Method, Uri, Option<RouteName>, HeaderValue)>,
}

impl RequestLog {
    /// `route`: the route's template (`/runtime/v1/bindings/{binding}`); none for a path no
    /// route matches.
    pub(crate) fn start<B>(
        req: &Request<B>,
        route: Option<RouteName>,
        id: &HeaderValue,
        start: Instant,
    ) -> RequestLog {
        if req.uri().path().starts_with(RUNTIME_PREFIX) && !access_log_enabled() {
            return RequestLog {
                start,
                span: tracing::Span::none(),
                deferred: Some((req.method().clone(), req.uri().clone(), route, id.clone())),
            };
        }
        RequestLog {
            start,
            span: request_span(req.method(), req.uri().path(), route.as_ref(), id),
            deferred: None,
        }
    }

    /// Whether the line is written for a successful answer.
    pub(crate) fn access(&self) -> AccessLogged {
        AccessLogged(self.deferred.is_none())
    }

    /// Runs `future` (the handler) in the request's span, so its own events name the request.
    pub(crate) fn instrument<F: Future>(&self, future: F) -> Instrumented<F> {
        future.instrument(self.span.clone())
    }

    /// Writes the request's line, unless it is a successful runtime read without
    /// `--access-log`.
    pub(crate) fn finish(&self, res: &Response) {
        let latency = self.start.elapsed();
        if !self.access().writes_line(res.status()) {
            return;
        }
        match &self.deferred {
            None => self.span.in_scope(|| log_response(res, latency)),
            Some((method, uri, route, id)) => request_span(method, uri.path(), route.as_ref(), id)
                .in_scope(|| log_response(res, latency)),
        }
    }
}

/// Whether successful runtime reads are logged (a check of the subscriber's cached interest).
fn access_log_enabled() -> bool {
    tracing::enabled!(target: ACCESS_LOG_TARGET, tracing::Level::INFO)
}

/// The request's span: its fields are on every line logged while it is handled (`route` is
/// absent for a path no route matches; `token_id` is recorded once a token verifies).
fn request_span(
    method: &Method,
    path: &str,
    route: Option<&RouteName>,
    id: &HeaderValue,
) -> tracing::Span {
    let id = id.to_str().unwrap_or("-");
    let route = route.map(|r| tracing::field::display(r.as_str()));
    // The path holds ids and names only; query strings and bodies are never logged.
    tracing::info_span!(
        "request",
        method = %method,
        path = %logged_path(path),
        route,
        request_id = %id,
        token_id = tracing::field::Empty
    )
}

fn log_response(res: &Response, latency: Duration) {
    // A runtime read names its service token here rather than in the span (see
    // [`LoggedToken`]); other requests carry no such extension.
    let token = res
        .extensions()
        .get::<LoggedToken>()
        .map(|t| tracing::field::display(t.0));
    let status = res.status().as_u16();
    // Microseconds from the request's arrival to its answer's headers (a streamed body may
    // take longer to send).
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if res.status().is_server_error() {
        tracing::error!(status, latency_us, token_id = token, "response");
    } else {
        tracing::info!(status, latency_us, token_id = token, "response");
    }
}

/// `path` as it is logged: percent-encoded where [`LOGGED_PATH_ESCAPES`] says (a path is sent
/// percent-encoded, so most are logged as they came, without a copy), and cut after
/// [`MAX_LOGGED_PATH`] bytes with a marker saying how long it was, so that a line stays well
/// under journald's line limit even JSON-escaped.
fn logged_path(path: &str) -> Cow<'_, str> {
    let encoded: Cow<'_, str> =
        percent_encoding::utf8_percent_encode(path, LOGGED_PATH_ESCAPES).into();
    if encoded.len() <= MAX_LOGGED_PATH {
        return encoded;
    }
    // The encoded path is ASCII: any byte is a boundary. A cut `%XX` is dropped whole.
    let mut cut = &encoded[..MAX_LOGGED_PATH];
    if let Some(at) = cut
        .len()
        .checked_sub(2)
        .and_then(|from| cut[from..].find('%'))
    {
        cut = &cut[..cut.len() - 2 + at];
    }
    Cow::Owned(format!("{cut}...[cut: {} bytes]", encoded.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_written_unless_a_success_is_not_logged() {
        for (logged, status, written) in [
            (true, StatusCode::OK, true),
            (true, StatusCode::NOT_FOUND, true),
            (false, StatusCode::OK, false),
            (false, StatusCode::FORBIDDEN, true),
            (false, StatusCode::TOO_MANY_REQUESTS, true),
            (false, StatusCode::INTERNAL_SERVER_ERROR, true),
        ] {
            assert_eq!(
                AccessLogged(logged).writes_line(status),
                written,
                "{logged} {status}"
            );
        }
    }

    #[test]
    fn a_plain_path_is_logged_as_it_came_without_a_copy() {
        let path = "/client/v4/accounts/0123abcd/secrets_store/stores/%22x%22/secrets?";
        assert!(matches!(logged_path(path), Cow::Borrowed(p) if p == path));
        let path = "/runtime/v1/bindings/API_KEY-1.b~c_d";
        assert!(matches!(logged_path(path), Cow::Borrowed(p) if p == path));
    }

    #[test]
    fn what_could_fool_a_reader_or_an_escaper_is_percent_encoded() {
        for (path, logged) in [
            ("/a\u{2028}b", "/a%E2%80%A8b"),            // line separator
            ("/a\u{a0}b", "/a%C2%A0b"),                 // no-break space
            ("/a\u{202e}b", "/a%E2%80%AEb"),            // right-to-left override
            ("/a\u{200b}b", "/a%E2%80%8Bb"),            // zero-width space
            ("/a\nb\rc\td\u{7f}", "/a%0Ab%0Dc%09d%7F"), // controls
            ("/a b\"c\\d{e}", "/a%20b%22c%5Cd%7Be%7D"),
            ("/caf\u{e9}", "/caf%C3%A9"),
        ] {
            assert_eq!(logged_path(path), logged, "{path:?}");
        }
    }

    #[test]
    fn a_long_path_is_cut_and_marked() {
        // 4,000 quotes: 12,000 bytes encoded, twice that had they been JSON-escaped.
        let path = format!("/a{}", "\"".repeat(4000));
        let logged = logged_path(&path);
        assert!(logged.len() <= MAX_LOGGED_PATH + 40, "{}", logged.len());
        assert!(logged.ends_with("...[cut: 12002 bytes]"), "{logged}");
        // The limit falls inside a `%22`, which is dropped rather than cut in two.
        let kept = logged.split("...").next().unwrap();
        assert!(kept.ends_with("%22"), "{kept}");
        assert_eq!(kept.len(), 2 + 3 * 340, "{kept}");
        // A path just at the limit is whole.
        let path = format!("/{}", "a".repeat(MAX_LOGGED_PATH - 1));
        assert_eq!(logged_path(&path), path.as_str());
        let path = format!("/{}", "a".repeat(MAX_LOGGED_PATH));
        assert!(logged_path(&path).ends_with(&format!("a...[cut: {} bytes]", MAX_LOGGED_PATH + 1)));
    }
}
