//! Instance keys, DEKs ([`insert_dek`], which every write carrying a DEK uses: see the
//! `Storage` trait's "DEKs carried by writes"; [`rewrap_deks`], a revocation's rewrap of DEKs
//! onto a new RK or ARK version, which `replication.rs` and `ark.rs` share) and KEK rotation's
//! queries (usage per KEK, the keys a KEK wraps, compare-and-set rewrap, retired KEK ids). The
//! DEK lifecycle is in `lifecycle.rs`; which RK and ARK versions are current in
//! `key_versions.rs`.

use std::collections::HashMap;

use coffer_storage::{
    Change, DekRecord, Entity, KekUsage, KeyOwner, REPLICATION_KEY_PURPOSE_PREFIX, Result, Rewrap,
    RkWrap, StorageError, StoredKey, WrappedKeyRecord, ark_kek_id, rk_kek_id,
};
use coffer_types::{AccountId, DekId, Timestamp};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStorage;
use crate::db::{
    DbResultExt, Violation, bytes_col, col, db_error, opt_bytes_col, sql_limit, ts_col, u64_col,
    violation,
};
use crate::key_versions::owes_rotation;
use crate::write::WriteTx;

// The column list and its decoder change together: the decoder reads by position.
pub(crate) const DEK_COLS: &str =
    "id, account_id, kek_id, wrapped, created, rk_version, rk_wrapped, rk_account";

pub(crate) fn dek_from_row(row: &Row) -> Result<DekRecord> {
    let ark: bool = col(row, 7, "deks.rk_account")?;
    Ok(DekRecord {
        account_id: AccountId::from_bytes(bytes_col(row, 1, "deks.account_id")?),
        key: WrappedKeyRecord {
            id: DekId::from_bytes(bytes_col(row, 0, "deks.id")?),
            kek_id: col(row, 2, "deks.kek_id")?,
            wrapped: col(row, 3, "deks.wrapped")?,
            created: ts_col(row, 4, "deks.created")?,
        },
        rk: rk_wrap_cols(row, 5, "deks.rk_version")?.map(|rk| RkWrap { ark, ..rk }),
    })
}

/// An RK version and wrap in columns `idx` and `idx + 1` (both NULL: none).
pub(crate) fn rk_wrap_cols(row: &Row, idx: usize, what: &'static str) -> Result<Option<RkWrap>> {
    let version: Option<i64> = col(row, idx, what)?;
    let wrapped: Option<Vec<u8>> = col(row, idx + 1, what)?;
    match (version, wrapped) {
        (None, None) => Ok(None),
        (Some(v), Some(wrapped)) => Ok(Some(RkWrap {
            version: u32::try_from(v)
                .map_err(|_| StorageError::Corrupted(format!("{what}: {v} out of range")))?,
            wrapped,
            ark: false,
        })),
        _ => Err(StorageError::Corrupted(format!(
            "{what}: version and wrap are not both set"
        ))),
    }
}

pub(crate) async fn read_instance_key(
    c: &impl GenericClient,
    purpose: &str,
) -> Result<Option<WrappedKeyRecord>> {
    let stmt = c
        .prepare_cached(
            "SELECT key_id, kek_id, wrapped, created FROM instance_keys WHERE purpose = $1",
        )
        .await
        .db("get instance key")?;
    c.query_opt(&stmt, &[&purpose])
        .await
        .db("get instance key")?
        .map(|row| {
            Ok(WrappedKeyRecord {
                id: DekId::from_bytes(bytes_col(&row, 0, "instance_keys.key_id")?),
                kek_id: col(&row, 1, "instance_keys.kek_id")?,
                wrapped: col(&row, 2, "instance_keys.wrapped")?,
                created: ts_col(&row, 3, "instance_keys.created")?,
            })
        })
        .transpose()
}

pub(crate) async fn get_instance_key(
    s: &PgStorage,
    purpose: &str,
) -> Result<Option<WrappedKeyRecord>> {
    read_instance_key(&s.client().await?, purpose).await
}

