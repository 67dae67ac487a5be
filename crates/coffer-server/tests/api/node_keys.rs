//! `PUT /replication/v1/node-key`: an edge registers its X25519 public key with its node
//! token and is granted the replication key through the feed; bad input is a 4xx in the v4
//! envelope that writes nothing. Revoking a node that registered a key rotates the
//! replication key and grants the new version to the remaining nodes only.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use coffer_api::ErrorCode;
use coffer_crypto::NodeKey;
use coffer_types::TokenId;
use serde_json::json;

use crate::support::*;

const NODE_KEY: &str = "/replication/v1/node-key";

fn public_hex(dir: &tempfile::TempDir, name: &str) -> String {
    let key = NodeKey::create(&dir.path().join(name)).unwrap();
    hex::encode(key.public_key().as_bytes())
}

async fn register(h: &Harness, token: &str, body: serde_json::Value) -> Resp {
    h.send_as(
        Method::PUT,
        NODE_KEY,
        Some(&format!("Bearer {token}")),
        Some(&body),
    )
    .await
}

#[tokio::test]
async fn a_node_registers_its_key_once_and_is_granted_the_replication_key() {
    let h = Harness::new().await;
    h.coffer.storage().ensure_cluster_id().await.unwrap();
    let node = h.create_node("edge-a").await;
    let id: TokenId = node.id.parse().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let mine = public_hex(&keys, "a");

    let head = h.change_head().await;
    let r = register(&h, &node.token, json!({ "public_key": mine })).await;
    assert_eq!(assert_ok(&r)["registered"], true);
    assert_eq!(h.change_head().await, head + 1, "one NodeKeyGrant entry");
    let grant = h.coffer.storage().node_grant(id, 1).await.unwrap();
    assert!(grant.is_some(), "the grant of version 1 is stored");

    // The same key again: answered, nothing written.
    let r = register(&h, &node.token, json!({ "public_key": mine })).await;
    assert_eq!(assert_ok(&r)["registered"], false);
    assert_eq!(h.change_head().await, head + 1);

    // Another key for the same node (someone else holding this node's token): refused.
    let theirs = public_hex(&keys, "b");
    let r = register(&h, &node.token, json!({ "public_key": theirs })).await;
    assert_err(&r, ErrorCode::NodeKeyConflict, "first registration wins");
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(h.change_head().await, head + 1, "a refusal writes nothing");
    // ... but is audited in the operator's log: fixed words, the key's fingerprint, never the
    // key.
    let refused = refused_registrations(&h).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    let theirs_key = coffer_crypto::NodePublicKey::parse(&hex::decode(&theirs).unwrap()).unwrap();
    assert!(
        refused[0].contains(&theirs_key.fingerprint()),
        "{}",
        refused[0]
    );
    assert!(refused[0].contains(&node.id), "{}", refused[0]);
    assert!(
        refused[0].contains("another key is registered"),
        "{}",
        refused[0]
    );
    assert!(!refused[0].contains(&theirs), "{}", refused[0]);
}

/// The payloads of the refused key registrations audited in the operator's log.
async fn refused_registrations(h: &Harness) -> Vec<String> {
    let operator = h.account.parse().unwrap();
    h.coffer
        .storage()
        .audit_entries(operator, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.action == "register_key" && r.entry.outcome == "failure")
        .map(|r| String::from_utf8(r.entry.payload).unwrap())
        .collect()
}

