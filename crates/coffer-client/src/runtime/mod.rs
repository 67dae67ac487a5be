//! The SDK of a bound service: reads the secrets bound to it from the runtime API
//! (`/runtime/v1/...`) with its service token, the way a Worker calls `env.OPENAI_KEY.get()`.
//!
//! Without a cache every read is one request, so a value changed through the API is seen by the
//! next read. With [`EnvBuilder::cache_ttl`], the first read loads every secret binding in one
//! request and a background task reloads them every TTL; reads are then served from memory.
//!
//! Nothing here logs or formats a value: values are [`SecretValue`]s (`[redacted]` in `Debug`
//! and `Display`, wiped on drop), errors are built from status codes, error envelopes and names
//! only, and a body that answered a read is never quoted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use coffer_api::{Envelope, ErrorCode, STORE_BINDINGS_HEADER, SecretValue};
use coffer_types::{BindingName, SecretName};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, LOCATION};
use reqwest::{StatusCode, Url};
use zeroize::Zeroizing;

use crate::base_url;
use crate::error::{code_name, connect_reason, snippet};

/// The server [`Env::from_env`] reads from when `COFFER_API_URL` is not set.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";
/// The environment variable holding the service token.
pub const SERVICE_TOKEN_VAR: &str = "COFFER_SERVICE_TOKEN";
/// The environment variable holding the server URL.
pub const API_URL_VAR: &str = "COFFER_API_URL";
/// The environment variable naming a PEM file of the CA to trust (as for the `coffer` CLI).
pub const CA_CERT_VAR: &str = "COFFER_CA_CERT";

/// Longest user-given name repeated in an error, in characters.
const NAME_ECHO_MAX_CHARS: usize = 64;

/// Everything that can go wrong reading a bound secret. No variant ever holds a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No service token was given (`COFFER_SERVICE_TOKEN` unset or empty).
    #[error(
        "no service token: set {SERVICE_TOKEN_VAR} to the token `coffer deploy` printed for the \
         service"
    )]
    MissingServiceToken,

    /// The service token cannot be sent as an HTTP header (it is not text, or holds control
    /// characters). The token itself is not repeated.
    #[error("the service token contains characters that cannot be sent in an HTTP header")]
    InvalidServiceToken,

    /// The server URL is not usable.
    #[error("invalid Coffer URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// A binding name that cannot exist: binding names are environment variable names.
    #[error("invalid binding name {name:?}: {reason}")]
    InvalidBindingName { name: String, reason: String },

    /// A secret name (read through a store binding) that cannot exist.
    #[error("invalid secret name {name:?}: {reason}")]
    InvalidSecretName { name: String, reason: String },

    /// 404 `binding_not_found`: the service has no such binding (`binding "<name>" not found`),
    /// or the bound secret is gone (`Secret "<name>" not found`). The message is the server's.
    #[error("{message}")]
    NotFound { message: String },

    /// 403 `scope_denied`: the secret no longer carries the service's type among its scopes.
    #[error("scope denied: {message}")]
    ScopeDenied { message: String },

    /// 403 `wrong_token_kind`: the token is valid but is not a service token (e.g. an API token).
    #[error("wrong kind of token: {message}")]
    WrongTokenKind { message: String },

    /// 401: the service token is malformed, unknown or revoked.
    #[error("the service token was refused: {message}")]
    Unauthenticated { message: String },

    /// Any other error envelope (a 5xx, a 429, a 404 from a server without the runtime API...).
    #[error("{url}: HTTP {status}: {}", format_code(*.code, message))]
    Api {
        url: String,
        status: u16,
        code: u32,
        message: String,
    },

    /// No connection could be made (refused, unknown host, TLS handshake...).
    #[error("cannot reach {url}: {reason}")]
    Connect {
        url: String,
        reason: String,
        #[source]
        source: reqwest::Error,
    },

    /// The server did not answer in time.
    #[error("no answer from {url} in time")]
    Timeout {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// Any other transport failure (connection reset mid-response, HTTP protocol error...).
    #[error("request to {url} failed: {reason}")]
    Transport {
        url: String,
        reason: String,
        #[source]
        source: reqwest::Error,
    },

    /// An answer that is not what the runtime API sends. A successful answer's body is never
    /// quoted here (it may hold values); an error answer's is, shortened.
    #[error("unexpected response from {url} (HTTP {status}): {detail}")]
    Decode {
        url: String,
        status: u16,
        detail: String,
    },

    /// The HTTP client could not be built (TLS setup).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(#[source] reqwest::Error),

    /// The CA certificate given with [`EnvBuilder::ca_cert`] (or `COFFER_CA_CERT`) could not be
    /// read, or holds no PEM certificate. `origin` is the file, or `PEM given in memory`.
    #[error("CA certificate {origin}: {reason}")]
    CaCert { origin: String, reason: String },
}

