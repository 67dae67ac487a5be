//! `coffer init`, `server`, `dev` and `edge`: the commands that make or serve a data dir.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, Subcommand, ValueEnum, ValueHint};

use super::TokenArg;
use crate::config_file::Kind;

/// `--dashboard-secure-cookies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecureCookiesArg {
    Auto,
    Always,
    Never,
}

impl From<SecureCookiesArg> for coffer_server::SecureCookies {
    fn from(arg: SecureCookiesArg) -> coffer_server::SecureCookies {
        match arg {
            SecureCookiesArg::Auto => coffer_server::SecureCookies::Auto,
            SecureCookiesArg::Always => coffer_server::SecureCookies::Always,
            SecureCookiesArg::Never => coffer_server::SecureCookies::Never,
        }
    }
}

const CONFIG_HELP: &str = "TOML file of settings, one key per flag (docs/configuration.md); a flag \
                           or environment variable given as well overrides its key (a switch \
                           too: --serve-feed=false turns off the file's serve-feed = true)";

pub(super) const DEV_LONG_ABOUT: &str = "\
Run a local development server in one command.

On first use (the data dir does not exist, or is empty), creates the data dir like `coffer init`
and saves the account id and API token to DATA_DIR/dev-credentials.json (mode 0600). On every
start, reads that file, starts the server, and prints the URL, the credentials and a first command
to try, for both coffer and wrangler.

dev-credentials.json holds a full-rights API token in clear: it is meant for local development
only. For anything else, use `coffer init` (which shows the token once and saves it nowhere) and
`coffer server`.";

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to create (it must not exist, or be empty)
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Print exactly {"account_id": ..., "api_token": ...}
    #[arg(long)]
    pub json: bool,

    /// Keep the KEK in a PKCS#11 token (an HSM) instead of a key file: an RFC 7512 URI such as
    /// 'pkcs11:token=coffer;object=coffer-kek?module-path=/usr/lib/softhsm/libsofthsm2.so'.
    /// A key is generated in the token if none has that label. The user PIN comes from
    /// COFFER_PKCS11_PIN or the URI's pin-source=file:/path, never from the command line; the
    /// data dir records the URI (kek.toml), so `coffer server` needs no flag for it
    #[arg(long, value_name = "URI")]
    pub kek: Option<String>,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// The PostgreSQL database of an instance (`coffer init` and `coffer server`).
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Keep the instance's state in this PostgreSQL database instead of a SQLite file in the
    /// data dir: postgres://USER@HOST[:PORT]/DB[?sslmode=verify-full&sslrootcert=FILE]. The
    /// password comes from --database-password-file or PGPASSWORD (in the URL only when it is
    /// in COFFER_DATABASE_URL: the command line refuses it). Several instances (copies of one
    /// data dir) may serve one database
    #[arg(
        long,
        env = "COFFER_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// File holding the database password (mode 0600), used when the URL has none (before
    /// PGPASSWORD)
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "database_url")]
    pub database_password_file: Option<PathBuf>,

    /// Seconds the start keeps retrying an unreachable database (with backoff) before giving up
    #[arg(long, value_name = "SECONDS", default_value_t = coffer_server::Database::DEFAULT_CONNECT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub database_connect_timeout: u64,
}

impl DatabaseArgs {
    /// The database to use, if a URL was given. A URL holding a password is refused when it
    /// came from the command line (where other users of the machine can read it): only
    /// COFFER_DATABASE_URL may carry one (a config file refuses it too).
    pub fn database(&self) -> Result<Option<coffer_server::Database>, crate::usage::UsageError> {
        let Some(url) = &self.database_url else {
            return Ok(None);
        };
        if crate::config_file::database_url_has_password(url)
            && std::env::var("COFFER_DATABASE_URL").ok().as_deref() != Some(url.as_str())
        {
            return Err(crate::usage::UsageError(
                "--database-url: the URL holds a password, which the command line shows to every user of this machine: give it with --database-password-file or PGPASSWORD, or the whole URL in COFFER_DATABASE_URL".into(),
            ));
        }
        let mut db = coffer_server::Database::new(url.clone());
        db.password_file = self.database_password_file.clone();
        db.connect_timeout = std::time::Duration::from_secs(self.database_connect_timeout);
        Ok(Some(db))
    }
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    #[arg(long, env = "COFFER_CONFIG", value_name = "FILE", value_hint = ValueHint::FilePath, help = CONFIG_HELP)]
    pub config: Option<PathBuf>,

    /// Data dir made by `coffer init`
    #[arg(long, env = "COFFER_DATA_DIR", value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub data_dir: PathBuf,

