//! Coffer's Prometheus metrics: every metric family the control plane and edges expose, the
//! label types (each with a bound on its values), and the text a scrape answers.
//!
//! One [`Metrics`] per serving process (or per in-process server in tests: there is no global
//! registry). Two kinds of metric:
//!
//! - **Events the server sees** (a request answered, a refused authentication, a storage
//!   commit, a KEK call) are recorded as they happen, through the methods of [`Metrics`]: each
//!   is an atomic add, or a histogram's observation under a short lock.
//! - **What lower crates count** (runtime reads, the runtime cache, the change-log head, the
//!   DEK cache, audit entries written, an edge's replication state) is read at scrape time from
//!   a [`Source`] the server installs ([`Metrics::set_source`]), which fills a [`Sample`] from
//!   the plain counters those crates keep. Storage, core and the HSM provider therefore know
//!   nothing of Prometheus.
//!
//! No label carries a secret or store name, a token, an account id or anything else a tenant
//! chooses: routes are axum's route templates (`/runtime/v1/bindings/{binding}`, exposed as
//! `/runtime/v1/bindings/:binding`), methods and
//! status classes are small enums, and every other label is a fixed word.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod source;

pub use source::{EdgeSample, RuntimeSample, Sample, Source, StorageSample};

/// The `Content-Type` of a scrape's answer (the Prometheus text format, version 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Request latency buckets, in seconds: a cached runtime read takes tens of microseconds, a
/// write waits for a group commit's fsync. Timed to the response's head, so a snapshot that
/// streams for minutes counts the time before its first byte, not its body.
const HTTP_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// KEK call buckets, in seconds: a file KEK wraps in microseconds, an HSM in milliseconds.
const KEK_BUCKETS: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.1, 0.5, 2.0,
];

/// Commit (fsync) buckets, in seconds.
const COMMIT_BUCKETS: [f64; 13] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// Jobs per group commit: powers of two, past the writer's default largest batch (256,
/// `SqliteOptions::max_batch`) so that a raised one still lands in a bucket of its own.
const BATCH_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

fn kek_histogram() -> Histogram {
    Histogram::new(KEK_BUCKETS)
}

/// Writes `value` as a label value.
fn label(encoder: &mut LabelValueEncoder, value: &str) -> fmt::Result {
    fmt::Write::write_str(encoder, value)
}

/// An HTTP method, as a label: the usual ones by name, anything else as `other`. `Other` stays
/// the last variant (`Method::COUNT` is derived from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

impl Method {
    /// Derived from the last variant: a method added before it moves the count with it.
    const COUNT: usize = Method::Other as usize + 1;

    /// The label for a method given by name (`http::Method::as_str`).
    pub fn from_name(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => "other",
        }
    }
}

impl EncodeLabelValue for Method {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        label(encoder, self.as_str())
    }
}

/// A response's status class: `1xx` to `5xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusClass(u8);

impl StatusClass {
    const COUNT: usize = 5;

    /// The class of `status` (100-599; anything above counts as `5xx`).
    pub fn of(status: u16) -> StatusClass {
        StatusClass((status / 100).clamp(1, 5) as u8)
    }

    fn index(self) -> usize {
        usize::from(self.0 - 1)
    }
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        label(encoder, ["1xx", "2xx", "3xx", "4xx", "5xx"][self.index()])
    }
}

/// The labels of a request: its route template (never the path itself), method and status
/// class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    method: Method,
    route: Arc<str>,
    status: StatusClass,
}

/// The route label of requests no route matched (fallbacks): one value, whatever the path.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// A route's latency histograms, resolved once per (method, status class) and then reused, so
/// that a request neither builds nor hashes a label set.
#[derive(Debug)]
pub struct RouteMetrics {
    route: Arc<str>,
    family: Family<HttpLabels, Histogram, fn() -> Histogram>,
    resolved: [[OnceLock<Histogram>; StatusClass::COUNT]; Method::COUNT],
}

impl RouteMetrics {
    /// Records one request answered with `status` after `elapsed`.
    pub fn observe(&self, method: Method, status: u16, elapsed: Duration) {
        let class = StatusClass::of(status);
        let histogram = self.resolved[method as usize][class.index()].get_or_init(|| {
            self.family.get_or_create_owned(&HttpLabels {
                method,
                route: Arc::clone(&self.route),
                status: class,
            })
        });
        histogram.observe(elapsed.as_secs_f64());
    }
}

