//! Access events observed at this edge, on their way to the control plane's audit log.
//!
//! Every interval the runtime reads aggregated in memory become one batch with a random id,
//! written to the local outbox (SQLite) before anything is sent; the outbox is then delivered
//! upstream, oldest first, and a batch leaves it only once an upstream acknowledged it. A
//! relay puts batches it receives into its own outbox under the same id, and the control plane
//! records each id once, so a retry after a lost acknowledgement or a crash never records a
//! read twice (at least once, without duplicates).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use coffer_core::{AccessEvent, Coffer};
use coffer_server::ApiError;
use coffer_server::replication::{AccessSink, Observer, encode_batch, set_observer};
use coffer_storage::{NodeRecord, SqliteStorage};

use crate::status::EdgeStatus;
use crate::upstream::{FetchError, Upstreams};

/// How often reads are batched and the outbox is delivered.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);
/// Batches delivered per round at most.
const PER_ROUND: usize = 64;

/// Moves the reads noted since the last call into the outbox. On failure they go back into
/// the in-memory log for the next round.
pub(crate) async fn stash(coffer: &Coffer, storage: &SqliteStorage) {
    let events = coffer.take_access_events();
    if events.is_empty() {
        return;
    }
    let id = coffer_crypto::random_array::<16>();
    let body = match serde_json::to_vec(&encode_batch(id, &events)) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode access events");
            coffer.restore_access_events(events);
            return;
        }
    };
    if let Err(e) = storage.outbox_put(id, body).await {
        tracing::error!(error = %e, "cannot keep access events in the outbox; kept in memory");
        coffer.restore_access_events(events);
    }
}

/// Sends what the outbox holds to the current upstream; stops at the first failure (the rest
/// waits for the next round).
pub(crate) async fn deliver(storage: &SqliteStorage, upstreams: &Upstreams, status: &EdgeStatus) {
    let pending = match storage.outbox_list(PER_ROUND).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the access-event outbox");
            return;
        }
    };
    let upstream = status.current.load(Ordering::Acquire);
    for (id, body) in pending {
        match upstreams.deliver_access(upstream, body).await {
            Ok(()) => {}
            // The upstream will never take this batch (it is malformed to it): keeping it
            // would block every later one.
            Err(FetchError::Status {
                status, message, ..
            }) if status == 400 || status == 413 => {
                tracing::error!(batch = %hex::encode(id), status, %message, "an upstream refused an access batch; dropping it");
            }
            Err(e) => {
                tracing::warn!(upstream = %upstreams.urls[upstream], error = %e, "could not deliver access events; retrying later");
                return;
            }
        }
        if let Err(e) = storage.outbox_delete(vec![id]).await {
            tracing::error!(error = %e, "cannot remove a delivered access batch from the outbox");
            return;
        }
    }
}

/// A relay's sink: batches from the edges below go into its own outbox, unchanged in id, and
/// travel on with its own.
#[derive(Debug)]
pub(crate) struct RelayAccess(pub Arc<SqliteStorage>);

impl AccessSink for RelayAccess {
    fn deliver<'a>(
        &'a self,
        _node: &'a NodeRecord,
        observed_by: Observer,
        batch_id: [u8; 16],
        events: Vec<AccessEvent>,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ApiError>> + Send + 'a>> {
        Box::pin(async move {
            let mut batch = encode_batch(batch_id, &events);
            // Upstream, the batch is delivered by this relay; it keeps naming the edge that
            // served the reads.
            set_observer(&mut batch, &observed_by);
            let body = serde_json::to_vec(&batch).map_err(|e| {
                ApiError::new(coffer_api::ErrorCode::Internal, format!("encoding: {e}"))
            })?;
            self.0.outbox_put(batch_id, body).await.map_err(|e| {
                tracing::error!(error = %e, "cannot keep a relayed access batch");
                ApiError::new(
                    coffer_api::ErrorCode::Unavailable,
                    "cannot keep the batch; retry later",
                )
            })?;
            Ok(true)
        })
    }
}
