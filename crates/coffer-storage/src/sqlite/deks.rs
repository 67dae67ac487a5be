//! DEK rows: a DEK stored on its own, or carried by the write that first seals under it, with
//! the checks that keep a DEK the feed must not carry out of storage; and a revocation's
//! rewrap of DEKs by a new replication-key version.

use std::collections::HashSet;

use coffer_types::{AccountId, DekId};
use rusqlite::params;

use super::codec::{Constraint, DbResultExt, execute, id_col, query_opt, to_hex};
use super::key_versions::{ark_version, owes_rotation, rk_version};
use super::writer::WriteCx;
use crate::{Change, DekRecord, Entity, Result, StorageError, ark_kek_id, rk_kek_id};

pub(in crate::sqlite) fn put_dek(cx: &mut WriteCx<'_>, dek: &DekRecord) -> Result<()> {
    if insert_dek(cx, dek)? {
        Ok(())
    } else {
        Err(StorageError::AlreadyExists(Entity::Dek))
    }
}

/// Whether DEK `id` was destroyed (its id is remembered, `destroyed_deks`).
pub(in crate::sqlite) fn is_destroyed(conn: &rusqlite::Connection, id: &DekId) -> Result<bool> {
    Ok(query_opt(
        conn,
        "SELECT 1 FROM destroyed_deks WHERE id = ?1",
        [id.as_bytes()],
        "check destroyed dek",
        |_| Ok(()),
    )?
    .is_some())
}

/// Inserts `dek` unless a DEK with its id is stored; returns whether it inserted (and so
/// appended its `DekPut`).
fn insert_dek(cx: &mut WriteCx<'_>, dek: &DekRecord) -> Result<bool> {
    if let Some(rk) = &dek.rk {
        // A DEK wrapped by a replication key that a node's revocation has since replaced
        // would reach the feed openable with what the revoked node held: the caller retries
        // with a new DEK. Also when the DEK is already stored (and so rewrapped): a value
        // written after the revocation must not be sealed under a DEK the revoked node had.
        // An account with its own replication key (ARK) takes only DEKs its current version
        // wraps: one under the instance RK (taken before the ARK was made) would reach the
        // feed openable with keys that outlive the account.
        let ark = ark_version(cx.conn, dek.account_id)?;
        let current = if rk.ark {
            ark
        } else if ark.is_some() {
            None
        } else {
            rk_version(cx.conn)?
        };
        if current != Some(rk.version) {
            return Err(StorageError::Conflict);
        }
        // An account left out of a revocation (its KEK was unavailable) keeps its ARK version,
        // which the revoked node may hold, until the owed rotation is made: a write that took
        // a DEK under it before the revocation must not store a value under it afterwards.
        if rk.ark && owes_rotation(cx.conn, dek.account_id)? {
            return Err(StorageError::Conflict);
        }
    }
    // A DEK wrapped by a KEK version retired since the write took it (its key is destroyed):
    // the caller retries with a new DEK, which the active version wraps. Refused even when the
    // DEK is stored already (rewrapped): the retry costs one DEK, and the check stays simple.
    super::rewrap::refuse_retired(cx.conn, &dek.key.kek_id)?;
    // A destroyed DEK that a write took before its destruction: storing it again would bring
    // it back (with a new `DekPut`) after its `DekDestroyed`. The write retries with a fresh
    // DEK.
    if is_destroyed(cx.conn, &dek.key.id)? {
        return Err(StorageError::Conflict);
    }
    // A retired DEK never seals again (a store deleted with values, a revocation's rewrap,
    // an account given its own KEK): a write that took it before it was retired seals again
    // under a new one (with several processes on one database, one may keep it as its
    // current DEK for long after another retired it).
    if let Some(retired) = query_opt(
        cx.conn,
        "SELECT retired FROM deks WHERE id = ?1",
        [dek.key.id.as_bytes()],
        "check dek",
        |row| row.get::<_, bool>(0).db("check dek"),
    )? {
        if retired {
            return Err(StorageError::Conflict);
        }
        return Ok(false);
    }
    // Not stored (checked above, in this write's transaction): a plain insert.
    execute(
        cx.conn,
        "INSERT INTO deks
             (id, account_id, kek_id, wrapped, created, rk_version, rk_wrapped, rk_account)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            dek.key.id.as_bytes(),
            dek.account_id.as_bytes(),
            dek.key.kek_id,
            dek.key.wrapped,
            dek.key.created.unix_micros(),
            dek.rk.as_ref().map(|rk| rk.version),
            dek.rk.as_ref().map(|rk| &rk.wrapped),
            dek.rk.as_ref().is_some_and(|rk| rk.ark),
        ],
        "put dek",
        |c| (c == Constraint::ForeignKey).then_some(StorageError::NotFound(Entity::Account)),
    )?;
    // The feed carries the replication-key wrap, never the KEK's (a DEK without one comes
    // from a caller that has no replication key: tests of storage alone).
    let (kek_id, wrapped) = match &dek.rk {
        Some(rk) => (rk.kek_id(), &rk.wrapped),
        None => (dek.key.kek_id.clone(), &dek.key.wrapped),
    };
    cx.append(&Change::DekPut {
        account_id: dek.account_id,
        dek_id: dek.key.id,
        kek_id,
        wrapped_hex: to_hex(wrapped),
    })?;
    Ok(true)
}

