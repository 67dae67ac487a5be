//! KEK rotation: a KEK with versions ([`KekVersions`]), and the background job that rewraps
//! every stored key (DEKs and instance keys) from the retiring versions to the active one, then
//! retires them.
//!
//! The job needs no cursor of its own: what is left to do is "the keys wrapped by a retiring
//! version", a storage query. So a job stopped at any point (shutdown, `kill -9`) resumes at the
//! next start (`Coffer::open_rotating` finds a retiring version and starts it again), and
//! nothing is lost: a key's row is only ever replaced, in one statement, by the same key
//! wrapped under the new version, and only if it still holds the bytes that were unwrapped
//! (compare-and-set). Values are never touched, and nothing is appended to the change log.
//!
//! Retiring a version (the provider destroys its key) happens only once storage holds no key
//! wrapped by it. A write that took a DEK wrapped by the old version just before the switch
//! (the keyring hands out no such DEK after it) may commit at any time, so storage decides:
//! `Storage::retire_kek` marks the KEK id retired in the transaction that finds no key wrapped
//! by it, and from then on refuses to store a key wrapped by it (`Conflict`: the write seals
//! again under a fresh DEK). Only then is the key destroyed. [`RewrapSettings::grace`] is a
//! pause before that, so writes in flight at the switch commit (and are rewrapped) rather than
//! retry; safety does not depend on its length.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use coffer_crypto::{CryptoError, DekContext, KekId, KekProvider, WrappedDataKey};
use coffer_storage::{KeyOwner, Rewrap, Storage, StorageError, StoredKey};
use coffer_types::{AccountId, Timestamp};

use crate::CoreError;
use crate::kek_call::on_blocking_pool;

/// The lifecycle of one KEK version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KekState {
    /// Wraps new keys; exactly one version is active.
    Active,
    /// Superseded; unwraps the keys it still wraps until they are rewrapped.
    Retiring,
    /// Destroyed; no stored key names it.
    Retired,
}

impl KekState {
    pub fn as_str(self) -> &'static str {
        match self {
            KekState::Active => "active",
            KekState::Retiring => "retiring",
            KekState::Retired => "retired",
        }
    }
}

/// One KEK version, as the provider records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekVersion {
    pub version: u32,
    pub kek_id: KekId,
    /// `file` or `pkcs11`.
    pub provider: &'static str,
    pub state: KekState,
    pub created: Timestamp,
}

/// A KEK with versions: wraps with the active one, unwraps with the one a wrapped key names.
/// The calls that change versions do I/O (files, an HSM) and run on the blocking pool.
pub trait KekVersions: KekProvider {
    /// Every version, retired ones included, oldest first.
    fn versions(&self) -> Vec<KekVersion>;
    /// Makes a new version and makes it the active one; the previous active version becomes
    /// [`KekState::Retiring`]. The new key exists before it is recorded, and is recorded before
    /// it wraps anything. `Unsupported` when the provider cannot make versions.
    fn add_version(&self) -> Result<KekVersion, CoreError>;
    /// Records `version` (which must be retiring) as retired, then destroys its key.
    fn retire(&self, version: u32) -> Result<(), CoreError>;
}

/// How fast the rewrap job goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewrapSettings {
    /// Keys per storage transaction.
    pub batch: usize,
    /// The pause after each batch, so the job does not starve requests of the writer and the
    /// KEK.
    pub pause: Duration,
    /// The pause between the end of the rewrap and the retirement, for writes in flight at the
    /// switch to commit (a later one is refused by storage and retries; see the module comment).
    pub grace: Duration,
    /// The pause before retrying after the KEK or storage was unavailable.
    pub retry: Duration,
}

impl RewrapSettings {
    pub const DEFAULT_BATCH: usize = 256;
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

    /// At most `keys_per_second` keys a second (at least one).
    pub fn with_rate(keys_per_second: u32) -> RewrapSettings {
        let rate = keys_per_second.max(1);
        let batch = Self::DEFAULT_BATCH.min(rate as usize);
        RewrapSettings {
            batch,
            pause: Duration::from_secs_f64(batch as f64 / f64::from(rate)),
            ..RewrapSettings::default()
        }
    }
}

