//! The command line, as clap derive types. Parsing only: the commands live in `commands/`.
//!
//! Types that can hold a secret (the API token, a secret value) are newtypes whose `Debug`
//! prints `[redacted]`, so that deriving `Debug` on the argument structs is safe.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use zeroize::Zeroizing;

const ABOUT: &str = "Coffer: a self-hostable secrets store, wire-compatible with Cloudflare's \
                     Secrets Store API";

const AFTER_HELP: &str = "\
Getting started:
  coffer dev                      run a local server with a ready-made account and token
  coffer store create --name s    then manage stores and secrets (see `coffer dev` output)

Exit status: 0 on success, 1 when the operation failed (server error, unreachable server, bad
value), 2 on a usage error (bad flags, missing connection settings).";

const JSON_HELP: &str = "Print JSON instead of tables: the API's `result` (for lists, an object \
                         {\"result\": [...], \"result_info\": {...}}; for deletes, null)";

#[derive(Debug, Parser)]
#[command(name = "coffer", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a data dir with a first account and API token, and print them
    Init(InitArgs),
    /// Run the Coffer server on a data dir made by `coffer init`
    Server(ServerArgs),
    /// Run a local development server in one command (creates ./coffer-dev on first use)
    #[command(long_about = DEV_LONG_ABOUT)]
    Dev(DevArgs),
    /// Run an edge node: a local replica of every secret (sealed), kept current from an
    /// upstream's change feed, serving the runtime API from the replica alone
    #[command(long_about = EDGE_LONG_ABOUT)]
    Edge(EdgeArgs),
    /// Create, list, show and delete stores
    Store {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Create, list, show, update, duplicate and delete secrets (values are write-only)
    Secret {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Show the account's secrets quota and usage, or set it (`quota set`)
    Quota {
        #[command(flatten)]
        conn: ConnArgs,
        /// Without a subcommand: show the quota in force and how much of it is used
        #[command(subcommand)]
        command: Option<QuotaCommand>,
    },
    /// Show the account; create, list and delete the instance's accounts (instance operator)
    Account {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Create, list, show and revoke the account's API tokens
    Token {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Read the account's audit log and verify that it was not tampered with (super_admin)
    Audit {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Deploy a service's secret bindings from a wrangler.toml or wrangler.jsonc
    #[command(after_help = DEPLOY_AFTER_HELP)]
    Deploy {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        args: DeployArgs,
    },
    /// List, show and delete services; list, rotate and revoke their tokens
    Service {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Register, list and revoke edge nodes (instance operator)
    Node {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Run a command with the service's secret bindings in its environment
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
}

const DEV_LONG_ABOUT: &str = "\
Run a local development server in one command.

On first use (the data dir does not exist, or is empty), creates the data dir like `coffer init`
and saves the account id and API token to DATA_DIR/dev-credentials.json (mode 0600). On every
start, reads that file, starts the server, and prints the URL, the credentials and a first command
to try, for both coffer and wrangler.

dev-credentials.json holds a full-rights API token in clear: it is meant for local development
only. For anything else, use `coffer init` (which shows the token once and saves it nowhere) and
`coffer server`.";

/// Where the server is and who we are. Each can also come from the environment.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection and output")]
pub struct ConnArgs {
    /// Server URL, e.g. http://127.0.0.1:8080 (a trailing /client/v4 is accepted)
    #[arg(long, env = "COFFER_API_URL", global = true, value_name = "URL")]
    pub api_url: Option<String>,

    /// API token (prefer the environment variable: flags are visible to other local users)
    #[arg(
        long,
        env = "COFFER_API_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub api_token: Option<TokenArg>,

    /// Account id (32 hex characters)
    #[arg(long, env = "COFFER_ACCOUNT_ID", global = true, value_name = "ID")]
    pub account_id: Option<String>,

    /// PEM file of the CA that signed an https server's certificate (only it is trusted)
    #[arg(long, env = "COFFER_CA_CERT", global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    #[arg(long, global = true, help = JSON_HELP)]
    pub json: bool,
}

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
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Data dir made by `coffer init`
    #[arg(long, env = "COFFER_DATA_DIR", value_name = "DIR")]
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
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM); requires --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Allow plain HTTP on a non-loopback address (tokens and values then cross the network in
    /// clear)
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_http: bool,

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

    #[command(flatten)]
    pub proxies: ProxyArgs,
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

const EDGE_LONG_ABOUT: &str = "Run an edge node: a local replica of every secret (sealed), kept current from an upstream's change feed, serving the runtime API (/runtime/v1) from the replica alone.

Register the node first on the control plane (`coffer node create NAME`) and give the edge the node token it prints, and a copy of the control plane's KEK file (the edge unwraps keys with it; values never leave the replica in clear).

The edge bootstraps from a snapshot, then follows the feed. Once it holds a replica it keeps serving it with every upstream down, and after a restart it serves from disk at once. With several --upstream URLs it fails over when the current one is unreachable or its heartbeats are older than --staleness. With --serve-feed it also serves the feed to other edges (a relay).

Once listening, the edge prints `listening on http(s)://ADDR` on standard output; `GET /healthz` answers 200 once the replica is ready (503 before), with the applied sequence number and the lag.";

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Upstream base URL(s): the control plane, or relay edges; several separated by commas
    /// (or the flag repeated); the edge starts with the first and fails over round robin
    #[arg(
        long = "upstream",
        env = "COFFER_UPSTREAM",
        value_name = "URL",
        value_delimiter = ',',
        required = true
    )]
    pub upstreams: Vec<String>,

    /// The node token from `coffer node create` (prefer the environment variable: a flag is
    /// visible to other local users)
    #[arg(
        long,
        env = "COFFER_NODE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub node_token: TokenArg,

    /// The edge's own data dir (created if missing): its replica and lock
    #[arg(long, env = "COFFER_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// The KEK file to unwrap keys with: a copy of the control plane's kek.key [default: DIR/kek.key]
    #[arg(long, env = "COFFER_KEK_FILE", value_name = "FILE")]
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
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM); requires --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Allow plain HTTP on a non-loopback address
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_http: bool,

    /// PEM bundle to trust for upstreams instead of the system roots (a private CA)
    #[arg(long, env = "COFFER_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Serve the feed to other edges (a relay)
    #[arg(long)]
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
    pub proxies: ProxyArgs,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Data dir for development (created on first use)
    #[arg(long, value_name = "DIR", default_value = "./coffer-dev")]
    pub data_dir: PathBuf,

    /// Address to listen on (loopback only: the dev server speaks plain HTTP)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

// ---- stores ----

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create a store
    Create(StoreCreateArgs),
    /// List the account's stores
    List(StoreListArgs),
    /// Show one store
    Get(StoreIdArg),
    /// Delete a store (refused if it holds secrets, unless --force)
    Delete(StoreDeleteArgs),
}

#[derive(Debug, Args)]
#[group(id = "store_name", required = true, multiple = false)]
pub struct StoreCreateArgs {
    /// The store's name (same as --name)
    #[arg(value_name = "NAME")]
    name_pos: Option<String>,

    /// The store's name: letters, digits, `_` and `-`
    #[arg(long = "name", value_name = "NAME")]
    name: Option<String>,
}

impl StoreCreateArgs {
    pub fn name(&self) -> &str {
        // The group is required and exclusive, so exactly one is set; "" cannot be reached.
        self.name
            .as_deref()
            .or(self.name_pos.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Debug, Args)]
pub struct StoreListArgs {
    #[command(flatten)]
    pub page: PageArgs,

    /// Sort by
    #[arg(long, value_enum)]
    pub order: Option<StoreOrderArg>,

    /// Sort direction
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
}

#[derive(Debug, Args)]
pub struct StoreDeleteArgs {
    #[command(flatten)]
    pub store: StoreIdArg,

    /// Also delete every secret in the store
    #[arg(long)]
    pub force: bool,
}

/// A store id, given positionally (as wrangler does) or with `--store-id`.
#[derive(Debug, Args)]
#[group(id = "store", required = true, multiple = false)]
pub struct StoreIdArg {
    /// The store's id (same as --store-id)
    #[arg(value_name = "STORE_ID")]
    store_id_pos: Option<String>,

    /// The store's id (32 hex characters)
    #[arg(long = "store-id", value_name = "STORE_ID")]
    store_id: Option<String>,
}

impl StoreIdArg {
    pub fn id(&self) -> &str {
        // The group is required and exclusive, so exactly one is set; "" cannot be reached.
        self.store_id
            .as_deref()
            .or(self.store_id_pos.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Debug, Args)]
pub struct PageArgs {
    /// Page number, from 1
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub page: Option<u32>,

    /// Items per page (the server caps it)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub per_page: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreOrderArg {
    Name,
    Created,
    Modified,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecretOrderArg {
    Name,
    Comment,
    Created,
    Modified,
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    Asc,
    Desc,
}

// ---- secrets ----

const VALUE_HELP: &str = "The value. Omit it (or pass `-`) to be prompted with hidden input on a \
    terminal, or to have it read from standard input otherwise; trailing whitespace is trimmed. \
    A value given here stays in your shell history";

const UPDATE_VALUE_HELP: &str = "A new value. Without --value the value is left unchanged; \
    `--value -` prompts for it with hidden input on a terminal, or reads it from standard input \
    otherwise (trailing whitespace is trimmed). A value given here stays in your shell history";

const SCOPES_HELP: &str = "Comma-separated scopes: workers, ai_gateway, dex, access, containers, \
    websearch";

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a secret
    #[command(
        after_help = "Example:\n  printf %s \"$TOKEN\" | coffer secret create STORE_ID \
                            --name openai-key --scopes workers"
    )]
    Create(SecretCreateArgs),
    /// List a store's secrets (metadata only)
    List(SecretListArgs),
    /// Show a secret's metadata
    Get(SecretGetArgs),
    /// Change a secret's value, scopes or comment
    Update(SecretUpdateArgs),
    /// Delete one or more secrets
    Delete(SecretDeleteArgs),
    /// Copy a secret, value included, under a new name
    Duplicate(SecretDuplicateArgs),
}

#[derive(Debug, Args)]
pub struct SecretCreateArgs {
    #[command(flatten)]
    pub store: StoreIdArg,

    /// The secret's name: letters, digits, `_` and `-`
    #[arg(long, value_name = "NAME")]
    pub name: String,

    #[arg(long, value_name = "SCOPES", required = true, help = SCOPES_HELP)]
    pub scopes: ScopeList,

    /// Free-text comment
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,

    #[arg(long, value_name = "VALUE", help = VALUE_HELP)]
    pub value: Option<ValueArg>,
}

#[derive(Debug, Args)]
pub struct SecretListArgs {
    #[command(flatten)]
    pub store: StoreIdArg,

    #[command(flatten)]
    pub page: PageArgs,

    /// Only secrets whose name or comment contains this text
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,

    /// Only secrets with these scopes (comma-separated)
    #[arg(long, value_name = "SCOPES")]
    pub scopes: Option<ScopeList>,

    /// Sort by
    #[arg(long, value_enum)]
    pub order: Option<SecretOrderArg>,

    /// Sort direction
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
}

#[derive(Debug, Args)]
pub struct SecretGetArgs {
    #[command(flatten)]
    pub store: StoreIdArg,

    /// The secret's id
    #[arg(long, value_name = "ID")]
    pub secret_id: String,
}

#[derive(Debug, Args)]
pub struct SecretUpdateArgs {
    #[command(flatten)]
    pub store: StoreIdArg,

    /// The secret's id
    #[arg(long, value_name = "ID")]
    pub secret_id: String,

    #[arg(long, value_name = "VALUE", help = UPDATE_VALUE_HELP)]
    pub value: Option<ValueArg>,

    /// New scopes, replacing the old ones (comma-separated)
    #[arg(long, value_name = "SCOPES")]
    pub scopes: Option<ScopeList>,

    /// New comment (`--comment ''` clears it)
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
}

#[derive(Debug, Args)]
pub struct SecretDeleteArgs {
    #[command(flatten)]
    pub store: StoreIdArg,

    /// The secret's id; repeat the flag or separate ids with commas to delete several at once
    #[arg(long, value_name = "ID", required = true, value_delimiter = ',')]
    pub secret_id: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SecretDuplicateArgs {
    #[command(flatten)]
    pub store: StoreIdArg,

    /// The id of the secret to copy
    #[arg(long, value_name = "ID")]
    pub secret_id: String,

    /// The new secret's name
    #[arg(long, value_name = "NAME")]
    pub name: String,

    #[arg(long, value_name = "SCOPES", required = true, help = SCOPES_HELP)]
    pub scopes: ScopeList,

    /// The new secret's comment
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
}

// ---- quota and account ----

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set the account's secrets quota, or return it to the server default (instance operator
    /// token only)
    #[command(after_help = "Examples:\n  coffer quota set 500\n  coffer quota set default")]
    Set(QuotaSetArgs),
}

#[derive(Debug, Args)]
pub struct QuotaSetArgs {
    /// A whole number of secrets, or `default` for the server's default quota
    // Taken as text (hyphens included, so that `-1` is not mistaken for a flag) and checked by
    // `quota()`, so that a bad value is a one-line usage error rather than clap's report.
    #[arg(value_name = QUOTA_VALUE_NAME, allow_hyphen_values = true)]
    pub quota: String,
}

const QUOTA_VALUE_NAME: &str = "N|default";

impl QuotaSetArgs {
    /// `Some(n)` for a whole number, `None` for `default`; otherwise a one-line message naming
    /// the argument.
    pub fn quota(&self) -> Result<Option<u64>, String> {
        let given = self.quota.as_str();
        if given == "default" {
            return Ok(None);
        }
        let bad = |why: &str| format!("invalid value {given:?} for <{QUOTA_VALUE_NAME}>: {why}");
        // Digits only: no sign, no spaces, no `1e3` or `1_000` (`u64::from_str` would take `+5`).
        if given.is_empty() || !given.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(
                "expected a whole number of secrets, or `default` for the server default",
            ));
        }
        given
            .parse::<u64>()
            .map(Some)
            .map_err(|_| bad("the number is too large"))
    }
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Show the account (--account-id): id, name, creation time and its own secrets quota
    Get,
    /// Create an account (instance operator token only; --account-id is not needed)
    #[command(after_help = ACCOUNT_CREATE_AFTER_HELP)]
    Create(AccountCreateArgs),
    /// List the instance's accounts (instance operator token; any other token sees its own)
    List,
    /// Delete an account with all its stores, secrets and tokens (instance operator token only)
    Delete(AccountDeleteArgs),
}

