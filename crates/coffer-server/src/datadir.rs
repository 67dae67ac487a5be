//! The data dir: where the embedded deployment keeps its KEK file and SQLite database.
//!
//! ```text
//! DIR/            mode 0700
//!   kek.key       the file KEK, mode 0600 (absent once an HSM provider is configured)
//!   coffer.db     SQLite database (+ -wal, -shm)
//! ```

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_core::{Coffer, DekPolicy, Limits};
use coffer_crypto::{FileKek, KekProvider};
use coffer_storage::{SqliteStorage, Storage};

use crate::{InitOutcome, ServerError};

const KEK_FILE: &str = "kek.key";
const DB_FILE: &str = "coffer.db";

fn data_dir_error(path: &Path, message: impl Into<String>) -> ServerError {
    ServerError::DataDir {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Opens an initialised data dir.
pub async fn open(path: &Path, limits: Limits) -> Result<Coffer, ServerError> {
    if !path.join(KEK_FILE).exists() || !path.join(DB_FILE).exists() {
        return Err(data_dir_error(
            path,
            "not an initialised Coffer data dir (run `coffer init --data-dir` first)",
        ));
    }
    let kek: Arc<dyn KekProvider> = Arc::new(
        FileKek::open(&path.join(KEK_FILE)).map_err(|e| data_dir_error(path, e.to_string()))?,
    );
    let storage: Arc<dyn Storage> = Arc::new(
        SqliteStorage::open(&path.join(DB_FILE))
            .map_err(|e| data_dir_error(path, e.to_string()))?,
    );
    Coffer::open(storage, kek, limits, DekPolicy::default())
        .await
        .map_err(|e| data_dir_error(path, e.to_string()))
}

/// Creates and initialises a data dir. On failure nothing is left behind.
pub async fn init(path: &Path) -> Result<InitOutcome, ServerError> {
    let existed = match fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(data_dir_error(
                    path,
                    "already exists and is not empty; refusing to overwrite it",
                ));
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(data_dir_error(path, e.to_string())),
    };
    if !existed {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| data_dir_error(path, format!("cannot create: {e}")))?;
    }
    let result = init_contents(path).await;
    if result.is_err() {
        remove_contents(path, existed);
    }
    result
}

async fn init_contents(path: &Path) -> Result<InitOutcome, ServerError> {
    let kek: Arc<dyn KekProvider> = Arc::new(
        FileKek::create(&path.join(KEK_FILE)).map_err(|e| data_dir_error(path, e.to_string()))?,
    );
    let storage: Arc<dyn Storage> = Arc::new(
        SqliteStorage::open(&path.join(DB_FILE))
            .map_err(|e| data_dir_error(path, e.to_string()))?,
    );
    let coffer = Coffer::open(storage, kek, Limits::default(), DekPolicy::default())
        .await
        .map_err(|e| data_dir_error(path, e.to_string()))?;
    let (account_id, api_token) = coffer
        .bootstrap("default")
        .await
        .map_err(|e| data_dir_error(path, e.to_string()))?;
    Ok(InitOutcome {
        account_id,
        api_token,
    })
}

fn remove_contents(path: &Path, keep_dir: bool) {
    if !keep_dir {
        let _ = fs::remove_dir_all(path);
        return;
    }
    let files: Vec<PathBuf> = [KEK_FILE, DB_FILE, "coffer.db-wal", "coffer.db-shm"]
        .iter()
        .map(|f| path.join(f))
        .collect();
    for f in files {
        let _ = fs::remove_file(f);
    }
}
