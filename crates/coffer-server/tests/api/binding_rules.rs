//! The rules a service relies on at runtime, checked where they are made: a deploy refuses the
//! binding names `coffer run` cannot export (the one list, `BindingName::is_reserved`), and the
//! batch read names the store bindings it does not hold.

use coffer_api::ErrorCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn reserved_binding_names_are_refused_at_deploy_naming_the_binding() {
    let h = Harness::new().await;
    let store = h.create_store("prod").await;
    h.create_secrets(&store, &[secret_item("A", "value-a", &["workers"])])
        .await;
    let s = store.as_str();
    let ok = secret_binding("OK", s, "A");
    let before = h.snapshot().await;
    for (binding, body, pointer) in [
        (
            "PATH",
            json!({ "name": "svc", "secrets_store_secrets": [ok, secret_binding("PATH", s, "A")] }),
            "/secrets_store_secrets/1/binding",
        ),
        (
            "NODE_OPTIONS",
            json!({ "name": "svc", "secrets_store_secrets": [secret_binding("NODE_OPTIONS", s, "A")] }),
            "/secrets_store_secrets/0/binding",
        ),
        (
            "LD_PRELOAD",
            json!({ "name": "svc", "secrets_store_stores": [store_binding("LD_PRELOAD", s)] }),
            "/secrets_store_stores/0/binding",
        ),
        (
            "DYLD_INSERT_LIBRARIES",
            json!({ "name": "svc", "secrets_store_secrets": [secret_binding("DYLD_INSERT_LIBRARIES", s, "A")] }),
            "/secrets_store_secrets/0/binding",
        ),
        (
            "JAVA_TOOL_OPTIONS",
            json!({ "name": "svc", "secrets_store_secrets": [ok, secret_binding("JAVA_TOOL_OPTIONS", s, "A")] }),
            "/secrets_store_secrets/1/binding",
        ),
        // In any case: programs read `https_proxy` as readily as `HTTPS_PROXY`.
        (
            "https_proxy",
            json!({ "name": "svc", "secrets_store_secrets": [secret_binding("https_proxy", s, "A")] }),
            "/secrets_store_secrets/0/binding",
        ),
        (
            "Home",
            json!({ "name": "svc", "secrets_store_stores": [store_binding("Home", s)] }),
            "/secrets_store_stores/0/binding",
        ),
    ] {
        let r = h.deploy(&body).await;
        let e = assert_err_at(&r, ErrorCode::InvalidBinding, pointer);
        let message = e["message"].as_str().unwrap();
        assert_eq!(
            message,
            format!(
                "{pointer}: binding name \"{binding}\" is reserved: an environment variable of \
                 that name changes how a program is found, loaded or run (docs/bindings.md lists \
                 the reserved names)"
            )
        );
    }
    h.assert_unchanged(&before, "refused deploys").await;

    // Names that merely look alike are ordinary bindings.
    let svc = h
        .deploy_ok(&json!({
            "name": "svc",
            "secrets_store_secrets": [secret_binding("MY_PATH", s, "A"), secret_binding("OLD_LD", s, "A")],
            "secrets_store_stores": [store_binding("PATHS", s)],
        }))
        .await;
    assert_eq!(h.read_value(svc.token(), "MY_PATH").await, "value-a");
}

/// `GET /runtime/v1/bindings` holds the secret bindings; the store bindings, which it cannot
/// hold (they give secrets by name), are named in a header so that a caller can say so.
#[tokio::test]
async fn the_batch_read_names_the_store_bindings_it_does_not_hold() {
    let h = Harness::new().await;
    let store = h.create_store("prod").await;
    let other = h.create_store("other").await;
    h.create_secrets(&store, &[secret_item("A", "value-a", &["workers"])])
        .await;
    let header = |r: &Resp| {
        r.headers
            .get(coffer_api::STORE_BINDINGS_HEADER)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let both = h
        .deploy_ok(&json!({
            "name": "both",
            "secrets_store_secrets": [secret_binding("A_KEY", &store, "A")],
            "secrets_store_stores": [store_binding("ALL", &store), store_binding("OTHER_2", &other)],
        }))
        .await;
    let r = h.runtime(both.token(), "/bindings").await;
    assert_eq!(r.json(), json!({ "A_KEY": "value-a" }));
    assert_eq!(header(&r).as_deref(), Some("ALL,OTHER_2"));
    // Only secret bindings: no header.
    let secrets_only = h
        .deploy_ok(&json!({
            "name": "secrets-only",
            "secrets_store_secrets": [secret_binding("A_KEY", &store, "A")],
        }))
        .await;
    let r = h.runtime(secrets_only.token(), "/bindings").await;
    assert_eq!(r.json(), json!({ "A_KEY": "value-a" }));
    assert_eq!(header(&r), None);
    // A redeploy is seen on the next read.
    h.deploy_ok(
        &json!({ "name": "secrets-only", "secrets_store_stores": [store_binding("S", &store)] }),
    )
    .await;
    let r = h.runtime(secrets_only.token(), "/bindings").await;
    assert_eq!(r.json(), json!({}));
    assert_eq!(header(&r).as_deref(), Some("S"));
    // A single read does not carry it.
    let r = h.read_binding(both.token(), "A_KEY").await;
    assert_eq!(header(&r), None);
}
