//! Well-formed bodies with invalid field values: names, scopes, values, comments. Each is
//! refused with its own code, a message naming the field, and writes nothing; the boundary
//! values are accepted.

use coffer_api::ErrorCode;
use serde_json::{Value, json};

use crate::support::*;

const BAD_NAMES: [&str; 9] = [
    "a b",
    "a.b",
    "é",
    "tab\there",
    "semi;colon",
    "quote\"",
    "new\nline",
    "a+b",
    "emoji😀",
];

#[tokio::test]
async fn bad_names_on_create_store_create_secret_and_duplicate() {
    let fx = fixture().await;
    let h = &fx.h;
    let (s, x) = (&fx.store, &fx.secret);
    let before = h.snapshot().await;
    let too_long = "n".repeat(256);
    let mut cases: Vec<(&str, &str)> = BAD_NAMES.iter().map(|n| (*n, "letters")).collect();
    cases.push(("", "empty"));
    cases.push((&too_long, "255"));
    for (name, needle) in cases {
        eprintln!("case: {name:?}");
        let r = h.post("/stores", &json!({ "name": name })).await;
        let e = assert_err_at(&r, ErrorCode::InvalidName, "/name");
        assert!(e["message"].as_str().unwrap().contains(needle), "{e}");

        let r = h.post("/stores", &json!([{ "name": name }])).await;
        assert_err_at(&r, ErrorCode::InvalidName, "/0/name");

        let r = h
            .post(
                &format!("/stores/{s}/secrets"),
                &json!([
                    secret_item("fine", "v", &["workers"]),
                    secret_item(name, "v", &["workers"])
                ]),
            )
            .await;
        let e = assert_err_at(&r, ErrorCode::InvalidName, "/1/name");
        assert!(e["message"].as_str().unwrap().contains(needle), "{e}");

        let r = h
            .post(
                &format!("/stores/{s}/secrets/{x}/duplicate"),
                &json!({ "name": name, "scopes": ["workers"] }),
            )
            .await;
        assert_err_at(&r, ErrorCode::InvalidName, "/name");
    }
    h.assert_unchanged(&before, "bad names").await;

    // The longest name is accepted everywhere.
    let longest = "n".repeat(255);
    let r = h.post("/stores", &json!({ "name": longest })).await;
    assert_eq!(assert_ok(&r)["name"], json!(longest));
    let created = h.create_secret(s, &longest, "v").await;
    assert_eq!(created["name"], json!(longest));
    let r = h
        .post(
            &format!("/stores/{s}/secrets/{x}/duplicate"),
            &json!({ "name": format!("{}m", "n".repeat(254)), "scopes": ["workers"] }),
        )
        .await;
    assert_ok(&r);
}

