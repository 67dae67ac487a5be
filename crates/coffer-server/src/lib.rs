//! Coffer's HTTP server: the Cloudflare-compatible Secrets Store API over axum, with optional
//! TLS (rustls on aws-lc-rs), and the data-dir layout of the embedded deployment.
//!
//! This is the only crate that knows HTTP. Handlers parse requests into core commands and map
//! [`coffer_core::CoreError`] to v4 error envelopes in one place (`error.rs`).

mod account_kek_routes;
mod account_kek_tokens;
mod account_keks;
mod accounts;
mod audit;
pub mod backup;
mod client_addr;
mod dashboard;
mod database;
mod datadir;
mod error;
mod extract;
mod frame;
mod fsio;
mod hardening;
mod health;
mod kek;
mod kek_routes;
mod kek_versions;
mod limiter;
mod listener;
mod metrics;
pub mod migrate;
pub mod node_keys;
mod nodes;
mod query;
mod rate;
mod reload;
pub mod repair;
pub mod replication;
mod request_log;
mod router;
mod runtime;
mod runtime_front;
mod secrets_store;
mod services;
mod state;
mod static_headers;
mod tls;
mod tokens;
mod user;
mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use coffer_core::{Coffer, Limits};
use coffer_crypto::Token;
use coffer_types::{AccountId, TokenId};

pub use client_addr::{IpNet, TrustedProxies};
pub use coffer_core::{DekPolicy, ResealSettings, RewrapSettings};
pub use coffer_dashboard::SecureCookies;
pub use database::Database;
pub use datadir::{DataDir, lock as lock_data_dir};
pub use error::ApiError;
pub use extract::MAX_BODY_BYTES;
pub use hardening::{Hardening, harden_process};
pub use kek::{KekChoice, KekSecrets, KekSummary};
pub use listener::{HttpLimits, MAX_CONCURRENT_STREAMS, MAX_HEADER_BYTES};
pub use metrics::{
    METRICS_LIMITS, StorageObserver, bind_metrics, runtime_sample, serve_metrics, stop_metrics,
};
pub use rate::RuntimeRate;
pub use reload::Reload;
pub use replication::SnapshotLimits;
pub use request_log::ACCESS_LOG_TARGET;
pub use router::{edge_app, edge_router};
pub use runtime_front::{EdgeApp, EdgeFuture};
pub use state::AppState;
pub use state::BATCH_BUDGET;
pub use tls::server_config as tls_server_config;

/// How often tokens' last-used times are written (they are kept in memory in between) and the
/// audit chains' heads are signed.
const HOUSEKEEPING: Duration = Duration::from_secs(10);

/// How often the change log is compacted.
const COMPACTION: Duration = Duration::from_secs(3600);

/// Every [`HOUSEKEEPING`] interval until aborted: writes tokens' last-used times, the runtime
/// reads and the failed authentications aggregated since the last round, and signs a
/// checkpoint of every audit chain
/// that moved. Every [`COMPACTION`] interval, drops change-log entries older than the newest
/// `feed_retention` (edges further behind resync from a snapshot).
async fn housekeeping(coffer: Arc<Coffer>, feed_retention: u64) {
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_compaction = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if last_compaction.elapsed() >= COMPACTION {
            last_compaction = tokio::time::Instant::now();
            compact_log(&coffer, feed_retention).await;
        }
        if let Err(e) = coffer.flush_token_usage().await {
            tracing::warn!(error = %e, "could not record token last-used times");
        }
        // Before the checkpoints, so the access entries are signed in the same round.
        if let Err(e) = coffer.flush_access_events().await {
            tracing::error!(error = %e, "could not record runtime reads in the audit log; kept for the next round");
        }
        if let Err(e) = coffer.flush_auth_failures().await {
            tracing::error!(error = %e, "could not record failed authentications in the audit log; kept for the next round");
        }
        if let Err(e) = coffer.checkpoint_audit().await {
            tracing::error!(error = %e, "could not write audit checkpoints");
        }
    }
}

