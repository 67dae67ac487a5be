//! Tamper evidence of the audit log (`.../audit_logs/verify`) against direct edits of the
//! database, on both backends: SQLite's `coffer.db`, and the instance's PostgreSQL database
//! through a superuser connection (`Backing::client`). And failing closed when an entry
//! cannot be written.
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
//! Each tamper test disables the append-only triggers first (after checking they refuse UPDATE
//! and DELETE): they stop mistakes, not someone with write access to the file or the tables.

use std::time::Duration;

use axum::http::Method;
use coffer_api::ErrorCode;
use coffer_storage::{AuditEntry, AuditRecord};
use coffer_types::{AccountId, SecretId, StoreId, Timestamp, TokenId};
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::audit::{verify, verify_uri};
use crate::support::*;

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

// ---- direct database access, on either backend ----

/// `coffer.db` of the harness's data dir (SQLite).
pub(crate) fn open_db(h: &Harness) -> Connection {
    let c = Connection::open(h.data_dir.join("coffer.db")).expect("open coffer.db");
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

fn account_bytes(account: &str) -> Vec<u8> {
    AccountId::parse(account).unwrap().as_bytes().to_vec()
}

/// The instance's own tables, as someone with write access to them sees them: `coffer.db`,
/// or a superuser connection to the instance's PostgreSQL database.
enum Db {
    Sqlite(Connection),
    Postgres(tokio_postgres::Client),
}

/// A value bound to a statement of [`Db::exec`]: the tables hold bytes and integers.
#[derive(Debug)]
enum Arg {
    Bytes(Vec<u8>),
    Int(i64),
}

impl From<&Vec<u8>> for Arg {
    fn from(v: &Vec<u8>) -> Arg {
        Arg::Bytes(v.clone())
    }
}

impl From<&&[u8]> for Arg {
    fn from(v: &&[u8]) -> Arg {
        Arg::Bytes(v.to_vec())
    }
}

impl From<&i64> for Arg {
    fn from(v: &i64) -> Arg {
        Arg::Int(*v)
    }
}

/// The arguments of a [`Db::exec`], each by reference (as rusqlite's `params!`).
macro_rules! args {
    ($($e:expr),* $(,)?) => {
        &[$(Arg::from(&$e)),*]
    };
}

impl Db {
    async fn open(h: &Harness) -> Db {
        match h.backing.client().await {
            Some(client) => Db::Postgres(client),
            None => Db::Sqlite(open_db(h)),
        }
    }

    /// Runs `sql` (placeholders `?1`, `?2`, ...) and returns the rows it changed; panics on
    /// an error.
    async fn exec(&self, sql: &str, args: &[Arg]) -> u64 {
        self.try_exec(sql, args)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// [`Db::exec`], with the database's error message.
    async fn try_exec(&self, sql: &str, args: &[Arg]) -> Result<u64, String> {
        match self {
            Db::Sqlite(c) => {
                let values: Vec<rusqlite::types::Value> = args
                    .iter()
                    .map(|a| match a {
                        Arg::Bytes(b) => rusqlite::types::Value::Blob(b.clone()),
                        Arg::Int(i) => rusqlite::types::Value::Integer(*i),
                    })
                    .collect();
                c.execute(sql, rusqlite::params_from_iter(values))
                    .map(|n| n as u64)
                    .map_err(|e| e.to_string())
            }
            Db::Postgres(c) => {
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
                    .iter()
                    .map(|a| match a {
                        Arg::Bytes(b) => b as &(dyn tokio_postgres::types::ToSql + Sync),
                        Arg::Int(i) => i as &(dyn tokio_postgres::types::ToSql + Sync),
                    })
                    .collect();
                c.execute(&sql.replace('?', "$"), &params)
                    .await
                    .map_err(|e| match e.as_db_error() {
                        Some(db) => db.message().to_owned(),
                        None => e.to_string(),
                    })
            }
        }
    }

    /// Runs statements without arguments (`BEGIN`, `COMMIT`).
    async fn batch(&self, sql: &str) {
        match self {
            Db::Sqlite(c) => c.execute_batch(sql).unwrap(),
            Db::Postgres(c) => c.batch_execute(sql).await.unwrap(),
        }
    }

    /// Disables the triggers that keep `audit` and `audit_checkpoints` append-only, after
    /// checking that they do refuse an UPDATE and a DELETE.
    async fn drop_append_only_triggers(&self) {
        for refused in [
            "UPDATE audit SET action = 'x' WHERE seq = 1",
            "DELETE FROM audit WHERE seq = 1",
            "DELETE FROM audit_checkpoints",
        ] {
            let e = self.try_exec(refused, &[]).await.expect_err(refused);
            assert!(e.contains("append-only"), "{refused}: {e}");
        }
        match self {
            Db::Sqlite(c) => {
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
            Db::Postgres(c) => c
                .batch_execute(
                    "ALTER TABLE audit DISABLE TRIGGER USER;
                     ALTER TABLE audit_checkpoints DISABLE TRIGGER USER",
                )
                .await
                .unwrap(),
        }
    }

    /// Makes every insert into `audit` fail (`on`), or stops doing so.
    async fn refuse_audit_inserts(&self, on: bool) {
        let sql = match (self, on) {
            (Db::Sqlite(_), true) => {
                "CREATE TRIGGER test_audit_refuse BEFORE INSERT ON audit BEGIN
                     SELECT RAISE(ABORT, 'no');
                 END;"
            }
            (Db::Sqlite(_), false) => "DROP TRIGGER test_audit_refuse;",
            (Db::Postgres(_), true) => {
                "CREATE FUNCTION test_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN RAISE EXCEPTION 'no'; END $$;
                 CREATE TRIGGER test_audit_refuse BEFORE INSERT ON audit
                     FOR EACH ROW EXECUTE FUNCTION test_audit_refuse();"
            }
            (Db::Postgres(_), false) => {
                "DROP TRIGGER test_audit_refuse ON audit; DROP FUNCTION test_audit_refuse();"
            }
        };
        self.batch(sql).await;
    }

    /// Reads one raw row of the account's chain back as an [`AuditRecord`].
    async fn read_record(&self, account: &[u8], seq: u64) -> AuditRecord {
        const SQL: &str = "SELECT at, action, outcome, actor_token, store_id, secret_id, payload,
                                  prev_hash, hash
                           FROM audit WHERE account_id = ?1 AND seq = ?2";
        type Raw = (
            i64,
            String,
            String,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Vec<u8>,
            Vec<u8>,
            Vec<u8>,
        );
        let raw: Raw = match self {
            Db::Sqlite(c) => c
                .query_row(SQL, rusqlite::params![account, seq as i64], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ))
                })
                .unwrap(),
            Db::Postgres(c) => {
                let r = c
                    .query_one(&SQL.replace('?', "$"), &[&account, &(seq as i64)])
                    .await
                    .unwrap();
                (
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                    r.get(7),
                    r.get(8),
                )
            }
        };
        fn id16(v: Option<Vec<u8>>) -> Option<[u8; 16]> {
            v.map(|b| b.try_into().expect("16-byte id"))
        }
        let (at, action, outcome, actor, store, secret, payload, prev, hash) = raw;
        AuditRecord {
            seq,
            prev_hash: prev.try_into().unwrap(),
            hash: hash.try_into().unwrap(),
            entry: AuditEntry {
                account_id: AccountId::from_bytes(account.try_into().unwrap()),
                at: Timestamp::from_unix_micros(at),
                action,
                outcome,
                actor_token: id16(actor).map(TokenId::from_bytes),
                store_id: id16(store).map(StoreId::from_bytes),
                secret_id: id16(secret).map(SecretId::from_bytes),
                payload,
            },
        }
    }
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
    let c = chain().await;
    let db = Db::open(&c.h).await;
    db.drop_append_only_triggers().await;
    let seq = 4;
    let rec = db.read_record(&c.account, seq).await;
    let mut payload: Value = serde_json::from_slice(&rec.entry.payload).unwrap();
    payload["request_id"] = json!("forged");
    let edited = serde_json::to_vec(&payload).unwrap();
    assert_eq!(
        db.exec(
            "UPDATE audit SET payload = ?1 WHERE account_id = ?2 AND seq = ?3",
            args![edited, c.account, seq as i64],
        )
        .await,
        1
    );
    assert_caught(&verify(&c.h).await, seq, "edited");
}

