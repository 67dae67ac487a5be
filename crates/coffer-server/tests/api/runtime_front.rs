//! An edge's runtime read answered before its router (`coffer_server::EdgeApp`): every request
//! gets exactly the answer the router gives it (status, headers, body, access counts, metrics),
//! and only `GET /runtime/v1/bindings/NAME` with a plain name skips the router.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::routing::get;
use coffer_core::RuntimeStats;
use coffer_server::{AppState, EdgeApp, RuntimeRate, TrustedProxies, edge_app, edge_router};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use crate::support::*;

struct World {
    h: Harness,
    token: String,
    /// A service token of another service, revoked by a rotation.
    revoked: String,
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
    let other = h
        .deploy_ok(&json!({
            "name": "other",
            "secrets_store_secrets": [secret_binding("ONE", &store, "one")],
        }))
        .await;
    h.rotate(&other.id, None).await;
    World {
        token: svc.token().to_owned(),
        revoked: other.token().to_owned(),
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
    rated_state(h, metrics, None)
}

fn rated_state(
    h: &Harness,
    metrics: Option<Arc<coffer_metrics::Metrics>>,
    rate: Option<RuntimeRate>,
) -> AppState {
    AppState::with_metrics(
        h.coffer.clone(),
        None,
        TrustedProxies::default(),
        rate,
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
    request_with_id(method, uri, authorization, "same-id-for-both")
}

fn request_with_id(
    method: &Method,
    uri: &str,
    authorization: Option<&str>,
    id: &str,
) -> Request<Body> {
    static PEER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let peer = PEER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-request-id", id);
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
        "/runtime/v1/bindings/..", // dot segments are names here
        "/runtime/v1/bindings/.",
        "/runtime/v1/bindings/ONE;x=1", // a path parameter is part of the name
        "/runtime/v1/bindings/{binding}", // the route's template, literally
        "/runtime/v1/bindings/caf%C3%A9", // non-ASCII, encoded
        "/runtime/v1/bindings/café",    // non-ASCII, raw
        "http://odd.example:1/runtime/v1/bindings/ONE", // absolute form
        "http://odd.example:1/runtime/v1/bindings/NOPE",
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
            Some(format!("Bearer {}", w.revoked)), // 401: revoked
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
    // The cases cover what a read can be told.
    let mut statuses = std::collections::BTreeSet::new();
    for (method, path, auth) in &cases {
        let via_router = answer(&w.h, routed.clone(), request(method, path, auth.as_deref())).await;
        let via_app = answer(&w.h, app.clone(), request(method, path, auth.as_deref())).await;
        assert_eq!(via_app, via_router, "{method} {path} ({auth:?})");
        statuses.insert(via_app.status.as_u16());
    }
    // An odd `Host` (the name is the path's either way).
    for host in ["odd.example:1", "[::1]", "a..b"] {
        let ask = || {
            let mut req = request(
                &Method::GET,
                "/runtime/v1/bindings/ONE",
                Some(&format!("Bearer {}", w.token)),
            );
            req.headers_mut().insert("host", host.parse().unwrap());
            req
        };
        let via_router = answer(&w.h, routed.clone(), ask()).await;
        let via_app = answer(&w.h, app.clone(), ask()).await;
        assert_eq!(via_app, via_router, "Host: {host}");
        assert_eq!(via_app.status, StatusCode::OK, "Host: {host}");
    }
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
    for via_app in [true, false] {
        let metrics = Arc::new(coffer_metrics::Metrics::new());
        let state = state(&w.h, Some(metrics.clone()));
        for (path, auth) in [
            ("/runtime/v1/bindings/ONE", Some(svc.as_str())),
            ("/runtime/v1/bindings/NOPE", Some(svc.as_str())),
            ("/runtime/v1/bindings/ONE", None),
        ] {
            let req = request(&Method::GET, path, auth);
            if via_app {
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

/// A token over its read rate is refused alike (429, `Retry-After`), before the router and
/// through it.
#[tokio::test]
async fn a_token_over_its_read_rate_is_refused_as_the_router_refuses_it() {
    let w = world().await;
    let svc = format!("Bearer {}", w.token);
    let rate = || {
        Some(RuntimeRate {
            per_second: std::num::NonZeroU32::new(1).unwrap(),
        })
    };
    // Each side its own limiter: the same sequence of answers.
    let routed = edge_router(rated_state(&w.h, None, rate()), healthz());
    let app = edge_app(rated_state(&w.h, None, rate()), healthz());
    let mut seen = Vec::new();
    for _ in 0..3 {
        let via_router = answer(
            &w.h,
            routed.clone(),
            request(&Method::GET, "/runtime/v1/bindings/ONE", Some(&svc)),
        )
        .await;
        let via_app = answer(
            &w.h,
            app.clone(),
            request(&Method::GET, "/runtime/v1/bindings/ONE", Some(&svc)),
        )
        .await;
        assert_eq!(via_app, via_router);
        seen.push(via_app.status);
    }
    assert_eq!(seen[0], StatusCode::OK);
    assert_eq!(seen[2], StatusCode::TOO_MANY_REQUESTS, "{seen:?}");
}

/// The request lines of reads answered before the router are the router's: the same route,
/// path, status and `token_id` (on a success too: this test binary logs at TRACE, as
/// `--access-log` does), and a refusal past the read rate names the token that verified.
#[tokio::test]
async fn reads_before_the_router_are_logged_as_routed_reads_are() {
    let logs = crate::secrecy::captured_logs();
    let w = world().await;
    let svc = format!("Bearer {}", w.token);
    let rate = || {
        Some(RuntimeRate {
            per_second: std::num::NonZeroU32::new(1).unwrap(),
        })
    };
    let token_id = service_token_id(&w.token);
    let tag = random_id();
    let mut lines = Vec::new();
    for via_app in [true, false] {
        let state = rated_state(&w.h, None, rate());
        let mut mine = Vec::new();
        for (i, (path, auth)) in [
            ("/runtime/v1/bindings/ONE", Some(svc.as_str())), // 200
            ("/runtime/v1/bindings/ONE", Some(svc.as_str())), // 429: over the rate
            ("/runtime/v1/bindings/NOPE", None),              // 401
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("{tag}-{via_app}-{i}");
            let req = request_with_id(&Method::GET, path, auth, &id);
            if via_app {
                answer(&w.h, edge_app(state.clone(), healthz()), req).await;
            } else {
                answer(&w.h, edge_router(state.clone(), healthz()), req).await;
            }
            let all = String::from_utf8_lossy(&crate::secrecy::captured(&logs)).into_owned();
            let line = all
                .lines()
                .find(|l| l.contains(&format!("request_id={id}")) && l.contains(" response "))
                .unwrap_or_else(|| panic!("no response line for {id}"))
                .to_owned();
            // What may differ: the time, the latency and the request id.
            let line = line[line.find("request{").unwrap()..]
                .replace(&id, "ID")
                .split(' ')
                .filter(|f| !f.starts_with("latency_us="))
                .collect::<Vec<_>>()
                .join(" ");
            mine.push(line);
        }
        lines.push(mine);
    }
    assert_eq!(lines[0], lines[1]);
    let [ok, limited, unauthenticated] = &lines[0][..] else {
        unreachable!()
    };
    for line in [ok, limited] {
        assert!(line.contains(&format!("token_id={token_id}")), "{line}");
        assert!(
            line.contains("route=/runtime/v1/bindings/{binding}"),
            "{line}"
        );
    }
    assert!(ok.contains("status=200"), "{ok}");
    assert!(limited.contains("status=429"), "{limited}");
    assert!(unauthenticated.contains("status=401"), "{unauthenticated}");
    assert!(!unauthenticated.contains("token_id="), "{unauthenticated}");
}
