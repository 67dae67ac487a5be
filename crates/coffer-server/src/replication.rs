//! The replication API (`/replication/v1`), served to edge nodes by the control plane and by
//! relay edges (`coffer edge --serve-feed`), with the same code over the same storage layout:
//!
//! - `GET /replication/v1/feed?after=SEQ[&wait=SECS]`: the change-log entries after `SEQ`, in
//!   order, as binary frames (`coffer_replication::wire`). With `wait`, an answer that would be
//!   empty waits up to that long for the next commit (long-poll), so a change reaches a
//!   connected edge as soon as it is committed. Every answer starts with a heartbeat (cluster
//!   id, head, origin time). `after` beyond the head is a 400; a position the log no longer
//!   holds gets a `Compacted` frame (fetch a snapshot).
//! - `GET /replication/v1/snapshot`: the whole replicated state, streamed, with a digest.
//! - `POST /replication/v1/access`: access events observed at an edge (JSON), acknowledged once
//!   they are durable; a retried batch is recorded once.
//!
//! Only node tokens (`coffernode_…`) are accepted here, and a node token is accepted nowhere
//! else.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use coffer_api::replication::{AccessBatch, AccessReceipt};
use coffer_api::{Envelope, ErrorCode};
use coffer_core::{AccessEvent, Coffer};
use coffer_replication::Position;
use coffer_replication::SnapshotDigest;
use coffer_replication::sign::{Freshness, freshness_message};
use coffer_replication::wire::{
    FEED_CONTENT_TYPE, FeedAnswer, FeedBody, Frame, SNAPSHOT_CONTENT_TYPE,
};
use coffer_storage::{NodeRecord, SnapshotPart, StorageError};
use coffer_types::TokenId;

use crate::error::{ApiError, ApiResult};
use crate::extract::NodeAuth;
use crate::state::AppState;

/// On a feed refusal for a position beyond the head: the log's cluster id (hex) and head.
pub const CLUSTER_HEADER: HeaderName = HeaderName::from_static("coffer-cluster-id");
pub const HEAD_HEADER: HeaderName = HeaderName::from_static("coffer-log-head");

/// Entries per feed answer at most; the edge asks again right away for more.
const MAX_ENTRIES: usize = 1_000;
/// Payload bytes per feed answer at most (past the first entry).
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// How long an edge is asked to wait before asking again for a snapshot it was refused.
const SNAPSHOT_RETRY_SECS: u64 = 5;
/// The longest long-poll a client may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Events per access batch at most (an edge sends one batch per interval, aggregated).
const MAX_EVENTS: usize = 100_000;
/// The largest access batch body accepted.
pub const MAX_ACCESS_BODY: usize = 32 << 20;
/// Snapshot bytes gathered into one body chunk.
const SNAPSHOT_CHUNK: usize = 256 << 10;

/// What snapshots may hold: each one streams from a read transaction (which keeps SQLite from
/// checkpointing its WAL past it) and holds a slot, so neither may be held forever by a reader
/// that is slow or stalled, and one node may not hold every slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotLimits {
    /// Snapshots served at once at most; more are refused with 503 and `Retry-After` (the edge
    /// retries).
    pub max_concurrent: usize,
    /// Of those, how many one node may hold at once.
    pub per_node: usize,
    /// A snapshot still streaming this long after it started is abandoned: its slot and read
    /// transaction are released and its body ends without its closing frame, which the edge
    /// refuses as truncated and asks again. Must exceed the time a whole snapshot takes over
    /// the slowest link an edge has.
    pub deadline: Duration,
    /// A snapshot whose reader takes nothing for this long is abandoned the same way.
    pub stall: Duration,
}

impl SnapshotLimits {
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(15 * 60);
}

impl Default for SnapshotLimits {
    fn default() -> SnapshotLimits {
        SnapshotLimits {
            max_concurrent: 4,
            per_node: 1,
            deadline: SnapshotLimits::DEFAULT_DEADLINE,
            stall: Duration::from_secs(60),
        }
    }
}

