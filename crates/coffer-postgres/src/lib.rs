//! Coffer's PostgreSQL storage backend: [`PgStorage`] implements [`coffer_storage::Storage`]
//! (and [`coffer_storage::ArkStorage`]) on a PostgreSQL database that any number of control
//! plane instances share.
//!
//! Shape:
//! - `config`: the `postgres://` URL (TLS mode, password from the URL, a file or
//!   `PGPASSWORD`), errors that never print the password;
//! - `migrate`: versioned schema migrations (`migrations/NNNN_*.sql`), run at connect under an
//!   advisory lock, so instances starting together migrate once;
//! - `write`: the one write primitive. Every mutation is one transaction that first takes a
//!   global advisory lock (the writer lock), so writes of every instance are serialised: the
//!   change log stays gap-free and in commit order and each account's audit chain stays one
//!   chain. The transaction reads the log head from its single row, appends change entries and
//!   audit entries, signs the head when due, moves the head row, and sends `NOTIFY
//!   coffer_head` with the new seq, delivered at COMMIT. Concurrent writes of one handle share
//!   a transaction (group commit, each in its own savepoint), as with SQLite;
//!   The writer has a connection of its own, outside the read pool;
//! - reads take a pooled connection (deadpool), or a REPEATABLE READ, READ ONLY transaction
//!   when several statements must see one snapshot;
//! - the commit follower (`change_log::follow`): a connection of its own LISTENs on
//!   `coffer_head`; a notification only wakes it, and it reads the head row then (and every
//!   second regardless), moving `committed_head` and `subscribe_head` to other instances'
//!   commits;
//! - one module per area of the trait (`accounts`, `tokens`, `stores`, `secrets`, `services`,
//!   `nodes`, `keys` (instance keys, DEKs, KEK rotation), `lifecycle` (the DEK lifecycle),
//!   `replication` (replication keys, node keys, the rotating revocation), `ark` (accounts'
//!   replication keys), `change_log`, `snapshot`, `audit`); `storage.rs` holds the trait
//!   impls and only delegates to them. What several share sits in leaves so no module imports
//!   one that imports it: `tx` (the writer lock's key, the transaction future type),
//!   `key_versions` (which RK and ARK versions are current), `db` (errors and row decoding).
//!
//! A function named `..._in` runs inside its caller's write (it takes the write's transaction)
//! rather than starting one.
//!
//! The storage never holds a key or a plaintext value (see coffer-storage's invariants), and
//! nothing here logs a value, a token or the database password.

mod accounts;
mod ark;
mod audit;
mod change_log;
mod config;
mod db;
mod dek_gate;
mod import;
mod integrity;
mod key_versions;
mod keys;
mod lifecycle;
mod migrate;
mod nodes;
mod recount;
mod replication;
mod schema_objects;
mod secrets;
mod services;
mod snapshot;
mod storage;
mod stores;
mod tokens;
mod tx;
mod write;

#[cfg(feature = "test-support")]
pub mod testing;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use coffer_storage::{FeedSigner, Result, StorageError, WriteObserver};
use tokio::sync::watch;

pub use config::TlsMode;
pub use import::{ImportCounts, ImportError, Imported};
pub use migrate::SCHEMA_VERSION;

/// Tuning and secrets of a connection that are not in the URL. `Default` suits a small server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgOptions {
    /// Pooled connections for reads at most (the writer has one connection of its own, and
    /// the commit follower another).
    pub max_connections: usize,
    /// A file whose first line is the password, used when the URL has none (before
    /// `PGPASSWORD`).
    pub password_file: Option<PathBuf>,
    /// How long connecting (TCP, TLS, authentication) may take.
    pub connect_timeout: Duration,
    /// How long a write's transaction may sit idle before the database ends its session
    /// (`idle_in_transaction_session_timeout`, set for writes only). A write never waits on
    /// anything but the database, so only a stuck or frozen process gets there, and ending
    /// its session frees the writer lock for every other instance. Between 1 s and about
    /// 24 days (`i32::MAX` ms); `connect` refuses other values.
    pub write_idle_timeout: Duration,
    /// How long a write whose new DEK the DEK gate refused waits for a node's revocation on
    /// another instance to finish with it (then it fails `Unavailable`, a 503 the client
    /// retries), and how long a revocation waits to close the gate (or the write idle
    /// timeout, if longer: a write holding the gate shared may last that long). A
    /// revocation's hold is kept alive by its process (a keepalive statement every 5 s) and
    /// lapses 20 s after that stops (a frozen or partitioned process). Between 1 ms and 24 h;
    /// `connect` refuses other values.
    pub dek_gate_wait: Duration,
    /// The cluster id of the instance the caller expects the database to hold: checked before
    /// anything is migrated or written, so a URL naming the wrong database gets no schema
    /// (`ConnectError::OtherInstance`). `None`: no check (a new instance, `coffer init`).
    pub expected_cluster: Option<[u8; 16]>,
    /// Read only (`coffer verify --database-url`): every session is read-only
    /// (`default_transaction_read_only`), the schema is checked, never migrated (it must be
    /// this build's version), and every write fails at once (there is no writer: it never
    /// takes the writer's lock). Nothing follows other instances' commits (no `LISTEN`, which
    /// PostgreSQL refuses during recovery), so a hot standby or a paused point-in-time
    /// recovery target can be read.
    pub read_only: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            password_file: None,
            connect_timeout: Duration::from_secs(10),
            write_idle_timeout: Duration::from_secs(30),
            dek_gate_wait: Duration::from_secs(10),
            expected_cluster: None,
            read_only: false,
        }
    }
}

