//! Edges in-process against a real control plane (`coffer_server::serve` on 127.0.0.1:0):
//! bootstrap and follow, refusing corrupted feeds and snapshots (through a corrupting proxy),
//! static stability, refusing another cluster, and access events reaching the audit log.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use coffer_client::{AuditFilter, DeployService, Direction, SecretBinding};
use coffer_edge::EdgeError;
use coffer_replication::wire::{FeedAnswer, FeedBody, Frame, FrameDecoder};
use coffer_storage::{ChangeRecord, Storage};
use serde_json::Value;
use tokio::task::JoinHandle;

mod common;
use common::*;

// ---- a corrupting proxy ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FeedFault {
    None,
    /// One hex digit of the first entry's sealed value changed (the payload still parses).
    FlipPayload,
    /// One bit of the first entry's hash flipped.
    FlipHash,
    /// The second entry's payload replaced by garbage, its hash recomputed so that it chains.
    GarbagePayload,
    /// The middle entry of an answer of three or more dropped.
    DropMiddle,
    /// The body cut short.
    Truncate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SnapshotFault {
    None,
    /// Answered 503 without asking upstream.
    Refuse,
    /// One hex digit of a sealed value changed in an item (the item still parses).
    FlipItem,
    /// The body cut short.
    Truncate,
}

struct ProxyState {
    upstream: String,
    /// Answer every request 502 without asking upstream (the upstream is "down").
    down: std::sync::atomic::AtomicBool,
    /// Present this bearer token upstream instead of the client's.
    authorization: Mutex<Option<String>>,
    /// Requests received.
    requests: AtomicU64,
    /// Feed answers are passed on with the last freshness statement seen before this was set
    /// (and their unsigned origin an hour older): a relay that answers but is itself cut off
    /// from the root, its statements no longer advancing.
    old_origin: std::sync::atomic::AtomicBool,
    last_statement: Mutex<Option<coffer_replication::Freshness>>,
    faults: Mutex<(FeedFault, SnapshotFault)>,
    /// Answers corrupted (or refused) so far.
    corrupted: AtomicU64,
    /// Snapshot requests seen.
    snapshots: AtomicU64,
    /// The lowest "last good seq" of the corrupted feed answers since the last reset: an edge
    /// must not apply past it.
    last_good: AtomicU64,
}

struct Proxy {
    url: String,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.to_owned(),
            down: std::sync::atomic::AtomicBool::new(false),
            authorization: Mutex::new(None),
            requests: AtomicU64::new(0),
            old_origin: std::sync::atomic::AtomicBool::new(false),
            last_statement: Mutex::new(None),
            faults: Mutex::new((FeedFault::None, SnapshotFault::None)),
            corrupted: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            last_good: AtomicU64::new(u64::MAX),
        });
        let app = {
            let state = state.clone();
            axum::Router::new().fallback(move |req: Request| forward(state.clone(), req))
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Proxy { url, state, task }
    }

    fn set(&self, feed: FeedFault, snapshot: SnapshotFault) {
        *self.state.faults.lock().unwrap() = (feed, snapshot);
        self.state.last_good.store(u64::MAX, Ordering::SeqCst);
    }

    fn corrupted(&self) -> u64 {
        self.state.corrupted.load(Ordering::SeqCst)
    }

    fn snapshots(&self) -> u64 {
        self.state.snapshots.load(Ordering::SeqCst)
    }

    fn last_good(&self) -> u64 {
        self.state.last_good.load(Ordering::SeqCst)
    }
}

