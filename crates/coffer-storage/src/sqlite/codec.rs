//! How records map onto SQLite values, and how rusqlite errors become domain errors.
//!
//! Decoding never panics: a value that does not fit its record (a blob of the wrong length, an
//! unknown scope, a version beyond `u32`) is `Corrupted`, naming the column but never the value.

use coffer_types::{Scope, Scopes, Timestamp, Version};
use rusqlite::types::FromSql;
use rusqlite::{Connection, ErrorCode, Params, Row};

use crate::{Direction, Result, StorageError};

/// Attaches an operation name to a rusqlite error while turning it into a domain error.
pub(super) trait DbResultExt<T> {
    fn db(self, context: &'static str) -> Result<T>;
}

impl<T> DbResultExt<T> for rusqlite::Result<T> {
    fn db(self, context: &'static str) -> Result<T> {
        self.map_err(|e| db_error(context, &e))
    }
}

/// Maps an error that is not a constraint violation the caller wants to translate.
///
/// Messages carry SQLite's own text (which names tables and columns, never bound values) and
/// never the SQL of the statement.
pub(super) fn db_error(context: &'static str, e: &rusqlite::Error) -> StorageError {
    use rusqlite::Error as E;
    match e {
        E::SqliteFailure(failure, message) => {
            let detail = match message {
                Some(m) => format!(
                    "{context}: {m} ({:?}, code {})",
                    failure.code, failure.extended_code
                ),
                None => format!(
                    "{context}: {:?} (code {})",
                    failure.code, failure.extended_code
                ),
            };
            match failure.code {
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                    StorageError::Corrupted(detail)
                }
                _ => StorageError::Unavailable(detail),
            }
        }
        // These only arise while reading a column: the stored value does not fit.
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(..)
        | E::InvalidColumnType(..) => StorageError::Corrupted(format!("{context}: {e}")),
        // Its Display would include the statement text; keep only SQLite's message.
        E::SqlInputError { error, msg, .. } => {
            StorageError::Unavailable(format!("{context}: {msg} ({:?})", error.code))
        }
        _ => StorageError::Unavailable(format!("{context}: {e}")),
    }
}

/// The kind of constraint a failed statement violated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Constraint {
    PrimaryKey,
    Unique,
    ForeignKey,
    Other,
}

/// `Some` when `e` is a constraint violation (SQLite reports the precise kind through its
/// extended result code, which rusqlite enables on every connection).
pub(super) fn constraint(e: &rusqlite::Error) -> Option<Constraint> {
    let rusqlite::Error::SqliteFailure(failure, _) = e else {
        return None;
    };
    if failure.code != ErrorCode::ConstraintViolation {
        return None;
    }
    Some(match failure.extended_code {
        rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => Constraint::PrimaryKey,
        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => Constraint::Unique,
        rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => Constraint::ForeignKey,
        _ => Constraint::Other,
    })
}

/// Reads column `idx`; a value of the wrong type is `Corrupted`, naming `what`.
pub(super) fn col<T: FromSql>(row: &Row<'_>, idx: usize, what: &'static str) -> Result<T> {
    row.get(idx)
        .map_err(|e| StorageError::Corrupted(format!("{what}: {e}")))
}

/// Reads a 16-byte id column.
pub(super) fn id_col(row: &Row<'_>, idx: usize, what: &'static str) -> Result<[u8; 16]> {
    let bytes: Vec<u8> = col(row, idx, what)?;
    <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| {
        StorageError::Corrupted(format!("{what}: id is {} bytes, not 16", bytes.len()))
    })
}

pub(super) fn ts_col(row: &Row<'_>, idx: usize, what: &'static str) -> Result<Timestamp> {
    col::<i64>(row, idx, what).map(Timestamp::from_unix_micros)
}

pub(super) fn opt_ts_col(
    row: &Row<'_>,
    idx: usize,
    what: &'static str,
) -> Result<Option<Timestamp>> {
    Ok(col::<Option<i64>>(row, idx, what)?.map(Timestamp::from_unix_micros))
}

pub(super) fn version_col(row: &Row<'_>, idx: usize, what: &'static str) -> Result<Version> {
    let raw: i64 = col(row, idx, what)?;
    u32::try_from(raw)
        .map(Version)
        .map_err(|_| StorageError::Corrupted(format!("{what}: version out of range")))
}

/// A non-negative count or quota stored as INTEGER.
pub(super) fn u64_col(row: &Row<'_>, idx: usize, what: &'static str) -> Result<u64> {
    let raw: i64 = col(row, idx, what)?;
    u64::try_from(raw).map_err(|_| StorageError::Corrupted(format!("{what}: negative")))
}

pub(super) fn opt_u64_col(row: &Row<'_>, idx: usize, what: &'static str) -> Result<Option<u64>> {
    col::<Option<i64>>(row, idx, what)?
        .map(|raw| {
            u64::try_from(raw).map_err(|_| StorageError::Corrupted(format!("{what}: negative")))
        })
        .transpose()
}

pub(super) fn bool_col(row: &Row<'_>, idx: usize, what: &'static str) -> Result<bool> {
    match col::<i64>(row, idx, what)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(StorageError::Corrupted(format!("{what}: not a boolean"))),
    }
}

