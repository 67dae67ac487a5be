//! Account KEKs: an account may be given a KEK of its own, which from then on alone wraps the
//! control plane's copy of its DEKs (their replication-key wraps, which edges use, stay as they
//! are). Destroying that key shreds the account on the control plane: a copy of the database
//! taken at any time holds the account's DEKs wrapped by that key only (once the rewrap job has
//! moved the DEKs made before it), so nothing the instance still holds opens them.
//!
//! Core decides *which* KEK wraps; the server makes, records, opens and destroys the keys
//! ([`AccountKekStore`]: key files in the data dir, or key objects in the instance KEK's
//! PKCS#11 token). The registry ([`AccountKeks`]) maps an
//! account to its KEK, or to the reason it could not be opened: an account whose key is
//! missing answers `AccountKekUnavailable` for every operation that needs one of its DEKs
//! unwrapped, and everything else serves.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use coffer_crypto::{KekId, KekProvider};
use coffer_storage::Storage;
use coffer_types::AccountId;

use crate::kek_call::on_blocking_pool;
use crate::rotation::{RewrapSettings, Step, rewrap_batch};
use crate::{CoreError, InvalidKind};

/// What `coffer account set-kek --kek` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountKekSpec {
    /// `file`: a new random 32-byte key file that Coffer makes in the data dir.
    NewFile,
    /// `file:PATH`: an existing key file (32 bytes, mode 0600).
    File(PathBuf),
    /// `pkcs11`: a new AES-256 key that Coffer generates in the instance KEK's token.
    NewPkcs11,
    /// `pkcs11:…`: an existing AES-256 key in the instance KEK's token.
    Pkcs11(String),
}

impl AccountKekSpec {
    /// Parses the `kek` field of `PUT /accounts/{id}/kek`.
    pub fn parse(text: &str) -> Result<AccountKekSpec, CoreError> {
        let invalid = |message: String| CoreError::invalid(InvalidKind::Field, "/kek", message);
        if text == "file" {
            return Ok(AccountKekSpec::NewFile);
        }
        if let Some(path) = text.strip_prefix("file:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(invalid(format!(
                    "a key file must be named by an absolute path (file:/path/to/key), not {:?}",
                    path.display().to_string()
                )));
            }
            return Ok(AccountKekSpec::File(path));
        }
        if text == "pkcs11" {
            return Ok(AccountKekSpec::NewPkcs11);
        }
        if text.starts_with("pkcs11:") {
            return Ok(AccountKekSpec::Pkcs11(text.to_owned()));
        }
        Err(invalid(
            "expected `file` (a new key file in the data dir), `file:/path` (an existing 32-byte \
             key file), `pkcs11` (a new key in the instance KEK's token) or a `pkcs11:` URI (an \
             existing AES-256 key there)"
                .to_owned(),
        ))
    }
}

/// What an account's KEK is, as recorded; never secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountKekInfo {
    pub kek_id: KekId,
    /// `file` or `pkcs11`.
    pub provider: String,
    /// Where the key lives: a path, or a URI without any PIN.
    pub location: String,
}

/// One recorded account KEK as the store loaded it: opened, or why it could not be.
#[derive(Debug)]
pub struct LoadedAccountKek {
    pub account: AccountId,
    pub info: AccountKekInfo,
    pub kek: Result<Arc<dyn KekProvider>, String>,
}

/// The server's side of account KEKs: key files (or token objects) and their records. The
/// calls do I/O and run on the blocking pool.
pub trait AccountKekStore: Send + Sync + std::fmt::Debug {
    /// Every recorded account KEK. A key that cannot be opened is returned with the reason: the
    /// server starts anyway, and only that account is unavailable.
    fn load(&self) -> Vec<LoadedAccountKek>;
    /// Makes (or takes) the key `spec` names for `account`, and records it, in that order.
    fn create(
        &self,
        account: AccountId,
        spec: &AccountKekSpec,
    ) -> Result<(AccountKekInfo, Arc<dyn KekProvider>), CoreError>;
    /// Destroys `account`'s key (a key file the store made is unlinked; one the operator named
    /// is left in place and logged), then its record. Nothing recorded is not an error.
    fn destroy(&self, account: AccountId) -> Result<(), CoreError>;
}

