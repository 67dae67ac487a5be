//! Edge nodes: the instance-level registry of the nodes that may read the replication feed.

use std::collections::BTreeSet;
use std::sync::Arc;

use coffer_types::TokenId;
use tokio::task::JoinSet;

use super::audit::{assert_audit_chain, entry};
use super::fixtures::{account_record, all_changes, assert_head, id_bytes, ts};
use crate::{AuditEntry, Change, Entity, NodeRecord, Storage, StorageError};

/// An active node named `name`, created at `ts(created)`, with a hash that is unique to it.
fn node_record(name: &str, created: i64) -> NodeRecord {
    let id = id_bytes();
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(&id);
    hash[16..].copy_from_slice(&id_bytes());
    NodeRecord {
        id: TokenId::from_bytes(id),
        name: name.to_owned(),
        hash,
        created: ts(created),
        revoked: None,
    }
}

async fn create(s: &dyn Storage, name: &str, created: i64) -> NodeRecord {
    let node = node_record(name, created);
    s.create_node(node.clone(), &[])
        .await
        .expect("fixture: create_node");
    node
}

async fn stored(s: &dyn Storage, id: TokenId) -> Option<NodeRecord> {
    s.get_node(id).await.unwrap()
}

/// The changes appended since `head` (the whole log must chain).
async fn changes_since(s: &dyn Storage, head: u64) -> Vec<Change> {
    // From the base: deleting an account compacts the log past its DEKs' entries.
    let (base, base_hash, log) = super::fixtures::retained_changes(s).await;
    super::fixtures::assert_chain_from(base, base_hash, &log);
    assert!(base <= head, "compacted past {head}");
    log.iter()
        .filter(|r| r.seq > head)
        .map(|r| r.change().expect("a change that decodes"))
        .collect()
}

fn put_of(node: &NodeRecord) -> Change {
    Change::NodePut {
        node_id: node.id,
        name: node.name.clone(),
        hash_hex: hex::encode(node.hash),
    }
}

#[track_caller]
fn assert_err<T: std::fmt::Debug>(
    result: crate::Result<T>,
    expected: impl FnOnce(&StorageError) -> bool,
    what: &str,
) {
    match result {
        Err(e) if expected(&e) => {}
        other => panic!("{what}: unexpected {other:?}"),
    }
}

pub(super) async fn node_lifecycle(s: Arc<dyn Storage>) {
    let s = &*s;
    assert!(
        s.list_nodes().await.unwrap().is_empty(),
        "a fresh backend has no nodes"
    );
    let unknown = TokenId::from_bytes(id_bytes());
    assert_eq!(stored(s, unknown).await, None);

    let late = create(s, "edge-late", 30).await;
    // Three with one `created`: the id breaks the tie, whatever the insertion order.
    let mut tied = Vec::new();
    for i in 0..3 {
        tied.push(create(s, &format!("edge-tied-{i}"), 10).await);
    }
    let early = create(s, "edge.early_1", 5).await;
    assert_eq!(
        stored(s, early.id).await,
        Some(early.clone()),
        "every field as given"
    );

    let head = s.change_head().await.unwrap();
    let at = ts(40);
    let revoked = s.revoke_node(tied[1].id, at, &[]).await.unwrap();
    assert_eq!(
        revoked,
        NodeRecord {
            revoked: Some(at),
            ..tied[1].clone()
        },
        "revoke_node returns the record as updated"
    );
    assert_eq!(stored(s, tied[1].id).await, Some(revoked.clone()));
    tied[1] = revoked.clone();
    let after_revoke = s.change_head().await.unwrap();
    assert_eq!(after_revoke, head + 1, "a revocation appends one entry");

    tied.sort_by(|x, y| x.id.as_bytes().cmp(y.id.as_bytes()));
    let mut expected = vec![early.clone()];
    expected.extend(tied);
    expected.push(late.clone());
    assert_eq!(
        s.list_nodes().await.unwrap(),
        expected,
        "nodes list by `created`, then id; revoked ones included"
    );

    // Refusals write nothing.
    assert_err(
        s.revoke_node(revoked.id, ts(50), &[]).await,
        |e| matches!(e, StorageError::AlreadyRevoked),
        "revoking a revoked node",
    );
    assert_eq!(
        stored(s, revoked.id).await,
        Some(revoked.clone()),
        "the first revocation time stays"
    );
    assert_err(
        s.revoke_node(unknown, ts(50), &[]).await,
        |e| matches!(e, StorageError::NotFound(Entity::Node)),
        "revoking an unknown node",
    );
    let mut same_id = node_record("another-name", 60);
    same_id.id = late.id;
    assert_err(
        s.create_node(same_id, &[]).await,
        |e| matches!(e, StorageError::AlreadyExists(Entity::Node)),
        "a node with a used id",
    );
    assert_eq!(stored(s, late.id).await, Some(late.clone()));
    let mut born_revoked = node_record("born-revoked", 60);
    born_revoked.revoked = Some(ts(60));
    assert_err(
        s.create_node(born_revoked.clone(), &[]).await,
        |e| matches!(e, StorageError::Invalid(_)),
        "a new node that is already revoked",
    );
    assert_eq!(stored(s, born_revoked.id).await, None);
    assert_head(s, after_revoke, "refused node writes").await;

    // Nodes belong to the instance: no account's deletion touches them.
    let a = account_record("a");
    s.create_account(a.clone(), &[]).await.unwrap();
    s.delete_account(a.id, &[]).await.unwrap();
    assert_eq!(s.list_nodes().await.unwrap(), expected);
}

