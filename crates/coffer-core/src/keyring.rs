//! The keyring: which DEK seals new values for each account, the cache of unwrapped DEKs, and
//! the instance MAC key that hashes API tokens.
//!
//! DEKs are refreshed often: a new one is made for an account when its current one is older
//! than [`DekPolicy::max_age`] or has sealed [`DekPolicy::max_seals`] values since this process
//! started using it, so one exposed DEK covers little. Old DEKs stay (wrapped) in storage because
//! old versions still reference them; unwrapped DEKs are cached by id, so the KEK (possibly an
//! HSM) is off the read path after the first use of each DEK.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use coffer_crypto::{DataKey, DekContext, KekId, KekProvider, MacKey, WrappedDataKey, random_id};
use coffer_storage::{DekRecord, Storage, WrappedKeyRecord};
use coffer_types::{AccountId, DekId, Timestamp};
use tokio::sync::Mutex;

use crate::CoreError;

const DEK_PURPOSE: &str = "dek";
const TOKEN_MAC_PURPOSE: &str = "token-mac";

/// When to start a new DEK for an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DekPolicy {
    pub max_age: Duration,
    /// Well under the 2^32 seals NIST allows per AES-GCM key with random nonces.
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

#[derive(Debug)]
struct ActiveDek {
    id: DekId,
    key: Arc<DataKey>,
    created: Timestamp,
    seals: u64,
}

/// Seals and opens through per-account DEKs wrapped by the KEK.
#[derive(Debug)]
pub struct Keyring {
    kek: Arc<dyn KekProvider>,
    storage: Arc<dyn Storage>,
    policy: DekPolicy,
    /// Unwrapped DEKs by id. Entries are immutable, so a read lock suffices on the hot path.
    cache: RwLock<HashMap<DekId, Arc<DataKey>>>,
    /// The DEK each account seals with now. An async mutex: making a DEK awaits storage, and
    /// holding the lock across that keeps two tasks from making two DEKs at once.
    active: Mutex<HashMap<AccountId, ActiveDek>>,
    mac: MacKey,
}

impl Keyring {
    /// Loads (or on first start creates) the instance MAC key, so that a missing or wrong KEK is
    /// reported at startup rather than on the first request.
    pub async fn open(
        kek: Arc<dyn KekProvider>,
        storage: Arc<dyn Storage>,
        policy: DekPolicy,
    ) -> Result<Keyring, CoreError> {
        let stored = match storage.get_instance_key(TOKEN_MAC_PURPOSE).await? {
            Some(record) => record,
            None => {
                let id = DekId::from_bytes(random_id());
                let key = DataKey::generate();
                let wrapped = kek.wrap(&key, &mac_context(id))?;
                let record = WrappedKeyRecord {
                    id,
                    kek_id: wrapped.kek_id.0,
                    wrapped: wrapped.bytes,
                    created: Timestamp::now(),
                };
                // Two instances starting at once on a shared database agree on whichever key
                // was stored first.
                storage
                    .put_instance_key_if_absent(TOKEN_MAC_PURPOSE, record)
                    .await?
            }
        };
        let key = unwrap_record(kek.as_ref(), &stored, &mac_context(stored.id))?;
        Ok(Keyring {
            kek,
            storage,
            policy,
            cache: RwLock::new(HashMap::new()),
            active: Mutex::new(HashMap::new()),
            mac: MacKey::from_data_key(&key),
        })
    }

    pub fn mac(&self) -> &MacKey {
        &self.mac
    }

