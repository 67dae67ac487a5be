//! `verify_chains` on the SQLite backend (what restore and `coffer verify` run), the read-only
//! handle, and the consistent copy `coffer backup` takes while the writer goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use coffer_storage::{
    AuditCheckpoint, AuditEntry, ChainError, SqliteStorage, Storage, StorageError, verify_chains,
};
use coffer_types::{AccountId, TokenId};

use super::{db_path, id, new_secret, raw, ts, world};

fn audit(account: AccountId, tag: &str) -> AuditEntry {
    AuditEntry {
        account_id: account,
        at: ts(5),
        action: "create".into(),
        outcome: "success".into(),
        actor_token: Some(TokenId::from_bytes(id())),
        store_id: None,
        secret_id: None,
        payload: tag.as_bytes().to_vec(),
    }
}

/// A database with a few change-log entries and two accounts' audit chains; closed.
async fn populated(path: &std::path::Path) -> (AccountId, AccountId) {
    let s = SqliteStorage::open(path).unwrap();
    let w = world(&s, "acme").await;
    let other = world(&s, "other").await;
    for i in 0..5 {
        s.create_secrets(
            w.account,
            w.store,
            vec![new_secret(&w, &format!("S{i}"))],
            100,
            &[audit(w.account, &format!("a{i}"))],
        )
        .await
        .unwrap();
    }
    s.append_audit(&[audit(other.account, "b0"), audit(other.account, "b1")])
        .await
        .unwrap();
    s.close().await;
    (w.account, other.account)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_chains_reports_the_heads_of_an_intact_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (a, b) = populated(&path).await;
    let s = SqliteStorage::open_read_only(&path).unwrap();
    let report = verify_chains(&s).await.unwrap();
    let state = s.log_state().await.unwrap();
    assert_eq!(report.log, state);
    let rows: i64 = raw(&path)
        .query_row("SELECT count(*) FROM changes", [], |r| r.get(0))
        .unwrap();
    assert!(rows >= 5);
    assert_eq!(report.changes_checked, rows as u64, "every entry read");
    let heads: Vec<_> = report
        .audit_heads
        .iter()
        .map(|h| (h.account, h.seq))
        .collect();
    let mut expected = vec![(a, 5), (b, 2)];
    expected.sort_by_key(|(acc, _)| *acc.as_bytes());
    assert_eq!(heads, expected);
    assert_eq!(report.audit_entries_checked, 7);
    assert_eq!(
        report.audit_heads[0].hash,
        s.audit_head(report.audit_heads[0].account)
            .await
            .unwrap()
            .unwrap()
            .1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_chains_starts_from_the_base_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    populated(&path).await;
    let s = SqliteStorage::open(&path).unwrap();
    s.ensure_cluster_id().await.unwrap();
    s.compact_log(3).await.unwrap();
    let report = verify_chains(&s).await.unwrap();
    assert_eq!(report.log.base_seq, 3);
    s.close().await;
    let above: i64 = raw(&path)
        .query_row("SELECT count(*) FROM changes WHERE seq > 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        report.changes_checked, above as u64,
        "entries above the base only"
    );
}

/// A crafted database whose log head is below its base fails as a broken chain, not an
/// arithmetic overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_below_the_base_is_a_broken_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    populated(&path).await;
    let s = SqliteStorage::open(&path).unwrap();
    s.ensure_cluster_id().await.unwrap();
    s.close().await;
    drop(s);
    raw(&path)
        .execute("UPDATE replication SET base_seq = 1000", [])
        .unwrap();
    let s = SqliteStorage::open_read_only(&path).unwrap();
    let err = verify_chains(&s).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the log's head is below its base (seq 1000)"),
        "{err}"
    );
}

