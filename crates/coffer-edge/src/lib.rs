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
mod account_keys;
mod compaction;
mod driver;
mod feed_pin;
mod metrics;
mod node_key;
mod relay;
mod serving;
mod status;
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use coffer_core::Coffer;
use coffer_crypto::KekProvider;
use coffer_replication::Config;
use coffer_server::replication::{Origin, Replication};
use coffer_server::{
    AppState, HttpLimits, RuntimeRate, ServerError, SnapshotLimits, TlsFiles, TrustedProxies,
    edge_app,
};
use coffer_storage::{SqliteOptions, SqliteStorage, Storage};
use coffer_types::TokenId;
use zeroize::Zeroizing;

use crate::serving::{Front, Serving};
use crate::upstream::Upstreams;

pub use coffer_replication::sign::{BadFeedKey, FeedKey};
pub use status::EdgeStatus;
pub use upstream::{ClientError, SnapshotBounds};

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
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub insecure_http: bool,
    /// Allow an `http://` upstream that is not loopback (127.0.0.0/8, ::1, localhost); without
    /// it such an upstream is refused at start. Plain HTTP lets anyone on the path read the
    /// node token and see which secrets change, even though a signed feed keeps them from
    /// forging what the edge applies.
    pub insecure_http_upstream: bool,
    /// A PEM bundle to trust for upstreams instead of the system roots.
    pub ca_cert: Option<PathBuf>,
    /// The control plane's feed-signing public key (as `coffer node create` printed it). Given,
    /// it is pinned from the start; otherwise the edge pins the key its first upstream names
    /// (trust on first use). Either way it is kept in `DIR/feed.pub` and never changes.
    pub feed_key: Option<FeedKey>,
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
    /// What the listener lets a client cost: connections, header and idle timeouts.
    pub http: HttpLimits,
    /// How many snapshots a relay serves at once, per node, and for how long at most.
    pub snapshots: SnapshotLimits,
    /// Reads per second one service token may make on the runtime API (none by default).
    pub runtime_rate: Option<RuntimeRate>,
    /// What a snapshot from upstream may be: how old, how many items, how many bytes.
    pub snapshot_bounds: upstream::SnapshotBounds,
    /// Reloads the TLS certificate and key, and the upstreams' CA bundle, when asked (SIGHUP)
    /// or when the files change.
    pub reload: coffer_server::Reload,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP, its own listener); off
    /// when `None`.
    pub metrics_listen: Option<SocketAddr>,
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
#[non_exhaustive]
pub enum EdgeError {
    #[error("give at least one --upstream")]
    NoUpstream,
    #[error("upstream {url:?} {problem}")]
    BadUpstream { url: String, problem: &'static str },
    #[error(
        "upstream {url:?} is plain HTTP to a non-loopback host: use https://, or give --insecure-http-upstream to allow it"
    )]
    PlainHttpUpstream { url: String },
    #[error(
        "--max-staleness ({max} s) must be at least --staleness ({staleness} s): an edge is not stale before that"
    )]
    MaxStaleness { max: u64, staleness: u64 },
    #[error(
        "the node token is malformed (expected coffernode_..., as `coffer node create` printed it)"
    )]
    MalformedNodeToken,
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(
        "data dir {path}: this edge's node was revoked ({detail}) and it discarded its replica; register a new node (coffer node create) and start it with an empty data dir"
    )]
    Revoked { path: PathBuf, detail: String },
    #[error("data dir {path}: {message}")]
    DataDir { path: PathBuf, message: String },
    #[error(
        "--feed-key {given} is not the key this data dir pinned ({pinned}, in {path}); an edge never changes its feed key: give it an empty data dir to follow another control plane"
    )]
    FeedKeyMismatch {
        path: PathBuf,
        given: String,
        pinned: String,
    },
    #[error(
        "this data dir holds a replica but no pinned feed key ({path}); give --feed-key with the control plane's feed key (`coffer node create` prints it, the control plane logs it at start as feed_key), since learning it now would trust whoever answers first"
    )]
    FeedKeyRequired { path: PathBuf },
    #[error(transparent)]
    Server(#[from] ServerError),
}

