//! Tests of `check_integrity` on PostgreSQL (`integrity.rs`) and of the constants it checks the
//! catalog against (`schema_objects.rs`), and of a read-only storage (`PgOptions::read_only`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use coffer_storage::{AccountRecord, IntegrityProblem, Storage as _};
use coffer_types::{AccountId, Timestamp};

use crate::schema_objects::{
    CONSTRAINTS, FOREIGN_KEYS, FUNCTIONS, KEYS, TRIGGER_FUNCTIONS, TRIGGERS,
};
use crate::testing::{TestDatabase, cluster_url, standby_url, with_database};
use crate::{PgOptions, PgStorage};

/// A superuser session on `db` outside `PgStorage` (the test cluster's user is one).
async fn raw(db: &TestDatabase) -> (tokio_postgres::Client, tokio::task::JoinHandle<()>) {
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", db.name()));
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, driver)
}

/// Two accounts (1, 2), a store each (0x11, 0x22), a secret (0x0a) in account 1's store, a
/// DEK and a version of it: a row in every table the secret's foreign keys name.
async fn seed(c: &tokio_postgres::Client) {
    c.batch_execute(
        "INSERT INTO accounts (id, name, created) VALUES
           ('\\x01010101010101010101010101010101', 'a1', 1),
           ('\\x02020202020202020202020202020202', 'a2', 1);
         INSERT INTO stores (id, account_id, name, created, modified) VALUES
           ('\\x11111111111111111111111111111111', '\\x01010101010101010101010101010101', 's', 1, 1),
           ('\\x22222222222222222222222222222222', '\\x02020202020202020202020202020202', 'v', 1, 1);
         INSERT INTO secrets (id, store_id, account_id, name, comment, scopes, created, modified,
                              version) VALUES
           ('\\x0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a', '\\x11111111111111111111111111111111',
            '\\x01010101010101010101010101010101', 'a1', '', ',', 1, 1, 1);",
    )
    .await
    .unwrap();
}

async fn problem(storage: &PgStorage) -> Option<IntegrityProblem> {
    storage.check_integrity().await.unwrap().problem
}