const ACCOUNT_CREATE_AFTER_HELP: &str = "\
Then create the account's first super_admin token, as the operator:
  COFFER_ACCOUNT_ID=<new account id> coffer token create --name admin --role super_admin";

#[derive(Debug, Args)]
#[group(id = "account_name", required = true, multiple = false)]
pub struct AccountCreateArgs {
    /// The account's name (same as --name)
    #[arg(value_name = "NAME")]
    name_pos: Option<String>,

    /// The account's name: 1 to 255 bytes, no control characters
    #[arg(long = "name", value_name = "NAME")]
    name: Option<String>,
}

impl AccountCreateArgs {
    pub fn name(&self) -> &str {
        // The group is required and exclusive, so exactly one is set; "" cannot be reached.
        self.name
            .as_deref()
            .or(self.name_pos.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Debug, Args)]
pub struct AccountDeleteArgs {
    /// The id of the account to delete (32 hex characters; not --account-id)
    #[arg(value_name = "ID")]
    pub id: String,
}

// ---- API tokens ----

const ROLE_HELP: &str = "The token's role: super_admin (everything, tokens included), \
    secrets_store_admin (create, change and delete stores and secrets), secrets_store_deployer \
    (view and bind), secrets_store_reporter (view metadata only)";

const EXPIRES_IN_VALUE_NAME: &str = "DURATION";

/// The longest `--expires-in`: 100 years of 365 days.
pub const MAX_EXPIRES_IN_SECS: u64 = 36_500 * 86_400;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token in the account (--account-id); its value is shown once, here only
    #[command(
        after_help = "Examples:\n  coffer token create --name ci --role secrets_store_deployer \
                      --expires-in 30d\n  COFFER_ACCOUNT_ID=<id> coffer token create --name admin \
                      --role super_admin"
    )]
    Create(TokenCreateArgs),
    /// List the account's tokens (metadata only, never values)
    List,
    /// Show one token's metadata
    Get(TokenIdArg),
    /// Revoke a token: it stops working from the very next request
    Revoke(TokenIdArg),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The token's name, e.g. what or who uses it
    #[arg(long, value_name = "NAME")]
    pub name: String,

    #[arg(long, value_name = "ROLE", help = ROLE_HELP)]
    pub role: String,

    /// Expire the token after this long: a positive whole number and a unit, s, m, h or d
    /// (e.g. 90m, 12h, 30d; at most 36500d). Without it, the token does not expire
    // Taken as text and checked by `expires_in()`, so that a bad value is a one-line usage error.
    #[arg(long, value_name = EXPIRES_IN_VALUE_NAME, allow_hyphen_values = true)]
    pub expires_in: Option<String>,
}

