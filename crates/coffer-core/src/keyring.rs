//! The keyring: which DEK seals new values for each account, the cache of unwrapped DEKs, and
//! the instance MAC key that hashes API tokens.
//!
//! DEKs are refreshed often: a new one is made for an account when its current one is older
//! than [`DekPolicy::max_age`] or has sealed [`DekPolicy::max_seals`] values, so one exposed DEK
//! covers little. Seals are counted in memory, per process: a restart (or another control-plane
//! instance) starts counting the newest stored DEK from zero, which keeps it within a small
//! multiple of the budget, far below AES-GCM's limit. Old DEKs stay (wrapped) in storage because
//! old versions still reference them; unwrapped DEKs are cached by (account, id), at most
//! [`DEK_CACHE_CAPACITY`] of them, so the KEK (possibly an HSM) is off the read path after the
//! first use of each DEK.
//!
//! The keyring never writes a DEK to storage. A new DEK comes back from [`DekWrite::seal`]
//! with its wrapped record, and the write that uses it carries the record (`NewSecret::dek`,
//! `SecretUpdate::dek`) so that storage inserts it in the same transaction: a write that fails
//! leaves no DEK behind, and a DEK made for it is simply carried again by the next write.
//! Such a write goes through a [`DekWrite`], which holds the DEK gate shared from just before
//! its storage call until storage answers it, so that a node's revocation, which takes it
//! exclusive, lists every DEK that can reach storage (`keyring/gate.rs`).
//!
//! KEK calls are synchronous (an HSM round trip can take milliseconds), so they run on tokio's
//! blocking pool and no lock is held across them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use coffer_crypto::{
    DataKey, DekContext, KekId, KekProvider, MacKey, NodePublicKey, SigningKey, WrappedDataKey,
    random_id,
};
use coffer_storage::{DekRecord, Storage, WrappedKeyRecord};
use coffer_types::{AccountId, DekId, Timestamp, TokenId};

use crate::CoreError;
use crate::account_kek::AccountKeks;
use crate::kek_call::{DEK_PURPOSE, on_blocking_pool};

// The DEKs' purpose, `DEK_PURPOSE`, is in `kek_call.rs` with the KEK calls that use it.
const TOKEN_MAC_PURPOSE: &str = "token-mac";
const AUDIT_MAC_PURPOSE: &str = "audit-mac";
const SERVICE_TOKEN_MAC_PURPOSE: &str = "service-token-mac";
const NODE_TOKEN_MAC_PURPOSE: &str = "node-token-mac";
/// The seed of the control plane's Ed25519 feed-signing key. Never replicated (it is not in
/// `coffer_storage::REPLICATED_KEY_PURPOSES`): only the control plane can sign the feed.
const FEED_SIGNING_PURPOSE: &str = "feed-signing";

/// Unwrapped DEKs kept in memory at most. Past it the oldest entries are dropped; they are
/// unwrapped again (one KEK call) if used again.
pub const DEK_CACHE_CAPACITY: usize = 4096;

/// When to start a new DEK for an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DekPolicy {
    pub max_age: Duration,
    /// Seals by this process under one DEK. Well under the 2^32 seals NIST allows per AES-GCM
    /// key with random nonces, also when several processes or restarts each use up a budget.
    pub max_seals: u64,
}

impl Default for DekPolicy {
    fn default() -> DekPolicy {
        DekPolicy {
            max_age: Duration::from_secs(3600),
            max_seals: 1 << 20,
        }
    }
}

/// The DEK to seal one value with, from [`DekWrite::seal`].
#[derive(Debug)]
pub(crate) struct SealingKey {
    pub(crate) id: DekId,
    pub(crate) key: Arc<DataKey>,
    /// The DEK as storage holds it. The write that stores the value carries it
    /// ([`DekWrite::carry`]): it may not be stored yet.
    record: DekRecord,
    /// Whether storage holds it (a write that carried it committed, or it was read from
    /// storage): a write carrying only stored DEKs never touches the DEK gate.
    stored: bool,
}

#[derive(Debug)]
struct ActiveDek {
    record: DekRecord,
    key: Arc<DataKey>,
    seals: u64,
    /// Whether a write that carried it has committed (or it was read from storage): a write
    /// sealing under a stored DEK inserts nothing, so it needs no hold on the DEK gate.
    stored: bool,
}