impl RuntimeError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RuntimeError::NotFound { .. } => Some(404),
            RuntimeError::ScopeDenied { .. } | RuntimeError::WrongTokenKind { .. } => Some(403),
            RuntimeError::Unauthenticated { .. } => Some(401),
            RuntimeError::Api { status, .. } | RuntimeError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `[1501 internal_error] message`.
fn format_code(code: u32, message: &str) -> String {
    match code_name(code) {
        Some(name) => format!("[{code} {name}] {message}"),
        None => format!("[{code}] {message}"),
    }
}

/// Where the CA certificate to trust comes from.
#[derive(Debug, Clone)]
enum CaCert {
    Path(PathBuf),
    Pem(Vec<u8>),
}

impl CaCert {
    /// The certificates, or why there are none.
    fn load(&self) -> Result<Vec<reqwest::Certificate>, RuntimeError> {
        let origin = match self {
            CaCert::Path(path) => path.display().to_string(),
            CaCert::Pem(_) => "(PEM given in memory)".to_owned(),
        };
        let fail = |reason: String| RuntimeError::CaCert {
            origin: origin.clone(),
            reason,
        };
        let read;
        let pem: &[u8] = match self {
            CaCert::Path(path) => {
                read = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
                &read
            }
            CaCert::Pem(pem) => pem,
        };
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| fail(e.to_string()))?;
        if certs.is_empty() {
            return Err(fail("no PEM certificate found".to_owned()));
        }
        Ok(certs)
    }
}

/// Settings of an [`Env`]: where the server is, the service token, and the cache.
#[derive(Clone)]
pub struct EnvBuilder {
    api_url: Option<String>,
    ca_cert: Option<CaCert>,
    service_token: Option<Zeroizing<String>>,
    /// `COFFER_SERVICE_TOKEN` was set but is not Unicode.
    token_not_unicode: bool,
    cache_ttl: Option<Duration>,
    connect_timeout: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for EnvBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvBuilder")
            .field("api_url", &self.api_url)
            .field(
                "service_token",
                &self.service_token.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "ca_cert",
                &self.ca_cert.as_ref().map(|c| match c {
                    CaCert::Path(path) => path.display().to_string(),
                    CaCert::Pem(_) => "(PEM)".to_owned(),
                }),
            )
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

impl Default for EnvBuilder {
    fn default() -> EnvBuilder {
        EnvBuilder {
            api_url: None,
            ca_cert: None,
            service_token: None,
            token_not_unicode: false,
            cache_ttl: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
        }
    }
}

impl EnvBuilder {
    /// A builder seeded from `COFFER_SERVICE_TOKEN`, `COFFER_API_URL` and `COFFER_CA_CERT`
    /// (each only if set and not blank); the methods below override them.
    pub fn from_env() -> EnvBuilder {
        EnvBuilder::from_vars(|name| std::env::var_os(name))
    }

