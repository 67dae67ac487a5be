//! `/client/v4/accounts/{account_id}/audit_logs` and `.../audit_logs/verify`: what is recorded
//! (changes and denials, with actor, resource ids and names, request id, never a value or a
//! token), filters and paging, who may read it, tamper evidence against direct edits of the
//! SQLite file, and failing closed when an entry cannot be written.
//!
//! What verification can and cannot see (the tamper tests below pin each case):
//! - editing, deleting or reordering any entry breaks the hash chain: caught at that entry;
//! - rewriting the chain consistently (recomputing every hash, which needs no key) is caught by
//!   the first signed checkpoint at or after the first rewritten entry, and forging that
//!   checkpoint needs the audit MAC key, which is not in the database;
//! - removing the newest entries is caught while a surviving checkpoint still covers one of
//!   them;
//! - removing the newest entries *beyond the last surviving checkpoint* (entries not yet
//!   checkpointed, or entries whose checkpoints are removed along with them) leaves a shorter
//!   chain that is internally consistent: `verify` says ok, and only a head (`head_seq`,
//!   `head_hash`) recorded outside the instance shows the truncation. Likewise a consistent
//!   rewrite of entries after the last checkpoint, or forged entries appended with correctly
//!   computed hashes (the chain hash needs no key; only checkpoints do).
//!
//! Each tamper test drops the append-only triggers first (after checking they refuse UPDATE
//! and DELETE): they stop mistakes, not someone with write access to the file.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use coffer_api::ErrorCode;
use coffer_storage::{AuditEntry, AuditRecord};
use coffer_types::{AccountId, SecretId, StoreId, Timestamp, TokenId};
use rusqlite::{Connection, params};
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

