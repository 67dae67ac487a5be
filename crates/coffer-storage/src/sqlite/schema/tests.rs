//! Tests of opening and migrating the schema (`schema.rs`).

use super::*;

#[test]
fn migrates_a_fresh_file_once_and_refuses_unknown_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    drop(open_writer(&path, Duration::from_secs(1), true).unwrap());
    // Reopening runs no migration (it would fail: the tables exist).
    let conn = open_writer(&path, Duration::from_secs(1), true).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    let fk: i64 = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
    let limit: i64 = conn
        .pragma_query_value(None, "journal_size_limit", |r| r.get(0))
        .unwrap();
    assert_eq!(limit, WAL_SIZE_LIMIT);
    let reader = open_reader(&path, Duration::from_secs(1)).unwrap();
    for c in [&conn, &reader] {
        assert!(
            c.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG).unwrap(),
            "plans do not depend on bound values (no re-prepare when bindings are cleared)"
        );
    }
    drop(reader);

    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    let err = open_writer(&path, Duration::from_secs(1), true).unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
}

fn plan(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    stmt.query_map([[0u8; 16]], |row| row.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn migrates_a_version_1_database_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        v1(&tx).unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        tx.execute(
            "INSERT INTO accounts (id, name, created) VALUES (?1, 'a', 1)",
            [[1u8; 16]],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO tokens (id, account_id, name, hash, role, operator, created)
             VALUES (?1, ?2, 't', ?3, 'super_admin', 0, 2)",
            rusqlite::params![[2u8; 16], [1u8; 16], [3u8; 32]],
        )
        .unwrap();
        tx.commit().unwrap();
    }

    let conn = open_writer(&path, Duration::from_secs(1), true).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 13);
    let ark_deks: i64 = conn
        .query_row("SELECT count(*) FROM deks WHERE rk_account != 0", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        ark_deks, 0,
        "version 12: every existing DEK is under the instance RK"
    );
    for table in [
        "account_replication_keys",
        "account_node_keys",
        "account_grants",
    ] {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "version 12 adds {table}, empty");
    }
    let retired: i64 = conn
        .query_row("SELECT count(*) FROM retired_keks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(retired, 0, "version 9 adds the retired KEK ids, empty");
    let destroyed: i64 = conn
        .query_row("SELECT count(*) FROM destroyed_deks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(destroyed, 0, "version 11 adds the destroyed DEK ids, empty");
    // Version 10: a version's DEK and sealed bytes may be replaced (re-seal), nothing else.
    conn.execute_batch(
        "INSERT INTO stores (id, account_id, name, created, modified)
         SELECT x'0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c', id, 'st', 1, 1 FROM accounts LIMIT 1;
         INSERT INTO secrets (id, store_id, account_id, name, comment, scopes, created,
                              modified, version)
         SELECT x'0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a', id, account_id, 'S', '', ',', 1, 1, 1
         FROM stores LIMIT 1;
         INSERT INTO deks (id, account_id, kek_id, wrapped, created)
         SELECT x'0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b', id, 'k', x'00', 1 FROM accounts LIMIT 1;
         INSERT INTO versions (secret_id, version, dek_id, sealed, created)
         VALUES (x'0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a', 1,
                 x'0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b', x'01', 1);",
    )
    .unwrap();
    conn.execute("UPDATE versions SET sealed = x'02'", [])
        .unwrap();
    let moved = conn.execute("UPDATE versions SET version = 2", []);
    assert!(moved.is_err(), "a version's number must not change");
    // Version 6: KEK rotation looks up DEKs by KEK id through an index.
    let by_kek = plan(&conn, "SELECT id FROM deks WHERE kek_id = ?1 LIMIT 5");
    assert!(
        by_kek.iter().any(|p| p.contains("deks_by_kek")),
        "{by_kek:?}"
    );
    let tokens: i64 = conn
        .query_row("SELECT count(*) FROM tokens", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tokens, 1, "the migration keeps existing rows");

    // The listing reads the index in order: no separate sort.
    let listing = plan(
        &conn,
        "SELECT id FROM tokens WHERE account_id = ?1 ORDER BY created, id",
    );
    assert!(
        listing.iter().any(|d| d.contains("tokens_by_account")),
        "{listing:?}"
    );
    assert!(
        !listing.iter().any(|d| d.contains("TEMP B-TREE")),
        "{listing:?}"
    );
    // What the foreign-key check runs when a DEK is deleted.
    let fk = plan(&conn, "SELECT 1 FROM versions WHERE dek_id = ?1");
    assert!(fk.iter().any(|d| d.contains("versions_by_dek")), "{fk:?}");

    // Audit rows carry one secondary index, by time: every further index is written on
    // every change and cost ~10 % of write throughput each (docs/benchmarks.md), while
    // filtered listings are rare. A listing filtered on another column walks the account's
    // chain by primary key in seq order: no sort.
    for filter in [
        "action = 'create'",
        "actor_token = x'00'",
        "store_id = x'00'",
        "secret_id = x'00'",
    ] {
        let listing = plan(
            &conn,
            &format!("SELECT * FROM audit WHERE account_id = ?1 AND {filter} ORDER BY seq DESC"),
        );
        assert!(
            listing.iter().any(|d| d.contains("sqlite_autoindex_audit")),
            "{listing:?}"
        );
        assert!(
            !listing.iter().any(|d| d.contains("TEMP B-TREE")),
            "{listing:?}"
        );
    }
    let by_time = plan(
        &conn,
        "SELECT * FROM audit WHERE account_id = ?1 AND at >= 0 AND at < 10 ORDER BY at",
    );
    assert!(
        by_time.iter().any(|d| d.contains("audit_by_at")),
        "{by_time:?}"
    );
    // The head lookup and the verifier's scan use the primary key.
    let head = plan(
        &conn,
        "SELECT seq, hash FROM audit WHERE account_id = ?1 ORDER BY seq DESC LIMIT 1",
    );
    assert!(!head.iter().any(|d| d.contains("TEMP B-TREE")), "{head:?}");
    assert!(head.iter().any(|d| d.contains("INDEX")), "{head:?}");
}

#[test]
fn migrates_a_version_3_database_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let (account, store, secret, dek) = ([1u8; 16], [2u8; 16], [3u8; 16], [4u8; 16]);
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        v1(&tx).unwrap();
        v2(&tx).unwrap();
        v3(&tx).unwrap();
        tx.pragma_update(None, "user_version", 3).unwrap();
        tx.execute(
            "INSERT INTO accounts (id, name, created) VALUES (?1, 'a', 1)",
            [account],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO deks (id, account_id, kek_id, wrapped, created)
             VALUES (?1, ?2, 'k', x'00', 1)",
            [dek, account],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO stores (id, account_id, name, created, modified)
             VALUES (?1, ?2, 's', 1, 1)",
            [store, account],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO secrets (id, store_id, account_id, name, comment, scopes, created,
                                  modified, version)
             VALUES (?1, ?2, ?3, 'k', '', ',workers,', 1, 1, 1)",
            [secret, store, account],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO versions (secret_id, version, dek_id, sealed, created)
             VALUES (?1, 1, ?2, x'01', 1)",
            [secret, dek],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO audit (account_id, seq, at, action, outcome, payload, prev_hash,
                                hash)
             VALUES (?1, 1, 1, 'create', 'ok', x'', zeroblob(32), zeroblob(32))",
            [account],
        )
        .unwrap();
        tx.commit().unwrap();
    }

    let conn = open_writer(&path, Duration::from_secs(1), true).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    for (table, rows) in [
        ("accounts", 1),
        ("deks", 1),
        ("stores", 1),
        ("secrets", 1),
        ("versions", 1),
        ("audit", 1),
        ("services", 0),
        ("service_bindings", 0),
        ("service_tokens", 0),
    ] {
        let count: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, rows, "{table}: the migration keeps existing rows");
    }
    let counted: i64 = conn
        .query_row(
            "SELECT secret_count FROM stores WHERE id = ?1",
            [store],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(counted, 1, "version 13 counts an existing store's secrets");

    // The new tables work and cascade: a service with a binding and a token, then deleted.
    let service = [5u8; 16];
    conn.execute(
        "INSERT INTO services (id, account_id, name, kind, created, modified)
         VALUES (?1, ?2, 'svc', 'workers', 1, 1)",
        [service, account],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO service_bindings (service_id, position, binding, store_id, secret_name)
         VALUES (?1, 0, 'K', ?2, 'k')",
        [service, store],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO service_tokens (id, account_id, service_id, hash, created)
         VALUES (?1, ?2, ?3, zeroblob(32), 1)",
        [[6u8; 16], account, service],
    )
    .unwrap();
    // A token whose account is not its service's is refused by the composite reference.
    let other_account = [7u8; 16];
    conn.execute(
        "INSERT INTO accounts (id, name, created) VALUES (?1, 'b', 1)",
        [other_account],
    )
    .unwrap();
    assert!(
        conn.execute(
            "INSERT INTO service_tokens (id, account_id, service_id, hash, created)
             VALUES (?1, ?2, ?3, zeroblob(32), 1)",
            [[8u8; 16], other_account, service],
        )
        .is_err()
    );
    conn.execute("DELETE FROM services WHERE id = ?1", [service])
        .unwrap();
    for table in ["service_bindings", "service_tokens"] {
        let count: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 0, "{table} rows go with their service");
    }

    // The runtime read: the secret by its unique (store_id, name) index, the version by
    // its primary key; no scan, no sort.
    let runtime = plan(
        &conn,
        "SELECT s.id, v.sealed FROM secrets AS s
         LEFT JOIN versions AS v ON v.secret_id = s.id AND v.version = s.version
         WHERE s.store_id = ?1 AND s.name = 'k' AND s.account_id = ?1",
    );
    assert!(
        runtime
            .iter()
            .any(|d| d.starts_with("SEARCH s USING INDEX sqlite_autoindex_secrets")),
        "{runtime:?}"
    );
    assert!(
        runtime
            .iter()
            .any(|d| d.starts_with("SEARCH v USING INDEX sqlite_autoindex_versions")),
        "{runtime:?}"
    );
    assert!(
        !runtime
            .iter()
            .any(|d| d.starts_with("SCAN") || d.contains("TEMP B-TREE")),
        "{runtime:?}"
    );
    // Listings read their index in order.
    for sql in [
        "SELECT id FROM services WHERE account_id = ?1 AND (?1 IS NULL OR name = ?1)
         ORDER BY name",
        "SELECT id FROM service_tokens WHERE service_id = ?1 AND account_id = ?1
         ORDER BY created, id",
        "SELECT binding FROM service_bindings WHERE service_id = ?1 ORDER BY position",
    ] {
        let listing = plan(&conn, sql);
        assert!(
            listing.iter().all(|d| d.starts_with("SEARCH")),
            "{sql}: {listing:?}"
        );
        assert!(
            !listing.iter().any(|d| d.contains("TEMP B-TREE")),
            "{sql}: {listing:?}"
        );
    }
}

