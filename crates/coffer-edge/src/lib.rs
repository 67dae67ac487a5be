//! Coffer's edge node (`coffer edge`): every secret, sealed, in a local SQLite replica kept
//! current from an upstream's change feed, and the runtime API served from that replica alone.
//!
//! - **Replication** is [`coffer_replication::Follower`] driven over HTTP ([`driver`]):
//!   bootstrap from a streamed snapshot, then long-poll the feed; every batch of entries is
//!   applied together with its position in one SQLite transaction, so a restart resumes exactly
//!   where it stopped. Anything that fails verification (gap, hash, payload, digest, truncation)
//!   is refused whole, raises an alarm in the log and triggers a resync.
//! - **Reads** go through the same core code as on the control plane
//!   ([`coffer_core::Coffer`] over the replica; DEKs unwrapped through this node's own KEK
//!   provider and cached), with the runtime cache keyed on the replica's applied head. No read
//!   calls upstream.
//! - **Static stability**: once it holds a replica the edge serves from it whatever happens
//!   upstream, and after a restart it serves at once from disk, before reaching any upstream.
//! - **Relays** (`serve_feed`) serve the feed and snapshots from their own replica (the same
//!   handlers as the control plane), entries byte for byte, so fleets fan out in tiers.
//! - **Access events** go upstream through a durable outbox ([`access`]).

mod access;
mod driver;
mod status;
mod upstream;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::routing::get;
use coffer_core::Coffer;
use coffer_crypto::{FileKek, KekProvider};
use coffer_replication::Config;
use coffer_server::replication::{Origin, Replication};
use coffer_server::{ApiError, AppState, ServerError, TlsFiles, TrustedProxies, edge_router};
use coffer_storage::{SqliteOptions, SqliteStorage, Storage};
use futures_util::future::Either;
use tower::Service;
use zeroize::Zeroizing;

pub use status::EdgeStatus;

const DB_FILE: &str = "replica.db";
/// Left in the data dir by an edge that learnt it was revoked (and deleted its replica): a
/// restart refuses to serve from that dir.
const REVOKED_FILE: &str = "revoked";

/// How to run an edge.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// Base URLs of the upstreams (the control plane, or relays): the first is used first, the
    /// others in turn on failover.
    pub upstreams: Vec<String>,
    pub node_token: Zeroizing<String>,
    pub data_dir: PathBuf,
    /// The KEK this edge unwraps DEKs with: the same key as the control plane's.
    pub kek_file: PathBuf,
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub insecure_http: bool,
    /// A PEM bundle to trust for upstreams instead of the system roots.
    pub ca_cert: Option<PathBuf>,
    /// Serve the feed to other edges (a relay).
    pub serve_feed: bool,
    /// An upstream whose heartbeats are older than this is left for the next one.
    pub staleness: Duration,
    /// How long one feed request waits for new entries at most. An idle upstream answers
    /// with a heartbeat when it runs out, so it also bounds how old heartbeats get; the edge
    /// uses at most a quarter of `staleness`.
    pub long_poll: Duration,
    /// Cut off from every upstream for longer than this, the edge stops serving (503) until
    /// one answers again. `None` (the default): it serves what it has however long it is cut
    /// off (static stability), which also means a revocation it never hears of never stops it.
    pub max_staleness: Option<Duration>,
    /// Proxies whose client-address header is believed (none by default).
    pub trusted_proxies: TrustedProxies,
}

impl EdgeOptions {
    pub const DEFAULT_STALENESS: Duration = Duration::from_secs(30);
    pub const DEFAULT_LONG_POLL: Duration = Duration::from_secs(1);

    /// The long-poll actually used: short against the staleness, so that a healthy idle
    /// upstream (and the root's clock forwarded through relays) always looks fresh.
    pub fn effective_long_poll(&self) -> Duration {
        self.long_poll
            .min(self.staleness / 4)
            .max(Duration::from_millis(100))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{0}")]
    Config(String),
    #[error(
        "data dir {path}: this edge's node was revoked ({detail}) and it discarded its replica; register a new node (coffer node create) and start it with an empty data dir"
    )]
    Revoked { path: PathBuf, detail: String },
    #[error("data dir {path}: {message}")]
    DataDir { path: PathBuf, message: String },
    #[error(transparent)]
    Server(#[from] ServerError),
}

