//! Replication keys, node public keys and grants: what lets an edge open the keys the feed
//! carries without ever holding the KEK. Storage sees only opaque wrapped bytes here, as
//! everywhere: the wrapping and sealing are core's and crypto's.

use coffer_types::{DekId, Timestamp, TokenId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::codec::{DbResultExt, col, id_col, query_all, query_opt, to_hex};
use super::key_versions::rk_version;
use super::reads;
use super::writer::WriteCx;
use super::{nodes, writes};
use crate::{
    Change, Entity, NodeGrant, NodeRecord, REPLICATED_KEY_PURPOSES, REPLICATION_KEY_PURPOSE_PREFIX,
    Result, RkRotation, RkWrap, StorageError, WrappedKeyRecord, rk_kek_id,
};

fn purpose(version: u32) -> String {
    format!("{REPLICATION_KEY_PURPOSE_PREFIX}{version}")
}

pub(super) fn latest_replication_key(conn: &Connection) -> Result<Option<(u32, WrappedKeyRecord)>> {
    let Some(version) = rk_version(conn)? else {
        return Ok(None);
    };
    let key = reads::get_instance_key(conn, &purpose(version))?
        .ok_or_else(|| StorageError::Corrupted(format!("replication key {version} vanished")))?;
    Ok(Some((version, key)))
}

pub(super) fn instance_key_rk(conn: &Connection, purpose: &str) -> Result<Option<RkWrap>> {
    query_opt(
        conn,
        "SELECT rk_version, rk_wrapped FROM instance_keys WHERE purpose = ?1",
        [purpose],
        "instance key rk wrap",
        |row| reads::rk_wrap_cols(row, 0, "instance_keys.rk_version"),
    )
    .map(Option::flatten)
}

/// Refuses work done under a replication key that is no longer the current one.
fn check_current(conn: &Connection, version: u32) -> Result<()> {
    if rk_version(conn)? == Some(version) {
        Ok(())
    } else {
        Err(StorageError::Conflict)
    }
}

pub(super) fn backfill(
    cx: &mut WriteCx<'_>,
    version: u32,
    deks: &[(DekId, Vec<u8>)],
    instance_keys: &[(String, Vec<u8>)],
) -> Result<()> {
    check_current(cx.conn, version)?;
    for (id, wrapped) in deks {
        cx.conn
            .prepare_cached(
                "UPDATE deks SET rk_version = ?1, rk_wrapped = ?2
                 WHERE id = ?3 AND rk_version IS NULL",
            )
            .and_then(|mut stmt| stmt.execute(params![version, wrapped, id.as_bytes()]))
            .db("backfill dek rk wrap")?;
    }
    for (purpose, wrapped) in instance_keys {
        check_replicated(purpose)?;
        cx.conn
            .prepare_cached(
                "UPDATE instance_keys SET rk_version = ?1, rk_wrapped = ?2
                 WHERE purpose = ?3 AND rk_version IS NULL",
            )
            .and_then(|mut stmt| stmt.execute(params![version, wrapped, purpose]))
            .db("backfill instance key rk wrap")?;
    }
    Ok(())
}

fn check_replicated(purpose: &str) -> Result<()> {
    if REPLICATED_KEY_PURPOSES.contains(&purpose) {
        Ok(())
    } else {
        Err(StorageError::Invalid(
            "only the replicated instance keys get replication-key wraps",
        ))
    }
}

fn insert_grant(cx: &mut WriteCx<'_>, grant: &NodeGrant) -> Result<()> {
    cx.conn
        .prepare_cached(
            "INSERT INTO node_grants (node_id, rk_version, ephemeral, sealed)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (node_id, rk_version) DO UPDATE
                 SET ephemeral = excluded.ephemeral, sealed = excluded.sealed",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                grant.node_id.as_bytes(),
                grant.rk_version,
                grant.ephemeral_public,
                grant.sealed
            ])
        })
        .db("store node grant")?;
    cx.append(&Change::NodeKeyGrant {
        node_id: grant.node_id,
        rk_version: grant.rk_version,
        ephemeral_public_hex: to_hex(grant.ephemeral_public),
        sealed_hex: to_hex(&grant.sealed),
    })
}

pub(super) fn register(
    cx: &mut WriteCx<'_>,
    node: TokenId,
    public_key: [u8; 32],
    grant: &NodeGrant,
) -> Result<bool> {
    if grant.node_id != node {
        return Err(StorageError::Invalid("a grant for another node"));
    }
    let row: Option<(Option<i64>, Option<Vec<u8>>)> = cx
        .conn
        .prepare_cached("SELECT revoked, public_key FROM nodes WHERE id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([node.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .db("read node key")?;
    let (revoked, known) = row.ok_or(StorageError::NotFound(Entity::Node))?;
    if revoked.is_some() {
        return Err(StorageError::AlreadyRevoked);
    }
    match known {
        Some(known) if known == public_key => return Ok(false),
        Some(_) => return Err(StorageError::AlreadyExists(Entity::NodeKey)),
        None => {}
    }
    // A key is never shared between nodes, revoked ones included: grants sealed to it open
    // with one private key, so a second node with the same key (a cloned edge image, a
    // revoked node's data dir enrolled again) would hand the revoked one every new grant.
    // Nor between a node key and a key registered for an account: the account grants sealed
    // to that key need a node key besides, and one private key must not stand for both.
    let taken: bool = cx
        .conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM nodes WHERE public_key = ?1 AND id != ?2)
                 OR EXISTS (SELECT 1 FROM account_node_keys WHERE public_key = ?1)",
        )
        .and_then(|mut stmt| stmt.query_row(params![public_key, node.as_bytes()], |r| r.get(0)))
        .db("check node key")?;
    if taken {
        return Err(StorageError::AlreadyExists(Entity::NodeKey));
    }
    check_current(cx.conn, grant.rk_version)?;
    cx.conn
        .prepare_cached("UPDATE nodes SET public_key = ?1 WHERE id = ?2")
        .and_then(|mut stmt| stmt.execute(params![public_key, node.as_bytes()]))
        .db("record node key")?;
    insert_grant(cx, grant)?;
    Ok(true)
}