impl TokenCreateArgs {
    /// `--expires-in` in seconds, if given; otherwise a one-line message naming the flag.
    pub fn expires_in(&self) -> Result<Option<u64>, String> {
        self.expires_in.as_deref().map(parse_duration).transpose()
    }
}

/// `30d` -> 2_592_000: digits, then one unit letter; positive and at most 36500 days.
fn parse_duration(given: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!("invalid value {given:?} for --expires-in <{EXPIRES_IN_VALUE_NAME}>: {why}")
    };
    let expected = "expected a positive whole number and a unit, s, m, h or d (e.g. 90m, 12h, 30d)";
    let Some(unit) = given.chars().last() else {
        return Err(bad(expected));
    };
    let digits = &given[..given.len() - unit.len_utf8()];
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(bad(expected)),
    };
    // Digits only: no sign, no spaces, no `1.5h` or `1_000s`.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(expected));
    }
    let too_long = || bad("the longest expiry is 36500d");
    let secs = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(too_long)?;
    if secs == 0 {
        return Err(bad("the duration must be positive"));
    }
    if secs > MAX_EXPIRES_IN_SECS {
        return Err(too_long());
    }
    Ok(secs)
}

/// A token id, positional.
#[derive(Debug, Args)]
pub struct TokenIdArg {
    /// The token's id (32 hex characters)
    #[arg(value_name = "TOKEN_ID")]
    pub id: String,
}

