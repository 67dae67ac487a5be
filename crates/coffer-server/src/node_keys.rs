//! `PUT /replication/v1/node-key`: an edge registers the X25519 public key it made at its
//! first start, with its node token. The control plane records it and grants the node the
//! current replication key through the feed (`Coffer::register_node_key`); a relay forwards
//! the request, with the node's own token, to its upstream
//! ([`NodeKeyForward`](crate::replication::NodeKeyForward)), so the control plane checks the
//! node itself and no relay can register a key for another node.
//!
//! `PUT /replication/v1/node-key/accounts/{account_id}`: the key an edge made for one account
//! that has a replication key of its own (ARK), granted that account's ARK alone
//! (`Coffer::register_node_account_key`; docs/edges.md, "Node account keys"). Same body,
//! answers and forwarding.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};
use coffer_api::replication::{NodeKeyReceipt, NodeKeyRegistration};
use coffer_api::{Envelope, ErrorCode};

use coffer_storage::NodeRecord;
use coffer_types::AccountId;

use crate::error::{ApiError, ApiResult};
use crate::extract::{NodeAuth, PathIds};
use crate::replication::Origin;
use crate::state::AppState;

/// A registration body is one short JSON object.
pub const MAX_NODE_KEY_BODY: usize = 1024;

/// `PUT /replication/v1/node-key`.
pub(crate) async fn register(
    State(app): State<AppState>,
    NodeAuth(node): NodeAuth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    register_key(app, node, None, &headers, &body).await
}

/// `PUT /replication/v1/node-key/accounts/{account_id}`.
pub(crate) async fn register_account(
    State(app): State<AppState>,
    NodeAuth(node): NodeAuth,
    ids: PathIds,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    register_key(app, node, Some(ids.account), &headers, &body).await
}

/// Registers the node's key (`account` `None`) or its node account key for `account`: on the
/// root, with core; on a relay, forwarded upstream with the node's own token.
async fn register_key(
    app: AppState,
    node: NodeRecord,
    account: Option<AccountId>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let repl = app.replication()?.clone();
    let what = match account {
        None => "node-key registration",
        Some(_) => "node account key registration",
    };
    let registration: NodeKeyRegistration = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("not a {what} ({{\"public_key\": \"<64 hex digits>\"}}): {e}"),
        )
    })?;
    let receipt = match (repl.origin(), repl.node_keys(), account) {
        (_, Some(forward), None) => forward.forward(bearer(headers)?, registration).await?,
        (_, Some(forward), Some(account)) => {
            forward
                .forward_account(bearer(headers)?, account, registration)
                .await?
        }
        (Origin::Root, None, None) => NodeKeyReceipt {
            registered: app
                .coffer
                .register_node_key(&node, &registration.public_key)
                .await?,
        },
        (Origin::Root, None, Some(account)) => NodeKeyReceipt {
            registered: app
                .coffer
                .register_node_account_key(&node, account, &registration.public_key)
                .await?,
        },
        (Origin::Relay(_), None, _) => {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("this relay cannot forward {what}s"),
            ));
        }
    };
    Ok(axum::Json(Envelope::ok(receipt)).into_response())
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "missing bearer token"))
}