    /// [`EnvBuilder::from_env`] with the variables looked up by `var`.
    fn from_vars(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> EnvBuilder {
        let mut builder = EnvBuilder::default();
        if let Some(token) = var(SERVICE_TOKEN_VAR) {
            match token.into_string() {
                Ok(token) => builder.service_token = Some(Zeroizing::new(token)),
                Err(not_unicode) => {
                    drop(Zeroizing::new(not_unicode.into_encoded_bytes()));
                    builder.token_not_unicode = true;
                }
            }
        }
        if let Some(url) = var(API_URL_VAR) {
            builder.api_url = Some(url.to_string_lossy().into_owned());
        }
        if let Some(path) = var(CA_CERT_VAR)
            && !path.to_string_lossy().trim().is_empty()
        {
            builder.ca_cert = Some(CaCert::Path(PathBuf::from(path)));
        }
        builder
    }

    /// The server root, e.g. `https://coffer.internal:8443` (default
    /// [`DEFAULT_API_URL`]). A trailing `/client/v4` is accepted and removed.
    pub fn api_url(mut self, url: impl Into<String>) -> EnvBuilder {
        self.api_url = Some(url.into());
        self
    }

    /// Trusts only the certificates in this PEM file (one or more), for a server whose
    /// certificate is self-signed or issued by a private CA; the system roots are then not used.
    /// The same setting as the `coffer` CLI's `--ca-cert` / `COFFER_CA_CERT`. The file is read
    /// by [`EnvBuilder::build`], which fails if it cannot be read or holds no certificate.
    pub fn ca_cert(mut self, path: impl Into<PathBuf>) -> EnvBuilder {
        self.ca_cert = Some(CaCert::Path(path.into()));
        self
    }

    /// Like [`EnvBuilder::ca_cert`], with the PEM text itself rather than a file.
    pub fn ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> EnvBuilder {
        self.ca_cert = Some(CaCert::Pem(pem.into()));
        self
    }

    /// The service's token, `coffersvc_...`, as `coffer deploy` printed it.
    pub fn service_token(mut self, token: impl Into<String>) -> EnvBuilder {
        self.service_token = Some(Zeroizing::new(token.into()));
        self.token_not_unicode = false;
        self
    }

    /// Keeps the secret bindings in memory: the first read loads them all in one request, a
    /// background task (on the tokio runtime of that first read) reloads them every `ttl`, and
    /// reads are served from memory. If a reload fails for want of an answer (a transport
    /// error, a 5xx or a 429), the last values loaded keep being served (a warning is logged
    /// through `tracing`, without any value) and the next reload tries again. If the server
    /// refuses it (401, 403, 404 or any other answer), the values are dropped: until a reload
    /// succeeds, each read is a request of its own, so a withdrawn binding fails with the
    /// server's error while the others still see their current values. A binding the cache
    /// does not hold (a store binding, or one added since the last reload) is read with a
    /// request of its own. If the task has ended because its runtime shut down, the next read
    /// reloads the values and starts it again on the reader's runtime. The task stops with the
    /// last clone of the [`Env`]. A zero `ttl` means no cache.
    pub fn cache_ttl(mut self, ttl: Duration) -> EnvBuilder {
        self.cache_ttl = (!ttl.is_zero()).then_some(ttl);
        self
    }

    /// How long to wait for a connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> EnvBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// How long one request may take (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> EnvBuilder {
        self.timeout = timeout;
        self
    }

