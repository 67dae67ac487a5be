//! PostgreSQL's answer to `Storage::check_integrity` (see coffer-storage's `integrity`): every
//! store's and account's `secret_count` against a count of its secrets, from one snapshot.
//! Foreign keys are not re-checked: PostgreSQL enforces them on every write, and a restore
//! (pg_restore, psql) adds each constraint after the data, validating it.

use coffer_storage::{ForeignKeys, IntegrityProblem, IntegrityReport, Result};
use coffer_types::{AccountId, StoreId};
use deadpool_postgres::Transaction;

use crate::PgStorage;
use crate::db::{DbResultExt, bytes_col, col};
use crate::tx::TxFuture;

pub(crate) async fn check_integrity(s: &PgStorage) -> Result<IntegrityReport> {
    s.read_snapshot(|tx| -> TxFuture<'_, _> {
        Box::pin(async move {
            let stores_checked = rows(tx, "SELECT count(*) FROM stores").await?;
            let accounts_checked = rows(tx, "SELECT count(*) FROM accounts").await?;
            let mut problem =
                count_problem(tx, "stores", "store_id")
                    .await?
                    .map(|(id, counts, holds)| IntegrityProblem::StoreCount {
                        store: StoreId::from_bytes(id),
                        counts,
                        holds,
                    });
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
                foreign_keys: ForeignKeys::EnforcedByDatabase,
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
