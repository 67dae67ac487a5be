//! Semantics of the writes: all-or-nothing bulk operations, duplicate, partial update, store
//! deletion and quota accounting.

use axum::http::Method;
use coffer_api::ErrorCode;
use coffer_storage::Change;
use coffer_types::{AccountId, SecretId, StoreId, Version};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn bulk_create_is_all_or_nothing() {
    let h = Harness::new().await;
    let store = h.create_store("prod").await;
    h.create_secret(&store, "EXISTING", "x").await;
    let before = h.snapshot().await;
    let path = format!("/stores/{store}/secrets");

    // An invalid third item: nothing of the first two is written.
    let r = h
        .post(
            &path,
            &json!([
                secret_item("ok1", "v", &["workers"]),
                secret_item("ok2", "v", &["workers"]),
                secret_item("bad name", "v", &["workers"]),
            ]),
        )
        .await;
    assert_err_at(&r, ErrorCode::InvalidName, "/2/name");
    h.assert_unchanged(&before, "invalid item").await;

    // A clash with an existing secret in the middle of the batch.
    let r = h
        .post(
            &path,
            &json!([
                secret_item("ok1", "v", &["workers"]),
                secret_item("EXISTING", "v", &["workers"]),
                secret_item("ok3", "v", &["workers"]),
            ]),
        )
        .await;
    assert_err(&r, ErrorCode::SecretNameTaken, "EXISTING");
    h.assert_unchanged(&before, "clash with existing").await;

    // A clash inside the batch.
    let r = h
        .post(
            &path,
            &json!([
                secret_item("twin", "v", &["workers"]),
                secret_item("twin", "v", &["workers"]),
            ]),
        )
        .await;
    assert_err_at(&r, ErrorCode::SecretNameTaken, "/1/name");
    h.assert_unchanged(&before, "clash within the batch").await;

    // A bad value in the last item.
    let r = h
        .post(
            &path,
            &json!([
                secret_item("ok1", "v", &["workers"]),
                secret_item("ok2", "", &["workers"]),
            ]),
        )
        .await;
    assert_err_at(&r, ErrorCode::InvalidValue, "/1/value");
    h.assert_unchanged(&before, "empty value").await;

    // And the valid batch goes through whole.
    let created = h
        .create_secrets(
            &store,
            &[
                secret_item("ok1", "v", &["workers"]),
                secret_item("ok2", "v", &["workers"]),
            ],
        )
        .await;
    assert_eq!(created.len(), 2);
    assert_eq!(h.quota().await.1, 3);
}

#[tokio::test]
async fn bulk_delete_is_all_or_nothing() {
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
    let ids: Vec<String> = items
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    let path = format!("/stores/{store}/secrets");
    let before = h.snapshot().await;

    // One unknown id among known ones: 404, and nothing deleted.
    let r = h
        .json(Method::DELETE, &path, &json!([ids[0], random_id(), ids[1]]))
        .await;
    assert_err(&r, ErrorCode::SecretNotFound, "secret");
    h.assert_unchanged(&before, "bulk delete with an unknown id")
        .await;

    // A secret of another store counts as unknown here.
    let other = h.create_store("other").await;
    let foreign = h.create_secret(&other, "foreign", "x").await;
    let before = h.snapshot().await;
    let r = h
        .json(Method::DELETE, &path, &json!([ids[0], foreign["id"]]))
        .await;
    assert_err(&r, ErrorCode::SecretNotFound, "secret");
    h.assert_unchanged(&before, "bulk delete with another store's id")
        .await;

    // A deleted secret's name is free again.
    let r = h
        .post(&path, &json!([secret_item("a", "again", &["workers"])]))
        .await;
    // (Not yet: "a" still exists.)
    assert_err(&r, ErrorCode::SecretNameTaken, "\"a\"");

    // The same id twice is fine.
    let r = h
        .json(Method::DELETE, &path, &json!([ids[0], ids[2], ids[0]]))
        .await;
    assert_deleted(&r);
    assert_eq!(h.secret_names(&store, "").await, ["b"]);
    assert_eq!(h.quota().await.1, 2, "b and foreign remain");
    let again = h.create_secret(&store, "a", "again").await;
    assert!(
        !ids.contains(&again["id"].as_str().unwrap().to_owned()),
        "a new id"
    );
    let r = h
        .post(
            &format!(
                "/stores/{store}/secrets/{}/duplicate",
                again["id"].as_str().unwrap()
            ),
            &json!({ "name": "c", "scopes": ["workers"] }),
        )
        .await;
    assert_ok(&r);
}

