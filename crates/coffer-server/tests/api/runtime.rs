//! The runtime API (`/runtime/v1`): a bound service reads its secrets with its service token.
//! The second permission check on every read (token, binding, secret, scope), values updated
//! without a redeploy, token rotation and revocation taking effect on the next read, and the
//! separation of service tokens and API tokens.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::http::{Method, StatusCode, header};
use coffer_api::ErrorCode;
use serde_json::json;

use crate::support::*;

/// An instance with a store of three `workers` secrets, one `ai_gateway` secret, and a service
/// `app` binding the three (`ONE`, `TWO`, `THREE`) and the store (`ALL`).
struct Rt {
    h: Harness,
    store: String,
    /// Secret name -> id.
    ids: std::collections::HashMap<String, String>,
    svc: DeployedService,
}

impl Rt {
    fn token(&self) -> &str {
        self.svc.token()
    }

    fn secret_uri(&self, name: &str) -> String {
        format!("/stores/{}/secrets/{}", self.store, self.ids[name])
    }
}

async fn rt() -> Rt {
    let h = Harness::new().await;
    let store = h.create_store("runtime").await;
    let made = h
        .create_secrets(
            &store,
            &[
                secret_item("one", "value-one", &["workers"]),
                secret_item("two", "välue \"two\"\nline 2 ✓", &["workers", "ai_gateway"]),
                secret_item("three", "value-three", &["workers"]),
                secret_item("gw-only", "value-gw", &["ai_gateway"]),
            ],
        )
        .await;
    let ids = made
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let svc = h
        .deploy_ok(&json!({
            "name": "app",
            "secrets_store_secrets": [
                secret_binding("ONE", &store, "one"),
                secret_binding("TWO", &store, "two"),
                secret_binding("THREE", &store, "three"),
            ],
            "secrets_store_stores": [store_binding("ALL", &store)],
        }))
        .await;
    Rt { h, store, ids, svc }
}

/// A token of the right shape (`coffersvc_<32 hex id>_<43 base64url>`) that was never issued.
fn unknown_service_token() -> String {
    format!("coffersvc_{}_{}", random_id(), "A".repeat(43))
}

#[tokio::test]
async fn one_binding_reads_as_plain_text() {
    let rt = rt().await;
    let h = &rt.h;
    let r = h.read_binding(rt.token(), "ONE").await;
    assert_eq!(assert_plain(&r), "value-one");
    assert_eq!(r.bytes, b"value-one", "the body is the value, nothing more");
    let r = h.read_binding(rt.token(), "TWO").await;
    assert_eq!(assert_plain(&r), "välue \"two\"\nline 2 ✓");
    // Binding names are case-sensitive.
    let r = h.read_binding(rt.token(), "one").await;
    let e = assert_err(&r, ErrorCode::BindingNotFound, "");
    assert_eq!(e["message"], json!("binding \"one\" not found"));
}

#[tokio::test]
async fn the_batch_read_returns_every_secret_binding() {
    let rt = rt().await;
    let h = &rt.h;
    let r = h.runtime(rt.token(), "/bindings").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.headers.get(header::CACHE_CONTROL).unwrap(),
        "no-store",
        "cache-control"
    );
    let ct = r
        .headers
        .get(header::CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(ct.starts_with("application/json"), "{ct}");
    assert_eq!(duplicate_key(&r.bytes), None);
    assert_eq!(
        r.json(),
        json!({
            "ONE": "value-one",
            "TWO": "välue \"two\"\nline 2 ✓",
            "THREE": "value-three",
        }),
        "secret bindings only, not the store binding"
    );
    // A service with only a store binding reads an empty object.
    let only_store = h
        .deploy_ok(&json!({ "name": "stores-only", "secrets_store_stores": [store_binding("ALL", &rt.store)] }))
        .await;
    let r = h.runtime(only_store.token(), "/bindings").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    // A trailing slash is no other route to the values.
    let r = h.runtime(rt.token(), "/bindings/").await;
    assert!(!r.status.is_success(), "{}", r.text());
}

