//! Replication keys, node public keys and grants: what edges that hold no KEK are given.

use std::sync::Arc;

use coffer_types::{DekId, TokenId};

use super::fixtures::{account_record, all_changes, assert_chain, id_bytes, ts, wrapped_key};
use super::replication::{split_snapshot, take_snapshot};
use crate::{
    Change, DekRecord, Entity, NodeGrant, NodeRecord, REPLICATED_KEY_PURPOSES,
    REPLICATION_KEY_PURPOSE_PREFIX, RkRotation, RkWrap, Storage, StorageError,
};

async fn node(s: &dyn Storage, name: &str) -> TokenId {
    let id = TokenId::from_bytes(id_bytes());
    s.create_node(
        NodeRecord {
            id,
            name: name.to_owned(),
            hash: [7; 32],
            created: ts(1),
            revoked: None,
        },
        &[],
    )
    .await
    .unwrap();
    id
}

fn grant(node: TokenId, version: u32, tag: u8) -> NodeGrant {
    NodeGrant {
        node_id: node,
        rk_version: version,
        ephemeral_public: [tag; 32],
        sealed: vec![tag; 60],
    }
}

async fn put_rk(s: &dyn Storage, version: u32) {
    s.put_instance_key_if_absent(
        &format!("{REPLICATION_KEY_PURPOSE_PREFIX}{version}"),
        wrapped_key(40 + version as u8),
    )
    .await
    .unwrap();
}

async fn head(s: &dyn Storage) -> u64 {
    s.change_head().await.unwrap()
}

pub(super) async fn node_keys_register_once_with_a_grant_of_the_current_key(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = node(s, "a").await;
    assert!(s.latest_replication_key().await.unwrap().is_none());
    // No replication key yet: no grant can be current.
    assert!(matches!(
        s.register_node_key(a, [1; 32], grant(a, 1, 1), &[]).await,
        Err(StorageError::Conflict)
    ));
    put_rk(s, 1).await;
    put_rk(s, 2).await;
    assert_eq!(s.latest_replication_key().await.unwrap().unwrap().0, 2);
    // A grant of a version that is not the current one.
    assert!(matches!(
        s.register_node_key(a, [1; 32], grant(a, 1, 1), &[]).await,
        Err(StorageError::Conflict)
    ));
    let before = head(s).await;
    assert!(
        s.register_node_key(a, [1; 32], grant(a, 2, 1), &[])
            .await
            .unwrap()
    );
    assert_eq!(head(s).await, before + 1);
    let log = all_changes(s).await;
    assert_chain(&log);
    assert_eq!(
        log.last().unwrap().change().unwrap(),
        Change::NodeKeyGrant {
            node_id: a,
            rk_version: 2,
            ephemeral_public_hex: "01".repeat(32),
            sealed_hex: "01".repeat(60),
        }
    );
    assert_eq!(s.node_grant(a, 2).await.unwrap(), Some(grant(a, 2, 1)));
    assert_eq!(s.grants_of_version(2).await.unwrap(), vec![grant(a, 2, 1)]);
    // The same key again: nothing written.
    assert!(
        !s.register_node_key(a, [1; 32], grant(a, 2, 9), &[])
            .await
            .unwrap()
    );
    assert_eq!(head(s).await, before + 1);
    assert_eq!(s.node_grant(a, 2).await.unwrap(), Some(grant(a, 2, 1)));
    // Another key: refused, first registration wins.
    assert!(matches!(
        s.register_node_key(a, [2; 32], grant(a, 2, 2), &[]).await,
        Err(StorageError::AlreadyExists(Entity::NodeKey))
    ));
    // A grant naming another node, an unknown node, a revoked node.
    let b = node(s, "b").await;
    assert!(matches!(
        s.register_node_key(b, [3; 32], grant(a, 2, 3), &[]).await,
        Err(StorageError::Invalid(_))
    ));
    let unknown = TokenId::from_bytes(id_bytes());
    assert!(matches!(
        s.register_node_key(unknown, [3; 32], grant(unknown, 2, 3), &[])
            .await,
        Err(StorageError::NotFound(Entity::Node))
    ));
    s.revoke_node(b, ts(5), &[]).await.unwrap();
    let at = head(s).await;
    assert!(matches!(
        s.register_node_key(b, [3; 32], grant(b, 2, 3), &[]).await,
        Err(StorageError::AlreadyRevoked)
    ));
    assert_eq!(head(s).await, at, "refusals write nothing");
    assert_eq!(s.node_public_keys().await.unwrap(), vec![(a, [1; 32])]);
}

