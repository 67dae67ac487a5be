//! Concurrent requests: the quota holds under racing creates, and racing value updates all land
//! as consecutive versions.

use std::collections::BTreeMap;
use std::sync::Arc;

use coffer_api::ErrorCode;
use coffer_storage::Change;
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_never_overshoot_the_quota() {
    let h = Arc::new(Harness::with_limits(Harness::limits(10, 3)).await);
    let store = h.create_store("race").await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let h = h.clone();
            let store = store.clone();
            tokio::spawn(async move {
                h.post(
                    &format!("/stores/{store}/secrets"),
                    &json!([secret_item(&format!("S{i:02}"), "v", &["workers"])]),
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut over = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.status.is_success() {
            assert_ok(&r);
            ok += 1;
        } else {
            assert_err(&r, ErrorCode::QuotaExceeded, "quota");
            over += 1;
        }
    }
    assert_eq!((ok, over), (10, 10));
    assert_eq!(h.quota().await, (10, 10));
    let (_, info) = assert_ok_list(&h.get(&format!("/stores/{store}/secrets")).await);
    assert_eq!(info.3, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_store_creates_with_one_name_make_one_store() {
    let h = Arc::new(Harness::new().await);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.post("/stores", &json!({ "name": "same" })).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.status.is_success() {
            ok += 1;
        } else {
            assert_err(&r, ErrorCode::StoreNameTaken, "same");
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(assert_ok_list(&h.get("/stores").await).1.3, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_value_updates_all_land_as_consecutive_versions() {
    let h = Arc::new(Harness::new().await);
    let store = h.create_store("race").await;
    let secret = h.create_secret(&store, "HOT", "v0").await;
    let id = secret["id"].as_str().unwrap().to_owned();
    let tasks: Vec<_> = (1..=20)
        .map(|i| {
            let h = h.clone();
            let path = format!("/stores/{store}/secrets/{id}");
            tokio::spawn(async move { h.patch(&path, &json!({ "value": format!("v{i}") })).await })
        })
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status.is_success() {
            assert_ok(&r);
        } else {
            failures.push(format!("{} {}", r.status, r.text()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 20 concurrent PATCHes failed: {failures:#?}",
        failures.len()
    );

    // The change log holds versions 1..=21 of this secret, each exactly once.
    let log = h.coffer.storage().changes_after(0, 1000).await.unwrap();
    let mut versions: BTreeMap<u32, usize> = BTreeMap::new();
    for entry in &log {
        if let Change::SecretPut {
            secret_id, version, ..
        } = entry.change().unwrap()
            && secret_id.to_string() == id
        {
            *versions.entry(version).or_default() += 1;
        }
    }
    let expected: BTreeMap<u32, usize> = (1..=21).map(|v| (v, 1)).collect();
    assert_eq!(versions, expected);
    // The log is gap-free and hash-chained.
    let mut prev = coffer_storage::ChangeRecord::GENESIS_HASH;
    for (i, entry) in log.iter().enumerate() {
        assert_eq!(entry.seq, i as u64 + 1);
        assert!(entry.follows(&prev), "entry {} breaks the chain", entry.seq);
        prev = entry.hash;
    }
    // The secret is still one secret, whose value opens (duplicate needs it).
    assert_eq!(h.quota().await.1, 1);
    let r = h
        .post(
            &format!("/stores/{store}/secrets/{id}/duplicate"),
            &json!({ "name": "COPY", "scopes": ["workers"] }),
        )
        .await;
    assert_ok(&r);
}