    pub fn build(self) -> Result<Env, RuntimeError> {
        if self.token_not_unicode {
            return Err(RuntimeError::InvalidServiceToken);
        }
        let token = match &self.service_token {
            Some(token) if !token.trim().is_empty() => token,
            _ => return Err(RuntimeError::MissingServiceToken),
        };
        let url = self
            .api_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or(DEFAULT_API_URL);
        let root = base_url::normalize(url).map_err(|e| match e {
            crate::Error::InvalidUrl { url, reason } => RuntimeError::InvalidUrl { url, reason },
            other => RuntimeError::InvalidUrl {
                url: url.to_owned(),
                reason: other.to_string(),
            },
        })?;
        let header = Zeroizing::new(format!("Bearer {}", token.trim()));
        let mut auth =
            HeaderValue::from_str(&header).map_err(|_| RuntimeError::InvalidServiceToken)?;
        auth.set_sensitive(true);
        let mut http = reqwest::Client::builder()
            .user_agent(concat!("coffer-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &self.ca_cert {
            http = http.tls_certs_only(ca.load()?);
        }
        let http = http.build().map_err(RuntimeError::Setup)?;
        Ok(Env {
            inner: Arc::new(Inner {
                http,
                root,
                auth,
                cache: self.cache_ttl.map(Cache::new),
            }),
        })
    }
}

/// A bound service's view of its secrets: the analogue of a Worker's `env`.
///
/// Cheap to clone (clones share the connection pool and the cache).
#[derive(Clone)]
pub struct Env {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// Server root, normalised by [`base_url::normalize`].
    root: Url,
    /// `Bearer <service token>`, marked sensitive.
    auth: HeaderValue,
    cache: Option<Cache>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(cache) = &self.cache
            && let Some(task) = lock(&cache.task).take()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("api_url", &base_url::display(&self.inner.root))
            .field("service_token", &"[redacted]")
            .field("cache_ttl", &self.inner.cache.as_ref().map(|c| c.ttl))
            .finish()
    }
}

/// The values of every secret binding, by binding name.
type Values = BTreeMap<String, SecretValue>;

/// What [`Env::get_all_with_store_bindings`] reads: every secret binding's value, by binding
/// name, and the names of the store bindings, in deploy order.
#[derive(Debug)]
pub struct AllBindings {
    pub values: BTreeMap<String, SecretValue>,
    pub store_bindings: Vec<String>,
}

struct Cache {
    ttl: Duration,
    /// Taken by the first read while it loads the bindings and starts the refresh task, so that
    /// concurrent first reads make one request; `true` once that is done.
    started: tokio::sync::Mutex<bool>,
    /// The last values loaded, if any load succeeded.
    values: RwLock<Option<Values>>,
    /// The refresh task, aborted when the last `Env` goes.
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Cache {
    fn new(ttl: Duration) -> Cache {
        Cache {
            ttl,
            started: tokio::sync::Mutex::new(false),
            values: RwLock::new(None),
            task: Mutex::new(None),
        }
    }

    fn store(&self, values: Values) {
        // The values replaced are wiped as they drop.
        *self.values.write().unwrap_or_else(PoisonError::into_inner) = Some(values);
    }

    /// Forgets the values (wiped as they drop): reads go to the server until a load succeeds.
    fn clear(&self) {
        *self.values.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Applies the outcome of a load: new values are kept; a failure for want of an answer
    /// keeps the old ones (returns `true`); any other failure drops them (returns `false`).
    fn apply(&self, loaded: Result<Values, RuntimeError>) -> Result<(), (RuntimeError, bool)> {
        match loaded {
            Ok(values) => {
                self.store(values);
                Ok(())
            }
            Err(e) if is_transient(&e) => Err((e, true)),
            Err(e) => {
                self.clear();
                Err((e, false))
            }
        }
    }

    /// Whether the refresh task is running (it ends only with its runtime, or when aborted).
    fn task_alive(&self) -> bool {
        lock(&self.task).as_ref().is_some_and(|t| !t.is_finished())
    }

    fn get(&self, binding: &str) -> Option<SecretValue> {
        let values = self.values.read().unwrap_or_else(PoisonError::into_inner);
        values.as_ref()?.get(binding).map(copy)
    }

    fn all(&self) -> Option<Values> {
        let values = self.values.read().unwrap_or_else(PoisonError::into_inner);
        values
            .as_ref()
            .map(|v| v.iter().map(|(k, v)| (k.clone(), copy(v))).collect())
    }
}

fn copy(value: &SecretValue) -> SecretValue {
    SecretValue::new(value.expose_secret().to_owned())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Env {
    /// An `Env` from `COFFER_SERVICE_TOKEN` (required) and `COFFER_API_URL` (default
    /// [`DEFAULT_API_URL`]), without a cache.
    pub fn from_env() -> Result<Env, RuntimeError> {
        EnvBuilder::from_env().build()
    }

    /// A builder with nothing set: give at least [`EnvBuilder::service_token`]. To start from
    /// the environment instead, use [`EnvBuilder::from_env`].
    pub fn builder() -> EnvBuilder {
        EnvBuilder::default()
    }

    /// The normalised server root, e.g. `http://127.0.0.1:8080`.
    pub fn api_url(&self) -> String {
        base_url::display(&self.inner.root)
    }

    /// The secret bound under `binding` (`[[secrets_store_secrets]]`). Nothing is sent until
    /// [`BoundSecret::get`].
    pub fn secret(&self, binding: &str) -> BoundSecret<'_> {
        BoundSecret {
            env: self,
            binding: binding.to_owned(),
        }
    }

    /// The store bound under `binding` (`[[secrets_store_stores]]`).
    pub fn store(&self, binding: &str) -> BoundStore<'_> {
        BoundStore {
            env: self,
            binding: binding.to_owned(),
        }
    }

    /// Every secret binding of the service and its value, in one request (or from the cache).
    /// Store bindings are not included.
    pub async fn get_all(&self) -> Result<BTreeMap<String, SecretValue>, RuntimeError> {
        if let Some(cache) = &self.inner.cache {
            self.start_cache(cache).await;
            if let Some(all) = cache.all() {
                return Ok(all);
            }
        }
        fetch_all(&self.inner).await
    }

    /// Every secret binding and its value, like [`Env::get_all`], and the names of the
    /// service's store bindings, which `get_all` leaves out (they give secrets by name: read
    /// them with [`Env::store`]). Always one request of its own, never the cache. The names come
    /// from the `coffer-store-bindings` header; a server that does not send it gives none.
    pub async fn get_all_with_store_bindings(&self) -> Result<AllBindings, RuntimeError> {
        let (values, store_bindings) = fetch_all_with_stores(&self.inner).await?;
        Ok(AllBindings {
            values,
            store_bindings,
        })
    }

    async fn read_binding(&self, binding: &str) -> Result<SecretValue, RuntimeError> {
        check_binding(binding)?;
        if let Some(cache) = &self.inner.cache {
            self.start_cache(cache).await;
            if let Some(value) = cache.get(binding) {
                return Ok(value);
            }
        }
        let url = base_url::join(&self.inner.root, &["runtime", "v1", "bindings", binding]);
        fetch_one(&self.inner, url, binding).await
    }

    async fn read_store_secret(
        &self,
        binding: &str,
        name: &str,
    ) -> Result<SecretValue, RuntimeError> {
        check_binding(binding)?;
        SecretName::parse(name).map_err(|e| RuntimeError::InvalidSecretName {
            name: echo(name),
            reason: e.to_string(),
        })?;
        // Each segment is percent-encoded by `join`, so a name cannot address another route.
        let url = base_url::join(
            &self.inner.root,
            &["runtime", "v1", "stores", binding, "secrets", name],
        );
        fetch_one(&self.inner, url, name).await
    }

    /// On the first read, and on a read after the refresh task ended (its runtime shut down):
    /// loads every binding into the cache and starts the refresh task on the reader's runtime.
    /// A failed load is logged and retried by the task; reads meanwhile go to the server.
    async fn start_cache(&self, cache: &Cache) {
        if cache.task_alive() {
            return;
        }
        let mut started = cache.started.lock().await;
        // Another read may have restarted it while this one waited.
        if cache.task_alive() {
            return;
        }
        if *started {
            tracing::warn!(
                "coffer: the cache's refresh task has ended (its runtime shut down); reloading \
                 the secret bindings and restarting it"
            );
        }
        if let Err((e, _)) = cache.apply(fetch_all(&self.inner).await) {
            tracing::warn!(
                error = %e,
                "coffer: cannot load the secret bindings into the cache; reading each directly \
                 until a reload succeeds"
            );
        }
        let task = tokio::spawn(refresh(Arc::downgrade(&self.inner), cache.ttl));
        *lock(&cache.task) = Some(task.abort_handle());
        *started = true;
    }
}

/// Reloads the cache every `ttl` until the `Env` is gone.
async fn refresh(env: Weak<Inner>, ttl: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + ttl, ttl);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = env.upgrade() else { return };
        let Some(cache) = &inner.cache else { return };
        match cache.apply(fetch_all(&inner).await) {
            Ok(()) => {}
            Err((e, true)) => tracing::warn!(
                error = %e,
                "coffer: cannot reload the secret bindings; serving the values loaded before \
                 and retrying in {ttl:?}"
            ),
            Err((e, false)) => tracing::warn!(
                error = %e,
                "coffer: the server refused to reload the secret bindings; dropped the cached \
                 values, reading each directly until a reload succeeds (retrying in {ttl:?})"
            ),
        }
    }
}

