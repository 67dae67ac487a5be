//! `PgStorage` against the storage conformance suite, each check on a database of its own
//! (see `coffer_postgres::testing`). Needs `COFFER_TEST_DATABASE_URL`; skips without it, except
//! under `CI=true`.

use coffer_postgres::testing::{Databases, cluster_url};

/// The conformance areas this backend passes so far: a module of the suite (all its checks)
/// or `module::check`. The one list of what runs; it grows until it is every module, and then
/// the test calls `run_all`.
const BUILT: &[&str] = &[
    "accounts::accounts",
    "accounts::account_quota_override",
    "accounts::shutdown_finishes_writes_then_refuses_more",
    "accounts::tokens",
    "tokens",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_built_part_of_the_conformance_suite() {
    let Some(cluster) = cluster_url("passes_the_built_part_of_the_conformance_suite") else {
        return;
    };
    let databases = Databases::default();
    let ran = coffer_storage::conformance::run_selected(BUILT, || databases.fresh(&cluster)).await;
    assert!(ran > 0);
}
