//! A revoked edge stops serving, discards its replica and does not start again.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use coffer_edge::EdgeError;
use coffer_replication::wire::FeedBody;
use coffer_storage::Storage;
use serde_json::Value;

use crate::common::*;
use crate::corrupting_proxy::*;

/// What a revoked edge must look like: `/healthz` 503 `revoked` naming why, every other
/// request 503 `edge_revoked` (a value it served a moment ago included), no replica left in its
/// data dir, a marker in its place; and it makes no more requests upstream.
async fn assert_revoked(edge: &Edge, b: &Bound, dir: &Path, why: &str) {
    let e = edge;
    wait_until(
        "the edge to count itself revoked",
        PROMPTLY,
        move || async move { e.health().await.1["status"] == "revoked" },
    )
    .await;
    let (status, health) = edge.health().await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["ready"], false, "{health}");
    assert!(
        health["revoked"].as_str().is_some_and(|r| r.contains(why)),
        "revoked because {why:?}: {health}"
    );
    let r = http()
        .get(format!("{}/runtime/v1/bindings/K", edge.url))
        .bearer_auth(&b.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["code"],
        coffer_api::ErrorCode::EdgeRevoked.code(),
        "{body}"
    );
    wait_until("the replica to be deleted", PROMPTLY, move || async move {
        !dir.join("replica.db").exists() && dir.join("revoked").exists()
    })
    .await;
    for leftover in ["replica.db-wal", "replica.db-shm"] {
        assert!(!dir.join(leftover).exists(), "{leftover} left behind");
    }
}

/// A revoked node's edge learns it from its upstream's refusal (401 `node_revoked`, said only
/// to the holder of the real token): it stops serving at once, discards its replica, stops
/// asking upstream, and refuses to start again from that data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_edge_stops_serving_discards_its_replica_and_does_not_restart() {
    let World {
        tmp,
        mut cp,
        b,
        token,
    } = world("before-revocation", "edge-r").await;
    let dir = tmp.path().join("edge");
    let proxy = Proxy::start(&cp.url).await;
    let mut edge = Edge::start(&[&proxy.url], &token, &dir).await;
    edge.wait_serving().await;
    edge.wait_applied(cp.head().await).await;
    assert_eq!(edge.value(&b.token, "K").await, "before-revocation");
    edge.stop().await;

    // Revoked while it is down: when it starts again it serves from disk at once (static
    // stability), until its upstream tells it.
    let node_id = &token["coffernode_".len().."coffernode_".len() + 32];
    cp.client.revoke_node(node_id).await.unwrap();
    let mut edge = Edge::start(&[&proxy.url], &token, &dir).await;
    assert_revoked(&edge, &b, &dir, "refused the node token").await;

    // It asks its upstream nothing more (no retries to wear down anyone's budget).
    let asked = proxy.state.requests.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(proxy.state.requests.load(Ordering::SeqCst), asked);
    edge.stop().await;

    // The data dir is refused, saying why and what to do.
    let err = coffer_edge::run(
        edge_options(&[&cp.url], &token, &dir),
        |_, _| panic!("a revoked data dir must not serve"),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, EdgeError::Revoked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("revoked") && msg.contains("empty data dir"),
        "{msg}"
    );
    cp.stop().await;
}

/// The feed's revocation of the edge's own node stops it as well, even when its upstream would
/// go on answering (here a proxy presents another node's token upstream, so nothing but the
/// feed tells the edge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_revoked_through_the_feed_stops_serving() {
    let World {
        tmp,
        mut cp,
        b,
        token,
    } = world("before-revocation", "edge-f").await;
    let proxy = Proxy::start(&cp.url).await;
    *proxy.state.authorization.lock().unwrap() = Some(cp.probe.clone());
    let dir = tmp.path().join("edge");
    let mut edge = Edge::start(&[&proxy.url], &token, &dir).await;
    edge.wait_serving().await;
    edge.wait_applied(cp.head().await).await;
    assert_eq!(edge.value(&b.token, "K").await, "before-revocation");

    // Another node's revocation changes nothing.
    let other = cp.node("other").await;
    cp.client
        .revoke_node(&other["coffernode_".len().."coffernode_".len() + 32])
        .await
        .unwrap();
    edge.wait_applied(cp.head().await).await;
    assert_eq!(edge.value(&b.token, "K").await, "before-revocation");
    assert_eq!(edge.health().await.1["status"], "ok");

    let node_id = &token["coffernode_".len().."coffernode_".len() + 32];
    cp.client.revoke_node(node_id).await.unwrap();
    assert_revoked(&edge, &b, &dir, "change feed revoked this node").await;
    edge.stop().await;
    cp.stop().await;
}

/// An edge whose replica already holds its own revocation (it stopped before it could discard
/// it) discards it at start and refuses to serve, even with no upstream to ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_whose_replica_holds_its_revocation_refuses_to_start() {
    let World {
        tmp,
        mut cp,
        b: _,
        token,
    } = world("value", "edge-c").await;
    let dir = tmp.path().join("edge");
    let mut edge = synced_edge(tmp.path(), &cp, &token).await;
    edge.stop().await;
    let node_id = &token["coffernode_".len().."coffernode_".len() + 32];
    cp.client.revoke_node(node_id).await.unwrap();
    // The revocation applied to the replica as the driver would, and nothing else done.
    {
        let replica = coffer_storage::SqliteStorage::open(&dir.join("replica.db")).unwrap();
        let at = replica.log_state().await.unwrap().head_seq;
        let FeedBody::Entries { entries, .. } = cp.feed(at).await.body else {
            panic!("entries after {at}");
        };
        replica.apply_entries(entries).await.unwrap();
        replica.shutdown().await;
    }
    let err = coffer_edge::run(
        edge_options(&["http://127.0.0.1:9"], &token, &dir),
        |_, _| panic!("a revoked replica must not serve"),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, EdgeError::Revoked { .. }), "{err:?}");
    assert!(!dir.join("replica.db").exists());
    assert!(dir.join("revoked").exists());
    cp.stop().await;
}
