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
//! A key in the instance KEK's PKCS#11 token (`--kek pkcs11`, `--kek pkcs11:…`) is recorded by
//! its object's URI instead, and whether Coffer made it (`account_kek_tokens.rs`):
//!
//! ```toml
//! provider = "pkcs11"
//! uri = "pkcs11:token=coffer;object=coffer-kek.account.0123…;id=%1F…?module-path=…"
//! kek_id = "pkcs11:5b0e35a1c2d3e4f5"
//! made_by_coffer = true
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

use crate::account_kek_tokens::{self as tokens, PROVIDER_PKCS11};
use crate::kek_versions::{KekRing, Written, remove_key_file, write_atomically};

pub(crate) const ACCOUNT_KEKS_DIR: &str = "account-keks";
const PROVIDER_FILE: &str = "file";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    provider: String,
    /// `file`: the key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
    /// `pkcs11`: the key object's URI (label and CKA_ID; no PIN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uri: Option<String>,
    kek_id: String,
    /// `pkcs11`: whether Coffer generated the object (then deleting the account destroys it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    made_by_coffer: Option<bool>,
}

/// Where a record's key is.
enum Key<'a> {
    File(&'a Path),
    Token { uri: &'a str, made_by_coffer: bool },
}

impl Record {
    fn key(&self) -> Result<Key<'_>, String> {
        match (self.provider.as_str(), &self.path, &self.uri) {
            (PROVIDER_FILE, Some(path), None) => Ok(Key::File(path)),
            (PROVIDER_PKCS11, None, Some(uri)) => Ok(Key::Token {
                uri,
                made_by_coffer: self.made_by_coffer.unwrap_or(false),
            }),
            (PROVIDER_FILE, _, _) => {
                Err("a \"file\" record must name its key by path, not uri".to_owned())
            }
            (PROVIDER_PKCS11, _, _) => {
                Err("a \"pkcs11\" record must name its key by uri, not path".to_owned())
            }
            (other, _, _) => Err(format!("unknown provider {other:?}")),
        }
    }

    fn location(&self) -> String {
        match (&self.path, &self.uri) {
            (Some(path), _) => path.display().to_string(),
            (None, Some(uri)) => uri.clone(),
            (None, None) => String::new(),
        }
    }
}

/// The account KEKs of one data dir: their records (and the key files Coffer made).
#[derive(Debug)]
pub(crate) struct AccountKekRecords {
    data_dir: PathBuf,
    dir: PathBuf,
    /// The instance KEK, whose versions' ids an account KEK may never have (destroying an
    /// account's key must never destroy the instance's).
    instance: Arc<KekRing>,
}

impl AccountKekRecords {
    pub(crate) fn new(data_dir: &Path, instance: Arc<KekRing>) -> AccountKekRecords {
        AccountKekRecords {
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
        if let Err(e) = record.key() {
            return Err(format!("{}: {e}", path.display()));
        }
        Ok(record)
    }

    fn open(&self, record: &Record) -> Result<Arc<dyn KekProvider>, String> {
        let path = match record.key()? {
            Key::File(path) => path,
            Key::Token { uri, .. } => return tokens::open(&self.instance, uri, &record.kek_id),
        };
        let kek = FileKek::open(path).map_err(|e| e.to_string())?;
        if kek.current_kek_id().0 != record.kek_id {
            return Err(format!(
                "the key file {} holds KEK {}, but the account's DEKs are wrapped by KEK {}",
                path.display(),
                kek.current_kek_id(),
                record.kek_id
            ));
        }
        Ok(Arc::new(kek))
    }

    /// Every record in the directory, by account (without opening any key).
    fn records(&self) -> Vec<(AccountId, PathBuf, Result<Record, String>)> {
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
            let record = self.read_record(&path);
            out.push((account, path, record));
        }
        out.sort_by_key(|(account, _, _)| *account);
        out
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
                format!("that key is {what}'s KEK; an account needs a key of its own"),
            )
        };
        if self.instance.versions().iter().any(|v| &v.kek_id == id) {
            return Err(taken("the instance".to_owned()));
        }
        for (other, _, record) in self.records() {
            if other != account && record.is_ok_and(|r| r.kek_id == id.0) {
                return Err(taken(format!("account {other}")));
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
        location: record.location(),
    }
}