    /// Address to listen on; port 0 picks a free port. Once ready, the server prints
    /// `listening on http(s)://ADDR` on standard output
    #[arg(
        long,
        env = "COFFER_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// TLS certificate chain (PEM); requires --tls-key
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM); requires --tls-cert
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Allow plain HTTP on a non-loopback address (tokens and values then cross the network in
    /// clear). Not with --tls-cert
    // Not `conflicts_with = "tls_cert"`: `--insecure-http=false` is no conflict; the config
    // file's parse checks it (`config_file::merge::insecure_with_tls`).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, value_name = "BOOL")]
    pub insecure_http: bool,

    /// When the dashboard's session cookie is marked Secure (and named __Host-coffer_session):
    /// auto when the browser's request came over HTTPS (this server's TLS, or a trusted proxy's
    /// X-Forwarded-Proto: https); always (a TLS proxy that does not say so); never (browsers on
    /// plain HTTP)
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = SecureCookiesArg::Auto)]
    pub dashboard_secure_cookies: SecureCookiesArg,

    /// Secrets an account may hold, unless overridden for that account
    #[arg(long, value_name = "N", default_value_t = coffer_server::ServeOptions::DEFAULT_SECRETS_QUOTA)]
    pub secrets_quota: u64,

    /// Stores an account may hold
    #[arg(long, value_name = "N", default_value_t = coffer_server::ServeOptions::DEFAULT_MAX_STORES)]
    pub max_stores: u64,

    /// Change-log entries kept for edges to catch up from; older ones are compacted hourly and
    /// an edge further behind resyncs from a snapshot
    #[arg(long, value_name = "N", default_value_t = coffer_server::ServeOptions::DEFAULT_FEED_RETENTION)]
    pub feed_retention: u64,

    /// Values sealed under one data-encryption key before a new one is made for the account
    /// (per process; a DEK is also replaced after an hour)
    #[arg(long, value_name = "N", default_value_t = coffer_server::DekPolicy::default().max_seals, value_parser = clap::value_parser!(u64).range(1..))]
    pub dek_max_seals: u64,

    /// Keys a second at most that the rewrap after a KEK rotation (`coffer kek rotate`) rewraps
    /// [default: about 12,800, in batches of 256]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub kek_rewrap_rate: Option<u32>,

    /// Seconds storage must hold no key of a retiring KEK version before it is retired and its
    /// key destroyed (time for writes begun before the rotation to commit)
    #[arg(long, value_name = "SECONDS", default_value_t = coffer_server::RewrapSettings::DEFAULT_GRACE.as_secs())]
    pub kek_retire_grace: u64,

    /// Versions of each secret's value kept: 1 keeps only the current one; older versions are
    /// deleted, and their data-encryption keys destroyed once nothing else uses them
    #[arg(long, value_name = "N", default_value_t = coffer_server::ResealSettings::default().keep_versions, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_versions: u32,

    /// Values a second at most that the background re-seal moves onto their account's current
    /// data-encryption key [default: about 12,800, in batches of 256]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub reseal_rate: Option<u32>,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    #[command(flatten)]
    pub proxies: ProxyArgs,

    #[command(flatten)]
    pub limits: LimitArgs,
}

impl ServerArgs {
    /// How DEKs are refreshed, and the pace of the rewrap after a KEK rotation.
    pub fn keys(&self) -> coffer_server::KeyOptions {
        let base = match self.kek_rewrap_rate {
            Some(rate) => coffer_server::RewrapSettings::with_rate(rate),
            None => coffer_server::RewrapSettings::default(),
        };
        coffer_server::KeyOptions {
            dek_policy: coffer_server::DekPolicy {
                max_seals: self.dek_max_seals,
                ..coffer_server::DekPolicy::default()
            },
            rewrap: coffer_server::RewrapSettings {
                grace: std::time::Duration::from_secs(self.kek_retire_grace),
                ..base
            },
            reseal: coffer_server::ResealSettings {
                keep_versions: self.keep_versions,
                ..match self.reseal_rate {
                    Some(rate) => coffer_server::ResealSettings::with_rate(rate),
                    None => coffer_server::ResealSettings::default(),
                }
            },
        }
    }
}