#[tokio::test]
async fn the_batch_read_fails_as_a_whole() {
    let rt = rt().await;
    let h = &rt.h;
    // One secret loses its scope: 403 scope_denied, no values at all.
    assert_ok(
        &h.patch(&rt.secret_uri("three"), &json!({ "scopes": ["dex"] }))
            .await,
    );
    let r = h.runtime(rt.token(), "/bindings").await;
    assert_err(&r, ErrorCode::ScopeDenied, "three");
    assert!(!contains(&r.bytes, b"value-one"));
    // Another is deleted: 404 naming the secret.
    assert_deleted(&h.delete(&rt.secret_uri("one")).await);
    let r = h.runtime(rt.token(), "/bindings").await;
    assert_eq!(r.status.as_u16(), 404, "{}", r.text());
    assert_err(&r, ErrorCode::BindingNotFound, "Secret \"one\" not found");
    assert!(!contains(&r.bytes, b"value-three") && !contains(&r.bytes, b"line 2"));
    // The remaining binding still reads on its own.
    let r = h.read_binding(rt.token(), "TWO").await;
    assert_eq!(assert_plain(&r), "välue \"two\"\nline 2 ✓");
}

#[tokio::test]
async fn a_store_binding_reads_the_secrets_that_carry_the_type() {
    let rt = rt().await;
    let h = &rt.h;
    let read = async |name: &str| {
        h.runtime(rt.token(), &format!("/stores/ALL/secrets/{name}"))
            .await
    };
    assert_eq!(assert_plain(&read("one").await), "value-one");
    assert_eq!(assert_plain(&read("two").await), "välue \"two\"\nline 2 ✓");
    // A secret of the store without the service's type is not part of what the store
    // binding gives: answered exactly like a missing one, so its existence does not leak.
    let r = read("gw-only").await;
    let e = assert_err(&r, ErrorCode::BindingNotFound, "");
    assert_eq!(e["message"], json!("Secret \"gw-only\" not found"));
    assert!(!contains(&r.bytes, b"value-gw"));
    // A name the store does not hold, and names that cannot exist.
    let r = read("nope").await;
    let e = assert_err(&r, ErrorCode::BindingNotFound, "");
    assert_eq!(e["message"], json!("Secret \"nope\" not found"));
    for bad in ["a%20b", "a.b", "%C3%A9"] {
        let r = read(bad).await;
        assert_err(&r, ErrorCode::BindingNotFound, "not found");
    }
    // The store binding name must exist, and is not a secret binding (nor the reverse).
    let r = h.runtime(rt.token(), "/stores/NOPE/secrets/one").await;
    let e = assert_err(&r, ErrorCode::BindingNotFound, "");
    assert_eq!(e["message"], json!("binding \"NOPE\" not found"));
    let r = h.runtime(rt.token(), "/stores/ONE/secrets/one").await;
    let e = assert_err(&r, ErrorCode::BindingNotFound, "");
    assert_eq!(e["message"], json!("binding \"ONE\" not found"));
    let r = h.read_binding(rt.token(), "ALL").await;
    let e = assert_err(&r, ErrorCode::BindingNotFound, "");
    assert_eq!(e["message"], json!("binding \"ALL\" not found"));
    // A secret created after the deploy is readable at once; one deleted is gone at once.
    h.create_secret(&rt.store, "later", "value-later").await;
    assert_eq!(assert_plain(&read("later").await), "value-later");
    assert_deleted(&h.delete(&rt.secret_uri("one")).await);
    let r = read("one").await;
    assert_err(&r, ErrorCode::BindingNotFound, "Secret \"one\" not found");
    // Another store's secret is not reachable through this binding.
    let other = h.create_store("other").await;
    h.create_secret(&other, "elsewhere", "value-elsewhere")
        .await;
    let r = read("elsewhere").await;
    assert_err(&r, ErrorCode::BindingNotFound, "");
}

#[tokio::test]
async fn an_updated_value_is_read_on_the_very_next_read() {
    let rt = rt().await;
    let h = &rt.h;
    for i in 0..5 {
        // Read first, so that whatever is cached holds the old value.
        let before = h.read_value(rt.token(), "ONE").await;
        let next = format!("value-one-v{i}");
        assert_ne!(before, next);
        assert_ok(
            &h.patch(&rt.secret_uri("one"), &json!({ "value": next }))
                .await,
        );
        assert_eq!(h.read_value(rt.token(), "ONE").await, next, "round {i}");
        let r = h.runtime(rt.token(), "/bindings").await;
        assert_eq!(r.json()["ONE"], json!(next));
        let r = h.runtime(rt.token(), "/stores/ALL/secrets/one").await;
        assert_eq!(assert_plain(&r), next);
    }
    // A duplicate of a secret is another secret: the binding keeps reading the original.
    let r = h
        .post(
            &format!("{}/duplicate", rt.secret_uri("one")),
            &json!({ "name": "one-copy", "scopes": ["workers"] }),
        )
        .await;
    assert_ok(&r);
    assert_eq!(h.read_value(rt.token(), "ONE").await, "value-one-v4");
}

