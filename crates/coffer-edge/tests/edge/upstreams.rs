//! An edge serves with its upstream down and after a restart, and refuses an upstream of
//! another cluster.

use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_serves_with_its_upstream_down_and_after_a_restart() {
    let World {
        tmp,
        mut cp,
        b,
        token,
    } = world("stable-value", "edge-st").await;
    let edge_dir = tmp.path().join("edge");
    let mut edge = Edge::start(&[&cp.url], &token, &edge_dir).await;
    edge.wait_serving().await;
    edge.wait_applied(cp.head().await).await;
    let head = cp.head().await;

    // The control plane goes away: the edge keeps serving.
    cp.stop().await;
    for _ in 0..10 {
        assert_eq!(edge.value(&b.token, "K").await, "stable-value");
        assert_eq!(edge.read(&b.token, "NOPE").await.0, 404);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = &edge;
    wait_until("the edge to notice", PROMPTLY, move || async move {
        !e.health().await.1["last_error"].is_null()
    })
    .await;
    let (status, health) = edge.health().await;
    assert_eq!(status, 200, "still ready: {health}");
    assert_eq!(health["applied_seq"], head, "{health}");

    // Restarted with every upstream still down: ready at once, serving from disk.
    edge.stop().await;
    let mut edge = Edge::start(&[&cp.url], &token, &edge_dir).await;
    assert!(edge.status.is_ready(), "ready before reaching any upstream");
    assert_eq!(edge.status.applied_seq(), head);
    assert_eq!(edge.value(&b.token, "K").await, "stable-value");
    let (status, health) = edge.health().await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["applied_seq"], head, "{health}");
    for _ in 0..5 {
        assert_eq!(edge.value(&b.token, "K").await, "stable-value");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_refuses_an_upstream_of_another_cluster() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let mut a = ControlPlane::start(tmp.path().join("cp-a")).await;
    let ba = a.bind("value-of-a").await;
    a.create_secrets(&ba.store, &[("a1", "1"), ("a2", "2"), ("a3", "3")])
        .await;
    let token_a = a.node("edge-x").await;
    let edge_dir = tmp.path().join("edge");
    let mut edge = Edge::start(&[&a.url], &token_a, &edge_dir).await;
    edge.wait_serving().await;
    edge.wait_applied(a.head().await).await;
    let head_a = a.head().await;
    let cluster_a = a.cluster_hex().await;
    edge.stop().await;
    a.stop().await;

    // Cluster B: same shapes (a service `svc` binding `K`), other values, other keys.
    let mut b = ControlPlane::start(tmp.path().join("cp-b")).await;
    let bb = b.bind("value-of-b").await;
    let token_b = b.node("edge-x").await;
    assert_ne!(b.cluster_hex().await, cluster_a);

    // B's log is shorter than what the edge holds: its refusal of the edge's position names its
    // cluster, and the edge refuses it as another cluster's (not as merely behind).
    assert!(b.head().await < head_a);
    let mut edge = Edge::start(&[&b.url], &token_b, &edge_dir).await;
    let watch = AppliedWatch::new(&edge.status);
    let e = &edge;
    let ours = &cluster_a;
    let refusing = move || async move {
        let (_, h) = e.health().await;
        h["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refusing") && e.contains(ours.as_str()))
    };
    wait_until("the edge to refuse cluster B (shorter)", PROMPTLY, refusing).await;

    // B's log grows longer than the edge's: its answers are refused as well.
    let filler: Vec<(String, String)> = (0..head_a + 5)
        .map(|i| (format!("filler-{i}"), "x".to_owned()))
        .collect();
    let items: Vec<(&str, &str)> = filler
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    b.create_secrets(&bb.store, &items).await;
    assert!(b.head().await > head_a);
    // A few rounds of requests (one a second, after each refusal): still nothing applied.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    wait_until("the edge to refuse cluster B (longer)", PROMPTLY, refusing).await;
    let (_, health) = edge.health().await;
    assert_eq!(health["cluster_id"], cluster_a.as_str(), "{health}");
    assert_eq!(health["applied_seq"], head_a, "{health}");
    assert_eq!(watch.max(), head_a, "nothing applied");
    assert_eq!(edge.value(&ba.token, "K").await, "value-of-a");
    assert_eq!(
        edge.read(&bb.token, "K").await.0,
        401,
        "B's token is unknown here"
    );
    edge.stop().await;
    b.stop().await;
}
