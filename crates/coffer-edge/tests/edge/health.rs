//! `/healthz` and the serving metric of an edge cut off from its upstream.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use crate::corrupting_proxy::*;

/// `/healthz` tells the truth about an edge cut off from its upstream: `degraded` once a
/// request fails, `stale` past the staleness (still serving: static stability), and with
/// `--max-staleness` it stops serving past that, until the upstream answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_degraded_stale_and_max_staleness_stops_serving() {
    let World {
        tmp,
        mut cp,
        b,
        token,
    } = world("value", "edge-h").await;
    let proxy = Proxy::start(&cp.url).await;
    let mut opts = edge_options(&[&proxy.url], &token, &tmp.path().join("edge"));
    opts.staleness = Duration::from_secs(2);
    opts.max_staleness = Some(Duration::from_secs(5));
    // The metric tells what /healthz tells (bound and released: nothing else binds here).
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    opts.metrics_listen = Some(metrics);
    let mut edge = Edge::start_with(opts).await;
    edge.wait_serving().await;
    edge.wait_applied(cp.head().await).await;
    let e = &edge;
    wait_until("ok", PROMPTLY, move || async move {
        e.health().await.1["status"] == "ok"
    })
    .await;

    proxy.state.down.store(true, Ordering::SeqCst);
    wait_until("degraded", PROMPTLY, move || async move {
        e.health().await.1["status"] == "degraded"
    })
    .await;
    assert_eq!(edge.value(&b.token, "K").await, "value");
    wait_until("stale", PROMPTLY, move || async move {
        e.health().await.1["status"] == "stale"
    })
    .await;
    let (status, health) = edge.health().await;
    assert_eq!(status, 200, "stale but serving: {health}");
    assert!(health["lag_seconds"].as_f64().unwrap() > 2.0, "{health}");
    assert_eq!(edge.value(&b.token, "K").await, "value");

    // Past --max-staleness: no more serving, and /healthz says why.
    let svc = b.token.as_str();
    wait_until(
        "a refusal past max-staleness",
        PROMPTLY,
        move || async move { e.read(svc, "K").await.0 == 503 },
    )
    .await;
    let (status, health) = edge.health().await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "stale", "{health}");
    assert_eq!(health["ready"], false, "{health}");
    assert_eq!(
        serving_metric(metrics).await,
        "0",
        "refusing past --max-staleness"
    );

    // The upstream is back: serving again, and ok.
    proxy.state.down.store(false, Ordering::SeqCst);
    wait_until("ok again", PROMPTLY, move || async move {
        e.health().await.1["status"] == "ok"
    })
    .await;
    assert_eq!(edge.value(&b.token, "K").await, "value");
    assert_eq!(serving_metric(metrics).await, "1", "serving again");

    // An upstream that answers but whose state is old (a relay cut off from the root) does
    // not make the edge fresh: the age of what it heard counts, not that it heard.
    proxy.state.old_origin.store(true, Ordering::SeqCst);
    wait_until(
        "stale behind a cut-off relay",
        PROMPTLY,
        move || async move {
            e.read(svc, "K").await.0 == 503 && e.health().await.1["status"] == "stale"
        },
    )
    .await;
    proxy.state.old_origin.store(false, Ordering::SeqCst);
    wait_until("ok once fresh again", PROMPTLY, move || async move {
        e.health().await.1["status"] == "ok"
    })
    .await;
    assert_eq!(edge.value(&b.token, "K").await, "value");
    edge.stop().await;
    cp.stop().await;
}

/// The value of `coffer_edge_serving` in a scrape of `addr`.
async fn serving_metric(addr: std::net::SocketAddr) -> String {
    let text = http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("coffer_edge_serving "))
        .unwrap_or_else(|| panic!("no coffer_edge_serving in {text}"))
        .trim()
        .to_owned()
}
