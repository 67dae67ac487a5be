//! An edge bootstraps, follows and serves every change; a relay passes on the control
//! plane's signatures with its entries; an edge below a relay behind on its node waits for it.

use std::time::Duration;

use coffer_client::{DeployService, SecretBinding};
use coffer_replication::wire::{FeedAnswer, FeedBody};
use serde_json::Value;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_bootstraps_follows_and_serves_every_change() {
    let World {
        tmp,
        mut cp,
        b,
        token,
    } = world("value-1", "edge-1").await;
    let mut edge = synced_edge(tmp.path(), &cp, &token).await;
    assert_eq!(edge.value(&b.token, "K").await, "value-1");
    let (status, health) = edge.health().await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["ready"], true, "{health}");
    assert_eq!(health["role"], "edge", "{health}");
    assert_eq!(health["cluster_id"], cp.cluster_hex().await, "{health}");
    assert_eq!(health["upstream"], cp.url.as_str(), "{health}");
    assert_eq!(health["alarms"], 0, "{health}");
    // A HEAD probe is answered like GET, without a body.
    let r = http()
        .head(format!("{}/healthz", edge.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    // Only `GET /healthz` is answered in front of the API: another method there, or a route
    // that does not exist, gets the API's answer in the v4 envelope.
    for (method, path, want) in [
        (reqwest::Method::POST, "/healthz", 405),
        (reqwest::Method::GET, "/nope", 404),
    ] {
        let r = http()
            .request(method.clone(), format!("{}{path}", edge.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["success"], false, "{method} {path}: {body}");
    }
    let e = &edge;
    wait_until(
        "the edge to report following",
        PROMPTLY,
        move || async move { e.health().await.1["phase"] == "following" },
    )
    .await;

    // Every change reaches it; the read after the apply sees it (no polling of the read).
    cp.set_value(&b, "value-2").await;
    edge.wait_applied(cp.head().await).await;
    assert_eq!(edge.value(&b.token, "K").await, "value-2");
    assert_eq!(edge.status.applied_seq(), cp.head().await);

    // A second binding, deployed later.
    let other = cp.create_secret(&b.store, "other", "other-value").await;
    cp.client
        .deploy_service(&DeployService {
            name: "svc".into(),
            kind: None,
            secrets_store_secrets: vec![
                SecretBinding {
                    binding: "K".into(),
                    store_id: b.store.clone(),
                    secret_name: "k".into(),
                },
                SecretBinding {
                    binding: "OTHER".into(),
                    store_id: b.store.clone(),
                    secret_name: "other".into(),
                },
            ],
            secrets_store_stores: vec![],
        })
        .await
        .unwrap();
    edge.wait_applied(cp.head().await).await;
    assert_eq!(edge.value(&b.token, "OTHER").await, "other-value");

    // A deleted secret is gone at the edge; re-created under its name it is served again.
    cp.client.delete_secret(&b.store, &b.secret).await.unwrap();
    edge.wait_applied(cp.head().await).await;
    assert_eq!(edge.read(&b.token, "K").await.0, 404);
    assert_eq!(edge.value(&b.token, "OTHER").await, "other-value");
    cp.create_secret(&b.store, "k", "value-3").await;
    edge.wait_applied(cp.head().await).await;
    assert_eq!(edge.value(&b.token, "K").await, "value-3");
    cp.client.delete_secret(&b.store, &other).await.unwrap();
    edge.wait_applied(cp.head().await).await;
    assert_eq!(edge.read(&b.token, "OTHER").await.0, 404);

    // A revoked service token is refused at the edge as on the control plane.
    let revoked = cp.client.revoke_service_tokens(&b.service).await.unwrap();
    assert_eq!(revoked.len(), 1);
    edge.wait_applied(cp.head().await).await;
    assert_eq!(edge.read(&b.token, "K").await.0, 401);

    let (_, health) = edge.health().await;
    assert_eq!(health["applied_seq"], cp.head().await, "{health}");
    assert_eq!(health["alarms"], 0, "{health}");
    edge.stop().await;
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_serves_the_control_planes_signatures_with_its_entries() {
    let World {
        tmp, cp, b, token, ..
    } = world("value-1", "relay").await;
    let mut opts = edge_options(&[&cp.url], &token, &tmp.path().join("relay"));
    opts.serve_feed = true;
    let relay = Edge::start_with(opts).await;
    relay.wait_serving().await;
    let base = cp.head().await;
    relay.wait_applied(base).await;
    // Written after the relay's snapshot: the relay holds these entries in its own log.
    cp.create_secrets(&b.store, &[("a", "1"), ("b", "2")]).await;
    cp.create_secret(&b.store, "c", "3").await;
    let head = cp.head().await;
    relay.wait_applied(head).await;
    let from_relay = {
        let r = http()
            .get(format!("{}/replication/v1/feed?after={base}", relay.url))
            .bearer_auth(&cp.probe)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        FeedAnswer::decode(&r.bytes().await.unwrap()).unwrap()
    };
    let from_root = cp.feed(base).await;
    let FeedBody::Entries {
        entries,
        signatures,
    } = &from_relay.body
    else {
        panic!("entries from the relay");
    };
    assert_eq!(entries.last().map(|e| e.seq), Some(head));
    // Two write batches after the base: two signatures, the root's own, byte for byte.
    assert_eq!(signatures.len(), 2, "{signatures:?}");
    assert_eq!(from_relay.body, from_root.body);
}

/// An edge started below a relay that has not yet applied the edge's node: the relay refuses
/// its token (401, not a revocation) until it catches up, and the edge keeps trying to
/// register its key, then serves. (It used to give up at the first 401 and never serve.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_below_a_relay_behind_on_its_node_registers_once_the_relay_catches_up() {
    let World {
        tmp, cp, b, token, ..
    } = world("value-1", "relay").await;
    let proxy = crate::corrupting_proxy::Proxy::start(&cp.url).await;
    let mut opts = edge_options(&[&proxy.url], &token, &tmp.path().join("relay"));
    opts.serve_feed = true;
    let relay = Edge::start_with(opts).await;
    relay.wait_serving().await;
    relay.wait_applied(cp.head().await).await;

    // The relay is cut off from the control plane before the edge's node is made (its
    // long poll in flight through the proxy ends first).
    proxy
        .state
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(LONG_POLL + Duration::from_secs(1)).await;
    let edge_token = cp.node("edge-below").await;
    let edge = Edge::start(&[&relay.url], &edge_token, &tmp.path().join("edge")).await;
    // The relay does not know the node: its registration and feed requests are refused.
    let relay_refused = || async {
        http()
            .get(format!("{}/replication/v1/feed?after=0", relay.url))
            .bearer_auth(&edge_token)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(relay_refused().await, 401);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!edge.status.is_ready(), "the edge cannot serve yet");

    proxy
        .state
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    relay.wait_applied(cp.head().await).await;
    edge.wait_serving_within(Duration::from_secs(60)).await;
    assert_eq!(edge.value(&b.token, "K").await, "value-1");
}
