//! Backup, restore and verification of the embedded store (`coffer backup`, `restore`,
//! `verify`; docs/operations.md, "Backup and restore"; the file in `format.rs`).
//!
//! - **Backup** runs beside a serving process and never takes the data dir's lock: it copies
//!   `coffer.db` through a read-only connection with `VACUUM INTO` (one read transaction, so a
//!   point-in-time copy that does not block the writer; `SqliteStorage::copy_consistent` says
//!   why this and not the backup API), checks the copy's chains, and writes the file beside
//!   its destination (a temp file, fsynced, then linked or renamed into place, mode 0600).
//!   The file holds the database only: ciphertexts and wrapped keys. Never the KEK file, the
//!   KEK versions' keys, `kek.toml`, a PIN or an account KEK.
//! - **Restore** checks the file (header, manifest checksum, length, database SHA-256) before
//!   and while writing `NEW/coffer.db`, opens the copy, recomputes its chains and compares their
//!   heads with the manifest's. Any failure removes everything it wrote. With `--kek-from` it
//!   copies the KEK configuration files (never anything from an HSM).
//! - **Verify** recomputes the chains of a data dir's database read-only, with or without a
//!   server on it.
//!
//! The chain checks are `coffer_storage::verify_chains`, written against the `Storage` trait.

mod format;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use coffer_storage::{ChainError, ChainReport, SqliteStorage, verify_chains};

pub use self::format::{AuditHeadEntry, DatabasePart, FormatError, LogHead, Manifest};
use crate::datadir::{self, DB_FILE, LOCK_FILE};
use crate::kek::{KEK_CONFIG, KEK_FILE};
use crate::kek_versions::VERSIONS_FILE;

/// Why a backup, restore or verification failed. One line each, naming the file or check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The data dir is not one (`coffer init` was not run), or cannot be read.
    #[error("{0}")]
    DataDir(String),
    #[error("{}: exists; refusing to overwrite it (--force replaces it)", .0.display())]
    OutExists(PathBuf),
    #[error("cannot write {}: {message}", path.display())]
    Write { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Format {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
    #[error(
        "{}: database checksum mismatch: the database part was altered or damaged (SHA-256 {actual}, the manifest says {expected})",
        path.display()
    )]
    DatabaseChecksum {
        path: PathBuf,
        actual: String,
        expected: String,
    },
    /// A chain does not verify: in the data dir (backup, verify) or in the restored copy.
    #[error("{what}: {source}")]
    Chain {
        what: String,
        #[source]
        source: ChainError,
    },
    #[error("the restored copy does not match the backup's manifest: {0}")]
    Mismatch(String),
    #[error("{}: {message}", path.display())]
    Target { path: PathBuf, message: String },
    #[error("{0}")]
    Storage(String),
}

/// What a backup wrote.
#[derive(Debug)]
pub struct BackupSummary {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub changes_checked: u64,
    pub audit_entries_checked: u64,
}

/// What a restore wrote and checked.
#[derive(Debug)]
pub struct RestoreSummary {
    pub manifest: Manifest,
    pub report: ChainReport,
    /// The KEK configuration files copied by `--kek-from`, relative to the restored dir.
    pub kek_files: Vec<String>,
}

