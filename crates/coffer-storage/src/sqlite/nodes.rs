//! Edge nodes: the operator's registry of the nodes that may read the replication feed. Node
//! rows are instance-level (no account), and every change to one is logged, so that relays learn
//! which node tokens to accept (`NodePut` carries the token's HMAC, never the token).

use coffer_types::{Timestamp, TokenId};
use rusqlite::{Connection, Row, params};

use super::codec::{
    Constraint, DbResultExt, col, constraint, db_error, id_col, opt_ts_col, query_all, query_opt,
    to_hex, ts_col,
};
use super::writer::WriteCx;
use crate::{Change, Entity, NodeRecord, Result, StorageError};

// The column list and its decoder change together: the decoder reads by position.
macro_rules! node_cols {
    () => {
        "id, name, hash, created, revoked"
    };
}

fn node_from_row(row: &Row<'_>) -> Result<NodeRecord> {
    Ok(NodeRecord {
        id: TokenId::from_bytes(id_col(row, 0, "nodes.id")?),
        name: col(row, 1, "nodes.name")?,
        hash: col(row, 2, "nodes.hash")?,
        created: ts_col(row, 3, "nodes.created")?,
        revoked: opt_ts_col(row, 4, "nodes.revoked")?,
    })
}

pub(super) fn get_node(conn: &Connection, id: TokenId) -> Result<Option<NodeRecord>> {
    query_opt(
        conn,
        concat!("SELECT ", node_cols!(), " FROM nodes WHERE id = ?1"),
        [id.as_bytes()],
        "get node",
        node_from_row,
    )
}

pub(super) fn list_nodes(conn: &Connection) -> Result<Vec<NodeRecord>> {
    query_all(
        conn,
        concat!("SELECT ", node_cols!(), " FROM nodes ORDER BY created, id"),
        [],
        "list nodes",
        node_from_row,
    )
}

/// Runs one cached statement; constraint violations are translated by `on_constraint` (the
/// others, and every other failure, become `Unavailable`).
fn execute(
    cx: &WriteCx<'_>,
    sql: &'static str,
    params: impl rusqlite::Params,
    context: &'static str,
    on_constraint: impl FnOnce(Constraint) -> Option<StorageError>,
) -> Result<usize> {
    let mut stmt = cx.conn.prepare_cached(sql).db(context)?;
    stmt.execute(params).map_err(|e| {
        constraint(&e)
            .and_then(on_constraint)
            .unwrap_or_else(|| db_error(context, &e))
    })
}

fn name_taken(name: &str) -> StorageError {
    StorageError::NameTaken {
        entity: Entity::Node,
        name: name.to_owned(),
    }
}

pub(super) fn create_node(cx: &mut WriteCx<'_>, node: &NodeRecord) -> Result<()> {
    if node.revoked.is_some() {
        // Its `NodePut` would tell relays to accept a token that must not work.
        return Err(StorageError::Invalid("a new node must not be revoked"));
    }
    let taken = query_opt(
        cx.conn,
        "SELECT 1 FROM nodes WHERE name = ?1 AND revoked IS NULL",
        [node.name.as_str()],
        "check node name",
        |_| Ok(()),
    )?;
    if taken.is_some() {
        return Err(name_taken(&node.name));
    }
    execute(
        cx,
        "INSERT INTO nodes (id, name, hash, created, revoked) VALUES (?1, ?2, ?3, ?4, NULL)",
        params![
            node.id.as_bytes(),
            node.name,
            node.hash,
            node.created.unix_micros(),
        ],
        "create node",
        |c| match c {
            Constraint::PrimaryKey => Some(StorageError::AlreadyExists(Entity::Node)),
            // Only the partial index on active names is unique besides the key; checked above,
            // but stated here too.
            Constraint::Unique => Some(name_taken(&node.name)),
            Constraint::ForeignKey | Constraint::Other => None,
        },
    )?;
    // The HMAC only: the token itself never reaches storage.
    cx.append(&Change::NodePut {
        node_id: node.id,
        name: node.name.clone(),
        hash_hex: to_hex(node.hash),
    })
}

pub(super) fn revoke_node(cx: &mut WriteCx<'_>, id: TokenId, at: Timestamp) -> Result<NodeRecord> {
    let node = get_node(cx.conn, id)?.ok_or(StorageError::NotFound(Entity::Node))?;
    if node.revoked.is_some() {
        return Err(StorageError::AlreadyRevoked);
    }
    // The writer runs one job at a time, so the row is as just read; the guard restates it.
    let changed = execute(
        cx,
        "UPDATE nodes SET revoked = ?1 WHERE id = ?2 AND revoked IS NULL",
        params![at.unix_micros(), id.as_bytes()],
        "revoke node",
        |_| None,
    )?;
    if changed != 1 {
        return Err(StorageError::AlreadyRevoked);
    }
    cx.append(&Change::NodeRevoked { node_id: id })?;
    Ok(NodeRecord {
        revoked: Some(at),
        ..node
    })
}