#[derive(Debug)]
struct Slot {
    info: AccountKekInfo,
    kek: Result<Arc<dyn KekProvider>, String>,
}

/// The accounts with a KEK of their own. Read on each seal (one read lock, never held across
/// an await or a KEK call).
#[derive(Debug, Default)]
pub(crate) struct AccountKeks {
    slots: RwLock<HashMap<AccountId, Slot>>,
}

impl AccountKeks {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<AccountId, Slot>> {
        // Every update is one insert or remove: a panic elsewhere cannot leave it half-made.
        self.slots.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<AccountId, Slot>> {
        self.slots.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The id of `account`'s own KEK, if it has one (available or not).
    pub(crate) fn kek_id(&self, account: AccountId) -> Option<KekId> {
        self.read().get(&account).map(|s| s.info.kek_id.clone())
    }

    /// The ids of every account's own KEK (available or not).
    pub(crate) fn kek_ids(&self) -> Vec<KekId> {
        self.read()
            .values()
            .map(|s| s.info.kek_id.clone())
            .collect()
    }

    /// `account`'s own KEK: `None` if it has none, `Some(Err)` if it has one that is
    /// unavailable.
    pub(crate) fn provider(
        &self,
        account: AccountId,
    ) -> Option<Result<Arc<dyn KekProvider>, CoreError>> {
        // The reason was logged once, when the key failed to open; not again per request.
        self.read().get(&account).map(|s| match &s.kek {
            Ok(kek) => Ok(Arc::clone(kek)),
            Err(_) => Err(AccountKeks::unavailable(account, &s.info.kek_id)),
        })
    }

    pub(crate) fn unavailable(account: AccountId, kek_id: &KekId) -> CoreError {
        CoreError::AccountKekUnavailable {
            account,
            kek_id: kek_id.0.clone(),
        }
    }

    /// What is recorded for `account`, and why its key is unavailable if it is.
    pub(crate) fn info(&self, account: AccountId) -> Option<(AccountKekInfo, Option<String>)> {
        self.read()
            .get(&account)
            .map(|s| (s.info.clone(), s.kek.as_ref().err().cloned()))
    }

    pub(crate) fn insert(
        &self,
        account: AccountId,
        info: AccountKekInfo,
        kek: Result<Arc<dyn KekProvider>, String>,
    ) {
        self.write().insert(account, Slot { info, kek });
    }

    pub(crate) fn remove(&self, account: AccountId) -> bool {
        self.write().remove(&account).is_some()
    }
}

/// The rewrap job of one account, moving its DEKs from the instance KEK to its own.
#[derive(Debug, Default)]
pub(crate) struct RewrapJob {
    pub(crate) running: bool,
    pub(crate) rewrapped: u64,
    pub(crate) error: Option<String>,
    task: Option<tokio::task::AbortHandle>,
}

/// The jobs of every account that has one (running or stopped on an error).
#[derive(Debug, Default)]
pub(crate) struct RewrapJobs {
    jobs: Mutex<HashMap<AccountId, Arc<Mutex<RewrapJob>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update is a plain assignment: a panic elsewhere cannot leave it half-made.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RewrapJobs {
    /// (running, rewrapped, error) of `account`'s job, if it has had one.
    pub(crate) fn status(&self, account: AccountId) -> Option<(bool, u64, Option<String>)> {
        let jobs = lock(&self.jobs);
        let job = jobs.get(&account)?;
        let job = lock(job);
        Some((job.running, job.rewrapped, job.error.clone()))
    }

    /// Starts moving `account`'s DEKs from `from` onto `to` (the account's own KEK).
    pub(crate) fn spawn(
        &self,
        account: AccountId,
        storage: Arc<dyn Storage>,
        from: Arc<dyn KekProvider>,
        to: Arc<dyn KekProvider>,
        settings: RewrapSettings,
    ) {
        let job = Arc::new(Mutex::new(RewrapJob {
            running: true,
            ..RewrapJob::default()
        }));
        let state = Arc::clone(&job);
        let task = tokio::spawn(async move {
            let outcome = rewrap_account(account, &*storage, from, to, settings, &state).await;
            let mut job = lock(&state);
            job.running = false;
            job.task = None;
            if let Err(e) = outcome {
                tracing::error!(account = %account, error = %e, "moving the account's DEKs onto its own KEK stopped; they stay wrapped by the instance KEK until it is fixed and the server restarts");
                job.error = Some(e);
            }
        });
        lock(&job).task = Some(task.abort_handle());
        if let Some(old) = lock(&self.jobs).insert(account, job) {
            stop(&old);
        }
    }

    /// Stops `account`'s job (its account is deleted), or every job (`None`, at shutdown).
    pub(crate) fn stop(&self, account: Option<AccountId>) {
        let mut jobs = lock(&self.jobs);
        match account {
            Some(account) => {
                if let Some(job) = jobs.remove(&account) {
                    stop(&job);
                }
            }
            None => {
                for (_, job) in jobs.drain() {
                    stop(&job);
                }
            }
        }
    }
}

fn stop(job: &Mutex<RewrapJob>) {
    let mut job = lock(job);
    if let Some(task) = job.task.take() {
        task.abort();
    }
    job.running = false;
}

/// Rewraps every DEK of `account` not wrapped by `to`, batch by batch (compare-and-set, no
/// change-log entry), until storage holds none twice a grace period apart: a write that took
/// a DEK wrapped by the instance KEK just before the switch has that long to commit.
async fn rewrap_account(
    account: AccountId,
    storage: &dyn Storage,
    from: Arc<dyn KekProvider>,
    to: Arc<dyn KekProvider>,
    settings: RewrapSettings,
    state: &Mutex<RewrapJob>,
) -> Result<(), String> {
    let target = to.current_kek_id().0;
    let mut quiet = false;
    loop {
        let batch = match storage
            .account_deks_not_wrapped_by(account, &target, settings.batch)
            .await
        {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(account = %account, error = %e, "account KEK rewrap: will retry");
                tokio::time::sleep(settings.retry).await;
                continue;
            }
        };
        if batch.is_empty() {
            if quiet {
                tracing::info!(account = %account, kek = %target, "every DEK of the account is wrapped by its own KEK");
                return Ok(());
            }
            quiet = true;
            tokio::time::sleep(settings.grace).await;
            continue;
        }
        quiet = false;
        let (from_kek, to_kek) = (Arc::clone(&from), Arc::clone(&to));
        let (rewraps, failure) =
            match on_blocking_pool(move || Ok(rewrap_batch(&*from_kek, &*to_kek, batch))).await {
                Ok(done) => done,
                Err(e) => (Vec::new(), Some(Step::Retry(e.to_string()))),
            };
        if !rewraps.is_empty() {
            match storage.rewrap_keys(rewraps).await {
                Ok(done) => lock(state).rewrapped += done,
                Err(e) => {
                    tracing::warn!(account = %account, error = %e, "account KEK rewrap: will retry");
                    tokio::time::sleep(settings.retry).await;
                    continue;
                }
            }
        }
        match failure {
            None => tokio::time::sleep(settings.pause).await,
            Some(Step::Retry(e)) => {
                tracing::warn!(account = %account, error = %e, "account KEK rewrap: will retry");
                tokio::time::sleep(settings.retry).await;
            }
            Some(Step::Stop(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_name_the_field() {
        assert_eq!(
            AccountKekSpec::parse("file").unwrap(),
            AccountKekSpec::NewFile
        );
        assert_eq!(
            AccountKekSpec::parse("file:/k/a.key").unwrap(),
            AccountKekSpec::File(PathBuf::from("/k/a.key"))
        );
        assert!(matches!(
            AccountKekSpec::parse("pkcs11:token=t;object=o").unwrap(),
            AccountKekSpec::Pkcs11(_)
        ));
        assert_eq!(
            AccountKekSpec::parse("pkcs11").unwrap(),
            AccountKekSpec::NewPkcs11
        );
        for bad in [
            "",
            "files",
            "file:relative.key",
            "kms:x",
            "pkcs11x",
            "PKCS11",
        ] {
            match AccountKekSpec::parse(bad) {
                Err(CoreError::Invalid(i)) => assert_eq!(i.field, "/kek", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
