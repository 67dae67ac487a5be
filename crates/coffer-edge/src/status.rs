//! What an edge reports about itself (`GET /healthz`), and whether it may serve at all.
//!
//! The health, from best to worst:
//! - `ok`: serving, and the current upstream answered within the staleness;
//! - `degraded`: serving and in touch, but the last request to the upstream failed or an
//!   alarm was raised in the last [`ALARM_MEMORY`];
//! - `stale`: serving what it has, but no upstream has answered for longer than the staleness
//!   (static stability: a cut-off edge keeps serving; with `--max-staleness` it stops once cut
//!   off for that long, and `/healthz` answers 503);
//! - `syncing`: no replica yet (503);
//! - `revoked`: told by its upstream that its node was revoked; serves nothing and holds no
//!   replica (503).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use coffer_replication::ClusterId;
use coffer_replication::Phase;
use coffer_replication::wire::unix_ms;

/// How long a raised alarm keeps the health at `degraded`.
pub const ALARM_MEMORY: Duration = Duration::from_secs(300);

/// The health `/healthz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    Degraded,
    Stale,
    Syncing,
    Revoked,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Degraded => "degraded",
            Health::Stale => "stale",
            Health::Syncing => "syncing",
            Health::Revoked => "revoked",
        }
    }
}

/// Shared between the driver (which writes it) and `/healthz` (which reads it).
#[derive(Debug)]
pub struct EdgeStatus {
    pub(crate) upstreams: Vec<String>,
    /// Index of the current upstream.
    pub(crate) current: AtomicUsize,
    applied: AtomicU64,
    /// The applied seq, for those who wait for it (benchmarks, tests).
    applied_watch: tokio::sync::watch::Sender<u64>,
    upstream_head: AtomicU64,
    /// Synced: holds a replica and has caught up with its upstream once (or restarted with a
    /// replica: it serves what it has while it catches up).
    synced: AtomicBool,
    /// The runtime API is being served from the replica. Ready = synced and serving.
    serving: AtomicBool,
    /// Signalled when the replica becomes synced, to build the serving side at once.
    synced_notify: tokio::sync::Notify,
    pub(crate) alarms: AtomicU64,
    /// Switches from one upstream to another.
    pub(crate) failovers: AtomicU64,
    /// Access batches an upstream refused as malformed (dropped rather than retried forever).
    pub(crate) access_batches_dropped: AtomicU64,
    /// The newest freshness statement the follower verified: a relay forwards it unchanged.
    pub(crate) latest_freshness: coffer_server::replication::SharedFreshness,
    /// When this process started (Unix ms): the lag of an edge that has heard from no upstream
    /// since it started counts from here.
    started_ms: u64,
    /// The root's clock (Unix ms) as of which the applied replica is known current: the origin
    /// of the newest verified freshness statement (or signed snapshot) whose head is applied;
    /// 0: none yet. Only signed statements move it, so neither a relay cut off from the root
    /// nor one (or anyone on the path) that withholds entries makes the edge look fresh. An
    /// atomic: serving checks it per request when `max_staleness` is set.
    heard_origin_ms: AtomicU64,
    /// Past this without an upstream, the edge is `stale`.
    staleness: Duration,
    /// Past this without an upstream, the edge stops serving (off by default).
    max_staleness: Option<Duration>,
    /// Told that its node was revoked: serves nothing from then on.
    revoked: AtomicBool,
    revoked_notify: tokio::sync::Notify,
    /// The root's feed-signing key this edge pinned (given, stored, or learnt at its first
    /// connection); a relay tells it to the nodes below.
    pub(crate) feed_key: std::sync::Arc<std::sync::OnceLock<[u8; 32]>>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    cluster: Option<ClusterId>,
    phase: Option<Phase>,
    last_error: Option<String>,
    /// The last refused answer or local failure; kept (unlike `last_error`, which the next
    /// good answer clears) so that an operator sees what happened.
    last_alarm: Option<(String, Instant)>,
    /// Why the edge counts itself revoked.
    revoked: Option<String>,
}

