//! What an edge reports about itself (`GET /healthz`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use coffer_replication::Phase;
use coffer_replication::wire::ClusterId;

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
    /// Access batches an upstream refused as malformed (dropped rather than retried forever).
    pub(crate) access_batches_dropped: AtomicU64,
    /// The freshest heartbeat origin (Unix ms) received: a relay stamps its own heartbeats with it.
    pub(crate) freshest_origin: std::sync::Arc<AtomicU64>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    cluster: Option<ClusterId>,
    phase: Option<Phase>,
    last_heard: Option<Instant>,
    last_error: Option<String>,
    /// The last refused answer or local failure; kept (unlike `last_error`, which the next
    /// good answer clears) so that an operator sees what happened.
    last_alarm: Option<(String, Instant)>,
}

impl EdgeStatus {
    pub(crate) fn new(upstreams: Vec<String>, cluster: Option<ClusterId>) -> EdgeStatus {
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
            access_batches_dropped: AtomicU64::new(0),
            freshest_origin: std::sync::Arc::new(AtomicU64::new(0)),
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

    pub(crate) fn heard(&self, head: u64) {
        self.upstream_head.store(head, Ordering::Release);
        let mut inner = self.inner();
        inner.last_heard = Some(Instant::now());
        inner.last_error = None;
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

    /// The health document; 200 once ready, 503 before.
    pub fn report(&self) -> Response {
        let inner = self.inner();
        let ready = self.is_ready();
        let body = serde_json::json!({
            "status": if ready { "ok" } else { "syncing" },
            "role": "edge",
            "ready": ready,
            "cluster_id": inner.cluster.map(hex::encode),
            "applied_seq": self.applied.load(Ordering::Acquire),
            "upstream_head": self.upstream_head.load(Ordering::Acquire),
            // Seconds since the last entry or heartbeat from the current upstream.
            "lag_seconds": inner.last_heard.map(|t| t.elapsed().as_secs_f64()),
            "upstream": self.upstreams.get(self.current.load(Ordering::Acquire)),
            "phase": inner.phase.map(|p| match p {
                Phase::NeedsSnapshot => "bootstrapping",
                Phase::Following => "following",
                Phase::Resyncing => "resyncing",
            }),
            "alarms": self.alarms.load(Ordering::Relaxed),
            "last_alarm": inner.last_alarm.as_ref().map(|(what, _)| what),
            "last_alarm_seconds_ago": inner.last_alarm.as_ref().map(|(_, at)| at.elapsed().as_secs()),
            "last_error": inner.last_error,
            "access_batches_dropped": self.access_batches_dropped.load(Ordering::Relaxed),
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, Json(body)).into_response()
    }
}
