//! The audit log in the SQLite file: what a tamperer with a raw connection can and cannot do,
//! what `audit_entries` then shows a verifier, fail-closed writes when the database refuses an
//! audit row, and chains shared by two instances on one file.

use coffer_storage::{
    AccountRecord, AuditCheckpoint, AuditEntry, AuditRecord, SqliteStorage, Storage, StorageError,
};
use coffer_types::{AccountId, StoreId, TokenId};

use super::{db_path, id, raw, store_record, ts, world};

fn entry(account: AccountId, tag: &str) -> AuditEntry {
    AuditEntry {
        account_id: account,
        at: ts(100),
        action: "create".into(),
        outcome: "success".into(),
        actor_token: Some(TokenId::from_bytes(id())),
        store_id: Some(StoreId::from_bytes(id())),
        secret_id: None,
        payload: format!(r#"{{"tag":"{tag}"}}"#).into_bytes(),
    }
}

/// What a verifier does with `audit_entries`: the first seq whose record does not continue
/// the chain (wrong seq, wrong prev_hash, or a hash that is not its own).
fn first_bad(records: &[AuditRecord]) -> Option<u64> {
    let mut prev = AuditRecord::GENESIS_HASH;
    for (expected, r) in (1u64..).zip(records) {
        if r.seq != expected || r.prev_hash != prev || !r.hash_matches() {
            return Some(expected);
        }
        prev = r.hash;
    }
    None
}

async fn appended(path: &std::path::Path, n: usize) -> (AccountId, Vec<AuditRecord>) {
    let s = SqliteStorage::open(path).unwrap();
    let account = AccountId::from_bytes(id());
    let entries: Vec<AuditEntry> = (0..n).map(|i| entry(account, &format!("e{i}"))).collect();
    s.append_audit(&entries).await.unwrap();
    let records = s.audit_entries(account, 0, 100).await.unwrap();
    assert_eq!(first_bad(&records), None);
    s.close().await;
    (account, records)
}

async fn read_back(path: &std::path::Path, account: AccountId) -> Vec<AuditRecord> {
    let s = SqliteStorage::open(path).unwrap();
    let records = s.audit_entries(account, 0, 100).await.unwrap();
    s.close().await;
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_and_checkpoints_cannot_be_rewritten_without_dropping_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (account, _) = appended(&path, 2).await;
    let s = SqliteStorage::open(&path).unwrap();
    s.put_audit_checkpoint(AuditCheckpoint {
        account_id: account,
        seq: 2,
        hash: [1; 32],
        mac: vec![2; 32],
        at: ts(1),
    })
    .await
    .unwrap();
    s.close().await;
    let conn = raw(&path);
    for sql in [
        "UPDATE audit SET payload = x'00'",
        "UPDATE audit SET seq = seq + 10",
        "DELETE FROM audit",
        "DELETE FROM audit WHERE seq = 2",
        "UPDATE audit_checkpoints SET mac = x'00'",
        "DELETE FROM audit_checkpoints",
    ] {
        assert!(conn.execute(sql, []).is_err(), "{sql} must be refused");
    }
}

/// The tamper the brief names: an edited payload is returned as edited (no error), and its
/// stored hash no longer matches, so verify sees it. Deleting and reordering rows show up the
/// same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_rows_are_returned_as_stored_for_verify_to_catch() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (account, original) = appended(&path, 5).await;

    // Edit a payload.
    raw(&path)
        .execute_batch(
            "DROP TRIGGER audit_no_update;
             UPDATE audit SET payload = CAST('{\"tag\":\"forged\"}' AS BLOB) WHERE seq = 3;",
        )
        .unwrap();
    let records = read_back(&path, account).await;
    assert_eq!(records.len(), 5, "the edited row is returned, not an error");
    assert_eq!(records[2].entry.payload, br#"{"tag":"forged"}"#);
    assert_eq!(
        records[2].hash, original[2].hash,
        "the stored hash is as written"
    );
    assert_ne!(
        AuditRecord::compute_hash(&records[2].prev_hash, 3, &records[2].entry),
        records[2].hash,
        "compute_hash no longer matches the edited row"
    );
    assert!(!records[2].hash_matches());
    assert_eq!(first_bad(&records), Some(3));

    // Restore it, then delete a row: a gap.
    let conn = raw(&path);
    conn.execute(
        "UPDATE audit SET payload = ?1 WHERE seq = 3",
        [&original[2].entry.payload],
    )
    .unwrap();
    drop(conn);
    assert_eq!(first_bad(&read_back(&path, account).await), None);
    raw(&path)
        .execute_batch(
            "DROP TRIGGER audit_no_delete;
             DELETE FROM audit WHERE seq = 2;",
        )
        .unwrap();
    let records = read_back(&path, account).await;
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 3, 4, 5],
        "a deleted row leaves a gap, returned as is"
    );
    assert_eq!(first_bad(&records), Some(2));

    // Reorder (in a fresh chain): swap rows 4 and 5, each keeping its own hashes. The
    // detour through seq 0 needs the CHECK (seq >= 1) switched off as well.
    let (account, original) = appended(&path, 5).await;
    let conn = raw(&path);
    conn.execute_batch("PRAGMA ignore_check_constraints = ON;")
        .unwrap();
    for sql in [
        "UPDATE audit SET seq = 0 WHERE account_id = ?1 AND seq = 4",
        "UPDATE audit SET seq = 4 WHERE account_id = ?1 AND seq = 5",
        "UPDATE audit SET seq = 5 WHERE account_id = ?1 AND seq = 0",
    ] {
        conn.execute(sql, [account.as_bytes()]).unwrap();
    }
    drop(conn);
    let records = read_back(&path, account).await;
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5],
        "rows come back in seq order"
    );
    assert_eq!(
        records[3].entry, original[4].entry,
        "row 4 holds entry 5 now"
    );
    assert_eq!(first_bad(&records), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_audit_rows_are_corrupted_naming_their_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (account, _) = appended(&path, 3).await;
    raw(&path)
        .execute_batch(
            "DROP TRIGGER audit_no_update;
             PRAGMA ignore_check_constraints = ON;
             UPDATE audit SET hash = x'0102' WHERE seq = 2;",
        )
        .unwrap();
    let s = SqliteStorage::open(&path).unwrap();
    let err = s.audit_entries(account, 0, 10).await.unwrap_err();
    match err {
        StorageError::Corrupted(m) => assert!(m.contains("audit entry 2"), "{m}"),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    // Before the bad row, reading works.
    assert_eq!(s.audit_entries(account, 0, 1).await.unwrap().len(), 1);
}

/// If the database refuses the audit row, the change it records is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_audit_row_refuses_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = SqliteStorage::open(&path).unwrap();
    let w = world(&s, "acme").await;
    let head = s.change_head().await.unwrap();
    s.close().await;
    raw(&path)
        .execute_batch(
            "CREATE TRIGGER audit_refused BEFORE INSERT ON audit BEGIN
                 SELECT RAISE(ABORT, 'audit refused');
             END;",
        )
        .unwrap();

    let s = SqliteStorage::open(&path).unwrap();
    let store = store_record(w.account, StoreId::from_bytes(id()), "audited");
    let err = s
        .create_store(store.clone(), 10, &[entry(w.account, "store")])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    assert_eq!(s.get_store(w.account, store.id).await.unwrap(), None);
    assert_eq!(s.change_head().await.unwrap(), head, "no change logged");
    let err = s
        .delete_account(w.account, &[entry(w.account, "account")])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    assert!(s.get_account(w.account).await.unwrap().is_some());
    // The writer is fine afterwards, and unaudited writes still go through.
    s.create_store(store.clone(), 10, &[]).await.unwrap();
    assert_eq!(s.audit_head(w.account).await.unwrap(), None);
}

/// Two instances on one file (as two processes) append to one chain in turns and
/// concurrently: each reads the head inside its own write transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_file_share_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let a = std::sync::Arc::new(SqliteStorage::open(&path).unwrap());
    let b = std::sync::Arc::new(SqliteStorage::open(&path).unwrap());
    let account = AccountId::from_bytes(id());
    a.create_account(
        AccountRecord {
            id: account,
            name: "acme".into(),
            created: ts(1),
            secrets_quota: None,
        },
        &[entry(account, "create")],
    )
    .await
    .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let s = if i % 2 == 0 {
            std::sync::Arc::clone(&a)
        } else {
            std::sync::Arc::clone(&b)
        };
        tasks.spawn(async move {
            s.append_audit(&[entry(account, &format!("t{i}"))])
                .await
                .unwrap();
        });
    }
    tasks.join_all().await;
    let records = b.audit_entries(account, 0, 100).await.unwrap();
    assert_eq!(records.len(), 21);
    assert_eq!(first_bad(&records), None);
    assert_eq!(
        a.audit_head(account).await.unwrap(),
        Some((21, records[20].hash))
    );
}
