use std::sync::Arc;

use coffer_core::Coffer;

use crate::limiter::AuthLimiter;
use crate::replication::Replication;

/// Shared by every handler. Configuration and keys live here, never in globals.
#[derive(Debug, Clone)]
pub struct AppState {
    pub coffer: Arc<Coffer>,
    pub auth_limiter: Arc<AuthLimiter>,
    /// The replication API (`/replication/v1`): on the control plane and on relays; `None`
    /// elsewhere (its routes answer 404).
    pub replication: Option<Arc<Replication>>,
}

impl AppState {
    pub fn new(coffer: Arc<Coffer>, replication: Option<Arc<Replication>>) -> AppState {
        AppState {
            coffer,
            auth_limiter: Arc::default(),
            replication,
        }
    }
}
