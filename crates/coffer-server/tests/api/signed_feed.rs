//! The control plane signs what it publishes: every feed answer ends on an entry whose
//! checkpoint signature verifies under the instance's feed key (entries written before the key
//! existed included), and every snapshot ends with a signature over its digest.

use axum::http::StatusCode;
use coffer_replication::wire::{FeedAnswer, FeedBody, Frame, FrameDecoder};
use coffer_replication::{FeedKey, Position, Snapshot};

use crate::support::*;

async fn replicating() -> (Harness, IssuedNode, FeedKey) {
    let h = Harness::new().await;
    h.coffer.storage().ensure_cluster_id().await.unwrap();
    let node = h.create_node("edge-signed").await;
    let key = FeedKey::from_bytes(h.coffer.feed_public_key().expect("the control plane's key"));
    (h, node, key)
}

async fn cluster(h: &Harness) -> [u8; 16] {
    h.coffer
        .storage()
        .log_state()
        .await
        .unwrap()
        .cluster_id
        .unwrap()
}

#[tokio::test]
async fn every_feed_answer_ends_on_a_checkpoint_the_instance_key_signed() {
    let (h, node, key) = replicating().await;
    let store = h.create_store("prod").await;
    for i in 0..5 {
        h.create_secret(&store, &format!("s{i}"), "v").await;
    }
    let cluster = cluster(&h).await;
    let head = h.coffer.storage().log_state().await.unwrap().head_seq;
    let mut after = 0;
    let mut signed = 0;
    while after < head {
        let r = h
            .get_as(&node.token, &format!("/replication/v1/feed?after={after}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let answer = FeedAnswer::decode(&r.bytes).unwrap();
        let FeedBody::Entries {
            entries,
            signatures,
        } = answer.body
        else {
            panic!("entries expected");
        };
        let last = entries.last().expect("entries up to the head");
        let end = signatures.last().expect("a signed answer");
        assert_eq!(end.seq, last.seq, "the answer ends on a signed entry");
        for s in &signatures {
            let e = entries.iter().find(|e| e.seq == s.seq).unwrap();
            assert!(
                key.verifies_checkpoint(&cluster, e.seq, &e.hash, &s.signature),
                "entry {}'s signature",
                e.seq
            );
            // Not a signature over another cluster, seq or hash.
            assert!(!key.verifies_checkpoint(&[0; 16], e.seq, &e.hash, &s.signature));
            assert!(!key.verifies_checkpoint(&cluster, e.seq + 1, &e.hash, &s.signature));
            signed += 1;
        }
        after = last.seq;
    }
    // `coffer init`'s entries (signed at start, as a batch) and one per write since.
    assert!(signed >= 7, "{signed} signatures");
}

#[tokio::test]
async fn snapshots_end_with_the_instance_keys_signature() {
    let (h, node, key) = replicating().await;
    let store = h.create_store("prod").await;
    h.create_secret(&store, "k", "v").await;
    let cluster = cluster(&h).await;
    let r = h.get_as(&node.token, "/replication/v1/snapshot").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let mut dec = FrameDecoder::new();
    dec.push(&r.bytes);
    let mut frames = Vec::new();
    while let Some(f) = dec.next_frame().unwrap() {
        frames.push(f);
    }
    let Some(Frame::SnapshotHeader {
        cluster_id,
        position,
        count,
        origin_ms,
    }) = frames.first().cloned()
    else {
        panic!("a header first");
    };
    let items: Vec<Vec<u8>> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Item(i) => Some(i.clone()),
            _ => None,
        })
        .collect();
    let Some(Frame::SnapshotEnd {
        digest,
        signature: Some(sig),
    }) = frames.last().cloned()
    else {
        panic!("a signed end");
    };
    assert_eq!(cluster_id, cluster);
    assert_eq!(digest, Snapshot::digest_of(position, &items));
    assert!(key.verifies_snapshot(&cluster, position, count, &digest, origin_ms, &sig));
    // The origin time is signed: a replayed snapshot cannot be made to look recent.
    assert!(!key.verifies_snapshot(&cluster, position, count, &digest, origin_ms + 1, &sig));
    // Another digest (items rewritten, digest recomputed) is not what was signed.
    let mut forged = items.clone();
    forged[0].push(b' ');
    let forged_digest = Snapshot::digest_of(position, &forged);
    assert!(!key.verifies_snapshot(&cluster, position, count, &forged_digest, origin_ms, &sig));
    let moved = Position {
        seq: position.seq + 1,
        ..position
    };
    assert!(!key.verifies_snapshot(&cluster, moved, count, &digest, origin_ms, &sig));
}

/// `GET /replication/v1/feed-key`: the key an edge pins, to node tokens only; the same key
/// `POST /client/v4/nodes` shows the operator.
#[tokio::test]
async fn the_feed_key_is_told_to_nodes_and_shown_when_a_node_is_made() {
    let (h, node, key) = replicating().await;
    assert_eq!(node.result["feed_public_key"], key.to_hex());
    let r = h.get_as(&node.token, "/replication/v1/feed-key").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let result = assert_ok(&r);
    assert_keys(&result, &["public_key"]);
    assert_eq!(
        FeedKey::parse(result["public_key"].as_str().unwrap()),
        Ok(key)
    );
    // API tokens are refused (a node's business only), and so is no token.
    let r = h.get_as(&h.token, "/replication/v1/feed-key").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_err(&r, coffer_api::ErrorCode::WrongTokenKind, "node token");
    let r = h
        .send_as(
            axum::http::Method::GET,
            "/replication/v1/feed-key",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_err(&r, coffer_api::ErrorCode::Unauthenticated, "");
}

#[tokio::test]
async fn every_feed_answer_carries_a_signed_freshness_statement_of_the_head() {
    let (h, node, key) = replicating().await;
    let store = h.create_store("prod").await;
    h.create_secret(&store, "k", "v").await;
    let cluster = cluster(&h).await;
    let state = h.coffer.storage().log_state().await.unwrap();
    let before = coffer_replication::wire::unix_ms();
    let get = |after: u64| {
        let h = &h;
        let token = node.token.clone();
        async move {
            let r = h
                .get_as(&token, &format!("/replication/v1/feed?after={after}"))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            FeedAnswer::decode(&r.bytes).unwrap()
        }
    };
    let first = get(state.head_seq).await;
    let f = first.freshness.expect("a statement on every answer");
    assert!(f.verifies(&key));
    assert_eq!(f.cluster_id, cluster);
    assert_eq!(
        f.head,
        Position {
            seq: state.head_seq,
            hash: state.head_hash
        }
    );
    assert!(f.origin_ms >= before && f.origin_ms <= coffer_replication::wire::unix_ms());
    // Within a second, at the same head, the same statement: not one signature per request.
    let again = get(0).await;
    assert_eq!(again.freshness, Some(f));
    // A write moves the head: the next answer states the new one.
    h.create_secret(&store, "k2", "v").await;
    let moved = get(0).await.freshness.unwrap();
    assert!(moved.verifies(&key));
    assert!(moved.head.seq > f.head.seq, "{moved:?}");
    // After a second, a newer statement even with the head unchanged.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let later = get(0).await.freshness.unwrap();
    assert!(later.verifies(&key));
    assert!(later.origin_ms > moved.origin_ms);
}
