//! `/client/v4/accounts/{account_id}/secrets_store/services`: deploy (create, then replace),
//! list, get, delete, service tokens, the validation of deploy bodies, and the first permission
//! check (a binding to a missing store or secret, or to a secret without the service's type, is
//! refused with 10021 and writes nothing).

use std::time::Duration;

use axum::http::{Method, StatusCode};
use coffer_api::ErrorCode;
use serde_json::{Value, json};

use crate::support::*;

/// A store holding secrets `A`, `B`, `C` (scope `workers`) and `GW` (scope `ai_gateway`).
async fn bound_fixture() -> (Harness, String) {
    let h = Harness::new().await;
    let store = h.create_store("bound").await;
    h.create_secrets(
        &store,
        &[
            secret_item("A", "value-a", &["workers"]),
            secret_item("B", "value-b", &["workers"]),
            secret_item("C", "value-c", &["workers"]),
            secret_item("GW", "value-gw", &["ai_gateway"]),
        ],
    )
    .await;
    (h, store)
}

/// The ids of the services named `name` (at most one).
async fn ids_named(h: &Harness, name: &str) -> Vec<String> {
    let r = h.get(&format!("/services?name={name}")).await;
    assert_ok_list(&r)
        .0
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn deploy_creates_then_a_redeploy_replaces_the_bindings() {
    let (h, store) = bound_fixture().await;
    let first = h
        .deploy_secrets("api", &[("A_KEY", &store, "A"), ("B_KEY", &store, "B")])
        .await;
    let r = &first.result;
    assert_eq!(r["first_deploy"], json!(true));
    assert_eq!(r["name"], json!("api"));
    assert_eq!(r["type"], json!("workers"), "the default type");
    assert_eq!(
        r["secrets_store_secrets"],
        json!([
            secret_binding("A_KEY", &store, "A"),
            secret_binding("B_KEY", &store, "B")
        ])
    );
    assert_eq!(r["secrets_store_stores"], json!([]));

    // GET shows the service as deployed, and its one token is the one the deploy returned.
    let got = h.get_service(&first.id).await;
    assert_eq!(got["id"], json!(first.id));
    assert_eq!(got["name"], json!("api"));
    assert_eq!(got["secrets_store_secrets"], r["secrets_store_secrets"]);
    let created = timestamp(&got["created"]);
    let modified = timestamp(&got["modified"]);
    let tokens = h.service_tokens(&first.id).await;
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["id"], json!(service_token_id(first.token())));
    assert_eq!(tokens[0]["status"], json!("active"));
    assert_eq!(h.read_value(first.token(), "A_KEY").await, "value-a");

    tokio::time::sleep(Duration::from_millis(5)).await;

    // Redeploy: same id, no token, bindings replaced wholesale, `created` kept.
    let second = h
        .deploy_ok(&json!({
            "name": "api",
            "type": "workers",
            "secrets_store_secrets": [secret_binding("C_KEY", &store, "C")],
            "secrets_store_stores": [store_binding("ALL", &store)],
        }))
        .await;
    assert_eq!(second.id, first.id);
    assert_eq!(second.result["first_deploy"], json!(false));
    assert!(second.token.is_none());
    assert!(
        second.result.get("service_token").is_none(),
        "{}",
        second.result
    );
    assert_eq!(
        second.result["secrets_store_secrets"],
        json!([secret_binding("C_KEY", &store, "C")])
    );
    assert_eq!(
        second.result["secrets_store_stores"],
        json!([store_binding("ALL", &store)])
    );
    let got = h.get_service(&first.id).await;
    assert_eq!(timestamp(&got["created"]), created, "created is kept");
    assert!(timestamp(&got["modified"]) > modified, "modified moves");
    assert_eq!(
        got["secrets_store_secrets"],
        second.result["secrets_store_secrets"]
    );
    assert_eq!(
        got["secrets_store_stores"],
        second.result["secrets_store_stores"]
    );

    // Still one service of that name, and still one token, which reads the new bindings only.
    assert_eq!(ids_named(&h, "api").await, std::slice::from_ref(&first.id));
    assert_eq!(h.service_tokens(&first.id).await.len(), 1);
    assert_eq!(h.read_value(first.token(), "C_KEY").await, "value-c");
    let r = h.read_binding(first.token(), "A_KEY").await;
    assert_err(
        &r,
        ErrorCode::BindingNotFound,
        "binding \"A_KEY\" not found",
    );
    let r = h.runtime(first.token(), "/stores/ALL/secrets/B").await;
    assert_eq!(assert_plain(&r), "value-b");

    // A redeploy with no bindings at all empties the service.
    let third = h.deploy_ok(&json!({ "name": "api" })).await;
    assert_eq!(third.id, first.id);
    assert_eq!(third.result["secrets_store_secrets"], json!([]));
    assert_eq!(third.result["secrets_store_stores"], json!([]));
    let r = h.runtime(first.token(), "/bindings").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), json!({}));
}

/// The deploy's result is one JSON object: the service's `created` timestamp and the deploy's
/// `created` flag cannot both be a key `created` of it.
#[tokio::test]
async fn the_deploy_response_has_no_duplicate_keys() {
    let (h, store) = bound_fixture().await;
    for _ in 0..2 {
        let r = h
            .deploy(&deploy_body("dup", &[("A_KEY", &store, "A")]))
            .await;
        assert_ok(&r);
        // The wire type the client decodes it into.
        let decoded =
            serde_json::from_slice::<coffer_api::Envelope<coffer_api::DeployedService>>(&r.bytes);
        assert!(
            decoded.is_ok(),
            "the deploy response does not decode as coffer_api::DeployedService: {}",
            decoded.unwrap_err()
        );
        assert_eq!(
            duplicate_key(&r.bytes),
            None,
            "the deploy response repeats a key: {}",
            r.text()
        );
        // What a strict client reads: the service's timestamps, as GET shows them.
        let v = r.json();
        let id = v["result"]["id"].as_str().unwrap().to_owned();
        let got = h.get_service(&id).await;
        assert_eq!(v["result"]["created"], got["created"]);
        assert!(v["result"]["first_deploy"].is_boolean());
    }
}

