//! Listings and search do not follow the database's locale: on a database whose default
//! collation is ICU `en-US` (where "a" sorts before "B", unlike byte order), the conformance
//! checks of ordering and search still pass. The test cluster itself is initialised with
//! `--locale=C`, where byte order and the default collation agree and prove nothing.

use coffer_postgres::testing::{cluster_url, with_database};
use coffer_postgres::{PgOptions, PgStorage};

/// The checks whose outcome depends on how names and comments compare.
const LOCALE_SENSITIVE: &[&str] = &[
    "listing",
    "services::list_services_pages_orders_and_filters",
    "stores::store_names_are_unique_per_account",
    "secrets::secret_names_are_unique_per_store",
    "nodes::node_names_are_unique_among_active_nodes",
];

async fn admin(cluster: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(cluster, tokio_postgres::NoTls)
        .await
        .expect("connecting to the test cluster");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordering_and_search_ignore_an_icu_default_collation() {
    let Some(cluster) = cluster_url("ordering_and_search_ignore_an_icu_default_collation") else {
        return;
    };
    let client = admin(&cluster).await;
    // Each check gets a database of its own, like the conformance test's.
    let mut made = Vec::new();
    let mut failed = Vec::new();
    for (n, check) in coffer_storage::conformance::checks()
        .iter()
        .filter(|c| {
            LOCALE_SENSITIVE
                .iter()
                .any(|e| *e == c.module || *e == c.path())
        })
        .enumerate()
    {
        let name = format!("coffer_icu_{}_{n}", std::process::id());
        client
            .batch_execute(&format!(
                "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'
                 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
            ))
            .await
            .unwrap_or_else(|e| panic!("creating {name} with an ICU collation: {e}"));
        made.push(name.clone());
        // The premise: this database's default collation does not order byte-wise.
        let (db, connection) =
            tokio_postgres::connect(&with_database(&cluster, &name), tokio_postgres::NoTls)
                .await
                .expect("connecting to the ICU database");
        tokio::spawn(connection);
        let before: bool = db
            .query_one("SELECT 'a' < 'B'", &[])
            .await
            .expect("comparing under the default collation")
            .get(0);
        assert!(before, "en-US sorts 'a' before 'B'");
        drop(db);

        let storage = PgStorage::connect(&with_database(&cluster, &name), PgOptions::default())
            .await
            .unwrap_or_else(|e| panic!("connecting to {name}: {e}"));
        let check = *check;
        if tokio::spawn(async move { check.run(std::sync::Arc::new(storage)).await })
            .await
            .is_err()
        {
            failed.push(check.path());
        }
    }
    // Dropped whether or not a check failed.
    for name in made {
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap_or_else(|e| panic!("dropping {name}: {e}"));
    }
    assert!(
        failed.is_empty(),
        "under an ICU default collation these checks fail: {failed:?}"
    );
}