// ---- audit log ----

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List the account's audit entries, newest first: who did what, to what, with what outcome
    #[command(
        after_help = "Examples:\n  coffer audit list --action delete --from 2025-01-01T00:00:00Z\n  \
                      coffer audit list --outcome denied --direction asc --per-page 100"
    )]
    List(AuditListArgs),
    /// Check the audit log's hash chain and signed checkpoints; exit status 1 if tampered with
    #[command(after_help = AUDIT_VERIFY_AFTER_HELP)]
    Verify,
}

const AUDIT_VERIFY_AFTER_HELP: &str = "\
Prints the number of entries and checkpoints checked and the head of the chain (its last entry's
number and hash). Record the head elsewhere: deleting the newest entries is only visible against
a head recorded before. If the log was tampered with, says which entry on standard error and exits
with status 1 (also with --json, which prints the verification result first).";

const RFC3339_VALUE_NAME: &str = "RFC3339";

#[derive(Debug, Args)]
pub struct AuditListArgs {
    /// Only entries at or after this date-time, e.g. 2025-01-31T00:00:00Z
    // Taken as text and checked by `filter()`, so that a bad value is a one-line usage error.
    #[arg(long, value_name = RFC3339_VALUE_NAME)]
    pub from: Option<String>,

    /// Only entries at or before this date-time
    #[arg(long, value_name = RFC3339_VALUE_NAME)]
    pub to: Option<String>,

    /// Only entries of this actor (a token id)
    #[arg(long, value_name = "TOKEN_ID")]
    pub actor: Option<String>,

    /// Only entries of this action, e.g. create, update, delete, duplicate, revoke, login
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,

    /// Only entries with this outcome: success or denied
    #[arg(long, value_name = "OUTCOME")]
    pub outcome: Option<String>,

    /// Only entries about this store (and its secrets)
    #[arg(long, value_name = "ID")]
    pub store_id: Option<String>,

    /// Only entries about this secret
    #[arg(long, value_name = "ID")]
    pub secret_id: Option<String>,

    #[command(flatten)]
    pub page: PageArgs,

    /// Sort direction (default desc: newest first)
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
}

impl AuditListArgs {
    /// `--from` and `--to` after checking that they are RFC 3339 date-times; otherwise a
    /// one-line message naming the flag.
    pub fn time_range(&self) -> Result<(Option<String>, Option<String>), String> {
        let check = |flag: &str, given: &Option<String>| match given {
            Some(t) if coffer_types::Timestamp::parse_rfc3339(t).is_none() => Err(format!(
                "invalid value {t:?} for --{flag} <{RFC3339_VALUE_NAME}>: expected an RFC 3339 \
                 date-time, e.g. 2025-01-31T00:00:00Z"
            )),
            other => Ok(other.clone()),
        };
        Ok((check("from", &self.from)?, check("to", &self.to)?))
    }
}

// ---- services ----

