//! The frame every routed request passes through, as one layer: its request id, its log line,
//! a panic turned into a 500, and `Cache-Control: no-store` on the answer.
//!
//! One hand-written service instead of a stack of six (`map_request`, tower-http's
//! `SetRequestId`, `PropagateRequestId` and `CatchPanic`, `from_fn`, `map_response`): each of
//! those boxed or wrapped the request's future once more, and a runtime read, which does little
//! else, paid for all of them (docs/benchmarks.md, "Runtime reads at an edge").

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use coffer_api::ErrorCode;
use futures_util::FutureExt;
use tower::{Layer, Service};

use crate::error::ApiError;
use crate::request_log;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Makes request ids: a random prefix per process (so ids from several instances behind one
/// load balancer do not collide) and a counter. Ids only correlate log lines and audit
/// entries; nothing relies on them being unpredictable.
#[derive(Debug)]
struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        RequestIds {
            prefix: u32::from_be_bytes(coffer_crypto::random_array::<4>()),
            next: AtomicU64::new(0),
        }
    }

    /// 24 lowercase hex digits, like the random ids before them.
    fn make(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let text = format!("{:08x}{:016x}", self.prefix, n);
        HeaderValue::from_str(&text).expect("hex digits are a valid header value")
    }
}

/// The layer ([`axum::Router::layer`]); every route and fallback shares its id counter.
#[derive(Debug, Clone)]
pub(crate) struct FrameLayer {
    ids: Arc<RequestIds>,
}

impl FrameLayer {
    pub(crate) fn new() -> FrameLayer {
        FrameLayer {
            ids: Arc::new(RequestIds::new()),
        }
    }
}

impl<S> Layer<S> for FrameLayer {
    type Service = Frame<S>;

    fn layer(&self, inner: S) -> Frame<S> {
        Frame {
            inner,
            ids: self.ids.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Frame<S> {
    inner: S,
    ids: Arc<RequestIds>,
}

impl<S> Service<Request> for Frame<S>
where
    S: Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let start = Instant::now();
        let id = match req.headers().get(&REQUEST_ID) {
            Some(given) if is_safe_request_id(given) => given.clone(),
            _ => {
                let made = self.ids.make();
                req.headers_mut().insert(REQUEST_ID, made.clone());
                made
            }
        };
        let log = request_log::RequestLog::start(&req, &id, start);
        // A panic is a bug; the client learns nothing but that it happened. Caught whether it
        // happens while the handler's future is made or while it runs.
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)));
        Box::pin(async move {
            let mut res = match called {
                Ok(future) => {
                    let run = AssertUnwindSafe(log.instrument(future)).catch_unwind();
                    match run.await {
                        Ok(answer) => answer?,
                        Err(_) => panicked(),
                    }
                }
                Err(_) => panicked(),
            };
            finish_headers(res.headers_mut(), id);
            log.finish(&res);
            Ok(res)
        })
    }
}

fn panicked() -> Response {
    ApiError::new(ErrorCode::Internal, "internal error").into_response()
}

/// Responses about secrets must not be cached by proxies or clients; the request id goes back
/// to the client.
fn finish_headers(headers: &mut HeaderMap, id: HeaderValue) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(REQUEST_ID, id);
}

/// A client may send its own `x-request-id` to correlate logs, but it lands in log lines: it is
/// kept only if it is short and plain (so it cannot forge log lines); otherwise we make one.
fn is_safe_request_id(value: &HeaderValue) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app() -> Router {
        Router::new()
            .route("/ok", get(|| async { "fine" }))
            .route(
                "/boom",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("a bug");
                    }
                    "unreachable"
                }),
            )
            .layer(FrameLayer::new())
    }

    async fn get_with(uri: &str, id: Option<&str>) -> Response {
        let mut req = Request::builder().uri(uri);
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn answers_carry_no_store_and_a_request_id() {
        let res = get_with("/ok", None).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
        let id = res.headers()[&REQUEST_ID].to_str().unwrap();
        assert_eq!(id.len(), 24, "{id}");
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
    }

    #[tokio::test]
    async fn made_ids_differ_and_plain_client_ids_are_kept() {
        let layer = FrameLayer::new();
        let a = layer.ids.make();
        let b = layer.ids.make();
        assert_ne!(a, b);
        assert_eq!(
            a.as_bytes()[..8],
            b.as_bytes()[..8],
            "one prefix per process"
        );
        let kept = get_with("/ok", Some("deploy-42_a.b")).await;
        assert_eq!(kept.headers()[&REQUEST_ID], "deploy-42_a.b");
        let replaced = get_with("/ok", Some("a b=c")).await;
        assert_ne!(replaced.headers()[&REQUEST_ID], "a b=c");
        assert_eq!(replaced.headers()[&REQUEST_ID].len(), 24);
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_500_in_the_envelope_with_the_frame_headers() {
        let res = get_with("/boom", Some("trace-me")).await;
        assert_eq!(res.status(), 500);
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(res.headers()[&REQUEST_ID], "trace-me");
        let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("\"success\":false"), "{text}");
        assert!(
            !text.contains("a bug"),
            "the panic's message stays inside: {text}"
        );
    }
}