fn verify_uri(account: &str) -> String {
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
async fn verify(h: &Harness) -> Value {
    assert_ok(
        &h.raw_abs(Method::GET, &verify_uri(&h.account), None, "")
            .await,
    )
}

/// A verification that found a problem at `seq` whose text contains `needle`.
#[track_caller]
fn assert_caught(v: &Value, seq: u64, needle: &str) {
    assert_eq!(v["ok"], json!(false), "tampering not caught: {v}");
    let bad = &v["first_bad"];
    assert_eq!(bad["seq"].as_u64(), Some(seq), "first bad entry: {v}");
    let problem = bad["problem"].as_str().expect("problem text");
    assert!(
        problem.contains(needle),
        "problem {problem:?} should mention {needle:?}"
    );
}

// ---- direct database access ----

fn open_db(h: &Harness) -> Connection {
    let c = Connection::open(h.data_dir.join("coffer.db")).expect("open coffer.db");
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

fn account_bytes(account: &str) -> Vec<u8> {
    AccountId::parse(account).unwrap().as_bytes().to_vec()
}

/// Drops the triggers that keep `audit` and `audit_checkpoints` append-only, after checking
/// that they do refuse an UPDATE and a DELETE.
fn drop_append_only_triggers(c: &Connection) {
    let refused = c
        .execute("UPDATE audit SET action = 'x' WHERE seq = 1", [])
        .expect_err("UPDATE on audit must be refused");
    assert!(refused.to_string().contains("append-only"), "{refused}");
    let refused = c
        .execute("DELETE FROM audit WHERE seq = 1", [])
        .expect_err("DELETE on audit must be refused");
    assert!(refused.to_string().contains("append-only"), "{refused}");
    let refused = c
        .execute("DELETE FROM audit_checkpoints", [])
        .expect_err("DELETE on audit_checkpoints must be refused");
    assert!(refused.to_string().contains("append-only"), "{refused}");

    let triggers: Vec<(String, String)> = c
        .prepare(
            "SELECT name, tbl_name FROM sqlite_master
             WHERE type = 'trigger' AND tbl_name IN ('audit', 'audit_checkpoints')",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        triggers.iter().filter(|(_, t)| t == "audit").count() >= 2,
        "update and delete triggers on audit: {triggers:?}"
    );
    for (name, _) in &triggers {
        c.execute_batch(&format!("DROP TRIGGER \"{name}\";"))
            .unwrap();
    }
}

/// Reads one raw row of the account's chain back as an [`AuditRecord`].
fn read_record(c: &Connection, account: &[u8], seq: u64) -> AuditRecord {
    fn id16(v: Option<Vec<u8>>) -> Option<[u8; 16]> {
        v.map(|b| b.try_into().expect("16-byte id"))
    }
    c.query_row(
        "SELECT at, action, outcome, actor_token, store_id, secret_id, payload, prev_hash, hash
         FROM audit WHERE account_id = ?1 AND seq = ?2",
        params![account, seq as i64],
        |r| {
            let prev: Vec<u8> = r.get(7)?;
            let hash: Vec<u8> = r.get(8)?;
            Ok(AuditRecord {
                seq,
                prev_hash: prev.try_into().unwrap(),
                hash: hash.try_into().unwrap(),
                entry: AuditEntry {
                    account_id: AccountId::from_bytes(account.try_into().unwrap()),
                    at: Timestamp::from_unix_micros(r.get(0)?),
                    action: r.get(1)?,
                    outcome: r.get(2)?,
                    actor_token: id16(r.get(3)?).map(TokenId::from_bytes),
                    store_id: id16(r.get(4)?).map(StoreId::from_bytes),
                    secret_id: id16(r.get(5)?).map(SecretId::from_bytes),
                    payload: r.get(6)?,
                },
            })
        },
    )
    .unwrap()
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
        let c = open_db(&h);
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

// ---- 4. tamper evidence ----

/// An account chain with two signed checkpoints: one at `k` (after the first batch of
/// changes) and one at `n`, the head.
struct Chain {
    h: Harness,
    account: Vec<u8>,
    k: u64,
    n: u64,
}

async fn chain() -> Chain {
    let h = Harness::new().await;
    let store = h.create_store("tamper").await;
    let made = h
        .create_secrets(
            &store,
            &[
                secret_item("A", "va", &["workers"]),
                secret_item("B", "vb", &["workers"]),
            ],
        )
        .await;
    assert_eq!(h.coffer.checkpoint_audit().await.unwrap(), 1);
    let k = verify(&h).await["head_seq"].as_u64().unwrap();
    let a = made[0]["id"].as_str().unwrap();
    let b = made[1]["id"].as_str().unwrap();
    assert_ok(
        &h.patch(
            &format!("/stores/{store}/secrets/{a}"),
            &json!({ "value": "va2" }),
        )
        .await,
    );
    h.create_secret(&store, "C", "vc").await;
    assert_deleted(&h.delete(&format!("/stores/{store}/secrets/{b}")).await);
    h.create_secret(&store, "D", "vd").await;
    assert_eq!(h.coffer.checkpoint_audit().await.unwrap(), 1);
    // Nothing moved: no new checkpoint.
    assert_eq!(h.coffer.checkpoint_audit().await.unwrap(), 0);
    let v = verify(&h).await;
    let n = v["head_seq"].as_u64().unwrap();
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["checkpoints_checked"], json!(2), "{v}");
    assert!(k >= 4 && n >= k + 4, "k={k} n={n}");
    let account = account_bytes(&h.account);
    Chain { h, account, k, n }
}

#[tokio::test]
async fn untouched_log_verifies() {
    let c = chain().await;
    let (entries, _) = c.h.audit_entries_all(&c.h.account).await;
    let last = entries.last().unwrap();
    let v = verify(&c.h).await;
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["first_bad"], Value::Null);
    assert_eq!(v["entries_checked"].as_u64(), Some(entries.len() as u64));
    assert_eq!(v["head_seq"], last["seq"]);
    assert_eq!(v["head_seq"].as_u64(), Some(c.n));
    assert_eq!(v["head_hash"], last["hash"]);
    assert_eq!(v["checkpoints_checked"], json!(2));

    // An account with entries but no checkpoint yet verifies too, and a fresh append after a
    // checkpoint keeps verifying.
    let other = c.h.create_account("fresh").await;
    let v = assert_ok(
        &c.h.raw_abs(Method::GET, &verify_uri(&other), None, "")
            .await,
    );
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["checkpoints_checked"], json!(0));
    assert_eq!(v["head_seq"], json!(1));
    // The operator's own log records that it made the account, after the last checkpoint.
    c.h.create_store("after").await;
    let v = verify(&c.h).await;
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["head_seq"].as_u64(), Some(c.n + 2));
}

