//! Coffer's storage: the [`Storage`] trait, the embedded SQLite backend, and the change log that
//! feeds edge replicas.
//!
//! Invariants:
//! - storage sees sealed bytes only. It never depends on `coffer-crypto` and never holds a key or
//!   a plaintext value, so nothing read from or logged by storage can leak one;
//! - every committed mutation appends, in the same transaction, one entry per change to the
//!   change log. Sequence numbers are gap-free and in commit order, and each entry carries a
//!   SHA-256 hash chained to the previous entry. The log is append-only above its base:
//!   compaction (control plane) and snapshot installs (edges) only drop entries at or below
//!   it, and the head chains on from the base when no entry is held;
//! - every mutation is all-or-nothing: a failed operation (including one item of a bulk create)
//!   leaves no trace, neither in the tables nor in the change log;
//! - quota and limit checks happen inside the writing transaction, so concurrent creates cannot
//!   overshoot;
//! - a value version is only stored if it is sealed under a DEK of its secret's own account, and
//!   is never changed once written;
//! - every mutating method takes the audit entries that record it and appends them in the same
//!   transaction, after the change succeeded: an operation whose entries cannot be appended
//!   fails and writes nothing (fail closed), and a failed operation appends none. Audit chains
//!   are per account (seq 1, 2, 3, ... with a SHA-256 hash chain) and outlive the account.
//!
//! The SQLite layout and the change-log format are described in docs/storage-format.md.

mod audit;
mod change;
mod checkpoint;
mod compaction;
mod dek_gate;
mod error;
mod integrity;
mod lifecycle;
mod observe;
mod records;
mod replication;
mod rewrap;
mod sqlite;
pub mod validate;
mod verify;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use audit::{AuditCheckpoint, AuditEntry, AuditQuery, AuditRecord};
pub use change::{Change, ChangeRecord, ChangeSecretBinding, ChangeStoreBinding};
pub use checkpoint::{
    CHECKPOINT_DOMAIN, FeedSignature, FeedSigner, SIGN_EVERY_ENTRIES, SIGNATURE_LEN,
    checkpoint_message,
};
pub use compaction::CompactionMatcher;
pub use dek_gate::{DekGateHold, HeldGate};
pub use error::{Entity, StorageError};
pub use integrity::{
    ForeignKeys, IntegrityError, IntegrityProblem, IntegrityReport, Recount, Recounted,
    verify_integrity,
};
pub use lifecycle::{DEFAULT_COMPACTION_GAP, DestroyedDek, Reseal, SealedValue};
pub use observe::{WriteObserver, WriteStats};
pub use records::*;
pub use replication::{
    ARK_KEK_ID_PREFIX, LogState, REPLICATED_KEY_PURPOSES, REPLICATION_KEY_PURPOSE_PREFIX,
    SnapshotPart, ark_kek_id, rk_kek_id,
};
pub use rewrap::{KekUsage, KeyOwner, Rewrap, StoredKey};
#[cfg(feature = "test-support")]
pub use sqlite::WriterHold;
pub use sqlite::{
    EXPORT_TABLES, RawRows, RawValue, SnapshotInstall, SqliteOptions, SqliteStorage, export_rows,
};
pub use verify::{
    AuditHead, ChainError, ChainReport, ChainSource, verify_chains, verify_chains_in,
};

