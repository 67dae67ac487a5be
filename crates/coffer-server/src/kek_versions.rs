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
//! A PKCS#11 KEK (`kek.toml`) keeps one AES-256 key object per version in its token. Version
//! 1 is the object `kek.toml`'s URI names; version N is generated in the same token, labelled
//! `LABEL.vN` (LABEL: version 1's label) with a random 16-byte CKA_ID, sensitive and never
//! extractable, and the record names it by `uri` (the version's own URI: label and CKA_ID;
//! never a PIN). The same order holds: the object exists before the record names it (an
//! object under the label without a record entry is destroyed by the next rotation before it
//! generates the version again); the record says retired before C_DestroyObject (a retired
//! version whose object is still in the token is destroyed at the next start); and a version
//! the record names that the token lacks stops the start, naming the object.
//!
//! A record whose rename succeeded but whose directory sync failed may or may not survive a
//! power loss: the change is then treated as not made in memory (nothing is wrapped by a new
//! version, no key is destroyed), the new key is kept, and the next change writes the record
//! again (see [`Written`]).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use coffer_core::{CoreError, KekState, KekVersion, KekVersions};
use coffer_crypto::{
    CryptoError, DataKey, DekContext, FileKek, KekId, KekProvider, WrappedDataKey,
};
use coffer_hsm::{HsmError, KeyObject, Pkcs11Kek, Pkcs11Uri};
use coffer_types::Timestamp;
use serde::{Deserialize, Serialize};

/// The file KEK of a data dir (version 1, before any rotation).
pub(crate) const KEK_FILE: &str = "kek.key";
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
    /// PKCS#11: the version's key object (its URI: object= label, id= CKA_ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uri: Option<String>,
}

/// One version as the record holds it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) meta: KekVersion,
    /// PKCS#11: its key object.
    pub(crate) object: Option<KeyObject>,
}

struct Loaded {
    meta: KekVersion,
    object: Option<KeyObject>,
    /// `None` once retired.
    key: Option<Arc<dyn KekProvider>>,
}

/// What makes new versions.
enum Backend {
    File,
    /// The token's KEK with every live version's object, and version 1's URI (new versions are
    /// named after it).
    Pkcs11 {
        kek: Arc<Pkcs11Kek>,
        base: Box<Pkcs11Uri>,
    },
}

/// How far a record write got.
#[derive(Debug)]
pub(crate) enum Written {
    /// Renamed into place and the directory synced: the record says what was written.
    Durable,
    /// Not renamed: the old record stands.
    Not(String),
    /// Renamed, but the directory could not be synced: either record may be what a power loss
    /// leaves. The change is not made in memory, and no key it would free is destroyed.
    Unsure(String),
}