#[tokio::test]
async fn a_scope_removed_is_refused_and_a_scope_restored_reads_again() {
    let rt = rt().await;
    let h = &rt.h;
    assert_eq!(h.read_value(rt.token(), "THREE").await, "value-three");
    assert_ok(
        &h.patch(
            &rt.secret_uri("three"),
            &json!({ "scopes": ["ai_gateway"] }),
        )
        .await,
    );
    let r = h.runtime(rt.token(), "/bindings/THREE").await;
    let e = assert_err(&r, ErrorCode::ScopeDenied, "workers");
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(e["message"].as_str().unwrap().contains("three"), "{e}");
    assert!(!contains(&r.bytes, b"value-three"));
    // Through the store binding the secret is simply no longer part of the store's view.
    let r = h.runtime(rt.token(), "/stores/ALL/secrets/three").await;
    let e = assert_err(&r, ErrorCode::BindingNotFound, "");
    assert_eq!(e["message"], json!("Secret \"three\" not found"));
    assert!(!contains(&r.bytes, b"value-three"));
    // Other bindings are unaffected.
    assert_eq!(h.read_value(rt.token(), "ONE").await, "value-one");
    assert_ok(
        &h.patch(
            &rt.secret_uri("three"),
            &json!({ "scopes": ["ai_gateway", "workers"] }),
        )
        .await,
    );
    assert_eq!(h.read_value(rt.token(), "THREE").await, "value-three");

    // The type of an ai_gateway service is checked the same way.
    let gw = h
        .deploy_ok(&json!({
            "name": "gw",
            "type": "ai_gateway",
            "secrets_store_secrets": [secret_binding("TWO", &rt.store, "two")],
        }))
        .await;
    assert_eq!(
        h.read_value(gw.token(), "TWO").await,
        "välue \"two\"\nline 2 ✓"
    );
    assert_ok(
        &h.patch(&rt.secret_uri("two"), &json!({ "scopes": ["workers"] }))
            .await,
    );
    let r = h.read_binding(gw.token(), "TWO").await;
    assert_err(&r, ErrorCode::ScopeDenied, "ai_gateway");
    assert_eq!(
        h.read_value(rt.token(), "TWO").await,
        "välue \"two\"\nline 2 ✓",
        "the workers service still reads it"
    );
}

