use std::ops::Deref;
use std::sync::Arc;

use coffer_core::Coffer;

use crate::limiter::AuthLimiter;
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
    /// The replication API (`/replication/v1`): on the control plane and on relays; `None`
    /// elsewhere (its routes answer 404).
    pub replication: Option<Arc<Replication>>,
}

impl AppState {
    pub fn new(coffer: Arc<Coffer>, replication: Option<Arc<Replication>>) -> AppState {
        AppState(Arc::new(Shared {
            coffer,
            auth_limiter: AuthLimiter::default(),
            replication,
        }))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
