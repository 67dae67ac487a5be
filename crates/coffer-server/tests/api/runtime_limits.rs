//! What the runtime API may cost: batch reads held by slow readers share a bounded budget
//! (503 with `Retry-After` past it), and the optional per-service-token rate limit.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use coffer_api::ErrorCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::*;

/// A service binding 16 secrets of 64 KiB: each batch read holds about 2 MiB (the values and
/// their JSON).
async fn big_service(h: &Harness) -> DeployedService {
    let store = h.create_store("big").await;
    let value = "v".repeat(65_536);
    for half in [0..8, 8..16] {
        let items: Vec<Value> = half
            .map(|i| secret_item(&format!("s{i}"), &value, &["workers"]))
            .collect();
        h.create_secrets(&store, &items).await;
    }
    let bindings: Vec<Value> = (0..16)
        .map(|i| secret_binding(&format!("S{i}"), &store, &format!("s{i}")))
        .collect();
    h.deploy_ok(&json!({ "name": "big", "secrets_store_secrets": bindings }))
        .await
}

fn batch_request(token: &str) -> Request<Body> {
    Request::get("/runtime/v1/bindings")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

/// Batch reads whose bodies nobody reads yet (slow readers) hold their share of the budget;
/// past it the next one is refused 503 with `Retry-After`, and once the held bodies are gone
/// batch reads are served again.
#[tokio::test]
async fn batch_reads_held_by_slow_readers_share_a_bounded_budget() {
    let h = Harness::new().await;
    let svc = big_service(&h).await;
    let budget_mib = coffer_server::BATCH_BUDGET >> 20;
    let mut held = Vec::new();
    let refused = loop {
        assert!(
            held.len() <= budget_mib,
            "{} batch reads of 2 MiB held and none refused: the budget is not enforced",
            held.len()
        );
        let res = h
            .app
            .clone()
            .oneshot(batch_request(svc.token()))
            .await
            .unwrap();
        if res.status() != StatusCode::OK {
            break res;
        }
        held.push(res);
    };
    // About the budget's worth of 2 MiB batches were held before the refusal.
    assert!(
        held.len() >= budget_mib / 4,
        "refused after only {} batch reads",
        held.len()
    );
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.headers().get(header::RETRY_AFTER).unwrap(),
        "1",
        "{:?}",
        refused.headers()
    );
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["errors"][0]["code"], json!(ErrorCode::Unavailable.code()));
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("too many batch reads in flight"),
        "{v}"
    );
    // One held body read to its end, the rest dropped: the budget is back.
    let first = held
        .remove(0)
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let values: serde_json::Map<String, Value> = serde_json::from_slice(&first).unwrap();
    assert_eq!(values.len(), 16);
    drop(held);
    let r = h.runtime(svc.token(), "/bindings").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["S15"].as_str().unwrap().len(), 65_536);
}

/// With `--runtime-rate-limit 1`, a service token reads a second's worth (one read) at once,
/// then gets 429 `read_rate_limited` with `Retry-After` until its bucket refills; another token of
/// the same service has its own bucket, and a token that does not verify is still 401 (the limit
/// is applied to authenticated tokens only). Without the option nothing is limited.
#[tokio::test]
async fn the_runtime_rate_limit_is_per_service_token_and_off_by_default() {
    let mut h = Harness::new().await;
    let store = h.create_store("s").await;
    h.create_secret(&store, "k", "the-value").await;
    let svc = h.deploy_secrets("app", &[("K", &store, "k")]).await;
    // Off by default: many reads, none refused.
    for _ in 0..50 {
        assert_eq!(h.read_value(svc.token(), "K").await, "the-value");
    }
    h.app = app(
        h.coffer.clone(),
        coffer_server::AppOptions {
            runtime_rate: Some(coffer_server::RuntimeRate {
                per_second: std::num::NonZeroU32::new(1).unwrap(),
            }),
            ..Default::default()
        },
    );
    assert_eq!(h.read_value(svc.token(), "K").await, "the-value");
    let r = h.read_binding(svc.token(), "K").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.headers.get(header::RETRY_AFTER).unwrap(), "1");
    let v = r.json();
    assert_eq!(
        v["errors"][0]["code"],
        json!(ErrorCode::ReadRateLimited.code())
    );
    assert!(!r.text().contains("the-value"));
    // The batch read and store reads share the token's bucket.
    let r = h.runtime(svc.token(), "/bindings").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    // Another token of the same service reads on.
    let rotated = h.rotate(&svc.id, None).await;
    let other = rotated["service_token"].as_str().unwrap();
    assert_eq!(h.read_value(other, "K").await, "the-value");
    // A token that does not verify is refused for what it is.
    let forged = format!(
        "{}{}",
        &svc.token()[..svc.token().len() - 43],
        "A".repeat(43)
    );
    let r = h.read_binding(&forged, "K").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
}
