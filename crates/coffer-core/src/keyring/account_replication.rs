//! Account replication keys (ARKs): the replication key of one account that has a KEK of its
//! own, so that deleting the account shreds the wraps edges use too (docs/key-hierarchy.md,
//! "Shredding an account").
//!
//! An ARK version is stored wrapped by the account's KEK alone (never the instance KEK), and
//! the control plane holds the current version of each such account unwrapped. The account's
//! DEKs are RK-wrapped by it (`ark:<n>`) instead of the instance RK, and it is granted only to
//! the keys nodes registered for that account (never to a node key, which outlives the
//! account). A node's revocation rotates every ARK whose account KEK is available, in the
//! revocation's transaction (see `replication.rs`); an account whose KEK is unavailable keeps
//! its version (logged): nothing of it can be written while its KEK is missing, and what the
//! revoked node may hold of it it held before the revocation.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use coffer_crypto::{
    DataKey, KekProvider, NodePublicKey, ark_context, ark_purpose, ark_unwrap, ark_wrap, random_id,
    seal_account_grant,
};
use coffer_storage::{AccountGrant, ArkRotation, AuditEntry, DekRecord, RkWrap, WrappedKeyRecord};
use coffer_types::{AccountId, DekId, Timestamp, TokenId};

use super::{Keyring, dek_context, kek_unwrap, on_blocking_pool};
use crate::CoreError;

#[derive(Debug, Clone)]
pub(super) struct CurrentArk {
    pub(super) version: u32,
    pub(super) key: Arc<DataKey>,
}

/// The current ARK of each account that has one and whose KEK opened it.
#[derive(Debug, Default)]
pub(crate) struct AccountArks {
    current: RwLock<HashMap<AccountId, CurrentArk>>,
}

impl AccountArks {
    pub(super) fn get(&self, account: AccountId) -> Option<CurrentArk> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&account)
            .cloned()
    }

    pub(super) fn all(&self) -> Vec<(AccountId, CurrentArk)> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(a, c)| (*a, c.clone()))
            .collect()
    }

    pub(super) fn set(&self, account: AccountId, version: u32, key: Arc<DataKey>) {
        self.current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(account, CurrentArk { version, key });
    }

    pub(super) fn remove(&self, account: AccountId) {
        self.current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&account);
    }
}

