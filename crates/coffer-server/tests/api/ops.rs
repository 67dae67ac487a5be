//! The happy path of each of the 12 operations, with the v4 envelope checked exactly.

use axum::http::Method;
use serde_json::{Value, json};

use crate::support::*;

/// A store with one secret, and the secret's value (which must never come back).
async fn fixture(h: &Harness) -> (String, Value, String) {
    let store = h.create_store("prod").await;
    let value = format!("v4lue-{}", random_tag());
    let secret = h
        .create_secrets(
            &store,
            &[json!({
                "name": "API_KEY",
                "value": value,
                "scopes": ["workers"],
                "comment": "the key"
            })],
        )
        .await
        .remove(0);
    (store, secret, value)
}

#[track_caller]
fn assert_no_value(r: &Resp, value: &str) {
    assert!(
        !contains(&r.bytes, value.as_bytes()),
        "the value leaked into a response: {}",
        r.text()
    );
}

#[tokio::test]
async fn op01_list_stores() {
    let h = Harness::new().await;
    let (items, info) = assert_ok_list(&h.get("/stores").await);
    assert!(items.is_empty());
    assert_eq!(info, (1, 20, 0, 0));

    let a = h.create_store("alpha").await;
    let b = h.create_store("beta").await;
    let (items, info) = assert_ok_list(&h.get("/stores").await);
    assert_eq!(info, (1, 20, 2, 2));
    for s in &items {
        assert_store_shape(s, &h.account);
    }
    let ids: Vec<&str> = items.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [a.as_str(), b.as_str()]);
    assert_eq!(names(&items), ["alpha", "beta"]);
}

#[tokio::test]
async fn op02_create_store() {
    let h = Harness::new().await;
    let r = h.post("/stores", &json!({ "name": "my-store_1" })).await;
    let store = assert_ok(&r);
    assert_store_shape(&store, &h.account);
    assert_eq!(store["name"], json!("my-store_1"));
    assert_eq!(store["created"], store["modified"]);
    // It exists afterwards, exactly as returned.
    let got = assert_ok(
        &h.get(&format!("/stores/{}", store["id"].as_str().unwrap()))
            .await,
    );
    assert_eq!(got, store);

    // Early SDKs sent a one-element array, and parse a one-element array back.
    let r = h.post("/stores", &json!([{ "name": "from-array" }])).await;
    let result = assert_ok(&r);
    let items = result.as_array().expect("an array for an array");
    assert_eq!(items.len(), 1);
    let store2 = items[0].clone();
    assert_store_shape(&store2, &h.account);
    assert_eq!(store2["name"], json!("from-array"));
    assert_ne!(store2["id"], store["id"]);
    assert_eq!(assert_ok_list(&h.get("/stores").await).1.3, 2);
}

#[tokio::test]
async fn op03_get_store() {
    let h = Harness::new().await;
    let id = h.create_store("one").await;
    let _other = h.create_store("two").await;
    let store = assert_ok(&h.get(&format!("/stores/{id}")).await);
    assert_store_shape(&store, &h.account);
    assert_eq!(store["id"], json!(id));
    assert_eq!(store["name"], json!("one"));
}

#[tokio::test]
async fn op04_delete_store() {
    let h = Harness::new().await;
    let id = h.create_store("gone").await;
    let keep = h.create_store("kept").await;
    assert_deleted(&h.delete(&format!("/stores/{id}")).await);
    let (items, info) = assert_ok_list(&h.get("/stores").await);
    assert_eq!(info.3, 1);
    assert_eq!(items[0]["id"], json!(keep));
    assert_err(
        &h.get(&format!("/stores/{id}")).await,
        coffer_api::ErrorCode::StoreNotFound,
        "store",
    );
}

#[tokio::test]
async fn op05_list_secrets() {
    let h = Harness::new().await;
    let (store, secret, value) = fixture(&h).await;
    let other = h.create_store("other").await;
    h.create_secret(&other, "ELSEWHERE", "x").await;

    let r = h.get(&format!("/stores/{store}/secrets")).await;
    assert_no_value(&r, &value);
    let (items, info) = assert_ok_list(&r);
    assert_eq!(info, (1, 20, 1, 1), "only this store's secrets");
    assert_secret_shape(&items[0]);
    assert_eq!(items[0], secret);
}

#[tokio::test]
async fn op06_create_secrets() {
    let h = Harness::new().await;
    let store = h.create_store("prod").await;
    let v1 = format!("first-{}", random_tag());
    let v2 = format!("second-{}", random_tag());
    let r = h
        .post(
            &format!("/stores/{store}/secrets"),
            &json!([
                { "name": "API_KEY", "value": v1, "scopes": ["workers"], "comment": "c1" },
                { "name": "db-pass", "value": v2, "scopes": ["ai_gateway", "workers"] }
            ]),
        )
        .await;
    assert_no_value(&r, &v1);
    assert_no_value(&r, &v2);
    let result = assert_ok(&r);
    let items = result.as_array().expect("result is an array");
    assert_eq!(items.len(), 2);
    for s in items {
        assert_secret_shape(s);
        assert_eq!(s["store_id"], json!(store));
        assert_eq!(s["created"], s["modified"]);
    }
    assert_eq!(items[0]["name"], json!("API_KEY"));
    assert_eq!(items[0]["comment"], json!("c1"));
    assert_eq!(scopes_of(&items[0]), ["workers"]);
    assert_eq!(items[1]["name"], json!("db-pass"));
    assert_eq!(items[1]["comment"], json!(""), "comment defaults to empty");
    assert_eq!(scopes_of(&items[1]), ["ai_gateway", "workers"]);
    assert_ne!(items[0]["id"], items[1]["id"]);
    // Both exist, exactly as returned.
    for s in items {
        let got = h.get_secret(&store, s["id"].as_str().unwrap()).await;
        assert_eq!(&got, s);
    }
    assert_eq!(h.quota().await.1, 2);

    // A single object (not an array) is accepted too, and answered with an array.
    let r = h
        .post(
            &format!("/stores/{store}/secrets"),
            &secret_item("single", "v", &["dex"]),
        )
        .await;
    let result = assert_ok(&r);
    assert_eq!(result.as_array().map(Vec::len), Some(1));
    assert_eq!(result[0]["name"], json!("single"));
}

