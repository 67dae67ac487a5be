//! Tests of the migrations (`migrate.rs`) on a database left at an older version.

use coffer_storage::Storage as _;
use coffer_types::{AccountId, StoreId};

use super::*;
use crate::testing::{TestDatabase, cluster_url};

/// A connection to `db` outside `PgStorage` (which migrates to the latest at connect).
async fn raw_client(db: &TestDatabase) -> deadpool_postgres::Object {
    let config: tokio_postgres::Config = db.url().parse().expect("the test database's URL");
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(1)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .expect("a pool of one")
        .get()
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", db.name()))
}

async fn version(c: &deadpool_postgres::Object) -> i64 {
    c.query_one(
        "SELECT version FROM coffer_schema_version WHERE id = 1",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Every store's and every account's `secret_count` against its rows (stores, then accounts,
/// by id): (id's first byte, count kept, rows).
async fn counts(c: &deadpool_postgres::Object) -> Vec<(u8, i64, i64)> {
    let mut out = Vec::new();
    for table in ["stores", "accounts"] {
        let column = if table == "stores" {
            "store_id"
        } else {
            "account_id"
        };
        let rows = c
            .query(
                &format!(
                    "SELECT t.id, t.secret_count,
                            (SELECT count(*) FROM secrets WHERE {column} = t.id)
                     FROM {table} AS t ORDER BY t.id"
                ),
                &[],
            )
            .await
            .unwrap();
        out.extend(rows.iter().map(|r| {
            let id: Vec<u8> = r.get(0);
            (id[0], r.get(1), r.get(2))
        }));
    }
    out
}

/// Asserts that every count is its rows, and that they are `expected` (by first byte).
async fn assert_counts(c: &deadpool_postgres::Object, expected: &[(u8, i64)], when: &str) {
    let got = counts(c).await;
    for (id, kept, rows) in &got {
        assert_eq!(
            kept, rows,
            "{when}: id {id:#04x} keeps {kept}, holds {rows}"
        );
    }
    let got: Vec<(u8, i64)> = got.iter().map(|(id, kept, _)| (*id, *kept)).collect();
    assert_eq!(got, expected, "{when}");
}

/// Inserts secret `n` (its id and name from `n`) into `store` of `account`.
async fn insert_secret(c: &deadpool_postgres::Object, account: u8, store: u8, n: u8) {
    c.execute(
        "INSERT INTO secrets (id, store_id, account_id, name, comment, scopes, created,
                              modified, version)
         VALUES ($1, $2, $3, $4, '', ',', 1, 1, 1)",
        &[
            &[n; 16].as_slice(),
            &[store; 16].as_slice(),
            &[account; 16].as_slice(),
            &format!("s{n}"),
        ],
    )
    .await
    .unwrap();
}

/// Migration 0003 fills `stores.secret_count` from the rows a version-2 database holds (several
/// accounts and stores, some empty) and installs the statement triggers that keep it, and the
/// account's, through inserts and deletes, single- and multi-row, across stores.
#[tokio::test]
async fn migration_0003_counts_existing_secrets_and_keeps_counting() {
    let Some(cluster) = cluster_url("migration_0003_counts_existing_secrets_and_keeps_counting")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let mut c = raw_client(&db).await;
    run_to(&mut c, 2).await.unwrap();
    assert_eq!(version(&c).await, 2);
    let stores_have_counts: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                            WHERE table_name = 'stores' AND column_name = 'secret_count')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!stores_have_counts, "version 2 has no per-store count");

    // Accounts 0x01 (stores 0x11 with 3 secrets, 0x12 empty, 0x13 with 1), 0x02 (0x21 with
    // 2), 0x03 (store 0x31, empty) and 0x04 (no store).
    for account in [1u8, 2, 3, 4] {
        c.execute(
            "INSERT INTO accounts (id, name, created) VALUES ($1, $2, 1)",
            &[&[account; 16].as_slice(), &format!("a{account}")],
        )
        .await
        .unwrap();
    }
    for (store, account) in [(0x11u8, 1u8), (0x12, 1), (0x13, 1), (0x21, 2), (0x31, 3)] {
        c.execute(
            "INSERT INTO stores (id, account_id, name, created, modified)
             VALUES ($1, $2, $3, 1, 1)",
            &[
                &[store; 16].as_slice(),
                &[account; 16].as_slice(),
                &format!("st{store:x}"),
            ],
        )
        .await
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
        insert_secret(&c, account, store, n).await;
    }
    drop(c);

    // Connecting migrates to the latest.
    let s = db.storage().await;
    let c = s.client().await.unwrap();
    assert_eq!(version(&c).await, SCHEMA_VERSION);
    assert_counts(
        &c,
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
    )
    .await;
    // What lists and quotas read.
    for (store, account, total) in [(0x11u8, 1u8, 3u64), (0x12, 1, 0), (0x21, 2, 2)] {
        let page = s
            .list_secrets(
                AccountId::from_bytes([account; 16]),
                StoreId::from_bytes([store; 16]),
                &coffer_storage::SecretQuery {
                    page: 1,
                    per_page: 10,
                    order: coffer_storage::SecretOrder::Name,
                    direction: coffer_storage::Direction::Asc,
                    search: None,
                    scopes: coffer_types::Scopes::default(),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (page.total_count, page.items.len()),
            (total, total as usize),
            "store {store:#04x}"
        );
    }
    assert_eq!(
        s.secret_count(AccountId::from_bytes([1; 16]))
            .await
            .unwrap(),
        4
    );

    // The triggers keep them: one insert into an empty store, then one statement inserting
    // into two stores of two accounts, one deleting across stores, one deleting a store's last.
    insert_secret(&c, 1, 0x12, 0xa5).await;
    c.execute(
        "INSERT INTO secrets (id, store_id, account_id, name, comment, scopes, created,
                              modified, version)
         VALUES ($1, $2, $3, 'm1', '', ',', 1, 1, 1), ($4, $2, $3, 'm2', '', ',', 1, 1, 1),
                ($5, $6, $7, 'm3', '', ',', 1, 1, 1)",
        &[
            &[0xc1u8; 16].as_slice(),
            &[0x31u8; 16].as_slice(),
            &[3u8; 16].as_slice(),
            &[0xc2u8; 16].as_slice(),
            &[0xc3u8; 16].as_slice(),
            &[0x11u8; 16].as_slice(),
            &[1u8; 16].as_slice(),
        ],
    )
    .await
    .unwrap();
    assert_counts(
        &c,
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
    )
    .await;
    let deleted = c
        .execute(
            "DELETE FROM secrets WHERE id = ANY($1)",
            &[&vec![
                [0xa1u8; 16].to_vec(),
                [0xa2; 16].to_vec(),
                [0xb1; 16].to_vec(),
                [0xc1; 16].to_vec(),
            ]],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 4);
    c.execute(
        "DELETE FROM secrets WHERE store_id = $1",
        &[&[0x13u8; 16].as_slice()],
    )
    .await
    .unwrap();
    assert_counts(
        &c,
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
    )
    .await;
}

/// `run_to` stops where asked, and the next connect (`run`) goes on from there.
#[tokio::test]
async fn migrations_stop_at_a_version_and_resume() {
    let Some(cluster) = cluster_url("migrations_stop_at_a_version_and_resume") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let mut c = raw_client(&db).await;
    run_to(&mut c, 1).await.unwrap();
    assert_eq!(version(&c).await, 1);
    run_to(&mut c, 1).await.unwrap();
    assert_eq!(version(&c).await, 1, "already there: nothing runs");
    drop(c);
    let s = db.storage().await;
    assert_eq!(version(&s.client().await.unwrap()).await, SCHEMA_VERSION);
}
