//! KEK rotation's storage side: counting keys per KEK, finding those a KEK wraps, and the
//! compare-and-set that rewraps them, and the retired KEK ids no key may be stored under.
//! Nothing here appends to the change log.

use coffer_types::{AccountId, DekId};
use rusqlite::{Connection, params};

use super::codec::{DbResultExt, col, id_col, query_all, ts_col};
use super::writer::WriteCx;
use crate::{KekUsage, KeyOwner, Result, Rewrap, StorageError, StoredKey, WrappedKeyRecord};

pub(super) fn kek_usage(conn: &Connection) -> Result<Vec<KekUsage>> {
    let mut usage: Vec<KekUsage> = Vec::new();
    let mut add = |kek_id: String, count: i64, deks: bool| {
        let count = u64::try_from(count).unwrap_or(0);
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
    let deks = query_all(
        conn,
        "SELECT kek_id, count(*) FROM deks GROUP BY kek_id",
        [],
        "count deks per kek",
        |row| Ok((col(row, 0, "deks.kek_id")?, col(row, 1, "count")?)),
    )?;
    for (kek_id, count) in deks {
        add(kek_id, count, true);
    }
    let instance = query_all(
        conn,
        "SELECT kek_id, count(*) FROM instance_keys GROUP BY kek_id",
        [],
        "count instance keys per kek",
        |row| Ok((col(row, 0, "instance_keys.kek_id")?, col(row, 1, "count")?)),
    )?;
    for (kek_id, count) in instance {
        add(kek_id, count, false);
    }
    usage.sort_by(|a, b| a.kek_id.cmp(&b.kek_id));
    Ok(usage)
}

pub(super) fn keys_wrapped_by(
    conn: &Connection,
    kek_id: &str,
    limit: usize,
) -> Result<Vec<StoredKey>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Instance keys first: a handful, and the ones every start needs.
    let mut keys = query_all(
        conn,
        "SELECT purpose, key_id, kek_id, wrapped, created FROM instance_keys
         WHERE kek_id = ?1 ORDER BY purpose LIMIT ?2",
        params![kek_id, limit],
        "instance keys wrapped by a kek",
        |row| {
            Ok(StoredKey {
                owner: KeyOwner::Instance(col(row, 0, "instance_keys.purpose")?),
                key: WrappedKeyRecord {
                    id: DekId::from_bytes(id_col(row, 1, "instance_keys.key_id")?),
                    kek_id: col(row, 2, "instance_keys.kek_id")?,
                    wrapped: col(row, 3, "instance_keys.wrapped")?,
                    created: ts_col(row, 4, "instance_keys.created")?,
                },
            })
        },
    )?;
    let left = limit - i64::try_from(keys.len()).unwrap_or(limit);
    if left > 0 {
        keys.extend(query_all(
            conn,
            "SELECT id, account_id, kek_id, wrapped, created FROM deks
             WHERE kek_id = ?1 LIMIT ?2",
            params![kek_id, left],
            "deks wrapped by a kek",
            |row| {
                Ok(StoredKey {
                    owner: KeyOwner::Account(AccountId::from_bytes(id_col(
                        row,
                        1,
                        "deks.account_id",
                    )?)),
                    key: WrappedKeyRecord {
                        id: DekId::from_bytes(id_col(row, 0, "deks.id")?),
                        kek_id: col(row, 2, "deks.kek_id")?,
                        wrapped: col(row, 3, "deks.wrapped")?,
                        created: ts_col(row, 4, "deks.created")?,
                    },
                })
            },
        )?);
    }
    Ok(keys)
}

pub(super) fn account_dek_usage(conn: &Connection, account: AccountId) -> Result<Vec<KekUsage>> {
    query_all(
        conn,
        "SELECT kek_id, count(*) FROM deks WHERE account_id = ?1 GROUP BY kek_id ORDER BY kek_id",
        params![account.as_bytes()],
        "count an account's deks per kek",
        |row| {
            let count: i64 = col(row, 1, "count")?;
            Ok(KekUsage {
                kek_id: col(row, 0, "deks.kek_id")?,
                deks: u64::try_from(count).unwrap_or(0),
                instance_keys: 0,
            })
        },
    )
}