    /// The DEK to seal one new value of `account` with.
    pub async fn sealing_key(
        &self,
        account: AccountId,
    ) -> Result<(DekId, Arc<DataKey>), CoreError> {
        let now = Timestamp::now();
        let max_age = i64::try_from(self.policy.max_age.as_micros()).unwrap_or(i64::MAX);
        let fresh =
            |created: Timestamp| now.unix_micros().saturating_sub(created.unix_micros()) < max_age;

        let mut active = self.active.lock().await;
        if let Some(dek) = active.get_mut(&account)
            && dek.seals < self.policy.max_seals
            && fresh(dek.created)
        {
            dek.seals += 1;
            return Ok((dek.id, dek.key.clone()));
        }
        // After a restart, reuse the account's newest DEK while it is still fresh rather than
        // minting one per restart.
        if !active.contains_key(&account)
            && let Some(record) = self.storage.latest_dek(account).await?
            && fresh(record.key.created)
        {
            let key = self.unwrap_dek(account, &record)?;
            active.insert(
                account,
                ActiveDek {
                    id: record.key.id,
                    key: key.clone(),
                    created: record.key.created,
                    seals: 1,
                },
            );
            return Ok((record.key.id, key));
        }
        let (id, key, created) = self.new_dek(account).await?;
        active.insert(
            account,
            ActiveDek {
                id,
                key: key.clone(),
                created,
                seals: 1,
            },
        );
        Ok((id, key))
    }

    /// The DEK `dek` of `account`, for opening a value sealed under it.
    pub async fn opening_key(
        &self,
        account: AccountId,
        dek: DekId,
    ) -> Result<Arc<DataKey>, CoreError> {
        if let Some(key) = self.cached(dek) {
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
        self.unwrap_dek(account, &record)
    }

    /// The KEK that wraps new keys now.
    pub fn current_kek_id(&self) -> KekId {
        self.kek.current_kek_id()
    }

    async fn new_dek(
        &self,
        account: AccountId,
    ) -> Result<(DekId, Arc<DataKey>, Timestamp), CoreError> {
        let id = DekId::from_bytes(random_id());
        let key = DataKey::generate();
        let wrapped = self.kek.wrap(&key, &dek_context(account, id))?;
        let created = Timestamp::now();
        self.storage
            .put_dek(DekRecord {
                account_id: account,
                key: WrappedKeyRecord {
                    id,
                    kek_id: wrapped.kek_id.0,
                    wrapped: wrapped.bytes,
                    created,
                },
            })
            .await?;
        let key = Arc::new(key);
        self.insert_cached(id, key.clone());
        tracing::info!(account = %account, dek = %id, "new data-encryption key");
        Ok((id, key, created))
    }

    fn unwrap_dek(
        &self,
        account: AccountId,
        record: &DekRecord,
    ) -> Result<Arc<DataKey>, CoreError> {
        if let Some(key) = self.cached(record.key.id) {
            return Ok(key);
        }
        let key = Arc::new(unwrap_record(
            self.kek.as_ref(),
            &record.key,
            &dek_context(account, record.key.id),
        )?);
        self.insert_cached(record.key.id, key.clone());
        Ok(key)
    }

    fn cached(&self, id: DekId) -> Option<Arc<DataKey>> {
        // A poisoned lock only means another thread panicked mid-insert of an immutable entry;
        // the map itself is still consistent.
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache.get(&id).cloned()
    }

    fn insert_cached(&self, id: DekId, key: Arc<DataKey>) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        cache.insert(id, key);
    }
}

fn dek_context(account: AccountId, dek: DekId) -> DekContext<'static> {
    DekContext {
        account: Some(account),
        dek,
        purpose: DEK_PURPOSE,
    }
}

fn mac_context(id: DekId) -> DekContext<'static> {
    DekContext {
        account: None,
        dek: id,
        purpose: TOKEN_MAC_PURPOSE,
    }
}

fn unwrap_record(
    kek: &dyn KekProvider,
    record: &WrappedKeyRecord,
    ctx: &DekContext<'_>,
) -> Result<DataKey, CoreError> {
    let wrapped = WrappedDataKey {
        kek_id: KekId(record.kek_id.clone()),
        bytes: record.wrapped.clone(),
    };
    kek.unwrap(&wrapped, ctx).map_err(|e| match e {
        coffer_crypto::CryptoError::Opaque => CoreError::Unavailable(format!(
            "key {} does not open with KEK {}",
            record.id, record.kek_id
        )),
        other => other.into(),
    })
}