#[tokio::test]
async fn tamper_edited_action_is_caught() {
    let c = chain().await;
    let db = Db::open(&c.h).await;
    db.drop_append_only_triggers().await;
    let seq = c.k + 2;
    assert_eq!(
        db.exec(
            "UPDATE audit SET action = 'read', outcome = 'denied' WHERE account_id = ?1 AND seq = ?2",
            args![c.account, seq as i64],
        )
        .await,
        1
    );
    assert_caught(&verify(&c.h).await, seq, "edited");
}

#[tokio::test]
async fn tamper_deleted_middle_entry_is_caught() {
    let c = chain().await;
    let db = Db::open(&c.h).await;
    db.drop_append_only_triggers().await;
    let seq = c.k + 1;
    assert_eq!(
        db.exec(
            "DELETE FROM audit WHERE account_id = ?1 AND seq = ?2",
            args![c.account, seq as i64],
        )
        .await,
        1
    );
    let v = verify(&c.h).await;
    assert_caught(&v, seq, "deleted");
    // The head reported is the last good entry's.
    assert_eq!(v["head_seq"].as_u64(), Some(seq - 1), "{v}");
}

#[tokio::test]
async fn tamper_reordered_entries_are_caught() {
    let c = chain().await;
    let db = Db::open(&c.h).await;
    db.drop_append_only_triggers().await;
    let (x, y) = (3i64, c.k as i64 + 2);
    db.batch("BEGIN").await;
    for (from, to) in [(x, 1_000_000), (y, x), (1_000_000, y)] {
        assert_eq!(
            db.exec(
                "UPDATE audit SET seq = ?1 WHERE account_id = ?2 AND seq = ?3",
                args![to, c.account, from],
            )
            .await,
            1
        );
    }
    db.batch("COMMIT").await;
    assert_caught(&verify(&c.h).await, x as u64, "link");
}

