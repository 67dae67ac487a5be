//! Access events observed at this edge, on their way to the control plane's audit log.
//!
//! Every interval the runtime reads aggregated in memory become batches (at most
//! [`EVENTS_PER_BATCH`] events each) with random ids, written to the local outbox (SQLite)
//! before anything is sent; the outbox is then delivered upstream, oldest first, and a batch
//! leaves it only once an upstream acknowledged it. A relay acknowledges a batch from below
//! only once its own upstream did (it forwards it at once, keeping the id and naming the edge
//! that served the reads), so the acknowledgement always comes from the control plane, which
//! records each id once: a retry after a lost acknowledgement or a crash never records a read
//! twice (at least once, without duplicates).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use coffer_api::replication::{AccessBatch, Observer};
use coffer_core::{AccessEvent, Coffer};
use coffer_server::ApiError;
use coffer_server::replication::AccessSink;
use coffer_storage::{NodeRecord, SqliteStorage};

use crate::status::EdgeStatus;
use crate::upstream::{FetchError, Upstreams};

/// How often reads are batched and the outbox is delivered.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);
/// Batches read from the outbox at a time.
const PER_READ: usize = 16;
/// Events per batch at most (a batch body stays well under a proxy's usual body limit).
pub(crate) const EVENTS_PER_BATCH: usize = 2_000;
const _: () = assert!(EVENTS_PER_BATCH <= coffer_api::replication::MAX_EVENTS);
/// How long one round may keep delivering (the next round goes on).
const ROUND_BUDGET: Duration = Duration::from_secs(8);

/// Why access events could not be put in the outbox (they stay in memory).
#[derive(Debug, thiserror::Error)]
enum StashError {
    #[error("encoding the batch: {0}")]
    Encode(serde_json::Error),
    #[error("the outbox: {0}")]
    Outbox(coffer_storage::StorageError),
}

/// Moves the reads noted since the last call into the outbox. On failure they go back into
/// the in-memory log for the next round.
pub(crate) async fn stash(coffer: &Coffer, storage: &SqliteStorage) {
    let mut events = coffer.take_access_events();
    while !events.is_empty() {
        let rest = events.split_off(events.len().min(EVENTS_PER_BATCH));
        let id = coffer_crypto::random_array::<16>();
        let kept = match serde_json::to_vec(&AccessBatch::encode(id, &events)) {
            Ok(body) => storage
                .outbox_put(id, body)
                .await
                .map_err(StashError::Outbox),
            Err(e) => Err(StashError::Encode(e)),
        };
        if let Err(e) = kept {
            tracing::error!(error = %e, "cannot keep access events in the outbox; kept in memory");
            events.extend(rest);
            coffer.restore_access_events(events);
            return;
        }
        events = rest;
    }
}

/// Sends what the outbox holds to the current upstream; stops at the first failure (the rest
/// waits for the next round).
pub(crate) async fn deliver(storage: &SqliteStorage, upstreams: &Upstreams, status: &EdgeStatus) {
    let started = tokio::time::Instant::now();
    while started.elapsed() < ROUND_BUDGET {
        let pending = match storage.outbox_list(PER_READ).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the access-event outbox");
                return;
            }
        };
        if pending.is_empty() || !deliver_some(storage, upstreams, status, pending).await {
            return;
        }
    }
}

/// Delivers `pending` in order; `false` at the first failure.
async fn deliver_some(
    storage: &SqliteStorage,
    upstreams: &Upstreams,
    status: &EdgeStatus,
    pending: Vec<([u8; 16], Vec<u8>)>,
) -> bool {
    let upstream = status.current.load(Ordering::Acquire);
    for (id, body) in pending {
        match upstreams.deliver_access(upstream, body).await {
            Ok(()) => {}
            Err(e) if e.is_revocation() => {
                status.revoke(format!(
                    "{} refused the node token: {e}",
                    upstreams.urls[upstream]
                ));
                return false;
            }
            // The upstream will never take this batch (malformed to it): keeping it would
            // block every later one. Counted, so that the loss is visible.
            Err(FetchError::Status {
                status: 400,
                message,
                ..
            }) => {
                tracing::error!(batch = %hex::encode(id), %message, "an upstream refused an access batch as malformed; dropping it");
                status
                    .access_batches_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(upstream = %upstreams.urls[upstream], error = %e, "could not deliver access events; retrying later");
                return false;
            }
        }
        if let Err(e) = storage.outbox_delete(vec![id]).await {
            tracing::error!(error = %e, "cannot remove a delivered access batch from the outbox");
            return false;
        }
    }
    true
}

/// A relay's sink: a batch from an edge below is forwarded to this relay's current upstream at
/// once, still naming the edge that served the reads, and acknowledged only once that upstream
/// acknowledged it; until then the edge below keeps it in its own outbox. Nothing is kept here,
/// so a relay that loses power loses no one's events.
#[derive(Debug)]
pub(crate) struct RelayAccess {
    pub upstreams: Upstreams,
    pub status: Arc<EdgeStatus>,
}

impl AccessSink for RelayAccess {
    fn deliver<'a>(
        &'a self,
        _node: &'a NodeRecord,
        observed_by: Observer,
        batch_id: [u8; 16],
        events: Vec<AccessEvent>,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ApiError>> + Send + 'a>> {
        Box::pin(async move {
            let mut batch = AccessBatch::encode(batch_id, &events);
            batch.set_observer(&observed_by);
            let body = serde_json::to_vec(&batch).map_err(|e| {
                ApiError::new(coffer_api::ErrorCode::Internal, format!("encoding: {e}"))
            })?;
            let upstream = self.status.current.load(Ordering::Acquire);
            match self.upstreams.deliver_access(upstream, body).await {
                Ok(()) => Ok(true),
                Err(FetchError::Status {
                    status: 400,
                    message,
                    ..
                }) => Err(ApiError::new(
                    coffer_api::ErrorCode::InvalidBatch,
                    format!("the control plane refused the batch: {message}"),
                )),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot forward an access batch upstream");
                    Err(ApiError::new(
                        coffer_api::ErrorCode::Unavailable,
                        "cannot forward the batch upstream right now; retry later",
                    ))
                }
            }
        })
    }
}