impl ActiveDek {
    fn sealing_key(&self) -> SealingKey {
        SealingKey {
            id: self.record.key.id,
            key: Arc::clone(&self.key),
            record: self.record.clone(),
            stored: self.stored,
        }
    }
}

/// DEKs in clear by id, unwrapped by their KEK before a revocation takes the DEK gate: those
/// without a wrap by the replication key the revocation replaces (see `dek_to_rewrap`).
type Unwrapped = std::collections::HashMap<DekId, Arc<DataKey>>;

/// Unwrapped DEKs by (owner, id), first in first out past `capacity`. Keyed by the owner too,
/// so a hit for one account can never hand out another account's key.
#[derive(Debug)]
struct DekCache {
    /// hashbrown's map (foldhash): looked up on every runtime read; keys are random ids.
    keys: hashbrown::HashMap<(AccountId, DekId), Arc<DataKey>>,
    /// Insertion order of `keys`' entries; the same set of entries.
    order: VecDeque<(AccountId, DekId)>,
    capacity: usize,
}

impl DekCache {
    fn new(capacity: usize) -> DekCache {
        DekCache {
            keys: hashbrown::HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, account: AccountId, dek: DekId) -> Option<Arc<DataKey>> {
        self.keys.get(&(account, dek)).cloned()
    }

    fn insert(&mut self, account: AccountId, dek: DekId, key: Arc<DataKey>) {
        if self.keys.contains_key(&(account, dek)) {
            return;
        }
        while self.keys.len() >= self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.keys.remove(&oldest);
        }
        self.keys.insert((account, dek), key);
        self.order.push_back((account, dek));
    }

    fn remove_account(&mut self, account: AccountId) {
        self.order.retain(|(owner, _)| *owner != account);
        self.keys.retain(|(owner, _), _| *owner != account);
    }