/// Drops change-log entries older than the newest `retain`.
async fn compact_log(coffer: &Coffer, retain: u64) {
    let storage = coffer.storage();
    match storage.log_state().await {
        Ok(state) => {
            let through = state.head_seq.saturating_sub(retain);
            if through > state.base_seq {
                match storage.compact_log(through).await {
                    Ok(()) => tracing::info!(through, "compacted the change log"),
                    Err(e) => tracing::error!(error = %e, "could not compact the change log"),
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "could not read the change log's state"),
    }
}

/// How long in-flight requests may run after shutdown is requested.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of starting or initialising a server. Messages name the file or address involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("data dir {path}: {message}")]
    DataDir { path: PathBuf, message: String },
    /// The KEK's PKCS#11 token refused the login (no PIN, a wrong or locked one) or is not
    /// there. Unlike other start failures, starting again unchanged cannot succeed and may lock
    /// the PIN: the CLI exits with its own status for it.
    #[error("data dir {path}: {message}")]
    HsmLogin { path: PathBuf, message: String },
    /// Another process (a running server, most likely) holds the data dir's lock.
    #[error("data dir {}: is in use by another coffer process (one process per data dir)", path.display())]
    DataDirInUse { path: PathBuf },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The metrics listener's address (`--metrics-listen`) cannot be bound.
    #[error("cannot listen on {addr} for metrics (--metrics-listen): {source}")]
    MetricsBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The PostgreSQL database (`--database-url`) cannot be used: unreachable after the
    /// retries, a refused login, a bad URL, a schema newer than this build. Never holds the
    /// password.
    #[error("{0}")]
    Database(String),
    #[error("{0}")]
    Other(String),
}

/// What `coffer init` prints.
#[derive(Debug)]
pub struct InitOutcome {
    pub account_id: AccountId,
    /// Full rights on the first account (and, as the instance operator, on every account).
    pub api_token: Token,
    /// The KEK the data dir was given.
    pub kek: KekSummary,
}

/// Creates a data dir: the directory (mode 0700), the KEK file, the SQLite database, the first
/// account and a full-rights API token. Refuses a path that exists and is not an empty dir; on
/// failure leaves nothing behind.
pub async fn init_data_dir(path: &Path) -> Result<InitOutcome, ServerError> {
    init_data_dir_with(path, KekChoice::File, KekSecrets::default()).await
}

/// [`init_data_dir`] with the KEK chosen: a key file, or a key in a PKCS#11 token (generated
/// there if the token lacks it; `kek.toml` records where it is).
pub async fn init_data_dir_with(
    path: &Path,
    kek: KekChoice,
    secrets: KekSecrets,
) -> Result<InitOutcome, ServerError> {
    datadir::init(path, kek, secrets, None).await
}

/// [`init_data_dir_with`] for an instance whose state is in the PostgreSQL `database` (which
/// must hold no instance yet): the data dir keeps the KEK, the lock and `backend.toml` (the
/// backend and the instance's cluster id; never the URL).
pub async fn init_data_dir_in(
    path: &Path,
    kek: KekChoice,
    secrets: KekSecrets,
    database: Option<&Database>,
) -> Result<InitOutcome, ServerError> {
    datadir::init(path, kek, secrets, database).await
}

/// What `coffer operator rotate --data-dir` prints.
#[derive(Debug)]
pub struct RotatedOperatorToken {
    pub account_id: AccountId,
    pub token_id: TokenId,
    /// The new operator token; its value is shown once and stored only as a keyed hash.
    pub api_token: Token,
}

/// Replaces the instance-operator token on a data dir no server is running on: takes the lock
/// ([`ServerError::DataDirInUse`] while a server holds it), issues a new operator token, revokes
/// the old one and audits it in the operator's account, then closes the data dir (writing the
/// audit checkpoints). `secrets` unlock an HSM-held KEK; `database` is the PostgreSQL database
/// of a data dir made with one (other instances may keep serving it meanwhile).
pub async fn rotate_operator_token(
    path: &Path,
    secrets: KekSecrets,
    database: Option<&Database>,
) -> Result<RotatedOperatorToken, ServerError> {
    let data_dir = datadir::open(
        path,
        Limits::default(),
        secrets,
        KeyOptions::default(),
        database,
    )
    .await?;
    let coffer = data_dir.coffer;
    let result = coffer.rotate_operator_token(None).await;
    coffer.shutdown().await;
    let (record, api_token) = result.map_err(|e| ServerError::DataDir {
        path: path.to_owned(),
        message: format!("cannot rotate the operator token: {e}"),
    })?;
    Ok(RotatedOperatorToken {
        account_id: record.account_id,
        token_id: record.id,
        api_token,
    })
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
    /// When the dashboard's session cookie is `Secure` (`Auto`: when the request came over
    /// TLS, this server's or a trusted proxy's).
    pub dashboard_secure_cookies: SecureCookies,
    /// Default secrets quota for accounts without an override.
    pub secrets_quota: u64,
    /// Maximum stores per account.
    pub max_stores: u64,
    /// Change-log entries kept for edges to catch up from (older ones are compacted; an edge
    /// further behind resyncs from a snapshot).
    pub feed_retention: u64,
    /// Proxies whose client-address header is believed (none by default).
    pub trusted_proxies: TrustedProxies,
    /// What the listener lets a client cost: connections, header and idle timeouts.
    pub http: HttpLimits,
    /// How many snapshots are served at once, per node, and for how long at most.
    pub snapshots: SnapshotLimits,
    /// Reads per second one service token may make on the runtime API (none by default).
    pub runtime_rate: Option<RuntimeRate>,
    /// How DEKs are refreshed, and the pace of the rewrap after a KEK rotation.
    pub keys: KeyOptions,
    /// Reloads the TLS certificate and key when asked (SIGHUP) or when the files change.
    pub reload: Reload,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP, its own listener); off
    /// when `None`.
    pub metrics_listen: Option<SocketAddr>,
}