/// Why `record` (of `account`) may not be opened: its key is one of the instance KEK's
/// versions, or another account's record names the same key. Such a record was not written by
/// `set-kek` (which refuses both); opening it would let the account's calls (and its deletion)
/// reach a key that is not its own.
fn claimed_elsewhere(
    instance: &KekRing,
    all: &[(AccountId, PathBuf, Result<Record, String>)],
    account: AccountId,
    record: &Record,
) -> Option<String> {
    if instance
        .versions()
        .iter()
        .any(|v| v.kek_id.0 == record.kek_id)
    {
        return Some(format!(
            "its KEK {} is the instance KEK's; an account's record may not name it",
            record.kek_id
        ));
    }
    let others: Vec<String> = all
        .iter()
        .filter(|(other, _, r)| {
            *other != account && r.as_ref().is_ok_and(|r| r.kek_id == record.kek_id)
        })
        .map(|(other, _, _)| other.to_string())
        .collect();
    (!others.is_empty()).then(|| {
        format!(
            "its KEK {} is also recorded for account {}; an account's key is its own",
            record.kek_id,
            others.join(", ")
        )
    })
}

impl AccountKekStore for AccountKekRecords {
    fn load(&self) -> Vec<LoadedAccountKek> {
        let all = self.records();
        all.iter()
            .map(|(account, path, record)| (*account, path, record))
            .map(|(account, path, record)| match record {
                Ok(record) => LoadedAccountKek {
                    account,
                    info: info(record),
                    kek: match claimed_elsewhere(&self.instance, &all, account, record) {
                        Some(why) => Err(format!("{}: {why}", path.display())),
                        None => self.open(record),
                    },
                },
                // The account's DEKs may be wrapped by a key whose id is unreadable here: the
                // account is unavailable rather than silently served by the instance KEK.
                Err(reason) => LoadedAccountKek {
                    account,
                    info: AccountKekInfo {
                        kek_id: KekId("unknown".to_owned()),
                        provider: "unknown".to_owned(),
                        location: path.display().to_string(),
                    },
                    kek: Err(reason.clone()),
                },
            })
            .collect()
    }

    fn create(
        &self,
        account: AccountId,
        spec: &AccountKekSpec,
    ) -> Result<(AccountKekInfo, Arc<dyn KekProvider>), CoreError> {
        let (path, kek, made) = match spec {
            AccountKekSpec::NewPkcs11 | AccountKekSpec::Pkcs11(_) => {
                return self.create_in_token(account, spec);
            }
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
        };
        let record = Record {
            provider: PROVIDER_FILE.to_owned(),
            path: Some(path.clone()),
            uri: None,
            kek_id: kek.current_kek_id().0,
            made_by_coffer: None,
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
        // A record naming a key that is not the account's own (see `claimed_elsewhere`):
        // only the record goes; the key stays with its owner.
        if let Some(why) = claimed_elsewhere(&self.instance, &self.records(), account, &record) {
            tracing::warn!(account = %account, reason = %why, "the deleted account's KEK record names a key that is not its own; the key is left as it is");
            return remove_key_file(&record_path).map_err(|e| {
                CoreError::Unavailable(format!("cannot remove {}: {e}", record_path.display()))
            });
        }
        let path = match record.key().map_err(CoreError::Unavailable)? {
            Key::File(path) => path,
            Key::Token {
                uri,
                made_by_coffer,
            } => {
                tokens::destroy(&self.instance, account, uri, &record.kek_id, made_by_coffer)?;
                return remove_key_file(&record_path).map_err(|e| {
                    CoreError::Unavailable(format!("cannot remove {}: {e}", record_path.display()))
                });
            }
        };
        // Only a key file Coffer made (`--kek file`, in `account-keks/`) is unlinked. One the
        // operator named (`--kek file:PATH`) stays where it is, for the operator to destroy:
        // the operator API must not become a way to delete any file the server may remove.
        let made_here = path == self.dir.join(format!("{account}.key"));
        if !made_here {
            tracing::warn!(
                account = %account,
                file = %path.display(),
                "the deleted account's KEK is a key file the operator gave; it is left in place: destroy it to finish shredding the account"
            );
        }
        match if made_here {
            remove_key_file(path)
        } else {
            Ok(())
        } {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CoreError::Unavailable(format!(
                    "cannot remove {}: {e}",
                    path.display()
                )));
            }
        }
        remove_key_file(&record_path).map_err(|e| {
            CoreError::Unavailable(format!("cannot remove {}: {e}", record_path.display()))
        })
    }
}

