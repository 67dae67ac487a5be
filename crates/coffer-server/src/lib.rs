//! Coffer's HTTP server: the Cloudflare-compatible Secrets Store API over axum, with optional
//! TLS (rustls on aws-lc-rs), and the data-dir layout of the embedded deployment.
//!
//! This is the only crate that knows HTTP. Handlers parse requests into core commands and map
//! [`coffer_core::CoreError`] to v4 error envelopes in one place (`error.rs`).

mod accounts;
mod audit;
mod datadir;
mod error;
mod extract;
mod limiter;
mod nodes;
mod query;
mod router;
mod runtime;
mod secrets_store;
mod services;
mod state;
mod tls;
mod tokens;
mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use coffer_core::{Coffer, Limits};
use coffer_crypto::ApiToken;
use coffer_types::AccountId;

pub use datadir::DataDir;
pub use error::ApiError;
pub use extract::MAX_BODY_BYTES;
pub use state::AppState;

/// How often tokens' last-used times are written (they are kept in memory in between) and the
/// audit chains' heads are signed.
const HOUSEKEEPING: Duration = Duration::from_secs(10);

/// Every [`HOUSEKEEPING`] interval until aborted: writes tokens' last-used times and the
/// runtime reads aggregated since the last round, and signs a checkpoint of every audit chain
/// that moved.
async fn housekeeping(coffer: Arc<Coffer>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = coffer.flush_token_usage().await {
            tracing::warn!(error = %e, "could not record token last-used times");
        }
        // Before the checkpoints, so the access entries are signed in the same round.
        if let Err(e) = coffer.flush_access_events().await {
            tracing::error!(error = %e, "could not record runtime reads in the audit log; kept for the next round");
        }
        if let Err(e) = coffer.checkpoint_audit().await {
            tracing::error!(error = %e, "could not write audit checkpoints");
        }
    }
}

/// How long in-flight requests may run after shutdown is requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of starting or initialising a server. Messages name the file or address involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("data dir {path}: {message}")]
    DataDir { path: PathBuf, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// What `coffer init` prints.
#[derive(Debug)]
pub struct InitOutcome {
    pub account_id: AccountId,
    /// Full rights on the first account (and, as the instance operator, on every account).
    pub api_token: ApiToken,
}

/// Creates a data dir: the directory (mode 0700), the KEK file, the SQLite database, the first
/// account and a full-rights API token. Refuses a path that exists and is not an empty dir; on
/// failure leaves nothing behind.
pub async fn init_data_dir(path: &Path) -> Result<InitOutcome, ServerError> {
    datadir::init(path).await
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to run the control plane.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// Allow plain HTTP on a non-loopback address.
    pub insecure_http: bool,
    /// Default secrets quota for accounts without an override.
    pub secrets_quota: u64,
    /// Maximum stores per account.
    pub max_stores: u64,
}

impl ServeOptions {
    pub const DEFAULT_SECRETS_QUOTA: u64 = 10_000;
    pub const DEFAULT_MAX_STORES: u64 = 100;
}

/// The router over an opened [`Coffer`], for in-process tests and embedding.
pub fn app(coffer: Arc<Coffer>) -> axum::Router {
    router::router(AppState {
        coffer,
        auth_limiter: Arc::default(),
    })
}

/// Opens a data dir as `serve` does: takes its lock (one process per data dir) and opens the
/// domain service. The lock is held until the returned value is dropped.
pub async fn open_data_dir(path: &Path, limits: Limits) -> Result<DataDir, ServerError> {
    datadir::open(path, limits).await
}

/// Runs the server until `shutdown` resolves (then drains in-flight requests). `on_ready` is
/// called with the bound address once `/healthz` answers 200 (useful with port 0).
pub async fn serve(
    opts: ServeOptions,
    on_ready: impl FnOnce(SocketAddr) + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    if opts.tls.is_none() && !opts.listen.ip().is_loopback() && !opts.insecure_http {
        return Err(ServerError::Config(format!(
            "refusing to serve plain HTTP on non-loopback address {}: give --tls-cert and --tls-key, or --insecure-http if a TLS-terminating proxy sits in front",
            opts.listen
        )));
    }
    let limits = Limits {
        default_secrets_quota: opts.secrets_quota,
        max_stores: opts.max_stores,
    };
    let data_dir = datadir::open(&opts.data_dir, limits).await?;
    let coffer = Arc::new(data_dir.coffer);
    let app = app(coffer.clone());
    let flusher = tokio::spawn(housekeeping(coffer.clone()));
    let tls = opts.tls.as_ref().map(tls::server_config).transpose()?;

    let listener =
        std::net::TcpListener::bind(opts.listen).map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: opts.listen,
        source,
    })?;

    let handle = axum_server::Handle::<SocketAddr>::new();
    let shutdown_handle = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        shutdown_handle.graceful_shutdown(Some(DRAIN_TIMEOUT));
    });
    let ready_handle = handle.clone();
    tokio::spawn(async move {
        if ready_handle.listening().await.is_some() {
            on_ready(addr);
        }
    });

    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let result = match tls {
        Some(config) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
            axum_server::from_tcp_rustls(listener, config)
                .map_err(|source| ServerError::Bind { addr, source })?
                .handle(handle)
                .serve(service)
                .await
        }
        None => {
            axum_server::from_tcp(listener)
                .map_err(|source| ServerError::Bind { addr, source })?
                .handle(handle)
                .serve(service)
                .await
        }
    };
    // Every connection is closed; let queued writes finish and the storage writer stop
    // (shutdown also writes the last token-usage times and audit checkpoints).
    flusher.abort();
    coffer.shutdown().await;
    result.map_err(|e| ServerError::Other(format!("server on {addr} failed: {e}")))
}
