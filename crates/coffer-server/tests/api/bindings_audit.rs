//! What deploys, token changes and runtime reads leave in the audit log (`bind`, `unbind`,
//! service and service-token entries, aggregated `access` entries), and that no response,
//! header, log line, audit entry or byte of the data dir carries a secret value or a service
//! token where it should not.

use axum::http::{Method, StatusCode};
use coffer_api::ErrorCode;
use serde_json::{Value, json};

use crate::secrecy::{assert_absent, captured, captured_logs};
use crate::support::*;

// ---- helpers ----

/// The request id the server gave a response.
#[track_caller]
fn rid(r: &Resp) -> String {
    r.headers
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .unwrap()
        .to_owned()
}

fn by_request<'a>(entries: &'a [Value], request_id: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["request_id"].as_str() == Some(request_id))
        .collect()
}

/// The entries with this action and, if given, this binding.
fn with<'a>(entries: &[&'a Value], action: &str, binding: Option<&str>) -> Vec<&'a Value> {
    entries
        .iter()
        .copied()
        .filter(|e| {
            e["action"] == json!(action)
                && binding.is_none_or(|b| e["resource"]["binding"] == json!(b))
        })
        .collect()
}

#[track_caller]
fn only<'a>(found: Vec<&'a Value>, what: &str) -> &'a Value {
    assert_eq!(found.len(), 1, "{what}: exactly one entry: {found:#?}");
    found[0]
}

/// The `access` entries written since `after` (a seq).
fn access_entries(entries: &[Value], after: u64) -> Vec<&Value> {
    entries
        .iter()
        .filter(|e| e["action"] == json!("access") && e["seq"].as_u64().unwrap() > after)
        .collect()
}

fn last_seq(entries: &[Value]) -> u64 {
    entries.last().map_or(0, |e| e["seq"].as_u64().unwrap())
}

// ---- deploys and tokens ----

