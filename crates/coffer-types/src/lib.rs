//! Vocabulary shared by every Coffer crate: typed identifiers, validated names, scopes,
//! timestamps, the audit log's words and what became of runtime reads. Everything here is
//! parsed at the edge of the system, so that a store id can never be passed where a secret id
//! is expected and an invalid name never reaches storage.
//!
//! This crate has no crypto and no I/O. Random ids are made by the caller (core, which owns the
//! random number generator) through [`AccountId::from_bytes`] and friends.

#[macro_use]
mod vocabulary;
mod access;
mod audit;
mod id;
mod name;
mod scope;
mod timestamp;

pub use access::{AccessEvent, AccessOutcome, AccessRefusal};
pub use audit::{AuditAction, AuditOutcome, TargetKind};
pub use id::{AccountId, DekId, IdError, SecretId, ServiceId, StoreId, TokenId};
pub use name::{
    BindingName, BindingNameError, NAME_MAX_LEN, NODE_NAME_MAX_LEN, NameError, NameKind, NodeName,
    NodeNameError, RESERVED_BINDING_NAMES, RESERVED_BINDING_PREFIXES, RESERVED_BINDING_SUFFIXES,
    SERVICE_NAME_MAX_LEN, SecretName, ServiceName, StoreName,
};
pub use scope::{Scope, ScopeError, Scopes};
pub use timestamp::Timestamp;

/// The number of a secret's value version. Version 1 is the value given at creation; every
/// change of value adds one. Versions are immutable once written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32);

impl Version {
    pub const FIRST: Version = Version(1);

    /// The version after this one, or `None` past `u32::MAX` (a secret updated four billion
    /// times is refused rather than wrapped).
    pub fn next(self) -> Option<Version> {
        self.0.checked_add(1).map(Version)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