/// Every store's and account's `secret_count` next to its rows, stores then accounts, each by
/// id: (id's first byte, count kept, rows).
fn counts(conn: &Connection) -> Vec<(u8, i64, i64)> {
    let mut out = Vec::new();
    for (table, column) in [("stores", "store_id"), ("accounts", "account_id")] {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT t.id, t.secret_count,
                        (SELECT count(*) FROM secrets WHERE {column} = t.id)
                 FROM {table} AS t ORDER BY t.id"
            ))
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?[0], r.get(1)?, r.get(2)?))
            })
            .unwrap()
            .map(Result::unwrap);
        out.extend(rows);
    }
    out
}

/// Asserts that every count is its rows, and that they are `expected` (by first byte).
fn assert_counts(conn: &Connection, expected: &[(u8, i64)], when: &str) {
    let got = counts(conn);
    for (id, kept, rows) in &got {
        assert_eq!(
            kept, rows,
            "{when}: id {id:#04x} keeps {kept}, holds {rows}"
        );
    }
    let got: Vec<(u8, i64)> = got.iter().map(|(id, kept, _)| (*id, *kept)).collect();
    assert_eq!(got, expected, "{when}");
}

fn insert_secret(conn: &Connection, account: u8, store: u8, n: u8) {
    conn.execute(
        "INSERT INTO secrets (id, store_id, account_id, name, comment, scopes, created,
                              modified, version)
         VALUES (?1, ?2, ?3, ?4, '', ',', 1, 1, 1)",
        rusqlite::params![[n; 16], [store; 16], [account; 16], format!("s{n}")],
    )
    .unwrap();
}