/// A snapshot's claim on the limits, released when the snapshot ends (or is abandoned).
#[derive(Debug)]
struct SnapshotSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    node: TokenId,
    held: Arc<std::sync::Mutex<std::collections::HashMap<TokenId, usize>>>,
}

impl Drop for SnapshotSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.node);
            }
        }
    }
}

/// The newest freshness statement a relay's follower verified, shared with what it serves.
pub type SharedFreshness = Arc<std::sync::RwLock<Option<Freshness>>>;

/// Where this process's heartbeats come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// The control plane: its own clock, and its own signed freshness statements.
    Root,
    /// A relay: the newest statement its follower verified, forwarded unchanged (it cannot
    /// make one), so an edge below a relay cut off from the root, or one that withholds, sees
    /// it go stale.
    Relay(SharedFreshness),
}

impl Origin {
    fn now_ms(&self) -> u64 {
        match self {
            Origin::Root => unix_ms(),
            Origin::Relay(_) => self.relayed().map_or(0, |f| f.origin_ms),
        }
    }

    fn relayed(&self) -> Option<Freshness> {
        match self {
            Origin::Root => None,
            Origin::Relay(latest) => *latest.read().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

/// How long the control plane reuses a freshness statement for the same head: one signature a
/// second at most while idle, however many edges long-poll.
const FRESHNESS_REUSE: Duration = Duration::from_secs(1);
/// Feed long-polls one node may hold at once; more are answered at once (no wait).
pub const MAX_LONG_POLLS_PER_NODE: usize = 4;

/// Unix milliseconds of the wall clock (0 if it is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where access events delivered by edges go.
pub trait AccessSink: Send + Sync + std::fmt::Debug {
    /// Makes the batch durable (exactly once per `batch_id` at the root); `Ok(recorded)` once
    /// it is, `recorded == false` for a batch delivered before. `node` delivered it;
    /// `observed_by` served the reads (the node itself, or an edge below a relay).
    fn deliver<'a>(
        &'a self,
        node: &'a NodeRecord,
        observed_by: Observer,
        batch_id: [u8; 16],
        events: Vec<AccessEvent>,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ApiError>> + Send + 'a>>;
}

/// The node that served the reads of an access batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observer {
    pub node_id: TokenId,
    pub node_name: String,
}

/// The control plane's sink: the account's audit log.
#[derive(Debug)]
pub struct RootAccess(pub Arc<Coffer>);

impl AccessSink for RootAccess {
    fn deliver<'a>(
        &'a self,
        node: &'a NodeRecord,
        observed_by: Observer,
        batch_id: [u8; 16],
        events: Vec<AccessEvent>,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ApiError>> + Send + 'a>> {
        Box::pin(async move {
            self.0
                .record_edge_access(
                    (node.id, &node.name),
                    (observed_by.node_id, &observed_by.node_name),
                    batch_id,
                    events,
                )
                .await
                .map_err(ApiError::from)
        })
    }
}

/// The replication side of a server: present on the control plane and on relays.
#[derive(Debug)]
pub struct Replication {
    origin: Origin,
    access: Arc<dyn AccessSink>,
    /// Set to `true` at shutdown: pending long-polls answer at once.
    closing: tokio::sync::watch::Receiver<bool>,
    limits: SnapshotLimits,
    snapshots: Arc<tokio::sync::Semaphore>,
    /// Snapshots each node holds now.
    per_node: Arc<std::sync::Mutex<std::collections::HashMap<TokenId, usize>>>,
    /// On a relay: where node-key registrations go (`crate::node_keys`).
    node_keys: Option<Arc<dyn crate::node_keys::NodeKeyForward>>,
    /// On a relay: the root's feed key it pinned (set once it knows it), served to the nodes
    /// below as the root's.
    feed_key: Option<Arc<std::sync::OnceLock<[u8; 32]>>>,
    /// On a relay: where snapshots come from (its own upstream's, passed on byte for byte, so
    /// that they carry the root's signature).
    snapshots_from: Option<Arc<dyn SnapshotForward>>,
    /// The control plane's latest freshness statement and when it was signed.
    freshness: std::sync::Mutex<Option<(std::time::Instant, Freshness)>>,
    /// Feed long-polls each node holds now.
    long_polls: Arc<std::sync::Mutex<std::collections::HashMap<TokenId, usize>>>,
}

/// A node's claim on a long-poll, released when the request ends.
#[derive(Debug)]
struct LongPollSlot {
    node: TokenId,
    held: Arc<std::sync::Mutex<std::collections::HashMap<TokenId, usize>>>,
}

impl Drop for LongPollSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.node);
            }
        }
    }
}