/// What the process logs, and how.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// What to log: a level (error, warn, info, debug, trace) or a filter in tracing's
    /// EnvFilter syntax, such as `info,coffer_edge=debug`. A filter that does not parse stops
    /// the command before it starts [default: info]
    #[arg(long, env = "RUST_LOG", value_name = "FILTER", value_parser = parse_log_filter)]
    pub log_level: Option<String>,

    /// Log a request line for every successful runtime read too (off by default: a busy
    /// service reads thousands of times a second). Refused and failed reads, and every other
    /// request, are logged either way; the audit log counts every read regardless
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, value_name = "BOOL")]
    pub access_log: bool,

    /// How log lines are written to standard error: text, for people, or json, one object per
    /// line (timestamp, level, target, message, and the request's fields) for a log collector
    #[arg(
        long,
        env = "COFFER_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

/// `--log-level`: a filter tracing's `EnvFilter` accepts, kept as text (the filter is built
/// when logging starts).
fn parse_log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event, in colour on a terminal
    Text,
    /// One JSON object per line (docs/operations.md, "Logging")
    Json,
}

/// Prometheus metrics, on a listener of their own.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics (GET /metrics, plain HTTP) on this address, apart from the
    /// public listener (off by default). Keep it on loopback or a private network: a
    /// non-loopback address is warned about. Labels name route templates and outcomes, never
    /// a secret, token or account
    #[arg(long, env = "COFFER_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

/// What one client may cost the listener, the runtime API and the snapshots served.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Connections open at once at most; more wait to be accepted. Lowered, with a warning, to
    /// what fits in the open-file limit (ulimit -n)
    #[arg(long, value_name = "N", default_value_t = coffer_server::HttpLimits::DEFAULT_MAX_CONNECTIONS as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Connections one client address (an IPv6 /64) may hold at once; more are closed as they
    /// are accepted. Loopback is not capped. Raise it behind a load balancer that pools more
    #[arg(long, value_name = "N", default_value_t = coffer_server::HttpLimits::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections_per_address: u64,

    /// Seconds a connection may take to send a request's headers, from being accepted or from
    /// its previous response; a slower one is closed
    #[arg(long, value_name = "SECONDS", default_value_t = coffer_server::HttpLimits::DEFAULT_HEADER_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_timeout: u64,

    /// Reads per second each service token may make on the runtime API, up to a second's worth
    /// at once; over it, 429 with Retry-After [default: no limit]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub runtime_rate_limit: Option<u32>,

    /// Seconds a snapshot may stream to an edge before it is abandoned (the edge asks again);
    /// make it longer than a whole snapshot takes over the slowest edge's link. On an edge,
    /// also how long a snapshot from its upstream may stream in before it moves on
    #[arg(long, value_name = "SECONDS", default_value_t = coffer_server::SnapshotLimits::DEFAULT_DEADLINE.as_secs(), value_parser = clap::value_parser!(u64).range(10..))]
    pub snapshot_deadline: u64,
}

impl LimitArgs {
    pub fn http(&self) -> coffer_server::HttpLimits {
        coffer_server::HttpLimits {
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            max_connections_per_address: usize::try_from(self.max_connections_per_address)
                .unwrap_or(usize::MAX),
            header_timeout: std::time::Duration::from_secs(self.header_timeout),
            ..coffer_server::HttpLimits::default()
        }
    }

    pub fn snapshots(&self) -> coffer_server::SnapshotLimits {
        coffer_server::SnapshotLimits {
            deadline: std::time::Duration::from_secs(self.snapshot_deadline),
            ..coffer_server::SnapshotLimits::default()
        }
    }

    pub fn runtime_rate(&self) -> Option<coffer_server::RuntimeRate> {
        self.runtime_rate_limit
            .and_then(std::num::NonZeroU32::new)
            .map(|per_second| coffer_server::RuntimeRate { per_second })
    }
}

/// Where client addresses come from behind a load balancer or reverse proxy.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Proxies (addresses or CIDR ranges, comma-separated or repeated) whose client-address
    /// header is believed. The address keys the failed-authentication limit and the audit log;
    /// a header from any other peer is ignored [default: none]
    #[arg(
        long = "trusted-proxy",
        env = "COFFER_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<coffer_server::IpNet>,

    /// The header in which trusted proxies name the client (each appends the address it was
    /// connected from, as X-Forwarded-For does)
    #[arg(
        long,
        value_name = "NAME",
        default_value = "x-forwarded-for",
        requires = "trusted_proxies"
    )]
    pub client_ip_header: String,
}

impl ProxyArgs {
    pub fn trusted(self) -> anyhow::Result<coffer_server::TrustedProxies> {
        coffer_server::TrustedProxies::with_header(self.trusted_proxies, &self.client_ip_header)
            .map_err(|e| anyhow::anyhow!("--client-ip-header: {e}"))
    }
}

pub(super) const EDGE_LONG_ABOUT: &str = "Run an edge node: a local replica of every secret (sealed), kept current from an upstream's change feed, serving the runtime API (/runtime/v1) from the replica alone.