/// Whether a failed load may be followed by serving the values loaded before: only when the
/// server could not answer (a transport failure, a 5xx, a 429). An answer that refuses (401,
/// 403 `scope_denied` / `wrong_token_kind` / forbidden, 404 `binding_not_found`...) means the
/// access may have been withdrawn, so the values must not be served any longer.
fn is_transient(e: &RuntimeError) -> bool {
    match e {
        RuntimeError::Connect { .. }
        | RuntimeError::Timeout { .. }
        | RuntimeError::Transport { .. } => true,
        RuntimeError::Api { status, .. } | RuntimeError::Decode { status, .. } => {
            *status >= 500 || *status == 429
        }
        _ => false,
    }
}

/// The secret bound under one name. See [`Env::secret`].
#[derive(Debug, Clone)]
pub struct BoundSecret<'a> {
    env: &'a Env,
    binding: String,
}

impl<'a> BoundSecret<'a> {
    pub fn binding(&self) -> &str {
        &self.binding
    }

    /// `GET /runtime/v1/bindings/{binding}` (or the cache): the value, or an error saying why
    /// not (`binding "<name>" not found`, scope denied, a refused token...). The future borrows
    /// the [`Env`], not this handle, so `env.secret("K").get()` can be kept and awaited later.
    pub fn get(&self) -> impl Future<Output = Result<SecretValue, RuntimeError>> + Send + use<'a> {
        let (env, binding) = (self.env, self.binding.clone());
        async move { env.read_binding(&binding).await }
    }
}

