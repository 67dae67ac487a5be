//! Secrecy: a full flow with distinctive values and token, checking every log line (at TRACE),
//! every response (headers and bodies) and every byte of the data dir.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::Method;
use serde_json::json;
use tracing::Level;

use crate::support::*;

/// A `MakeWriter` target: appends to a shared buffer.
#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every form of `s` that a careless log line might carry.
fn forms(s: &str) -> Vec<Vec<u8>> {
    vec![
        s.as_bytes().to_vec(),
        hex::encode(s).into_bytes(),
        format!("{:?}", s.as_bytes()).into_bytes(),
    ]
}

pub(crate) fn captured(logs: &Arc<Mutex<Vec<u8>>>) -> Vec<u8> {
    logs.lock().unwrap().clone()
}

#[track_caller]
pub(crate) fn assert_absent(haystack: &[u8], secret: &str, place: &str) {
    for form in forms(secret) {
        assert!(
            !contains(haystack, &form),
            "{place} contains a secret ({})",
            String::from_utf8_lossy(&form)
        );
    }
}

/// The process-wide log capture, at TRACE, installed on first use.
///
/// A global subscriber rather than a thread-local default: tracing-core keeps its interest and
/// max-level caches process-wide, and with a single registered dispatcher it recomputes them
/// from the *calling* thread's default, so a concurrently running test on another thread can
/// switch a thread-local capture off (`LevelFilter::current()` drops to OFF). A global
/// subscriber also sees events from the storage writer thread and the blocking pool.
pub(crate) fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Capture(logs.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in this test binary");
        logs
    })
    .clone()
}

