//! `GET /replication/v1/feed`: the change-log entries after a position, long-polled, and
//! `GET /replication/v1/feed-key`: the key edges pin.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use coffer_api::{Envelope, ErrorCode};
use coffer_replication::Position;
use coffer_replication::wire::{
    CLUSTER_HEADER, FEED_CONTENT_TYPE, FeedAnswer, FeedBody, HEAD_HEADER,
};
use coffer_storage::{ChangeRecord, FeedSignature, StorageError};

use super::{Origin, Replication, binary, storage_error};
use crate::error::{ApiError, ApiResult};
use crate::extract::NodeAuth;
use crate::state::AppState;

/// Entries per feed answer at most; the edge asks again right away for more.
const MAX_ENTRIES: usize = 1_000;
/// Payload bytes per feed answer at most (past the first entry).
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// The longest long-poll a client may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// `GET /replication/v1/feed`: answers at once when there are entries after `after` (or the
/// caller asked not to wait); otherwise waits for the next commit, the long-poll's end or the
/// server's shutdown, and answers then.
pub(crate) async fn feed(
    State(app): State<AppState>,
    NodeAuth(node): NodeAuth,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let repl = app.replication()?.clone();
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
    // Where the node stands, for the operator's view of the fleet (`Coffer::fleet`); a position
    // past this log's head (refused below, or waited for by a relay) is not one it stands at.
    let head_now = *heads.borrow();
    if after <= head_now {
        app.coffer.note_feed_request(node.id, after, head_now);
    }
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
            return Ok(beyond_head(&app, after, head).await);
        }
        if !waiting_for_head && (after < head || timed_out || *closing.borrow()) {
            return answer(&app, &repl, after, head).await;
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

/// The 400 for `after` past the log's head, naming the head and the cluster in headers too, so
/// that an edge can tell an upstream of another cluster (refused) from one that is merely
/// behind it.
async fn beyond_head(app: &AppState, after: u64, head: u64) -> Response {
    let cluster = app
        .coffer
        .storage()
        .log_state()
        .await
        .ok()
        .and_then(|s| s.cluster_id);
    let mut res = ApiError::at(
        ErrorCode::InvalidQuery,
        "after",
        format!("after={after} is beyond the head of this log ({head})"),
    )
    .into_response();
    let headers = res.headers_mut();
    headers.insert(
        HeaderName::from_static(HEAD_HEADER),
        HeaderValue::from(head),
    );
    if let Some(c) = cluster
        && let Ok(v) = HeaderValue::from_str(&hex::encode(c))
    {
        headers.insert(HeaderName::from_static(CLUSTER_HEADER), v);
    }
    res
}

/// A feed answer for a caller holding `after`, with `head` the head last seen: the entries
/// after it (none when it is the head; `Compacted` when the log no longer holds them), the
/// heartbeat and the freshness statement.
async fn answer(app: &AppState, repl: &Replication, after: u64, head: u64) -> ApiResult<Response> {
    let storage = app.coffer.storage();
    let state = storage.log_state().await.map_err(storage_error)?;
    let Some(cluster_id) = state.cluster_id else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "this node holds no replica yet; retry later",
        ));
    };
    let body = if after < head {
        match storage.feed_after(after, MAX_ENTRIES).await {
            Ok((entries, signatures)) => end_on_signed(entries, signatures),
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
    Ok(binary(FEED_CONTENT_TYPE, Body::from(answer.encode())))
}

/// The entries an answer carries: at most [`MAX_ANSWER_BYTES`] of payload (at least one
/// entry), ending on a signed entry, since a follower applies nothing past its last
/// checkpoint: the last signed one within the budget; past it only when the budget holds none
/// (the writer signs often enough that this reaches at most one job's entries past the
/// budget). The signatures kept are those of the entries kept.
fn end_on_signed(mut entries: Vec<ChangeRecord>, mut signatures: Vec<FeedSignature>) -> FeedBody {
    if entries.is_empty() {
        signatures.clear();
        return FeedBody::Entries {
            entries,
            signatures,
        };
    }
    let mut bytes = 0;
    let mut keep = entries
        .iter()
        .take_while(|e| {
            bytes += e.payload.len();
            bytes <= MAX_ANSWER_BYTES
        })
        .count()
        .max(1);
    let signed = |seq: u64| signatures.binary_search_by_key(&seq, |s| s.seq).is_ok();
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

/// `GET /replication/v1/feed-key`: the key edges pin. The control plane answers with its own
/// feed-signing public key; a relay with the key it pinned (the root's: it has none).
pub(crate) async fn feed_key(
    State(app): State<AppState>,
    NodeAuth(_node): NodeAuth,
) -> ApiResult<Response> {
    let repl = app.replication()?.clone();
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