/// Checkpoints are compared with the chain (their MACs need the KEK, not checked here): one
/// naming another hash fails, and so does an account whose entries were all deleted while its
/// checkpoints remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_must_name_entries_of_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (a, b) = populated(&path).await;
    let s = SqliteStorage::open(&path).unwrap();
    for account in [a, b] {
        let (seq, hash) = s.audit_head(account).await.unwrap().unwrap();
        s.put_audit_checkpoint(AuditCheckpoint {
            account_id: account,
            seq,
            hash,
            mac: vec![0; 32],
            at: ts(6),
        })
        .await
        .unwrap();
    }
    let report = verify_chains(&s).await.unwrap();
    assert_eq!(report.audit_checkpoints_checked, 2);
    s.put_audit_checkpoint(AuditCheckpoint {
        account_id: a,
        seq: 2,
        hash: [9; 32],
        mac: vec![0; 32],
        at: ts(6),
    })
    .await
    .unwrap();
    let err = verify_chains(&s).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "audit chain of account {a} broken at seq 2: its checkpoint records another hash for \
             this entry"
        )
    );
    s.close().await;
    drop(s);
    raw(&path)
        .execute_batch(
            "DROP TRIGGER audit_checkpoints_no_delete;
             DELETE FROM audit_checkpoints WHERE hash = zeroblob(32) OR seq = 2 AND mac = zeroblob(32) AND hash <> (SELECT hash FROM audit WHERE audit.account_id = audit_checkpoints.account_id AND audit.seq = 2);
             DROP TRIGGER audit_no_delete;",
        )
        .unwrap();
    raw(&path)
        .execute(
            "DELETE FROM audit WHERE account_id = ?1",
            [b.as_bytes().to_vec()],
        )
        .unwrap();
    let s = SqliteStorage::open_read_only(&path).unwrap();
    let err = verify_chains(&s).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "audit chain of account {b} broken at seq 2: a checkpoint covers this entry but the \
             chain ends at seq 0: entries were removed"
        )
    );
}

