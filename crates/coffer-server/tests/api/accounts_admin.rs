//! The instance operator's accounts: create, list, delete (with everything in them), and what
//! other tokens may not do.

use axum::http::Method;
use coffer_api::ErrorCode;
use serde_json::{Value, json};

use crate::support::*;

async fn list_accounts_as(h: &Harness, authorization: &str) -> Vec<Value> {
    let r = h.send_as(Method::GET, V4, Some(authorization), None).await;
    assert_ok_list(&r).0
}

fn ids_of(items: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = items
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// POSTs as `token` under account `b`'s secrets store.
async fn post_in(h: &Harness, token: &IssuedToken, b: &str, rel: &str, body: &Value) -> Resp {
    h.send_as(
        Method::POST,
        &format!("{V4}/{b}/secrets_store{rel}"),
        Some(&token.bearer()),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn the_operator_creates_and_lists_accounts() {
    let h = Harness::new().await;
    let r = h
        .json_abs(Method::POST, V4, &json!({ "name": "team blue" }))
        .await;
    let b = assert_ok(&r);
    let mut keys: Vec<&String> = b.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["created", "id", "name", "secrets_quota"]);
    let b_id = assert_hex_id(&b["id"]);
    assert_eq!(b["name"], json!("team blue"));
    assert_eq!(b["secrets_quota"], Value::Null);
    timestamp(&b["created"]);

    let all = list_accounts_as(&h, &h.bearer()).await;
    let mut expected = vec![h.account.clone(), b_id.clone()];
    expected.sort();
    assert_eq!(ids_of(&all), expected);
    let listed_b = all.iter().find(|a| a["id"] == json!(b_id)).unwrap();
    assert_eq!(listed_b, &b);
    let got = assert_ok(&h.raw_abs(Method::GET, &account_uri(&b_id), None, "").await);
    assert_eq!(got, b);

    // A new account starts empty, with the default quota.
    let t = h.issue_token(&b_id, "first", "super_admin").await;
    let r = h
        .get_as(&t.value, &format!("{V4}/{b_id}/secrets_store/stores"))
        .await;
    assert!(assert_ok_list(&r).0.is_empty());
    let r = h
        .get_as(&t.value, &format!("{V4}/{b_id}/secrets_store/quota"))
        .await;
    assert_eq!(assert_ok(&r)["secrets"]["usage"], json!(0));
}

#[tokio::test]
async fn bad_account_names_are_refused() {
    let h = Harness::new().await;
    let before = h.identity_snapshot().await;
    for name in [
        String::new(),
        "  ".into(),
        "a\nb".into(),
        "nul\u{0}".into(),
        "y".repeat(256),
    ] {
        let r = h.json_abs(Method::POST, V4, &json!({ "name": name })).await;
        assert_err_at(&r, ErrorCode::InvalidName, "/name");
    }
    for body in [
        json!({}),
        json!({ "name": 5 }),
        json!({ "name": "x", "id": "y" }),
    ] {
        let r = h.json_abs(Method::POST, V4, &body).await;
        assert_err(&r, ErrorCode::InvalidField, "");
    }
    assert_eq!(h.identity_snapshot().await, before);
}

#[tokio::test]
async fn deleting_an_account_deletes_its_tokens_stores_and_secrets() {
    let h = Harness::new().await;
    // A holds data of its own.
    let a_store = h.create_store("a-store").await;
    h.create_secret(&a_store, "A_SECRET", "a-value").await;
    let a_reporter = h
        .issue_token(&h.account, "a reporter", "secrets_store_reporter")
        .await;

    let b = h.create_account("b").await;
    let b_admin = h.issue_token(&b, "b admin", "super_admin").await;
    let b_reporter = h
        .issue_token_by(&b_admin, &b, "b reporter", "secrets_store_reporter")
        .await;
    let r = post_in(&h, &b_admin, &b, "/stores", &json!({ "name": "b-store" })).await;
    let b_store = assert_hex_id(&assert_ok(&r)["id"]);
    let r = post_in(
        &h,
        &b_admin,
        &b,
        &format!("/stores/{b_store}/secrets"),
        &json!([
            secret_item("B1", "b-value-1", &["workers"]),
            secret_item("B2", "b-value-2", &["ai_gateway"]),
        ]),
    )
    .await;
    let b_secret = assert_hex_id(&assert_ok(&r)[0]["id"]);
    // B's tokens have been used, so their last-used times wait in memory for a flush.
    assert_ok_list(
        &h.get_as(&b_reporter.value, &format!("{V4}/{b}/secrets_store/stores"))
            .await,
    );

    let a_before = h.snapshot().await;
    let head = a_before.head;

    let r = h.raw_abs(Method::DELETE, &account_uri(&b), None, "").await;
    assert_deleted(&r);
    assert!(
        h.change_head().await > head,
        "the deletion is in the change log"
    );

    // B's tokens stop working at once, everywhere.
    for t in [&b_admin, &b_reporter] {
        for uri in [
            format!("{V4}/{b}/secrets_store/stores"),
            account_uri(&b),
            tokens_uri(&b, None),
            V4.to_owned(),
        ] {
            let r = h.get_as(&t.value, &uri).await;
            assert_err(&r, ErrorCode::Unauthenticated, "invalid API token");
        }
    }
    // B and everything in it is gone, for the operator too.
    for uri in [
        account_uri(&b),
        tokens_uri(&b, None),
        tokens_uri(&b, Some(&b_admin.id)),
        format!("{V4}/{b}/secrets_store/stores"),
        format!("{V4}/{b}/secrets_store/stores/{b_store}"),
        format!("{V4}/{b}/secrets_store/stores/{b_store}/secrets"),
        format!("{V4}/{b}/secrets_store/stores/{b_store}/secrets/{b_secret}"),
        format!("{V4}/{b}/secrets_store/quota"),
    ] {
        let r = h.raw_abs(Method::GET, &uri, None, "").await;
        assert_err(&r, ErrorCode::AccountNotFound, "account");
    }
    // Nor can tokens be made in it.
    let r = h
        .json_abs(
            Method::POST,
            &tokens_uri(&b, None),
            &json!({ "name": "late", "role": "super_admin" }),
        )
        .await;
    assert_err(&r, ErrorCode::AccountNotFound, "account");
    assert_eq!(
        ids_of(&list_accounts_as(&h, &h.bearer()).await),
        [h.account.as_str()]
    );

    // A is untouched: its data, its tokens.
    let a_after = h.snapshot().await;
    assert_eq!(
        (&a_after.stores, &a_after.secrets, a_after.quota),
        (&a_before.stores, &a_before.secrets, a_before.quota)
    );
    assert_ok_list(&use_as(&h, &a_reporter).await);

    // Flushing last-used times of tokens that are gone is no error.
    h.coffer.flush_token_usage().await.unwrap();

    // Deleting it again: not found, nothing written.
    let head = h.change_head().await;
    let r = h.raw_abs(Method::DELETE, &account_uri(&b), None, "").await;
    assert_err(&r, ErrorCode::AccountNotFound, "account");
    assert_eq!(h.change_head().await, head);
}

async fn use_as(h: &Harness, t: &IssuedToken) -> Resp {
    h.get_as(&t.value, &h.api("/stores")).await
}

#[tokio::test]
async fn the_operators_own_account_cannot_be_deleted() {
    let h = Harness::new().await;
    let store = h.create_store("keep").await;
    h.create_secret(&store, "KEEP", "keep-value").await;
    h.create_account("other").await;
    let before = (h.snapshot().await, h.identity_snapshot().await);
    let r = h
        .raw_abs(Method::DELETE, &account_uri(&h.account), None, "")
        .await;
    assert_err(&r, ErrorCode::OperatorProtected, "cannot be deleted");
    assert_eq!((h.snapshot().await, h.identity_snapshot().await), before);
    assert_ok_list(&h.get("/stores").await);
}

#[tokio::test]
async fn deleting_a_missing_account_is_not_found() {
    let h = Harness::new().await;
    let before = (h.snapshot().await, h.identity_snapshot().await);
    let r = h
        .raw_abs(Method::DELETE, &account_uri(&random_id()), None, "")
        .await;
    assert_err(&r, ErrorCode::AccountNotFound, "account");
    let r = h
        .raw_abs(Method::DELETE, &account_uri("not-an-id"), None, "")
        .await;
    assert_err_at(&r, ErrorCode::InvalidId, "account_id");
    assert_eq!((h.snapshot().await, h.identity_snapshot().await), before);
}

#[tokio::test]
async fn a_super_admin_is_no_operator() {
    let h = Harness::new().await;
    let b = h.create_account("b").await;
    let a_admin = h.issue_token(&h.account, "a admin", "super_admin").await;
    let b_admin = h.issue_token(&b, "b admin", "super_admin").await;
    let before = (h.snapshot().await, h.identity_snapshot().await);

    // Each sees its own account only.
    let mine = list_accounts_as(&h, &a_admin.bearer()).await;
    assert_eq!(ids_of(&mine), [h.account.as_str()]);
    let theirs = list_accounts_as(&h, &b_admin.bearer()).await;
    assert_eq!(ids_of(&theirs), [b.as_str()]);
    let r = h
        .send_as(Method::GET, V4, Some(&b_admin.bearer()), None)
        .await;
    assert!(!contains(&r.bytes, h.account.as_bytes()));

    // Neither creates accounts, nor deletes or re-quotas its own.
    for t in [&a_admin, &b_admin] {
        let r = h
            .send_as(
                Method::POST,
                V4,
                Some(&t.bearer()),
                Some(&json!({ "name": "mine" })),
            )
            .await;
        assert_err(&r, ErrorCode::Forbidden, "instance:operator");
    }
    for (t, own) in [(&a_admin, &h.account), (&b_admin, &b)] {
        let r = h
            .send_as(Method::DELETE, &account_uri(own), Some(&t.bearer()), None)
            .await;
        assert_err(&r, ErrorCode::Forbidden, "instance:operator");
        let r = h
            .send_as(
                Method::PATCH,
                &account_uri(own),
                Some(&t.bearer()),
                Some(&json!({ "secrets_quota": 1_000_000 })),
            )
            .await;
        assert_err(&r, ErrorCode::Forbidden, "instance:operator");
    }
    assert_eq!((h.snapshot().await, h.identity_snapshot().await), before);
    // B still exists and its super_admin still works.
    let r = h.get_as(&b_admin.value, &account_uri(&b)).await;
    assert_eq!(assert_ok(&r)["id"], json!(b));
}
