//! [`Coffer`]: one method per API operation.

use std::sync::Arc;

use coffer_crypto::KekProvider;
use coffer_storage::{AccountRecord, Storage};
use coffer_types::{AccountId, Timestamp, TokenId};

use self::audit::Target;
use crate::AuditAction;
use crate::{CoreError, DekPolicy, Keyring, Limits, Permission, Principal, Resource};

/// The domain service. Cheap to share (`Arc<Coffer>`); holds no globals.
#[derive(Debug)]
pub struct Coffer {
    storage: Arc<dyn Storage>,
    keys: Arc<Keyring>,
    limits: Limits,
    update_locks: UpdateLocks,
    /// Last-used times of tokens seen since the last flush (see `identity.rs`).
    token_usage: std::sync::Mutex<std::collections::HashMap<TokenId, Timestamp>>,
    /// Token rows by id, so authentication needs no storage read.
    token_cache: crate::token_cache::TokenCache,
    /// The account holding the operator token, once looked up (see `audit.rs`).
    operator_account: std::sync::OnceLock<AccountId>,
    /// Service tokens, services and current values for runtime reads (see `runtime.rs`).
    pub(crate) runtime_cache: self::runtime::RuntimeCache,
    /// Runtime reads not yet written to the audit log.
    pub(crate) access_log: self::runtime::AccessLog,
    /// Failed authentications not yet written to the audit log (see `failures.rs`).
    auth_failures: self::failures::FailureLog,
    /// Serialises deploys and service-token changes (see `services.rs`).
    service_writes: tokio::sync::Mutex<()>,
    /// Node rows for node-token authentication (see `nodes.rs`).
    node_cache: self::nodes::NodeCache,
    /// Refused node key registrations audited lately (see `nodes.rs`).
    key_refusals: self::nodes::KeyRefusals,
    /// Each node's last feed request to this process (see `fleet.rs`).
    fleet: self::fleet::Fleet,
    /// Opened over an edge replica: it serves runtime reads and node authentication only, and
    /// keeps no audit log of its own (access events travel upstream).
    replica: bool,
    /// The KEK's versions and the rewrap job, on a control plane opened with them.
    rotation: Option<Arc<crate::rotation::Rotation>>,
    /// Where account KEKs are made and kept, and how fast DEKs move onto them, once the server
    /// installed it (`Coffer::install_account_keks`).
    account_kek_store: std::sync::OnceLock<(
        Arc<dyn crate::account_kek::AccountKekStore>,
        crate::RewrapSettings,
    )>,
    /// Set when other instances write to the same database (see `shared.rs`).
    shared_database: std::sync::OnceLock<std::time::Duration>,
    /// The jobs moving accounts' DEKs onto their own KEKs.
    account_rewraps: crate::account_kek::RewrapJobs,
    /// Serialises giving an account its KEK with deleting an account, so that a key is never
    /// recorded for an account deleted meanwhile, nor two keys for one account.
    pub(crate) account_kek_changes: tokio::sync::Mutex<()>,
    /// The DEK lifecycle job (re-seal, prune, destroy), once started.
    lifecycle: std::sync::OnceLock<Arc<crate::reseal::Lifecycle>>,
}

/// The keyring's feed-signing key, as storage's writer signs with it.
#[derive(Debug)]
struct FeedSigner(Arc<coffer_crypto::SigningKey>);

impl coffer_storage::FeedSigner for FeedSigner {
    fn sign(&self, message: &[u8]) -> [u8; coffer_storage::SIGNATURE_LEN] {
        self.0.sign(message)
    }
}

impl Coffer {
    pub async fn open(
        storage: Arc<dyn Storage>,
        kek: Arc<dyn KekProvider>,
        limits: Limits,
        dek_policy: DekPolicy,
    ) -> Result<Coffer, CoreError> {
        let keys = Keyring::open(kek, storage.clone(), dek_policy).await?;
        // The control plane's log is named once, so that edges can refuse another cluster's.
        storage.ensure_cluster_id().await?;
        // From here on every write batch signs its last entry; the head is signed now, so
        // that entries written before the key or the cluster id existed (`coffer init`, an
        // instance upgraded to signed feeds) are covered too.
        if let Some(key) = keys.feed_signing() {
            storage.set_feed_signer(Arc::new(FeedSigner(Arc::clone(key))));
            storage.sign_head().await?;
        }
        Ok(Coffer::with_keys(storage, keys, limits, false))
    }

    /// The public half of the feed-signing key, which edges pin (`None` on a replica).
    pub fn feed_public_key(&self) -> Option<[u8; 32]> {
        self.keys.feed_signing().map(|k| k.public_key())
    }

    /// The feed-signing key's signature over `message` (a snapshot's, as
    /// `coffer_replication::sign::snapshot_message` builds it); `None` on a replica.
    pub fn feed_signature(&self, message: &[u8]) -> Option<[u8; coffer_storage::SIGNATURE_LEN]> {
        self.keys.feed_signing().map(|k| k.sign(message))
    }

    /// The domain service over an edge replica (see [`Keyring::open_replica`]): what it serves
    /// is runtime reads and node authentication. Fails with `Unavailable` if the replica has not
    /// been bootstrapped yet.
    pub async fn open_replica(
        storage: Arc<dyn Storage>,
        kek: Arc<dyn KekProvider>,
    ) -> Result<Coffer, CoreError> {
        let keys = Keyring::open_replica(kek, storage.clone()).await?;
        Ok(Coffer::with_keys(storage, keys, Limits::default(), true))
    }

