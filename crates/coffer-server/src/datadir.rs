//! The data dir: where the embedded deployment keeps its KEK file and SQLite database.
//!
//! ```text
//! DIR/            mode 0700
//!   lock          held (flock) by the one process serving this dir
//!   kek.key       the file KEK, mode 0600 (the default), or
//!   kek.toml      the PKCS#11 URI and id of a KEK held in an HSM (`kek.rs`), mode 0600
//!   coffer.db     SQLite database, mode 0600 (+ -wal, -shm, which SQLite creates alike), or
//!   backend.toml  for an instance on PostgreSQL: the backend and the instance's cluster id
//!                 (`database.rs`); the state is then in the database, not here
//! ```
//!
//! One process at a time: the embedded database has one writer, so a second `coffer server`
//! (or `coffer init`) on the same dir is refused rather than left to fight over it. Several
//! control-plane instances are what the PostgreSQL backend is for. `coffer backup` and `coffer
//! verify` read the database without the lock, read-only (`backup.rs`); `coffer restore` takes
//! the lock of the dir it restores into.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use coffer_core::{Coffer, Limits};
use coffer_storage::{SqliteStorage, Storage};

use crate::KeyOptions;
use crate::account_keks::AccountKekRecords;
use crate::database::{self, BACKEND_FILE, Database};
use crate::kek::{self, KEK_CONFIG, KEK_FILE, KekChoice, KekSecrets};
use crate::kek_versions::{KekRing, VERSIONS_FILE};
use crate::{InitOutcome, ServerError};

pub(crate) const LOCK_FILE: &str = "lock";
pub(crate) const DB_FILE: &str = "coffer.db";