#[tokio::test]
async fn duplicate_keeps_the_value_and_leaves_the_source_alone() {
    let h = Harness::new().await;
    let store = h.create_store("prod").await;
    let source = h
        .create_secrets(
            &store,
            &[json!({ "name": "SRC", "value": "the-value", "scopes": ["workers"], "comment": "original" })],
        )
        .await
        .remove(0);
    let src_id = source["id"].as_str().unwrap();

    // Without a comment, the copy takes the source's.
    let r = h
        .post(
            &format!("/stores/{store}/secrets/{src_id}/duplicate"),
            &json!({ "name": "COPY1", "scopes": ["dex", "access"] }),
        )
        .await;
    let copy1 = assert_ok(&r);
    assert_secret_shape(&copy1);
    assert_ne!(copy1["id"], source["id"]);
    assert_eq!(copy1["name"], json!("COPY1"));
    assert_eq!(scopes_of(&copy1), ["access", "dex"]);
    assert_eq!(copy1["comment"], json!("original"));
    assert_eq!(copy1["store_id"], json!(store));
    assert!(timestamp(&copy1["created"]) > timestamp(&source["created"]));

    // The copy's value opens: duplicating the copy needs it, and so does a copy of that.
    let copy1_id = copy1["id"].as_str().unwrap();
    let r = h
        .post(
            &format!("/stores/{store}/secrets/{copy1_id}/duplicate"),
            &json!({ "name": "COPY2", "scopes": ["workers"], "comment": "" }),
        )
        .await;
    let copy2 = assert_ok(&r);
    assert_eq!(
        copy2["comment"],
        json!(""),
        "a given comment wins, even empty"
    );
    let copy2_id = copy2["id"].as_str().unwrap();
    let r = h
        .post(
            &format!("/stores/{store}/secrets/{copy2_id}/duplicate"),
            &json!({ "name": "COPY3", "scopes": ["workers"] }),
        )
        .await;
    assert_ok(&r);

    // After a value update, the source's new version duplicates too.
    let r = h
        .patch(
            &format!("/stores/{store}/secrets/{src_id}"),
            &json!({ "value": "newer" }),
        )
        .await;
    assert_ok(&r);
    let r = h
        .post(
            &format!("/stores/{store}/secrets/{src_id}/duplicate"),
            &json!({ "name": "COPY4", "scopes": ["workers"] }),
        )
        .await;
    assert_ok(&r);

    // The source is untouched by being duplicated (apart from the PATCH above).
    let now = h.get_secret(&store, src_id).await;
    assert_eq!(now["name"], source["name"]);
    assert_eq!(now["scopes"], source["scopes"]);
    assert_eq!(now["comment"], source["comment"]);
    assert_eq!(now["created"], source["created"]);
    assert_eq!(h.quota().await.1, 5);
    assert_eq!(
        {
            let mut n = h.secret_names(&store, "").await;
            n.sort();
            n
        },
        ["COPY1", "COPY2", "COPY3", "COPY4", "SRC"]
    );
}

