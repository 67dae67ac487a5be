//! Bad request bodies, on every endpoint that takes one: malformed JSON, bad UTF-8, wrong types,
//! missing and unknown fields, oversized bodies, wrong content types. Each gets its status and
//! stable code, a message naming the problem, and writes nothing.

use axum::body::{Body, Bytes};
use axum::http::{Method, header};
use coffer_api::ErrorCode;
use coffer_server::MAX_BODY_BYTES;
use serde_json::{Value, json};

use crate::support::*;

fn text(v: &Value) -> String {
    serde_json::to_string(v).unwrap()
}

#[tokio::test]
async fn malformed_json_on_every_body_endpoint() {
    let fx = fixture().await;
    let h = &fx.h;
    let before = h.snapshot().await;
    for ep in fx.body_endpoints() {
        let valid = text(&ep.valid);
        let bodies: Vec<(&str, String)> = vec![
            ("bare word", "nul".into()),
            ("truncated", valid[..valid.len() - 1].to_owned()),
            ("trailing garbage", format!("{valid} x")),
            ("two documents", format!("{valid}{valid}")),
            ("single quote", valid.replacen('"', "'", 1)),
            ("single quotes", valid.replace('"', "'")),
        ];
        for (what, body) in bodies {
            eprintln!("case: {}: {what}: {body:?}", ep.name);
            let r = h
                .raw(ep.method.clone(), &ep.path, Some("application/json"), body)
                .await;
            assert_err(&r, ErrorCode::MalformedJson, "malformed JSON");
        }
        // An empty (or blank) body is not JSON either. Bulk delete refuses it as an empty batch,
        // so that an SDK's body-less DELETE can never mean "delete everything".
        for body in ["", "  \n"] {
            eprintln!("case: {}: empty {body:?}", ep.name);
            let r = h
                .raw(ep.method.clone(), &ep.path, Some("application/json"), body)
                .await;
            if ep.name == "bulk delete" {
                assert_err(&r, ErrorCode::InvalidBatch, "array");
            } else {
                assert_err(&r, ErrorCode::MalformedJson, "JSON");
            }
        }
    }
    h.assert_unchanged(&before, "malformed JSON").await;
}

#[tokio::test]
async fn invalid_utf8_on_every_body_endpoint() {
    let fx = fixture().await;
    let h = &fx.h;
    let before = h.snapshot().await;
    for ep in fx.body_endpoints() {
        let valid = text(&ep.valid);
        // Inside the first string of the body.
        let at = valid.find('"').unwrap() + 1;
        for bad in [
            &b"\xff"[..],
            b"\xc3\x28",
            b"\xed\xa0\x80",
            b"\xe2\x82",
            b"\xc0\xaf",
        ] {
            let mut body = valid.as_bytes().to_vec();
            body.splice(at..at, bad.iter().copied());
            eprintln!("case: {}: {bad:?}", ep.name);
            let r = h
                .raw(ep.method.clone(), &ep.path, Some("application/json"), body)
                .await;
            assert_err(&r, ErrorCode::MalformedJson, "UTF-8");
        }
    }
    // A lone surrogate escape is valid JSON syntax but not a string.
    let r = h
        .raw(
            Method::POST,
            &format!("/stores/{}/secrets", fx.store),
            Some("application/json"),
            r#"[{"name":"x","value":"\ud800","scopes":["workers"]}]"#,
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.text());
    h.assert_unchanged(&before, "invalid UTF-8").await;
}

/// Each case: endpoint index (as in `body_endpoints`), body, JSON pointer named.
fn wrong_type_cases(fx: &Fixture) -> Vec<(usize, Value, &'static str)> {
    let x = &fx.secret;
    vec![
        // create store
        (0, json!({ "name": 1 }), "/name"),
        (0, json!({ "name": null }), "/name"),
        (0, json!({ "name": ["a"] }), "/name"),
        (0, json!(["fresh"]), "/0"),
        (0, json!("fresh"), "body"),
        (0, json!(42), "body"),
        // create secrets
        (
            1,
            json!([{ "name": 1, "value": "v", "scopes": ["workers"] }]),
            "/0/name",
        ),
        (
            1,
            json!([{ "name": "a", "value": 1, "scopes": ["workers"] }]),
            "/0/value",
        ),
        (
            1,
            json!([{ "name": "a", "value": {"v": 1}, "scopes": ["workers"] }]),
            "/0/value",
        ),
        (
            1,
            json!([{ "name": "a", "value": "v", "scopes": "workers" }]),
            "/0/scopes",
        ),
        (
            1,
            json!([{ "name": "a", "value": "v", "scopes": [1] }]),
            "/0/scopes/0",
        ),
        (
            1,
            json!([{ "name": "a", "value": "v", "scopes": ["workers"], "comment": 5 }]),
            "/0/comment",
        ),
        (
            1,
            json!([
                { "name": "a", "value": "v", "scopes": ["workers"] },
                { "name": "b", "value": true, "scopes": ["workers"] }
            ]),
            "/1/value",
        ),
        (1, json!([5]), "/0"),
        (1, json!(null), "body"),
        // bulk delete
        (2, json!([1]), "/0"),
        (2, json!([x, null]), "/1"),
        (2, json!({ "ids": [x] }), "body"),
        (2, json!(x), "body"),
        // update
        (3, json!({ "value": 1 }), "/value"),
        (3, json!({ "scopes": "workers" }), "/scopes"),
        (3, json!({ "scopes": [true] }), "/scopes/0"),
        (3, json!({ "comment": false }), "/comment"),
        (3, json!(7), "body"),
        // duplicate
        (4, json!({ "name": 1, "scopes": ["workers"] }), "/name"),
        (4, json!({ "name": "a", "scopes": "workers" }), "/scopes"),
        (
            4,
            json!({ "name": "a", "scopes": ["workers"], "comment": [] }),
            "/comment",
        ),
        (4, json!(null), "body"),
    ]
}

