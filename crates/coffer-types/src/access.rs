//! What became of runtime reads, as access events count them: the edge that served the reads
//! and the control plane that records them in the audit log share these words (core aggregates
//! and records them; `coffer_api::replication` carries them between the two).

use crate::audit::AuditOutcome;
use crate::{AccountId, SecretId, ServiceId, StoreId, Timestamp, TokenId};

vocabulary! {
    /// Why a runtime read was refused, as access events record it (the audit entry's `reason`,
    /// and on the wire).
    AccessRefusal {
        /// The service has no binding of that name.
        NoSuchBinding = "no such binding",
        /// The bound secret does not exist (any more).
        SecretNotFound = "secret not found",
        /// The secret does not carry the scope the service's type needs.
        ScopeMissing = "secret lacks the service's scope",
    }
}

/// What became of the reads an [`AccessEvent`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessOutcome {
    Served,
    Refused(AccessRefusal),
    /// Reads of the account not aggregated because the interval saw too many distinct keys.
    Unrecorded,
}

impl AccessOutcome {
    /// How the audit log (and an access batch on the wire) says the reads ended: `success`,
    /// `denied` (the reason apart) or `unrecorded`.
    pub fn audit_outcome(self) -> AuditOutcome {
        match self {
            AccessOutcome::Served => AuditOutcome::Success,
            AccessOutcome::Refused(_) => AuditOutcome::Denied,
            AccessOutcome::Unrecorded => AuditOutcome::Unrecorded,
        }
    }
}

/// Runtime reads aggregated over an interval per (token, binding, secret, outcome): ids and
/// names only, never a value or a token. The control plane writes them to the audit log
/// itself; an edge hands them upstream (core's `Coffer::take_access_events` and
/// `Coffer::record_edge_access`; on the wire, `coffer_api::replication::AccessBatch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEvent {
    pub account: AccountId,
    /// `None` only for [`AccessOutcome::Unrecorded`].
    pub service: Option<ServiceId>,
    pub service_name: String,
    pub token: Option<TokenId>,
    /// As the service asked for it (empty when not recorded per name).
    pub binding: String,
    pub store: Option<StoreId>,
    pub secret: Option<SecretId>,
    pub secret_name: String,
    pub outcome: AccessOutcome,
    pub reads: u64,
    pub first: Timestamp,
    pub last: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored words of a refusal (an audit entry's `reason`, and an access batch's).
    #[test]
    fn the_stored_reasons_are_these() {
        let words: Vec<&str> = AccessRefusal::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            words,
            [
                "no such binding",
                "secret not found",
                "secret lacks the service's scope"
            ]
        );
        for r in AccessRefusal::ALL {
            assert_eq!(AccessRefusal::parse(r.as_str()), Some(*r));
        }
        assert_eq!(AccessRefusal::parse("No such binding"), None);
    }
}
