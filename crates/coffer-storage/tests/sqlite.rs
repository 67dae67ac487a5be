//! `SqliteStorage` against the conformance suite, plus what only a file-backed backend shows:
//! persistence across reopen, the log head after reopen, group commit under load, and how
//! damaged rows are reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use coffer_storage::{
    AccountRecord, ChangeRecord, DekRecord, Direction, Entity, NewSecret, SecretBindingRecord,
    SecretOrder, SecretQuery, SecretRecord, SecretUpdate, ServiceQuery, ServiceRecord,
    ServiceTokenRecord, SqliteOptions, SqliteStorage, Storage, StorageError, StoreBindingRecord,
    StoreOrder, StoreQuery, StoreRecord, TokenRecord, VersionRecord, WrappedKeyRecord,
};
use coffer_types::{
    AccountId, BindingName, DekId, Scope, Scopes, SecretId, SecretName, ServiceId, ServiceName,
    StoreId, StoreName, Timestamp, TokenId, Version,
};
use tokio::task::JoinSet;

#[path = "sqlite/audit.rs"]
mod audit;
#[path = "sqlite/backup.rs"]
mod backup;
#[path = "sqlite/replica.rs"]
mod replica;
#[path = "sqlite/replica_accounts.rs"]
mod replica_accounts;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    coffer_storage::conformance::run_all(|| {
        let path = dir
            .path()
            .join(format!("db-{}.sqlite", n.fetch_add(1, Ordering::Relaxed)));
        async move { Arc::new(SqliteStorage::open(&path).unwrap()) as Arc<dyn Storage> }
    })
    .await;
}

/// `#[tokio::test]`'s default runtime has one thread; the suite must pass there too.
#[tokio::test]
async fn passes_the_conformance_suite_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    coffer_storage::conformance::run_all(|| {
        let path = dir
            .path()
            .join(format!("db-{}.sqlite", n.fetch_add(1, Ordering::Relaxed)));
        async move { Arc::new(SqliteStorage::open(&path).unwrap()) as Arc<dyn Storage> }
    })
    .await;
}

/// `recount_secrets` sets counts drifted by raw SQL (the counting triggers bypassed) to their
/// rows, on the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recount_corrects_drifted_counts() {
    use coffer_storage::conformance::Drift;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coffer.db");
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&path).unwrap());
    let raw = |sql: &str, id: Vec<u8>, to: i64| {
        let conn = rusqlite::Connection::open(&path).unwrap();
        assert_eq!(conn.execute(sql, rusqlite::params![id, to]).unwrap(), 1);
    };
    coffer_storage::conformance::recount_corrects_drifted_counts(storage.clone(), |drift| {
        match drift {
            Drift::Store { store, to } => raw(
                "UPDATE stores SET secret_count = ?2 WHERE id = ?1",
                store.as_bytes().to_vec(),
                to,
            ),
            Drift::Account { account, to } => raw(
                "UPDATE accounts SET secret_count = ?2 WHERE id = ?1",
                account.as_bytes().to_vec(),
                to,
            ),
        }
        std::future::ready(())
    })
    .await;
    storage.shutdown().await;
}

