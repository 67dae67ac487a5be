//! The DEK gate: why no stream of new DEKs can starve a node's revocation.
//!
//! A revocation lists every stored DEK, rewraps each under the new replication key and commits
//! the rotation; storage refuses the commit (`Conflict`) if a DEK under the old key was stored
//! in between, since the revoked node could open it. New DEKs reach storage only carried by the
//! write that first seals under them (see the keyring's module comment), so "no DEK stored in
//! between" means "no write carrying a DEK storage may not hold yet commits in between".
//!
//! The gate is a tokio `RwLock<()>` in the keyring:
//!
//! - A write takes it shared ([`DekGate`], filled by [`Keyring::sealing_key`]) the moment it is
//!   handed a DEK not known to be stored, and holds it until storage has answered the write.
//!   The KEK (or HSM) call that makes a new DEK runs before the gate is taken, so the gate is
//!   never held across one (but for a batch whose second DEK is made after its first was taken;
//!   that second call runs under the batch's hold). A write sealing under a DEK already stored
//!   (the common case: a DEK seals up to a million values over an hour) inserts nothing and
//!   never touches the gate, so it never waits.
//! - A revocation does its slow, DEK-independent work first (the new RK and its KEK wrap,
//!   grants, the replicated instance keys, each account's new ARK version and its grants),
//!   then takes the gate exclusive for the fast part only: list the DEKs, rewrap them in memory
//!   (software AES from their RK wraps), commit, install the new RK.
//!
//! tokio's `RwLock` is fair (first in, first out, write-preferring): once the revocation asks
//! for the exclusive hold, no further shared hold is granted before it, so it waits only for the
//! writes already holding the gate, each of which ends when storage answers it; it cannot be
//! overtaken by writes that start later, however many. While it holds the gate, no write can be
//! handed an unstored DEK, so its listing is complete, but for one case: a write cancelled after
//! its job reached the storage writer released its hold early, and may commit just after the
//! listing. The writer runs jobs in the order they were queued, so such a job is committed
//! before the revocation's own; the revocation keeps the gate across its attempts, and its
//! second listing sees it. So two attempts always suffice.
//!
//! This is one process's lock: a deployment with several control-plane processes over one
//! database (PostgreSQL) needs the same exclusion in storage (docs/key-hierarchy.md).

use std::sync::Arc;

use coffer_types::{AccountId, DekId};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard};

use super::{Keyring, SealingKey};

/// A write's hold on the keyring's DEK gate, taken by [`Keyring::sealing_key`] when it hands
/// out a DEK storage may not hold yet. Keep it until storage has answered the write that
/// carries the DEK, then hand it to [`Keyring::written`] if the write committed (or drop it).
#[derive(Debug, Default)]
pub struct DekGate {
    held: Option<OwnedRwLockReadGuard<()>>,
    /// The DEKs handed out under this hold: stored once the write commits.
    fresh: Vec<(AccountId, DekId)>,
}

impl Keyring {
    /// `taken` (a DEK just counted a seal against, and whether it is stored) for a write
    /// holding `gate`: as it is when stored or the write holds the gate already; else after
    /// taking the gate, which waits while a revocation holds it or waits for it. `None`: a
    /// revocation replaced the RK meanwhile, so the DEK may no longer seal (the caller takes
    /// another).
    pub(super) async fn hold_for(
        &self,
        taken: (SealingKey, bool),
        gate: &mut DekGate,
    ) -> Option<SealingKey> {
        let (key, stored) = taken;
        if stored {
            return Some(key);
        }
        if gate.held.is_none() {
            let shared = Arc::clone(&self.dek_gate);
            let held = match shared.try_read_owned() {
                Ok(held) => held,
                Err(_) => Arc::clone(&self.dek_gate).read_owned().await,
            };
            gate.held = Some(held);
            // Taken after the DEK was: a revocation may have committed in between. Then the
            // hold is given back unless an earlier DEK of this write needs it, so the KEK call
            // that makes the next DEK is not made under it.
            if !self.made_under_current_rk(&key.record) {
                if gate.fresh.is_empty() {
                    gate.held = None;
                }
                return None;
            }
        }
        gate.fresh.push((key.record.account_id, key.id));
        Some(key)
    }

    /// The write that held `gate` committed: the DEKs it carried are stored, so writes sealing
    /// under them from now on need no hold. Then the hold is released.
    pub fn written(&self, gate: DekGate) {
        if gate.fresh.is_empty() {
            return;
        }
        let mut active = self.lock_active();
        for (account, id) in &gate.fresh {
            if let Some(dek) = active.get_mut(account)
                && dek.record.key.id == *id
            {
                dek.stored = true;
            }
        }
    }

    /// The exclusive hold a revocation takes for its listing, rewrap and commit.
    pub(super) async fn close_dek_gate(&self) -> OwnedRwLockWriteGuard<()> {
        Arc::clone(&self.dek_gate).write_owned().await
    }
}
