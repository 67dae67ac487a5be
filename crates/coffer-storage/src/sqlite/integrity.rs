//! SQLite's answer to `Storage::check_integrity` (see `crate::integrity`): `PRAGMA
//! foreign_key_check` (SQLite enforces foreign keys only on writes, and `integrity_check` does
//! not look at them) and each maintained count against a count of the rows. Also run by
//! `check_untrusted` on a restored file before anything opens it read-write, where the file
//! may be of an older schema: a count column it does not have yet is not checked (the
//! migration that adds it fills it from the rows). And `Storage::recount_secrets`: every
//! count that is not its rows set to them, on the writer.

use coffer_types::{AccountId, StoreId};
use rusqlite::{Connection, params};

use super::codec::{DbResultExt, col, id_col};
use super::schema::{expected_schema, first_difference, schema_rows};
use super::writer::WriteCx;
use crate::{ForeignKeys, IntegrityProblem, IntegrityReport, Recount, Recounted, Result};

/// Checks the database `conn` is on. The caller gives one snapshot (a read transaction, or a
/// file nothing else writes).
pub(super) fn check(conn: &Connection) -> Result<IntegrityReport> {
    let mut problem = schema_problem(conn)?;
    if problem.is_none() {
        problem = foreign_key_problem(conn)?;
    }
    let (mut stores_checked, mut accounts_checked) = (0, 0);
    if has_count(conn, "stores")? {
        stores_checked = rows(conn, "stores")?;
        if problem.is_none() {
            problem = count_problem(conn, "stores", "store_id")?.map(|(id, counts, holds)| {
                IntegrityProblem::StoreCount {
                    store: StoreId::from_bytes(id),
                    counts,
                    holds,
                }
            });
        }
    }
    if has_count(conn, "accounts")? {
        accounts_checked = rows(conn, "accounts")?;
        if problem.is_none() {
            problem = count_problem(conn, "accounts", "account_id")?.map(|(id, counts, holds)| {
                IntegrityProblem::AccountCount {
                    account: AccountId::from_bytes(id),
                    counts,
                    holds,
                }
            });
        }
    }
    Ok(IntegrityReport {
        stores_checked,
        accounts_checked,
        foreign_keys: ForeignKeys::Checked,
        problem,
    })
}

/// The first difference between the database's schema and the one this build gives a
/// database of its version (a dropped count trigger would let counts drift again after a
/// repair, a dropped guard let the logs be rewritten): every table, index, trigger and view,
/// compared by SQL, as restore compares an untrusted file.
fn schema_problem(conn: &Connection) -> Result<Option<IntegrityProblem>> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .db("read schema version")?;
    let expected = expected_schema(version)?;
    let found = schema_rows(conn)?;
    Ok(first_difference(&expected, &found).map(|difference| {
        IntegrityProblem::Schema(format!(
            "the schema is not the one of a Coffer database of schema version {version}: \
             {difference}"
        ))
    }))
}

/// The first row `PRAGMA foreign_key_check` reports: (table, rowid, parent table).
fn foreign_key_problem(conn: &Connection) -> Result<Option<IntegrityProblem>> {
    let mut stmt = conn
        .prepare("PRAGMA foreign_key_check")
        .db("check foreign keys")?;
    let mut rows = stmt.query([]).db("check foreign keys")?;
    let Some(row) = rows.next().db("check foreign keys")? else {
        return Ok(None);
    };
    Ok(Some(IntegrityProblem::ForeignKey {
        table: col(row, 0, "foreign key check: table")?,
        row: col(row, 1, "foreign key check: rowid")?,
        parent: col(row, 2, "foreign key check: parent")?,
    }))
}

/// Whether `table` (a constant) has the `secret_count` column.
fn has_count(conn: &Connection, table: &str) -> Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM pragma_table_info(?1) WHERE name = 'secret_count'",
        [table],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .db("read a table's columns")
}

fn rows(conn: &Connection, table: &'static str) -> Result<u64> {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| u64::try_from(n).unwrap_or(0))
    .db("count rows")
}

/// The first row of `table` (a constant; `stores` or `accounts`, by id) whose `secret_count`
/// is not the number of secrets whose `column` names it: (id, its count, the secrets').
fn count_problem(
    conn: &Connection,
    table: &'static str,
    column: &'static str,
) -> Result<Option<([u8; 16], i64, i64)>> {
    Ok(mismatched(conn, table, column, 1)?.into_iter().next())
}

/// Up to `limit` rows (-1: every one) of `table` (`stores` or `accounts`), by id, whose
/// `secret_count` is not the number of secrets whose `column` names it: (id, its count, the
/// secrets').
fn mismatched(
    conn: &Connection,
    table: &'static str,
    column: &'static str,
    limit: i64,
) -> Result<Vec<([u8; 16], i64, i64)>> {
    // One pass over the secrets (grouped), not one count per row.
    let sql = format!(
        "SELECT t.id, t.secret_count, coalesce(c.n, 0) FROM {table} t
         LEFT JOIN (SELECT {column} AS id, count(*) AS n FROM secrets GROUP BY {column}) c
           ON c.id = t.id
         WHERE t.secret_count IS NOT coalesce(c.n, 0)
         ORDER BY t.id LIMIT ?1"
    );
    let mut stmt = conn.prepare(&sql).db("compare counts")?;
    let mut rows = stmt.query([limit]).db("compare counts")?;
    let mut found = Vec::new();
    while let Some(row) = rows.next().db("compare counts")? {
        found.push((
            id_col(row, 0, "count check: id")?,
            col(row, 1, "count check: count")?,
            col(row, 2, "count check: rows")?,
        ));
    }
    Ok(found)
}

/// `Storage::recount_secrets`: in the writer's transaction (no other write between the count
/// and the update), every store's and account's count that is not its rows set to them.
/// Nothing is appended: counts are not replicated.
pub(super) fn recount(cx: &mut WriteCx<'_>) -> Result<Recounted> {
    let stores = set_counts(cx.conn, "stores", "store_id")?;
    let accounts = set_counts(cx.conn, "accounts", "account_id")?;
    Ok(Recounted {
        stores: stores
            .into_iter()
            .map(|(id, was, now)| Recount {
                id: StoreId::from_bytes(id),
                was,
                now,
            })
            .collect(),
        accounts: accounts
            .into_iter()
            .map(|(id, was, now)| Recount {
                id: AccountId::from_bytes(id),
                was,
                now,
            })
            .collect(),
    })
}

fn set_counts(
    conn: &Connection,
    table: &'static str,
    column: &'static str,
) -> Result<Vec<([u8; 16], i64, i64)>> {
    let wrong = mismatched(conn, table, column, -1)?;
    let mut stmt = conn
        .prepare(&format!(
            "UPDATE {table} SET secret_count = ?2 WHERE id = ?1"
        ))
        .db("set a secret count")?;
    for (id, _, now) in &wrong {
        stmt.execute(params![id.as_slice(), now])
            .db("set a secret count")?;
    }
    Ok(wrong)
}
