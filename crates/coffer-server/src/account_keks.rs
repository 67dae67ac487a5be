//! Account KEKs in the data dir: `account-keks/<account id>.toml` records each one (provider,
//! where the key is, its public id; never a PIN), and `account-keks/<account id>.key` is the
//! key file Coffer makes for `--kek file` (32 random bytes, mode 0600).
//!
//! ```toml
//! provider = "file"
//! path = "/var/lib/coffer/account-keks/0123….key"
//! kek_id = "file:83167eb1597a88c2"
//! ```
//!
//! Order of writes: the key exists before its record, and the record before anything is
//! wrapped by the key; destroying goes the other way round, key first, so a crash between the
//! two leaves a record whose key is gone (the account is unavailable, or, if it was deleted, the
//! record is removed at the next start), never a key nobody knows about. Only a key file made
//! here (`account-keks/<id>.key`) is ever unlinked: one the operator named with `file:PATH` is
//! left where it is, so the operator API cannot delete files Coffer did not make.

use std::fs::{self, DirBuilder};
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_core::{
    AccountKekInfo, AccountKekSpec, AccountKekStore, CoreError, InvalidKind, KekVersions,
    LoadedAccountKek,
};
use coffer_crypto::{FileKek, KekId, KekProvider};
use coffer_types::AccountId;
use serde::{Deserialize, Serialize};

use crate::kek_versions::{KekRing, Written, remove_key_file, write_atomically};

pub(crate) const ACCOUNT_KEKS_DIR: &str = "account-keks";
const PROVIDER_FILE: &str = "file";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    provider: String,
    path: PathBuf,
    kek_id: String,
}

/// The account KEKs of one data dir.
#[derive(Debug)]
pub(crate) struct AccountKeyFiles {
    data_dir: PathBuf,
    dir: PathBuf,
    /// The instance KEK, whose versions' ids an account KEK may never have (destroying an
    /// account's key must never destroy the instance's).
    instance: Arc<KekRing>,
}

impl AccountKeyFiles {
    pub(crate) fn new(data_dir: &Path, instance: Arc<KekRing>) -> AccountKeyFiles {
        AccountKeyFiles {
            data_dir: data_dir.to_owned(),
            dir: data_dir.join(ACCOUNT_KEKS_DIR),
            instance,
        }
    }

    fn record_path(&self, account: AccountId) -> PathBuf {
        self.dir.join(format!("{account}.toml"))
    }

    fn read_record(&self, path: &Path) -> Result<Record, String> {
        let text =
            fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let record: Record = toml::from_str(&text)
            .map_err(|e| format!("{} is not a valid account KEK record: {e}", path.display()))?;
        if record.provider != PROVIDER_FILE {
            return Err(format!(
                "{}: unknown provider {:?}",
                path.display(),
                record.provider
            ));
        }
        Ok(record)
    }

    fn open(record: &Record) -> Result<Arc<dyn KekProvider>, String> {
        let kek = FileKek::open(&record.path).map_err(|e| e.to_string())?;
        if kek.current_kek_id().0 != record.kek_id {
            return Err(format!(
                "the key file {} holds KEK {}, but the account's DEKs are wrapped by KEK {}",
                record.path.display(),
                kek.current_kek_id(),
                record.kek_id
            ));
        }
        Ok(Arc::new(kek))
    }

    fn ensure_dir(&self) -> Result<(), CoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| {
                CoreError::Unavailable(format!("cannot create {}: {e}", self.dir.display()))
            })
    }

    /// Refuses a key the instance KEK or another account already uses: deleting the account
    /// would destroy it.
    fn check_unused(&self, account: AccountId, id: &KekId) -> Result<(), CoreError> {
        let taken = |what: String| {
            CoreError::invalid(
                InvalidKind::Field,
                "/kek",
                format!("that key file is {what}'s KEK; an account needs a key of its own"),
            )
        };
        if self.instance.versions().iter().any(|v| &v.kek_id == id) {
            return Err(taken("the instance".to_owned()));
        }
        for loaded in self.load() {
            if loaded.account != account && &loaded.info.kek_id == id {
                return Err(taken(format!("account {}", loaded.account)));
            }
        }
        Ok(())
    }

    fn record(&self, account: AccountId, record: &Record) -> Result<Written, CoreError> {
        let text = toml::to_string(record)
            .map_err(|e| CoreError::Internal(format!("cannot encode account KEK record: {e}")))?;
        let header = "# written by `coffer account set-kek`; the key's public id, no secret\n";
        Ok(write_atomically(
            &self.record_path(account),
            format!("{header}{text}").as_bytes(),
        ))
    }
}

fn info(record: &Record) -> AccountKekInfo {
    AccountKekInfo {
        kek_id: KekId(record.kek_id.clone()),
        provider: record.provider.clone(),
        location: record.path.display().to_string(),
    }
}

