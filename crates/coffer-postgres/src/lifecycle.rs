//! The DEK lifecycle's storage side: values under old DEKs, their compare-and-set re-seal,
//! pruning superseded versions, and destroying DEKs nothing references (and, rate-limited by
//! the caller, the compaction that takes their wraps out of the change log).

use std::collections::HashSet;

use coffer_storage::{Change, DekRecord, DestroyedDek, Reseal, Result, SealedValue, StorageError};
use coffer_types::{AccountId, DekId, SecretId, StoreId, Timestamp};
use deadpool_postgres::GenericClient;

use crate::PgStorage;
use crate::db::{DbResultExt, bytes_col, col, sql_limit, u64_col, version_col};
use crate::keys::insert_carried_deks;
use crate::write::WriteTx;

pub(crate) async fn values_sealed_before(
    s: &PgStorage,
    account: AccountId,
    cutoff: Timestamp,
    current: Option<DekId>,
    limit: usize,
) -> Result<Vec<SealedValue>> {
    let c = s.client().await?;
    // Through `deks_by_account` and `versions_by_dek`: only the old DEKs' values are read.
    // A zero id is never a DEK's (ids are random), so `None` excludes nothing.
    let current = current.map_or([0u8; 16], |d| *d.as_bytes());
    let stmt = c
        .prepare_cached(
            "SELECT s.account_id, s.store_id, s.id, v.version, v.dek_id, v.sealed
             FROM deks d
             JOIN versions v ON v.dek_id = d.id
             JOIN secrets s ON s.id = v.secret_id
             WHERE d.account_id = $1 AND (d.created < $2 OR d.retired) AND d.id <> $3
             LIMIT $4",
        )
        .await
        .db("values sealed before a cutoff")?;
    c.query(
        &stmt,
        &[
            &account.as_bytes().as_slice(),
            &cutoff.unix_micros(),
            &current.as_slice(),
            &sql_limit(limit),
        ],
    )
    .await
    .db("values sealed before a cutoff")?
    .iter()
    .map(|row| {
        Ok(SealedValue {
            account_id: AccountId::from_bytes(bytes_col(row, 0, "secrets.account_id")?),
            store_id: StoreId::from_bytes(bytes_col(row, 1, "secrets.store_id")?),
            secret_id: SecretId::from_bytes(bytes_col(row, 2, "secrets.id")?),
            version: version_col(row, 3, "versions.version")?,
            dek_id: DekId::from_bytes(bytes_col(row, 4, "versions.dek_id")?),
            sealed: col(row, 5, "versions.sealed")?,
        })
    })
    .collect()
}

pub(crate) async fn count_sealed_before(
    s: &PgStorage,
    account: AccountId,
    cutoff: Timestamp,
) -> Result<u64> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT count(*) FROM deks d JOIN versions v ON v.dek_id = d.id
             WHERE d.account_id = $1 AND (d.created < $2 OR d.retired)",
        )
        .await
        .db("count values to reseal")?;
    u64_col(
        &c.query_one(
            &stmt,
            &[&account.as_bytes().as_slice(), &cutoff.unix_micros()],
        )
        .await
        .db("count values to reseal")?,
        0,
        "count",
    )
}

async fn dek_belongs_to(c: &impl GenericClient, id: DekId, account: AccountId) -> Result<bool> {
    let stmt = c
        .prepare_cached("SELECT 1 FROM deks WHERE id = $1 AND account_id = $2")
        .await
        .db("check dek")?;
    Ok(c.query_opt(
        &stmt,
        &[&id.as_bytes().as_slice(), &account.as_bytes().as_slice()],
    )
    .await
    .db("check dek")?
    .is_some())
}

pub(crate) async fn reseal_values(
    s: &PgStorage,
    dek: Option<DekRecord>,
    reseals: Vec<Reseal>,
) -> Result<u64> {
    s.write(&[], move |w| {
        Box::pin(async move {
            let carried: Vec<&DekRecord> = dek.iter().collect();
            let owners = insert_carried_deks(w, &carried).await?;
            let mut checked: HashSet<(AccountId, DekId)> = HashSet::new();
            for r in &reseals {
                if !checked.insert((r.old.account_id, r.dek_id)) {
                    continue;
                }
                let belongs = match owners.get(&r.dek_id) {
                    Some(owner) => *owner == r.old.account_id,
                    None => dek_belongs_to(w.tx(), r.dek_id, r.old.account_id).await?,
                };
                if !belongs {
                    return Err(StorageError::Invalid(
                        "a value is re-sealed under a DEK that is not its account's",
                    ));
                }
            }
            let update = w
                .tx()
                .prepare_cached(
                    "UPDATE versions SET dek_id = $1, sealed = $2
                     WHERE secret_id = $3 AND version = $4 AND dek_id = $5 AND sealed = $6
                       AND EXISTS (SELECT 1 FROM secrets
                                   WHERE id = $3 AND store_id = $7 AND account_id = $8)",
                )
                .await
                .db("reseal value")?;
            let current = w
                .tx()
                .prepare_cached("SELECT version FROM secrets WHERE id = $1")
                .await
                .db("read secret version")?;
            let mut done = 0;
            for r in &reseals {
                let old = &r.old;
                let changed = w
                    .tx()
                    .execute(
                        &update,
                        &[
                            &r.dek_id.as_bytes().as_slice(),
                            &r.sealed,
                            &old.secret_id.as_bytes().as_slice(),
                            &i64::from(old.version.0),
                            &old.dek_id.as_bytes().as_slice(),
                            &old.sealed,
                            &old.store_id.as_bytes().as_slice(),
                            &old.account_id.as_bytes().as_slice(),
                        ],
                    )
                    .await
                    .db("reseal value")?;
                if changed == 0 {
                    // A write or a deletion got there first: it wins.
                    continue;
                }
                done += 1;
                let version = w
                    .tx()
                    .query_opt(&current, &[&old.secret_id.as_bytes().as_slice()])
                    .await
                    .db("read secret version")?
                    .map(|row| version_col(&row, 0, "secrets.version"))
                    .transpose()?;
                // Past versions are not replicated: only a re-sealed current one is logged.
                if version == Some(old.version) {
                    w.append(&Change::ValueResealed {
                        account_id: old.account_id,
                        store_id: old.store_id,
                        secret_id: old.secret_id,
                        version: old.version.0,
                        dek_id: r.dek_id,
                        sealed_hex: hex::encode(&r.sealed),
                    })
                    .await?;
                }
            }
            Ok(done)
        })
    })
    .await
}

