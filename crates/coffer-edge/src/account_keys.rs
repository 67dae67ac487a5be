//! Node account keys: an X25519 key this node makes for each account that has a replication key
//! of its own (ARK), kept in `DIR/node-account-keys/<account>.key` (mode 0600, the directory 0700),
//! registered with the node token (`PUT /replication/v1/node-key/accounts/{account}`). The
//! account's ARK versions are granted to it alone, never to the node key alone: each grant is
//! sealed to the node account key and the node key together (docs/envelope-format.md), so that
//! a node account key registered by someone holding only the node token opens nothing, and
//! deleting the key when the account is deleted leaves nothing on this node that opens the
//! account's DEKs (docs/edges.md, "Node account keys").
//!
//! Housekeeping (each round): accounts whose DEKs in the replica are ARK-wrapped get a key, and
//! it is registered until the replica holds a grant to this node; a grant that does not open
//! with this node's keys (another key was registered for this node and account first) is
//! reported, once, as an error; the keys (and the ARKs opened with them) of accounts the
//! replica no longer holds are deleted.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use coffer_api::replication::NodeKeyRegistration;
use coffer_crypto::{CryptoError, DataKey, Grant, NodeKey};
use coffer_storage::ArkStorage;
use coffer_storage::{AccountGrant, SqliteStorage, Storage, StorageError};
use coffer_types::{AccountId, TokenId};

use crate::upstream::{FetchError, Upstreams};

/// The directory of the node account keys, in the data dir.
pub(crate) const NODE_ACCOUNT_KEYS_DIR: &str = "node-account-keys";

/// This node's node account keys and the ARK versions opened with them.
#[derive(Debug)]
pub(crate) struct AccountKeys {
    dir: PathBuf,
    node: TokenId,
    /// The node's own key: every account grant needs it besides the node account key.
    node_key: Arc<NodeKey>,
    storage: Arc<SqliteStorage>,
    opened: RwLock<HashMap<(AccountId, u32), Arc<DataKey>>>,
    /// Accounts whose grant to this node was found not to open (reported once each).
    reported: Mutex<HashSet<AccountId>>,
}

/// What the replica holds for this node and one account.
enum GrantState {
    /// No grant to this node yet: register (again).
    None,
    /// The newest grant to this node opens with its keys.
    Opens,
    /// Grants to this node exist but the newest does not open with its keys.
    DoesNotOpen(u32),
}

/// Why a housekeeping round of node account keys stopped (the next round tries again).
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("the replica: {0}")]
    Storage(#[from] StorageError),
    #[error("the node account key: {0}")]
    Key(#[from] CryptoError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl AccountKeys {
    pub(crate) fn new(
        data_dir: &Path,
        node: TokenId,
        node_key: Arc<NodeKey>,
        storage: Arc<SqliteStorage>,
    ) -> AccountKeys {
        AccountKeys {
            dir: data_dir.join(NODE_ACCOUNT_KEYS_DIR),
            node,
            node_key,
            storage,
            opened: RwLock::new(HashMap::new()),
            reported: Mutex::new(HashSet::new()),
        }
    }

    /// Opens the grant to this node among `grants` with `key` (the node account key) and the
    /// node key.
    fn open_own(
        &self,
        key: &NodeKey,
        account: AccountId,
        version: u32,
        grants: &[AccountGrant],
    ) -> Option<DataKey> {
        grants
            .iter()
            .filter(|g| g.node_id == self.node)
            .find_map(|g| {
                let grant = Grant {
                    ephemeral_public: g.ephemeral_public,
                    sealed: g.sealed.clone(),
                };
                key.open_account_grant(&self.node_key, g.node_id, account, version, &grant)
                    .ok()
            })
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
        let grants = crate::node_key::read_grants(self.storage.account_grants(account, version))?;
        let ark = self
            .open_own(&key, account, version, &grants)
            .ok_or_else(|| {
                CryptoError::KeyUnavailable(format!(
                    "no grant of account {account}'s replication key version {version} opens with \
                     this node's keys (its node key and its key for the account) (yet)"
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
            tracing::warn!(error = %e, "node account keys: will retry");
        }
        if let Err(e) = self.delete_unused().await {
            tracing::warn!(error = %e, "node account keys of deleted accounts: will retry");
        }
    }

    async fn register_missing(
        &self,
        upstreams: &Upstreams,
        upstream: usize,
    ) -> Result<(), RoundError> {
        for account in self.storage.ark_accounts().await? {
            let key = self.key_for(account)?;
            match self.grant_state(account, &key).await? {
                GrantState::Opens => {
                    self.reported_lock().remove(&account);
                    continue;
                }
                GrantState::DoesNotOpen(version) => {
                    if self.reported_lock().insert(account) {
                        tracing::error!(account = %account, version, "this node's grant of the account's replication key does not open with its keys: a key for this node and account was registered first by someone else (its node token used from another machine?). The account's values cannot be read on this edge; register a new node (coffer node create) and start its edge on a fresh data dir");
                    }
                    continue;
                }
                GrantState::None => {}
            }
            let registration = NodeKeyRegistration {
                public_key: hex::encode(key.public_key().as_bytes()),
            };
            match upstreams
                .register_account_key(upstream, None, account, &registration)
                .await
            {
                Ok(_) => {
                    tracing::info!(account = %account, key = %key.public_key().fingerprint(), "key for the account registered; its replication key is granted through the feed, and checked to open once it arrives")
                }
                Err(e @ FetchError::Status { status: 409, .. }) => {
                    if self.reported_lock().insert(account) {
                        tracing::error!(account = %account, error = %e, "another key is registered for this node and account: the account's values cannot be read on this edge. Was its node token used from another machine? Register a new node and start its edge on a fresh data dir");
                    }
                }
                Err(
                    e @ FetchError::Status {
                        status: 400..=499, ..
                    },
                ) => {
                    tracing::error!(account = %account, error = %e, "the upstream refused this node's key for the account; retrying")
                }
                Err(e) => {
                    tracing::warn!(account = %account, error = %e, "cannot register this node's key for the account yet")
                }
            }
        }
        Ok(())
    }

    fn reported_lock(&self) -> std::sync::MutexGuard<'_, HashSet<AccountId>> {
        self.reported.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the newest grant of `account`'s ARK to this node opens with `key` and the node
    /// key (each later version is granted to every key registered for the account by the
    /// rotation that makes it). A grant that opens is kept opened.
    async fn grant_state(
        &self,
        account: AccountId,
        key: &NodeKey,
    ) -> Result<GrantState, RoundError> {
        let Some(version) = self
            .storage
            .account_grant_versions(account, self.node)
            .await?
            .pop()
        else {
            return Ok(GrantState::None);
        };
        let grants = self.storage.account_grants(account, version).await?;
        Ok(match self.open_own(key, account, version, &grants) {
            Some(ark) => {
                self.opened
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert((account, version), Arc::new(ark));
                GrantState::Opens
            }
            None => GrantState::DoesNotOpen(version),
        })
    }

    async fn delete_unused(&self) -> Result<(), RoundError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(RoundError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        for entry in entries {
            let path = entry
                .map_err(|source| RoundError::Io {
                    path: self.dir.clone(),
                    source,
                })?
                .path();
            let Some(account) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<AccountId>().ok())
            else {
                continue;
            };
            if self.storage.get_account(account).await?.is_some() {
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
                Err(source) => return Err(RoundError::Io { path, source }),
            }
        }
        Ok(())
    }
}
