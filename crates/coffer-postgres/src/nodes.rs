//! Edge nodes: the operator's registry of the nodes that may read the replication feed. Node
//! rows are instance-level (no account), and every change to one is logged, so that relays
//! learn which node tokens to accept (`NodePut` carries the token's HMAC, never the token).

use coffer_storage::{AuditEntry, Change, Entity, NodeRecord, Result, StorageError};
use coffer_types::{Timestamp, TokenId};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStorage;
use crate::db::{
    DbResultExt, Violation, bytes_col, col, db_error, opt_bytes_col, opt_ts_col, ts_col, violation,
};
use crate::write::WriteTx;

// The column list and its decoder change together: the decoder reads by position.
const NODE_COLS: &str = "id, name, hash, created, revoked";

fn node_from_row(row: &Row) -> Result<NodeRecord> {
    Ok(NodeRecord {
        id: TokenId::from_bytes(bytes_col(row, 0, "nodes.id")?),
        name: col(row, 1, "nodes.name")?,
        hash: bytes_col(row, 2, "nodes.hash")?,
        created: ts_col(row, 3, "nodes.created")?,
        revoked: opt_ts_col(row, 4, "nodes.revoked")?,
    })
}

pub(crate) async fn read_node(c: &impl GenericClient, id: TokenId) -> Result<Option<NodeRecord>> {
    let stmt = c
        .prepare_cached(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = $1"))
        .await
        .db("get node")?;
    c.query_opt(&stmt, &[&id.as_bytes().as_slice()])
        .await
        .db("get node")?
        .map(|row| node_from_row(&row))
        .transpose()
}

/// A node's revocation time and registered key, `NotFound(Node)` for an unknown one.
pub(crate) async fn node_key_row(
    c: &impl GenericClient,
    node: TokenId,
) -> Result<(Option<i64>, Option<[u8; 32]>)> {
    let stmt = c
        .prepare_cached("SELECT revoked, public_key FROM nodes WHERE id = $1")
        .await
        .db("read node key")?;
    let row = c
        .query_opt(&stmt, &[&node.as_bytes().as_slice()])
        .await
        .db("read node key")?
        .ok_or(StorageError::NotFound(Entity::Node))?;
    Ok((
        col(&row, 0, "nodes.revoked")?,
        opt_bytes_col(&row, 1, "nodes.public_key")?,
    ))
}

fn name_taken(name: &str) -> StorageError {
    StorageError::NameTaken {
        entity: Entity::Node,
        name: name.to_owned(),
    }
}

pub(crate) async fn create_node(
    s: &PgStorage,
    node: NodeRecord,
    audit: &[AuditEntry],
) -> Result<()> {
    if node.revoked.is_some() {
        // Its `NodePut` would tell relays to accept a token that must not work.
        return Err(StorageError::Invalid("a new node must not be revoked"));
    }
    s.write(audit, move |w| {
        Box::pin(async move {
            let taken = w
                .tx()
                .prepare_cached("SELECT 1 FROM nodes WHERE name = $1 AND revoked IS NULL")
                .await
                .db("check node name")?;
            if w.tx()
                .query_opt(&taken, &[&node.name])
                .await
                .db("check node name")?
                .is_some()
            {
                return Err(name_taken(&node.name));
            }
            let insert = w
                .tx()
                .prepare_cached(
                    "INSERT INTO nodes (id, name, hash, created, revoked)
                     VALUES ($1, $2, $3, $4, NULL)",
                )
                .await
                .db("create node")?;
            w.tx()
                .execute(
                    &insert,
                    &[
                        &node.id.as_bytes().as_slice(),
                        &node.name,
                        &node.hash.as_slice(),
                        &node.created.unix_micros(),
                    ],
                )
                .await
                .map_err(|e| match violation(&e) {
                    Some(Violation::Unique("nodes_pkey")) => {
                        StorageError::AlreadyExists(Entity::Node)
                    }
                    // Checked above, but stated here too.
                    Some(Violation::Unique("nodes_active_name")) => name_taken(&node.name),
                    _ => db_error("create node", &e),
                })?;
            // The HMAC only: the token itself never reaches storage.
            w.append(&Change::NodePut {
                node_id: node.id,
                name: node.name.clone(),
                hash_hex: hex::encode(node.hash),
            })
            .await
        })
    })
    .await
}

pub(crate) async fn get_node(s: &PgStorage, id: TokenId) -> Result<Option<NodeRecord>> {
    read_node(&s.client().await?, id).await
}

pub(crate) async fn list_nodes(s: &PgStorage) -> Result<Vec<NodeRecord>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {NODE_COLS} FROM nodes ORDER BY created, id"
        ))
        .await
        .db("list nodes")?;
    c.query(&stmt, &[])
        .await
        .db("list nodes")?
        .iter()
        .map(node_from_row)
        .collect()
}

/// Revokes node `id` at `at` in the caller's write, appending `NodeRevoked`; returns the
/// updated record. Also the first step of `revoke_node_rotating`.
pub(crate) async fn revoke_in(
    w: &mut WriteTx<'_>,
    id: TokenId,
    at: Timestamp,
) -> Result<NodeRecord> {
    let node = read_node(w.tx(), id)
        .await?
        .ok_or(StorageError::NotFound(Entity::Node))?;
    if node.revoked.is_some() {
        return Err(StorageError::AlreadyRevoked);
    }
    // Under the writer lock the row is as just read; the guard restates it.
    let changed = w
        .tx()
        .execute(
            "UPDATE nodes SET revoked = $1 WHERE id = $2 AND revoked IS NULL",
            &[&at.unix_micros(), &id.as_bytes().as_slice()],
        )
        .await
        .db("revoke node")?;
    if changed != 1 {
        return Err(StorageError::AlreadyRevoked);
    }
    w.append(&Change::NodeRevoked { node_id: id }).await?;
    Ok(NodeRecord {
        revoked: Some(at),
        ..node
    })
}

pub(crate) async fn revoke_node(
    s: &PgStorage,
    id: TokenId,
    at: Timestamp,
    audit: &[AuditEntry],
) -> Result<NodeRecord> {
    s.write(audit, move |w| Box::pin(revoke_in(w, id, at)))
        .await
}
