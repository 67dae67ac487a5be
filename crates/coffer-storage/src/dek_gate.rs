//! The DEK gate in storage: what keeps writes of *other processes* from starving a node's
//! revocation (see [`crate::Storage::close_dek_gate`]; core's `keyring/gate.rs` is the same
//! exclusion within one process).

use async_trait::async_trait;

use crate::Result;

/// What keeps the gate closed in a backend shared by several processes (PostgreSQL: the
/// connection whose transaction holds the lock), inside a [`DekGateHold`].
#[async_trait]
pub trait HeldGate: Send + Sync + 'static {
    /// `Ok` if the hold is still in force (and keeps it so for the backend's hold idle time
    /// from now); `Unavailable` if it was lost (its session ended).
    async fn check(&self) -> Result<()>;
}

/// A node revocation's hold on the DEK gate in storage, from [`crate::Storage::close_dek_gate`].
/// While it is alive, a write of another process that would insert a DEK is refused
/// (`Conflict`); dropping it releases the gate. A backend also releases it when the process
/// holding it dies, or sits idle (no [`DekGateHold::check`]) past the backend's hold idle
/// time, so a hold is never left behind.
#[must_use = "the gate is open again as soon as the hold is dropped"]
pub struct DekGateHold {
    /// `None` for a backend one process alone writes to.
    inner: Option<Box<dyn HeldGate>>,
}

impl DekGateHold {
    /// The hold of a backend that one process alone writes to (SQLite): that process's own
    /// in-memory gate already keeps its writes out, so nothing is held in storage.
    pub fn not_in_storage() -> DekGateHold {
        DekGateHold { inner: None }
    }

    /// A hold kept by `inner` until it is dropped.
    pub fn new(inner: impl HeldGate) -> DekGateHold {
        DekGateHold {
            inner: Some(Box::new(inner)),
        }
    }

    /// Called right before the revocation's commit: `Ok` if the hold is still in force (and
    /// stays so for the backend's hold idle time, which is longer than a commit can take),
    /// `Unavailable` if the backend lost it; the revocation then fails rather than commit a
    /// listing the gate no longer protects.
    pub async fn check(&self) -> Result<()> {
        match &self.inner {
            Some(inner) => inner.check().await,
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for DekGateHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DekGateHold")
            .field("in_storage", &self.inner.is_some())
            .finish()
    }
}