/// `check_integrity` finds a store's or an account's count set wrong with raw SQL (the
/// counting triggers bypassed), and a secret moved into another account's store with foreign
/// keys off (SQLite enforces them on writes only): the row and the table it breaks with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drifted_counts_and_broken_foreign_keys_are_found() {
    use coffer_storage::conformance::Drift;
    use coffer_storage::{ForeignKeys, IntegrityProblem};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coffer.db");
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&path).unwrap());
    let raw = |sql: &str, id: Vec<u8>, to: i64| {
        let conn = rusqlite::Connection::open(&path).unwrap();
        assert_eq!(conn.execute(sql, rusqlite::params![id, to]).unwrap(), 1);
    };
    coffer_storage::conformance::drifted_counts_are_found(storage.clone(), |drift| {
        match drift {
            Drift::Store { store, to } => raw(
                "UPDATE stores SET secret_count = ?2 WHERE id = ?1",
                store.as_bytes().to_vec(),
                to,
            ),
            Drift::Account { account, to } => raw(
                "UPDATE accounts SET secret_count = ?2 WHERE id = ?1",
                account.as_bytes().to_vec(),
                to,
            ),
        }
        std::future::ready(())
    })
    .await;
    let report = storage.check_integrity().await.unwrap();
    assert_eq!(report.foreign_keys, ForeignKeys::Checked);
    assert_eq!(report.problem, None);

    // Another account's store, and one secret moved into it keeping its own account.
    let conn = rusqlite::Connection::open(&path).unwrap();
    // The guard against moving a secret, dropped for the move and put back as it was.
    let guard: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'secrets_owner_fixed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute_batch(&format!(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO accounts (id, name, created) VALUES (X'0123456789abcdef0123456789abcdef', 'o', 0);
         INSERT INTO stores (id, account_id, name, created, modified)
             VALUES (X'fedcba98765432100123456789abcdef', X'0123456789abcdef0123456789abcdef', 's', 0, 0);
         DROP TRIGGER secrets_owner_fixed;
         UPDATE secrets SET store_id = X'fedcba98765432100123456789abcdef'
             WHERE rowid = (SELECT max(rowid) FROM secrets);
         {guard};",
    ))
    .unwrap();
    let moved: i64 = conn
        .query_row("SELECT max(rowid) FROM secrets", [], |r| r.get(0))
        .unwrap();
    let problem = storage.check_integrity().await.unwrap().problem.unwrap();
    assert_eq!(
        problem,
        IntegrityProblem::ForeignKey {
            table: "secrets".into(),
            row: Some(moved),
            parent: "stores".into(),
        }
    );
    assert_eq!(
        problem.to_string(),
        format!("secrets row {moved} breaks its foreign key to stores")
    );
    // A count trigger dropped (counts would drift again after a repair): named first.
    conn.execute_batch("DROP TRIGGER secrets_count_insert;")
        .unwrap();
    let problem = storage.check_integrity().await.unwrap().problem.unwrap();
    assert!(
        matches!(&problem, IntegrityProblem::Schema(s) if s.contains("missing trigger secrets_count_insert")),
        "{problem}"
    );
    storage.shutdown().await;
}

// ---- fixtures ----

fn id() -> [u8; 16] {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) as u128;
    // Spread the counter over the bytes; uniqueness is all that matters here.
    (n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)).to_be_bytes()
}

fn ts(n: i64) -> Timestamp {
    Timestamp::from_unix_micros(1_700_000_000_000_000 + n)
}

struct World {
    account: AccountId,
    dek: DekId,
    store: StoreId,
}

async fn world(s: &SqliteStorage, name: &str) -> World {
    let account = AccountId::from_bytes(id());
    s.create_account(
        AccountRecord {
            id: account,
            name: name.into(),
            created: ts(1),
            secrets_quota: Some(42),
        },
        &[],
    )
    .await
    .unwrap();
    let dek = DekId::from_bytes(id());
    s.put_dek(DekRecord {
        account_id: account,
        key: WrappedKeyRecord {
            id: dek,
            kek_id: "kek".into(),
            wrapped: vec![1; 40],
            created: ts(2),
        },
        rk: None,
    })
    .await
    .unwrap();
    let store = StoreId::from_bytes(id());
    s.create_store(store_record(account, store, "prod"), 100, &[])
        .await
        .unwrap();
    World {
        account,
        dek,
        store,
    }
}

fn store_record(account: AccountId, id: StoreId, name: &str) -> StoreRecord {
    StoreRecord {
        id,
        account_id: account,
        name: StoreName::parse(name).unwrap(),
        created: ts(3),
        modified: ts(3),
    }
}

fn new_secret(w: &World, name: &str) -> NewSecret {
    let id = SecretId::from_bytes(id());
    NewSecret {
        record: SecretRecord {
            id,
            store_id: w.store,
            account_id: w.account,
            name: SecretName::parse(name).unwrap(),
            comment: format!("comment of {name}"),
            scopes: Scopes::new([Scope::Workers, Scope::AiGateway]),
            created: ts(4),
            modified: ts(4),
            version: Version::FIRST,
        },
        value: VersionRecord {
            secret_id: id,
            version: Version::FIRST,
            dek_id: w.dek,
            sealed: format!("sealed {name}").into_bytes(),
            created: ts(4),
        },
        dek: None,
    }
}

