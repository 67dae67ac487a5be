//! The runtime read dispatched before the router, on an edge: `GET
//! /runtime/v1/bindings/{binding}` is most of what an edge serves, and routing it (the route
//! table's look-up, the path's parameters, a clone of the route's boxed service per request)
//! cost about as much as the read itself (docs/benchmarks.md, "What the read path change
//! bought"). [`EdgeApp`] answers it with the same frame and the same handler code as the
//! router would ([`crate::frame::framed`], [`crate::runtime::read_binding`]), and hands every
//! other request to the router: a `HEAD`, a path with a percent-encoded byte (which the
//! router's `Path` decodes), an empty name or one followed by more segments, other methods and
//! routes.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::Router;
use axum::http::{Method, Request};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use coffer_metrics::RouteMetrics;
use futures_util::future::Either;
use tower::Service;

use crate::frame::{Framed, RouteName, framed};
use crate::state::AppState;

/// The route's template, as the router names it (in log lines and metrics).
pub(crate) const BINDING_ROUTE: &str = "/runtime/v1/bindings/{binding}";
pub(crate) const BINDING_PREFIX: &str = "/runtime/v1/bindings/";

/// The binding a path names, if the router would route it to [`BINDING_ROUTE`] and its `Path`
/// would decode it to itself: a non-empty last segment without `%`.
pub(crate) fn binding_in(path: &str) -> Option<&str> {
    path.strip_prefix(BINDING_PREFIX)
        .filter(|name| !name.is_empty() && !name.bytes().any(|b| b == b'/' || b == b'%'))
}

/// An edge's application: the runtime read of one binding answered directly, everything else
/// by the edge's router ([`crate::router::edge_router`]). Cheap to clone.
#[derive(Clone)]
pub struct EdgeApp {
    router: Router,
    state: AppState,
    /// The read route's histograms, resolved at its first request (as the router's frame
    /// would, so a scrape shows the route only once it was asked for).
    route_metrics: Arc<OnceLock<Arc<RouteMetrics>>>,
}

impl std::fmt::Debug for EdgeApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeApp").finish_non_exhaustive()
    }
}

/// An [`EdgeApp`]'s answer.
pub type EdgeFuture = Either<Framed<Infallible>, RouteFuture<Infallible>>;

impl EdgeApp {
    /// `router` answers every request but the runtime read of one binding, which is answered
    /// over `state` ([`crate::edge_app`] builds both from one state).
    pub fn new(router: Router, state: AppState) -> EdgeApp {
        EdgeApp {
            router,
            state,
            route_metrics: Arc::default(),
        }
    }

    /// Answers `req`, through `&self` (the router, which needs `&mut`, is cloned only for the
    /// requests it answers).
    pub fn answer<B>(&self, req: Request<B>) -> EdgeFuture
    where
        B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        if req.method() != Method::GET || binding_in(req.uri().path()).is_none() {
            return Either::Right(self.router.clone().call(req));
        }
        let observed = self.state.metrics.as_ref().map(|metrics| {
            self.route_metrics
                .get_or_init(|| metrics.route(BINDING_ROUTE))
                .clone()
        });
        let state = self.state.clone();
        Either::Left(framed(
            req,
            Some(RouteName::Fixed(BINDING_ROUTE)),
            observed,
            move |req| crate::runtime::read_binding_request(state, req),
        ))
    }
}

impl<B> Service<Request<B>> for EdgeApp
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> EdgeFuture {
        self.answer(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_last_segment_names_a_binding() {
        for (path, named) in [
            ("/runtime/v1/bindings/API_KEY", Some("API_KEY")),
            ("/runtime/v1/bindings/bad-name.x~", Some("bad-name.x~")),
            ("/runtime/v1/bindings/%41PI_KEY", None),
            ("/runtime/v1/bindings/API_KEY/", None),
            ("/runtime/v1/bindings/API_KEY/x", None),
            ("/runtime/v1/bindings/", None),
            ("/runtime/v1/bindings", None),
            ("/runtime/v1/bindingsAPI_KEY", None),
            ("/runtime/v1/stores/S/secrets/n", None),
            ("//runtime/v1/bindings/API_KEY", None),
        ] {
            assert_eq!(binding_in(path), named, "{path}");
        }
    }
}
