//! `PgStorage` against the storage conformance suite, each check on a database of its own
//! (see `coffer_postgres::testing`). Needs `COFFER_TEST_DATABASE_URL`; skips without it, except
//! under `CI=true`.

use coffer_postgres::testing::{Databases, cluster_url};

/// The conformance areas this backend passes so far: a module of the suite (all its checks)
/// or `module::check`. The one list of what runs; it grows until it is every module, and then
/// the test calls `run_all`.
const BUILT: &[&str] = &[
    "accounts::instance_keys",
    "accounts::accounts",
    "accounts::deks",
    "accounts::account_quota_override",
    "accounts::shutdown_finishes_writes_then_refuses_more",
    "accounts::tokens",
    "tokens",
    "account_deletion::delete_account_of_an_empty_account",
    "audit::append_audit_keeps_one_chain_per_account",
    "audit::audit_checkpoints_round_trip",
    "audit_listing",
    "replication::record_access_batch_is_idempotent",
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