/// Where a relay gets the snapshots it serves: a relay cannot sign, so it passes on a snapshot
/// its upstream signed (ultimately the root), unchanged.
pub trait SnapshotForward: Send + Sync + std::fmt::Debug {
    /// A snapshot answer from upstream, asked for with `bearer` (the requesting node's own
    /// token, so that the root checks the node itself): its body streamed as it arrives. An
    /// upstream that cannot give one is an error to answer the node with.
    fn snapshot<'a>(
        &'a self,
        bearer: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Body, ApiError>> + Send + 'a>>;
}

impl Replication {
    pub fn new(
        origin: Origin,
        access: Arc<dyn AccessSink>,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> Replication {
        Replication::with_limits(origin, access, closing, SnapshotLimits::default())
    }

    pub fn with_limits(
        origin: Origin,
        access: Arc<dyn AccessSink>,
        closing: tokio::sync::watch::Receiver<bool>,
        limits: SnapshotLimits,
    ) -> Replication {
        Replication {
            origin,
            access,
            closing,
            limits,
            snapshots: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent)),
            per_node: Arc::default(),
            node_keys: None,
            feed_key: None,
            snapshots_from: None,
            freshness: std::sync::Mutex::new(None),
            long_polls: Arc::default(),
        }
    }

    /// A long-poll slot for `node`, or `None` if it holds [`MAX_LONG_POLLS_PER_NODE`] already
    /// (its request is then answered without waiting).
    fn long_poll_slot(&self, node: TokenId) -> Option<LongPollSlot> {
        let mut held = self.long_polls.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.entry(node).or_default();
        if *mine >= MAX_LONG_POLLS_PER_NODE {
            return None;
        }
        *mine += 1;
        Some(LongPollSlot {
            node,
            held: self.long_polls.clone(),
        })
    }

    /// The statement to put on a feed answer: on the control plane, its own for `head` (reused
    /// for up to [`FRESHNESS_REUSE`] while the head stays; `None` without a key); on a relay,
    /// the newest its follower verified.
    fn statement(
        &self,
        coffer: &Coffer,
        cluster_id: [u8; 16],
        head: Position,
    ) -> Option<Freshness> {
        if let Origin::Relay(_) = self.origin {
            return self.origin.relayed();
        }
        let mut cache = self.freshness.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, f)) = *cache
            && f.head == head
            && f.cluster_id == cluster_id
            && at.elapsed() < FRESHNESS_REUSE
        {
            return Some(f);
        }
        let origin_ms = unix_ms();
        let signature = coffer.feed_signature(&freshness_message(&cluster_id, head, origin_ms))?;
        let f = Freshness {
            cluster_id,
            head,
            origin_ms,
            signature,
        };
        *cache = Some((std::time::Instant::now(), f));
        Some(f)
    }

    /// A relay serves `key` (the root's, which it pinned, once it is known) at
    /// `/replication/v1/feed-key`.
    pub fn serving_feed_key(mut self, key: Arc<std::sync::OnceLock<[u8; 32]>>) -> Replication {
        self.feed_key = Some(key);
        self
    }

    /// A relay serves the snapshots `from` gives it (its upstream's, root-signed) instead of
    /// its own unsigned ones.
    pub fn forwarding_snapshots(mut self, from: Arc<dyn SnapshotForward>) -> Replication {
        self.snapshots_from = Some(from);
        self
    }

    /// A relay forwards the node-key registrations of the nodes below it to `forward`.
    pub fn forwarding_node_keys(
        mut self,
        forward: Arc<dyn crate::node_keys::NodeKeyForward>,
    ) -> Replication {
        self.node_keys = Some(forward);
        self
    }

    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    pub(crate) fn node_keys(&self) -> Option<&Arc<dyn crate::node_keys::NodeKeyForward>> {
        self.node_keys.as_ref()
    }

    /// A slot for `node`'s snapshot, or the 503 that says why there is none.
    fn snapshot_slot(&self, node: TokenId) -> Result<SnapshotSlot, ApiError> {
        let busy = |message: String| ApiError {
            retry_after: Some(SNAPSHOT_RETRY_SECS),
            ..ApiError::new(ErrorCode::Unavailable, message)
        };
        let mut held = self.per_node.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.get(&node).copied().unwrap_or(0);
        if mine >= self.limits.per_node {
            return Err(busy(format!(
                "this node is receiving {mine} snapshot(s) already (at most {} at once); retry later",
                self.limits.per_node
            )));
        }
        let Ok(permit) = self.snapshots.clone().try_acquire_owned() else {
            return Err(busy(format!(
                "{} snapshots are being served already; retry later",
                self.limits.max_concurrent
            )));
        };
        *held.entry(node).or_default() += 1;
        Ok(SnapshotSlot {
            _permit: permit,
            node,
            held: self.per_node.clone(),
        })
    }
}