/// How a control plane handles its keys; every field has a default.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyOptions {
    /// When an account's DEK is replaced by a new one.
    pub dek_policy: DekPolicy,
    /// The pace of the rewrap after a KEK rotation.
    pub rewrap: RewrapSettings,
    /// The DEK lifecycle job (re-seal, superseded versions kept, DEK destruction).
    pub reseal: ResealSettings,
}

impl ServeOptions {
    pub const DEFAULT_SECRETS_QUOTA: u64 = 10_000;
    pub const DEFAULT_MAX_STORES: u64 = 100;
    pub const DEFAULT_FEED_RETENTION: u64 = 1_000_000;
}

/// How a router is set up beyond its domain service; every field has a default.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// Proxies whose client-address header is believed (none by default).
    pub trusted_proxies: TrustedProxies,
    /// The limits on the snapshots the replication API serves.
    pub snapshots: SnapshotLimits,
    /// Reads per second one service token may make on the runtime API (none by default).
    pub runtime_rate: Option<RuntimeRate>,
    /// Where requests, refusals and limits are counted (none by default).
    pub metrics: Option<Arc<coffer_metrics::Metrics>>,
    /// The listener serves TLS itself (the dashboard's session cookie is then `Secure` under
    /// [`SecureCookies::Auto`]).
    pub tls: bool,
    /// When the dashboard's session cookie is `Secure` (`--dashboard-secure-cookies`).
    pub dashboard_cookies: SecureCookies,
}

/// The router over an opened [`Coffer`], for in-process tests and embedding, with the
/// replication API of a control plane (long-polls end when `closing` turns true).
pub fn app(coffer: Arc<Coffer>) -> axum::Router {
    app_with_options(coffer, AppOptions::default())
}

