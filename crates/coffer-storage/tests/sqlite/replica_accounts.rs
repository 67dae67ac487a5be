//! A replica's account grants: they arrive in their own change variant (the older form, a
//! node grant naming an account, still reads as one), never touch the node grants, and leave
//! a relay's log with their account's deletion.

use coffer_storage::ArkStorage;
use coffer_storage::{
    AccountGrant, Change, NodeGrant, NodeRecord, REPLICATION_KEY_PURPOSE_PREFIX, SqliteStorage,
    Storage,
};
use coffer_types::{AccountId, TokenId};

use super::replica::{chained, copy_snapshot, key, open};
use super::{id, raw, ts, world};

fn grant(account: AccountId, node: TokenId, version: u32, tag: u8) -> AccountGrant {
    AccountGrant {
        account_id: account,
        node_id: node,
        ark_version: version,
        ephemeral_public: [tag; 32],
        sealed: vec![tag; 60],
    }
}

/// The account grants a replica's retained log carries.
fn logged_account_grants(replica: &SqliteStorage) -> Vec<(AccountId, u32)> {
    let conn = raw(replica.path());
    let mut stmt = conn
        .prepare("SELECT payload FROM changes ORDER BY seq")
        .unwrap();
    let payloads: Vec<Vec<u8>> = stmt
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    payloads
        .iter()
        .filter_map(|p| {
            let change: Change = serde_json::from_slice(p).unwrap();
            match change {
                Change::AccountKeyGrant {
                    account_id,
                    ark_version,
                    ..
                } => Some((account_id, ark_version)),
                _ => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_grants_have_their_own_variant_and_leave_a_relays_log_with_their_account() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(&dir.path().join("source.db"));
    source.ensure_cluster_id().await.unwrap();
    source
        .put_instance_key_if_absent(&format!("{REPLICATION_KEY_PURPOSE_PREFIX}1"), key(41))
        .await
        .unwrap();
    let (own, other) = (world(&source, "own").await, world(&source, "other").await);
    let node = TokenId::from_bytes(id());
    source
        .create_node(
            NodeRecord {
                id: node,
                name: "edge".into(),
                hash: [7; 32],
                created: ts(1),
                revoked: None,
            },
            &[],
        )
        .await
        .unwrap();
    let node_grant = NodeGrant {
        node_id: node,
        rk_version: 1,
        ephemeral_public: [1; 32],
        sealed: vec![1; 60],
    };
    source
        .register_node_key(node, [1; 32], node_grant.clone(), &[])
        .await
        .unwrap();
    source
        .put_account_replication_key(own.account, 1, key(60), Vec::new(), &[])
        .await
        .unwrap();
    source
        .register_node_account_key(
            node,
            own.account,
            [3; 32],
            Some(grant(own.account, node, 1, 3)),
            &[],
        )
        .await
        .unwrap();

    // A snapshot carries the grant as an account grant; the node's grant of RK 1 (the same
    // version number) is its own.
    let replica = open(&dir.path().join("relay.db"));
    copy_snapshot(&source, &replica).await.unwrap();
    assert_eq!(
        replica.account_grants(own.account, 1).await.unwrap(),
        vec![grant(own.account, node, 1, 3)]
    );
    assert_eq!(
        replica.node_grant(node, 1).await.unwrap(),
        Some(node_grant.clone())
    );

    // The feed: another account's grant of the same version as the node's grant, this
    // account's next grant, a later entry of the other account, then the account's deletion.
    let older = Change::AccountKeyGrant {
        account_id: other.account,
        node_id: node,
        ark_version: 1,
        ephemeral_public_hex: hex::encode([4; 32]),
        sealed_hex: hex::encode([4; 60]),
    };
    let newer = Change::AccountKeyGrant {
        account_id: own.account,
        node_id: node,
        ark_version: 2,
        ephemeral_public_hex: hex::encode([5; 32]),
        sealed_hex: hex::encode([5; 60]),
    };
    let later = Change::AccountPut {
        account_id: other.account,
        name: "other".into(),
    };
    let entries = chained(&replica.log_state().await.unwrap(), &[older, newer, later]);
    replica.apply_entries(entries).await.unwrap();
    assert_eq!(
        replica.account_grants(other.account, 1).await.unwrap(),
        vec![grant(other.account, node, 1, 4)]
    );
    assert_eq!(
        replica.account_grants(own.account, 2).await.unwrap(),
        vec![grant(own.account, node, 2, 5)]
    );
    assert_eq!(
        replica.node_grant(node, 1).await.unwrap(),
        Some(node_grant.clone()),
        "no account grant overwrites the node's grant"
    );
    assert!(logged_account_grants(&replica).contains(&(own.account, 2)));

    let deleted = Change::AccountDeleted {
        account_id: own.account,
    };
    let entries = chained(&replica.log_state().await.unwrap(), &[deleted]);
    replica.apply_entries(entries).await.unwrap();
    assert!(
        replica
            .account_grants(own.account, 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !logged_account_grants(&replica)
            .iter()
            .any(|(a, _)| *a == own.account),
        "the relay's log no longer serves the deleted account's grants"
    );
    assert_eq!(replica.node_grant(node, 1).await.unwrap(), Some(node_grant));
}