impl Default for RewrapSettings {
    /// 256 keys per batch, 20 ms apart: about 12,800 keys a second at most, a small share of
    /// the writer and the KEK.
    fn default() -> RewrapSettings {
        RewrapSettings {
            batch: Self::DEFAULT_BATCH,
            pause: Duration::from_millis(20),
            grace: Self::DEFAULT_GRACE,
            retry: Duration::from_secs(1),
        }
    }
}

/// What the job has done since it (re)started.
#[derive(Debug, Default)]
struct Progress {
    running: bool,
    rewrapped: u64,
    error: Option<String>,
    task: Option<tokio::task::AbortHandle>,
}

/// A rotation's status as [`crate::Coffer::kek_status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationStatus {
    pub running: bool,
    pub rewrapped: u64,
    pub error: Option<String>,
}

/// The rotation machinery of one control plane.
#[derive(Debug)]
pub(crate) struct Rotation {
    pub(crate) kek: Arc<dyn KekVersions>,
    storage: Arc<dyn Storage>,
    settings: RewrapSettings,
    progress: Mutex<Progress>,
    /// Serialises starts, so two at once cannot both pass the "none running" check.
    pub(crate) starting: tokio::sync::Mutex<()>,
}

/// Called by the job once a version is retired, to audit it.
pub(crate) type OnRetired = Box<
    dyn Fn(KekVersion) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

impl Rotation {
    pub(crate) fn new(
        kek: Arc<dyn KekVersions>,
        storage: Arc<dyn Storage>,
        settings: RewrapSettings,
    ) -> Rotation {
        Rotation {
            kek,
            storage,
            settings,
            progress: Mutex::new(Progress::default()),
            starting: tokio::sync::Mutex::new(()),
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        // Every update is a plain assignment; a panic elsewhere cannot leave it half-made.
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn status(&self) -> RotationStatus {
        let p = self.progress();
        RotationStatus {
            running: p.running,
            rewrapped: p.rewrapped,
            error: p.error.clone(),
        }
    }

    pub(crate) fn retiring(&self) -> Vec<KekVersion> {
        self.kek
            .versions()
            .into_iter()
            .filter(|v| v.state == KekState::Retiring)
            .collect()
    }

    /// Starts the rewrap job unless it runs already.
    pub(crate) fn spawn(self: &Arc<Self>, on_retired: OnRetired) {
        let mut p = self.progress();
        if p.running {
            return;
        }
        p.running = true;
        p.rewrapped = 0;
        p.error = None;
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let outcome = this.run(&on_retired).await;
            let mut p = this.progress();
            p.running = false;
            p.task = None;
            if let Err(e) = outcome {
                tracing::error!(error = %e, "KEK rotation stopped; the retiring KEK version stays until it is fixed and the server restarts");
                p.error = Some(e);
            }
        });
        p.task = Some(task.abort_handle());
    }

    /// Stops the job (at shutdown). What it did is stored; the next start resumes.
    pub(crate) fn stop(&self) {
        let mut p = self.progress();
        if let Some(task) = p.task.take() {
            task.abort();
        }
        p.running = false;
    }