/// What restore checks before it opens a backup's database read-write: the schema must be
/// exactly this build's (no extra trigger, no dropped guard) and the file intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_copy_must_have_the_expected_schema_and_integrity() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    populated(&path).await;
    SqliteStorage::check_untrusted(&path).unwrap();

    let copy = |name: &str, sql: &str| {
        let p = dir.path().join(name);
        std::fs::copy(&path, &p).unwrap();
        raw(&p).execute_batch(sql).unwrap();
        p
    };
    let extra = copy(
        "extra.db",
        "CREATE TRIGGER keep_deks BEFORE DELETE ON deks BEGIN SELECT RAISE(IGNORE); END;",
    );
    let err = SqliteStorage::check_untrusted(&extra).unwrap_err();
    assert!(
        err.to_string().contains("unexpected trigger keep_deks"),
        "{err}"
    );
    let dropped = copy("dropped.db", "DROP TRIGGER audit_no_update;");
    let err = SqliteStorage::check_untrusted(&dropped).unwrap_err();
    assert!(
        err.to_string().contains("missing trigger audit_no_update"),
        "{err}"
    );
    let view = copy(
        "view.db",
        "DROP TABLE nodes; CREATE VIEW nodes AS WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL \
         SELECT x + 1 FROM r) SELECT x FROM r;",
    );
    assert!(SqliteStorage::check_untrusted(&view).is_err());
    let newer = copy("newer.db", "PRAGMA user_version = 999;");
    let err = SqliteStorage::check_untrusted(&newer).unwrap_err();
    assert!(err.to_string().contains("schema version 999"), "{err}");

    // An index that no longer matches its table: the schema is right, the file is not.
    let broken = copy("broken.db", "");
    let bytes = std::fs::read(&broken).unwrap();
    let page_size = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    let root: i64 = raw(&broken)
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'audit' \
             AND sql IS NOT NULL LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut bytes = bytes;
    let end = root as usize * page_size;
    for b in &mut bytes[end - 40..end - 8] {
        *b ^= 0x5a;
    }
    std::fs::write(&broken, &bytes).unwrap();
    let err = SqliteStorage::check_untrusted(&broken).unwrap_err();
    assert!(err.to_string().contains("integrity check failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_change_entry_is_named_by_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    populated(&path).await;
    raw(&path)
        .execute_batch(
            "DROP TRIGGER changes_no_update;
             UPDATE changes SET payload = CAST(REPLACE(CAST(payload AS TEXT), 'S3', 'S9') AS BLOB)
             WHERE CAST(payload AS TEXT) LIKE '%\"S3\"%';",
        )
        .unwrap();
    let seq: i64 = raw(&path)
        .query_row(
            "SELECT seq FROM changes WHERE CAST(payload AS TEXT) LIKE '%\"S9\"%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let s = SqliteStorage::open_read_only(&path).unwrap();
    let err = verify_chains(&s).await.unwrap_err();
    match &err {
        ChainError::ChangeLog { seq: at, .. } => assert_eq!(*at, seq as u64, "{err}"),
        other => panic!("{other}"),
    }
    assert!(
        err.to_string()
            .starts_with(&format!("change-log chain broken at seq {seq}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_change_entry_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    populated(&path).await;
    raw(&path)
        .execute_batch("DROP TRIGGER changes_no_delete; DELETE FROM changes WHERE seq = 4;")
        .unwrap();
    let s = SqliteStorage::open_read_only(&path).unwrap();
    let err = verify_chains(&s).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("change-log chain broken at seq 4"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_audit_entry_names_its_account_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (_, b) = populated(&path).await;
    raw(&path)
        .execute_batch(
            "DROP TRIGGER audit_no_update;
             UPDATE audit SET payload = CAST('forged' AS BLOB) WHERE payload = CAST('b1' AS BLOB);",
        )
        .unwrap();
    let s = SqliteStorage::open_read_only(&path).unwrap();
    let err = verify_chains(&s).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "audit chain of account {b} broken at seq 2: its hash is not the one computed from \
             its contents"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_only_handle_writes_nothing_and_refuses_other_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    populated(&path).await;
    let before = std::fs::read(&path).unwrap();
    let s = SqliteStorage::open_read_only(&path).unwrap();
    let err = s
        .append_audit(&[audit(AccountId::from_bytes(id()), "x")])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("opened read-only"), "{err}");
    s.close().await;
    drop(s);
    assert_eq!(std::fs::read(&path).unwrap(), before);

    let missing = dir.path().join("missing.db");
    let err = SqliteStorage::open_read_only(&missing).unwrap_err();
    assert!(err.to_string().contains("is not a database file"), "{err}");
    assert!(!missing.exists(), "nothing created");

    let empty = dir.path().join("empty.db");
    drop(rusqlite::Connection::open(&empty).unwrap());
    let err = SqliteStorage::open_read_only(&empty).unwrap_err();
    assert!(err.to_string().contains("not a Coffer database"), "{err}");

    raw(&path).pragma_update(None, "user_version", 999).unwrap();
    let err = SqliteStorage::open_read_only(&path).unwrap_err();
    assert!(err.to_string().contains("schema version 999"), "{err}");
}

/// The copy is a point in time: taken while a writer keeps committing, it holds a log whose
/// chains verify, ending at a head the live log had, and every row that head covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_taken_during_writes_is_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = Arc::new(SqliteStorage::open(&path).unwrap());
    let w = world(&s, "acme").await;
    let (account, store) = (w.account, w.store);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                s.create_secrets(
                    w.account,
                    w.store,
                    vec![new_secret(&w, &format!("W{n}"))],
                    1_000_000,
                    &[audit(w.account, &format!("w{n}"))],
                )
                .await
                .unwrap();
                n += 1;
            }
            n
        })
    };
    // Let some writes land first.
    while s.change_head().await.unwrap() < 20 {
        tokio::task::yield_now().await;
    }
    let copy = dir.path().join("copy.db");
    std::fs::File::create(&copy).unwrap();
    let (src, dst) = (path.clone(), copy.clone());
    tokio::task::spawn_blocking(move || SqliteStorage::copy_consistent(&src, &dst))
        .await
        .unwrap()
        .unwrap();
    let head_after_copy = s.change_head().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 0);

    let c = SqliteStorage::open_read_only(&copy).unwrap();
    let report = verify_chains(&c).await.unwrap();
    assert!(report.log.head_seq >= 20);
    assert!(report.log.head_seq <= head_after_copy);
    // The live log has the copy's head entry, with the same hash.
    let live = s
        .changes_after(report.log.head_seq - 1, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(live.hash, report.log.head_hash);
    // Rows and log agree: as many secrets as secret creates in the copy's log.
    let in_log = c
        .changes_after(0, usize::MAX)
        .await
        .unwrap()
        .iter()
        .filter(|e| String::from_utf8_lossy(&e.payload).contains("\"secret_put\""))
        .count() as u64;
    assert_eq!(c.secret_count(account).await.unwrap(), in_log);
    // The store's maintained count (an unfiltered list's total) is the copy's too.
    let mut query = coffer_storage::SecretQuery {
        page: 1,
        per_page: 1,
        order: Default::default(),
        direction: Default::default(),
        search: None,
        scopes: Default::default(),
    };
    let listed = c.list_secrets(account, store, &query).await.unwrap();
    query.search = Some(String::new());
    let rows = c.list_secrets(account, store, &query).await.unwrap();
    assert_eq!((listed.total_count, rows.total_count), (in_log, in_log));
    let audit_head = report.audit_heads.iter().find(|h| h.account == account);
    assert_eq!(audit_head.map(|h| h.seq), Some(in_log));
    s.close().await;
}
