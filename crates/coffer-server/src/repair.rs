//! `coffer repair`: secret counts that drifted from their rows (manual SQL, a restored dump)
//! set right again (docs/operations.md, "Drifted secret counts").
//!
//! Lists and quotas trust each store's and account's `secret_count` (kept by triggers);
//! `coffer verify`, `backup` and `restore` refuse a database where one is not its rows. Counts
//! are derived data, so repair recomputes them: the integrity check first
//! (`Storage::check_integrity`), then, if a count is wrong, `Storage::recount_secrets`, one
//! write through the storage's writer that sets every wrong count and reports each. A broken
//! foreign key is not derived data (a secret in another account's store): repair refuses it,
//! naming it, and the way out is a backup.
//!
//! - `repair(D)`: the data dir's SQLite database, with the server stopped (D's lock is taken,
//!   as `coffer migrate` does). A dir moved to PostgreSQL is refused: repair its database.
//! - `repair_database(URL)`: a PostgreSQL database, live: the check runs on a read-only
//!   connection (which also refuses a schema not this build's, so nothing is migrated), the
//!   recount under the writer lock every instance's writes take.
//!
//! Not an audited act (no account's data changes, only what is derived from it): one log line.

use std::path::{Path, PathBuf};

use coffer_storage::{
    IntegrityProblem, IntegrityReport, Recounted, SqliteStorage, Storage, StorageError,
};

use crate::database::{self, BACKEND_FILE, Database};
use crate::{ServerError, datadir};

/// Why a repair failed. One line each; never the database password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepairError {
    /// D is not an initialised embedded data dir, was moved to PostgreSQL, or its files are
    /// unusable.
    #[error("{}: {message}", path.display())]
    DataDir { path: PathBuf, message: String },
    /// A running server (or another command) holds D's lock.
    #[error(
        "{}: is in use by another coffer process: stop the server first (`coffer verify` runs beside it)",
        path.display()
    )]
    InUse { path: PathBuf },
    /// The database cannot be reached, or holds no Coffer schema of this build's version.
    #[error("--database-url: {0}")]
    Connect(String),
    /// Reading or writing the database failed.
    #[error("{what}: {source}")]
    Database {
        what: String,
        #[source]
        source: StorageError,
    },
    /// A broken invariant that is not a count: nothing was written.
    #[error(
        "{what}: {problem}: not repairable by `coffer repair`, which recounts secret counts \
         only; nothing was written: {remedy}"
    )]
    NotRepairable {
        what: String,
        problem: IntegrityProblem,
        remedy: &'static str,
    },
}

/// What a repair found and did.
#[derive(Debug)]
pub struct Repaired {
    /// The data dir's path, or the database as `host:port/database`.
    pub target: String,
    /// The integrity check before the recount (its problem, if any, a count).
    pub checked: IntegrityReport,
    /// The counts set (empty when every count was right: nothing was written).
    pub recounted: Recounted,
}

const SQLITE_REMEDY: &str =
    "restore the last good backup (`coffer restore`, docs/operations.md, \"Backup and restore\")";
const POSTGRES_REMEDY: &str = "restore the database from a backup (pg_restore or point-in-time recovery, docs/operations.md, \"Backing up PostgreSQL\")";