/// The constants are what the migrations make on a fresh database: every constraint, every
/// trigger of Coffer's own, and each foreign key's columns and parent as `FOREIGN_KEYS` says.
#[tokio::test]
async fn schema_objects_are_what_the_migrations_make() {
    let Some(cluster) = cluster_url("schema_objects_are_what_the_migrations_make") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let storage = db.storage().await;
    let (c, driver) = raw(&db).await;
    let pairs = |rows: Vec<tokio_postgres::Row>| -> BTreeSet<(String, String)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let constraints = pairs(
        c.query(
            "SELECT t.relname::text, c.conname::text FROM pg_constraint c
             JOIN pg_class t ON t.oid = c.conrelid
             WHERE t.relnamespace = current_schema()::regnamespace",
            &[],
        )
        .await
        .unwrap(),
    );
    let expected: BTreeSet<(String, String)> = CONSTRAINTS
        .iter()
        .map(|(t, n)| ((*t).to_owned(), (*n).to_owned()))
        .collect();
    assert_eq!(constraints, expected, "schema_objects::CONSTRAINTS");
    assert_eq!(
        expected.len(),
        CONSTRAINTS.len(),
        "no constraint listed twice"
    );
    let triggers = pairs(
        c.query(
            "SELECT t.relname::text, g.tgname::text FROM pg_trigger g
             JOIN pg_class t ON t.oid = g.tgrelid
             WHERE t.relnamespace = current_schema()::regnamespace AND NOT g.tgisinternal",
            &[],
        )
        .await
        .unwrap(),
    );
    let expected: BTreeSet<(String, String)> = TRIGGERS
        .iter()
        .map(|(t, n)| ((*t).to_owned(), (*n).to_owned()))
        .collect();
    assert_eq!(triggers, expected, "schema_objects::TRIGGERS");
    // Each foreign key: (name, table, columns, parent, parent's columns), in key order.
    type Fk = (String, String, Vec<String>, String, Vec<String>);
    let found: BTreeSet<Fk> = c
        .query(
            "SELECT c.conname::text, t.relname::text,
                    (SELECT array_agg(a.attname::text ORDER BY k.n) FROM unnest(c.conkey)
                       WITH ORDINALITY AS k(attnum, n)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum),
                    p.relname::text,
                    (SELECT array_agg(a.attname::text ORDER BY k.n) FROM unnest(c.confkey)
                       WITH ORDINALITY AS k(attnum, n)
                     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum)
             FROM pg_constraint c
             JOIN pg_class t ON t.oid = c.conrelid
             JOIN pg_class p ON p.oid = c.confrelid
             WHERE c.contype = 'f' AND t.relnamespace = current_schema()::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let strings = |s: &[&str]| s.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
    let expected: BTreeSet<Fk> = FOREIGN_KEYS
        .iter()
        .map(|fk| {
            (
                fk.name.to_owned(),
                fk.table.to_owned(),
                strings(fk.columns),
                fk.parent.to_owned(),
                strings(fk.parent_columns),
            )
        })
        .collect();
    assert_eq!(found, expected, "schema_objects::FOREIGN_KEYS");
    // Each primary key and unique constraint: (table, name, columns in key order).
    let keys: BTreeSet<(String, String, String)> = c
        .query(
            "SELECT t.relname::text, c.conname::text,
                    (SELECT string_agg(a.attname::text, ',' ORDER BY k.n) FROM unnest(c.conkey)
                       WITH ORDINALITY AS k(attnum, n)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum)
             FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
             WHERE c.contype IN ('p', 'u') AND t.relnamespace = current_schema()::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected: BTreeSet<(String, String, String)> = KEYS
        .iter()
        .map(|(t, n, c)| ((*t).to_owned(), (*n).to_owned(), (*c).to_owned()))
        .collect();
    assert_eq!(keys, expected, "schema_objects::KEYS");
    let calls: BTreeSet<(String, String, String)> = c
        .query(
            "SELECT t.relname::text, g.tgname::text, p.proname::text FROM pg_trigger g
             JOIN pg_class t ON t.oid = g.tgrelid JOIN pg_proc p ON p.oid = g.tgfoid
             WHERE t.relnamespace = current_schema()::regnamespace AND NOT g.tgisinternal",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected: BTreeSet<(String, String, String)> = TRIGGER_FUNCTIONS
        .iter()
        .map(|(t, n, f)| ((*t).to_owned(), (*n).to_owned(), (*f).to_owned()))
        .collect();
    assert_eq!(calls, expected, "schema_objects::TRIGGER_FUNCTIONS");
    let functions = pairs(
        c.query(
            "SELECT proname::text, md5(prosrc) FROM pg_proc
             WHERE pronamespace = current_schema()::regnamespace",
            &[],
        )
        .await
        .unwrap(),
    );
    let expected: BTreeSet<(String, String)> = FUNCTIONS
        .iter()
        .map(|(n, b)| ((*n).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(functions, expected, "schema_objects::FUNCTIONS");
    // And a database as made passes.
    seed(&c).await;
    assert_eq!(problem(&storage).await, None);
    storage.shutdown().await;
    driver.abort();
}

/// The review's scenario: with `session_replication_role = replica` (foreign keys' triggers do
/// not fire), a secret of account 1 moved into account 2's store, the counts fixed to match:
/// the row is named.
#[tokio::test]
async fn a_secret_moved_into_another_accounts_store_is_found() {
    let Some(cluster) = cluster_url("a_secret_moved_into_another_accounts_store_is_found") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let storage = db.storage().await;
    let (c, driver) = raw(&db).await;
    seed(&c).await;
    assert_eq!(problem(&storage).await, None);
    c.batch_execute(
        "SET session_replication_role = replica;
         UPDATE secrets SET store_id = '\\x22222222222222222222222222222222'
           WHERE id = '\\x0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a';
         UPDATE stores SET secret_count = 0 WHERE id = '\\x11111111111111111111111111111111';
         UPDATE stores SET secret_count = 1 WHERE id = '\\x22222222222222222222222222222222';
         RESET session_replication_role;",
    )
    .await
    .unwrap();
    assert_eq!(
        problem(&storage).await,
        Some(IntegrityProblem::ForeignKeyRow {
            table: "secrets".into(),
            key: "0a".repeat(16),
            parent: "stores (secrets_store_id_account_id_fkey)".into(),
        })
    );
    // A version whose secret is gone (deleted without its cascade).
    c.batch_execute(
        "SET session_replication_role = replica;
         UPDATE secrets SET store_id = '\\x11111111111111111111111111111111';
         UPDATE stores SET secret_count = 1 WHERE id = '\\x11111111111111111111111111111111';
         UPDATE stores SET secret_count = 0 WHERE id = '\\x22222222222222222222222222222222';
         INSERT INTO versions (secret_id, version, dek_id, sealed, created)
           VALUES ('\\x0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b', 3, '\\x0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c',
                   '\\x00', 1);
         RESET session_replication_role;",
    )
    .await
    .unwrap();
    assert_eq!(
        problem(&storage).await,
        Some(IntegrityProblem::ForeignKeyRow {
            table: "versions".into(),
            key: format!("{} version 3", "0b".repeat(16)),
            parent: "secrets (versions_secret_id_fkey)".into(),
        })
    );
    storage.shutdown().await;
    driver.abort();
}

/// A dropped foreign key, one re-added `NOT VALID`, a disabled count trigger, a dropped guard,
/// and `DISABLE TRIGGER ALL` (which disables the foreign keys' own triggers too): each named.
/// A case's repair that puts `coffer_refuse` back as the migrations made it.
const RESTORE_REFUSE: &str = "(the function's definition, read before)";

#[tokio::test]
async fn missing_or_disabled_constraints_and_triggers_are_found() {
    let Some(cluster) = cluster_url("missing_or_disabled_constraints_and_triggers_are_found")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let storage = db.storage().await;
    let (c, driver) = raw(&db).await;
    seed(&c).await;
    let cases: &[(&str, &str, &str)] = &[
        (
            "ALTER TABLE secrets DROP CONSTRAINT secrets_store_id_account_id_fkey",
            "constraint secrets_store_id_account_id_fkey on secrets is missing",
            "ALTER TABLE secrets ADD CONSTRAINT secrets_store_id_account_id_fkey
               FOREIGN KEY (store_id, account_id) REFERENCES stores (id, account_id)",
        ),
        (
            "ALTER TABLE secrets DROP CONSTRAINT secrets_store_id_account_id_fkey;
             ALTER TABLE secrets ADD CONSTRAINT secrets_store_id_account_id_fkey
               FOREIGN KEY (store_id, account_id) REFERENCES stores (id, account_id) NOT VALID",
            "constraint secrets_store_id_account_id_fkey on secrets is not validated",
            "ALTER TABLE secrets VALIDATE CONSTRAINT secrets_store_id_account_id_fkey",
        ),
        (
            "ALTER TABLE stores DROP CONSTRAINT stores_pkey;
             ALTER TABLE stores ADD CONSTRAINT stores_pkey PRIMARY KEY (id, account_id)",
            "key stores_pkey on stores is on (id,account_id), not (id)",
            "ALTER TABLE stores DROP CONSTRAINT stores_pkey;
             ALTER TABLE stores ADD CONSTRAINT stores_pkey PRIMARY KEY (id)",
        ),
        (
            "ALTER TABLE secrets DISABLE TRIGGER secrets_count_insert",
            "trigger secrets_count_insert on secrets is disabled",
            "ALTER TABLE secrets ENABLE TRIGGER secrets_count_insert",
        ),
        (
            "ALTER TABLE secrets ENABLE REPLICA TRIGGER secrets_owner_fixed",
            "trigger secrets_owner_fixed on secrets is disabled",
            "ALTER TABLE secrets ENABLE TRIGGER secrets_owner_fixed",
        ),
        (
            "DROP TRIGGER audit_no_update ON audit",
            "trigger audit_no_update on audit is missing",
            "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
               FOR EACH ROW EXECUTE FUNCTION coffer_refuse('the audit log is append-only')",
        ),
        (
            "ALTER TABLE versions DISABLE TRIGGER ALL",
            "trigger versions_immutable on versions is disabled",
            "ALTER TABLE versions ENABLE TRIGGER versions_immutable",
        ),
        (
            "DROP TRIGGER audit_no_update ON audit;
             CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
               FOR EACH ROW EXECUTE FUNCTION coffer_changes_no_delete()",
            "trigger audit_no_update on audit calls coffer_changes_no_delete, not coffer_refuse",
            "DROP TRIGGER audit_no_update ON audit;
             CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
               FOR EACH ROW EXECUTE FUNCTION coffer_refuse('the audit log is append-only')",
        ),
        (
            "CREATE OR REPLACE FUNCTION coffer_refuse() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN RETURN NEW; END $$",
            "function coffer_refuse is not the one this version makes",
            RESTORE_REFUSE,
        ),
        (
            "CREATE FUNCTION coffer_noop() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN RETURN NEW; END $$;
             CREATE TRIGGER quiet BEFORE INSERT ON secrets
               FOR EACH ROW EXECUTE FUNCTION coffer_noop()",
            "trigger quiet on secrets is not one of Coffer's",
            "DROP TRIGGER quiet ON secrets; DROP FUNCTION coffer_noop()",
        ),
        (
            "",
            "constraint versions_dek_id_fkey on versions has a disabled trigger: it is not \
             enforced",
            "ALTER TABLE versions ENABLE TRIGGER ALL",
        ),
    ];
    // The function as the migrations made it, to put back after replacing it.
    let refuse: String = c
        .query_one("SELECT pg_get_functiondef('coffer_refuse'::regproc)", &[])
        .await
        .unwrap()
        .get(0);
    for (break_it, found, repair) in cases {
        if !break_it.is_empty() {
            c.batch_execute(break_it).await.unwrap();
        }
        let repair = if *repair == RESTORE_REFUSE {
            refuse.as_str()
        } else {
            repair
        };
        assert_eq!(
            problem(&storage).await,
            Some(IntegrityProblem::Schema((*found).to_owned())),
            "after {break_it:?}"
        );
        c.batch_execute(repair).await.unwrap();
    }
    assert_eq!(problem(&storage).await, None, "all repaired");
    storage.shutdown().await;
    driver.abort();
}

/// A read-only storage has no writer: a write fails at once, before the writer's lock (which
/// would serialise every instance's writes), and changes nothing. (That it follows no commits,
/// no LISTEN, is what `a_read_only_storage_works_on_a_hot_standby` shows: a standby refuses it.)
#[tokio::test]
async fn a_read_only_storage_refuses_writes_at_once() {
    let Some(cluster) = cluster_url("a_read_only_storage_refuses_writes_at_once") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let writable = db.storage().await;
    let (c, driver) = raw(&db).await;
    let storage = PgStorage::connect(
        db.url(),
        PgOptions {
            read_only: true,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
    let before: i64 = c
        .query_one("SELECT seq FROM change_head", &[])
        .await
        .unwrap()
        .get(0);
    // Another instance holds the writer's lock: a write that took it would wait here.
    let hold = writable.hold_writer_lock().await;
    let started = Instant::now();
    let e = tokio::time::timeout(
        Duration::from_secs(5),
        storage.create_account(
            AccountRecord {
                id: AccountId::from_bytes([7; 16]),
                name: "ro".into(),
                created: Timestamp::now(),
                secrets_quota: None,
            },
            &[],
        ),
    )
    .await
    .expect("a read-only storage's write waited (on the writer's lock?)")
    .unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    hold.finish().await.unwrap();
    writable.shutdown().await;
    assert_eq!(storage.check_integrity().await.unwrap().problem, None);
    let after: i64 = c
        .query_one("SELECT seq FROM change_head", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after);
    let accounts: i64 = c
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(accounts, 0);
    storage.shutdown().await;
    driver.abort();
}

/// On a hot standby (in recovery: LISTEN and every write refused by PostgreSQL), a read-only
/// storage connects, checks the schema and passes `check_integrity` on what the primary wrote,
/// and refuses a write at once (before, its LISTEN failed and verify gave up after a minute).
#[tokio::test]
async fn a_read_only_storage_works_on_a_hot_standby() {
    let Some(cluster) = cluster_url("a_read_only_storage_works_on_a_hot_standby") else {
        return;
    };
    let Some(standby) = standby_url("a_read_only_storage_works_on_a_hot_standby") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let primary = db.storage().await;
    let (c, driver) = raw(&db).await;
    seed(&c).await;
    // Wait until the standby has replayed all of it.
    let lsn: String = c
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let (s, standby_driver) = tokio_postgres::connect(&standby, tokio_postgres::NoTls)
        .await
        .expect("connecting to the standby");
    let standby_driver = tokio::spawn(async move {
        let _ = standby_driver.await;
    });
    let in_recovery: bool = s
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        in_recovery,
        "COFFER_TEST_STANDBY_URL names a server in recovery"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replayed: bool = s
            .query_one(
                "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                &[&lsn],
            )
            .await
            .unwrap()
            .get(0);
        if replayed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby did not replay {lsn}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let storage = PgStorage::connect(
        &with_database(&standby, db.name()),
        PgOptions {
            read_only: true,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("a read-only storage on the standby: {e}"));
    let report = storage.check_integrity().await.unwrap();
    assert_eq!(report.problem, None);
    assert_eq!((report.stores_checked, report.accounts_checked), (2, 2));
    let e = storage
        .create_account(
            AccountRecord {
                id: AccountId::from_bytes([7; 16]),
                name: "ro".into(),
                created: Timestamp::now(),
                secrets_quota: None,
            },
            &[],
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    storage.shutdown().await;
    drop(s);
    standby_driver.abort();
    primary.shutdown().await;
    driver.abort();
}