impl AccountKekRecords {
    /// The label of the token object this account's record names now, if any.
    fn recorded_label(&self, account: AccountId) -> Option<String> {
        let record = self.read_record(&self.record_path(account)).ok()?;
        match record.key().ok()? {
            Key::Token { uri, .. } => tokens::recorded(uri, &record.kek_id).ok().map(|o| o.label),
            Key::File(_) => None,
        }
    }

    /// `--kek pkcs11` and `--kek pkcs11:…`: the key object in the instance KEK's token, then
    /// its record. An object this call generated is destroyed again if the record could not be
    /// written; a taken one is only no longer used.
    fn create_in_token(
        &self,
        account: AccountId,
        spec: &AccountKekSpec,
    ) -> Result<(AccountKekInfo, Arc<dyn KekProvider>), CoreError> {
        let (made, made_here) = match spec {
            AccountKekSpec::NewPkcs11 => (tokens::generate(&self.instance, account)?, true),
            AccountKekSpec::Pkcs11(text) => {
                let recorded = self.recorded_label(account);
                (
                    tokens::take(&self.instance, text, recorded.as_deref())?,
                    false,
                )
            }
            AccountKekSpec::NewFile | AccountKekSpec::File(_) => {
                return Err(CoreError::Internal("not a PKCS#11 account key".into()));
            }
        };
        let undo = |made: &tokens::Made| tokens::undo(&self.instance, &made.object, made_here);
        if !made_here && let Err(e) = self.check_unused(account, &made.object.kek_id) {
            undo(&made);
            return Err(e);
        }
        if let Err(e) = self.ensure_dir() {
            undo(&made);
            return Err(e);
        }
        let record = Record {
            provider: PROVIDER_PKCS11.to_owned(),
            path: None,
            uri: Some(made.uri.clone()),
            kek_id: made.object.kek_id.0.clone(),
            made_by_coffer: Some(made_here),
        };
        let written = match self.record(account, &record) {
            Ok(written) => written,
            Err(e) => {
                undo(&made);
                return Err(e);
            }
        };
        match written {
            Written::Durable => {}
            Written::Not(e) => {
                // Not recorded, so nothing was wrapped by it.
                undo(&made);
                return Err(CoreError::Unavailable(e));
            }
            // The record may be on disk after all: the object it names stays in the token.
            Written::Unsure(e) => return Err(CoreError::Unavailable(e)),
        }
        Ok((info(&record), made.kek))
    }
}

