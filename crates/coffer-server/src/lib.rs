//! Coffer's HTTP server. (Being written: the signatures below are the contract the CLI uses.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use coffer_crypto::ApiToken;
use coffer_types::AccountId;

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
/// account and a full-rights API token. Refuses a path that exists and is not an empty dir.
pub async fn init_data_dir(path: &Path) -> Result<InitOutcome, ServerError> {
    unimplemented!()
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

/// Runs the server until `shutdown` resolves (then drains in-flight requests). `on_ready` is
/// called with the bound address once `/healthz` answers 200 (useful with port 0).
pub async fn serve(
    opts: ServeOptions,
    on_ready: impl FnOnce(SocketAddr) + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    unimplemented!()
}
