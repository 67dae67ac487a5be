//! Per-account keys: an X25519 key this node makes for each account that has a replication key
//! of its own (ARK), kept in `DIR/account-keys/<account>.key` (mode 0600, the directory 0700),
//! registered with the node token (`PUT /replication/v1/node-key/accounts/{account}`). The
//! account's ARK versions are granted to it alone, never to the node key, so deleting the key
//! when the account is deleted leaves nothing on this node that opens the account's DEKs
//! (docs/edges.md, "Per-account keys").
//!
//! Housekeeping (each round): accounts whose DEKs in the replica are ARK-wrapped get a key, and
//! it is registered until the replica holds a grant to it; the keys (and the ARKs opened with
//! them) of accounts the replica no longer holds are deleted.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use coffer_api::replication::NodeKeyRegistration;
use coffer_crypto::{CryptoError, DataKey, Grant, NodeKey};
use coffer_storage::{SqliteStorage, Storage};
use coffer_types::{AccountId, TokenId};

use crate::upstream::Upstreams;

/// The directory of the per-account keys, in the data dir.
pub(crate) const ACCOUNT_KEYS_DIR: &str = "account-keys";

/// This node's per-account keys and the ARK versions opened with them.
#[derive(Debug)]
pub(crate) struct AccountKeys {
    dir: PathBuf,
    node: TokenId,
    storage: Arc<SqliteStorage>,
    opened: RwLock<HashMap<(AccountId, u32), Arc<DataKey>>>,
}

impl AccountKeys {
    pub(crate) fn new(data_dir: &Path, node: TokenId, storage: Arc<SqliteStorage>) -> AccountKeys {
        AccountKeys {
            dir: data_dir.join(ACCOUNT_KEYS_DIR),
            node,
            storage,
            opened: RwLock::new(HashMap::new()),
        }
    }

    fn path(&self, account: AccountId) -> PathBuf {
        self.dir.join(format!("{account}.key"))
    }

    /// ARK `version` of `account`, opened once from its grant to this node's key for the
    /// account. Runs on the blocking pool (the keyring's unwrap), so it may wait on storage.
    pub(crate) fn ark(
        &self,
        account: AccountId,
        version: u32,
    ) -> Result<Arc<DataKey>, CryptoError> {
        if let Some(ark) = self
            .opened
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(account, version))
        {
            return Ok(Arc::clone(ark));
        }
        let key = match NodeKey::open(&self.path(account)) {
            Ok(key) => key,
            Err(CryptoError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(CryptoError::KeyUnavailable(format!(
                    "this node has no key for account {account} yet"
                )));
            }
            Err(e) => return Err(e),
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| CryptoError::KeyUnavailable("no runtime to read grants with".into()))?;
        let grants = runtime
            .block_on(self.storage.account_grants(account, version))
            .map_err(|e| CryptoError::KeyUnavailable(format!("reading the account grants: {e}")))?;
        let ark = grants
            .iter()
            .filter(|g| g.node_id == self.node)
            .find_map(|g| {
                key.open_account_grant(
                    g.node_id,
                    account,
                    version,
                    &Grant {
                        ephemeral_public: g.ephemeral_public,
                        sealed: g.sealed.clone(),
                    },
                )
                .ok()
            })
            .ok_or_else(|| {
                CryptoError::KeyUnavailable(format!(
                    "no grant of account {account}'s replication key version {version} opens with \
                     this node's key for it (yet)"
                ))
            })?;
        let ark = Arc::new(ark);
        self.opened
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((account, version), Arc::clone(&ark));
        Ok(ark)
    }

    /// Opens (or makes) this node's key for `account`.
    fn key_for(&self, account: AccountId) -> Result<NodeKey, CryptoError> {
        if !self.dir.exists() {
            std::fs::create_dir_all(&self.dir)
                .and_then(|()| {
                    std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|e| {
                    CryptoError::KeyUnavailable(format!("cannot make {}: {e}", self.dir.display()))
                })?;
        }
        NodeKey::open_or_create(&self.path(account))
    }

    /// One housekeeping round: registers a key for each account that needs one and has no
    /// grant to it yet, and deletes the keys of accounts the replica no longer holds.
    pub(crate) async fn housekeep(&self, upstreams: &Upstreams, upstream: usize) {
        if let Err(e) = self.register_missing(upstreams, upstream).await {
            tracing::warn!(error = %e, "per-account keys: will retry");
        }
        if let Err(e) = self.delete_unused().await {
            tracing::warn!(error = %e, "per-account keys of deleted accounts: will retry");
        }
    }

    async fn register_missing(&self, upstreams: &Upstreams, upstream: usize) -> Result<(), String> {
        for account in self
            .storage
            .ark_accounts()
            .await
            .map_err(|e| e.to_string())?
        {
            let key = self.key_for(account).map_err(|e| e.to_string())?;
            if self.granted(account).await? {
                continue;
            }
            let registration = NodeKeyRegistration {
                public_key: hex::encode(key.public_key().as_bytes()),
            };
            match upstreams
                .register_account_key(upstream, None, account, &registration)
                .await
            {
                Ok(_) => {
                    tracing::info!(account = %account, "key for the account registered; its replication key is granted through the feed")
                }
                Err(e) => {
                    tracing::warn!(account = %account, error = %e, "cannot register this node's key for the account yet")
                }
            }
        }
        Ok(())
    }

    /// Whether the replica holds a grant of `account`'s ARK to this node (each later version is
    /// granted to every key registered for the account by the rotation that makes it).
    async fn granted(&self, account: AccountId) -> Result<bool, String> {
        Ok(!self
            .storage
            .account_grant_versions(account, self.node)
            .await
            .map_err(|e| e.to_string())?
            .is_empty())
    }

    async fn delete_unused(&self) -> Result<(), String> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", self.dir.display())),
        };
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            let Some(account) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<AccountId>().ok())
            else {
                continue;
            };
            if self
                .storage
                .get_account(account)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                continue;
            }
            self.opened
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|(a, _), _| *a != account);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(account = %account, "the deleted account's key is deleted")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(())
    }
}