/// `coffer restore --kek-from OLD`: copies `OLD/account-keks/` into `NEW/account-keks/` (made
/// 0700): every record, and every key file Coffer made there. A record naming a key file in
/// `OLD/account-keks/` is rewritten to name the copy in `NEW` (made absolute), so the restored
/// dir does not depend on the old one; a key file the operator named elsewhere (`file:PATH`)
/// and a key in an HSM are left where they are, and the record names them as before. Returns
/// the paths written, relative to `NEW`; nothing when `OLD` has no account KEKs.
pub(crate) fn copy_account_keks(old: &Path, new: &Path) -> Result<Vec<String>, String> {
    let from = old.join(ACCOUNT_KEKS_DIR);
    let entries = match fs::read_dir(&from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list {}: {e}", from.display())),
    };
    let new_abs = std::path::absolute(new).map_err(|e| format!("{}: {e}", new.display()))?;
    let to = new.join(ACCOUNT_KEKS_DIR);
    DirBuilder::new()
        .mode(0o700)
        .create(&to)
        .map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    // The old dir as records may name it: as given, and resolved.
    let old_dirs = [
        from.clone(),
        fs::canonicalize(&from).unwrap_or_else(|_| from.clone()),
    ];
    let mut written = Vec::new();
    let mut names: Vec<_> = entries
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot list {}: {e}", from.display()))?;
    names.sort();
    for name in names {
        let Some(name) = name.to_str() else { continue };
        let (stem, is_record) = match (name.strip_suffix(".toml"), name.strip_suffix(".key")) {
            (Some(stem), _) => (stem, true),
            (None, Some(stem)) => (stem, false),
            (None, None) => continue,
        };
        if stem.parse::<AccountId>().is_err() {
            continue;
        }
        let (src, dst) = (from.join(name), to.join(name));
        if is_record {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut crate::fsio::open_regular(&src, false)?, &mut text)
                .map_err(|e| format!("cannot read {}: {e}", src.display()))?;
            let mut record: Record = toml::from_str(&text)
                .map_err(|e| format!("{} is not a valid account KEK record: {e}", src.display()))?;
            if let Some(path) = &record.path
                && let (Some(dir), Some(file)) = (path.parent(), path.file_name())
                && old_dirs.iter().any(|d| d == dir)
            {
                record.path = Some(new_abs.join(ACCOUNT_KEKS_DIR).join(file));
            }
            let text = toml::to_string(&record)
                .map_err(|e| format!("cannot encode {}: {e}", dst.display()))?;
            crate::fsio::write_new(&dst, &mut text.as_bytes())?;
        } else {
            // A key file: regular, not a symlink, private (as `read_key_file` wants it).
            let mut file = crate::fsio::open_regular(&src, true)?;
            crate::fsio::write_new(&dst, &mut file)?;
        }
        written.push(format!("{ACCOUNT_KEKS_DIR}/{name}"));
    }
    crate::fsio::sync_dir(&to).map_err(|e| format!("cannot sync {}: {e}", to.display()))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_name_their_key_by_path_or_uri_as_their_provider_says() {
        let token = Record {
            provider: PROVIDER_PKCS11.to_owned(),
            path: None,
            uri: Some("pkcs11:token=t;object=o;id=%01?module-path=/m.so".to_owned()),
            kek_id: "pkcs11:0011223344556677".to_owned(),
            made_by_coffer: Some(true),
        };
        let text = toml::to_string(&token).unwrap();
        assert!(!text.lines().any(|l| l.starts_with("path")), "{text}");
        let back: Record = toml::from_str(&text).unwrap();
        assert!(matches!(
            back.key(),
            Ok(Key::Token {
                made_by_coffer: true,
                ..
            })
        ));
        assert_eq!(info(&back).location, token.uri.clone().unwrap());
        // A record written before PKCS#11 account keys (no uri, no made_by_coffer) still reads.
        let file: Record =
            toml::from_str("provider = \"file\"\npath = \"/k/a.key\"\nkek_id = \"file:00\"\n")
                .unwrap();
        assert!(matches!(file.key(), Ok(Key::File(p)) if p == Path::new("/k/a.key")));
        for bad in [
            "provider = \"pkcs11\"\npath = \"/k/a.key\"\nkek_id = \"x\"\n",
            "provider = \"file\"\nuri = \"pkcs11:token=t;object=o\"\nkek_id = \"x\"\n",
            "provider = \"vault\"\npath = \"/k\"\nkek_id = \"x\"\n",
        ] {
            let record: Record = toml::from_str(bad).unwrap();
            assert!(record.key().is_err(), "{bad}");
        }
        // A token key Coffer did not make is never destroyed: the flag defaults to false.
        let taken: Record = toml::from_str(
            "provider = \"pkcs11\"\nuri = \"pkcs11:token=t;object=o?module-path=/m.so\"\nkek_id = \"x\"\n",
        )
        .unwrap();
        assert!(matches!(
            taken.key(),
            Ok(Key::Token {
                made_by_coffer: false,
                ..
            })
        ));
    }
}
