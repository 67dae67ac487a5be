//! Account replication keys (ARKs): the replication key of one account that has a KEK of its
//! own, so that deleting the account shreds the wraps edges use too (docs/key-hierarchy.md,
//! "Shredding an account").
//!
//! An ARK version is stored wrapped by the account's KEK alone (never the instance KEK), and
//! the control plane holds the current version of each such account unwrapped. The account's
//! DEKs are RK-wrapped by it (`ark:<n>`) instead of the instance RK, and it is granted only to
//! the keys nodes registered for that account, each grant sealed to that key *and* the node's
//! own key (so a node token alone, which is all a registration proves, captures nothing).
//!
//! A node's revocation rotates every ARK in the revocation's transaction (see
//! `replication.rs`). An account whose rotation cannot be prepared (its KEK unavailable, or
//! failing) is left out rather than failing the revocation: the others are rotated, the account
//! is logged and audited, and its ARK leaves memory, so no DEK of it is made under the version
//! the revoked node may hold. The rotation is then owed (storage:
//! `accounts_owing_ark_rotation`) and made as soon as the account's KEK is back: at start, and
//! at each pass of the DEK lifecycle job ([`Keyring::catch_up_arks`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use coffer_crypto::{
    AccountGrantRecipient, DataKey, KekProvider, NodePublicKey, ark_purpose, ark_wrap,
    seal_account_grant,
};
use coffer_storage::{
    AccountGrant, ArkRotation, AuditEntry, DekRecord, NodeAccountKey, RkWrap, WrappedKeyRecord,
};
use coffer_types::{AccountId, TokenId};

use super::{Keyring, dek_context, new_wrapped_key, open_wrapped_key};
use crate::service::audit::{Actor, Details, Event, Target, build_entry};
use crate::{AuditAction, AuditOutcome, TargetKind};
use crate::{CoreError, NodeKeyRefusal};

#[derive(Debug, Clone)]
pub(super) struct CurrentArk {
    pub(super) version: u32,
    pub(super) key: Arc<DataKey>,
}

#[derive(Debug, Default)]
struct ArkMap {
    current: HashMap<AccountId, CurrentArk>,
    /// Accounts deleted in this process (ids are never reused). A revocation prepared before
    /// a delete may install its new ARK version after the delete forgot the account: the
    /// install must not bring the deleted account's key back into memory.
    deleted: HashSet<AccountId>,
}

/// The current ARK of each account that has one and whose KEK opened it.
#[derive(Debug, Default)]
pub(crate) struct AccountArks {
    map: RwLock<ArkMap>,
}

impl AccountArks {
    pub(super) fn get(&self, account: AccountId) -> Option<CurrentArk> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .current
            .get(&account)
            .cloned()
    }

    /// Makes `version` the account's current ARK in memory; nothing for a deleted account.
    pub(super) fn set(&self, account: AccountId, version: u32, key: Arc<DataKey>) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.deleted.contains(&account) {
            return;
        }
        map.current.insert(account, CurrentArk { version, key });
    }

    /// Drops the account's ARK from memory until it is opened again (its rotation is owed).
    fn set_aside(&self, account: AccountId) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .current
            .remove(&account);
    }

    /// Drops the deleted account's ARK for good.
    pub(super) fn forget_deleted(&self, account: AccountId) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        map.current.remove(&account);
        map.deleted.insert(account);
    }
}

/// Opens ARK `version` of `account` from its wrap under the account's KEK.
async fn open_ark(
    kek: &Arc<dyn KekProvider>,
    account: AccountId,
    version: u32,
    record: &WrappedKeyRecord,
) -> Result<DataKey, CoreError> {
    let what = format!("replication key version {version} of account {account}");
    open_wrapped_key(kek, Some(account), ark_purpose(version), record, what).await
}

/// A new ARK version for `account`, and its wrap under the account's KEK as stored.
async fn new_ark(
    kek: &Arc<dyn KekProvider>,
    account: AccountId,
    version: u32,
) -> Result<(DataKey, WrappedKeyRecord), CoreError> {
    new_wrapped_key(kek, Some(account), ark_purpose(version)).await
}