/// Backs up `data_dir`'s database into `out` (see the module's comment). `out` may exist only
/// with `force`; its directory must exist. A server may be serving `data_dir` meanwhile.
pub async fn backup(
    data_dir: &Path,
    out: &Path,
    force: bool,
) -> Result<BackupSummary, BackupError> {
    let db =
        datadir::check_initialised(data_dir).map_err(|e| BackupError::DataDir(e.to_string()))?;
    let write_err = |message: String| BackupError::Write {
        path: out.to_owned(),
        message,
    };
    match fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() => return Err(write_err("it is a directory".into())),
        Ok(_) if !force => return Err(BackupError::OutExists(out.to_owned())),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(write_err(e.to_string())),
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(write_err(format!(
            "its directory {} does not exist",
            parent.display()
        )));
    }
    // The copy SQLite writes, beside the file (same filesystem, same disk space), 0600 and
    // removed when dropped.
    let copy = tempfile::Builder::new()
        .prefix(".coffer-backup-")
        .suffix(".db.tmp")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(&parent)
        .map_err(|e| write_err(format!("cannot create a file in {}: {e}", parent.display())))?;
    let copy_path = copy.path().to_owned();
    blocking({
        let (db, copy_path) = (db.clone(), copy_path.clone());
        move || SqliteStorage::copy_consistent(&db, &copy_path)
    })
    .await
    .map_err(|e| BackupError::Storage(format!("cannot copy {}: {e}", db.display())))?;

    let storage = blocking({
        let copy_path = copy_path.clone();
        move || SqliteStorage::open_read_only(&copy_path)
    })
    .await
    .map_err(|e| BackupError::Storage(format!("cannot open the copy: {e}")))?;
    let report = verify_chains(&storage).await;
    storage.close_reads();
    drop(storage);
    let report = report.map_err(|source| BackupError::Chain {
        what: format!(
            "data dir {}: nothing written, the store's own chains do not verify",
            data_dir.display()
        ),
        source,
    })?;

    let out_owned = out.to_owned();
    let manifest = tokio::task::spawn_blocking(move || {
        write_file(&copy_path, &parent, &out_owned, force, &report)
    })
    .await
    .map_err(|e| write_err(format!("the writing task failed: {e}")))??;
    drop(copy);
    Ok(BackupSummary {
        path: out.to_owned(),
        changes_checked: manifest.change_log.head_seq - manifest.change_log.base_seq,
        audit_entries_checked: manifest.audit_heads.iter().map(|h| h.seq).sum(),
        manifest,
    })
}

/// Writes the backup file from the database copy at `copy`: a temp file in `parent`, synced,
/// then put in place (replacing an existing file only with `force`), and the directory synced.
fn write_file(
    copy: &Path,
    parent: &Path,
    out: &Path,
    force: bool,
    report: &ChainReport,
) -> Result<Manifest, BackupError> {
    let write_err = |message: String| BackupError::Write {
        path: out.to_owned(),
        message,
    };
    let io_err = |e: io::Error| write_err(e.to_string());
    let length = fs::metadata(copy).map_err(io_err)?.len();
    let sha256 = format::copy_hashing(
        &mut BufReader::new(File::open(copy).map_err(io_err)?),
        &mut io::sink(),
        length,
    )
    .map_err(io_err)?;
    let manifest = Manifest::new(report, length, &sha256);

    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("backup");
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(parent)
        .map_err(|e| write_err(format!("cannot create a file in {}: {e}", parent.display())))?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        format::write_head(&mut w, &manifest).map_err(io_err)?;
        let again = format::copy_hashing(
            &mut BufReader::new(File::open(copy).map_err(io_err)?),
            &mut w,
            length,
        )
        .map_err(io_err)?;
        if again.as_ref() != sha256.as_ref() {
            return Err(write_err(
                "the database copy changed while it was being written".into(),
            ));
        }
        w.flush().map_err(io_err)?;
    }
    tmp.as_file().sync_all().map_err(io_err)?;
    if force {
        tmp.persist(out).map_err(|e| io_err(e.error))?;
    } else {
        tmp.persist_noclobber(out).map_err(|e| {
            if e.error.kind() == ErrorKind::AlreadyExists {
                BackupError::OutExists(out.to_owned())
            } else {
                io_err(e.error)
            }
        })?;
    }
    sync_dir(parent).map_err(|e| write_err(format!("written, but syncing its directory: {e}")))?;
    Ok(manifest)
}