pub(crate) async fn put_instance_key_if_absent(
    s: &PgStorage,
    purpose: &str,
    key: WrappedKeyRecord,
) -> Result<WrappedKeyRecord> {
    let purpose = purpose.to_owned();
    s.write(&[], move |w| {
        Box::pin(async move { put_instance_key_in(w.tx(), &purpose, &key).await })
    })
    .await
}

/// Stores `key` under `purpose` unless one is stored, in the caller's write; returns the one
/// stored afterwards. Under the writer lock no other initialiser runs between the insert and
/// the read: whoever's insert came first is what both read back.
pub(crate) async fn put_instance_key_in(
    tx: &deadpool_postgres::Transaction<'_>,
    purpose: &str,
    key: &WrappedKeyRecord,
) -> Result<WrappedKeyRecord> {
    refuse_retired(tx, &key.kek_id).await?;
    tx.execute(
        "INSERT INTO instance_keys (purpose, key_id, kek_id, wrapped, created)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (purpose) DO NOTHING",
        &[
            &purpose,
            &key.id.as_bytes().as_slice(),
            &key.kek_id,
            &key.wrapped,
            &key.created.unix_micros(),
        ],
    )
    .await
    .db("put instance key")?;
    read_instance_key(tx, purpose)
        .await?
        .ok_or_else(|| StorageError::Unavailable("instance key vanished after insert".into()))
}

/// `Conflict` if `kek_id` was retired (its key destroyed): no key it wraps may be stored.
pub(crate) async fn refuse_retired(c: &impl GenericClient, kek_id: &str) -> Result<()> {
    let stmt = c
        .prepare_cached("SELECT 1 FROM retired_keks WHERE kek_id = $1")
        .await
        .db("check retired kek")?;
    if c.query_opt(&stmt, &[&kek_id])
        .await
        .db("check retired kek")?
        .is_some()
    {
        return Err(StorageError::Conflict);
    }
    Ok(())
}

/// Whether DEK `id` was destroyed (its id is remembered in `destroyed_deks`).
pub(crate) async fn is_destroyed(c: &impl GenericClient, id: DekId) -> Result<bool> {
    let stmt = c
        .prepare_cached("SELECT 1 FROM destroyed_deks WHERE id = $1")
        .await
        .db("check destroyed dek")?;
    Ok(c.query_opt(&stmt, &[&id.as_bytes().as_slice()])
        .await
        .db("check destroyed dek")?
        .is_some())
}

/// Inserts `dek` unless a DEK with its id is stored; returns whether it inserted (and so
/// appended its `DekPut`). The same checks as SQLite's, each refusing with `Conflict` (the
/// caller seals again under a new DEK):
/// - an RK wrap of the current version only: the account's ARK when it has one, and not
///   while the account owes an ARK rotation;
/// - no retired KEK version;
/// - no destroyed DEK, and no stored DEK that is retired;
/// - a DEK not stored yet, not while a node's revocation holds the DEK gate (`dek_gate.rs`).
///
/// `NotFound(Account)` for an unknown account.
pub(crate) async fn insert_dek(w: &mut WriteTx<'_>, dek: &DekRecord) -> Result<bool> {
    Ok(check_and_insert_dek(w, dek).await?.0)
}