/// Grants of ARK `version` to each of `keys` (the node account key with the node's key), but
/// `skip`'s.
fn seal_grants(
    keys: &[NodeAccountKey],
    skip: Option<TokenId>,
    account: AccountId,
    version: u32,
    ark: &DataKey,
) -> Result<Vec<AccountGrant>, CoreError> {
    let mut grants = Vec::new();
    for key in keys.iter().filter(|k| Some(k.node_id) != skip) {
        let (account_key, node_key) = (
            super::stored_public_key(&key.account_key, key.node_id)?,
            super::stored_public_key(&key.node_key, key.node_id)?,
        );
        let to = AccountGrantRecipient {
            account_key: &account_key,
            node_key: &node_key,
        };
        let grant = seal_account_grant(to, key.node_id, account, version, ark)?;
        grants.push(AccountGrant {
            account_id: account,
            node_id: key.node_id,
            ark_version: version,
            ephemeral_public: grant.ephemeral_public,
            sealed: grant.sealed,
        });
    }
    Ok(grants)
}

/// An audit entry of the instance's own about `account`'s ARK.
fn rotation_entry(
    account: AccountId,
    outcome: AuditOutcome,
    actor: &'static str,
    node: Option<TokenId>,
    version: u32,
    reason: String,
) -> Result<AuditEntry, CoreError> {
    build_entry(
        account,
        Event {
            action: AuditAction::RotateReplicationKey,
            outcome,
            target: Target {
                node_id: node,
                ..Target::of(TargetKind::AccountReplicationKey)
            },
            details: Details {
                replication_key_version: Some(version),
                reason: Some(reason),
                ..Details::default()
            },
            who: Actor::Job(actor),
        },
    )
}

/// What a node's revocation does to the ARKs, before the DEKs are listed: the new versions
/// prepared, and the accounts left out (with their audit entries, written in the revocation's
/// transaction).
pub(super) struct ArkRotations {
    next: Vec<NextArk>,
    pub(super) deferred: Vec<AuditEntry>,
}

impl ArkRotations {
    /// The ARK version `account`'s prepared rotation replaces (`None`: left out, or no ARK).
    pub(super) fn replaced_version(&self, account: AccountId) -> Option<u32> {
        self.next
            .iter()
            .find(|n| n.account == account)
            .map(|n| n.current.version)
    }
}

