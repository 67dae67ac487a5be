//! PostgreSQL's answer to `Storage::check_integrity` (see coffer-storage's `integrity`), from
//! one snapshot: Coffer's constraints all there and validated and its triggers all there and
//! enabled (`schema_objects`); every row of every foreign key against its parent (anti-joins:
//! PostgreSQL's foreign keys are triggers, which `session_replication_role = replica`,
//! `DISABLE TRIGGER` or a data-only restore bypass); then every store's and account's
//! `secret_count` against a count of its secrets.

use coffer_storage::{ForeignKeys, IntegrityProblem, IntegrityReport, Result};
use coffer_types::{AccountId, StoreId};
use deadpool_postgres::Transaction;

use crate::PgStorage;
use crate::db::{DbResultExt, bytes_col, col};
use crate::schema_objects::{
    CONSTRAINTS, FOREIGN_KEYS, FUNCTIONS, ForeignKey, KEYS, TRIGGER_FUNCTIONS, TRIGGERS,
};
use crate::tx::TxFuture;

pub(crate) async fn check_integrity(s: &PgStorage) -> Result<IntegrityReport> {
    s.read_snapshot(|tx| -> TxFuture<'_, _> {
        Box::pin(async move {
            let stores_checked = rows(tx, "SELECT count(*) FROM stores").await?;
            let accounts_checked = rows(tx, "SELECT count(*) FROM accounts").await?;
            let mut problem = schema_problem(tx).await?;
            for fk in FOREIGN_KEYS {
                if problem.is_some() {
                    break;
                }
                problem = foreign_key_problem(tx, fk).await?;
            }
            if problem.is_none() {
                problem =
                    count_problem(tx, "stores", "store_id")
                        .await?
                        .map(|(id, counts, holds)| IntegrityProblem::StoreCount {
                            store: StoreId::from_bytes(id),
                            counts,
                            holds,
                        });
            }
            if problem.is_none() {
                problem = count_problem(tx, "accounts", "account_id").await?.map(
                    |(id, counts, holds)| IntegrityProblem::AccountCount {
                        account: AccountId::from_bytes(id),
                        counts,
                        holds,
                    },
                );
            }
            Ok(IntegrityReport {
                stores_checked,
                accounts_checked,
                foreign_keys: ForeignKeys::Checked,
                problem,
            })
        })
    })
    .await
}