#[tokio::test]
async fn tamper_edited_payload_is_caught() {
    if SqliteOnly::DatabaseFile.skip() {
        return;
    }
    let c = chain().await;
    let db = open_db(&c.h);
    drop_append_only_triggers(&db);
    let seq = 4;
    let rec = read_record(&db, &c.account, seq);
    let mut payload: Value = serde_json::from_slice(&rec.entry.payload).unwrap();
    payload["request_id"] = json!("forged");
    let edited = serde_json::to_vec(&payload).unwrap();
    assert_eq!(
        db.execute(
            "UPDATE audit SET payload = ?1 WHERE account_id = ?2 AND seq = ?3",
            params![edited, c.account, seq as i64],
        )
        .unwrap(),
        1
    );
    assert_caught(&verify(&c.h).await, seq, "edited");
}

#[tokio::test]
async fn tamper_edited_action_is_caught() {
    if SqliteOnly::DatabaseFile.skip() {
        return;
    }
    let c = chain().await;
    let db = open_db(&c.h);
    drop_append_only_triggers(&db);
    let seq = c.k + 2;
    assert_eq!(
        db.execute(
            "UPDATE audit SET action = 'read', outcome = 'denied' WHERE account_id = ?1 AND seq = ?2",
            params![c.account, seq as i64],
        )
        .unwrap(),
        1
    );
    assert_caught(&verify(&c.h).await, seq, "edited");
}

#[tokio::test]
async fn tamper_deleted_middle_entry_is_caught() {
    if SqliteOnly::DatabaseFile.skip() {
        return;
    }
    let c = chain().await;
    let db = open_db(&c.h);
    drop_append_only_triggers(&db);
    let seq = c.k + 1;
    assert_eq!(
        db.execute(
            "DELETE FROM audit WHERE account_id = ?1 AND seq = ?2",
            params![c.account, seq as i64],
        )
        .unwrap(),
        1
    );
    let v = verify(&c.h).await;
    assert_caught(&v, seq, "deleted");
    // The head reported is the last good entry's.
    assert_eq!(v["head_seq"].as_u64(), Some(seq - 1), "{v}");
}

#[tokio::test]
async fn tamper_reordered_entries_are_caught() {
    if SqliteOnly::DatabaseFile.skip() {
        return;
    }
    let c = chain().await;
    let db = open_db(&c.h);
    drop_append_only_triggers(&db);
    let (x, y) = (3i64, c.k as i64 + 2);
    db.execute_batch("BEGIN").unwrap();
    for (from, to) in [(x, 1_000_000), (y, x), (1_000_000, y)] {
        assert_eq!(
            db.execute(
                "UPDATE audit SET seq = ?1 WHERE account_id = ?2 AND seq = ?3",
                params![to, c.account, from],
            )
            .unwrap(),
            1
        );
    }
    db.execute_batch("COMMIT").unwrap();
    assert_caught(&verify(&c.h).await, x as u64, "link");
}

#[tokio::test]
async fn tamper_truncated_tail_under_a_checkpoint_is_caught() {
    if SqliteOnly::DatabaseFile.skip() {
        return;
    }
    // The newest entries removed, the checkpoints left: the last checkpoint covers an entry
    // that is gone.
    let c = chain().await;
    let db = open_db(&c.h);
    drop_append_only_triggers(&db);
    let removed = db
        .execute(
            "DELETE FROM audit WHERE account_id = ?1 AND seq > ?2",
            params![c.account, c.n as i64 - 2],
        )
        .unwrap();
    assert_eq!(removed, 2);
    let v = verify(&c.h).await;
    assert_caught(&v, c.n, "removed");
    assert_eq!(v["head_seq"].as_u64(), Some(c.n - 2));
}

#[tokio::test]
async fn tamper_truncated_tail_and_its_checkpoint_is_caught_by_an_earlier_checkpoint() {
    if SqliteOnly::DatabaseFile.skip() {
        return;
    }
    // The newest entries and the newest checkpoint removed, but the removal reaches back into
    // entries an earlier checkpoint covers.
    let c = chain().await;
    let db = open_db(&c.h);
    drop_append_only_triggers(&db);
    db.execute(
        "DELETE FROM audit WHERE account_id = ?1 AND seq >= ?2",
        params![c.account, c.k as i64],
    )
    .unwrap();
    assert_eq!(
        db.execute(
            "DELETE FROM audit_checkpoints WHERE account_id = ?1 AND seq = ?2",
            params![c.account, c.n as i64],
        )
        .unwrap(),
        1
    );
    assert_caught(&verify(&c.h).await, c.k, "removed");
}

