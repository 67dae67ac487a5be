//! Coffer's dashboard: server-rendered HTML pages (askama templates compiled into the binary)
//! over the same [`Coffer`] methods the API handlers call, so every action is authorised by the
//! one role table and audited as the API's are.
//!
//! The server mounts [`Dashboard::router`] under [`BASE`]. Sign-in exchanges an API token for
//! a server-side session ([`SessionLimits`]); every request authenticates the kept token again,
//! so a revoked token ends its sessions at once. Every response carries the security headers
//! ([`CONTENT_SECURITY_POLICY`] among them); every form that changes state carries the
//! session's CSRF token.

mod assets;
mod errors;
mod forms;
mod pages;
mod secret;
mod security;
mod session;
mod sign_in;
mod views;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::request::Parts;
use axum::routing::{get, post};
use coffer_core::{Coffer, RequestContext};

pub use security::{CONTENT_SECURITY_POLICY, SECURE_SESSION_COOKIE, SESSION_COOKIE};
pub use session::{
    ABSOLUTE_TIMEOUT, IDLE_TIMEOUT, MAX_SESSIONS, MAX_SESSIONS_PER_ACCOUNT, MAX_SESSIONS_PER_TOKEN,
    SessionLimits,
};

/// Form bodies larger than this are refused (the API's body limit).
pub const MAX_FORM_BYTES: usize = coffer_core::MAX_REQUEST_BODY_BYTES;

/// Where the server mounts the dashboard; the session cookie's `Path`.
pub const BASE: &str = "/dashboard";

/// What the dashboard needs from the server it is mounted in: who the client is (as the API's
/// audit entries record it), and the failed-authentication limit the API applies, so that
/// guessing tokens through the sign-in page costs what guessing them on the API does.
pub trait SignInGuard: Send + Sync + std::fmt::Debug + 'static {
    /// The client's address and the request's context for the audit log.
    fn context(&self, parts: &Parts) -> (Option<IpAddr>, RequestContext);
    /// `Some(wait)` if `client` is over its failed-authentication budget.
    fn blocked(&self, client: IpAddr) -> Option<Duration>;
    /// Counts a failed authentication from `client`; `Some(budget)` when this one used up
    /// the budget (the moment the API logs and audits).
    fn failed(&self, client: IpAddr) -> Option<u32>;
    /// True if the browser reached the server over HTTPS: the server's own TLS, or a trusted
    /// proxy's `X-Forwarded-Proto: https`.
    fn https(&self, parts: &Parts) -> bool;
}

/// When the session cookie is marked `Secure` (and named with the `__Host-` prefix, which a
/// browser accepts only from HTTPS, for `Path=/`, from this very host).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecureCookies {
    /// When the request reached the server over HTTPS ([`SignInGuard::https`]: its own TLS,
    /// or a trusted proxy's `X-Forwarded-Proto: https` or `Forwarded: proto=https`).
    #[default]
    Auto,
    /// Always (plain HTTP to the server, HTTPS to the browser, through a proxy that does not
    /// say so).
    Always,
    /// Never (a browser over plain HTTP, say on a LAN with `--insecure-http`).
    Never,
}

/// How the dashboard is set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct DashboardOptions {
    pub secure_cookies: SecureCookies,
    pub sessions: SessionLimits,
}

/// The dashboard of one server process: its sessions and what it calls.
#[derive(Debug, Clone)]
pub struct Dashboard(Arc<Inner>);

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) coffer: Arc<Coffer>,
    pub(crate) guard: Arc<dyn SignInGuard>,
    pub(crate) sessions: session::Sessions,
    pub(crate) secure_cookies: SecureCookies,
}

impl Inner {
    /// Whether this request's session cookie is the `Secure`, `__Host-` one.
    pub(crate) fn secure(&self, parts: &Parts) -> bool {
        match self.secure_cookies {
            SecureCookies::Always => true,
            SecureCookies::Never => false,
            SecureCookies::Auto => self.guard.https(parts),
        }
    }
}

impl Dashboard {
    pub fn new(
        coffer: Arc<Coffer>,
        guard: Arc<dyn SignInGuard>,
        options: DashboardOptions,
    ) -> Dashboard {
        Dashboard(Arc::new(Inner {
            coffer,
            guard,
            sessions: session::Sessions::new(options.sessions),
            secure_cookies: options.secure_cookies,
        }))
    }

    /// Sessions open now (expired ones not yet found are counted).
    pub fn session_count(&self) -> usize {
        self.0.sessions.len()
    }

    /// The dashboard's routes, relative to [`BASE`] (mount with `nest_service(BASE, ...)`).
    /// Every POST route but sign-in and sign-out takes a `SignedForm`; a new one goes into the
    /// server's test `every_form_route_refuses_a_post_without_the_csrf_token` too.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(pages::home))
            .route("/sign-in", get(sign_in::show).post(sign_in::submit))
            .route("/sign-out", post(sign_in::sign_out))
            .route("/stores", get(pages::stores).post(pages::create_store))
            .route("/stores/{store_id}", get(pages::secrets))
            .route("/stores/{store_id}/delete", post(pages::delete_store))
            .route("/stores/{store_id}/secrets", post(pages::create_secrets))
            .route(
                "/stores/{store_id}/secrets/{secret_id}",
                get(secret::show).post(secret::edit),
            )
            .route(
                "/stores/{store_id}/secrets/{secret_id}/duplicate",
                post(secret::duplicate),
            )
            .route(
                "/stores/{store_id}/secrets/{secret_id}/delete",
                post(pages::delete_secret),
            )
            .route(
                "/accounts",
                get(pages::accounts).post(pages::create_account),
            )
            .route("/accounts/{account_id}/quota", post(pages::set_quota))
            .route(
                "/accounts/{account_id}/first-token",
                post(pages::first_token),
            )
            .route("/accounts/{account_id}/delete", post(pages::delete_account))
            .route("/edges", get(pages::edges).post(pages::create_node))
            .route("/edges/{node_id}/revoke", post(pages::revoke_node))
            .route("/keys", get(pages::keys))
            .route("/keys/rotate", post(pages::rotate))
            .route("/tokens", get(pages::tokens).post(pages::create_token))
            .route("/tokens/{token_id}/revoke", post(pages::revoke_token))
            .route("/services", get(pages::services))
            .route("/services/{service_id}", get(pages::service))
            .route(
                "/services/{service_id}/tokens",
                post(pages::rotate_service_token),
            )
            .route(
                "/services/{service_id}/tokens/{token_id}/revoke",
                post(pages::revoke_service_token),
            )
            .route("/audit", get(pages::audit))
            .route("/audit/verify", get(pages::verify_audit))
            .route("/quota", get(pages::quota))
            .route(assets::CSS_PATH, get(assets::css))
            .route(assets::JS_PATH, get(assets::js))
            .route(assets::ICON_PATH, get(assets::icon))
            .fallback(errors::not_found)
            .method_not_allowed_fallback(errors::not_found)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM_BYTES))
            .with_state(self.0.clone())
            .layer(axum::middleware::map_response(security::headers))
    }
}

pub(crate) type State = axum::extract::State<Arc<Inner>>;