impl AccountKekStore for AccountKeyFiles {
    fn load(&self) -> Vec<LoadedAccountKek> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot list account KEKs");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".toml"))
            else {
                continue;
            };
            let Ok(account) = stem.parse::<AccountId>() else {
                tracing::warn!(file = %path.display(), "ignoring a file not named after an account id");
                continue;
            };
            match self.read_record(&path) {
                Ok(record) => out.push(LoadedAccountKek {
                    account,
                    info: info(&record),
                    kek: Self::open(&record),
                }),
                // The account's DEKs may be wrapped by a key whose id is unreadable here: the
                // account is unavailable rather than silently served by the instance KEK.
                Err(reason) => out.push(LoadedAccountKek {
                    account,
                    info: AccountKekInfo {
                        kek_id: KekId("unknown".to_owned()),
                        provider: "unknown".to_owned(),
                        location: path.display().to_string(),
                    },
                    kek: Err(reason),
                }),
            }
        }
        out.sort_by_key(|l| l.account);
        out
    }

    fn create(
        &self,
        account: AccountId,
        spec: &AccountKekSpec,
    ) -> Result<(AccountKekInfo, Arc<dyn KekProvider>), CoreError> {
        let (path, kek, made) = match spec {
            AccountKekSpec::NewFile => {
                self.ensure_dir()?;
                let path = self.dir.join(format!("{account}.key"));
                // A key file without a record was left by a create that crashed before
                // recording it: nothing was ever wrapped by it (the record comes first).
                if !self.record_path(account).exists() {
                    match remove_key_file(&path) {
                        Ok(()) => {
                            tracing::warn!(file = %path.display(), "removed an unrecorded account key file")
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(CoreError::Unavailable(format!(
                                "cannot remove the unrecorded {}: {e}",
                                path.display()
                            )));
                        }
                    }
                }
                let kek = FileKek::create(&path).map_err(|e| {
                    CoreError::Unavailable(format!("cannot make the account's key file: {e}"))
                })?;
                (path, kek, true)
            }
            AccountKekSpec::File(path) => {
                let invalid = |e: String| CoreError::invalid(InvalidKind::Field, "/kek", e);
                // Resolved first, so that `..` or a symlink cannot lead into the data dir.
                let path = fs::canonicalize(path)
                    .map_err(|e| invalid(format!("cannot open {}: {e}", path.display())))?;
                let data_dir =
                    fs::canonicalize(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
                if path.starts_with(&data_dir) {
                    return Err(CoreError::invalid(
                        InvalidKind::Field,
                        "/kek",
                        "an existing key file must live outside the data dir (use `file` to have Coffer make one in it)",
                    ));
                }
                let kek = FileKek::open(&path).map_err(|e| invalid(e.to_string()))?;
                self.check_unused(account, &kek.current_kek_id())?;
                self.ensure_dir()?;
                (path, kek, false)
            }
            AccountKekSpec::Pkcs11(_) => {
                return Err(CoreError::invalid(
                    InvalidKind::Field,
                    "/kek",
                    "account KEKs in a PKCS#11 token are not supported yet; use `file` or `file:/path`",
                ));
            }
        };
        let record = Record {
            provider: PROVIDER_FILE.to_owned(),
            path: path.clone(),
            kek_id: kek.current_kek_id().0,
        };
        match self.record(account, &record)? {
            Written::Durable => {}
            Written::Not(e) => {
                if made {
                    // Not recorded, so nothing was wrapped by it: removing it loses nothing.
                    let _ = remove_key_file(&path);
                }
                return Err(CoreError::Unavailable(e));
            }
            // The record may be on disk after all (renamed, its directory not synced): the
            // key it names stays, so that a restart finds the key the record names.
            Written::Unsure(e) => return Err(CoreError::Unavailable(e)),
        }
        Ok((info(&record), Arc::new(kek)))
    }

    fn destroy(&self, account: AccountId) -> Result<(), CoreError> {
        let record_path = self.record_path(account);
        let record = match self.read_record(&record_path) {
            Ok(record) => record,
            Err(_) if !record_path.exists() => return Ok(()),
            Err(e) => return Err(CoreError::Unavailable(e)),
        };
        // Only a key file Coffer made (`--kek file`, in `account-keks/`) is unlinked. One the
        // operator named (`--kek file:PATH`) stays where it is, for the operator to destroy:
        // the operator API must not become a way to delete any file the server may remove.
        let made_here = record.path == self.dir.join(format!("{account}.key"));
        if !made_here {
            tracing::warn!(
                account = %account,
                file = %record.path.display(),
                "the deleted account's KEK is a key file the operator gave; it is left in place: destroy it to finish shredding the account"
            );
        }
        match if made_here {
            remove_key_file(&record.path)
        } else {
            Ok(())
        } {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CoreError::Unavailable(format!(
                    "cannot remove {}: {e}",
                    record.path.display()
                )));
            }
        }
        remove_key_file(&record_path).map_err(|e| {
            CoreError::Unavailable(format!("cannot remove {}: {e}", record_path.display()))
        })
    }
}