/// A `workers` service of `w` binding secret `A` of its store and the store itself, with its
/// first token.
async fn deploy(s: &SqliteStorage, w: &World, name: &str) -> (ServiceRecord, ServiceTokenRecord) {
    let service = ServiceRecord {
        id: ServiceId::from_bytes(id()),
        account_id: w.account,
        name: ServiceName::parse(name).unwrap(),
        kind: Scope::Workers,
        secrets: vec![SecretBindingRecord {
            binding: BindingName::parse("A_KEY").unwrap(),
            store_id: w.store,
            secret_name: SecretName::parse("A").unwrap(),
        }],
        stores: vec![StoreBindingRecord {
            binding: BindingName::parse("ALL").unwrap(),
            store_id: w.store,
        }],
        created: ts(6),
        modified: ts(6),
    };
    let token = ServiceTokenRecord {
        id: TokenId::from_bytes(id()),
        account_id: w.account,
        service_id: service.id,
        hash: [8; 32],
        created: ts(6),
        revoked: None,
    };
    s.create_service(service.clone(), token.clone(), &[])
        .await
        .unwrap();
    (service, token)
}

async fn all_changes(s: &SqliteStorage) -> Vec<ChangeRecord> {
    s.changes_after(0, usize::MAX).await.unwrap()
}

fn assert_chain(log: &[ChangeRecord]) {
    let mut prev = ChangeRecord::GENESIS_HASH;
    for (i, record) in log.iter().enumerate() {
        assert_eq!(record.seq, i as u64 + 1);
        assert!(
            record.follows(&prev),
            "change {} breaks the chain",
            record.seq
        );
        prev = record.hash;
    }
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("coffer.sqlite")
}

// ---- persistence ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = SqliteStorage::open(&path).unwrap();
    let w = world(&s, "acme").await;
    let token = TokenRecord {
        id: TokenId::from_bytes(id()),
        account_id: w.account,
        name: "ci".into(),
        hash: [3; 32],
        role: "super_admin".into(),
        operator: true,
        created: ts(5),
        expires: None,
        revoked: None,
        last_used: Some(ts(6)),
    };
    s.create_token(token.clone(), &[]).await.unwrap();
    let mac_key = WrappedKeyRecord {
        id: DekId::from_bytes(id()),
        kek_id: "kek".into(),
        wrapped: vec![9; 40],
        created: ts(7),
    };
    s.put_instance_key_if_absent("token-mac", mac_key.clone())
        .await
        .unwrap();
    let a = new_secret(&w, "A");
    let b = new_secret(&w, "B");
    s.create_secrets(w.account, w.store, vec![a.clone(), b.clone()], 10, &[])
        .await
        .unwrap();
    let v2 = VersionRecord {
        version: Version(2),
        sealed: b"second".to_vec(),
        ..a.value.clone()
    };
    let a2 = s
        .update_secret(
            SecretUpdate {
                account_id: w.account,
                store_id: w.store,
                secret_id: a.record.id,
                expected_version: Version::FIRST,
                value: Some(v2.clone()),
                scopes: None,
                comment: Some("updated".into()),
                modified: ts(8),
                dek: None,
            },
            &[],
        )
        .await
        .unwrap();
    let account = s.get_account(w.account).await.unwrap();
    let dek = s.get_dek(w.dek).await.unwrap();
    let store = s.get_store(w.account, w.store).await.unwrap();
    let log = all_changes(&s).await;
    s.close().await;

    let s = SqliteStorage::open(&path).unwrap();
    assert_eq!(s.get_account(w.account).await.unwrap(), account);
    assert_eq!(s.get_dek(w.dek).await.unwrap(), dek);
    assert_eq!(s.latest_dek(w.account).await.unwrap(), dek);
    assert_eq!(s.get_token(token.id).await.unwrap(), Some(token));
    assert_eq!(
        s.get_instance_key("token-mac").await.unwrap(),
        Some(mac_key)
    );
    assert_eq!(s.get_store(w.account, w.store).await.unwrap(), store);
    assert_eq!(
        s.get_secret(w.account, w.store, a.record.id).await.unwrap(),
        Some(a2)
    );
    assert_eq!(
        s.get_secret(w.account, w.store, b.record.id).await.unwrap(),
        Some(b.record.clone())
    );
    assert_eq!(
        s.get_version(a.record.id, Version::FIRST).await.unwrap(),
        Some(a.value.clone())
    );
    assert_eq!(
        s.get_version(a.record.id, Version(2)).await.unwrap(),
        Some(v2)
    );
    assert_eq!(s.secret_count(w.account).await.unwrap(), 2);
    assert_eq!(all_changes(&s).await, log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_log_continues_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = SqliteStorage::open(&path).unwrap();
    let w = world(&s, "acme").await;
    s.create_secrets(w.account, w.store, vec![new_secret(&w, "A")], 10, &[])
        .await
        .unwrap();
    let before = all_changes(&s).await;
    assert_eq!(before.len(), 4);
    // Dropped, not closed: the writer may still be shutting down while the file is reopened.
    drop(s);

    let s = SqliteStorage::open(&path).unwrap();
    assert_eq!(s.change_head().await.unwrap(), 4);
    s.create_secrets(w.account, w.store, vec![new_secret(&w, "B")], 10, &[])
        .await
        .unwrap();
    s.close().await;

    let s = SqliteStorage::open(&path).unwrap();
    let w2 = world(&s, "second").await;
    let log = all_changes(&s).await;
    assert_eq!(log.len(), 8);
    assert_eq!(&log[..4], &before[..]);
    assert_chain(&log);
    assert!(
        log[4].follows(&before[3].hash),
        "the first entry after reopen chains on"
    );
    assert!(matches!(
        log[7].change().unwrap(),
        coffer_storage::Change::StorePut { account_id, .. } if account_id == w2.account
    ));
}

