//! KEK rotation's storage side: counting keys per KEK, finding those a KEK wraps, the
//! compare-and-set that rewraps them, and the retired KEK ids no key may be stored under.
//! Nothing here appends to the change log.

use coffer_storage::{
    KekUsage, KeyOwner, Result, Rewrap, StorageError, StoredKey, WrappedKeyRecord,
};
use coffer_types::{AccountId, DekId, Timestamp};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStorage;
use crate::db::{DbResultExt, bytes_col, col, sql_limit, ts_col, u64_col};
use crate::write::TxFuture;

/// A `(kek_id, count)` row as a count (a negative count cannot happen: read as 0).
fn count_row(row: &Row, what: &'static str) -> Result<(String, u64)> {
    Ok((col(row, 0, what)?, u64_col(row, 1, "count")?))
}

pub(crate) async fn kek_usage(s: &PgStorage) -> Result<Vec<KekUsage>> {
    // Both counts from one snapshot, so a rewrap in between cannot count a key twice.
    let (deks, instance) = s
        .read_snapshot(|tx| -> TxFuture<'_, _> {
            Box::pin(async move {
                let deks = tx
                    .query("SELECT kek_id, count(*) FROM deks GROUP BY kek_id", &[])
                    .await
                    .db("count deks per kek")?;
                let instance = tx
                    .query(
                        "SELECT kek_id, count(*) FROM instance_keys GROUP BY kek_id",
                        &[],
                    )
                    .await
                    .db("count instance keys per kek")?;
                Ok((deks, instance))
            })
        })
        .await?;
    let mut usage: Vec<KekUsage> = Vec::new();
    let mut add = |kek_id: String, count: u64, deks: bool| {
        let at = match usage.iter().position(|u| u.kek_id == kek_id) {
            Some(at) => at,
            None => {
                usage.push(KekUsage {
                    kek_id,
                    ..KekUsage::default()
                });
                usage.len() - 1
            }
        };
        if deks {
            usage[at].deks += count;
        } else {
            usage[at].instance_keys += count;
        }
    };
    for row in &deks {
        let (kek_id, count) = count_row(row, "deks.kek_id")?;
        add(kek_id, count, true);
    }
    for row in &instance {
        let (kek_id, count) = count_row(row, "instance_keys.kek_id")?;
        add(kek_id, count, false);
    }
    // Byte-wise, like SQLite's (String's Ord is byte-wise).
    usage.sort_by(|a, b| a.kek_id.cmp(&b.kek_id));
    Ok(usage)
}

fn wrapped_key(row: &Row, at: usize, what: &'static str) -> Result<WrappedKeyRecord> {
    Ok(WrappedKeyRecord {
        id: DekId::from_bytes(bytes_col(row, at, what)?),
        kek_id: col(row, at + 1, what)?,
        wrapped: col(row, at + 2, what)?,
        created: ts_col(row, at + 3, what)?,
    })
}

pub(crate) async fn keys_wrapped_by(
    s: &PgStorage,
    kek_id: &str,
    limit: usize,
) -> Result<Vec<StoredKey>> {
    let c = s.client().await?;
    let limit = sql_limit(limit);
    // Instance keys first: a handful, and the ones every start needs.
    let stmt = c
        .prepare_cached(
            "SELECT purpose, key_id, kek_id, wrapped, created FROM instance_keys
             WHERE kek_id = $1 ORDER BY purpose LIMIT $2",
        )
        .await
        .db("instance keys wrapped by a kek")?;
    let mut keys = c
        .query(&stmt, &[&kek_id, &limit])
        .await
        .db("instance keys wrapped by a kek")?
        .iter()
        .map(|row| {
            Ok(StoredKey {
                owner: KeyOwner::Instance(col(row, 0, "instance_keys.purpose")?),
                key: wrapped_key(row, 1, "instance_keys")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let left = limit - i64::try_from(keys.len()).unwrap_or(limit);
    if left > 0 {
        let stmt = c
            .prepare_cached(
                "SELECT account_id, id, kek_id, wrapped, created FROM deks
                 WHERE kek_id = $1 LIMIT $2",
            )
            .await
            .db("deks wrapped by a kek")?;
        for row in c
            .query(&stmt, &[&kek_id, &left])
            .await
            .db("deks wrapped by a kek")?
        {
            keys.push(StoredKey {
                owner: KeyOwner::Account(AccountId::from_bytes(bytes_col(
                    &row,
                    0,
                    "deks.account_id",
                )?)),
                key: wrapped_key(&row, 1, "deks")?,
            });
        }
    }
    Ok(keys)
}

pub(crate) async fn account_dek_usage(s: &PgStorage, account: AccountId) -> Result<Vec<KekUsage>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT kek_id, count(*) FROM deks WHERE account_id = $1
             GROUP BY kek_id ORDER BY kek_id",
        )
        .await
        .db("count an account's deks per kek")?;
    c.query(&stmt, &[&account.as_bytes().as_slice()])
        .await
        .db("count an account's deks per kek")?
        .iter()
        .map(|row| {
            let (kek_id, deks) = count_row(row, "deks.kek_id")?;
            Ok(KekUsage {
                kek_id,
                deks,
                instance_keys: 0,
            })
        })
        .collect()
}

pub(crate) async fn account_deks_not_wrapped_by(
    s: &PgStorage,
    account: AccountId,
    kek_id: &str,
    limit: usize,
) -> Result<Vec<StoredKey>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT id, kek_id, wrapped, created FROM deks
             WHERE account_id = $1 AND kek_id <> $2 LIMIT $3",
        )
        .await
        .db("an account's deks not wrapped by a kek")?;
    c.query(
        &stmt,
        &[&account.as_bytes().as_slice(), &kek_id, &sql_limit(limit)],
    )
    .await
    .db("an account's deks not wrapped by a kek")?
    .iter()
    .map(|row| {
        Ok(StoredKey {
            owner: KeyOwner::Account(account),
            key: wrapped_key(row, 0, "deks")?,
        })
    })
    .collect()
}

