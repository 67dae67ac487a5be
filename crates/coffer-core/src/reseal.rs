//! The DEK lifecycle job of a control plane: re-seals values onto their account's current
//! DEK, prunes superseded versions past the configured number, and destroys the DEKs nothing
//! references any more.
//!
//! Each pass, in order:
//! 1. **prune**: past versions beyond the newest [`ResealSettings::keep_versions`] of each
//!    secret are deleted (replicas hold only current versions, so nothing is logged);
//! 2. **re-seal**: for each account, the values (past versions included) sealed under a DEK
//!    made before the account's cutoff (`Keyring::reseal_cutoff`: past its age, made before
//!    a node's revocation, or before a store's deletion gave it up) are opened and sealed
//!    again under the DEK the keyring seals with now, in batches of [`ResealSettings::batch`] paced by [`ResealSettings::pause`]. Storage
//!    replaces a row only if it still holds the bytes read (compare-and-set), so a concurrent
//!    PATCH or delete wins; a re-sealed current version appends `ValueResealed`, which edges
//!    apply without moving the version or `modified`;
//! 3. **destroy**: DEKs no stored value references, other than those the keyring may still
//!    hand out, are deleted in the transaction that finds them unreferenced, with a
//!    `DekDestroyed` entry each; their unwrapped copies leave the cache. Storage remembers
//!    their ids and refuses to store them again (a write that took one earlier seals again
//!    under a fresh DEK);
//! 4. **compact**: at most once per [`ResealSettings::compaction_gap`], the change log is
//!    compacted through its newest `DekDestroyed`, taking out every earlier entry that
//!    carried a destroyed DEK (its wrap, values sealed under it). Not per destruction: edges
//!    behind the new base resync from a snapshot, and must not be sent back to one faster
//!    than they finish it;
//! 5. **sweep**: unwrapped DEKs storage no longer holds (one an in-flight read put back into
//!    the cache after its destruction) leave memory.
//!
//! No cursor: the to-do list is the storage query "values under another DEK", so a job
//! stopped anywhere (shutdown, `kill -9`) resumes from what is stored.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use coffer_crypto::{Plaintext, SealedValue as Sealed, ValueContext, open, seal};
use coffer_storage::{Reseal, SealedValue, Storage};
use coffer_types::AccountId;

use crate::keyring::{Keyring, SealingKey};

/// How the DEK lifecycle job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResealSettings {
    /// Values per storage transaction.
    pub batch: usize,
    /// The pause after each batch, so the job leaves the writer to requests.
    pub pause: Duration,
    /// The time between passes (a store's deletion starts one at once).
    pub interval: Duration,
    /// How many versions of a value are kept: 1 keeps only the current one.
    pub keep_versions: u32,
    /// The least time between two compactions of the change log through the newest
    /// `DekDestroyed` (the first comes on the first pass). Destructions in between only wait
    /// for the next: edges behind the base need a snapshot, and a compaction per destruction
    /// (which a tenant can force: write, delete the store) could send them to snapshots
    /// faster than they finish one.
    pub compaction_gap: Duration,
}

impl ResealSettings {
    pub const DEFAULT_BATCH: usize = 256;
    /// The default [`ResealSettings::compaction_gap`]: at most one compaction past destroyed
    /// DEKs per 10 minutes. A relay compacts its own log on the same gap (coffer-edge), so
    /// the edges below it are sent to a snapshot no more often than by the control plane, and
    /// followers credit a slow snapshot's streaming time at most once per upstream per gap
    /// (coffer-replication): one constant, [`coffer_storage::DEFAULT_COMPACTION_GAP`].
    pub const DEFAULT_COMPACTION_GAP: Duration = coffer_storage::DEFAULT_COMPACTION_GAP;

    /// At most `values_per_second` values a second (at least one).
    pub fn with_rate(values_per_second: u32) -> ResealSettings {
        let rate = values_per_second.max(1);
        let batch = Self::DEFAULT_BATCH.min(rate as usize);
        ResealSettings {
            batch,
            pause: Duration::from_secs_f64(batch as f64 / f64::from(rate)),
            ..ResealSettings::default()
        }
    }
}

impl Default for ResealSettings {
    /// 256 values per batch, 20 ms apart (about 12,800 values a second at most), a pass every
    /// 10 s, only the current version kept, the log compacted past destroyed DEKs at most every
    /// 10 minutes.
    fn default() -> ResealSettings {
        ResealSettings {
            batch: Self::DEFAULT_BATCH,
            pause: Duration::from_millis(20),
            interval: Duration::from_secs(10),
            keep_versions: 1,
            compaction_gap: Self::DEFAULT_COMPACTION_GAP,
        }
    }
}