fn data_dir_error(path: &Path, message: impl Into<String>) -> ServerError {
    ServerError::DataDir {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn kek_error(path: &Path, error: kek::KekError) -> ServerError {
    if error.login {
        ServerError::HsmLogin {
            path: path.to_owned(),
            message: error.message,
        }
    } else {
        data_dir_error(path, error.message)
    }
}

/// An open data dir: the domain service and the lock that keeps other processes out. Dropping
/// it releases the lock.
#[derive(Debug)]
pub struct DataDir {
    pub coffer: Coffer,
    /// The instance KEK's versions (the server times its calls with metrics).
    pub(crate) kek: Arc<KekRing>,
    _lock: File,
}

/// Takes the data dir's lock (`DIR/lock`, held until the file is dropped), or says which
/// process-level conflict stops us. Edges lock their own dirs the same way.
pub fn lock(path: &Path) -> Result<File, ServerError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path.join(LOCK_FILE))
        .map_err(|e| data_dir_error(path, format!("cannot open lock file: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(ServerError::DataDirInUse {
            path: path.to_owned(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(data_dir_error(path, format!("cannot lock: {e}"))),
    }
}

/// Whether `path` is an initialised embedded data dir (its KEK configuration and SQLite
/// database are there, and no `backend.toml` moved its state to PostgreSQL); returns the
/// database's path. Takes no lock. For `coffer backup`, `verify` and `migrate`, which read
/// `coffer.db`: in a dir moved to PostgreSQL that file is only the rollback copy.
pub(crate) fn check_initialised(path: &Path) -> Result<std::path::PathBuf, ServerError> {
    if path.join(BACKEND_FILE).exists() {
        return Err(data_dir_error(
            path,
            format!(
                "its state is in PostgreSQL ({BACKEND_FILE}); its coffer.db, if any, is only the rollback copy of a migration: back the database up with PostgreSQL's tools (pg_dump, PITR) and check it with `coffer verify --database-url`"
            ),
        ));
    }
    let has_kek = path.join(KEK_FILE).exists()
        || path.join(KEK_CONFIG).exists()
        || path.join(VERSIONS_FILE).exists();
    let db = path.join(DB_FILE);
    if !has_kek || !db.exists() {
        return Err(data_dir_error(
            path,
            "not an initialised Coffer data dir (run `coffer init --data-dir` first)",
        ));
    }
    Ok(db)
}

/// Opens an initialised data dir; `secrets` unlock its KEK if it is in an HSM. A data dir made
/// for PostgreSQL needs `database` (and one made for SQLite refuses it); the database must hold
/// the instance the data dir belongs to (the cluster id in `backend.toml`).
pub async fn open(
    path: &Path,
    limits: Limits,
    secrets: KekSecrets,
    keys: KeyOptions,
    database: Option<&Database>,
) -> Result<DataDir, ServerError> {
    let has_kek = path.join(KEK_FILE).exists()
        || path.join(KEK_CONFIG).exists()
        || path.join(VERSIONS_FILE).exists();
    let backend = if has_kek {
        database::read_backend(path)?
    } else {
        None
    };
    let has_db = path.join(DB_FILE).exists();
    match (&backend, database) {
        (Some(backend), None) => {
            return Err(data_dir_error(
                path,
                format!(
                    "belongs to an instance on PostgreSQL (cluster id {}): give its database with --database-url or COFFER_DATABASE_URL",
                    backend.cluster_id
                ),
            ));
        }
        (None, Some(_)) if has_kek && has_db => {
            return Err(data_dir_error(
                path,
                "holds an embedded SQLite instance (coffer.db), which a database URL cannot serve (one was given by --database-url, COFFER_DATABASE_URL or a config file's [database] url): the URL is for a data dir made by `coffer init --database-url`",
            ));
        }
        _ => {}
    }
    if !has_kek || (backend.is_none() && !has_db) {
        return Err(data_dir_error(
            path,
            "not an initialised Coffer data dir (run `coffer init --data-dir` first)",
        ));
    }
    let lock = lock(path)?;
    let kek = kek::open(path, secrets)
        .await
        .map_err(|e| kek_error(path, e))?;
    let (storage, shared) = match (backend, database) {
        (Some(backend), Some(db)) => {
            let mut expected = [0u8; 16];
            hex::decode_to_slice(&backend.cluster_id, &mut expected).map_err(|_| {
                data_dir_error(
                    path,
                    format!("{BACKEND_FILE}'s cluster-id is not 32 hex digits"),
                )
            })?;
            // The database must hold this instance: checked before anything is migrated.
            let storage = database::connect(db, Some(expected)).await?;
            (storage as Arc<dyn Storage>, true)
        }
        _ => (sqlite(path)?, false),
    };
    let coffer = open_coffer(path, storage, Arc::clone(&kek), limits, keys).await?;
    if shared {
        coffer.share_database(database::CACHE_MAX_AGE);
        // Keys live on each machine, the database is shared: one this instance lacks (a KEK
        // version or an account KEK made on another instance) would fail every unwrap of it.
        let unknown = match coffer.unknown_kek_ids().await {
            Ok(unknown) => unknown,
            Err(e) => {
                coffer.shutdown().await;
                return Err(ServerError::Database(e.to_string()));
            }
        };
        if !unknown.is_empty() {
            coffer.shutdown().await;
            return Err(data_dir_error(
                path,
                format!(
                    "the database holds keys wrapped by KEK id(s) {} that this data dir's KEK does not have (made on another instance?): every instance on one database needs the same KEK files",
                    unknown.join(", ")
                ),
            ));
        }
    }
    Ok(DataDir {
        coffer,
        kek,
        _lock: lock,
    })
}

pub(crate) fn sqlite(path: &Path) -> Result<Arc<dyn Storage>, ServerError> {
    Ok(Arc::new(
        SqliteStorage::open(&path.join(DB_FILE))
            .map_err(|e| data_dir_error(path, e.to_string()))?,
    ))
}

pub(crate) async fn open_coffer(
    path: &Path,
    storage: Arc<dyn Storage>,
    kek: Arc<KekRing>,
    limits: Limits,
    keys: KeyOptions,
) -> Result<Coffer, ServerError> {
    let account_keks = Arc::new(AccountKekRecords::new(path, Arc::clone(&kek)));
    let coffer = Coffer::open_rotating(storage, kek, limits, keys.dek_policy, keys.rewrap)
        .await
        .map_err(|e| data_dir_error(path, e.to_string()))?;
    // An account whose own KEK cannot be opened does not stop the start: it alone is
    // unavailable (see account_keks.rs).
    coffer
        .install_account_keks(account_keks, keys.rewrap)
        .await
        .map_err(|e| data_dir_error(path, e.to_string()))?;
    Ok(coffer)
}

/// A data dir being made (`coffer init`, `coffer restore`): it was absent or empty, is now
/// 0700, owned by us, and held under its lock, so everything in it is what this process wrote.
pub(crate) struct NewDir {
    path: std::path::PathBuf,
    lock: File,
    created: bool,
}

/// Makes `path` ready to be filled: created (0700, its parents as needed) when absent; else it
/// must be an empty directory (not a symlink), which is made 0700 before anything is written,
/// and, once its lock is held, must still hold nothing but the lock and be owned by the user
/// running this (so no one else can have planted a file in it between the checks).
pub(crate) fn prepare_new(path: &Path) -> Result<NewDir, ServerError> {
    let not_empty = || {
        data_dir_error(
            path,
            "already exists and is not empty; refusing to overwrite it",
        )
    };
    let created = match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => {
            return Err(data_dir_error(
                path,
                "exists and is not a directory (it must be absent or an empty dir)",
            ));
        }
        Ok(_) => {
            if fs::read_dir(path)
                .map_err(|e| data_dir_error(path, e.to_string()))?
                .next()
                .is_some()
            {
                return Err(not_empty());
            }
            // An existing empty dir may have been made with a loose mode; ours is 0700. Set
            // first, so nothing can be added once the checks below pass.
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                .map_err(|e| data_dir_error(path, format!("cannot set mode 0700: {e}")))?;
            false
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)
                    .map_err(|e| data_dir_error(path, format!("cannot create parent: {e}")))?;
            }
            // Not recursive: if another process created the dir a moment ago, fail here
            // instead of sharing (and later cleaning up) its files.
            fs::DirBuilder::new()
                .mode(0o700)
                .create(path)
                .map_err(|e| data_dir_error(path, format!("cannot create: {e}")))?;
            true
        }
        Err(e) => return Err(data_dir_error(path, e.to_string())),
    };
    let lock = match lock(path) {
        Ok(lock) => lock,
        Err(e) => {
            if created {
                let _ = fs::remove_dir(path);
            }
            return Err(e);
        }
    };
    let dir = NewDir {
        path: path.to_owned(),
        lock,
        created,
    };
    let checked = (|| {
        use std::os::unix::fs::MetadataExt;
        let io = |e: std::io::Error| data_dir_error(path, e.to_string());
        // The lock file is ours, so its owner is the user running this.
        let me = dir.lock.metadata().map_err(io)?.uid();
        if fs::symlink_metadata(path).map_err(io)?.uid() != me {
            return Err(data_dir_error(
                path,
                "is owned by another user; refusing to use it",
            ));
        }
        for entry in fs::read_dir(path).map_err(io)? {
            if entry.map_err(io)?.file_name() != LOCK_FILE {
                return Err(not_empty());
            }
        }
        Ok(())
    })();
    match checked {
        Ok(()) => Ok(dir),
        Err(e) => {
            // Only the lock is ours: leave the rest as found.
            let NewDir { lock, created, .. } = dir;
            drop(lock);
            let _ = fs::remove_file(path.join(LOCK_FILE));
            if created {
                let _ = fs::remove_dir(path);
            }
            Err(e)
        }
    }
}