#[tokio::test]
async fn wrong_types_on_every_body_endpoint() {
    let fx = fixture().await;
    let h = &fx.h;
    let eps = fx.body_endpoints();
    let before = h.snapshot().await;
    for (i, body, pointer) in wrong_type_cases(&fx) {
        let ep = &eps[i];
        eprintln!("case: {}: {body}", ep.name);
        let r = h.json(ep.method.clone(), &ep.path, &body).await;
        assert_eq!(r.status.as_u16(), 400, "{}: {body}: {}", ep.name, r.text());
        assert_err_at(&r, ErrorCode::InvalidField, pointer);
        assert!(
            r.text().contains("invalid type"),
            "{}: {body}: {}",
            ep.name,
            r.text()
        );
    }
    h.assert_unchanged(&before, "wrong types").await;
}

/// serde accepts a JSON array in place of a struct (fields by position); the API's bodies are
/// objects, and an array where an object belongs is a wrong type like any other.
#[tokio::test]
async fn arrays_in_place_of_objects_are_refused() {
    let fx = fixture().await;
    let h = &fx.h;
    let (s, x) = (&fx.store, &fx.secret);
    let before = h.snapshot().await;
    let cases = [
        (
            "create secrets, item as array",
            Method::POST,
            format!("/stores/{s}/secrets"),
            json!([["positional", "v", ["workers"]]]),
        ),
        (
            "update as array",
            Method::PATCH,
            format!("/stores/{s}/secrets/{x}"),
            json!(["positional-value", ["workers"], "c"]),
        ),
        (
            "empty update as array",
            Method::PATCH,
            format!("/stores/{s}/secrets/{x}"),
            json!([]),
        ),
        (
            "duplicate as array",
            Method::POST,
            format!("/stores/{s}/secrets/{x}/duplicate"),
            json!(["positional", ["workers"]]),
        ),
        (
            "create store, item as array",
            Method::POST,
            "/stores".to_owned(),
            json!([["positional"]]),
        ),
    ];
    let mut failures = Vec::new();
    for (what, method, path, body) in cases {
        let r = h.json(method, &path, &body).await;
        if r.status.as_u16() != 400 {
            failures.push(format!("{what}: {body} -> {} {}", r.status, r.text()));
        } else {
            assert_err(&r, ErrorCode::InvalidField, "");
        }
    }
    assert!(failures.is_empty(), "accepted: {failures:#?}");
    h.assert_unchanged(&before, "arrays as objects").await;
}

#[tokio::test]
async fn missing_fields_on_every_body_endpoint() {
    let fx = fixture().await;
    let h = &fx.h;
    let eps = fx.body_endpoints();
    let before = h.snapshot().await;
    let cases: Vec<(usize, Value, &str, &str)> = vec![
        (0, json!({}), "body", "`name`"),
        (0, json!([{}]), "/0", "`name`"),
        (
            1,
            json!([{ "value": "v", "scopes": ["workers"] }]),
            "/0",
            "`name`",
        ),
        (
            1,
            json!([{ "name": "a", "scopes": ["workers"] }]),
            "/0",
            "`value`",
        ),
        (1, json!([{ "name": "a", "value": "v" }]), "/0", "`scopes`"),
        (
            1,
            json!([
                { "name": "a", "value": "v", "scopes": ["workers"] },
                { "name": "b", "scopes": ["workers"] }
            ]),
            "/1",
            "`value`",
        ),
        (1, json!({ "name": "a", "value": "v" }), "body", "`scopes`"),
        (4, json!({ "scopes": ["workers"] }), "body", "`name`"),
        (4, json!({ "name": "a" }), "body", "`scopes`"),
        (4, json!({}), "body", "missing field"),
    ];
    for (i, body, pointer, field) in cases {
        let ep = &eps[i];
        eprintln!("case: {}: {body}", ep.name);
        let r = h.json(ep.method.clone(), &ep.path, &body).await;
        let e = assert_err_at(&r, ErrorCode::InvalidField, pointer);
        let message = e["message"].as_str().unwrap();
        assert!(
            message.contains("missing field") && message.contains(field),
            "{}: {body}: {message}",
            ep.name
        );
    }
    h.assert_unchanged(&before, "missing fields").await;
}

