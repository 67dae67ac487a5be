//! Assertions over the v4 envelope and the shapes of its results, and `Fixture`: an
//! instance holding one store with one secret.

use axum::http::{StatusCode, header};
use coffer_api::ErrorCode;
use serde_json::{Value, json};

use super::*;

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

#[track_caller]
pub fn assert_keys(v: &Value, expected: &[&str]) {
    let mut e: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    e.sort();
    assert_eq!(keys(v), e, "field names of {v}");
}

/// Every response carries `Cache-Control: no-store`, a request id and a JSON content type.
#[track_caller]
pub fn assert_common_headers(r: &Resp) {
    assert_eq!(
        r.headers
            .get(header::CACHE_CONTROL)
            .map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "cache-control"
    );
    assert!(r.headers.contains_key("x-request-id"), "x-request-id");
    let ct = r
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some("application/json"), "content-type");
}

/// A success envelope without `result_info`; returns `result`.
#[track_caller]
pub fn assert_ok(r: &Resp) -> Value {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_common_headers(r);
    let v = r.json();
    assert_keys(&v, &["success", "errors", "messages", "result"]);
    assert_eq!(v["success"], json!(true));
    assert_eq!(v["errors"], json!([]));
    assert_eq!(v["messages"], json!([]));
    v["result"].clone()
}

/// A delete's success envelope: `result: null`.
#[track_caller]
pub fn assert_deleted(r: &Resp) {
    let result = assert_ok(r);
    assert_eq!(result, Value::Null, "delete result");
}

/// A list's success envelope; returns the items and `result_info` as
/// `(page, per_page, count, total_count)`.
#[track_caller]
pub fn assert_ok_list(r: &Resp) -> (Vec<Value>, (u64, u64, u64, u64)) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_common_headers(r);
    let v = r.json();
    assert_keys(
        &v,
        &["success", "errors", "messages", "result", "result_info"],
    );
    assert_eq!(v["success"], json!(true));
    assert_eq!(v["errors"], json!([]));
    assert_eq!(v["messages"], json!([]));
    let info = &v["result_info"];
    assert_keys(info, &["page", "per_page", "count", "total_count"]);
    let items = v["result"].as_array().expect("result is an array").clone();
    let n = |k: &str| info[k].as_u64().unwrap();
    let info = (n("page"), n("per_page"), n("count"), n("total_count"));
    assert_eq!(info.2, items.len() as u64, "count is the page's length");
    (items, info)
}

/// An error envelope with `code`; the message must contain `needle`. Returns the error item.
#[track_caller]
pub fn assert_err(r: &Resp, code: ErrorCode, needle: &str) -> Value {
    assert_eq!(
        r.status.as_u16(),
        code.http_status(),
        "status for {code:?}: {}",
        r.text()
    );
    assert_common_headers(r);
    let v = r.json();
    assert_keys(&v, &["success", "errors", "messages", "result"]);
    assert_eq!(v["success"], json!(false));
    assert_eq!(v["messages"], json!([]));
    assert_eq!(v["result"], Value::Null);
    let errors = v["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1, "one error: {v}");
    let e = errors[0].clone();
    assert_eq!(
        e["code"].as_u64(),
        Some(u64::from(code.code())),
        "code for {code:?} ({}): {v}",
        code.name()
    );
    let message = e["message"].as_str().expect("message");
    assert!(
        message.contains(needle),
        "message {message:?} should contain {needle:?}"
    );
    if let Some(u) = e.get("documentation_url") {
        assert!(u.is_string());
    }
    e
}

/// [`assert_err`] that also checks the error's `source.pointer`.
#[track_caller]
pub fn assert_err_at(r: &Resp, code: ErrorCode, pointer: &str) -> Value {
    let e = assert_err(r, code, pointer);
    assert_eq!(
        e["source"]["pointer"].as_str(),
        Some(pointer),
        "source.pointer of {e}"
    );
    e
}

#[track_caller]
pub fn assert_hex_id(v: &Value) -> String {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("id is not a string: {v}"));
    assert_eq!(s.len(), 32, "id {s:?}");
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "id {s:?} is not lowercase hex"
    );
    s.to_owned()
}

#[track_caller]
pub fn timestamp(v: &Value) -> coffer_types::Timestamp {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    coffer_types::Timestamp::parse_rfc3339(s).unwrap_or_else(|| panic!("not RFC 3339: {s:?}"))
}

/// A secret's metadata object: exact field names and well-formed fields.
#[track_caller]
pub fn assert_secret_shape(s: &Value) {
    assert_keys(
        s,
        &[
            "id", "store_id", "name", "comment", "scopes", "status", "created", "modified",
        ],
    );
    assert_hex_id(&s["id"]);
    assert_hex_id(&s["store_id"]);
    assert!(s["name"].is_string());
    assert!(s["comment"].is_string());
    let scopes = s["scopes"].as_array().expect("scopes array");
    assert!(!scopes.is_empty());
    assert!(scopes.iter().all(Value::is_string));
    assert_eq!(s["status"], json!("active"));
    assert!(timestamp(&s["modified"]) >= timestamp(&s["created"]));
}

/// A store object: exact field names and well-formed fields.
#[track_caller]
pub fn assert_store_shape(s: &Value, account: &str) {
    assert_keys(s, &["id", "name", "created", "modified", "account_id"]);
    assert_hex_id(&s["id"]);
    assert!(s["name"].is_string());
    assert_eq!(s["account_id"], json!(account));
    assert!(timestamp(&s["modified"]) >= timestamp(&s["created"]));
}

/// A sorted copy of a secret's scopes.
pub fn scopes_of(s: &Value) -> Vec<String> {
    let mut v: Vec<String> = s["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

pub fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

/// An instance holding one store with one secret (so the account already has a DEK, and a
/// failed request that seals values still writes nothing).
pub struct Fixture {
    pub h: Harness,
    pub store: String,
    pub secret: String,
}

pub async fn fixture() -> Fixture {
    fixture_with(coffer_core::Limits::default()).await
}

pub async fn fixture_with(limits: coffer_core::Limits) -> Fixture {
    let h = Harness::with_limits(limits).await;
    let store = h.create_store("fixture").await;
    let secret = h.create_secret(&store, "EXISTING", "existing-value").await;
    let secret = secret["id"].as_str().unwrap().to_owned();
    Fixture { h, store, secret }
}
