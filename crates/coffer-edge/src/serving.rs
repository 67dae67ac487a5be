//! The edge's serving side: the slot that holds the runtime API once the first sync built it
//! (emptied for good on revocation), and the HTTP front that answers `/healthz` before anything
//! else and refuses what the edge must not serve.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use arc_swap::ArcSwapOption;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use coffer_core::Coffer;
use coffer_server::{ApiError, EdgeApp, EdgeFuture};
use futures_util::future::Either;
use tower::Service;

use crate::status::EdgeStatus;

/// The serving side (the runtime API over the replica's `Coffer`: the runtime read of one
/// binding answered directly, everything else by its router), once the first sync built it;
/// emptied for good when the edge is revoked, which drops the keys it holds. Read on every
/// request, so lock-free (`ArcSwapOption`: a load writes no cache line other
/// threads read, unlike a lock's reader count).
#[derive(Debug, Default)]
pub(crate) struct Serving {
    slot: ArcSwapOption<Served>,
    /// Revoked: nothing is served or built again.
    closed: AtomicBool,
}

#[derive(Debug)]
struct Served {
    app: EdgeApp,
    coffer: Arc<Coffer>,
}

impl Serving {
    /// Hands `req` to what is served; `None` (and `req` dropped) if nothing is.
    fn answer<B>(&self, req: axum::http::Request<B>) -> Option<EdgeFuture>
    where
        B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        self.slot
            .load()
            .as_ref()
            .map(|served| served.app.answer(req))
    }

    pub(crate) fn coffer(&self) -> Option<Arc<Coffer>> {
        self.slot.load().as_ref().map(|s| s.coffer.clone())
    }

    /// Serves `app` from now on, unless the slot was closed.
    pub(crate) fn set(&self, app: EdgeApp, coffer: Arc<Coffer>) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        self.slot.store(Some(Arc::new(Served { app, coffer })));
        // Closed meanwhile: what was just stored goes too.
        if self.closed.load(Ordering::Acquire) {
            self.slot.store(None);
        }
    }

    /// Drops what is served, for good (requests in flight finish with what they hold).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.slot.store(None);
    }
}

/// The edge's HTTP front. `GET /healthz` (and `HEAD`) is answered here, before any middleware
/// (no request log line for the health checks a load balancer sends every few seconds), and
/// whether or not the replica is ready; every other request goes to the serving side once the
/// first sync has built it, and is answered 503 until then. A plain service rather than a
/// router in front of the router; on the serving side, a runtime read of one binding is not
/// routed at all, everything else is ([`coffer_server::EdgeApp`]).
#[derive(Clone)]
pub(crate) struct Front {
    pub(crate) status: Arc<EdgeStatus>,
    pub(crate) serving: Arc<Serving>,
}

impl<B> Service<axum::http::Request<B>> for Front
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<EdgeFuture, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        // HEAD as well: a load balancer's probe; hyper sends no body for it.
        if matches!(*req.method(), Method::GET | Method::HEAD) && req.uri().path() == "/healthz" {
            return Either::Right(ready(Ok(self.status.report())));
        }
        // One predicate for serving, as `/healthz` and the metric report it; the refusal says
        // why. (Not ready: the router is not built yet, answered below.)
        if !self.status.serves() {
            if self.status.is_revoked() {
                return Either::Right(ready(Ok(ApiError::new(
                    coffer_api::ErrorCode::EdgeRevoked,
                    "this edge node was revoked; it serves nothing and holds no replica",
                )
                .into_response())));
            }
            if let Some(lag) = self.status.cut_off() {
                return Either::Right(ready(Ok(ApiError::new(
                    coffer_api::ErrorCode::Unavailable,
                    format!(
                        "this edge has heard from no upstream for {} s, longer than its --max-staleness; it serves again once one answers",
                        lag.as_secs()
                    ),
                )
                .into_response())));
            }
        }
        match self.serving.answer(req) {
            Some(answer) => Either::Left(answer),
            None => Either::Right(ready(Ok(ApiError::new(
                coffer_api::ErrorCode::Unavailable,
                "this edge has no replica yet (first sync with an upstream in progress); retry later",
            )
            .into_response()))),
        }
    }
}
