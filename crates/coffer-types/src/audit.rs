//! The audit log's words: what an entry says was done (`AuditAction`), how it ended
//! (`AuditOutcome`) and what it was done to (`TargetKind`). They are a stored, user-visible
//! format (`coffer audit list`, the API's audit log, SIEM filters), so each variant's word is
//! fixed here once and a test pins them all; code names the variants, never the strings.

vocabulary! {
    /// What an audit entry says was done.
    AuditAction {
        Create = "create",
        Update = "update",
        Delete = "delete",
        Revoke = "revoke",
        /// Reading one resource's metadata (recorded when refused).
        Read = "read",
        /// Listing resources (recorded when refused).
        List = "list",
        Bind = "bind",
        Unbind = "unbind",
        /// An account's KEK set or changed.
        SetKek = "set_kek",
        /// A KEK rotation started.
        KekRotate = "kek_rotate",
        /// A KEK version retired by the rotation job.
        KekRetire = "kek_retire",
        /// Runtime reads of a bound secret, aggregated over an interval.
        Access = "access",
        /// An authentication attempt (recorded when it fails).
        Login = "login",
        /// An edge registering its node key or a node account key.
        RegisterKey = "register_key",
        /// A token or replication key replaced by a new one.
        Rotate = "rotate",
        /// An account's own replication key rotated (a node revocation owed it).
        RotateReplicationKey = "rotate_replication_key",
        /// Reading the audit log (recorded when refused).
        ReadAudit = "read_audit",
        /// Reading the verification of the audit chain.
        VerifyAudit = "verify_audit",
        /// Reading an account's KEK status (recorded when refused).
        KekStatus = "kek_status",
    }
}

vocabulary! {
    /// How an audited act ended.
    AuditOutcome {
        Success = "success",
        /// Refused by policy (a missing permission, outside the operator's reach, a binding
        /// the reading service does not hold).
        Denied = "denied",
        /// Attempted and failed (a key registration refused, a rotation that could not be made).
        Failure = "failure",
        /// Refused by the failed-authentication limit before being checked.
        RateLimited = "rate_limited",
        /// Reads not recorded one by one: the interval saw too many distinct keys.
        Unrecorded = "unrecorded",
    }
}

vocabulary! {
    /// What an audit entry is about (its target's `type`).
    TargetKind {
        Instance = "instance",
        Account = "account",
        Store = "store",
        Secret = "secret",
        Token = "token",
        Service = "service",
        ServiceToken = "service_token",
        /// A service's binding whose secret could not be named (a read refused before it).
        Binding = "binding",
        Node = "node",
        Kek = "kek",
        AccountReplicationKey = "account_replication_key",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored words: changing one would split every log that holds the old word from
    /// every filter and report that looks for it.
    #[test]
    fn the_stored_words_are_these() {
        let words = |all: &[&'static str]| all.join(" ");
        assert_eq!(
            words(
                &AuditAction::ALL
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
            ),
            "create update delete revoke read list bind unbind set_kek kek_rotate kek_retire access \
             login register_key rotate rotate_replication_key read_audit verify_audit kek_status"
        );
        assert_eq!(
            words(
                &AuditOutcome::ALL
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
            ),
            "success denied failure rate_limited unrecorded"
        );
        assert_eq!(
            words(
                &TargetKind::ALL
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
            ),
            "instance account store secret token service service_token binding node kek \
             account_replication_key"
        );
    }

    #[test]
    fn each_word_parses_back_to_its_variant_and_nothing_else_parses() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::parse(a.as_str()), Some(*a));
        }
        for o in AuditOutcome::ALL {
            assert_eq!(AuditOutcome::parse(o.as_str()), Some(*o));
        }
        for k in TargetKind::ALL {
            assert_eq!(TargetKind::parse(k.as_str()), Some(*k));
        }
        for bad in ["", "Create", "create ", "succes", "secrets"] {
            assert_eq!(AuditAction::parse(bad), None);
            assert_eq!(AuditOutcome::parse(bad), None);
            assert_eq!(TargetKind::parse(bad), None);
        }
    }
}