pub(crate) async fn prune_versions(s: &PgStorage, keep: u32, limit: usize) -> Result<u64> {
    let keep = i64::from(keep.max(1));
    s.write(&[], move |w| {
        Box::pin(async move {
            w.tx()
                .execute(
                    "DELETE FROM versions WHERE (secret_id, version) IN (
                         SELECT v.secret_id, v.version
                         FROM versions v JOIN secrets s ON s.id = v.secret_id
                         WHERE v.version + $1 <= s.version LIMIT $2)",
                    &[&keep, &sql_limit(limit)],
                )
                .await
                .db("prune superseded versions")
        })
    })
    .await
}

pub(crate) async fn destroy_unreferenced_deks(
    s: &PgStorage,
    keep: Vec<DekId>,
    limit: usize,
) -> Result<Vec<DestroyedDek>> {
    s.write(&[], move |w| {
        Box::pin(async move {
            // Exclusions and the limit in the query: the work under the writer lock is
            // bounded by `limit`, not by the number of unreferenced DEKs.
            let keep: Vec<&[u8]> = keep.iter().map(|d| d.as_bytes().as_slice()).collect();
            let destroy = w
                .tx()
                .query(
                    "SELECT d.id, d.account_id FROM deks d
                     WHERE NOT EXISTS (SELECT 1 FROM versions v WHERE v.dek_id = d.id)
                       AND NOT (d.id = ANY($1::bytea[]))
                     ORDER BY d.ord
                     LIMIT $2",
                    &[&keep, &sql_limit(limit)],
                )
                .await
                .db("find unreferenced deks")?
                .iter()
                .map(|row| {
                    Ok(DestroyedDek {
                        dek_id: DekId::from_bytes(bytes_col(row, 0, "deks.id")?),
                        account_id: AccountId::from_bytes(bytes_col(row, 1, "deks.account_id")?),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            for d in &destroy {
                // The NOT EXISTS above ran under the writer lock: nothing references it now.
                w.tx()
                    .execute(
                        "DELETE FROM deks WHERE id = $1",
                        &[&d.dek_id.as_bytes().as_slice()],
                    )
                    .await
                    .db("destroy dek")?;
                // Remembered for good, so no write that took it earlier can store it again.
                record_destroyed(w, d.dek_id).await?;
            }
            // No compaction here: the lifecycle job compacts past destroyed DEKs at most once
            // per its minimum gap (`compact_destroyed_deks`), so edges behind the base are not
            // sent to snapshots on every destruction.
            for d in &destroy {
                w.append(&Change::DekDestroyed {
                    account_id: d.account_id,
                    dek_id: d.dek_id,
                })
                .await?;
            }
            Ok(destroy)
        })
    })
    .await
}

/// Enters a destroyed DEK in `destroyed_deks`, not yet compacted past.
async fn record_destroyed(w: &mut WriteTx<'_>, dek: DekId) -> Result<()> {
    w.tx()
        .execute(
            "INSERT INTO destroyed_deks (id, destroyed, compacted) VALUES ($1, $2, false)
             ON CONFLICT (id) DO NOTHING",
            &[&dek.as_bytes().as_slice(), &Timestamp::now().unix_micros()],
        )
        .await
        .db("record destroyed dek")?;
    Ok(())
}

/// Compacts the log through the newest entry that carries a DEK destroyed since the last such
/// compaction, then marks those DEKs compacted.
pub(crate) async fn compact_destroyed_deks(s: &PgStorage) -> Result<Option<u64>> {
    s.write(&[], |w| {
        Box::pin(async move {
            let pending = w
                .tx()
                .query("SELECT id FROM destroyed_deks WHERE NOT compacted", &[])
                .await
                .db("list destroyed deks to compact")?
                .iter()
                .map(|row| bytes_col(row, 0, "destroyed_deks.id").map(DekId::from_bytes))
                .collect::<Result<Vec<_>>>()?;
            if pending.is_empty() {
                return Ok(None);
            }
            let compacted = crate::change_log::compact_past(w.tx(), pending, u64::MAX).await?;
            w.tx()
                .execute(
                    "UPDATE destroyed_deks SET compacted = true WHERE NOT compacted",
                    &[],
                )
                .await
                .db("mark destroyed deks compacted")?;
            Ok(compacted)
        })
    })
    .await
}