/// What the job has done since the process started, as status reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealStatus {
    /// A pass is under way.
    pub running: bool,
    pub resealed: u64,
    /// Values still sealed under a DEK due to be re-sealed away from.
    pub remaining: u64,
    pub destroyed_deks: u64,
    pub pruned_versions: u64,
    /// Why the last pass stopped early, if it did (the next pass tries again).
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct Progress {
    running: bool,
    resealed: u64,
    destroyed: u64,
    pruned: u64,
    error: Option<String>,
    /// A `DekDestroyed` may be retained: true at start (one may have been left by an earlier
    /// process), set by each destruction, cleared by a compaction.
    compaction_due: bool,
    last_compaction: Option<std::time::Instant>,
}

/// The DEK lifecycle of one control plane.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    storage: Arc<dyn Storage>,
    keys: Arc<Keyring>,
    settings: ResealSettings,
    /// Other instances write to the database too (`Coffer::share_database`, called before
    /// the job starts): a refused batch refreshes the keys as a secret write does.
    shared_database: bool,
    progress: Mutex<Progress>,
    wake: tokio::sync::Notify,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Lifecycle {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        keys: Arc<Keyring>,
        settings: ResealSettings,
        shared_database: bool,
    ) -> Lifecycle {
        Lifecycle {
            storage,
            keys,
            settings,
            shared_database,
            progress: Mutex::new(Progress {
                compaction_due: true,
                ..Progress::default()
            }),
            wake: tokio::sync::Notify::new(),
            task: Mutex::new(None),
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        // Every update is a plain assignment or addition.
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) async fn status(&self) -> Result<ResealStatus, crate::CoreError> {
        let mut remaining = 0;
        for account in self.storage.list_accounts().await? {
            let cutoff = self.keys.reseal_cutoff(account.id);
            remaining += self.storage.count_sealed_before(account.id, cutoff).await?;
        }
        let p = self.progress();
        Ok(ResealStatus {
            running: p.running,
            resealed: p.resealed,
            remaining,
            destroyed_deks: p.destroyed,
            pruned_versions: p.pruned,
            error: p.error.clone(),
        })
    }

    /// Starts the background loop: a pass at once, then one per interval or wake-up.
    pub(crate) fn spawn(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            loop {
                let outcome = this.pass().await;
                {
                    let mut p = this.progress();
                    p.running = false;
                    p.error = outcome.err();
                    if let Some(e) = &p.error {
                        tracing::warn!(error = %e, "DEK lifecycle pass stopped early; the next pass retries");
                    }
                }
                let _ = tokio::time::timeout(this.settings.interval, this.wake.notified()).await;
            }
        });
        let mut slot = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = slot.replace(task.abort_handle()) {
            old.abort();
        }
    }

    /// Asks for a pass now (a store was deleted).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn stop(&self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    /// One pass: prune, re-seal, destroy. `Err` says what stopped it, or the first account that
    /// could not be re-sealed (the others, and the destruction, went on).
    pub(crate) async fn pass(&self) -> Result<(), String> {
        self.progress().running = true;
        // Accounts' replication keys a revocation could not rotate, or that could not be
        // opened, are rotated or opened first: their values are re-sealed only once they are.
        if let Err(e) = self.keys.catch_up_arks().await {
            tracing::warn!(error = %e, "cannot catch up on accounts' replication keys; the next pass retries");
        }
        let work = self.prune_reseal_destroy().await;
        // Whatever stopped the work, the log is still compacted past what was destroyed
        // before (a recurring error must not keep destroyed DEKs' wraps in the log for good).
        let compacted = self.compact_if_due().await;
        // A DEK an in-flight read unwrapped again after its destruction leaves memory too.
        if let Err(e) = self.keys.forget_destroyed().await {
            tracing::warn!(error = %e, "cannot sweep destroyed DEKs from memory");
        }
        work.and(compacted)
    }

    /// Prunes superseded versions, re-seals every account it can, destroys what nothing
    /// references. `Err`: what stopped it, or the first account that could not be re-sealed.
    async fn prune_reseal_destroy(&self) -> Result<(), String> {
        let batch = self.settings.batch.max(1);
        loop {
            let n = self
                .storage
                .prune_versions(self.settings.keep_versions, batch)
                .await
                .map_err(|e| format!("pruning versions: {e}"))?;
            self.progress().pruned += n;
            if n < batch as u64 {
                break;
            }
            tokio::time::sleep(self.settings.pause).await;
        }
        let accounts = self
            .storage
            .list_accounts()
            .await
            .map_err(|e| format!("listing accounts: {e}"))?;
        // One account that cannot be re-sealed (its own KEK unavailable, a value that does not
        // open) must not hold up the others, nor the destruction of what nothing references:
        // its failure is reported, and the pass goes on.
        let mut failed = None;
        for account in accounts {
            if let Err(e) = self.reseal_account(account.id, batch).await {
                tracing::warn!(account = %account.id, error = %e, "cannot re-seal this account's values yet");
                failed.get_or_insert(e);
            }
        }
        loop {
            let destroyed = self
                .storage
                .destroy_unreferenced_deks(self.keys.sealing_deks(), batch)
                .await
                .map_err(|e| format!("destroying DEKs: {e}"))?;
            for d in &destroyed {
                self.keys.forget(d.account_id, d.dek_id);
                tracing::info!(account = %d.account_id, dek = %d.dek_id, "DEK destroyed: no value references it");
            }
            {
                let mut p = self.progress();
                p.destroyed += destroyed.len() as u64;
                p.compaction_due |= !destroyed.is_empty();
            }
            if destroyed.len() < batch {
                break;
            }
            tokio::time::sleep(self.settings.pause).await;
        }
        failed.map_or(Ok(()), Err)
    }

    /// Compacts the log through the newest `DekDestroyed` if a destruction may be retained
    /// and the last compaction is at least [`ResealSettings::compaction_gap`] old.
    async fn compact_if_due(&self) -> Result<(), String> {
        {
            let p = self.progress();
            let recent = p
                .last_compaction
                .is_some_and(|at| at.elapsed() < self.settings.compaction_gap);
            if !p.compaction_due || recent {
                return Ok(());
            }
        }
        let compacted = self
            .storage
            .compact_destroyed_deks()
            .await
            .map_err(|e| format!("compacting the log past destroyed DEKs: {e}"))?;
        let mut p = self.progress();
        p.compaction_due = false;
        if let Some(base) = compacted {
            p.last_compaction = Some(std::time::Instant::now());
            tracing::info!(base, "change log compacted past destroyed DEKs");
        }
        Ok(())
    }

    async fn reseal_account(&self, account: AccountId, batch: usize) -> Result<(), String> {
        // Batches refused in a row (`Conflict`) and retried after a refresh.
        let mut refused = 0;
        loop {
            let current = self.keys.current_dek(account);
            let cutoff = self.keys.reseal_cutoff(account);
            let values = self
                .storage
                .values_sealed_before(account, cutoff, current, batch)
                .await
                .map_err(|e| format!("reading values of account {account}: {e}"))?;
            if values.is_empty() {
                return Ok(());
            }
            // One seal counted per value, like any write; a DEK that runs out of seals (or
            // ages out) mid-batch ends the batch, and the next one goes on with its successor
            // (that successor is not carried by this batch).
            let mut write = self.keys.dek_write();
            let mut first: Option<SealingKey> = None;
            let mut reseals = Vec::with_capacity(values.len());
            for value in values {
                let sealing = write
                    .seal(account)
                    .await
                    .map_err(|e| format!("a DEK for account {account}: {e}"))?;
                if first.as_ref().is_some_and(|f| f.id != sealing.id) {
                    break;
                }
                if value.dek_id != sealing.id {
                    // Opens the old value (a KEK call for a DEK not cached): all before the
                    // batch enters the DEK gate.
                    reseals.push(self.reseal_one(&sealing, value).await?);
                }
                first.get_or_insert(sealing);
            }
            let Some(sealing) = first else {
                continue;
            };
            if reseals.is_empty() {
                // Every value read is under the DEK the keyring now seals with.
                continue;
            }
            let carried = write.carry(&sealing);
            if write.enter().await.is_err() {
                // A node's revocation replaced the keys meanwhile: read the batch again.
                continue;
            }
            let done = self.storage.reseal_values(Some(carried), reseals).await;
            write.finish(&done);
            if self.shared_database
                && refused < crate::limits::UPDATE_RETRIES
                && matches!(done, Err(coffer_storage::StorageError::Conflict))
            {
                // Another instance may have rotated the replication key (a node's revocation)
                // or retired this DEK, or its DEK gate refused it: refreshed as a secret
                // write is, and the batch is read and sealed again.
                refused += 1;
                self.keys
                    .refresh_shared(account)
                    .await
                    .map_err(|e| format!("re-sealing values of account {account}: {e}"))?;
                continue;
            }
            refused = 0;
            let done = done.map_err(|e| format!("re-sealing values of account {account}: {e}"))?;
            self.progress().resealed += done;
            tokio::time::sleep(self.settings.pause).await;
        }
    }

    async fn reseal_one(&self, sealing: &SealingKey, value: SealedValue) -> Result<Reseal, String> {
        let what = format!(
            "secret {} version {} of account {}",
            value.secret_id, value.version, value.account_id
        );
        let old_key = self
            .keys
            .opening_key(value.account_id, value.dek_id)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let mut ctx = ValueContext {
            account: value.account_id,
            store: value.store_id,
            secret: value.secret_id,
            version: value.version,
            dek: value.dek_id,
        };
        let plain: Plaintext = open(&old_key, &ctx, &Sealed(value.sealed.clone()))
            .map_err(|_| format!("{what} does not open under its DEK; left as it is"))?;
        ctx.dek = sealing.id;
        let sealed = seal(&sealing.key, &ctx, &plain).map_err(|e| format!("{what}: {e}"))?;
        Ok(Reseal {
            dek_id: sealing.id,
            sealed: sealed.0,
            old: value,
        })
    }
}
