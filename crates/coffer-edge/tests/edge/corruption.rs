//! A corrupted feed or snapshot is never applied, and the edge recovers (after a backoff).

use std::time::Duration;

use crate::common::*;
use crate::corrupting_proxy::*;

/// One round of feed corruption against a following edge; see the test below.
async fn corrupted_feed_round(
    cp: &ControlPlane,
    edge: &Edge,
    proxy: &Proxy,
    b: &Bound,
    round: usize,
    fault: FeedFault,
) {
    let good = edge.status.applied_seq();
    assert_eq!(
        good,
        cp.head().await,
        "{fault:?}: converged before the round"
    );
    let old = edge.value(&b.token, "K").await;
    let alarms = edge.alarms().await;
    let corrupted = proxy.corrupted();
    // Corrupt the feed; refuse snapshots, so that the edge cannot resync around the fault.
    proxy.set(fault, SnapshotFault::Refuse);
    let watch = AppliedWatch::new(&edge.status);

    if matches!(fault, FeedFault::DropMiddle | FeedFault::GarbagePayload) {
        // Several entries in one answer.
        let names: Vec<String> = (0..3).map(|i| format!("r{round}-{i}")).collect();
        let items: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "filler")).collect();
        cp.create_secrets(&b.store, &items).await;
    }
    let new = format!("value-after-{fault:?}");
    cp.set_value(b, &new).await;
    let head = cp.head().await;

    wait_until(
        &format!("{fault:?}: the proxy to corrupt"),
        PROMPTLY,
        move || async move { proxy.corrupted() > corrupted },
    )
    .await;
    // Refused with an alarm (an unreadable answer too: "anything that fails verification").
    wait_until(
        &format!("{fault:?}: an alarm"),
        PROMPTLY,
        move || async move { edge.alarms().await > alarms },
    )
    .await;
    if let Some(what) = edge.health().await.1["last_alarm"].as_str() {
        let kind = match fault {
            FeedFault::FlipPayload | FeedFault::FlipHash => "HashMismatch",
            FeedFault::GarbagePayload => "CorruptPayload",
            FeedFault::DropMiddle => "Gap",
            FeedFault::Truncate | FeedFault::None => "ends in the middle of a frame",
        };
        assert!(what.contains(kind), "{fault:?}: last alarm {what:?}");
    }
    if fault == FeedFault::Truncate {
        // An unreadable answer is a failed request: retried after a backoff, refused again.
        wait_until(
            &format!("{fault:?}: a retry"),
            PROMPTLY,
            move || async move { proxy.corrupted() > corrupted + 1 },
        )
        .await;
    }
    // Hold a moment: whatever the edge does meanwhile, the corrupted data is not applied and
    // reads answer what was there before.
    for _ in 0..5 {
        assert_eq!(edge.value(&b.token, "K").await, old, "{fault:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last_good = proxy.last_good();
    assert!(last_good < head, "{fault:?}: {last_good} < {head}");
    assert!(
        watch.max() <= last_good,
        "{fault:?}: applied up to {} while the entries after {last_good} were corrupted",
        watch.max()
    );
    assert!(edge.status.applied_seq() <= last_good, "{fault:?}");
    let (status, health) = edge.health().await;
    assert_eq!(status, 200, "{fault:?}: still ready: {health}");
    assert!(
        !health["last_error"].is_null(),
        "{fault:?}: the error is shown: {health}"
    );

    // Healed: the edge resyncs (or continues) and converges on the control plane's head.
    proxy.set(FeedFault::None, SnapshotFault::None);
    edge.wait_applied(head).await;
    assert_eq!(edge.value(&b.token, "K").await, new, "{fault:?}");
    assert_eq!(edge.status.applied_seq(), cp.head().await, "{fault:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_feed_is_never_applied_and_the_edge_recovers() {
    let World {
        tmp,
        mut cp,
        b,
        token,
    } = world("value-0", "edge-c").await;
    let proxy = Proxy::start(&cp.url).await;
    let mut edge = Edge::start(&[&proxy.url], &token, &tmp.path().join("edge")).await;
    edge.wait_serving().await;
    edge.wait_applied(cp.head().await).await;
    assert_eq!(edge.value(&b.token, "K").await, "value-0");
    assert_eq!(edge.alarms().await, 0);

    let faults = [
        FeedFault::FlipPayload,
        FeedFault::FlipHash,
        FeedFault::GarbagePayload,
        FeedFault::DropMiddle,
        FeedFault::Truncate,
    ];
    for (round, fault) in faults.into_iter().enumerate() {
        corrupted_feed_round(&cp, &edge, &proxy, &b, round, fault).await;
    }
    assert!(
        edge.alarms().await >= 4,
        "one alarm per refused entry at least"
    );
    edge.stop().await;
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_or_truncated_snapshot_is_never_installed() {
    let World {
        tmp,
        mut cp,
        b,
        token,
    } = world("snap-value-0", "edge-s").await;
    let proxy = Proxy::start(&cp.url).await;

    // A fresh edge bootstrapping from a corrupted snapshot: refused with an alarm, never
    // ready, nothing installed.
    proxy.set(FeedFault::None, SnapshotFault::FlipItem);
    let mut edge = Edge::start(&[&proxy.url], &token, &tmp.path().join("edge")).await;
    let (e, p) = (&edge, &proxy);
    wait_until(
        "an alarm for the corrupted snapshot",
        PROMPTLY,
        move || async move { e.alarms().await > 0 },
    )
    .await;
    if let Some(what) = edge.health().await.1["last_alarm"].as_str() {
        assert!(what.contains("CorruptSnapshot"), "last alarm {what:?}");
    }
    let (status, health) = edge.health().await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["ready"], false, "{health}");
    assert!(
        health["cluster_id"].is_null(),
        "nothing installed: {health}"
    );
    assert!(!edge.status.is_ready());
    assert_eq!(edge.status.applied_seq(), 0);
    assert_eq!(edge.read(&b.token, "K").await.0, 503);
    // Not ready: a health probe says so, and no other request reaches the API.
    for method in [reqwest::Method::HEAD, reqwest::Method::POST] {
        let r = http()
            .request(method.clone(), format!("{}/healthz", edge.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{method} /healthz before the first sync");
    }

    // Truncated: refused as well.
    let corrupted = proxy.corrupted();
    proxy.set(FeedFault::None, SnapshotFault::Truncate);
    wait_until("truncated snapshots", PROMPTLY, move || async move {
        p.corrupted() > corrupted + 1
    })
    .await;
    let (status, health) = edge.health().await;
    assert_eq!(status, 503, "{health}");
    assert!(
        health["cluster_id"].is_null(),
        "nothing installed: {health}"
    );
    assert_eq!(edge.status.applied_seq(), 0);

    // Healed: it bootstraps and serves.
    proxy.set(FeedFault::None, SnapshotFault::None);
    edge.wait_serving().await;
    edge.wait_applied(cp.head().await).await;
    assert_eq!(edge.value(&b.token, "K").await, "snap-value-0");
    assert_eq!(edge.health().await.1["cluster_id"], cp.cluster_hex().await);

    // A following edge whose resync snapshot is corrupted too: nothing of either is applied.
    let good = edge.status.applied_seq();
    let alarms = edge.alarms().await;
    let watch = AppliedWatch::new(&edge.status);
    proxy.set(FeedFault::FlipHash, SnapshotFault::FlipItem);
    cp.set_value(&b, "snap-value-1").await;
    let head = cp.head().await;
    let e = &edge;
    wait_until(
        "alarms for the entry and the snapshot",
        PROMPTLY,
        move || async move { e.alarms().await >= alarms + 2 },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(edge.value(&b.token, "K").await, "snap-value-0");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(watch.max(), good, "nothing applied");
    proxy.set(FeedFault::None, SnapshotFault::None);
    edge.wait_applied(head).await;
    assert_eq!(edge.value(&b.token, "K").await, "snap-value-1");
    edge.stop().await;
    cp.stop().await;
}

/// A corrupted snapshot from the only upstream is asked for again after a backoff, as a failed
/// request is, rather than in a tight loop that downloads whole snapshots from the control plane
/// back to back and logs an alarm for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_is_asked_for_again_only_after_a_backoff() {
    let World {
        tmp,
        mut cp,
        b: _,
        token,
    } = world("backoff-value", "edge-b").await;
    let proxy = Proxy::start(&cp.url).await;
    proxy.set(FeedFault::None, SnapshotFault::FlipItem);
    let mut edge = Edge::start(&[&proxy.url], &token, &tmp.path().join("edge")).await;
    let e = &edge;
    wait_until(
        "an alarm for the corrupted snapshot",
        PROMPTLY,
        move || async move { e.alarms().await > 0 },
    )
    .await;
    let before = proxy.snapshots();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = proxy.snapshots() - before;
    assert!(
        asked <= 6,
        "{asked} snapshot requests in 3 s to an upstream whose snapshots fail their digest"
    );
    edge.stop().await;
    cp.stop().await;
}