/// Restores the backup `from` into `data_dir`, which must be absent or an empty dir, and, with
/// `kek_from`, copies the KEK configuration of that data dir into it. On any failure, removes
/// what it wrote (and the dir, if it made it).
pub async fn restore(
    from: &Path,
    data_dir: &Path,
    kek_from: Option<&Path>,
) -> Result<RestoreSummary, BackupError> {
    let format_err = |source| BackupError::Format {
        path: from.to_owned(),
        source,
    };
    let file = File::open(from).map_err(|e| format_err(FormatError::Io(e)))?;
    let file_len = file
        .metadata()
        .map_err(|e| format_err(FormatError::Io(e)))?
        .len();
    let mut reader = BufReader::new(file);
    let manifest = format::read_head(&mut reader, file_len).map_err(format_err)?;
    if let Some(old) = kek_from {
        kek_files(old)?;
    }
    let created = prepare_target(data_dir)?;
    let lock = match datadir::lock(data_dir) {
        Ok(lock) => lock,
        Err(e) => {
            if created {
                let _ = fs::remove_dir(data_dir);
            }
            return Err(BackupError::Target {
                path: data_dir.to_owned(),
                message: e.to_string(),
            });
        }
    };
    let result = restore_into(from, reader, &manifest, data_dir, kek_from).await;
    if result.is_err() {
        // The dir was empty (or ours) and we hold its lock: everything in it is ours.
        if let Ok(entries) = fs::read_dir(data_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_name() == LOCK_FILE {
                    continue;
                }
                let _ = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
        let _ = fs::remove_file(data_dir.join(LOCK_FILE));
        drop(lock);
        if created {
            let _ = fs::remove_dir(data_dir);
        }
    }
    result.map(|(report, kek_files)| RestoreSummary {
        manifest,
        report,
        kek_files,
    })
}

async fn restore_into(
    from: &Path,
    mut reader: BufReader<File>,
    manifest: &Manifest,
    data_dir: &Path,
    kek_from: Option<&Path>,
) -> Result<(ChainReport, Vec<String>), BackupError> {
    let db = data_dir.join(DB_FILE);
    let target_err = |message: String| BackupError::Target {
        path: data_dir.to_owned(),
        message,
    };
    let sha256 = {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&db)
            .map_err(|e| target_err(format!("cannot create {DB_FILE}: {e}")))?;
        let sha256 = {
            let mut w = BufWriter::new(&mut out);
            let sha256 = format::copy_hashing(&mut reader, &mut w, manifest.database.length)
                .map_err(|e| match e.kind() {
                    ErrorKind::UnexpectedEof => BackupError::Format {
                        path: from.to_owned(),
                        source: FormatError::Truncated("database part"),
                    },
                    _ => target_err(format!("cannot write {DB_FILE}: {e}")),
                })?;
            w.flush()
                .map_err(|e| target_err(format!("cannot write {DB_FILE}: {e}")))?;
            sha256
        };
        out.sync_all()
            .map_err(|e| target_err(format!("cannot sync {DB_FILE}: {e}")))?;
        hex::encode(sha256.as_ref())
    };
    if sha256 != manifest.database.sha256 {
        return Err(BackupError::DatabaseChecksum {
            path: from.to_owned(),
            actual: sha256,
            expected: manifest.database.sha256.clone(),
        });
    }

    // Opened the way the server opens it (a copy from an older build is migrated here, one
    // from a newer build refused), then closed before anything else touches it.
    let storage = blocking({
        let db = db.clone();
        move || SqliteStorage::open(&db)
    })
    .await
    .map_err(|e| BackupError::Storage(format!("the restored database does not open: {e}")))?;
    let report = verify_chains(&storage).await;
    storage.close().await;
    storage.close_reads();
    drop(storage);
    let report = report.map_err(|source| BackupError::Chain {
        what: "the restored copy".to_owned(),
        source,
    })?;
    if let Some(difference) = manifest.mismatch(&report) {
        return Err(BackupError::Mismatch(difference));
    }
    let kek_files = match kek_from {
        Some(old) => copy_kek(old, data_dir)?,
        None => Vec::new(),
    };
    sync_dir(data_dir).map_err(|e| target_err(format!("cannot sync: {e}")))?;
    Ok((report, kek_files))
}

/// Checks the chains of `data_dir`'s database, read-only (no lock: a server may be serving it).
pub async fn verify(data_dir: &Path) -> Result<ChainReport, BackupError> {
    let db =
        datadir::check_initialised(data_dir).map_err(|e| BackupError::DataDir(e.to_string()))?;
    let storage = blocking({
        let db = db.clone();
        move || SqliteStorage::open_read_only(&db)
    })
    .await
    .map_err(|e| BackupError::Storage(format!("data dir {}: {e}", data_dir.display())))?;
    let report = verify_chains(&storage).await;
    storage.close_reads();
    report.map_err(|source| BackupError::Chain {
        what: format!("data dir {}", data_dir.display()),
        source,
    })
}