impl EdgeStatus {
    pub(crate) fn new(
        upstreams: Vec<String>,
        cluster: Option<ClusterId>,
        staleness: Duration,
        max_staleness: Option<Duration>,
    ) -> EdgeStatus {
        EdgeStatus {
            upstreams,
            current: AtomicUsize::new(0),
            applied: AtomicU64::new(0),
            applied_watch: tokio::sync::watch::Sender::new(0),
            upstream_head: AtomicU64::new(0),
            synced: AtomicBool::new(cluster.is_some()),
            serving: AtomicBool::new(false),
            synced_notify: tokio::sync::Notify::new(),
            alarms: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            access_batches_dropped: AtomicU64::new(0),
            latest_freshness: std::sync::Arc::default(),
            started_ms: unix_ms(),
            heard_origin_ms: AtomicU64::new(0),
            staleness,
            max_staleness,
            revoked: AtomicBool::new(false),
            revoked_notify: tokio::sync::Notify::new(),
            feed_key: std::sync::Arc::default(),
            inner: Mutex::new(Inner {
                cluster,
                ..Inner::default()
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_applied(&self, seq: u64) {
        self.applied.store(seq, Ordering::Release);
        self.applied_watch.send_replace(seq);
        if self.inner().cluster.is_some() && seq >= self.upstream_head.load(Ordering::Acquire) {
            self.mark_synced();
        }
    }

    /// The current upstream gave a well-formed answer.
    pub(crate) fn heard(&self) {
        self.inner().last_error = None;
    }

    /// What the follower verified: the origin as of which the applied state is current (an
    /// origin ahead of this node's clock counts as now), and the head the newest statement
    /// names.
    pub(crate) fn set_fresh(&self, as_of_ms: Option<u64>, head: u64) {
        self.upstream_head.store(head, Ordering::Release);
        if let Some(origin) = as_of_ms {
            self.heard_origin_ms
                .fetch_max(origin.min(unix_ms()), Ordering::AcqRel);
        }
    }

    /// How old the replica's state is known to be: the time since the origin of the newest
    /// signed freshness statement whose head is applied; since the edge started, if none is
    /// yet.
    pub fn lag(&self) -> Duration {
        let heard = self.heard_origin_ms.load(Ordering::Acquire);
        let since = if heard == 0 { self.started_ms } else { heard };
        Duration::from_millis(unix_ms().saturating_sub(since))
    }

    /// Whether the edge answers runtime reads now: its replica is ready, it is not revoked,
    /// and it is not cut off past `--max-staleness`. What `/healthz` reports as `ready`, what
    /// the front checks before it serves, and the `coffer_edge_serving` metric.
    pub fn serves(&self) -> bool {
        self.is_ready() && !self.is_revoked() && self.cut_off().is_none()
    }

    /// Cut off from every upstream for longer than `--max-staleness`: the edge stops serving
    /// until an upstream answers again.
    pub fn cut_off(&self) -> Option<Duration> {
        let max = self.max_staleness?;
        let lag = self.lag();
        (lag > max).then_some(lag)
    }

    /// Counts the edge revoked (its upstream said so, or the feed revoked its node): it
    /// serves nothing from now on, and whoever waits in [`EdgeStatus::wait_revoked`] discards
    /// the replica.
    pub(crate) fn revoke(&self, why: String) {
        {
            let mut inner = self.inner();
            if inner.revoked.is_some() {
                return;
            }
            inner.revoked = Some(why);
        }
        self.revoked.store(true, Ordering::Release);
        self.revoked_notify.notify_waiters();
    }

    /// Why the edge counts itself revoked.
    pub fn revoked_reason(&self) -> Option<String> {
        self.inner().revoked.clone()
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Waits until the edge is revoked.
    pub(crate) async fn wait_revoked(&self) {
        loop {
            let notified = self.revoked_notify.notified();
            if self.is_revoked() {
                return;
            }
            notified.await;
        }
    }

    /// The health `/healthz` reports now.
    pub fn health(&self) -> Health {
        if self.is_revoked() {
            return Health::Revoked;
        }
        if !self.is_ready() {
            return Health::Syncing;
        }
        if self.lag() > self.staleness {
            return Health::Stale;
        }
        let inner = self.inner();
        let recent_alarm = inner
            .last_alarm
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < ALARM_MEMORY);
        if inner.last_error.is_some() || recent_alarm {
            Health::Degraded
        } else {
            Health::Ok
        }
    }

    pub(crate) fn mark_synced(&self) {
        if self.inner().cluster.is_some() && !self.synced.swap(true, Ordering::AcqRel) {
            self.synced_notify.notify_waiters();
        }
    }

    pub(crate) fn set_cluster(&self, cluster: ClusterId) {
        self.inner().cluster = Some(cluster);
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.inner().phase = Some(phase);
    }

    pub(crate) fn set_error(&self, error: String) {
        self.inner().last_error = Some(error);
    }

    /// Counts a refusal of upstream data or a local failure to apply it.
    pub(crate) fn alarm(&self, what: String) {
        self.alarms.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner();
        inner.last_error = Some(what.clone());
        inner.last_alarm = Some((what, Instant::now()));
    }

    /// Ready: the replica is synced and the runtime API serves it. `/healthz` answers 200 from
    /// then on.
    pub fn is_ready(&self) -> bool {
        self.serving.load(Ordering::Acquire) && self.synced.load(Ordering::Acquire)
    }

    pub(crate) fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Waits until the replica is synced.
    pub(crate) async fn wait_synced(&self) {
        loop {
            let notified = self.synced_notify.notified();
            if self.is_synced() {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn mark_serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    /// Watches the applied seq: it changes once entries (or a snapshot) are durably applied,
    /// and the next runtime read serves them.
    pub fn subscribe_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied_watch.subscribe()
    }

    pub fn applied_seq(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The health document: 200 while the edge serves (`ok`, `degraded`, `stale`), 503 when
    /// it does not (`syncing`, `revoked`, or `stale` past `--max-staleness`).
    pub fn report(&self) -> Response {
        let health = self.health();
        let ready = self.serves();
        let lag = self.lag().as_secs_f64();
        let inner = self.inner();
        let report = Report {
            status: health.as_str(),
            role: "edge",
            ready,
            revoked: inner.revoked.as_deref(),
            cluster_id: inner.cluster.map(hex::encode),
            feed_key: self.feed_key.get().map(hex::encode),
            applied_seq: self.applied.load(Ordering::Acquire),
            upstream_head: self.upstream_head.load(Ordering::Acquire),
            lag_seconds: lag,
            staleness_seconds: self.staleness.as_secs_f64(),
            max_staleness_seconds: self.max_staleness.map(|d| d.as_secs_f64()),
            upstream: self
                .upstreams
                .get(self.current.load(Ordering::Acquire))
                .map(String::as_str),
            phase: inner.phase.map(|p| match p {
                Phase::NeedsSnapshot => "bootstrapping",
                Phase::Following => "following",
                Phase::Resyncing => "resyncing",
            }),
            alarms: self.alarms.load(Ordering::Relaxed),
            last_alarm: inner.last_alarm.as_ref().map(|(what, _)| what.as_str()),
            last_alarm_seconds_ago: inner
                .last_alarm
                .as_ref()
                .map(|(_, at)| at.elapsed().as_secs()),
            last_error: inner.last_error.as_deref(),
            access_batches_dropped: self.access_batches_dropped.load(Ordering::Relaxed),
        };
        let body = serde_json::to_vec(&report).expect("the health document serializes");
        drop(inner);
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// The health document, serialized straight from its fields: load balancers ask for it every
/// few seconds and benchmarks use it as the edge's ceiling, so it builds no intermediate JSON
/// tree (which cost two thirds of the answer, docs/benchmarks.md).
#[derive(serde::Serialize)]
struct Report<'a> {
    status: &'static str,
    role: &'static str,
    ready: bool,
    revoked: Option<&'a str>,
    cluster_id: Option<String>,
    /// The pinned key: everything applied verified under it (null until it is known).
    feed_key: Option<String>,
    applied_seq: u64,
    upstream_head: u64,
    /// The age of the freshest state heard of (see `EdgeStatus::lag`).
    lag_seconds: f64,
    staleness_seconds: f64,
    max_staleness_seconds: Option<f64>,
    upstream: Option<&'a str>,
    phase: Option<&'static str>,
    alarms: u64,
    last_alarm: Option<&'a str>,
    last_alarm_seconds_ago: Option<u64>,
    last_error: Option<&'a str>,
    access_batches_dropped: u64,
}