/// The KEK versions of a data dir; see the module comment.
pub(crate) struct KekRing {
    dir: PathBuf,
    provider: Provider,
    backend: Backend,
    versions: RwLock<Vec<Loaded>>,
    /// Serialises the calls that change versions (and their record).
    changing: Mutex<()>,
    /// Where wraps and unwraps are timed, once the server has metrics.
    metrics: OnceLock<Arc<coffer_metrics::Metrics>>,
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
    /// A file KEK of one version (a data dir without a record).
    pub(crate) fn single(dir: &Path, key: Arc<dyn KekProvider>, created: Timestamp) -> KekRing {
        let provider = Provider::File;
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
            backend: Backend::File,
            versions: RwLock::new(vec![Loaded {
                meta,
                object: None,
                key: Some(key),
            }]),
            changing: Mutex::new(()),
            metrics: OnceLock::new(),
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
            return Ok(KekRing::single(dir, Arc::new(kek), created));
        }
        let entries = read_record(&record_path, Provider::File)?;
        let shown = record_path.display();
        let mut versions = Vec::with_capacity(entries.len());
        for Entry { meta, object } in entries {
            if object.is_some() {
                return Err(format!(
                    "{shown}: version {} names a PKCS#11 key object, but this data dir's KEK is \
                     a key file",
                    meta.version
                ));
            }
            let path = dir.join(file_name(meta.version));
            if meta.state == KekState::Retired {
                // Recorded retired, then a crash before the unlink.
                if path.exists() {
                    remove_key_file(&path)
                        .map_err(|e| format!("cannot remove retired {}: {e}", path.display()))?;
                    tracing::info!(file = %path.display(), "removed the key file of a retired KEK version");
                }
                versions.push(Loaded {
                    meta,
                    object: None,
                    key: None,
                });
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
                object: None,
                key: Some(Arc::new(kek)),
            });
        }
        Ok(KekRing {
            dir: dir.to_owned(),
            provider: Provider::File,
            backend: Backend::File,
            versions: RwLock::new(versions),
            changing: Mutex::new(()),
            metrics: OnceLock::new(),
        })
    }

    /// A PKCS#11 KEK's versions: `kek` holds the object of every version `entries` does not
    /// record as retired. A retired version whose object is still in the token (a crash
    /// between the record and C_DestroyObject) is destroyed now.
    pub(crate) fn open_pkcs11(
        dir: &Path,
        kek: Arc<Pkcs11Kek>,
        base: Pkcs11Uri,
        entries: Vec<Entry>,
    ) -> Result<KekRing, String> {
        let mut versions = Vec::with_capacity(entries.len());
        for Entry { meta, object } in entries {
            let object = object.ok_or_else(|| {
                format!("KEK version {} has no key object recorded", meta.version)
            })?;
            let key: Option<Arc<dyn KekProvider>> = if meta.state == KekState::Retired {
                match kek.destroy_version(&object) {
                    Ok(true) => tracing::info!(
                        version = meta.version,
                        object = %object.describe(),
                        "destroyed the key object of a retired KEK version"
                    ),
                    Ok(false) => {}
                    Err(e) => {
                        return Err(format!(
                            "cannot destroy the key object of retired KEK version {}: {e}",
                            meta.version
                        ));
                    }
                }
                None
            } else {
                let version = kek.version(&object.kek_id).ok_or_else(|| {
                    format!(
                        "KEK version {} ({}) is not loaded from the token",
                        meta.version,
                        object.describe()
                    )
                })?;
                Some(Arc::new(version))
            };
            versions.push(Loaded {
                meta,
                object: Some(object),
                key,
            });
        }
        Ok(KekRing {
            dir: dir.to_owned(),
            provider: Provider::Pkcs11,
            backend: Backend::Pkcs11 {
                kek,
                base: Box::new(base),
            },
            versions: RwLock::new(versions),
            changing: Mutex::new(()),
            metrics: OnceLock::new(),
        })
    }

    /// A PKCS#11 KEK of one version without a record, as [`KekRing::single`], able to rotate.
    pub(crate) fn single_pkcs11(
        dir: &Path,
        kek: Arc<Pkcs11Kek>,
        base: Pkcs11Uri,
        created: Timestamp,
    ) -> KekRing {
        let object = KeyObject {
            label: base.object.clone(),
            cka_id: base.id.clone(),
            kek_id: kek.current_kek_id(),
        };
        let mut ring = KekRing::single(dir, kek.clone(), created);
        if let Some(v) = ring
            .versions
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .first_mut()
        {
            v.object = Some(object);
            v.meta.provider = Provider::Pkcs11.name();
        }
        ring.provider = Provider::Pkcs11;
        ring.backend = Backend::Pkcs11 {
            kek,
            base: Box::new(base),
        };
        ring
    }

    /// The token's KEK (every version's object, and the pool accounts' keys share) and
    /// version 1's URI, when the KEK is in a PKCS#11 token.
    pub(crate) fn pkcs11(&self) -> Option<(&Arc<Pkcs11Kek>, &Pkcs11Uri)> {
        match &self.backend {
            Backend::Pkcs11 { kek, base } => Some((kek, &**base)),
            Backend::File => None,
        }
    }

    /// The current versions with their objects, to build the next record from.
    fn entries(&self) -> Vec<Entry> {
        self.read()
            .iter()
            .map(|v| Entry {
                meta: v.meta.clone(),
                object: v.object.clone(),
            })
            .collect()
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

    fn write_record(&self, versions: &[Entry]) -> Written {
        let active = versions
            .iter()
            .find(|v| v.meta.state == KekState::Active)
            .map_or(0, |v| v.meta.version);
        let base = match &self.backend {
            Backend::Pkcs11 { base, .. } => Some(base),
            Backend::File => None,
        };
        let record = Record {
            format: FORMAT,
            active,
            versions: versions
                .iter()
                .map(|Entry { meta: v, object }| RecordEntry {
                    version: v.version,
                    kek_id: v.kek_id.0.clone(),
                    state: state_name(v.state).to_owned(),
                    created: v.created.to_rfc3339(),
                    uri: object
                        .as_ref()
                        .zip(base)
                        .map(|(o, base)| object_uri(base, o).to_string()),
                })
                .collect(),
        };
        let body = match toml::to_string(&record) {
            Ok(body) => body,
            Err(e) => return Written::Not(format!("cannot encode the record: {e}")),
        };
        let text = format!(
            "# The KEK versions of this data dir, written by `coffer kek rotate`. No key here.\n{body}"
        );
        write_atomically(&self.dir.join(VERSIONS_FILE), text.as_bytes())
    }
}