/// [`app`] behind the given trusted proxies.
pub fn app_with(coffer: Arc<Coffer>, trusted_proxies: TrustedProxies) -> axum::Router {
    app_with_options(
        coffer,
        AppOptions {
            trusted_proxies,
            ..AppOptions::default()
        },
    )
}

/// [`app`] set up with `options`.
pub fn app_with_options(coffer: Arc<Coffer>, options: AppOptions) -> axum::Router {
    let (_closing_tx, closing) = tokio::sync::watch::channel(false);
    control_plane_app(coffer, closing, options)
}

fn control_plane_app(
    coffer: Arc<Coffer>,
    closing: tokio::sync::watch::Receiver<bool>,
    options: AppOptions,
) -> axum::Router {
    let replication = replication::Replication::with_limits(
        replication::Origin::Root,
        Arc::new(replication::RootAccess(coffer.clone())),
        closing,
        options.snapshots,
    );
    // `/healthz` covers a database apart from the process (PostgreSQL): a probe at most once a
    // second, 503 while it does not answer.
    let probe = coffer
        .storage()
        .is_remote()
        .then(|| Arc::new(health::DatabaseProbe::new(coffer.storage().clone())));
    let state = AppState::with_metrics(
        coffer.clone(),
        Some(Arc::new(replication)),
        options.trusted_proxies,
        options.runtime_rate,
        options.metrics,
    );
    let dashboard = coffer_dashboard::Dashboard::new(
        coffer,
        Arc::new(dashboard::Guard {
            state: state.clone(),
            tls: options.tls,
        }),
        coffer_dashboard::DashboardOptions {
            secure_cookies: options.dashboard_cookies,
            ..Default::default()
        },
    );
    router::router(state, probe, dashboard.router())
}

/// Opens a data dir as `serve` does: takes its lock (one process per data dir) and opens the
/// domain service. The lock is held until the returned value is dropped.
pub async fn open_data_dir(path: &Path, limits: Limits) -> Result<DataDir, ServerError> {
    open_data_dir_with(path, limits, KekSecrets::default()).await
}

/// [`open_data_dir`] with the secrets that unlock an HSM-held KEK.
pub async fn open_data_dir_with(
    path: &Path,
    limits: Limits,
    secrets: KekSecrets,
) -> Result<DataDir, ServerError> {
    datadir::open(path, limits, secrets, KeyOptions::default(), None).await
}

/// [`open_data_dir_with`] with key options (DEK refresh, the pace of a KEK rotation's rewrap).
pub async fn open_data_dir_tuned(
    path: &Path,
    limits: Limits,
    secrets: KekSecrets,
    keys: KeyOptions,
) -> Result<DataDir, ServerError> {
    datadir::open(path, limits, secrets, keys, None).await
}

/// [`open_data_dir_tuned`] for a data dir whose state may be in PostgreSQL (`database`, as
/// [`init_data_dir_in`] made it; `None` for the embedded SQLite store).
pub async fn open_data_dir_in(
    path: &Path,
    limits: Limits,
    secrets: KekSecrets,
    keys: KeyOptions,
    database: Option<&Database>,
) -> Result<DataDir, ServerError> {
    datadir::open(path, limits, secrets, keys, database).await
}

/// Runs the server until `shutdown` resolves (then drains in-flight requests). `on_ready` is
/// called with the bound address once `/healthz` answers 200 (useful with port 0).
pub async fn serve(
    opts: ServeOptions,
    on_ready: impl FnOnce(SocketAddr) + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with(opts, KekSecrets::default(), on_ready, shutdown).await
}

/// [`serve`] with the secrets that unlock an HSM-held KEK (the data dir's `kek.toml` says
/// where it is). A KEK that cannot be reached stops the start with an error naming the setting.
pub async fn serve_with(
    opts: ServeOptions,
    secrets: KekSecrets,
    on_ready: impl FnOnce(SocketAddr) + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_on(opts, None, secrets, on_ready, shutdown).await
}

