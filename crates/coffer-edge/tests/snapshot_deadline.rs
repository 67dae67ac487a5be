//! The edge's snapshot deadline, over real HTTP: an upstream that streams its snapshot a few
//! bytes at a time (a trickling proxy in front of the control plane) holds the edge off its
//! next upstream until `--snapshot-deadline` at most, though bytes keep arriving.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;

mod common;
use common::proxy::{Served, ask_upstream, node_with_key, read_request, respond, serve, trickle};
use common::*;

/// A proxy that passes everything on, but sends snapshots a byte every 100 ms.
struct TrickleProxy {
    served: Served,
    /// Snapshots trickled (started).
    trickled: Arc<AtomicU64>,
}

impl TrickleProxy {
    async fn start(upstream: &str) -> TrickleProxy {
        let trickled = Arc::new(AtomicU64::new(0));
        let app = {
            let (upstream, trickled) = (upstream.to_owned(), trickled.clone());
            axum::Router::new()
                .fallback(move |req: Request| forward(upstream.clone(), trickled.clone(), req))
        };
        TrickleProxy {
            served: serve(app).await,
            trickled,
        }
    }
}

async fn forward(upstream: String, trickled: Arc<AtomicU64>, req: Request) -> Response {
    let asked = read_request(req).await;
    let answer = match ask_upstream(&upstream, &asked).await {
        Ok(answer) => answer,
        Err(failed) => return failed,
    };
    let body = if asked.path.starts_with("/replication/v1/snapshot") && answer.status.is_success() {
        trickled.fetch_add(1, Ordering::SeqCst);
        trickle(answer.bytes, Duration::from_millis(100))
    } else {
        Body::from(answer.bytes)
    };
    respond(answer.status, answer.content_type, body)
}

/// An upstream that sends its (genuine) snapshot a byte every 100 ms, for ever, is left at the
/// edge's snapshot deadline for the next upstream, though bytes keep arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_snapshot_is_left_at_the_snapshot_deadline() {
    let w = world("v1", "probe-only").await;
    let (token, key) = node_with_key(&w.cp, "edge-t").await;
    let proxy = TrickleProxy::start(&w.cp.url).await;
    let deadline = Duration::from_secs(4);
    let mut opts = edge_options(
        &[&proxy.served.url, &w.cp.url],
        &token,
        &w.tmp.path().join("edge"),
    );
    opts.staleness = Duration::from_secs(8);
    opts.feed_key = Some(key);
    opts.snapshots.deadline = deadline;
    let started = std::time::Instant::now();
    let mut edge = Edge::start_with(opts).await;
    wait_until("a trickled snapshot", PROMPTLY, || async {
        proxy.trickled.load(Ordering::SeqCst) >= 1
    })
    .await;
    // The whole snapshot would take minutes at this rate (the edge would wait for ever);
    // served, the edge has its state from the control plane, after the deadline.
    edge.wait_serving_within(Duration::from_secs(120)).await;
    assert!(started.elapsed() > deadline);
    let (_, health) = edge.health().await;
    assert_eq!(
        health["upstream"].as_str().map(|u| u.trim_end_matches('/')),
        Some(w.cp.url.trim_end_matches('/')),
        "{health}"
    );
    assert_eq!(edge.value(&w.b.token, "K").await, "v1");
    edge.stop().await;
}