/// [`insert_dek`], also returning the account the DEK with `dek`'s id belongs to in storage
/// (`dek`'s own when it was inserted; the stored row's otherwise).
async fn check_and_insert_dek(w: &mut WriteTx<'_>, dek: &DekRecord) -> Result<(bool, AccountId)> {
    // Every check in one statement (one round trip inside the writer's transaction, which
    // holds the writer lock: nothing changes between the checks and the insert below).
    let checks = w
        .tx()
        .prepare_cached(
            "SELECT (SELECT max(version) FROM account_replication_keys WHERE account_id = $1),
                    (SELECT max(CAST(substr(purpose, $2) AS BIGINT)) FROM instance_keys
                     WHERE purpose LIKE $3),
                    EXISTS (SELECT 1 FROM retired_keks WHERE kek_id = $4),
                    EXISTS (SELECT 1 FROM destroyed_deks WHERE id = $5),
                    (SELECT retired FROM deks WHERE id = $5),
                    (SELECT account_id FROM deks WHERE id = $5)",
        )
        .await
        .db("check dek")?;
    let start = i32::try_from(REPLICATION_KEY_PURPOSE_PREFIX.len() + 1).unwrap_or(i32::MAX);
    let row = w
        .tx()
        .query_one(
            &checks,
            &[
                &dek.account_id.as_bytes().as_slice(),
                &start,
                &format!("{REPLICATION_KEY_PURPOSE_PREFIX}%"),
                &dek.key.kek_id,
                &dek.key.id.as_bytes().as_slice(),
            ],
        )
        .await
        .db("check dek")?;
    let version = |i: usize, what: &'static str| -> Result<Option<u32>> {
        col::<Option<i64>>(&row, i, what)?
            .map(|v| {
                u32::try_from(v)
                    .map_err(|_| StorageError::Corrupted(format!("{what} {v} out of range")))
            })
            .transpose()
    };
    if let Some(rk) = &dek.rk {
        let ark = version(0, "account replication key version")?;
        let current = if rk.ark {
            ark
        } else if ark.is_some() {
            None
        } else {
            version(1, "replication key version")?
        };
        if current != Some(rk.version) {
            return Err(StorageError::Conflict);
        }
        // An account left out of a revocation (its KEK was unavailable) keeps its ARK version,
        // which the revoked node may hold, until the owed rotation is made: a write that took
        // a DEK under it before the revocation must not store a value under it afterwards
        // (refused whether the DEK is stored already or not).
        if rk.ark && owes_rotation(w.tx(), dek.account_id).await? {
            return Err(StorageError::Conflict);
        }
    }
    // A retired KEK version: no key it wraps may be stored.
    if col::<bool>(&row, 2, "retired kek")? {
        return Err(StorageError::Conflict);
    }
    // A destroyed DEK that a write took before its destruction: storing it again would bring
    // it back (with a new `DekPut`) after its `DekDestroyed`.
    if col::<bool>(&row, 3, "destroyed dek")? {
        return Err(StorageError::Conflict);
    }
    // A retired DEK never seals again (a store deleted with values, a revocation's rewrap,
    // an account given its own KEK): another instance that still seals with it, as its
    // cached current DEK, must take a new one, or the deleted store's DEK would stay in use
    // (and undestroyed) for as long as that instance keeps it.
    match col::<Option<bool>>(&row, 4, "deks.retired")? {
        Some(true) => return Err(StorageError::Conflict),
        Some(false) => {
            let owner = opt_bytes_col(&row, 5, "deks.account_id")?.ok_or_else(|| {
                StorageError::Corrupted("deks.account_id: missing for a stored DEK".into())
            })?;
            return Ok((false, AccountId::from_bytes(owner)));
        }
        None => {}
    }
    // Not stored (checked above, in this write's transaction, under the writer lock): a
    // plain insert.
    let insert = w
        .tx()
        .prepare_cached(
            "INSERT INTO deks
                 (id, account_id, kek_id, wrapped, created, rk_version, rk_wrapped, rk_account)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await
        .db("put dek")?;
    w.tx()
        .execute(
            &insert,
            &[
                &dek.key.id.as_bytes().as_slice(),
                &dek.account_id.as_bytes().as_slice(),
                &dek.key.kek_id,
                &dek.key.wrapped,
                &dek.key.created.unix_micros(),
                &dek.rk.as_ref().map(|rk| i64::from(rk.version)),
                &dek.rk.as_ref().map(|rk| rk.wrapped.as_slice()),
                &dek.rk.as_ref().is_some_and(|rk| rk.ark),
            ],
        )
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::ForeignKey(_)) => StorageError::NotFound(Entity::Account),
            _ => db_error("put dek", &e),
        })?;
    // A new DEK: refused while a node's revocation on any instance holds the DEK gate (its
    // listing would miss it), else the gate is held shared until this write commits.
    crate::dek_gate::enter_shared(w).await?;
    // The feed carries the replication-key wrap, never the KEK's (a DEK without one comes
    // from a caller that has no replication key: tests of storage alone).
    let (kek_id, wrapped) = match &dek.rk {
        Some(rk) => (rk.kek_id(), &rk.wrapped),
        None => (dek.key.kek_id.clone(), &dek.key.wrapped),
    };
    w.append(&Change::DekPut {
        account_id: dek.account_id,
        dek_id: dek.key.id,
        kek_id,
        wrapped_hex: hex::encode(wrapped),
    })
    .await?;
    Ok((true, dek.account_id))
}

