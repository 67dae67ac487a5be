//! `/client/v4/accounts/{account_id}/audit_logs` and `.../audit_logs/verify`: what is recorded
//! (changes and denials, with actor, resource ids and names, request id, never a value or a
//! token), filters and paging, who may read it. Tamper evidence and failing closed when an
//! entry cannot be written: `audit_tamper.rs`.

use axum::http::{Method, StatusCode};
use coffer_api::ErrorCode;
use coffer_types::Timestamp;
use serde_json::{Value, json};

use crate::support::*;

// ---- helpers ----

fn audit_uri(account: &str, query: &str) -> String {
    if query.is_empty() {
        format!("{V4}/{account}/audit_logs")
    } else {
        format!("{V4}/{account}/audit_logs?{query}")
    }
}

pub(crate) fn verify_uri(account: &str) -> String {
    format!("{V4}/{account}/audit_logs/verify")
}

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

/// The id part of a token value (`coffer_<id>_<secret>`).
fn token_id_of(value: &str) -> String {
    value[7..39].to_owned()
}

/// The secret part of a token value.
fn token_secret_of(value: &str) -> String {
    value[40..].to_owned()
}

/// One page of `account`'s audit log, read with `auth` (a full Authorization header).
async fn audit_page(h: &Harness, auth: &str, account: &str, query: &str) -> Resp {
    h.send_as(Method::GET, &audit_uri(account, query), Some(auth), None)
        .await
}

/// The seqs of a list of entries.
fn seqs(items: &[Value]) -> Vec<u64> {
    items.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// The entries carrying `request_id`.
fn by_request<'a>(entries: &'a [Value], request_id: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["request_id"].as_str() == Some(request_id))
        .collect()
}

/// The single entry of `request_id`.
#[track_caller]
fn one_entry<'a>(entries: &'a [Value], request_id: &str, what: &str) -> &'a Value {
    let found = by_request(entries, request_id);
    assert_eq!(
        found.len(),
        1,
        "{what}: one entry with request id {request_id}: {found:#?}"
    );
    found[0]
}

/// `GET .../audit_logs/verify` as the operator.
pub(crate) async fn verify(h: &Harness) -> Value {
    assert_ok(
        &h.raw_abs(Method::GET, &verify_uri(&h.account), None, "")
            .await,
    )
}

// ---- 1. content ----