#[tokio::test]
async fn a_deleted_secret_is_not_found_by_its_secret_name() {
    let rt = rt().await;
    let h = &rt.h;
    assert_eq!(h.read_value(rt.token(), "ONE").await, "value-one");
    assert_deleted(&h.delete(&rt.secret_uri("one")).await);
    let r = h.read_binding(rt.token(), "ONE").await;
    let e = assert_err(&r, ErrorCode::BindingNotFound, "");
    assert_eq!(e["message"], json!("Secret \"one\" not found"));
    // A binding the service never had: a missing binding, named as asked for.
    let r = h.read_binding(rt.token(), "NEVER").await;
    let e = assert_err(&r, ErrorCode::BindingNotFound, "");
    assert_eq!(e["message"], json!("binding \"NEVER\" not found"));
    // The whole store deleted: every binding into it is gone.
    assert_deleted(&h.delete(&format!("/stores/{}?force=true", rt.store)).await);
    for (path, name) in [
        ("/bindings/TWO", "two"),
        ("/bindings/THREE", "three"),
        ("/stores/ALL/secrets/two", "two"),
    ] {
        let r = h.runtime(rt.token(), path).await;
        let e = assert_err(&r, ErrorCode::BindingNotFound, "");
        assert_eq!(
            e["message"],
            json!(format!("Secret \"{name}\" not found")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn rotation_and_revocation_take_effect_on_the_next_read() {
    let rt = rt().await;
    let h = &rt.h;
    let first = rt.token().to_owned();
    assert_eq!(h.read_value(&first, "ONE").await, "value-one");

    // Rotate (revoking): the old token fails at once, the new one reads.
    let second = h.rotate(&rt.svc.id, None).await["service_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in ["/bindings/ONE", "/bindings", "/stores/ALL/secrets/one"] {
        let r = h.runtime(&first, path).await;
        assert_err(&r, ErrorCode::Unauthenticated, "");
    }
    assert_eq!(h.read_value(&second, "ONE").await, "value-one");

    // Rotate without revoking: both read.
    let third = h
        .rotate(&rt.svc.id, Some(&json!({ "revoke_previous": false })))
        .await["service_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(h.read_value(&second, "ONE").await, "value-one");
    assert_eq!(h.read_value(&third, "ONE").await, "value-one");

    // Revoke one: it fails, the other reads.
    let r = h
        .delete(&format!(
            "/services/{}/tokens/{}",
            rt.svc.id,
            service_token_id(&second)
        ))
        .await;
    assert_ok_list(&r);
    let r = h.read_binding(&second, "ONE").await;
    assert_err(&r, ErrorCode::Unauthenticated, "revoked");
    assert_eq!(h.read_value(&third, "ONE").await, "value-one");

    // Revoke all.
    let fourth = h
        .rotate(&rt.svc.id, Some(&json!({ "revoke_previous": false })))
        .await["service_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        h.read_value(&fourth, "TWO").await,
        "välue \"two\"\nline 2 ✓"
    );
    assert_ok_list(&h.delete(&format!("/services/{}/tokens", rt.svc.id)).await);
    for t in [&first, &second, &third, &fourth] {
        let r = h.read_binding(t, "ONE").await;
        assert_err(&r, ErrorCode::Unauthenticated, "");
    }

    // A new token after that, then the service deleted: its token fails.
    let fifth = h.rotate(&rt.svc.id, None).await["service_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(h.read_value(&fifth, "ONE").await, "value-one");
    assert_ok(&h.delete(&format!("/services/{}", rt.svc.id)).await);
    let r = h.read_binding(&fifth, "ONE").await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
}

#[tokio::test]
async fn an_api_token_is_the_wrong_kind_on_the_runtime_api() {
    let rt = rt().await;
    let h = &rt.h;
    let reporter = h
        .issue_token(&h.account, "reporter", "secrets_store_reporter")
        .await;
    let deployer = h
        .issue_token(&h.account, "deployer", "secrets_store_deployer")
        .await;
    for (who, token) in [
        ("operator", h.token.clone()),
        ("reporter", reporter.value.clone()),
        ("deployer", deployer.value.clone()),
    ] {
        for path in ["/bindings/ONE", "/bindings", "/stores/ALL/secrets/one"] {
            let r = h.runtime(&token, path).await;
            let e = assert_err(&r, ErrorCode::WrongTokenKind, "");
            assert!(
                !contains(&r.bytes, b"value-one") && !contains(&r.bytes, token.as_bytes()),
                "{who} {path}: {e}"
            );
        }
    }
    // An API token that is not valid is just invalid: a guess learns nothing.
    let forged = format!(
        "{}{}",
        &reporter.value[.."coffer_".len() + 33],
        "A".repeat(43)
    );
    let unknown = format!("coffer_{}_{}", random_id(), "A".repeat(43));
    for token in [&forged, &unknown] {
        let r = h.read_binding(token, "ONE").await;
        assert_err(&r, ErrorCode::Unauthenticated, "");
    }
    // A revoked API token too.
    let r = h
        .raw_abs(
            Method::DELETE,
            &tokens_uri(&h.account, Some(&reporter.id)),
            None,
            "",
        )
        .await;
    assert_ok(&r);
    let r = h.read_binding(&reporter.value, "ONE").await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
}

#[tokio::test]
async fn a_service_token_is_the_wrong_kind_on_the_control_plane() {
    let rt = rt().await;
    let h = &rt.h;
    let svc = rt.svc.id.clone();
    let uris = [
        V4.to_owned(),
        account_uri(&h.account),
        tokens_uri(&h.account, None),
        format!("{V4}/{}/audit_logs", h.account),
        h.api("/stores"),
        h.api(&rt.secret_uri("one")),
        h.api("/services"),
        h.api(&format!("/services/{svc}")),
        h.api(&format!("/services/{svc}/tokens")),
    ];
    let forged = format!(
        "{}{}",
        &rt.token()[.."coffersvc_".len() + 33],
        "A".repeat(43)
    );
    for uri in &uris {
        let r = h.get_as(rt.token(), uri).await;
        let e = assert_err(&r, ErrorCode::WrongTokenKind, "runtime");
        assert!(!contains(&r.bytes, rt.token().as_bytes()), "{uri}: {e}");
        for bad in [unknown_service_token(), forged.clone()] {
            let r = h.get_as(&bad, uri).await;
            assert_err(&r, ErrorCode::Unauthenticated, "");
        }
    }
    // Nor can it write: a deploy, a rotation, a delete.
    let before = h.snapshot().await;
    let auth = format!("Bearer {}", rt.token());
    let r = h
        .send_as(
            Method::POST,
            &h.api("/services"),
            Some(&auth),
            Some(&deploy_body("evil", &[("X", &rt.store, "one")])),
        )
        .await;
    assert_err(&r, ErrorCode::WrongTokenKind, "");
    let r = h
        .send_as(
            Method::POST,
            &h.api(&format!("/services/{svc}/tokens")),
            Some(&auth),
            Some(&json!({})),
        )
        .await;
    assert_err(&r, ErrorCode::WrongTokenKind, "");
    let r = h
        .send_as(
            Method::DELETE,
            &h.api(&format!("/services/{svc}")),
            Some(&auth),
            None,
        )
        .await;
    assert_err(&r, ErrorCode::WrongTokenKind, "");
    h.assert_unchanged(&before, "a service token on the control plane")
        .await;
    // A revoked service token is merely invalid there.
    let new = h.rotate(&svc, None).await;
    let r = h.get_as(rt.token(), &h.api("/stores")).await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
    let new = new["service_token"].as_str().unwrap();
    let r = h.get_as(new, &h.api("/stores")).await;
    assert_err(&r, ErrorCode::WrongTokenKind, "");
}

#[tokio::test]
async fn bad_credentials_are_401_on_the_runtime_api() {
    let rt = rt().await;
    let h = &rt.h;
    let token = rt.token().to_owned();
    let prefix = &token[.."coffersvc_".len() + 33];
    let forged = format!("{prefix}{}", "A".repeat(43));
    assert_ne!(forged, token);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("empty", Some(String::new())),
        ("basic scheme", Some(format!("Basic {token}"))),
        ("token without scheme", Some(token.clone())),
        ("scheme only", Some("Bearer".into())),
        ("scheme and blank", Some("Bearer   ".into())),
        ("malformed token", Some("Bearer not-a-token".into())),
        ("prefix only", Some("Bearer coffersvc_".into())),
        (
            "truncated token",
            Some(format!("Bearer {}", &token[..token.len() - 1])),
        ),
        ("token with extra", Some(format!("Bearer {token}x"))),
        (
            "unknown token",
            Some(format!("Bearer {}", unknown_service_token())),
        ),
        ("forged secret", Some(format!("Bearer {forged}"))),
        ("two tokens", Some(format!("Bearer {token} {token}"))),
        (
            "another prefix",
            Some(format!("Bearer coffersvx_{}", &token["coffersvc_".len()..])),
        ),
    ];
    for path in ["/bindings/ONE", "/bindings", "/stores/ALL/secrets/one"] {
        for (what, auth) in &cases {
            let r = h.runtime_as(auth.as_deref(), path).await;
            let e = assert_err(&r, ErrorCode::Unauthenticated, "");
            assert_eq!(
                r.headers
                    .get(header::WWW_AUTHENTICATE)
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{what} on {path}: WWW-Authenticate"
            );
            assert!(
                !contains(&r.bytes, token.as_bytes())
                    && !contains(&r.bytes, forged.as_bytes())
                    && !contains(&r.bytes, b"value-one"),
                "{what} on {path}: {e}"
            );
        }
    }
    // A token of another instance is unknown here.
    let other = Harness::new().await;
    let store = other.create_store("s").await;
    other.create_secret(&store, "one", "other-instance").await;
    let theirs = other.deploy_secrets("app", &[("ONE", &store, "one")]).await;
    let r = h.read_binding(theirs.token(), "ONE").await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
    let r = other.read_binding(&token, "ONE").await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
    // And the real one still works, with any case of the scheme.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = h
            .runtime_as(Some(&format!("{scheme} {token}")), "/bindings/ONE")
            .await;
        assert_eq!(assert_plain(&r), "value-one");
    }
}

#[tokio::test]
async fn another_accounts_service_reads_only_its_own_account() {
    let rt = rt().await;
    let h = &rt.h;
    let (b, b_admin, b_store) = h.other_account_with_secret("b-value-one").await;
    let b_api = |rel: &str| format!("{V4}/{b}/secrets_store{rel}");

    // B cannot bind A's store, by id, even knowing it: the store is not in B's account.
    let r = h
        .send_as(
            Method::POST,
            &b_api("/services"),
            Some(&b_admin.bearer()),
            Some(&json!({
                "name": "thief",
                "secrets_store_secrets": [secret_binding("ONE", &rt.store, "one")],
            })),
        )
        .await;
    let e = assert_err(&r, ErrorCode::BindingAuthorizationFailed, "binding ONE");
    assert!(e["message"].as_str().unwrap().contains("not found"), "{e}");
    let r = h
        .send_as(
            Method::POST,
            &b_api("/services"),
            Some(&b_admin.bearer()),
            Some(&json!({
                "name": "thief",
                "secrets_store_stores": [store_binding("ALL", &rt.store)],
            })),
        )
        .await;
    assert_err(&r, ErrorCode::BindingAuthorizationFailed, "binding ALL");

    // B's service, with the same binding names as A's, reads B's values only.
    let r = h
        .send_as(
            Method::POST,
            &b_api("/services"),
            Some(&b_admin.bearer()),
            Some(&json!({
                "name": "app",
                "secrets_store_secrets": [secret_binding("ONE", &b_store, "one")],
                "secrets_store_stores": [store_binding("ALL", &b_store)],
            })),
        )
        .await;
    let b_token = assert_service_token(&assert_ok(&r)["service_token"]);
    assert_eq!(h.read_value(&b_token, "ONE").await, "b-value-one");
    let r = h.runtime(&b_token, "/bindings").await;
    assert_eq!(r.json(), json!({ "ONE": "b-value-one" }));
    for path in [
        "/bindings/TWO",
        "/stores/ALL/secrets/two",
        "/stores/ALL/secrets/three",
    ] {
        let r = h.runtime(&b_token, path).await;
        assert_err(&r, ErrorCode::BindingNotFound, "");
        assert!(!contains(&r.bytes, b"value-t"), "{path}");
    }
    // And A's token reads A's.
    assert_eq!(h.read_value(rt.token(), "ONE").await, "value-one");
    // B's service token on A's control plane: the wrong kind, not a way in.
    let r = h.get_as(&b_token, &h.api("/services")).await;
    assert_err(&r, ErrorCode::WrongTokenKind, "");
}

#[tokio::test]
async fn unknown_runtime_routes_and_methods() {
    let rt = rt().await;
    let h = &rt.h;
    let auth = format!("Bearer {}", rt.token());
    for (method, path) in [
        (Method::POST, "/bindings/ONE"),
        (Method::PUT, "/bindings/ONE"),
        (Method::DELETE, "/bindings"),
    ] {
        let r = h
            .send_as(
                method.clone(),
                &format!("{RUNTIME}{path}"),
                Some(&auth),
                None,
            )
            .await;
        assert_err(&r, ErrorCode::MethodNotAllowed, "");
    }
    for path in ["/secrets/ONE", "/bindings/ONE/extra", "/stores/ALL/secrets"] {
        let r = h.runtime(rt.token(), path).await;
        assert_err(&r, ErrorCode::RouteNotFound, "");
    }
}

/// Path segments that do not percent-decode to UTF-8 cannot name a binding or a secret; the
/// answer is still an error in the v4 envelope (as every runtime error is), not the framework's
/// plain-text rejection, and it says nothing of any value.
#[tokio::test]
async fn paths_that_are_not_utf8_are_answered_in_the_envelope() {
    let rt = rt().await;
    let h = &rt.h;
    let mut failures = Vec::new();
    for path in [
        "/bindings/%FF",
        "/bindings/ONE%C3%28",
        "/stores/%FF/secrets/one",
        "/stores/ALL/secrets/%FF",
        "/stores/ALL/secrets/one%ED%A0%80",
    ] {
        let r = h.runtime(rt.token(), path).await;
        let ct = r
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let v: Option<serde_json::Value> = serde_json::from_slice(&r.bytes).ok();
        let enveloped = v.as_ref().is_some_and(|v| {
            v["success"] == json!(false)
                && v["result"].is_null()
                && v["errors"][0]["code"].as_u64().is_some_and(|c| c >= 1000)
        });
        if !r.status.is_client_error() || ct != "application/json" || !enveloped {
            failures.push(format!("{path}: {} ({ct}) {}", r.status, r.text()));
        }
        assert!(!contains(&r.bytes, b"value-"), "{path}: {}", r.text());
    }
    assert!(
        failures.is_empty(),
        "not in the v4 envelope:\n{}",
        failures.join("\n")
    );
}

/// The runtime API's 401s say what it wants: a service token. Telling the caller to send an
/// API token sends it to a 403 wrong_token_kind.
#[tokio::test]
async fn runtime_401s_do_not_ask_for_an_api_token() {
    let rt = rt().await;
    let h = &rt.h;
    for auth in [None, Some("Basic abc"), Some("Bearer nope")] {
        let r = h.runtime_as(auth, "/bindings/ONE").await;
        let e = assert_err(&r, ErrorCode::Unauthenticated, "");
        let m = e["message"].as_str().unwrap();
        assert!(!m.contains("API token"), "{auth:?}: {m}");
    }
}

/// Readers hammer one binding while its value is updated step by step: every read returns one
/// of the values written, never a value older than the last update acknowledged before the
/// read was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reads_during_updates_see_no_stale_value() {
    let rt = rt().await;
    let h = Arc::new(rt.h);
    let token = rt.svc.token.clone().unwrap();
    let secret_uri = format!("/stores/{}/secrets/{}", rt.store, rt.ids["one"]);
    let tag = random_tag();
    let value = |i: usize| format!("v-{tag}-{i:04}");
    assert_ok(&h.patch(&secret_uri, &json!({ "value": value(0) })).await);

    let acked = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for reader in 0..6 {
        let (h, token, acked, done) = (h.clone(), token.clone(), acked.clone(), done.clone());
        let tag = tag.clone();
        readers.push(tokio::spawn(async move {
            let mut reads = 0usize;
            let mut errors = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let floor = acked.load(Ordering::SeqCst);
                let path = match reader % 3 {
                    0 => "/bindings/ONE",
                    1 => "/bindings",
                    _ => "/stores/ALL/secrets/one",
                };
                let r = h.runtime(&token, path).await;
                if r.status != StatusCode::OK {
                    errors.push(format!("{path}: {} {}", r.status, r.text()));
                    continue;
                }
                let got = if path == "/bindings" {
                    r.json()["ONE"].as_str().unwrap_or_default().to_owned()
                } else {
                    r.text()
                };
                let Some(n) = got
                    .strip_prefix(&format!("v-{tag}-"))
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    errors.push(format!("{path}: a value never written: {got:?}"));
                    continue;
                };
                if n < floor {
                    errors.push(format!(
                        "{path}: read version {n} after version {floor} was acknowledged"
                    ));
                }
                reads += 1;
                // A read served from the cache never waits, so it never yields: without this
                // the readers would hold every worker thread, and the tasks that drive
                // PostgreSQL's connections (which the updates need) would starve.
                tokio::task::yield_now().await;
            }
            (reads, errors)
        }));
    }
    let updates = 60;
    for i in 1..=updates {
        let r = h.patch(&secret_uri, &json!({ "value": value(i) })).await;
        assert_ok(&r);
        acked.store(i, Ordering::SeqCst);
        // Right after the acknowledgement, this task's own read sees it.
        assert_eq!(h.read_value(&token, "ONE").await, value(i));
        tokio::task::yield_now().await;
    }
    done.store(true, Ordering::SeqCst);
    let mut total = 0;
    let mut errors = Vec::new();
    for r in readers {
        let (n, e) = r.await.unwrap();
        total += n;
        errors.extend(e);
    }
    assert!(
        errors.is_empty(),
        "{} bad reads of {}:\n{}",
        errors.len(),
        total + errors.len(),
        errors
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(total >= updates, "the readers hardly ran: {total} reads");
    assert_eq!(h.read_value(&token, "ONE").await, value(updates));
}
