use std::ops::Deref;
use std::sync::Arc;

use coffer_core::Coffer;
use coffer_metrics::Metrics;

use crate::client_addr::TrustedProxies;
use crate::error::ApiError;
use crate::limiter::AuthLimiter;
use crate::rate::{ReadLimiter, RuntimeRate};
use crate::replication::Replication;

/// Bytes of batch reads (`GET /runtime/v1/bindings`: the values read and the JSON body made of
/// them) held at once at most, per process, until they are sent; a batch read past it is
/// answered 503 with `Retry-After` until earlier ones are sent. A slow reader holds its body's
/// share until it has read it, so many concurrent or slow batch reads cost this much memory,
/// not one body each. One batch is at most 256 values of 64 KiB and their JSON (over 6 times
/// that if every byte is a control character); a batch larger than the whole budget takes all
/// of it, so it is served when nothing else is.
pub const BATCH_BUDGET: usize = 64 << 20;

/// [`BATCH_BUDGET`] in the unit its semaphore counts (KiB).
pub(crate) const BATCH_BUDGET_KIB: usize = BATCH_BUDGET >> 10;

/// Shared by every handler. Configuration and keys live here, never in globals.
///
/// One `Arc`: axum clones the state into every request's handler and extractors, and each
/// clone and drop is an atomic operation on a counter every worker thread shares, so the state
/// costs one such counter rather than one per field.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Shared {
    pub coffer: Arc<Coffer>,
    pub auth_limiter: AuthLimiter,
    /// Whose client-address header is believed (none by default).
    pub trusted_proxies: TrustedProxies,
    /// The replication API (`/replication/v1`): on the control plane and on relays; `None`
    /// elsewhere (its routes answer 404).
    pub replication: Option<Arc<Replication>>,
    /// What batch reads may hold in memory at once ([`BATCH_BUDGET`], in KiB).
    pub batch_budget: Arc<tokio::sync::Semaphore>,
    /// The runtime API's per-service-token rate limit, if one is set.
    pub(crate) read_limiter: Option<ReadLimiter>,
    /// Where requests, refusals and limits are counted, when `--metrics-listen` is given.
    pub metrics: Option<Arc<Metrics>>,
}

impl AppState {
    /// The replication side, for the replication API's handlers: a 404 where there is none (an
    /// edge that does not relay), as for any route it does not serve.
    pub(crate) fn replication(&self) -> Result<&Arc<Replication>, ApiError> {
        self.replication
            .as_ref()
            .ok_or_else(|| ApiError::new(coffer_api::ErrorCode::RouteNotFound, "no such route"))
    }

    pub fn new(
        coffer: Arc<Coffer>,
        replication: Option<Arc<Replication>>,
        trusted_proxies: TrustedProxies,
        runtime_rate: Option<RuntimeRate>,
    ) -> AppState {
        AppState::with_metrics(coffer, replication, trusted_proxies, runtime_rate, None)
    }

    /// [`AppState::new`], counting into `metrics`.
    pub fn with_metrics(
        coffer: Arc<Coffer>,
        replication: Option<Arc<Replication>>,
        trusted_proxies: TrustedProxies,
        runtime_rate: Option<RuntimeRate>,
        metrics: Option<Arc<Metrics>>,
    ) -> AppState {
        AppState(Arc::new(Shared {
            coffer,
            auth_limiter: AuthLimiter::default(),
            trusted_proxies,
            replication,
            batch_budget: Arc::new(tokio::sync::Semaphore::new(BATCH_BUDGET_KIB)),
            read_limiter: runtime_rate.map(ReadLimiter::new),
            metrics,
        }))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