#[tokio::test]
async fn unknown_fields_on_every_body_endpoint() {
    let fx = fixture().await;
    let h = &fx.h;
    let eps = fx.body_endpoints();
    let before = h.snapshot().await;
    let cases: Vec<(usize, Value, &str)> = vec![
        (0, json!({ "name": "fresh", "extra": 1 }), "extra"),
        (
            0,
            json!({ "name": "fresh", "account_id": "x" }),
            "account_id",
        ),
        (
            1,
            json!([{ "name": "a", "value": "v", "scopes": ["workers"], "extra": 1 }]),
            "extra",
        ),
        (
            1,
            json!([{ "name": "a", "value": "v", "scopes": ["workers"], "id": "0123" }]),
            "id",
        ),
        // PATCH carries no name: renaming is duplicate + delete.
        (3, json!({ "name": "renamed" }), "name"),
        (3, json!({ "comment": "c", "status": "deleted" }), "status"),
        (
            4,
            json!({ "name": "a", "scopes": ["workers"], "value": "v" }),
            "value",
        ),
    ];
    for (i, body, field) in cases {
        let ep = &eps[i];
        eprintln!("case: {}: {body}", ep.name);
        let r = h.json(ep.method.clone(), &ep.path, &body).await;
        let e = assert_err(&r, ErrorCode::InvalidField, "unknown field");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{field}`")),
            "{}: {body}: {message}",
            ep.name
        );
    }
    h.assert_unchanged(&before, "unknown fields").await;
}

/// A valid body of exactly `len` bytes (padded with trailing whitespace).
fn padded(valid: &Value, len: usize) -> Vec<u8> {
    let mut body = text(valid).into_bytes();
    assert!(body.len() <= len);
    body.resize(len, b' ');
    body
}

#[tokio::test]
async fn oversized_bodies_on_every_body_endpoint() {
    let fx = fixture().await;
    let h = &fx.h;
    let before = h.snapshot().await;
    for ep in fx.body_endpoints() {
        eprintln!("case: {}", ep.name);
        let big = padded(&ep.valid, MAX_BODY_BYTES + 1);

        // No Content-Length.
        let r = h
            .raw(
                ep.method.clone(),
                &ep.path,
                Some("application/json"),
                big.clone(),
            )
            .await;
        assert_err(&r, ErrorCode::BodyTooLarge, "exceeds");
        assert_eq!(r.status.as_u16(), 413, "{}", ep.name);

        for content_length in [big.len().to_string(), "10".to_owned(), "0".to_owned()] {
            let req = h
                .request(ep.method.clone(), &h.api(&ep.path))
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, &content_length)
                .body(Body::from(big.clone()))
                .unwrap();
            let r = h.send(req).await;
            assert_err(&r, ErrorCode::BodyTooLarge, "exceeds");
        }

        // Streamed in chunks, with no length known in advance.
        let chunks: Vec<Result<Bytes, std::io::Error>> = big
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let req = h
            .request(ep.method.clone(), &h.api(&ep.path))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap();
        let r = h.send(req).await;
        assert_err(&r, ErrorCode::BodyTooLarge, "exceeds");

        // Far over the limit.
        let huge = padded(&ep.valid, 3 * MAX_BODY_BYTES);
        let r = h
            .raw(ep.method.clone(), &ep.path, Some("application/json"), huge)
            .await;
        assert_err(&r, ErrorCode::BodyTooLarge, "exceeds");
    }
    h.assert_unchanged(&before, "oversized bodies").await;
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_accepted() {
    let h = Harness::new().await;
    let body = padded(&json!({ "name": "at-the-limit" }), MAX_BODY_BYTES);
    let r = h
        .raw(Method::POST, "/stores", Some("application/json"), body)
        .await;
    assert_eq!(assert_ok(&r)["name"], json!("at-the-limit"));

    // And a bulk create near the limit made of real values: 15 values of 64 KiB.
    let store = h.create_store("s").await;
    let value = "v".repeat(65_536);
    let items: Vec<Value> = (0..15)
        .map(|i| secret_item(&format!("BIG{i}"), &value, &["workers"]))
        .collect();
    let body = text(&Value::Array(items));
    assert!(body.len() < MAX_BODY_BYTES);
    let r = h
        .raw(
            Method::POST,
            &format!("/stores/{store}/secrets"),
            Some("application/json"),
            body,
        )
        .await;
    assert_eq!(assert_ok(&r).as_array().unwrap().len(), 15);
}

/// wrangler labels JSON `text/plain;charset=UTF-8`, some SDKs send no Content-Type and
/// `curl -d` says form-urlencoded, so the server parses the body as JSON whatever it claims;
/// only multipart, which is certainly not JSON, is refused.
#[tokio::test]
async fn multipart_is_refused_on_every_body_endpoint() {
    let fx = fixture().await;
    let h = &fx.h;
    let before = h.snapshot().await;
    for ep in fx.body_endpoints() {
        for ct in [
            "multipart/form-data; boundary=x",
            "Multipart/Form-Data; boundary=x",
            "multipart/mixed",
            " multipart/related",
        ] {
            eprintln!("case: {} with {ct:?}", ep.name);
            let r = h
                .raw(ep.method.clone(), &ep.path, Some(ct), text(&ep.valid))
                .await;
            assert_err(&r, ErrorCode::UnsupportedMediaType, "multipart");
        }
    }
    h.assert_unchanged(&before, "multipart bodies").await;
}

#[tokio::test]
async fn json_bodies_are_accepted_under_other_content_types() {
    let fx = fixture().await;
    let h = &fx.h;
    let s = &fx.store;
    for (i, ct) in [
        None,
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("Application/JSON"),
        Some("application/vnd.api+json"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("application/octet-stream"),
    ]
    .into_iter()
    .enumerate()
    {
        eprintln!("case: {ct:?}");
        let r = h
            .raw(
                Method::POST,
                "/stores",
                ct,
                text(&json!({ "name": format!("ct{i}") })),
            )
            .await;
        assert_eq!(assert_ok(&r)["name"], json!(format!("ct{i}")));
        let r = h
            .raw(
                Method::POST,
                &format!("/stores/{s}/secrets"),
                ct,
                text(&json!([secret_item(&format!("S{i}"), "v", &["workers"])])),
            )
            .await;
        assert_ok(&r);
        // Content type does not relax parsing: bad JSON is still bad.
        let r = h.raw(Method::POST, "/stores", ct, "{").await;
        assert_err(&r, ErrorCode::MalformedJson, "JSON");
    }
}

/// The server's errors name fields and types; they must not echo string contents of the body,
/// which may be a secret value sent in the wrong place.
#[tokio::test]
async fn body_errors_do_not_echo_string_contents() {
    let fx = fixture().await;
    let h = &fx.h;
    let canary = format!("s3cr3t-canary-{}", random_tag());
    let (s, x) = (&fx.store, &fx.secret);
    let cases = [
        // A client that sends the bare value as the PATCH body.
        (
            Method::PATCH,
            format!("/stores/{s}/secrets/{x}"),
            json!(canary),
        ),
        (Method::POST, format!("/stores/{s}/secrets"), json!(canary)),
        (
            Method::POST,
            format!("/stores/{s}/secrets"),
            json!([{ "name": "a", "value": "v", "scopes": canary }]),
        ),
        (
            Method::PATCH,
            format!("/stores/{s}/secrets/{x}"),
            json!({ "value": [canary] }),
        ),
        (
            Method::PATCH,
            format!("/stores/{s}/secrets/{x}"),
            json!({ "scopes": canary }),
        ),
        // Literals that look like the tail of serde's message.
        (
            Method::PATCH,
            format!("/stores/{s}/secrets/{x}"),
            json!({ "scopes": format!("x, expected {canary}") }),
        ),
        (
            Method::PATCH,
            format!("/stores/{s}/secrets/{x}"),
            json!(format!("a`b\", expected {canary}")),
        ),
        (
            Method::DELETE,
            format!("/stores/{s}/secrets"),
            json!(canary),
        ),
        (
            Method::DELETE,
            format!("/stores/{s}/secrets"),
            json!([canary]),
        ),
        (
            Method::POST,
            format!("/stores/{s}/secrets/{x}/duplicate"),
            json!(canary),
        ),
    ];
    let mut leaks = Vec::new();
    for (method, path, body) in cases {
        let r = h.json(method.clone(), &path, &body).await;
        assert_eq!(r.status.as_u16(), 400, "{method} {path}: {}", r.text());
        if contains(&r.bytes, canary.as_bytes()) {
            leaks.push(format!("{method} {path} {body} -> {}", r.text()));
        }
    }
    assert!(leaks.is_empty(), "string contents echoed: {leaks:#?}");
}