/// Makes `path` ready to restore into: created (0700) when absent, else it must be an empty
/// dir (its mode set to 0700). Whether it was created here.
fn prepare_target(path: &Path) -> Result<bool, BackupError> {
    let target_err = |message: String| BackupError::Target {
        path: path.to_owned(),
        message,
    };
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => Err(target_err(
            "exists and is not a directory; restore needs an absent or empty dir".into(),
        )),
        Ok(_) => {
            let mut entries = fs::read_dir(path).map_err(|e| target_err(e.to_string()))?;
            if entries.next().is_some() {
                return Err(target_err(
                    "is not empty; restore needs an absent or empty dir".into(),
                ));
            }
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                .map_err(|e| target_err(format!("cannot set mode 0700: {e}")))?;
            Ok(false)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)
                    .map_err(|e| target_err(format!("cannot create its parent: {e}")))?;
            }
            fs::DirBuilder::new()
                .mode(0o700)
                .create(path)
                .map_err(|e| target_err(format!("cannot create: {e}")))?;
            Ok(true)
        }
        Err(e) => Err(target_err(e.to_string())),
    }
}

/// The instance KEK's configuration files in `old`: `kek.key` or `kek.toml`, `kek-versions.toml`
/// and the versions' `kek-N.key`. An error if it holds none of the first three.
fn kek_files(old: &Path) -> Result<Vec<String>, BackupError> {
    let err =
        |message: String| BackupError::DataDir(format!("--kek-from {}: {message}", old.display()));
    let entries = fs::read_dir(old).map_err(|e| err(e.to_string()))?;
    let mut names = Vec::new();
    for entry in entries {
        let name = entry.map_err(|e| err(e.to_string()))?.file_name();
        let Some(name) = name.to_str() else { continue };
        let version_key = name
            .strip_prefix("kek-")
            .and_then(|n| n.strip_suffix(".key"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if version_key || [KEK_FILE, KEK_CONFIG, VERSIONS_FILE].contains(&name) {
            names.push(name.to_owned());
        }
    }
    if !names
        .iter()
        .any(|n| [KEK_FILE, KEK_CONFIG, VERSIONS_FILE].contains(&n.as_str()))
    {
        return Err(err(format!(
            "holds no KEK configuration ({KEK_FILE}, {KEK_CONFIG} or {VERSIONS_FILE})"
        )));
    }
    names.sort();
    Ok(names)
}

/// Copies `old`'s KEK configuration (see [`kek_files`]) and its account KEKs (records and the
/// key files Coffer made) into `new`. Nothing from an HSM: `kek.toml` and account records only
/// name their objects.
fn copy_kek(old: &Path, new: &Path) -> Result<Vec<String>, BackupError> {
    let mut copied = Vec::new();
    for name in kek_files(old)? {
        let src = old.join(&name);
        let mut file = File::open(&src)
            .map_err(|e| BackupError::DataDir(format!("cannot read {}: {e}", src.display())))?;
        write_new(&new.join(&name), &mut file).map_err(BackupError::DataDir)?;
        copied.push(name);
    }
    copied.extend(crate::account_keks::copy_account_keks(old, new).map_err(BackupError::DataDir)?);
    Ok(copied)
}

/// Creates `path` (it must not exist) with mode 0600 and the bytes of `from`, synced.
pub(crate) fn write_new(path: &Path, from: &mut impl Read) -> Result<(), String> {
    let fail = |e: io::Error| format!("cannot write {}: {e}", path.display());
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    io::copy(from, &mut out).map_err(fail)?;
    out.sync_all().map_err(fail)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Runs blocking storage work (opening, copying) off the runtime's threads.
async fn blocking<T, F>(f: F) -> coffer_storage::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> coffer_storage::Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        coffer_storage::StorageError::Unavailable(format!("the blocking task failed: {e}"))
    })?
}
