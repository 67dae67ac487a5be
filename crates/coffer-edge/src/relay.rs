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
                    Ok(res) => return Ok(stream(res)),
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

/// The upstream's body, passed on as it arrives. A failure midway ends the body early, which
/// the node below refuses as truncated.
fn stream(res: reqwest::Response) -> Body {
    let chunks = futures_util::stream::unfold(Some(res), |res| async move {
        let mut res = res?;
        match res.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(res))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    Body::from_stream(chunks)
}
