//! `coffer migrate`'s storage level: a SQLite store filled through the `Storage` trait with
//! every kind of row, copied into an empty PostgreSQL database by `PgStorage::import_sqlite`;
//! then every table holds the same rows, the snapshots and reads through both backends agree,
//! the chains verify with the same heads, a non-empty target is refused, and a copy that fails
//! part-way leaves the target empty.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use coffer_postgres::testing::{TestDatabase, cluster_url};
use coffer_postgres::{ImportError, PgStorage};
use coffer_storage::{
    AccountRecord, AuditCheckpoint, AuditEntry, ChainReport, DekRecord, EXPORT_TABLES, NewSecret,
    RawValue, SecretBindingRecord, SecretRecord, SecretUpdate, ServiceRecord, ServiceTokenRecord,
    SnapshotPart, SqliteStorage, Storage, StoreBindingRecord, StoreRecord, TokenRecord,
    VersionRecord, WrappedKeyRecord, export_rows, verify_chains,
};
use coffer_types::{
    AccountId, BindingName, DekId, Scope, Scopes, SecretId, SecretName, ServiceId, ServiceName,
    StoreId, StoreName, Timestamp, TokenId, Version,
};
use tokio_postgres::types::Type;

fn id() -> [u8; 16] {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) as u128;
    (n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)).to_be_bytes()
}

fn ts(n: i64) -> Timestamp {
    Timestamp::from_unix_micros(1_700_000_000_000_000 + n)
}

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

fn dek(account: AccountId, n: i64) -> DekRecord {
    DekRecord {
        account_id: account,
        key: WrappedKeyRecord {
            id: DekId::from_bytes(id()),
            kek_id: "kek-1".into(),
            wrapped: vec![n as u8; 40],
            created: ts(2),
        },
        rk: None,
    }
}

