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

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, Uri};
use axum::response::Response;
use tracing::Instrument;
use tracing::instrument::Instrumented;

/// The tracing target that, enabled at `info`, turns on the request lines of successful runtime
/// reads. The CLI enables it with `--access-log` and disables it otherwise.
pub const ACCESS_LOG_TARGET: &str = "coffer::access";

/// The prefix of the runtime API's paths.
const RUNTIME_PREFIX: &str = "/runtime/";

/// One request's log line, from the moment the request arrives ([`crate::frame`]).
pub(crate) struct RequestLog {
    start: Instant,
    /// The request's span; `Span::none()` for a runtime read that is logged only if refused.
    span: tracing::Span,
    /// For such a read: what its span needs, kept until the answer says whether to log it.
    /// Cheap copies (an enum, reference-counted bytes and strings).
    deferred: Option<(Method, Uri, Option<MatchedPath>, HeaderValue)>,
}

impl RequestLog {
    pub(crate) fn start(req: &Request, id: &HeaderValue, start: Instant) -> RequestLog {
        // The route's template (`/runtime/v1/bindings/{binding}`), set by the router before the
        // frame runs; none for a path no route matches.
        let route = req.extensions().get::<MatchedPath>();
        if req.uri().path().starts_with(RUNTIME_PREFIX) && !access_log_enabled() {
            return RequestLog {
                start,
                span: tracing::Span::none(),
                deferred: Some((
                    req.method().clone(),
                    req.uri().clone(),
                    route.cloned(),
                    id.clone(),
                )),
            };
        }
        RequestLog {
            start,
            span: request_span(req.method(), req.uri().path(), route, id),
            deferred: None,
        }
    }

    /// Runs `future` (the handler) in the request's span, so its own events name the request.
    pub(crate) fn instrument<F: Future>(&self, future: F) -> Instrumented<F> {
        future.instrument(self.span.clone())
    }

    /// Writes the request's line, unless it is a successful runtime read without
    /// `--access-log`.
    pub(crate) fn finish(&self, res: &Response) {
        let latency = self.start.elapsed();
        match &self.deferred {
            None => self.span.in_scope(|| log_response(res, latency)),
            Some(_) if res.status().is_success() => {}
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
    route: Option<&MatchedPath>,
    id: &HeaderValue,
) -> tracing::Span {
    let id = id.to_str().unwrap_or("-");
    let route = route.map(|r| tracing::field::display(r.as_str()));
    // The path holds ids and names only; query strings and bodies are never logged.
    tracing::info_span!(
        "request",
        method = %method,
        path = %path,
        route,
        request_id = %id,
        token_id = tracing::field::Empty
    )
}

fn log_response(res: &Response, latency: Duration) {
    // A runtime read names its service token here rather than in the span (see
    // `runtime::LoggedToken`); other requests carry no such extension.
    let token = res
        .extensions()
        .get::<crate::runtime::LoggedToken>()
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
