//! The DEK lifecycle's storage side: values under old DEKs, their compare-and-set re-seal,
//! pruning superseded versions, and destroying DEKs nothing references (and, rate-limited by
//! the caller, the compaction that takes their wraps out of the change log).

use std::collections::HashSet;

use coffer_types::{AccountId, DekId, SecretId, StoreId, Timestamp};
use rusqlite::{Connection, params};

use super::codec::{DbResultExt, id_col, query_all, query_opt, to_hex, u64_col, version_col};
use super::log_head::base_position;
use super::reads::dek_belongs_to;
use super::replication;
use super::writer::WriteCx;
use crate::{
    Change, CompactionMatcher, DekRecord, DestroyedDek, Reseal, Result, SealedValue, StorageError,
};

fn limit_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(super) fn values_sealed_before(
    conn: &Connection,
    account: AccountId,
    cutoff: Timestamp,
    current: Option<DekId>,
    limit: usize,
) -> Result<Vec<SealedValue>> {
    // Through `deks_by_account` and `versions_by_dek`: only the old DEKs' values are read.
    // A zero id is never a DEK's (ids are random), so `None` excludes nothing.
    let current = current.map_or([0u8; 16], |d| *d.as_bytes());
    query_all(
        conn,
        "SELECT s.account_id, s.store_id, s.id, v.version, v.dek_id, v.sealed
         FROM deks d
         JOIN versions v ON v.dek_id = d.id
         JOIN secrets s ON s.id = v.secret_id
         WHERE d.account_id = ?1 AND (d.created < ?2 OR d.retired = 1) AND d.id != ?3
         LIMIT ?4",
        params![
            account.as_bytes(),
            cutoff.unix_micros(),
            current,
            limit_sql(limit)
        ],
        "values sealed before a cutoff",
        |row| {
            Ok(SealedValue {
                account_id: AccountId::from_bytes(id_col(row, 0, "secrets.account_id")?),
                store_id: StoreId::from_bytes(id_col(row, 1, "secrets.store_id")?),
                secret_id: SecretId::from_bytes(id_col(row, 2, "secrets.id")?),
                version: version_col(row, 3, "versions.version")?,
                dek_id: DekId::from_bytes(id_col(row, 4, "versions.dek_id")?),
                sealed: super::codec::col(row, 5, "versions.sealed")?,
            })
        },
    )
}

pub(super) fn count_sealed_before(
    conn: &Connection,
    account: AccountId,
    cutoff: Timestamp,
) -> Result<u64> {
    query_opt(
        conn,
        "SELECT count(*) FROM deks d JOIN versions v ON v.dek_id = d.id
         WHERE d.account_id = ?1 AND (d.created < ?2 OR d.retired = 1)",
        params![account.as_bytes(), cutoff.unix_micros()],
        "count values to reseal",
        |row| u64_col(row, 0, "count"),
    )
    .map(|n| n.unwrap_or(0))
}

pub(super) fn reseal_values(
    cx: &mut WriteCx<'_>,
    dek: Option<&DekRecord>,
    reseals: &[Reseal],
) -> Result<u64> {
    if let Some(dek) = dek {
        super::deks::insert_carried_deks(cx, Some(dek))?;
    }
    let mut checked: HashSet<(AccountId, DekId)> = HashSet::new();
    for r in reseals {
        let key = (r.old.account_id, r.dek_id);
        if checked.insert(key) && !dek_belongs_to(cx.conn, r.dek_id, r.old.account_id)? {
            return Err(StorageError::Invalid(
                "a value is re-sealed under a DEK that is not its account's",
            ));
        }
    }
    let mut done = 0;
    for r in reseals {
        let old = &r.old;
        let changed = cx
            .conn
            .prepare_cached(
                "UPDATE versions SET dek_id = ?1, sealed = ?2
                 WHERE secret_id = ?3 AND version = ?4 AND dek_id = ?5 AND sealed = ?6
                   AND EXISTS (SELECT 1 FROM secrets
                               WHERE id = ?3 AND store_id = ?7 AND account_id = ?8)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    r.dek_id.as_bytes(),
                    r.sealed,
                    old.secret_id.as_bytes(),
                    i64::from(old.version.0),
                    old.dek_id.as_bytes(),
                    old.sealed,
                    old.store_id.as_bytes(),
                    old.account_id.as_bytes(),
                ])
            })
            .db("reseal value")?;
        if changed == 0 {
            // A write or a deletion got there first: it wins.
            continue;
        }
        done += 1;
        let current = query_opt(
            cx.conn,
            "SELECT version FROM secrets WHERE id = ?1",
            [old.secret_id.as_bytes()],
            "read secret version",
            |row| version_col(row, 0, "secrets.version"),
        )?;
        if current == Some(old.version) {
            cx.append(&Change::ValueResealed {
                account_id: old.account_id,
                store_id: old.store_id,
                secret_id: old.secret_id,
                version: old.version.0,
                dek_id: r.dek_id,
                sealed_hex: to_hex(&r.sealed),
            })?;
        }
    }
    Ok(done)
}

