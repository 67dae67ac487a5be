//! `PgStorage` against the whole storage conformance suite (the one SQLite passes), each check
//! on a database of its own (see `coffer_postgres::testing`), one test per module of the suite
//! so that modules run in parallel: together they are `run_all`. Needs
//! `COFFER_TEST_DATABASE_URL`; skips without it, except under `CI=true`.

use coffer_postgres::testing::{Databases, cluster_url};

/// Runs every check of one module of the suite, each on a database of its own.
async fn run_module(module: &str) {
    let Some(cluster) = cluster_url(module) else {
        return;
    };
    let databases = Databases::default();
    let ran = coffer_storage::conformance::run_matching(
        |c| c.module == module,
        || databases.fresh(&cluster),
    )
    .await;
    assert!(ran > 0, "{module}: no check ran");
}

/// One test per module of the suite; a module added to the suite without a test here fails
/// `every_module_of_the_suite_has_a_test`.
macro_rules! modules {
    ($($module:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $module() {
                run_module(stringify!($module)).await;
            }
        )*

        #[test]
        fn every_module_of_the_suite_has_a_test() {
            let tested = [$(stringify!($module)),*];
            for check in coffer_storage::conformance::checks() {
                assert!(
                    tested.contains(&check.module),
                    "the suite's module `{}` has no test here: add it to modules!",
                    check.module
                );
            }
        }
    };
}

modules!(
    accounts,
    tokens,
    account_deletion,
    stores,
    secrets,
    carried_deks,
    dek_gate,
    listing,
    list_counts,
    integrity,
    change_log,
    concurrency,
    audit,
    audit_listing,
    services,
    replication,
    nodes,
    rewrap,
    lifecycle,
    node_keys,
    account_keys,
);

/// `#[tokio::test]`'s default runtime has one thread; the write path (its queued writes, the
/// commit follower's task) must work there too.
#[tokio::test]
async fn concurrency_on_a_current_thread_runtime() {
    run_module("concurrency").await;
}

/// Listings order byte-wise whatever the database's default collation: here one (ICU
/// `en-US`) that sorts `a A b B`, where byte order is `A B a b`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_are_byte_wise_under_a_linguistic_default_collation() {
    let Some(cluster) = cluster_url("orders_are_byte_wise_under_a_linguistic_default_collation")
    else {
        return;
    };
    let databases = Databases::default();
    let ran = coffer_storage::conformance::run_matching(
        |c| {
            matches!(
                c.module,
                "listing" | "services" | "tokens" | "nodes" | "accounts"
            )
        },
        || {
            databases.fresh_with(
                &cluster,
                "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'",
            )
        },
    )
    .await;
    assert!(ran > 0);
}

/// `check_integrity` finds a store's or an account's count set wrong with raw SQL (the
/// counting triggers bypassed), and checks foreign keys row by row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drifted_counts_are_found() {
    let Some(cluster) = cluster_url("drifted_counts_are_found") else {
        return;
    };
    let db = coffer_postgres::testing::TestDatabase::create(&cluster).await;
    let storage: std::sync::Arc<dyn coffer_storage::Storage> =
        std::sync::Arc::new(db.storage().await);
    assert_eq!(
        storage.check_integrity().await.unwrap().foreign_keys,
        coffer_storage::ForeignKeys::Checked
    );
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let client = &client;
    coffer_storage::conformance::drifted_counts_are_found(storage.clone(), |drift| async move {
        use coffer_storage::conformance::Drift;
        let (sql, id, to) = match drift {
            Drift::Store { store, to } => (
                "UPDATE stores SET secret_count = $2 WHERE id = $1",
                store.as_bytes().to_vec(),
                to,
            ),
            Drift::Account { account, to } => (
                "UPDATE accounts SET secret_count = $2 WHERE id = $1",
                account.as_bytes().to_vec(),
                to,
            ),
        };
        assert_eq!(client.execute(sql, &[&id, &to]).await.unwrap(), 1);
    })
    .await;
    storage.shutdown().await;
    drop(storage);
    driver.abort();
}

/// `recount_secrets` sets counts drifted by raw SQL (the counting triggers bypassed) to their
/// rows, under the writer lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recount_corrects_drifted_counts() {
    let Some(cluster) = cluster_url("recount_corrects_drifted_counts") else {
        return;
    };
    let db = coffer_postgres::testing::TestDatabase::create(&cluster).await;
    let storage: std::sync::Arc<dyn coffer_storage::Storage> =
        std::sync::Arc::new(db.storage().await);
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let client = &client;
    coffer_storage::conformance::recount_corrects_drifted_counts(
        storage.clone(),
        |drift| async move {
            use coffer_storage::conformance::Drift;
            let (sql, id, to) = match drift {
                Drift::Store { store, to } => (
                    "UPDATE stores SET secret_count = $2 WHERE id = $1",
                    store.as_bytes().to_vec(),
                    to,
                ),
                Drift::Account { account, to } => (
                    "UPDATE accounts SET secret_count = $2 WHERE id = $1",
                    account.as_bytes().to_vec(),
                    to,
                ),
            };
            assert_eq!(client.execute(sql, &[&id, &to]).await.unwrap(), 1);
        },
    )
    .await;
    storage.shutdown().await;
    drop(storage);
    driver.abort();
}
