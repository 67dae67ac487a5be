//! The route table, its fallbacks, and the frame every routed request passes through
//! (`frame.rs`).

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, post, put};
use coffer_api::ErrorCode;

use crate::error::ApiError;
use crate::health::{self, DatabaseProbe};
use crate::runtime_front::EdgeApp;
use crate::secrets_store as ss;
use crate::state::AppState;
use crate::{
    account_kek_routes, accounts, audit, kek_routes, node_keys, nodes, replication, runtime,
    runtime_front, services, tokens, user,
};

/// The control plane: the v4 API, the runtime API, the replication API and the dashboard
/// (`dashboard`, mounted at [`coffer_dashboard::BASE`], where `/` redirects). `database` is the
/// probe `/healthz` asks on PostgreSQL (`health.rs`); `None` answers it without one.
pub fn router(state: AppState, database: Option<Arc<DatabaseProbe>>, dashboard: Router) -> Router {
    let healthz = move || {
        let database = database.clone();
        async move { health::healthz(database.as_deref()).await }
    };
    finish(
        Router::new()
            .route("/healthz", get(healthz))
            .route("/", get(to_dashboard))
            .nest_service(coffer_dashboard::BASE, dashboard)
            .merge(control_plane_routes())
            .merge(edge_routes()),
        state,
    )
}

/// An edge: the runtime API (and, on a relay, the replication API) with its own `/healthz`.
/// An edge serves it behind [`edge_app`]; public for tests that compare the two.
#[doc(hidden)]
pub fn edge_router(state: AppState, healthz: MethodRouter<AppState>) -> Router {
    finish(
        Router::new()
            .route("/healthz", healthz)
            .merge(edge_routes()),
        state,
    )
}

/// An edge's application: [`edge_router`] behind the runtime read it answers before routing
/// ([`crate::runtime_front`]).
pub fn edge_app(state: AppState, healthz: MethodRouter<AppState>) -> EdgeApp {
    EdgeApp::new(edge_router(state.clone(), healthz), state)
}

/// What every node serves: runtime reads and (where `AppState::replication` is set) the feed.
fn edge_routes() -> Router<AppState> {
    Router::new()
        .route("/runtime/v1/bindings", get(runtime::read_all))
        // Answered before the router on edges (`runtime_front::EdgeApp`): a layer put on this
        // route, or on the router (`finish`), does not apply to those reads.
        .route(runtime_front::BINDING_ROUTE, get(runtime::read_binding))
        .route(
            "/runtime/v1/stores/{binding}/secrets/{name}",
            get(runtime::read_store_secret),
        )
        .route("/replication/v1/feed", get(replication::feed::feed))
        .route(
            "/replication/v1/snapshot",
            get(replication::snapshot::snapshot),
        )
        .route("/replication/v1/feed-key", get(replication::feed::feed_key))
        .route(
            "/replication/v1/node-key",
            put(node_keys::register).layer(DefaultBodyLimit::max(node_keys::MAX_NODE_KEY_BODY)),
        )
        .route(
            "/replication/v1/node-key/accounts/{account_id}",
            put(node_keys::register_account)
                .layer(DefaultBodyLimit::max(node_keys::MAX_NODE_KEY_BODY)),
        )
        .route(
            "/replication/v1/access",
            post(replication::access::access)
                .layer(DefaultBodyLimit::max(replication::access::MAX_ACCESS_BODY)),
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
            "/client/v4/accounts/{account_id}/kek",
            get(account_kek_routes::get).put(account_kek_routes::set),
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
            "/client/v4/operator/token/rotate",
            post(tokens::rotate_operator_token),
        )
        .route(
            "/client/v4/nodes/{node_id}",
            get(nodes::get).delete(nodes::revoke),
        )
}

/// The fallbacks and the frame every routed request passes through. (An edge's runtime read of
/// one binding passes through the same frame without the router: `runtime_front`.)
fn finish(routes: Router<AppState>, state: AppState) -> Router {
    let metrics = state.metrics.clone();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(crate::frame::FrameLayer::new(metrics))
}

async fn to_dashboard() -> axum::response::Redirect {
    axum::response::Redirect::to(coffer_dashboard::BASE)
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