pub(super) fn prune_versions(cx: &mut WriteCx<'_>, keep: u32, limit: usize) -> Result<u64> {
    let keep = i64::from(keep.max(1));
    let deleted = cx
        .conn
        .prepare_cached(
            "DELETE FROM versions WHERE rowid IN (
                 SELECT v.rowid FROM versions v JOIN secrets s ON s.id = v.secret_id
                 WHERE v.version + ?1 <= s.version LIMIT ?2)",
        )
        .and_then(|mut stmt| stmt.execute(params![keep, limit_sql(limit)]))
        .db("prune superseded versions")?;
    Ok(deleted as u64)
}

pub(super) fn destroy_unreferenced_deks(
    cx: &mut WriteCx<'_>,
    keep: &[DekId],
    limit: usize,
) -> Result<Vec<DestroyedDek>> {
    let keep: HashSet<DekId> = keep.iter().copied().collect();
    let found = query_all(
        cx.conn,
        "SELECT d.id, d.account_id FROM deks d
         WHERE NOT EXISTS (SELECT 1 FROM versions v WHERE v.dek_id = d.id)",
        [],
        "find unreferenced deks",
        |row| {
            Ok(DestroyedDek {
                dek_id: DekId::from_bytes(id_col(row, 0, "deks.id")?),
                account_id: AccountId::from_bytes(id_col(row, 1, "deks.account_id")?),
            })
        },
    )?;
    let destroy: Vec<DestroyedDek> = found
        .into_iter()
        .filter(|d| !keep.contains(&d.dek_id))
        .take(limit)
        .collect();
    if destroy.is_empty() {
        return Ok(destroy);
    }
    for d in &destroy {
        // The NOT EXISTS above ran in this transaction: nothing can reference it now.
        cx.conn
            .prepare_cached("DELETE FROM deks WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute([d.dek_id.as_bytes()]))
            .db("destroy dek")?;
        // Remembered for good, so no write that took it earlier can store it again.
        record_destroyed(cx, d.dek_id)?;
    }
    // No compaction here: each destruction compacting at once would push the log's base
    // forward as often as a tenant can force it, and edges behind it would resync from
    // snapshots without end. The lifecycle job compacts through the newest `DekDestroyed` at
    // most once per its minimum gap, past the entries carrying the DEKs destroyed since
    // (`compact_destroyed_deks`).
    for d in &destroy {
        cx.append(&Change::DekDestroyed {
            account_id: d.account_id,
            dek_id: d.dek_id,
        })?;
    }
    Ok(destroy)
}

/// Enters a destroyed DEK in `destroyed_deks`, not yet compacted past: the next
/// [`compact_destroyed_deks`] compacts the log past the entries carrying it. A replica applying
/// `DekDestroyed` does the same, so a relay compacts past destroyed DEKs on the same schedule
/// as the control plane (at most once per gap), not once per destruction.
pub(super) fn record_destroyed(cx: &WriteCx<'_>, dek: DekId) -> Result<()> {
    cx.conn
        .prepare_cached(
            "INSERT INTO destroyed_deks (id, destroyed, compacted) VALUES (?1, ?2, 0)
             ON CONFLICT (id) DO NOTHING",
        )
        .and_then(|mut stmt| stmt.execute(params![dek.as_bytes(), Timestamp::now().unix_micros()]))
        .db("record destroyed dek")?;
    Ok(())
}

/// Compacts the log through the newest entry that carries a DEK destroyed since the last such
/// compaction (its `DekPut`, a value sealed under it; `DekDestroyed` entries carry only its id
/// and stay), then marks those DEKs compacted. Returns the new base, `None` when nothing was
/// due or no retained entry carried them. A destroyed DEK is never stored again, so after it
/// no retained entry carries a destroyed DEK.
pub(super) fn compact_destroyed_deks(cx: &mut WriteCx<'_>) -> Result<Option<u64>> {
    let pending = query_all(
        cx.conn,
        "SELECT id FROM destroyed_deks WHERE compacted = 0",
        [],
        "list destroyed deks to compact",
        |row| Ok(DekId::from_bytes(id_col(row, 0, "destroyed_deks.id")?)),
    )?;
    if pending.is_empty() {
        return Ok(None);
    }
    let compacted = compact_past(cx, pending, u64::MAX)?;
    cx.conn
        .prepare_cached("UPDATE destroyed_deks SET compacted = 1 WHERE compacted = 0")
        .and_then(|mut stmt| stmt.execute([]))
        .db("mark destroyed deks compacted")?;
    Ok(compacted)
}

/// Compacts the log through the last entry before seq `before` that names one of `deks`
/// (their `DekPut`s, values sealed under them), so no retained entry carries them; returns
/// the new base if it moved. Entries are matched by the exact `"dek_id":"<hex>"` their JSON
/// holds; `DekDestroyed` entries, which carry only the id, are not. Edges behind the new base
/// catch up from a snapshot, which holds no destroyed DEK.
pub(super) fn compact_past(
    cx: &mut WriteCx<'_>,
    deks: impl IntoIterator<Item = DekId>,
    before: u64,
) -> Result<Option<u64>> {
    compact_past_matching(cx, before, &CompactionMatcher::deks(deks))
}

/// [`compact_past`] for a deleted account: also past its account grants (which carry its
/// replication key sealed to the nodes' keys for it), on the control plane and on a replica
/// applying the deletion alike (see [`CompactionMatcher`]).
pub(super) fn compact_past_account(
    cx: &mut WriteCx<'_>,
    account: AccountId,
    deks: impl IntoIterator<Item = DekId>,
    before: u64,
) -> Result<Option<u64>> {
    compact_past_matching(cx, before, &CompactionMatcher::account(account, deks))
}

/// Compacts the log through the newest entry before seq `before` that `matcher` says carries
/// what it looks for.
fn compact_past_matching(
    cx: &mut WriteCx<'_>,
    before: u64,
    matcher: &CompactionMatcher,
) -> Result<Option<u64>> {
    if matcher.is_empty() {
        return Ok(None);
    }
    let (base, _) = base_position(cx.conn)?;
    // One backward walk for all of them, stopping at the newest entry naming any: that is
    // the compaction point. It reads only the entries after it (usually the recent ones);
    // the whole retained log only when no entry names them.
    let mut stmt = cx
        .conn
        .prepare_cached(
            "SELECT seq, payload FROM changes WHERE seq > ?1 AND seq < ?2 ORDER BY seq DESC",
        )
        .db("find entries naming a dek")?;
    let mut rows = stmt
        .query(params![
            i64::try_from(base).unwrap_or(i64::MAX),
            i64::try_from(before).unwrap_or(i64::MAX)
        ])
        .db("find entries naming a dek")?;
    let mut through = base;
    while let Some(row) = rows.next().db("find entries naming a dek")? {
        let payload = row
            .get_ref(1)
            .db("find entries naming a dek")?
            .as_bytes()
            .map_err(|_| StorageError::Corrupted("a change payload is not a blob".into()))?;
        if matcher.carries(payload) {
            let seq: i64 = row.get(0).db("find entries naming a dek")?;
            through = u64::try_from(seq).unwrap_or(base);
            break;
        }
    }
    drop(rows);
    drop(stmt);
    if through > base {
        replication::ensure_cluster_id(cx)?;
        replication::compact_log(cx, through)?;
        return Ok(Some(through));
    }
    Ok(None)
}