// ---- concurrency ----

/// Two `SqliteStorage` values on one file (as two processes would be) take turns writing. Each
/// must chain onto what the other committed: the log head is read from the database in every
/// write transaction, not remembered from the instance's own last write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_file_take_turns_appending() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let a = SqliteStorage::open(&path).unwrap();
    let b = SqliteStorage::open(&path).unwrap();
    let w = world(&a, "acme").await;
    let mut expected = 3;
    for round in 0..4 {
        let (first, second) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        first
            .create_secrets(
                w.account,
                w.store,
                vec![new_secret(&w, &format!("S{round}"))],
                10,
                &[],
            )
            .await
            .unwrap();
        second
            .create_account(
                AccountRecord {
                    id: AccountId::from_bytes(id()),
                    name: format!("a{round}"),
                    created: ts(round),
                    secrets_quota: None,
                },
                &[],
            )
            .await
            .unwrap();
        expected += 2;
        assert_eq!(a.change_head().await.unwrap(), expected);
        assert_eq!(b.change_head().await.unwrap(), expected);
    }
    let log = all_changes(&a).await;
    assert_eq!(log.len() as u64, expected);
    assert_chain(&log);
    assert_eq!(all_changes(&b).await, log);
    assert_eq!(b.secret_count(w.account).await.unwrap(), 4);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_all_commit_and_see_their_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SqliteStorage::open(&db_path(&dir)).unwrap());
    let before = s.write_stats();
    const WRITERS: usize = 200;
    let mut tasks = JoinSet::new();
    for i in 0..WRITERS {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            let account = AccountRecord {
                id: AccountId::from_bytes(id()),
                name: format!("a{i}"),
                created: ts(i as i64),
                secrets_quota: None,
            };
            s.create_account(account.clone(), &[]).await.unwrap();
            assert_eq!(
                s.get_account(account.id).await.unwrap(),
                Some(account),
                "a write is visible as soon as its future resolved"
            );
        });
    }
    tasks.join_all().await;
    let stats = s.write_stats();
    let jobs = stats.jobs - before.jobs;
    let commits = stats.commits - before.commits;
    assert_eq!(jobs, WRITERS as u64);
    assert!(
        commits >= 1 && commits <= jobs,
        "{commits} commits for {jobs} jobs"
    );
    let log = all_changes(&s).await;
    assert_eq!(log.len(), WRITERS);
    assert_chain(&log);
    assert_eq!(s.list_accounts().await.unwrap().len(), WRITERS);
}

/// The update of `w`'s secret `secret` from `expected` to the next version.
fn chained_update(w: &World, secret: &NewSecret, expected: u32) -> SecretUpdate {
    SecretUpdate {
        account_id: w.account,
        store_id: w.store,
        secret_id: secret.record.id,
        expected_version: Version(expected),
        value: Some(VersionRecord {
            version: Version(expected + 1),
            sealed: format!("v{}", expected + 1).into_bytes(),
            ..secret.value.clone()
        }),
        scopes: None,
        comment: None,
        modified: ts(10 + i64::from(expected)),
        dek: None,
    }
}