impl NewDir {
    /// Undoes a failed init or restore: removes everything in the dir (it was empty and we
    /// hold its lock, so all of it is ours; symlinks are removed, never followed), then the
    /// lock, then the dir if this process created it.
    pub(crate) fn abandon(self) {
        if let Ok(entries) = fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                if entry.file_name() == LOCK_FILE {
                    continue;
                }
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                let _ = if is_dir {
                    fs::remove_dir_all(entry.path())
                } else {
                    fs::remove_file(entry.path())
                };
            }
        }
        drop(self.lock);
        let _ = fs::remove_file(self.path.join(LOCK_FILE));
        if self.created {
            let _ = fs::remove_dir(&self.path);
        }
    }
}

/// Creates and initialises a data dir with the chosen KEK: its state in a SQLite database in
/// the dir, or in the PostgreSQL `database` (which must hold no instance yet). On failure,
/// removes what this call wrote in the dir (a key it generated in an HSM stays there, and a
/// retry uses it). What it wrote to a PostgreSQL database stays (keys wrapped by the removed
/// KEK, perhaps the cluster id): a retry on that database is refused, saying to drop and
/// recreate it.
pub async fn init(
    path: &Path,
    choice: KekChoice,
    secrets: KekSecrets,
    database: Option<&Database>,
) -> Result<InitOutcome, ServerError> {
    let dir = prepare_new(path)?;
    let result = match database {
        None => init_contents(path, choice, secrets).await,
        Some(db) => init_in_database(path, choice, secrets, db).await,
    };
    if result.is_err() {
        dir.abandon();
    }
    result
}

