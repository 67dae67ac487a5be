//! The data dir's KEK versions: [`KekRing`], the [`KekVersions`] provider the control plane
//! wraps and unwraps through, and `kek-versions.toml`, the record of the versions and of which
//! one is active.
//!
//! ```toml
//! # written by `coffer kek rotate`; no key material here
//! format = 1
//! active = 2
//! [[versions]]
//! version = 1
//! kek_id = "file:83167eb1597a88c2"
//! state = "retiring"
//! created = "2026-12-06T14:00:00.000000Z"
//! ```
//!
//! A file KEK keeps one file per version: version 1 is `kek.key` (what `coffer init` made, so an
//! existing data dir without a record is version 1 and keeps working), version N is
//! `kek-N.key`, each created with `O_EXCL` and mode 0600. The order of operations makes a crash
//! at any point safe:
//!
//! 1. the new key file is created and synced (a file without a record entry holds nothing: a
//!    later rotation deletes it and makes the version again);
//! 2. the record, naming it active and the previous version retiring, replaces the old record
//!    atomically (temporary file, fsync, rename, fsync of the directory); only then does
//!    anything get wrapped with it;
//! 3. when storage holds no key wrapped by a retiring version, the record marks it retired, and
//!    then its file is unlinked (a file left by a crash in between is unlinked at the next
//!    start). Unlinking does not erase the bytes from an SSD or a backup: docs/operations.md
//!    says what an operator must keep or destroy.
//!
//! A PKCS#11 KEK (`kek.toml`) is version 1 and cannot be rotated yet: `add_version` refuses it.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use coffer_core::{CoreError, KekState, KekVersion, KekVersions};
use coffer_crypto::{
    CryptoError, DataKey, DekContext, FileKek, KekId, KekProvider, WrappedDataKey,
};
use coffer_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::kek::KEK_FILE;

pub(crate) const VERSIONS_FILE: &str = "kek-versions.toml";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provider {
    File,
    Pkcs11,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::File => "file",
            Provider::Pkcs11 => "pkcs11",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    format: u32,
    active: u32,
    versions: Vec<RecordEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordEntry {
    version: u32,
    kek_id: String,
    state: String,
    created: String,
}

struct Loaded {
    meta: KekVersion,
    /// `None` once retired.
    key: Option<Arc<dyn KekProvider>>,
}

/// The KEK versions of a data dir; see the module comment.
pub(crate) struct KekRing {
    dir: PathBuf,
    provider: Provider,
    versions: RwLock<Vec<Loaded>>,
    /// Serialises the calls that change versions (and their record).
    changing: Mutex<()>,
}

impl fmt::Debug for KekRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KekRing")
            .field("dir", &self.dir)
            .field("versions", &self.versions())
            .finish_non_exhaustive()
    }
}

/// The key file of a file KEK's version `n`.
pub(crate) fn file_name(version: u32) -> String {
    if version == 1 {
        KEK_FILE.to_owned()
    } else {
        format!("kek-{version}.key")
    }
}

fn state_name(state: KekState) -> &'static str {
    state.as_str()
}

fn parse_state(s: &str) -> Option<KekState> {
    match s {
        "active" => Some(KekState::Active),
        "retiring" => Some(KekState::Retiring),
        "retired" => Some(KekState::Retired),
        _ => None,
    }
}

impl KekRing {
    /// A ring of one version (a data dir without a record, or a PKCS#11 KEK).
    pub(crate) fn single(
        dir: &Path,
        provider: Provider,
        key: Arc<dyn KekProvider>,
        created: Timestamp,
    ) -> KekRing {
        let meta = KekVersion {
            version: 1,
            kek_id: key.current_kek_id(),
            provider: provider.name(),
            state: KekState::Active,
            created,
        };
        KekRing {
            dir: dir.to_owned(),
            provider,
            versions: RwLock::new(vec![Loaded {
                meta,
                key: Some(key),
            }]),
            changing: Mutex::new(()),
        }
    }