/// Updates of one secret queued one behind the other, each expecting the version the one
/// before makes, are applied in queue order in one commit; when one of them fails, those
/// queued behind it fail with `Conflict` and the others are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_updates_of_one_secret_chain_in_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open(&db_path(&dir)).unwrap();
    let w = world(&s, "acme").await;
    let a = new_secret(&w, "A");
    s.create_secrets(w.account, w.store, vec![a.clone()], 10, &[])
        .await
        .unwrap();
    let head = s.change_head().await.unwrap();
    let before = s.write_stats();

    let hold = s.hold_writer().await.unwrap();
    let mut pending = Vec::new();
    for expected in 1..=5 {
        pending.push(
            s.queue_update_secret(chained_update(&w, &a, expected), &[])
                .await
                .unwrap(),
        );
    }
    assert_eq!(s.queued_writes(), 5);
    hold.release();
    let mut versions = Vec::new();
    for p in pending {
        versions.push(p.await.unwrap().version.0);
    }
    assert_eq!(versions, [2, 3, 4, 5, 6]);
    let after = s.write_stats();
    assert_eq!(
        (after.jobs - before.jobs, after.commits - before.commits),
        (6, 2)
    );
    let log = all_changes(&s).await;
    assert_eq!(log.len() as u64, head + 5);
    assert_chain(&log);

    // A failing update (it expects a version that is not current) takes down the ones chained
    // on it, not the one before it.
    let hold = s.hold_writer().await.unwrap();
    let ok = s
        .queue_update_secret(chained_update(&w, &a, 6), &[])
        .await
        .unwrap();
    let bad = s
        .queue_update_secret(chained_update(&w, &a, 9), &[])
        .await
        .unwrap();
    let behind = s
        .queue_update_secret(chained_update(&w, &a, 10), &[])
        .await
        .unwrap();
    hold.release();
    assert_eq!(ok.await.unwrap().version, Version(7));
    assert!(matches!(bad.await, Err(StorageError::Conflict)));
    assert!(matches!(behind.await, Err(StorageError::Conflict)));
    let current = s
        .get_secret(w.account, w.store, a.record.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.version, Version(7));
    assert_eq!(all_changes(&s).await.len() as u64, head + 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_writes_do_not_disturb_concurrent_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SqliteStorage::open(&db_path(&dir)).unwrap());
    let w = world(&s, "acme").await;
    let head = s.change_head().await.unwrap();
    const WRITERS: usize = 120;
    let mut tasks = JoinSet::new();
    for i in 0..WRITERS {
        let s = Arc::clone(&s);
        let account = w.account;
        tasks.spawn(async move {
            // Every third writer asks for the name the store already has.
            let name = if i % 3 == 0 {
                "prod".to_owned()
            } else {
                format!("s{i}")
            };
            let record = store_record(account, StoreId::from_bytes(id()), &name);
            let result = s.create_store(record.clone(), 1000, &[]).await;
            (i, record, result)
        });
    }
    let results = tasks.join_all().await;
    let mut created = 0;
    for (i, record, result) in results {
        let stored = s.get_store(w.account, record.id).await.unwrap();
        if i % 3 == 0 {
            assert!(
                matches!(
                    result,
                    Err(StorageError::NameTaken {
                        entity: Entity::Store,
                        ..
                    })
                ),
                "{result:?}"
            );
            assert_eq!(stored, None);
        } else {
            result.unwrap();
            assert_eq!(stored, Some(record));
            created += 1;
        }
    }
    let log = all_changes(&s).await;
    assert_chain(&log);
    assert_eq!(log.len() as u64, head + created);
}

