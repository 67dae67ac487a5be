//! The runtime read dispatched before the router, on an edge: `GET
//! /runtime/v1/bindings/{binding}` is most of what an edge serves, and routing it (the route
//! table's look-up, the path's parameters, a clone of the route's boxed service per request)
//! cost about as much as the read itself (docs/benchmarks.md, "What the read path change
//! bought"). [`EdgeApp`] answers it in the same frame ([`crate::frame::framed`]) and with the
//! same body as the routed handler ([`crate::runtime::read_binding_parts`], which
//! [`crate::runtime::read_binding`] only wraps), but without the route's layers: a layer put on
//! that route, or on the router, does not apply to the reads answered here (`router.rs` says
//! so at the route). Every other request goes to the router: a `HEAD`, a path with a
//! percent-encoded byte (which the router's `Path` decodes), an empty name or one followed by
//! more segments, other methods and routes.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::Router;
use axum::http::{Method, Request, Uri};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use coffer_metrics::RouteMetrics;
use futures_util::future::Either;
use tower::Service;

use crate::frame::{Framed, framed};
use crate::request_log::{AccessLogged, RouteName};
use crate::state::AppState;

/// The read route's path up to its parameter; one literal for both constants below.
macro_rules! binding_prefix {
    () => {
        "/runtime/v1/bindings/"
    };
}

/// The route's template: the router's route (`router.rs`) and the name in log lines and
/// metrics.
pub(crate) const BINDING_ROUTE: &str = concat!(binding_prefix!(), "{binding}");
/// What precedes the name in a path [`BINDING_ROUTE`] matches.
const BINDING_PREFIX: &str = binding_prefix!();

/// The binding a path names, if the router would route it to [`BINDING_ROUTE`] and its `Path`
/// would decode it to itself: a non-empty last segment without `%`.
fn binding_in(path: &str) -> Option<&str> {
    path.strip_prefix(BINDING_PREFIX)
        .filter(|name| !name.is_empty() && !name.bytes().any(|b| b == b'/' || b == b'%'))
}

/// The URI of a read answered before the router, checked once ([`binding_in`]): its name is
/// the path after [`BINDING_PREFIX`], no more parsing needed. (A copy of the URI, which counts
/// references to the request's bytes, so that the name outlives the request's parts, which
/// the token check borrows.)
struct BindingUri(Uri);

impl BindingUri {
    fn parse(uri: &Uri) -> Option<BindingUri> {
        binding_in(uri.path()).map(|_| BindingUri(uri.clone()))
    }

    fn name(&self) -> &str {
        &self.0.path()[BINDING_PREFIX.len()..]
    }
}

/// [`crate::runtime::read_binding`] for a request answered before the router.
async fn read_binding<B>(
    app: AppState,
    req: Request<B>,
    binding: BindingUri,
    access: AccessLogged,
) -> Result<Response, Infallible> {
    // A GET's body is not read; the router's handler drops it unread as well.
    let (mut parts, _body) = req.into_parts();
    // No `Content-Length` header as the router's route future adds: hyper writes the same one
    // from the body's exact length, without the allocation a header value costs.
    Ok(crate::runtime::read_binding_parts(
        &app,
        &mut parts,
        access,
        Ok(Cow::Borrowed(binding.name())),
    )
    .await)
}

/// An edge's application: the runtime read of one binding answered directly, everything else
/// by the edge's router ([`crate::router::edge_router`]). Cheap to clone. Built by
/// [`crate::edge_app`]; [`EdgeApp::new`] with another router, and this type as a
/// [`tower::Service`], are for tests (the edge calls [`EdgeApp::answer`]).
#[derive(Clone)]
pub struct EdgeApp {
    router: Router,
    state: AppState,
    /// The read route's histograms, resolved once, at its first request. The router's frame
    /// resolves a route's histograms per request (`Metrics::route`, a look-up under a lock),
    /// as it learns the route only then; this route is fixed, so the look-up is saved. Lazily,
    /// as the frame would, so a scrape shows the route only once it was asked for.
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
    /// over `state` ([`crate::edge_app`] builds both from one state). For tests: the edge uses
    /// [`crate::edge_app`].
    #[doc(hidden)]
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
        let binding = match BindingUri::parse(req.uri()) {
            Some(binding) if req.method() == Method::GET => binding,
            _ => return Either::Right(self.router.clone().call(req)),
        };
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
            move |req, access| read_binding(state, req, binding, access),
        ))
    }
}

/// For tests (`oneshot`); the edge calls [`EdgeApp::answer`].
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
    fn the_prefix_is_the_route_up_to_its_parameter() {
        assert_eq!(
            BINDING_ROUTE.strip_suffix("{binding}"),
            Some(BINDING_PREFIX)
        );
        let uri: Uri = "/runtime/v1/bindings/API_KEY?x=1".parse().unwrap();
        assert_eq!(BindingUri::parse(&uri).unwrap().name(), "API_KEY");
    }

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