pub(crate) fn replication(app: &AppState) -> Result<&Arc<Replication>, ApiError> {
    app.replication
        .as_ref()
        .ok_or_else(|| ApiError::new(ErrorCode::RouteNotFound, "no such route"))
}

fn storage_error(e: StorageError) -> ApiError {
    tracing::error!(error = %e, "replication read failed");
    ApiError::new(
        ErrorCode::Unavailable,
        "the log is unavailable; retry later",
    )
}

/// `after` (required) and `wait` (optional, seconds) from the query string.
fn feed_query(raw: Option<&str>) -> Result<(u64, Duration), ApiError> {
    let mut after = None;
    let mut wait = Duration::ZERO;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match &*k {
            "after" => {
                after = Some(v.parse::<u64>().map_err(|_| {
                    ApiError::at(
                        ErrorCode::InvalidQuery,
                        "after",
                        "after must be a sequence number (a non-negative integer)",
                    )
                })?);
            }
            "wait" => {
                let secs = v.parse::<u64>().map_err(|_| {
                    ApiError::at(
                        ErrorCode::InvalidQuery,
                        "wait",
                        "wait must be a number of seconds",
                    )
                })?;
                wait = Duration::from_secs(secs).min(MAX_WAIT);
            }
            "wait_ms" => {
                let ms = v.parse::<u64>().map_err(|_| {
                    ApiError::at(
                        ErrorCode::InvalidQuery,
                        "wait_ms",
                        "wait_ms must be a number of milliseconds",
                    )
                })?;
                wait = Duration::from_millis(ms).min(MAX_WAIT);
            }
            other => {
                return Err(ApiError::at(
                    ErrorCode::InvalidQuery,
                    other.to_owned(),
                    format!(
                        "unknown query parameter {other:?} (the feed takes after, and wait or wait_ms)"
                    ),
                ));
            }
        }
    }
    let after = after.ok_or_else(|| {
        ApiError::at(
            ErrorCode::InvalidQuery,
            "after",
            "after is required: the sequence number of the last entry the caller holds (0 for none)",
        )
    })?;
    Ok((after, wait))
}

