//! `PgStorage` against the storage conformance suite, each check on a database of its own
//! (see `coffer_postgres::testing`). Needs `COFFER_TEST_DATABASE_URL`; skips without it, except
//! under `CI=true`.

use coffer_postgres::testing::{Databases, cluster_url};

/// The conformance areas this backend passes so far: a module of the suite (all its checks)
/// or `module::check`. The one list of what runs; it grows until it holds every module (then
/// `run_module` can become `run_all`).
const BUILT: &[&str] = &[
    "accounts",
    "tokens",
    "account_deletion",
    "stores",
    "secrets",
    "carried_deks",
    "listing",
    "change_log",
    "concurrency",
    "audit",
    "audit_listing",
    "nodes",
    "replication",
    "rewrap",
    "lifecycle",
    "services",
    "rewrap",
    "node_keys",
    "account_keys",
];

/// Runs the built checks of one module of the suite, each on a database of its own.
async fn run_module(module: &str) {
    let selected: Vec<&str> = BUILT
        .iter()
        .copied()
        .filter(|e| *e == module || e.split_once("::").is_some_and(|(m, _)| m == module))
        .collect();
    if selected.is_empty() {
        eprintln!("conformance module {module}: not built yet on PostgreSQL");
        return;
    }
    let Some(cluster) = cluster_url(module) else {
        return;
    };
    let databases = Databases::default();
    let ran =
        coffer_storage::conformance::run_selected(&selected, || databases.fresh(&cluster)).await;
    assert!(ran > 0, "{module}: nothing ran");
    eprintln!("conformance module {module}: {ran} checks passed on PostgreSQL");
}

/// One test per module of the suite, so modules run in parallel.
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
    listing,
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

#[test]
fn every_built_entry_names_a_check() {
    for entry in BUILT {
        assert!(
            coffer_storage::conformance::checks()
                .iter()
                .any(|c| c.module == *entry || c.path() == *entry),
            "`{entry}` names no conformance module or check"
        );
    }
}
