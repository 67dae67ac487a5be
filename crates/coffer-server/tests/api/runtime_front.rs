//! An edge's runtime read answered before its router (`coffer_server::EdgeApp`): every request
//! gets exactly the answer the router gives it (status, headers, body, access counts, metrics),
//! and only `GET /runtime/v1/bindings/NAME` with a plain name skips the router.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::routing::get;
use coffer_core::RuntimeStats;
use coffer_server::{AppState, EdgeApp, TrustedProxies, edge_app, edge_router};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use crate::support::*;

struct World {
    h: Harness,
    token: String,
}

/// A service `app` (type `workers`) binding `ONE` (a `workers` secret), `GW` (a secret without
/// the `workers` scope) and `GONE` (a secret deleted after the deploy).
async fn world() -> World {
    let h = Harness::new().await;
    let store = h.create_store("front").await;
    let made = h
        .create_secrets(
            &store,
            &[
                secret_item("one", "value-one", &["workers"]),
                secret_item("gw-only", "value-gw", &["workers"]),
                secret_item("gone", "value-gone", &["workers"]),
            ],
        )
        .await;
    let svc = h
        .deploy_ok(&json!({
            "name": "app",
            "secrets_store_secrets": [
                secret_binding("ONE", &store, "one"),
                secret_binding("GW", &store, "gw-only"),
                secret_binding("GONE", &store, "gone"),
            ],
        }))
        .await;
    // Bound while it had the scope, then the scope taken away.
    let gw = made[1]["id"].as_str().unwrap();
    let r = h
        .patch(
            &format!("/stores/{store}/secrets/{gw}"),
            &json!({ "scopes": ["ai_gateway"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let gone = made[2]["id"].as_str().unwrap();
    assert_deleted(&h.delete(&format!("/stores/{store}/secrets/{gone}")).await);
    World {
        token: svc.token().to_owned(),
        h,
    }
}

#[derive(Debug, PartialEq)]
struct Answer {
    status: StatusCode,
    /// Without `Content-Length`, which is `length`.
    headers: HeaderMap,
    /// The `Content-Length` header, or the body's exact length, from which hyper writes the
    /// same header where the answer has none.
    length: Option<u64>,
    body: Vec<u8>,
    /// What the read added to the runtime counters (served, denied, not found).
    counted: [u64; 3],
}

fn state(h: &Harness, metrics: Option<Arc<coffer_metrics::Metrics>>) -> AppState {
    AppState::with_metrics(
        h.coffer.clone(),
        None,
        TrustedProxies::default(),
        None,
        metrics,
    )
}

fn healthz() -> axum::routing::MethodRouter<AppState> {
    get(|| async { "healthy" })
}

fn counted(s: RuntimeStats) -> [u64; 3] {
    [s.served, s.denied, s.not_found]
}

/// `method uri` with `authorization` (and a fixed request id, so that answers compare whole),
/// from a peer address of its own: the failed-authentication limit, counted per address, does
/// not turn later cases' 401s into 429s.
fn request(method: &Method, uri: &str, authorization: Option<&str>) -> Request<Body> {
    static PEER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let peer = PEER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-request-id", "same-id-for-both");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let mut req = req.body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            std::net::Ipv4Addr::from(0x0a00_0000 | peer),
            40000,
        ))));
    req
}

async fn answer<S>(h: &Harness, app: S, req: Request<Body>) -> Answer
where
    S: tower::Service<
            Request<Body>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        >,
{
    let before = counted(h.coffer.runtime_stats());
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let mut headers = res.headers().clone();
    let length = match headers.remove("content-length") {
        Some(given) => Some(given.to_str().unwrap().parse().unwrap()),
        None => axum::body::HttpBody::size_hint(res.body()).exact(),
    };
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    let after = counted(h.coffer.runtime_stats());
    Answer {
        status,
        headers,
        length,
        body,
        counted: [0, 1, 2].map(|i| after[i] - before[i]),
    }
}

