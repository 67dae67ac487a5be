//! The SQLite side of `coffer backup`, `restore` and `verify`: a consistent copy of a database
//! that another process is writing, and a handle that reads a database without ever writing
//! to it (no migration, no writer thread, no lock).
//!
//! **Why `VACUUM INTO`.** It runs as one statement inside one read transaction on a read-only
//! connection, so the copy is the database exactly as of that transaction's start: a
//! point-in-time snapshot, whatever the writer commits meanwhile. In WAL mode that read
//! transaction never blocks the writer (the server keeps committing; only the WAL's checkpoint
//! cannot pass the snapshot until the copy ends, so the WAL grows by what is written during
//! it). The online backup API gives the same snapshot only when run in one step (`step(-1)`,
//! which is then the same read transaction); stepped in chunks, every commit by another
//! process restarts it from the first page, so under steady writes it may never finish.
//! `VACUUM INTO` also writes a compact file without the free pages, so bytes of rows deleted
//! before the backup (old ciphertexts, wrapped keys of destroyed DEKs) do not travel in it,
//! and it needs no extra rusqlite feature. The copy is in rollback-journal mode, one
//! self-contained file; the server puts it back in WAL mode when it opens it.

use std::path::Path;
use std::sync::Arc;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::codec::DbResultExt;
use super::readers::Readers;
use super::schema::{
    SCHEMA_VERSION, expected_schema, file_name, first_difference, open_reader, schema_rows,
};
use super::writer::WriterHandle;
use super::{SqliteOptions, SqliteStorage};
use crate::{Result, StorageError};

impl SqliteStorage {
    /// Opens an existing database for reading only: no schema migration, no writer thread, no
    /// lock, nothing created; every write fails with `Unavailable`. Another process may be
    /// serving the same file (WAL lets both run). The schema must be this build's: an older
    /// or newer one, or a file that is not a Coffer database, is `Unavailable` naming it.
    /// Blocks while it opens; reads need a tokio runtime, as for [`SqliteStorage::open`].
    pub fn open_read_only(path: &Path) -> Result<SqliteStorage> {
        let options = SqliteOptions::default();
        let conn = open_existing(path, options.busy_timeout)?;
        let writer = Arc::new(WriterHandle::read_only(&conn)?);
        let readers = Arc::new(Readers::new(
            path.to_owned(),
            options.busy_timeout,
            options.max_readers,
        ));
        Ok(SqliteStorage {
            path: path.to_owned(),
            writer,
            readers,
        })
    }

    /// Writes a consistent copy of the database at `source` to `dest` with `VACUUM INTO` (see
    /// the module's comment for why), reading `source` through a read-only connection, so a
    /// server may be writing it meanwhile. `dest` must not exist or be an empty file (create
    /// it first to choose its mode: SQLite keeps an existing file's). The copy is not synced:
    /// the caller reads it back into its own file. Blocking.
    pub fn copy_consistent(source: &Path, dest: &Path) -> Result<()> {
        let conn = open_existing(source, SqliteOptions::default().busy_timeout)?;
        // Absolute, so never read as a `file:` URI (see `file_name`).
        let dest = file_name(dest)?;
        let dest = dest
            .to_str()
            .ok_or(StorageError::Invalid("the copy's path is not valid UTF-8"))?;
        conn.execute("VACUUM INTO ?1", [dest])
            .db("copy the database (VACUUM INTO)")?;
        Ok(())
    }

    /// Checks a database file that came from elsewhere (a backup being restored) before
    /// anything opens it read-write, which would migrate it and run its triggers. It is
    /// opened read-only, in SQLite's defensive mode and with `trusted_schema` off, and must
    /// hold exactly the schema this build gives a database of its `user_version` (every table,
    /// index, trigger and view, compared by SQL: an extra trigger, a dropped guard, a table
    /// replaced by a view are all refused), and pass `PRAGMA integrity_check` (pages, indexes
    /// matching their tables), then `PRAGMA foreign_key_check` (SQLite enforces foreign keys
    /// on writes only, and `integrity_check` does not look at them) and every store's and
    /// account's `secret_count` against its rows (what lists trust: `crate::integrity`).
    /// `Storage(Corrupted)` naming the first difference; `Storage(Unavailable)` for a file that
    /// is not a Coffer database or has a schema this build does not know; `Broken` naming a
    /// broken foreign key or a drifted count (`IntegrityError::is_count` tells them apart).
    /// Blocking.
    pub fn check_untrusted(path: &Path) -> std::result::Result<(), crate::IntegrityError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(file_name(path)?, flags).db("open the copy")?;
        harden(&conn)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .db("read schema version")?;
        if version == 0 {
            return Err(StorageError::Unavailable(format!(
                "{} is not a Coffer database (no schema)",
                path.display()
            ))
            .into());
        }
        let expected = expected_schema(version)?;
        let found = schema_rows(&conn)?;
        if let Some(difference) = first_difference(&expected, &found) {
            return Err(StorageError::Corrupted(format!(
                "its schema is not the one of a Coffer database of schema version {version}: \
                 {difference}"
            ))
            .into());
        }
        let problems: Vec<String> = conn
            .prepare("PRAGMA integrity_check(5)")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(|e| StorageError::Corrupted(format!("integrity check failed: {e}")))?;
        if problems != ["ok"] {
            return Err(StorageError::Corrupted(format!(
                "integrity check failed: {}",
                problems.join("; ")
            ))
            .into());
        }
        // What the lists trust: foreign keys (SQLite enforces them on writes only) and the
        // maintained counts.
        if let Some(problem) = super::integrity::check(&conn)?.problem {
            return Err(crate::IntegrityError::Broken(problem));
        }
        Ok(())
    }
}

/// Settings for a connection to a file not known to be ours: no writes to the schema or to
/// shadow tables even by SQL, and no function with side effects run from the schema
/// (triggers, views, defaults).
fn harden(conn: &Connection) -> Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .db("set defensive mode")?;
    conn.pragma_update(None, "trusted_schema", false)
        .db("turn trusted_schema off")?;
    Ok(())
}

/// A read-only connection to an existing Coffer database of this build's schema.
pub(super) fn open_existing(path: &Path, busy_timeout: std::time::Duration) -> Result<Connection> {
    if !path.is_file() {
        return Err(StorageError::Unavailable(format!(
            "{} is not a database file",
            path.display()
        )));
    }
    let conn = open_reader(path, busy_timeout)?;
    harden(&conn)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .db("read schema version")?;
    if version == 0 {
        return Err(StorageError::Unavailable(format!(
            "{} is not a Coffer database (no schema)",
            path.display()
        )));
    }
    if version != SCHEMA_VERSION {
        return Err(StorageError::Unavailable(format!(
            "{} has schema version {version}, this build reads {SCHEMA_VERSION} (a server of \
             this build migrates it when it opens it)",
            path.display()
        )));
    }
    Ok(conn)
}