/// Repairs the secret counts of `data_dir`'s SQLite database, holding its lock (see the
/// module's comment).
pub async fn repair(data_dir: &Path) -> Result<Repaired, RepairError> {
    let dir_err = |message: String| RepairError::DataDir {
        path: data_dir.to_owned(),
        message,
    };
    if database::read_backend(data_dir)
        .map_err(|e| dir_err(message(e)))?
        .is_some()
    {
        return Err(dir_err(format!(
            "its state is in PostgreSQL ({BACKEND_FILE}); its coffer.db, if any, is only the rollback copy of a migration: repair the database with `coffer repair --database-url URL`"
        )));
    }
    let db = datadir::check_initialised(data_dir).map_err(|e| dir_err(message(e)))?;
    let _lock = datadir::lock(data_dir).map_err(|e| match e {
        ServerError::DataDirInUse { path } => RepairError::InUse { path },
        other => dir_err(message(other)),
    })?;
    let what = format!("data dir {}", data_dir.display());
    // Opened as the server opens it (a database of an older build is migrated first).
    let storage = tokio::task::spawn_blocking({
        let db = db.clone();
        move || SqliteStorage::open(&db)
    })
    .await
    .map_err(|e| dir_err(format!("opening the database failed: {e}")))?
    .map_err(|source| RepairError::Database {
        what: what.clone(),
        source,
    })?;
    let result = check_then_recount(&storage, &storage, &what, SQLITE_REMEDY).await;
    storage.close().await;
    storage.close_reads();
    let (checked, recounted) = result?;
    Ok(Repaired {
        target: data_dir.display().to_string(),
        checked,
        recounted,
    })
}

/// Repairs the secret counts of the PostgreSQL database `db` names, while instances serve it
/// (see the module's comment). Messages name the database as `host:port/database`.
pub async fn repair_database(db: &Database) -> Result<Repaired, RepairError> {
    let connect_err = |e: ServerError| {
        RepairError::Connect(match e {
            ServerError::Database(message) => message,
            other => other.to_string(),
        })
    };
    // Read-only first: the schema must be this build's (never migrated under serving
    // instances), and a problem that is not a count stops here, before any write.
    let reader = database::connect_read_only(db).await.map_err(connect_err)?;
    let target = reader.target().to_owned();
    let what = format!("database {target}");
    let checked = checked(&*reader, &what, POSTGRES_REMEDY).await;
    reader.shutdown().await;
    let checked = checked?;
    if checked.problem.is_none() {
        return Ok(Repaired {
            target,
            checked,
            recounted: Recounted::default(),
        });
    }
    let writer = database::connect(db, None).await.map_err(connect_err)?;
    let recounted = recount(&*writer, &what).await;
    writer.shutdown().await;
    Ok(Repaired {
        target,
        checked,
        recounted: recounted?,
    })
}

/// The integrity check on `reader`, then, if a count is wrong, the recount on `writer`.
async fn check_then_recount(
    reader: &dyn Storage,
    writer: &dyn Storage,
    what: &str,
    remedy: &'static str,
) -> Result<(IntegrityReport, Recounted), RepairError> {
    let checked = checked(reader, what, remedy).await?;
    let recounted = if checked.problem.is_some() {
        recount(writer, what).await?
    } else {
        Recounted::default()
    };
    Ok((checked, recounted))
}

/// The integrity check; refuses a problem that is not a count.
async fn checked(
    storage: &dyn Storage,
    what: &str,
    remedy: &'static str,
) -> Result<IntegrityReport, RepairError> {
    let report = storage
        .check_integrity()
        .await
        .map_err(|source| RepairError::Database {
            what: format!("{what}: the integrity check"),
            source,
        })?;
    match &report.problem {
        Some(problem) if !problem.is_count() => Err(RepairError::NotRepairable {
            what: what.to_owned(),
            problem: problem.clone(),
            remedy,
        }),
        _ => Ok(report),
    }
}

async fn recount(storage: &dyn Storage, what: &str) -> Result<Recounted, RepairError> {
    let recounted = storage
        .recount_secrets()
        .await
        .map_err(|source| RepairError::Database {
            what: format!("{what}: recounting secret counts"),
            source,
        })?;
    tracing::warn!(
        place = what,
        stores = recounted.stores.len(),
        accounts = recounted.accounts.len(),
        "drifted secret counts set to their rows (coffer repair)"
    );
    Ok(recounted)
}

/// A server error's message without the data dir's path (the caller's error names it).
fn message(e: ServerError) -> String {
    match e {
        ServerError::DataDir { message, .. } => message,
        other => other.to_string(),
    }
}
