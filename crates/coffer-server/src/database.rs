//! A data dir whose state lives in PostgreSQL (`--database-url`): connecting (with retries
//! while the database comes up), and the small file that ties the data dir to its instance.
//!
//! Such a data dir holds only what is local to the machine: the KEK (or its HSM
//! configuration), the lock, and `backend.toml`, which names the backend and the instance's
//! cluster id (never the URL nor its password). Everything else is in the database, shared by
//! every instance started from a copy of the data dir (`cp -r D D2`) with the same URL.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_postgres::{PgOptions, PgStorage};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ServerError;

/// The file naming a data dir's backend.
pub(crate) const BACKEND_FILE: &str = "backend.toml";
/// `backend.toml` being written, before its rename into place.
const BACKEND_TEMP: &str = "backend.toml.tmp";

/// How long an API token row, or a runtime or node cache entry, is served after it was read on
/// a shared database: a token (service token, node) revoked or an account deleted on another
/// instance stops working here within this time, whether or not notifications arrive.
pub(crate) const CACHE_MAX_AGE: Duration = Duration::from_millis(500);

/// Where the state of a PostgreSQL-backed instance is, and how to reach it. Its `Debug` never
/// shows the URL (which may carry a password).
#[derive(Clone)]
pub struct Database {
    /// `postgres://` or `postgresql://`.
    pub url: Zeroizing<String>,
    /// A file holding the password (used when the URL has none, before `PGPASSWORD`).
    pub password_file: Option<PathBuf>,
    /// How long the start keeps retrying an unreachable database.
    pub connect_timeout: Duration,
}

impl Database {
    /// The default of `--database-connect-timeout`.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

    pub fn new(url: impl Into<String>) -> Database {
        Database {
            url: Zeroizing::new(url.into()),
            password_file: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("url", &"<not shown>")
            .field("password_file", &self.password_file)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// `backend.toml`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct BackendFile {
    /// Always `postgresql` (a SQLite data dir has no such file).
    pub backend: String,
    /// The instance's cluster id, hex: a URL naming a database of another instance is refused.
    pub cluster_id: String,
}

fn dir_error(path: &Path, message: impl Into<String>) -> ServerError {
    ServerError::DataDir {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The data dir's backend file, if it has one.
pub(crate) fn read_backend(path: &Path) -> Result<Option<BackendFile>, ServerError> {
    let file = path.join(BACKEND_FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(dir_error(path, format!("cannot read {BACKEND_FILE}: {e}"))),
    };
    let parsed: BackendFile = toml::from_str(&text).map_err(|e| {
        dir_error(
            path,
            format!("{BACKEND_FILE} is not valid: {}", e.message()),
        )
    })?;
    if parsed.backend != "postgresql" {
        return Err(dir_error(
            path,
            format!(
                "{BACKEND_FILE} names backend `{}`; this build knows `postgresql`",
                parsed.backend
            ),
        ));
    }
    Ok(Some(parsed))
}

/// Writes `backend.toml` into the data dir at `path` atomically: a temporary file (new, mode
/// 0600) written and synced, renamed into place, then the dir synced. Before the rename
/// nothing of it is left on failure; once it returns `Ok` the file is whole and durable. A
/// failure after the rename (syncing the dir) is an error whose file is nevertheless in place:
/// callers that must know check with [`read_backend`].
pub(crate) fn write_backend(path: &Path, cluster_id: [u8; 16]) -> Result<(), ServerError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let failed =
        |e: &dyn fmt::Display| dir_error(path, format!("cannot write {BACKEND_FILE}: {e}"));
    let text = toml::to_string(&BackendFile {
        backend: "postgresql".into(),
        cluster_id: hex::encode(cluster_id),
    })
    .map_err(|e| failed(&e))?;
    let temp = path.join(BACKEND_TEMP);
    // The caller holds the dir's lock: a temporary file there is a crashed run's.
    let _ = std::fs::remove_file(&temp);
    let written = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| {
            // Never over another instance's marker.
            if path.join(BACKEND_FILE).exists() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{BACKEND_FILE} already exists"),
                ));
            }
            std::fs::rename(&temp, path.join(BACKEND_FILE))
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(failed(&e));
    }
    crate::fsio::sync_dir(path).map_err(|e| failed(&e))
}

