//! `POST /replication/v1/access`: access events observed at an edge, acknowledged once they
//! are durable (a retried batch is recorded once).

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use coffer_api::replication::{AccessBatch, AccessReceipt, Observer};
use coffer_api::{Envelope, ErrorCode};

use crate::error::{ApiError, ApiResult};
use crate::extract::NodeAuth;
use crate::state::AppState;

/// The largest access batch body accepted.
pub const MAX_ACCESS_BODY: usize = 32 << 20;

/// `POST /replication/v1/access`.
pub(crate) async fn access(
    State(app): State<AppState>,
    NodeAuth(node): NodeAuth,
    body: Bytes,
) -> ApiResult<Response> {
    let repl = app.replication()?.clone();
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
    let observed_by = batch.observer()?.unwrap_or_else(|| Observer {
        node_id: node.id,
        node_name: node.name.clone(),
    });
    let (batch_id, events) = batch.decode()?;
    let recorded = repl
        .access
        .deliver(&node, observed_by, batch_id, events)
        .await?;
    Ok(axum::Json(Envelope::ok(AccessReceipt { recorded })).into_response())
}