#[tokio::test]
async fn list_get_filter_and_paging() {
    let (h, store) = bound_fixture().await;
    let order = ["delta", "alpha", "echo", "charlie", "bravo"];
    let mut ids = std::collections::HashMap::new();
    for n in order {
        let svc = h.deploy_secrets(n, &[("K", &store, "A")]).await;
        ids.insert(n, svc.id);
    }
    let r = h.get("/services").await;
    let (items, info) = assert_ok_list(&r);
    for s in &items {
        assert_service_shape(s);
        assert_eq!(s["id"], json!(ids[s["name"].as_str().unwrap()]), "{s}");
    }
    assert_eq!(
        names(&items),
        ["alpha", "bravo", "charlie", "delta", "echo"],
        "ordered by name"
    );
    assert_eq!(info, (1, 20, 5, 5), "defaults");

    let r = h.get("/services?per_page=2&page=2").await;
    let (items, info) = assert_ok_list(&r);
    assert_eq!(names(&items), ["charlie", "delta"]);
    assert_eq!(info, (2, 2, 2, 5));
    let r = h.get("/services?per_page=2&page=3").await;
    assert_eq!(names(&assert_ok_list(&r).0), ["echo"]);
    let r = h.get("/services?per_page=2&page=9").await;
    let (items, info) = assert_ok_list(&r);
    assert!(items.is_empty());
    assert_eq!(info, (9, 2, 0, 5));

    // The name filter is an exact match.
    let r = h.get("/services?name=charlie").await;
    let (items, info) = assert_ok_list(&r);
    assert_eq!(names(&items), ["charlie"]);
    assert_eq!(info.3, 1);
    for miss in ["charli", "Charlie", "char", "zulu"] {
        let r = h.get(&format!("/services?name={miss}")).await;
        let (items, info) = assert_ok_list(&r);
        assert!(items.is_empty(), "{miss}: {items:?}");
        assert_eq!(info.3, 0);
    }

    // GET of each, of a missing one, and of malformed ids.
    for (n, id) in &ids {
        let got = h.get_service(id).await;
        assert_eq!(got["name"], json!(n));
        assert_eq!(
            got["secrets_store_secrets"],
            json!([secret_binding("K", &store, "A")])
        );
    }
    let r = h.get(&format!("/services/{}", random_id())).await;
    assert_err(&r, ErrorCode::ServiceNotFound, "service");
    for bad in ["xyz", "0123", "0123456789ABCDEF0123456789ABCDEF"] {
        let r = h.get(&format!("/services/{bad}")).await;
        assert_err(&r, ErrorCode::InvalidId, "");
    }

    // Bad queries.
    for q in ["per_page=0", "per_page=101", "page=0", "page=x"] {
        let r = h.get(&format!("/services?{q}")).await;
        assert_err(&r, ErrorCode::InvalidQuery, q.split('=').next().unwrap());
    }
    for q in ["name=a%20b", "name=a.b", "name="] {
        let r = h.get(&format!("/services?{q}")).await;
        assert_err(&r, ErrorCode::InvalidQuery, "name");
    }
}

#[tokio::test]
async fn delete_removes_the_service_and_its_tokens() {
    let (h, store) = bound_fixture().await;
    let svc = h.deploy_secrets("doomed", &[("K", &store, "A")]).await;
    let keep = h.deploy_secrets("kept", &[("K", &store, "B")]).await;
    assert_eq!(h.read_value(svc.token(), "K").await, "value-a");

    let r = h.delete(&format!("/services/{}", svc.id)).await;
    assert_eq!(assert_ok(&r), json!({ "id": svc.id }));

    let r = h.get(&format!("/services/{}", svc.id)).await;
    assert_err(&r, ErrorCode::ServiceNotFound, "service");
    let r = h.get(&format!("/services/{}/tokens", svc.id)).await;
    assert_err(&r, ErrorCode::ServiceNotFound, "service");
    let r = h
        .post(&format!("/services/{}/tokens", svc.id), &json!({}))
        .await;
    assert_err(&r, ErrorCode::ServiceNotFound, "service");
    let r = h.delete(&format!("/services/{}/tokens", svc.id)).await;
    assert_err(&r, ErrorCode::ServiceNotFound, "service");
    assert!(ids_named(&h, "doomed").await.is_empty());
    assert_eq!(
        names(&assert_ok_list(&h.get("/services").await).0),
        ["kept"]
    );

    // Its token is dead at once, everywhere on the runtime API; the other service's is not.
    for path in ["/bindings/K", "/bindings", "/stores/X/secrets/A"] {
        let r = h.runtime(svc.token(), path).await;
        assert_err(&r, ErrorCode::Unauthenticated, "");
    }
    assert_eq!(h.read_value(keep.token(), "K").await, "value-b");

    // Deleting again: not found. Deploying the name again makes a new service and token.
    let r = h.delete(&format!("/services/{}", svc.id)).await;
    assert_err(&r, ErrorCode::ServiceNotFound, "service");
    let again = h.deploy_secrets("doomed", &[("K", &store, "A")]).await;
    assert_eq!(again.result["first_deploy"], json!(true));
    assert_ne!(again.id, svc.id);
    assert_ne!(again.token(), svc.token());
    assert_eq!(h.read_value(again.token(), "K").await, "value-a");
    let r = h.read_binding(svc.token(), "K").await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
}

#[tokio::test]
async fn a_store_binding_deploys_and_reads() {
    let (h, store) = bound_fixture().await;
    let other = h.create_store("other").await;
    let svc = h
        .deploy_ok(&json!({
            "name": "with-stores",
            "secrets_store_stores": [store_binding("MAIN", &store), store_binding("OTHER", &other)],
        }))
        .await;
    assert_eq!(svc.result["secrets_store_secrets"], json!([]));
    assert_eq!(
        svc.result["secrets_store_stores"],
        json!([
            store_binding("MAIN", &store),
            store_binding("OTHER", &other)
        ])
    );
    let got = h.get_service(&svc.id).await;
    assert_eq!(
        got["secrets_store_stores"],
        svc.result["secrets_store_stores"]
    );
    // An empty store binds fine: its secrets are whatever it holds at read time.
    h.create_secret(&other, "LATER", "later-value").await;
    let r = h.runtime(svc.token(), "/stores/OTHER/secrets/LATER").await;
    assert_eq!(assert_plain(&r), "later-value");
    let r = h.runtime(svc.token(), "/stores/MAIN/secrets/C").await;
    assert_eq!(assert_plain(&r), "value-c");
}