/// Connects to `db`, retrying an unreachable database with backoff (0.5 s doubling to 5 s;
/// each failure logged) until `db.connect_timeout` has passed. Errors never hold the password.
///
/// `expected_cluster`: the instance the data dir belongs to; a database holding another (or
/// none) is refused before anything is migrated (`ConnectError::OtherInstance`).
pub(crate) async fn connect(
    db: &Database,
    expected_cluster: Option<[u8; 16]>,
) -> Result<Arc<PgStorage>, ServerError> {
    let mut options = PgOptions::default();
    options.expected_cluster = expected_cluster;
    connect_with(db, options).await
}

/// [`connect`] read-only (`coffer verify --database-url`): no migration (the schema must be
/// this build's), every session read-only, no cluster expected.
pub(crate) async fn connect_read_only(db: &Database) -> Result<Arc<PgStorage>, ServerError> {
    let mut options = PgOptions::default();
    options.read_only = true;
    connect_with(db, options).await
}

async fn connect_with(
    db: &Database,
    mut options: PgOptions,
) -> Result<Arc<PgStorage>, ServerError> {
    let expected_cluster = options.expected_cluster;
    // Read by coffer-postgres with the rules every secret file is read by (a private regular
    // file, not a FIFO, small, not empty), once.
    options.password_file = db.password_file.clone();
    let deadline = Instant::now() + db.connect_timeout;
    options.connect_timeout = db
        .connect_timeout
        .clamp(Duration::from_secs(1), Duration::from_secs(10));
    let mut wait = Duration::from_millis(500);
    let mut attempt = 1u32;
    loop {
        match PgStorage::connect(&db.url, options.clone()).await {
            Ok(storage) => return Ok(Arc::new(storage)),
            Err(e) if e.is_transient() && Instant::now() + wait < deadline => {
                tracing::warn!(
                    error = %e,
                    attempt,
                    retry_in_ms = wait.as_millis() as u64,
                    "the database is not reachable yet; retrying"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(coffer_postgres::ConnectError::OtherInstance { found }) => {
                let expected = expected_cluster.map(hex::encode).unwrap_or_default();
                let holds = match found {
                    Some(id) => format!("the instance with cluster id {id}"),
                    None => "no Coffer instance".into(),
                };
                return Err(ServerError::Database(format!(
                    "this data dir belongs to the instance with cluster id {expected}, but the database at --database-url holds {holds}: refusing to serve another instance's data (nothing was changed in that database)"
                )));
            }
            Err(e) => {
                let after = if e.is_transient() {
                    format!(
                        " (gave up after {attempt} attempts in {} s; --database-connect-timeout)",
                        db.connect_timeout.as_secs()
                    )
                } else {
                    String::new()
                };
                return Err(ServerError::Database(format!("{e}{after}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_toml_is_put_in_place_whole_and_never_over_another() {
        let dir = tempfile::tempdir().unwrap();
        // A crashed run's temporary file is replaced, not a reason to fail.
        std::fs::write(dir.path().join(BACKEND_TEMP), "backend = \"postgr").unwrap();
        write_backend(dir.path(), [1; 16]).unwrap();
        let read = read_backend(dir.path()).unwrap().unwrap();
        assert_eq!(read.cluster_id, hex::encode([1u8; 16]));
        assert!(!dir.path().join(BACKEND_TEMP).exists());
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(BACKEND_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Another marker is never overwritten, and nothing is left behind.
        let err = write_backend(dir.path(), [2; 16]).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(
            read_backend(dir.path()).unwrap().unwrap().cluster_id,
            hex::encode([1u8; 16])
        );
        assert!(!dir.path().join(BACKEND_TEMP).exists());
    }

    #[test]
    fn a_failed_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        // The temporary name taken by a directory: the write fails before any rename.
        std::fs::create_dir(dir.path().join(BACKEND_TEMP)).unwrap();
        std::fs::write(dir.path().join(BACKEND_TEMP).join("x"), "").unwrap();
        assert!(write_backend(dir.path(), [1; 16]).is_err());
        assert!(!dir.path().join(BACKEND_FILE).exists());
    }
}