/// Inserts the carried DEKs that are not stored yet, each once, in the order first carried.
/// Returns each carried DEK's id with the account it belongs to in storage, so that the
/// caller's ownership checks need no statement of their own for them.
pub(crate) async fn insert_carried_deks(
    w: &mut WriteTx<'_>,
    deks: &[&DekRecord],
) -> Result<HashMap<DekId, AccountId>> {
    let mut owners = HashMap::new();
    for dek in deks {
        if let std::collections::hash_map::Entry::Vacant(slot) = owners.entry(dek.key.id) {
            let (_, owner) = check_and_insert_dek(w, dek).await?;
            slot.insert(owner);
        }
    }
    Ok(owners)
}

/// Rewraps each of `deks` by version `version` of a replication key and appends its
/// `DekPut`: with `ark_of`, that account's ARK (`ark:<n>`; each DEK must be the account's),
/// else the instance RK (`rk:<n>`; each DEK must not be ARK-wrapped). A DEK not found so is a
/// `Conflict`, but for one destroyed since the rotation listed it, which is skipped. The DEK
/// never seals again (`retired`): its values are re-sealed onto a DEK made
/// under the new version.
pub(crate) async fn rewrap_deks(
    w: &mut WriteTx<'_>,
    deks: &[(DekId, Vec<u8>)],
    version: u32,
    ark_of: Option<AccountId>,
) -> Result<()> {
    let find = w
        .tx()
        .prepare_cached(
            "SELECT account_id FROM deks
             WHERE id = $1 AND (CASE WHEN $2::bytea IS NULL THEN NOT rk_account
                                     ELSE account_id = $2 END)",
        )
        .await
        .db("rewrap dek")?;
    let update = w
        .tx()
        .prepare_cached(
            "UPDATE deks SET rk_version = $1, rk_wrapped = $2, rk_account = $3, retired = true
             WHERE id = $4",
        )
        .await
        .db("rewrap dek")?;
    let ark = ark_of.map(|a| a.as_bytes().to_vec());
    for (dek, wrapped) in deks {
        let found = w
            .tx()
            .query_opt(&find, &[&dek.as_bytes().as_slice(), &ark])
            .await
            .db("rewrap dek")?;
        let Some(account) = found else {
            // Destroyed since the rotation listed it (the DEK lifecycle job runs beside a
            // revocation): nothing is left to rewrap, and refusing would let destructions
            // starve the revocation.
            if is_destroyed(w.tx(), *dek).await? {
                continue;
            }
            return Err(StorageError::Conflict);
        };
        let account = AccountId::from_bytes(bytes_col(&account, 0, "deks.account_id")?);
        w.tx()
            .execute(
                &update,
                &[
                    &i64::from(version),
                    wrapped,
                    &ark_of.is_some(),
                    &dek.as_bytes().as_slice(),
                ],
            )
            .await
            .db("rewrap dek")?;
        w.append(&Change::DekPut {
            account_id: account,
            dek_id: *dek,
            kek_id: match ark_of {
                Some(_) => ark_kek_id(version),
                None => rk_kek_id(version),
            },
            wrapped_hex: hex::encode(wrapped),
        })
        .await?;
    }
    Ok(())
}

pub(crate) async fn put_dek(s: &PgStorage, dek: DekRecord) -> Result<()> {
    s.write(&[], move |w| {
        Box::pin(async move {
            if insert_dek(w, &dek).await? {
                Ok(())
            } else {
                Err(StorageError::AlreadyExists(Entity::Dek))
            }
        })
    })
    .await
}

pub(crate) async fn get_dek(s: &PgStorage, id: DekId) -> Result<Option<DekRecord>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(&format!("SELECT {DEK_COLS} FROM deks WHERE id = $1"))
        .await
        .db("get dek")?;
    c.query_opt(&stmt, &[&id.as_bytes().as_slice()])
        .await
        .db("get dek")?
        .map(|row| dek_from_row(&row))
        .transpose()
}