/// Which KEK call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KekOp {
    Wrap,
    Unwrap,
}

impl EncodeLabelValue for KekOp {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        label(
            encoder,
            match self {
                KekOp::Wrap => "wrap",
                KekOp::Unwrap => "unwrap",
            },
        )
    }
}

/// Where the instance KEK is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KekBackend {
    File,
    Pkcs11,
}

impl EncodeLabelValue for KekBackend {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        label(
            encoder,
            match self {
                KekBackend::File => "file",
                KekBackend::Pkcs11 => "pkcs11",
            },
        )
    }
}

/// Whether a call succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    Error,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        label(
            encoder,
            match self {
                Outcome::Ok => "ok",
                Outcome::Error => "error",
            },
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KekLabels {
    backend: KekBackend,
    op: KekOp,
    outcome: Outcome,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// An address past its failed-authentication budget (429 `rate_limited`).
    AuthFailures,
    /// A service token over `--runtime-rate-limit` (429 `read_rate_limited`).
    RuntimeReads,
}

impl EncodeLabelValue for Limit {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        label(
            encoder,
            match self {
                Limit::AuthFailures => "auth_failures",
                Limit::RuntimeReads => "runtime_reads",
            },
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    limit: Limit,
}

/// Open connections on the public listener: counted while a [`ConnectionGuard`] lives; and
/// those it closed unread because their client address held its share.
#[derive(Debug, Clone)]
pub struct Connections {
    open: Gauge,
    refused: Counter,
}

impl Connections {
    /// Counts one connection until the guard is dropped.
    pub fn open(&self) -> ConnectionGuard {
        self.open.inc();
        ConnectionGuard(self.open.clone())
    }