/// Why [`PgStorage::connect`] failed. Never carries the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is malformed; the message names the part.
    #[error("invalid database URL: {0}")]
    Url(String),
    /// The password could not be read (a password file that is missing or empty).
    #[error("database password: {0}")]
    Password(String),
    /// TLS could not be set up (a root certificate file, no system roots).
    #[error("database TLS: {0}")]
    Tls(String),
    /// The server could not be reached or refused us (network, authentication). Worth
    /// retrying with backoff when it is the network.
    #[error("cannot connect to the database at {target}: {detail}")]
    Unreachable {
        target: String,
        detail: String,
        /// The server answered and refused for good (a login refused, a database that does
        /// not exist, no right to connect, a certificate that does not verify): retrying does
        /// not help. Otherwise (the network, a server starting up or full) it may.
        refused: bool,
    },
    /// A [`PgOptions`] value is out of range; the message names the option.
    #[error("database options: {0}")]
    Options(String),
    /// The database's schema is not one this build can run on (newer than this build), or a
    /// migration failed.
    #[error("database schema: {0}")]
    Schema(String),
    /// The database does not hold the instance `PgOptions::expected_cluster` names: another
    /// instance's (its cluster id), or none. Nothing was migrated.
    #[error("{}", match found {
        Some(id) => format!("the database holds the instance with cluster id {id}"),
        None => "the database holds no Coffer instance".to_owned(),
    })]
    OtherInstance { found: Option<String> },
}

impl ConnectError {
    /// Whether trying again may help: the network, a server starting up or out of connection
    /// slots. Decided by the error's kind and SQLSTATE, not its (translatable) text.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Unreachable { refused: false, .. })
    }
}

/// The cluster id of the instance the database holds, without migrating anything: `None`
/// when it has no Coffer schema or no instance yet.
async fn existing_cluster_id(
    client: &deadpool_postgres::Object,
) -> Result<Option<[u8; 16]>, ConnectError> {
    let schema = |e: tokio_postgres::Error| ConnectError::Schema(error_chain(&e));
    let exists: bool = client
        .query_one("SELECT to_regclass('replication') IS NOT NULL", &[])
        .await
        .map_err(schema)?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt("SELECT cluster_id FROM replication WHERE id = 1", &[])
        .await
        .map_err(schema)?;
    Ok(row.and_then(|r| <[u8; 16]>::try_from(r.get::<_, Vec<u8>>(0).as_slice()).ok()))
}

/// Whether a failed connection attempt is a final refusal: an SQLSTATE of class 28 (invalid
/// authorization), 3D000 (no such database), 42501 (insufficient privilege), or a TLS error
/// (a certificate that does not verify). I/O errors, 57P03 (starting up) and 53300 (too many
/// connections) are not.
fn refused_for_good(e: &deadpool_postgres::PoolError) -> bool {
    let deadpool_postgres::PoolError::Backend(inner) = e else {
        return false;
    };
    if let Some(code) = inner.code() {
        let code = code.code();
        return code.starts_with("28") || code == "3D000" || code == "42501";
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        source = s.source();
    }
    false
}

impl From<ConnectError> for StorageError {
    fn from(e: ConnectError) -> Self {
        StorageError::Unavailable(e.to_string())
    }
}