/// The URI of a version's key object: version 1's URI with its label and CKA_ID.
fn object_uri(base: &Pkcs11Uri, object: &KeyObject) -> Pkcs11Uri {
    let mut uri = base.clone();
    uri.object = object.label.clone();
    uri.id = object.cka_id.clone();
    uri
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

pub(crate) fn read_record(path: &Path, provider: Provider) -> Result<Vec<Entry>, String> {
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
    let mut out: Vec<Entry> = Vec::with_capacity(record.versions.len());
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
        if entry.version == 0 || out.last().is_some_and(|v| v.meta.version >= entry.version) {
            return Err(format!(
                "{shown}: versions must be listed in increasing order from 1"
            ));
        }
        let kek_id = KekId(entry.kek_id);
        let object = match entry.uri {
            None => None,
            Some(text) => {
                let uri = Pkcs11Uri::parse(&text)
                    .map_err(|e| format!("{shown}: version {}: {e}", entry.version))?;
                Some(KeyObject {
                    label: uri.object,
                    cka_id: uri.id,
                    kek_id: kek_id.clone(),
                })
            }
        };
        out.push(Entry {
            meta: KekVersion {
                version: entry.version,
                kek_id,
                provider: provider.name(),
                state,
                created,
            },
            object,
        });
    }
    let active: Vec<&KekVersion> = out
        .iter()
        .map(|e| &e.meta)
        .filter(|v| v.state == KekState::Active)
        .collect();
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
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Written {
    let shown = path.display();
    let tmp = path.with_extension("toml.tmp");
    let renamed = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = renamed {
        let _ = fs::remove_file(&tmp);
        return Written::Not(format!("cannot write {shown}: {e}"));
    }
    match sync_dir(path) {
        Ok(()) => Written::Durable,
        Err(e) => Written::Unsure(format!(
            "wrote {shown} but could not sync its directory ({e}); the change is not made, \
             and the next one writes the record again"
        )),
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    if tests::FAIL_DIR_SYNC.with(std::cell::Cell::get) {
        return Err(std::io::Error::other("injected sync failure"));
    }
    crate::fsio::sync_parent(path)
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
        let key_provider = self.active_key()?;
        let start = Instant::now();
        let wrapped = key_provider.wrap(key, ctx);
        self.observe(coffer_metrics::KekOp::Wrap, wrapped.is_ok(), start);
        wrapped
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
        let start = Instant::now();
        let unwrapped = key.unwrap(wrapped, ctx);
        self.observe(coffer_metrics::KekOp::Unwrap, unwrapped.is_ok(), start);
        unwrapped
    }
}

impl KekRing {
    /// Times every later wrap and unwrap in `metrics`; once.
    pub(crate) fn observe_with(&self, metrics: Arc<coffer_metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn observe(&self, op: coffer_metrics::KekOp, ok: bool, start: Instant) {
        if let Some(metrics) = self.metrics.get() {
            let backend = match self.backend {
                Backend::File => coffer_metrics::KekBackend::File,
                Backend::Pkcs11 { .. } => coffer_metrics::KekBackend::Pkcs11,
            };
            let outcome = if ok {
                coffer_metrics::Outcome::Ok
            } else {
                coffer_metrics::Outcome::Error
            };
            metrics.kek_call(backend, op, outcome, start.elapsed());
        }
    }
}

impl KekVersions for KekRing {
    fn versions(&self) -> Vec<KekVersion> {
        self.read().iter().map(|v| v.meta.clone()).collect()
    }

    fn add_version(&self) -> Result<KekVersion, CoreError> {
        let _changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.entries();
        let number = current.last().map_or(1, |v| v.meta.version + 1);
        // 1. The key exists (synced, or generated in the token) before the record names it.
        let (key, object, undo) = self.make_version(number)?;
        let new = KekVersion {
            version: number,
            kek_id: key.current_kek_id(),
            provider: self.provider.name(),
            state: KekState::Active,
            created: Timestamp::now(),
        };
        let mut next = current;
        for v in &mut next {
            if v.meta.state == KekState::Active {
                v.meta.state = KekState::Retiring;
            }
        }
        next.push(Entry {
            meta: new.clone(),
            object: object.clone(),
        });
        // 2. Recorded before anything is wrapped with it.
        match self.write_record(&next) {
            Written::Durable => {}
            Written::Not(e) => {
                undo();
                return Err(CoreError::Unavailable(e));
            }
            // The record may name the new key: keep it (a start that reads such a record loads
            // it), but this process wraps nothing with it and stops using it, as it does for
            // every version its ring does not hold. The next rotation makes another object
            // under the same label with a new CKA_ID; the two coexist.
            Written::Unsure(e) => {
                if let (Backend::Pkcs11 { kek, .. }, Some(made)) = (&self.backend, &object) {
                    kek.forget_version(&made.kek_id);
                }
                return Err(CoreError::Unavailable(e));
            }
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
            object,
            key: Some(key),
        });
        Ok(new)
    }

    fn retire(&self, version: u32) -> Result<(), CoreError> {
        let _changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = self.entries();
        let entry = next
            .iter_mut()
            .find(|v| v.meta.version == version && v.meta.state == KekState::Retiring)
            .ok_or_else(|| CoreError::Internal(format!("KEK version {version} is not retiring")))?;
        entry.meta.state = KekState::Retired;
        let object = entry.object.clone();
        // 3. The record says retired before the key is destroyed. If that is not certain, the
        // key stays (the version stays retiring here, and the job tries again).
        match self.write_record(&next) {
            Written::Durable => {}
            Written::Not(e) | Written::Unsure(e) => return Err(CoreError::Unavailable(e)),
        }
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
        match (&self.backend, object) {
            (Backend::Pkcs11 { kek, .. }, Some(object)) => {
                if let Err(e) = kek.destroy_version(&object) {
                    // Destroyed at the next start.
                    tracing::warn!(object = %object.describe(), error = %e, "could not destroy a retired KEK's key object");
                }
            }
            _ => {
                let path = self.dir.join(file_name(version));
                if let Err(e) = remove_key_file(&path) {
                    // Removed at the next start.
                    tracing::warn!(file = %path.display(), error = %e, "could not remove a retired KEK file");
                }
            }
        }
        Ok(())
    }
}

/// Undoes the making of a version the record could not name.
type Undo = Box<dyn FnOnce()>;

impl KekRing {
    /// Makes version `number`'s key: a key file, or an object in the token.
    #[allow(clippy::type_complexity)]
    fn make_version(
        &self,
        number: u32,
    ) -> Result<(Arc<dyn KekProvider>, Option<KeyObject>, Undo), CoreError> {
        match &self.backend {
            Backend::File => {
                let path = self.dir.join(file_name(number));
                if path.exists() {
                    // Made by a rotation that crashed before recording it: nothing was wrapped
                    // by it.
                    remove_key_file(&path).map_err(|e| {
                        CoreError::Unavailable(format!(
                            "cannot remove unrecorded {}: {e}",
                            path.display()
                        ))
                    })?;
                }
                let kek = FileKek::create(&path).map_err(|e| {
                    CoreError::Unavailable(format!("cannot make a new KEK version: {e}"))
                })?;
                let undo: Undo = Box::new(move || {
                    let _ = remove_key_file(&path);
                });
                Ok((Arc::new(kek), None, undo))
            }
            Backend::Pkcs11 { kek, base } => {
                let label = format!("{}.v{number}", base.object);
                let cka_id: [u8; 16] = coffer_crypto::random_array();
                let object = kek.generate_version(&label, &cka_id).map_err(|e| match e {
                    HsmError::ReadOnly(_) => CoreError::KekRotationUnsupported(
                        "the PKCS#11 token holding the KEK is write-protected, so no new KEK \
                         version can be generated in it",
                    ),
                    other => CoreError::Unavailable(format!(
                        "cannot make a new KEK version in the token: {other}"
                    )),
                })?;
                let version = kek.version(&object.kek_id).ok_or_else(|| {
                    CoreError::Internal("the new key object is not in use".into())
                })?;
                let (kek, made) = (Arc::clone(kek), object.clone());
                let undo: Undo = Box::new(move || {
                    let _ = kek.destroy_version(&made);
                });
                Ok((Arc::new(version), Some(object), undo))
            }
        }
    }
}

#[cfg(test)]
mod tests;
