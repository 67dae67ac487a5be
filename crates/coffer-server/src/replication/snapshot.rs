//! `GET /replication/v1/snapshot`: the whole replicated state, streamed from one read
//! transaction with its digest and the control plane's signature; a relay passes on its
//! upstream's instead.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use coffer_api::ErrorCode;
use coffer_replication::wire::{Frame, SNAPSHOT_CONTENT_TYPE};
use coffer_replication::{Position, SnapshotDigest};
use coffer_storage::SnapshotPart;

use super::binary;
use crate::error::{ApiError, ApiResult};
use crate::extract::NodeAuth;
use crate::state::AppState;

/// Snapshot bytes gathered into one body chunk.
const SNAPSHOT_CHUNK: usize = 256 << 10;

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
    let repl = app.replication()?.clone();
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