const DEPLOY_AFTER_HELP: &str = "\
Reads `name`, `type` (default workers), `[[secrets_store_secrets]]` (binding, store_id,
secret_name) and `[[secrets_store_stores]]` (binding, store_id); other keys are ignored, so the
file that deploys the Worker to Cloudflare deploys its bindings to Coffer. Every problem in the
file is reported before anything is sent. The first deploy of a service prints its service token,
once: the service reads its bindings with it (`coffer run`, or the Rust SDK).

Example:
  coffer deploy --config wrangler.toml";

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// wrangler.toml, wrangler.jsonc or wrangler.json (comments and trailing commas allowed)
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// List the account's services
    List(ServiceListArgs),
    /// Show a service and its bindings
    Get(ServiceArg),
    /// Delete a service with its bindings and tokens
    Delete(ServiceArg),
    /// List, rotate and revoke a service's tokens
    Token {
        #[command(subcommand)]
        command: ServiceTokenCommand,
    },
}

#[derive(Debug, Args)]
pub struct ServiceListArgs {
    #[command(flatten)]
    pub page: PageArgs,

    /// Only the service with exactly this name
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// A service, by name or by id.
#[derive(Debug, Args)]
pub struct ServiceArg {
    /// The service's name, or its id (32 hex characters)
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

#[derive(Debug, Subcommand)]
pub enum ServiceTokenCommand {
    /// List the service's tokens (metadata only)
    List(ServiceArg),
    /// Issue a new service token, shown once, and revoke the others unless --keep-previous
    Rotate(ServiceTokenRotateArgs),
    /// Revoke every active token of the service, or one with --token-id
    Revoke(ServiceTokenRevokeArgs),
}

#[derive(Debug, Args)]
pub struct ServiceTokenRotateArgs {
    #[command(flatten)]
    pub service: ServiceArg,

    /// Keep the service's other tokens working (revoke them later with `service token revoke`)
    #[arg(long)]
    pub keep_previous: bool,
}

#[derive(Debug, Args)]
pub struct ServiceTokenRevokeArgs {
    #[command(flatten)]
    pub service: ServiceArg,

    /// Revoke only this token (its id, as `service token list` shows it)
    #[arg(long, value_name = "ID")]
    pub token_id: Option<String>,
}

// ---- edge nodes ----

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Register an edge node and print its node token, once (instance operator token only;
    /// --account-id is not needed)
    Create(NodeCreateArgs),
    /// List the instance's edge nodes, revoked ones included (instance operator token only)
    List,
    /// Revoke an edge node: its token stops working (instance operator token only)
    Revoke(NodeRevokeArgs),
}

#[derive(Debug, Args)]
pub struct NodeCreateArgs {
    /// The node's name: 1 to 63 ASCII letters, digits, '-', '_' and '.', unique among the nodes
    /// that are not revoked
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct NodeRevokeArgs {
    /// The id of the node to revoke (32 hex characters, as `node list` shows it)
    #[arg(value_name = "ID")]
    pub id: String,
}

const RUN_AFTER_HELP: &str = "\
Reads every secret binding of the service in one request, puts each value in CMD's environment
under its binding name (without COFFER_SERVICE_TOKEN), and then becomes CMD: CMD inherits the
standard streams, receives signals directly, and its exit status is coffer's. Exit status 127 if
CMD is not found, 126 if it cannot be run, 1 if the bindings cannot be read. A binding named
PATH, IFS, ENV, BASH_ENV, NODE_OPTIONS, PYTHONPATH, PYTHONSTARTUP, PERL5OPT, RUBYOPT, or LD_* or
DYLD_* is refused (exit status 1): it would change how CMD is found or loaded.

Example:
  COFFER_SERVICE_TOKEN=coffersvc_... coffer run -- node server.js";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The service token `coffer deploy` printed (prefer the environment variable: flags are
    /// visible to other local users)
    #[arg(
        long,
        env = "COFFER_SERVICE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub service_token: Option<TokenArg>,

    /// Server URL [default: http://127.0.0.1:8080]
    #[arg(long, env = "COFFER_API_URL", value_name = "URL")]
    pub api_url: Option<String>,

    /// PEM file of the CA that signed an https server's certificate (only it is trusted)
    #[arg(long, env = "COFFER_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// The command to run, and its arguments
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

// ---- value types ----

/// `workers, ai_gateway` -> `["workers", "ai_gateway"]`: items are trimmed, empty items are
/// dropped, and at least one must remain. Scope names are checked by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeList(pub Vec<String>);

impl FromStr for ScopeList {
    type Err = String;