#[tokio::test]
async fn tamper_truncation_beyond_the_last_checkpoint_shows_only_against_a_recorded_head() {
    if SqliteOnly::DatabaseFile.skip() {
        return;
    }
    // The documented limit: the newest entries and every checkpoint covering them removed
    // leave a consistent, shorter chain. `verify` cannot tell; the head recorded outside the
    // instance before the truncation can.
    let c = chain().await;
    let before = verify(&c.h).await;
    let recorded = (before["head_seq"].clone(), before["head_hash"].clone());
    let db = open_db(&c.h);
    drop_append_only_triggers(&db);
    db.execute(
        "DELETE FROM audit WHERE account_id = ?1 AND seq > ?2",
        params![c.account, c.k as i64],
    )
    .unwrap();
    db.execute(
        "DELETE FROM audit_checkpoints WHERE account_id = ?1 AND seq > ?2",
        params![c.account, c.k as i64],
    )
    .unwrap();
    let v = verify(&c.h).await;
    assert_eq!(
        v["ok"],
        json!(true),
        "undetectable without a recorded head: {v}"
    );
    assert_eq!(v["head_seq"].as_u64(), Some(c.k));
    assert_ne!(
        (v["head_seq"].clone(), v["head_hash"].clone()),
        recorded,
        "the recorded head shows the truncation"
    );
}

/// Recomputes `prev_hash` and `hash` of every entry from `from` to `to` (inclusive), as a
/// forger without the audit key would after editing entry `from`.
fn rehash(db: &Connection, account: &[u8], from: u64, to: u64) -> [u8; 32] {
    let mut prev = read_record(db, account, from - 1).hash;
    for seq in from..=to {
        let rec = read_record(db, account, seq);
        let hash = AuditRecord::compute_hash(&prev, seq, &rec.entry);
        db.execute(
            "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE account_id = ?3 AND seq = ?4",
            params![prev.to_vec(), hash.to_vec(), account, seq as i64],
        )
        .unwrap();
        prev = hash;
    }
    prev
}

#[tokio::test]
async fn tamper_consistent_rewrite_is_caught_by_the_signed_checkpoint() {
    if SqliteOnly::DatabaseFile.skip() {
        return;
    }
    let c = chain().await;
    let db = open_db(&c.h);
    drop_append_only_triggers(&db);
    let seq = 3;
    let rec = read_record(&db, &c.account, seq);
    let mut payload: Value = serde_json::from_slice(&rec.entry.payload).unwrap();
    payload["resource"]["store_name"] = json!("innocent");
    db.execute(
        "UPDATE audit SET payload = ?1 WHERE account_id = ?2 AND seq = ?3",
        params![serde_json::to_vec(&payload).unwrap(), c.account, seq as i64],
    )
    .unwrap();
    rehash(&db, &c.account, seq, c.n);
    let v = verify(&c.h).await;
    // The chain itself is consistent again: every entry was checked, only a checkpoint (the
    // first one at or after the rewritten entry) disagrees.
    assert_eq!(v["entries_checked"].as_u64(), Some(c.n), "{v}");
    assert_caught(&v, c.k, "checkpoint");
    assert_eq!(v["checkpoints_checked"], json!(1), "{v}");
}

#[tokio::test]
async fn tamper_rewrite_with_rewritten_checkpoints_is_caught_by_their_signature() {
    if SqliteOnly::DatabaseFile.skip() {
        return;
    }
    // The forger also moves the checkpoints' hashes to the rewritten chain; without the audit
    // key the MACs no longer match.
    let c = chain().await;
    let db = open_db(&c.h);
    drop_append_only_triggers(&db);
    let seq = c.k + 1;
    db.execute(
        "UPDATE audit SET action = 'read' WHERE account_id = ?1 AND seq = ?2",
        params![c.account, seq as i64],
    )
    .unwrap();
    let head = rehash(&db, &c.account, seq, c.n);
    db.execute(
        "UPDATE audit_checkpoints SET hash = ?1 WHERE account_id = ?2 AND seq = ?3",
        params![head.to_vec(), c.account, c.n as i64],
    )
    .unwrap();
    let v = verify(&c.h).await;
    assert_eq!(v["entries_checked"].as_u64(), Some(c.n), "{v}");
    assert_caught(&v, c.n, "signature");
}

// ---- 5. fail closed ----