/// An error's message followed by its sources' (tokio-postgres' `Display` shows only the
/// outermost: "invalid connection string", "db error").
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// What every clone of the storage's handle shares with the write path.
#[derive(Debug)]
pub(crate) struct Shared {
    /// `Storage::committed_head`.
    pub(crate) committed_seq: AtomicU64,
    /// `Storage::subscribe_head`.
    pub(crate) head: watch::Sender<u64>,
    pub(crate) signer: OnceLock<Arc<dyn FeedSigner>>,
    pub(crate) observer: OnceLock<Arc<dyn WriteObserver>>,
    /// The log's cluster id, once read (it never changes once made).
    pub(crate) cluster: OnceLock<[u8; 16]>,
    pub(crate) stats: write::Counters,
    /// Set by `shutdown`: the commit follower stops reconnecting.
    pub(crate) closed: AtomicBool,
    /// This process's view of the DEK gate.
    pub(crate) gate: dek_gate::GateState,
}

/// Coffer's storage on PostgreSQL. Cheap to share behind an `Arc`; several instances (in one
/// process or many) may use one database at once.
pub struct PgStorage {
    /// Connections for reads (the writer has its own).
    pub(crate) pool: deadpool_postgres::Pool,
    /// One connection for the health probe alone: a flood of reads that fills `pool` does not
    /// make the database look unreachable.
    probe_pool: deadpool_postgres::Pool,
    /// Snapshot streams at once: each holds a read connection (and a transaction) while its
    /// receiver is slow, so they may take only part of the pool.
    pub(crate) snapshots: Arc<tokio::sync::Semaphore>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) writer: write::WriterHandle,
    /// `host:port/database` (never the user's password), for Debug and errors.
    target: String,
    /// Follows other instances' commits (LISTEN coffer_head); stopped on shutdown and drop.
    /// `None` when read-only.
    listener: Option<tokio::task::JoinHandle<()>>,
    /// The DEK gate's bounds (`dek_gate.rs`).
    pub(crate) gate: GateSettings,
}

/// The DEK gate's bounds (`dek_gate.rs`), in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GateSettings {
    /// How long a refused write's process waits for the gate (`PgOptions::dek_gate_wait`).
    pub(crate) wait_ms: i64,
    /// How long closing the gate may wait: the gate wait, or the write idle timeout if longer
    /// (a write holding the gate shared may last that long).
    pub(crate) close_ms: i64,
    /// How long the holding session may sit idle before the database ends it; its keepalive
    /// renews it every quarter of this (`dek_gate::HOLD_IDLE`).
    pub(crate) hold_idle_ms: i64,
    /// The longest a hold lasts, alive or not (`dek_gate::MAX_HOLD`).
    pub(crate) max_hold: std::time::Duration,
}

impl GateSettings {
    fn new(wait_ms: i64, write_idle_ms: i64) -> GateSettings {
        GateSettings {
            wait_ms,
            close_ms: wait_ms.max(write_idle_ms),
            hold_idle_ms: i64::try_from(dek_gate::HOLD_IDLE.as_millis()).unwrap_or(i64::MAX),
            max_hold: dek_gate::MAX_HOLD,
        }
    }
}

impl std::fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStorage")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStorage {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