#[tokio::test]
async fn duplicate_does_not_modify_the_source() {
    let h = Harness::new().await;
    let store = h.create_store("prod").await;
    let source = h.create_secret(&store, "SRC", "value").await;
    let src_id = source["id"].as_str().unwrap();
    let head = h.coffer.storage().change_head().await.unwrap();
    let r = h
        .post(
            &format!("/stores/{store}/secrets/{src_id}/duplicate"),
            &json!({ "name": "COPY", "scopes": ["workers"] }),
        )
        .await;
    assert_ok(&r);
    assert_eq!(
        h.get_secret(&store, src_id).await,
        source,
        "source unchanged"
    );
    // The change log records the copy's creation and nothing about the source.
    let changes = h.coffer.storage().changes_after(head, 100).await.unwrap();
    let copies = changes
        .iter()
        .map(|c| c.change().unwrap())
        .filter(|c| match c {
            Change::SecretPut { secret_id, .. } => {
                assert_ne!(secret_id.to_string(), src_id, "the source was rewritten");
                true
            }
            Change::SecretDeleted { .. } | Change::StoreDeleted { .. } => {
                panic!("duplicate deleted something: {c:?}")
            }
            _ => false,
        })
        .count();
    assert_eq!(copies, 1);
    let rec = record(&h, &store, src_id).await;
    assert_eq!(rec.version, Version::FIRST);
}

async fn record(h: &Harness, store: &str, id: &str) -> coffer_storage::SecretRecord {
    h.coffer
        .storage()
        .get_secret(
            AccountId::parse(&h.account).unwrap(),
            StoreId::parse(store).unwrap(),
            SecretId::parse(id).unwrap(),
        )
        .await
        .unwrap()
        .expect("secret record")
}

#[tokio::test]
async fn patch_changes_only_the_given_fields() {
    let h = Harness::new().await;
    let store = h.create_store("prod").await;
    let s0 = h
        .create_secrets(
            &store,
            &[json!({ "name": "K", "value": "v1", "scopes": ["workers", "dex"], "comment": "c0" })],
        )
        .await
        .remove(0);
    let id = s0["id"].as_str().unwrap();
    let path = format!("/stores/{store}/secrets/{id}");
    assert_eq!(record(&h, &store, id).await.version, Version(1));

    // Value only: scopes and comment stay, modified advances, a new version.
    let s1 = assert_ok(&h.patch(&path, &json!({ "value": "v2" })).await);
    assert_eq!(s1["scopes"], s0["scopes"]);
    assert_eq!(s1["comment"], s0["comment"]);
    assert_eq!(s1["name"], s0["name"]);
    assert_eq!(s1["created"], s0["created"]);
    assert!(timestamp(&s1["modified"]) > timestamp(&s0["modified"]));
    assert_eq!(record(&h, &store, id).await.version, Version(2));

    // Comment only: value version and scopes stay.
    let s2 = assert_ok(&h.patch(&path, &json!({ "comment": "c2" })).await);
    assert_eq!(s2["comment"], json!("c2"));
    assert_eq!(s2["scopes"], s0["scopes"]);
    assert!(timestamp(&s2["modified"]) > timestamp(&s1["modified"]));
    assert_eq!(record(&h, &store, id).await.version, Version(2));

    // Scopes only: replaced as a whole; comment stays.
    let s3 = assert_ok(&h.patch(&path, &json!({ "scopes": ["access"] })).await);
    assert_eq!(s3["scopes"], json!(["access"]));
    assert_eq!(s3["comment"], json!("c2"));
    assert_eq!(record(&h, &store, id).await.version, Version(2));

    // An empty comment clears it.
    let s4 = assert_ok(&h.patch(&path, &json!({ "comment": "" })).await);
    assert_eq!(s4["comment"], json!(""));
    assert_eq!(s4["scopes"], json!(["access"]));

    // What GET returns matches the last PATCH response.
    assert_eq!(h.get_secret(&store, id).await, s4);
    // The value still opens after the updates (duplicate needs it).
    let r = h
        .post(
            &format!("{path}/duplicate"),
            &json!({ "name": "K2", "scopes": ["workers"] }),
        )
        .await;
    assert_ok(&r);
}