/// Inserts the carried DEKs that are not stored yet, each once, in the order first carried.
pub(in crate::sqlite) fn insert_carried_deks<'a>(
    cx: &mut WriteCx<'_>,
    deks: impl IntoIterator<Item = &'a DekRecord>,
) -> Result<()> {
    let mut seen: HashSet<DekId> = HashSet::new();
    for dek in deks {
        if seen.insert(dek.key.id) {
            insert_dek(cx, dek)?;
        }
    }
    Ok(())
}

/// Rewraps each of `deks` by version `version` of a replication key (the RK wrap an edge
/// reads) and appends its `DekPut`: with `ark_of`, that account's ARK (`ark:<n>`; each DEK must
/// be the account's), else the instance RK (`rk:<n>`; each DEK must not be ARK-wrapped). A DEK
/// that is not found so is a `Conflict`, but for one destroyed since the rotation listed it
/// (the DEK lifecycle job runs beside a revocation): there is nothing left to rewrap, and
/// refusing would let destructions starve the revocation. Rewrapped because the old version
/// reached a revoked node: the DEK never seals again, and its values are re-sealed onto a DEK
/// made under the new version (`deks.retired`).
pub(super) fn rewrap_deks(
    cx: &mut WriteCx<'_>,
    deks: &[(DekId, Vec<u8>)],
    version: u32,
    ark_of: Option<AccountId>,
) -> Result<()> {
    for (dek, wrapped) in deks {
        let account = query_opt(
            cx.conn,
            "SELECT account_id FROM deks
             WHERE id = ?1 AND (CASE WHEN ?2 IS NULL THEN rk_account = 0 ELSE account_id = ?2 END)",
            params![dek.as_bytes(), ark_of.as_ref().map(AccountId::as_bytes)],
            "rewrap dek",
            |row| id_col(row, 0, "deks.account_id"),
        )?;
        let Some(account) = account else {
            if is_destroyed(cx.conn, dek)? {
                continue;
            }
            return Err(StorageError::Conflict);
        };
        cx.conn
            .prepare_cached(
                "UPDATE deks SET rk_version = ?1, rk_wrapped = ?2, rk_account = ?3, retired = 1
                 WHERE id = ?4",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![version, wrapped, ark_of.is_some(), dek.as_bytes()])
            })
            .db("rewrap dek")?;
        cx.append(&Change::DekPut {
            account_id: AccountId::from_bytes(account),
            dek_id: *dek,
            kek_id: match ark_of {
                Some(_) => ark_kek_id(version),
                None => rk_kek_id(version),
            },
            wrapped_hex: to_hex(wrapped),
        })?;
    }
    Ok(())
}
