//! `verify_chains` on the SQLite backend (what restore and `coffer verify` run), the read-only
//! handle, and the consistent copy `coffer backup` takes while the writer goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use coffer_storage::{AuditEntry, ChainError, SqliteStorage, Storage, StorageError, verify_chains};
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
    assert!(report.changes_checked >= 5, "{report:?}");
    assert_eq!(report.changes_checked, state.head_seq - state.base_seq);
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
    assert_eq!(
        report.changes_checked,
        report.log.head_seq - 3,
        "entries above the base only"
    );
    s.close().await;
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
    let account = w.account;
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
    let audit_head = report.audit_heads.iter().find(|h| h.account == account);
    assert_eq!(audit_head.map(|h| h.seq), Some(in_log));
    s.close().await;
}
