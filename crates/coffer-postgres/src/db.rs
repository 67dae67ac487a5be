//! How PostgreSQL errors become domain errors, and how rows decode into records.
//!
//! Decoding never panics: a value that does not fit (a BYTEA of the wrong length, a negative
//! count) is `Corrupted`, naming the column, never the value. Error messages carry the
//! server's own text (which names tables and constraints, never bound values) and never a
//! statement's SQL.

use coffer_types::{Timestamp, Version};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;

use coffer_storage::{Result, StorageError};

/// Attaches an operation name to a tokio-postgres error while turning it into a domain error.
pub(crate) trait DbResultExt<T> {
    fn db(self, context: &'static str) -> Result<T>;
}

impl<T> DbResultExt<T> for std::result::Result<T, tokio_postgres::Error> {
    fn db(self, context: &'static str) -> Result<T> {
        self.map_err(|e| db_error(context, &e))
    }
}

impl<T> DbResultExt<T> for std::result::Result<T, deadpool_postgres::PoolError> {
    fn db(self, context: &'static str) -> Result<T> {
        self.map_err(|e| pool_error(context, &e))
    }
}

/// Maps an error that is not a constraint violation the caller wants to translate.
pub(crate) fn db_error(context: &'static str, e: &tokio_postgres::Error) -> StorageError {
    match e.as_db_error() {
        Some(db) => {
            let detail = format!(
                "{context}: {} ({}, SQLSTATE {})",
                db.message(),
                db.severity(),
                db.code().code()
            );
            if *db.code() == SqlState::DATA_CORRUPTED || *db.code() == SqlState::INDEX_CORRUPTED {
                StorageError::Corrupted(detail)
            } else if *db.code() == SqlState::CHARACTER_NOT_IN_REPERTOIRE
                || *db.code() == SqlState::UNTRANSLATABLE_CHARACTER
            {
                // Text PostgreSQL cannot hold (a NUL; a character outside the database's
                // encoding): the caller's input, not an outage.
                StorageError::Invalid(
                    "text holds a character the database cannot store (a NUL, or one outside \
                     its encoding)",
                )
            } else {
                StorageError::Unavailable(detail)
            }
        }
        // Connection and protocol errors: their Display names the cause (refused, closed,
        // TLS), never the password.
        None => StorageError::Unavailable(format!("{context}: {e}")),
    }
}

pub(crate) fn pool_error(context: &'static str, e: &deadpool_postgres::PoolError) -> StorageError {
    match e {
        deadpool_postgres::PoolError::Backend(inner) => db_error(context, inner),
        deadpool_postgres::PoolError::Closed => {
            StorageError::Unavailable(format!("{context}: the storage is shut down"))
        }
        other => StorageError::Unavailable(format!("{context}: {other}")),
    }
}

/// The kind of constraint a failed statement violated, with the constraint's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation<'a> {
    /// A primary key or UNIQUE constraint or index (PostgreSQL does not tell them apart: match
    /// the name; a primary key is `<table>_pkey`).
    Unique(&'a str),
    ForeignKey(&'a str),
    Check(&'a str),
}

/// `Some` when `e` is a constraint violation.
pub(crate) fn violation(e: &tokio_postgres::Error) -> Option<Violation<'_>> {
    let db = e.as_db_error()?;
    let name = db.constraint().unwrap_or("");
    match *db.code() {
        SqlState::UNIQUE_VIOLATION => Some(Violation::Unique(name)),
        SqlState::FOREIGN_KEY_VIOLATION => Some(Violation::ForeignKey(name)),
        SqlState::CHECK_VIOLATION => Some(Violation::Check(name)),
        _ => None,
    }
}

/// Reads column `idx`; a value of the wrong type is `Corrupted`, naming `what`.
pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize, what: &'static str) -> Result<T> {
    row.try_get(idx)
        .map_err(|e| StorageError::Corrupted(format!("{what}: {e}")))
}

/// Reads a BYTEA column of exactly `N` bytes (ids, hashes, keys).
pub(crate) fn bytes_col<const N: usize>(
    row: &Row,
    idx: usize,
    what: &'static str,
) -> Result<[u8; N]> {
    let bytes: &[u8] = col(row, idx, what)?;
    <[u8; N]>::try_from(bytes)
        .map_err(|_| StorageError::Corrupted(format!("{what}: {} bytes, not {N}", bytes.len())))
}

pub(crate) fn opt_bytes_col<const N: usize>(
    row: &Row,
    idx: usize,
    what: &'static str,
) -> Result<Option<[u8; N]>> {
    col::<Option<&[u8]>>(row, idx, what)?
        .map(|bytes| {
            <[u8; N]>::try_from(bytes).map_err(|_| {
                StorageError::Corrupted(format!("{what}: {} bytes, not {N}", bytes.len()))
            })
        })
        .transpose()
}

pub(crate) fn ts_col(row: &Row, idx: usize, what: &'static str) -> Result<Timestamp> {
    col::<i64>(row, idx, what).map(Timestamp::from_unix_micros)
}

pub(crate) fn opt_ts_col(row: &Row, idx: usize, what: &'static str) -> Result<Option<Timestamp>> {
    Ok(col::<Option<i64>>(row, idx, what)?.map(Timestamp::from_unix_micros))
}

/// A BIGINT that holds a non-negative count, seq or quota.
pub(crate) fn u64_col(row: &Row, idx: usize, what: &'static str) -> Result<u64> {
    let raw: i64 = col(row, idx, what)?;
    u64::try_from(raw).map_err(|_| StorageError::Corrupted(format!("{what}: negative")))
}

pub(crate) fn opt_u64_col(row: &Row, idx: usize, what: &'static str) -> Result<Option<u64>> {
    col::<Option<i64>>(row, idx, what)?
        .map(|raw| {
            u64::try_from(raw).map_err(|_| StorageError::Corrupted(format!("{what}: negative")))
        })
        .transpose()
}

/// A BIGINT that holds a u32 (versions).
pub(crate) fn u32_col(row: &Row, idx: usize, what: &'static str) -> Result<u32> {
    let raw: i64 = col(row, idx, what)?;
    u32::try_from(raw).map_err(|_| StorageError::Corrupted(format!("{what}: out of range")))
}

pub(crate) fn version_col(row: &Row, idx: usize, what: &'static str) -> Result<Version> {
    u32_col(row, idx, what).map(Version)
}

/// A u64 bound as BIGINT; `Invalid` (naming `what`) above `i64::MAX`.
pub(crate) fn sql_u64(value: u64, what: &'static str) -> Result<i64> {
    i64::try_from(value).map_err(|_| StorageError::Invalid(what))
}

/// A `usize` limit bound as BIGINT (saturating: a limit beyond i64 means "all").
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// `ASC` or `DESC`.
pub(crate) fn direction_sql(direction: coffer_storage::Direction) -> &'static str {
    match direction {
        coffer_storage::Direction::Asc => "ASC",
        coffer_storage::Direction::Desc => "DESC",
    }
}