/// Version 13 fills `stores.secret_count` from the rows a version-12 file holds (several
/// accounts and stores, some empty), and its triggers keep it, and the account's, through
/// inserts and deletes.
#[test]
fn version_13_counts_existing_secrets_and_keeps_counting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for migration in &MIGRATIONS[..12] {
            migration(&tx).unwrap();
        }
        tx.pragma_update(None, "user_version", 12).unwrap();
        // Accounts 0x01 (stores 0x11 with 3 secrets, 0x12 empty, 0x13 with 1), 0x02 (0x21
        // with 2), 0x03 (store 0x31, empty) and 0x04 (no store).
        for account in [1u8, 2, 3, 4] {
            tx.execute(
                "INSERT INTO accounts (id, name, created) VALUES (?1, ?2, 1)",
                rusqlite::params![[account; 16], format!("a{account}")],
            )
            .unwrap();
        }
        for (store, account) in [(0x11u8, 1u8), (0x12, 1), (0x13, 1), (0x21, 2), (0x31, 3)] {
            tx.execute(
                "INSERT INTO stores (id, account_id, name, created, modified)
                 VALUES (?1, ?2, ?3, 1, 1)",
                rusqlite::params![[store; 16], [account; 16], format!("st{store:x}")],
            )
            .unwrap();
        }
        for (n, store, account) in [
            (0xa1u8, 0x11u8, 1u8),
            (0xa2, 0x11, 1),
            (0xa3, 0x11, 1),
            (0xa4, 0x13, 1),
            (0xb1, 0x21, 2),
            (0xb2, 0x21, 2),
        ] {
            insert_secret(&tx, account, store, n);
        }
        let has_column: i64 = tx
            .query_row(
                "SELECT count(*) FROM pragma_table_info('stores') WHERE name = 'secret_count'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(has_column, 0, "version 12 has no per-store count");
        tx.commit().unwrap();
    }

    let conn = open_writer(&path, Duration::from_secs(1), true).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_counts(
        &conn,
        &[
            (0x11, 3),
            (0x12, 0),
            (0x13, 1),
            (0x21, 2),
            (0x31, 0),
            (1, 4),
            (2, 2),
            (3, 0),
            (4, 0),
        ],
        "right after the migration",
    );

    // The triggers keep them: an insert into an empty store, one statement inserting into two
    // stores of two accounts, one deleting across stores, one deleting a store's last.
    insert_secret(&conn, 1, 0x12, 0xa5);
    conn.execute(
        "INSERT INTO secrets (id, store_id, account_id, name, comment, scopes, created,
                              modified, version)
         VALUES (?1, ?2, ?3, 'm1', '', ',', 1, 1, 1), (?4, ?2, ?3, 'm2', '', ',', 1, 1, 1),
                (?5, ?6, ?7, 'm3', '', ',', 1, 1, 1)",
        rusqlite::params![
            [0xc1u8; 16],
            [0x31u8; 16],
            [3u8; 16],
            [0xc2u8; 16],
            [0xc3u8; 16],
            [0x11u8; 16],
            [1u8; 16]
        ],
    )
    .unwrap();
    assert_counts(
        &conn,
        &[
            (0x11, 4),
            (0x12, 1),
            (0x13, 1),
            (0x21, 2),
            (0x31, 2),
            (1, 6),
            (2, 2),
            (3, 2),
            (4, 0),
        ],
        "after the inserts",
    );
    let deleted = conn
        .execute(
            "DELETE FROM secrets WHERE id IN (?1, ?2, ?3, ?4)",
            [[0xa1u8; 16], [0xa2; 16], [0xb1; 16], [0xc1; 16]],
        )
        .unwrap();
    assert_eq!(deleted, 4);
    conn.execute("DELETE FROM secrets WHERE store_id = ?1", [[0x13u8; 16]])
        .unwrap();
    assert_counts(
        &conn,
        &[
            (0x11, 2),
            (0x12, 1),
            (0x13, 0),
            (0x21, 1),
            (0x31, 1),
            (1, 3),
            (2, 1),
            (3, 1),
            (4, 0),
        ],
        "after the deletes",
    );
}