async fn rows(tx: &Transaction<'_>, sql: &str) -> Result<u64> {
    let row = tx.query_one(sql, &[]).await.db("count rows")?;
    let n: i64 = col(&row, 0, "count")?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The first row of `table` (a constant: `stores` or `accounts`), by id, whose `secret_count`
/// is not the number of secrets whose `column` names it: (id, its count, the secrets').
async fn count_problem(
    tx: &Transaction<'_>,
    table: &str,
    column: &str,
) -> Result<Option<([u8; 16], i64, i64)>> {
    // One pass over the secrets (grouped), not one count per row.
    let sql = format!(
        "SELECT t.id, t.secret_count, coalesce(c.n, 0) FROM {table} t
         LEFT JOIN (SELECT {column} AS id, count(*) AS n FROM secrets GROUP BY {column}) c
           ON c.id = t.id
         WHERE t.secret_count IS DISTINCT FROM coalesce(c.n, 0)
         ORDER BY t.id LIMIT 1"
    );
    let Some(row) = tx.query_opt(&sql, &[]).await.db("compare counts")? else {
        return Ok(None);
    };
    Ok(Some((
        bytes_col(&row, 0, "count check: id")?,
        col(&row, 1, "count check: count")?,
        col(&row, 2, "count check: rows")?,
    )))
}

/// The first of Coffer's constraints missing or not validated, else the first of its keys on
/// other columns than this version makes it on, else the first of its triggers
/// missing or disabled, else the first disabled internal trigger (a foreign key's) on one of
/// its tables. Tables resolve by the search path, as Coffer's queries do.
async fn schema_problem(tx: &Transaction<'_>) -> Result<Option<IntegrityProblem>> {
    let (tables, names): (Vec<&str>, Vec<&str>) = CONSTRAINTS.iter().copied().unzip();
    let row = tx
        .query_opt(
            "SELECT e.tbl, e.name, c.oid IS NOT NULL FROM unnest($1::text[], $2::text[])
               WITH ORDINALITY AS e(tbl, name, n)
             LEFT JOIN pg_constraint c
               ON c.conrelid = to_regclass(e.tbl) AND c.conname = e.name
             WHERE c.oid IS NULL OR NOT c.convalidated
             ORDER BY e.n LIMIT 1",
            &[&tables, &names],
        )
        .await
        .db("check constraints")?;
    if let Some(row) = row {
        let (table, name, present): (String, String, bool) = (
            col(&row, 0, "constraint check: table")?,
            col(&row, 1, "constraint check: name")?,
            col(&row, 2, "constraint check: present")?,
        );
        let state = if present { "not validated" } else { "missing" };
        return Ok(Some(IntegrityProblem::Schema(format!(
            "constraint {name} on {table} is {state}"
        ))));
    }
    // Each key on the columns this version makes it on.
    let (tables, names, columns): (Vec<&str>, Vec<&str>, Vec<&str>) =
        KEYS.iter().map(|&(t, n, c)| (t, n, c)).collect();
    let row = tx
        .query_opt(
            "SELECT e.tbl, e.name, e.cols, coalesce(k.cols, '') FROM
               unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS e(tbl, name, cols, n)
             LEFT JOIN LATERAL (
               SELECT string_agg(a.attname::text, ',' ORDER BY u.n) AS cols
               FROM pg_constraint c, unnest(c.conkey) WITH ORDINALITY AS u(attnum, n)
               JOIN pg_attribute a ON a.attnum = u.attnum
               WHERE c.conrelid = to_regclass(e.tbl) AND c.conname = e.name
                 AND c.contype IN ('p', 'u') AND a.attrelid = c.conrelid
             ) k ON true
             WHERE k.cols IS DISTINCT FROM e.cols
             ORDER BY e.n LIMIT 1",
            &[&tables, &names, &columns],
        )
        .await
        .db("check keys")?;
    if let Some(row) = row {
        let (table, name, expected, found): (String, String, String, String) = (
            col(&row, 0, "key check: table")?,
            col(&row, 1, "key check: name")?,
            col(&row, 2, "key check: columns")?,
            col(&row, 3, "key check: found")?,
        );
        return Ok(Some(IntegrityProblem::Schema(format!(
            "key {name} on {table} is on ({found}), not ({expected})"
        ))));
    }
    let (tables, names): (Vec<&str>, Vec<&str>) = TRIGGERS.iter().copied().unzip();
    let row = tx
        .query_opt(
            "SELECT e.tbl, e.name, t.oid IS NOT NULL FROM unnest($1::text[], $2::text[])
               WITH ORDINALITY AS e(tbl, name, n)
             LEFT JOIN pg_trigger t
               ON t.tgrelid = to_regclass(e.tbl) AND t.tgname = e.name AND NOT t.tgisinternal
             WHERE t.oid IS NULL OR t.tgenabled NOT IN ('O', 'A')
             ORDER BY e.n LIMIT 1",
            &[&tables, &names],
        )
        .await
        .db("check triggers")?;
    if let Some(row) = row {
        let (table, name, present): (String, String, bool) = (
            col(&row, 0, "trigger check: table")?,
            col(&row, 1, "trigger check: name")?,
            col(&row, 2, "trigger check: present")?,
        );
        let state = if present { "disabled" } else { "missing" };
        return Ok(Some(IntegrityProblem::Schema(format!(
            "trigger {name} on {table} is {state}"
        ))));
    }
    // Each trigger calls this version's function, each function has this version's body (not
    // a definer's rights), and no other trigger sits on Coffer's tables.
    let (tables, names, functions): (Vec<&str>, Vec<&str>, Vec<&str>) = TRIGGER_FUNCTIONS
        .iter()
        .map(|&(t, n, f)| (t, n, f))
        .collect();
    let (fn_names, fn_bodies): (Vec<&str>, Vec<&str>) = FUNCTIONS.iter().copied().unzip();
    let row = tx
        .query_opt(
            "(SELECT 'trigger ' || e.name || ' on ' || e.tbl || ' calls '
                     || coalesce(p.proname::text, '(nothing)') || ', not ' || e.fn
              FROM unnest($1::text[], $2::text[], $3::text[]) AS e(tbl, name, fn)
              LEFT JOIN pg_trigger t
                ON t.tgrelid = to_regclass(e.tbl) AND t.tgname = e.name AND NOT t.tgisinternal
              LEFT JOIN pg_proc p ON p.oid = t.tgfoid
              WHERE p.proname IS DISTINCT FROM e.fn
              ORDER BY 1 LIMIT 1)
             UNION ALL
             (SELECT 'function ' || f.name || ' is not the one this version makes'
              FROM unnest($4::text[], $5::text[]) AS f(name, body)
              LEFT JOIN pg_proc p
                ON p.proname = f.name AND p.pronamespace = current_schema()::regnamespace
              WHERE p.oid IS NULL OR md5(p.prosrc) <> f.body OR p.prosecdef
                 OR p.proconfig IS NOT NULL
              ORDER BY 1 LIMIT 1)
             UNION ALL
             (SELECT 'trigger ' || t.tgname || ' on ' || c.relname || ' is not one of Coffer''s'
              FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
              WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal
                AND (c.relname::text, t.tgname::text) NOT IN
                    (SELECT * FROM unnest($1::text[], $2::text[]))
              ORDER BY 1 LIMIT 1)
             LIMIT 1",
            &[&tables, &names, &functions, &fn_names, &fn_bodies],
        )
        .await
        .db("check trigger functions")?;
    if let Some(row) = row {
        return Ok(Some(IntegrityProblem::Schema(col(
            &row,
            0,
            "trigger function check",
        )?)));
    }
    // A foreign key's own triggers (internal), disabled by `DISABLE TRIGGER ALL`.
    let (tables, names): (Vec<&str>, Vec<&str>) = CONSTRAINTS.iter().copied().unzip();
    let row = tx
        .query_opt(
            "SELECT e.tbl, e.name FROM unnest($1::text[], $2::text[]) AS e(tbl, name)
             JOIN pg_constraint c ON c.conrelid = to_regclass(e.tbl) AND c.conname = e.name
             JOIN pg_trigger t ON t.tgconstraint = c.oid
             WHERE t.tgisinternal AND t.tgenabled NOT IN ('O', 'A')
             ORDER BY 1, 2 LIMIT 1",
            &[&tables, &names],
        )
        .await
        .db("check foreign keys' triggers")?;
    if let Some(row) = row {
        let table: String = col(&row, 0, "trigger check: table")?;
        let name: String = col(&row, 1, "trigger check: constraint")?;
        return Ok(Some(IntegrityProblem::Schema(format!(
            "constraint {name} on {table} has a disabled trigger: it is not enforced"
        ))));
    }
    Ok(None)
}

