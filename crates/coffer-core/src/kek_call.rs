//! What every caller of a KEK shares: the blocking pool its calls run on, and the purpose a
//! DEK is wrapped under. A leaf, so that the keyring, the KEK rotation and account KEKs (which
//! the keyring asks which KEK wraps an account) can each use them without importing the others.

use crate::CoreError;

/// The purpose in a DEK's wrapping context ([`coffer_crypto::DekContext`]).
pub(crate) const DEK_PURPOSE: &str = "dek";

/// A KEK call on the blocking pool. A provider that panicked is a bug (`Internal`); a task that
/// never ran means the runtime is shutting down (`Unavailable`).
pub(crate) async fn on_blocking_pool<T, F>(call: F) -> Result<T, CoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, CoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(call).await.map_err(|e| {
        if e.is_panic() {
            CoreError::Internal("the KEK provider panicked".into())
        } else {
            CoreError::Unavailable(format!("KEK call did not run: {e}"))
        }
    })?
}