/// Rows to skip for a 1-based page (page 0 is read as page 1).
pub(crate) fn offset(page: u32, per_page: u32) -> i64 {
    // Saturating: u32::MAX squared does not fit an i64, and a huge page is simply empty.
    i64::from(page.max(1) - 1).saturating_mul(i64::from(per_page))
}

/// Bound values of a statement built at run time (filters that are set or not).
#[derive(Default)]
pub(crate) struct Params(Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>);

impl Params {
    /// Adds a value; returns its placeholder (`$n`).
    pub(crate) fn push(
        &mut self,
        value: impl tokio_postgres::types::ToSql + Sync + Send + 'static,
    ) -> String {
        self.0.push(Box::new(value));
        format!("${}", self.0.len())
    }

    pub(crate) fn refs(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        self.0
            .iter()
            .map(|v| &**v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect()
    }
}

/// A scope list as stored: ",workers,ai_gateway," (canonical order), or "," for none.
pub(crate) fn encode_scopes(scopes: &coffer_types::Scopes) -> String {
    let mut out = String::from(",");
    for scope in scopes.iter() {
        out.push_str(scope.as_str());
        out.push(',');
    }
    out
}

/// The needle that finds `scope` in an encoded scope list.
pub(crate) fn scope_needle(scope: coffer_types::Scope) -> String {
    format!(",{},", scope.as_str())
}

pub(crate) fn scopes_col(
    row: &Row,
    idx: usize,
    what: &'static str,
) -> Result<coffer_types::Scopes> {
    let raw: String = col(row, idx, what)?;
    if raw == "," {
        return Ok(coffer_types::Scopes::default());
    }
    let inner = raw
        .strip_prefix(',')
        .and_then(|s| s.strip_suffix(','))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| StorageError::Corrupted(format!("{what}: malformed scope list")))?;
    // An empty item (",,") fails to parse like any unknown name.
    let names: Vec<&str> = inner.split(',').collect();
    coffer_types::Scopes::parse(&names)
        .map_err(|_| StorageError::Corrupted(format!("{what}: unknown scope")))
}

/// A single scope (a service's kind), stored as its name.
pub(crate) fn scope_col(row: &Row, idx: usize, what: &'static str) -> Result<coffer_types::Scope> {
    let raw: String = col(row, idx, what)?;
    coffer_types::Scope::parse(&raw)
        .map_err(|_| StorageError::Corrupted(format!("{what}: unknown scope")))
}

/// A LIKE pattern matching `needle` anywhere, with `\` escaping so that `%`, `_` and `\` in the
/// needle match themselves. Use with `ESCAPE '\'`.
pub(crate) fn contains_pattern(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 2);
    out.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}
