//! Replication keys (RK), node public keys and grants: what lets an edge open the keys the
//! feed carries without ever holding the KEK, and the revocation that rotates them. Storage
//! sees only opaque wrapped bytes here, as everywhere. Accounts' own replication keys (ARK)
//! are in `ark.rs`.

use coffer_storage::{
    AuditEntry, Change, DekRecord, Entity, NodeGrant, NodeRecord, REPLICATED_KEY_PURPOSES,
    REPLICATION_KEY_PURPOSE_PREFIX, Result, RkRotation, RkWrap, StorageError, WrappedKeyRecord,
    rk_kek_id,
};
use coffer_types::{DekId, Timestamp, TokenId};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStorage;
use crate::db::{DbResultExt, bytes_col, col, u32_col, u64_col};
use crate::key_versions::current_rk_version;
use crate::keys::{
    DEK_COLS, dek_from_row, put_instance_key_in, read_instance_key, rewrap_deks, rk_wrap_cols,
};
use crate::nodes::node_key_row;
use crate::write::WriteTx;

fn purpose(version: u32) -> String {
    format!("{REPLICATION_KEY_PURPOSE_PREFIX}{version}")
}

pub(crate) fn grant_from_row(row: &Row) -> Result<NodeGrant> {
    Ok(NodeGrant {
        node_id: TokenId::from_bytes(bytes_col(row, 0, "node_grants.node_id")?),
        rk_version: u32_col(row, 1, "node_grants.rk_version")?,
        ephemeral_public: bytes_col(row, 2, "node_grants.ephemeral")?,
        sealed: col(row, 3, "node_grants.sealed")?,
    })
}

/// Refuses work done under a replication key that is no longer the current one.
async fn check_current(c: &impl GenericClient, version: u32) -> Result<()> {
    if current_rk_version(c).await? == Some(version) {
        Ok(())
    } else {
        Err(StorageError::Conflict)
    }
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

async fn insert_grant(w: &mut WriteTx<'_>, grant: &NodeGrant) -> Result<()> {
    let stmt = w
        .tx()
        .prepare_cached(
            "INSERT INTO node_grants (node_id, rk_version, ephemeral, sealed)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (node_id, rk_version) DO UPDATE
                 SET ephemeral = excluded.ephemeral, sealed = excluded.sealed",
        )
        .await
        .db("store node grant")?;
    w.tx()
        .execute(
            &stmt,
            &[
                &grant.node_id.as_bytes().as_slice(),
                &i64::from(grant.rk_version),
                &grant.ephemeral_public.as_slice(),
                &grant.sealed,
            ],
        )
        .await
        .db("store node grant")?;
    w.append(&Change::NodeKeyGrant {
        node_id: grant.node_id,
        rk_version: grant.rk_version,
        ephemeral_public_hex: hex::encode(grant.ephemeral_public),
        sealed_hex: hex::encode(&grant.sealed),
    })
    .await
}

pub(crate) async fn latest_replication_key(
    s: &PgStorage,
) -> Result<Option<(u32, WrappedKeyRecord)>> {
    s.read_snapshot(|tx| -> crate::tx::TxFuture<'_, _> {
        Box::pin(async move {
            let Some(version) = current_rk_version(tx).await? else {
                return Ok(None);
            };
            let key = read_instance_key(tx, &purpose(version))
                .await?
                .ok_or_else(|| {
                    StorageError::Corrupted(format!("replication key {version} vanished"))
                })?;
            Ok(Some((version, key)))
        })
    })
    .await
}

pub(crate) async fn instance_key_rk(s: &PgStorage, purpose: &str) -> Result<Option<RkWrap>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached("SELECT rk_version, rk_wrapped FROM instance_keys WHERE purpose = $1")
        .await
        .db("instance key rk wrap")?;
    Ok(c.query_opt(&stmt, &[&purpose])
        .await
        .db("instance key rk wrap")?
        .map(|row| rk_wrap_cols(&row, 0, "instance_keys.rk_version"))
        .transpose()?
        .flatten())
}

pub(crate) async fn list_deks(s: &PgStorage) -> Result<Vec<DekRecord>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(&format!("SELECT {DEK_COLS} FROM deks ORDER BY id"))
        .await
        .db("list deks")?;
    c.query(&stmt, &[])
        .await
        .db("list deks")?
        .iter()
        .map(dek_from_row)
        .collect()
}

pub(crate) async fn backfill_rk_wraps(
    s: &PgStorage,
    version: u32,
    deks: Vec<(DekId, Vec<u8>)>,
    instance_keys: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    s.write(&[], move |w| {
        Box::pin(async move {
            check_current(w.tx(), version).await?;
            for (id, wrapped) in &deks {
                w.tx()
                    .execute(
                        "UPDATE deks SET rk_version = $1, rk_wrapped = $2
                         WHERE id = $3 AND rk_version IS NULL",
                        &[&i64::from(version), wrapped, &id.as_bytes().as_slice()],
                    )
                    .await
                    .db("backfill dek rk wrap")?;
            }
            for (purpose, wrapped) in &instance_keys {
                check_replicated(purpose)?;
                w.tx()
                    .execute(
                        "UPDATE instance_keys SET rk_version = $1, rk_wrapped = $2
                         WHERE purpose = $3 AND rk_version IS NULL",
                        &[&i64::from(version), wrapped, purpose],
                    )
                    .await
                    .db("backfill instance key rk wrap")?;
            }
            // Appends nothing: edges made by an older version resync from a snapshot.
            Ok(())
        })
    })
    .await
}