/// Fills a SQLite store with accounts, tokens, DEKs (two created at the same instant, so
/// insertion order matters), stores, secrets with several versions, services with bindings
/// and tokens, a node, instance keys, audit entries and checkpoints, a cluster id and feed
/// signatures, and a log compacted past its first entries. Closed when it returns.
async fn fill(path: &Path) {
    let s = SqliteStorage::open(path).unwrap();
    s.ensure_cluster_id().await.unwrap();
    s.put_instance_key_if_absent(
        "token-mac",
        WrappedKeyRecord {
            id: DekId::from_bytes(id()),
            kek_id: "kek-1".into(),
            wrapped: vec![9; 40],
            created: ts(1),
        },
    )
    .await
    .unwrap();
    for name in ["acme", "other"] {
        let account = AccountId::from_bytes(id());
        s.create_account(
            AccountRecord {
                id: account,
                name: name.into(),
                created: ts(1),
                secrets_quota: Some(42),
            },
            &[audit(account, "account")],
        )
        .await
        .unwrap();
        s.create_token(
            TokenRecord {
                id: TokenId::from_bytes(id()),
                account_id: account,
                name: "ops".into(),
                hash: [3; 32],
                role: "admin".into(),
                operator: name == "acme",
                created: ts(2),
                expires: Some(ts(1_000_000)),
                revoked: None,
                last_used: None,
            },
            &[audit(account, "token")],
        )
        .await
        .unwrap();
        let (first, second) = (dek(account, 1), dek(account, 2));
        s.put_dek(first.clone()).await.unwrap();
        s.put_dek(second.clone()).await.unwrap();
        let store = StoreId::from_bytes(id());
        s.create_store(
            StoreRecord {
                id: store,
                account_id: account,
                name: StoreName::parse("prod").unwrap(),
                created: ts(3),
                modified: ts(3),
            },
            100,
            &[audit(account, "store")],
        )
        .await
        .unwrap();
        let mut secrets = Vec::new();
        for i in 0..3 {
            let secret = SecretId::from_bytes(id());
            secrets.push(secret);
            s.create_secrets(
                account,
                store,
                vec![NewSecret {
                    record: SecretRecord {
                        id: secret,
                        store_id: store,
                        account_id: account,
                        name: SecretName::parse(&format!("S{i}")).unwrap(),
                        comment: format!("comment {i}"),
                        scopes: Scopes::new([Scope::Workers]),
                        created: ts(4),
                        modified: ts(4),
                        version: Version::FIRST,
                    },
                    value: VersionRecord {
                        secret_id: secret,
                        version: Version::FIRST,
                        dek_id: first.key.id,
                        sealed: vec![i as u8; 48],
                        created: ts(4),
                    },
                    dek: None,
                }],
                100,
                &[audit(account, "secret")],
            )
            .await
            .unwrap();
        }
        s.update_secret(
            SecretUpdate {
                account_id: account,
                store_id: store,
                secret_id: secrets[0],
                expected_version: Version::FIRST,
                value: Some(VersionRecord {
                    secret_id: secrets[0],
                    version: Version::FIRST.next().unwrap(),
                    dek_id: second.key.id,
                    sealed: vec![0xee; 48],
                    created: ts(6),
                }),
                dek: None,
                scopes: None,
                comment: Some("rotated".into()),
                modified: ts(6),
            },
            &[audit(account, "update")],
        )
        .await
        .unwrap();
        let service = ServiceId::from_bytes(id());
        s.create_service(
            ServiceRecord {
                id: service,
                account_id: account,
                name: ServiceName::parse("api").unwrap(),
                kind: Scope::Workers,
                secrets: vec![SecretBindingRecord {
                    binding: BindingName::parse("DB").unwrap(),
                    store_id: store,
                    secret_name: SecretName::parse("S0").unwrap(),
                }],
                stores: vec![StoreBindingRecord {
                    binding: BindingName::parse("ALL").unwrap(),
                    store_id: store,
                }],
                created: ts(7),
                modified: ts(7),
            },
            ServiceTokenRecord {
                id: TokenId::from_bytes(id()),
                account_id: account,
                service_id: service,
                hash: [4; 32],
                created: ts(7),
                revoked: None,
            },
            &[audit(account, "service")],
        )
        .await
        .unwrap();
        let head = s.audit_head(account).await.unwrap().unwrap();
        s.put_audit_checkpoint(AuditCheckpoint {
            account_id: account,
            seq: head.0,
            hash: head.1,
            mac: vec![5; 32],
            at: ts(8),
        })
        .await
        .unwrap();
    }
    s.create_node(
        coffer_storage::NodeRecord {
            id: TokenId::from_bytes(id()),
            name: "edge-1".into(),
            hash: [6; 32],
            created: ts(9),
            revoked: None,
        },
        &[],
    )
    .await
    .unwrap();
    let state = s.log_state().await.unwrap();
    s.compact_log(state.head_seq / 2).await.unwrap();
    s.close().await;
    let raw = rusqlite::Connection::open(path).unwrap();
    // Rows the trait writes only at the end of long protocols (a node's key and grants,
    // accounts' replication keys and grants, RK wraps, retired KEKs, destroyed DEKs, access
    // batches) are put in directly, so every table and every flag column is copied.
    raw.execute_batch(
        "UPDATE nodes SET public_key = randomblob(32);
         INSERT INTO node_grants SELECT id, 1, randomblob(32), x'33' FROM nodes;
         UPDATE instance_keys SET rk_version = 1, rk_wrapped = x'44';
         UPDATE deks SET rk_version = 1, rk_wrapped = x'55', retired = 1, rk_account = 1
             WHERE rowid = (SELECT min(rowid) FROM deks);
         INSERT INTO account_replication_keys
             SELECT id, 1, randomblob(16), 'ark-kek', x'66', 7 FROM accounts;
         INSERT INTO account_node_keys SELECT a.id, n.id, randomblob(32) FROM accounts a, nodes n;
         INSERT INTO account_grants
             SELECT a.id, n.id, 1, randomblob(32), x'77' FROM accounts a, nodes n;
         INSERT INTO retired_keks VALUES ('kek-0', 5);
         INSERT INTO destroyed_deks VALUES (randomblob(16), 6, 1), (randomblob(16), 7, 0);
         INSERT INTO access_batches SELECT randomblob(16), id, 8 FROM nodes;
         INSERT INTO outbox VALUES (randomblob(16), 9, x'88'), (randomblob(16), 9, x'99');",
    )
    .unwrap();
    // Feed signatures are written by the signer the control plane installs; put two in.
    let seq = i64::try_from(state.head_seq).unwrap();
    for n in [seq - 1, seq] {
        raw.execute(
            "INSERT INTO change_signatures (seq, signature) VALUES (?1, ?2)",
            rusqlite::params![n, vec![8u8; 64]],
        )
        .unwrap();
    }
}

