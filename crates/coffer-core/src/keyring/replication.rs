//! The replication key (RK): what edges open the feed's keys with, so that no edge holds the
//! KEK (docs/edges.md, "Keys").
//!
//! The control plane keeps the RK wrapped by the KEK, as instance key `replication-key:<n>`,
//! and holds the current version unwrapped. Every DEK is stored wrapped twice: by the KEK (the
//! control plane's own copy, what its reads use) and by the RK (what the feed carries). A node
//! registers an X25519 public key and gets the current RK sealed to it (a grant, in the feed).
//! Revoking a node that registered a key makes RK `n + 1`, grants it to every remaining node
//! with a key, rewraps every DEK and replicated instance key under it, all in the revocation's
//! own transaction, and makes every account start a new DEK: what is written afterwards is
//! sealed under a DEK the revoked node never saw, wrapped by an RK it never got.
//!
//! Why in the revocation's transaction rather than a background job: the revoked node must
//! not be able to open anything written after the revocation is acknowledged, and a DEK is
//! rewrapped from the RK's wrap (software AES, no KEK call), so even 100,000 DEKs take well
//! under a second; one transaction also leaves nothing half-rotated to resume.
//!
//! A revocation cannot be starved by writes making new DEKs: it makes every KEK call that does
//! not depend on the DEKs first, then takes the keyring's DEK gate, and storage's for the
//! writes of other instances (`Storage::close_dek_gate`), for the listing, rewrap and commit
//! alone (`keyring/gate.rs`).

use std::sync::{Arc, PoisonError, RwLock};

use coffer_crypto::{DataKey, NodePublicKey, rk_unwrap, rk_wrap, seal_grant};
use coffer_storage::{
    AuditEntry, DekRecord, NodeGrant, NodeRecord, REPLICATED_KEY_PURPOSES,
    REPLICATION_KEY_PURPOSE_PREFIX, RkRotation, RkWrap, Storage, StorageError, WrappedKeyRecord,
};
use coffer_types::{AccountId, DekId, Timestamp, TokenId};

use super::account_replication::ArkRotations;
use super::{
    Keyring, Unwrapped, dek_context, instance_context, kek_unwrap, new_wrapped_key,
    open_wrapped_key, stored_public_key,
};
use crate::CoreError;

/// Attempts at a revocation's commit, at most. Under the DEK gate another attempt follows a
/// refused one only while each listing differs from the one before (a DEK a cancelled write
/// stored, an account deleted): see `keyring/gate.rs`. This bounds it whatever happens.
const ROTATION_ATTEMPTS: usize = 16;

#[derive(Debug, Clone)]
struct Current {
    version: u32,
    key: Arc<DataKey>,
}

/// The control plane's replication key, current version.
#[derive(Debug)]
pub(crate) struct ReplicationKeys {
    current: RwLock<Current>,
    /// Held by a registration or a rotation for its whole course, so that a grant is never
    /// made of a version a rotation is replacing (account replication keys' too).
    pub(super) ops: tokio::sync::Mutex<()>,
}

/// The instance-key purpose an RK version is stored under, `replication-key:<version>`. Its KEK
/// wrap is bound to it (the AAD names it, as every instance key's names its purpose), so a KEK
/// rotation rewraps RK versions like any other instance key.
fn rk_purpose(version: u32) -> String {
    format!("{REPLICATION_KEY_PURPOSE_PREFIX}{version}")
}

/// A new RK of `version`, and its KEK wrap as stored (an instance key: no account).
async fn new_rk(
    kek: &Arc<dyn coffer_crypto::KekProvider>,
    version: u32,
) -> Result<(DataKey, WrappedKeyRecord), CoreError> {
    new_wrapped_key(kek, None, rk_purpose(version)).await
}

/// Opens RK `version`'s KEK wrap.
async fn open_rk(
    kek: &Arc<dyn coffer_crypto::KekProvider>,
    version: u32,
    record: &WrappedKeyRecord,
) -> Result<DataKey, CoreError> {
    let what = format!("replication key version {version}");
    open_wrapped_key(kek, None, rk_purpose(version), record, what).await
}

