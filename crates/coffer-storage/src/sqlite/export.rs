//! The raw-row export `coffer migrate` reads an embedded database with: every table's rows as
//! they are stored (ciphertexts, wrapped keys, hashes, signatures, audit records, checkpoints),
//! nothing decoded, decrypted or recomputed, all from one read transaction. The importer (in
//! `coffer-postgres`) writes them into another backend's tables of the same layout.

use std::path::Path;

use rusqlite::types::ValueRef;

use super::SqliteOptions;
use super::backup::open_existing;
use super::codec::DbResultExt;
use crate::{Result, StorageError};

/// Every table of the schema, parents before children (so rows can be inserted in this order
/// with foreign keys checked), each with the order its rows are read in: insertion order
/// (rowid) for every table that has a rowid (for `deks` and `outbox` the importer must keep
/// it, their ties are broken by it; elsewhere it is merely stable), the log's seq for
/// `changes` and `change_signatures`, and the primary key for the tables declared `WITHOUT ROWID`. [`export_rows`] refuses a database
/// holding a table not listed here, so a table added by a later migration cannot be left
/// behind silently.
pub const EXPORT_TABLES: &[(&str, &str)] = &[
    ("instance_keys", "rowid"),
    ("accounts", "rowid"),
    ("tokens", "rowid"),
    ("deks", "rowid"),
    ("stores", "rowid"),
    ("secrets", "rowid"),
    ("versions", "rowid"),
    ("replication", "rowid"),
    ("changes", "seq"),
    ("change_signatures", "seq"),
    ("audit", "rowid"),
    ("audit_checkpoints", "rowid"),
    ("services", "rowid"),
    ("service_bindings", "service_id, position"),
    ("service_tokens", "rowid"),
    ("nodes", "rowid"),
    ("node_grants", "rowid"),
    ("access_batches", "rowid"),
    ("outbox", "rowid"),
    ("retired_keks", "kek_id"),
    ("destroyed_deks", "id"),
    ("account_replication_keys", "account_id, version"),
    ("account_node_keys", "account_id, node_id"),
    ("account_grants", "account_id, node_id, ark_version"),
];

/// One stored value, as SQLite holds it (its storage class).
#[derive(Clone, PartialEq)]
pub enum RawValue {
    Null,
    Integer(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// Never the value: a blob may be a wrapped key, a text a secret's comment.
impl std::fmt::Debug for RawValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawValue::Null => f.write_str("Null"),
            RawValue::Integer(_) => f.write_str("Integer(..)"),
            RawValue::Text(_) => f.write_str("Text(..)"),
            RawValue::Blob(b) => write!(f, "Blob({} bytes)", b.len()),
        }
    }
}

/// A batch of one table's rows, handed to the sink of [`export_rows`].
#[derive(Debug)]
pub struct RawRows<'a> {
    pub table: &'static str,
    /// The table's columns, in the order of each row's values.
    pub columns: &'a [String],
    pub rows: Vec<Vec<RawValue>>,
}

/// Reads every row of the database at `path` (this build's schema; another process may hold
/// it open, WAL lets us read) in one read transaction, table by table in [`EXPORT_TABLES`]'s
/// order, handing them to `sink` in batches of at most `batch` rows; a table with no rows gets
/// one empty batch, so the sink sees every table. Returns each table's row count. An error from
/// `sink` stops the export and is returned. Blocking.
pub fn export_rows(
    path: &Path,
    batch: usize,
    mut sink: impl FnMut(RawRows<'_>) -> Result<()>,
) -> Result<Vec<(&'static str, u64)>> {
    let mut conn = open_existing(path, SqliteOptions::default().busy_timeout)?;
    let tx = conn.transaction().db("begin the export")?;
    check_tables(&tx)?;
    let batch = batch.max(1);
    let mut counts = Vec::with_capacity(EXPORT_TABLES.len());
    for &(table, order) in EXPORT_TABLES {
        let mut stmt = tx
            .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .db("read a table")?;
        let columns: Vec<String> = stmt.column_names().map(String::from).collect();
        let mut rows = stmt.query([]).db("read a table")?;
        let mut pending = Vec::new();
        let mut count = 0u64;
        let mut sent = false;
        while let Some(row) = rows.next().db("read a row")? {
            let mut values = Vec::with_capacity(columns.len());
            for (i, column) in columns.iter().enumerate() {
                values.push(match row.get_ref(i).db("read a value")? {
                    ValueRef::Null => RawValue::Null,
                    ValueRef::Integer(v) => RawValue::Integer(v),
                    ValueRef::Text(t) => RawValue::Text(
                        std::str::from_utf8(t)
                            .map_err(|_| {
                                StorageError::Corrupted(format!(
                                    "{table}.{column}: text that is not UTF-8"
                                ))
                            })?
                            .to_owned(),
                    ),
                    ValueRef::Blob(b) => RawValue::Blob(b.to_vec()),
                    ValueRef::Real(_) => {
                        return Err(StorageError::Corrupted(format!(
                            "{table}.{column}: a floating-point value, which no column holds"
                        )));
                    }
                });
            }
            pending.push(values);
            count += 1;
            if pending.len() == batch {
                sink(RawRows {
                    table,
                    columns: &columns,
                    rows: std::mem::take(&mut pending),
                })?;
                sent = true;
            }
        }
        if !pending.is_empty() || !sent {
            sink(RawRows {
                table,
                columns: &columns,
                rows: pending,
            })?;
        }
        counts.push((table, count));
    }
    Ok(counts)
}

/// Refuses a database whose tables are not exactly [`EXPORT_TABLES`].
fn check_tables(conn: &rusqlite::Connection) -> Result<()> {
    let mut stmt = conn
        // SQLite's own tables only: `_` escaped, or `sqliteXfoo` would be skipped too.
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )
        .db("read the schema")?;
    let names: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .db("read the schema")?
        .collect::<rusqlite::Result<_>>()
        .db("read the schema")?;
    for name in &names {
        if !EXPORT_TABLES.iter().any(|(t, _)| t == name) {
            return Err(StorageError::Unavailable(format!(
                "table {name} is not one the export knows: this build cannot migrate it"
            )));
        }
    }
    for (table, _) in EXPORT_TABLES {
        if !names.iter().any(|n| n == table) {
            return Err(StorageError::Corrupted(format!("table {table} is missing")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_every_table() -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for (table, _) in EXPORT_TABLES {
            conn.execute_batch(&format!("CREATE TABLE {table} (x)"))
                .unwrap();
        }
        conn
    }

    #[test]
    fn a_table_the_export_does_not_know_is_refused_by_name() {
        let conn = with_every_table();
        check_tables(&conn).unwrap();
        // Only SQLite's own `sqlite_` tables are skipped, not every name starting "sqlite".
        conn.execute_batch("CREATE TABLE sqliteXfoo (x)").unwrap();
        let err = check_tables(&conn).unwrap_err().to_string();
        assert!(err.contains("table sqliteXfoo"), "{err}");
    }

    #[test]
    fn a_missing_table_is_refused_by_name() {
        let conn = with_every_table();
        conn.execute_batch("DROP TABLE outbox").unwrap();
        let err = check_tables(&conn).unwrap_err().to_string();
        assert!(err.contains("table outbox is missing"), "{err}");
    }
}
