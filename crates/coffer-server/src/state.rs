use std::sync::Arc;

use coffer_core::Coffer;

use crate::limiter::AuthLimiter;

/// Shared by every handler. Configuration and keys live here, never in globals.
#[derive(Debug, Clone)]
pub struct AppState {
    pub coffer: Arc<Coffer>,
    pub auth_limiter: Arc<AuthLimiter>,
}
