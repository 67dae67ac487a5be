//! The storage conformance suite: the behaviour every [`Storage`] backend must show, written
//! against the trait alone.
//!
//! A backend's tests call [`run_all`] with a function that makes a fresh, empty backend; every
//! check gets its own. A failing check panics with a message that names it. To debug one check,
//! pick it from [`checks`] and [`Check::run`] it, or run some with [`run_matching`].
//!
//! What the suite pins down beyond the trait's signatures (a second backend must match):
//! - listings order by the chosen field compared byte-wise (names, comments), then by id
//!   compared byte-wise, both in the requested direction, so `Desc` is exactly `Asc` reversed;
//!   `SecretOrder::Status` orders by id alone (every stored secret is active); an unfiltered
//!   secrets list's `total_count` (a store's maintained count) equals its rows after every
//!   write, a filtered one's (search, scopes, or both) is its matches in the store, and pages
//!   read from the end of the order hold what a walk from the start would;
//! - `check_integrity` finds nothing after any write the application makes, and counts every
//!   store and account; a count set wrong behind the storage's back is found, naming the store
//!   or account, its count and its rows ([`drifted_counts_are_found`], run by each backend's
//!   tests with its own raw SQL); `recount_secrets` sets such counts to their rows, reporting
//!   each, appends nothing, and changes nothing where counts hold
//!   ([`recount_corrects_drifted_counts`], the same way);
//! - `create_first_token` makes one token at most of concurrent calls (the others `Conflict`,
//!   their audit entries not written), and a revoked token still counts;
//! - search folds ASCII case (at least) and matches `%`, `_` and `\` literally;
//! - a value version must be sealed under a DEK of the secret's account (`NotFound(Dek)`);
//! - ids that already exist are `AlreadyExists`; inconsistent arguments are `Invalid`;
//! - `delete_secrets` naming one id twice deletes it once;
//! - accounts and tokens list by `created`, then id compared byte-wise;
//! - `delete_account` logs its secrets (by store id, then secret id), then its stores (by id),
//!   then its services (by id), then the account, and nothing of the account follows that
//!   last entry;
//! - services list by name compared byte-wise; a service's bindings come back in the order
//!   given (secrets and stores each); service tokens list by `created`, then id byte-wise, and
//!   are revoked (and logged) in id order; a token naming a service that is not its account's
//!   is `NotFound(Service)`;
//! - deleting a store or a secret leaves the bindings that name it; `current_value` finds
//!   nothing through them until a secret of that name exists again;
//! - another account's token is `NotFound(Token)` to `revoke_token`, revoked or not;
//! - `replace_tokens` creates one token and revokes others in one transaction, all or nothing;
//! - nodes list by `created`, then id byte-wise, revoked ones included; a node's name is
//!   unique among the nodes not revoked (names compare exactly, byte-wise), and a new node
//!   must not be revoked (`Invalid`); no account's deletion touches them;
//! - a DEK carried by a write is stored (and logged, before the values under it) exactly once,
//!   by the first write carrying it that succeeds, and never by one that fails;
//! - a carried DEK that is stored and retired (a store deleted with values) is refused with
//!   `Conflict`; while a DEK gate hold (`close_dek_gate`) is alive, a write carrying a new DEK
//!   commits or is refused with `Conflict` at once, one carrying stored DEKs is never refused,
//!   and once the hold is dropped `wait_dek_gate` returns and new DEKs are stored;
//! - after `shutdown`, writes fail with `Unavailable`;
//! - the change log holds exactly the entries listed on [`crate::Change`]'s producers, in
//!   commit order, with seq 1, 2, 3, ... and the documented hash chain;
//! - audit entries carried by a mutation are appended, in the order given, only when it
//!   succeeds; an entry with an empty action or outcome is `Invalid` and fails the mutation
//!   (fail closed); each entry joins its own account's chain (seq 1, 2, 3, ... per account,
//!   [`crate::AuditRecord::compute_hash`] chained from 32 zero bytes), whether or not that
//!   account exists; `delete_account` keeps the account's audit records and checkpoints;
//! - `audit_accounts` lists accounts with records or checkpoints, by id byte-wise;
//!   `put_audit_checkpoint` refuses seq 0 (`Invalid`) and a second checkpoint at one seq
//!   (`AlreadyExists(AuditCheckpoint)`);
//! - the cluster id is made once and never changes; `compact_log` without one is `Invalid`
//!   (except for `through` 0); after compaction `changes_after` below the base is
//!   `Compacted`, at the base it chains onto the base hash, and appends chain on from the head
//!   even when no entry is held; `subscribe_head` announces every commit that appended, with
//!   the entries already readable, and nothing else;
//! - `values_sealed_before` lists the values (past versions too) under DEKs made before the
//!   cutoff or retired, never those under `current`; a re-seal is compare-and-set, carries its
//!   DEK like a write (`DekPut` first) and logs `ValueResealed` for current versions only;
//!   `prune_versions` keeps at least one version; `destroy_unreferenced_deks` spares `keep`;
//! - a snapshot is its header (the log head at its read) and one put per live replicated row,
//!   in the order instance keys, accounts, DEKs, stores, secrets (current version), services,
//!   unrevoked service tokens, unrevoked nodes; only the "service-token-mac" and
//!   "node-token-mac" instance keys; each item serialized like a log payload;
//! - `record_access_batch` records a batch id once, across nodes, with its audit entries;
//! - a DEK with an RK wrap is logged (and snapshotted) with it as `kek_id` `rk:<version>`,
//!   never with its KEK wrap, and only under the current replication key (`Conflict`);
//!   a node registers one public key (the same again is `Ok(false)`, another is
//!   `AlreadyExists(NodeKey)`) with a grant of the current version; a rotating revocation
//!   rewraps every DEK or writes nothing; snapshots carry the grants of nodes in service.
//!
//! The checks need a tokio runtime that can spawn tasks (a multi-threaded one exercises more
//! interleavings in the concurrency checks). This module is test code, compiled into the
//! library only for tests or with the `conformance` feature: it asserts and unwraps by design.