pub(super) async fn node_names_are_unique_among_active_nodes(s: Arc<dyn Storage>) {
    let s = &*s;
    let first = create(s, "edge-1", 1).await;
    let head = s.change_head().await.unwrap();

    let clash = node_record("edge-1", 2);
    match s.create_node(clash.clone(), &[]).await {
        Err(StorageError::NameTaken {
            entity: Entity::Node,
            name,
        }) => assert_eq!(name, "edge-1", "NameTaken carries the name"),
        other => panic!("a second active node named edge-1: unexpected {other:?}"),
    }
    assert_eq!(stored(s, clash.id).await, None);
    assert_head(s, head, "a create refused for its name").await;

    // Names compare exactly: another case or a longer name is another name.
    let upper = create(s, "EDGE-1", 3).await;
    let longer = create(s, "edge-1.fra", 3).await;

    // Once revoked, the name is free again, as many times as needed.
    s.revoke_node(first.id, ts(4), &[]).await.unwrap();
    let second = create(s, "edge-1", 5).await;
    assert_err(
        s.create_node(node_record("edge-1", 6), &[]).await,
        |e| {
            matches!(
                e,
                StorageError::NameTaken {
                    entity: Entity::Node,
                    ..
                }
            )
        },
        "the name of the active successor",
    );
    s.revoke_node(second.id, ts(7), &[]).await.unwrap();
    let third = create(s, "edge-1", 8).await;

    let listed = s.list_nodes().await.unwrap();
    let named: Vec<&NodeRecord> = listed.iter().filter(|n| n.name == "edge-1").collect();
    assert_eq!(named.len(), 3, "revoked nodes keep their name: {listed:?}");
    assert_eq!(
        named.iter().filter(|n| n.revoked.is_none()).count(),
        1,
        "one active node per name"
    );
    assert_eq!(stored(s, third.id).await, Some(third));
    assert_eq!(stored(s, upper.id).await, Some(upper));
    assert_eq!(stored(s, longer.id).await, Some(longer));
}

pub(super) async fn node_changes_are_logged(s: Arc<dyn Storage>) {
    let s = &*s;
    let head = s.change_head().await.unwrap();
    // Relays and edge caches are validated against `committed_head`: every node write must
    // move it before it is acknowledged.
    let mut position = s.committed_head();
    let mut moved = |what: &str| {
        let now = s.committed_head();
        assert!(now > position, "{what} must advance committed_head");
        position = now;
    };

    let a = create(s, "edge-a", 1).await;
    moved("create_node");
    let b = create(s, "edge-b", 2).await;
    moved("create_node");
    s.revoke_node(a.id, ts(3), &[]).await.unwrap();
    moved("revoke_node");

    assert_eq!(
        changes_since(s, head).await,
        vec![
            put_of(&a),
            put_of(&b),
            Change::NodeRevoked { node_id: a.id }
        ]
    );
    assert_eq!(
        changes_since(s, head).await[0].account_id(),
        None,
        "node changes belong to no account"
    );

    // The payloads' JSON form (what edges and relays parse).
    let log: Vec<serde_json::Value> = all_changes(s)
        .await
        .iter()
        .filter(|r| r.seq > head)
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect();
    let keys = |v: &serde_json::Value| -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    };
    let set = |k: &[&str]| -> BTreeSet<String> { k.iter().map(|s| (*s).to_owned()).collect() };
    assert_eq!(log[0]["type"], "node_put");
    assert_eq!(keys(&log[0]), set(&["type", "node_id", "name", "hash_hex"]));
    assert_eq!(log[0]["node_id"], a.id.to_string());
    assert_eq!(log[0]["name"], "edge-a");
    assert_eq!(log[0]["hash_hex"], hex::encode(a.hash));
    assert_eq!(log[2]["type"], "node_revoked");
    assert_eq!(keys(&log[2]), set(&["type", "node_id"]));
    assert_eq!(log[2]["node_id"], a.id.to_string());

    // Each hash appears once, as its node's hash_hex, and the raw bytes never.
    let raw: Vec<Vec<u8>> = all_changes(s)
        .await
        .into_iter()
        .map(|r| r.payload)
        .collect();
    for node in [&a, &b] {
        let needle = hex::encode(node.hash);
        let hits = raw
            .iter()
            .filter(|p| String::from_utf8_lossy(p).contains(&needle))
            .count();
        assert_eq!(hits, 1, "a node's hash is logged once, in its NodePut");
        assert!(
            !raw.iter().any(|p| p.windows(32).any(|w| w == node.hash)),
            "the raw hash bytes are never logged"
        );
    }
}