#[tokio::test]
async fn changes_are_recorded_with_actor_resource_names_and_request_ids_but_no_secrets() {
    let h = Harness::new().await;
    let init_id = token_id_of(&h.token);
    let value1 = format!("audit-value-one-{}", random_tag());
    let value2 = format!("audit-value-two-{}", random_tag());

    // Store create.
    let r = h.post("/stores", &json!({ "name": "audited" })).await;
    let store = assert_ok(&r)["id"].as_str().unwrap().to_owned();
    let rid_store = rid(&r);

    // Secret create with a distinctive value.
    let r = h
        .post(
            &format!("/stores/{store}/secrets"),
            &json!([secret_item("API_KEY", &value1, &["workers"])]),
        )
        .await;
    let secret = assert_ok(&r)[0]["id"].as_str().unwrap().to_owned();
    let rid_create = rid(&r);

    // Value PATCH, then a scopes-only PATCH.
    let r = h
        .patch(
            &format!("/stores/{store}/secrets/{secret}"),
            &json!({ "value": value2 }),
        )
        .await;
    assert_ok(&r);
    let rid_value = rid(&r);
    let r = h
        .patch(
            &format!("/stores/{store}/secrets/{secret}"),
            &json!({ "scopes": ["workers", "dex"] }),
        )
        .await;
    assert_ok(&r);
    let rid_scopes = rid(&r);

    // Duplicate, then delete the duplicate.
    let r = h
        .post(
            &format!("/stores/{store}/secrets/{secret}/duplicate"),
            &json!({ "name": "API_KEY_COPY", "scopes": ["workers"] }),
        )
        .await;
    let copy = assert_ok(&r)["id"].as_str().unwrap().to_owned();
    let rid_dup = rid(&r);
    let r = h.delete(&format!("/stores/{store}/secrets/{copy}")).await;
    assert_deleted(&r);
    let rid_del = rid(&r);

    // Bulk delete of two fresh secrets.
    let made = h
        .create_secrets(
            &store,
            &[
                secret_item("BULK_A", &value1, &["workers"]),
                secret_item("BULK_B", &value2, &["workers"]),
            ],
        )
        .await;
    let bulk: Vec<String> = made
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    let r = h
        .json(
            Method::DELETE,
            &format!("/stores/{store}/secrets"),
            &json!(bulk),
        )
        .await;
    assert_deleted(&r);
    let rid_bulk = rid(&r);

    // Delete a non-empty store with force.
    let doomed = h.create_store("doomed").await;
    h.create_secret(&doomed, "INSIDE", &value1).await;
    let r = h.delete(&format!("/stores/{doomed}?force=true")).await;
    assert_deleted(&r);
    let rid_store_del = rid(&r);

    // A token: create, use it for one change, revoke.
    let r = h
        .json_abs(
            Method::POST,
            &tokens_uri(&h.account, None),
            &json!({ "name": "ci-admin", "role": "secrets_store_admin" }),
        )
        .await;
    let t = assert_ok(&r);
    let admin = IssuedToken {
        id: t["id"].as_str().unwrap().to_owned(),
        value: t["value"].as_str().unwrap().to_owned(),
    };
    let rid_token = rid(&r);
    let r = h
        .send_as(
            Method::POST,
            &h.api(&format!("/stores/{store}/secrets")),
            Some(&admin.bearer()),
            Some(&json!([secret_item("BY_ADMIN", &value1, &["workers"])])),
        )
        .await;
    let by_admin = assert_ok(&r)[0]["id"].as_str().unwrap().to_owned();
    let rid_by_admin = rid(&r);
    let r = h
        .raw_abs(
            Method::DELETE,
            &tokens_uri(&h.account, Some(&admin.id)),
            None,
            "",
        )
        .await;
    assert_ok(&r);
    let rid_revoke = rid(&r);

    // Quota.
    let r = h
        .json_abs(
            Method::PATCH,
            &account_uri(&h.account),
            &json!({ "secrets_quota": 50 }),
        )
        .await;
    assert_ok(&r);
    let rid_quota = rid(&r);

    let request_ids = [
        &rid_store,
        &rid_create,
        &rid_value,
        &rid_scopes,
        &rid_dup,
        &rid_del,
        &rid_bulk,
        &rid_store_del,
        &rid_token,
        &rid_by_admin,
        &rid_revoke,
        &rid_quota,
    ];
    let mut distinct = request_ids.to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        request_ids.len(),
        "request ids are distinct"
    );

    let (entries, mut bodies) = h.audit_entries_all(&h.account).await;

    // Common shape: every entry of this flow is a success by the init token (or the admin).
    for id in &request_ids {
        for e in by_request(&entries, id) {
            assert_eq!(e["outcome"], json!("success"), "{e}");
            assert_eq!(e["account_id"], json!(h.account), "{e}");
            assert!(e["seq"].as_u64().unwrap() >= 1);
            assert_eq!(e["hash"].as_str().unwrap().len(), 64, "{e}");
            timestamp(&e["time"]);
            if *id == &rid_by_admin {
                assert_eq!(e["actor"]["token_id"], json!(admin.id), "{e}");
                assert_eq!(e["actor"]["token_name"], json!("ci-admin"), "{e}");
                assert_eq!(e["actor"]["operator"], json!(false), "{e}");
            } else {
                assert_eq!(e["actor"]["token_id"], json!(init_id), "{e}");
                assert_eq!(e["actor"]["token_name"], json!("init"), "{e}");
                assert_eq!(e["actor"]["operator"], json!(true), "{e}");
            }
        }
    }

    let e = one_entry(&entries, &rid_store, "store create");
    assert_eq!(e["action"], json!("create"));
    assert_eq!(e["resource"]["type"], json!("store"));
    assert_eq!(e["resource"]["store_id"], json!(store));
    assert_eq!(e["resource"]["store_name"], json!("audited"));

    let e = one_entry(&entries, &rid_create, "secret create");
    assert_eq!(e["action"], json!("create"));
    assert_eq!(e["resource"]["type"], json!("secret"));
    assert_eq!(e["resource"]["store_id"], json!(store));
    assert_eq!(e["resource"]["store_name"], json!("audited"));
    assert_eq!(e["resource"]["secret_id"], json!(secret));
    assert_eq!(e["resource"]["secret_name"], json!("API_KEY"));
    assert!(e.get("duplicated_from_id").is_none(), "{e}");

    let e = one_entry(&entries, &rid_value, "value update");
    assert_eq!(e["action"], json!("update"));
    assert_eq!(e["resource"]["secret_id"], json!(secret));
    assert_eq!(e["resource"]["secret_name"], json!("API_KEY"));
    assert_eq!(e["resource"]["store_id"], json!(store));
    assert_eq!(e["value_modified"], json!(true), "{e}");

    let e = one_entry(&entries, &rid_scopes, "scopes update");
    assert_eq!(e["action"], json!("update"));
    assert_eq!(e["resource"]["secret_id"], json!(secret));
    assert_eq!(e["resource"]["secret_name"], json!("API_KEY"));
    assert_eq!(e["value_modified"], json!(false), "{e}");

    let e = one_entry(&entries, &rid_dup, "duplicate");
    assert_eq!(e["action"], json!("create"));
    assert_eq!(e["resource"]["secret_id"], json!(copy));
    assert_eq!(e["resource"]["secret_name"], json!("API_KEY_COPY"));
    assert_eq!(e["resource"]["store_id"], json!(store));
    assert_eq!(e["duplicated_from_id"], json!(secret), "{e}");

    let e = one_entry(&entries, &rid_del, "secret delete");
    assert_eq!(e["action"], json!("delete"));
    assert_eq!(e["resource"]["secret_id"], json!(copy));
    assert_eq!(e["resource"]["secret_name"], json!("API_KEY_COPY"));
    assert_eq!(e["resource"]["store_id"], json!(store));

    let found = by_request(&entries, &rid_bulk);
    assert_eq!(
        found.len(),
        2,
        "one entry per bulk-deleted secret: {found:#?}"
    );
    let mut got: Vec<(String, String)> = found
        .iter()
        .map(|e| {
            assert_eq!(e["action"], json!("delete"), "{e}");
            assert_eq!(e["resource"]["store_id"], json!(store), "{e}");
            (
                e["resource"]["secret_id"].as_str().unwrap().to_owned(),
                e["resource"]["secret_name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (bulk[0].clone(), "BULK_A".to_owned()),
        (bulk[1].clone(), "BULK_B".to_owned()),
    ];
    want.sort();
    assert_eq!(got, want);

    let e = one_entry(&entries, &rid_store_del, "store delete");
    assert_eq!(e["action"], json!("delete"));
    assert_eq!(e["resource"]["type"], json!("store"));
    assert_eq!(e["resource"]["store_id"], json!(doomed));
    assert_eq!(e["resource"]["store_name"], json!("doomed"));
    assert_eq!(e["force"], json!(true), "{e}");

    let e = one_entry(&entries, &rid_token, "token create");
    assert_eq!(e["action"], json!("create"));
    assert_eq!(e["resource"]["type"], json!("token"));
    assert_eq!(e["resource"]["token_id"], json!(admin.id));
    assert_eq!(e["resource"]["token_name"], json!("ci-admin"));
    assert_eq!(e["role"], json!("secrets_store_admin"));

    let e = one_entry(&entries, &rid_by_admin, "create by the admin token");
    assert_eq!(e["action"], json!("create"));
    assert_eq!(e["resource"]["secret_id"], json!(by_admin));
    assert_eq!(e["resource"]["secret_name"], json!("BY_ADMIN"));

    let e = one_entry(&entries, &rid_revoke, "token revoke");
    assert_eq!(e["action"], json!("revoke"));
    assert_eq!(e["resource"]["type"], json!("token"));
    assert_eq!(e["resource"]["token_id"], json!(admin.id));
    assert_eq!(e["resource"]["token_name"], json!("ci-admin"));

    let e = one_entry(&entries, &rid_quota, "quota");
    assert_eq!(e["action"], json!("update"));
    assert_eq!(e["resource"]["type"], json!("account"));
    assert_eq!(e["secrets_quota"], json!(50), "{e}");

    // The other listings of the log go into the secrecy check too.
    for q in [
        String::new(),
        "action=create".to_owned(),
        format!("secret_id={secret}"),
    ] {
        let r = audit_page(&h, &h.bearer(), &h.account, &q).await;
        assert_ok_list(&r);
        bodies.extend_from_slice(&r.bytes);
    }
    let r = h
        .raw_abs(Method::GET, &verify_uri(&h.account), None, "")
        .await;
    assert_ok(&r);
    bodies.extend_from_slice(&r.bytes);

    // Never a value, never a token: not in any audit response, not in the table's raw bytes.
    let mut table = Vec::new();
    if backend() == Backend::Postgres {
        // The audit table's rows as COPY writes them (raw text and bytea).
        for (part, bytes) in h.at_rest_bytes("API_KEY_COPY").await {
            if part == "table public.audit" {
                table = bytes;
            }
        }
        assert!(!table.is_empty(), "the audit table is dumped");
    } else {
        let c = crate::audit_tamper::open_db(&h);
        let mut stmt = c
            .prepare(
                "SELECT account_id, action, outcome, actor_token, store_id, secret_id, payload,
                        prev_hash, hash FROM audit",
            )
            .unwrap();
        let mut rows = stmt.query([]).unwrap();
        let mut n = 0;
        while let Some(row) = rows.next().unwrap() {
            n += 1;
            for i in 0..9 {
                match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Blob(b) => table.extend_from_slice(b),
                    rusqlite::types::ValueRef::Text(t) => table.extend_from_slice(t),
                    _ => {}
                }
                table.push(b'\n');
            }
        }
        assert!(
            n >= entries.len(),
            "raw rows {n} vs listed {}",
            entries.len()
        );
    }
    let secrets = [
        value1.clone(),
        value2.clone(),
        h.token.clone(),
        token_secret_of(&h.token),
        admin.value.clone(),
        token_secret_of(&admin.value),
    ];
    for s in &secrets {
        assert!(
            !contains(&bodies, s.as_bytes()),
            "an audit response carries {s:?}"
        );
        assert!(
            !contains(&table, s.as_bytes()),
            "the audit table carries {s:?}"
        );
    }
    // The search does find what is there (the checks above are not vacuous).
    assert!(contains(&bodies, b"API_KEY_COPY"));
    assert!(contains(&table, b"API_KEY_COPY"));
}

/// Every entry about a secret names its store as well as the secret (issue 3, item 5:
/// "resource (account, store, secret ids and names)"). Only the create entry does today.
#[tokio::test]
async fn secret_entries_name_their_store() {
    let h = Harness::new().await;
    let store = h.create_store("named-store").await;
    let r = h
        .post(
            &format!("/stores/{store}/secrets"),
            &json!([
                secret_item("ONE", "v1", &["workers"]),
                secret_item("TWO", "v2", &["workers"])
            ]),
        )
        .await;
    let made = assert_ok(&r);
    let (one, two) = (
        made[0]["id"].as_str().unwrap().to_owned(),
        made[1]["id"].as_str().unwrap().to_owned(),
    );
    let mut rids = vec![("create", rid(&r))];
    let r = h
        .patch(
            &format!("/stores/{store}/secrets/{one}"),
            &json!({ "value": "v1b" }),
        )
        .await;
    assert_ok(&r);
    rids.push(("update", rid(&r)));
    let r = h
        .post(
            &format!("/stores/{store}/secrets/{one}/duplicate"),
            &json!({ "name": "ONE_COPY", "scopes": ["workers"] }),
        )
        .await;
    assert_ok(&r);
    rids.push(("duplicate", rid(&r)));
    let r = h.delete(&format!("/stores/{store}/secrets/{two}")).await;
    assert_deleted(&r);
    rids.push(("delete", rid(&r)));
    let r = h
        .json(
            Method::DELETE,
            &format!("/stores/{store}/secrets"),
            &json!([one]),
        )
        .await;
    assert_deleted(&r);
    rids.push(("bulk delete", rid(&r)));

    let (entries, _) = h.audit_entries_all(&h.account).await;
    let mut missing = Vec::new();
    for (what, id) in &rids {
        for e in by_request(&entries, id) {
            assert_eq!(e["resource"]["store_id"], json!(store), "{what}: {e}");
            if e["resource"]["store_name"] != json!("named-store") {
                missing.push(format!("{what}: {}", e["resource"]));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "secret entries without the store's name:\n{}",
        missing.join("\n")
    );
}

// ---- 2. denials ----

#[tokio::test]
async fn denials_and_failed_logins_are_recorded_in_the_callers_account() {
    let h = Harness::new().await;
    let store = h.create_store("guarded").await;

    // A reporter trying to create a secret.
    let reporter = h
        .issue_token(&h.account, "watcher", "secrets_store_reporter")
        .await;
    let r = h
        .send_as(
            Method::POST,
            &h.api(&format!("/stores/{store}/secrets")),
            Some(&reporter.bearer()),
            Some(&json!([secret_item("NOPE", "nope-value", &["workers"])])),
        )
        .await;
    assert_err(&r, ErrorCode::Forbidden, "secrets_store:edit");
    let rid_reporter = rid(&r);

    // A reporter reading the audit log is refused, and that is recorded too.
    let r = audit_page(&h, &reporter.bearer(), &h.account, "").await;
    assert_err(&r, ErrorCode::Forbidden, "account:manage");
    let rid_reporter_audit = rid(&r);

    // Account B's super_admin probing account A.
    let b = h.create_account("bee").await;
    let b_admin = h.issue_token(&b, "bee-admin", "super_admin").await;
    let r = h
        .send_as(
            Method::POST,
            &h.api("/stores"),
            Some(&b_admin.bearer()),
            Some(&json!({ "name": "intruder" })),
        )
        .await;
    assert_err(&r, ErrorCode::AccountNotFound, "");
    let rid_probe_create = rid(&r);
    let r = audit_page(&h, &b_admin.bearer(), &h.account, "").await;
    assert_err(&r, ErrorCode::AccountNotFound, "");
    let rid_probe_audit = rid(&r);

    // A failed login: B's token id with a wrong secret.
    let wrong = format!("coffer_{}_{}", b_admin.id, "A".repeat(43));
    assert_ne!(wrong, b_admin.value);
    let r = h
        .send_as(
            Method::GET,
            &format!("{V4}/{b}/secrets_store/stores"),
            Some(&format!("Bearer {wrong}")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let rid_login = rid(&r);
    // Failed logins are counted in memory and written by the next flush, not one by one.
    let (b_before, _) = h.audit_entries_all(&b).await;
    h.coffer.flush_auth_failures().await.unwrap();

    let (a_log, a_raw) = h.audit_entries_all(&h.account).await;
    let (b_log, b_raw) = h.audit_entries_all(&b).await;

    let e = one_entry(&a_log, &rid_reporter, "reporter create");
    assert_eq!(e["action"], json!("create"));
    assert_eq!(e["outcome"], json!("denied"));
    assert_eq!(e["actor"]["token_id"], json!(reporter.id));
    assert_eq!(e["actor"]["token_name"], json!("watcher"));
    assert_eq!(e["resource"]["store_id"], json!(store));
    let reason = e["reason"].as_str().expect("reason");
    assert!(reason.contains("secrets_store:edit"), "{reason}");

    let e = one_entry(&a_log, &rid_reporter_audit, "reporter reading the log");
    assert_eq!(e["outcome"], json!("denied"));
    assert_eq!(e["actor"]["token_id"], json!(reporter.id));
    assert!(
        e["reason"].as_str().unwrap().contains("account:manage"),
        "{e}"
    );

    // The probes are in B's log, attributed to B's token, and A's log knows nothing of them.
    for (id, action) in [
        (&rid_probe_create, "create"),
        (&rid_probe_audit, "read_audit"),
    ] {
        let e = one_entry(&b_log, id, "probe of another account");
        assert_eq!(e["action"], json!(action), "{e}");
        assert_eq!(e["outcome"], json!("denied"), "{e}");
        assert_eq!(e["account_id"], json!(b), "{e}");
        assert_eq!(e["actor"]["token_id"], json!(b_admin.id), "{e}");
        assert!(e["reason"].as_str().is_some(), "{e}");
        assert!(
            by_request(&a_log, id).is_empty(),
            "probe recorded in A's log"
        );
    }
    // A's log names B and its token only in the operator's own record of making them.
    for e in &a_log {
        let text = e.to_string();
        if text.contains(&b) || text.contains(&b_admin.id) {
            assert_eq!(e["actor"]["operator"], json!(true), "{e}");
            assert_eq!(e["outcome"], json!("success"), "{e}");
            assert_eq!(e["resource"]["account_id"], json!(b), "{e}");
        }
    }

    // The failed login is in B's log (the token's account), as a denied login, once flushed:
    // one entry standing for one attempt, with no request id (an entry stands for many).
    assert!(
        !b_before.iter().any(|e| e["action"] == json!("login")),
        "a failed login costs no audit write of its own"
    );
    let logins: Vec<&Value> = b_log
        .iter()
        .filter(|e| e["action"] == json!("login"))
        .collect();
    assert_eq!(logins.len(), 1, "{logins:#?}");
    let e = logins[0];
    assert_eq!(e["outcome"], json!("denied"));
    assert_eq!(e["actor"]["token_id"], json!(b_admin.id));
    assert_eq!(e["resource"]["token_id"], json!(b_admin.id));
    assert_eq!(e["attempts"], json!(1), "{e}");
    assert_eq!(e["request_id"], json!(""), "{e}");
    assert!(e["reason"].as_str().is_some(), "{e}");
    assert!(by_request(&a_log, &rid_login).is_empty());
    assert!(by_request(&b_log, &rid_login).is_empty());
    for s in [&wrong, &b_admin.value, &token_secret_of(&b_admin.value)] {
        assert!(!contains(&b_raw, s.as_bytes()), "B's log carries a token");
    }
    assert!(!contains(&a_raw, reporter.value.as_bytes()));
    assert!(!contains(&b_raw, b"nope-value"));
    assert!(!contains(&a_raw, b"nope-value"));
}

// ---- 3. filters, paging, permissions ----

#[tokio::test]
async fn filters_and_paging() {
    let h = Harness::new().await;
    let s1 = h.create_store("one").await;
    let s2 = h.create_store("two").await;
    let admin = h
        .issue_token(&h.account, "filter-admin", "secrets_store_admin")
        .await;
    let reporter = h
        .issue_token(&h.account, "filter-reporter", "secrets_store_reporter")
        .await;
    let r = h
        .send_as(
            Method::POST,
            &h.api(&format!("/stores/{s1}/secrets")),
            Some(&admin.bearer()),
            Some(&json!([
                secret_item("A", "va", &["workers"]),
                secret_item("B", "vb", &["workers"])
            ])),
        )
        .await;
    let made = assert_ok(&r);
    let a = made[0]["id"].as_str().unwrap().to_owned();
    let b = made[1]["id"].as_str().unwrap().to_owned();
    h.create_secret(&s2, "C", "vc").await;
    let r = h
        .send_as(
            Method::PATCH,
            &h.api(&format!("/stores/{s1}/secrets/{a}")),
            Some(&admin.bearer()),
            Some(&json!({ "comment": "edited" })),
        )
        .await;
    assert_ok(&r);
    let r = h
        .send_as(
            Method::DELETE,
            &h.api(&format!("/stores/{s1}/secrets/{b}")),
            Some(&reporter.bearer()),
            None,
        )
        .await;
    assert_err(&r, ErrorCode::Forbidden, "");
    assert_deleted(&h.delete(&format!("/stores/{s1}/secrets/{b}")).await);

    let (all, _) = h.audit_entries_all(&h.account).await;
    assert!(all.len() >= 10, "{}", all.len());
    let all_seqs = seqs(&all);
    assert_eq!(
        all_seqs,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "gap-free seqs from 1"
    );

    // Each filter returns exactly the matching entries, in order; none is vacuous.
    let times: Vec<Timestamp> = all.iter().map(|e| timestamp(&e["time"])).collect();
    let from = times[3];
    let to = times[all.len() - 2];
    type Pred = Box<dyn Fn(&Value) -> bool>;
    let res =
        |k: &'static str, v: String| -> Pred { Box::new(move |e| e["resource"][k] == json!(v)) };
    let cases: Vec<(String, Pred)> = vec![
        (
            "action=create".into(),
            Box::new(|e| e["action"] == json!("create")),
        ),
        (
            "action=delete".into(),
            Box::new(|e| e["action"] == json!("delete")),
        ),
        (
            "outcome=denied".into(),
            Box::new(|e| e["outcome"] == json!("denied")),
        ),
        (
            "outcome=success".into(),
            Box::new(|e| e["outcome"] == json!("success")),
        ),
        (format!("actor={}", admin.id), {
            let id = admin.id.clone();
            Box::new(move |e| e["actor"]["token_id"] == json!(id))
        }),
        (format!("actor={}", reporter.id), {
            let id = reporter.id.clone();
            Box::new(move |e| e["actor"]["token_id"] == json!(id))
        }),
        (format!("store_id={s1}"), res("store_id", s1.clone())),
        (format!("store_id={s2}"), res("store_id", s2.clone())),
        (format!("secret_id={a}"), res("secret_id", a.clone())),
        (format!("secret_id={b}"), res("secret_id", b.clone())),
        (format!("action=create&actor={}&store_id={s1}", admin.id), {
            let id = admin.id.clone();
            let s1 = s1.clone();
            Box::new(move |e| {
                e["action"] == json!("create")
                    && e["actor"]["token_id"] == json!(id)
                    && e["resource"]["store_id"] == json!(s1)
            })
        }),
        (
            format!("from={}", from.to_rfc3339()),
            Box::new(move |e| timestamp(&e["time"]) >= from),
        ),
        (
            format!("to={}", to.to_rfc3339()),
            Box::new(move |e| timestamp(&e["time"]) < to),
        ),
        (
            format!("from={}&to={}", from.to_rfc3339(), to.to_rfc3339()),
            Box::new(move |e| {
                let t = timestamp(&e["time"]);
                t >= from && t < to
            }),
        ),
    ];
    for (q, pred) in &cases {
        // RFC 3339 offsets carry '+' in general; ours are 'Z', but encode anyway.
        let q = q.replace('+', "%2B");
        let want: Vec<u64> = all
            .iter()
            .filter(|e| pred(e))
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert!(!want.is_empty(), "{q}: vacuous");
        assert!(want.len() < all.len(), "{q}: filters nothing");
        let r = audit_page(
            &h,
            &h.bearer(),
            &h.account,
            &format!("{q}&direction=asc&per_page=100"),
        )
        .await;
        let (items, (_, _, _, total)) = assert_ok_list(&r);
        assert_eq!(seqs(&items), want, "{q}");
        assert_eq!(total, want.len() as u64, "{q}: total_count");
    }
    // A well-formed id that matches nothing.
    let r = audit_page(
        &h,
        &h.bearer(),
        &h.account,
        &format!("actor={}", random_id()),
    )
    .await;
    let (items, (_, _, _, total)) = assert_ok_list(&r);
    assert!(items.is_empty());
    assert_eq!(total, 0);

    // Direction: newest first by default; asc on request.
    let n = all.len() as u64;
    let r = audit_page(&h, &h.bearer(), &h.account, "per_page=100").await;
    let (items, info) = assert_ok_list(&r);
    assert_eq!(seqs(&items), (1..=n).rev().collect::<Vec<_>>());
    assert_eq!(info, (1, 100, n, n));
    let r = audit_page(&h, &h.bearer(), &h.account, "per_page=100&direction=DESC").await;
    assert_eq!(
        seqs(&assert_ok_list(&r).0),
        (1..=n).rev().collect::<Vec<_>>()
    );
    let r = audit_page(&h, &h.bearer(), &h.account, "").await;
    let (_, (page, per_page, _, total)) = assert_ok_list(&r);
    assert_eq!((page, per_page, total), (1, 20, n), "defaults");

    // Paging.
    let r = audit_page(&h, &h.bearer(), &h.account, "per_page=3&page=2").await;
    let (items, info) = assert_ok_list(&r);
    assert_eq!(seqs(&items), vec![n - 3, n - 4, n - 5]);
    assert_eq!(info, (2, 3, 3, n));
    let r = audit_page(
        &h,
        &h.bearer(),
        &h.account,
        "per_page=3&page=2&direction=asc",
    )
    .await;
    assert_eq!(seqs(&assert_ok_list(&r).0), vec![4, 5, 6]);
    let r = audit_page(&h, &h.bearer(), &h.account, "per_page=3&page=1000").await;
    let (items, info) = assert_ok_list(&r);
    assert!(items.is_empty());
    assert_eq!(info, (1000, 3, 0, n));
    let r = audit_page(
        &h,
        &h.bearer(),
        &h.account,
        "action=create&per_page=1&direction=asc",
    )
    .await;
    let (items, (_, _, _, total)) = assert_ok_list(&r);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["seq"], json!(1));
    assert!(total > 1);

    // Bad filter values.
    let bad_query = [
        "from=yesterday",
        "from=2024-13-01T00:00:00Z",
        "to=1700000000",
        "to=",
        "action=CREATE",
        "action=",
        "action=cre%20ate",
        "outcome=Denied",
        "outcome=",
        "direction=sideways",
        "per_page=0",
        "per_page=101",
        "per_page=x",
        "page=0",
        "page=-1",
    ];
    for q in bad_query {
        let r = audit_page(&h, &h.bearer(), &h.account, q).await;
        let field = q.split('=').next().unwrap();
        assert_err(&r, ErrorCode::InvalidQuery, field);
    }
    let bad_id = [
        "actor=xyz",
        "actor=",
        "store_id=0123",
        "secret_id=ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ",
        "secret_id=0123456789abcdef0123456789abcdef00",
    ];
    for q in bad_id {
        let r = audit_page(&h, &h.bearer(), &h.account, q).await;
        let field = q.split('=').next().unwrap();
        assert_err(&r, ErrorCode::InvalidId, field);
    }
}

#[tokio::test]
async fn only_the_accounts_super_admin_and_the_operator_read_and_verify_the_log() {
    let h = Harness::new().await;
    h.create_store("x").await;
    let a = h.account.clone();
    let b = h.create_account("other").await;
    let b_admin = h.issue_token(&b, "b-super", "super_admin").await;
    let uris = |acct: &str| [audit_uri(acct, ""), verify_uri(acct)];

    for role in [
        "secrets_store_admin",
        "secrets_store_deployer",
        "secrets_store_reporter",
    ] {
        let t = h.issue_token(&a, role, role).await;
        for uri in uris(&a) {
            let r = h.get_as(&t.value, &uri).await;
            assert_err(&r, ErrorCode::Forbidden, "account:manage");
        }
    }
    // A super_admin of the account that is not the operator.
    let sa = h.issue_token(&a, "plain-super", "super_admin").await;
    let r = h.get_as(&sa.value, &audit_uri(&a, "")).await;
    assert!(!assert_ok_list(&r).0.is_empty());
    let r = h.get_as(&sa.value, &verify_uri(&a)).await;
    assert_eq!(assert_ok(&r)["ok"], json!(true));

    // Another account's super_admin: the same 404 for an existing and a missing account.
    for acct in [a.clone(), random_id()] {
        for uri in uris(&acct) {
            let r = h.get_as(&b_admin.value, &uri).await;
            assert_err(&r, ErrorCode::AccountNotFound, "");
        }
    }
    // B's super_admin reads B's log; the operator reads both.
    let r = h.get_as(&b_admin.value, &audit_uri(&b, "")).await;
    assert!(!assert_ok_list(&r).0.is_empty());
    assert_eq!(
        assert_ok(&h.get_as(&b_admin.value, &verify_uri(&b)).await)["ok"],
        json!(true)
    );
    for acct in [&a, &b] {
        assert_ok_list(&h.get_as(&h.token, &audit_uri(acct, "")).await);
        assert_eq!(
            assert_ok(&h.get_as(&h.token, &verify_uri(acct)).await)["ok"],
            json!(true)
        );
    }
    // No token, a malformed account id.
    let r = h.send_as(Method::GET, &audit_uri(&a, ""), None, None).await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
    let r = h.get_as(&h.token, &audit_uri("not-an-id", "")).await;
    assert_err(&r, ErrorCode::InvalidId, "");
}

// ---- more: client address, deleted accounts, concurrency ----

#[tokio::test]
async fn the_client_address_is_recorded() {
    let h = Harness::new().await;
    let peer: std::net::SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let mut req = h
        .request(Method::POST, &h.api("/stores"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(r#"{"name":"from-afar"}"#))
        .unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    let r = h.send(req).await;
    assert_ok(&r);
    let (entries, _) = h.audit_entries_all(&h.account).await;
    let e = one_entry(&entries, &rid(&r), "store create from a peer");
    assert_eq!(e["client"], json!("203.0.113.7"), "{e}");
}

#[tokio::test]
async fn a_deleted_accounts_log_outlives_it() {
    let h = Harness::new().await;
    let b = h.create_account("short-lived").await;
    let b_admin = h.issue_token(&b, "b-super", "super_admin").await;
    let r = h
        .send_as(
            Method::POST,
            &format!("{V4}/{b}/secrets_store/stores"),
            Some(&b_admin.bearer()),
            Some(&json!({ "name": "b-store" })),
        )
        .await;
    assert_ok(&r);
    let r = h.raw_abs(Method::DELETE, &account_uri(&b), None, "").await;
    assert_deleted(&r);
    let rid_delete = rid(&r);

    // The operator still reads and verifies it; the deletion is its last entry.
    let (entries, _) = h.audit_entries_all(&b).await;
    let last = entries.last().unwrap();
    assert_eq!(last["request_id"], json!(rid_delete), "{last}");
    assert_eq!(last["action"], json!("delete"));
    assert_eq!(last["resource"]["type"], json!("account"));
    assert!(
        entries
            .iter()
            .any(|e| e["resource"]["store_name"] == json!("b-store"))
    );
    let v = assert_ok(&h.raw_abs(Method::GET, &verify_uri(&b), None, "").await);
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["head_seq"], last["seq"]);
    // The deleted account's token reads nothing.
    let r = h.get_as(&b_admin.value, &audit_uri(&b, "")).await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_and_denials_keep_one_gap_free_chain() {
    let h = std::sync::Arc::new(Harness::new().await);
    let store = h.create_store("busy").await;
    let reporter = h
        .issue_token(&h.account, "busy-reporter", "secrets_store_reporter")
        .await;
    let before = h.audit_entries_all(&h.account).await.0.len();
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let h = h.clone();
            let store = store.clone();
            let auth = if i % 3 == 0 {
                reporter.bearer()
            } else {
                h.bearer()
            };
            tokio::spawn(async move {
                h.send_as(
                    Method::POST,
                    &h.api(&format!("/stores/{store}/secrets")),
                    Some(&auth),
                    Some(&json!([secret_item(
                        &format!("S{i:02}"),
                        "v",
                        &["workers"]
                    )])),
                )
                .await
            })
        })
        .collect();
    let mut request_ids = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::FORBIDDEN,
            "{} {}",
            r.status,
            r.text()
        );
        request_ids.push(rid(&r));
    }
    let (entries, _) = h.audit_entries_all(&h.account).await;
    assert_eq!(entries.len(), before + 24);
    assert_eq!(
        seqs(&entries),
        (1..=entries.len() as u64).collect::<Vec<_>>()
    );
    for id in &request_ids {
        one_entry(&entries, id, "each request recorded once");
    }
    h.coffer.checkpoint_audit().await.unwrap();
    let v = verify(&h).await;
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["entries_checked"].as_u64(), Some(entries.len() as u64));
}

/// What the operator does to another account is in that account's log and in the operator's
/// own (naming the account acted on), under the same request id: creating it, its first token,
/// its quota, revoking one of its tokens, deleting it.
#[tokio::test]
async fn the_operators_acts_on_another_account_are_in_both_logs() {
    let h = Harness::new().await;
    let r = h
        .json_abs(Method::POST, V4, &json!({ "name": "tenant" }))
        .await;
    let c = assert_hex_id(&assert_ok(&r)["id"]);
    let mut acts = vec![(rid(&r), "create", "account")];
    let r = h
        .json_abs(
            Method::POST,
            &tokens_uri(&c, None),
            &json!({ "name": "tenant admin", "role": "super_admin" }),
        )
        .await;
    let admin = issued(&r);
    acts.push((rid(&r), "create", "token"));
    let r = h
        .json_abs(
            Method::PATCH,
            &account_uri(&c),
            &json!({ "secrets_quota": 5 }),
        )
        .await;
    assert_ok(&r);
    acts.push((rid(&r), "update", "account"));
    let extra = h
        .issue_token_by(&admin, &c, "extra", "secrets_store_reporter")
        .await;
    let r = h
        .raw_abs(Method::DELETE, &tokens_uri(&c, Some(&extra.id)), None, "")
        .await;
    assert_ok(&r);
    acts.push((rid(&r), "revoke", "token"));
    let r = h.raw_abs(Method::DELETE, &account_uri(&c), None, "").await;
    assert_deleted(&r);
    acts.push((rid(&r), "delete", "account"));

    let (own, _) = h.audit_entries_all(&h.account).await;
    let (theirs, _) = h.audit_entries_all(&c).await;
    for (request, action, kind) in &acts {
        let mine = one_entry(&own, request, "the operator's own record");
        let there = one_entry(&theirs, request, "the account's record");
        for e in [mine, there] {
            assert_eq!(e["action"], json!(action), "{e}");
            assert_eq!(e["outcome"], json!("success"), "{e}");
            assert_eq!(e["resource"]["type"], json!(kind), "{e}");
            assert_eq!(e["actor"]["operator"], json!(true), "{e}");
        }
        assert_eq!(mine["account_id"], json!(h.account), "{mine}");
        assert_eq!(mine["resource"]["account_id"], json!(c), "{mine}");
        assert_eq!(there["account_id"], json!(c), "{there}");
        assert_eq!(there["resource"]["account_id"], Value::Null, "{there}");
    }
    // The operator's own changes in its own account are recorded once.
    let r = h.post("/stores", &json!({ "name": "mine" })).await;
    assert_ok(&r);
    let (own, _) = h.audit_entries_all(&h.account).await;
    let e = one_entry(&own, &rid(&r), "a change in the operator's own account");
    assert_eq!(e["resource"]["account_id"], Value::Null, "{e}");
}