pub(super) fn account_deks_not_wrapped_by(
    conn: &Connection,
    account: AccountId,
    kek_id: &str,
    limit: usize,
) -> Result<Vec<StoredKey>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    query_all(
        conn,
        "SELECT id, kek_id, wrapped, created FROM deks
         WHERE account_id = ?1 AND kek_id <> ?2 LIMIT ?3",
        params![account.as_bytes(), kek_id, limit],
        "an account's deks not wrapped by a kek",
        |row| {
            Ok(StoredKey {
                owner: KeyOwner::Account(account),
                key: WrappedKeyRecord {
                    id: DekId::from_bytes(id_col(row, 0, "deks.id")?),
                    kek_id: col(row, 1, "deks.kek_id")?,
                    wrapped: col(row, 2, "deks.wrapped")?,
                    created: ts_col(row, 3, "deks.created")?,
                },
            })
        },
    )
}

/// Applies each rewrap whose row still holds the bytes it was read with; returns how many did.
pub(super) fn rewrap_keys(cx: &mut WriteCx<'_>, rewraps: &[Rewrap]) -> Result<u64> {
    let mut done = 0;
    for rewrap in rewraps {
        let old = &rewrap.old.key;
        let changed = match &rewrap.old.owner {
            KeyOwner::Account(account) => cx
                .conn
                .prepare_cached(
                    "UPDATE deks SET kek_id = ?1, wrapped = ?2
                     WHERE id = ?3 AND account_id = ?4 AND kek_id = ?5 AND wrapped = ?6",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        rewrap.new_kek_id,
                        rewrap.new_wrapped,
                        old.id.as_bytes(),
                        account.as_bytes(),
                        old.kek_id,
                        old.wrapped
                    ])
                })
                .db("rewrap dek")?,
            KeyOwner::Instance(purpose) => cx
                .conn
                .prepare_cached(
                    "UPDATE instance_keys SET kek_id = ?1, wrapped = ?2
                     WHERE purpose = ?3 AND key_id = ?4 AND kek_id = ?5 AND wrapped = ?6",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        rewrap.new_kek_id,
                        rewrap.new_wrapped,
                        purpose,
                        old.id.as_bytes(),
                        old.kek_id,
                        old.wrapped
                    ])
                })
                .db("rewrap instance key")?,
        };
        done += changed as u64;
    }
    Ok(done)
}

/// Whether `kek_id` was retired ([`retire_kek`]).
pub(super) fn is_retired(conn: &Connection, kek_id: &str) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM retired_keks WHERE kek_id = ?1")
        .and_then(|mut stmt| stmt.exists(params![kek_id]))
        .db("check retired kek")
}

/// Refuses a key wrapped by a retired KEK (`Conflict`): its KEK is destroyed, so storing it
/// would store a key nothing can open.
pub(super) fn refuse_retired(conn: &Connection, kek_id: &str) -> Result<()> {
    if is_retired(conn, kek_id)? {
        return Err(StorageError::Conflict);
    }
    Ok(())
}

/// Records `kek_id` as retired if no stored key is wrapped by it (else `Conflict`). In one
/// writer transaction, so no insert of a key it wraps can come between the check and the mark.
pub(super) fn retire_kek(cx: &mut WriteCx<'_>, kek_id: &str, at: i64) -> Result<()> {
    let used: bool = cx
        .conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM deks WHERE kek_id = ?1)
                 OR EXISTS (SELECT 1 FROM instance_keys WHERE kek_id = ?1)",
        )
        .and_then(|mut stmt| stmt.query_row(params![kek_id], |row| row.get(0)))
        .db("check keys of a kek")?;
    if used {
        return Err(StorageError::Conflict);
    }
    cx.conn
        .prepare_cached(
            "INSERT INTO retired_keks (kek_id, retired) VALUES (?1, ?2)
             ON CONFLICT (kek_id) DO NOTHING",
        )
        .and_then(|mut stmt| stmt.execute(params![kek_id, at]))
        .db("retire kek")?;
    Ok(())
}