    /// Opens a file KEK's versions as the record says (or `kek.key` alone as version 1 when
    /// there is no record). Each key file must hold the KEK the record names.
    pub(crate) fn open_files(dir: &Path) -> Result<KekRing, String> {
        let record_path = dir.join(VERSIONS_FILE);
        if !record_path.exists() {
            let path = dir.join(KEK_FILE);
            let kek = FileKek::open(&path).map_err(|e| e.to_string())?;
            let created = file_time(&path);
            return Ok(KekRing::single(dir, Provider::File, Arc::new(kek), created));
        }
        let entries = read_record(&record_path)?;
        let shown = record_path.display();
        let mut versions = Vec::with_capacity(entries.len());
        for meta in entries {
            let path = dir.join(file_name(meta.version));
            if meta.state == KekState::Retired {
                // Recorded retired, then a crash before the unlink.
                if path.exists() {
                    remove_key_file(&path)
                        .map_err(|e| format!("cannot remove retired {}: {e}", path.display()))?;
                    tracing::info!(file = %path.display(), "removed the key file of a retired KEK version");
                }
                versions.push(Loaded { meta, key: None });
                continue;
            }
            let kek = FileKek::open(&path)
                .map_err(|e| format!("KEK version {} (recorded in {shown}): {e}", meta.version))?;
            if kek.current_kek_id() != meta.kek_id {
                return Err(format!(
                    "{} is KEK {}, but {shown} records version {} as KEK {}",
                    path.display(),
                    kek.current_kek_id(),
                    meta.version,
                    meta.kek_id
                ));
            }
            versions.push(Loaded {
                meta,
                key: Some(Arc::new(kek)),
            });
        }
        Ok(KekRing {
            dir: dir.to_owned(),
            provider: Provider::File,
            versions: RwLock::new(versions),
            changing: Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Loaded>> {
        // Replaced whole under the write lock; a panic cannot leave it half-made.
        self.versions.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn active_key(&self) -> Result<Arc<dyn KekProvider>, CryptoError> {
        self.read()
            .iter()
            .find(|v| v.meta.state == KekState::Active)
            .and_then(|v| v.key.clone())
            .ok_or_else(|| CryptoError::KeyUnavailable("no active KEK version".into()))
    }

    fn write_record(&self, versions: &[KekVersion]) -> Result<(), String> {
        let active = versions
            .iter()
            .find(|v| v.state == KekState::Active)
            .map_or(0, |v| v.version);
        let record = Record {
            format: FORMAT,
            active,
            versions: versions
                .iter()
                .map(|v| RecordEntry {
                    version: v.version,
                    kek_id: v.kek_id.0.clone(),
                    state: state_name(v.state).to_owned(),
                    created: v.created.to_rfc3339(),
                })
                .collect(),
        };
        let body =
            toml::to_string(&record).map_err(|e| format!("cannot encode the record: {e}"))?;
        let text = format!(
            "# The KEK versions of this data dir, written by `coffer kek rotate`. No key here.\n{body}"
        );
        write_atomically(&self.dir.join(VERSIONS_FILE), text.as_bytes())
    }
}

/// When `path` was last modified (now if that cannot be read): the creation time shown for a
/// version made before versions were recorded.
pub(crate) fn file_time(path: &Path) -> Timestamp {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(Timestamp::now, |d| {
            Timestamp::from_unix_micros(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        })
}

fn read_record(path: &Path) -> Result<Vec<KekVersion>, String> {
    let shown = path.display();
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let record: Record =
        toml::from_str(&text).map_err(|e| format!("{shown} is not valid: {}", e.message()))?;
    if record.format != FORMAT {
        return Err(format!(
            "{shown} has format {}, which this version of Coffer does not know (it knows {FORMAT})",
            record.format
        ));
    }
    let mut out: Vec<KekVersion> = Vec::with_capacity(record.versions.len());
    for entry in record.versions {
        let state = parse_state(&entry.state).ok_or_else(|| {
            format!(
                "{shown}: version {} has an unknown state {:?}",
                entry.version, entry.state
            )
        })?;
        let created = Timestamp::parse_rfc3339(&entry.created).ok_or_else(|| {
            format!(
                "{shown}: version {} has a bad time {:?}",
                entry.version, entry.created
            )
        })?;
        if entry.version == 0 || out.last().is_some_and(|v| v.version >= entry.version) {
            return Err(format!(
                "{shown}: versions must be listed in increasing order from 1"
            ));
        }
        out.push(KekVersion {
            version: entry.version,
            kek_id: KekId(entry.kek_id),
            provider: Provider::File.name(),
            state,
            created,
        });
    }
    let active: Vec<&KekVersion> = out.iter().filter(|v| v.state == KekState::Active).collect();
    match active.as_slice() {
        [one] if one.version == record.active => Ok(out),
        _ => Err(format!(
            "{shown}: exactly one version must be active, and it must be `active` ({})",
            record.active
        )),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new file: a
/// private temporary file, synced, renamed over it, and the directory synced.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let shown = path.display();
    let tmp = path.with_extension("toml.tmp");
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot write {shown}: {e}")
    })
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// Unlinks a key file and syncs the directory. On SSDs and copy-on-write filesystems the
/// bytes may survive on the device; only the directory entry is gone for sure.
pub(crate) fn remove_key_file(path: &Path) -> std::io::Result<()> {
    fs::remove_file(path)?;
    sync_dir(path)
}

impl KekProvider for KekRing {
    fn current_kek_id(&self) -> KekId {
        self.read()
            .iter()
            .find(|v| v.meta.state == KekState::Active)
            .map(|v| v.meta.kek_id.clone())
            // Invariant: a ring always has exactly one active version (checked when opened,
            // kept by `add_version`, which swaps active and retiring in one assignment).
            .unwrap_or_else(|| KekId(String::new()))
    }

    fn wrap(&self, key: &DataKey, ctx: &DekContext<'_>) -> Result<WrappedDataKey, CryptoError> {
        self.active_key()?.wrap(key, ctx)
    }

    fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        ctx: &DekContext<'_>,
    ) -> Result<DataKey, CryptoError> {
        let key = {
            let versions = self.read();
            let found = versions.iter().find(|v| v.meta.kek_id == wrapped.kek_id);
            match found.and_then(|v| v.key.clone()) {
                Some(key) => key,
                None => {
                    let held: Vec<String> = versions
                        .iter()
                        .filter(|v| v.key.is_some())
                        .map(|v| format!("{} (version {})", v.meta.kek_id, v.meta.version))
                        .collect();
                    return Err(CryptoError::KeyUnavailable(format!(
                        "key was wrapped by KEK {}, which {}; this data dir holds KEK {}",
                        wrapped.kek_id,
                        if found.is_some() {
                            "was retired"
                        } else {
                            "is not one of its versions"
                        },
                        held.join(", ")
                    )));
                }
            }
        };
        key.unwrap(wrapped, ctx)
    }
}

impl KekVersions for KekRing {
    fn versions(&self) -> Vec<KekVersion> {
        self.read().iter().map(|v| v.meta.clone()).collect()
    }

    fn add_version(&self) -> Result<KekVersion, CoreError> {
        if self.provider != Provider::File {
            return Err(CoreError::KekRotationUnsupported(
                "this data dir's KEK is in a PKCS#11 token, and rotating a PKCS#11 KEK is not \
                 supported yet",
            ));
        }
        let _changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.versions();
        let number = current.last().map_or(1, |v| v.version + 1);
        let path = self.dir.join(file_name(number));
        if path.exists() {
            // Made by a rotation that crashed before recording it: nothing was wrapped by it.
            remove_key_file(&path).map_err(|e| {
                CoreError::Unavailable(format!("cannot remove unrecorded {}: {e}", path.display()))
            })?;
        }
        // 1. The key exists (synced) before the record names it.
        let kek = FileKek::create(&path)
            .map_err(|e| CoreError::Unavailable(format!("cannot make a new KEK version: {e}")))?;
        let new = KekVersion {
            version: number,
            kek_id: kek.current_kek_id(),
            provider: Provider::File.name(),
            state: KekState::Active,
            created: Timestamp::now(),
        };
        let mut next = current.clone();
        for v in &mut next {
            if v.state == KekState::Active {
                v.state = KekState::Retiring;
            }
        }
        next.push(new.clone());
        // 2. Recorded before anything is wrapped with it.
        if let Err(e) = self.write_record(&next) {
            let _ = remove_key_file(&path);
            return Err(CoreError::Unavailable(e));
        }
        let mut versions = self
            .versions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for v in versions.iter_mut() {
            if v.meta.state == KekState::Active {
                v.meta.state = KekState::Retiring;
            }
        }
        versions.push(Loaded {
            meta: new.clone(),
            key: Some(Arc::new(kek)),
        });
        Ok(new)
    }

    fn retire(&self, version: u32) -> Result<(), CoreError> {
        let _changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = self.versions();
        let entry = next
            .iter_mut()
            .find(|v| v.version == version && v.state == KekState::Retiring)
            .ok_or_else(|| CoreError::Internal(format!("KEK version {version} is not retiring")))?;
        entry.state = KekState::Retired;
        // 3. The record says retired before the key is destroyed.
        self.write_record(&next).map_err(CoreError::Unavailable)?;
        {
            let mut versions = self
                .versions
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(v) = versions.iter_mut().find(|v| v.meta.version == version) {
                v.meta.state = KekState::Retired;
                v.key = None;
            }
        }
        let path = self.dir.join(file_name(version));
        if let Err(e) = remove_key_file(&path) {
            // Removed at the next start.
            tracing::warn!(file = %path.display(), error = %e, "could not remove a retired KEK file");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
