//! `coffer migrate --from D --to URL`: an embedded installation moved to PostgreSQL
//! (docs/operations.md, "Moving to PostgreSQL").
//!
//! With D's lock held (a server serving D makes it refuse), its database is opened (migrated to
//! this build's schema if older) and its chains verified; then `PgStorage::import_sqlite`
//! copies every row, as stored, into the empty database at URL in one transaction (refusing a
//! database that holds an instance or any row); then the copy is verified through the
//! PostgreSQL backend with the same `verify_chains` as the source — the change log from its
//! base and every audit chain — and its heads must equal the source's. Any failure after the
//! COMMIT empties the database again (`PgStorage::clear_import`), so nothing of a failed
//! migration stays there. Last, D gets `backend.toml` (the backend and the cluster id), the
//! marker `coffer init --database-url` leaves, so `coffer server --data-dir D --database-url
//! URL` serves the copy; `coffer.db` stays in D untouched, the rollback copy.

use std::path::{Path, PathBuf};

use coffer_postgres::{ImportCounts, ImportError, PgOptions, PgStorage};
use coffer_storage::{ChainReport, SqliteStorage, Storage, verify_chains};
use serde::{Deserialize, Serialize};

use crate::datadir;

/// The file in a data dir that says its state is in PostgreSQL (written only by
/// [`write_backend`]).
pub const BACKEND_FILE: &str = "backend.toml";

/// Why a migration failed. One line each; never the database password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// D is not an initialised embedded data dir, already moved, or its files are unusable.
    #[error("{}: {message}", path.display())]
    DataDir { path: PathBuf, message: String },
    /// A running server (or another command) holds D's lock.
    #[error("{}: is in use by another coffer process: stop the server first", path.display())]
    InUse { path: PathBuf },
    /// The source database cannot be opened, read, or its chains do not verify.
    #[error("source {}: {message}", path.display())]
    Source { path: PathBuf, message: String },
    /// The target cannot be reached or logged into, its URL is wrong, or its schema is newer.
    #[error("target database: {0}")]
    Connect(String),
    /// The target holds an instance or rows.
    #[error("target database {target}: {message}")]
    NotEmpty { target: String, message: String },
    /// The copy failed, or does not verify; the target was left (or made) empty again.
    #[error("target database {target}: {message}; the database was left empty")]
    Copy { target: String, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a migration did.
#[derive(Debug)]
pub struct Migrated {
    /// `host:port/database` of the target (no user or password).
    pub target: String,
    /// Rows copied per table.
    pub counts: ImportCounts,
    /// The chains as verified on the target (equal to the source's).
    pub report: ChainReport,
    pub cluster_id: [u8; 16],
    /// The SQLite database left in D, unchanged: the rollback copy.
    pub rollback: PathBuf,
}

/// `backend.toml`: the format `coffer init --database-url` writes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct BackendFile {
    /// Always `postgresql` (a SQLite data dir has no such file).
    backend: String,
    /// The instance's cluster id, hex.
    cluster_id: String,
}

/// Writes `backend.toml` into `dir` (created new, mode 0600, synced).
pub fn write_backend(dir: &Path, cluster_id: [u8; 16]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let text = toml::to_string(&BackendFile {
        backend: "postgresql".into(),
        cluster_id: hex::encode(cluster_id),
    })
    .map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(dir.join(BACKEND_FILE))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    crate::fsio::sync_dir(dir)
}