Register the node first on the control plane (`coffer node create NAME`) and give the edge the node token it prints. The edge takes no KEK: at its first start it makes an X25519 key pair (DIR/node.key, mode 0600) and registers the public key with its node token; the control plane then grants it the replication key, sealed to that key, through the feed (docs/edges.md, section Keys). Values never leave the replica in clear.

The edge bootstraps from a snapshot, then follows the feed. Once it holds a replica it keeps serving it with every upstream down, and after a restart it serves from disk at once. With several --upstream URLs it fails over when the current one is unreachable or its heartbeats are older than --staleness. With --serve-feed it also serves the feed to other edges (a relay).

Once listening, the edge prints `listening on http(s)://ADDR` on standard output; `GET /healthz` answers 200 once the replica is ready (503 before), with the applied sequence number and the lag.";

#[derive(Debug, Args)]
pub struct EdgeArgs {
    #[arg(long, env = "COFFER_CONFIG", value_name = "FILE", value_hint = ValueHint::FilePath, help = CONFIG_HELP)]
    pub config: Option<PathBuf>,

    /// Upstream base URL(s): the control plane, or relay edges; several separated by commas
    /// (or the flag repeated); the edge starts with the first and fails over round robin.
    /// Required, as the flag or the variable
    // Not `required` for clap: it may come from the environment, and the usage line should not
    // suggest otherwise. `edge` checks that it is set.
    #[arg(
        long = "upstream",
        env = "COFFER_UPSTREAM",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub upstreams: Vec<String>,

    /// The node token from `coffer node create` (prefer the environment variable: a flag is
    /// visible to other local users). Required, as the flag or the variable
    #[arg(
        long,
        env = "COFFER_NODE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub node_token: Option<TokenArg>,