pub(super) async fn revocation_rotates_every_replicated_wrap_in_one_write(s: Arc<dyn Storage>) {
    let s = &*s;
    s.ensure_cluster_id().await.unwrap();
    put_rk(s, 1).await;
    for (n, purpose) in REPLICATED_KEY_PURPOSES.into_iter().enumerate() {
        s.put_instance_key_if_absent(purpose, wrapped_key(n as u8 + 20))
            .await
            .unwrap();
    }
    let account = account_record("acme");
    s.create_account(account.clone(), &[]).await.unwrap();
    let dek = |tag: u8, version: u32| DekRecord {
        account_id: account.id,
        key: wrapped_key(tag),
        rk: Some(RkWrap {
            version,
            wrapped: vec![tag; 60],
            ark: false,
        }),
    };
    let first = dek(1, 1);
    let before = head(s).await;
    s.put_dek(first.clone()).await.unwrap();
    // The feed carries the replication-key wrap, never the KEK's.
    let log = all_changes(s).await;
    assert_eq!(log.len() as u64, before + 1);
    assert_eq!(
        log.last().unwrap().change().unwrap(),
        Change::DekPut {
            account_id: account.id,
            dek_id: first.key.id,
            kek_id: "rk:1".into(),
            wrapped_hex: "01".repeat(60),
        }
    );
    // A DEK without an RK wrap (stored before replication keys existed) is backfilled.
    let legacy = DekRecord {
        rk: None,
        ..dek(2, 1)
    };
    s.put_dek(legacy.clone()).await.unwrap();
    let at = head(s).await;
    s.backfill_rk_wraps(
        1,
        vec![(legacy.key.id, vec![2; 60])],
        REPLICATED_KEY_PURPOSES
            .iter()
            .map(|p| ((*p).to_owned(), vec![3; 60]))
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(head(s).await, at, "a backfill appends nothing");
    assert_eq!(
        s.get_dek(legacy.key.id).await.unwrap().unwrap().rk,
        Some(RkWrap {
            version: 1,
            wrapped: vec![2; 60],
            ark: false,
        })
    );

    let (a, b) = (node(s, "a").await, node(s, "b").await);
    s.register_node_key(a, [1; 32], grant(a, 1, 1), &[])
        .await
        .unwrap();
    s.register_node_key(b, [2; 32], grant(b, 1, 2), &[])
        .await
        .unwrap();
    let rotation = |deks: Vec<(DekId, Vec<u8>)>, version: u32| RkRotation {
        version,
        key: wrapped_key(50),
        grants: vec![grant(b, version, 5)],
        deks,
        accounts: Vec::new(),
        instance_keys: REPLICATED_KEY_PURPOSES
            .iter()
            .map(|p| ((*p).to_owned(), vec![6; 60]))
            .collect(),
    };
    let all = vec![(first.key.id, vec![8; 60]), (legacy.key.id, vec![9; 60])];
    // A DEK the rotation listed and the lifecycle job destroyed before it committed: nothing
    // to rewrap, and no reason to refuse the revocation.
    let gone = dek(7, 1);
    s.put_dek(gone.clone()).await.unwrap();
    let destroyed = s
        .destroy_unreferenced_deks(vec![first.key.id, legacy.key.id], 100)
        .await
        .unwrap();
    assert_eq!(destroyed.len(), 1);
    let mut listed = all.clone();
    listed.push((gone.key.id, vec![7; 60]));
    let at = head(s).await;
    // A rotation that misses a DEK, or skips a version: refused, nothing written.
    for bad in [
        rotation(vec![(first.key.id, vec![8; 60])], 2),
        rotation(all.clone(), 3),
    ] {
        assert!(matches!(
            s.revoke_node_rotating(a, ts(9), bad, &[]).await,
            Err(StorageError::Conflict)
        ));
    }
    assert_eq!(head(s).await, at);
    assert!(s.get_node(a).await.unwrap().unwrap().revoked.is_none());
    assert_eq!(s.latest_replication_key().await.unwrap().unwrap().0, 1);

    let revoked = s
        .revoke_node_rotating(a, ts(9), rotation(listed, 2), &[])
        .await
        .unwrap();
    assert!(
        s.get_dek(gone.key.id).await.unwrap().is_none(),
        "stays destroyed"
    );
    assert_eq!(revoked.revoked, Some(ts(9)));
    assert_eq!(s.latest_replication_key().await.unwrap().unwrap().0, 2);
    let log = all_changes(s).await;
    assert_chain(&log);
    let appended: Vec<Change> = log[at as usize..]
        .iter()
        .map(|r| r.change().unwrap())
        .collect();
    assert_eq!(appended.len(), 1 + 1 + 2 + 2);
    assert_eq!(appended[0], Change::NodeRevoked { node_id: a });
    assert!(matches!(
        &appended[1],
        Change::NodeKeyGrant { node_id, rk_version: 2, .. } if *node_id == b
    ));
    for c in &appended[2..] {
        match c {
            Change::InstanceKeyPut { kek_id, .. } | Change::DekPut { kek_id, .. } => {
                assert_eq!(kek_id, "rk:2");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for (id, wrapped) in &all {
        let stored = s.get_dek(*id).await.unwrap().unwrap();
        assert_eq!(
            stored.rk,
            Some(RkWrap {
                version: 2,
                wrapped: wrapped.clone(),
                ark: false,
            })
        );
        assert_eq!(
            stored.key.kek_id,
            "kek-".to_owned() + &stored.key.wrapped[0].to_string(),
            "the KEK wrap stays"
        );
    }
    // A DEK made under the replaced key is refused: it would reach the feed openable with
    // what the revoked node held.
    assert!(matches!(
        s.put_dek(dek(3, 1)).await,
        Err(StorageError::Conflict)
    ));
    s.put_dek(dek(4, 2)).await.unwrap();

    // Snapshots carry RK wraps only, and the grants of the nodes in service.
    let (_, _, _, items) = split_snapshot(take_snapshot(s).await.unwrap());
    let mut grants = Vec::new();
    for item in &items {
        match item {
            Change::DekPut { kek_id, .. } | Change::InstanceKeyPut { kek_id, .. } => {
                assert_eq!(kek_id, "rk:2", "{item:?}");
            }
            Change::NodeKeyGrant {
                node_id,
                rk_version,
                ..
            } => grants.push((*node_id, *rk_version)),
            _ => {}
        }
    }
    grants.sort();
    assert_eq!(grants, vec![(b, 1), (b, 2)]);
}