pub(crate) async fn register_node_key(
    s: &PgStorage,
    node: TokenId,
    public_key: [u8; 32],
    grant: NodeGrant,
    audit: &[AuditEntry],
) -> Result<bool> {
    if grant.node_id != node {
        return Err(StorageError::Invalid("a grant for another node"));
    }
    s.write(audit, move |w| {
        Box::pin(async move {
            let (revoked, known) = node_key_row(w.tx(), node).await?;
            if revoked.is_some() {
                return Err(StorageError::AlreadyRevoked);
            }
            match known {
                Some(known) if known == public_key => return Ok(false),
                Some(_) => return Err(StorageError::AlreadyExists(Entity::NodeKey)),
                None => {}
            }
            // A key is never shared between nodes, revoked ones included, nor with a key
            // registered for an account (see SQLite's node_keys.rs).
            let taken: bool = col(
                &w.tx()
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM nodes WHERE public_key = $1 AND id <> $2)
                             OR EXISTS (SELECT 1 FROM account_node_keys WHERE public_key = $1)",
                        &[&public_key.as_slice(), &node.as_bytes().as_slice()],
                    )
                    .await
                    .db("check node key")?,
                0,
                "node key taken",
            )?;
            if taken {
                return Err(StorageError::AlreadyExists(Entity::NodeKey));
            }
            check_current(w.tx(), grant.rk_version).await?;
            w.tx()
                .execute(
                    "UPDATE nodes SET public_key = $1 WHERE id = $2",
                    &[&public_key.as_slice(), &node.as_bytes().as_slice()],
                )
                .await
                .db("record node key")?;
            insert_grant(w, &grant).await?;
            Ok(true)
        })
    })
    .await
}

pub(crate) async fn node_public_keys(s: &PgStorage) -> Result<Vec<(TokenId, [u8; 32])>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT id, public_key FROM nodes
             WHERE revoked IS NULL AND public_key IS NOT NULL ORDER BY id",
        )
        .await
        .db("node public keys")?;
    c.query(&stmt, &[])
        .await
        .db("node public keys")?
        .iter()
        .map(|row| {
            Ok((
                TokenId::from_bytes(bytes_col(row, 0, "nodes.id")?),
                bytes_col(row, 1, "nodes.public_key")?,
            ))
        })
        .collect()
}

pub(crate) async fn node_grant(
    s: &PgStorage,
    node: TokenId,
    version: u32,
) -> Result<Option<NodeGrant>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT node_id, rk_version, ephemeral, sealed FROM node_grants
             WHERE node_id = $1 AND rk_version = $2",
        )
        .await
        .db("node grant")?;
    c.query_opt(&stmt, &[&node.as_bytes().as_slice(), &i64::from(version)])
        .await
        .db("node grant")?
        .map(|row| grant_from_row(&row))
        .transpose()
}

pub(crate) async fn grants_of_version(s: &PgStorage, version: u32) -> Result<Vec<NodeGrant>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT node_id, rk_version, ephemeral, sealed FROM node_grants
             WHERE rk_version = $1 ORDER BY node_id",
        )
        .await
        .db("grants of version")?;
    c.query(&stmt, &[&i64::from(version)])
        .await
        .db("grants of version")?
        .iter()
        .map(grant_from_row)
        .collect()
}

pub(crate) async fn revoke_node_rotating(
    s: &PgStorage,
    id: TokenId,
    at: Timestamp,
    rotation: RkRotation,
    audit: &[AuditEntry],
) -> Result<NodeRecord> {
    s.write(audit, move |w| {
        Box::pin(async move {
            let current = current_rk_version(w.tx()).await?;
            if current.and_then(|v| v.checked_add(1)) != Some(rotation.version) {
                return Err(StorageError::Conflict);
            }
            let node = crate::nodes::revoke_in(w, id, at).await?;
            let stored =
                put_instance_key_in(w.tx(), &purpose(rotation.version), &rotation.key).await?;
            if stored.id != rotation.key.id {
                return Err(StorageError::Conflict);
            }
            for grant in &rotation.grants {
                if grant.rk_version != rotation.version || grant.node_id == id {
                    return Err(StorageError::Invalid(
                        "a rotation's grants must be of its version and not to the revoked node",
                    ));
                }
                insert_grant(w, grant).await?;
            }
            for (purpose, wrapped) in &rotation.instance_keys {
                check_replicated(purpose)?;
                let key =
                    read_instance_key(w.tx(), purpose)
                        .await?
                        .ok_or(StorageError::Invalid(
                            "rewrap of an instance key that is not stored",
                        ))?;
                w.tx()
                    .execute(
                        "UPDATE instance_keys SET rk_version = $1, rk_wrapped = $2
                         WHERE purpose = $3",
                        &[&i64::from(rotation.version), wrapped, purpose],
                    )
                    .await
                    .db("rewrap instance key")?;
                w.append(&Change::InstanceKeyPut {
                    purpose: purpose.clone(),
                    key_id: key.id,
                    kek_id: rk_kek_id(rotation.version),
                    wrapped_hex: hex::encode(wrapped),
                })
                .await?;
            }
            rewrap_deks(w, &rotation.deks, rotation.version, None).await?;
            for account in &rotation.accounts {
                crate::ark::rotate(w, account).await?;
            }
            // Every DEK must now be under the new key (or its account's new ARK version): one
            // made meanwhile would still open with what the revoked node held. The DEKs of an
            // account left out (its KEK unavailable) keep their ARK wrap.
            let left = u64_col(
                &w.tx()
                    .query_one(
                        "SELECT count(*) FROM deks
                         WHERE NOT rk_account AND rk_version IS DISTINCT FROM $1",
                        &[&i64::from(rotation.version)],
                    )
                    .await
                    .db("count deks left")?,
                0,
                "count",
            )?;
            if left != 0 {
                return Err(StorageError::Conflict);
            }
            Ok(node)
        })
    })
    .await
}
