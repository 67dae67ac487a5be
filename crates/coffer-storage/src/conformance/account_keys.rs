//! Account replication keys (ARKs), the nodes' keys for one account, and account grants.

use std::sync::Arc;

use coffer_types::{AccountId, DekId, TokenId};

use super::fixtures::{
    account_record, all_changes, assert_chain, id_bytes, retained_changes, ts, wrapped_key,
};
use super::replication::{split_snapshot, take_snapshot};
use crate::{
    AccountGrant, ArkRotation, Change, DekRecord, Entity, NodeAccountKey, NodeGrant, NodeRecord,
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

async fn register_node_key(s: &dyn Storage, node: TokenId, tag: u8) {
    s.register_node_key(
        node,
        [tag; 32],
        NodeGrant {
            node_id: node,
            rk_version: 1,
            ephemeral_public: [tag; 32],
            sealed: vec![tag; 60],
        },
        &[],
    )
    .await
    .unwrap();
}

fn agrant(account: AccountId, node: TokenId, version: u32, tag: u8) -> AccountGrant {
    AccountGrant {
        account_id: account,
        node_id: node,
        ark_version: version,
        ephemeral_public: [tag; 32],
        sealed: vec![tag; 60],
    }
}

fn dek(account: AccountId, tag: u8, version: u32, ark: bool) -> DekRecord {
    DekRecord {
        account_id: account,
        key: wrapped_key(tag),
        rk: Some(RkWrap {
            version,
            wrapped: vec![tag; 60],
            ark,
        }),
    }
}

async fn setup(s: &dyn Storage) -> (AccountId, AccountId) {
    s.ensure_cluster_id().await.unwrap();
    s.put_instance_key_if_absent(
        &format!("{REPLICATION_KEY_PURPOSE_PREFIX}1"),
        wrapped_key(41),
    )
    .await
    .unwrap();
    let (a, b) = (account_record("own-kek"), account_record("other"));
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();
    (a.id, b.id)
}

fn dek_put_kek_id(log: &[Change], id: DekId) -> Option<String> {
    log.iter().rev().find_map(|c| match c {
        Change::DekPut { dek_id, kek_id, .. } if *dek_id == id => Some(kek_id.clone()),
        _ => None,
    })
}

/// The first ARK version retires the account's DEKs; from then on the account stores only DEKs
/// its current ARK version wraps, and the feed and snapshots carry them as `ark:<n>`.
pub(super) async fn an_account_replication_key_retires_old_deks_and_binds_new_ones(
    s: Arc<dyn Storage>,
) {
    let s = &*s;
    let (a, b) = setup(s).await;
    let old = dek(a, 1, 1, false);
    s.put_dek(old.clone()).await.unwrap();
    let other = dek(b, 2, 1, false);
    s.put_dek(other.clone()).await.unwrap();
    assert_eq!(s.latest_dek(a).await.unwrap().unwrap().key.id, old.key.id);
    // No ARK yet: an ARK wrap is refused, and versions start at 1.
    assert!(matches!(
        s.put_dek(dek(a, 3, 1, true)).await,
        Err(StorageError::Conflict)
    ));
    for version in [0, 2] {
        assert!(matches!(
            s.put_account_replication_key(a, version, wrapped_key(60), Vec::new(), &[])
                .await,
            Err(StorageError::Conflict)
        ));
    }
    assert!(matches!(
        s.put_account_replication_key(
            AccountId::from_bytes(id_bytes()),
            1,
            wrapped_key(60),
            Vec::new(),
            &[]
        )
        .await,
        Err(StorageError::NotFound(Entity::Account))
    ));
    let first = wrapped_key(60);
    s.put_account_replication_key(a, 1, first.clone(), Vec::new(), &[])
        .await
        .unwrap();
    assert_eq!(
        s.account_replication_keys().await.unwrap(),
        vec![(a, 1, first.clone())]
    );
    // Its DEK under the instance RK never seals again; the other account's is untouched.
    assert!(s.latest_dek(a).await.unwrap().is_none());
    assert_eq!(s.latest_dek(b).await.unwrap().unwrap().key.id, other.key.id);
    // A new DEK under the instance RK (a write that took it before the ARK) is refused.
    assert!(matches!(
        s.put_dek(dek(a, 4, 1, false)).await,
        Err(StorageError::Conflict)
    ));
    assert!(matches!(
        s.put_dek(dek(a, 4, 2, true)).await,
        Err(StorageError::Conflict)
    ));
    let new = dek(a, 5, 1, true);
    s.put_dek(new.clone()).await.unwrap();
    assert_eq!(s.get_dek(new.key.id).await.unwrap(), Some(new.clone()));
    assert_eq!(s.latest_dek(a).await.unwrap(), Some(new.clone()));
    let log: Vec<Change> = all_changes(s)
        .await
        .iter()
        .map(|r| r.change().unwrap())
        .collect();
    assert_eq!(dek_put_kek_id(&log, new.key.id).as_deref(), Some("ark:1"));
    assert_eq!(dek_put_kek_id(&log, other.key.id).as_deref(), Some("rk:1"));
    let (_, _, _, items) = split_snapshot(take_snapshot(s).await.unwrap());
    assert_eq!(dek_put_kek_id(&items, new.key.id).as_deref(), Some("ark:1"));
    assert_eq!(dek_put_kek_id(&items, old.key.id).as_deref(), Some("rk:1"));
    // The next version is 2.
    let second = wrapped_key(61);
    s.put_account_replication_key(a, 2, second.clone(), Vec::new(), &[])
        .await
        .unwrap();
    assert_eq!(
        s.account_replication_key_versions(a).await.unwrap(),
        vec![(1, first), (2, second)]
    );
}

/// A node registers one key per account, never one in use elsewhere; its grant is of the
/// account's current ARK version and reaches the feed and snapshots as an account grant.
pub(super) async fn node_account_keys_register_once_and_are_granted_the_current_ark(
    s: Arc<dyn Storage>,
) {
    let s = &*s;
    let (a, b) = setup(s).await;
    let (n, m) = (node(s, "n").await, node(s, "m").await);
    // A node without a node key registers no key for an account: its grants would be sealed
    // to both.
    assert!(matches!(
        s.register_node_account_key(n, b, [2; 32], None, &[]).await,
        Err(StorageError::NotFound(Entity::NodeKey))
    ));
    register_node_key(s, n, 1).await;
    register_node_key(s, m, 7).await;
    // Without an ARK: no grant.
    assert!(matches!(
        s.register_node_account_key(n, b, [2; 32], Some(agrant(b, n, 1, 2)), &[])
            .await,
        Err(StorageError::Conflict)
    ));
    assert!(
        s.register_node_account_key(n, b, [2; 32], None, &[])
            .await
            .unwrap()
    );
    s.put_account_replication_key(a, 1, wrapped_key(60), Vec::new(), &[])
        .await
        .unwrap();
    // With one: a grant of its current version, to this node for this account.
    assert!(matches!(
        s.register_node_account_key(n, a, [3; 32], None, &[]).await,
        Err(StorageError::Conflict)
    ));
    assert!(matches!(
        s.register_node_account_key(n, a, [3; 32], Some(agrant(b, n, 1, 3)), &[])
            .await,
        Err(StorageError::Invalid(_))
    ));
    // A key in use as a node key or for another account is refused.
    for taken in [[1; 32], [2; 32]] {
        assert!(matches!(
            s.register_node_account_key(m, a, taken, Some(agrant(a, m, 1, 4)), &[])
                .await,
            Err(StorageError::AlreadyExists(Entity::NodeKey))
        ));
    }
    // Nor, the other way round, is a key registered for an account taken as a node key.
    let fresh = node(s, "fresh").await;
    assert!(matches!(
        s.register_node_key(
            fresh,
            [2; 32],
            NodeGrant {
                node_id: fresh,
                rk_version: 1,
                ephemeral_public: [2; 32],
                sealed: vec![2; 60],
            },
            &[],
        )
        .await,
        Err(StorageError::AlreadyExists(Entity::NodeKey))
    ));
    let before = s.change_head().await.unwrap();
    assert!(
        s.register_node_account_key(n, a, [3; 32], Some(agrant(a, n, 1, 3)), &[])
            .await
            .unwrap()
    );
    let log = all_changes(s).await;
    assert_chain(&log);
    assert_eq!(log.len() as u64, before + 1);
    assert_eq!(
        log.last().unwrap().change().unwrap(),
        Change::AccountKeyGrant {
            account_id: a,
            node_id: n,
            ark_version: 1,
            ephemeral_public_hex: "03".repeat(32),
            sealed_hex: "03".repeat(60),
        }
    );
    // The same key again writes nothing; another is refused (first registration wins).
    assert!(
        !s.register_node_account_key(n, a, [3; 32], Some(agrant(a, n, 1, 3)), &[])
            .await
            .unwrap()
    );
    assert!(matches!(
        s.register_node_account_key(n, a, [5; 32], Some(agrant(a, n, 1, 5)), &[])
            .await,
        Err(StorageError::AlreadyExists(Entity::NodeKey))
    ));
    assert_eq!(s.change_head().await.unwrap(), before + 1);
    assert_eq!(
        s.node_account_keys(a).await.unwrap(),
        vec![NodeAccountKey {
            node_id: n,
            account_key: [3; 32],
            node_key: [1; 32],
        }]
    );
    assert_eq!(
        s.account_grants(a, 1).await.unwrap(),
        vec![agrant(a, n, 1, 3)]
    );
    let (_, _, _, items) = split_snapshot(take_snapshot(s).await.unwrap());
    assert!(items.contains(&log.last().unwrap().change().unwrap()));
    // A revoked node's keys are no longer listed, nor its grants snapshotted.
    s.revoke_node(n, ts(9), &[]).await.unwrap();
    assert!(s.node_account_keys(a).await.unwrap().is_empty());
    let (_, _, _, items) = split_snapshot(take_snapshot(s).await.unwrap());
    assert!(
        !items
            .iter()
            .any(|c| matches!(c, Change::AccountKeyGrant { .. }))
    );
    assert!(matches!(
        s.register_node_account_key(n, b, [6; 32], None, &[]).await,
        Err(StorageError::AlreadyRevoked)
    ));
}

/// A node's revocation rotates every ARK it is given, with the account's DEKs, in its
/// transaction; one that leaves out a DEK of such an account is refused.
pub(super) async fn revocation_rotates_account_replication_keys(s: Arc<dyn Storage>) {
    let s = &*s;
    let (a, b) = setup(s).await;
    let (n, m) = (node(s, "n").await, node(s, "m").await);
    for (id, k) in [(n, 1), (m, 2)] {
        s.register_node_key(
            id,
            [k; 32],
            NodeGrant {
                node_id: id,
                rk_version: 1,
                ephemeral_public: [k; 32],
                sealed: vec![k; 60],
            },
            &[],
        )
        .await
        .unwrap();
    }
    s.put_account_replication_key(a, 1, wrapped_key(60), Vec::new(), &[])
        .await
        .unwrap();
    for (id, k) in [(n, 3), (m, 4)] {
        s.register_node_account_key(id, a, [k; 32], Some(agrant(a, id, 1, k)), &[])
            .await
            .unwrap();
    }
    let mine = dek(a, 5, 1, true);
    let theirs = dek(b, 6, 1, false);
    s.put_dek(mine.clone()).await.unwrap();
    s.put_dek(theirs.clone()).await.unwrap();
    // `b` gets an ARK too, granted to n, which the revocation leaves out (its KEK was
    // unavailable, say): its rotation is owed from then on.
    s.put_account_replication_key(b, 1, wrapped_key(63), Vec::new(), &[])
        .await
        .unwrap();
    s.register_node_account_key(n, b, [10; 32], Some(agrant(b, n, 1, 10)), &[])
        .await
        .unwrap();
    // A DEK of `b` under its ARK, stored before the revocation.
    let b_before = dek(b, 12, 1, true);
    s.put_dek(b_before.clone()).await.unwrap();
    assert!(s.accounts_owing_ark_rotation().await.unwrap().is_empty());
    let rotation = |accounts: Vec<ArkRotation>| RkRotation {
        version: 2,
        key: wrapped_key(42),
        grants: vec![NodeGrant {
            node_id: m,
            rk_version: 2,
            ephemeral_public: [9; 32],
            sealed: vec![9; 60],
        }],
        deks: vec![(theirs.key.id, vec![7; 60])],
        instance_keys: Vec::new(),
        accounts,
    };
    let next = wrapped_key(62);
    let ark = |deks: Vec<(DekId, Vec<u8>)>| ArkRotation {
        account_id: a,
        version: 2,
        key: next.clone(),
        grants: vec![agrant(a, m, 2, 8)],
        deks,
    };
    // The account's DEK left out: refused, nothing written.
    let at = s.change_head().await.unwrap();
    assert!(matches!(
        s.revoke_node_rotating(n, ts(5), rotation(vec![ark(Vec::new())]), &[])
            .await,
        Err(StorageError::Conflict)
    ));
    // An ARK DEK offered as an instance one: refused too.
    let mut wrong = rotation(Vec::new());
    wrong.deks.push((mine.key.id, vec![1; 60]));
    assert!(s.revoke_node_rotating(n, ts(5), wrong, &[]).await.is_err());
    assert_eq!(s.change_head().await.unwrap(), at);
    assert_eq!(
        s.account_replication_key_versions(a).await.unwrap().len(),
        1
    );
    s.revoke_node_rotating(
        n,
        ts(5),
        rotation(vec![ark(vec![(mine.key.id, vec![8; 60])])]),
        &[],
    )
    .await
    .unwrap();
    assert!(
        s.account_replication_keys()
            .await
            .unwrap()
            .contains(&(a, 2, next.clone()))
    );
    assert_eq!(
        s.get_dek(mine.key.id).await.unwrap().unwrap().rk,
        Some(RkWrap {
            version: 2,
            wrapped: vec![8; 60],
            ark: true
        })
    );
    assert!(s.latest_dek(a).await.unwrap().is_none(), "retired");
    assert_eq!(
        s.account_grants(a, 2).await.unwrap(),
        vec![agrant(a, m, 2, 8)]
    );
    let log: Vec<Change> = all_changes(s)
        .await
        .iter()
        .map(|r| r.change().unwrap())
        .collect();
    assert_eq!(dek_put_kek_id(&log, mine.key.id).as_deref(), Some("ark:2"));
    assert_eq!(dek_put_kek_id(&log, theirs.key.id).as_deref(), Some("rk:2"));
    assert!(log.contains(&Change::AccountKeyGrant {
        account_id: a,
        node_id: m,
        ark_version: 2,
        ephemeral_public_hex: "08".repeat(32),
        sealed_hex: "08".repeat(60),
    }));

    // `b`'s current version is granted to the revoked n: owed (`a`'s is not, rotated).
    assert_eq!(s.accounts_owing_ark_rotation().await.unwrap(), vec![b]);
    // Meanwhile no DEK under the owed version is stored, nor carried again by a write (a
    // write that took it before the revocation): the revoked node may hold that version.
    let at = s.change_head().await.unwrap();
    for carried in [dek(b, 13, 1, true), b_before.clone()] {
        assert!(
            matches!(s.put_dek(carried).await, Err(StorageError::Conflict)),
            "an ARK-wrapped DEK of an account owing a rotation is refused"
        );
    }
    assert_eq!(s.change_head().await.unwrap(), at);
    let owed = |grants: Vec<AccountGrant>| ArkRotation {
        account_id: b,
        version: 2,
        key: wrapped_key(64),
        grants,
        deks: Vec::new(),
    };
    // Never to a revoked node.
    assert!(matches!(
        s.rotate_account_replication_key(owed(vec![agrant(b, n, 2, 11)]), &[])
            .await,
        Err(StorageError::Invalid(_))
    ));
    s.rotate_account_replication_key(
        ArkRotation {
            deks: vec![(b_before.key.id, vec![12; 60])],
            ..owed(Vec::new())
        },
        &[],
    )
    .await
    .unwrap();
    assert!(s.accounts_owing_ark_rotation().await.unwrap().is_empty());
    // Once rotated, the account's DEKs under the new version are stored again.
    s.put_dek(dek(b, 14, 2, true)).await.unwrap();
    assert_eq!(
        s.account_replication_key_versions(b).await.unwrap().len(),
        2
    );
    // Only the next version: a stale rotation is refused.
    assert!(matches!(
        s.rotate_account_replication_key(owed(Vec::new()), &[])
            .await,
        Err(StorageError::Conflict)
    ));
}

/// Deleting the account removes its ARK versions, grants and node keys, and compacts the log
/// past every entry carrying its grants or DEKs.
pub(super) async fn account_delete_removes_its_replication_keys_and_grants(s: Arc<dyn Storage>) {
    let s = &*s;
    let (a, b) = setup(s).await;
    let n = node(s, "n").await;
    register_node_key(s, n, 1).await;
    s.put_account_replication_key(a, 1, wrapped_key(60), Vec::new(), &[])
        .await
        .unwrap();
    let kept = wrapped_key(61);
    s.put_account_replication_key(b, 1, kept.clone(), Vec::new(), &[])
        .await
        .unwrap();
    // The grant comes after the account's last DEK: compacting past its DEKs alone would
    // leave the grant in the log.
    s.put_dek(dek(a, 5, 1, true)).await.unwrap();
    s.register_node_account_key(n, a, [3; 32], Some(agrant(a, n, 1, 3)), &[])
        .await
        .unwrap();
    s.register_node_account_key(n, b, [4; 32], Some(agrant(b, n, 1, 4)), &[])
        .await
        .unwrap();
    // Later entries of another account, so compaction has something to keep.
    s.put_dek(dek(b, 6, 1, true)).await.unwrap();
    s.delete_account(a, &[]).await.unwrap();
    // A rotation prepared before the delete (a revocation's, an owed one) skips the account:
    // nothing of it is stored again, and the rotation is not refused.
    s.rotate_account_replication_key(
        ArkRotation {
            account_id: a,
            version: 2,
            key: wrapped_key(62),
            grants: vec![agrant(a, n, 2, 7)],
            deks: vec![(dek(a, 5, 1, true).key.id, vec![13; 60])],
        },
        &[],
    )
    .await
    .expect("a deleted account's rotation is skipped");
    assert_eq!(
        s.account_replication_keys().await.unwrap(),
        vec![(b, 1, kept)]
    );
    assert!(
        s.account_replication_key_versions(a)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.account_grants(a, 1).await.unwrap().is_empty());
    assert!(s.node_account_keys(a).await.unwrap().is_empty());
    assert_eq!(
        s.node_account_keys(b).await.unwrap(),
        vec![NodeAccountKey {
            node_id: n,
            account_key: [4; 32],
            node_key: [1; 32],
        }]
    );
    let (base, _, log) = retained_changes(s).await;
    assert!(base > 0, "the delete compacted the log");
    let log: Vec<Change> = log.iter().map(|r| r.change().unwrap()).collect();
    assert!(
        !log.iter().any(
            |c| matches!(c, Change::AccountKeyGrant { account_id, .. } if *account_id == a)
                || matches!(c, Change::DekPut { account_id, .. } if *account_id == a)
        ),
        "no retained entry carries the deleted account's grants or DEKs: {log:?}"
    );
    assert!(log.contains(&Change::AccountDeleted { account_id: a }));
    let (_, _, _, items) = split_snapshot(take_snapshot(s).await.unwrap());
    assert!(!items.iter().any(|c| c.account_id() == Some(a)));
}