#[tokio::test]
async fn tamper_truncated_tail_under_a_checkpoint_is_caught() {
    // The newest entries removed, the checkpoints left: the last checkpoint covers an entry
    // that is gone.
    let c = chain().await;
    let db = Db::open(&c.h).await;
    db.drop_append_only_triggers().await;
    let removed = db
        .exec(
            "DELETE FROM audit WHERE account_id = ?1 AND seq > ?2",
            args![c.account, c.n as i64 - 2],
        )
        .await;
    assert_eq!(removed, 2);
    let v = verify(&c.h).await;
    assert_caught(&v, c.n, "removed");
    assert_eq!(v["head_seq"].as_u64(), Some(c.n - 2));
}

#[tokio::test]
async fn tamper_truncated_tail_and_its_checkpoint_is_caught_by_an_earlier_checkpoint() {
    // The newest entries and the newest checkpoint removed, but the removal reaches back into
    // entries an earlier checkpoint covers.
    let c = chain().await;
    let db = Db::open(&c.h).await;
    db.drop_append_only_triggers().await;
    db.exec(
        "DELETE FROM audit WHERE account_id = ?1 AND seq >= ?2",
        args![c.account, c.k as i64],
    )
    .await;
    assert_eq!(
        db.exec(
            "DELETE FROM audit_checkpoints WHERE account_id = ?1 AND seq = ?2",
            args![c.account, c.n as i64],
        )
        .await,
        1
    );
    assert_caught(&verify(&c.h).await, c.k, "removed");
}