#[tokio::test]
async fn a_full_flow_leaks_no_value_and_no_token() {
    let logs = captured_logs();

    let h = Harness::new().await;
    let tag = random_tag();
    let v1 = format!("s3cr3t-canary-{tag}-one");
    let v2 = format!("s3cr3t-canary-{tag}-two");
    let v3 = format!("s3cr3t-canary-{tag}-three");
    let name = format!("NAME_{tag}");

    // The happy flow.
    let store = h.create_store("vault").await;
    let created = h
        .create_secrets(
            &store,
            &[
                json!({ "name": name, "value": v1, "scopes": ["workers"], "comment": "main" }),
                json!({ "name": "B", "value": v1, "scopes": ["dex"] }),
            ],
        )
        .await;
    let a = created[0]["id"].as_str().unwrap().to_owned();
    let b = created[1]["id"].as_str().unwrap().to_owned();
    assert_ok_list(&h.get(&format!("/stores/{store}/secrets")).await);
    assert_ok_list(
        &h.get(&format!(
            "/stores/{store}/secrets?search=main&scopes=workers"
        ))
        .await,
    );
    assert_ok(&h.get(&format!("/stores/{store}/secrets/{a}")).await);
    assert_ok(
        &h.patch(
            &format!("/stores/{store}/secrets/{a}"),
            &json!({ "value": v2 }),
        )
        .await,
    );
    assert_ok(
        &h.patch(
            &format!("/stores/{store}/secrets/{a}"),
            &json!({ "comment": "rotated", "scopes": ["workers", "ai_gateway"] }),
        )
        .await,
    );
    let r = h
        .post(
            &format!("/stores/{store}/secrets/{a}/duplicate"),
            &json!({ "name": "C", "scopes": ["workers"] }),
        )
        .await;
    let c = assert_ok(&r)["id"].as_str().unwrap().to_owned();
    assert_ok(&h.get("/quota").await);

    // Failures that carry a value.
    let s = &store;
    let long = v3.repeat(65_536 / v3.len() + 1);
    let failures = vec![
        h.post(
            &format!("/stores/{s}/secrets"),
            &json!([secret_item("B", &v3, &["workers"])]),
        )
        .await,
        h.post(
            &format!("/stores/{s}/secrets"),
            &json!([secret_item("D", &v3, &["nope"])]),
        )
        .await,
        h.post(
            &format!("/stores/{s}/secrets"),
            &json!([secret_item("D", &long, &["workers"])]),
        )
        .await,
        h.post(
            &format!("/stores/{s}/secrets"),
            &json!([{ "name": "D", "value": v3, "scopes": ["workers"], "extra": 1 }]),
        )
        .await,
        h.raw(
            Method::POST,
            &format!("/stores/{s}/secrets"),
            Some("application/json"),
            format!(r#"[{{"name":"D","value":"{v3}","scopes":["workers"]"#),
        )
        .await,
        h.raw(
            Method::POST,
            &format!("/stores/{s}/secrets"),
            Some("application/json"),
            [
                format!(r#"[{{"name":"D","value":"{v3}"#).as_bytes(),
                b"\xff\"}]",
            ]
            .concat(),
        )
        .await,
        h.patch(
            &format!("/stores/{s}/secrets/{a}"),
            &json!({ "value": v3, "comment": "c".repeat(2000) }),
        )
        .await,
        h.patch(
            &format!("/stores/{s}/secrets/{}", random_id()),
            &json!({ "value": v3 }),
        )
        .await,
        h.patch(
            &format!("/stores/{}/secrets/{a}", random_id()),
            &json!({ "value": v3 }),
        )
        .await,
        h.patch(
            &format!("/stores/{s}/secrets/{a}"),
            &json!({ "value": long }),
        )
        .await,
    ];
    for r in &failures {
        assert!(r.status.is_client_error(), "{} {}", r.status, r.text());
    }

    // Deletes.
    assert_deleted(
        &h.json(Method::DELETE, &format!("/stores/{s}/secrets"), &json!([b]))
            .await,
    );
    assert_deleted(&h.delete(&format!("/stores/{s}/secrets/{c}")).await);
    assert_eq!(h.quota().await.1, 1);

    // --- the checks ---
    // `coffer_<32 hex id>_<secret>`: the id is public (logs carry it), the rest is not.
    let token_secret = &h.token["coffer_".len() + 33..];
    assert_eq!(token_secret.len(), 43, "the token's secret part");

    let logs_handle = logs;
    let logs = captured(&logs_handle);
    let text = String::from_utf8_lossy(&logs);
    // The capture works: it saw the requests and their responses.
    assert!(
        text.contains("response"),
        "no response events captured ({} bytes): {}",
        text.len(),
        &text[..text.len().min(3000)]
    );
    assert!(
        text.contains("status=200") && text.contains("status=409"),
        "{text}"
    );
    assert!(text.contains(&a), "the request path (with ids) is logged");
    for secret in [&v1, &v2, &v3, &h.token, &token_secret.to_owned()] {
        assert_absent(&logs, secret, "the log");
    }

    // And the capture would have caught a leak from this code path.
    tracing::trace!(leak = %v1, "negative control");
    assert!(
        contains(&captured(&logs_handle), v1.as_bytes()),
        "the capture misses TRACE events"
    );

    let transcript = h.transcript();
    assert!(
        contains(&transcript, name.as_bytes()),
        "the transcript has the responses"
    );
    for secret in [&v1, &v2, &v3, &h.token, &token_secret.to_owned()] {
        assert_absent(&transcript, secret, "a response");
    }

    // At rest (the database: SQLite's file and WAL, or PostgreSQL's tables) the name is
    // there but never a value or the token.
    let parts = h.at_rest_bytes(&name).await;
    if backend() == Backend::Sqlite {
        assert!(parts.iter().any(|(p, _)| p.ends_with(".db")));
    } else {
        assert!(parts.iter().any(|(p, _)| p.ends_with(".secrets")));
    }
    for (part, bytes) in &parts {
        for secret in [&v1, &v2, &v3, &h.token, &token_secret.to_owned()] {
            assert_absent(bytes, secret, part);
        }
    }
}

/// Every secret-bearing type that can reach a log through `{:?}` prints `[redacted]`.
#[tokio::test]
async fn debug_output_of_secret_types_is_redacted() {
    let init_dir = tempfile::tempdir().unwrap();
    let outcome = coffer_server::init_data_dir(&init_dir.path().join("d"))
        .await
        .unwrap();
    let debug = format!("{outcome:?}");
    let token = outcome.api_token.expose_secret();
    assert!(!debug.contains(token), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
    let value: coffer_api::SecretValue = serde_json::from_str("\"hunter2\"").unwrap();
    assert_eq!(format!("{value:?}"), "[redacted]");
    let item: coffer_api::CreateSecret =
        serde_json::from_value(secret_item("n", "hunter2", &["workers"])).unwrap();
    assert!(!format!("{item:?}").contains("hunter2"));
    let update: coffer_api::UpdateSecret =
        serde_json::from_value(json!({ "value": "hunter2" })).unwrap();
    assert!(!format!("{update:?}").contains("hunter2"));
    let plaintext = coffer_crypto::Plaintext::new(b"hunter2".to_vec());
    assert_eq!(format!("{plaintext:?}"), "[redacted]");
}

/// A client's `x-request-id` is echoed when plain, and replaced when it could forge log lines.
#[tokio::test]
async fn request_ids_are_echoed_only_when_plain() {
    let h = Harness::new().await;
    let uri = h.api("/quota");
    let send = |id: &'static str| {
        let req = h
            .request(Method::GET, &uri)
            .header("x-request-id", id)
            .body(axum::body::Body::empty())
            .unwrap();
        h.send(req)
    };
    let plain = send("deploy-42_a.b").await;
    assert_eq!(plain.headers["x-request-id"], "deploy-42_a.b");
    for unsafe_id in [
        "two words",
        "a\"b",
        "x=1 level=error msg=forged",
        &*"a".repeat(65).leak(),
    ] {
        let r = send(unsafe_id).await;
        let echoed = r.headers["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(echoed, unsafe_id);
        assert!(
            echoed.len() == 24 && echoed.bytes().all(|b| b.is_ascii_hexdigit()),
            "{echoed}"
        );
    }
}