fn binary(content_type: &'static str, body: Body) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// `GET /replication/v1/feed`.
pub(crate) async fn feed(
    State(app): State<AppState>,
    NodeAuth(node): NodeAuth,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let repl = replication(&app)?.clone();
    let (after, mut wait) = feed_query(raw.as_deref())?;
    // Held for the whole request; a node past its cap is answered without waiting.
    let _slot = if wait.is_zero() {
        None
    } else {
        let slot = repl.long_poll_slot(node.id);
        if slot.is_none() {
            wait = Duration::ZERO;
        }
        slot
    };
    let storage = app.coffer.storage().clone();
    let mut heads = storage.subscribe_head();
    let closing = repl.closing.clone();
    let deadline = tokio::time::Instant::now() + wait;
    let mut timed_out = wait.is_zero();
    loop {
        let mut head = *heads.borrow_and_update();
        if after > head {
            // The watch is raised right after COMMIT, so a reader can have been served entries
            // a moment before it moves: ask the log itself before refusing.
            if let Ok(state) = storage.log_state().await {
                head = head.max(state.head_seq);
            }
        }
        // A relay whose node got a snapshot forwarded from upstream (ahead of this relay's
        // head) is asked for what follows it: wait for the relay to catch up, up to the
        // long-poll, before refusing; but only up to the head the root's newest verified
        // statement names (a position past it cannot be caught up with, so it is refused at
        // once rather than holding the request).
        let waiting_for_head = after > head
            && !timed_out
            && repl.origin.relayed().is_some_and(|f| after <= f.head.seq);
        if after > head && !waiting_for_head {
            // Named in headers too, so that an edge can tell an upstream of another cluster
            // (refused) from one that is merely behind it.
            let cluster = storage.log_state().await.ok().and_then(|s| s.cluster_id);
            let mut res = ApiError::at(
                ErrorCode::InvalidQuery,
                "after",
                format!("after={after} is beyond the head of this log ({head})"),
            )
            .into_response();
            let headers = res.headers_mut();
            headers.insert(HEAD_HEADER, HeaderValue::from(head));
            if let Some(c) = cluster
                && let Ok(v) = HeaderValue::from_str(&hex::encode(c))
            {
                headers.insert(CLUSTER_HEADER, v);
            }
            return Ok(res);
        }
        if !waiting_for_head && (after < head || timed_out || *closing.borrow()) {
            let state = storage.log_state().await.map_err(storage_error)?;
            let Some(cluster_id) = state.cluster_id else {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "this node holds no replica yet; retry later",
                ));
            };
            let body = if after < head {
                match storage.feed_after(after, MAX_ENTRIES).await {
                    Ok((mut entries, mut signatures)) => {
                        let mut bytes = 0;
                        let mut keep = entries
                            .iter()
                            .take_while(|e| {
                                bytes += e.payload.len();
                                bytes <= MAX_ANSWER_BYTES
                            })
                            .count()
                            .max(1);
                        // End on a signed entry: a follower applies nothing past its last
                        // checkpoint. The last one within the budget; past it only when the
                        // budget holds none (the writer signs often enough that this reaches
                        // at most one job's entries past the budget).
                        let signed =
                            |seq: u64| signatures.binary_search_by_key(&seq, |s| s.seq).is_ok();
                        keep = match entries[..keep].iter().rposition(|e| signed(e.seq)) {
                            Some(i) => i + 1,
                            None => entries
                                .iter()
                                .enumerate()
                                .skip(keep)
                                .find(|(_, e)| signed(e.seq))
                                .map_or(entries.len(), |(i, _)| i + 1),
                        };
                        entries.truncate(keep);
                        if let Some(last) = entries.last() {
                            let last = last.seq;
                            signatures.retain(|s| s.seq <= last);
                        }
                        FeedBody::Entries {
                            entries,
                            signatures,
                        }
                    }
                    Err(StorageError::Compacted { base }) => FeedBody::Compacted { base_seq: base },
                    Err(e) => return Err(storage_error(e)),
                }
            } else {
                FeedBody::Entries {
                    entries: Vec::new(),
                    signatures: Vec::new(),
                }
            };
            let last = match &body {
                FeedBody::Entries { entries: v, .. } => v.last().map_or(head, |e| e.seq.max(head)),
                FeedBody::Compacted { .. } => head,
            };
            let freshness = repl.statement(
                &app.coffer,
                cluster_id,
                Position {
                    seq: state.head_seq,
                    hash: state.head_hash,
                },
            );
            let answer = FeedAnswer {
                cluster_id,
                head_seq: last.max(state.head_seq),
                origin_ms: repl.origin.now_ms(),
                freshness,
                body,
            };
            return Ok(binary(FEED_CONTENT_TYPE, Body::from(answer.encode())));
        }
        tokio::select! {
            changed = heads.changed() => {
                if changed.is_err() {
                    // The storage is closing: answer with what there is.
                    timed_out = true;
                }
            }
            () = tokio::time::sleep_until(deadline) => timed_out = true,
            () = closed(closing.clone()) => timed_out = true,
        }
    }
}