/// A new ARK version for `account`, and its wrap under the account's KEK as stored.
pub(super) async fn new_ark(
    kek: &Arc<dyn KekProvider>,
    account: AccountId,
    version: u32,
) -> Result<(DataKey, WrappedKeyRecord), CoreError> {
    let id = DekId::from_bytes(random_id());
    let kek = Arc::clone(kek);
    let (key, wrapped) = on_blocking_pool(move || {
        let key = DataKey::generate();
        let purpose = ark_purpose(version);
        let wrapped = kek.wrap(&key, &ark_context(account, id, &purpose))?;
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

/// Opens ARK `version` of `account` from its wrap under the account's KEK.
async fn open_ark(
    kek: &Arc<dyn KekProvider>,
    account: AccountId,
    version: u32,
    record: &WrappedKeyRecord,
) -> Result<DataKey, CoreError> {
    let kek = Arc::clone(kek);
    let (id, wrapped) = (
        record.id,
        coffer_crypto::WrappedDataKey {
            kek_id: coffer_crypto::KekId(record.kek_id.clone()),
            bytes: record.wrapped.clone(),
        },
    );
    on_blocking_pool(move || {
        let purpose = ark_purpose(version);
        kek.unwrap(&wrapped, &ark_context(account, id, &purpose))
            .map_err(|e| match e {
                coffer_crypto::CryptoError::Opaque => CoreError::Unavailable(format!(
                    "replication key version {version} of account {account} does not open with \
                     its KEK {}",
                    wrapped.kek_id
                )),
                other => other.into(),
            })
    })
    .await
}

fn seal_grants(
    keys: &[(TokenId, [u8; 32])],
    skip: Option<TokenId>,
    account: AccountId,
    version: u32,
    ark: &DataKey,
) -> Result<Vec<AccountGrant>, CoreError> {
    let mut grants = Vec::new();
    for (node, public) in keys.iter().filter(|(id, _)| Some(*id) != skip) {
        let public = NodePublicKey::parse(public)?;
        let grant = seal_account_grant(&public, *node, account, version, ark)?;
        grants.push(AccountGrant {
            account_id: account,
            node_id: *node,
            ark_version: version,
            ephemeral_public: grant.ephemeral_public,
            sealed: grant.sealed,
        });
    }
    Ok(grants)
}

impl Keyring {
    /// Opens `account`'s current ARK with `kek` (the account's own KEK), or makes its first
    /// version (granted to the keys nodes registered for the account), which retires the
    /// account's DEKs made under the instance RK: the lifecycle job re-seals their values onto
    /// DEKs the ARK wraps and destroys them. Called when the account gets its KEK and at start.
    pub(crate) async fn ensure_account_rk(
        &self,
        account: AccountId,
        kek: Arc<dyn KekProvider>,
    ) -> Result<(), CoreError> {
        let repl = self.replication()?;
        let _ops = repl.ops.lock().await;
        let stored = self
            .storage
            .account_replication_key_versions(account)
            .await?
            .pop();
        let (version, key) = match stored {
            Some((version, record)) => (version, open_ark(&kek, account, version, &record).await?),
            None => {
                let (key, record) = new_ark(&kek, account, 1).await?;
                let keys = self.storage.account_node_keys(account).await?;
                let grants = seal_grants(&keys, None, account, 1, &key)?;
                self.storage
                    .put_account_replication_key(account, 1, record, grants, &[])
                    .await?;
                tracing::info!(account = %account, "account replication key made; the account's DEKs under the instance replication key are retired");
                (1, key)
            }
        };
        self.arks.set(account, version, Arc::new(key));
        // Its DEK in use was made under the instance RK: the next seal makes one under the ARK.
        self.lock_active().remove(&account);
        Ok(())
    }

    /// `key`'s wrap by `account`'s current ARK, if it has one in memory.
    pub(super) fn ark_wrap(
        &self,
        account: AccountId,
        key: &DataKey,
        ctx: &coffer_crypto::DekContext<'_>,
    ) -> Result<Option<RkWrap>, CoreError> {
        let Some(current) = self.arks.get(account) else {
            return Ok(None);
        };
        let wrapped = ark_wrap(&current.key, current.version, key, ctx)?;
        Ok(Some(RkWrap {
            version: current.version,
            wrapped: wrapped.bytes,
            ark: true,
        }))
    }

    /// Whether `record`'s replication wrap is the one its account's new DEKs get now: by the
    /// account's current ARK version if it has one, else by the current instance RK.
    pub(super) fn ark_current_for(&self, record: &DekRecord) -> Option<bool> {
        let current = self.arks.get(record.account_id);
        match (&record.rk, current) {
            (Some(rk), Some(current)) => Some(rk.ark && rk.version == current.version),
            (_, Some(_)) => Some(false),
            (Some(rk), None) if rk.ark => Some(false),
            _ => None,
        }
    }

    /// The current ARK version of `account` (`None`: it has none in memory).
    pub fn account_replication_key_version(&self, account: AccountId) -> Option<u32> {
        self.arks.get(account).map(|c| c.version)
    }

    /// Drops `account`'s ARK from memory (the account is deleted).
    pub(crate) fn forget_account_rk(&self, account: AccountId) {
        self.arks.remove(account);
    }

    /// Records `public` as `node`'s key for `account` and grants it the account's current ARK
    /// (if it has one). `Ok(false)`: this very key was registered before. An account whose ARK
    /// exists but could not be opened (its KEK unavailable) answers `AccountKekUnavailable`.
    pub(crate) async fn register_account_node_key(
        &self,
        node: TokenId,
        account: AccountId,
        public: &NodePublicKey,
        audit: &[AuditEntry],
    ) -> Result<bool, CoreError> {
        let repl = self.replication()?;
        let _ops = repl.ops.lock().await;
        let grant = match self.arks.get(account) {
            Some(current) => seal_grants(
                &[(node, *public.as_bytes())],
                None,
                account,
                current.version,
                &current.key,
            )?
            .pop(),
            None => {
                if let Some(kek_id) = self.account_keks().kek_id(account) {
                    return Err(crate::account_kek::AccountKeks::unavailable(
                        account, &kek_id,
                    ));
                }
                None
            }
        };
        Ok(self
            .storage
            .register_account_node_key(node, account, *public.as_bytes(), grant, audit)
            .await?)
    }

    /// The ARK rotations of a node's revocation: for each account whose ARK is in memory, the
    /// next version (wrapped by its KEK), granted to the other nodes' keys for it, and every
    /// ARK-wrapped DEK of the account rewrapped under it. Accounts whose KEK is unavailable are
    /// left out (logged; see the module comment).
    pub(super) async fn prepare_ark_rotations(
        &self,
        revoked: TokenId,
        deks: &[DekRecord],
    ) -> Result<Vec<(ArkRotation, DataKey)>, CoreError> {
        let mut out = Vec::new();
        let held = self.arks.all();
        for (account, _, _) in self.storage.account_replication_keys().await? {
            if !held.iter().any(|(a, _)| *a == account) {
                tracing::warn!(account = %account, "the account's KEK is unavailable: its replication key is not rotated by this revocation");
            }
        }
        for (account, current) in held {
            let Some(Ok(kek)) = self.account_keks().provider(account) else {
                tracing::warn!(account = %account, "the account's KEK is unavailable: its replication key is not rotated by this revocation");
                continue;
            };
            let version = current.version.checked_add(1).ok_or_else(|| {
                CoreError::Internal("account replication key versions are used up".into())
            })?;
            let (next, key) = new_ark(&kek, account, version).await?;
            let keys = self.storage.account_node_keys(account).await?;
            let grants = seal_grants(&keys, Some(revoked), account, version, &next)?;
            let mut rewrapped = Vec::new();
            for record in deks
                .iter()
                .filter(|d| d.account_id == account && d.rk.as_ref().is_some_and(|rk| rk.ark))
            {
                let ctx = dek_context(account, record.key.id);
                let dek = match &record.rk {
                    Some(rk) if rk.version == current.version => {
                        ark_unwrap(&current.key, current.version, &rk.wrapped, &ctx)?
                    }
                    _ => kek_unwrap(&self.unwrapping_kek(record)?, &record.key, ctx).await?,
                };
                rewrapped.push((record.key.id, ark_wrap(&next, version, &dek, &ctx)?.bytes));
            }
            out.push((
                ArkRotation {
                    account_id: account,
                    version,
                    key,
                    grants,
                    deks: rewrapped,
                },
                next,
            ));
        }
        Ok(out)
    }

    /// Installs the ARK versions a committed revocation made.
    pub(super) fn install_ark_rotations(&self, done: Vec<(AccountId, u32, DataKey)>) {
        for (account, version, key) in done {
            self.arks.set(account, version, Arc::new(key));
        }
    }
}
