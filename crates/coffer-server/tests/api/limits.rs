//! Limits and conflicts: the secrets quota, the store limit, name clashes and batch sizes.

use axum::http::Method;
use coffer_api::ErrorCode;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn quota_exceeded_writes_nothing() {
    let fx = fixture_with(Harness::limits(5, 3)).await;
    let h = &fx.h;
    let (s, x) = (&fx.store, &fx.secret);
    // 1 (fixture) + 3 = 4 of 5.
    h.create_secrets(
        s,
        &[
            secret_item("a", "v", &["workers"]),
            secret_item("b", "v", &["workers"]),
            secret_item("c", "v", &["workers"]),
        ],
    )
    .await;
    assert_eq!(h.quota().await, (5, 4));
    let before = h.snapshot().await;

    // A batch of two would cross the quota: neither is written.
    let r = h
        .post(
            &format!("/stores/{s}/secrets"),
            &json!([
                secret_item("d", "v", &["workers"]),
                secret_item("e", "v", &["workers"])
            ]),
        )
        .await;
    let e = assert_err(&r, ErrorCode::QuotaExceeded, "quota");
    assert_eq!(r.status.as_u16(), 400);
    assert!(e["message"].as_str().unwrap().contains('5'), "{e}");
    h.assert_unchanged(&before, "batch over quota").await;

    // One more fits exactly.
    h.create_secret(s, "d", "v").await;
    assert_eq!(h.quota().await, (5, 5));
    let before = h.snapshot().await;

    // At the quota: a create, a duplicate, and a create in another store all fail.
    let r = h
        .post(
            &format!("/stores/{s}/secrets"),
            &json!([secret_item("f", "v", &["workers"])]),
        )
        .await;
    assert_err(&r, ErrorCode::QuotaExceeded, "quota");
    let r = h
        .post(
            &format!("/stores/{s}/secrets/{x}/duplicate"),
            &json!({ "name": "copy", "scopes": ["workers"] }),
        )
        .await;
    assert_err(&r, ErrorCode::QuotaExceeded, "quota");
    h.assert_unchanged(&before, "create and duplicate at quota")
        .await;
    let other = {
        // Creating a store is not limited by the secrets quota.
        let r = h.post("/stores", &json!({ "name": "other" })).await;
        assert_ok(&r)["id"].as_str().unwrap().to_owned()
    };
    let before = h.snapshot().await;
    let r = h
        .post(
            &format!("/stores/{other}/secrets"),
            &json!([secret_item("g", "v", &["workers"])]),
        )
        .await;
    assert_err(&r, ErrorCode::QuotaExceeded, "quota");
    h.assert_unchanged(&before, "create at quota").await;

    // Updating a value at the quota is fine: it adds a version, not a secret.
    let r = h
        .patch(
            &format!("/stores/{s}/secrets/{x}"),
            &json!({ "value": "new" }),
        )
        .await;
    assert_ok(&r);

    // Deleting one makes room again.
    assert_deleted(&h.delete(&format!("/stores/{s}/secrets/{x}")).await);
    h.create_secret(&other, "g", "v").await;
    assert_eq!(h.quota().await, (5, 5));
}

#[tokio::test]
async fn store_limit_exceeded_writes_nothing() {
    let h = Harness::with_limits(Harness::limits(100, 3)).await;
    let first = h.create_store("s1").await;
    h.create_store("s2").await;
    h.create_store("s3").await;
    let before = h.snapshot().await;
    for body in [json!({ "name": "s4" }), json!([{ "name": "s4" }])] {
        let r = h.post("/stores", &body).await;
        let e = assert_err(&r, ErrorCode::StoreLimitExceeded, "3");
        assert_eq!(r.status.as_u16(), 400);
        assert!(e["message"].as_str().unwrap().contains("store"), "{e}");
    }
    h.assert_unchanged(&before, "store limit").await;
    assert_deleted(&h.delete(&format!("/stores/{first}")).await);
    h.create_store("s4").await;
    assert_eq!(assert_ok_list(&h.get("/stores").await).1.3, 3);
}

