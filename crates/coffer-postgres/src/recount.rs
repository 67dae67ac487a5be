//! PostgreSQL's `Storage::recount_secrets` (`coffer repair --database-url`): every store's and
//! account's `secret_count` that is not the number of its secrets set to it, in one write under
//! the writer lock, so beside serving instances (no other write comes between the count and
//! the update). Nothing is appended to the change log: counts are not replicated.

use coffer_storage::{Recount, Recounted, Result};
use coffer_types::{AccountId, StoreId};
use deadpool_postgres::Transaction;

use crate::PgStorage;
use crate::db::{DbResultExt, bytes_col, col};

pub(crate) async fn recount_secrets(s: &PgStorage) -> Result<Recounted> {
    s.write(&[], |w| {
        Box::pin(async move {
            let stores = set_counts(w.tx(), "stores", "store_id").await?;
            let accounts = set_counts(w.tx(), "accounts", "account_id").await?;
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
        })
    })
    .await
}

/// Sets the count of every row of `table` (`stores` or `accounts`) whose `secret_count` is not
/// the number of secrets whose `column` names it; returns them by id: (id, its count, the
/// secrets').
async fn set_counts(
    tx: &Transaction<'_>,
    table: &'static str,
    column: &'static str,
) -> Result<Vec<([u8; 16], i64, i64)>> {
    // One pass over the secrets (grouped), one statement: the rows' old counts come from the
    // FROM list, as RETURNING shows the new ones.
    let sql = format!(
        "UPDATE {table} t SET secret_count = w.n
         FROM (SELECT t.id, t.secret_count AS was, coalesce(c.n, 0) AS n FROM {table} t
               LEFT JOIN (SELECT {column} AS id, count(*) AS n FROM secrets GROUP BY {column}) c
                 ON c.id = t.id
               WHERE t.secret_count IS DISTINCT FROM coalesce(c.n, 0)) w
         WHERE t.id = w.id
         RETURNING t.id, w.was, w.n"
    );
    let rows = tx.query(&sql, &[]).await.db("set secret counts")?;
    let mut set = rows
        .iter()
        .map(|row| {
            Ok((
                bytes_col(row, 0, "recount: id")?,
                col(row, 1, "recount: count")?,
                col(row, 2, "recount: rows")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    set.sort_by_key(|(id, _, _)| *id);
    Ok(set)
}