    fn remove(&mut self, account: AccountId, dek: DekId) {
        if self.keys.remove(&(account, dek)).is_some() {
            self.order.retain(|entry| *entry != (account, dek));
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Seals and opens through per-account DEKs wrapped by the KEK.
#[derive(Debug)]
pub struct Keyring {
    kek: Arc<dyn KekProvider>,
    storage: Arc<dyn Storage>,
    policy: DekPolicy,
    /// Entries are immutable, so a read lock suffices on the hot path. Never held across an
    /// await or a KEK call.
    cache: RwLock<DekCache>,
    /// The DEK each account seals with now. Held only to look up or replace an entry, never
    /// across storage or the KEK: two tasks that find no usable DEK at once may both make one,
    /// and the one installed second is dropped unused (it was never stored).
    active: Mutex<HashMap<AccountId, ActiveDek>>,
    /// When each account last gave up its sealing DEK ([`Keyring::retire_sealing`]): DEKs
    /// made before it are re-sealed away from. In memory only (see `reseal.rs`).
    retired: Mutex<HashMap<AccountId, Timestamp>>,
    mac: MacKey,
    audit_mac: MacKey,
    service_mac: MacKey,
    node_mac: MacKey,
    /// The replication key (control plane only; `None` on an edge, which never wraps).
    replication: Option<replication::ReplicationKeys>,
    /// The feed-signing key: the control plane's only (`None` on a replica).
    feed_signing: Option<Arc<SigningKey>>,
    /// Accounts with a KEK of their own (control plane only; see `account_kek.rs`).
    accounts: AccountKeks,
    /// The current replication key of each such account (control plane only; see
    /// `keyring/account_replication.rs`).
    arks: account_replication::AccountArks,
    /// Taken shared by every write carrying a DEK that may not be stored yet, exclusive by a
    /// node's revocation while it lists, rewraps and commits (`keyring/gate.rs`).
    dek_gate: Arc<tokio::sync::RwLock<()>>,
    /// Tests: a revocation's next listing says so and waits (`replication.rs`).
    #[cfg(test)]
    after_listing: std::sync::Mutex<Option<ListingPause>>,
}

/// Tells a test that a revocation has listed the DEKs, then waits for its go.
#[cfg(test)]
type ListingPause = (
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<()>,
);

impl Keyring {
    /// How often DEKs are replaced.
    pub(crate) fn dek_policy(&self) -> DekPolicy {
        self.policy
    }

    /// Loads (or on first start creates) the instance MAC key, so that a missing or wrong KEK is
    /// reported at startup rather than on the first request.
    pub async fn open(
        kek: Arc<dyn KekProvider>,
        storage: Arc<dyn Storage>,
        policy: DekPolicy,
    ) -> Result<Keyring, CoreError> {
        let mac = instance_mac_key(&kek, &storage, TOKEN_MAC_PURPOSE).await?;
        let audit_mac = instance_mac_key(&kek, &storage, AUDIT_MAC_PURPOSE).await?;
        let service_key = instance_key(&kek, &storage, SERVICE_TOKEN_MAC_PURPOSE).await?;
        let node_key = instance_key(&kek, &storage, NODE_TOKEN_MAC_PURPOSE).await?;
        let seed = instance_key(&kek, &storage, FEED_SIGNING_PURPOSE).await?;
        let feed_signing = SigningKey::from_data_key(&seed).map_err(CoreError::from)?;
        let keyring = Keyring {
            replication: Some(replication::ReplicationKeys::open(&kek, &storage).await?),
            kek,
            storage,
            policy,
            cache: RwLock::new(DekCache::new(DEK_CACHE_CAPACITY)),
            active: Mutex::new(HashMap::new()),
            retired: Mutex::new(HashMap::new()),
            mac,
            audit_mac,
            service_mac: MacKey::from_data_key(&service_key),
            node_mac: MacKey::from_data_key(&node_key),
            feed_signing: Some(Arc::new(feed_signing)),
            accounts: AccountKeks::default(),
            arks: Default::default(),
            dek_gate: Default::default(),
            #[cfg(test)]
            after_listing: Default::default(),
        };
        keyring
            .backfill_rk_wraps(&[
                (SERVICE_TOKEN_MAC_PURPOSE, &service_key),
                (NODE_TOKEN_MAC_PURPOSE, &node_key),
            ])
            .await?;
        Ok(keyring)
    }

    /// The keyring of an edge replica: the service- and node-token keys come from the replica
    /// (its snapshot carries them, wrapped; an edge never makes them), and are unwrapped with
    /// this node's KEK, which must be the control plane's. The API-token and audit keys stay
    /// on the control plane: an edge gets throwaway ones, which verify nothing (no API token
    /// is replicated) and sign nothing it keeps.
    pub async fn open_replica(
        kek: Arc<dyn KekProvider>,
        storage: Arc<dyn Storage>,
    ) -> Result<Keyring, CoreError> {
        let service_mac = replicated_mac_key(&kek, &storage, SERVICE_TOKEN_MAC_PURPOSE).await?;
        let node_mac = replicated_mac_key(&kek, &storage, NODE_TOKEN_MAC_PURPOSE).await?;
        Ok(Keyring {
            kek,
            storage,
            policy: DekPolicy::default(),
            cache: RwLock::new(DekCache::new(DEK_CACHE_CAPACITY)),
            active: Mutex::new(HashMap::new()),
            retired: Mutex::new(HashMap::new()),
            mac: MacKey::from_data_key(&DataKey::generate()),
            audit_mac: MacKey::from_data_key(&DataKey::generate()),
            service_mac,
            node_mac,
            replication: None,
            feed_signing: None,
            accounts: AccountKeks::default(),
            arks: Default::default(),
            dek_gate: Default::default(),
            #[cfg(test)]
            after_listing: Default::default(),
        })
    }

    /// The control plane's feed-signing key (`None` on a replica, which never has it).
    pub fn feed_signing(&self) -> Option<&Arc<SigningKey>> {
        self.feed_signing.as_ref()
    }

    /// The key API tokens are stored by (a keyed hash), beside [`Self::audit_mac`],
    /// [`Self::service_mac`] and [`Self::node_mac`].
    pub fn token_mac(&self) -> &MacKey {
        &self.mac
    }

    /// The key that signs audit-log checkpoints. Like the token MAC key it exists only wrapped
    /// at rest, so whoever can edit the database cannot forge a checkpoint.
    pub fn audit_mac(&self) -> &MacKey {
        &self.audit_mac
    }

    /// The key that hashes service tokens. Separate from the API-token key so that a node which
    /// must check service tokens (an edge) can hold it without being able to check API tokens.
    pub fn service_mac(&self) -> &MacKey {
        &self.service_mac
    }

    /// The key that hashes node tokens. Separate from the other token keys so that a relay,
    /// which must check the tokens of the nodes below it, can hold it without being able to
    /// check API or service tokens.
    pub fn node_mac(&self) -> &MacKey {
        &self.node_mac
    }

    /// The DEK to seal one new value of `account` with, counting one seal against it. Writes
    /// reach it through [`DekWrite::seal`], which ties the DEK to the write that carries it
    /// (`keyring/gate.rs`). May make a DEK (a KEK call); nothing is locked meanwhile.
    async fn sealing_key(&self, account: AccountId) -> Result<SealingKey, CoreError> {
        let now = Timestamp::now();
        if let Some(key) = self.take_seal(account, now) {
            return Ok(key);
        }
        // Slow path: no usable DEK in memory. Nothing is locked while storage and the KEK work.
        let known = self.lock_active().contains_key(&account);
        // After a restart, reuse the account's newest DEK while it is still fresh rather than
        // making one per restart.
        let mut candidate = None;
        if !known
            && let Some(record) = self.storage.latest_dek(account).await?
            && self.fresh(record.key.created, now)
            && record.key.kek_id == self.wrapping_kek_id(account)
            && self.made_under_current_rk(&record)
        {
            let key = self.unwrap_dek(&record).await?;
            candidate = Some((record, key, true));
        }
        let (record, key, stored) = match candidate {
            Some(found) => found,
            None => {
                let (record, key) = self.new_dek(account).await?;
                (record, key, false)
            }
        };

        let mut active = self.lock_active();
        // Another task may have installed a usable DEK meanwhile: use that one, and drop ours.
        if let Some(dek) = active.get_mut(&account)
            && self.usable(dek, now)
        {
            dek.seals += 1;
            return Ok(dek.sealing_key());
        }
        let dek = ActiveDek {
            record,
            key,
            seals: 1,
            stored,
        };
        let out = dek.sealing_key();
        active.insert(account, dek);
        Ok(out)
    }

    /// Counts one seal against the account's active DEK, if it has a usable one.
    fn take_seal(&self, account: AccountId, now: Timestamp) -> Option<SealingKey> {
        let mut active = self.lock_active();
        let dek = active.get_mut(&account)?;
        if !self.usable(dek, now) {
            return None;
        }
        dek.seals += 1;
        Some(dek.sealing_key())
    }

    /// Whether `dek` may seal one more value: under its budgets, and wrapped by the KEK that
    /// wraps the account's new keys (after a KEK rotation, or once the account has a KEK of its
    /// own, a DEK wrapped by the previous KEK is not handed out again, so that no write stores
    /// a key it wraps long after the switch; see `rotation.rs` and `account_kek.rs`).
    fn usable(&self, dek: &ActiveDek, now: Timestamp) -> bool {
        dek.seals < self.policy.max_seals
            && self.fresh(dek.record.key.created, now)
            && dek.record.key.kek_id == self.wrapping_kek_id(dek.record.account_id)
            // A DEK a slow path installed across a node's revocation was made under the old
            // replication key, which the revoked node holds.
            && self.made_under_current_rk(&dek.record)
    }

    fn fresh(&self, created: Timestamp, now: Timestamp) -> bool {
        let max_age = i64::try_from(self.policy.max_age.as_micros()).unwrap_or(i64::MAX);
        now.unix_micros().saturating_sub(created.unix_micros()) < max_age
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, ActiveDek>> {
        // Every update of the map is a single insert or a counter increment, so a panic
        // elsewhere while the lock was held cannot leave it inconsistent.
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The DEK `dek` of `account`, for opening a value sealed under it. A DEK of another account
    /// is refused, whether cached or not.
    pub async fn opening_key(
        &self,
        account: AccountId,
        dek: DekId,
    ) -> Result<Arc<DataKey>, CoreError> {
        if let Some(key) = self.cached(account, dek) {
            return Ok(key);
        }
        let record =
            self.storage.get_dek(dek).await?.ok_or_else(|| {
                CoreError::Internal(format!("value references missing DEK {dek}"))
            })?;
        if record.account_id != account {
            return Err(CoreError::Internal(format!(
                "DEK {dek} belongs to another account"
            )));
        }
        self.unwrap_dek(&record).await
    }

    /// The DEK `account` seals with now, if it has a usable one in memory (counts no seal).
    pub(crate) fn current_dek(&self, account: AccountId) -> Option<DekId> {
        let now = Timestamp::now();
        let active = self.lock_active();
        active
            .get(&account)
            .filter(|dek| self.usable(dek, now))
            .map(|dek| dek.record.key.id)
    }

    /// Every DEK the keyring may still hand out for sealing: never destroyed, even while no
    /// value references it yet. An entry that is spent (out of seals, aged out, given up by a
    /// store's deletion) is never handed out again, so it is not kept: a write that took it
    /// earlier and commits after its destruction is refused by storage and seals again.
    pub(crate) fn sealing_deks(&self) -> Vec<DekId> {
        let now = Timestamp::now();
        self.lock_active()
            .values()
            .filter(|dek| self.usable(dek, now))
            .map(|dek| dek.record.key.id)
            .collect()
    }

    /// Makes `account` seal with a new DEK from its next seal on (a store's deletion: the DEK
    /// its values shared with other stores is then re-sealed away from and destroyed). The
    /// entry stays, spent, so the slow path makes a new DEK rather than reusing the stored
    /// one.
    pub(crate) fn retire_sealing(&self, account: AccountId) {
        if let Some(dek) = self.lock_active().get_mut(&account) {
            dek.seals = u64::MAX;
        }
        self.retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(account, Timestamp::now());
    }

    /// Values of `account` sealed under DEKs created before this are re-sealed: DEKs past
    /// their age, or made before the account last gave up its sealing DEK (storage's
    /// `retired` flag adds those given up by a store's deletion or a node's revocation). A DEK merely out of seals is not
    /// re-sealed away from: moving its values would spend other DEKs' seals for no gain.
    pub(crate) fn reseal_cutoff(&self, account: AccountId) -> Timestamp {
        let max_age = i64::try_from(self.policy.max_age.as_micros()).unwrap_or(i64::MAX);
        // DEKs made before the last revocation are retired in storage, which the re-seal
        // query reads beside this cutoff.
        let mut cutoff = Timestamp::now().unix_micros().saturating_sub(max_age);
        if let Some(at) = self
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&account)
        {
            cutoff = cutoff.max(at.unix_micros());
        }
        Timestamp::from_unix_micros(cutoff)
    }

    /// Drops the unwrapped copies of DEKs storage no longer holds (destroyed, or gone with
    /// their account); returns how many. An edge runs it after applying the feed, since it
    /// learns of destructions only through its replica.
    pub async fn forget_destroyed(&self) -> Result<usize, CoreError> {
        let cached: Vec<(AccountId, DekId)> = {
            let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
            cache.order.iter().copied().collect()
        };
        let mut gone = 0;
        for (account, dek) in cached {
            let held = self
                .storage
                .get_dek(dek)
                .await?
                .is_some_and(|r| r.account_id == account);
            if !held {
                self.forget(account, dek);
                gone += 1;
            }
        }
        Ok(gone)
    }

    /// Drops a destroyed DEK's unwrapped copy, and stops sealing with it if it is still the
    /// account's active DEK (storage refuses to store it again).
    pub(crate) fn forget(&self, account: AccountId, dek: DekId) {
        {
            let mut active = self.lock_active();
            if active.get(&account).is_some_and(|a| a.record.key.id == dek) {
                active.remove(&account);
            }
        }
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        cache.remove(account, dek);
    }

    /// The KEK that wraps new keys now.
    pub fn current_kek_id(&self) -> KekId {
        self.kek.current_kek_id()
    }

    /// Makes and wraps a DEK for `account`. It is not stored: see the module comment.
    async fn new_dek(&self, account: AccountId) -> Result<(DekRecord, Arc<DataKey>), CoreError> {
        let id = DekId::from_bytes(random_id());
        let kek = self.wrapping_kek(account)?;
        let (key, wrapped) = kek_wrap(&kek, DataKey::generate(), dek_context(account, id)).await?;
        let ctx = dek_context(account, id);
        let rk = match self.ark_wrap(account, &key, &ctx)? {
            Some(ark) => Some(ark),
            // An account with a KEK of its own has its DEKs RK-wrapped by its own replication
            // key alone: without it in memory (not opened yet, or set aside while a rotation
            // is owed) no DEK of it is made, rather than one the instance RK wraps, which its
            // deletion would not shred.
            None if self.replication.is_some() && self.accounts.kek_id(account).is_some() => {
                return Err(CoreError::Unavailable(format!(
                    "account {account}'s replication key is not open (its KEK is unavailable, \
                     or a rotation is owed): its values cannot be written until it is"
                )));
            }
            None => self.rk_wrap(&key, &ctx)?,
        };
        let record = DekRecord {
            account_id: account,
            key: WrappedKeyRecord {
                id,
                kek_id: wrapped.kek_id.0,
                wrapped: wrapped.bytes,
                created: Timestamp::now(),
            },
            rk,
        };
        let key = Arc::new(key);
        self.insert_cached(account, id, Arc::clone(&key));
        tracing::info!(account = %account, dek = %id, "new data-encryption key");
        Ok((record, key))
    }

    /// `record`'s key, from the cache or unwrapped by the KEK (and then cached).
    async fn unwrap_dek(&self, record: &DekRecord) -> Result<Arc<DataKey>, CoreError> {
        let (account, id) = (record.account_id, record.key.id);
        if let Some(key) = self.cached(account, id) {
            return Ok(key);
        }
        let kek = self.unwrapping_kek(record)?;
        let key = Arc::new(kek_unwrap(&kek, &record.key, dek_context(account, id)).await?);
        self.insert_cached(account, id, Arc::clone(&key));
        Ok(key)
    }

    // ---- which KEK wraps an account's DEKs: the one place that decides ----

    /// The accounts that have a KEK of their own.
    pub(crate) fn account_keks(&self) -> &AccountKeks {
        &self.accounts
    }

    /// The instance KEK (the rotation's and the account-KEK rewrap's source).
    pub(crate) fn instance_kek(&self) -> &Arc<dyn KekProvider> {
        &self.kek
    }

    /// The id of the KEK that wraps `account`'s new DEKs: its own KEK's if it has one
    /// (available or not), the instance KEK's otherwise.
    fn wrapping_kek_id(&self, account: AccountId) -> String {
        match self.accounts.kek_id(account) {
            Some(id) => id.0,
            None => self.kek.current_kek_id().0,
        }
    }

    /// The KEK that wraps `account`'s new DEKs. An account whose own KEK is unavailable gets
    /// `AccountKekUnavailable`, never the instance KEK: its DEKs are wrapped by its key alone.
    fn wrapping_kek(&self, account: AccountId) -> Result<Arc<dyn KekProvider>, CoreError> {
        match self.accounts.provider(account) {
            None => Ok(Arc::clone(&self.kek)),
            Some(found) => found,
        }
    }

    /// The KEK that unwraps `record`: the account's own KEK if that is the KEK it names, the
    /// instance KEK otherwise (a DEK made before the account had its own KEK, until the rewrap
    /// job moves it).
    fn unwrapping_kek(&self, record: &DekRecord) -> Result<Arc<dyn KekProvider>, CoreError> {
        match self.accounts.kek_id(record.account_id) {
            Some(id) if id.0 == record.key.kek_id => self
                .accounts
                .provider(record.account_id)
                .unwrap_or_else(|| Err(AccountKeks::unavailable(record.account_id, &id))),
            _ => Ok(Arc::clone(&self.kek)),
        }
    }

    /// A DEK in clear for a rotation to rewrap: from its replication wrap when `current` (the
    /// replication-key version being replaced: the RK's, or the account's ARK's when `ark`)
    /// made it, as nearly every DEK's is (software AES, no KEK call, which is what lets a
    /// revocation rewrap every DEK in its transaction), else from `unwrapped` (unwrapped by
    /// its KEK before the revocation took the DEK gate), else from its KEK wrap.
    async fn dek_to_rewrap(
        &self,
        record: &DekRecord,
        ark: bool,
        current: (u32, &DataKey),
        unwrapped: &Unwrapped,
    ) -> Result<Arc<DataKey>, CoreError> {
        let ctx = dek_context(record.account_id, record.key.id);
        let (version, key) = current;
        match &record.rk {
            Some(rk) if rk.ark == ark && rk.version == version => Ok(Arc::new(if ark {
                coffer_crypto::ark_unwrap(key, version, &rk.wrapped, &ctx)?
            } else {
                coffer_crypto::rk_unwrap(key, version, &rk.wrapped, &ctx)?
            })),
            _ => match unwrapped.get(&record.key.id) {
                Some(key) => Ok(Arc::clone(key)),
                None => {
                    // Only a DEK stored since the revocation's first listing without such a
                    // wrap, which no build since replication wraps makes.
                    tracing::warn!(dek = %record.key.id, "a DEK without a replication wrap is unwrapped by its KEK under the DEK gate");
                    Ok(Arc::new(
                        kek_unwrap(&self.unwrapping_kek(record)?, &record.key, ctx).await?,
                    ))
                }
            },
        }
    }

    /// After `account` was deleted: drops its ARK from memory for good (nothing brings it
    /// back, see [`Keyring::forget_deleted_ark`]), its active DEK and every unwrapped DEK of
    /// it this process holds. Only for a deleted account: one merely losing its KEK keeps
    /// its ARK.
    pub(crate) fn forget_deleted_account(&self, account: AccountId) {
        self.forget_deleted_ark(account);
        self.lock_active().remove(&account);
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        cache.remove_account(account);
    }

    /// Unwrapped DEKs held in the cache now (for metrics).
    pub fn cached_keys(&self) -> usize {
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub(crate) fn cached(&self, account: AccountId, id: DekId) -> Option<Arc<DataKey>> {
        // A poisoned lock only means another thread panicked mid-insert; the cache's map and
        // order list are updated together without any call that can panic in between.
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        cache.get(account, id)
    }

    fn insert_cached(&self, account: AccountId, id: DekId, key: Arc<DataKey>) {
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        cache.insert(account, id, key);
    }
}

fn dek_context(account: AccountId, dek: DekId) -> DekContext<'static> {
    DekContext {
        account: Some(account),
        dek,
        purpose: DEK_PURPOSE,
    }
}

fn instance_context(id: DekId, purpose: &'static str) -> DekContext<'static> {
    DekContext {
        account: None,
        dek: id,
        purpose,
    }
}

/// Loads (or on first start creates) the instance MAC key for `purpose`, so that a missing or
/// wrong KEK is reported at startup rather than on the first request.
async fn instance_mac_key(
    kek: &Arc<dyn KekProvider>,
    storage: &Arc<dyn Storage>,
    purpose: &'static str,
) -> Result<MacKey, CoreError> {
    Ok(MacKey::from_data_key(
        &instance_key(kek, storage, purpose).await?,
    ))
}

/// Loads (or on first start creates) the instance key for `purpose`, unwrapped.
async fn instance_key(
    kek: &Arc<dyn KekProvider>,
    storage: &Arc<dyn Storage>,
    purpose: &'static str,
) -> Result<DataKey, CoreError> {
    let stored = match storage.get_instance_key(purpose).await? {
        Some(record) => record,
        None => {
            let id = DekId::from_bytes(random_id());
            let (_, wrapped) =
                kek_wrap(kek, DataKey::generate(), instance_context(id, purpose)).await?;
            let record = WrappedKeyRecord {
                id,
                kek_id: wrapped.kek_id.0,
                wrapped: wrapped.bytes,
                created: Timestamp::now(),
            };
            // Two instances starting at once on a shared database agree on whichever key was
            // stored first, so the key used is always the one read back, never the one just made.
            storage.put_instance_key_if_absent(purpose, record).await?
        }
    };
    kek_unwrap(kek, &stored, instance_context(stored.id, purpose)).await
}

/// Loads an instance key that an edge receives from its upstream; a replica without it has not
/// been bootstrapped.
async fn replicated_mac_key(
    kek: &Arc<dyn KekProvider>,
    storage: &Arc<dyn Storage>,
    purpose: &'static str,
) -> Result<MacKey, CoreError> {
    let stored = storage.get_instance_key(purpose).await?.ok_or_else(|| {
        CoreError::Unavailable(format!(
            "the replica holds no {purpose} key yet (not bootstrapped from a snapshot)"
        ))
    })?;
    let key = kek_unwrap(kek, &stored, instance_context(stored.id, purpose)).await?;
    Ok(MacKey::from_data_key(&key))
}

/// A new random key of `purpose` (bound to `account` when it is one's), wrapped by `kek`, and
/// its record as stored, with a fresh random id: how RK and ARK versions are made.
async fn new_wrapped_key(
    kek: &Arc<dyn KekProvider>,
    account: Option<AccountId>,
    purpose: String,
) -> Result<(DataKey, WrappedKeyRecord), CoreError> {
    let id = DekId::from_bytes(random_id());
    let kek = Arc::clone(kek);
    let (key, wrapped) = on_blocking_pool(move || {
        let key = DataKey::generate();
        let ctx = DekContext {
            account,
            dek: id,
            purpose: &purpose,
        };
        let wrapped = kek.wrap(&key, &ctx)?;
        Ok((key, wrapped))
    })
    .await?;
    Ok((
        key,
        WrappedKeyRecord {
            id,
            kek_id: wrapped.kek_id.0,
            wrapped: wrapped.bytes,
            created: Timestamp::now(),
        },
    ))
}

/// Opens a key [`new_wrapped_key`] made, from its record. A wrap the KEK does not open is
/// `Unavailable`, naming `what` and the KEK.
async fn open_wrapped_key(
    kek: &Arc<dyn KekProvider>,
    account: Option<AccountId>,
    purpose: String,
    record: &WrappedKeyRecord,
    what: String,
) -> Result<DataKey, CoreError> {
    let kek = Arc::clone(kek);
    let (id, wrapped) = (
        record.id,
        WrappedDataKey {
            kek_id: KekId(record.kek_id.clone()),
            bytes: record.wrapped.clone(),
        },
    );
    on_blocking_pool(move || {
        let ctx = DekContext {
            account,
            dek: id,
            purpose: &purpose,
        };
        kek.unwrap(&wrapped, &ctx).map_err(|e| match e {
            coffer_crypto::CryptoError::Opaque => {
                CoreError::Unavailable(format!("{what} does not open with KEK {}", wrapped.kek_id))
            }
            other => other.into(),
        })
    })
    .await
}

/// A node's registered public key, parsed again to seal to it. Registration accepts only
/// canonical, usable keys, so a failure here is a key stored by an older build: the error names
/// the node, which the operator revokes (its key is then skipped).
fn stored_public_key(bytes: &[u8], node: TokenId) -> Result<NodePublicKey, CoreError> {
    NodePublicKey::parse(bytes).map_err(|e| {
        CoreError::Internal(format!(
            "node {node}'s registered key cannot be sealed to ({e}): revoke that node"
        ))
    })
}

/// Wraps `key` under the current KEK; hands the key back with its wrapped form.
async fn kek_wrap(
    kek: &Arc<dyn KekProvider>,
    key: DataKey,
    ctx: DekContext<'static>,
) -> Result<(DataKey, WrappedDataKey), CoreError> {
    let kek = Arc::clone(kek);
    on_blocking_pool(move || {
        let wrapped = kek.wrap(&key, &ctx)?;
        Ok((key, wrapped))
    })
    .await
}

async fn kek_unwrap(
    kek: &Arc<dyn KekProvider>,
    record: &WrappedKeyRecord,
    ctx: DekContext<'static>,
) -> Result<DataKey, CoreError> {
    let kek = Arc::clone(kek);
    let wrapped = WrappedDataKey {
        kek_id: KekId(record.kek_id.clone()),
        bytes: record.wrapped.clone(),
    };
    let (key_id, kek_id) = (record.id, record.kek_id.clone());
    on_blocking_pool(move || {
        kek.unwrap(&wrapped, &ctx).map_err(|e| match e {
            coffer_crypto::CryptoError::Opaque => {
                CoreError::Unavailable(format!("key {key_id} does not open with KEK {kek_id}"))
            }
            other => other.into(),
        })
    })
    .await
}

mod account_replication;
mod gate;
mod replication;

pub(crate) use gate::DekWrite;
#[cfg(test)]
mod tests;