// ---- damage and invariants the schema enforces ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_rows_are_corrupted_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = SqliteStorage::open(&path).unwrap();
    let w = world(&s, "acme").await;
    let a = new_secret(&w, "A");
    s.create_secrets(w.account, w.store, vec![a.clone()], 10, &[])
        .await
        .unwrap();
    s.close().await;

    let conn = raw(&path);
    conn.execute("UPDATE secrets SET scopes = ',no_such_scope,'", [])
        .unwrap();
    conn.execute("UPDATE stores SET name = 'not a name'", [])
        .unwrap();
    conn.execute_batch(
        "DROP TRIGGER changes_no_update;
         UPDATE changes SET payload = CAST('{\"type\":\"account_put\"}' AS BLOB) WHERE seq = 2;",
    )
    .unwrap();
    drop(conn);

    let s = SqliteStorage::open(&path).unwrap();
    let corrupted = |what: &str, err: StorageError| {
        assert!(matches!(err, StorageError::Corrupted(_)), "{what}: {err:?}");
    };
    corrupted(
        "get_secret with a bad scope",
        s.get_secret(w.account, w.store, a.record.id)
            .await
            .unwrap_err(),
    );
    let query = SecretQuery {
        page: 1,
        per_page: 10,
        order: SecretOrder::Name,
        direction: Direction::Asc,
        search: None,
        scopes: Scopes::default(),
    };
    corrupted(
        "list_secrets with a bad scope",
        s.list_secrets(w.account, w.store, &query)
            .await
            .unwrap_err(),
    );
    corrupted(
        "get_store with a bad name",
        s.get_store(w.account, w.store).await.unwrap_err(),
    );
    let stores = StoreQuery {
        page: 1,
        per_page: 10,
        order: StoreOrder::Name,
        direction: Direction::Asc,
    };
    corrupted(
        "list_stores with a bad name",
        s.list_stores(w.account, &stores).await.unwrap_err(),
    );
    corrupted(
        "changes_after over a tampered entry",
        s.changes_after(0, 10).await.unwrap_err(),
    );
    // A reader that already holds entry 2 (as received before the damage) is anchored on its
    // hash, which is intact, so it reads on.
    assert_eq!(s.changes_after(2, 10).await.unwrap().len(), 2);
    // Reads of intact rows still work.
    assert!(
        s.get_version(a.record.id, Version::FIRST)
            .await
            .unwrap()
            .is_some()
    );
}

/// Services persist with their bindings and tokens; damaged service rows and a missing current
/// version are `Corrupted`, not panics and not "not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_rows_persist_and_damage_is_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = SqliteStorage::open(&path).unwrap();
    let w = world(&s, "acme").await;
    let a = new_secret(&w, "A");
    s.create_secrets(w.account, w.store, vec![a.clone()], 10, &[])
        .await
        .unwrap();
    let (kinded, _) = deploy(&s, &w, "bad-kind").await;
    let (named, _) = deploy(&s, &w, "bad-binding").await;
    let (fine, token) = deploy(&s, &w, "fine").await;
    s.close().await;

    let s = SqliteStorage::open(&path).unwrap();
    assert_eq!(
        s.get_service(w.account, fine.id).await.unwrap(),
        Some(fine.clone())
    );
    assert_eq!(
        s.get_service_token(token.id).await.unwrap(),
        Some(token.clone())
    );
    let name = SecretName::parse("A").unwrap();
    assert_eq!(
        s.current_value(w.account, w.store, &name).await.unwrap(),
        Some((a.record.clone(), a.value.clone()))
    );
    s.close().await;

    let conn = raw(&path);
    conn.execute(
        "UPDATE services SET kind = 'no_such_scope' WHERE id = ?1",
        [kinded.id.as_bytes()],
    )
    .unwrap();
    conn.execute(
        "UPDATE service_bindings SET binding = 'not a binding'
         WHERE service_id = ?1 AND position = 1",
        [named.id.as_bytes()],
    )
    .unwrap();
    conn.execute("DELETE FROM versions", []).unwrap();
    drop(conn);

    let s = SqliteStorage::open(&path).unwrap();
    let corrupted = |what: &str, err: StorageError| {
        assert!(matches!(err, StorageError::Corrupted(_)), "{what}: {err:?}");
    };
    corrupted(
        "get_service with an unknown kind",
        s.get_service(w.account, kinded.id).await.unwrap_err(),
    );
    corrupted(
        "get_service_by_name with a bad binding name",
        s.get_service_by_name(w.account, &named.name)
            .await
            .unwrap_err(),
    );
    let query = ServiceQuery {
        page: 1,
        per_page: 10,
        name: None,
    };
    corrupted(
        "list_services over damaged rows",
        s.list_services(w.account, &query).await.unwrap_err(),
    );
    corrupted(
        "current_value without its current version",
        s.current_value(w.account, w.store, &name)
            .await
            .unwrap_err(),
    );
    // Intact rows still read.
    assert_eq!(s.get_service(w.account, fine.id).await.unwrap(), Some(fine));
    assert_eq!(
        s.get_secret_by_name(w.account, w.store, &name)
            .await
            .unwrap(),
        Some(a.record)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_the_log_cannot_be_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = SqliteStorage::open(&path).unwrap();
    let w = world(&s, "acme").await;
    s.create_secrets(w.account, w.store, vec![new_secret(&w, "A")], 10, &[])
        .await
        .unwrap();
    s.close().await;
    let conn = raw(&path);
    for sql in [
        // A re-seal may replace a version's DEK and sealed bytes, never what it is.
        "UPDATE versions SET version = 7",
        "UPDATE versions SET secret_id = x'00000000000000000000000000000000'",
        "UPDATE changes SET at = 0",
        "DELETE FROM changes",
        "UPDATE secrets SET store_id = x'00000000000000000000000000000000'",
    ] {
        assert!(conn.execute(sql, []).is_err(), "{sql} must be refused");
    }
}

