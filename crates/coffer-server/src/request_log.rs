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

use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::router::REQUEST_ID;

/// The tracing target that, enabled at `info`, turns on the request lines of successful runtime
/// reads. The CLI enables it with `--access-log` and disables it otherwise.
pub const ACCESS_LOG_TARGET: &str = "coffer::access";

/// The prefix of the runtime API's paths.
const RUNTIME_PREFIX: &str = "/runtime/";

/// The middleware (`axum::middleware::from_fn`).
pub(crate) async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    if req.uri().path().starts_with(RUNTIME_PREFIX) && !access_log_enabled() {
        // Cheap copies (an enum, reference-counted bytes), kept for the line of a refusal.
        let method = req.method().clone();
        let uri = req.uri().clone();
        let id = req.headers().get(&REQUEST_ID).cloned();
        let res = next.run(req).await;
        if !res.status().is_success() {
            let span = request_span(&method, uri.path(), id.as_ref());
            span.in_scope(|| log_response(&res, start.elapsed()));
        }
        return res;
    }
    let span = request_span(
        req.method(),
        req.uri().path(),
        req.headers().get(&REQUEST_ID),
    );
    let res = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| log_response(&res, start.elapsed()));
    res
}

/// Whether successful runtime reads are logged (a check of the subscriber's cached interest).
fn access_log_enabled() -> bool {
    tracing::enabled!(target: ACCESS_LOG_TARGET, tracing::Level::INFO)
}

fn request_span(method: &Method, path: &str, id: Option<&HeaderValue>) -> tracing::Span {
    let id = id.and_then(|v| v.to_str().ok()).unwrap_or("-");
    // The path holds ids only; query strings and bodies are never logged.
    tracing::info_span!("request", method = %method, path = %path, request_id = %id, token_id = tracing::field::Empty)
}

fn log_response(res: &Response, latency: Duration) {
    // A runtime read names its service token here rather than in the span (see
    // `runtime::LoggedToken`); other requests carry no such extension.
    let token = res
        .extensions()
        .get::<crate::runtime::LoggedToken>()
        .map(|t| tracing::field::display(t.0));
    let status = res.status().as_u16();
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if res.status().is_server_error() {
        tracing::error!(status, micros, token_id = token, "response");
    } else {
        tracing::info!(status, micros, token_id = token, "response");
    }
}