#[tokio::test]
async fn the_service_type_decides_which_secrets_bind() {
    let (h, store) = bound_fixture().await;
    let svc = h
        .deploy_ok(&json!({
            "name": "gateway",
            "type": "ai_gateway",
            "secrets_store_secrets": [secret_binding("GW", &store, "GW")],
        }))
        .await;
    assert_eq!(svc.result["type"], json!("ai_gateway"));
    assert_eq!(h.read_value(svc.token(), "GW").await, "value-gw");
    // A workers secret does not bind to an ai_gateway service.
    let r = h
        .deploy(&json!({
            "name": "gateway",
            "type": "ai_gateway",
            "secrets_store_secrets": [secret_binding("A", &store, "A")],
        }))
        .await;
    let e = assert_err(&r, ErrorCode::BindingAuthorizationFailed, "binding A");
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("ai_gateway") && m.contains("workers"), "{m}");
    // Every scope is a valid type.
    for (i, kind) in [
        "workers",
        "ai_gateway",
        "containers",
        "dex",
        "access",
        "websearch",
    ]
    .iter()
    .enumerate()
    {
        let svc = h
            .deploy_ok(&json!({ "name": format!("kind-{i}"), "type": kind }))
            .await;
        assert_eq!(svc.result["type"], json!(kind));
    }
}

// ---- validation ----