impl ReplicationKeys {
    /// Loads the current RK, or makes version 1 on first start.
    pub(super) async fn open(
        kek: &Arc<dyn coffer_crypto::KekProvider>,
        storage: &Arc<dyn Storage>,
    ) -> Result<ReplicationKeys, CoreError> {
        let (version, record) = match storage.latest_replication_key().await? {
            Some(found) => found,
            None => {
                let (_, record) = new_rk(kek, 1).await?;
                (
                    1,
                    storage
                        .put_instance_key_if_absent(&rk_purpose(1), record)
                        .await?,
                )
            }
        };
        let key = open_rk(kek, version, &record).await?;
        Ok(ReplicationKeys {
            current: RwLock::new(Current {
                version,
                key: Arc::new(key),
            }),
            ops: tokio::sync::Mutex::new(()),
        })
    }

    fn current(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Keyring {
    /// After storage refused a write of `account`'s values (`Conflict`) on a database shared
    /// with other instances: waits for the DEK gate in storage if it refused this process
    /// (`Storage::wait_dek_gate`, bounded: `Unavailable`), then [`Keyring::after_conflict`].
    /// What a secret write and the re-seal job both do before they seal again.
    pub(crate) async fn refresh_shared(&self, account: AccountId) -> Result<(), CoreError> {
        self.storage.wait_dek_gate().await?;
        self.after_conflict(Some(account)).await
    }

    /// After storage refused a write (`Conflict`): on a database shared with other instances,
    /// another one may have rotated the RK (a node's revocation there), after which storage
    /// refuses DEKs this process makes under the old one, or destroyed the DEK this process
    /// seals `account`'s values with. Drops that DEK (the next seal makes or finds another)
    /// and loads a newer RK if storage holds one, so that a retry can succeed. Accounts' own
    /// replication keys are not reloaded (account KEKs are refused on a shared database).
    pub(crate) async fn after_conflict(&self, account: Option<AccountId>) -> Result<(), CoreError> {
        if let Some(account) = account {
            self.lock_active().remove(&account);
        }
        let Some(repl) = &self.replication else {
            return Ok(());
        };
        let Some((version, record)) = self.storage.latest_replication_key().await? else {
            return Ok(());
        };
        if version <= repl.current().version {
            return Ok(());
        }
        let key = Arc::new(open_rk(&self.kek, version, &record).await?);
        {
            let mut current = repl.current.write().unwrap_or_else(PoisonError::into_inner);
            if version > current.version {
                *current = Current { version, key };
            }
        }
        // Every DEK made under the old RK is refused now: each account makes a new one.
        self.lock_active().clear();
        tracing::info!(
            version,
            "another instance rotated the replication key; using its version"
        );
        Ok(())
    }

    pub(super) fn replication(&self) -> Result<&ReplicationKeys, CoreError> {
        self.replication.as_ref().ok_or_else(|| {
            CoreError::Internal("only the control plane holds a replication key".into())
        })
    }

    /// The current replication key version (`None` on an edge).
    pub fn replication_key_version(&self) -> Option<u32> {
        self.replication.as_ref().map(|r| r.current().version)
    }

    /// `key`'s RK wrap under the current RK (`None` on an edge).
    pub(super) fn rk_wrap(
        &self,
        key: &DataKey,
        ctx: &coffer_crypto::DekContext<'_>,
    ) -> Result<Option<RkWrap>, CoreError> {
        let Some(repl) = &self.replication else {
            return Ok(None);
        };
        let current = repl.current();
        let wrapped = rk_wrap(&current.key, current.version, key, ctx)?;
        Ok(Some(RkWrap {
            version: current.version,
            wrapped: wrapped.bytes,
            ark: false,
        }))
    }

    /// Whether a DEK may seal new values: it was made under the current RK (so after the last
    /// revocation). An in-memory record keeps the RK version it was made under; a stored DEK
    /// made before a revocation was rewrapped to the current version but marked retired in the
    /// revocation's transaction, and `latest_dek` never returns a retired DEK.
    pub(super) fn made_under_current_rk(&self, record: &DekRecord) -> bool {
        let Some(repl) = &self.replication else {
            return true;
        };
        // An account with its own replication key seals only under DEKs its current version
        // wraps.
        if let Some(current) = self.is_under_current_ark(record) {
            return current;
        }
        let current = repl.current();
        record
            .rk
            .as_ref()
            .is_some_and(|rk| rk.version == current.version)
    }

    /// Wraps, under the current RK, the DEKs and replicated instance keys stored without an
    /// RK wrap (a data dir made before replication keys existed). Done once, at start.
    pub(super) async fn backfill_rk_wraps(
        &self,
        instance_keys: &[(&'static str, &DataKey)],
    ) -> Result<(), CoreError> {
        let current = self.replication()?.current();
        let mut deks = Vec::new();
        for record in self.storage.list_deks().await? {
            if record.rk.is_some() {
                continue;
            }
            let ctx = dek_context(record.account_id, record.key.id);
            let key = kek_unwrap(&self.kek, &record.key, ctx).await?;
            deks.push((
                record.key.id,
                rk_wrap(&current.key, current.version, &key, &ctx)?.bytes,
            ));
        }
        let mut keys = Vec::new();
        for &(purpose, key) in instance_keys {
            if self.storage.instance_key_rk(purpose).await?.is_some() {
                continue;
            }
            let stored = self
                .storage
                .get_instance_key(purpose)
                .await?
                .ok_or_else(|| CoreError::Internal(format!("instance key {purpose} vanished")))?;
            let ctx = instance_context(stored.id, purpose);
            keys.push((
                purpose.to_owned(),
                rk_wrap(&current.key, current.version, key, &ctx)?.bytes,
            ));
        }
        if deks.is_empty() && keys.is_empty() {
            return Ok(());
        }
        tracing::info!(
            deks = deks.len(),
            instance_keys = keys.len(),
            "wrapping the keys edges need under the replication key"
        );
        Ok(self
            .storage
            .backfill_rk_wraps(current.version, deks, keys)
            .await?)
    }

    /// Records `public` as `node`'s key and grants it the current RK. `Ok(false)`: the node
    /// had registered this very key before.
    pub(crate) async fn register_node_key(
        &self,
        node: TokenId,
        public: &NodePublicKey,
        audit: &[AuditEntry],
    ) -> Result<bool, CoreError> {
        let repl = self.replication()?;
        let _ops = repl.ops.lock().await;
        let current = repl.current();
        let grant = seal_grant(public, node, current.version, &current.key)?;
        let grant = NodeGrant {
            node_id: node,
            rk_version: current.version,
            ephemeral_public: grant.ephemeral_public,
            sealed: grant.sealed,
        };
        Ok(self
            .storage
            .register_node_key(node, *public.as_bytes(), grant, audit)
            .await?)
    }

    /// Revokes `node` and rotates the RK (see the module comment). For a node that never
    /// registered a key there is nothing to rotate: `Storage::revoke_node` alone. On a database
    /// shared with other instances, one may rotate between this one's preparation and its
    /// commit: the rotation is then prepared again, once, from the version it made.
    pub(crate) async fn revoke_node(
        &self,
        node: TokenId,
        at: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<NodeRecord, CoreError> {
        match self.revoke_node_once(node, at, audit).await {
            Err(CoreError::Conflict) => self.revoke_node_once(node, at, audit).await,
            other => other,
        }
    }

    async fn revoke_node_once(
        &self,
        node: TokenId,
        at: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<NodeRecord, CoreError> {
        let Some(repl) = &self.replication else {
            return Ok(self.storage.revoke_node(node, at, audit).await?);
        };
        let _ops = repl.ops.lock().await;
        let keys = self.storage.node_public_keys().await?;
        if !keys.iter().any(|(id, _)| *id == node) {
            return Ok(self.storage.revoke_node(node, at, audit).await?);
        }
        // The slow part first, outside the DEK gate: every KEK (possibly HSM) call that does not
        // depend on which DEKs exist, and the KEK unwraps of the DEKs stored now that have no
        // wrap by the keys being replaced.
        let prepared = self.prepare_rotation(repl, node, &keys).await?;
        // Then the gate, held across the attempts (see `keyring/gate.rs` for why they end):
        // no write carrying a DEK storage may not hold reaches storage until the new RK is
        // installed.
        let _gate = self.close_dek_gate().await;
        // And the gate in storage, which keeps out the DEKs of other instances' writes on a
        // shared database (a no-op where this process alone writes); taken after this
        // process's own, so its writes wait here rather than being refused.
        let stored_gate = self.storage.close_dek_gate().await?;
        let mut listed = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let finished = self.finish_rotation(node, &prepared).await?;
            // An account left out of the rotation is audited in its own log, with the
            // revocation.
            let mut entries = audit.to_vec();
            entries.extend(finished.deferred);
            // The hold must still be in force for this listing to be complete; checking it
            // also keeps it for longer than the commit can take.
            stored_gate.check().await?;
            match self
                .storage
                .revoke_node_rotating(node, at, finished.rotation, &entries)
                .await
            {
                Ok(record) => {
                    let version = prepared.version;
                    *repl.current.write().unwrap_or_else(PoisonError::into_inner) = Current {
                        version,
                        key: Arc::clone(&prepared.key),
                    };
                    self.install_ark_rotations(finished.install);
                    // Every account starts a new DEK for its next seal.
                    self.lock_active().clear();
                    tracing::info!(node = %node, version, attempt, "node revoked; replication key rotated");
                    return Ok(record);
                }
                Err(StorageError::Conflict) => {
                    // On a database shared with other instances, another one may have rotated
                    // meanwhile: load its version. This rotation, prepared for the version
                    // before, is then stale: the caller's retry prepares from the new one.
                    self.after_conflict(None).await?;
                    if repl.current().version >= prepared.version {
                        return Err(CoreError::Conflict);
                    }
                    // Something changed since this listing: go on while each listing differs
                    // from the one before (progress), which under the gate comes to an end.
                    if attempt >= ROTATION_ATTEMPTS || listed.as_ref() == Some(&finished.listed) {
                        return Err(StorageError::Conflict.into());
                    }
                    tracing::warn!(node = %node, attempt, "a node revocation's rotation met a DEK stored or an account deleted meanwhile; listing again");
                    listed = Some(finished.listed);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The part of a revocation's rotation that does not depend on the DEKs, with every KEK
    /// call it needs: the new RK and its wrap, its grants, the replicated instance keys
    /// rewrapped, and each account's new ARK version (`prepare_ark_rotations`).
    async fn prepare_rotation(
        &self,
        repl: &ReplicationKeys,
        revoked: TokenId,
        keys: &[(TokenId, [u8; 32])],
    ) -> Result<PreparedRotation, CoreError> {
        let current = repl.current();
        let version = current
            .version
            .checked_add(1)
            .ok_or_else(|| CoreError::Internal("replication key versions are used up".into()))?;
        let (next, record) = new_rk(&self.kek, version).await?;
        let mut grants = Vec::new();
        for (id, public) in keys.iter().filter(|(id, _)| *id != revoked) {
            let public = stored_public_key(public, *id)?;
            let grant = seal_grant(&public, *id, version, &next)?;
            grants.push(NodeGrant {
                node_id: *id,
                rk_version: version,
                ephemeral_public: grant.ephemeral_public,
                sealed: grant.sealed,
            });
        }
        let mut instance_keys = Vec::new();
        for purpose in REPLICATED_KEY_PURPOSES {
            let Some(stored) = self.storage.get_instance_key(purpose).await? else {
                continue;
            };
            let ctx = instance_context(stored.id, purpose);
            let key = match self.storage.instance_key_rk(purpose).await? {
                Some(rk) if rk.version == current.version => {
                    rk_unwrap(&current.key, current.version, &rk.wrapped, &ctx)?
                }
                _ => kek_unwrap(&self.kek, &stored, ctx).await?,
            };
            instance_keys.push((
                purpose.to_owned(),
                rk_wrap(&next, version, &key, &ctx)?.bytes,
            ));
        }
        let arks = self.prepare_ark_rotations(revoked).await?;
        let unwrapped = self.unwrap_unwrapped_deks(&current, &arks).await?;
        Ok(PreparedRotation {
            current,
            version,
            key: Arc::new(next),
            record,
            grants,
            instance_keys,
            arks,
            unwrapped,
        })
    }

    /// The DEKs stored now that have no wrap by the RK (or their account's ARK version) being
    /// replaced, unwrapped by their KEK before the DEK gate is taken, so that the rewrap under
    /// it is software AES only. One that does not unwrap is left to the rewrap, which fails
    /// the revocation (or leaves its account out) as it would have.
    async fn unwrap_unwrapped_deks(
        &self,
        current: &Current,
        arks: &ArkRotations,
    ) -> Result<Unwrapped, CoreError> {
        let mut unwrapped = Unwrapped::new();
        for record in self.storage.list_deks().await? {
            let replaced = match &record.rk {
                Some(rk) if rk.ark => match arks.replaced_version(record.account_id) {
                    Some(version) => (true, version),
                    None => continue,
                },
                _ => (false, current.version),
            };
            if record
                .rk
                .as_ref()
                .is_some_and(|rk| (rk.ark, rk.version) == replaced)
            {
                continue;
            }
            let ctx = dek_context(record.account_id, record.key.id);
            let Ok(kek) = self.unwrapping_kek(&record) else {
                continue;
            };
            if let Ok(key) = kek_unwrap(&kek, &record.key, ctx).await {
                unwrapped.insert(record.key.id, Arc::new(key));
            }
        }
        Ok(unwrapped)
    }

    /// The part that depends on the DEKs, under the DEK gate: every DEK listed and rewrapped
    /// from its RK (or ARK) wrap in memory. Every DEK listed is retired by storage in the
    /// rotation's transaction (it may have reached the node being revoked, under the old RK);
    /// one stored between the listing and the commit is missing from the rotation, which
    /// storage refuses (`Conflict`, and another attempt).
    async fn finish_rotation(
        &self,
        revoked: TokenId,
        prepared: &PreparedRotation,
    ) -> Result<FinishedRotation, CoreError> {
        let (current, version) = (&prepared.current, prepared.version);
        let stored = self.storage.list_deks().await?;
        #[cfg(test)]
        {
            let pause = self
                .after_listing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some((listed, go)) = pause {
                let _ = listed.send(());
                let _ = go.await;
            }
        }
        let mut deks = Vec::new();
        for record in &stored {
            // Wrapped by its account's own replication key: rotated with that below.
            if record.rk.as_ref().is_some_and(|rk| rk.ark) {
                continue;
            }
            let ctx = dek_context(record.account_id, record.key.id);
            let key = self
                .dek_to_rewrap(
                    record,
                    false,
                    (current.version, &current.key),
                    &prepared.unwrapped,
                )
                .await?;
            deks.push((
                record.key.id,
                rk_wrap(&prepared.key, version, &key, &ctx)?.bytes,
            ));
        }
        let arks = self
            .finish_ark_rotations(revoked, &prepared.arks, &stored, &prepared.unwrapped)
            .await?;
        let mut listed_deks: Vec<DekId> = stored.iter().map(|d| d.key.id).collect();
        listed_deks.sort_unstable();
        let mut listed_accounts: Vec<AccountId> =
            arks.rotations.iter().map(|r| r.account_id).collect();
        listed_accounts.sort_unstable();
        Ok(FinishedRotation {
            rotation: RkRotation {
                version,
                key: WrappedKeyRecord {
                    created: Timestamp::now(),
                    ..prepared.record.clone()
                },
                grants: prepared.grants.clone(),
                deks,
                instance_keys: prepared.instance_keys.clone(),
                accounts: arks.rotations,
            },
            install: arks.install,
            deferred: arks.deferred,
            listed: (listed_deks, listed_accounts),
        })
    }
}

/// A revocation's rotation, prepared before the DEKs are listed: the RK it replaces, the new
/// one with its wrap and grants, the replicated instance keys rewrapped, the new ARK versions
/// (with the accounts left out), and the DEKs that needed their KEK to be unwrapped.
struct PreparedRotation {
    current: Current,
    version: u32,
    key: Arc<DataKey>,
    record: WrappedKeyRecord,
    grants: Vec<NodeGrant>,
    instance_keys: Vec<(String, Vec<u8>)>,
    arks: ArkRotations,
    unwrapped: Unwrapped,
}

/// One attempt's part under the DEK gate: what storage commits, the new ARK versions to
/// install once it has, the audit entries of the accounts left out, and what was listed (to
/// tell whether another attempt makes progress).
struct FinishedRotation {
    rotation: RkRotation,
    install: Vec<(AccountId, u32, Arc<DataKey>)>,
    deferred: Vec<AuditEntry>,
    listed: (Vec<DekId>, Vec<AccountId>),
}
