//! Edge nodes: register, read, list, revoke.

#![allow(unused_imports)]

use coffer_storage::*;
use coffer_types::*;

use crate::{PgStorage, not_yet};

pub(crate) async fn create_node(
    s: &PgStorage,
    node: NodeRecord,
    audit: &[AuditEntry],
) -> Result<()> {
    let _ = s;
    let _ = node;
    let _ = audit;
    Err(not_yet("create_node"))
}

pub(crate) async fn get_node(s: &PgStorage, id: TokenId) -> Result<Option<NodeRecord>> {
    let _ = s;
    let _ = id;
    Err(not_yet("get_node"))
}

pub(crate) async fn list_nodes(s: &PgStorage) -> Result<Vec<NodeRecord>> {
    let _ = s;
    Err(not_yet("list_nodes"))
}

pub(crate) async fn revoke_node(
    s: &PgStorage,
    id: TokenId,
    at: Timestamp,
    audit: &[AuditEntry],
) -> Result<NodeRecord> {
    let _ = s;
    let _ = id;
    let _ = at;
    let _ = audit;
    Err(not_yet("revoke_node"))
}
