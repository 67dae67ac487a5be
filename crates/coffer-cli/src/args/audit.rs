//! The values `coffer audit list --action` and `--outcome` take: those the audit log records,
//! as it writes them (anything else is refused, listing them).

use clap::ValueEnum;

/// The actions the audit log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum AuditActionArg {
    /// A bound service's runtime reads
    Access,
    /// A deploy adding or changing a binding
    Bind,
    Create,
    Delete,
    List,
    /// An authentication (recorded when refused)
    Login,
    Read,
    /// Reading the audit log (recorded when refused)
    ReadAudit,
    Revoke,
    /// A deploy removing a binding
    Unbind,
    Update,
    /// Verifying the audit log (recorded when refused)
    VerifyAudit,
}

impl AuditActionArg {
    /// The action as the server records it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditActionArg::Access => "access",
            AuditActionArg::Bind => "bind",
            AuditActionArg::Create => "create",
            AuditActionArg::Delete => "delete",
            AuditActionArg::List => "list",
            AuditActionArg::Login => "login",
            AuditActionArg::Read => "read",
            AuditActionArg::ReadAudit => "read_audit",
            AuditActionArg::Revoke => "revoke",
            AuditActionArg::Unbind => "unbind",
            AuditActionArg::Update => "update",
            AuditActionArg::VerifyAudit => "verify_audit",
        }
    }
}

/// The outcomes the audit log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum AuditOutcomeArg {
    Success,
    Denied,
    /// An address refused for too many failed authentications
    RateLimited,
}

impl AuditOutcomeArg {
    /// The outcome as the server records it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcomeArg::Success => "success",
            AuditOutcomeArg::Denied => "denied",
            AuditOutcomeArg::RateLimited => "rate_limited",
        }
    }
}