impl PgStorage {
    /// Connects to the database at `url` (`postgres://` or `postgresql://`), checks it can be
    /// reached and logged into, and migrates its schema (with `options.read_only`: checks it
    /// is this build's, and changes nothing). A schema newer than this build is refused,
    /// naming both versions. Does not retry: the caller decides (a server retries
    /// with backoff while the database comes up).
    pub async fn connect(url: &str, options: PgOptions) -> Result<PgStorage, ConnectError> {
        let idle_timeout_ms = write_idle_timeout_ms(options.write_idle_timeout)?;
        let gate = GateSettings::new(dek_gate_wait_ms(options.dek_gate_wait)?, idle_timeout_ms);
        let env_password = std::env::var("PGPASSWORD").ok();
        let env_sslmode = std::env::var("PGSSLMODE").ok();
        let mut parsed = config::parse(
            url,
            options.password_file.as_deref(),
            env_password,
            env_sslmode,
        )?;
        parsed.config.connect_timeout(options.connect_timeout);
        // So that an operator tells Coffer's sessions apart (pg_stat_activity), unless the URL
        // names itself.
        if parsed.config.get_application_name().is_none() {
            parsed.config.application_name("coffer");
        }
        let target = describe(&parsed.config);
        let tls = config::tls_config(parsed.tls, parsed.root_cert.as_deref())?;
        let listen_tls = tls.clone();
        let unreachable = |detail: String, refused: bool| ConnectError::Unreachable {
            target: target.clone(),
            detail,
            refused,
        };
        // Session settings the SQL relies on, whatever the database's or role's defaults
        // (`'\x00'` literals and `ESCAPE '\'` need standard_conforming_strings).
        add_options(&mut parsed.config, "-c standard_conforming_strings=on");
        if options.read_only {
            add_options(&mut parsed.config, "-c default_transaction_read_only=on");
        }
        let mut read_config = parsed.config.clone();
        // Reads are bounded (a snapshot's every FETCH too); writes set their own bounds.
        add_options(
            &mut read_config,
            &format!("-c statement_timeout={READ_STATEMENT_TIMEOUT_MS}"),
        );
        let make_pool = |config: &tokio_postgres::Config, max_size: usize| {
            let manager_config = deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            };
            let manager = match &tls {
                None => deadpool_postgres::Manager::from_config(
                    config.clone(),
                    tokio_postgres::NoTls,
                    manager_config,
                ),
                Some(tls) => deadpool_postgres::Manager::from_config(
                    config.clone(),
                    tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone()),
                    manager_config,
                ),
            };
            deadpool_postgres::Pool::builder(manager)
                .max_size(max_size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(30)))
                .create_timeout(Some(options.connect_timeout))
                .build()
                .map_err(|e| unreachable(format!("building the connection pool: {e}"), true))
        };
        let max_connections = options.max_connections.max(2);
        let pool = make_pool(&read_config, max_connections)?;
        // The writer's own connection: reads can never take it (M2 of the review). None when
        // read-only: there is no writer.
        let write_pool = if options.read_only {
            None
        } else {
            Some(make_pool(&parsed.config, 1)?)
        };
        // The health probe's own connection, made when it first probes (and again after one
        // broke).
        let probe_pool = make_pool(&read_config, 1)?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| unreachable(pool_detail(&e), refused_for_good(&e)))?;
        if let Some(expected) = options.expected_cluster {
            let found = existing_cluster_id(&client).await?;
            if found != Some(expected) {
                return Err(ConnectError::OtherInstance {
                    found: found.map(hex::encode),
                });
            }
        }
        check_search_path(&client).await?;
        if options.read_only {
            migrate::check(&client).await?;
        } else {
            migrate::run(&mut client).await?;
        }
        let head = write::read_head(&client)
            .await
            .map_err(|e| ConnectError::Schema(e.to_string()))?;
        drop(client);
        let shared = Arc::new(Shared {
            committed_seq: AtomicU64::new(head.seq),
            head: watch::Sender::new(head.seq),
            signer: OnceLock::new(),
            observer: OnceLock::new(),
            cluster: OnceLock::new(),
            stats: write::Counters::default(),
            closed: AtomicBool::new(false),
            gate: dek_gate::GateState::default(),
        });
        // Read-only: no LISTEN (refused during recovery: a standby, a paused PITR target) and
        // no writer (writes fail at once, before any lock).
        let (listener, writer) = match write_pool {
            None => (None, write::WriterHandle::read_only()),
            Some(write_pool) => (
                Some(
                    change_log::follow(parsed.config, listen_tls, Arc::clone(&shared), &target)
                        .await?,
                ),
                write::WriterHandle::start(write::Writer {
                    pool: write_pool,
                    read_pool: pool.clone(),
                    shared: Arc::clone(&shared),
                    idle_timeout_ms,
                }),
            ),
        };
        Ok(PgStorage {
            writer,
            pool,
            probe_pool,
            snapshots: Arc::new(tokio::sync::Semaphore::new(max_snapshots(max_connections))),
            shared,
            target,
            listener,
            gate,
        })
    }

    /// `host:port/database`: the database this handle is on, for messages (never the user or
    /// password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// A pooled connection for reads.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        use db::DbResultExt as _;
        self.pool.get().await.db("take a database connection")
    }

    /// Whether the database answers: its change log's head read on the probe's own connection
    /// (see [`coffer_storage::Storage::probe`]).
    pub(crate) async fn probe(&self) -> Result<()> {
        use db::DbResultExt as _;
        let c = self
            .probe_pool
            .get()
            .await
            .db("take the health probe's connection")?;
        write::read_head(&c).await.map(drop)
    }

    /// Stops accepting writes, lets the writer finish the queued ones, and closes the pool
    /// and the commit follower.
    pub(crate) async fn close(&self) {
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.writer.close().await;
        self.pool.close();
        self.probe_pool.close();
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

/// `write_idle_timeout` in milliseconds, if in range: at least 1 s (shorter would end writes
/// that merely wait on the network) and at most what PostgreSQL's setting holds (`i32::MAX` ms).
fn write_idle_timeout_ms(timeout: Duration) -> Result<i64, ConnectError> {
    let ms = timeout.as_millis();
    if ms < 1000 || ms > i32::MAX as u128 {
        return Err(ConnectError::Options(format!(
            "write_idle_timeout must be between 1 s and {} s",
            i32::MAX / 1000
        )));
    }
    Ok(ms as i64)
}

/// `dek_gate_wait` in milliseconds, if in range: at least 1 ms and at most a day (a wait
/// never meant to end would make a write hang; its statement's own timeout is a little more).
fn dek_gate_wait_ms(wait: Duration) -> Result<i64, ConnectError> {
    let ms = wait.as_millis();
    if !(1..=86_400_000).contains(&ms) {
        return Err(ConnectError::Options(
            "dek_gate_wait must be between 1 ms and 24 h".into(),
        ));
    }
    Ok(ms as i64)
}

/// `statement_timeout` of read sessions, in milliseconds.
const READ_STATEMENT_TIMEOUT_MS: u64 = 60_000;

/// Appends `extra` to the session's startup `options` (the URL's own come first).
fn add_options(config: &mut tokio_postgres::Config, extra: &str) {
    let options = match config.get_options() {
        Some(own) if !own.is_empty() => format!("{own} {extra}"),
        _ => extra.to_owned(),
    };
    config.options(options);
}

/// Snapshot streams allowed at once: half the read pool (at least one).
fn max_snapshots(max_connections: usize) -> usize {
    (max_connections / 2).max(1)
}

/// `host:port/database` for messages: never the password (nor the user, which is not needed
/// to tell databases apart).
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("?"))
}

