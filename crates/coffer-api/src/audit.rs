//! The audit log (`/client/v4/accounts/{account_id}/audit_logs`).

use serde::{Deserialize, Serialize};

/// One audit entry: its place in the account's chain (`seq`, `hash`) and the recorded event
/// (time, actor, action, outcome, resource, request id, client, and action-specific facts such
/// as `value_modified` or `duplicated_from_id`). Never a value, never a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditLogEntry {
    pub seq: u64,
    /// SHA-256 chaining this entry to the previous one, hex.
    pub hash: String,
    #[serde(flatten)]
    pub event: serde_json::Map<String, serde_json::Value>,
}

/// The result of `GET .../audit_logs/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    /// True when the chain and every signed checkpoint check out.
    pub ok: bool,
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    /// The last entry's sequence number and hash: record them elsewhere to detect a later
    /// truncation of the log.
    pub head_seq: Option<u64>,
    pub head_hash: Option<String>,
    /// The first problem found.
    pub first_bad: Option<AuditProblem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditProblem {
    pub seq: u64,
    pub problem: String,
}
