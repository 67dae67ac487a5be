//! Backup, restore and verification of the embedded store (`coffer backup`, `restore`,
//! `verify`; docs/operations.md, "Backup and restore"; the file in `format.rs`).
//!
//! - **Backup** runs beside a serving process and never takes the data dir's lock: it copies
//!   `coffer.db` through a read-only connection with `VACUUM INTO` (one read transaction, so a
//!   point-in-time copy that does not block the writer; `SqliteStorage::copy_consistent` says
//!   why this and not the backup API) into a private (0700) temp dir beside the destination,
//!   checks the copy as restore will (`SqliteStorage::check_untrusted`: schema, pages, foreign
//!   keys, counts; then the chains), hashes it and writes the file from one handle (a temp
//!   file, fsynced, then linked or renamed into place, mode 0600). It needs free space for the
//!   copy and the file (twice the database) and reads the copy four times (restore's check,
//!   chains, hash, write). A drifted count is refused naming `coffer repair`, which recounts. The file holds the database only: ciphertexts
//!   and wrapped keys. Never the KEK file, the KEK versions' keys, `kek.toml`, a PIN or an
//!   account KEK.
//! - **Restore** checks the header, manifest checksum and length before writing anything, and
//!   the database's SHA-256 while writing `NEW/coffer.db`; then checks that untrusted file
//!   defensively (schema exactly this build's, `integrity_check`, foreign keys, the maintained
//!   counts) before opening it read-write, recomputes its chains and compares their heads
//!   with the manifest's. With `--kek-from` it
//!   copies the KEK configuration the KEK versions file names (never anything from an HSM),
//!   opens the restored dir with that KEK, and verifies every audit checkpoint's MAC: the one
//!   keyed check, which someone who rewrote the file without the KEK cannot pass. Any failure
//!   removes everything it wrote (`datadir::NewDir`).
//! - **Verify** recomputes the chains of a data dir's database read-only, with or without a
//!   server on it, and checks what lists trust (`coffer_storage::verify_integrity`: every
//!   store's and account's count against its rows, and foreign keys on SQLite); or the same
//!   of a PostgreSQL database (`verify_database`: a read-only connection, no data dir, no KEK).
//!
//! The chain checks are `coffer_storage::verify_chains`, and the integrity check
//! `coffer_storage::verify_integrity`, both written against the `Storage` trait.

mod format;

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, ErrorKind, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use coffer_storage::{
    ChainError, ChainReport, IntegrityError, IntegrityReport, SqliteStorage, Storage, StorageError,
    verify_chains, verify_integrity,
};
use serde::Serialize;

pub use coffer_storage::ForeignKeys;

pub use self::format::{AuditHeadEntry, ChangeLog, DatabasePart, FormatError, Heads, Manifest};
use crate::datadir::{self, DB_FILE};
use crate::kek::{KEK_CONFIG, KEK_FILE, KekSecrets};
use crate::kek_versions::{self, Provider, VERSIONS_FILE};
use crate::{KeyOptions, fsio};