/// Moves the embedded installation in `data_dir` into the empty PostgreSQL database at `url`
/// (see the module's comment).
pub async fn migrate(
    data_dir: &Path,
    url: &str,
    options: PgOptions,
) -> Result<Migrated, MigrateError> {
    let dir_err = |message: String| MigrateError::DataDir {
        path: data_dir.to_owned(),
        message,
    };
    if data_dir.join(BACKEND_FILE).exists() {
        return Err(dir_err(format!(
            "already moved to PostgreSQL ({BACKEND_FILE} is there): nothing to migrate"
        )));
    }
    let db = datadir::check_initialised(data_dir).map_err(|e| dir_err(message(e)))?;
    let _lock = datadir::lock(data_dir).map_err(|e| match e {
        crate::ServerError::DataDirInUse { path } => MigrateError::InUse { path },
        other => dir_err(message(other)),
    })?;

    let source_err = |message: String| MigrateError::Source {
        path: db.clone(),
        message,
    };
    let source = blocking({
        let db = db.clone();
        move || SqliteStorage::open(&db)
    })
    .await?
    .map_err(|e| source_err(e.to_string()))?;
    let verified = verify_chains(&source).await;
    source.close().await;
    source.close_reads();
    let expected =
        verified.map_err(|e| source_err(format!("chains do not verify, not migrating: {e}")))?;

    let pg = PgStorage::connect(url, options)
        .await
        .map_err(|e| MigrateError::Connect(e.to_string()))?;
    let target = pg.target().to_owned();
    let result = copy_and_check(&pg, &db, &expected).await;
    let result = match result {
        Ok((counts, report, cluster_id)) => write_backend(data_dir, cluster_id)
            .map(|()| (counts, report, cluster_id))
            .map_err(|e| Failure::Copied(format!("cannot write {BACKEND_FILE} into D: {e}"))),
        Err(e) => Err(e),
    };
    let outcome = match result {
        Ok((counts, report, cluster_id)) => Ok(Migrated {
            target,
            counts,
            report,
            cluster_id,
            rollback: db,
        }),
        Err(Failure::NotEmpty(message)) => Err(MigrateError::NotEmpty { target, message }),
        Err(Failure::RolledBack(message)) => Err(MigrateError::Copy { target, message }),
        Err(Failure::Copied(message)) => match pg.clear_import().await {
            Ok(()) => Err(MigrateError::Copy { target, message }),
            Err(e) => Err(MigrateError::Internal(format!(
                "{message}; emptying the target database again failed too ({e}): drop and \
                 recreate {target} before trying again"
            ))),
        },
    };
    pg.shutdown().await;
    outcome
}

/// How the copy failed: before its COMMIT (nothing to undo), or after (undo it).
enum Failure {
    NotEmpty(String),
    RolledBack(String),
    Copied(String),
}

async fn copy_and_check(
    pg: &PgStorage,
    db: &Path,
    expected: &ChainReport,
) -> Result<(ImportCounts, ChainReport, [u8; 16]), Failure> {
    let counts = pg.import_sqlite(db).await.map_err(|e| match e {
        ImportError::NotEmpty(m) => Failure::NotEmpty(m),
        other => Failure::RolledBack(format!("copying failed: {other}")),
    })?;
    let report = verify_chains(pg)
        .await
        .map_err(|e| Failure::Copied(format!("the copy does not verify: {e}")))?;
    if report.log != expected.log {
        return Err(Failure::Copied(format!(
            "the copy's change log (base {}, head {}) is not the source's (base {}, head {})",
            report.log.base_seq, report.log.head_seq, expected.log.base_seq, expected.log.head_seq
        )));
    }
    if report.audit_heads != expected.audit_heads {
        return Err(Failure::Copied(
            "the copy's audit heads are not the source's".into(),
        ));
    }
    // A store that never had a cluster id (no edge ever followed it) gets one now: the data
    // dir's marker names its instance by it.
    let cluster_id = match report.log.cluster_id {
        Some(id) => id,
        None => pg
            .ensure_cluster_id()
            .await
            .map_err(|e| Failure::Copied(format!("cannot make the cluster id: {e}")))?,
    };
    Ok((counts, report, cluster_id))
}

fn message(e: crate::ServerError) -> String {
    match e {
        crate::ServerError::DataDir { message, .. } => message,
        other => other.to_string(),
    }
}

async fn blocking<T, F>(f: F) -> Result<T, MigrateError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| MigrateError::Internal(format!("a blocking task failed: {e}")))
}