#[tokio::test]
async fn deploys_record_the_service_its_bindings_and_its_token() {
    let h = Harness::new().await;
    let init_id = h.token["coffer_".len().."coffer_".len() + 32].to_owned();
    let store = h.create_store("audited").await;
    let made = h
        .create_secrets(
            &store,
            &[
                secret_item("A", "value-a", &["workers"]),
                secret_item("B", "value-b", &["workers"]),
                secret_item("C", "value-c", &["workers"]),
            ],
        )
        .await;
    let id_of = |name: &str| {
        made.iter().find(|s| s["name"] == json!(name)).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // First deploy.
    let r = h
        .deploy(&json!({
            "name": "api",
            "secrets_store_secrets": [
                secret_binding("A_KEY", &store, "A"),
                secret_binding("B_KEY", &store, "B"),
            ],
            "secrets_store_stores": [store_binding("ALL", &store)],
        }))
        .await;
    let result = assert_ok(&r);
    let service = result["id"].as_str().unwrap().to_owned();
    let token = result["service_token"].as_str().unwrap().to_owned();
    let rid_create = rid(&r);

    // Redeploy: A_KEY unchanged, B_KEY now C, NEW added, ALL removed.
    let r = h
        .deploy(&json!({
            "name": "api",
            "secrets_store_secrets": [
                secret_binding("A_KEY", &store, "A"),
                secret_binding("B_KEY", &store, "C"),
                secret_binding("NEW", &store, "B"),
            ],
        }))
        .await;
    assert_ok(&r);
    let rid_update = rid(&r);

    // Refused redeploy.
    let r = h
        .deploy(&deploy_body("api", &[("MISSING", &store, "nope")]))
        .await;
    assert_err(&r, ErrorCode::BindingAuthorizationFailed, "binding MISSING");
    let rid_denied = rid(&r);
    // Refused for the role.
    let admin = h
        .issue_token(&h.account, "store-admin", "secrets_store_admin")
        .await;
    let r = h
        .send_as(
            Method::POST,
            &h.api("/services"),
            Some(&admin.bearer()),
            Some(&deploy_body("api", &[("A_KEY", &store, "A")])),
        )
        .await;
    assert_err(
        &r,
        ErrorCode::BindingAuthorizationFailed,
        "secrets_store_admin",
    );
    let rid_role = rid(&r);

    // Rotate, rotate keeping, revoke one, revoke all, delete.
    let r = h
        .post(&format!("/services/{service}/tokens"), &json!({}))
        .await;
    let second = assert_ok(&r)["id"].as_str().unwrap().to_owned();
    let rid_rotate = rid(&r);
    let r = h
        .post(
            &format!("/services/{service}/tokens"),
            &json!({ "revoke_previous": false }),
        )
        .await;
    let third = assert_ok(&r)["id"].as_str().unwrap().to_owned();
    let rid_rotate_keep = rid(&r);
    let r = h
        .delete(&format!("/services/{service}/tokens/{second}"))
        .await;
    assert_ok_list(&r);
    let rid_revoke_one = rid(&r);
    let r = h.delete(&format!("/services/{service}/tokens")).await;
    assert_ok_list(&r);
    let rid_revoke_all = rid(&r);
    let r = h.delete(&format!("/services/{service}")).await;
    assert_ok(&r);
    let rid_delete = rid(&r);

    let (entries, raw) = h.audit_entries_all(&h.account).await;
    let first_token = service_token_id(&token);

    // Every entry of the successful requests: by the init token, a success, naming the
    // service.
    for id in [
        &rid_create,
        &rid_update,
        &rid_rotate,
        &rid_rotate_keep,
        &rid_revoke_one,
        &rid_revoke_all,
        &rid_delete,
    ] {
        let found = by_request(&entries, id);
        assert!(!found.is_empty(), "no entry for request {id}");
        for e in found {
            assert_eq!(e["outcome"], json!("success"), "{e}");
            assert_eq!(e["actor"]["token_id"], json!(init_id), "{e}");
            assert_eq!(e["resource"]["service_id"], json!(service), "{e}");
            assert_eq!(e["resource"]["service_name"], json!("api"), "{e}");
        }
    }

    // The first deploy: create service, bind x3, create token.
    let found = by_request(&entries, &rid_create);
    assert_eq!(found.len(), 5, "{found:#?}");
    let e = only(
        with(&found, "create", None)
            .into_iter()
            .filter(|e| e["resource"]["type"] == json!("service"))
            .collect(),
        "create service",
    );
    assert!(e["resource"].get("binding").is_none(), "{e}");
    for (binding, secret) in [("A_KEY", "A"), ("B_KEY", "B")] {
        let e = only(with(&found, "bind", Some(binding)), binding);
        assert_eq!(e["resource"]["type"], json!("secret"), "{e}");
        assert_eq!(e["resource"]["store_id"], json!(store), "{e}");
        assert_eq!(e["resource"]["secret_id"], json!(id_of(secret)), "{e}");
        assert_eq!(e["resource"]["secret_name"], json!(secret), "{e}");
    }
    let e = only(with(&found, "bind", Some("ALL")), "store binding");
    assert_eq!(e["resource"]["store_id"], json!(store), "{e}");
    assert!(e["resource"].get("secret_id").is_none(), "{e}");
    let e = only(
        found
            .iter()
            .copied()
            .filter(|e| e["resource"]["type"] == json!("service_token"))
            .collect(),
        "token created",
    );
    assert_eq!(e["action"], json!("create"));
    assert_eq!(e["resource"]["token_id"], json!(first_token), "{e}");

    // The redeploy: update, bind for the new and the changed, unbind for the removed, and
    // nothing about the unchanged binding or a token.
    let found = by_request(&entries, &rid_update);
    let e = only(with(&found, "update", None), "update service");
    assert_eq!(e["resource"]["type"], json!("service"), "{e}");
    assert!(with(&found, "bind", Some("A_KEY")).is_empty(), "{found:#?}");
    let e = only(with(&found, "bind", Some("B_KEY")), "changed binding");
    assert_eq!(e["resource"]["secret_id"], json!(id_of("C")), "{e}");
    assert_eq!(e["resource"]["secret_name"], json!("C"), "{e}");
    let e = only(with(&found, "bind", Some("NEW")), "new binding");
    assert_eq!(e["resource"]["secret_id"], json!(id_of("B")), "{e}");
    let e = only(with(&found, "unbind", Some("B_KEY")), "old B_KEY");
    assert_eq!(e["resource"]["secret_name"], json!("B"), "{e}");
    only(with(&found, "unbind", Some("ALL")), "removed store binding");
    assert!(with(&found, "unbind", Some("A_KEY")).is_empty());
    assert_eq!(found.len(), 5, "{found:#?}");

    // The refusals: one denied `bind` each, with a reason.
    let e = only(by_request(&entries, &rid_denied), "refused deploy");
    assert_eq!(e["action"], json!("bind"), "{e}");
    assert_eq!(e["outcome"], json!("denied"), "{e}");
    assert_eq!(e["resource"]["service_name"], json!("api"), "{e}");
    let reason = e["reason"].as_str().expect("reason");
    assert!(
        reason.contains("MISSING") && reason.contains("nope"),
        "{reason}"
    );
    let e = only(by_request(&entries, &rid_role), "refused role");
    assert_eq!(e["action"], json!("bind"), "{e}");
    assert_eq!(e["outcome"], json!("denied"), "{e}");
    assert_eq!(e["actor"]["token_id"], json!(admin.id), "{e}");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("secrets_store_admin"),
        "{e}"
    );

    // Tokens.
    let found = by_request(&entries, &rid_rotate);
    assert_eq!(found.len(), 2, "{found:#?}");
    let e = only(with(&found, "create", None), "rotated token");
    assert_eq!(e["resource"]["type"], json!("service_token"));
    assert_eq!(e["resource"]["token_id"], json!(second));
    let e = only(with(&found, "revoke", None), "revoked by rotation");
    assert_eq!(e["resource"]["token_id"], json!(first_token));
    let found = by_request(&entries, &rid_rotate_keep);
    let e = only(found, "rotation keeping the others");
    assert_eq!(e["action"], json!("create"));
    assert_eq!(e["resource"]["token_id"], json!(third));
    let e = only(by_request(&entries, &rid_revoke_one), "revoke one");
    assert_eq!(e["action"], json!("revoke"));
    assert_eq!(e["resource"]["type"], json!("service_token"));
    assert_eq!(e["resource"]["token_id"], json!(second));
    let e = only(by_request(&entries, &rid_revoke_all), "revoke all");
    assert_eq!(e["action"], json!("revoke"));
    assert_eq!(e["resource"]["token_id"], json!(third));
    let e = only(by_request(&entries, &rid_delete), "delete service");
    assert_eq!(e["action"], json!("delete"));
    assert_eq!(e["resource"]["type"], json!("service"));

    // The filters find them.
    for (q, min) in [("action=bind", 4), ("action=unbind", 2)] {
        let r = h
            .raw_abs(
                Method::GET,
                &format!("{V4}/{}/audit_logs?{q}&per_page=100", h.account),
                None,
                "",
            )
            .await;
        let (items, _) = assert_ok_list(&r);
        assert!(items.len() >= min, "{q}: {}", items.len());
        let action = q.split('=').nth(1).unwrap();
        assert!(items.iter().all(|e| e["action"] == json!(action)), "{q}");
    }

    // No token value and no secret value in the log.
    for s in [
        "value-a",
        "value-b",
        "value-c",
        token.as_str(),
        &service_token_secret(&token),
    ] {
        assert!(!contains(&raw, s.as_bytes()), "the audit log carries {s:?}");
    }
    // And the log still verifies.
    let r = h
        .raw_abs(
            Method::GET,
            &format!("{V4}/{}/audit_logs/verify", h.account),
            None,
            "",
        )
        .await;
    assert_eq!(assert_ok(&r)["ok"], json!(true));
}