#[tokio::test]
async fn malformed_keys_and_wrong_tokens_are_refused_in_the_envelope() {
    let h = Harness::new().await;
    h.coffer.storage().ensure_cluster_id().await.unwrap();
    let node = h.create_node("edge-a").await;
    let head = h.change_head().await;
    for (what, body) in [
        ("not hex", json!({ "public_key": "zz" })),
        ("31 bytes", json!({ "public_key": "07".repeat(31) })),
        ("33 bytes", json!({ "public_key": "07".repeat(33) })),
        (
            "a low-order point",
            json!({ "public_key": "00".repeat(32) }),
        ),
    ] {
        let r = register(&h, &node.token, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text());
        assert_err(&r, ErrorCode::InvalidNodeKey, "public_key");
    }
    let r = register(&h, &node.token, json!({ "key": "00" })).await;
    assert_err(&r, ErrorCode::MalformedJson, "public_key");
    // Refused keys are audited (a body that does not parse never reaches core), once per
    // kind of refusal within the window, so a node token looping bad keys cannot flood the
    // log; with no fingerprint, since none of them is a key.
    let refused = refused_registrations(&h).await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].contains("not 64 hex digits"), "{}", refused[0]);
    assert!(
        refused[1].contains("not the canonical encoding"),
        "{}",
        refused[1]
    );
    for payload in &refused {
        assert!(!payload.contains("sha256:"), "{payload}");
    }
    for _ in 0..20 {
        let r = register(&h, &node.token, json!({ "public_key": "zz" })).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(
        refused_registrations(&h).await.len(),
        2,
        "repeats not audited"
    );
    assert_eq!(h.coffer.unaudited_key_refusals(), 22, "but counted");

    let keys = tempfile::tempdir().unwrap();
    let body = json!({ "public_key": public_hex(&keys, "a") });
    // An API token is the wrong kind; no token, or a revoked node's, is refused.
    let r = register(&h, &h.token, body.clone()).await;
    assert_err(&r, ErrorCode::WrongTokenKind, "node token");
    let r = h.send_as(Method::PUT, NODE_KEY, None, Some(&body)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let revoked = h.create_node("revoked").await;
    assert_ok(
        &h.raw_abs(
            Method::DELETE,
            &nodes_uri(Some(&revoked.id)),
            None,
            Body::empty(),
        )
        .await,
    );
    let head = head + 2;
    let r = register(&h, &revoked.token, body).await;
    assert_err(&r, ErrorCode::NodeRevoked, "revoked");
    assert_eq!(h.change_head().await, head, "refusals write nothing");
}

#[tokio::test]
async fn revoking_a_node_with_a_key_rotates_the_replication_key_for_the_others() {
    let h = Harness::new().await;
    h.coffer.storage().ensure_cluster_id().await.unwrap();
    let (a, b, quiet) = (
        h.create_node("edge-a").await,
        h.create_node("edge-b").await,
        h.create_node("never-registered").await,
    );
    let keys = tempfile::tempdir().unwrap();
    for (n, name) in [(&a, "a"), (&b, "b")] {
        let r = register(
            &h,
            &n.token,
            json!({ "public_key": public_hex(&keys, name) }),
        )
        .await;
        assert_ok(&r);
    }
    let storage = h.coffer.storage();
    // A node that never registered held nothing: no rotation.
    assert_ok(
        &h.raw_abs(
            Method::DELETE,
            &nodes_uri(Some(&quiet.id)),
            None,
            Body::empty(),
        )
        .await,
    );
    assert_eq!(
        storage.latest_replication_key().await.unwrap().unwrap().0,
        1
    );

    assert_ok(
        &h.raw_abs(Method::DELETE, &nodes_uri(Some(&a.id)), None, Body::empty())
            .await,
    );
    assert_eq!(
        storage.latest_replication_key().await.unwrap().unwrap().0,
        2
    );
    let (a_id, b_id): (TokenId, TokenId) = (a.id.parse().unwrap(), b.id.parse().unwrap());
    assert!(storage.node_grant(b_id, 2).await.unwrap().is_some());
    assert!(storage.node_grant(a_id, 2).await.unwrap().is_none());
    // Every DEK and replicated instance key is wrapped by the new version.
    for dek in storage.list_deks().await.unwrap() {
        assert_eq!(dek.rk.unwrap().version, 2);
    }
    for purpose in coffer_storage::REPLICATED_KEY_PURPOSES {
        assert_eq!(
            storage
                .instance_key_rk(purpose)
                .await
                .unwrap()
                .unwrap()
                .version,
            2
        );
    }
}

/// No two nodes share a key, revoked ones included: grants sealed to a key open with one
/// private key, so a revoked node's key registered again (its data dir enrolled under a new
/// node, a cloned edge image) would hand the revoked holder every new grant.
#[tokio::test]
async fn a_key_another_node_registered_is_refused_even_after_its_revocation() {
    let h = Harness::new().await;
    h.coffer.storage().ensure_cluster_id().await.unwrap();
    let (a, b, c) = (
        h.create_node("edge-a").await,
        h.create_node("edge-b").await,
        h.create_node("edge-c").await,
    );
    let keys = tempfile::tempdir().unwrap();
    let shared = public_hex(&keys, "a");
    assert_ok(&register(&h, &a.token, json!({ "public_key": shared })).await);

    let head = h.change_head().await;
    let r = register(&h, &b.token, json!({ "public_key": shared })).await;
    assert_err(&r, ErrorCode::NodeKeyConflict, "no two nodes share a key");
    assert_eq!(h.change_head().await, head, "a refusal writes nothing");

    assert_ok(
        &h.raw_abs(Method::DELETE, &nodes_uri(Some(&a.id)), None, Body::empty())
            .await,
    );
    let head = h.change_head().await;
    let r = register(&h, &c.token, json!({ "public_key": shared })).await;
    assert_err(&r, ErrorCode::NodeKeyConflict, "possibly revoked");
    assert_eq!(h.change_head().await, head, "a refusal writes nothing");
    // A key of its own is accepted.
    let own = public_hex(&keys, "c");
    assert_eq!(
        assert_ok(&register(&h, &c.token, json!({ "public_key": own })).await)["registered"],
        true
    );
}