/// Resolves once the server starts shutting down (never, if nobody can tell it to).
async fn closed(mut closing: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *closing.borrow_and_update() {
            return;
        }
        if closing.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// `GET /replication/v1/feed-key`: the key edges pin. The control plane answers with its own
/// feed-signing public key; a relay with the key it pinned (the root's: it has none).
pub(crate) async fn feed_key(
    State(app): State<AppState>,
    NodeAuth(_node): NodeAuth,
) -> ApiResult<Response> {
    let repl = replication(&app)?.clone();
    let key = match repl.origin {
        Origin::Root => app.coffer.feed_public_key(),
        Origin::Relay(_) => repl.feed_key.as_ref().and_then(|k| k.get().copied()),
    };
    let Some(key) = key else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "this node has no feed-signing key to tell; retry later",
        ));
    };
    Ok(
        axum::Json(Envelope::ok(coffer_api::replication::FeedKeyInfo {
            public_key: hex::encode(key),
        }))
        .into_response(),
    )
}

/// The bearer token of a request (already authenticated by `NodeAuth`).
fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "missing bearer token"))
}

/// `GET /replication/v1/snapshot`: streamed as it is read, so its size is not bounded by
/// memory. A read failure midway ends the body without its closing frame, which the edge
/// refuses as truncated.
pub(crate) async fn snapshot(
    State(app): State<AppState>,
    NodeAuth(node): NodeAuth,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let repl = replication(&app)?.clone();
    let slot = repl.snapshot_slot(node.id)?;
    if let Some(from) = &repl.snapshots_from {
        // A relay's own snapshot would be unsigned, which every edge refuses: it passes on
        // its upstream's, signed by the root, holding the slot while it streams.
        tracing::info!(node = %node.name, "forwarding a snapshot from upstream");
        let body = from.snapshot(bearer(&headers)?).await?;
        let stream = futures_util::StreamExt::map(body.into_data_stream(), move |chunk| {
            let _held = &slot;
            chunk
        });
        return Ok(binary(SNAPSHOT_CONTENT_TYPE, Body::from_stream(stream)));
    }
    let deadline = tokio::time::Instant::now() + repl.limits.deadline;
    let stall = repl.limits.stall;
    let storage = app.coffer.storage().clone();
    let signer = app
        .coffer
        .feed_public_key()
        .is_some()
        .then(|| app.coffer.clone());
    let (tx, mut parts) = tokio::sync::mpsc::channel::<SnapshotPart>(4096);
    let producer = tokio::spawn(async move { storage.snapshot(tx).await });
    let Some(SnapshotPart::Header {
        cluster_id,
        seq,
        hash,
        count,
    }) = parts.recv().await
    else {
        let why = match producer.await {
            Ok(Err(e)) => e.to_string(),
            _ => "no header".to_owned(),
        };
        tracing::error!(error = %why, "snapshot could not start");
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "no snapshot can be produced right now; retry later",
        ));
    };
    tracing::info!(node = %node.name, seq, count, "serving a snapshot");
    let node_name = node.name.clone();
    let position = Position { seq, hash };
    let origin_ms = repl.origin.now_ms();
    let (chunks_tx, chunks) = tokio::sync::mpsc::channel::<Bytes>(8);
    let stream_node = node_name.clone();
    let stream = async move {
        // Held until the body is produced (or abandoned).
        let _slot = slot;
        let node_name = stream_node;
        let mut digest = SnapshotDigest::new(position, count);
        let mut buf = Vec::with_capacity(SNAPSHOT_CHUNK + 4096);
        Frame::SnapshotHeader {
            cluster_id,
            position,
            count,
            origin_ms,
        }
        .encode(&mut buf);
        while let Some(part) = parts.recv().await {
            let SnapshotPart::Item(item) = part else {
                tracing::error!("snapshot producer sent a second header; ending the body");
                return;
            };
            digest.update(&item);
            Frame::Item(item).encode(&mut buf);
            if buf.len() >= SNAPSHOT_CHUNK {
                let chunk = std::mem::replace(&mut buf, Vec::with_capacity(SNAPSHOT_CHUNK + 4096));
                match tokio::time::timeout(stall, chunks_tx.send(Bytes::from(chunk))).await {
                    Ok(Ok(())) => {}
                    // The client went away, or stopped reading: dropping `parts` stops the
                    // producer and ends its read transaction.
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::warn!(node = %node_name, "a snapshot reader stalled; abandoning the snapshot");
                        return;
                    }
                }
            }
        }
        match producer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "snapshot read failed midway; ending the body early");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "snapshot producer failed; ending the body early");
                return;
            }
        }
        let Some(digest) = digest.finish() else {
            tracing::error!(
                "snapshot producer sent a wrong number of items; ending the body early"
            );
            return;
        };
        // The control plane signs. A relay has no key: `coffer edge` relays forward their
        // upstream's snapshot instead (above); one that did not would serve this unsigned,
        // and every edge would refuse it.
        let signature = signer.as_ref().and_then(|c| {
            c.feed_signature(&coffer_replication::sign::snapshot_message(
                &cluster_id,
                position,
                count,
                &digest,
                origin_ms,
            ))
        });
        Frame::SnapshotEnd { digest, signature }.encode(&mut buf);
        let _ = tokio::time::timeout(stall, chunks_tx.send(Bytes::from(buf))).await;
    };
    tokio::spawn(async move {
        // Past the deadline the stream is dropped: with it the slot, and `parts`, which stops
        // the producer and ends its read transaction.
        if tokio::time::timeout_at(deadline, stream).await.is_err() {
            tracing::warn!(node = %node_name, "a snapshot ran past its deadline; abandoning it");
        }
    });
    let stream = futures_util::stream::unfold(chunks, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok(binary(SNAPSHOT_CONTENT_TYPE, Body::from_stream(stream)))
}