pub(crate) async fn latest_dek(s: &PgStorage, account: AccountId) -> Result<Option<DekRecord>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {DEK_COLS} FROM deks WHERE account_id = $1 AND NOT retired
             ORDER BY created DESC, ord DESC LIMIT 1"
        ))
        .await
        .db("latest dek")?;
    c.query_opt(&stmt, &[&account.as_bytes().as_slice()])
        .await
        .db("latest dek")?
        .map(|row| dek_from_row(&row))
        .transpose()
}

// ---- KEK rotation: nothing here appends to the change log ----

fn stored_dek(row: &Row, owner: KeyOwner) -> Result<StoredKey> {
    Ok(StoredKey {
        owner,
        key: WrappedKeyRecord {
            id: DekId::from_bytes(bytes_col(row, 0, "deks.id")?),
            kek_id: col(row, 1, "deks.kek_id")?,
            wrapped: col(row, 2, "deks.wrapped")?,
            created: ts_col(row, 3, "deks.created")?,
        },
    })
}

pub(crate) async fn kek_usage(s: &PgStorage) -> Result<Vec<KekUsage>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT kek_id, sum(deks)::bigint, sum(instance_keys)::bigint FROM (
                 SELECT kek_id, count(*) AS deks, 0 AS instance_keys FROM deks GROUP BY kek_id
                 UNION ALL
                 SELECT kek_id, 0, count(*) FROM instance_keys GROUP BY kek_id
             ) AS usage GROUP BY kek_id",
        )
        .await
        .db("count keys per kek")?;
    let mut usage = c
        .query(&stmt, &[])
        .await
        .db("count keys per kek")?
        .iter()
        .map(|row| {
            Ok(KekUsage {
                kek_id: col(row, 0, "kek_id")?,
                deks: u64_col(row, 1, "deks per kek")?,
                instance_keys: u64_col(row, 2, "instance keys per kek")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Byte-wise, whatever the collation of the union's column.
    usage.sort_by(|a, b| a.kek_id.cmp(&b.kek_id));
    Ok(usage)
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
                key: WrappedKeyRecord {
                    id: DekId::from_bytes(bytes_col(row, 1, "instance_keys.key_id")?),
                    kek_id: col(row, 2, "instance_keys.kek_id")?,
                    wrapped: col(row, 3, "instance_keys.wrapped")?,
                    created: ts_col(row, 4, "instance_keys.created")?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let left = limit.saturating_sub(i64::try_from(keys.len()).unwrap_or(limit));
    if left > 0 {
        let stmt = c
            .prepare_cached(
                "SELECT id, kek_id, wrapped, created, account_id FROM deks
                 WHERE kek_id = $1 LIMIT $2",
            )
            .await
            .db("deks wrapped by a kek")?;
        for row in c
            .query(&stmt, &[&kek_id, &left])
            .await
            .db("deks wrapped by a kek")?
        {
            let account = AccountId::from_bytes(bytes_col(&row, 4, "deks.account_id")?);
            keys.push(stored_dek(&row, KeyOwner::Account(account))?);
        }
    }
    Ok(keys)
}

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
            // Each applies only if the row still holds the bytes it was read with.
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
            Ok(KekUsage {
                kek_id: col(row, 0, "deks.kek_id")?,
                deks: u64_col(row, 1, "count")?,
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
    .map(|row| stored_dek(row, KeyOwner::Account(account)))
    .collect()
}

pub(crate) async fn retire_kek(s: &PgStorage, kek_id: &str) -> Result<()> {
    let kek_id = kek_id.to_owned();
    let at = Timestamp::now().unix_micros();
    s.write(&[], move |w| {
        Box::pin(async move {
            // Under the writer lock: no insert of a key it wraps can come between the check
            // and the mark.
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

pub(crate) async fn is_kek_retired(s: &PgStorage, kek_id: &str) -> Result<bool> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached("SELECT 1 FROM retired_keks WHERE kek_id = $1")
        .await
        .db("check retired kek")?;
    Ok(c.query_opt(&stmt, &[&kek_id])
        .await
        .db("check retired kek")?
        .is_some())
}