/// [`serve_with`] for a data dir whose state is in PostgreSQL (`database`; `None` for the
/// embedded SQLite store). An unreachable database is retried with backoff for
/// `database.connect_timeout`; once serving, a database that goes away makes requests that need
/// it answer 503 until it is back.
pub async fn serve_on(
    opts: ServeOptions,
    database: Option<Database>,
    secrets: KekSecrets,
    on_ready: impl FnOnce(SocketAddr) + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    check_plain_http(opts.listen, opts.tls.is_some(), opts.insecure_http)?;
    // Bound first: an address in use stops the start before the data dir is opened.
    let metrics_listener = opts.metrics_listen.map(bind_metrics).transpose()?;
    let limits = Limits {
        default_secrets_quota: opts.secrets_quota,
        max_stores: opts.max_stores,
    };
    let data_dir = datadir::open(
        &opts.data_dir,
        limits,
        secrets,
        opts.keys,
        database.as_ref(),
    )
    .await?;
    let metrics = metrics_listener
        .as_ref()
        .map(|_| Arc::new(coffer_metrics::Metrics::new()));
    if let Some(metrics) = &metrics {
        data_dir.kek.observe_with(Arc::clone(metrics));
    }
    let coffer = Arc::new(data_dir.coffer);
    if let Some(metrics) = &metrics {
        metrics.set_source(Arc::new(metrics::ControlPlane(Arc::clone(&coffer))));
        coffer
            .storage()
            .set_write_observer(Arc::new(StorageObserver(Arc::clone(metrics))));
    }
    // Edges refuse an upstream of another cluster; the id is made once and kept.
    coffer
        .storage()
        .ensure_cluster_id()
        .await
        .map_err(|e| ServerError::Other(format!("cannot identify the change log: {e}")))?;
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let options = AppOptions {
        trusted_proxies: opts.trusted_proxies.clone(),
        snapshots: opts.snapshots,
        runtime_rate: opts.runtime_rate,
        metrics: metrics.clone(),
        tls: opts.tls.is_some(),
        dashboard_cookies: opts.dashboard_secure_cookies,
    };
    if opts.tls.is_none()
        && opts.dashboard_secure_cookies == SecureCookies::Auto
        && (opts.insecure_http || !opts.trusted_proxies.is_empty())
    {
        // Behind a TLS-terminating proxy the cookie is Secure only if the proxy says so.
        tracing::warn!(
            "the dashboard's session cookie is marked Secure only for requests a trusted proxy (--trusted-proxy) says came over HTTPS (X-Forwarded-Proto: https, or Forwarded: proto=https); behind a TLS-terminating proxy that does not send either, give --dashboard-secure-cookies always"
        );
    }
    coffer.start_dek_lifecycle(opts.keys.reseal);
    if let Some(key) = coffer.feed_public_key() {
        // What an edge pins (`coffer edge --feed-key`); public, and needed again for an edge
        // whose data dir holds a replica but lost its pin.
        tracing::info!(feed_key = %hex::encode(key), "signing the change feed");
    }
    let app = control_plane_app(coffer.clone(), closing, options);
    let flusher = tokio::spawn(housekeeping(coffer.clone(), opts.feed_retention));
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = match (metrics_listener, &metrics) {
        (Some(listener), Some(metrics)) => Some(tokio::spawn(serve_metrics(
            listener,
            Arc::clone(metrics),
            async move {
                let _ = metrics_stopped.await;
            },
        ))),
        _ => None,
    };
    let result = serve_app_observed(
        app,
        opts.listen,
        opts.tls.as_ref(),
        opts.http,
        opts.reload.clone(),
        metrics,
        on_ready,
        async move {
            shutdown.await;
            // Long-polling edges are answered now rather than holding the drain.
            let _ = closing_tx.send(true);
        },
    )
    .await;
    // Every connection is closed; let queued writes finish and the storage writer stop
    // (shutdown also writes the last token-usage times and audit checkpoints).
    // The metrics listener is stopped beside, not before: a scrape held open delays nothing.
    flusher.abort();
    let _ = metrics_stop.send(());
    let metrics_stopped = async {
        if let Some(task) = metrics_server {
            metrics::stop_metrics(task).await;
        }
    };
    tokio::join!(coffer.shutdown(), metrics_stopped);
    result
}

