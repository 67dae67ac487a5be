//! Records of the DEK lifecycle: values to re-seal onto an account's current DEK, the
//! compare-and-set that re-seals them, and DEKs destroyed once nothing references them.
//!
//! The to-do list of the re-seal job is a query ("values of the account under another DEK"),
//! so the job keeps no cursor: whatever it did is stored, and a restart finds what is left.

use std::time::Duration;

use coffer_types::{AccountId, DekId, SecretId, StoreId, Version};

/// The default least time between two compactions of a change log past destroyed DEKs: the
/// control plane's lifecycle job (`coffer_core::ResealSettings::DEFAULT_COMPACTION_GAP`) and a
/// relay (coffer-edge) both keep to it, so an honest upstream sends the followers below it
/// back to a snapshot no more often; a follower (coffer-replication) credits a slow snapshot's
/// streaming time at most once per upstream per this gap. One constant, so they cannot drift.
pub const DEFAULT_COMPACTION_GAP: Duration = Duration::from_secs(600);

/// One stored value version, as [`crate::Storage::values_sealed_before`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedValue {
    pub account_id: AccountId,
    pub store_id: StoreId,
    pub secret_id: SecretId,
    pub version: Version,
    pub dek_id: DekId,
    pub sealed: Vec<u8>,
}

/// A value's new sealed form. Applied only if the row still holds `old`'s DEK and sealed bytes,
/// so a concurrent write (a new version, a deletion) always wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reseal {
    pub old: SealedValue,
    pub dek_id: DekId,
    pub sealed: Vec<u8>,
}

/// A DEK [`crate::Storage::destroy_unreferenced_deks`] destroyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestroyedDek {
    pub account_id: AccountId,
    pub dek_id: DekId,
}
