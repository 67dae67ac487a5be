//! The DEK gate: why no stream of new DEKs can starve a node's revocation.
//!
//! A revocation lists every stored DEK, rewraps each under the new replication key and commits
//! the rotation; storage refuses the commit (`Conflict`) if a DEK under the old key was stored
//! in between, since the revoked node could open it. New DEKs reach storage only carried by the
//! write that first seals under them (see the keyring's module comment), so "no DEK stored in
//! between" means "no write carrying a DEK storage may not hold yet commits in between".
//!
//! The gate is a tokio `RwLock<()>` in the keyring, reached only through a [`DekWrite`]:
//!
//! - A write seals every value first ([`DekWrite::seal`], which may make a DEK: a KEK or HSM
//!   call, made with no hold on the gate), and notes each DEK it carries
//!   ([`DekWrite::carry`]). Just before it goes to storage, [`DekWrite::enter`] takes the gate
//!   shared, if and only if it carries a DEK storage may not hold yet, and keeps it until
//!   [`DekWrite::finish`], called with storage's answer on every outcome (or the guard is
//!   dropped). Between `enter`
//!   and that answer the write does no KEK call, so **no KEK call is ever made under a shared
//!   hold**. A write carrying only stored DEKs (the common case: a DEK seals up to a million
//!   values over an hour) inserts no DEK and never touches the gate, so it never waits.
//! - A revocation does its slow, DEK-independent work first (the new RK and its KEK wrap,
//!   grants, the replicated instance keys, each account's new ARK version and its grants, and
//!   the KEK unwrap of any listed DEK that has no wrap by the RK or ARK it replaces), then takes
//!   the gate exclusive for the fast part only: list the DEKs, rewrap them in memory (software
//!   AES), commit, install the new RK. The one KEK call it can make under the gate is for a DEK
//!   without such a wrap stored after its first listing, which no build since RK wraps makes.
//!
//! tokio's `RwLock` is fair (first in, first out, write-preferring): once the revocation asks
//! for the exclusive hold, no further shared hold is granted before it, so it waits only for the
//! writes already holding the gate, each of which ends when storage answers it; it cannot be
//! overtaken by writes that start later, however many. A write that entered after the
//! revocation committed finds its DEKs made under the replaced keys and seals again
//! ([`StaleDeks`]). While the revocation holds the gate, no write carrying an unstored DEK can
//! reach storage, so its listing is complete, but for one case: a write cancelled after its job
//! reached the storage writer released its hold early, and may commit just after the listing.
//! The writer runs jobs in the order they were queued, so such a job is committed before the
//! revocation's own; the revocation keeps the gate across its attempts, and its next listing
//! sees it.
//!
//! Lock order: a write's other locks (an update's stripe) are taken before the gate, and a
//! revocation's `ops` lock before it; nothing else is taken while holding it. One task never
//! holds two [`DekWrite`]s that have entered: with a revocation waiting in between, the second
//! `enter` would wait for the revocation, which waits for the first.
//!
//! This is one process's lock. Several control-plane processes over one database (PostgreSQL)
//! need the same exclusion in storage: the revocation also takes storage's gate
//! (`Storage::close_dek_gate`), after this one, and a write of another process whose new DEK
//! storage refused meanwhile (`Conflict`) waits for it (`Storage::wait_dek_gate`, bounded)
//! before it seals again (`Coffer::refresh_after_conflict`). See docs/key-hierarchy.md.

use std::sync::Arc;

use coffer_storage::DekRecord;
use coffer_types::AccountId;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard};

use super::{Keyring, SealingKey};
use crate::CoreError;