// ---- runtime reads ----

#[tokio::test]
async fn runtime_reads_are_aggregated_into_one_access_entry_per_binding_and_outcome() {
    let h = Harness::new().await;
    let store = h.create_store("read").await;
    let made = h
        .create_secrets(
            &store,
            &[
                secret_item("A", "value-a", &["workers"]),
                secret_item("B", "value-b", &["workers"]),
                secret_item("C", "value-c", &["workers"]),
            ],
        )
        .await;
    let id_of = |name: &str| {
        made.iter().find(|s| s["name"] == json!(name)).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let svc = h
        .deploy_ok(&json!({
            "name": "reader",
            "secrets_store_secrets": [
                secret_binding("A_KEY", &store, "A"),
                secret_binding("B_KEY", &store, "B"),
            ],
            "secrets_store_stores": [store_binding("ALL", &store)],
        }))
        .await;
    let token = svc.token().to_owned();
    let token_id = service_token_id(&token);
    // Flush anything pending before the reads under test.
    h.coffer.flush_access_events().await.unwrap();
    let start = coffer_types::Timestamp::now();

    let n = 7;
    for _ in 0..n {
        assert_eq!(h.read_value(&token, "A_KEY").await, "value-a");
    }
    for _ in 0..2 {
        let r = h.runtime(&token, "/stores/ALL/secrets/C").await;
        assert_eq!(assert_plain(&r), "value-c");
    }
    // Nothing is written until the flush.
    let (before, _) = h.audit_entries_all(&h.account).await;
    let mark = last_seq(&before);
    assert!(
        access_entries(&before, 0).is_empty(),
        "written before the flush"
    );

    let written = h.coffer.flush_access_events().await.unwrap();
    assert_eq!(written, 2, "two (token, binding, secret, outcome) keys");
    let end = coffer_types::Timestamp::now();
    let (entries, _) = h.audit_entries_all(&h.account).await;
    let access = access_entries(&entries, mark);
    assert_eq!(access.len(), 2, "{access:#?}");
    let e = only(
        access
            .iter()
            .copied()
            .filter(|e| e["resource"]["binding"] == json!("A_KEY"))
            .collect(),
        "A_KEY reads",
    );
    assert_eq!(e["reads"], json!(n), "{e}");
    assert_eq!(e["outcome"], json!("success"), "{e}");
    assert_eq!(e["resource"]["type"], json!("secret"), "{e}");
    assert_eq!(e["resource"]["service_id"], json!(svc.id), "{e}");
    assert_eq!(e["resource"]["service_name"], json!("reader"), "{e}");
    assert_eq!(e["resource"]["store_id"], json!(store), "{e}");
    assert_eq!(e["resource"]["secret_id"], json!(id_of("A")), "{e}");
    assert_eq!(e["resource"]["secret_name"], json!("A"), "{e}");
    assert_eq!(e["actor"]["token_id"], json!(token_id), "{e}");
    assert_eq!(e["actor"]["operator"], json!(false), "{e}");
    let (first, last) = (timestamp(&e["first_read"]), timestamp(&e["last_read"]));
    assert!(start <= first && first < last && last <= end, "{e}");
    assert!(e.get("reason").is_none(), "{e}");
    let e = only(
        access
            .iter()
            .copied()
            .filter(|e| e["resource"]["binding"] == json!("ALL"))
            .collect(),
        "ALL reads",
    );
    assert_eq!(e["reads"], json!(2), "{e}");
    assert_eq!(e["resource"]["secret_id"], json!(id_of("C")), "{e}");
    assert_eq!(e["resource"]["secret_name"], json!("C"), "{e}");

    // A flush with nothing to write writes nothing.
    assert_eq!(h.coffer.flush_access_events().await.unwrap(), 0);
    let (again, _) = h.audit_entries_all(&h.account).await;
    assert_eq!(again.len(), entries.len());

    // A batch read counts each binding; two tokens are two entries.
    let other = h
        .rotate(&svc.id, Some(&json!({ "revoke_previous": false })))
        .await["service_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..3 {
        let r = h.runtime(&token, "/bindings").await;
        assert_eq!(r.status, StatusCode::OK);
    }
    for _ in 0..4 {
        h.read_value(&other, "A_KEY").await;
    }
    let mark = last_seq(&again);
    h.coffer.flush_access_events().await.unwrap();
    let (entries, _) = h.audit_entries_all(&h.account).await;
    let access = access_entries(&entries, mark);
    let mut got: Vec<(String, String, u64)> = access
        .iter()
        .map(|e| {
            (
                e["actor"]["token_id"].as_str().unwrap().to_owned(),
                e["resource"]["binding"].as_str().unwrap().to_owned(),
                e["reads"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (token_id.clone(), "A_KEY".to_owned(), 3),
        (token_id.clone(), "B_KEY".to_owned(), 3),
        (service_token_id(&other), "A_KEY".to_owned(), 4),
    ];
    want.sort();
    assert_eq!(got, want);

    // Refused reads: recorded as denied, with the reason, counted apart from the successes.
    assert_ok(
        &h.patch(
            &format!("/stores/{store}/secrets/{}", id_of("B")),
            &json!({ "scopes": ["dex"] }),
        )
        .await,
    );
    for _ in 0..4 {
        let r = h.read_binding(&token, "B_KEY").await;
        assert_err(&r, ErrorCode::ScopeDenied, "");
    }
    h.read_value(&token, "A_KEY").await;
    assert_deleted(
        &h.delete(&format!("/stores/{store}/secrets/{}", id_of("A")))
            .await,
    );
    for _ in 0..2 {
        let r = h.read_binding(&token, "A_KEY").await;
        assert_err(&r, ErrorCode::BindingNotFound, "");
    }
    let mark = last_seq(&entries);
    h.coffer.flush_access_events().await.unwrap();
    let (entries, raw) = h.audit_entries_all(&h.account).await;
    let access = access_entries(&entries, mark);
    let pick = |binding: &str, outcome: &str| -> Vec<&Value> {
        access
            .iter()
            .copied()
            .filter(|e| {
                e["resource"]["binding"] == json!(binding) && e["outcome"] == json!(outcome)
            })
            .collect()
    };
    let e = only(pick("B_KEY", "denied"), "scope denied");
    assert_eq!(e["reads"], json!(4), "{e}");
    assert_eq!(e["resource"]["secret_id"], json!(id_of("B")), "{e}");
    assert!(
        e["reason"].as_str().is_some_and(|r| r.contains("scope")),
        "{e}"
    );
    let e = only(pick("A_KEY", "denied"), "secret gone");
    assert_eq!(e["reads"], json!(2), "{e}");
    assert_eq!(e["resource"]["secret_name"], json!("A"), "{e}");
    assert!(
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not found")),
        "{e}"
    );
    let e = only(pick("A_KEY", "success"), "the read before the delete");
    assert_eq!(e["reads"], json!(1), "{e}");
    assert_eq!(access.len(), 3, "{access:#?}");

    // The filters select access entries.
    let r = h
        .raw_abs(
            Method::GET,
            &format!(
                "{V4}/{}/audit_logs?action=access&outcome=denied&per_page=100",
                h.account
            ),
            None,
            "",
        )
        .await;
    let (items, _) = assert_ok_list(&r);
    assert_eq!(items.len(), 2, "{items:#?}");
    let r = h
        .raw_abs(
            Method::GET,
            &format!(
                "{V4}/{}/audit_logs?action=access&secret_id={}&per_page=100",
                h.account,
                id_of("B")
            ),
            None,
            "",
        )
        .await;
    let (items, _) = assert_ok_list(&r);
    assert!(
        items
            .iter()
            .all(|e| e["resource"]["secret_id"] == json!(id_of("B")))
    );
    assert_eq!(
        items.len(),
        2,
        "B_KEY: the batch reads and the denied ones: {items:#?}"
    );

    for s in [
        "value-a",
        "value-b",
        "value-c",
        token.as_str(),
        other.as_str(),
    ] {
        assert!(!contains(&raw, s.as_bytes()), "the audit log carries {s:?}");
    }
}

// ---- secrecy ----

/// One response of the flow, with the secrets it may carry.
struct Seen {
    what: String,
    resp: Resp,
    may_carry: Vec<String>,
}

#[tokio::test]
async fn no_value_and_no_service_token_where_they_do_not_belong() {
    let logs = captured_logs();
    let h = Harness::new().await;
    let tag = random_tag();
    let v_one = format!("svc-canary-{tag}-one");
    let v_two = format!("svc-canary-{tag}-two");
    let v_new = format!("svc-canary-{tag}-new");
    let mut seen: Vec<Seen> = Vec::new();
    macro_rules! note {
        ($what:expr, $resp:expr, [$($carry:expr),*]) => {{
            let resp = $resp;
            seen.push(Seen { what: $what.to_string(), resp: resp.clone(), may_carry: vec![$($carry.to_string()),*] });
            resp
        }};
    }

    let store = h.create_store("vault").await;
    let made = h
        .create_secrets(
            &store,
            &[
                secret_item("one", &v_one, &["workers"]),
                secret_item("two", &v_two, &["workers"]),
            ],
        )
        .await;
    let one_id = made[0]["id"].as_str().unwrap().to_owned();
    let two_id = made[1]["id"].as_str().unwrap().to_owned();

    let r = note!(
        "deploy",
        h.deploy(&json!({
            "name": "app",
            "secrets_store_secrets": [
                secret_binding("ONE", &store, "one"),
                secret_binding("TWO", &store, "two"),
            ],
            "secrets_store_stores": [store_binding("ALL", &store)],
        }))
        .await,
        []
    );
    let first = assert_ok(&r)["service_token"].as_str().unwrap().to_owned();
    seen.last_mut().unwrap().may_carry.push(first.clone());
    let service = assert_ok(&r)["id"].as_str().unwrap().to_owned();

    let r = note!("read ONE", h.read_binding(&first, "ONE").await, [v_one]);
    assert_eq!(assert_plain(&r), v_one);
    let r = note!(
        "batch",
        h.runtime(&first, "/bindings").await,
        [v_one, v_two]
    );
    assert_eq!(r.status, StatusCode::OK);
    let r = note!(
        "store read",
        h.runtime(&first, "/stores/ALL/secrets/two").await,
        [v_two]
    );
    assert_eq!(assert_plain(&r), v_two);
    note!(
        "redeploy",
        h.deploy(&deploy_body(
            "app",
            &[("ONE", &store, "one"), ("TWO", &store, "two")]
        ))
        .await,
        []
    );
    note!("get", h.get(&format!("/services/{service}")).await, []);
    note!("list", h.get("/services").await, []);
    note!(
        "tokens",
        h.get(&format!("/services/{service}/tokens")).await,
        []
    );
    note!(
        "update value",
        h.patch(
            &format!("/stores/{store}/secrets/{one_id}"),
            &json!({ "value": v_new })
        )
        .await,
        []
    );
    let r = note!("read new", h.read_binding(&first, "ONE").await, [v_new]);
    assert_eq!(assert_plain(&r), v_new);

    // Failures, with the real token and with bad ones.
    note!("missing binding", h.read_binding(&first, "NOPE").await, []);
    note!(
        "service token on the control plane",
        h.get_as(&first, &h.api("/stores")).await,
        []
    );
    note!(
        "API token on the runtime",
        h.read_binding(&h.token, "ONE").await,
        []
    );
    let forged = format!("{}{}", &first[.."coffersvc_".len() + 33], "A".repeat(43));
    note!("forged token", h.read_binding(&forged, "ONE").await, []);
    note!(
        "token in the wrong scheme",
        h.runtime_as(Some(&format!("Basic {first}")), "/bindings/ONE")
            .await,
        []
    );
    note!(
        "refused deploy",
        h.deploy(&deploy_body("app", &[("X", &store, "nope")]))
            .await,
        []
    );
    assert_ok(
        &h.patch(
            &format!("/stores/{store}/secrets/{two_id}"),
            &json!({ "scopes": ["dex"] }),
        )
        .await,
    );
    note!("scope denied", h.read_binding(&first, "TWO").await, []);
    note!("batch denied", h.runtime(&first, "/bindings").await, []);

    // Rotation.
    let r = note!(
        "rotate",
        h.post(&format!("/services/{service}/tokens"), &json!({}))
            .await,
        []
    );
    let second = assert_ok(&r)["service_token"].as_str().unwrap().to_owned();
    seen.last_mut().unwrap().may_carry.push(second.clone());
    note!("revoked token", h.read_binding(&first, "ONE").await, []);
    let r = note!(
        "read with the new token",
        h.read_binding(&second, "ONE").await,
        [v_new]
    );
    assert_eq!(assert_plain(&r), v_new);

    h.coffer.flush_access_events().await.unwrap();
    let (_, audit_raw) = h.audit_entries_all(&h.account).await;
    let r = note!(
        "audit log",
        h.raw_abs(
            Method::GET,
            &format!("{V4}/{}/audit_logs?per_page=100", h.account),
            None,
            ""
        )
        .await,
        []
    );
    assert_ok_list(&r);

    // --- the checks ---
    let secrets: Vec<String> = vec![
        v_one.clone(),
        v_two.clone(),
        v_new.clone(),
        first.clone(),
        service_token_secret(&first),
        second.clone(),
        service_token_secret(&second),
        h.token.clone(),
    ];
    let mut failures = Vec::new();
    for s in &seen {
        let mut headers = Vec::new();
        for (name, value) in &s.resp.headers {
            headers.extend_from_slice(name.as_str().as_bytes());
            headers.extend_from_slice(b": ");
            headers.extend_from_slice(value.as_bytes());
            headers.push(b'\n');
        }
        for secret in &secrets {
            if contains(&headers, secret.as_bytes()) {
                failures.push(format!("{}: a header carries {secret:?}", s.what));
            }
            let allowed = s
                .may_carry
                .iter()
                .any(|c| c == secret || c.contains(secret.as_str()));
            if !allowed && contains(&s.resp.bytes, secret.as_bytes()) {
                failures.push(format!(
                    "{}: the body carries {secret:?}: {}",
                    s.what,
                    s.resp.text()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The checks are not vacuous: the reads and the deploy did carry them.
    assert!(contains(&seen[0].resp.bytes, first.as_bytes()));
    assert!(contains(&seen[1].resp.bytes, v_one.as_bytes()));

    for secret in &secrets {
        assert!(
            !contains(&audit_raw, secret.as_bytes()),
            "the audit log carries {secret:?}"
        );
    }
    let all_logs = captured(&logs);
    assert!(
        contains(&all_logs, service.as_bytes()) || contains(&all_logs, b"/runtime/v1"),
        "the log capture saw these requests"
    );
    for secret in &secrets {
        assert_absent(&all_logs, secret, "the log");
    }
    // A runtime read's line names the token that made it by id (never the token), served
    // or refused, so a request id leads to the service.
    let id = service_token_id(&first);
    let text = String::from_utf8_lossy(&all_logs);
    for path in ["/runtime/v1/bindings/ONE ", "/runtime/v1/bindings/NOPE "] {
        assert!(
            text.lines().any(|l| l.contains(&format!("path={path}"))
                && l.contains(" response ")
                && l.contains(&format!("token_id={id}"))),
            "no log line for {path}names token {id}"
        );
    }
    for (part, bytes) in h.at_rest_bytes("vault").await {
        for secret in &secrets {
            assert_absent(&bytes, secret, &part);
        }
    }
}