#[tokio::test]
async fn op07_bulk_delete_secrets() {
    let h = Harness::new().await;
    let store = h.create_store("prod").await;
    let items = h
        .create_secrets(
            &store,
            &[
                secret_item("a", "1", &["workers"]),
                secret_item("b", "2", &["workers"]),
                secret_item("c", "3", &["workers"]),
            ],
        )
        .await;
    let ids: Vec<&str> = items.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let r = h
        .json(
            Method::DELETE,
            &format!("/stores/{store}/secrets"),
            &json!([ids[0], ids[2]]),
        )
        .await;
    assert_deleted(&r);
    assert_eq!(h.secret_names(&store, "").await, ["b"]);
    assert_eq!(h.quota().await.1, 1);
}

#[tokio::test]
async fn op08_get_secret() {
    let h = Harness::new().await;
    let (store, secret, value) = fixture(&h).await;
    let id = secret["id"].as_str().unwrap();
    let r = h.get(&format!("/stores/{store}/secrets/{id}")).await;
    assert_no_value(&r, &value);
    let got = assert_ok(&r);
    assert_secret_shape(&got);
    assert_eq!(got, secret);
    assert_eq!(got["id"], json!(id));
    assert_eq!(got["store_id"], json!(store));
    assert_eq!(got["name"], json!("API_KEY"));
    assert_eq!(got["comment"], json!("the key"));
    assert_eq!(got["scopes"], json!(["workers"]));
}

#[tokio::test]
async fn op09_update_secret() {
    let h = Harness::new().await;
    let (store, secret, value) = fixture(&h).await;
    let id = secret["id"].as_str().unwrap();
    let new_value = format!("n3w-{}", random_tag());
    let r = h
        .patch(
            &format!("/stores/{store}/secrets/{id}"),
            &json!({ "value": new_value, "scopes": ["workers", "access"], "comment": "rotated" }),
        )
        .await;
    assert_no_value(&r, &value);
    assert_no_value(&r, &new_value);
    let updated = assert_ok(&r);
    assert_secret_shape(&updated);
    assert_eq!(updated["id"], secret["id"]);
    assert_eq!(updated["name"], secret["name"]);
    assert_eq!(updated["store_id"], secret["store_id"]);
    assert_eq!(updated["created"], secret["created"]);
    assert_eq!(updated["comment"], json!("rotated"));
    assert_eq!(scopes_of(&updated), ["access", "workers"]);
    assert!(timestamp(&updated["modified"]) > timestamp(&secret["modified"]));
    assert_eq!(h.get_secret(&store, id).await, updated);
}

#[tokio::test]
async fn op10_delete_secret() {
    let h = Harness::new().await;
    let (store, secret, _) = fixture(&h).await;
    let keep = h.create_secret(&store, "KEEP", "x").await;
    let id = secret["id"].as_str().unwrap();
    assert_deleted(&h.delete(&format!("/stores/{store}/secrets/{id}")).await);
    assert_err(
        &h.get(&format!("/stores/{store}/secrets/{id}")).await,
        coffer_api::ErrorCode::SecretNotFound,
        "secret",
    );
    let (items, _) = assert_ok_list(&h.get(&format!("/stores/{store}/secrets")).await);
    assert_eq!(items, vec![keep]);
}

#[tokio::test]
async fn op11_duplicate_secret() {
    let h = Harness::new().await;
    let (store, secret, value) = fixture(&h).await;
    let id = secret["id"].as_str().unwrap();
    let r = h
        .post(
            &format!("/stores/{store}/secrets/{id}/duplicate"),
            &json!({ "name": "API_KEY_COPY", "scopes": ["ai_gateway"], "comment": "copy" }),
        )
        .await;
    assert_no_value(&r, &value);
    let copy = assert_ok(&r);
    assert_secret_shape(&copy);
    assert_ne!(copy["id"], secret["id"], "a duplicate has a new id");
    assert_eq!(copy["store_id"], json!(store));
    assert_eq!(copy["name"], json!("API_KEY_COPY"));
    assert_eq!(copy["scopes"], json!(["ai_gateway"]));
    assert_eq!(copy["comment"], json!("copy"));
    assert_eq!(
        h.get_secret(&store, copy["id"].as_str().unwrap()).await,
        copy
    );
    assert_eq!(h.quota().await.1, 2);
}

#[tokio::test]
async fn op12_quota() {
    let h = Harness::with_limits(Harness::limits(7, 3)).await;
    let r = h.get("/quota").await;
    let q = assert_ok(&r);
    assert_eq!(q, json!({ "secrets": { "quota": 7, "usage": 0 } }));
    let store = h.create_store("s").await;
    h.create_secret(&store, "ONE", "1").await;
    let q = assert_ok(&h.get("/quota").await);
    assert_eq!(q, json!({ "secrets": { "quota": 7, "usage": 1 } }));
}
