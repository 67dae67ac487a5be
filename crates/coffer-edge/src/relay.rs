//! What a relay passes on from its upstream rather than serving from its own replica:
//! snapshots. A relay holds no signing key, so a snapshot of its own replica would be
//! unsigned, which every edge refuses; it streams its upstream's (signed by the root, however
//! many relays up) byte for byte instead. Its own log can then be compacted freely: an edge
//! below that needs a snapshot gets the root's, and follows on from the relay's feed (which
//! waits, up to the long-poll, for the relay to catch up with that snapshot's position).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use coffer_api::ErrorCode;
use coffer_server::ApiError;
use coffer_server::replication::SnapshotForward;

use crate::node_key::upstream_refusal;
use crate::status::EdgeStatus;
use crate::upstream::{FetchError, Upstreams};

/// How long a node is asked to wait before asking again when no upstream gave a snapshot.
const RETRY_SECS: u64 = 5;

#[derive(Debug)]
pub(crate) struct RelaySnapshots {
    pub upstreams: Upstreams,
    pub status: Arc<EdgeStatus>,
}

impl SnapshotForward for RelaySnapshots {
    fn snapshot<'a>(
        &'a self,
        bearer: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Body, ApiError>> + Send + 'a>> {
        Box::pin(async move {
            let count = self.upstreams.urls.len();
            let first = self.status.current.load(Ordering::Acquire);
            let mut last = None;
            // The relay's current upstream first, then the others.
            for upstream in (0..count).map(|i| (first + i) % count) {
                match self.upstreams.forward_snapshot(upstream, bearer).await {
                    Ok(res) => {
                        let bounds = self.upstreams.snapshot_bounds();
                        // Item bytes plus each frame's 5-byte head, and the header and end.
                        let cap = bounds
                            .max_bytes
                            .saturating_add(bounds.max_items.saturating_mul(5))
                            .saturating_add(4096);
                        return Ok(stream(res, cap));
                    }
                    // The upstream refuses the node itself (revoked, unknown token): said
                    // as the upstream said it.
                    Err(FetchError::Status {
                        status: 401 | 403,
                        code,
                        message,
                        ..
                    }) => return Err(upstream_refusal(code, message)),
                    Err(e) => {
                        tracing::warn!(upstream = %self.upstreams.urls[upstream], error = %e, "cannot forward a snapshot from this upstream");
                        last = Some(e);
                    }
                }
            }
            let why = last.map_or_else(String::new, |e| format!(": {e}"));
            Err(ApiError {
                retry_after: Some(RETRY_SECS),
                ..ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "this relay cannot get a snapshot from its upstreams right now{why}; retry later"
                    ),
                )
            })
        })
    }
}

/// The upstream's body, passed on as it arrives, up to `cap` bytes (this relay's own snapshot
/// bounds: a snapshot it would refuse itself is not passed on whole). A failure midway, or
/// the cap, ends the body early, which the node below refuses as truncated.
fn stream(res: reqwest::Response, cap: u64) -> Body {
    let chunks = futures_util::stream::unfold(Some((res, 0u64)), move |state| async move {
        let (mut res, sent) = state?;
        match res.chunk().await {
            Ok(Some(chunk)) => {
                let sent = sent.saturating_add(chunk.len() as u64);
                if sent > cap {
                    tracing::error!(
                        cap,
                        "REPLICATION ALARM: the upstream's snapshot is over this relay's snapshot bounds; cutting it off"
                    );
                    return Some((
                        Err(std::io::Error::other("snapshot over the relay's bounds")),
                        None,
                    ));
                }
                Some((Ok(chunk), Some((res, sent))))
            }
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    Body::from_stream(chunks)
}