use async_trait::async_trait;
use coffer_types::{
    AccountId, DekId, SecretId, SecretName, ServiceId, ServiceName, StoreId, Timestamp, TokenId,
    Version,
};

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The outcome of a write that is already queued (see [`Storage::queue_update_secret`]).
pub type Pending<T> = std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// Everything Coffer persists. Implemented by [`SqliteStorage`] and (later) PostgreSQL; both must
/// pass [`conformance`].
///
/// Methods that take an `AccountId` only ever see or touch rows of that account: a store id of
/// another account is `NotFound`, exactly like a missing one.
///
/// **DEKs carried by writes.** A value may be sealed under a DEK that core has just made and not
/// stored yet: storing it separately would leave a DEK row (and a `DekPut` entry) behind when the
/// write it serves then fails. So [`NewSecret::dek`] and [`SecretUpdate::dek`] carry the DEK's
/// wrapped record next to the value, and the write inserts it, in its own transaction, if no DEK
/// with that id is stored yet, appending `DekPut` (before the entries that use it) only when it
/// did insert. Several items of one write, or several writes, may carry the same DEK: it is
/// inserted once. A carried DEK must be the one its value names and belong to the call's account
/// (`Invalid` otherwise); a DEK already stored under that id is kept as it is. A carried (or
/// put) DEK is refused with `Conflict`, stored already or not, when its replication wrap is not
/// of the current RK (or of its account's current ARK version), when its account owes an ARK
/// rotation (`ArkStorage::accounts_owing_ark_rotation`: the revoked node may hold that
/// version), when its KEK version is retired, when it was destroyed, or when it is stored and
/// retired (`deks.retired`: a store deleted with values, a revocation's rewrap; a retired DEK
/// never seals again, on any instance sharing the database): the write seals again under a
/// new DEK. A DEK not stored yet is also refused (`Conflict`, at once) while a node's
/// revocation holds the DEK gate in storage ([`Storage::close_dek_gate`]).
///
/// **Audit entries carried by writes.** Every mutating method takes `audit: &[AuditEntry]`: the
/// entries core records for the operation. They are appended, in the order given, in the same
/// transaction as the change and only once it succeeded; if appending fails (an entry with an
/// empty `action` or `outcome` is `Invalid`, or the database refuses) the whole operation fails
/// and nothing is written. A failed operation appends no entry. Each entry joins the chain of
/// its own `account_id` (not necessarily the call's account). Appending takes the account's
/// chain head inside the writing transaction, so chains stay gap-free with several writers,
/// several processes, and operations rolled back within a batch.
///
/// **Services and bindings.** A service's bindings name a store by id and a secret by name;
/// they are resolved when a service reads, not when they are written. So a binding may name a
/// store or secret that does not exist (yet or any more): deleting a store or a secret leaves
/// the bindings that name it in place, and a runtime read through such a binding finds nothing
/// ([`Storage::current_value`] is `None`). Core checks bindings against stores and secrets at
/// deploy.
#[async_trait]
pub trait Storage: ArkStorage + Send + Sync + std::fmt::Debug + 'static {
    // ---- lifecycle ----

    /// Stops accepting writes (later ones fail with `Unavailable`), finishes the writes already
    /// submitted, and releases the backend's resources (for SQLite: joins the writer thread,
    /// which closes the read-write connection). Returns once that is done; calling it again,
    /// or concurrently, waits for the same and is otherwise a no-op. Reads may still work
    /// afterwards but nothing promises it.
    async fn shutdown(&self);

    // ---- instance ----

    /// A wrapped instance-level key by purpose (e.g. "token-mac"), if one was stored.
    async fn get_instance_key(&self, purpose: &str) -> Result<Option<WrappedKeyRecord>>;
    /// Stores an instance key unless one with that purpose exists; returns the one that is
    /// stored afterwards (so two racing initialisers agree on one key).
    async fn put_instance_key_if_absent(
        &self,
        purpose: &str,
        key: WrappedKeyRecord,
    ) -> Result<WrappedKeyRecord>;

    // ---- replication keys (edges hold no KEK) ----

    /// The current replication key (the highest version stored under
    /// [`REPLICATION_KEY_PURPOSE_PREFIX`]), wrapped by the KEK, with its version.
    async fn latest_replication_key(&self) -> Result<Option<(u32, WrappedKeyRecord)>>;
    /// The RK wrap stored beside the instance key of `purpose`, if any.
    async fn instance_key_rk(&self, purpose: &str) -> Result<Option<RkWrap>>;
    /// Every DEK, with its RK wrap where it has one, in id order.
    async fn list_deks(&self) -> Result<Vec<DekRecord>>;
    /// Stores RK wraps of `version` beside DEKs and instance keys stored without one (a data
    /// dir made before replication keys existed). Appends nothing: edges made by an older
    /// version resync from a snapshot, which carries these. `Conflict` if `version` is not the
    /// current replication key's.
    async fn backfill_rk_wraps(
        &self,
        version: u32,
        deks: Vec<(DekId, Vec<u8>)>,
        instance_keys: Vec<(String, Vec<u8>)>,
    ) -> Result<()>;
    /// Records `public_key` as the node's and stores `grant` (appending `NodeKeyGrant`).
    /// `Ok(true)` when it did; `Ok(false)` when the node had registered this very key before
    /// (nothing written). `NotFound(Node)` for an unknown node, `AlreadyRevoked` for a revoked
    /// one, `AlreadyExists(NodeKey)` if it registered another key, `Conflict` if the
    /// grant is not of the current replication key (retry with the new one).
    async fn register_node_key(
        &self,
        node: TokenId,
        public_key: [u8; 32],
        grant: NodeGrant,
        audit: &[AuditEntry],
    ) -> Result<bool>;
    /// The public keys of the nodes not revoked that registered one.
    async fn node_public_keys(&self) -> Result<Vec<(TokenId, [u8; 32])>>;
    /// The grant of RK `version` to `node`, if stored.
    async fn node_grant(&self, node: TokenId, version: u32) -> Result<Option<NodeGrant>>;
    /// Every grant of RK `version` stored, in node id order.
    async fn grants_of_version(&self, version: u32) -> Result<Vec<NodeGrant>>;
    /// [`Storage::revoke_node`], and in the same transaction: stores `rotation.key` as
    /// replication key `rotation.version` (which must be the current version + 1, else
    /// `Conflict`), its grants (`NodeKeyGrant` each), and the rewrap of every replicated
    /// instance key (`InstanceKeyPut` each) and of every DEK (`DekPut` each, after the
    /// grants). `Conflict` if a DEK is stored that the rotation does not rewrap (one was made
    /// meanwhile: retry); a DEK it rewraps that was destroyed meanwhile is skipped. Each of
    /// `rotation.accounts` likewise: the ARK's next version, its
    /// grants and the rewrap of every DEK of the account under it (retired); an account with
    /// an ARK left out keeps its version (its KEK is unavailable: see core).
    async fn revoke_node_rotating(
        &self,
        id: TokenId,
        at: Timestamp,
        rotation: RkRotation,
        audit: &[AuditEntry],
    ) -> Result<NodeRecord>;
    /// Closes the DEK gate in storage for a node's revocation, which holds it from before its
    /// DEK listing until its [`Storage::revoke_node_rotating`] has answered (across attempts),
    /// then drops the hold. The contract, for every backend:
    /// - while a hold is alive, a write that would insert a DEK (carried or put) either
    ///   commits or is refused with `Conflict`, at once: it never waits for the hold inside
    ///   the write (a writer waiting there would hold up the revocation's own commit). The
    ///   writer's process then calls [`Storage::wait_dek_gate`] and seals again;
    /// - a write carrying only DEKs already stored is never refused because of a hold;
    /// - once the hold is dropped, DEK inserts are accepted again, and a hold whose process
    ///   died, or that sat idle (no [`DekGateHold::check`]) past the backend's hold idle time,
    ///   is released by the backend; the revocation calls `check` right before each commit
    ///   and fails (`Unavailable`) if the hold was lost;
    /// - closing waits for writes that inserted a DEK and have not committed yet, so the
    ///   listing that follows sees them; it waits a bounded time, then fails `Unavailable`.
    ///
    /// A backend that one process alone writes to (SQLite) holds nothing: that process's
    /// in-memory gate (core's `keyring/gate.rs`) keeps its writes out, and its inserts are
    /// never refused. Several processes on one database (PostgreSQL) need the exclusion here.
    async fn close_dek_gate(&self) -> Result<DekGateHold>;
    /// Called by a process after a write of its own met `Conflict`, before it seals again:
    /// if the gate in storage refused one of this process's DEK inserts since it last saw
    /// the gate open, waits until no revocation holds it (see [`Storage::close_dek_gate`]);
    /// otherwise (a plain lost race, a backend that one process alone writes to, or a
    /// process that holds the gate itself) returns at once without touching the database.
    /// A wait holds no connection while it sleeps, and concurrent callers share one wait.
    /// After a bounded wait, `Unavailable` (a retryable error: the revocation is still
    /// under way on another instance).
    async fn wait_dek_gate(&self) -> Result<()>;

    // ---- accounts ----

    /// `AlreadyExists(Account)` if the id is in use.
    async fn create_account(&self, account: AccountRecord, audit: &[AuditEntry]) -> Result<()>;
    async fn get_account(&self, id: AccountId) -> Result<Option<AccountRecord>>;
    /// Every account, ordered by `created`, ties broken by id (byte-wise).
    async fn list_accounts(&self) -> Result<Vec<AccountRecord>>;
    /// Sets (or with `None` clears) the account's own secrets quota. `NotFound(Account)` for an
    /// unknown account; `Invalid` for a quota above `i64::MAX`. Appends nothing to the change
    /// log: quotas are enforced by the control plane only.
    async fn set_account_quota(
        &self,
        account: AccountId,
        quota: Option<u64>,
        audit: &[AuditEntry],
    ) -> Result<()>;
    /// Deletes the account and everything it holds, in one transaction: its tokens, its DEKs
    /// (so no wrapped key of the account remains to open its values with: crypto-shredding),
    /// its secrets with their versions, its stores, its services with their bindings and
    /// service tokens, and the account row. `NotFound(Account)` for an unknown account
    /// (nothing written). Other accounts are untouched.
    ///
    /// Appends, in this order: one `SecretDeleted` per secret (stores in id order, each
    /// store's secrets in id order), one `StoreDeleted` per store (in id order), one
    /// `ServiceDeleted` per service (in id order), then `AccountDeleted`. No entry is appended
    /// for the DEKs, API tokens or service tokens: `AccountDeleted` tells an edge to drop every
    /// DEK of the account, and `ServiceDeleted` implies the service's tokens are gone.
    ///
    /// Earlier change-log entries are not touched (the log is append-only), so the
    /// `DekPut` and `SecretPut` entries the account produced keep their wrapped keys and sealed
    /// values; see docs/storage-format.md. The account's audit records and checkpoints are
    /// kept too: the audit log outlives the account. Its replication-key versions (ARK),
    /// their grants and the nodes' keys for it go too, and the log is compacted past every
    /// entry carrying one of its DEKs or grants.
    async fn delete_account(&self, id: AccountId, audit: &[AuditEntry]) -> Result<()>;

    // ---- API tokens ----

    /// `NotFound(Account)` for an unknown account, `AlreadyExists(Token)` for a used id.
    async fn create_token(&self, token: TokenRecord, audit: &[AuditEntry]) -> Result<()>;
    /// [`Storage::create_token`] of the account's first token: `Conflict`, with nothing
    /// written, if the account holds any token already (revoked ones included). Checked in the
    /// write's own transaction, so of concurrent calls (on any instance) one makes a token.
    async fn create_first_token(&self, token: TokenRecord, audit: &[AuditEntry]) -> Result<()>;
    async fn get_token(&self, id: TokenId) -> Result<Option<TokenRecord>>;
    /// The account's tokens, revoked and expired ones included, ordered by `created`, ties
    /// broken by id (byte-wise). Empty for an unknown account.
    async fn list_tokens(&self, account: AccountId) -> Result<Vec<TokenRecord>>;
    /// Sets the token's `revoked` to `at` and returns the updated record. `NotFound(Token)` if
    /// no token `id` belongs to `account` (another account's token is indistinguishable from a
    /// missing one, revoked or not); `AlreadyRevoked` if it was revoked before, in which case
    /// nothing is written and the first revocation time stays. Appends nothing to the log.
    async fn revoke_token(
        &self,
        account: AccountId,
        id: TokenId,
        at: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<TokenRecord>;
    /// Records when tokens were last used: each listed token's `last_used` becomes the later
    /// of its stored value and the given one, so it never moves back (an id listed twice ends
    /// at the latest of its times). Unknown ids are ignored. One transaction for the whole
    /// batch; appends nothing to the log. Meant for a periodic flusher that coalesces uses in
    /// memory: one call per flush, one entry per token.
    async fn touch_tokens(&self, used: Vec<(TokenId, Timestamp)>) -> Result<()>;
    /// Replaces tokens in one transaction: creates `token` and sets `revoked` to `at` on each
    /// of `revoke` (tokens of the same account not yet revoked). All or nothing: if any listed
    /// token is missing, in another account or already revoked, nothing is written
    /// (`NotFound(Token)` / `AlreadyRevoked`); a used id for `token` is `AlreadyExists(Token)`.
    /// Appends nothing to the log.
    async fn replace_tokens(
        &self,
        token: TokenRecord,
        revoke: Vec<TokenId>,
        at: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<()>;

    // ---- data-encryption keys ----

    /// `NotFound(Account)` for an unknown account, `AlreadyExists(Dek)` for a used id. Core
    /// stores new DEKs through the writes that use them instead (see "DEKs carried by writes").
    async fn put_dek(&self, dek: DekRecord) -> Result<()>;
    async fn get_dek(&self, id: DekId) -> Result<Option<DekRecord>>;
    /// The most recently created DEK of the account that no store's deletion retired, if any
    /// (`delete_store` retires every DEK of the account when the store held values).
    async fn latest_dek(&self, account: AccountId) -> Result<Option<DekRecord>>;

    // ---- KEK rotation (rewrap.rs) ----

    /// How many DEKs and instance keys each KEK wraps, for every KEK id that wraps at least
    /// one, ordered by KEK id.
    async fn kek_usage(&self) -> Result<Vec<KekUsage>>;
    /// Up to `limit` stored keys wrapped by `kek_id`: instance keys first, then DEKs (of live
    /// accounts; a deleted account's DEKs are gone with it).
    async fn keys_wrapped_by(&self, kek_id: &str, limit: usize) -> Result<Vec<StoredKey>>;
    /// Rewraps keys in one transaction: each row is updated only if it still holds the KEK id
    /// and wrapped bytes of [`Rewrap::old`] (compare-and-set); returns how many were. Appends
    /// nothing to the change log: rewrapping changes no value and no key, only the KEK that
    /// protects it at rest here.
    async fn rewrap_keys(&self, rewraps: Vec<Rewrap>) -> Result<u64>;
    /// How many DEKs of `account` each KEK wraps (an account given a KEK of its own moves
    /// from the instance KEK to it), ordered by KEK id.
    async fn account_dek_usage(&self, account: AccountId) -> Result<Vec<KekUsage>>;
    /// Up to `limit` DEKs of `account` that `kek_id` does not wrap: what is left to rewrap onto
    /// an account's own KEK.
    async fn account_deks_not_wrapped_by(
        &self,
        account: AccountId,
        kek_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredKey>>;
    /// Marks `kek_id` retired, in the transaction that finds no stored key wrapped by it
    /// (`Conflict` if one is). From then on a DEK or instance key wrapped by it is refused with
    /// `Conflict` (a write that took a DEK before the rotation retries with a fresh one), so no
    /// key whose KEK is destroyed is ever stored. Idempotent.
    async fn retire_kek(&self, kek_id: &str) -> Result<()>;
    /// Whether [`Storage::retire_kek`] marked `kek_id`.
    async fn is_kek_retired(&self, kek_id: &str) -> Result<bool>;

    // ---- DEK lifecycle (lifecycle.rs) ----

    /// Up to `limit` stored value versions of `account` (past versions included) sealed
    /// under a DEK created before `cutoff` or retired by a store's deletion, other than
    /// `current`: the re-seal job's to-do list.
    async fn values_sealed_before(
        &self,
        account: AccountId,
        cutoff: Timestamp,
        current: Option<DekId>,
        limit: usize,
    ) -> Result<Vec<SealedValue>>;
    /// How many stored value versions of `account` are sealed under a DEK created before
    /// `cutoff` or retired.
    async fn count_sealed_before(&self, account: AccountId, cutoff: Timestamp) -> Result<u64>;
    /// Re-seals values in one transaction, after inserting `dek` if it is carried (like
    /// `SecretUpdate::dek`; its `DekPut` comes first). Each row is replaced only if it still
    /// holds [`Reseal::old`]'s DEK and bytes (compare-and-set); a re-sealed current version
    /// appends [`Change::ValueResealed`] (past versions are not replicated). The secret's
    /// version and `modified` stay. Returns how many rows were re-sealed. `Invalid` when a
    /// new DEK is not the value's account's (nothing written).
    async fn reseal_values(&self, dek: Option<DekRecord>, reseals: Vec<Reseal>) -> Result<u64>;
    /// Deletes up to `limit` past versions beyond the newest `keep` of each secret (`keep` at
    /// least 1: the current version always stays); returns how many. Appends nothing: replicas
    /// hold current versions only.
    async fn prune_versions(&self, keep: u32, limit: usize) -> Result<u64>;
    /// Destroys, in one transaction, up to `limit` DEKs that no stored value references and
    /// that are not in `keep` (the keyring's sealing DEKs): deletes each row, records its id
    /// (a DEK destroyed is refused on insert from then on: `Conflict`) and appends a
    /// [`Change::DekDestroyed`] each. It does not compact the change log: see
    /// [`Storage::compact_destroyed_deks`]. Returns what it destroyed.
    async fn destroy_unreferenced_deks(
        &self,
        keep: Vec<DekId>,
        limit: usize,
    ) -> Result<Vec<DestroyedDek>>;
    /// Compacts the change log through the newest entry that carries a DEK destroyed since the
    /// last call (its `DekPut`, a value sealed under it; [`Change::DekDestroyed`] entries
    /// carry only the id and stay), so the log keeps no wrap of a destroyed DEK and no value
    /// sealed under one. Returns the new base, `None` when it did not move. The lifecycle job
    /// calls it at most once per its minimum gap, so edges behind the base are not sent to
    /// snapshots on every destruction.
    async fn compact_destroyed_deks(&self) -> Result<Option<u64>>;

    // ---- stores ----

    /// Fails with `NameTaken` if the account has a store of that name, `LimitExceeded` if it
    /// already holds `max_stores` stores, `NotFound(Account)` for an unknown account.
    async fn create_store(
        &self,
        store: StoreRecord,
        max_stores: u64,
        audit: &[AuditEntry],
    ) -> Result<()>;
    async fn get_store(&self, account: AccountId, id: StoreId) -> Result<Option<StoreRecord>>;
    async fn list_stores(
        &self,
        account: AccountId,
        query: &StoreQuery,
    ) -> Result<Page<StoreRecord>>;
    /// Fails with `NotEmpty` if the store holds secrets and `force` is false; with `force`
    /// deletes its secrets and their versions too. Service bindings that name the store are
    /// left as they are (see "Services and bindings").
    async fn delete_store(
        &self,
        account: AccountId,
        id: StoreId,
        force: bool,
        audit: &[AuditEntry],
    ) -> Result<()>;

    // ---- secrets ----

    /// Creates every secret or none. Fails with `NameTaken` (naming the first clash, including
    /// two items of the same batch with one name), `NotFound(Store)`, or `QuotaExceeded` when the
    /// account would hold more than `quota` secrets afterwards. Every value must be sealed under
    /// a DEK of `account`, stored or carried (`NotFound(Dek)` otherwise); an item whose record
    /// names another account or store, whose value is not the version its record points at, or
    /// whose carried DEK is not its value's, is `Invalid`.
    async fn create_secrets(
        &self,
        account: AccountId,
        store: StoreId,
        secrets: Vec<NewSecret>,
        quota: u64,
        audit: &[AuditEntry],
    ) -> Result<()>;
    async fn get_secret(
        &self,
        account: AccountId,
        store: StoreId,
        id: SecretId,
    ) -> Result<Option<SecretRecord>>;
    /// `Invalid` for a query [`SecretQuery::check`] refuses (a search holding a NUL).
    async fn list_secrets(
        &self,
        account: AccountId,
        store: StoreId,
        query: &SecretQuery,
    ) -> Result<Page<SecretRecord>>;
    /// Applies an update if the secret's current version is still `update.expected_version`;
    /// otherwise `Conflict` (the caller re-reads, reseals and retries). Returns the new record.
    /// `NotFound(Store)` / `NotFound(Secret)` as for reads; a new value must be version
    /// `expected + 1` of this secret (`Invalid` otherwise), sealed under a DEK of the account,
    /// stored or carried (`NotFound(Dek)` otherwise).
    async fn update_secret(
        &self,
        update: SecretUpdate,
        audit: &[AuditEntry],
    ) -> Result<SecretRecord>;
    /// [`Storage::update_secret`] in two steps: returns once the update has its place in the
    /// order of writes, with the future of its outcome (the update is applied whether or not
    /// that future is awaited). Updates are applied in the order they were queued, each
    /// all-or-nothing with its own audit entries and change-log entry, and may share one
    /// commit. So an update queued with `expected_version` set to the version that an earlier,
    /// still pending update of the same secret makes is applied right after it; if the earlier
    /// one fails, the later one fails with `Conflict`. This is how concurrent updates of one
    /// secret share a commit instead of waiting for each other's.
    async fn queue_update_secret(
        &self,
        update: SecretUpdate,
        audit: &[AuditEntry],
    ) -> Result<Pending<SecretRecord>>;
    /// Deletes every listed secret or none (`NotFound(Secret)` if any is missing). An id listed
    /// twice is deleted once. Service bindings that name a deleted secret are left as they are
    /// (see "Services and bindings").
    async fn delete_secrets(
        &self,
        account: AccountId,
        store: StoreId,
        ids: &[SecretId],
        audit: &[AuditEntry],
    ) -> Result<()>;
    /// One sealed value version.
    async fn get_version(
        &self,
        secret: SecretId,
        version: Version,
    ) -> Result<Option<VersionRecord>>;
    /// How many secrets the account holds.
    async fn secret_count(&self, account: AccountId) -> Result<u64>;

    // ---- services ----

    /// Creates the service and its first token in one transaction. `NameTaken { entity:
    /// Service, name }` if the account has a service of that name; `NotFound(Account)` for an
    /// unknown account; `AlreadyExists(Service)` / `AlreadyExists(ServiceToken)` for a used id;
    /// `Invalid` if the token's account or service is not the service's, or if the record's
    /// binding names are not unique across `secrets` and `stores`. Appends `ServicePut`, then
    /// `ServiceTokenPut`.
    async fn create_service(
        &self,
        service: ServiceRecord,
        token: ServiceTokenRecord,
        audit: &[AuditEntry],
    ) -> Result<()>;
    /// Replaces `kind`, `secrets`, `stores` and `modified` of the service with this (account,
    /// id); `name` and `created` are kept as stored (the given ones are ignored).
    /// `NotFound(Service)` if the account has no such service; `Invalid` for duplicate binding
    /// names. Appends `ServicePut` with the stored result, which it returns.
    async fn update_service(
        &self,
        service: ServiceRecord,
        audit: &[AuditEntry],
    ) -> Result<ServiceRecord>;
    async fn get_service(&self, account: AccountId, id: ServiceId)
    -> Result<Option<ServiceRecord>>;
    async fn get_service_by_name(
        &self,
        account: AccountId,
        name: &ServiceName,
    ) -> Result<Option<ServiceRecord>>;
    /// The account's services ordered by name (byte-wise); `query.name` filters to an exact
    /// name; `total_count` counts every match across pages.
    async fn list_services(
        &self,
        account: AccountId,
        query: &ServiceQuery,
    ) -> Result<Page<ServiceRecord>>;
    /// Deletes the service, its bindings and its tokens. `NotFound(Service)` if the account
    /// has no such service (nothing written). Appends `ServiceDeleted` only: it implies the
    /// tokens are gone.
    async fn delete_service(
        &self,
        account: AccountId,
        id: ServiceId,
        audit: &[AuditEntry],
    ) -> Result<()>;

    // ---- service tokens ----

    /// Adds a token to an existing service: `NotFound(Service)` if `token.account_id` has no
    /// service `token.service_id`; `AlreadyExists(ServiceToken)` for a used id. With
    /// `revoke_others_at: Some(t)`, every other unrevoked token of the service gets `revoked =
    /// t` in the same transaction. Appends `ServiceTokenPut`, then one `ServiceTokenRevoked`
    /// per token revoked (in id order, byte-wise). Returns the records of the tokens it
    /// revoked, as updated, in that order.
    async fn create_service_token(
        &self,
        token: ServiceTokenRecord,
        revoke_others_at: Option<Timestamp>,
        audit: &[AuditEntry],
    ) -> Result<Vec<ServiceTokenRecord>>;
    /// Revokes the service's unrevoked tokens (with `only: Some(id)`, just that one) at `at`.
    /// `NotFound(Service)` if the account has no such service; with `only`,
    /// `NotFound(ServiceToken)` if that token is not this service's and `AlreadyRevoked` if it
    /// is revoked already (nothing written, the first revocation time stays). Appends one
    /// `ServiceTokenRevoked` per token revoked (in id order, byte-wise). Returns the revoked
    /// records, as updated, in that order (empty when `only` is `None` and no token was
    /// active).
    async fn revoke_service_tokens(
        &self,
        account: AccountId,
        service: ServiceId,
        only: Option<TokenId>,
        at: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<Vec<ServiceTokenRecord>>;
    async fn get_service_token(&self, id: TokenId) -> Result<Option<ServiceTokenRecord>>;
    /// The service's tokens, revoked ones included, ordered by `created`, ties broken by id
    /// (byte-wise). Empty for an unknown service (or one of another account).
    async fn list_service_tokens(
        &self,
        account: AccountId,
        service: ServiceId,
    ) -> Result<Vec<ServiceTokenRecord>>;

    // ---- nodes ----

    /// Registers an edge node. `NameTaken { entity: Node, name }` if a node that is not
    /// revoked has that name (a revoked node's name may be used again); `AlreadyExists(Node)`
    /// for a used id; `Invalid` for a record that is already revoked. Appends `NodePut` with
    /// the hex of the token's HMAC (never the token).
    async fn create_node(&self, node: NodeRecord, audit: &[AuditEntry]) -> Result<()>;
    async fn get_node(&self, id: TokenId) -> Result<Option<NodeRecord>>;
    /// Every node, revoked ones included, ordered by `created`, ties broken by id (byte-wise).
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>>;
    /// Sets the node's `revoked` to `at` and returns the updated record. `NotFound(Node)` for
    /// an unknown id; `AlreadyRevoked` if it was revoked before, in which case nothing is
    /// written and the first revocation time stays. Appends `NodeRevoked`.
    async fn revoke_node(
        &self,
        id: TokenId,
        at: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<NodeRecord>;

    // ---- runtime reads ----

    /// The secret named `name` in the account's store, if any (metadata only). `None` for a
    /// store of another account, like a missing one.
    async fn get_secret_by_name(
        &self,
        account: AccountId,
        store: StoreId,
        name: &SecretName,
    ) -> Result<Option<SecretRecord>>;
    /// The secret named `name` in the account's store together with its current sealed
    /// version, read in one snapshot. This is the hot path of every runtime read of a bound
    /// service, so a backend makes it as cheap as it can (SQLite: one indexed query with a
    /// join on one reader connection).
    async fn current_value(
        &self,
        account: AccountId,
        store: StoreId,
        name: &SecretName,
    ) -> Result<Option<(SecretRecord, VersionRecord)>>;

    // ---- change log ----

    /// Sequence number of the log's head: its last entry, or its base when it holds no entry
    /// (0 for a log that never had one; see [`LogState`]).
    async fn change_head(&self) -> Result<u64>;
    /// Whether the database answers, asked on a connection kept for this question alone (so
    /// that a flood of reads filling the read pool does not make it look unreachable): the
    /// health check of a server whose storage is a database apart. The embedded store is a
    /// file of the process and always answers.
    async fn probe(&self) -> Result<()> {
        Ok(())
    }
    /// Whether the state is in a database apart from this process (PostgreSQL), which can be
    /// unreachable while the process runs; a server's `/healthz` then covers it ([`probe`]).
    ///
    /// [`probe`]: Storage::probe
    fn is_remote(&self) -> bool {
        false
    }
    /// A cheap, in-memory position of the change log for cache validation: it changes (grows)
    /// whenever this handle commits a write that appended to the log or replaced it (a snapshot
    /// install), and it has changed *before* that write is acknowledged. A cache entry tagged
    /// with the value read before the storage read that filled it is current as long as the
    /// value is unchanged. Writes that append nothing to the log (audit entries, token usage,
    /// compaction) need not change it. It may lag the database for writes made through other
    /// handles or processes. While the log only grows it is the head's seq; an install, which
    /// may put the head at or below where it was, moves it past its previous value instead.
    fn committed_head(&self) -> u64;
    /// Up to `limit` entries with sequence numbers greater than `after`, in order. `Compacted {
    /// base }` when `after` is below the log's base (those entries are no longer held; `after
    /// == base` is fine, the first entry chains onto the base hash). Empty when `after` is at
    /// or beyond the head.
    async fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeRecord>>;
    /// What a feed answer serves: [`Storage::changes_after`] read in one snapshot with the
    /// signatures of the entries returned. If the last entry returned is unsigned and a later
    /// one is signed, the answer goes on to that one (past `limit`: one write batch at most),
    /// so a follower can apply all of it. A log with no later signature (written before the
    /// control plane had a key) is served unsigned, as it is.
    async fn feed_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<ChangeRecord>, Vec<FeedSignature>)>;
    /// Sets the signer of the control plane's feed (once; `false`, and the first kept, if one
    /// is set already). From then on the last entry of every write batch that appends is
    /// signed in the batch's transaction ([`checkpoint_message`]) once the log has a cluster
    /// id; a batch whose signature cannot be stored is not committed.
    fn set_feed_signer(&self, signer: std::sync::Arc<dyn FeedSigner>) -> bool;
    /// Sets who is told of every group commit (once; `false`, and the first kept, if one is
    /// set already, or if the backend tells nobody). For metrics.
    fn set_write_observer(&self, observer: std::sync::Arc<dyn WriteObserver>) -> bool {
        let _ = observer;
        false
    }
    /// The writer's counters (commits, jobs, audit entries written and not written); zeros
    /// for a backend that keeps none.
    fn write_stats(&self) -> WriteStats {
        WriteStats::default()
    }
    /// Signs the current head now (with the signer set; otherwise nothing happens): a control
    /// plane does it at start, so that entries written before it had a key or a cluster id
    /// (`coffer init`, an upgrade) are covered.
    async fn sign_head(&self) -> Result<()>;
    /// The log's identity, base and head, read in one snapshot.
    async fn log_state(&self) -> Result<LogState>;
    /// The cluster id: the stored one, or, if the database has none, 16 random bytes (from the
    /// system's secure generator) stored now, with the log's base at 0 (or where it is). Calls
    /// that race agree on one id, and it never changes afterwards. The control plane calls it
    /// at open; an edge never does (it adopts the id of its first snapshot). Appends nothing.
    async fn ensure_cluster_id(&self) -> Result<[u8; 16]>;
    /// A watch on the log head's seq. Its initial value is the head when the backend was
    /// opened; after every COMMIT (through this handle) that appended to the log or installed a
    /// snapshot, it is set to the new head, before that write is acknowledged, so a reader that
    /// sees a value can read the entries up to it. Writes that append nothing (audit entries,
    /// token usage, compaction) leave it alone. After an install it is the snapshot's seq,
    /// which may be at or below the previous value: it is still marked changed.
    fn subscribe_head(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Moves the log's base to `through` and deletes the entries up to it, in one transaction.
    /// Afterwards `changes_after(after)` with `after < through` is `Compacted { base: through
    /// }`, and the head, hashes and later appends are as before (compacting every entry leaves
    /// head = base, and the next append chains onto it). `Invalid` if `through` is above the
    /// head or below the current base, or if the log has no cluster id yet and `through` is not
    /// 0 (see [`Storage::ensure_cluster_id`]); `through` equal to the base changes nothing.
    /// Appends nothing, and does not move [`Storage::committed_head`].
    async fn compact_log(&self, through: u64) -> Result<()>;
    /// Streams a consistent snapshot of the replicated state, read in one read transaction:
    /// first [`SnapshotPart::Header`] (the cluster id, the log head at that read as `seq` and
    /// `hash`, and the item count), then exactly `count` [`SnapshotPart::Item`]s, each one
    /// [`Change`] serialized like the log's payloads, in this order: `InstanceKeyPut` for the
    /// instance keys in [`REPLICATED_KEY_PURPOSES`] that are stored (no other purpose, ever),
    /// `AccountPut` per account, `DekPut` per DEK, `StorePut` per store, `SecretPut` per secret
    /// (with its current version only), `ServicePut` per service (with its bindings),
    /// `ServiceTokenPut` per unrevoked service token; then, for the revoked nodes, a `NodePut`
    /// each followed by a `NodeRevoked` each (so a relay recognises a revoked node's token and
    /// can say so); then `NodePut` per unrevoked node. Returns
    /// once everything is sent. Items are produced as `out` takes them, so memory stays
    /// bounded whatever the size. `Invalid` (and nothing sent) when the log has no cluster id;
    /// `Unavailable` when the receiver is dropped before the end; a failed read is its error.
    async fn snapshot(&self, out: tokio::sync::mpsc::Sender<SnapshotPart>) -> Result<()>;
    /// Control plane: records that access-event batch `batch_id` from node `node` arrived and
    /// appends `audit` (see "Audit entries carried by writes"), in one transaction, returning
    /// `Ok(true)`. `Ok(false)`, and nothing written (not even `audit`), if that batch id was
    /// recorded before: a retried delivery. Appends nothing to the change log.
    async fn record_access_batch(
        &self,
        batch_id: [u8; 16],
        node: TokenId,
        audit: &[AuditEntry],
    ) -> Result<bool>;

    // ---- audit log ----

    /// Appends entries on their own (in one transaction, all or none): denials, logins, and
    /// other events that change nothing else. See "Audit entries carried by writes".
    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<()>;
    /// A page of the account's audit records matching `query` (filters ANDed; `from`
    /// inclusive, `to` exclusive), ordered by seq in `query.direction`; `total_count` counts
    /// every match across pages. Records are returned as stored, without checking the chain.
    async fn list_audit(&self, account: AccountId, query: &AuditQuery)
    -> Result<Page<AuditRecord>>;
    /// Up to `limit` of the account's records with seq greater than `after_seq`, in seq order,
    /// exactly as stored: no hash is recomputed or checked, so tampered rows, gaps and all are
    /// returned for a verifier to judge. A row that cannot even be decoded (a hash that is not
    /// 32 bytes, an id that is not 16) is `Corrupted`, naming its seq.
    async fn audit_entries(
        &self,
        account: AccountId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>>;
    /// The seq and hash of the account's last audit record, `None` when it has none.
    async fn audit_head(&self, account: AccountId) -> Result<Option<(u64, [u8; 32])>>;
    /// Every account with audit records or checkpoints, deleted accounts included (the audit
    /// log outlives the account), ordered by id (byte-wise).
    async fn audit_accounts(&self) -> Result<Vec<AccountId>>;
    /// Stores a checkpoint as given (storage neither computes nor checks its MAC).
    /// `AlreadyExists(AuditCheckpoint)` if the account has one at that seq; `Invalid` for seq
    /// 0. Never deleted, not even with the account.
    async fn put_audit_checkpoint(&self, cp: AuditCheckpoint) -> Result<()>;
    /// Up to `limit` of the account's checkpoints with seq greater than `after_seq`, ordered by
    /// seq (a verifier pages through them, so its memory does not grow with the log).
    async fn audit_checkpoints(
        &self,
        account: AccountId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditCheckpoint>>;
    /// The account's checkpoint with the highest seq, if any.
    async fn last_audit_checkpoint(&self, account: AccountId) -> Result<Option<AuditCheckpoint>>;

    // ---- integrity ----

    /// Checks, read-only and from one snapshot, what lists and quotas trust without
    /// re-deriving it: every store's and account's `secret_count` equals the secrets it holds,
    /// and foreign keys hold where the database does not enforce them on every write (see
    /// `integrity.rs`). A broken invariant is the report's `problem`, not an error; an error
    /// is a failed read.
    async fn check_integrity(&self) -> Result<IntegrityReport>;
    /// Sets every store's and account's `secret_count` to the number of secrets it holds, in
    /// one write (through the writer, so beside serving writes), and returns what it changed
    /// (`coffer repair`). Appends nothing to the change log and no audit entry: counts are
    /// derived data, never replicated (an edge keeps its own, by the same triggers, from the
    /// rows it applies).
    async fn recount_secrets(&self) -> Result<Recounted>;
}

/// Account replication keys (ARKs), node account keys and account grants: the part of
/// [`Storage`] for accounts with a KEK of their own (docs/key-hierarchy.md). A supertrait of
/// `Storage`, so every backend has it (and a `dyn Storage` its methods); import it to call
/// them on a concrete backend such as `SqliteStorage`.
#[async_trait]
pub trait ArkStorage: Send + Sync {
    /// Stores `key` as version `version` of `account`'s replication key (wrapped by the
    /// account's KEK) with its `grants` (`AccountKeyGrant` each). `version` must
    /// be the account's current version + 1 (1 for its first), else `Conflict`;
    /// `NotFound(Account)` for an unknown account. The first version also marks every DEK of
    /// the account retired (`deks.retired`): they carry instance-RK wraps, so their values are
    /// re-sealed onto DEKs the ARK wraps and they are destroyed. A DEK of an account with an
    /// ARK is stored only with an ARK wrap of its current version (else `Conflict`).
    async fn put_account_replication_key(
        &self,
        account: AccountId,
        version: u32,
        key: WrappedKeyRecord,
        grants: Vec<AccountGrant>,
        audit: &[AuditEntry],
    ) -> Result<()>;
    /// The current version of each account's replication key, wrapped by the account's KEK.
    async fn account_replication_keys(&self) -> Result<Vec<(AccountId, u32, WrappedKeyRecord)>>;
    /// Every stored version of `account`'s replication key, oldest first.
    async fn account_replication_key_versions(
        &self,
        account: AccountId,
    ) -> Result<Vec<(u32, WrappedKeyRecord)>>;
    /// Records `public_key` as `node`'s key for `account` and stores `grant` (appending
    /// `AccountKeyGrant`), with `audit` (written only when something is recorded). `grant`
    /// must be of the account's current ARK version, or `None` for an account without one
    /// (else `Conflict`: retry). `Ok(false)`: this very key was registered before (nothing
    /// written). `NotFound(Node)` / `NotFound(Account)`, `NotFound(NodeKey)` if the node has
    /// not registered its node key (account grants are sealed to both keys),
    /// `AlreadyRevoked` for a revoked node, `AlreadyExists(NodeKey)` if the node registered
    /// another key for the account or the key is in use anywhere else (a node key, another
    /// account's or node's).
    async fn register_node_account_key(
        &self,
        node: TokenId,
        account: AccountId,
        public_key: [u8; 32],
        grant: Option<AccountGrant>,
        audit: &[AuditEntry],
    ) -> Result<bool>;
    /// The accounts some of whose DEKs are wrapped by their account's replication key (on a
    /// replica: `kek_id` `ark:<n>`), in id order: those an edge needs a node account key for.
    async fn ark_accounts(&self) -> Result<Vec<AccountId>>;
    /// The ARK versions of `account` granted to `node`, oldest first (an edge checks it was
    /// granted; a rotation grants each new version to every key registered for the account).
    async fn account_grant_versions(&self, account: AccountId, node: TokenId) -> Result<Vec<u32>>;
    /// The keys registered for `account` by nodes not revoked that have a node key, each with
    /// that node key, in node id order.
    async fn node_account_keys(&self, account: AccountId) -> Result<Vec<NodeAccountKey>>;
    /// Rotates one account's ARK outside a revocation (one owed by a revocation that could not
    /// rotate it): stores `rotation.key` as the next version, its grants (`AccountKeyGrant`
    /// each; none to a revoked node, else `Invalid`) and the rewrap of every ARK-wrapped DEK of
    /// the account (`DekPut` each, retired), with `audit`, in one transaction. `Conflict` if the
    /// version is not the current + 1, the account has no ARK (deleted meanwhile), or one of
    /// its ARK-wrapped DEKs is left out (retry).
    async fn rotate_account_replication_key(
        &self,
        rotation: ArkRotation,
        audit: &[AuditEntry],
    ) -> Result<()>;
    /// The accounts whose current ARK version was granted to a node that is now revoked: a
    /// revocation could not rotate it (its KEK was unavailable), so the revoked node may hold
    /// it. Core rotates them as soon as their KEK is back and makes no DEK under them meanwhile.
    async fn accounts_owing_ark_rotation(&self) -> Result<Vec<AccountId>>;
    /// Every grant of `account`'s ARK `version`, in node id order.
    async fn account_grants(&self, account: AccountId, version: u32) -> Result<Vec<AccountGrant>>;
}