/// A store bound under one name. See [`Env::store`].
#[derive(Debug, Clone)]
pub struct BoundStore<'a> {
    env: &'a Env,
    binding: String,
}

impl<'a> BoundStore<'a> {
    pub fn binding(&self) -> &str {
        &self.binding
    }

    /// The secret named `name` in the bound store. Nothing is sent until [`StoreSecret::get`].
    pub fn secret(&self, name: &str) -> StoreSecret<'a> {
        StoreSecret {
            env: self.env,
            binding: self.binding.clone(),
            name: name.to_owned(),
        }
    }
}

/// One secret of a bound store. See [`BoundStore::secret`].
#[derive(Debug, Clone)]
pub struct StoreSecret<'a> {
    env: &'a Env,
    binding: String,
    name: String,
}

impl<'a> StoreSecret<'a> {
    /// `GET /runtime/v1/stores/{binding}/secrets/{name}`, always a request of its own: the
    /// cache holds secret bindings only. Like [`BoundSecret::get`], the future borrows only the
    /// [`Env`].
    pub fn get(&self) -> impl Future<Output = Result<SecretValue, RuntimeError>> + Send + use<'a> {
        let (env, binding, name) = (self.env, self.binding.clone(), self.name.clone());
        async move { env.read_store_secret(&binding, &name).await }
    }
}

fn check_binding(binding: &str) -> Result<(), RuntimeError> {
    BindingName::parse(binding)
        .map(drop)
        .map_err(|e| RuntimeError::InvalidBindingName {
            name: echo(binding),
            reason: e.to_string(),
        })
}

/// A user-given name, shortened for an error message.
fn echo(name: &str) -> String {
    let mut out: String = name.chars().take(NAME_ECHO_MAX_CHARS).collect();
    if name.chars().count() > NAME_ECHO_MAX_CHARS {
        out.push('…');
    }
    out
}

/// One value: the body of a 2xx answer, as text.
async fn fetch_one(inner: &Inner, url: Url, name: &str) -> Result<SecretValue, RuntimeError> {
    let resp = send(inner, &url).await?;
    let status = resp.status();
    let body = read(resp, &url).await?;
    if !status.is_success() {
        return Err(answer_error(&url, status, &body, name));
    }
    String::from_utf8(std::mem::take(&mut *body.into_inner()))
        .map(SecretValue::new)
        .map_err(|e| {
            // Wipe the bytes that were not text.
            drop(Zeroizing::new(e.into_bytes()));
            RuntimeError::Decode {
                url: url.to_string(),
                status: status.as_u16(),
                detail: "the value is not UTF-8 text (the body is not shown)".to_owned(),
            }
        })
}

/// Every secret binding: a 2xx answer's JSON object of names and values.
async fn fetch_all(inner: &Inner) -> Result<Values, RuntimeError> {
    let url = bindings_url(inner);
    let resp = send(inner, &url).await?;
    all_values(resp, &url).await
}

/// [`fetch_all`], and the store bindings' names from the `coffer-store-bindings` header.
async fn fetch_all_with_stores(inner: &Inner) -> Result<(Values, Vec<String>), RuntimeError> {
    let url = bindings_url(inner);
    let resp = send(inner, &url).await?;
    let stores = store_bindings(resp.headers());
    Ok((all_values(resp, &url).await?, stores))
}

/// `/runtime/v1/bindings`: every secret binding at once.
fn bindings_url(inner: &Inner) -> Url {
    base_url::join(&inner.root, &["runtime", "v1", "bindings"])
}

