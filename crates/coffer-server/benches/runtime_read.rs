//! What a runtime read costs the server beyond a trivial request, measured in-process: the
//! control plane's router (every middleware layer, request lines written to a sink as the
//! server writes them to stderr: none for a successful runtime read unless
//! BENCH_ACCESS_LOG=1, as `--access-log`) answering `GET /healthz`, the same with the runtime
//! read's `Authorization` header, and `GET /runtime/v1/bindings/KEY`; then the core's part of
//! the read alone (service-token check and the read). No sockets: the difference between rows
//! is the request's own CPU, without the loopback and load-generator noise of
//! `scripts/bench-edge-reads`.
//!
//! Run: `cargo bench -p coffer-server --bench runtime_read`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use coffer_core::RequestContext;
use coffer_server::app;
use http_body_util::BodyExt;
use tower::ServiceExt;

mod common;

const ROUNDS: usize = 200_000;
const VALUE: &str = "sk-bench-0123456789abcdef";

fn summary(name: &str, samples: Vec<Duration>) {
    println!("{name:<28} {}", common::summary(samples));
}

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    bearer: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, axum::body::Bytes) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let mut req = req.body(body).expect("request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    (status, bytes)
}

async fn json(
    router: &axum::Router,
    method: &str,
    uri: &str,
    token: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let (status, bytes) = call(router, method, uri, Some(token), Some(body)).await;
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert!(status.is_success(), "{status}: {v}");
    v
}

async fn rows(router: &axum::Router, name: &str, uri: &str, bearer: Option<&str>) {
    for _ in 0..10_000 {
        call(router, "GET", uri, bearer, None).await;
    }
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let (status, body) = call(router, "GET", uri, bearer, None).await;
        samples.push(start.elapsed());
        assert_eq!(status, StatusCode::OK);
        std::hint::black_box(body);
    }
    summary(name, samples);
}

fn main() {
    // As `coffer server` logs: info, one line per request formatted in full, but none for
    // successful runtime reads unless BENCH_ACCESS_LOG=1 (`--access-log`).
    let access = if std::env::var_os("BENCH_ACCESS_LOG").is_some_and(|v| v == "1") {
        "info"
    } else {
        "off"
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "info,{}={access}",
            coffer_server::ACCESS_LOG_TARGET
        )))
        .with_writer(std::io::sink)
        .init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let common::Fresh { init, coffer, _dir } = common::fresh_data_dir().await;
        let coffer = std::sync::Arc::new(coffer);
        let router = app(coffer.clone());
        let token = init.api_token.expose_secret().to_owned();
        let api = format!("/client/v4/accounts/{}/secrets_store", init.account_id);
        let store = json(
            &router,
            "POST",
            &format!("{api}/stores"),
            &token,
            serde_json::json!({ "name": "bench" }),
        )
        .await["result"]["id"]
            .as_str()
            .expect("store id")
            .to_owned();
        json(
            &router,
            "POST",
            &format!("{api}/stores/{store}/secrets"),
            &token,
            serde_json::json!([{ "name": "openai-key", "value": VALUE, "scopes": ["workers"] }]),
        )
        .await;
        let service = json(
            &router,
            "POST",
            &format!("{api}/services"),
            &token,
            serde_json::json!({ "name": "bench", "secrets_store_secrets": [
                { "binding": "OPENAI_KEY", "store_id": store, "secret_name": "openai-key" }
            ] }),
        )
        .await;
        let svc = service["result"]["service_token"]
            .as_str()
            .expect("service token")
            .to_owned();
        let read = "/runtime/v1/bindings/OPENAI_KEY";
        let (status, body) = call(&router, "GET", read, Some(&svc), None).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, VALUE.as_bytes()));

        for _ in 0..2 {
            rows(&router, "router /healthz", "/healthz", None).await;
            rows(&router, "router /healthz + token", "/healthz", Some(&svc)).await;
            rows(&router, "router runtime read", read, Some(&svc)).await;
        }

        let mut samples = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let who = coffer
                .authenticate_service(&svc, RequestContext::default)
                .await
                .expect("service token");
            let value = coffer.read_binding(&who, "OPENAI_KEY").await.expect("read");
            samples.push(start.elapsed());
            std::hint::black_box(value);
        }
        summary("core: token check + read", samples);
    });
}