async fn init_contents(
    path: &Path,
    choice: KekChoice,
    secrets: KekSecrets,
) -> Result<InitOutcome, ServerError> {
    // Create the database file 0600 before SQLite opens it: SQLite gives its -wal and -shm
    // files the database file's mode.
    OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path.join(DB_FILE))
        .map_err(|e| data_dir_error(path, format!("cannot create {DB_FILE}: {e}")))?;
    let (kek, summary) = kek::create(path, choice, secrets)
        .await
        .map_err(|e| kek_error(path, e))?;
    let coffer = open_coffer(
        path,
        sqlite(path)?,
        kek,
        Limits::default(),
        KeyOptions::default(),
    )
    .await?;
    let (account_id, api_token) = coffer
        .bootstrap("default")
        .await
        .map_err(|e| data_dir_error(path, e.to_string()))?;
    Ok(InitOutcome {
        account_id,
        api_token,
        kek: summary,
    })
}

/// [`init_contents`] for an instance on PostgreSQL: the database gets the schema, the first
/// account and the operator token; the dir gets the KEK and `backend.toml`.
async fn init_in_database(
    path: &Path,
    choice: KekChoice,
    secrets: KekSecrets,
    db: &Database,
) -> Result<InitOutcome, ServerError> {
    let storage = database::connect(db, None).await?;
    let result = init_storage(path, choice, secrets, Arc::clone(&storage)).await;
    storage.shutdown().await;
    result
}