    /// Rewraps until no retiring version remains; `Err` names a key that cannot be rewrapped.
    async fn run(&self, on_retired: &OnRetired) -> Result<(), String> {
        loop {
            let Some(version) = self.retiring().into_iter().next() else {
                return Ok(());
            };
            match self.drain(&version).await {
                Ok(()) => {}
                Err(Step::Retry(e)) => {
                    tracing::warn!(error = %e, "KEK rotation: will retry");
                    tokio::time::sleep(self.settings.retry).await;
                    continue;
                }
                Err(Step::Stop(e)) => return Err(e),
            }
            tokio::time::sleep(self.settings.grace).await;
            // Storage marks the id retired in the transaction that finds no key wrapped by it;
            // from then on it refuses to store one. Before the key is destroyed, and idempotent
            // (a crash between this and the destruction repeats it).
            match self.storage.retire_kek(&version.kek_id.0).await {
                Ok(()) => {}
                // A late write stored a key under it: rewrap that too.
                Err(StorageError::Conflict) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "KEK rotation: will retry");
                    tokio::time::sleep(self.settings.retry).await;
                    continue;
                }
            }
            let kek = Arc::clone(&self.kek);
            let number = version.version;
            match on_blocking_pool(move || kek.retire(number)).await {
                Ok(()) => {
                    tracing::info!(version = number, kek = %version.kek_id, "KEK version retired");
                    on_retired(version).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, version = number, "KEK rotation: could not retire; will retry");
                    tokio::time::sleep(self.settings.retry).await;
                }
            }
        }
    }

    /// Rewraps every stored key of `version`, batch by batch.
    async fn drain(&self, version: &KekVersion) -> Result<(), Step> {
        loop {
            let batch = self
                .storage
                .keys_wrapped_by(&version.kek_id.0, self.settings.batch)
                .await
                .map_err(|e| Step::Retry(e.to_string()))?;
            if batch.is_empty() {
                return Ok(());
            }
            let kek = Arc::clone(&self.kek);
            let (rewraps, failure) =
                on_blocking_pool(move || Ok(rewrap_batch(&*kek, &*kek, batch)))
                    .await
                    .map_err(|e| Step::Retry(e.to_string()))?;
            let done = if rewraps.is_empty() {
                0
            } else {
                self.storage
                    .rewrap_keys(rewraps)
                    .await
                    .map_err(|e| Step::Retry(e.to_string()))?
            };
            self.progress().rewrapped += done;
            if let Some(failure) = failure {
                return Err(failure);
            }
            tokio::time::sleep(self.settings.pause).await;
        }
    }
}

pub(crate) enum Step {
    /// The KEK or storage is unavailable for now.
    Retry(String),
    /// A key that will never rewrap (corrupt, or wrapped by another KEK).
    Stop(String),
}

/// Rewraps what it can of `batch` from the KEK `from` (which unwraps them) to `to` (which
/// wraps them now), stopping at the first key that fails; the keys before it are returned to be
/// stored. A KEK rotation passes the versioned KEK as both; an account given its own KEK passes
/// the instance KEK and the account's.
pub(crate) fn rewrap_batch(
    from: &dyn KekProvider,
    to: &dyn KekProvider,
    batch: Vec<StoredKey>,
) -> (Vec<Rewrap>, Option<Step>) {
    let mut out = Vec::with_capacity(batch.len());
    for stored in batch {
        match rewrap_one(from, to, &stored) {
            Ok(rewrap) => out.push(rewrap),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

fn rewrap_one(
    from: &dyn KekProvider,
    to: &dyn KekProvider,
    stored: &StoredKey,
) -> Result<Rewrap, Step> {
    let (account, purpose, what) = match &stored.owner {
        KeyOwner::Account(account) => (
            Some(*account),
            crate::kek_call::DEK_PURPOSE,
            format!("DEK {} of account {account}", stored.key.id),
        ),
        KeyOwner::Instance(purpose) => {
            (None, purpose.as_str(), format!("instance key {purpose:?}"))
        }
    };
    let ctx = DekContext {
        account,
        dek: stored.key.id,
        purpose,
    };
    let wrapped = WrappedDataKey {
        kek_id: KekId(stored.key.kek_id.clone()),
        bytes: stored.key.wrapped.clone(),
    };
    let key = from.unwrap(&wrapped, &ctx).map_err(|e| match e {
        CryptoError::Opaque => Step::Stop(format!(
            "{what} does not unwrap with KEK {} (corrupt, or wrapped by another KEK); it was left as it is",
            stored.key.kek_id
        )),
        other => Step::Retry(format!("{what}: {other}")),
    })?;
    let new = to
        .wrap(&key, &ctx)
        .map_err(|e| Step::Retry(format!("{what}: {e}")))?;
    Ok(Rewrap {
        old: stored.clone(),
        new_kek_id: new.kek_id.0,
        new_wrapped: new.bytes,
    })
}

/// The account the operator's token belongs to, where instance-level acts are audited.
pub(crate) async fn find_operator_account(
    storage: &dyn Storage,
) -> Result<Option<AccountId>, CoreError> {
    for account in storage.list_accounts().await? {
        if storage
            .list_tokens(account.id)
            .await?
            .iter()
            .any(|t| t.operator)
        {
            return Ok(Some(account.id));
        }
    }
    Ok(None)
}