/// Lowercase hex of `bytes`, as the log's changes carry keys, hashes and sealed values.
/// `hex::encode` builds its string a char at a time; this one table lookup a byte (it runs for
/// every sealed value of a snapshot).
pub(super) fn to_hex(bytes: impl AsRef<[u8]>) -> String {
    let bytes = bytes.as_ref();
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Scopes are stored as their canonical names joined and surrounded by commas
/// (`",workers,ai_gateway,"`, or `","` for none), so "has scope s" is the exact substring test
/// `instr(scopes, ',s,') > 0`: no name is a substring of another across the commas.
pub(super) fn encode_scopes(scopes: &Scopes) -> String {
    let mut out = String::from(",");
    for scope in scopes.iter() {
        out.push_str(scope.as_str());
        out.push(',');
    }
    out
}

/// The needle that finds `scope` in an encoded scope list.
pub(super) fn scope_needle(scope: Scope) -> String {
    format!(",{},", scope.as_str())
}

pub(super) fn scopes_col(row: &Row<'_>, idx: usize, what: &'static str) -> Result<Scopes> {
    let raw: String = col(row, idx, what)?;
    if raw == "," {
        return Ok(Scopes::default());
    }
    let inner = raw
        .strip_prefix(',')
        .and_then(|s| s.strip_suffix(','))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| StorageError::Corrupted(format!("{what}: malformed scope list")))?;
    // An empty item (",,") fails to parse like any unknown name.
    let names: Vec<&str> = inner.split(',').collect();
    Scopes::parse(&names).map_err(|_| StorageError::Corrupted(format!("{what}: unknown scope")))
}

/// A single scope (a service's kind), stored as its name (`workers`, `ai_gateway`, ...).
pub(super) fn scope_col(row: &Row<'_>, idx: usize, what: &'static str) -> Result<Scope> {
    let raw: String = col(row, idx, what)?;
    Scope::parse(&raw).map_err(|_| StorageError::Corrupted(format!("{what}: unknown scope")))
}

/// A non-negative quantity the caller hands in, as SQLite's signed INTEGER.
pub(super) fn to_i64(value: u64, what: &'static str) -> Result<i64> {
    i64::try_from(value).map_err(|_| StorageError::Invalid(what))
}

/// A LIKE pattern matching `needle` anywhere, with `\` escaping so that `%`, `_` and `\` in the
/// needle match themselves. Use with `ESCAPE '\'`.
pub(super) fn contains_pattern(needle: &str) -> String {
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

// ---- statements ----

/// Runs a cached statement expected to return at most one row, decoding it with `decode`.
pub(super) fn query_opt<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    context: &'static str,
    decode: impl FnOnce(&Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql).db(context)?;
    let mut rows = stmt.query(params).db(context)?;
    match rows.next().db(context)? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

/// Runs a cached statement and decodes every row.
pub(super) fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    context: &'static str,
    mut decode: impl FnMut(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).db(context)?;
    let mut rows = stmt.query(params).db(context)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().db(context)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Runs one cached statement, translating the constraint violations `on_constraint` knows
/// (returning `None` for the others, which become `Unavailable` like any database failure).
/// Writes go through the writer thread's connection (`WriteCx::conn`) only; the type of `conn`
/// does not say so, the callers (each taking a `WriteCx`) do.
pub(super) fn execute(
    conn: &Connection,
    sql: &'static str,
    params: impl rusqlite::Params,
    context: &'static str,
    on_constraint: impl FnOnce(Constraint) -> Option<StorageError>,
) -> Result<usize> {
    let mut stmt = conn.prepare_cached(sql).db(context)?;
    stmt.execute(params).map_err(|e| {
        constraint(&e)
            .and_then(on_constraint)
            .unwrap_or_else(|| db_error(context, &e))
    })
}

pub(super) fn direction_sql(direction: Direction) -> &'static str {
    match direction {
        Direction::Asc => "ASC",
        Direction::Desc => "DESC",
    }
}

/// Rows to skip for a 1-based page (page 0 is read as page 1).
pub(super) fn offset(page: u32, per_page: u32) -> i64 {
    // Saturating: u32::MAX squared does not fit an i64, and a huge page is simply empty.
    i64::from(page.max(1) - 1).saturating_mul(i64::from(per_page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_hex_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(to_hex(&bytes), hex::encode(&bytes));
        assert_eq!(to_hex([]), "");
    }

    #[test]
    fn scopes_round_trip_through_their_column_form() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for scopes in [
            Scopes::default(),
            Scopes::new([Scope::Workers]),
            Scopes::new(Scope::ALL),
        ] {
            let encoded = encode_scopes(&scopes);
            let decoded = conn
                .query_row("SELECT ?1", [&encoded], |row| {
                    Ok(scopes_col(row, 0, "scopes"))
                })
                .unwrap()
                .unwrap();
            assert_eq!(decoded, scopes, "{encoded}");
        }
        assert_eq!(encode_scopes(&Scopes::default()), ",");
        assert_eq!(
            encode_scopes(&Scopes::new([Scope::AiGateway, Scope::Workers])),
            ",workers,ai_gateway,"
        );
    }

    #[test]
    fn malformed_scope_lists_are_corrupted_not_panics() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for bad in [
            "",
            "workers",
            ",workers",
            "workers,",
            ",nope,",
            ",,",
            ",workers,,",
        ] {
            let got = conn
                .query_row("SELECT ?1", [bad], |row| Ok(scopes_col(row, 0, "scopes")))
                .unwrap();
            assert!(
                matches!(got, Err(StorageError::Corrupted(_))),
                "{bad:?}: {got:?}"
            );
        }
    }

    #[test]
    fn like_pattern_escapes_wildcards() {
        assert_eq!(contains_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let matches = |hay: &str, needle: &str| -> bool {
            conn.query_row(
                "SELECT ?1 LIKE ?2 ESCAPE '\\'",
                [hay, &contains_pattern(needle)],
                |row| row.get(0),
            )
            .unwrap()
        };
        assert!(matches("100% sure", "0%"));
        assert!(!matches("1000 sure", "0%"));
        assert!(matches("A_B", "a_b"));
        assert!(!matches("AxB", "a_b"));
        assert!(matches("back\\slash", "K\\S"));
    }
}