/// Audit entries carried by node writes: appended with the change, in the same transaction,
/// and not at all when the change fails (or when an entry is refused).
pub(super) async fn node_writes_append_audit_only_on_success(s: Arc<dyn Storage>) {
    let s = &*s;
    // Nodes have no account: the entries go to whichever chain they name (core: the
    // operator's account).
    let op = account_record("operator");
    s.create_account(op.clone(), &[]).await.unwrap();
    let id = op.id;
    let mut expected: Vec<AuditEntry> = Vec::new();

    let node = node_record("edge-1", 1);
    let e = [entry(id, "create", "node")];
    s.create_node(node.clone(), &e).await.unwrap();
    expected.extend(e);

    // Failures append none of their entries.
    let head = s.change_head().await.unwrap();
    let bad = [entry(id, "create", "must not appear")];
    assert!(s.create_node(node_record("edge-1", 2), &bad).await.is_err());
    assert!(
        s.revoke_node(TokenId::from_bytes(id_bytes()), ts(3), &bad)
            .await
            .is_err()
    );

    // A refused entry fails the write (fail closed): nothing of it is stored.
    let mut empty_action = entry(id, "", "refused");
    empty_action.action.clear();
    let refused = [empty_action];
    let fresh = node_record("edge-2", 4);
    assert_err(
        s.create_node(fresh.clone(), &refused).await,
        |e| matches!(e, StorageError::Invalid(_)),
        "create_node with an entry without action",
    );
    assert_eq!(stored(s, fresh.id).await, None);
    assert_err(
        s.revoke_node(node.id, ts(5), &refused).await,
        |e| matches!(e, StorageError::Invalid(_)),
        "revoke_node with an entry without action",
    );
    assert_eq!(stored(s, node.id).await, Some(node.clone()));
    assert_head(s, head, "refused node writes").await;

    let e = [entry(id, "revoke", "node")];
    s.revoke_node(node.id, ts(6), &e).await.unwrap();
    expected.extend(e);
    assert!(
        s.revoke_node(node.id, ts(7), &bad).await.is_err(),
        "AlreadyRevoked"
    );

    let records = assert_audit_chain(s, id).await;
    let got: Vec<AuditEntry> = records.into_iter().map(|r| r.entry).collect();
    assert_eq!(
        got, expected,
        "exactly the entries of the writes that succeeded, in order"
    );
}

pub(super) async fn concurrent_creates_of_one_node_name_admit_one(s: Arc<dyn Storage>) {
    const TASKS: usize = 16;
    let head = s.change_head().await.unwrap();
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let s = Arc::clone(&s);
        let node = node_record("edge-1", 1);
        tasks.spawn(async move { s.create_node(node.clone(), &[]).await.map(|()| node) });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            Ok(node) => winners.push(node),
            Err(StorageError::NameTaken {
                entity: Entity::Node,
                ..
            }) => {}
            Err(other) => panic!("racing create_node: unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins");
    let winner = winners.pop().unwrap();
    assert_eq!(s.list_nodes().await.unwrap(), vec![winner.clone()]);
    assert_eq!(changes_since(&*s, head).await, vec![put_of(&winner)]);
}