async fn init_storage(
    path: &Path,
    choice: KekChoice,
    secrets: KekSecrets,
    storage: Arc<coffer_postgres::PgStorage>,
) -> Result<InitOutcome, ServerError> {
    let db_error = |e: coffer_storage::StorageError| ServerError::Database(e.to_string());
    let state = storage.log_state().await.map_err(db_error)?;
    if let Some(id) = state.cluster_id {
        return Err(ServerError::Database(format!(
            "the database at --database-url already holds a Coffer instance (cluster id {}): `coffer init` makes a new instance in an empty database; to run another instance of that one, start `coffer server` with a copy of its data dir (if no data dir holds it, an earlier `coffer init` failed part-way: drop and recreate the database, then run init again)",
            hex::encode(id)
        )));
    }
    if !storage.list_accounts().await.map_err(db_error)?.is_empty() {
        return Err(ServerError::Database(
            "the database at --database-url already holds Coffer accounts: `coffer init` makes a new instance in an empty database".into(),
        ));
    }
    // Instance keys without an instance: an earlier init stopped part-way. Its keys are
    // wrapped by a KEK that init removed again, so they can never be opened: say so, rather
    // than fail later on keys nobody can unwrap.
    if !storage.kek_usage().await.map_err(db_error)?.is_empty() {
        return Err(ServerError::Database(
            "the database at --database-url holds keys of an earlier `coffer init` that did not finish (their KEK is gone): `coffer init` needs an empty database: drop and recreate it, then run init again".into(),
        ));
    }
    let (kek, summary) = kek::create(path, choice, secrets)
        .await
        .map_err(|e| kek_error(path, e))?;
    let coffer = open_coffer(
        path,
        storage.clone() as Arc<dyn Storage>,
        kek,
        Limits::default(),
        KeyOptions::default(),
    )
    .await?;
    let cluster_id = storage.ensure_cluster_id().await.map_err(db_error)?;
    // Before the bootstrap, so that a data dir that cannot take the file leaves no account.
    database::write_backend(path, cluster_id)?;
    let (account_id, api_token) = coffer
        .bootstrap("default")
        .await
        .map_err(|e| data_dir_error(path, e.to_string()))?;
    Ok(InitOutcome {
        account_id,
        api_token,
        kek: summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// A refused dir is left exactly as found (its mode too); an abandoned one loses what was
    /// written in it, symlinks removed and never followed.
    #[test]
    fn prepare_new_refuses_without_touching_and_abandon_does_not_follow_links() {
        let tmp = tempfile::tempdir().unwrap();
        let full = tmp.path().join("full");
        fs::create_dir(&full).unwrap();
        fs::set_permissions(&full, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(full.join("x"), b"x").unwrap();
        let err = prepare_new(&full).err().unwrap();
        assert!(err.to_string().contains("is not empty"), "{err}");
        assert_eq!(mode(&full), 0o755);
        assert!(!full.join(LOCK_FILE).exists());

        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"k").unwrap();
        let new = tmp.path().join("a").join("new");
        let dir = prepare_new(&new).unwrap();
        assert_eq!(mode(&new), 0o700);
        fs::create_dir(new.join("sub")).unwrap();
        fs::write(new.join("sub").join("f"), b"f").unwrap();
        std::os::unix::fs::symlink(&outside, new.join("link")).unwrap();
        dir.abandon();
        assert!(!new.exists(), "made here, so removed");
        assert_eq!(fs::read(outside.join("keep")).unwrap(), b"k");

        let file = tmp.path().join("file");
        fs::write(&file, b"f").unwrap();
        let err = prepare_new(&file).err().unwrap();
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }

    #[tokio::test]
    async fn init_makes_private_files_even_in_a_loose_existing_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        init(&dir, KekChoice::File, KekSecrets::default(), None)
            .await
            .unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEK_FILE)), 0o600);
        assert_eq!(mode(&dir.join(DB_FILE)), 0o600);
        if dir.join("coffer.db-wal").exists() {
            assert_eq!(mode(&dir.join("coffer.db-wal")), 0o600);
        }
    }

    #[tokio::test]
    async fn one_process_per_data_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        init(&dir, KekChoice::File, KekSecrets::default(), None)
            .await
            .unwrap();
        let first = open(
            &dir,
            Limits::default(),
            KekSecrets::default(),
            KeyOptions::default(),
            None,
        )
        .await
        .unwrap();
        let err = open(
            &dir,
            Limits::default(),
            KekSecrets::default(),
            KeyOptions::default(),
            None,
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("in use by another coffer process"),
            "{err}"
        );
        drop(first);
        open(
            &dir,
            Limits::default(),
            KekSecrets::default(),
            KeyOptions::default(),
            None,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_failed_init_leaves_an_existing_dir_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        init(&dir, KekChoice::File, KekSecrets::default(), None)
            .await
            .unwrap();
        let before: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let err = init(&dir, KekChoice::File, KekSecrets::default(), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        let after: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(before, after);
        // The original is intact and still opens.
        open(
            &dir,
            Limits::default(),
            KekSecrets::default(),
            KeyOptions::default(),
            None,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_dir_that_is_a_file_is_refused_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(
            init(&file, KekChoice::File, KekSecrets::default(), None)
                .await
                .is_err()
        );
        assert_eq!(fs::read(&file).unwrap(), b"x");
    }
}