#[tokio::test]
async fn store_delete_needs_force_when_not_empty() {
    let h = Harness::new().await;
    let full = h.create_store("full").await;
    let s = h.create_secret(&full, "A", "1").await;
    h.create_secret(&full, "B", "2").await;
    let other = h.create_store("other").await;
    h.create_secret(&other, "C", "3").await;
    let before = h.snapshot().await;

    for q in ["", "?force=false", "?force=0"] {
        let r = h.delete(&format!("/stores/{full}{q}")).await;
        let e = assert_err(&r, ErrorCode::StoreNotEmpty, "force");
        assert_eq!(r.status.as_u16(), 409);
        assert_eq!(e["code"], json!(1302));
        assert_eq!(ErrorCode::StoreNotEmpty.name(), "store_not_empty");
        // It says how to force the delete with each tool, wrangler's lack of one included.
        let message = e["message"].as_str().unwrap();
        for how in ["coffer store delete ID --force", "?force=true", "wrangler"] {
            assert!(message.contains(how), "{how}: {message}");
        }
        h.assert_unchanged(&before, q).await;
    }

    assert_deleted(&h.delete(&format!("/stores/{full}?force=true")).await);
    assert_err(
        &h.get(&format!("/stores/{full}")).await,
        ErrorCode::StoreNotFound,
        "store",
    );
    let sid = s["id"].as_str().unwrap();
    assert_err(
        &h.get(&format!("/stores/{full}/secrets/{sid}")).await,
        ErrorCode::StoreNotFound,
        "store",
    );
    assert_eq!(h.quota().await.1, 1, "the store's secrets went with it");
    assert_eq!(
        h.secret_names(&other, "").await,
        ["C"],
        "other stores untouched"
    );

    // Its name is free again, and the new store is empty.
    let again = h.create_store("full").await;
    assert_ne!(again, full);
    assert!(h.secret_names(&again, "").await.is_empty());
}

#[tokio::test]
async fn empty_store_is_always_deletable() {
    let h = Harness::new().await;
    for q in ["", "?force=false", "?force=true", "?force=1"] {
        let id = h.create_store("empty").await;
        assert_deleted(&h.delete(&format!("/stores/{id}{q}")).await);
        assert_eq!(assert_ok_list(&h.get("/stores").await).1.3, 0, "{q}");
    }
    // A store whose secrets were all deleted is empty again.
    let id = h.create_store("emptied").await;
    let s = h.create_secret(&id, "A", "1").await;
    h.delete(&format!(
        "/stores/{id}/secrets/{}",
        s["id"].as_str().unwrap()
    ))
    .await;
    assert_deleted(&h.delete(&format!("/stores/{id}")).await);
}

#[tokio::test]
async fn quota_usage_follows_creates_and_deletes() {
    let h = Harness::with_limits(Harness::limits(50, 5)).await;
    assert_eq!(h.quota().await, (50, 0));
    let a = h.create_store("a").await;
    let b = h.create_store("b").await;
    assert_eq!(h.quota().await, (50, 0), "stores do not count");
    let items = h
        .create_secrets(
            &a,
            &[
                secret_item("1", "v", &["workers"]),
                secret_item("2", "v", &["workers"]),
                secret_item("3", "v", &["workers"]),
            ],
        )
        .await;
    assert_eq!(h.quota().await, (50, 3));
    let x = h.create_secret(&b, "x", "v").await;
    assert_eq!(h.quota().await, (50, 4), "usage spans stores");
    let id0 = items[0]["id"].as_str().unwrap();
    assert_ok(
        &h.post(
            &format!("/stores/{a}/secrets/{id0}/duplicate"),
            &json!({ "name": "dup", "scopes": ["workers"] }),
        )
        .await,
    );
    assert_eq!(h.quota().await, (50, 5), "a duplicate counts");
    assert_ok(
        &h.patch(
            &format!("/stores/{a}/secrets/{id0}"),
            &json!({ "value": "new" }),
        )
        .await,
    );
    assert_eq!(h.quota().await, (50, 5), "a new version does not count");
    h.delete(&format!(
        "/stores/{b}/secrets/{}",
        x["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(h.quota().await, (50, 4));
    assert_deleted(&h.delete(&format!("/stores/{a}?force=true")).await);
    assert_eq!(h.quota().await, (50, 0));
}
