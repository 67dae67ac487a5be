//! The edge's serving side: the slot that holds the runtime API once the first sync built it
//! (emptied for good on revocation), and the HTTP front that answers `/healthz` before anything
//! else and refuses what the edge must not serve.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use axum::Router;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use coffer_core::Coffer;
use coffer_server::ApiError;
use futures_util::future::Either;
use tower::Service;

use crate::status::EdgeStatus;

/// The serving side (the runtime API's router over the replica's `Coffer`), once the first
/// sync built it; emptied for good when the edge is revoked, which drops the keys it holds.
#[derive(Debug, Default)]
pub(crate) struct Serving(RwLock<Slot>);

#[derive(Debug, Default)]
enum Slot {
    #[default]
    Empty,
    Serving(Router, Arc<Coffer>),
    /// Revoked: nothing is served or built again.
    Closed,
}

impl Serving {
    fn slot(&self) -> std::sync::RwLockReadGuard<'_, Slot> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Slot> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn router(&self) -> Option<Router> {
        match &*self.slot() {
            Slot::Serving(router, _) => Some(router.clone()),
            Slot::Empty | Slot::Closed => None,
        }
    }

    pub(crate) fn coffer(&self) -> Option<Arc<Coffer>> {
        match &*self.slot() {
            Slot::Serving(_, coffer) => Some(coffer.clone()),
            Slot::Empty | Slot::Closed => None,
        }
    }

    /// Serves `router` from now on, unless the slot was closed.
    pub(crate) fn set(&self, router: Router, coffer: Arc<Coffer>) {
        let mut slot = self.write();
        if !matches!(*slot, Slot::Closed) {
            *slot = Slot::Serving(router, coffer);
        }
    }

    /// Drops what is served, for good.
    pub(crate) fn close(&self) {
        let closed = std::mem::replace(&mut *self.write(), Slot::Closed);
        drop(closed);
    }
}

/// The edge's HTTP front. `GET /healthz` (and `HEAD`) is answered here, before any middleware
/// (no request log line for the health checks a load balancer sends every few seconds), and
/// whether or not the replica is ready; every other request goes to the serving router once
/// the first sync has built it, and is answered 503 until then. A plain service rather than a
/// router in front of the router: a runtime read is routed once.
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
    type Future = Either<RouteFuture<Infallible>, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        // HEAD as well: a load balancer's probe; hyper sends no body for it.
        if matches!(*req.method(), Method::GET | Method::HEAD) && req.uri().path() == "/healthz" {
            return Either::Right(ready(Ok(self.status.report())));
        }
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
        match self.serving.router() {
            Some(mut router) => Either::Left(router.call(req)),
            None => Either::Right(ready(Ok(ApiError::new(
                coffer_api::ErrorCode::Unavailable,
                "this edge has no replica yet (first sync with an upstream in progress); retry later",
            )
            .into_response()))),
        }
    }
}