    /// A file holding the node token (e.g. a systemd credential), instead of --node-token
    #[arg(
        long,
        env = "COFFER_NODE_TOKEN_FILE",
        value_name = "FILE",
        value_hint = ValueHint::FilePath,
        conflicts_with = "node_token"
    )]
    pub node_token_file: Option<PathBuf>,

    /// The edge's own data dir (created if missing): its replica and lock
    // AnyPath, not DirPath: a config file's path is not checked to exist, since it is created.
    #[arg(long, env = "COFFER_DATA_DIR", value_name = "DIR", value_hint = ValueHint::AnyPath)]
    pub data_dir: PathBuf,

    /// Removed: edges no longer take a KEK file. Kept only to say so (hidden)
    #[arg(long, env = "COFFER_KEK_FILE", value_name = "FILE", hide = true)]
    pub kek_file: Option<PathBuf>,

    /// Address to listen on; port 0 picks a free port
    #[arg(
        long,
        env = "COFFER_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,

    /// TLS certificate chain (PEM) to serve with; requires --tls-key
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM); requires --tls-cert
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Allow plain HTTP on a non-loopback address. Not with --tls-cert
    // Not `conflicts_with`: see `ServerArgs::insecure_http`.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, value_name = "BOOL")]
    pub insecure_http: bool,

    /// Allow an http:// upstream that is not loopback (refused without it: the node token and
    /// the feed would cross the network in clear)
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, value_name = "BOOL")]
    pub insecure_http_upstream: bool,

    /// PEM bundle to trust for upstreams instead of the system roots (a private CA)
    #[arg(long, env = "COFFER_CA_CERT", value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub ca_cert: Option<PathBuf>,

    /// The control plane's feed-signing public key (64 hex digits, as `coffer node create`
    /// prints it): the edge applies only what it signed. Without it the edge pins the key its
    /// first upstream names. Either way it is kept in DIR/feed.pub and never changes
    #[arg(long, env = "COFFER_FEED_KEY", value_name = "HEX", value_parser = feed_key)]
    pub feed_key: Option<coffer_edge::FeedKey>,

    /// Serve the feed to other edges (a relay)
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, value_name = "BOOL")]
    pub serve_feed: bool,

    /// Leave an upstream whose heartbeats are older than this many seconds (the edge long-polls
    /// for at most a quarter of it, so a healthy idle upstream always looks fresh)
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub staleness: u64,

    /// Stop serving (503) once cut off from every upstream for this many seconds, and serve
    /// again when one answers. Off by default: an edge keeps serving what it has however long
    /// it is cut off (static stability), which also means that a revocation it cannot hear of
    /// does not stop it. See docs/edges.md
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_staleness: Option<u64>,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    #[command(flatten)]
    pub proxies: ProxyArgs,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `--feed-key`, parsed with the command line (so that a config file's `feed-key` is checked
/// by `coffer config check` too).
fn feed_key(text: &str) -> Result<coffer_edge::FeedKey, String> {
    coffer_edge::FeedKey::parse(text).map_err(|e| match e {
        coffer_edge::BadFeedKey::NotHex => {
            "not a feed key: 64 hex digits, as `coffer node create` printed it".to_owned()
        }
        small_order => small_order.to_string(),
    })
}

#[derive(Debug, Args)]
pub struct DevArgs {
    #[arg(long, env = "COFFER_CONFIG", value_name = "FILE", value_hint = ValueHint::FilePath, help = CONFIG_HELP)]
    pub config: Option<PathBuf>,

    /// Data dir for development (created on first use)
    #[arg(long, value_name = "DIR", value_hint = ValueHint::AnyPath, default_value = "./coffer-dev")]
    pub data_dir: PathBuf,

    /// Address to listen on (loopback only: the dev server speaks plain HTTP)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// `coffer config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file as `coffer server`, `edge` or `dev` would read it, without starting
    /// anything: prints `ok: FILE`, or the first problem on one line (exit status 2). The file
    /// is checked alone: no flag or environment variable is consulted, and a setting it leaves
    /// out (such as data-dir) is not required of it
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// The config file
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub config: PathBuf,

    /// The command the file is for
    #[arg(long = "for", value_name = "COMMAND", value_enum, default_value_t = Kind::Server)]
    pub kind: Kind,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use crate::args::Cli;
    use crate::args::tests::parse;

    #[test]
    fn edge_connection_settings_are_checked_by_the_command() {
        // So that the usage line does not show them as required: they may come from the
        // environment.
        assert!(parse(&["edge", "--data-dir", "d"]).is_ok());
        let usage = Cli::command()
            .find_subcommand_mut("edge")
            .unwrap()
            .render_usage()
            .to_string();
        assert_eq!(usage, "Usage: edge [OPTIONS] --data-dir <DIR>");
    }

    #[test]
    fn the_node_token_is_redacted_in_debug_output() {
        let cli = parse(&[
            "edge",
            "--upstream",
            "http://127.0.0.1:8080",
            "--node-token",
            "coffernode_sekrit",
            "--data-dir",
            "d",
        ])
        .unwrap();
        let dbg = format!("{cli:?}");
        assert!(!dbg.contains("sekrit"), "{dbg}");
        assert!(dbg.contains("[redacted]"), "{dbg}");
    }

    #[test]
    fn server_tls_flags_come_in_pairs() {
        assert!(parse(&["server", "--data-dir", "d", "--tls-cert", "c"]).is_err());
        assert!(
            parse(&[
                "server",
                "--data-dir",
                "d",
                "--tls-cert",
                "c",
                "--tls-key",
                "k"
            ])
            .is_ok()
        );
        // `--insecure-http` with them is refused by `config_file` (a conflict only when true).
        assert!(parse(&["server", "--data-dir", "d", "--listen", "nope"]).is_err());
    }

    #[test]
    fn switches_take_an_optional_value_after_an_equals_sign() {
        let server = |args: &[&str]| {
            let mut all = vec!["server", "--data-dir", "d"];
            all.extend_from_slice(args);
            match parse(&all).unwrap().command {
                crate::args::Command::Server(a) => (a.insecure_http, a.log.access_log),
                _ => unreachable!(),
            }
        };
        assert_eq!(server(&[]), (false, false));
        assert_eq!(server(&["--insecure-http", "--access-log"]), (true, true));
        assert_eq!(
            server(&["--insecure-http=true", "--access-log=false"]),
            (true, false)
        );
        assert_eq!(server(&["--insecure-http=false"]), (false, false));
        // No value without `=`: the next word stays an argument of its own.
        assert!(parse(&["server", "--data-dir", "d", "--insecure-http", "false"]).is_err());
        assert!(parse(&["server", "--data-dir", "d", "--insecure-http=yes"]).is_err());
        let edge = |args: &[&str]| {
            let mut all = vec!["edge", "--data-dir", "d"];
            all.extend_from_slice(args);
            match parse(&all).unwrap().command {
                crate::args::Command::Edge(a) => (a.serve_feed, a.insecure_http_upstream),
                _ => unreachable!(),
            }
        };
        assert_eq!(edge(&[]), (false, false));
        assert_eq!(
            edge(&["--serve-feed", "--insecure-http-upstream"]),
            (true, true)
        );
        assert_eq!(
            edge(&["--serve-feed=false", "--insecure-http-upstream=false"]),
            (false, false)
        );
    }
}
