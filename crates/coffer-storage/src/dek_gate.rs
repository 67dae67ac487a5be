//! The DEK gate in storage: what keeps writes of *other processes* from starving a node's
//! revocation (see [`crate::Storage::close_dek_gate`]; core's `keyring/gate.rs` is the same
//! exclusion within one process).

use std::any::Any;

/// A node revocation's hold on the DEK gate in storage, from [`crate::Storage::close_dek_gate`].
/// While it is alive, a write of another process that would insert a DEK is refused
/// (`Conflict`); dropping it releases the gate (a backend releases it too when the process
/// holding it dies or stops answering, so a hold is never left behind).
#[must_use = "the gate is open again as soon as the hold is dropped"]
pub struct DekGateHold {
    /// What keeps the gate closed in the backend (PostgreSQL: the connection holding the lock);
    /// `None` for a backend used by one process only.
    _inner: Option<Box<dyn Any + Send + Sync>>,
}

impl DekGateHold {
    /// The hold of a backend that one process alone writes to (SQLite): that process's own
    /// gate already keeps its writes out, so there is nothing to hold in storage.
    pub fn in_process() -> DekGateHold {
        DekGateHold { _inner: None }
    }

    /// A hold whose `inner` keeps the gate closed until it is dropped.
    pub fn new(inner: impl Any + Send + Sync) -> DekGateHold {
        DekGateHold {
            _inner: Some(Box::new(inner)),
        }
    }
}

impl std::fmt::Debug for DekGateHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DekGateHold")
            .field("in_storage", &self._inner.is_some())
            .finish()
    }
}