/// The store bindings' names in the `coffer-store-bindings` header (names that are not binding
/// names are left out: they are only ever shown); none without the header.
fn store_bindings(headers: &HeaderMap) -> Vec<String> {
    headers
        .get(STORE_BINDINGS_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|name| BindingName::parse(name).is_ok())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The values in an answer to [`bindings_url`].
async fn all_values(resp: reqwest::Response, url: &Url) -> Result<Values, RuntimeError> {
    let status = resp.status();
    let body = read(resp, url).await?;
    if !status.is_success() {
        return Err(answer_error(url, status, &body, ""));
    }
    // Not the parse error's text: it can quote part of the body.
    serde_json::from_slice::<Values>(&body).map_err(|_| RuntimeError::Decode {
        url: url.to_string(),
        status: status.as_u16(),
        detail: "the answer is not a JSON object of binding names and values (the body is not \
                 shown: it may hold values)"
            .to_owned(),
    })
}

/// Sends a GET with the service token; a redirect is an error. The answer's headers and body
/// are left to the caller.
async fn send(inner: &Inner, url: &Url) -> Result<reqwest::Response, RuntimeError> {
    let shown = url.to_string();
    let resp = inner
        .http
        .get(url.clone())
        .header(AUTHORIZATION, inner.auth.clone())
        .send()
        .await
        .map_err(|e| transport(&shown, e))?;
    let status = resp.status();
    if status.is_redirection() {
        let to = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|s| snippet(s.as_bytes()))
            .unwrap_or_else(|| "nowhere".to_owned());
        return Err(RuntimeError::Decode {
            url: shown,
            status: status.as_u16(),
            detail: format!(
                "the server redirects to {to}; point COFFER_API_URL at the final URL instead"
            ),
        });
    }
    Ok(resp)
}

/// The whole body of `resp` (an answer to `url`), in a buffer wiped on drop.
async fn read(resp: reqwest::Response, url: &Url) -> Result<Body, RuntimeError> {
    let bytes = crate::read_body(resp)
        .await
        .map_err(|e| transport(url.as_str(), e))?;
    Ok(Body(Zeroizing::new(bytes)))
}

/// A response body, wiped on drop.
struct Body(Zeroizing<Vec<u8>>);

impl Body {
    fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

fn transport(url: &str, source: reqwest::Error) -> RuntimeError {
    let url = url.to_owned();
    if source.is_connect() {
        RuntimeError::Connect {
            url,
            reason: connect_reason(&source),
            source,
        }
    } else if source.is_timeout() {
        RuntimeError::Timeout { url, source }
    } else {
        RuntimeError::Transport {
            url,
            reason: connect_reason(&source),
            source,
        }
    }
}

/// The error of a non-2xx answer, from its v4 error envelope. `name` is the binding or secret
/// read, for a 404 without a message.
fn answer_error(url: &Url, status: StatusCode, body: &[u8], name: &str) -> RuntimeError {
    let status_code = status.as_u16();
    let Ok(envelope) = serde_json::from_slice::<Envelope<serde::de::IgnoredAny>>(body) else {
        return RuntimeError::Decode {
            url: url.to_string(),
            status: status_code,
            detail: snippet(body),
        };
    };
    let (code, message) = match envelope.errors.into_iter().next() {
        Some(first) => (first.code, first.message),
        None => (0, String::new()),
    };
    let message_or = |fallback: String| {
        if message.trim().is_empty() {
            fallback
        } else {
            message.clone()
        }
    };
    match code {
        c if c == ErrorCode::BindingNotFound.code() => RuntimeError::NotFound {
            message: message_or(format!("Secret \"{name}\" not found")),
        },
        c if c == ErrorCode::ScopeDenied.code() => RuntimeError::ScopeDenied {
            message: message_or(format!("{name} may not be read by this service")),
        },
        c if c == ErrorCode::WrongTokenKind.code() => RuntimeError::WrongTokenKind {
            message: message_or(
                "the runtime API takes a service token (coffersvc_...), as `coffer deploy` \
                 printed it"
                    .to_owned(),
            ),
        },
        _ if status == StatusCode::UNAUTHORIZED => RuntimeError::Unauthenticated {
            message: message_or("missing, malformed, unknown or revoked token".to_owned()),
        },
        _ => RuntimeError::Api {
            url: url.to_string(),
            status: status_code,
            code,
            message: message_or(format!("HTTP {status_code} without error details")),
        },
    }
}

#[cfg(test)]
mod tests;