    fn from_str(s: &str) -> Result<ScopeList, String> {
        let scopes: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect();
        if scopes.is_empty() {
            return Err("give at least one scope, e.g. --scopes workers".to_owned());
        }
        Ok(ScopeList(scopes))
    }
}

/// The API token from `--api-token` or `COFFER_API_TOKEN`.
#[derive(Clone)]
pub struct TokenArg(pub Zeroizing<String>);

impl FromStr for TokenArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<TokenArg, Self::Err> {
        Ok(TokenArg(Zeroizing::new(s.to_owned())))
    }
}

impl std::fmt::Debug for TokenArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A secret value from `--value`. `-` means "prompt or read standard input".
#[derive(Clone)]
pub enum ValueArg {
    Given(Zeroizing<String>),
    Interactive,
}

impl FromStr for ValueArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<ValueArg, Self::Err> {
        Ok(if s == "-" {
            ValueArg::Interactive
        } else {
            ValueArg::Given(Zeroizing::new(s.to_owned()))
        })
    }
}

impl std::fmt::Debug for ValueArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueArg::Given(_) => f.write_str("Given([redacted])"),
            ValueArg::Interactive => f.write_str("Interactive"),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("coffer").chain(args.iter().copied()))
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn scope_lists_are_trimmed_and_must_not_be_empty() {
        assert_eq!(
            "workers, ai_gateway,,".parse::<ScopeList>().unwrap().0,
            ["workers", "ai_gateway"]
        );
        assert_eq!("dex".parse::<ScopeList>().unwrap().0, ["dex"]);
        assert!(" , ".parse::<ScopeList>().is_err());
        assert!("".parse::<ScopeList>().is_err());
        assert!(parse(&["secret", "create", "s", "--name", "n", "--scopes", ","]).is_err());
    }

    #[test]
    fn store_id_is_positional_or_a_flag_but_not_both() {
        let id_of = |args: &[&str]| match parse(args).unwrap().command {
            Command::Store {
                command: StoreCommand::Delete(d),
                ..
            } => (d.store.id().to_owned(), d.force),
            other => panic!("{other:?}"),
        };
        assert_eq!(id_of(&["store", "delete", "abc"]), ("abc".into(), false));
        assert_eq!(
            id_of(&["store", "delete", "--store-id", "abc", "--force"]),
            ("abc".into(), true)
        );
        assert!(parse(&["store", "delete"]).is_err());
        assert!(parse(&["store", "delete", "a", "--store-id", "b"]).is_err());
    }

    #[test]
    fn store_name_is_positional_or_a_flag() {
        for args in [
            &["store", "create", "prod"][..],
            &["store", "create", "--name", "prod"],
        ] {
            match parse(args).unwrap().command {
                Command::Store {
                    command: StoreCommand::Create(c),
                    ..
                } => assert_eq!(c.name(), "prod"),
                other => panic!("{other:?}"),
            }
        }
        assert!(parse(&["store", "create"]).is_err());
    }

    #[test]
    fn secret_ids_for_delete_repeat_or_split_on_commas() {
        let cli = parse(&[
            "secret",
            "delete",
            "--store-id",
            "s",
            "--secret-id",
            "a,b",
            "--secret-id",
            "c",
        ])
        .unwrap();
        match cli.command {
            Command::Secret {
                command: SecretCommand::Delete(d),
                ..
            } => {
                assert_eq!(d.store.id(), "s");
                assert_eq!(d.secret_id, ["a", "b", "c"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["secret", "delete", "s"]).is_err());
    }

    #[test]
    fn connection_flags_are_accepted_after_the_subcommand() {
        let cli = parse(&[
            "secret",
            "get",
            "s",
            "--secret-id",
            "x",
            "--json",
            "--api-url",
            "http://h:1",
        ])
        .unwrap();
        match cli.command {
            Command::Secret { conn, .. } => {
                assert!(conn.json);
                assert_eq!(conn.api_url.as_deref(), Some("http://h:1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn value_dash_means_interactive_and_debug_hides_values() {
        let cli = parse(&["secret", "update", "s", "--secret-id", "x", "--value", "-"]).unwrap();
        match cli.command {
            Command::Secret {
                command: SecretCommand::Update(u),
                ..
            } => assert!(matches!(u.value, Some(ValueArg::Interactive))),
            other => panic!("{other:?}"),
        }
        let cli = parse(&[
            "secret",
            "create",
            "s",
            "--name",
            "n",
            "--scopes",
            "workers",
            "--value",
            "hunter2",
            "--api-token",
            "coffer_sekrit",
        ])
        .unwrap();
        let dbg = format!("{cli:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("sekrit"), "{dbg}");
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
        assert!(
            parse(&[
                "server",
                "--data-dir",
                "d",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
                "--insecure-http"
            ])
            .is_err()
        );
        assert!(parse(&["server", "--data-dir", "d", "--listen", "nope"]).is_err());
    }

    #[test]
    fn quota_alone_still_shows_and_set_takes_a_number_or_default() {
        match parse(&["quota", "--json"]).unwrap().command {
            Command::Quota {
                conn,
                command: None,
            } => assert!(conn.json),
            other => panic!("{other:?}"),
        }
        let set = |args: &[&str]| match parse(args).unwrap().command {
            Command::Quota {
                conn,
                command: Some(QuotaCommand::Set(s)),
            } => (s.quota(), conn.json),
            other => panic!("{other:?}"),
        };
        assert_eq!(set(&["quota", "set", "3"]), (Ok(Some(3)), false));
        assert_eq!(set(&["quota", "set", "0", "--json"]), (Ok(Some(0)), true));
        assert_eq!(
            set(&["quota", "--json", "set", "default"]),
            (Ok(None), true)
        );
        assert_eq!(
            set(&["quota", "set", "18446744073709551615"]).0,
            Ok(Some(u64::MAX))
        );
        // Bad values reach the command (which reports them in one line), `-1` included.
        for bad in ["-1", "lots", "", "+3", " 3", "3.0", "1e3", "Default", "-"] {
            let err = set(&["quota", "set", bad]).0.unwrap_err();
            assert!(err.contains("<N|default>"), "{bad:?}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let err = set(&["quota", "set", "18446744073709551616"])
            .0
            .unwrap_err();
        assert!(err.ends_with("the number is too large"), "{err}");
        assert!(parse(&["quota", "set"]).is_err());
        assert!(parse(&["quota", "set", "1", "2"]).is_err());
    }

    #[test]
    fn account_get_takes_no_argument() {
        assert!(matches!(
            parse(&["account", "get", "--json"]).unwrap().command,
            Command::Account {
                command: AccountCommand::Get,
                conn
            } if conn.json
        ));
        assert!(parse(&["account"]).is_err());
        assert!(parse(&["account", "get", "x"]).is_err());
    }

    #[test]
    fn account_admin_commands_take_a_name_or_an_id() {
        for args in [
            &["account", "create", "team-b"][..],
            &["account", "create", "--name", "team-b", "--json"],
        ] {
            match parse(args).unwrap().command {
                Command::Account {
                    command: AccountCommand::Create(c),
                    ..
                } => assert_eq!(c.name(), "team-b"),
                other => panic!("{other:?}"),
            }
        }
        assert!(parse(&["account", "create"]).is_err());
        assert!(parse(&["account", "create", "a", "--name", "b"]).is_err());
        assert!(matches!(
            parse(&["account", "list", "--json"]).unwrap().command,
            Command::Account {
                command: AccountCommand::List,
                conn
            } if conn.json
        ));
        match parse(&["account", "delete", "abc"]).unwrap().command {
            Command::Account {
                command: AccountCommand::Delete(d),
                ..
            } => assert_eq!(d.id, "abc"),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["account", "delete"]).is_err());
    }

    #[test]
    fn token_create_needs_a_name_and_a_role() {
        let create = |args: &[&str]| match parse(args).unwrap().command {
            Command::Token {
                command: TokenCommand::Create(c),
                conn,
            } => (c, conn.json),
            other => panic!("{other:?}"),
        };
        let (c, json) = create(&["token", "create", "--name", "ci", "--role", "super_admin"]);
        assert_eq!(
            (c.name.as_str(), c.role.as_str(), json),
            ("ci", "super_admin", false)
        );
        assert_eq!(c.expires_in(), Ok(None));
        let (c, json) = create(&[
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "x",
            "--expires-in",
            "30d",
            "--json",
        ]);
        assert_eq!((c.expires_in(), json), (Ok(Some(30 * 86_400)), true));
        // `-1d` reaches the command, which reports it in one line.
        let (c, _) = create(&[
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "x",
            "--expires-in",
            "-1d",
        ]);
        assert!(c.expires_in().is_err());
        assert!(parse(&["token", "create", "--name", "ci"]).is_err());
        assert!(parse(&["token", "create", "--role", "super_admin"]).is_err());
        for args in [&["token", "get", "t"][..], &["token", "revoke", "t"]] {
            assert!(parse(args).is_ok());
        }
        assert!(parse(&["token", "revoke"]).is_err());
        assert!(parse(&["token", "list"]).is_ok());
    }

    #[test]
    fn durations_are_a_positive_number_and_a_unit() {
        for (given, secs) in [
            ("1s", 1),
            ("90m", 5_400),
            ("12h", 43_200),
            ("30d", 2_592_000),
            ("007s", 7),
            ("36500d", MAX_EXPIRES_IN_SECS),
            ("3153600000s", MAX_EXPIRES_IN_SECS),
        ] {
            assert_eq!(parse_duration(given), Ok(secs), "{given}");
        }
        for bad in [
            "",
            "0d",
            "0s",
            "000m",
            "soon",
            "30",
            "d",
            "30D",
            "30 d",
            " 30d",
            "+30d",
            "-1d",
            "1.5h",
            "1_000s",
            "30dd",
            "1w",
            "3e2s",
            "٣d",
            "30é",
            "36501d",
            "3153600001s",
            "99999999999999999999d",
            "18446744073709551615d",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("--expires-in"), "{bad:?}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        assert!(
            parse_duration("0d")
                .unwrap_err()
                .ends_with("must be positive")
        );
        assert!(parse_duration("36501d").unwrap_err().ends_with("36500d"));
    }

    #[test]
    fn audit_list_takes_filters_and_checks_dates() {
        let list = |args: &[&str]| match parse(args).unwrap().command {
            Command::Audit {
                command: AuditCommand::List(l),
                conn,
            } => (l, conn.json),
            other => panic!("{other:?}"),
        };
        let (l, json) = list(&[
            "audit",
            "list",
            "--from",
            "2025-01-01T00:00:00+02:00",
            "--to",
            "2025-01-02T00:00:00Z",
            "--actor",
            "t",
            "--action",
            "create",
            "--outcome",
            "denied",
            "--store-id",
            "s",
            "--secret-id",
            "x",
            "--page",
            "2",
            "--per-page",
            "5",
            "--direction",
            "asc",
            "--json",
        ]);
        assert!(json);
        assert_eq!(
            l.time_range(),
            Ok((
                Some("2025-01-01T00:00:00+02:00".to_owned()),
                Some("2025-01-02T00:00:00Z".to_owned())
            ))
        );
        assert_eq!(
            (
                l.actor.as_deref(),
                l.action.as_deref(),
                l.outcome.as_deref()
            ),
            (Some("t"), Some("create"), Some("denied"))
        );
        assert_eq!(
            (l.store_id.as_deref(), l.secret_id.as_deref()),
            (Some("s"), Some("x"))
        );
        assert_eq!((l.page.page, l.page.per_page), (Some(2), Some(5)));
        assert_eq!(l.direction, Some(DirectionArg::Asc));

        let (l, json) = list(&["audit", "list"]);
        assert!(!json);
        assert_eq!(l.time_range(), Ok((None, None)));
        assert_eq!(l.direction, None);

        for (flag, bad) in [
            ("--from", "yesterday"),
            ("--to", "2025-01-01"),
            ("--from", "2025-13-01T00:00:00Z"),
        ] {
            let (l, _) = list(&["audit", "list", flag, bad]);
            let err = l.time_range().unwrap_err();
            assert!(err.contains(flag), "{err}");
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        assert!(parse(&["audit", "list", "--direction", "up"]).is_err());
        assert!(parse(&["audit", "list", "--page", "0"]).is_err());
        assert!(matches!(
            parse(&["audit", "verify", "--json"]).unwrap().command,
            Command::Audit {
                command: AuditCommand::Verify,
                conn
            } if conn.json
        ));
        assert!(parse(&["audit", "verify", "x"]).is_err());
        assert!(parse(&["audit"]).is_err());
    }

    #[test]
    fn deploy_needs_a_config_file() {
        match parse(&["deploy", "--config", "wrangler.toml", "--json"])
            .unwrap()
            .command
        {
            Command::Deploy { conn, args } => {
                assert!(conn.json);
                assert_eq!(args.config, PathBuf::from("wrangler.toml"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["deploy"]).is_err());
        assert!(parse(&["deploy", "wrangler.toml"]).is_err());
    }

    #[test]
    fn service_commands_take_a_name_or_id() {
        let service = |args: &[&str]| match parse(args).unwrap().command {
            Command::Service { command, .. } => command,
            other => panic!("{other:?}"),
        };
        match service(&["service", "list", "--name", "api", "--per-page", "5"]) {
            ServiceCommand::List(l) => {
                assert_eq!(l.name.as_deref(), Some("api"));
                assert_eq!(l.page.per_page, Some(5));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            service(&["service", "get", "api"]),
            ServiceCommand::Get(ServiceArg { service }) if service == "api"
        ));
        assert!(matches!(
            service(&["service", "delete", "api"]),
            ServiceCommand::Delete(ServiceArg { service }) if service == "api"
        ));
        match service(&["service", "token", "rotate", "api", "--keep-previous"]) {
            ServiceCommand::Token {
                command: ServiceTokenCommand::Rotate(r),
            } => assert!(r.keep_previous && r.service.service == "api"),
            other => panic!("{other:?}"),
        }
        match service(&["service", "token", "rotate", "api"]) {
            ServiceCommand::Token {
                command: ServiceTokenCommand::Rotate(r),
            } => assert!(!r.keep_previous),
            other => panic!("{other:?}"),
        }
        match service(&["service", "token", "revoke", "api", "--token-id", "t"]) {
            ServiceCommand::Token {
                command: ServiceTokenCommand::Revoke(r),
            } => assert_eq!(r.token_id.as_deref(), Some("t")),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["service", "get"]).is_err());
        assert!(parse(&["service", "token", "list"]).is_err());
        assert!(parse(&["service", "token", "revoke"]).is_err());
    }

    #[test]
    fn node_commands_take_a_name_or_an_id() {
        let node = |args: &[&str]| match parse(args).unwrap().command {
            Command::Node { command, conn } => (command, conn.json),
            other => panic!("{other:?}"),
        };
        match node(&["node", "create", "edge-1.fra", "--json"]) {
            (NodeCommand::Create(c), true) => assert_eq!(c.name, "edge-1.fra"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            node(&["node", "list"]),
            (NodeCommand::List, false)
        ));
        match node(&["node", "revoke", "abc"]) {
            (NodeCommand::Revoke(r), false) => assert_eq!(r.id, "abc"),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["node"]).is_err());
        assert!(parse(&["node", "create"]).is_err());
        assert!(parse(&["node", "create", "a", "b"]).is_err());
        assert!(parse(&["node", "revoke"]).is_err());
        assert!(parse(&["node", "list", "x"]).is_err());
    }

    #[test]
    fn run_takes_the_command_after_its_flags_and_hides_the_token() {
        let run = |args: &[&str]| match parse(args).unwrap().command {
            Command::Run(r) => r,
            other => panic!("{other:?}"),
        };
        let r = run(&[
            "run",
            "--service-token",
            "coffersvc_sekrit",
            "--api-url",
            "http://h:1",
            "--",
            "sh",
            "-c",
            "echo --json",
        ]);
        assert_eq!(r.api_url.as_deref(), Some("http://h:1"));
        assert_eq!(r.command, ["sh", "-c", "echo --json"]);
        assert!(!format!("{r:?}").contains("sekrit"));
        // Without `--`, the command's own flags are its.
        let r = run(&["run", "node", "--inspect", "server.js"]);
        assert_eq!(r.command, ["node", "--inspect", "server.js"]);
        let err = parse(&["run"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(parse(&["run", "--"]).is_err());
    }

    #[test]
    fn run_takes_a_ca_certificate_before_the_command() {
        let run = |args: &[&str]| match parse(args).unwrap().command {
            Command::Run(r) => r,
            other => panic!("{other:?}"),
        };
        let r = run(&["run", "--ca-cert", "/etc/coffer/ca.pem", "--", "env"]);
        assert_eq!(r.ca_cert, Some(PathBuf::from("/etc/coffer/ca.pem")));
        assert_eq!(r.command, ["env"]);
        // After the command it is the command's.
        let r = run(&["run", "env", "--ca-cert", "x.pem"]);
        assert_eq!(r.command, ["env", "--ca-cert", "x.pem"]);
    }

    #[test]
    fn pages_start_at_one() {
        assert!(parse(&["store", "list", "--page", "0"]).is_err());
        assert!(parse(&["store", "list", "--page", "1", "--per-page", "10"]).is_ok());
    }
}