fn data_dir_error(path: &Path, message: impl Into<String>) -> EdgeError {
    EdgeError::DataDir {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Creates (mode 0700) or opens the edge's data dir and takes its lock.
fn open_dir(path: &Path) -> Result<std::fs::File, EdgeError> {
    use std::os::unix::fs::DirBuilderExt;
    if path.join("coffer.db").exists() {
        return Err(data_dir_error(
            path,
            "is a control plane's data dir; an edge needs a directory of its own",
        ));
    }
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| data_dir_error(path, format!("cannot create: {e}")))?;
    }
    // The replica holds every sealed value: private to this user, whatever the umask was.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| data_dir_error(path, format!("cannot set mode 0700: {e}")))?;
    coffer_server::lock_data_dir(path).map_err(EdgeError::from)
}

/// Runs an edge until `shutdown` resolves. `on_ready` gets the bound address as soon as the
/// listener is up (`/healthz` then says whether the replica is ready), and the edge's status.
pub async fn run(
    opts: EdgeOptions,
    on_ready: impl FnOnce(SocketAddr, Arc<EdgeStatus>) + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), EdgeError> {
    if opts.upstreams.is_empty() {
        return Err(EdgeError::Config("give at least one --upstream".into()));
    }
    for url in &opts.upstreams {
        let Some(rest) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
        else {
            return Err(EdgeError::Config(format!(
                "upstream {url:?} is not an http:// or https:// URL"
            )));
        };
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if host.is_empty() {
            return Err(EdgeError::Config(format!("upstream {url:?} has no host")));
        }
        if host.contains('@') {
            return Err(EdgeError::Config(
                "an upstream URL must not carry credentials (the node token authenticates the edge)"
                    .into(),
            ));
        }
        if url.starts_with("http://") && !is_loopback_host(host) {
            tracing::warn!(
                upstream = %url,
                "plain HTTP to a non-loopback upstream: the node token crosses the network in clear (use https://)"
            );
        }
    }
    coffer_server::check_plain_http(opts.listen, opts.tls.is_some(), opts.insecure_http)?;
    if let Some(max) = opts.max_staleness
        && max < opts.staleness
    {
        return Err(EdgeError::Config(format!(
            "--max-staleness ({} s) must be at least --staleness ({} s): an edge is not stale before that",
            max.as_secs(),
            opts.staleness.as_secs()
        )));
    }
    let node = coffer_crypto::PresentedToken::parse(&opts.node_token)
        .ok()
        .filter(|t| t.kind() == coffer_crypto::TokenKind::Node)
        .map(|t| t.id())
        .ok_or_else(|| {
            EdgeError::Config(
                "the node token is malformed (expected coffernode_..., as `coffer node create` printed it)"
                    .into(),
            )
        })?;
    let _lock = open_dir(&opts.data_dir)?;
    let marker = opts.data_dir.join(REVOKED_FILE);
    if marker.symlink_metadata().is_ok() {
        let detail = std::fs::read_to_string(&marker)
            .unwrap_or_else(|e| format!("the marker {} is unreadable: {e}", marker.display()));
        return Err(EdgeError::Revoked {
            path: opts.data_dir.clone(),
            detail: detail.trim().to_owned(),
        });
    }
    let kek: Arc<dyn KekProvider> =
        Arc::new(FileKek::open(&opts.kek_file).map_err(|e| {
            EdgeError::Config(format!("KEK file {}: {e}", opts.kek_file.display()))
        })?);
    let db = opts.data_dir.join(DB_FILE);
    // Commits are not synced one by one: the position is committed with the data, so what a
    // power loss takes is fetched again (see `SqliteOptions::sync_commits`).
    let mut sqlite = SqliteOptions::default();
    sqlite.sync_commits = false;
    let storage = Arc::new(
        SqliteStorage::open_with(&db, sqlite)
            .map_err(|e| data_dir_error(&opts.data_dir, e.to_string()))?,
    );
    let state = storage
        .log_state()
        .await
        .map_err(|e| data_dir_error(&opts.data_dir, e.to_string()))?;
    // A replica that already applied this node's revocation (the process stopped before it
    // could discard it) is discarded now rather than served.
    if let Some(record) = storage
        .get_node(node)
        .await
        .map_err(|e| data_dir_error(&opts.data_dir, e.to_string()))?
        && record.revoked.is_some()
    {
        let status = EdgeStatus::new(opts.upstreams.clone(), None, opts.staleness, None);
        status.revoke("the replica holds this node's revocation".to_owned());
        discard(
            &opts.data_dir,
            &Serving::default(),
            storage,
            &status,
            &opts.kek_file,
        )
        .await;
        return Err(EdgeError::Revoked {
            path: opts.data_dir.clone(),
            detail: "the replica holds this node's revocation".to_owned(),
        });
    }
    let upstreams = upstream::Upstreams::new(
        opts.upstreams.clone(),
        opts.node_token.clone(),
        opts.ca_cert.as_deref(),
    )
    .map_err(EdgeError::Config)?;
    let status = Arc::new(EdgeStatus::new(
        opts.upstreams.clone(),
        state.cluster_id,
        opts.staleness,
        opts.max_staleness,
    ));
    match state.cluster_id {
        Some(c) => tracing::info!(
            cluster = %hex::encode(c),
            applied_seq = state.head_seq,
            "serving from the local replica while catching up"
        ),
        None => tracing::info!("empty replica: bootstrapping from an upstream snapshot"),
    }

    // The runtime API needs the replica's keys, which the first snapshot brings: until then
    // everything but /healthz answers 503.
    let serving = Arc::new(Serving::default());
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let health = {
        let status = status.clone();
        get(move || {
            let status = status.clone();
            async move { status.report() }
        })
    };
    let build = {
        let storage = storage.clone();
        let status = status.clone();
        let serving = serving.clone();
        let health = health.clone();
        let serve_feed = opts.serve_feed;
        let upstreams = upstreams.clone();
        let trusted_proxies = opts.trusted_proxies.clone();
        move || {
            let storage = storage.clone();
            let upstreams = upstreams.clone();
            let kek = kek.clone();
            let status = status.clone();
            let serving = serving.clone();
            let health = health.clone();
            let closing = closing.clone();
            let trusted_proxies = trusted_proxies.clone();
            async move {
                let dyn_storage: Arc<dyn Storage> = storage.clone();
                let coffer = Arc::new(
                    Coffer::open_replica(dyn_storage, kek)
                        .await
                        .map_err(|e| e.to_string())?,
                );
                let replication = serve_feed.then(|| {
                    Arc::new(Replication::new(
                        Origin::Relay(status.freshest_origin.clone()),
                        Arc::new(access::RelayAccess {
                            upstreams: upstreams.clone(),
                            status: status.clone(),
                        }),
                        closing,
                    ))
                });
                let router = edge_router(
                    AppState::new(coffer.clone(), replication, trusted_proxies),
                    health,
                );
                serving.set(router, coffer);
                status.mark_serving();
                Ok::<(), String>(())
            }
        }
    };
    if state.cluster_id.is_some() {
        build()
            .await
            .map_err(|e| data_dir_error(&opts.data_dir, format!("cannot open the replica: {e}")))?;
    }

    let long_poll = opts.effective_long_poll();
    let config = Config {
        staleness_ms: u64::try_from(opts.staleness.as_millis()).unwrap_or(u64::MAX),
        // A feed request long-polls; the HTTP client gives up after its wait plus a grace
        // (and reports a failure); the follower re-sends only after that. Snapshots report
        // progress while they stream, so they are never cut short.
        request_timeout_ms: u64::try_from(
            (long_poll + upstream::FEED_GRACE + Duration::from_secs(5)).as_millis(),
        )
        .unwrap_or(u64::MAX),
        // The upstream holds the request until there is something new: ask again at once.
        poll_interval_ms: 0,
        failure_backoff_ms: 1_000,
        // Half the staleness at most: an upstream that is back is in use again well before
        // the edge would count itself stale for want of trying.
        max_backoff_ms: u64::try_from((opts.staleness / 2).min(MAX_BACKOFF).as_millis())
            .unwrap_or(u64::MAX),
    };
    let driver = driver::Driver::new(
        node,
        upstreams.clone(),
        storage.clone(),
        status.clone(),
        config,
        long_poll,
    )
    .await
    .map_err(EdgeError::Config)?;
    let replicator = tokio::spawn(driver.run());

    // The replica's own log: a plain edge serves nobody from it, so it keeps none (the base
    // keeps the position); a relay keeps enough for the edges below to catch up from.
    let retain = if opts.serve_feed { RELAY_RETENTION } else { 0 };
    // Builds the serving side once the first snapshot is in, then ships access events and
    // compacts the replica's log.
    let background = {
        let storage = storage.clone();
        let status = status.clone();
        let serving = serving.clone();
        tokio::spawn(async move {
            while serving.coffer().is_none() {
                status.wait_synced().await;
                if let Err(e) = build().await {
                    tracing::error!(error = %e, "cannot open the replica after its first sync; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            tracing::info!("edge ready: serving runtime reads from the local replica");
            let mut round = tokio::time::interval(access::INTERVAL);
            round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                round.tick().await;
                if let Some(c) = serving.coffer() {
                    access::stash(&c, &storage).await;
                }
                access::deliver(&storage, &upstreams, &status).await;
                compact(&storage, retain).await;
            }
        })
    };

    let app = Front {
        status: status.clone(),
        serving: serving.clone(),
    };
    let ready_status = status.clone();
    let on_ready = move |addr| on_ready(addr, ready_status);
    let server =
        coffer_server::serve_app(app, opts.listen, opts.tls.as_ref(), on_ready, async move {
            shutdown.await;
            let _ = closing_tx.send(true);
        });
    tokio::pin!(server);
    let revoked = tokio::select! {
        result = &mut server => Some(result),
        () = status.wait_revoked() => None,
    };
    // Stopped, not just told to stop: a task that is building the serving side must not put
    // it back after a revocation emptied it.
    replicator.abort();
    background.abort();
    let _ = replicator.await;
    let _ = background.await;
    let Some(result) = revoked else {
        discard(&opts.data_dir, &serving, storage, &status, &opts.kek_file).await;
        // Still answering: 503 `edge_revoked`, and `/healthz` says why.
        return server.await.map_err(EdgeError::from);
    };
    if let Some(c) = serving.coffer() {
        access::stash(&c, &storage).await;
    }
    storage.shutdown().await;
    result.map_err(EdgeError::from)
}

/// What a revoked edge does: it serves nothing more (the front answers 503), drops the serving
/// side and with it every key it had in memory (the KEK's copy, unwrapped DEKs and MAC keys,
/// all wiped on drop), deletes its replica (sealed values and wrapped keys) and leaves a
/// marker, so that a restart refuses the dir instead of bootstrapping again. Access events
/// not yet delivered are lost with the replica: the control plane no longer takes them from
/// this node.
async fn discard(
    dir: &Path,
    serving: &Serving,
    storage: Arc<SqliteStorage>,
    status: &EdgeStatus,
    kek_file: &Path,
) {
    serving.close();
    storage.shutdown().await;
    // Requests already past the front (a relay's snapshot stream, say) hold the storage a
    // little longer; its reader connections close with the last of them. Give them a moment,
    // so that no open descriptor keeps the deleted replica readable, then delete it anyway.
    let deadline = tokio::time::Instant::now() + DISCARD_GRACE;
    let mut storage = Some(storage);
    while let Some(s) = storage.take() {
        match Arc::try_unwrap(s) {
            Ok(alone) => drop(alone),
            Err(shared) if tokio::time::Instant::now() < deadline => {
                storage = Some(shared);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => tracing::warn!(
                "requests in flight still hold the replica; deleting it while they finish"
            ),
        }
    }
    for name in [
        DB_FILE.to_owned(),
        format!("{DB_FILE}-wal"),
        format!("{DB_FILE}-shm"),
    ] {
        match std::fs::remove_file(dir.join(&name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(file = %dir.join(&name).display(), error = %e, "cannot delete the revoked edge's replica")
            }
        }
    }
    let reason = status.revoked_reason().unwrap_or_default();
    let detail = format!("revoked at {}: {reason}", coffer_types::Timestamp::now());
    if let Err(e) = std::fs::write(dir.join(REVOKED_FILE), format!("{detail}\n")) {
        tracing::error!(error = %e, "cannot mark the data dir as revoked");
    }
    tracing::error!(
        %reason,
        kek_file = %kek_file.display(),
        "edge revoked: it serves nothing more and its replica is deleted; the KEK file it was given is not its to delete: if this host is no longer trusted, destroy that copy (or rotate the KEK)"
    );
}

/// How long a revoked edge waits for requests in flight to let go of its replica.
const DISCARD_GRACE: Duration = Duration::from_secs(5);

/// The serving side (the runtime API's router over the replica's `Coffer`), once the first
/// sync built it; emptied for good when the edge is revoked, which drops the keys it holds.
#[derive(Debug, Default)]
struct Serving(RwLock<Slot>);

#[derive(Debug, Default)]
enum Slot {
    #[default]
    Empty,
    Serving(Router, Arc<Coffer>),
    /// Revoked: nothing is served or built again.
    Closed,
}

impl Serving {
    fn slot(&self) -> std::sync::RwLockReadGuard<'_, Slot> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Slot> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    fn router(&self) -> Option<Router> {
        match &*self.slot() {
            Slot::Serving(router, _) => Some(router.clone()),
            Slot::Empty | Slot::Closed => None,
        }
    }

    fn coffer(&self) -> Option<Arc<Coffer>> {
        match &*self.slot() {
            Slot::Serving(_, coffer) => Some(coffer.clone()),
            Slot::Empty | Slot::Closed => None,
        }
    }

    /// Serves `router` from now on, unless the slot was closed.
    fn set(&self, router: Router, coffer: Arc<Coffer>) {
        let mut slot = self.write();
        if !matches!(*slot, Slot::Closed) {
            *slot = Slot::Serving(router, coffer);
        }
    }

    /// Drops what is served, for good.
    fn close(&self) {
        let closed = std::mem::replace(&mut *self.write(), Slot::Closed);
        drop(closed);
    }
}

/// Whether `host` (with an optional port) names this machine.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        // A bracketed IPv6 address keeps its colons inside the brackets.
        Some((name, port)) if !name.ends_with(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The longest wait between attempts on failing upstreams.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Change-log entries a relay keeps for the edges below it (older ones: a snapshot).
const RELAY_RETENTION: u64 = 100_000;

/// Drops the replica's log entries older than the newest `retain`: they hold old sealed values
/// and deleted accounts' keys, and nothing needs them once applied.
async fn compact(storage: &SqliteStorage, retain: u64) {
    match storage.log_state().await {
        Ok(state) if state.cluster_id.is_some() => {
            let through = state.head_seq.saturating_sub(retain);
            if through > state.base_seq
                && let Err(e) = storage.compact_log(through).await
            {
                tracing::warn!(error = %e, "could not compact the replica's log");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the replica's log state"),
    }
}

/// The edge's HTTP front. `GET /healthz` (and `HEAD`) is answered here, before any middleware
/// (no request log line for the health checks a load balancer sends every few seconds), and
/// whether or not the replica is ready; every other request goes to the serving router once
/// the first sync has built it, and is answered 503 until then. A plain service rather than a
/// router in front of the router: a runtime read is routed once.
#[derive(Clone)]
struct Front {
    status: Arc<EdgeStatus>,
    serving: Arc<Serving>,
}

impl<B> Service<axum::http::Request<B>> for Front
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<RouteFuture<Infallible>, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        // HEAD as well: a load balancer's probe; hyper sends no body for it.
        if matches!(*req.method(), Method::GET | Method::HEAD) && req.uri().path() == "/healthz" {
            return Either::Right(ready(Ok(self.status.report())));
        }
        if self.status.is_revoked() {
            return Either::Right(ready(Ok(ApiError::new(
                coffer_api::ErrorCode::EdgeRevoked,
                "this edge node was revoked; it serves nothing and holds no replica",
            )
            .into_response())));
        }
        if let Some(lag) = self.status.cut_off() {
            return Either::Right(ready(Ok(ApiError::new(
                coffer_api::ErrorCode::Unavailable,
                format!(
                    "this edge has heard from no upstream for {} s, longer than its --max-staleness; it serves again once one answers",
                    lag.as_secs()
                ),
            )
            .into_response())));
        }
        match self.serving.router() {
            Some(mut router) => Either::Left(router.call(req)),
            None => Either::Right(ready(Ok(ApiError::new(
                coffer_api::ErrorCode::Unavailable,
                "this edge has no replica yet (first sync with an upstream in progress); retry later",
            )
            .into_response()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:8080",
            "::1",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "10.0.0.1:8080",
            "example.com",
            "[2001:db8::1]:443",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