/// A table's name, columns and rows.
type Table = (&'static str, Vec<String>, Vec<Vec<RawValue>>);

/// Every table's rows, sorted, as the SQLite export reads them.
fn sqlite_rows(path: &Path) -> Vec<Table> {
    let mut out: Vec<Table> = Vec::new();
    export_rows(path, 7, |batch| {
        match out.last_mut() {
            Some((t, _, rows)) if *t == batch.table => rows.extend(batch.rows),
            _ => out.push((batch.table, batch.columns.to_vec(), batch.rows)),
        }
        Ok(())
    })
    .unwrap();
    for (_, _, rows) in &mut out {
        rows.sort_by_key(|r| key(r));
    }
    out
}

/// A sort key that shows the values (only in this test: the rows hold no real secret).
fn key(row: &[RawValue]) -> String {
    row.iter()
        .map(|v| match v {
            RawValue::Null => "n".to_owned(),
            RawValue::Integer(i) => format!("i{i}"),
            RawValue::Text(t) => format!("t{t}"),
            RawValue::Blob(b) => format!("b{b:?}"),
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// The same columns read back from PostgreSQL, as SQLite would store them.
async fn pg_rows(url: &str, table: &str, columns: &[String]) -> Vec<Vec<RawValue>> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query(&format!("SELECT {} FROM {table}", columns.join(", ")), &[])
        .await
        .unwrap();
    let mut out: Vec<Vec<RawValue>> = rows
        .iter()
        .map(|row| {
            (0..columns.len())
                .map(|i| {
                    let ty = row.columns()[i].type_().clone();
                    match ty {
                        Type::INT8 => row
                            .get::<_, Option<i64>>(i)
                            .map_or(RawValue::Null, RawValue::Integer),
                        Type::INT2 => row
                            .get::<_, Option<i16>>(i)
                            .map_or(RawValue::Null, |v| RawValue::Integer(v.into())),
                        Type::BOOL => row
                            .get::<_, Option<bool>>(i)
                            .map_or(RawValue::Null, |v| RawValue::Integer(v.into())),
                        Type::BYTEA => row
                            .get::<_, Option<Vec<u8>>>(i)
                            .map_or(RawValue::Null, RawValue::Blob),
                        _ => row
                            .get::<_, Option<String>>(i)
                            .map_or(RawValue::Null, RawValue::Text),
                    }
                })
                .collect()
        })
        .collect();
    out.sort_by_key(|r| key(r));
    out
}

async fn snapshot(s: &dyn Storage) -> Vec<SnapshotPart> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let (result, parts) = tokio::join!(s.snapshot(tx), async {
        let mut parts = Vec::new();
        while let Some(p) = rx.recv().await {
            parts.push(p);
        }
        parts
    });
    result.unwrap();
    parts
}

async fn is_empty(url: &str) -> bool {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for (table, _) in EXPORT_TABLES {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        if n != 0 {
            return false;
        }
    }
    let head: i64 = client
        .query_one("SELECT seq FROM change_head", &[])
        .await
        .unwrap()
        .get(0);
    head == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filled_sqlite_store_is_copied_row_for_row_and_reads_the_same() {
    let Some(url) = cluster_url("import") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coffer.db");
    fill(&path).await;
    let db = TestDatabase::create(&url).await;
    let pg: PgStorage = db.storage().await;
    let counts = pg
        .import_sqlite(&path, &source(&path).await)
        .await
        .unwrap()
        .counts;

    let source = SqliteStorage::open_read_only(&path).unwrap();
    for (table, columns, rows) in sqlite_rows(&path) {
        let copied = counts.iter().find(|(t, _)| *t == table).unwrap().1;
        assert_eq!(copied, rows.len() as u64, "{table}");
        assert!(!rows.is_empty(), "{table} is filled");
        assert_eq!(pg_rows(db.url(), table, &columns).await, rows, "{table}");
    }
    // Compared without printing them on failure (thousands of bytes).
    let (copied, original) = (snapshot(&pg).await, snapshot(&source).await);
    assert_eq!(copied.len(), original.len(), "snapshot lengths");
    assert!(copied == original, "the snapshots differ");
    let (from, to) = (
        verify_chains(&source).await.unwrap(),
        verify_chains(&pg).await.unwrap(),
    );
    assert_eq!(from, to);
    assert!(to.log.base_seq > 0, "the log was compacted");
    assert!(to.log.cluster_id.is_some());
    assert_eq!(to.audit_heads.len(), 2);
    assert_eq!(pg.committed_head(), to.log.head_seq);
    assert_eq!(pg.change_head().await.unwrap(), to.log.head_seq);
    for head in &to.audit_heads {
        let account = pg.get_account(head.account).await.unwrap();
        assert_eq!(account, source.get_account(head.account).await.unwrap());
        assert_eq!(pg.secret_count(head.account).await.unwrap(), 3);
        // Each store's count (an unfiltered list's total) is the source's, and its rows'.
        let stores = source
            .list_stores(
                head.account,
                &coffer_storage::StoreQuery {
                    page: 1,
                    per_page: 100,
                    order: Default::default(),
                    direction: Default::default(),
                },
            )
            .await
            .unwrap()
            .items;
        assert!(!stores.is_empty());
        for store in stores {
            let mut query = coffer_storage::SecretQuery {
                page: 1,
                per_page: 1,
                order: Default::default(),
                direction: Default::default(),
                search: None,
                scopes: Default::default(),
            };
            let stored = pg
                .list_secrets(head.account, store.id, &query)
                .await
                .unwrap();
            let original = source
                .list_secrets(head.account, store.id, &query)
                .await
                .unwrap();
            query.search = Some(String::new());
            let rows = pg
                .list_secrets(head.account, store.id, &query)
                .await
                .unwrap();
            assert_eq!(
                (stored.total_count, rows.total_count),
                (original.total_count, original.total_count),
                "store {}'s count",
                store.id
            );
        }
        // Two DEKs made at the same instant: the later inserted is the latest on both.
        let latest = pg.latest_dek(head.account).await.unwrap();
        assert!(latest.is_some());
        assert_eq!(latest, source.latest_dek(head.account).await.unwrap());
        assert_eq!(
            pg.audit_checkpoints(head.account, 0, 10).await.unwrap(),
            source.audit_checkpoints(head.account, 0, 10).await.unwrap()
        );
    }
    // The copy is a live instance: the next write chains onto the copied head.
    let account = to.audit_heads[0].account;
    pg.put_dek(dek(account, 3)).await.unwrap();
    assert_eq!(pg.change_head().await.unwrap(), to.log.head_seq + 1);
    verify_chains(&pg).await.unwrap();
    source.close().await;
    pg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_holding_anything_is_refused_and_left_alone() {
    let Some(url) = cluster_url("import") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coffer.db");
    fill(&path).await;
    let db = TestDatabase::create(&url).await;
    let pg = db.storage().await;
    pg.create_account(
        AccountRecord {
            id: AccountId::from_bytes(id()),
            name: "there".into(),
            created: ts(1),
            secrets_quota: None,
        },
        &[],
    )
    .await
    .unwrap();
    match pg.import_sqlite(&path, &source(&path).await).await {
        Err(ImportError::NotEmpty(m)) => assert!(m.contains("table accounts"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pg.list_accounts().await.unwrap().len(), 1);
    pg.shutdown().await;

    // A database holding an instance is refused naming its cluster id.
    let db = TestDatabase::create(&url).await;
    let pg = db.storage().await;
    pg.import_sqlite(&path, &source(&path).await).await.unwrap();
    let cluster = pg.log_state().await.unwrap().cluster_id.unwrap();
    match pg.import_sqlite(&path, &source(&path).await).await {
        Err(ImportError::NotEmpty(m)) => assert!(m.contains(&hex::encode(cluster)), "{m}"),
        other => panic!("{other:?}"),
    }
    pg.shutdown().await;
}

/// The source's chains, as `coffer migrate` hands them to the import.
async fn source(path: &Path) -> ChainReport {
    let s = SqliteStorage::open_read_only(path).unwrap();
    let report = verify_chains(&s).await.unwrap();
    s.close_reads();
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_fails_part_way_leaves_the_target_empty() {
    let Some(url) = cluster_url("import") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coffer.db");
    fill(&path).await;
    // The last table gets a row SQLite takes and PostgreSQL refuses (a version past u32), so
    // every other table has been copied when the import fails.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "INSERT INTO account_grants (account_id, node_id, ark_version, ephemeral, sealed)
         VALUES (?1, ?2, 5000000000, ?3, x'01')",
        rusqlite::params![id().to_vec(), id().to_vec(), vec![1u8; 32]],
    )
    .unwrap();
    drop(raw);
    let db = TestDatabase::create(&url).await;
    let pg = db.storage().await;
    let err = pg
        .import_sqlite(&path, &source(&path).await)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("account_grants"), "{err}");
    assert!(
        is_empty(db.url()).await,
        "nothing of the failed copy remains"
    );
    assert_eq!(pg.committed_head(), 0);

    // A copy whose chains verify but whose heads are not the source's (as if rows were lost
    // on the way) is checked before COMMIT and rolled back: nothing to undo after.
    let good = dir.path().join("good.db");
    fill(&good).await;
    let expected = source(&good).await;
    let mut wrong = expected.clone();
    wrong.log.head_seq += 1;
    match pg.import_sqlite(&good, &wrong).await {
        Err(ImportError::Verify(m)) => assert!(m.contains("not the source's"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(
        is_empty(db.url()).await,
        "the unverified copy was rolled back"
    );
    let mut wrong = expected.clone();
    wrong.audit_heads.pop();
    match pg.import_sqlite(&good, &wrong).await {
        Err(ImportError::Verify(m)) => assert!(m.contains("audit heads"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(
        is_empty(db.url()).await,
        "the unverified copy was rolled back"
    );
    let imported = pg.import_sqlite(&good, &expected).await.unwrap();
    assert_eq!(imported.report.log, expected.log);
    assert_eq!(imported.report.audit_heads, expected.audit_heads);
    assert_eq!(verify_chains(&pg).await.unwrap(), imported.report);
    pg.shutdown().await;
}