impl Keyring {
    /// Opens `account`'s current ARK with `kek` (the account's own KEK), or makes its first
    /// version (granted to the keys nodes registered for the account), which retires the
    /// account's DEKs made under the instance RK: the lifecycle job re-seals their values onto
    /// DEKs the ARK wraps and destroys them. A version a revocation could not rotate (owed) is
    /// rotated first. Called when the account gets its KEK (before the KEK is put in use), at
    /// start, and by [`Keyring::catch_up_arks`].
    pub(crate) async fn ensure_ark(
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
            Some((version, record)) => {
                let key = open_ark(&kek, account, version, &record).await?;
                let owed = self
                    .storage
                    .accounts_owing_ark_rotation()
                    .await?
                    .contains(&account);
                if owed {
                    self.rotate_owed(account, &kek, version, key).await?
                } else {
                    (version, Arc::new(key))
                }
            }
            None => {
                let (key, record) = new_ark(&kek, account, 1).await?;
                let keys = self.storage.node_account_keys(account).await?;
                let grants = seal_grants(&keys, None, account, 1, &key)?;
                self.storage
                    .put_account_replication_key(account, 1, record, grants, &[])
                    .await?;
                tracing::info!(account = %account, "account replication key made; the account's DEKs under the instance replication key are retired");
                (1, Arc::new(key))
            }
        };
        self.arks.set(account, version, key);
        // Its DEK in use was made under the instance RK (or an older ARK version): the next
        // seal makes one under the ARK's current version.
        self.lock_active().remove(&account);
        Ok(())
    }

    /// Makes the rotation a revocation owed `account` (its current `version` was granted to a
    /// node since revoked): the next version, granted to the keys of the nodes in service, and
    /// every ARK-wrapped DEK of the account rewrapped under it (and retired), audited.
    async fn rotate_owed(
        &self,
        account: AccountId,
        kek: &Arc<dyn KekProvider>,
        version: u32,
        key: DataKey,
    ) -> Result<(u32, Arc<DataKey>), CoreError> {
        let current = CurrentArk {
            version,
            key: Arc::new(key),
        };
        let next = self.new_ark_version(account, kek, &current, None).await?;
        let deks = self.storage.list_deks().await?;
        let rewrapped = self
            .rewrap_ark_deks(&next, &deks, &super::Unwrapped::new())
            .await?;
        let rotation = next.rotation(rewrapped);
        let next_version = rotation.version;
        let entry = rotation_entry(
            account,
            AuditOutcome::Success,
            "account replication key catch-up",
            None,
            next_version,
            "owed by a node revocation that could not rotate it".into(),
        )?;
        self.storage
            .rotate_account_replication_key(rotation, &[entry])
            .await?;
        tracing::info!(account = %account, version = next_version, "account replication key rotated: the rotation a node revocation owed it is made");
        Ok((next_version, next.key))
    }

    /// Opens the ARK of every account whose KEK is available but whose ARK is not in memory (a
    /// KEK that was unavailable at start, a rotation a revocation had to leave out), making the
    /// rotations owed first. Run by each pass of the DEK lifecycle job; an account that still
    /// fails is logged and tried again at the next pass.
    pub(crate) async fn catch_up_arks(&self) -> Result<(), CoreError> {
        if self.replication.is_none() {
            return Ok(());
        }
        let owed = self.storage.accounts_owing_ark_rotation().await?;
        for (account, _, _) in self.storage.account_replication_keys().await? {
            if self.arks.get(account).is_some() && !owed.contains(&account) {
                continue;
            }
            // Still unavailable: it was logged when it became so.
            let Some(Ok(kek)) = self.account_keks().provider(account) else {
                continue;
            };
            if let Err(e) = self.ensure_ark(account, kek).await {
                tracing::warn!(account = %account, error = %e, "the account's replication key cannot be opened or rotated yet; its values cannot be written meanwhile");
            }
        }
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

    /// For an account that has an ARK in memory, or a DEK wrapped by one: whether `record` is
    /// wrapped by the account's current ARK version (a DEK that may seal). `None`: neither, so
    /// the instance RK decides (`made_under_current_rk`). An ARK-wrapped DEK of an account whose
    /// ARK is not in memory (set aside while a rotation is owed) is never current.
    pub(super) fn is_under_current_ark(&self, record: &DekRecord) -> Option<bool> {
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

    /// Drops the deleted `account`'s ARK from memory, for good (see [`ArkMap::deleted`]).
    pub(crate) fn forget_deleted_ark(&self, account: AccountId) {
        self.arks.forget_deleted(account);
    }

    /// Records `public` as `node`'s key for `account` and grants it the account's current ARK,
    /// sealed to that key and the node's own key together; `audit` is written
    /// with it. `Ok(false)`: this very key was registered before. A node without a node key yet,
    /// or an account without an ARK, answers `InvalidNodeKey`; an account whose ARK exists but
    /// could not be opened (its KEK unavailable) `AccountKekUnavailable`.
    pub(crate) async fn register_node_account_key(
        &self,
        node: TokenId,
        account: AccountId,
        public: &NodePublicKey,
        audit: &[AuditEntry],
    ) -> Result<bool, CoreError> {
        let repl = self.replication()?;
        // Checked here for a clear answer, and again by storage in the write (a node key, once
        // registered, never changes). Before `ops` is taken: a refusal never waits behind (or
        // holds up) a revocation.
        let node_key = self
            .storage
            .node_public_keys()
            .await?
            .into_iter()
            .find(|(id, _)| *id == node)
            .map(|(_, key)| key)
            .ok_or(CoreError::InvalidNodeKey(NodeKeyRefusal::NoNodeKey))?;
        if node_key == *public.as_bytes() {
            return Err(CoreError::NodeKeyConflict);
        }
        let _ops = repl.ops.lock().await;
        let grant = match self.arks.get(account) {
            Some(current) => {
                let keys = [NodeAccountKey {
                    node_id: node,
                    account_key: *public.as_bytes(),
                    node_key,
                }];
                seal_grants(&keys, None, account, current.version, &current.key)?.pop()
            }
            // Not before the account has an ARK: nothing is granted then, and whoever holds
            // the node token could take the node's place for the account ahead of its edge,
            // which registers only for accounts whose DEKs its replica holds ARK-wrapped.
            None => {
                if let Some(kek_id) = self.account_keks().kek_id(account) {
                    return Err(crate::account_kek::AccountKeks::unavailable(
                        account, &kek_id,
                    ));
                }
                // The same answer for an account that does not exist.
                return Err(CoreError::InvalidNodeKey(NodeKeyRefusal::NoArk));
            }
        };
        let recorded = self
            .storage
            .register_node_account_key(node, account, *public.as_bytes(), grant, audit)
            .await
            .map_err(|e| match e {
                coffer_storage::StorageError::NotFound(coffer_storage::Entity::NodeKey) => {
                    CoreError::InvalidNodeKey(NodeKeyRefusal::NoNodeKey)
                }
                other => other.into(),
            })?;
        Ok(recorded)
    }

    /// The part of an ARK rotation that does not depend on the account's DEKs (and may call its
    /// KEK, possibly an HSM): version `current.version + 1`, its wrap and its grants.
    async fn new_ark_version(
        &self,
        account: AccountId,
        kek: &Arc<dyn KekProvider>,
        current: &CurrentArk,
        revoked: Option<TokenId>,
    ) -> Result<NextArk, CoreError> {
        let version = current.version.checked_add(1).ok_or_else(|| {
            CoreError::Internal("account replication key versions are used up".into())
        })?;
        let (next, record) = new_ark(kek, account, version).await?;
        let keys = self.storage.node_account_keys(account).await?;
        let grants = seal_grants(&keys, revoked, account, version, &next)?;
        Ok(NextArk {
            account,
            current: current.clone(),
            version,
            key: Arc::new(next),
            record,
            grants,
        })
    }

    /// The account's ARK-wrapped DEKs among `deks`, rewrapped under `next` (from their wraps by
    /// the version it replaces: software AES; a KEK call only for a DEK without one).
    async fn rewrap_ark_deks(
        &self,
        next: &NextArk,
        deks: &[DekRecord],
        unwrapped: &super::Unwrapped,
    ) -> Result<Vec<(coffer_types::DekId, Vec<u8>)>, CoreError> {
        let account = next.account;
        let mut rewrapped = Vec::new();
        for record in deks
            .iter()
            .filter(|d| d.account_id == account && d.rk.as_ref().is_some_and(|rk| rk.ark))
        {
            let ctx = dek_context(account, record.key.id);
            let dek = self
                .dek_to_rewrap(
                    record,
                    true,
                    (next.current.version, &next.current.key),
                    unwrapped,
                )
                .await?;
            rewrapped.push((
                record.key.id,
                ark_wrap(&next.key, next.version, &dek, &ctx)?.bytes,
            ));
        }
        Ok(rewrapped)
    }

    /// The first part of `revoked`'s ARK rotations, before the DEKs are listed: a new version
    /// per account with a stored ARK, wrapped by the account's KEK and granted. An account
    /// whose version cannot be made (its KEK unavailable or failing) is left out, so that one
    /// account cannot stop or roll back the others': it is logged, gets an audit entry in its
    /// own log (written with the revocation), and its ARK leaves memory until the owed
    /// rotation is made (see the module comment).
    pub(super) async fn prepare_ark_rotations(
        &self,
        revoked: TokenId,
    ) -> Result<ArkRotations, CoreError> {
        let mut out = ArkRotations {
            next: Vec::new(),
            deferred: Vec::new(),
        };
        // Storage's list, not memory's: an account deleted meanwhile is not in it.
        for (account, version, _) in self.storage.account_replication_keys().await? {
            // Left out: the reason in the tenant's log (fixed words by kind), and the cause
            // for the operator's.
            let prepared = match (
                self.arks.get(account),
                self.account_keks().provider(account),
            ) {
                (Some(current), Some(Ok(kek))) => self
                    .new_ark_version(account, &kek, &current, Some(revoked))
                    .await
                    .map_err(|e| (left_out_reason(&e), e.to_string())),
                (_, Some(Err(e))) => Err((left_out_reason(&e), e.to_string())),
                (None, Some(Ok(_))) => Err((
                    LEFT_OUT_UNREACHABLE,
                    "its replication key is not open (its KEK failed earlier)".to_owned(),
                )),
                (_, None) => Err((
                    LEFT_OUT_MISSING,
                    "no KEK of its own is loaded for it".to_owned(),
                )),
            };
            match prepared {
                Ok(next) => out.next.push(next),
                Err((reason, cause)) => out
                    .deferred
                    .push(self.leave_out(account, revoked, version, reason, &cause)?),
            }
        }
        Ok(out)
    }

    /// The second part, under the DEK gate: each prepared version with the account's DEKs
    /// among `deks` rewrapped under it, and the keys to install once the revocation commits.
    /// An account whose DEK does not open is left out (its entry joins `prepared.deferred`).
    pub(super) async fn finish_ark_rotations(
        &self,
        revoked: TokenId,
        prepared: &ArkRotations,
        deks: &[DekRecord],
        unwrapped: &super::Unwrapped,
    ) -> Result<FinishedArks, CoreError> {
        let mut out = FinishedArks {
            rotations: Vec::new(),
            install: Vec::new(),
            deferred: prepared.deferred.clone(),
        };
        // An account deleted since its version was prepared has nothing left to rotate (and
        // storage would refuse its rotation).
        let live: HashSet<AccountId> = self
            .storage
            .account_replication_keys()
            .await?
            .into_iter()
            .map(|(account, _, _)| account)
            .collect();
        for next in prepared.next.iter().filter(|n| live.contains(&n.account)) {
            match self.rewrap_ark_deks(next, deks, unwrapped).await {
                Ok(rewrapped) => {
                    out.rotations.push(next.rotation(rewrapped));
                    out.install
                        .push((next.account, next.version, Arc::clone(&next.key)));
                }
                Err(e) => out.deferred.push(self.leave_out(
                    next.account,
                    revoked,
                    next.current.version,
                    left_out_reason(&e),
                    &e.to_string(),
                )?),
            }
        }
        Ok(out)
    }

    /// Leaves `account` out of `revoked`'s revocation: no DEK of it is made under `version`
    /// (which the revoked node may hold) from now on; logged with its `cause`, and the audit
    /// entry for the account's own log, with the fixed `reason`, returned.
    fn leave_out(
        &self,
        account: AccountId,
        revoked: TokenId,
        version: u32,
        reason: &'static str,
        cause: &str,
    ) -> Result<AuditEntry, CoreError> {
        self.arks.set_aside(account);
        tracing::error!(account = %account, node = %revoked, version, error = %cause, "the account's replication key cannot be rotated by this revocation: its values cannot be written until its KEK is back, and then it is rotated");
        rotation_entry(
            account,
            AuditOutcome::Failure,
            "node revocation",
            Some(revoked),
            version,
            reason.to_owned(),
        )
    }

    /// Installs the ARK versions a committed revocation made (never for an account deleted
    /// meanwhile: see [`AccountArks::set`]).
    pub(super) fn install_ark_rotations(&self, done: Vec<(AccountId, u32, Arc<DataKey>)>) {
        for (account, version, key) in done {
            self.arks.set(account, version, key);
        }
    }
}

/// The reason a tenant's log gives for its account left out of a revocation: its KEK is
/// missing (not loaded, or its key file or token object gone).
const LEFT_OUT_MISSING: &str =
    "not rotated: the account's KEK is missing; rotated once the operator restores it";
/// ... its KEK could not be used (the HSM or key store unreachable or failing).
const LEFT_OUT_UNREACHABLE: &str = "not rotated: the account's KEK could not be reached (its HSM or key store is unavailable); rotated once it is back";
/// ... anything else (a DEK that does not open, say).
const LEFT_OUT_OTHER: &str =
    "not rotated: the rotation failed on the control plane; retried by its DEK lifecycle job";

/// Why an account was left out of a revocation, in fixed words by the kind of failure: the
/// entry is in the tenant's own log, and the provider's error may name token labels, slots or
/// paths (the operator has it in the control plane's log line).
fn left_out_reason(error: &CoreError) -> &'static str {
    match error {
        CoreError::AccountKekUnavailable { .. } => LEFT_OUT_MISSING,
        CoreError::Unavailable(_) => LEFT_OUT_UNREACHABLE,
        _ => LEFT_OUT_OTHER,
    }
}

/// A new ARK version prepared for a rotation, before the account's DEKs are rewrapped.
pub(super) struct NextArk {
    account: AccountId,
    current: CurrentArk,
    version: u32,
    key: Arc<DataKey>,
    record: WrappedKeyRecord,
    grants: Vec<AccountGrant>,
}

impl NextArk {
    /// The rotation storage commits: this version with the account's DEKs rewrapped under it.
    fn rotation(&self, deks: Vec<(coffer_types::DekId, Vec<u8>)>) -> ArkRotation {
        ArkRotation {
            account_id: self.account,
            version: self.version,
            key: self.record.clone(),
            grants: self.grants.clone(),
            deks,
        }
    }
}

/// The ARK part of a revocation's rotation, under the DEK gate: what storage commits, the
/// versions to install once it has, and the audit entries of the accounts left out.
pub(super) struct FinishedArks {
    pub(super) rotations: Vec<ArkRotation>,
    pub(super) install: Vec<(AccountId, u32, Arc<DataKey>)>,
    pub(super) deferred: Vec<AuditEntry>,
}

#[cfg(test)]
mod tests;