/// What the trait cannot show: no row anywhere still names the deleted account, the
/// references between the remaining rows hold, and the kept account's trigger-maintained count
/// matches its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_account_leaves_no_row_of_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = SqliteStorage::open(&path).unwrap();
    let gone = world(&s, "gone").await;
    let kept = world(&s, "kept").await;
    for w in [&gone, &kept] {
        let batch = ["A", "B", "C"].map(|n| new_secret(w, n)).to_vec();
        s.create_secrets(w.account, w.store, batch, 10, &[])
            .await
            .unwrap();
        s.create_token(
            TokenRecord {
                id: TokenId::from_bytes(id()),
                account_id: w.account,
                name: "t".into(),
                hash: [9; 32],
                role: "super_admin".into(),
                operator: false,
                created: ts(5),
                expires: None,
                revoked: None,
                last_used: None,
            },
            &[],
        )
        .await
        .unwrap();
        deploy(&s, w, "one").await;
        deploy(&s, w, "two").await;
    }
    s.delete_account(gone.account, &[]).await.unwrap();
    s.close().await;

    let conn = raw(&path);
    let count = |sql: &str, account: AccountId| -> i64 {
        conn.query_row(sql, [account.as_bytes()], |r| r.get(0))
            .unwrap()
    };
    for table in [
        "tokens",
        "deks",
        "stores",
        "secrets",
        "services",
        "service_tokens",
    ] {
        let sql = format!("SELECT count(*) FROM {table} WHERE account_id = ?1");
        assert_eq!(
            count(&sql, gone.account),
            0,
            "{table} of the deleted account"
        );
        assert!(count(&sql, kept.account) > 0, "{table} of the kept account");
    }
    assert_eq!(
        count("SELECT count(*) FROM accounts WHERE id = ?1", gone.account),
        0
    );
    let bindings = "SELECT count(*) FROM service_bindings
                    JOIN services ON services.id = service_bindings.service_id
                    WHERE services.account_id = ?1";
    assert_eq!(count(bindings, kept.account), 4);
    assert_eq!(
        conn.query_row("SELECT count(*) FROM service_bindings", [], |r| r
            .get::<_, i64>(0))
            .unwrap(),
        4,
        "only the kept account's bindings remain"
    );
    let versions = "SELECT count(*) FROM versions JOIN secrets ON secrets.id = versions.secret_id
                    WHERE secrets.account_id = ?1";
    assert_eq!(count(versions, kept.account), 3);
    assert_eq!(
        conn.query_row("SELECT count(*) FROM versions", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        3,
        "only the kept account's versions remain"
    );
    let dangling: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(dangling, 0, "every remaining reference holds");
    assert_eq!(
        count(
            "SELECT secret_count - (SELECT count(*) FROM secrets WHERE account_id = ?1)
             FROM accounts WHERE id = ?1",
            kept.account
        ),
        0,
        "the kept account's secret_count matches its rows"
    );
}

#[test]
fn debug_shows_the_path_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = SqliteStorage::open_with(&path, SqliteOptions::default()).unwrap();
    let shown = format!("{s:?}");
    assert!(shown.starts_with("SqliteStorage"), "{shown}");
    assert!(shown.contains("coffer.sqlite"), "{shown}");
    assert_eq!(s.path(), path);
}