async fn forward(state: Arc<ProxyState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    state.requests.fetch_add(1, Ordering::SeqCst);
    if state.down.load(Ordering::SeqCst) {
        return (StatusCode::BAD_GATEWAY, "the proxy's upstream is down").into_response();
    }
    let is_feed = path.starts_with("/replication/v1/feed");
    let is_snapshot = path.starts_with("/replication/v1/snapshot");
    if is_snapshot {
        state.snapshots.fetch_add(1, Ordering::SeqCst);
        if state.faults.lock().unwrap().1 == SnapshotFault::Refuse {
            state.corrupted.fetch_add(1, Ordering::SeqCst);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({
                    "success": false,
                    "errors": [{ "code": 1500, "message": "the proxy refuses snapshots" }],
                    "messages": [],
                    "result": null,
                })),
            )
                .into_response();
        }
    }
    let mut upstream = http()
        .request(parts.method.clone(), format!("{}{path}", state.upstream))
        .body(body);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = parts.headers.get(&name) {
            upstream = upstream.header(name, v.clone());
        }
    }
    let authorization = state.authorization.lock().unwrap().clone();
    if let Some(token) = authorization {
        upstream = upstream.bearer_auth(token);
    }
    let res = match upstream.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = res.status();
    let content_type = res.headers().get(header::CONTENT_TYPE).cloned();
    let mut bytes = match res.bytes().await {
        Ok(b) => b.to_vec(),
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    if status == StatusCode::OK {
        // The faults as they are now: a long-poll may have waited for the write under test.
        let (feed_fault, snapshot_fault) = *state.faults.lock().unwrap();
        if is_feed && let Ok(mut answer) = FeedAnswer::decode(&bytes) {
            let mut last = state.last_statement.lock().unwrap();
            if state.old_origin.load(Ordering::SeqCst) {
                answer.origin_ms = answer.origin_ms.saturating_sub(3_600_000);
                answer.freshness = *last;
                bytes = answer.encode();
            } else if answer.freshness.is_some() {
                *last = answer.freshness;
            }
        }
        if is_feed {
            bytes = corrupt_feed(&state, feed_fault, bytes);
        } else if is_snapshot {
            bytes = corrupt_snapshot(&state, snapshot_fault, bytes);
        }
    }
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    out
}

/// Changes one hex digit of the sealed value in `payload` (a `SecretPut` payload still parses
/// afterwards); any other payload gets a bit flipped in its middle.
fn flip_sealed(payload: &mut [u8]) {
    const KEY: &[u8] = b"\"sealed_hex\":\"";
    match payload.windows(KEY.len()).position(|w| w == KEY) {
        Some(at) => {
            let i = at + KEY.len() + 8;
            payload[i] = if payload[i] == b'0' { b'1' } else { b'0' };
        }
        None => {
            let mid = payload.len() / 2;
            payload[mid] ^= 0x01;
        }
    }
}

fn corrupt_feed(state: &ProxyState, fault: FeedFault, bytes: Vec<u8>) -> Vec<u8> {
    if fault == FeedFault::None {
        return bytes;
    }
    let Ok(mut answer) = FeedAnswer::decode(&bytes) else {
        return bytes;
    };
    let FeedBody::Entries { entries, .. } = &mut answer.body else {
        return bytes;
    };
    if entries.is_empty() {
        return bytes;
    }
    let first = entries[0].seq;
    let last_good = match fault {
        FeedFault::None => return bytes,
        FeedFault::FlipPayload => {
            flip_sealed(&mut entries[0].payload);
            first - 1
        }
        FeedFault::FlipHash => {
            entries[0].hash[7] ^= 0x10;
            first - 1
        }
        FeedFault::GarbagePayload => {
            if entries.len() < 2 {
                return bytes;
            }
            let prev = entries[0].hash;
            let e = &mut entries[1];
            e.payload = b"{\"type\":\"secret_put\",\"garbage\":true}".to_vec();
            e.hash = ChangeRecord::chain_hash(&prev, e.seq, &e.payload);
            first
        }
        FeedFault::DropMiddle => {
            if entries.len() < 3 {
                return bytes;
            }
            entries.remove(1);
            first
        }
        FeedFault::Truncate => {
            state.corrupted.fetch_add(1, Ordering::SeqCst);
            state.last_good.fetch_min(first - 1, Ordering::SeqCst);
            let cut = bytes.len() * 2 / 3;
            return bytes[..cut].to_vec();
        }
    };
    state.corrupted.fetch_add(1, Ordering::SeqCst);
    state.last_good.fetch_min(last_good, Ordering::SeqCst);
    answer.encode()
}