#[tokio::test]
async fn tamper_truncation_beyond_the_last_checkpoint_shows_only_against_a_recorded_head() {
    // The documented limit: the newest entries and every checkpoint covering them removed
    // leave a consistent, shorter chain. `verify` cannot tell; the head recorded outside the
    // instance before the truncation can.
    let c = chain().await;
    let before = verify(&c.h).await;
    let recorded = (before["head_seq"].clone(), before["head_hash"].clone());
    let db = Db::open(&c.h).await;
    db.drop_append_only_triggers().await;
    db.exec(
        "DELETE FROM audit WHERE account_id = ?1 AND seq > ?2",
        args![c.account, c.k as i64],
    )
    .await;
    db.exec(
        "DELETE FROM audit_checkpoints WHERE account_id = ?1 AND seq > ?2",
        args![c.account, c.k as i64],
    )
    .await;
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
async fn rehash(db: &Db, account: &[u8], from: u64, to: u64) -> [u8; 32] {
    let mut prev = db.read_record(account, from - 1).await.hash;
    for seq in from..=to {
        let rec = db.read_record(account, seq).await;
        let hash = AuditRecord::compute_hash(&prev, seq, &rec.entry);
        db.exec(
            "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE account_id = ?3 AND seq = ?4",
            args![prev.to_vec(), hash.to_vec(), account, seq as i64],
        )
        .await;
        prev = hash;
    }
    prev
}

#[tokio::test]
async fn tamper_consistent_rewrite_is_caught_by_the_signed_checkpoint() {
    let c = chain().await;
    let db = Db::open(&c.h).await;
    db.drop_append_only_triggers().await;
    let seq = 3;
    let rec = db.read_record(&c.account, seq).await;
    let mut payload: Value = serde_json::from_slice(&rec.entry.payload).unwrap();
    payload["resource"]["store_name"] = json!("innocent");
    db.exec(
        "UPDATE audit SET payload = ?1 WHERE account_id = ?2 AND seq = ?3",
        args![serde_json::to_vec(&payload).unwrap(), c.account, seq as i64],
    )
    .await;
    rehash(&db, &c.account, seq, c.n).await;
    let v = verify(&c.h).await;
    // The chain itself is consistent again: every entry was checked, only a checkpoint (the
    // first one at or after the rewritten entry) disagrees.
    assert_eq!(v["entries_checked"].as_u64(), Some(c.n), "{v}");
    assert_caught(&v, c.k, "checkpoint");
    assert_eq!(v["checkpoints_checked"], json!(1), "{v}");
}

#[tokio::test]
async fn tamper_rewrite_with_rewritten_checkpoints_is_caught_by_their_signature() {
    // The forger also moves the checkpoints' hashes to the rewritten chain; without the audit
    // key the MACs no longer match.
    let c = chain().await;
    let db = Db::open(&c.h).await;
    db.drop_append_only_triggers().await;
    let seq = c.k + 1;
    db.exec(
        "UPDATE audit SET action = 'read' WHERE account_id = ?1 AND seq = ?2",
        args![c.account, seq as i64],
    )
    .await;
    let head = rehash(&db, &c.account, seq, c.n).await;
    db.exec(
        "UPDATE audit_checkpoints SET hash = ?1 WHERE account_id = ?2 AND seq = ?3",
        args![head.to_vec(), c.account, c.n as i64],
    )
    .await;
    let v = verify(&c.h).await;
    assert_eq!(v["entries_checked"].as_u64(), Some(c.n), "{v}");
    assert_caught(&v, c.n, "signature");
}

// ---- 5. fail closed ----

#[tokio::test]
async fn changes_are_refused_when_their_audit_entry_cannot_be_written() {
    let fx = fixture().await;
    let h = &fx.h;
    let reporter = h
        .issue_token(&h.account, "fc-reporter", "secrets_store_reporter")
        .await;
    let before = h.snapshot().await;
    let identity_before = h.identity_snapshot().await;
    let entries_before = h.audit_entries_all(&h.account).await.0.len();

    let db = Db::open(h).await;
    db.refuse_audit_inserts(true).await;

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
    db.refuse_audit_inserts(false).await;
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
