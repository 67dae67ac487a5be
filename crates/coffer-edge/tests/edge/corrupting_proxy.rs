//! A proxy between an edge and its control plane that corrupts feed answers and snapshots
//! as a test asks (`FeedFault`, `SnapshotFault`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use coffer_replication::wire::{FeedAnswer, FeedBody, Frame, FrameDecoder};
use coffer_storage::ChangeRecord;
use tokio::task::JoinHandle;

use crate::common::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedFault {
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
pub enum SnapshotFault {
    None,
    /// Answered 503 without asking upstream.
    Refuse,
    /// One hex digit of a sealed value changed in an item (the item still parses).
    FlipItem,
    /// The body cut short.
    Truncate,
}

pub struct ProxyState {
    pub upstream: String,
    /// Answer every request 502 without asking upstream (the upstream is "down").
    pub down: std::sync::atomic::AtomicBool,
    /// Present this bearer token upstream instead of the client's.
    pub authorization: Mutex<Option<String>>,
    /// Requests received.
    pub requests: AtomicU64,
    /// Feed answers are passed on with the last freshness statement seen before this was set
    /// (and their unsigned origin an hour older): a relay that answers but is itself cut off
    /// from the root, its statements no longer advancing.
    pub old_origin: std::sync::atomic::AtomicBool,
    pub last_statement: Mutex<Option<coffer_replication::Freshness>>,
    pub faults: Mutex<(FeedFault, SnapshotFault)>,
    /// Answers corrupted (or refused) so far.
    pub corrupted: AtomicU64,
    /// Snapshot requests seen.
    pub snapshots: AtomicU64,
    /// The lowest "last good seq" of the corrupted feed answers since the last reset: an edge
    /// must not apply past it.
    pub last_good: AtomicU64,
}

pub struct Proxy {
    pub url: String,
    pub state: Arc<ProxyState>,
    pub task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
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

    pub fn set(&self, feed: FeedFault, snapshot: SnapshotFault) {
        *self.state.faults.lock().unwrap() = (feed, snapshot);
        self.state.last_good.store(u64::MAX, Ordering::SeqCst);
    }

    pub fn corrupted(&self) -> u64 {
        self.state.corrupted.load(Ordering::SeqCst)
    }

    pub fn snapshots(&self) -> u64 {
        self.state.snapshots.load(Ordering::SeqCst)
    }

    pub fn last_good(&self) -> u64 {
        self.state.last_good.load(Ordering::SeqCst)
    }
}

pub async fn forward(state: Arc<ProxyState>, req: Request) -> Response {
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
pub fn flip_sealed(payload: &mut [u8]) {
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

pub fn corrupt_feed(state: &ProxyState, fault: FeedFault, bytes: Vec<u8>) -> Vec<u8> {
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

pub fn corrupt_snapshot(state: &ProxyState, fault: SnapshotFault, bytes: Vec<u8>) -> Vec<u8> {
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