#[tokio::test]
async fn changes_are_refused_when_their_audit_entry_cannot_be_written() {
    if SqliteOnly::DatabaseFile.skip() {
        return;
    }
    let fx = fixture().await;
    let h = &fx.h;
    let reporter = h
        .issue_token(&h.account, "fc-reporter", "secrets_store_reporter")
        .await;
    let before = h.snapshot().await;
    let identity_before = h.identity_snapshot().await;
    let entries_before = h.audit_entries_all(&h.account).await.0.len();

    let db = open_db(h);
    db.execute_batch(
        "CREATE TRIGGER test_audit_refuse BEFORE INSERT ON audit BEGIN
             SELECT RAISE(ABORT, 'no');
         END;",
    )
    .unwrap();

    let (s, x) = (fx.store.clone(), fx.secret.clone());
    let attempts: Vec<(&str, Method, String, Option<Value>)> = vec![
        (
            "create secret",
            Method::POST,
            h.api(&format!("/stores/{s}/secrets")),
            Some(json!([secret_item(
                "BLOCKED",
                "blocked-value",
                &["workers"]
            )])),
        ),
        (
            "update value",
            Method::PATCH,
            h.api(&format!("/stores/{s}/secrets/{x}")),
            Some(json!({ "value": "new-value" })),
        ),
        (
            "update scopes",
            Method::PATCH,
            h.api(&format!("/stores/{s}/secrets/{x}")),
            Some(json!({ "scopes": ["dex"] })),
        ),
        (
            "duplicate",
            Method::POST,
            h.api(&format!("/stores/{s}/secrets/{x}/duplicate")),
            Some(json!({ "name": "COPY", "scopes": ["workers"] })),
        ),
        (
            "delete secret",
            Method::DELETE,
            h.api(&format!("/stores/{s}/secrets/{x}")),
            None,
        ),
        (
            "bulk delete",
            Method::DELETE,
            h.api(&format!("/stores/{s}/secrets")),
            Some(json!([x])),
        ),
        (
            "create store",
            Method::POST,
            h.api("/stores"),
            Some(json!({ "name": "blocked" })),
        ),
        (
            "delete store",
            Method::DELETE,
            h.api(&format!("/stores/{s}?force=true")),
            None,
        ),
        (
            "create token",
            Method::POST,
            tokens_uri(&h.account, None),
            Some(json!({ "name": "blocked", "role": "super_admin" })),
        ),
        (
            "revoke token",
            Method::DELETE,
            tokens_uri(&h.account, Some(&reporter.id)),
            None,
        ),
        (
            "set quota",
            Method::PATCH,
            account_uri(&h.account),
            Some(json!({ "secrets_quota": 7 })),
        ),
    ];
    for (what, method, uri, body) in attempts {
        let r = h
            .send_as(method, &uri, Some(&h.bearer()), body.as_ref())
            .await;
        assert!(
            r.status.is_server_error(),
            "{what}: {} {}",
            r.status,
            r.text()
        );
        let v = r.json();
        assert_eq!(v["success"], json!(false), "{what}: {v}");
        assert_eq!(v["result"], Value::Null, "{what}: {v}");
        let code = v["errors"][0]["code"].as_u64();
        assert!(
            matches!(code, Some(1500 | 1501)),
            "{what}: unavailable or internal: {v}"
        );
        assert_eq!(
            r.status.as_u16(),
            if code == Some(1500) { 503 } else { 500 },
            "{what}"
        );
        // Not the panic handler's answer.
        assert_ne!(
            v["errors"][0]["message"],
            json!("internal error"),
            "{what}: a panic?"
        );
        h.assert_unchanged(&before, what).await;
    }
    // A denial is still a denial (its record is missing, which is logged, not the caller's
    // problem).
    let r = h
        .send_as(
            Method::POST,
            &h.api(&format!("/stores/{s}/secrets")),
            Some(&reporter.bearer()),
            Some(&json!([secret_item("NOPE", "v", &["workers"])])),
        )
        .await;
    assert_err(&r, ErrorCode::Forbidden, "secrets_store:edit");

    h.assert_unchanged(&before, "after every refused change")
        .await;
    assert_eq!(
        h.identity_snapshot().await,
        identity_before,
        "identity written"
    );
    db.execute_batch("DROP TRIGGER test_audit_refuse;").unwrap();
    let (entries, _) = h.audit_entries_all(&h.account).await;
    assert_eq!(entries.len(), entries_before, "no entry was written");

    // Writes work again, and the chain has no gap.
    let r = h
        .post(
            &format!("/stores/{s}/secrets"),
            &json!([secret_item("AFTER", "after-value", &["workers"])]),
        )
        .await;
    assert_ok(&r);
    let v = verify(h).await;
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["head_seq"].as_u64(), Some(entries_before as u64 + 1));
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
