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

#[cfg(test)]
mod tests {
    use coffer_crypto::{FileKek, Plaintext, SealedValue, ValueContext, open, seal};
    use coffer_storage::{AccountRecord, SqliteStorage};
    use coffer_types::{SecretId, StoreId, Version};

    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        kek: Arc<dyn KekProvider>,
        storage: Arc<dyn Storage>,
        account: AccountId,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let kek: Arc<dyn KekProvider> = Arc::new(FileKek::create(&dir.path().join("kek")).unwrap());
        let storage: Arc<dyn Storage> =
            Arc::new(SqliteStorage::open(&dir.path().join("db")).unwrap());
        let account = new_account(&storage).await;
        Fixture {
            _dir: dir,
            kek,
            storage,
            account,
        }
    }

    async fn new_account(storage: &Arc<dyn Storage>) -> AccountId {
        let account = AccountId::from_bytes(random_id());
        storage
            .create_account(AccountRecord {
                id: account,
                name: "a".into(),
                created: Timestamp::now(),
                secrets_quota: None,
            })
            .await
            .unwrap();
        account
    }

    async fn keyring(f: &Fixture, policy: DekPolicy) -> Keyring {
        Keyring::open(f.kek.clone(), f.storage.clone(), policy)
            .await
            .unwrap()
    }

    fn ctx(account: AccountId, dek: DekId) -> ValueContext {
        ValueContext {
            account,
            store: StoreId::from_bytes([1; 16]),
            secret: SecretId::from_bytes([2; 16]),
            version: Version::FIRST,
            dek,
        }
    }

    #[tokio::test]
    async fn reuses_a_dek_until_its_seal_budget_is_spent() {
        let f = fixture().await;
        let keys = keyring(
            &f,
            DekPolicy {
                max_age: Duration::from_secs(3600),
                max_seals: 3,
            },
        )
        .await;
        let mut ids = Vec::new();
        for _ in 0..7 {
            ids.push(keys.sealing_key(f.account).await.unwrap().0);
        }
        assert!(ids[..3].iter().all(|id| *id == ids[0]));
        assert!(ids[3..6].iter().all(|id| *id == ids[3]));
        assert_ne!(ids[0], ids[3]);
        assert_ne!(ids[3], ids[6]);
    }

    #[tokio::test]
    async fn an_expired_dek_is_replaced() {
        let f = fixture().await;
        let keys = keyring(
            &f,
            DekPolicy {
                max_age: Duration::ZERO,
                max_seals: 1 << 20,
            },
        )
        .await;
        let a = keys.sealing_key(f.account).await.unwrap().0;
        let b = keys.sealing_key(f.account).await.unwrap().0;
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn accounts_never_share_a_dek_and_cannot_open_each_others() {
        let f = fixture().await;
        let other = new_account(&f.storage).await;
        let keys = keyring(&f, DekPolicy::default()).await;
        let (mine, _) = keys.sealing_key(f.account).await.unwrap();
        let (theirs, _) = keys.sealing_key(other).await.unwrap();
        assert_ne!(mine, theirs);
        // A fresh keyring (empty cache) must refuse a DEK looked up under the wrong account.
        let fresh = keyring(&f, DekPolicy::default()).await;
        assert!(matches!(
            fresh.opening_key(f.account, theirs).await,
            Err(CoreError::Internal(_))
        ));
    }

    #[tokio::test]
    async fn old_deks_still_open_after_rotation_and_restart() {
        let f = fixture().await;
        let value = Plaintext::new(b"rotate me".to_vec());
        let keys = keyring(
            &f,
            DekPolicy {
                max_age: Duration::from_secs(3600),
                max_seals: 1,
            },
        )
        .await;
        let (first, key) = keys.sealing_key(f.account).await.unwrap();
        let sealed = seal(&key, &ctx(f.account, first), &value).unwrap();
        let (second, _) = keys.sealing_key(f.account).await.unwrap();
        assert_ne!(first, second);
        drop(keys);

        // A new process: nothing cached, the DEK is unwrapped from storage through the KEK.
        let restarted = keyring(&f, DekPolicy::default()).await;
        let key = restarted.opening_key(f.account, first).await.unwrap();
        let opened = open(&key, &ctx(f.account, first), &SealedValue(sealed.0.clone())).unwrap();
        assert_eq!(opened.expose_secret(), b"rotate me");
        // And it keeps sealing with the newest DEK rather than minting one per restart.
        assert_eq!(restarted.sealing_key(f.account).await.unwrap().0, second);
    }

    #[tokio::test]
    async fn mac_key_survives_restart_and_needs_the_right_kek() {
        let f = fixture().await;
        let token = coffer_crypto::ApiToken::generate(coffer_types::TokenId::from_bytes([7; 16]));
        let hash = keyring(&f, DekPolicy::default())
            .await
            .mac()
            .hash_token(&token);
        assert!(
            keyring(&f, DekPolicy::default())
                .await
                .mac()
                .verify_token(&token, &hash)
        );

        let other_dir = tempfile::tempdir().unwrap();
        let wrong: Arc<dyn KekProvider> =
            Arc::new(FileKek::create(&other_dir.path().join("kek")).unwrap());
        let err = Keyring::open(wrong, f.storage.clone(), DekPolicy::default())
            .await
            .unwrap_err();
        assert!(matches!(err, CoreError::Unavailable(_)), "{err:?}");
    }
}