fn pool_detail(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(inner) => error_chain(inner),
        deadpool_postgres::PoolError::Timeout(_) => "timed out".into(),
        other => other.to_string(),
    }
}

/// Refuses a session whose search path puts a schema before `pg_catalog` (a database or role
/// setting, which a dump, a standby and a point-in-time recovery keep): an operator or function
/// defined there would be taken for PostgreSQL's own by every query Coffer sends, its checks
/// and `coffer verify`'s among them. PostgreSQL searches `pg_catalog` first unless the path
/// names it later, so a path naming a schema of Coffer's own (`ALTER ROLE ... SET
/// search_path = coffer`) is fine.
async fn check_search_path(client: &deadpool_postgres::Object) -> Result<(), ConnectError> {
    let row = client
        .query_one("SELECT (current_schemas(true))[1]::text", &[])
        .await
        .map_err(|e| ConnectError::Schema(format!("reading the search path: {e}")))?;
    let first: Option<String> = row.get(0);
    match first.as_deref() {
        Some("pg_catalog") => Ok(()),
        other => Err(ConnectError::Schema(format!(
            "the session's search path puts schema {} before pg_catalog (a database or role \
             setting): refused, as its operators and functions would be taken for \
             PostgreSQL's own; set search_path so that pg_catalog comes first",
            other.unwrap_or("(none)")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dek_gate_wait_is_range_checked() {
        for bad in [
            Duration::ZERO,
            Duration::from_micros(999),
            Duration::from_secs(86_401),
            Duration::MAX,
        ] {
            let e = dek_gate_wait_ms(bad).unwrap_err();
            assert!(e.to_string().contains("dek_gate_wait"), "{e}");
        }
        assert_eq!(dek_gate_wait_ms(Duration::from_secs(10)).unwrap(), 10_000);
        assert_eq!(
            dek_gate_wait_ms(Duration::from_secs(86_400)).unwrap(),
            86_400_000
        );
    }

    #[test]
    fn write_idle_timeout_is_range_checked() {
        for bad in [
            Duration::ZERO,
            Duration::from_millis(999),
            Duration::from_millis(i32::MAX as u64 + 1),
            Duration::MAX,
        ] {
            let e = write_idle_timeout_ms(bad).unwrap_err();
            assert!(e.to_string().contains("write_idle_timeout"), "{e}");
        }
        assert_eq!(
            write_idle_timeout_ms(Duration::from_secs(30)).unwrap(),
            30_000
        );
        assert_eq!(
            write_idle_timeout_ms(Duration::from_millis(i32::MAX as u64)).unwrap(),
            i64::from(i32::MAX)
        );
    }
}