pub(super) fn node_public_keys(conn: &Connection) -> Result<Vec<(TokenId, [u8; 32])>> {
    query_all(
        conn,
        "SELECT id, public_key FROM nodes
         WHERE revoked IS NULL AND public_key IS NOT NULL ORDER BY id",
        [],
        "node public keys",
        |row| {
            let key: Vec<u8> = col(row, 1, "nodes.public_key")?;
            let key = key
                .try_into()
                .map_err(|_| StorageError::Corrupted("nodes.public_key: not 32 bytes".into()))?;
            Ok((TokenId::from_bytes(id_col(row, 0, "nodes.id")?), key))
        },
    )
}

pub(super) fn grant_from_row(row: &Row<'_>) -> Result<NodeGrant> {
    let version: i64 = col(row, 1, "node_grants.rk_version")?;
    let ephemeral: Vec<u8> = col(row, 2, "node_grants.ephemeral")?;
    Ok(NodeGrant {
        node_id: TokenId::from_bytes(id_col(row, 0, "node_grants.node_id")?),
        rk_version: u32::try_from(version)
            .map_err(|_| StorageError::Corrupted("node_grants.rk_version out of range".into()))?,
        ephemeral_public: ephemeral
            .try_into()
            .map_err(|_| StorageError::Corrupted("node_grants.ephemeral: not 32 bytes".into()))?,
        sealed: col(row, 3, "node_grants.sealed")?,
    })
}

pub(super) fn node_grant(
    conn: &Connection,
    node: TokenId,
    version: u32,
) -> Result<Option<NodeGrant>> {
    query_opt(
        conn,
        "SELECT node_id, rk_version, ephemeral, sealed FROM node_grants
         WHERE node_id = ?1 AND rk_version = ?2",
        params![node.as_bytes(), version],
        "node grant",
        grant_from_row,
    )
}

pub(super) fn grants_of_version(conn: &Connection, version: u32) -> Result<Vec<NodeGrant>> {
    query_all(
        conn,
        "SELECT node_id, rk_version, ephemeral, sealed FROM node_grants
         WHERE rk_version = ?1 ORDER BY node_id",
        [version],
        "grants of version",
        grant_from_row,
    )
}

pub(super) fn revoke_rotating(
    cx: &mut WriteCx<'_>,
    id: TokenId,
    at: Timestamp,
    rotation: &RkRotation,
) -> Result<NodeRecord> {
    let current = rk_version(cx.conn)?;
    if current.and_then(|v| v.checked_add(1)) != Some(rotation.version) {
        return Err(StorageError::Conflict);
    }
    let node = nodes::revoke_node(cx, id, at)?;
    let stored = writes::put_instance_key_if_absent(cx, &purpose(rotation.version), &rotation.key)?;
    if stored.id != rotation.key.id {
        return Err(StorageError::Conflict);
    }
    for grant in &rotation.grants {
        if grant.rk_version != rotation.version || grant.node_id == id {
            return Err(StorageError::Invalid(
                "a rotation's grants must be of its version and not to the revoked node",
            ));
        }
        insert_grant(cx, grant)?;
    }
    for (purpose, wrapped) in &rotation.instance_keys {
        check_replicated(purpose)?;
        let key = reads::get_instance_key(cx.conn, purpose)?.ok_or(StorageError::Invalid(
            "rewrap of an instance key that is not stored",
        ))?;
        cx.conn
            .prepare_cached(
                "UPDATE instance_keys SET rk_version = ?1, rk_wrapped = ?2 WHERE purpose = ?3",
            )
            .and_then(|mut stmt| stmt.execute(params![rotation.version, wrapped, purpose]))
            .db("rewrap instance key")?;
        cx.append(&Change::InstanceKeyPut {
            purpose: purpose.clone(),
            key_id: key.id,
            kek_id: rk_kek_id(rotation.version),
            wrapped_hex: to_hex(wrapped),
        })?;
    }
    super::deks::rewrap_deks(cx, &rotation.deks, rotation.version, None)?;
    for account in &rotation.accounts {
        super::account_keys::rotate(cx, account)?;
    }
    // Every DEK must now be under the new key (or its account's new ARK version, checked
    // above): one made meanwhile would still be readable with what the revoked node held. The
    // DEKs of an account left out of the rotation (its KEK unavailable) keep their ARK wrap.
    let left = query_opt(
        cx.conn,
        "SELECT count(*) FROM deks WHERE rk_account = 0 AND rk_version IS NOT ?1",
        [rotation.version],
        "count deks left",
        |row| col::<i64>(row, 0, "count"),
    )?
    .unwrap_or(0);
    if left != 0 {
        return Err(StorageError::Conflict);
    }
    Ok(node)
}