mod account_deletion;
mod account_keys;
mod accounts;
mod audit;
mod audit_listing;
mod carried_deks;
mod change_log;
mod concurrency;
mod dek_gate;
mod fixtures;
mod integrity;
mod lifecycle;
mod list_counts;
mod listing;
mod node_keys;
mod nodes;
mod replication;
mod rewrap;
mod secrets;
mod services;
mod stores;
mod tokens;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::Storage;

pub use integrity::{Drift, drifted_counts_are_found, recount_corrects_drifted_counts};

/// A check's future.
pub type CheckFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// One named check of the suite.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// The suite's module the check is in (`accounts`, `change_log`, ...): the area of the
    /// trait it covers.
    pub module: &'static str,
    pub name: &'static str,
    body: fn(Arc<dyn Storage>) -> CheckFuture,
}

impl Check {
    /// Runs the check against `storage` (which should be fresh and empty). Panics on failure
    /// with a message naming the check.
    pub async fn run(&self, storage: Arc<dyn Storage>) {
        // Spawned so that a panic deep inside the check can be caught and re-raised with the
        // check's name in front.
        let outcome = tokio::spawn((self.body)(storage)).await;
        if let Err(e) = outcome {
            let detail = if e.is_panic() {
                let payload = e.into_panic();
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned())
            } else {
                e.to_string()
            };
            panic!("storage conformance check `{}` failed: {detail}", self.name);
        }
    }
}

macro_rules! checks {
    ($($module:ident::$check:ident),* $(,)?) => {
        &[$(Check {
            module: stringify!($module),
            name: stringify!($check),
            body: |storage| Box::pin($module::$check(storage)),
        }),*]
    };
}