    fn with_keys(
        storage: Arc<dyn Storage>,
        keys: Keyring,
        limits: Limits,
        replica: bool,
    ) -> Coffer {
        Coffer {
            storage,
            keys: Arc::new(keys),
            limits,
            update_locks: UpdateLocks::new(),
            token_usage: std::sync::Mutex::new(std::collections::HashMap::new()),
            token_cache: crate::token_cache::TokenCache::default(),
            operator_account: std::sync::OnceLock::new(),
            runtime_cache: self::runtime::RuntimeCache::default(),
            access_log: self::runtime::AccessLog::default(),
            auth_failures: self::failures::FailureLog::default(),
            service_writes: tokio::sync::Mutex::new(()),
            node_cache: self::nodes::NodeCache::default(),
            key_refusals: self::nodes::KeyRefusals::default(),
            fleet: self::fleet::Fleet::default(),
            replica,
            rotation: None,
            account_kek_store: std::sync::OnceLock::new(),
            shared_database: std::sync::OnceLock::new(),
            account_rewraps: crate::account_kek::RewrapJobs::default(),
            account_kek_changes: tokio::sync::Mutex::new(()),
            lifecycle: std::sync::OnceLock::new(),
        }
    }

    /// Starts the DEK lifecycle job (control plane only; a second call changes nothing):
    /// superseded versions pruned, values re-sealed onto current DEKs, unreferenced DEKs
    /// destroyed (`reseal.rs`).
    pub fn start_dek_lifecycle(&self, settings: crate::ResealSettings) {
        if self.replica {
            return;
        }
        let mut started = false;
        let job = self.lifecycle.get_or_init(|| {
            started = true;
            Arc::new(crate::reseal::Lifecycle::new(
                Arc::clone(&self.storage),
                Arc::clone(&self.keys),
                settings,
                self.database_is_shared(),
            ))
        });
        if started {
            job.spawn();
        }
    }

    /// Runs one pass of the DEK lifecycle now and waits for it (tests, benchmarks), with
    /// `settings` (no pauses needed). `Err` says what stopped it.
    pub async fn run_dek_lifecycle_pass(
        &self,
        settings: crate::ResealSettings,
    ) -> Result<(), String> {
        crate::reseal::Lifecycle::new(
            Arc::clone(&self.storage),
            Arc::clone(&self.keys),
            settings,
            self.database_is_shared(),
        )
        .pass()
        .await
    }

    /// Drops unwrapped DEKs the storage no longer holds from memory (an edge, after its
    /// replica applied `DekDestroyed` or `AccountDeleted`).
    pub async fn forget_destroyed_deks(&self) -> Result<usize, CoreError> {
        self.keys.forget_destroyed().await
    }

    /// The DEK lifecycle job's progress; `None` when it was not started.
    pub async fn reseal_status(&self) -> Result<Option<crate::ResealStatus>, CoreError> {
        match self.lifecycle.get() {
            Some(job) => Ok(Some(job.status().await?)),
            None => Ok(None),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Unwrapped DEKs held in the keyring's cache now (for metrics).
    pub fn dek_cache_keys(&self) -> usize {
        self.keys.cached_keys()
    }

    /// Stops storage: writes submitted before this finish, later ones fail (`Unavailable`).
    /// Call it once the server has stopped taking requests; it returns when storage is closed.
    pub async fn shutdown(&self) {
        if self.replica {
            // Nothing of its own to record: access events are the edge's to send upstream.
            self.storage.shutdown().await;
            return;
        }
        self.stop_rotation();
        self.account_rewraps.stop(None);
        if let Some(job) = self.lifecycle.get() {
            job.stop();
        }
        if let Err(e) = self.flush_token_usage().await {
            tracing::warn!(error = %e, "could not record token last-used times at shutdown");
        }
        if let Err(e) = self.flush_access_events().await {
            tracing::error!(error = %e, "could not record runtime reads in the audit log at shutdown");
        }
        if let Err(e) = self.flush_auth_failures().await {
            tracing::error!(error = %e, "could not record failed authentications in the audit log at shutdown");
        }
        if let Err(e) = self.checkpoint_audit().await {
            tracing::error!(error = %e, "could not write audit checkpoints at shutdown");
        }
        self.storage.shutdown().await;
    }

    pub(crate) async fn require_account(
        &self,
        who: &Principal,
        account: AccountId,
        need: Permission,
        action: AuditAction,
        target: Target,
    ) -> Result<AccountRecord, CoreError> {
        // A denial is recorded in the audit log before it is returned.
        self.check(who, account, need, action, || target).await?;
        self.storage
            .get_account(account)
            .await?
            .ok_or(CoreError::NotFound(Resource::Account))
    }
}

pub mod account_kek;
mod secrets_store;
use secrets_store::UpdateLocks;
pub use secrets_store::{
    CreateSecretItem, DuplicateSecret, Quota, SecretListQuery, StoreListQuery, UpdateSecret,
};
pub(crate) mod audit;
mod failures;
pub mod fleet;
pub use audit::AuditVerification;
#[cfg(test)]
mod account_kek_tests;
pub mod identity;
pub mod kek;
pub mod nodes;
#[cfg(test)]
mod nodes_tests;
pub mod operator_token;
#[cfg(test)]
mod operator_token_tests;
#[cfg(test)]
mod reseal_tests;
#[cfg(test)]
mod revoke_tests;
pub mod runtime;
#[cfg(test)]
mod runtime_tests;
pub mod services;
mod shared;
#[cfg(test)]
mod tests;
mod values;
