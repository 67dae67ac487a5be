//! The frame every routed request passes through, as one layer: its request id, its log line,
//! its metrics (with `--metrics-listen`), a panic turned into a 500, and `Cache-Control:
//! no-store` on the answer.
//!
//! One hand-written service instead of a stack of six (`map_request`, tower-http's
//! `SetRequestId`, `PropagateRequestId` and `CatchPanic`, `from_fn`, `map_response`): each of
//! those boxed or wrapped the request's future once more, and a runtime read, which does little
//! else, paid for all of them (docs/benchmarks.md, "Runtime reads at an edge"). The same frame
//! ([`framed`]) wraps the runtime read an edge answers before its router
//! ([`crate::runtime_front`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use coffer_api::ErrorCode;
use coffer_metrics::{Method, Metrics, RouteMetrics, UNMATCHED_ROUTE};
use futures_util::FutureExt;
use futures_util::future::Either;
use tower::{Layer, Service};

use crate::error::ApiError;
use crate::request_log::{self, RouteName};

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: 12 random bytes each, in 24 hex digits. Random, not a counter: ids are shown
/// to every client, and a counter would tell any of them how many requests the instance
/// serves, and let one send the next id itself to blur its requests with another's. The
/// bytes are drawn 256 ids at a time per thread, so a request pays a copy, not a call to the
/// CSPRNG.
const ID_BYTES: usize = 12;
const IDS_PER_DRAW: usize = 256;

struct RandomIds {
    bytes: [u8; ID_BYTES * IDS_PER_DRAW],
    used: usize,
}

thread_local! {
    static RANDOM_IDS: std::cell::RefCell<RandomIds> = const {
        std::cell::RefCell::new(RandomIds { bytes: [0; ID_BYTES * IDS_PER_DRAW], used: IDS_PER_DRAW })
    };
}

fn make_request_id() -> HeaderValue {
    let id: [u8; ID_BYTES] = RANDOM_IDS.with(|ids| {
        let mut ids = ids.borrow_mut();
        if ids.used == IDS_PER_DRAW {
            ids.bytes = coffer_crypto::random_array();
            ids.used = 0;
        }
        let at = ids.used * ID_BYTES;
        ids.used += 1;
        ids.bytes[at..at + ID_BYTES]
            .try_into()
            .expect("ID_BYTES bytes")
    });
    // Encoded on the stack: `hex::encode` collects a `String` one `char` at a time, which
    // cost more than drawing the bytes.
    let mut digits = [0u8; 2 * ID_BYTES];
    hex::encode_to_slice(id, &mut digits).expect("twice as many digits as bytes");
    // Owned by the value's bytes, so the clones the request, its log and its answer take
    // count references rather than promote a copied `Vec` (an allocation more).
    HeaderValue::from_maybe_shared(Bytes::from_owner(digits))
        .expect("hex digits are a valid header value")
}

/// The layer ([`axum::Router::layer`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct FrameLayer {
    metrics: Option<Arc<Metrics>>,
}

impl FrameLayer {
    pub(crate) fn new(metrics: Option<Arc<Metrics>>) -> FrameLayer {
        FrameLayer { metrics }
    }
}

impl<S> Layer<S> for FrameLayer {
    type Service = Frame<S>;

    fn layer(&self, inner: S) -> Frame<S> {
        Frame {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Frame<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S> Service<Request> for Frame<S>
where
    S: Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Framed<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The route's template (the router put it in the extensions); none for a path no route
        // matches.
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .cloned()
            .map(RouteName::Matched);
        // The route's histograms are resolved before the request moves into the handler: by
        // its template, never by its path.
        let observed = self.metrics.as_ref().map(|metrics| {
            metrics.route(route.as_ref().map_or(UNMATCHED_ROUTE, RouteName::as_str))
        });
        let inner = &mut self.inner;
        framed(req, route, observed, |mut req, access| {
            // For the runtime handlers (`request_log::AccessLogged`), which take a request
            // without it as logged: put there only when it says otherwise, so other requests
            // pay no allocation for it.
            if access != request_log::AccessLogged(true) {
                req.extensions_mut().insert(access);
            }
            inner.call(req)
        })
    }
}

/// A framed request's future: one box.
pub(crate) type Framed<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>;

/// Frames one request: its id (the client's if plain, else a made one, set on the request
/// before `call` sees it), its log line, its latency in `observed` (the route's histograms),
/// a panic in `call` or its future turned into a 500, and the answer's `no-store` and id.
/// `call` is told whether a successful answer's line is written (decided here, once).
/// What [`Frame`] does for a routed request, and [`crate::runtime_front`] for the runtime read
/// it dispatches before the router.
pub(crate) fn framed<B, F, E>(
    mut req: axum::http::Request<B>,
    route: Option<RouteName>,
    observed: Option<Arc<RouteMetrics>>,
    call: impl FnOnce(axum::http::Request<B>, request_log::AccessLogged) -> F,
) -> Framed<E>
where
    F: Future<Output = Result<Response, E>> + Send + 'static,
    E: Send + 'static,
{
    let start = Instant::now();
    let id = match req.headers().get(&REQUEST_ID) {
        Some(given) if is_safe_request_id(given) => given.clone(),
        _ => {
            let made = make_request_id();
            req.headers_mut().insert(REQUEST_ID, made.clone());
            made
        }
    };
    let log = request_log::RequestLog::start(&req, route, &id, start);
    let observed = observed.map(|route| (route, Method::from_name(req.method().as_str())));
    // A panic is a bug; the client learns nothing but that it happened. Caught whether it
    // happens while the handler's future is made or while it runs. The handler's future is
    // wrapped before it is boxed, and finished by a closure rather than an `async` block: a
    // block would hold it twice (captured, then moved into a local across the await), and
    // copying it around was a measurable part of a runtime read.
    let access = log.access();
    let running = match std::panic::catch_unwind(AssertUnwindSafe(|| call(req, access))) {
        Ok(future) => Either::Left(AssertUnwindSafe(log.instrument(future)).catch_unwind()),
        Err(panic) => Either::Right(std::future::ready(Err(panic))),
    };
    Box::pin(running.map(move |ran| {
        let mut res = match ran {
            Ok(answer) => answer?,
            Err(_) => panicked(),
        };
        finish_headers(res.headers_mut(), id);
        log.finish(&res);
        if let Some((route, method)) = observed {
            route.observe(method, res.status().as_u16(), start.elapsed());
        }
        Ok(res)
    }))
}

fn panicked() -> Response {
    ApiError::new(ErrorCode::Internal, "internal error").into_response()
}

/// Responses about secrets must not be cached by proxies or clients; the request id goes back
/// to the client.
fn finish_headers(headers: &mut HeaderMap, id: HeaderValue) {
    headers.insert(header::CACHE_CONTROL, crate::static_headers::no_store());
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
            .layer(FrameLayer::new(None))
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
        // More than one draw's worth: ids across a refill differ too.
        let ids: std::collections::HashSet<HeaderValue> =
            (0..3 * IDS_PER_DRAW).map(|_| make_request_id()).collect();
        assert_eq!(ids.len(), 3 * IDS_PER_DRAW, "no id repeats");
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