const CHECKS: &[Check] = checks![
    accounts::instance_keys,
    accounts::accounts,
    accounts::tokens,
    accounts::deks,
    accounts::account_quota_override,
    tokens::list_tokens_orders_by_created_then_id,
    tokens::revoke_token_once_and_only_in_its_account,
    tokens::touch_tokens_only_moves_last_used_forward,
    tokens::replace_tokens_is_all_or_nothing,
    tokens::create_first_token_makes_one_token_at_most,
    account_deletion::delete_account_removes_exactly_its_rows,
    account_deletion::delete_account_of_an_empty_account,
    account_deletion::delete_account_of_a_missing_account_writes_nothing,
    stores::store_lifecycle,
    stores::store_names_are_unique_per_account,
    stores::store_limit,
    stores::delete_store_not_empty_and_force,
    stores::account_isolation,
    secrets::secret_lifecycle,
    secrets::secret_names_are_unique_per_store,
    secrets::quota_is_enforced_exactly,
    secrets::values_need_a_dek_of_the_account,
    secrets::update_is_compare_and_swap,
    secrets::versions_are_immutable,
    secrets::delete_secrets_is_all_or_nothing,
    carried_deks::a_carried_dek_is_stored_once_before_its_values,
    carried_deks::a_failed_write_stores_no_carried_dek,
    listing::store_pagination_and_ordering,
    listing::secret_pagination_and_ordering,
    listing::search_is_literal_and_case_insensitive,
    listing::a_search_with_a_nul_is_not_an_outage,
    listing::scopes_filter_requires_all,
    list_counts::store_secret_counts_follow_every_write,
    list_counts::pages_from_either_end_tile_the_list,
    list_counts::a_filtered_lists_total_is_its_match_count,
    integrity::counts_hold_through_every_write,
    integrity::recount_of_right_counts_changes_nothing,
    change_log::log_records_each_mutation,
    change_log::changes_after_pages_through_the_log,
    change_log::failed_operations_append_nothing,
    concurrency::racing_instance_key_initialisers_agree,
    concurrency::concurrent_creates_respect_the_quota,
    concurrency::concurrent_creates_of_one_name_admit_one,
    concurrency::concurrent_writers_keep_the_log_gap_free,
    carried_deks::racing_writes_carrying_one_dek_store_it_once,
    carried_deks::a_destroyed_dek_is_never_stored_again,
    carried_deks::a_retired_dek_never_seals_again,
    dek_gate::a_dek_gate_hold_never_refuses_stored_deks_and_never_makes_a_write_wait,
    account_deletion::delete_account_racing_creates_leaves_nothing,
    audit::every_mutation_appends_its_entries,
    audit::failed_operations_append_no_audit,
    audit::append_audit_keeps_one_chain_per_account,
    audit::concurrent_audit_appenders_stay_gap_free,
    audit::audit_survives_delete_account,
    audit::audit_checkpoints_round_trip,
    audit_listing::list_audit_filters_pages_and_orders,
    secrets::secret_writes_advance_committed_head,
    services::service_lifecycle,
    services::service_names_are_unique_per_account,
    services::list_services_pages_orders_and_filters,
    services::update_service_replaces_bindings,
    services::delete_service_removes_bindings_and_tokens,
    services::service_tokens_issue_and_list,
    services::service_tokens_revoke_one_or_all,
    services::service_changes_are_logged,
    services::service_writes_append_audit_only_on_success,
    services::runtime_reads_resolve_by_name,
    services::delete_account_removes_services,
    services::concurrent_creates_of_one_service_name_admit_one,
    replication::log_state_and_cluster_id,
    replication::subscribe_head_announces_log_commits_only,
    replication::compact_log_moves_the_base,
    replication::snapshot_holds_exactly_the_live_replicated_rows,
    replication::snapshot_fails_when_its_receiver_goes,
    replication::record_access_batch_is_idempotent,
    replication::a_follower_sees_every_entry_once_in_order,
    nodes::node_lifecycle,
    nodes::node_names_are_unique_among_active_nodes,
    nodes::node_changes_are_logged,
    nodes::node_writes_append_audit_only_on_success,
    nodes::concurrent_creates_of_one_node_name_admit_one,
    rewrap::rewrap_counts_finds_and_compare_and_sets,
    rewrap::account_deks_are_counted_and_found_per_account,
    rewrap::a_retired_kek_wraps_nothing_stored_after_it,
    lifecycle::reseal_prune_and_destroy_follow_the_rules,
    node_keys::node_keys_register_once_with_a_grant_of_the_current_key,
    node_keys::revocation_rotates_every_replicated_wrap_in_one_write,
    account_keys::an_account_replication_key_retires_old_deks_and_binds_new_ones,
    account_keys::node_account_keys_register_once_and_are_granted_the_current_ark,
    account_keys::revocation_rotates_account_replication_keys,
    account_keys::account_delete_removes_its_replication_keys_and_grants,
    accounts::shutdown_finishes_writes_then_refuses_more,
];

/// Every check, in the order [`run_all`] runs them.
pub fn checks() -> &'static [Check] {
    CHECKS
}

/// Runs every check, each on a fresh backend from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn Storage>>,
{
    run_matching(|_| true, make).await;
}

/// Runs the checks for which `filter` is true, in the suite's order, each on a fresh backend
/// from `make`. Returns how many ran.
pub async fn run_matching<P, F, Fut>(filter: P, mut make: F) -> usize
where
    P: Fn(&Check) -> bool,
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn Storage>>,
{
    let mut ran = 0;
    for check in checks().iter().filter(|c| filter(c)) {
        let storage = make().await;
        check.run(storage).await;
        ran += 1;
    }
    ran
}
