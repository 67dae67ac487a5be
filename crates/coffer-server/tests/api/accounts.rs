//! `/client/v4/accounts/{account_id}`: reading an account and the operator's quota override.

use axum::http::Method;
use coffer_api::ErrorCode;
use serde_json::{Value, json};

use crate::support::*;

async fn patch_account(h: &Harness, body: &Value) -> Resp {
    let uri = format!("/client/v4/accounts/{}", h.account);
    h.json_abs(Method::PATCH, &uri, body).await
}

#[tokio::test]
async fn the_quota_override_applies_and_clears() {
    let h = Harness::with_limits(Harness::limits(50, 10)).await;
    let uri = format!("/client/v4/accounts/{}", h.account);
    let account = assert_ok(&h.raw_abs(Method::GET, &uri, None, "").await);
    assert_eq!(account["id"], json!(h.account));
    assert_eq!(account["secrets_quota"], Value::Null);
    assert_eq!(h.quota().await, (50, 0));

    let account = assert_ok(&patch_account(&h, &json!({ "secrets_quota": 2 })).await);
    assert_eq!(account["secrets_quota"], json!(2));
    assert_eq!(h.quota().await, (2, 0));
    let store = h.create_store("s").await;
    h.create_secret(&store, "a", "v1").await;
    h.create_secret(&store, "b", "v2").await;
    let refused = h
        .post(
            &format!("/stores/{store}/secrets"),
            &json!([secret_item("c", "v3", &["workers"])]),
        )
        .await;
    assert_err(&refused, ErrorCode::QuotaExceeded, "quota");

    // An empty PATCH changes nothing; null returns to the server default.
    let account = assert_ok(&patch_account(&h, &json!({})).await);
    assert_eq!(account["secrets_quota"], json!(2));
    let account = assert_ok(&patch_account(&h, &json!({ "secrets_quota": null })).await);
    assert_eq!(account["secrets_quota"], Value::Null);
    assert_eq!(h.quota().await, (50, 2));
    h.create_secret(&store, "c", "v3").await;
}

#[tokio::test]
async fn bad_quota_updates_name_the_field_and_change_nothing() {
    let h = Harness::new().await;
    assert_ok(&patch_account(&h, &json!({ "secrets_quota": 9 })).await);
    let before = h.snapshot().await;
    for body in [
        json!({ "secrets_quota": -1 }),
        json!({ "secrets_quota": "5" }),
        json!({ "secrets_quota": 1.5 }),
        json!({ "secrets_quota": 9_223_372_036_854_775_808u64 }),
        json!({ "quota": 5 }),
        json!([5]),
    ] {
        let r = patch_account(&h, &body).await;
        assert_err(&r, ErrorCode::InvalidField, "");
        let pointer = r.json()["errors"][0]["source"]["pointer"]
            .as_str()
            .map(str::to_owned);
        assert!(
            matches!(
                pointer.as_deref(),
                Some("/secrets_quota" | "/quota" | "body")
            ),
            "{body}: {pointer:?}"
        );
    }
    h.assert_unchanged(&before, "bad quota updates").await;
    assert_eq!(h.quota().await.0, 9);
}

#[tokio::test]
async fn another_account_is_not_found() {
    let h = Harness::new().await;
    let uri = format!("/client/v4/accounts/{}", random_id());
    let r = h.raw_abs(Method::GET, &uri, None, "").await;
    assert_err(&r, ErrorCode::AccountNotFound, "account");
    let r = h
        .json_abs(Method::PATCH, &uri, &json!({ "secrets_quota": 1 }))
        .await;
    assert_err(&r, ErrorCode::AccountNotFound, "account");
}