/// Refuses plain HTTP on a non-loopback address unless explicitly allowed.
pub fn check_plain_http(
    listen: SocketAddr,
    tls: bool,
    insecure_http: bool,
) -> Result<(), ServerError> {
    if !tls && !listen.ip().is_loopback() && !insecure_http {
        return Err(ServerError::Config(format!(
            "refusing to serve plain HTTP on non-loopback address {listen}: give --tls-cert and --tls-key, or --insecure-http if a TLS-terminating proxy sits in front"
        )));
    }
    Ok(())
}

/// Serves `app` on `listen` (with TLS if given) until `shutdown` resolves, then drains
/// in-flight requests for at most [`DRAIN_TIMEOUT`]. `on_ready` gets the bound address. The
/// listener applies `limits` (see `listener.rs`): a cap on open connections (lowered to fit
/// the open-file limit, which is raised to its hard limit first), header and idle timeouts,
/// and limits on header sizes and HTTP/2 streams. With TLS, `reload` replaces the certificate
/// while serving (see `reload.rs`).
pub async fn serve_app<S>(
    app: S,
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
    limits: HttpLimits,
    reload: Reload,
    on_ready: impl FnOnce(SocketAddr) + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError>
where
    S: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    serve_app_observed(app, listen, tls, limits, reload, None, on_ready, shutdown).await
}

/// [`serve_app`], counting open connections in `metrics`.
#[allow(clippy::too_many_arguments)]
pub async fn serve_app_observed<S>(
    app: S,
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
    limits: HttpLimits,
    reload: Reload,
    metrics: Option<Arc<coffer_metrics::Metrics>>,
    on_ready: impl FnOnce(SocketAddr) + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError>
where
    S: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let tls = tls
        .map(|files| tls::server_config(files).map(|config| (files.clone(), config)))
        .transpose()?;
    let bind_error = |source| ServerError::Bind {
        addr: listen,
        source,
    };
    let listener = std::net::TcpListener::bind(listen).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_error)?;
    let mut limits = limits;
    if let Some(fit) = listener::connections_that_fit()
        && limits.max_connections > fit
    {
        tracing::warn!(
            configured = limits.max_connections,
            allowed = fit,
            "fewer connections fit in the open-file limit (ulimit -n) than configured; accepting at most the number that fit"
        );
        limits.max_connections = fit;
    }
    let listener = listener::Listener::new(listener, &limits)
        .counting(metrics.as_ref().map(|m| m.connections()));

    let handle = axum_server::Handle::<listener::Peer>::new();
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

    let service = axum::ServiceExt::<axum::http::Request<hyper::body::Incoming>>::into_make_service_with_connect_info::<SocketAddr>(app);
    let server = axum_server::Server::<listener::Peer>::from_listener(listener);
    let result = match tls {
        Some((files, config)) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
            let reloading = tokio::spawn(tls::keep_current(config.clone(), files, reload));
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
                .handshake_timeout(limits.header_timeout);
            let served = listener::configure(server.acceptor(acceptor), &limits)
                .handle(handle)
                .serve(service)
                .await;
            reloading.abort();
            served
        }
        None => {
            listener::configure(server, &limits)
                .handle(handle)
                .serve(service)
                .await
        }
    };
    result.map_err(|e| ServerError::Other(format!("server on {addr} failed: {e}")))
}
