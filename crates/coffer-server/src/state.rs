use std::ops::Deref;
use std::sync::Arc;

use coffer_core::Coffer;
use coffer_metrics::Metrics;

use crate::client_addr::TrustedProxies;
use crate::limiter::AuthLimiter;
use crate::rate::{ReadLimiter, RuntimeRate};
use crate::replication::Replication;

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
    /// What batch reads may hold in memory at once ([`crate::runtime::BATCH_BUDGET`], in KiB).
    pub batch_budget: Arc<tokio::sync::Semaphore>,
    /// The runtime API's per-service-token rate limit, if one is set.
    pub(crate) read_limiter: Option<ReadLimiter>,
    /// Where requests, refusals and limits are counted, when `--metrics-listen` is given.
    pub metrics: Option<Arc<Metrics>>,
}

impl AppState {
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
            batch_budget: Arc::new(tokio::sync::Semaphore::new(
                crate::runtime::BATCH_BUDGET_KIB,
            )),
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