/// Applies each rewrap whose row still holds the bytes it was read with; returns how many did.
pub(crate) async fn rewrap_keys(s: &PgStorage, rewraps: Vec<Rewrap>) -> Result<u64> {
    s.write(&[], move |w| {
        Box::pin(async move {
            let dek = w
                .tx()
                .prepare_cached(
                    "UPDATE deks SET kek_id = $1, wrapped = $2
                     WHERE id = $3 AND account_id = $4 AND kek_id = $5 AND wrapped = $6",
                )
                .await
                .db("rewrap dek")?;
            let instance = w
                .tx()
                .prepare_cached(
                    "UPDATE instance_keys SET kek_id = $1, wrapped = $2
                     WHERE purpose = $3 AND key_id = $4 AND kek_id = $5 AND wrapped = $6",
                )
                .await
                .db("rewrap instance key")?;
            let mut done = 0;
            for rewrap in &rewraps {
                let old = &rewrap.old.key;
                done += match &rewrap.old.owner {
                    KeyOwner::Account(account) => w
                        .tx()
                        .execute(
                            &dek,
                            &[
                                &rewrap.new_kek_id,
                                &rewrap.new_wrapped,
                                &old.id.as_bytes().as_slice(),
                                &account.as_bytes().as_slice(),
                                &old.kek_id,
                                &old.wrapped,
                            ],
                        )
                        .await
                        .db("rewrap dek")?,
                    KeyOwner::Instance(purpose) => w
                        .tx()
                        .execute(
                            &instance,
                            &[
                                &rewrap.new_kek_id,
                                &rewrap.new_wrapped,
                                purpose,
                                &old.id.as_bytes().as_slice(),
                                &old.kek_id,
                                &old.wrapped,
                            ],
                        )
                        .await
                        .db("rewrap instance key")?,
                };
            }
            Ok(done)
        })
    })
    .await
}

/// Whether `kek_id` was retired ([`retire_kek`]).
pub(crate) async fn is_retired(c: &impl GenericClient, kek_id: &str) -> Result<bool> {
    let stmt = c
        .prepare_cached("SELECT 1 FROM retired_keks WHERE kek_id = $1")
        .await
        .db("check retired kek")?;
    Ok(c.query_opt(&stmt, &[&kek_id])
        .await
        .db("check retired kek")?
        .is_some())
}

pub(crate) async fn is_kek_retired(s: &PgStorage, kek_id: &str) -> Result<bool> {
    is_retired(&s.client().await?, kek_id).await
}

/// Records `kek_id` as retired if no stored key is wrapped by it (else `Conflict`). In one
/// write, under the writer lock, so no insert of a key it wraps can come between the check and
/// the mark.
pub(crate) async fn retire_kek(s: &PgStorage, kek_id: &str) -> Result<()> {
    let kek_id = kek_id.to_owned();
    let at = Timestamp::now().unix_micros();
    s.write(&[], move |w| {
        Box::pin(async move {
            let used: bool = col(
                &w.tx()
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM deks WHERE kek_id = $1)
                             OR EXISTS (SELECT 1 FROM instance_keys WHERE kek_id = $1)",
                        &[&kek_id],
                    )
                    .await
                    .db("check keys of a kek")?,
                0,
                "kek in use",
            )?;
            if used {
                return Err(StorageError::Conflict);
            }
            w.tx()
                .execute(
                    "INSERT INTO retired_keks (kek_id, retired) VALUES ($1, $2)
                     ON CONFLICT (kek_id) DO NOTHING",
                    &[&kek_id, &at],
                )
                .await
                .db("retire kek")?;
            Ok(())
        })
    })
    .await
}