/// `POST /replication/v1/access`.
pub(crate) async fn access(
    State(app): State<AppState>,
    NodeAuth(node): NodeAuth,
    body: Bytes,
) -> ApiResult<Response> {
    let repl = replication(&app)?.clone();
    if body.len() > MAX_ACCESS_BODY {
        return Err(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("an access batch is at most {MAX_ACCESS_BODY} bytes"),
        ));
    }
    let batch: AccessBatch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("not an access batch: {e}"),
        )
    })?;
    let observed_by = observer(&batch)?.unwrap_or_else(|| Observer {
        node_id: node.id,
        node_name: node.name.clone(),
    });
    let (batch_id, events) = decode_batch(batch)?;
    let recorded = repl
        .access
        .deliver(&node, observed_by, batch_id, events)
        .await?;
    Ok(axum::Json(Envelope::ok(AccessReceipt { recorded })).into_response())
}

mod batch;
pub use batch::{decode_batch, encode_batch, observer, set_observer};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_queries_are_checked() {
        assert_eq!(feed_query(Some("after=5")).unwrap(), (5, Duration::ZERO));
        assert_eq!(
            feed_query(Some("after=5&wait_ms=250")).unwrap(),
            (5, Duration::from_millis(250))
        );
        assert_eq!(feed_query(Some("after=0&wait=600")).unwrap(), (0, MAX_WAIT));
        for bad in [
            None,
            Some("wait=1"),
            Some("after=-1"),
            Some("after=1&x=2"),
            Some("after=1&wait=z"),
        ] {
            assert!(feed_query(bad).is_err(), "{bad:?}");
        }
    }
}