#[tokio::test]
async fn bad_scopes_on_create_update_duplicate_and_list() {
    let fx = fixture().await;
    let h = &fx.h;
    let (s, x) = (&fx.store, &fx.secret);
    let before = h.snapshot().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!([]), "at least one"),
        (json!(["nope"]), "nope"),
        (json!(["Workers"]), "Workers"),
        (json!(["workers", "nope"]), "nope"),
        (json!([""]), "unknown scope"),
        (json!(["workers "]), "unknown scope"),
    ];
    for (scopes, needle) in cases {
        eprintln!("case: {scopes}");
        let r = h
            .post(
                &format!("/stores/{s}/secrets"),
                &json!([{ "name": "a", "value": "v", "scopes": scopes }]),
            )
            .await;
        let e = assert_err_at(&r, ErrorCode::InvalidScope, "/0/scopes");
        assert!(e["message"].as_str().unwrap().contains(needle), "{e}");

        let r = h
            .patch(
                &format!("/stores/{s}/secrets/{x}"),
                &json!({ "scopes": scopes }),
            )
            .await;
        let e = assert_err_at(&r, ErrorCode::InvalidScope, "/scopes");
        assert!(e["message"].as_str().unwrap().contains(needle), "{e}");

        let r = h
            .post(
                &format!("/stores/{s}/secrets/{x}/duplicate"),
                &json!({ "name": "copy", "scopes": scopes }),
            )
            .await;
        assert_err_at(&r, ErrorCode::InvalidScope, "/scopes");
    }
    for q in [
        "scopes=nope",
        "scopes=workers,nope",
        "scopes=workers&scopes=WORKERS",
    ] {
        eprintln!("case: {q}");
        let r = h.get(&format!("/stores/{s}/secrets?{q}")).await;
        assert_err_at(&r, ErrorCode::InvalidScope, "scopes");
    }
    h.assert_unchanged(&before, "bad scopes").await;

    // Every known scope is accepted; repeats collapse.
    let all = [
        "workers",
        "ai_gateway",
        "dex",
        "access",
        "containers",
        "websearch",
    ];
    let created = h
        .create_secrets(
            s,
            &[
                json!({ "name": "all", "value": "v", "scopes": all }),
                json!({ "name": "twice", "value": "v", "scopes": ["dex", "dex"] }),
            ],
        )
        .await;
    let mut expected: Vec<&str> = all.to_vec();
    expected.sort();
    assert_eq!(scopes_of(&created[0]), expected);
    assert_eq!(created[1]["scopes"], json!(["dex"]));
}

#[tokio::test]
async fn bad_values_on_create_and_update() {
    let fx = fixture().await;
    let h = &fx.h;
    let (s, x) = (&fx.store, &fx.secret);
    let before = h.snapshot().await;
    let over = "v".repeat(65_537);
    let over_multibyte = format!("{}a", "é".repeat(32_768));
    let cases: Vec<(&str, &str)> =
        vec![("", "empty"), (&over, "65536"), (&over_multibyte, "65537")];
    for (value, needle) in cases {
        eprintln!("case: value of {} bytes", value.len());
        let r = h
            .post(
                &format!("/stores/{s}/secrets"),
                &json!([
                    secret_item("ok", "v", &["workers"]),
                    secret_item("bad", value, &["workers"])
                ]),
            )
            .await;
        let e = assert_err_at(&r, ErrorCode::InvalidValue, "/1/value");
        assert!(e["message"].as_str().unwrap().contains(needle), "{e}");

        let r = h
            .patch(
                &format!("/stores/{s}/secrets/{x}"),
                &json!({ "value": value }),
            )
            .await;
        let e = assert_err_at(&r, ErrorCode::InvalidValue, "/value");
        assert!(e["message"].as_str().unwrap().contains(needle), "{e}");
    }
    h.assert_unchanged(&before, "bad values").await;

    // 65,536 bytes is accepted, counted in bytes (not characters).
    let max = "v".repeat(65_536);
    let max_multibyte = "é".repeat(32_768);
    let created = h
        .create_secrets(
            s,
            &[
                secret_item("max", &max, &["workers"]),
                secret_item("max-mb", &max_multibyte, &["workers"]),
                secret_item("one", "x", &["workers"]),
            ],
        )
        .await;
    assert_eq!(created.len(), 3);
    let r = h
        .patch(
            &format!("/stores/{s}/secrets/{x}"),
            &json!({ "value": max }),
        )
        .await;
    assert_ok(&r);
    // Whitespace and any Unicode are values like any other.
    let r = h
        .patch(
            &format!("/stores/{s}/secrets/{x}"),
            &json!({ "value": " \n\t\u{0}🔑 " }),
        )
        .await;
    assert_ok(&r);
}