/// Why a backup, restore or verification failed. One line each, naming the file or check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A data dir (the one backed up or verified, the one restored into, or `--kek-from`'s)
    /// is not usable: not initialised, not empty, its KEK files unreadable.
    #[error("{}: {message}", path.display())]
    DataDir { path: PathBuf, message: String },
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
        "{}: database checksum mismatch: the database part was damaged (SHA-256 {actual}, the \
         manifest says {expected})",
        path.display()
    )]
    DatabaseChecksum {
        path: PathBuf,
        actual: String,
        expected: String,
    },
    /// The database (in the data dir, the copy, or the restored file) cannot be opened or read,
    /// or is not a database this build accepts as it is.
    #[error("{what}: {source}")]
    Database {
        what: String,
        #[source]
        source: StorageError,
    },
    /// A chain does not verify: in the data dir (backup, verify) or in the restored copy.
    #[error("{what}: {source}")]
    Chain {
        what: String,
        #[source]
        source: ChainError,
    },
    /// `verify_database`: the database cannot be reached, or holds no Coffer schema of this
    /// build's version (never the password).
    #[error("--database-url: {0}")]
    Connect(String),
    /// What lists trust does not hold (a count, a foreign key): in the data dir or database
    /// verified or backed up, or in the file restored; or the copy is not a database restore
    /// would accept. `hint`: what to do about a drifted count (empty otherwise).
    #[error("{what}: {source}{hint}")]
    Integrity {
        what: String,
        #[source]
        source: IntegrityError,
        hint: String,
    },
    #[error("the restored copy does not match the backup's manifest: {0}")]
    Mismatch(String),
    /// `--kek-from`: the restored dir does not open with the KEK copied, or an audit
    /// checkpoint's MAC does not verify with it.
    #[error("keyed check of the restored copy: {0}")]
    Keyed(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a backup wrote.
#[derive(Debug)]
pub struct BackupSummary {
    pub manifest: Manifest,
    pub report: ChainReport,
}

/// What a restore wrote and checked.
#[derive(Debug)]
pub struct RestoreSummary {
    pub manifest: Manifest,
    pub report: ChainReport,
    /// The KEK configuration files copied by `--kek-from`, relative to the restored dir.
    pub kek_files: Vec<String>,
    /// With `--kek-from`: the audit checkpoints whose MAC was verified with the KEK.
    pub checkpoint_macs_checked: Option<u64>,
    /// What the restored dir still needs, or must still be checked with, before it serves:
    /// one line for the operator.
    pub next: String,
}

/// What `coffer verify` found: the heads (the manifest's shapes, so the two compare) and how
/// much was checked.
#[derive(Debug, Serialize)]
pub struct Verified {
    #[serde(flatten)]
    pub heads: Heads,
    pub changes_checked: u64,
    pub audit_entries_checked: u64,
    pub audit_checkpoints_checked: u64,
    /// What lists trust: counts and foreign keys.
    pub integrity: IntegrityChecked,
}

/// The integrity check's part of [`Verified`].
#[derive(Debug, Serialize)]
pub struct IntegrityChecked {
    /// Stores whose `secret_count` equals their secrets.
    pub stores_checked: u64,
    /// Accounts whose `secret_count` equals their secrets.
    pub accounts_checked: u64,
    /// `checked` (SQLite: every row) or `enforced_by_database` (PostgreSQL).
    pub foreign_keys: ForeignKeys,
}

impl Verified {
    fn of(report: &ChainReport, integrity: &IntegrityReport) -> Verified {
        Verified {
            heads: Heads::of(report),
            changes_checked: report.changes_checked,
            audit_entries_checked: report.audit_entries_checked,
            audit_checkpoints_checked: report.audit_checkpoints_checked,
            integrity: IntegrityChecked {
                stores_checked: integrity.stores_checked,
                accounts_checked: integrity.accounts_checked,
                foreign_keys: integrity.foreign_keys,
            },
        }
    }
}

fn not_initialised(path: &Path, e: crate::ServerError) -> BackupError {
    BackupError::DataDir {
        path: path.to_owned(),
        message: match e {
            crate::ServerError::DataDir { message, .. } => message,
            other => other.to_string(),
        },
    }
}

/// Backs up `data_dir`'s database into `out` (see the module's comment). `out` may exist only
/// with `force`; its directory must exist, and should be writable by no one else (the file is
/// put in place by name there). A server may be serving `data_dir` meanwhile.
pub async fn backup(
    data_dir: &Path,
    out: &Path,
    force: bool,
) -> Result<BackupSummary, BackupError> {
    let db = datadir::check_initialised(data_dir).map_err(|e| not_initialised(data_dir, e))?;
    let write_err = |message: String| BackupError::Write {
        path: out.to_owned(),
        message,
    };
    match std::fs::symlink_metadata(out) {
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
    // The copy SQLite writes goes in a private dir (0700) beside the file (same filesystem):
    // no one else can swap it between the steps below. Removed when dropped.
    let scratch = tempfile::Builder::new()
        .prefix(".coffer-backup-")
        .tempdir_in(&parent)
        .map_err(|e| write_err(format!("cannot create a file in {}: {e}", parent.display())))?;
    let copy_path = scratch.path().join(DB_FILE);
    blocking({
        let (db, copy_path) = (db.clone(), copy_path.clone());
        move || SqliteStorage::copy_consistent(&db, &copy_path)
    })
    .await?
    .map_err(|source| BackupError::Database {
        what: format!("cannot copy {}", db.display()),
        source,
    })?;
    // A copy restore would refuse is not written either: restore's own check of an untrusted
    // file (schema, pages, foreign keys, counts), then the chains.
    blocking({
        let copy_path = copy_path.clone();
        move || SqliteStorage::check_untrusted(&copy_path)
    })
    .await?
    .map_err(|source| {
        let refused = match source {
            IntegrityError::Broken(_) => "the database does not pass its integrity check",
            IntegrityError::Storage(_) => "restore would refuse the copy",
        };
        BackupError::Integrity {
            what: format!(
                "data dir {}: nothing written, {refused}",
                data_dir.display()
            ),
            hint: repair_hint(&source, &repair_command(data_dir)),
            source,
        }
    })?;
    let storage = blocking({
        let copy_path = copy_path.clone();
        move || SqliteStorage::open_read_only(&copy_path)
    })
    .await?
    .map_err(|source| BackupError::Database {
        what: format!("the copy of {}", db.display()),
        source,
    })?;
    let report = verify_chains(&storage).await;
    close(storage).await;
    let report = report.map_err(|source| BackupError::Chain {
        what: format!(
            "data dir {}: nothing written, the database's own chains do not verify",
            data_dir.display()
        ),
        source,
    })?;
    let out_owned = out.to_owned();
    let manifest = blocking({
        let report = report.clone();
        move || write_file(&copy_path, &parent, &out_owned, force, &report)
    })
    .await??;
    drop(scratch);
    Ok(BackupSummary { manifest, report })
}

/// Writes the backup file from the database copy at `copy`, read through one handle (hashed,
/// then copied): a temp file in `parent`, synced, then put in place (replacing an existing
/// file only with `force`), and the directory synced.
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
    let mut source = File::open(copy).map_err(io_err)?;
    let length = source.metadata().map_err(io_err)?.len();
    let sha256 = format::copy_hashing(&mut BufReader::new(&mut source), &mut io::sink(), length)
        .map_err(io_err)?;
    source.rewind().map_err(io_err)?;
    let manifest = Manifest::new(report, length, &sha256);

    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("backup");
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(parent)
        .map_err(|e| write_err(format!("cannot create a file in {}: {e}", parent.display())))?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        format::write_head(&mut w, &manifest).map_err(io_err)?;
        let copied = io::copy(
            &mut io::Read::take(BufReader::new(&mut source), length),
            &mut w,
        )
        .map_err(io_err)?;
        if copied != length {
            return Err(write_err("the database copy ended early".into()));
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
    fsio::sync_dir(parent)
        .map_err(|e| write_err(format!("written, but syncing its directory: {e}")))?;
    Ok(manifest)
}

/// Restores the backup `from` into `data_dir`, which must be absent or an empty dir, and, with
/// `kek_from`, copies the KEK configuration of that data dir into it and checks the audit
/// checkpoints' MACs with it (`secrets` unlock a KEK in an HSM). On any failure, removes what
/// it wrote (and the dir, if it made it).
pub async fn restore(
    from: &Path,
    data_dir: &Path,
    kek_from: Option<&Path>,
    secrets: KekSecrets,
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
    let kek_files = match kek_from {
        Some(old) => Some(kek_files(old)?),
        None => None,
    };
    let target = datadir::prepare_new(data_dir).map_err(|e| not_initialised(data_dir, e))?;
    let result = restore_into(
        from,
        reader,
        &manifest,
        data_dir,
        kek_from.zip(kek_files),
        secrets,
    )
    .await;
    match result {
        Ok((report, kek_files, macs)) => {
            drop(target);
            let next = next_steps(data_dir, kek_from, &kek_files, macs);
            Ok(RestoreSummary {
                manifest,
                report,
                kek_files,
                checkpoint_macs_checked: macs,
                next,
            })
        }
        Err(e) => {
            target.abandon();
            Err(e)
        }
    }
}

/// The operator's next step after a restore, in one line.
fn next_steps(
    data_dir: &Path,
    kek_from: Option<&Path>,
    kek_files: &[String],
    macs: Option<u64>,
) -> String {
    let dir = data_dir.display();
    match (kek_from, macs) {
        (Some(old), Some(macs)) => format!(
            "copied {} from {}; {macs} audit checkpoint MACs verified with that KEK; `coffer \
             server --data-dir {dir}` can start",
            kek_files.join(", "),
            old.display()
        ),
        _ => format!(
            "before `coffer server --data-dir {dir}` starts, {dir} needs the instance KEK from \
             its own backup: {KEK_FILE} (or {KEK_CONFIG}, with the HSM holding its key objects), \
             {VERSIONS_FILE} and every key file it names, and account-keks/ if accounts have \
             their own KEKs (or run restore again with --kek-from OLD_DIR); then run `coffer \
             audit verify` for every account before trusting it: the checks made so far are \
             unkeyed"
        ),
    }
}

async fn restore_into(
    from: &Path,
    reader: BufReader<File>,
    manifest: &Manifest,
    data_dir: &Path,
    kek_from: Option<(&Path, Vec<String>)>,
    secrets: KekSecrets,
) -> Result<(ChainReport, Vec<String>, Option<u64>), BackupError> {
    let db = data_dir.join(DB_FILE);
    let what = |message: &str| format!("the restored copy {}: {message}", db.display());
    blocking({
        let (from, db, manifest) = (from.to_owned(), db.clone(), manifest.clone());
        move || write_database(&from, reader, &manifest, &db)
    })
    .await??;
    // Checked as an untrusted file before anything opens it read-write.
    blocking({
        let db = db.clone();
        move || SqliteStorage::check_untrusted(&db)
    })
    .await?
    .map_err(|source| BackupError::Integrity {
        what: what("refused before opening it"),
        // The file stays refused (it is untrusted), but its source can be set right.
        hint: if source.is_count() {
            " (the data dir it was taken from can be repaired with `coffer repair --data-dir \
             DIR`, which recounts secret counts, and backed up again)"
                .to_owned()
        } else {
            String::new()
        },
        source,
    })?;
    // Opened the way the server opens it (a copy from an older build is migrated here), then
    // closed before anything else touches it.
    let storage = blocking({
        let db = db.clone();
        move || SqliteStorage::open(&db)
    })
    .await?
    .map_err(|source| BackupError::Database {
        what: what("does not open"),
        source,
    })?;
    let report = verify_chains(&storage).await;
    close(storage).await;
    let report = report.map_err(|source| BackupError::Chain {
        what: "the restored copy".to_owned(),
        source,
    })?;
    if let Some(difference) = manifest.heads.mismatch(&Heads::of(&report)) {
        return Err(BackupError::Mismatch(difference));
    }
    let Some((old, names)) = kek_from else {
        fsio::sync_dir(data_dir).map_err(|e| BackupError::DataDir {
            path: data_dir.to_owned(),
            message: format!("cannot sync: {e}"),
        })?;
        return Ok((report, Vec::new(), None));
    };
    let copied = blocking({
        let (old, new) = (old.to_owned(), data_dir.to_owned());
        move || copy_kek(&old, &names, &new)
    })
    .await??;
    let macs = check_macs(data_dir, secrets).await?;
    Ok((report, copied, Some(macs)))
}

/// Writes `db` (new, 0600) from the database part at `reader`, synced, and checks its SHA-256.
fn write_database(
    from: &Path,
    mut reader: BufReader<File>,
    manifest: &Manifest,
    db: &Path,
) -> Result<(), BackupError> {
    let dir = db.parent().unwrap_or(Path::new("."));
    let target_err = |message: String| BackupError::DataDir {
        path: dir.to_owned(),
        message,
    };
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
        .map_err(|e| target_err(format!("cannot create {DB_FILE}: {e}")))?;
    let sha256 = {
        let mut w = BufWriter::new(&mut out);
        let sha256 = format::copy_hashing(&mut reader, &mut w, manifest.database.length).map_err(
            |e| match e.kind() {
                // The file shrank after its length was checked.
                ErrorKind::UnexpectedEof => BackupError::Format {
                    path: from.to_owned(),
                    source: FormatError::Truncated("database part"),
                },
                _ => target_err(format!("cannot write {DB_FILE}: {e}")),
            },
        )?;
        w.flush()
            .map_err(|e| target_err(format!("cannot write {DB_FILE}: {e}")))?;
        sha256
    };
    out.sync_all()
        .map_err(|e| target_err(format!("cannot sync {DB_FILE}: {e}")))?;
    if sha256.as_ref() != manifest.database.sha256 {
        return Err(BackupError::DatabaseChecksum {
            path: from.to_owned(),
            actual: hex::encode(sha256.as_ref()),
            expected: hex::encode(manifest.database.sha256),
        });
    }
    Ok(())
}

/// Opens the restored dir with the KEK just copied, as the server would (its instance keys must
/// unwrap, and every KEK id a stored key is wrapped by must be one of its versions or an
/// account KEK's), and verifies every account's audit checkpoints' MACs against the restored chains.
/// The number of checkpoints verified.
async fn check_macs(data_dir: &Path, secrets: KekSecrets) -> Result<u64, BackupError> {
    let keyed = BackupError::Keyed;
    let kek = crate::kek::open(data_dir, secrets)
        .await
        .map_err(|e| keyed(format!("the KEK copied does not open: {}", e.message)))?;
    let storage = datadir::sqlite(data_dir)
        .map_err(|e| keyed(format!("the restored database does not open: {e}")))?;
    let coffer = datadir::open_coffer(
        data_dir,
        storage,
        kek,
        coffer_core::Limits::default(),
        KeyOptions::default(),
    )
    .await
    .map_err(|e| {
        keyed(format!(
            "the restored dir does not open with the KEK copied: {e}"
        ))
    })?;
    let storage = coffer.storage();
    let result = async {
        let mut checked = 0u64;
        for account in storage
            .audit_accounts()
            .await
            .map_err(|e| keyed(e.to_string()))?
        {
            let v = coffer
                .verify_chain(account)
                .await
                .map_err(|e| keyed(format!("account {account}: {e}")))?;
            if let Some((seq, problem)) = v.first_bad {
                return Err(keyed(format!(
                    "audit of account {account} at seq {seq}: {problem}"
                )));
            }
            checked += v.checkpoints_checked;
        }
        Ok(checked)
    }
    .await;
    coffer.shutdown().await;
    result
}

/// Checks the chains and the integrity (counts, foreign keys) of `data_dir`'s database,
/// read-only (no lock: a server may be serving it).
pub async fn verify(data_dir: &Path) -> Result<Verified, BackupError> {
    let db = datadir::check_initialised(data_dir).map_err(|e| not_initialised(data_dir, e))?;
    let what = format!("data dir {}", data_dir.display());
    let storage = blocking({
        let db = db.clone();
        move || SqliteStorage::open_read_only(&db)
    })
    .await?
    .map_err(|source| BackupError::Database {
        what: what.clone(),
        source,
    })?;
    let verified = verify_storage(&storage, &what, &repair_command(data_dir)).await;
    close(storage).await;
    verified
}

/// Checks the chains and the counts of the PostgreSQL database `database` names, read-only:
/// no data dir, no KEK, nothing migrated or written (every session is read-only). Its schema
/// must be this build's. Messages name the database as `host:port/database`, never the
/// password.
pub async fn verify_database(
    database: &crate::Database,
) -> Result<(String, Verified), BackupError> {
    let storage = crate::database::connect_read_only(database)
        .await
        .map_err(|e| {
            BackupError::Connect(match e {
                crate::ServerError::Database(message) => message,
                other => other.to_string(),
            })
        })?;
    let target = storage.target().to_owned();
    let verified = verify_storage(
        &*storage,
        &format!("database {target}"),
        "coffer repair --database-url URL",
    )
    .await;
    storage.shutdown().await;
    Ok((target, verified?))
}

/// The chain check, then the integrity check, of an open storage; `repair`: the command that
/// recounts its secret counts, named when one drifted.
async fn verify_storage(
    storage: &dyn Storage,
    what: &str,
    repair: &str,
) -> Result<Verified, BackupError> {
    let report = verify_chains(storage)
        .await
        .map_err(|source| BackupError::Chain {
            what: what.to_owned(),
            source,
        })?;
    let integrity = verify_integrity(storage)
        .await
        .map_err(|source| BackupError::Integrity {
            what: what.to_owned(),
            hint: repair_hint(&source, repair),
            source,
        })?;
    Ok(Verified::of(&report, &integrity))
}

/// `coffer repair` for the data dir at `data_dir`.
pub(crate) fn repair_command(data_dir: &Path) -> String {
    format!("coffer repair --data-dir {}", data_dir.display())
}

/// For a drifted count (and nothing else), how to repair it: ` (`COMMAND` recounts secret
/// counts)`.
pub(crate) fn repair_hint(e: &IntegrityError, command: &str) -> String {
    if e.is_count() {
        format!(" (`{command}` recounts secret counts)")
    } else {
        String::new()
    }
}

/// The instance KEK's configuration files in `old`, as its KEK versions file names them:
/// `kek.key` or `kek.toml`, `kek-versions.toml`, and the key file of every version that is not
/// retired (a key in an HSM has none). Checked readable here, before anything is written.
fn kek_files(old: &Path) -> Result<Vec<String>, BackupError> {
    let err = |message: String| BackupError::DataDir {
        path: old.to_owned(),
        message: format!("--kek-from: {message}"),
    };
    let exists = |name: &str| std::fs::symlink_metadata(old.join(name)).is_ok();
    let pkcs11 = exists(KEK_CONFIG);
    let mut names = Vec::new();
    if pkcs11 {
        names.push(KEK_CONFIG.to_owned());
    }
    if exists(VERSIONS_FILE) {
        names.push(VERSIONS_FILE.to_owned());
        let provider = if pkcs11 {
            Provider::Pkcs11
        } else {
            Provider::File
        };
        for entry in kek_versions::read_record(&old.join(VERSIONS_FILE), provider).map_err(err)? {
            if entry.object.is_none() && entry.meta.state != coffer_core::KekState::Retired {
                names.push(kek_versions::file_name(entry.meta.version));
            }
        }
    } else if !pkcs11 && exists(KEK_FILE) {
        names.push(KEK_FILE.to_owned());
    }
    if names.is_empty() {
        return Err(err(format!(
            "holds no KEK configuration ({KEK_FILE}, {KEK_CONFIG} or {VERSIONS_FILE})"
        )));
    }
    names.sort();
    names.dedup();
    for name in &names {
        let private = name.ends_with(".key");
        fsio::open_regular(&old.join(name), private).map_err(err)?;
    }
    Ok(names)
}

/// Copies `names` (see [`kek_files`]) and `old`'s account KEKs (records and the key files Coffer
/// made) into `new`, then syncs `new`. Nothing from an HSM: `kek.toml` and account records only
/// name their objects.
fn copy_kek(old: &Path, names: &[String], new: &Path) -> Result<Vec<String>, BackupError> {
    let err = |message: String| BackupError::DataDir {
        path: old.to_owned(),
        message: format!("--kek-from: {message}"),
    };
    let mut copied = Vec::new();
    for name in names {
        let mut file = fsio::open_regular(&old.join(name), name.ends_with(".key")).map_err(err)?;
        fsio::write_new(&new.join(name), &mut file).map_err(err)?;
        copied.push(name.clone());
    }
    copied.extend(crate::account_keks::copy_account_keks(old, new).map_err(err)?);
    fsio::sync_dir(new).map_err(|e| BackupError::DataDir {
        path: new.to_owned(),
        message: format!("cannot sync: {e}"),
    })?;
    Ok(copied)
}

/// Closes a handle this module opened, the same way everywhere: its writer (if any) stopped
/// and its read connections closed before the file is touched again or removed.
async fn close(storage: SqliteStorage) {
    storage.close().await;
    storage.close_reads();
}

/// Runs blocking work (SQLite, file copies) off the runtime's threads.
async fn blocking<T, F>(f: F) -> Result<T, BackupError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackupError::Internal(format!("a blocking task failed: {e}")))
}