pub(crate) fn data_dir_error(path: &Path, message: impl std::fmt::Display) -> EdgeError {
    EdgeError::DataDir {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Runs an edge until `shutdown` resolves. `on_ready` gets the bound address as soon as the
/// listener is up (`/healthz` then says whether the replica is ready), and the edge's status.
///
/// The story: check the settings and open the replica ([`Edge::open`]); serve it at once if it
/// holds one; start replication and housekeeping; serve until told to stop, or until the edge
/// learns it was revoked, which discards the replica and leaves only refusals to serve.
pub async fn run(
    opts: EdgeOptions,
    on_ready: impl FnOnce(SocketAddr, Arc<EdgeStatus>) + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), EdgeError> {
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    // Bound first: an address in use stops the start before the data dir is touched.
    let metrics_listener = opts
        .metrics_listen
        .map(coffer_server::bind_metrics)
        .transpose()?;
    let (edge, _lock) = Edge::open(opts, closing).await?;
    let edge = Arc::new(edge);
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = match (metrics_listener, &edge.metrics) {
        (Some(listener), Some(metrics)) => {
            metrics.set_source(Arc::new(metrics::EdgeSource {
                status: edge.status.clone(),
                storage: edge.storage.clone(),
                serving: edge.serving.clone(),
            }));
            edge.storage
                .set_write_observer(Arc::new(coffer_server::StorageObserver(metrics.clone())));
            Some(tokio::spawn(coffer_server::serve_metrics(
                listener,
                metrics.clone(),
                async move {
                    let _ = metrics_stopped.await;
                },
            )))
        }
        _ => None,
    };
    if edge.status.is_synced()
        && let Err(e) = edge.open_serving().await
    {
        // Not fatal: the replica may not hold this node's grant yet (registered, then stopped
        // before the grant arrived), which only the feed can bring. Housekeeping builds the
        // serving side once it opens.
        tracing::warn!(error = %e, "cannot serve the replica yet; serving once the feed brings what it lacks");
    }
    let registration = tokio::spawn(node_key::register(
        edge.upstreams.clone(),
        edge.status.clone(),
        edge.public_hex.clone(),
    ));
    let replicator = match edge.status.feed_key.get() {
        Some(key) => tokio::spawn(edge.driver(FeedKey::from_bytes(*key)).await?.run()),
        // Trust on first use: replication starts once an upstream named the key.
        None => tokio::spawn(edge.clone().learn_then_replicate()),
    };
    let housekeeping = tokio::spawn(edge.clone().housekeeping());
    let ca_reloading = tokio::spawn(
        edge.upstreams
            .clone()
            .keep_ca_current(edge.opts.reload.clone()),
    );

    let ready_status = edge.status.clone();
    let server = coffer_server::serve_app_observed(
        Front {
            status: edge.status.clone(),
            serving: edge.serving.clone(),
        },
        edge.opts.listen,
        edge.opts.tls.as_ref(),
        edge.opts.http,
        edge.opts.reload.clone(),
        edge.metrics.clone(),
        move |addr| on_ready(addr, ready_status),
        async move {
            shutdown.await;
            let _ = closing_tx.send(true);
        },
    );
    tokio::pin!(server);
    let stopped = tokio::select! {
        result = &mut server => Some(result),
        () = edge.status.wait_revoked() => None,
    };
    // Stopped, not just told to stop: a task that is building the serving side must not put
    // it back after a revocation emptied it.
    for task in [registration, replicator, housekeeping, ca_reloading] {
        task.abort();
        let _ = task.await;
    }
    let result = match stopped {
        Some(result) => {
            edge.shut_down().await;
            result.map_err(EdgeError::from)
        }
        None => {
            edge.discard().await;
            // Still answering: 503 `edge_revoked`, and `/healthz` says why.
            server.await.map_err(EdgeError::from)
        }
    };
    // Bounded: a scrape held open does not keep the edge from stopping.
    let _ = metrics_stop.send(());
    if let Some(task) = metrics_server {
        coffer_server::stop_metrics(task).await;
    }
    result
}

/// What an edge's tasks share, held once.
struct Edge {
    opts: EdgeOptions,
    /// This edge's node (its token's id).
    node: TokenId,
    /// Its X25519 public key, in hex, as registered.
    public_hex: String,
    /// Until the serving side is built, or the edge is revoked (then dropped: the serving side
    /// holds the only other reference).
    kek: std::sync::Mutex<Option<Arc<dyn KekProvider>>>,
    storage: Arc<SqliteStorage>,
    /// This node's keys for accounts with a replication key of their own.
    account_keys: Arc<account_keys::AccountKeys>,
    status: Arc<EdgeStatus>,
    upstreams: Upstreams,
    serving: Arc<Serving>,
    /// Turns true at shutdown: a relay's long-polls end then.
    closing: tokio::sync::watch::Receiver<bool>,
    /// With `--metrics-listen`: where requests, connections and commits are counted.
    metrics: Option<Arc<coffer_metrics::Metrics>>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("data_dir", &self.opts.data_dir)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Edge {
    /// Checks the settings, takes the data dir (the lock is returned, held until dropped) and
    /// opens the replica. A data dir marked revoked is refused; a replica that already holds
    /// this node's revocation (the edge stopped before it could act on it) is discarded and
    /// refused.
    async fn open(
        opts: EdgeOptions,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(Edge, std::fs::File), EdgeError> {
        check_upstreams(&opts.upstreams, opts.insecure_http_upstream)?;
        coffer_server::check_plain_http(opts.listen, opts.tls.is_some(), opts.insecure_http)?;
        if let Some(max) = opts.max_staleness
            && max < opts.staleness
        {
            return Err(EdgeError::MaxStaleness {
                max: max.as_secs(),
                staleness: opts.staleness.as_secs(),
            });
        }
        let node = coffer_crypto::PresentedToken::parse(&opts.node_token)
            .ok()
            .filter(|t| t.kind() == coffer_crypto::TokenKind::Node)
            .map(|t| t.id())
            .ok_or(EdgeError::MalformedNodeToken)?;
        let lock = open_dir(&opts.data_dir)?;
        refuse_if_marked_revoked(&opts.data_dir)?;
        // No KEK: this node's own key, and the replication keys granted to it.
        let node_key = Arc::new(node_key::open(&opts.data_dir)?);
        let public_hex = hex::encode(node_key.public_key().as_bytes());
        // Commits are not synced one by one: the position is committed with the data, so what
        // a power loss takes is fetched again (see `SqliteOptions::sync_commits`).
        let mut sqlite = SqliteOptions::default();
        sqlite.sync_commits = false;
        let storage = Arc::new(
            SqliteStorage::open_with(&opts.data_dir.join(DB_FILE), sqlite)
                .map_err(|e| data_dir_error(&opts.data_dir, e))?,
        );
        let state = storage
            .log_state()
            .await
            .map_err(|e| data_dir_error(&opts.data_dir, e))?;
        let pinned = feed_pin::resolve(&opts.data_dir, opts.feed_key, state.cluster_id.is_some())?;
        let upstreams = Upstreams::new(
            opts.upstreams.clone(),
            opts.node_token.clone(),
            opts.ca_cert.as_deref(),
        )?
        .with_snapshot_bounds(opts.snapshot_bounds);
        let status = Arc::new(EdgeStatus::new(
            opts.upstreams.clone(),
            state.cluster_id,
            opts.staleness,
            opts.max_staleness,
        ));
        if let Some(key) = pinned {
            let _ = status.feed_key.set(*key.as_bytes());
            tracing::info!(feed_key = %key, "verifying the feed under the pinned key");
        }
        let account_keys = Arc::new(account_keys::AccountKeys::new(
            &opts.data_dir,
            node,
            Arc::clone(&node_key),
            storage.clone(),
        ));
        let arks = Arc::clone(&account_keys);
        let kek: Arc<dyn KekProvider> = Arc::new(
            node_key::provider(node, node_key, storage.clone())
                .with_account_keys(Box::new(move |account, version| arks.ark(account, version))),
        );
        let edge = Edge {
            node,
            public_hex,
            kek: std::sync::Mutex::new(Some(kek)),
            account_keys,
            storage,
            status,
            upstreams,
            serving: Arc::new(Serving::default()),
            closing,
            metrics: opts
                .metrics_listen
                .map(|_| Arc::new(coffer_metrics::Metrics::new())),
            opts,
        };
        if edge.replica_revokes_this_node().await? {
            let why = "the replica holds this node's revocation";
            edge.status.revoke(why.to_owned());
            edge.discard().await;
            return Err(EdgeError::Revoked {
                path: edge.opts.data_dir.clone(),
                detail: why.to_owned(),
            });
        }
        match state.cluster_id {
            Some(c) => tracing::info!(
                cluster = %hex::encode(c),
                applied_seq = state.head_seq,
                "serving from the local replica while catching up"
            ),
            None => tracing::info!("empty replica: bootstrapping from an upstream snapshot"),
        }
        Ok((edge, lock))
    }

    async fn replica_revokes_this_node(&self) -> Result<bool, EdgeError> {
        let node = self
            .storage
            .get_node(self.node)
            .await
            .map_err(|e| data_dir_error(&self.opts.data_dir, e))?;
        Ok(node.is_some_and(|n| n.revoked.is_some()))
    }

    /// Builds the serving side over the replica: the runtime API (and, on a relay, the feed)
    /// through the same core code as the control plane, DEKs unwrapped with this edge's KEK.
    async fn open_serving(&self) -> Result<(), coffer_core::CoreError> {
        let Some(kek) = self.kek.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            // Revoked: nothing is served again.
            return Ok(());
        };
        let storage: Arc<dyn Storage> = self.storage.clone();
        let coffer = Arc::new(Coffer::open_replica(storage, kek).await?);
        let replication = self.opts.serve_feed.then(|| {
            Arc::new(
                Replication::with_limits(
                    Origin::Relay(self.status.latest_freshness.clone()),
                    Arc::new(access::RelayAccess {
                        upstreams: self.upstreams.clone(),
                        status: self.status.clone(),
                    }),
                    self.closing.clone(),
                    self.opts.snapshots,
                )
                .forwarding_node_keys(Arc::new(node_key::RelayNodeKeys {
                    upstreams: self.upstreams.clone(),
                    status: self.status.clone(),
                }))
                .serving_feed_key(self.status.feed_key.clone())
                .forwarding_snapshots(Arc::new(relay::RelaySnapshots {
                    upstreams: self.upstreams.clone(),
                    status: self.status.clone(),
                })),
            )
        });
        let health = {
            let status = self.status.clone();
            get(move || {
                let status = status.clone();
                async move { status.report() }
            })
        };
        let state = AppState::with_metrics(
            coffer.clone(),
            replication,
            self.opts.trusted_proxies.clone(),
            self.opts.runtime_rate,
            self.metrics.clone(),
        );
        self.serving.set(edge_app(state, health), coffer);
        // Built: the KEK lives on in the serving side only.
        self.kek.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.status.mark_serving();
        Ok(())
    }

    /// Trust on first use: learns the feed key from the first upstream that names it, pins
    /// it, then replicates under it. Runs until aborted.
    async fn learn_then_replicate(self: Arc<Self>) {
        let key = feed_pin::learn(&self.opts.data_dir, &self.upstreams, &self.status).await;
        let _ = self.status.feed_key.set(*key.as_bytes());
        match self.driver(key).await {
            Ok(driver) => driver.run().await,
            Err(e) => tracing::error!(error = %e, "cannot start replication"),
        }
    }

    /// The replication driver, starting from the replica as stored, verifying under `key`.
    async fn driver(&self, key: FeedKey) -> Result<driver::Driver, EdgeError> {
        let long_poll = self.opts.effective_long_poll();
        let staleness = self.opts.staleness;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = Config {
            staleness_ms: ms(staleness),
            // A feed request long-polls; the HTTP client gives up after its wait plus a grace
            // (and reports a failure); the follower re-sends only after that. Snapshots report
            // progress while they stream, so they are never cut short.
            request_timeout_ms: ms(long_poll + upstream::FEED_GRACE + Duration::from_secs(5)),
            // The upstream holds the request until there is something new: ask again at once.
            poll_interval_ms: 0,
            failure_backoff_ms: 1_000,
            // Half the staleness at most: an upstream that is back is in use again well before
            // the edge would count itself stale for want of trying.
            max_backoff_ms: ms((staleness / 2).min(MAX_BACKOFF)),
            // Only what the control plane signed is applied: a relay, or anyone between, can
            // withhold entries but not forge or rewrite them.
            feed_key: Some(key),
            max_snapshot_age_ms: ms(self.opts.snapshot_bounds.max_age),
            // The deadline it serves snapshots by (`--snapshot-deadline`) bounds the ones it
            // takes too: an upstream trickling one holds a failover off this long at most.
            snapshot_deadline_ms: ms(self.opts.snapshots.deadline),
            // The gap the control plane and relays compact on: a slow snapshot's streaming
            // time is credited at most once per upstream per gap.
            compaction_gap_ms: ms(coffer_core::ResealSettings::DEFAULT_COMPACTION_GAP),
        };
        driver::Driver::new(
            self.node,
            self.upstreams.clone(),
            self.storage.clone(),
            self.status.clone(),
            config,
            long_poll,
        )
        .await
        .map_err(|e| data_dir_error(&self.opts.data_dir, e))
    }

    /// Builds the serving side once the first snapshot is in, then, every interval, ships
    /// access events upstream, drops destroyed DEKs from memory and compacts the replica's
    /// log (past destroyed DEKs at most once per the control plane's default gap,
    /// `ResealSettings::DEFAULT_COMPACTION_GAP`). Runs
    /// until aborted.
    async fn housekeeping(self: Arc<Self>) {
        let mut failures = 0u64;
        while self.serving.coffer().is_none() {
            self.status.wait_synced().await;
            if let Err(e) = self.open_serving().await {
                // Said once a minute: waiting for this node's grant can take a while.
                if failures.is_multiple_of(60) {
                    tracing::error!(error = %e, "cannot open the replica after its first sync; retrying");
                }
                failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        tracing::info!("edge ready: serving runtime reads from the local replica");
        // The replica's own log: a plain edge serves nobody from it, so it keeps none (the
        // base keeps the position); a relay keeps enough for the edges below to catch up from.
        let retain = if self.opts.serve_feed {
            RELAY_RETENTION
        } else {
            0
        };
        let mut dek_compaction = compaction::DekCompaction::on_default_gap();
        let mut round = tokio::time::interval(access::INTERVAL);
        round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            round.tick().await;
            if let Some(c) = self.serving.coffer() {
                access::stash(&c, &self.storage).await;
                // DEKs the feed destroyed leave memory too, not only the replica.
                if let Err(e) = c.forget_destroyed_deks().await {
                    tracing::warn!(error = %e, "could not sweep destroyed DEKs from memory");
                }
            }
            access::deliver(&self.storage, &self.upstreams, &self.status).await;
            let upstream = self
                .status
                .current
                .load(std::sync::atomic::Ordering::Acquire)
                % self.upstreams.urls.len().max(1);
            self.account_keys.housekeep(&self.upstreams, upstream).await;
            compact(&self.storage, retain).await;
            dek_compaction
                .run(&self.storage, std::time::Instant::now())
                .await;
        }
    }

    /// After a normal stop: the reads not yet stashed go to the outbox, and the replica is
    /// closed.
    async fn shut_down(&self) {
        if let Some(c) = self.serving.coffer() {
            access::stash(&c, &self.storage).await;
        }
        self.storage.shutdown().await;
    }

    /// What a revoked edge does: it serves nothing more (the front answers 503), drops the
    /// serving side and with it every key it had in memory (the replication keys opened from
    /// its grants, unwrapped DEKs and MAC keys, all wiped on drop), closes and deletes its replica (sealed values and wrapped
    /// keys) and leaves a marker, so that a restart refuses the dir instead of bootstrapping
    /// again. Access events not yet delivered are lost with the replica: the control plane no
    /// longer takes them from this node.
    async fn discard(&self) {
        self.serving.close();
        self.kek.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.storage.shutdown().await;
        // No open connection keeps the deleted file readable (a relay's snapshot stream in
        // flight reads on its own and finishes).
        self.storage.close_reads();
        let dir = &self.opts.data_dir;
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
        let reason = self.status.revoked_reason().unwrap_or_default();
        let detail = format!("revoked at {}: {reason}", coffer_types::Timestamp::now());
        if let Err(e) = std::fs::write(dir.join(REVOKED_FILE), format!("{detail}\n")) {
            tracing::error!(error = %e, "cannot mark the data dir as revoked");
        }
        // The node key and the node account keys (`node-account-keys/`) stay: they open only grants
        // this node had, and the control plane rotated the replication key and every
        // account's ARK when it revoked the node.
        tracing::error!(
            %reason,
            "edge revoked: it serves nothing more and its replica is deleted; what it held opens nothing written from now on (the control plane rotated the replication key)"
        );
    }
}

/// Refuses upstream URLs an edge cannot or should not use; warns about plain HTTP off this
/// machine (the node token would cross the network in clear). `coffer config check` runs it
/// on a config file's upstreams too, so the check and the start agree. An error names the URL
/// without any credentials it carries, and cut to [`URL_ECHO_MAX_CHARS`].
pub fn check_upstreams(urls: &[String], insecure_http_upstream: bool) -> Result<(), EdgeError> {
    if urls.is_empty() {
        return Err(EdgeError::NoUpstream);
    }
    for url in urls {
        let bad = |problem| EdgeError::BadUpstream {
            url: shown_url(url),
            problem,
        };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| bad("is not an http:// or https:// URL"))?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        if host.contains('@') {
            return Err(bad(
                "carries credentials; an upstream URL must not (the node token authenticates the edge)",
            ));
        }
        if url.starts_with("http://") && !is_loopback_host(host) {
            if !insecure_http_upstream {
                return Err(EdgeError::PlainHttpUpstream {
                    url: shown_url(url),
                });
            }
            tracing::warn!(
                upstream = %url,
                "plain HTTP to a non-loopback upstream: the node token crosses the network in clear (use https://)"
            );
        }
    }
    Ok(())
}

/// Longest rendering of an upstream URL in an error, in characters.
const URL_ECHO_MAX_CHARS: usize = 100;

/// `url` as an error names it: credentials (`user:secret@`) replaced by `…@`, cut to
/// [`URL_ECHO_MAX_CHARS`].
fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let shown = match rest[..end].rfind('@') {
        Some(at) if !scheme.is_empty() => format!("{scheme}://…{}", &rest[at..]),
        _ => url.to_owned(),
    };
    match shown.char_indices().nth(URL_ECHO_MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &shown[..cut]),
        None => shown,
    }
}

/// Refuses a data dir whose edge was revoked (it left a marker when it discarded its replica).
fn refuse_if_marked_revoked(dir: &Path) -> Result<(), EdgeError> {
    let marker = dir.join(REVOKED_FILE);
    if marker.symlink_metadata().is_err() {
        return Ok(());
    }
    let detail = std::fs::read_to_string(&marker)
        .unwrap_or_else(|e| format!("the marker {} is unreadable: {e}", marker.display()));
    Err(EdgeError::Revoked {
        path: dir.to_owned(),
        detail: detail.trim().to_owned(),
    })
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

#[cfg(test)]
mod tests {
    use super::{EdgeError, check_upstreams, is_loopback_host};

    #[test]
    fn a_plain_http_upstream_off_loopback_needs_the_flag() {
        let urls = |u: &str| vec![u.to_owned()];
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:8080/",
            "https://edge.example.com",
        ] {
            assert!(check_upstreams(&urls(ok), false).is_ok(), "{ok}");
        }
        let refused = check_upstreams(&urls("http://10.0.0.1:8080"), false).unwrap_err();
        assert!(
            matches!(&refused, EdgeError::PlainHttpUpstream { url } if url == "http://10.0.0.1:8080"),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("--insecure-http-upstream"));
        // One bad upstream among good ones is enough to refuse.
        let mixed = vec![
            "https://a.example.com".to_owned(),
            "http://b.example.com".to_owned(),
        ];
        assert!(matches!(
            check_upstreams(&mixed, false),
            Err(EdgeError::PlainHttpUpstream { .. })
        ));
        assert!(check_upstreams(&mixed, true).is_ok());
    }

    #[test]
    fn an_upstream_error_names_the_url_without_its_credentials_and_cut_short() {
        let refused = check_upstreams(&["https://edge:coffernode_s3cret@cp.example".into()], false)
            .unwrap_err();
        let shown = refused.to_string();
        assert!(shown.contains("carries credentials"), "{shown}");
        assert!(shown.contains("https://…@cp.example"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let long = format!("ftp://{}", "a".repeat(5000));
        let shown = check_upstreams(&[long], false).unwrap_err().to_string();
        assert!(shown.len() < 300, "{shown}");
        let long = format!("http://{}.example", "b".repeat(5000));
        let shown = check_upstreams(&[long], false).unwrap_err().to_string();
        assert!(shown.len() < 300, "{shown}");
    }

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