#[tokio::test]
async fn bad_comments_on_create_update_and_duplicate() {
    let fx = fixture().await;
    let h = &fx.h;
    let (s, x) = (&fx.store, &fx.secret);
    let before = h.snapshot().await;
    let over = "c".repeat(1025);
    let over_multibyte = "é".repeat(513);
    let cases: Vec<(&str, &str)> = vec![
        (&over, "1024"),
        (&over_multibyte, "1024"),
        ("bell\u{7}", "control"),
        ("nul\u{0}", "control"),
        ("esc\u{1b}[31m", "control"),
    ];
    for (comment, needle) in cases {
        eprintln!("case: comment {comment:?}");
        let r = h
            .post(
                &format!("/stores/{s}/secrets"),
                &json!([{ "name": "a", "value": "v", "scopes": ["workers"], "comment": comment }]),
            )
            .await;
        let e = assert_err_at(&r, ErrorCode::InvalidComment, "/0/comment");
        assert!(e["message"].as_str().unwrap().contains(needle), "{e}");

        let r = h
            .patch(
                &format!("/stores/{s}/secrets/{x}"),
                &json!({ "comment": comment }),
            )
            .await;
        assert_err_at(&r, ErrorCode::InvalidComment, "/comment");

        let r = h
            .post(
                &format!("/stores/{s}/secrets/{x}/duplicate"),
                &json!({ "name": "copy", "scopes": ["workers"], "comment": comment }),
            )
            .await;
        assert_err_at(&r, ErrorCode::InvalidComment, "/comment");
    }
    h.assert_unchanged(&before, "bad comments").await;

    let max = "c".repeat(1024);
    let r = h
        .post(
            &format!("/stores/{s}/secrets"),
            &json!([{ "name": "a", "value": "v", "scopes": ["workers"], "comment": max }]),
        )
        .await;
    assert_eq!(assert_ok(&r)[0]["comment"], json!(max));
    let multiline = "line one\n\tline two";
    let r = h
        .patch(
            &format!("/stores/{s}/secrets/{x}"),
            &json!({ "comment": multiline }),
        )
        .await;
    assert_eq!(assert_ok(&r)["comment"], json!(multiline));
    let r = h
        .post(
            &format!("/stores/{s}/secrets/{x}/duplicate"),
            &json!({ "name": "copy", "scopes": ["workers"], "comment": "é".repeat(512) }),
        )
        .await;
    assert_ok(&r);
}

#[tokio::test]
async fn value_errors_never_echo_the_value() {
    let fx = fixture().await;
    let h = &fx.h;
    let (s, x) = (&fx.store, &fx.secret);
    let canary = format!("s3cr3t-canary-{}", random_tag());
    let long = canary.repeat(65_536 / canary.len() + 1);
    let responses = vec![
        h.post(
            &format!("/stores/{s}/secrets"),
            &json!([secret_item("EXISTING", &canary, &["workers"])]),
        )
        .await,
        h.post(
            &format!("/stores/{s}/secrets"),
            &json!([secret_item("bad name", &canary, &["workers"])]),
        )
        .await,
        h.post(
            &format!("/stores/{s}/secrets"),
            &json!([secret_item("ok", &canary, &["nope"])]),
        )
        .await,
        h.post(
            &format!("/stores/{s}/secrets"),
            &json!([secret_item("ok", &long, &["workers"])]),
        )
        .await,
        h.patch(
            &format!("/stores/{s}/secrets/{x}"),
            &json!({ "value": long }),
        )
        .await,
        h.patch(
            &format!("/stores/{s}/secrets/{x}"),
            &json!({ "value": canary, "comment": "c".repeat(2000) }),
        )
        .await,
        h.patch(
            &format!("/stores/{s}/secrets/{}", random_id()),
            &json!({ "value": canary }),
        )
        .await,
        h.post(
            &format!("/stores/{}/secrets", random_id()),
            &json!([secret_item("ok", &canary, &["workers"])]),
        )
        .await,
    ];
    for r in responses {
        assert!(!r.status.is_success(), "{}", r.text());
        assert!(
            !contains(&r.bytes, canary.as_bytes()),
            "value echoed: {}",
            r.text()
        );
    }
}
