//! The embedded SQLite backend.

use std::path::Path;

/// SQLite storage in one database file (WAL mode, synchronous=FULL).
#[derive(Debug)]
pub struct SqliteStorage {}

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path` and migrates its schema.
    pub fn open(path: &Path) -> crate::Result<SqliteStorage> {
        unimplemented!()
    }
}
