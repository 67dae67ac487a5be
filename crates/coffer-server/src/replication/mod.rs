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
//!
//! This module holds what the handlers share ([`Replication`], where heartbeats come from, the
//! snapshot limits, where delivered access events and a relay's forwarded requests go); one
//! module per endpoint serves it (`feed`, `snapshot`, `access`). The protocol is not here: the
//! feed's (frames, media types, headers, origin times) is `coffer_replication::wire`'s, the
//! access batch's codec `coffer_api::replication`'s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use coffer_api::ErrorCode;
use coffer_api::replication::{NodeKeyReceipt, NodeKeyRegistration, Observer};
use coffer_core::{AccessEvent, Coffer};
use coffer_replication::Position;
use coffer_replication::sign::{Freshness, freshness_message};
use coffer_replication::wire::unix_ms;
use coffer_storage::{NodeRecord, StorageError};
use coffer_types::{AccountId, TokenId};

use crate::error::ApiError;

pub(crate) mod access;
pub(crate) mod feed;
pub(crate) mod snapshot;

/// How long an edge is asked to wait before asking again for a snapshot it was refused.
const SNAPSHOT_RETRY_SECS: u64 = 5;

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
    _claim: NodeClaim,
}

/// How many of something (snapshots, long-polls) each node holds now.
#[derive(Debug, Default, Clone)]
struct PerNode(Arc<std::sync::Mutex<std::collections::HashMap<TokenId, usize>>>);

impl PerNode {
    /// One more for `node`, unless it holds `max` already (then how many it holds).
    fn claim(&self, node: TokenId, max: usize) -> Result<NodeClaim, usize> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.get(&node).copied().unwrap_or(0);
        if mine >= max {
            return Err(mine);
        }
        held.insert(node, mine + 1);
        Ok(NodeClaim {
            node,
            held: self.clone(),
        })
    }
}

/// A node's claim on one of what a [`PerNode`] counts, given back when dropped.
#[derive(Debug)]
struct NodeClaim {
    node: TokenId,
    held: PerNode,
}

impl Drop for NodeClaim {
    fn drop(&mut self) {
        let mut held = self.held.0.lock().unwrap_or_else(|p| p.into_inner());
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
    per_node: PerNode,
    /// On a relay: where node-key registrations go (`crate::node_keys`).
    node_keys: Option<Arc<dyn NodeKeyForward>>,
    /// On a relay: the root's feed key it pinned (set once it knows it), served to the nodes
    /// below as the root's.
    feed_key: Option<Arc<std::sync::OnceLock<[u8; 32]>>>,
    /// On a relay: where snapshots come from (its own upstream's, passed on byte for byte, so
    /// that they carry the root's signature).
    snapshots_from: Option<Arc<dyn SnapshotForward>>,
    /// The control plane's latest freshness statement and when it was signed.
    freshness: std::sync::Mutex<Option<(std::time::Instant, Freshness)>>,
    /// Feed long-polls each node holds now.
    long_polls: PerNode,
}

/// A node's claim on a long-poll, released when the request ends.
type LongPollSlot = NodeClaim;

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
            per_node: PerNode::default(),
            node_keys: None,
            feed_key: None,
            snapshots_from: None,
            freshness: std::sync::Mutex::new(None),
            long_polls: PerNode::default(),
        }
    }

    /// A long-poll slot for `node`, or `None` if it holds [`MAX_LONG_POLLS_PER_NODE`] already
    /// (its request is then answered without waiting).
    fn long_poll_slot(&self, node: TokenId) -> Option<LongPollSlot> {
        self.long_polls.claim(node, MAX_LONG_POLLS_PER_NODE).ok()
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
    pub fn forwarding_node_keys(mut self, forward: Arc<dyn NodeKeyForward>) -> Replication {
        self.node_keys = Some(forward);
        self
    }

    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    pub(crate) fn node_keys(&self) -> Option<&Arc<dyn NodeKeyForward>> {
        self.node_keys.as_ref()
    }

    /// A slot for `node`'s snapshot, or the 503 that says why there is none.
    fn snapshot_slot(&self, node: TokenId) -> Result<SnapshotSlot, ApiError> {
        let busy = |message: String| ApiError {
            retry_after: Some(SNAPSHOT_RETRY_SECS),
            ..ApiError::new(ErrorCode::Unavailable, message)
        };
        let claim = self.per_node.claim(node, self.limits.per_node).map_err(|mine| {
            busy(format!(
                "this node is receiving {mine} snapshot(s) already (at most {} at once); retry later",
                self.limits.per_node
            ))
        })?;
        // Refused here, the claim is given back as it drops.
        let Ok(permit) = self.snapshots.clone().try_acquire_owned() else {
            return Err(busy(format!(
                "{} snapshots are being served already; retry later",
                self.limits.max_concurrent
            )));
        };
        Ok(SnapshotSlot {
            _permit: permit,
            _claim: claim,
        })
    }
}

/// Where a relay sends the registrations of the nodes below it.
pub trait NodeKeyForward: Send + Sync + std::fmt::Debug {
    /// Sends `registration` upstream with `bearer` (the registering node's own token);
    /// answers what the upstream answered, its refusals included.
    fn forward<'a>(
        &'a self,
        bearer: &'a str,
        registration: NodeKeyRegistration,
    ) -> Pin<Box<dyn Future<Output = Result<NodeKeyReceipt, ApiError>> + Send + 'a>>;

    /// Sends the registration of a node's key for `account` upstream, as [`Self::forward`].
    fn forward_account<'a>(
        &'a self,
        bearer: &'a str,
        account: AccountId,
        registration: NodeKeyRegistration,
    ) -> Pin<Box<dyn Future<Output = Result<NodeKeyReceipt, ApiError>> + Send + 'a>>;
}

/// A binary answer (a feed answer or a snapshot) of `content_type`.
fn binary(content_type: &'static str, body: Body) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// A log that cannot be read: a 503 for the node (which retries), the cause in the log.
fn storage_error(e: StorageError) -> ApiError {
    tracing::error!(error = %e, "replication read failed");
    ApiError::new(
        ErrorCode::Unavailable,
        "the log is unavailable; retry later",
    )
}