#[tokio::test]
async fn malformed_deploys_are_refused_with_the_field_and_write_nothing() {
    let (h, store) = bound_fixture().await;
    let s = store.as_str();
    let ok = secret_binding("OK", s, "A");
    let good = |b: &str| secret_binding(b, s, "A");
    let long_binding = "B".repeat(256);
    let long_name = "n".repeat(64);
    let before = h.snapshot().await;
    // (case, body, code, pointer)
    let cases: Vec<(&str, Value, ErrorCode, &str)> = vec![
        // The service name.
        ("name missing", json!({}), ErrorCode::InvalidField, "body"),
        (
            "name a number",
            json!({ "name": 5 }),
            ErrorCode::InvalidField,
            "/name",
        ),
        (
            "name null",
            json!({ "name": null }),
            ErrorCode::InvalidField,
            "/name",
        ),
        (
            "name empty",
            json!({ "name": "" }),
            ErrorCode::InvalidName,
            "/name",
        ),
        (
            "name with a space",
            json!({ "name": "a b" }),
            ErrorCode::InvalidName,
            "/name",
        ),
        (
            "name with a dot",
            json!({ "name": "a.b" }),
            ErrorCode::InvalidName,
            "/name",
        ),
        (
            "name of 64",
            json!({ "name": long_name }),
            ErrorCode::InvalidName,
            "/name",
        ),
        // The type.
        (
            "unknown type",
            json!({ "name": "svc", "type": "worker" }),
            ErrorCode::InvalidBinding,
            "/type",
        ),
        (
            "empty type",
            json!({ "name": "svc", "type": "" }),
            ErrorCode::InvalidBinding,
            "/type",
        ),
        (
            "type in capitals",
            json!({ "name": "svc", "type": "WORKERS" }),
            ErrorCode::InvalidBinding,
            "/type",
        ),
        (
            "type a number",
            json!({ "name": "svc", "type": 1 }),
            ErrorCode::InvalidField,
            "/type",
        ),
        // The arrays.
        (
            "secrets an object",
            json!({ "name": "svc", "secrets_store_secrets": ok }),
            ErrorCode::InvalidField,
            "/secrets_store_secrets",
        ),
        (
            "secrets a string",
            json!({ "name": "svc", "secrets_store_secrets": "x" }),
            ErrorCode::InvalidField,
            "/secrets_store_secrets",
        ),
        (
            "secrets null",
            json!({ "name": "svc", "secrets_store_secrets": null }),
            ErrorCode::InvalidField,
            "/secrets_store_secrets",
        ),
        (
            "stores an object",
            json!({ "name": "svc", "secrets_store_stores": { "binding": "X", "store_id": s } }),
            ErrorCode::InvalidField,
            "/secrets_store_stores",
        ),
        (
            "item a string",
            json!({ "name": "svc", "secrets_store_secrets": [ok, "OK2"] }),
            ErrorCode::InvalidField,
            "/secrets_store_secrets/1",
        ),
        (
            "item without secret_name",
            json!({ "name": "svc", "secrets_store_secrets": [{ "binding": "X", "store_id": s }] }),
            ErrorCode::InvalidField,
            "/secrets_store_secrets/0",
        ),
        (
            "item without binding",
            json!({ "name": "svc", "secrets_store_stores": [{ "store_id": s }] }),
            ErrorCode::InvalidField,
            "/secrets_store_stores/0",
        ),
        (
            "binding a number",
            json!({ "name": "svc", "secrets_store_secrets": [{ "binding": 1, "store_id": s, "secret_name": "A" }] }),
            ErrorCode::InvalidField,
            "/secrets_store_secrets/0/binding",
        ),
        (
            "store_id a number",
            json!({ "name": "svc", "secrets_store_stores": [{ "binding": "X", "store_id": 7 }] }),
            ErrorCode::InvalidField,
            "/secrets_store_stores/0/store_id",
        ),
        // Unknown fields, at the top and in items.
        (
            "unknown top-level field",
            json!({ "name": "svc", "main": "index.js" }),
            ErrorCode::InvalidField,
            "/main",
        ),
        (
            "unknown item field",
            json!({ "name": "svc", "secrets_store_secrets": [{ "binding": "X", "store_id": s, "secret_name": "A", "id": "x" }] }),
            ErrorCode::InvalidField,
            "/secrets_store_secrets/0/id",
        ),
        (
            "store item with secret_name",
            json!({ "name": "svc", "secrets_store_stores": [{ "binding": "X", "store_id": s, "secret_name": "A" }] }),
            ErrorCode::InvalidField,
            "/secrets_store_stores/0/secret_name",
        ),
        // Binding names.
        (
            "binding starting with a digit",
            json!({ "name": "svc", "secrets_store_secrets": [ok, good("1KEY")] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_secrets/1/binding",
        ),
        (
            "binding with a dash",
            json!({ "name": "svc", "secrets_store_secrets": [ok, good("MY-KEY")] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_secrets/1/binding",
        ),
        (
            "binding with a space",
            json!({ "name": "svc", "secrets_store_secrets": [ok, good("A B")] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_secrets/1/binding",
        ),
        (
            "binding with a dot",
            json!({ "name": "svc", "secrets_store_secrets": [ok, good("a.b")] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_secrets/1/binding",
        ),
        (
            "binding non-ASCII",
            json!({ "name": "svc", "secrets_store_secrets": [ok, good("clé")] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_secrets/1/binding",
        ),
        (
            "binding empty",
            json!({ "name": "svc", "secrets_store_secrets": [ok, good("")] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_secrets/1/binding",
        ),
        (
            "binding of 256",
            json!({ "name": "svc", "secrets_store_secrets": [ok, good(&long_binding)] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_secrets/1/binding",
        ),
        (
            "store binding name bad",
            json!({ "name": "svc", "secrets_store_stores": [store_binding("ALL", s), store_binding("ALL-2", s)] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_stores/1/binding",
        ),
        // Duplicates, within and across the arrays.
        (
            "duplicate secret binding",
            json!({ "name": "svc", "secrets_store_secrets": [ok, secret_binding("OK", s, "B")] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_secrets/1/binding",
        ),
        (
            "duplicate store binding",
            json!({ "name": "svc", "secrets_store_stores": [store_binding("X", s), store_binding("X", s)] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_stores/1/binding",
        ),
        (
            "duplicate across arrays",
            json!({ "name": "svc", "secrets_store_secrets": [ok], "secrets_store_stores": [store_binding("OK", s)] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_stores/0/binding",
        ),
        // Store ids.
        (
            "store id not hex",
            json!({ "name": "svc", "secrets_store_secrets": [ok, secret_binding("X", "zz", "A")] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_secrets/1/store_id",
        ),
        (
            "store id of 31",
            json!({ "name": "svc", "secrets_store_secrets": [secret_binding("X", &s[..31], "A")] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_secrets/0/store_id",
        ),
        (
            "store id in capitals",
            json!({ "name": "svc", "secrets_store_secrets": [secret_binding("X", &s.to_uppercase(), "A")] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_secrets/0/store_id",
        ),
        (
            "store binding id bad",
            json!({ "name": "svc", "secrets_store_stores": [store_binding("X", "")] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_stores/0/store_id",
        ),
        // Secret names.
        (
            "secret name with a space",
            json!({ "name": "svc", "secrets_store_secrets": [secret_binding("X", s, "a b")] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_secrets/0/secret_name",
        ),
        (
            "secret name empty",
            json!({ "name": "svc", "secrets_store_secrets": [secret_binding("X", s, "")] }),
            ErrorCode::InvalidBinding,
            "/secrets_store_secrets/0/secret_name",
        ),
    ];
    let mut failures = Vec::new();
    for (what, body, code, pointer) in &cases {
        let r = h.deploy(body).await;
        let ok = r.status.as_u16() == code.http_status()
            && r.json()["errors"][0]["code"].as_u64() == Some(u64::from(code.code()))
            && r.json()["errors"][0]["source"]["pointer"].as_str() == Some(*pointer)
            && r.json()["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains(pointer));
        if !ok {
            failures.push(format!(
                "{what}: expected {} {} at {pointer}, got {} {}",
                code.http_status(),
                code.code(),
                r.status,
                r.text()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed deploys are answered wrongly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Not JSON, and JSON that is not an object.
    let r = h
        .raw(
            Method::POST,
            "/services",
            Some("application/json"),
            "{\"name\": ",
        )
        .await;
    assert_err(&r, ErrorCode::MalformedJson, "");
    let r = h.deploy(&json!([{ "name": "svc" }])).await;
    assert_err_at(&r, ErrorCode::InvalidField, "body");
    let r = h.raw(Method::POST, "/services", None, "").await;
    assert!(r.status.is_client_error(), "{}", r.text());

    // The messages say what is wrong.
    let r = h.deploy(&json!({ "name": "svc", "extra": 1 })).await;
    assert_err(&r, ErrorCode::InvalidField, "`extra`");
    let r = h.deploy(&json!({})).await;
    assert_err(&r, ErrorCode::InvalidField, "`name`");
    let r = h
        .deploy(
            &json!({ "name": "svc", "secrets_store_secrets": [ok, secret_binding("OK", s, "B")] }),
        )
        .await;
    assert_err(&r, ErrorCode::InvalidBinding, "OK");

    h.assert_unchanged(&before, "malformed deploys").await;
    assert!(ids_named(&h, "svc").await.is_empty());

    // The boundaries are accepted: a 255-character binding, `_x`, a 63-character name.
    let longest = "B".repeat(255);
    let svc = h
        .deploy_ok(&json!({
            "name": "n".repeat(63),
            "secrets_store_secrets": [good(&longest), good("_x"), good("a1"), good("open_AI_key")],
        }))
        .await;
    assert_eq!(
        svc.result["secrets_store_secrets"][0]["binding"],
        json!(longest)
    );
}

#[tokio::test]
async fn at_most_256_bindings() {
    let (h, store) = bound_fixture().await;
    let stores = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| store_binding(&format!("S{i}"), &store))
            .collect()
    };
    let secrets = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| secret_binding(&format!("X{i}"), &store, "A"))
            .collect()
    };
    let before = h.snapshot().await;
    for (n_secrets, n_stores) in [(0, 257), (257, 0), (200, 57), (1, 300)] {
        let r = h
            .deploy(&json!({
                "name": "many",
                "secrets_store_secrets": secrets(n_secrets),
                "secrets_store_stores": stores(n_stores),
            }))
            .await;
        let e = assert_err(&r, ErrorCode::InvalidBinding, "256");
        assert!(e["source"]["pointer"].is_string(), "{e}");
    }
    h.assert_unchanged(&before, "too many bindings").await;
    let svc = h
        .deploy_ok(&json!({
            "name": "many",
            "secrets_store_secrets": secrets(128),
            "secrets_store_stores": stores(128),
        }))
        .await;
    let got = h.get_service(&svc.id).await;
    assert_eq!(got["secrets_store_secrets"].as_array().unwrap().len(), 128);
    assert_eq!(got["secrets_store_stores"].as_array().unwrap().len(), 128);
    let r = h.runtime(svc.token(), "/bindings").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json().as_object().unwrap().len(), 128);
}

// ---- the first permission check ----

#[tokio::test]
async fn refused_bindings_name_the_binding_and_the_reason_and_write_nothing() {
    let (h, store) = bound_fixture().await;
    let missing_store = random_id();
    let before = h.snapshot().await;
    // (case, body, message needles)
    let cases: Vec<(&str, Value, Vec<String>)> = vec![
        (
            "missing store",
            deploy_body(
                "svc",
                &[("OK", &store, "A"), ("NO_STORE", &missing_store, "A")],
            ),
            vec![
                "binding NO_STORE".into(),
                missing_store.clone(),
                "not found".into(),
            ],
        ),
        (
            "missing secret",
            deploy_body("svc", &[("OK", &store, "A"), ("NO_SECRET", &store, "nope")]),
            vec![
                "binding NO_SECRET".into(),
                "\"nope\"".into(),
                "not found".into(),
            ],
        ),
        (
            "missing scope",
            deploy_body("svc", &[("OK", &store, "A"), ("NO_SCOPE", &store, "GW")]),
            vec![
                "binding NO_SCOPE".into(),
                "\"GW\"".into(),
                "workers".into(),
                "ai_gateway".into(),
            ],
        ),
        (
            "missing store of a store binding",
            json!({
                "name": "svc",
                "secrets_store_secrets": [secret_binding("OK", &store, "A")],
                "secrets_store_stores": [store_binding("ALL", &missing_store)],
            }),
            vec![
                "binding ALL".into(),
                missing_store.clone(),
                "not found".into(),
            ],
        ),
        (
            "the first failing binding is named",
            deploy_body(
                "svc",
                &[
                    ("FIRST_BAD", &store, "nope"),
                    ("SECOND_BAD", &missing_store, "A"),
                ],
            ),
            vec!["binding FIRST_BAD".into()],
        ),
    ];
    for (what, body, needles) in &cases {
        let r = h.deploy(body).await;
        let e = assert_err(
            &r,
            ErrorCode::BindingAuthorizationFailed,
            "Secrets store binding authorization failed: binding ",
        );
        let m = e["message"].as_str().unwrap();
        for n in needles {
            assert!(m.contains(n.as_str()), "{what}: {m:?} should name {n:?}");
        }
        assert!(!m.contains("SECOND_BAD"), "{what}: {m}");
        assert!(ids_named(&h, "svc").await.is_empty(), "{what}: deployed");
    }
    h.assert_unchanged(&before, "refused deploys").await;
}

#[tokio::test]
async fn a_refused_redeploy_keeps_the_old_bindings() {
    let (h, store) = bound_fixture().await;
    let svc = h.deploy_secrets("api", &[("A_KEY", &store, "A")]).await;
    assert_eq!(h.read_value(svc.token(), "A_KEY").await, "value-a");
    let before = h.snapshot().await;
    let service_before = h.get_service(&svc.id).await;
    for body in [
        deploy_body("api", &[("B_KEY", &store, "B"), ("GONE", &store, "nope")]),
        deploy_body("api", &[("B_KEY", &store, "B"), ("GW", &store, "GW")]),
        json!({ "name": "api", "type": "ai_gateway", "secrets_store_secrets": [secret_binding("A_KEY", &store, "A")] }),
        json!({ "name": "api", "secrets_store_stores": [store_binding("ALL", &random_id())] }),
    ] {
        let r = h.deploy(&body).await;
        assert_err(&r, ErrorCode::BindingAuthorizationFailed, "binding ");
        assert_eq!(h.get_service(&svc.id).await, service_before, "{body}");
    }
    h.assert_unchanged(&before, "refused redeploys").await;
    assert_eq!(h.read_value(svc.token(), "A_KEY").await, "value-a");
    let r = h.read_binding(svc.token(), "B_KEY").await;
    assert_err(
        &r,
        ErrorCode::BindingNotFound,
        "binding \"B_KEY\" not found",
    );
}

#[tokio::test]
async fn roles_that_cannot_bind_get_10021_naming_the_binding_and_the_role() {
    let (h, store) = bound_fixture().await;
    let svc = h.deploy_secrets("api", &[("A_KEY", &store, "A")]).await;
    let before = h.snapshot().await;
    for role in ["secrets_store_admin", "secrets_store_reporter"] {
        let t = h.issue_token(&h.account, role, role).await;
        let before = h.snapshot().await;
        for body in [
            deploy_body("fresh", &[("FIRST", &store, "A"), ("SECOND", &store, "B")]),
            deploy_body("api", &[("FIRST", &store, "B")]),
        ] {
            let r = h
                .send_as(
                    Method::POST,
                    &h.api("/services"),
                    Some(&t.bearer()),
                    Some(&body),
                )
                .await;
            let e = assert_err(&r, ErrorCode::BindingAuthorizationFailed, "binding FIRST");
            let m = e["message"].as_str().unwrap();
            assert!(m.contains(role), "{m} should name the role {role}");
            assert!(!m.contains("SECOND"), "{m}");
            assert!(
                m.starts_with("Secrets store binding authorization failed"),
                "{m}"
            );
        }
        // Without bindings, the role is still named.
        let r = h
            .send_as(
                Method::POST,
                &h.api("/services"),
                Some(&t.bearer()),
                Some(&json!({ "name": "empty" })),
            )
            .await;
        let e = assert_err(&r, ErrorCode::BindingAuthorizationFailed, role);
        assert!(
            !e["message"].as_str().unwrap().contains(": binding "),
            "{e}"
        );
        h.assert_unchanged(&before, role).await;
        // The other bind operations are plain 1101 refusals naming the permission.
        for (method, rel) in [
            (Method::DELETE, format!("/services/{}", svc.id)),
            (Method::POST, format!("/services/{}/tokens", svc.id)),
            (Method::DELETE, format!("/services/{}/tokens", svc.id)),
            (
                Method::DELETE,
                format!(
                    "/services/{}/tokens/{}",
                    svc.id,
                    service_token_id(svc.token())
                ),
            ),
        ] {
            let r = h
                .send_as(method.clone(), &h.api(&rel), Some(&t.bearer()), None)
                .await;
            assert_err(&r, ErrorCode::Forbidden, "secrets_store:bind");
        }
        // Reading is allowed.
        let r = h
            .send_as(Method::GET, &h.api("/services"), Some(&t.bearer()), None)
            .await;
        assert_eq!(names(&assert_ok_list(&r).0), ["api"]);
    }
    h.assert_unchanged(&before, "refused roles").await;
    assert_eq!(h.read_value(svc.token(), "A_KEY").await, "value-a");

    // The deployer may deploy, and its redeploy is an update.
    let t = h
        .issue_token(&h.account, "deployer", "secrets_store_deployer")
        .await;
    let r = h
        .send_as(
            Method::POST,
            &h.api("/services"),
            Some(&t.bearer()),
            Some(&deploy_body("api", &[("B_KEY", &store, "B")])),
        )
        .await;
    let result = assert_ok(&r);
    assert_eq!(result["first_deploy"], json!(false));
    assert_eq!(h.read_value(svc.token(), "B_KEY").await, "value-b");
}

// ---- service tokens ----

#[tokio::test]
async fn rotate_list_and_revoke_service_tokens() {
    let (h, store) = bound_fixture().await;
    let svc = h.deploy_secrets("api", &[("K", &store, "A")]).await;
    let first_id = service_token_id(svc.token());

    // Rotate with the default (empty body): a new token, the old one revoked.
    let rotated = h.rotate(&svc.id, None).await;
    let second = assert_service_token(&rotated["service_token"]);
    let second_id = service_token_id(&second);
    assert_eq!(rotated["id"], json!(second_id));
    assert_eq!(rotated["service_id"], json!(svc.id));
    assert_eq!(rotated["status"], json!("active"));
    assert_eq!(rotated["revoked_on"], Value::Null);
    timestamp(&rotated["issued_on"]);
    let revoked = rotated["revoked"].as_array().unwrap();
    assert_eq!(revoked.len(), 1, "{rotated}");
    assert_service_token_shape(&revoked[0], &svc.id);
    assert_eq!(revoked[0]["id"], json!(first_id));
    assert_eq!(revoked[0]["status"], json!("revoked"));

    let tokens = h.service_tokens(&svc.id).await;
    let status: Vec<(String, String)> = tokens
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(status.len(), 2);
    assert!(
        status.contains(&(first_id.clone(), "revoked".into())),
        "{status:?}"
    );
    assert!(
        status.contains(&(second_id.clone(), "active".into())),
        "{status:?}"
    );
    // No token value in the listing.
    let r = h.get(&format!("/services/{}/tokens", svc.id)).await;
    assert!(!contains(&r.bytes, second.as_bytes()));
    assert!(!contains(
        &r.bytes,
        service_token_secret(&second).as_bytes()
    ));

    // `{}` also means revoke_previous = true; false keeps the others.
    let third = h.rotate(&svc.id, Some(&json!({}))).await;
    assert_eq!(third["revoked"].as_array().unwrap().len(), 1);
    assert_eq!(third["revoked"][0]["id"], json!(second_id));
    let third_id = third["id"].as_str().unwrap().to_owned();
    let fourth = h
        .rotate(&svc.id, Some(&json!({ "revoke_previous": false })))
        .await;
    assert_eq!(fourth["revoked"], json!([]));
    let fourth_id = fourth["id"].as_str().unwrap().to_owned();
    let fifth = h
        .rotate(&svc.id, Some(&json!({ "revoke_previous": false })))
        .await;
    let fifth_id = fifth["id"].as_str().unwrap().to_owned();
    let active = |tokens: &[Value]| -> Vec<String> {
        let mut v: Vec<String> = tokens
            .iter()
            .filter(|t| t["status"] == json!("active"))
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let mut want = vec![third_id.clone(), fourth_id.clone(), fifth_id.clone()];
    want.sort();
    assert_eq!(active(&h.service_tokens(&svc.id).await), want);

    // Revoke one.
    let r = h
        .delete(&format!("/services/{}/tokens/{fourth_id}", svc.id))
        .await;
    let (items, _) = assert_ok_list(&r);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], json!(fourth_id));
    assert_eq!(items[0]["status"], json!("revoked"));
    // Again: already revoked. An unknown id, or another service's token: not found.
    let r = h
        .delete(&format!("/services/{}/tokens/{fourth_id}", svc.id))
        .await;
    assert_err(&r, ErrorCode::TokenAlreadyRevoked, "");
    let r = h
        .delete(&format!("/services/{}/tokens/{}", svc.id, random_id()))
        .await;
    assert_err(&r, ErrorCode::TokenNotFound, "");
    let other = h.deploy_secrets("other", &[("K", &store, "B")]).await;
    let r = h
        .delete(&format!(
            "/services/{}/tokens/{}",
            svc.id,
            service_token_id(other.token())
        ))
        .await;
    assert_err(&r, ErrorCode::TokenNotFound, "");
    assert_eq!(h.read_value(other.token(), "K").await, "value-b");
    // An API token's id is not a service token.
    let api = h
        .issue_token(&h.account, "api", "secrets_store_reporter")
        .await;
    let r = h
        .delete(&format!("/services/{}/tokens/{}", svc.id, api.id))
        .await;
    assert_err(&r, ErrorCode::TokenNotFound, "");

    // Revoke all: the active ones, then nothing.
    let r = h.delete(&format!("/services/{}/tokens", svc.id)).await;
    let (items, _) = assert_ok_list(&r);
    let mut got: Vec<String> = items
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want = vec![third_id, fifth_id];
    want.sort();
    assert_eq!(got, want);
    assert!(active(&h.service_tokens(&svc.id).await).is_empty());
    let r = h.delete(&format!("/services/{}/tokens", svc.id)).await;
    assert!(assert_ok_list(&r).0.is_empty());

    // A rotation brings the service back to life.
    let back = h.rotate(&svc.id, None).await;
    assert_eq!(back["revoked"], json!([]));
    let token = back["service_token"].as_str().unwrap();
    assert_eq!(h.read_value(token, "K").await, "value-a");
}

#[tokio::test]
async fn bad_rotate_bodies_and_ids() {
    let (h, store) = bound_fixture().await;
    let svc = h.deploy_secrets("api", &[("K", &store, "A")]).await;
    let before = h.snapshot().await;
    let rel = format!("/services/{}/tokens", svc.id);
    for (body, pointer) in [
        (json!({ "revoke_previous": "yes" }), "/revoke_previous"),
        (json!({ "revoke_previous": 1 }), "/revoke_previous"),
        (json!({ "revoke": true }), "/revoke"),
        (json!([]), "body"),
        (json!(true), "body"),
    ] {
        let r = h.post(&rel, &body).await;
        assert_err_at(&r, ErrorCode::InvalidField, pointer);
    }
    let r = h
        .raw(Method::POST, &rel, Some("application/json"), "{")
        .await;
    assert_err(&r, ErrorCode::MalformedJson, "");
    for bad in ["nope", "0123"] {
        let r = h.get(&format!("/services/{bad}/tokens")).await;
        assert_err(&r, ErrorCode::InvalidId, "");
        let r = h
            .delete(&format!("/services/{}/tokens/{bad}", svc.id))
            .await;
        assert_err(&r, ErrorCode::InvalidId, "");
    }
    let r = h
        .post(&format!("/services/{}/tokens", random_id()), &json!({}))
        .await;
    assert_err(&r, ErrorCode::ServiceNotFound, "");
    h.assert_unchanged(&before, "bad rotations").await;
    assert_eq!(h.read_value(svc.token(), "K").await, "value-a");
}

// ---- other accounts and races ----

/// A super_admin of account B, on B's own paths, with ids of A's service and tokens: every
/// operation answers not found, and A's service is untouched.
#[tokio::test]
async fn another_accounts_ids_are_not_found_on_its_own_paths() {
    let (h, store) = bound_fixture().await;
    let a_svc = h.deploy_secrets("api", &[("K", &store, "A")]).await;
    let a_token = service_token_id(a_svc.token());
    let b = h.create_account("bee").await;
    let b_admin = h.issue_token(&b, "bee-admin", "super_admin").await;
    let b_uri = |rel: &str| format!("{V4}/{b}/secrets_store{rel}");
    let r = h
        .send_as(
            Method::POST,
            &b_uri("/services"),
            Some(&b_admin.bearer()),
            Some(&json!({ "name": "api" })),
        )
        .await;
    let b_svc = assert_hex_id(&assert_ok(&r)["id"]);
    assert_ne!(b_svc, a_svc.id, "same name in two accounts: two services");
    let before = h.snapshot().await;
    let a = &a_svc.id;
    for (method, rel, code) in [
        (
            Method::GET,
            format!("/services/{a}"),
            ErrorCode::ServiceNotFound,
        ),
        (
            Method::DELETE,
            format!("/services/{a}"),
            ErrorCode::ServiceNotFound,
        ),
        (
            Method::GET,
            format!("/services/{a}/tokens"),
            ErrorCode::ServiceNotFound,
        ),
        (
            Method::POST,
            format!("/services/{a}/tokens"),
            ErrorCode::ServiceNotFound,
        ),
        (
            Method::DELETE,
            format!("/services/{a}/tokens"),
            ErrorCode::ServiceNotFound,
        ),
        (
            Method::DELETE,
            format!("/services/{a}/tokens/{a_token}"),
            ErrorCode::ServiceNotFound,
        ),
        // B's own service with A's token id.
        (
            Method::DELETE,
            format!("/services/{b_svc}/tokens/{a_token}"),
            ErrorCode::TokenNotFound,
        ),
    ] {
        let body = (method == Method::POST).then(|| json!({}));
        let r = h
            .send_as(
                method.clone(),
                &b_uri(&rel),
                Some(&b_admin.bearer()),
                body.as_ref(),
            )
            .await;
        assert_err(&r, code, "");
    }
    // B's listing shows B's service only.
    let r = h.get_as(&b_admin.value, &b_uri("/services")).await;
    let (items, _) = assert_ok_list(&r);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], json!(b_svc));
    h.assert_unchanged(&before, "B on A's ids").await;
    assert_eq!(h.read_value(a_svc.token(), "K").await, "value-a");
}

/// Deploys of one new name racing each other make one service with one token: one deploy
/// creates it, the others update it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_deploys_of_one_name_make_one_service() {
    let (h, store) = bound_fixture().await;
    let h = std::sync::Arc::new(h);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (h, store) = (h.clone(), store.clone());
        tasks.push(tokio::spawn(async move {
            h.deploy(&deploy_body("raced", &[(&format!("K{i}"), &store, "A")]))
                .await
        }));
    }
    let mut created = 0;
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        let result = assert_ok(&r);
        ids.push(result["id"].as_str().unwrap().to_owned());
        if result["first_deploy"] == json!(true) {
            created += 1;
            tokens.push(assert_service_token(&result["service_token"]));
        } else {
            assert!(result.get("service_token").is_none(), "{result}");
        }
    }
    assert_eq!(created, 1, "exactly one deploy creates the service");
    ids.dedup();
    assert_eq!(ids.len(), 1, "one service id: {ids:?}");
    assert_eq!(ids_named(&h, "raced").await, ids);
    let listed = h.service_tokens(&ids[0]).await;
    assert_eq!(listed.len(), 1, "one token: {listed:#?}");
    assert_eq!(listed[0]["id"], json!(service_token_id(&tokens[0])));
    // The last deploy's one binding is the service's.
    let got = h.get_service(&ids[0]).await;
    let bindings = got["secrets_store_secrets"].as_array().unwrap();
    assert_eq!(bindings.len(), 1, "{got}");
    let binding = bindings[0]["binding"].as_str().unwrap();
    assert_eq!(h.read_value(&tokens[0], binding).await, "value-a");
}

/// Deleting an account deletes its services: their tokens stop working at once, and reads
/// noted before the deletion do not keep the access log from being flushed for others.
#[tokio::test]
async fn an_account_deleted_takes_its_services_and_tokens_with_it() {
    let h = Harness::new().await;
    let (b, b_admin, b_store) = h.other_account_with_secret("b-value").await;
    let b_uri = |rel: &str| format!("{V4}/{b}/secrets_store{rel}");
    let r = h
        .send_as(
            Method::POST,
            &b_uri("/services"),
            Some(&b_admin.bearer()),
            Some(&deploy_body("app", &[("ONE", &b_store, "one")])),
        )
        .await;
    let b_token = assert_service_token(&assert_ok(&r)["service_token"]);
    assert_eq!(h.read_value(&b_token, "ONE").await, "b-value");

    // A's own service, read too, so that the pending access events span both accounts.
    let a_store = h.create_store("a-store").await;
    h.create_secret(&a_store, "one", "a-value").await;
    let a_svc = h.deploy_secrets("app", &[("ONE", &a_store, "one")]).await;
    assert_eq!(h.read_value(a_svc.token(), "ONE").await, "a-value");

    let r = h.raw_abs(Method::DELETE, &account_uri(&b), None, "").await;
    assert!(r.status.is_success(), "{}", r.text());
    for path in ["/bindings/ONE", "/bindings"] {
        let r = h.runtime(&b_token, path).await;
        assert_err(&r, ErrorCode::Unauthenticated, "");
    }
    assert_eq!(h.read_value(a_svc.token(), "ONE").await, "a-value");

    // The flush succeeds, and A's reads are in A's log.
    let flushed = h.coffer.flush_access_events().await;
    assert!(
        flushed.is_ok(),
        "flush after an account deletion: {flushed:?}"
    );
    let r = h
        .raw_abs(
            Method::GET,
            &format!("{V4}/{}/audit_logs?action=access", h.account),
            None,
            "",
        )
        .await;
    let (items, _) = assert_ok_list(&r);
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(items[0]["reads"], json!(2));
    // And nothing stays pending.
    assert_eq!(h.coffer.flush_access_events().await.unwrap(), 0);
}

/// A deploy's errors name fields, not their contents: a secret value pasted into the wrong
/// field is not echoed back.
#[tokio::test]
async fn deploy_errors_do_not_echo_string_contents() {
    let (h, store) = bound_fixture().await;
    let canary = format!("s3cr3t-canary-{}", random_tag());
    let spaced = format!("{canary} x");
    let s = store.as_str();
    let cases = [
        json!(canary),
        json!({ "name": spaced }),
        json!({ "name": [canary] }),
        json!({ "name": "svc", "secrets_store_secrets": canary }),
        json!({ "name": "svc", "secrets_store_secrets": [canary] }),
        json!({ "name": "svc", "secrets_store_secrets": [secret_binding(&spaced, s, "A")] }),
        json!({ "name": "svc", "secrets_store_secrets": [secret_binding("X", &canary, "A")] }),
        json!({ "name": "svc", "secrets_store_secrets": [secret_binding("X", s, &spaced)] }),
        json!({ "name": "svc", "secrets_store_secrets": [{ "binding": "X", "store_id": s, "secret_name": [canary] }] }),
        json!({ "name": "svc", "secrets_store_stores": [store_binding("X", &canary)] }),
        json!({ "name": "svc", "type": [canary] }),
    ];
    let mut leaks = Vec::new();
    for body in cases {
        let r = h.deploy(&body).await;
        assert_eq!(r.status.as_u16(), 400, "{body}: {}", r.text());
        if contains(&r.bytes, canary.as_bytes()) {
            leaks.push(format!("{body} -> {}", r.text()));
        }
    }
    assert!(leaks.is_empty(), "string contents echoed: {leaks:#?}");
}

/// Malformed service and token ids, in every position of every service route: 400 invalid_id
/// naming the parameter, whether the id is ASCII or does not even percent-decode to UTF-8.
#[tokio::test]
async fn malformed_service_and_token_ids_name_their_position() {
    let (h, store) = bound_fixture().await;
    let svc = h.deploy_secrets("api", &[("K", &store, "A")]).await;
    let (v, w) = (svc.id.clone(), service_token_id(svc.token()));
    let before = h.snapshot().await;
    let routes: [(Method, &str); 6] = [
        (Method::GET, "/services/{v}"),
        (Method::DELETE, "/services/{v}"),
        (Method::GET, "/services/{v}/tokens"),
        (Method::POST, "/services/{v}/tokens"),
        (Method::DELETE, "/services/{v}/tokens"),
        (Method::DELETE, "/services/{v}/tokens/{w}"),
    ];
    let bad_ids = [
        "A".repeat(32),
        "a".repeat(31),
        "g".repeat(32),
        "not-an-id".to_owned(),
        format!("{}%20", "a".repeat(31)),
        format!("{}%FF", "a".repeat(30)),
        "%C3%28".to_owned(),
    ];
    let mut failures = Vec::new();
    for (method, template) in &routes {
        for (placeholder, field) in [("{v}", "service_id"), ("{w}", "token_id")] {
            if !template.contains(placeholder) {
                continue;
            }
            for bad in &bad_ids {
                let (v2, w2) = if placeholder == "{v}" {
                    (bad.as_str(), w.as_str())
                } else {
                    (v.as_str(), bad.as_str())
                };
                let rel = template.replace("{v}", v2).replace("{w}", w2);
                let body = (*method == Method::POST).then(|| json!({}));
                let r = h
                    .send_as(
                        method.clone(),
                        &h.api(&rel),
                        Some(&h.bearer()),
                        body.as_ref(),
                    )
                    .await;
                let e = &r.json()["errors"][0];
                let ok = r.status == StatusCode::BAD_REQUEST
                    && e["code"] == json!(ErrorCode::InvalidId.code())
                    && e["source"]["pointer"] == json!(field)
                    && e["message"].as_str().is_some_and(|m| m.contains(field));
                if !ok {
                    failures.push(format!(
                        "{method} {template} with {field} = {bad:?}: expected 400 1004 naming {field}, got {} {}",
                        r.status,
                        r.text()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} malformed ids answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
    h.assert_unchanged(&before, "malformed service ids").await;
}