/// Every case: (method, path, authorization).
fn cases(w: &World) -> Vec<(Method, String, Option<String>)> {
    let svc = format!("Bearer {}", w.token);
    let mut out = Vec::new();
    let reads = [
        "/runtime/v1/bindings/ONE",         // served
        "/runtime/v1/bindings/GW",          // 403: the secret lacks the service's scope
        "/runtime/v1/bindings/GONE",        // 404: the bound secret was deleted
        "/runtime/v1/bindings/NOPE",        // 404: no such binding
        "/runtime/v1/bindings/ONE?x=1",     // a query string is ignored
        "/runtime/v1/bindings/bad-name.x~", // a name that cannot be a binding
        "/runtime/v1/bindings/%4FNE",       // percent-encoded: the router decodes it
        "/runtime/v1/bindings/%FF",         // not UTF-8 once decoded
        "/runtime/v1/bindings/ONE/",        // trailing slash
        "/runtime/v1/bindings/",            // no name
        "/runtime/v1/bindings/ONE/more",    // more segments
        "/runtime/v1/bindings",             // the batch read
        "/runtime/v1/bindingsONE",
    ];
    for path in reads {
        for auth in [
            Some(svc.clone()),
            None,                         // 401: missing
            Some("Basic abc".to_owned()), // 401: not Bearer
            Some(format!(
                "Bearer coffersvc_{}_{}",
                random_id(),
                "A".repeat(43)
            )), // 401: unknown
            Some(w.h.bearer()),           // 403: an API token
        ] {
            for method in [Method::GET, Method::HEAD, Method::POST, Method::DELETE] {
                out.push((method, path.to_owned(), auth.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_edge_app_answers_every_request_as_the_router_does() {
    let w = world().await;
    let routed = edge_router(state(&w.h, None), healthz());
    let app = edge_app(state(&w.h, None), healthz());
    let cases = cases(&w);
    for (method, path, auth) in &cases {
        let via_router = answer(&w.h, routed.clone(), request(method, path, auth.as_deref())).await;
        let via_app = answer(&w.h, app.clone(), request(method, path, auth.as_deref())).await;
        assert_eq!(via_app, via_router, "{method} {path} ({auth:?})");
    }
    // The cases cover what a read can be told.
    let statuses: std::collections::BTreeSet<u16> = {
        let mut s = std::collections::BTreeSet::new();
        for (method, path, auth) in &cases {
            let a = answer(&w.h, app.clone(), request(method, path, auth.as_deref())).await;
            s.insert(a.status.as_u16());
        }
        s
    };
    for status in [200, 401, 403, 404, 405] {
        assert!(
            statuses.contains(&status),
            "{status} not covered: {statuses:?}"
        );
    }
}

/// The router behind the app answers 418 to everything: what is not 418 was answered before it.
#[tokio::test]
async fn only_a_get_of_one_plainly_named_binding_skips_the_router() {
    let w = world().await;
    let teapot = Router::new().fallback(|| async { StatusCode::IM_A_TEAPOT });
    let app = EdgeApp::new(teapot, state(&w.h, None));
    let svc = format!("Bearer {}", w.token);
    for (method, path, fast) in [
        (Method::GET, "/runtime/v1/bindings/ONE", true),
        (Method::GET, "/runtime/v1/bindings/NOPE", true),
        (Method::GET, "/runtime/v1/bindings/ONE?x=1", true),
        (Method::GET, "/runtime/v1/bindings/bad-name.x~", true),
        (Method::HEAD, "/runtime/v1/bindings/ONE", false),
        (Method::POST, "/runtime/v1/bindings/ONE", false),
        (Method::GET, "/runtime/v1/bindings/%4FNE", false),
        (Method::GET, "/runtime/v1/bindings/ONE/", false),
        (Method::GET, "/runtime/v1/bindings/", false),
        (Method::GET, "/runtime/v1/bindings", false),
        (Method::GET, "/runtime/v1/stores/ALL/secrets/one", false),
        (Method::GET, "/healthz", false),
    ] {
        let a = answer(&w.h, app.clone(), request(&method, path, Some(&svc))).await;
        assert_eq!(
            a.status != StatusCode::IM_A_TEAPOT,
            fast,
            "{method} {path}: {}",
            a.status
        );
    }
    let a = answer(
        &w.h,
        app.clone(),
        request(&Method::GET, "/runtime/v1/bindings/ONE", Some(&svc)),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, b"value-one");
    assert_eq!(a.headers["cache-control"], "no-store");
    assert_eq!(a.headers["x-request-id"], "same-id-for-both");
    assert_eq!(
        a.counted,
        [1, 0, 0],
        "the read is counted for the audit log"
    );
}

/// With metrics, a read answered before the router is counted under its route's template, as
/// the router's frame counts it.
#[tokio::test]
async fn reads_before_the_router_are_counted_under_the_route_template() {
    let w = world().await;
    let scrape = |m: &coffer_metrics::Metrics| {
        m.encode()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("coffer_http_request_duration_seconds_count"))
            .map(str::to_owned)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let svc = format!("Bearer {}", w.token);
    let mut seen = Vec::new();
    for app in [true, false] {
        let metrics = Arc::new(coffer_metrics::Metrics::new());
        let state = state(&w.h, Some(metrics.clone()));
        for (path, auth) in [
            ("/runtime/v1/bindings/ONE", Some(svc.as_str())),
            ("/runtime/v1/bindings/NOPE", Some(svc.as_str())),
            ("/runtime/v1/bindings/ONE", None),
        ] {
            let req = request(&Method::GET, path, auth);
            if app {
                answer(&w.h, edge_app(state.clone(), healthz()), req).await;
            } else {
                answer(&w.h, edge_router(state.clone(), healthz()), req).await;
            }
        }
        seen.push(scrape(&metrics));
    }
    assert_eq!(seen[0], seen[1]);
    assert!(
        seen[0]
            .iter()
            .any(|l| l.contains(r#"route="/runtime/v1/bindings/:binding""#)),
        "{:?}",
        seen[0]
    );
}
