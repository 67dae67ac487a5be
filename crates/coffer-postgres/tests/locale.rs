//! Listings and search do not follow the database's locale: on a database whose default
//! collation is ICU `en-US` (where "a" sorts before "B" and "É" matches "é" case-insensitively,
//! unlike byte order and ASCII folding), the conformance checks of ordering and search still
//! pass, and search folds ASCII letters only. The test cluster itself is initialised with
//! `--locale=C`, where byte order and the default collation agree and prove nothing.

use std::sync::Arc;

use coffer_postgres::testing::{cluster_url, with_database};
use coffer_postgres::{PgOptions, PgStorage};
use coffer_storage::{
    AccountRecord, DekRecord, Direction, NewSecret, SecretOrder, SecretQuery, SecretRecord,
    Storage, StoreRecord, VersionRecord, WrappedKeyRecord,
};
use coffer_types::{
    AccountId, DekId, Scopes, SecretId, SecretName, StoreId, StoreName, Timestamp, Version,
};

/// The checks whose outcome depends on how names and comments compare.
const LOCALE_SENSITIVE: &[&str] = &[
    "listing",
    "services::list_services_pages_orders_and_filters",
    "stores::store_names_are_unique_per_account",
    "secrets::secret_names_are_unique_per_store",
    "nodes::node_names_are_unique_among_active_nodes",
];

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connecting to the test cluster");
    tokio::spawn(connection);
    client
}

/// Creates database `name` with ICU `en-US` as its default collation, checks that the default
/// collation really differs from byte order and ASCII folding there, and returns its URL.
async fn icu_database(admin: &tokio_postgres::Client, cluster: &str, name: &str) -> String {
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'
             LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        ))
        .await
        .unwrap_or_else(|e| panic!("creating {name} with an ICU collation: {e}"));
    let url = with_database(cluster, name);
    let db = connect(&url).await;
    let row = db
        .query_one("SELECT 'a' < 'B', 'É' ILIKE 'é'", &[])
        .await
        .expect("comparing under the default collation");
    let (sorts_a_first, folds_e): (bool, bool) = (row.get(0), row.get(1));
    assert!(sorts_a_first, "en-US sorts 'a' before 'B'");
    assert!(folds_e, "en-US folds 'É' to 'é'");
    url
}

async fn drop_databases(admin: &tokio_postgres::Client, names: Vec<String>) {
    for name in names {
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap_or_else(|e| panic!("dropping {name}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordering_and_search_ignore_an_icu_default_collation() {
    let Some(cluster) = cluster_url("ordering_and_search_ignore_an_icu_default_collation") else {
        return;
    };
    let admin = connect(&cluster).await;
    // Each check gets a database of its own, like the conformance test's.
    let mut made = Vec::new();
    let mut failed = Vec::new();
    for (n, check) in coffer_storage::conformance::checks()
        .iter()
        .filter(|c| {
            LOCALE_SENSITIVE
                .iter()
                .any(|e| *e == c.module || *e == format!("{}::{}", c.module, c.name))
        })
        .enumerate()
    {
        let name = format!("coffer_icu_{}_{n}", std::process::id());
        let url = icu_database(&admin, &cluster, &name).await;
        made.push(name.clone());
        let storage = PgStorage::connect(&url, PgOptions::default())
            .await
            .unwrap_or_else(|e| panic!("connecting to {name}: {e}"));
        let check = *check;
        if tokio::spawn(async move { check.run(Arc::new(storage)).await })
            .await
            .is_err()
        {
            failed.push(format!("{}::{}", check.module, check.name));
        }
    }
    // Dropped whether or not a check failed.
    drop_databases(&admin, made).await;
    assert!(
        failed.is_empty(),
        "under an ICU default collation these checks fail: {failed:?}"
    );
}

/// The secrets of `store` whose name or comment contains `needle`, by name.
async fn search(s: &dyn Storage, account: AccountId, store: StoreId, needle: &str) -> Vec<String> {
    s.list_secrets(
        account,
        store,
        &SecretQuery {
            page: 1,
            per_page: 100,
            order: SecretOrder::Name,
            direction: Direction::Asc,
            search: Some(needle.to_owned()),
            scopes: Scopes::default(),
        },
    )
    .await
    .unwrap()
    .items
    .into_iter()
    .map(|r| r.name.as_str().to_owned())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_folds_ascii_letters_only_under_an_icu_default_collation() {
    let Some(cluster) = cluster_url("search_folds_ascii_letters_only") else {
        return;
    };
    let admin = connect(&cluster).await;
    let name = format!("coffer_icu_search_{}", std::process::id());
    let url = icu_database(&admin, &cluster, &name).await;
    let outcome = tokio::spawn(async move {
        let s = PgStorage::connect(&url, PgOptions::default())
            .await
            .unwrap();
        let now = Timestamp::now();
        let account = AccountId::from_bytes([1; 16]);
        s.create_account(
            AccountRecord {
                id: account,
                name: "acme".into(),
                created: now,
                secrets_quota: None,
            },
            &[],
        )
        .await
        .unwrap();
        let dek = DekId::from_bytes([2; 16]);
        s.put_dek(DekRecord {
            account_id: account,
            key: WrappedKeyRecord {
                id: dek,
                kek_id: "kek-1".into(),
                wrapped: vec![1; 40],
                created: now,
            },
            rk: None,
        })
        .await
        .unwrap();
        let store = StoreId::from_bytes([3; 16]);
        s.create_store(
            StoreRecord {
                id: store,
                account_id: account,
                name: StoreName::parse("prod").unwrap(),
                created: now,
                modified: now,
            },
            10,
            &[],
        )
        .await
        .unwrap();
        let secrets = [("CAFE", "Émile's café"), ("PLAIN", "emile")]
            .into_iter()
            .enumerate()
            .map(|(i, (name, comment))| {
                let id = SecretId::from_bytes([10 + i as u8; 16]);
                NewSecret {
                    record: SecretRecord {
                        id,
                        store_id: store,
                        account_id: account,
                        name: SecretName::parse(name).unwrap(),
                        comment: comment.into(),
                        scopes: Scopes::default(),
                        created: now,
                        modified: now,
                        version: Version(1),
                    },
                    value: VersionRecord {
                        secret_id: id,
                        version: Version(1),
                        dek_id: dek,
                        sealed: vec![7; 24],
                        created: now,
                    },
                    dek: None,
                }
            })
            .collect();
        s.create_secrets(account, store, secrets, 10, &[])
            .await
            .unwrap();

        // ASCII letters fold; "É" and "é" match only themselves.
        assert_eq!(search(&s, account, store, "ÉMILE").await, ["CAFE"]);
        assert_eq!(
            search(&s, account, store, "éMILE").await,
            Vec::<String>::new()
        );
        assert_eq!(
            search(&s, account, store, "CAFÉ").await,
            Vec::<String>::new()
        );
        assert_eq!(search(&s, account, store, "CAFé").await, ["CAFE"]);
        assert_eq!(search(&s, account, store, "EMILE").await, ["PLAIN"]);
    })
    .await;
    drop_databases(&admin, vec![name]).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