fn corrupt_snapshot(state: &ProxyState, fault: SnapshotFault, bytes: Vec<u8>) -> Vec<u8> {
    match fault {
        SnapshotFault::None | SnapshotFault::Refuse => bytes,
        SnapshotFault::Truncate => {
            state.corrupted.fetch_add(1, Ordering::SeqCst);
            bytes[..bytes.len() * 3 / 5].to_vec()
        }
        SnapshotFault::FlipItem => {
            let mut dec = FrameDecoder::new();
            dec.push(&bytes);
            let mut frames = Vec::new();
            while let Ok(Some(f)) = dec.next_frame() {
                frames.push(f);
            }
            let sealed = frames.iter().position(
                |f| matches!(f, Frame::Item(i) if i.windows(10).any(|w| w == b"sealed_hex")),
            );
            let target =
                sealed.or_else(|| frames.iter().rposition(|f| matches!(f, Frame::Item(_))));
            let Some(target) = target else {
                return bytes;
            };
            if let Frame::Item(item) = &mut frames[target] {
                flip_sealed(item);
            }
            state.corrupted.fetch_add(1, Ordering::SeqCst);
            frames.iter().flat_map(Frame::to_bytes).collect()
        }
    }
}

// ---- the tests ----

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_an_edge_reach_the_audit_log_once_naming_the_edge() {
    let World {
        tmp,
        mut cp,
        b,
        token,
    } = world("audited-value", "edge-audit").await;
    let edge_dir = tmp.path().join("edge");
    let mut edge = Edge::start(&[&cp.url], &token, &edge_dir).await;
    edge.wait_serving().await;
    edge.wait_applied(cp.head().await).await;

    let cpr = &cp;
    let access = move || async move {
        let page = cpr
            .client
            .list_audit(&AuditFilter {
                action: Some("access".into()),
                direction: Some(Direction::Asc),
                per_page: Some(100),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        page.items
    };
    let baseline = access().await.len();
    assert_eq!(baseline, 0, "no reads yet");

    for _ in 0..3 {
        assert_eq!(edge.value(&b.token, "K").await, "audited-value");
    }
    assert_eq!(edge.read(&b.token, "NOPE").await.0, 404);
    wait_until(
        "the edge's access events",
        Duration::from_secs(30),
        move || async move { access().await.len() >= baseline + 2 },
    )
    .await;
    let entries = access().await;
    let new = &entries[baseline..];
    assert_eq!(new.len(), 2, "{new:#?}");
    for e in new {
        assert_eq!(e.event["edge_node"], "edge-audit", "{e:?}");
        assert!(e.event["edge_node_id"].is_string(), "{e:?}");
    }
    let served = new
        .iter()
        .find(|e| e.event["outcome"] == "success")
        .expect("the served reads");
    assert_eq!(served.event["reads"], 3, "{served:?}");
    assert_eq!(served.event["resource"]["binding"], "K", "{served:?}");
    assert_eq!(served.event["resource"]["secret_id"], b.secret.as_str());
    let denied = new
        .iter()
        .find(|e| e.event["outcome"] == "denied")
        .expect("the denied read");
    assert_eq!(denied.event["reads"], 1, "{denied:?}");
    assert_eq!(denied.event["reason"], "no such binding", "{denied:?}");

    // Reads just before a shutdown are kept in the outbox and delivered after the restart,
    // once.
    for _ in 0..2 {
        assert_eq!(edge.value(&b.token, "K").await, "audited-value");
    }
    edge.stop().await;
    let mut edge = Edge::start(&[&cp.url], &token, &edge_dir).await;
    wait_until(
        "the outbox's delivery",
        Duration::from_secs(30),
        move || async move { access().await.len() > baseline + 2 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let entries = access().await;
    let later = &entries[baseline + 2..];
    assert_eq!(later.len(), 1, "{later:#?}");
    assert_eq!(later[0].event["reads"], 2, "{later:?}");
    assert_eq!(later[0].event["edge_node"], "edge-audit");
    assert_eq!(&entries[..baseline + 2], &access().await[..baseline + 2]);
    assert!(cp.client.verify_audit().await.unwrap().ok);
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
