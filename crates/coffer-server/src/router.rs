//! The route table and the middleware every request passes through.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use coffer_api::ErrorCode;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use crate::error::ApiError;
use crate::secrets_store as ss;
use crate::state::AppState;
use crate::{
    accounts, audit, kek_routes, node_keys, nodes, replication, runtime, services, tokens, user,
};

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The control plane: the v4 API, the runtime API and the replication API.
pub fn router(state: AppState) -> Router {
    finish(
        Router::new()
            .route("/healthz", get(healthz))
            .merge(control_plane_routes())
            .merge(edge_routes()),
        state,
    )
}

/// An edge: the runtime API (and, on a relay, the replication API) with its own `/healthz`.
pub fn edge_router(state: AppState, healthz: MethodRouter<AppState>) -> Router {
    finish(
        Router::new()
            .route("/healthz", healthz)
            .merge(edge_routes()),
        state,
    )
}

/// What every node serves: runtime reads and (where `AppState::replication` is set) the feed.
fn edge_routes() -> Router<AppState> {
    Router::new()
        .route("/runtime/v1/bindings", get(runtime::read_all))
        .route("/runtime/v1/bindings/{binding}", get(runtime::read_binding))
        .route(
            "/runtime/v1/stores/{binding}/secrets/{name}",
            get(runtime::read_store_secret),
        )
        .route("/replication/v1/feed", get(replication::feed))
        .route("/replication/v1/snapshot", get(replication::snapshot))
        .route("/replication/v1/feed-key", get(replication::feed_key))
        .route(
            "/replication/v1/node-key",
            put(node_keys::register).layer(DefaultBodyLimit::max(node_keys::MAX_NODE_KEY_BODY)),
        )
        .route(
            "/replication/v1/access",
            post(replication::access).layer(DefaultBodyLimit::max(replication::MAX_ACCESS_BODY)),
        )
}

fn control_plane_routes() -> Router<AppState> {
    let secrets_store = Router::new()
        .route("/stores", get(ss::list_stores).post(ss::create_store))
        .route(
            "/stores/{store_id}",
            get(ss::get_store).delete(ss::delete_store),
        )
        .route(
            "/stores/{store_id}/secrets",
            get(ss::list_secrets)
                .post(ss::create_secrets)
                .delete(ss::bulk_delete_secrets),
        )
        .route(
            "/stores/{store_id}/secrets/{secret_id}",
            get(ss::get_secret)
                .patch(ss::update_secret)
                .delete(ss::delete_secret),
        )
        .route(
            "/stores/{store_id}/secrets/{secret_id}/duplicate",
            post(ss::duplicate_secret),
        )
        .route("/quota", get(ss::quota))
        .route("/services", get(services::list).post(services::deploy))
        .route(
            "/services/{service_id}",
            get(services::get).delete(services::delete),
        )
        .route(
            "/services/{service_id}/tokens",
            get(services::list_tokens)
                .post(services::rotate_token)
                .delete(services::revoke_tokens),
        )
        .route(
            "/services/{service_id}/tokens/{token_id}",
            delete(services::revoke_tokens),
        );

    Router::new()
        .route(
            "/client/v4/accounts",
            get(accounts::list_accounts).post(accounts::create_account),
        )
        .route(
            "/client/v4/accounts/{account_id}",
            get(accounts::get_account)
                .patch(accounts::update_account)
                .delete(accounts::delete_account),
        )
        .route(
            "/client/v4/accounts/{account_id}/audit_logs",
            get(audit::list),
        )
        .route(
            "/client/v4/accounts/{account_id}/audit_logs/verify",
            get(audit::verify),
        )
        .route(
            "/client/v4/accounts/{account_id}/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route(
            "/client/v4/accounts/{account_id}/tokens/{token_id}",
            get(tokens::get_token).delete(tokens::revoke_token),
        )
        .nest(
            "/client/v4/accounts/{account_id}/secrets_store",
            secrets_store,
        )
        .route("/client/v4/user/tokens/verify", get(user::verify_token))
        .route("/client/v4/memberships", get(user::memberships))
        .route("/client/v4/nodes", get(nodes::list).post(nodes::create))
        .route("/client/v4/kek", get(kek_routes::status))
        .route("/client/v4/kek/rotations", post(kek_routes::rotate))
        .route(
            "/client/v4/nodes/{node_id}",
            get(nodes::get).delete(nodes::revoke),
        )
}

/// The fallbacks and the middleware every request passes through.
fn finish(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::map_response(no_store))
        .layer(CatchPanicLayer::custom(|_| {
            // A panic is a bug; the client learns nothing but that it happened.
            ApiError::new(ErrorCode::Internal, "internal error").into_response()
        }))
        .layer(axum::middleware::from_fn(crate::request_log::log_request))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, RandomRequestId))
        .layer(axum::middleware::map_request(drop_unsafe_request_id))
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "status": "ok" })),
    )
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::RouteNotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// A client may send its own `x-request-id` to correlate logs, but it lands in log lines: keep
/// it only if it is short and plain (so it cannot forge log lines), otherwise make our own.
async fn drop_unsafe_request_id(mut req: Request) -> Request {
    let safe = req.headers().get(&REQUEST_ID).is_none_or(|v| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= 64
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    });
    if !safe {
        req.headers_mut().remove(&REQUEST_ID);
    }
    req
}

/// Responses about secrets must not be cached by proxies or clients.
async fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

#[derive(Clone, Copy, Debug)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = hex::encode(coffer_crypto::random_array::<12>());
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}
