//! Records of KEK rotation: which stored keys each KEK wraps, and rewrapping them in place.
//!
//! Rewrapping replaces a key's wrapped bytes (and the id of the KEK that wrapped them) without
//! touching what the key seals: values stay as they are. It is local to the node that holds the
//! KEK: nothing is appended to the change log.

use coffer_types::AccountId;

use crate::WrappedKeyRecord;

/// Whose key a wrapped key is: an account's DEK, or an instance key (by purpose).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOwner {
    Account(AccountId),
    Instance(String),
}

/// A stored wrapped key, as [`crate::Storage::keys_wrapped_by`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKey {
    pub owner: KeyOwner,
    pub key: WrappedKeyRecord,
}

/// How many stored keys one KEK wraps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KekUsage {
    pub kek_id: String,
    pub deks: u64,
    pub instance_keys: u64,
}

/// One key's new wrapped form. Applied only if the stored key still holds `old` (its KEK id and
/// wrapped bytes as read), so a concurrent change is never overwritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrap {
    /// The key as it was read.
    pub old: StoredKey,
    pub new_kek_id: String,
    pub new_wrapped: Vec<u8>,
}