    /// Counts a connection closed unread by the per-address cap.
    pub fn refused(&self) {
        self.refused.inc();
    }
}

/// One open connection; see [`Connections::open`].
#[derive(Debug)]
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The metrics of one serving process; see the crate documentation.
pub struct Metrics {
    registry: Registry,
    http: Family<HttpLabels, Histogram, fn() -> Histogram>,
    /// Route template → its resolved histograms. Bounded by the router's routes (plus
    /// [`UNMATCHED_ROUTE`]).
    routes: RwLock<HashMap<Box<str>, Arc<RouteMetrics>>>,
    connections: Gauge,
    connections_refused: Counter,
    auth_failures: Counter,
    limited: Family<LimitLabels, Counter>,
    kek: Family<KekLabels, Histogram, fn() -> Histogram>,
    commit_batch: Histogram,
    commit_seconds: Histogram,
    commits_failed: Counter,
    source: Arc<OnceLock<Arc<dyn Source>>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http = Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            http_histogram as fn() -> Histogram,
        );
        registry.register(
            "coffer_http_request_duration_seconds",
            "Requests answered on the public listener, by route template, method and status class, and how long each took (its _count is the number of requests)",
            http.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "coffer_http_connections_open",
            "Connections open on the public listener",
            connections.clone(),
        );
        // Counters are registered without `_total`: the text encoder appends it to the name of
        // every counter (`coffer_auth_failures` is scraped as `coffer_auth_failures_total`).
        let connections_refused = Counter::default();
        registry.register(
            "coffer_http_connections_refused",
            "Connections the public listener closed unread because their client address (an IPv6 /64) held its share already (--max-connections-per-address)",
            connections_refused.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "coffer_auth_failures",
            "Requests refused because their credential did not authenticate (an unknown, revoked or wrong-kind token, or a malformed Authorization header; a 429 of the failed-authentication limit is counted here too)",
            auth_failures.clone(),
        );
        let limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "coffer_rate_limited",
            "Requests refused with 429 by a limit: auth_failures (an address past its failed-authentication budget) or runtime_reads (a service token over --runtime-rate-limit)",
            limited.clone(),
        );
        let kek = Family::<KekLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            kek_histogram as fn() -> Histogram,
        );
        registry.register(
            "coffer_kek_operation_seconds",
            "Calls to the instance KEK (a key file or a PKCS#11 token) to wrap or unwrap a key, by outcome, and how long each took",
            kek.clone(),
        );
        let commit_batch = Histogram::new(BATCH_BUCKETS);
        registry.register(
            "coffer_storage_commit_batch_jobs",
            "Writes made durable by each group commit of the storage writer",
            commit_batch.clone(),
        );
        let commit_seconds = Histogram::new(COMMIT_BUCKETS);
        registry.register(
            "coffer_storage_commit_seconds",
            "How long each group commit's COMMIT (its fsync) took",
            commit_seconds.clone(),
        );
        let commits_failed = Counter::default();
        registry.register(
            "coffer_storage_commits_failed",
            "Group commits that failed (every write in them was refused)",
            commits_failed.clone(),
        );
        let source: Arc<OnceLock<Arc<dyn Source>>> = Arc::default();
        registry.register_collector(Box::new(SourceCollector(Arc::clone(&source))));
        Metrics {
            registry,
            http,
            routes: RwLock::default(),
            connections,
            connections_refused,
            auth_failures,
            limited,
            kek,
            commit_batch,
            commit_seconds,
            commits_failed,
            source,
        }
    }

    /// Installs what is read at scrape time; `false` (and the first kept) if one is set.
    pub fn set_source(&self, source: Arc<dyn Source>) -> bool {
        self.source.set(source).is_ok()
    }

    /// The histograms of `route` (a route template, or [`UNMATCHED_ROUTE`]). Resolved once per
    /// template: the caller holds on to it for the request.
    pub fn route(&self, route: &str) -> Arc<RouteMetrics> {
        if let Some(found) = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(route)
        {
            return Arc::clone(found);
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(routes.entry(route.into()).or_insert_with(|| {
            Arc::new(RouteMetrics {
                route: route_label(route).into(),
                family: self.http.clone(),
                resolved: Default::default(),
            })
        }))
    }

    /// The gauge of open connections, for the listener.
    pub fn connections(&self) -> Connections {
        Connections {
            open: self.connections.clone(),
            refused: self.connections_refused.clone(),
        }
    }

    /// A request was refused because its token did not authenticate.
    pub fn auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// A request was refused by `limit`.
    pub fn rate_limited(&self, limit: Limit) {
        self.limited.get_or_create(&LimitLabels { limit }).inc();
    }

    /// A call to the instance KEK.
    pub fn kek_call(&self, backend: KekBackend, op: KekOp, outcome: Outcome, took: Duration) {
        self.kek
            .get_or_create(&KekLabels {
                backend,
                op,
                outcome,
            })
            .observe(took.as_secs_f64());
    }

    /// A group commit made `jobs` writes durable; its COMMIT took `took`.
    pub fn committed(&self, jobs: usize, took: Duration) {
        self.commit_batch.observe(jobs as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// A group commit failed.
    pub fn commit_failed(&self) {
        self.commits_failed.inc();
    }

    /// Everything, in the Prometheus text format ([`CONTENT_TYPE`]). Writing into a String
    /// cannot fail and every value is a number or a fixed label, so an error is a bug in an
    /// encoder; it is returned (the listener answers 500), never a partial or empty scrape
    /// that would read as "no data".
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A route template as a label value: axum's `{param}` segments written `:param`. Braces in a
/// label value are valid Prometheus text, but some parsers (among them simple line-based ones)
/// stop a label set at the first `}`; the colon form reads the same to a person and to all of
/// them.
fn route_label(template: &str) -> String {
    template
        .chars()
        .filter_map(|c| match c {
            '{' => Some(':'),
            '}' => None,
            c => Some(c),
        })
        .collect()
}

/// Reads the installed [`Source`] at scrape time.
#[derive(Debug)]
struct SourceCollector(Arc<OnceLock<Arc<dyn Source>>>);

impl Collector for SourceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(source) = self.0.get() else {
            return Ok(());
        };
        source.sample().encode(&mut encoder)
    }
}

/// Encodes one unlabelled counter.
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Encodes one unlabelled gauge.
fn gauge<N>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: N) -> fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Encodes a counter with one label, one series per `(value, count)`.
fn labelled_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    key: &'static str,
    series: &[(&'static str, u64)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (value, count) in series {
        let labels = [(key, *value)];
        ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
