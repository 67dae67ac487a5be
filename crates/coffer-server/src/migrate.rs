//! `coffer migrate --from D --to URL`: an embedded installation moved to PostgreSQL
//! (docs/operations.md, "Moving to PostgreSQL").
//!
//! With D's lock held (a server serving D makes it refuse), its database is opened (migrated to
//! this build's schema if older), its chains verified and its integrity checked (counts and
//! foreign keys: a drifted count is named with `coffer repair`, which recounts); then `PgStorage::import_sqlite`
//! copies every row, as stored, into the empty database at URL in one transaction (refusing a
//! database that holds an instance or any row; making the cluster id in that transaction when
//! the source had none), and before its COMMIT verifies the copy in that transaction with the
//! same chain check as the source's (`verify_chains_in`: the change log from its base and every
//! audit chain), whose heads must equal the source's. So a copy is committed whole and
//! verified, or not at all: nothing ever needs undoing (the append-only tables would refuse
//! it). Last, D gets `backend.toml` (the backend and the cluster id,
//! written by `database::write_backend` as `coffer init --database-url` writes it), so `coffer
//! server --data-dir D --database-url URL` serves the copy; `coffer.db` stays in D as the
//! rollback copy (upgraded to this build's schema if it was older, otherwise as it was).

use std::path::{Path, PathBuf};

use coffer_postgres::{ImportCounts, ImportError, Imported};
use coffer_storage::{ChainReport, SqliteStorage, Storage, verify_chains, verify_integrity};

use crate::database::{self, BACKEND_FILE, Database};
use crate::{ServerError, datadir};

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
    /// The copy failed, or does not verify; nothing was committed.
    #[error("target database {target}: {message}; the database was left empty")]
    Copy { target: String, message: String },
    /// The COMMIT failed and whether it took effect could not be read.
    #[error(
        "target database {target}: {message}: look at it before trying again (a database holding the copy is refused as not empty; drop and recreate it)"
    )]
    CommitUnknown { target: String, message: String },
    /// The copy is committed and verified, but D's `backend.toml` could not be written: D
    /// still serves its SQLite database.
    #[error(
        "target database {target}: the copy (cluster id {cluster_id}) is committed and verified, but {} was not switched to it: {message}; D still serves coffer.db: drop and recreate {target}, fix the cause, and run migrate again", path.display()
    )]
    NotSwitched {
        path: PathBuf,
        target: String,
        cluster_id: String,
        message: String,
    },
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
    /// The SQLite database left in D: the rollback copy.
    pub rollback: PathBuf,
    /// Set when `backend.toml` is in place but syncing the dir failed: the migration is
    /// done, and the operator should check the file survives.
    pub warning: Option<String>,
}

/// Moves the embedded installation in `data_dir` into the empty PostgreSQL database `db`
/// (see the module's comment). Connects the way `coffer server --database-url` does
/// (`database::connect`: the password file's rules, retries for `db.connect_timeout`).
pub async fn migrate(data_dir: &Path, db: &Database) -> Result<Migrated, MigrateError> {
    let dir_err = |message: String| MigrateError::DataDir {
        path: data_dir.to_owned(),
        message,
    };
    if let Some(backend) = database::read_backend(data_dir).map_err(|e| dir_err(message(e)))? {
        return Err(dir_err(format!(
            "already moved to PostgreSQL ({BACKEND_FILE} names cluster id {}): nothing to migrate",
            backend.cluster_id
        )));
    }
    let source_db = datadir::check_initialised(data_dir).map_err(|e| dir_err(message(e)))?;
    let _lock = datadir::lock(data_dir).map_err(|e| match e {
        ServerError::DataDirInUse { path } => MigrateError::InUse { path },
        other => dir_err(message(other)),
    })?;

    let source_err = |message: String| MigrateError::Source {
        path: source_db.clone(),
        message,
    };
    let opened = tokio::task::spawn_blocking({
        let path = source_db.clone();
        move || SqliteStorage::open(&path)
    })
    .await
    .map_err(|e| source_err(format!("opening it failed: {e}")))?;
    let source = opened.map_err(|e| source_err(e.to_string()))?;
    let verified = verify_chains(&source).await;
    // What lists trust, checked here (the copy would fail late on a count, as if it were the
    // copy that is wrong).
    let integrity = verify_integrity(&source).await;
    source.close().await;
    source.close_reads();
    let expected =
        verified.map_err(|e| source_err(format!("chains do not verify, not migrating: {e}")))?;
    integrity.map_err(|e| {
        let hint = crate::backup::repair_hint(&e, &crate::backup::repair_command(data_dir));
        source_err(format!(
            "does not pass its integrity check, not migrating: {e}{hint}"
        ))
    })?;

    let pg = database::connect(db, None)
        .await
        .map_err(|e| MigrateError::Connect(message(e)))?;
    let target = pg.target().to_owned();
    let imported = pg.import_sqlite(&source_db, &expected).await;
    pg.shutdown().await;
    let Imported { counts, report } = imported.map_err(|e| match e {
        ImportError::NotEmpty(message) => MigrateError::NotEmpty {
            target: target.clone(),
            message: match expected.log.cluster_id.map(hex::encode) {
                // The same cluster id: a copy of this very dir (a run that committed but could
                // not switch the dir, or a crash between the two).
                Some(id) if message.contains(&id) => format!(
                    "{message}; that is this data dir's own instance, copied by an earlier migrate that did not finish switching the dir: drop and recreate the database, then run migrate again"
                ),
                _ => message,
            },
        },
        ImportError::CommitUnknown(message) => MigrateError::CommitUnknown {
            target: target.clone(),
            message,
        },
        other => MigrateError::Copy {
            target: target.clone(),
            message: format!("copying failed: {other}"),
        },
    })?;
    let cluster_id = report.log.cluster_id.ok_or_else(|| MigrateError::Copy {
        target: target.clone(),
        message: "the copy has no cluster id".into(),
    })?;
    let warning = match database::write_backend(data_dir, cluster_id) {
        Ok(()) => None,
        // Renamed into place, but the dir sync failed: done, with a warning.
        Err(e) if backend_names(data_dir, cluster_id) => Some(message(e)),
        Err(e) => {
            return Err(MigrateError::NotSwitched {
                path: data_dir.to_owned(),
                target,
                cluster_id: hex::encode(cluster_id),
                message: message(e),
            });
        }
    };
    Ok(Migrated {
        target,
        counts,
        report,
        cluster_id,
        rollback: source_db,
        warning,
    })
}

/// Whether `backend.toml` in `dir` is in place and names `cluster_id`.
fn backend_names(dir: &Path, cluster_id: [u8; 16]) -> bool {
    matches!(database::read_backend(dir), Ok(Some(b)) if b.cluster_id == hex::encode(cluster_id))
}

/// A server error's message without the data dir's path (the caller's error names it).
fn message(e: ServerError) -> String {
    match e {
        ServerError::DataDir { message, .. } => message,
        other => other.to_string(),
    }
}