#[tokio::test]
async fn name_clashes_are_409() {
    let fx = fixture().await;
    let h = &fx.h;
    let (s, x) = (&fx.store, &fx.secret);
    let other = h.create_store("other").await;
    let before = h.snapshot().await;

    let r = h.post("/stores", &json!({ "name": "fixture" })).await;
    let e = assert_err(&r, ErrorCode::StoreNameTaken, "fixture");
    assert_eq!(e["code"], json!(1300));

    let r = h
        .post(
            &format!("/stores/{s}/secrets"),
            &json!([secret_item("EXISTING", "v", &["workers"])]),
        )
        .await;
    let e = assert_err(&r, ErrorCode::SecretNameTaken, "EXISTING");
    assert_eq!(e["code"], json!(1301));

    let r = h
        .post(
            &format!("/stores/{s}/secrets"),
            &json!([
                secret_item("dup", "v", &["workers"]),
                secret_item("other", "v", &["workers"]),
                secret_item("dup", "w", &["dex"]),
            ]),
        )
        .await;
    assert_err_at(&r, ErrorCode::SecretNameTaken, "/2/name");

    let r = h
        .post(
            &format!("/stores/{s}/secrets/{x}/duplicate"),
            &json!({ "name": "EXISTING", "scopes": ["workers"] }),
        )
        .await;
    assert_err(&r, ErrorCode::SecretNameTaken, "EXISTING");
    h.assert_unchanged(&before, "name clashes").await;

    // Names are per store: the same name in another store is fine, and so is a duplicate of
    // the secret into a fresh name.
    h.create_secret(&other, "EXISTING", "v").await;
    // 409s for clashes say a retry will not help.
    let r = h.post("/stores", &json!({ "name": "fixture" })).await;
    assert_eq!(
        r.headers.get("x-should-retry").map(|v| v.to_str().unwrap()),
        Some("false")
    );
}

#[tokio::test]
async fn batch_sizes() {
    let fx = fixture().await;
    let h = &fx.h;
    let s = &fx.store;
    let before = h.snapshot().await;

    let r = h.post(&format!("/stores/{s}/secrets"), &json!([])).await;
    assert_err(&r, ErrorCode::InvalidBatch, "at least one");

    let many: Vec<Value> = (0..1001)
        .map(|i| secret_item(&format!("n{i}"), "v", &["workers"]))
        .collect();
    let r = h
        .post(&format!("/stores/{s}/secrets"), &Value::Array(many))
        .await;
    assert_err(&r, ErrorCode::InvalidBatch, "1000");

    let r = h
        .json(Method::DELETE, &format!("/stores/{s}/secrets"), &json!([]))
        .await;
    assert_err(&r, ErrorCode::InvalidBatch, "1000");
    let ids: Vec<String> = (0..1001).map(|_| random_id()).collect();
    let r = h
        .json(Method::DELETE, &format!("/stores/{s}/secrets"), &json!(ids))
        .await;
    assert_err(&r, ErrorCode::InvalidBatch, "1000");
    let r = h
        .json(
            Method::DELETE,
            &format!("/stores/{s}/secrets"),
            &json!([fx.secret, "not-an-id"]),
        )
        .await;
    assert_err_at(&r, ErrorCode::InvalidId, "/1");

    for body in [json!([]), json!([{ "name": "a" }, { "name": "b" }])] {
        let r = h.post("/stores", &body).await;
        assert_err(&r, ErrorCode::InvalidBatch, "exactly one");
    }
    h.assert_unchanged(&before, "bad batch sizes").await;

    // 1000 is allowed.
    let many: Vec<Value> = (0..1000)
        .map(|i| secret_item(&format!("n{i}"), "v", &["workers"]))
        .collect();
    let created = h.create_secrets(s, &many).await;
    assert_eq!(created.len(), 1000);
    assert_eq!(h.quota().await.1, 1001);
}