/// The first row (in key order) of `fk.table` whose foreign key names no row of `fk.parent`
/// (MATCH SIMPLE, as PostgreSQL's: a row with a NULL in the key is not checked). One
/// anti-join; every name in the SQL is a constant of `schema_objects`.
async fn foreign_key_problem(
    tx: &Transaction<'_>,
    fk: &ForeignKey,
) -> Result<Option<IntegrityProblem>> {
    let not_null = fk
        .columns
        .iter()
        .map(|c| format!("c.{c} IS NOT NULL"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let matches = fk
        .columns
        .iter()
        .zip(fk.parent_columns)
        .map(|(c, p)| format!("p.{p} = c.{c}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let sql = format!(
        "SELECT {key} FROM {table} c
         WHERE {not_null} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {matches})
         ORDER BY 1 LIMIT 1",
        key = fk.key,
        table = fk.table,
        parent = fk.parent,
    );
    let Some(row) = tx.query_opt(&sql, &[]).await.db("check a foreign key")? else {
        return Ok(None);
    };
    Ok(Some(IntegrityProblem::ForeignKeyRow {
        table: fk.table.to_owned(),
        key: col(&row, 0, "foreign key check: key")?,
        parent: format!("{} ({})", fk.parent, fk.name),
    }))
}

#[cfg(test)]
#[path = "integrity_tests.rs"]
mod tests;