/// One write's use of new DEKs, from its first seal until storage has answered it. Made by
/// [`Keyring::dek_write`]; see the module comment for the protocol: `seal` and `carry` each
/// value, `enter` once before the storage call, `finish` with storage's answer, whatever it is.
#[must_use = "a write sealing values holds its DekWrite until storage has answered it"]
#[derive(Debug)]
pub(crate) struct DekWrite<'a> {
    keys: &'a Keyring,
    held: Option<OwnedRwLockReadGuard<()>>,
    /// The DEKs this write carries that storage may not hold yet (each once): stored once it
    /// commits.
    unstored: Vec<DekRecord>,
}

/// The write's DEKs were made under keys a node's revocation replaced while it was sealing:
/// it seals its values again with a new [`DekWrite`] (the old one has given up its hold).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StaleDeks;

impl Keyring {
    /// Starts a write that seals values (see [`DekWrite`]).
    pub(crate) fn dek_write(&self) -> DekWrite<'_> {
        DekWrite {
            keys: self,
            held: None,
            unstored: Vec::new(),
        }
    }

    /// Whether a node's revocation holds the DEK gate or waits for it (for tests).
    #[cfg(test)]
    pub(crate) fn dek_gate_wanted(&self) -> bool {
        self.dek_gate.try_read().is_err()
    }

    /// The exclusive hold a revocation takes for its listing, rewrap and commit.
    pub(super) async fn close_dek_gate(&self) -> OwnedRwLockWriteGuard<()> {
        Arc::clone(&self.dek_gate).write_owned().await
    }
}

impl DekWrite<'_> {
    /// The DEK to seal one new value of `account` with; may make one (a KEK call, never under
    /// the gate). Only before [`DekWrite::enter`]. The write carries what [`DekWrite::carry`]
    /// returns for it, if it uses it.
    pub(crate) async fn seal(&mut self, account: AccountId) -> Result<SealingKey, CoreError> {
        if self.held.is_some() {
            return Err(CoreError::Internal(
                "a write asked for a DEK after entering the DEK gate".into(),
            ));
        }
        self.keys.sealing_key(account).await
    }

    /// Notes that the write carries `key`'s DEK, and returns the record it carries
    /// (`NewSecret::dek`, `SecretUpdate::dek`, a reseal batch's DEK). A DEK handed out by
    /// [`DekWrite::seal`] but not carried is not passed here.
    pub(crate) fn carry(&mut self, key: &SealingKey) -> DekRecord {
        if !key.stored && !self.unstored.iter().any(|r| r.key.id == key.id) {
            self.unstored.push(key.record.clone());
        }
        key.record.clone()
    }

    /// Called once every value is sealed, right before the storage call: takes the gate shared
    /// if the write carries a DEK storage may not hold yet (waiting while a node's revocation
    /// holds it or waits for it). `Err(StaleDeks)`: such a revocation replaced the keys the
    /// write's DEKs were made under; the hold is given up and the write must seal again.
    pub(crate) async fn enter(&mut self) -> Result<(), StaleDeks> {
        if self.unstored.is_empty() || self.held.is_some() {
            return Ok(());
        }
        self.held = Some(Arc::clone(&self.keys.dek_gate).read_owned().await);
        if self
            .unstored
            .iter()
            .all(|record| self.keys.made_under_current_rk(record))
        {
            return Ok(());
        }
        self.held = None;
        self.unstored.clear();
        Err(StaleDeks)
    }

    /// Storage answered the write: gives the hold back, on every outcome, and when storage
    /// committed it (`result` is `Ok`) first marks the DEKs it carried as stored, so that
    /// writes sealing under them from now on need no hold. Call it as soon as storage answers
    /// and before taking any other lock: a write that keeps its hold while it waits for a lock
    /// another write holds at `enter` deadlocks both with a waiting revocation.
    pub(crate) fn finish<T, E>(self, result: &Result<T, E>) {
        if result.is_err() || self.unstored.is_empty() {
            return;
        }
        let mut active = self.keys.lock_active();
        for record in &self.unstored {
            if let Some(dek) = active.get_mut(&record.account_id)
                && dek.record.key.id == record.key.id
            {
                dek.stored = true;
            }
        }
    }
}
