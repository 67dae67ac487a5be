//! KEK rotation (`/client/v4/kek`): operator only, one at a time, and a rewrap that keeps every
//! value readable while it runs and after, with the old KEK version gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use coffer_api::ErrorCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::*;

const KEK: &str = "/client/v4/kek";
const ROTATIONS: &str = "/client/v4/kek/rotations";

/// Status polls before a rotation is declared stuck (a bound on waiting, not a speed check).
const POLLS: usize = 6000;

async fn status(h: &Harness) -> Value {
    assert_ok(&h.send_as(Method::GET, KEK, Some(&h.bearer()), None).await)
}

/// Polls the status until no rotation is under way; panics on a failed one.
async fn wait_rotated(h: &Harness) -> Value {
    for _ in 0..POLLS {
        let s = status(h).await;
        match s["rotation"]["state"].as_str() {
            None => return s,
            Some("failed") => panic!("the rotation failed: {s}"),
            Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    panic!("the rotation did not finish: {}", status(h).await);
}

fn fast_keys(max_seals: u64) -> coffer_server::KeyOptions {
    coffer_server::KeyOptions {
        dek_policy: coffer_server::DekPolicy {
            max_seals,
            ..coffer_server::DekPolicy::default()
        },
        rewrap: coffer_server::RewrapSettings {
            batch: 8,
            pause: Duration::from_millis(2),
            grace: Duration::from_millis(50),
            retry: Duration::from_millis(50),
        },
        reseal: Default::default(),
    }
}

#[tokio::test]
async fn status_and_rotation_are_operator_only_and_one_at_a_time() {
    if SqliteOnly::KeyRotation.skip() {
        return;
    }
    let h = Harness::new().await;
    let store = h.create_store("s").await;
    h.create_secret(&store, "a", "va").await;

    let s = status(&h).await;
    assert_eq!(s["active_version"], 1, "{s}");
    assert!(s["rotation"].is_null(), "{s}");
    let versions = s["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{s}");
    let v1 = &versions[0];
    assert_eq!(
        (
            v1["version"].clone(),
            v1["provider"].clone(),
            v1["state"].clone()
        ),
        (json!(1), json!("file"), json!("active"))
    );
    assert_eq!(v1["deks"], 1, "{s}");
    // The four MAC keys (API tokens, audit, service tokens, node tokens), the replication key
    // and the feed-signing seed.
    assert_eq!(v1["instance_keys"], 6, "{s}");
    let v1_id = v1["kek_id"].as_str().unwrap().to_owned();
    assert!(v1_id.starts_with("file:"), "{v1_id}");

    // Every role of the operator's own account, and no token: refused, nothing changes.
    for role in ROLES {
        let t = h.issue_token(&h.account, role, role).await;
        for (method, uri) in [(Method::GET, KEK), (Method::POST, ROTATIONS)] {
            let r = h.send_as(method, uri, Some(&t.bearer()), None).await;
            assert_err(&r, ErrorCode::Forbidden, "instance:operator");
        }
    }
    let r = h.send_as(Method::POST, ROTATIONS, None, None).await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
    assert_eq!(status(&h).await["active_version"], 1);
    assert!(!h.data_dir.join("kek-2.key").exists());

    let r = h
        .send_as(Method::POST, ROTATIONS, Some(&h.bearer()), None)
        .await;
    let started = assert_ok(&r);
    assert_eq!(started["active_version"], 2, "{started}");
    assert_eq!(started["from_version"], 1, "{started}");
    assert_ne!(started["kek_id"], json!(v1_id));
    assert!(h.data_dir.join("kek-2.key").exists());

    // The default grace keeps version 1 retiring for 30 s: a second start is refused.
    let r = h
        .send_as(Method::POST, ROTATIONS, Some(&h.bearer()), None)
        .await;
    let e = assert_err(&r, ErrorCode::KekRotationRunning, "version 1");
    assert_eq!(e["code"], 1310);
    let s = status(&h).await;
    assert_eq!(s["active_version"], 2, "{s}");
    assert_eq!(s["rotation"]["from_version"], 1, "{s}");
    assert_eq!(s["rotation"]["to_version"], 2, "{s}");
    assert_eq!(s["rotation"]["state"], "running", "{s}");
    assert_eq!(s["versions"].as_array().unwrap().len(), 2, "{s}");
    assert!(!h.data_dir.join("kek-3.key").exists());

    // Both the start and the refusals are in the operator's audit log; no key material.
    let (entries, raw) = h.audit_entries_all(&h.account).await;
    let rotate: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "kek_rotate" && e["outcome"] == "success")
        .collect();
    assert_eq!(rotate.len(), 1, "one kek_rotate entry");
    assert_eq!(rotate[0]["kek_version"], 2);
    assert_eq!(rotate[0]["resource"]["type"], "kek");
    let kek_bytes = std::fs::read(h.data_dir.join("kek-2.key")).unwrap();
    assert!(
        !String::from_utf8_lossy(&raw).contains(&hex::encode(&kek_bytes)),
        "no key in the audit log"
    );
    let denied = entries
        .iter()
        .filter(|e| e["resource"]["type"] == "kek" && e["outcome"] == "denied")
        .count();
    assert_eq!(denied, ROLES.len() * 2);
}

/// A runtime read of `binding` through `app`, as `token`.
async fn read(app: &axum::Router, token: &str, binding: &str) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!("/runtime/v1/bindings/{binding}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

#[tokio::test]
async fn reads_stay_right_during_a_rotation_and_every_key_moves_to_the_new_version() {
    if SqliteOnly::KeyRotation.skip() {
        return;
    }
    // One DEK per value, so the rewrap has many keys.
    const N: usize = 60;
    let h = Harness::with_keys(fast_keys(1)).await;
    let store = h.create_store("rot").await;
    let items: Vec<Value> = (0..N)
        .map(|i| secret_item(&format!("s{i}"), &format!("value-{i}"), &["workers"]))
        .collect();
    h.create_secrets(&store, &items).await;
    let bindings: Vec<(String, String, String)> = (0..N)
        .map(|i| (format!("B{i}"), store.clone(), format!("s{i}")))
        .collect();
    let refs: Vec<(&str, &str, &str)> = bindings
        .iter()
        .map(|(b, s, n)| (b.as_str(), s.as_str(), n.as_str()))
        .collect();
    let svc = h.deploy_ok(&deploy_body("app", &refs)).await;
    let token = svc.token().to_owned();
    let before = status(&h).await;
    assert_eq!(before["versions"][0]["deks"], N as u64, "{before}");

    // Readers run throughout; every answer must be the right value.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for r in 0..4 {
        let (app, token, stop, reads) = (h.app.clone(), token.clone(), stop.clone(), reads.clone());
        readers.push(tokio::spawn(async move {
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = read(&app, &token, &format!("B{}", i % N)).await;
                assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
                assert_eq!(body, format!("value-{}", i % N).into_bytes());
                reads.fetch_add(1, Ordering::Relaxed);
                i += 7;
                tokio::task::yield_now().await;
            }
        }));
    }

    let r = h
        .send_as(Method::POST, ROTATIONS, Some(&h.bearer()), None)
        .await;
    assert_eq!(assert_ok(&r)["active_version"], 2);
    // Writes go on during the rotation too: each makes a DEK under the new version.
    let extra = h
        .create_secrets(&store, &[secret_item("late", "late-value", &["workers"])])
        .await;
    let after = wait_rotated(&h).await;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    assert!(reads.load(Ordering::Relaxed) > 0);

    assert_eq!(after["active_version"], 2, "{after}");
    let versions = after["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "version 1 is retired: {after}");
    assert_eq!(versions[0]["version"], 2);
    assert_eq!(versions[0]["deks"], N as u64 + 1, "{after}");
    // Every instance key moved, the replication key and the feed-signing seed included.
    assert_eq!(versions[0]["instance_keys"], 6, "{after}");
    assert!(
        !h.data_dir.join("kek.key").exists(),
        "version 1's key is gone"
    );
    assert!(h.data_dir.join("kek-2.key").exists());
    let record = std::fs::read_to_string(h.data_dir.join("kek-versions.toml")).unwrap();
    assert!(record.contains("state = \"retired\""), "{record}");
    // The job audits the retirement right after it (the status may answer in between).
    let mut retired = Vec::new();
    for _ in 0..POLLS {
        let (entries, _) = h.audit_entries_all(&h.account).await;
        retired = entries
            .into_iter()
            .filter(|e| e["action"] == "kek_retire")
            .collect();
        if !retired.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(retired.len(), 1, "one kek_retire entry");
    assert_eq!(retired[0]["kek_version"], 1);
    assert_eq!(retired[0]["actor"]["token_name"], "kek rotation");

    // A fresh process (cold DEK cache) opens every value with version 2 alone.
    let reopened = Arc::new(
        coffer_server::open_data_dir(&h.data_dir, Default::default())
            .await
            .unwrap()
            .coffer,
    );
    let app = coffer_server::app(reopened.clone());
    for i in 0..N {
        let (status, body) = read(&app, &token, &format!("B{i}")).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, format!("value-{i}").into_bytes());
    }
    assert_eq!(extra.len(), 1);
    reopened.shutdown().await;
}

#[tokio::test]
async fn a_key_that_does_not_unwrap_stops_the_rewrap_and_keeps_the_old_version() {
    if SqliteOnly::KeyRotation.skip() {
        return;
    }
    const N: usize = 5;
    let h = Harness::with_keys(fast_keys(1)).await;
    let store = h.create_store("bad").await;
    let items: Vec<Value> = (0..N)
        .map(|i| secret_item(&format!("s{i}"), &format!("v{i}"), &["workers"]))
        .collect();
    h.create_secrets(&store, &items).await;
    // One DEK's wrapped bytes damaged at rest.
    let db = rusqlite::Connection::open(h.data_dir.join("coffer.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE deks SET wrapped = CAST(zeroblob(length(wrapped)) AS BLOB)
             WHERE id = (SELECT id FROM deks ORDER BY id LIMIT 1)",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);

    let r = h
        .send_as(Method::POST, ROTATIONS, Some(&h.bearer()), None)
        .await;
    assert_eq!(assert_ok(&r)["active_version"], 2);
    let mut s = status(&h).await;
    for _ in 0..POLLS {
        if s["rotation"]["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        s = status(&h).await;
    }
    let rotation = &s["rotation"];
    assert_eq!(rotation["state"], "failed", "{s}");
    let error = rotation["error"].as_str().unwrap();
    assert!(error.contains("does not unwrap"), "{error}");
    assert!(error.contains("DEK "), "{error}");
    assert!(rotation["remaining"].as_u64().unwrap() >= 1, "{s}");
    // Nothing is retired while a key still needs version 1.
    assert!(h.data_dir.join("kek.key").exists());
    assert_eq!(s["versions"][0]["state"], "retiring", "{s}");
    let r = h
        .send_as(Method::POST, ROTATIONS, Some(&h.bearer()), None)
        .await;
    let e = assert_err(&r, ErrorCode::KekRotationRunning, "stopped");
    assert!(
        e["message"].as_str().unwrap().contains("does not unwrap"),
        "{e}"
    );
    assert!(!h.data_dir.join("kek-3.key").exists());
}

#[tokio::test]
async fn two_rotations_started_at_once_make_one_version() {
    if SqliteOnly::KeyRotation.skip() {
        return;
    }
    let h = Harness::new().await;
    let bearer = h.bearer();
    let (a, b) = tokio::join!(
        h.send_as(Method::POST, ROTATIONS, Some(&bearer), None),
        h.send_as(Method::POST, ROTATIONS, Some(&bearer), None),
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", a.text(), b.text());
    let refused = if a.status == StatusCode::OK { &b } else { &a };
    assert_err(refused, ErrorCode::KekRotationRunning, "");
    let s = status(&h).await;
    assert_eq!(s["active_version"], 2, "{s}");
    assert_eq!(s["versions"].as_array().unwrap().len(), 2, "{s}");
    assert!(!h.data_dir.join("kek-3.key").exists());
}

/// On a database shared by instances (PostgreSQL) a KEK rotation and an account KEK are
/// refused with 409 `kek_rotation_unsupported`, changing nothing: why the rotation tests above
/// run on SQLite only (`SqliteOnly::KeyRotation`).
#[tokio::test]
async fn on_a_shared_database_key_rotations_are_refused_and_change_nothing() {
    if backend() == Backend::Sqlite {
        // Rotations work there: the tests above.
        return;
    }
    let h = Harness::new().await;
    let store = h.create_store("s").await;
    h.create_secret(&store, "a", "va").await;
    let before = h.snapshot().await;
    // Who may ask is checked first, as on SQLite: every role of the operator's own account is
    // refused (403), and no token is 401.
    for role in ROLES {
        let t = h.issue_token(&h.account, role, role).await;
        for (method, uri) in [(Method::GET, KEK), (Method::POST, ROTATIONS)] {
            let r = h.send_as(method, uri, Some(&t.bearer()), None).await;
            assert_err(&r, ErrorCode::Forbidden, "instance:operator");
        }
    }
    for (method, uri) in [(Method::GET, KEK), (Method::POST, ROTATIONS)] {
        let r = h.send_as(method, uri, None, None).await;
        assert_err(&r, ErrorCode::Unauthenticated, "");
    }
    let r = h
        .send_as(Method::POST, ROTATIONS, Some(&h.bearer()), None)
        .await;
    assert_err(
        &r,
        ErrorCode::KekRotationUnsupported,
        "shared by several instances",
    );
    let s = status(&h).await;
    assert_eq!(s["active_version"], 1, "{s}");
    assert!(s["rotation"].is_null(), "{s}");
    assert!(!h.data_dir.join("kek-2.key").exists());
    let r = crate::account_kek::set_kek(&h, &h.account, "file").await;
    assert_err(
        &r,
        ErrorCode::KekRotationUnsupported,
        "shared by several instances",
    );
    let account_keks = h.data_dir.join("account-keks");
    assert!(
        !account_keks.exists() || std::fs::read_dir(&account_keks).unwrap().next().is_none(),
        "no account key file was made"
    );
    h.assert_unchanged(&before, "refused rotations").await;
}
