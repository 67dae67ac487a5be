//! The values `coffer audit list --action` and `--outcome` take: those the audit log records,
//! as it writes them (anything else is refused, listing them).

use clap::{Args, Subcommand, ValueEnum};

use super::{DirectionArg, PageArgs};

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

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List the account's audit entries, newest first: who did what, to what, with what outcome
    #[command(
        after_help = "Examples:\n  coffer audit list --action delete --from 2025-01-01T00:00:00Z\n  \
                      coffer audit list --outcome denied --direction asc --per-page 100"
    )]
    List(AuditListArgs),
    /// Check the audit log's hash chain and signed checkpoints; exit status 1 if tampered with
    #[command(after_help = AUDIT_VERIFY_AFTER_HELP)]
    Verify,
}

const AUDIT_VERIFY_AFTER_HELP: &str = "\
Prints the number of entries and checkpoints checked and the head of the chain (its last entry's
number and hash). Record the head elsewhere: deleting the newest entries is only visible against
a head recorded before. If the log was tampered with, says which entry on standard error and exits
with status 1 (also with --json, which prints the verification result first).";

const RFC3339_VALUE_NAME: &str = "RFC3339";

#[derive(Debug, Args)]
pub struct AuditListArgs {
    /// Only entries at or after this date-time, e.g. 2025-01-31T00:00:00Z
    // Taken as text and checked by `filter()`, so that a bad value is a one-line usage error.
    #[arg(long, value_name = RFC3339_VALUE_NAME)]
    pub from: Option<String>,

    /// Only entries at or before this date-time
    #[arg(long, value_name = RFC3339_VALUE_NAME)]
    pub to: Option<String>,

    /// Only entries of this actor: an API token of the account, by id, or by name if no other
    /// token, revoked or not, has that name (a service's reads: one of its tokens' ids)
    #[arg(long, value_name = "TOKEN")]
    pub actor: Option<String>,

    /// Only entries of this action (a duplicate is logged as a create)
    #[arg(long, value_enum, value_name = "ACTION")]
    pub action: Option<AuditActionArg>,

    /// Only entries with this outcome
    #[arg(long, value_enum, value_name = "OUTCOME")]
    pub outcome: Option<AuditOutcomeArg>,

    /// Only entries about this store (and its secrets), by name or id
    #[arg(long, value_name = "STORE")]
    pub store_id: Option<String>,

    /// Only entries about this secret: its id, or its name with --store-id
    #[arg(long, value_name = "SECRET")]
    pub secret_id: Option<String>,

    #[command(flatten)]
    pub page: PageArgs,

    /// Sort direction (default desc: newest first)
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
}

impl AuditListArgs {
    /// `--from` and `--to` after checking that they are RFC 3339 date-times; otherwise a
    /// one-line message naming the flag.
    pub fn time_range(&self) -> Result<(Option<String>, Option<String>), String> {
        let check = |flag: &str, given: &Option<String>| match given {
            Some(t) if coffer_types::Timestamp::parse_rfc3339(t).is_none() => Err(format!(
                "invalid value {t:?} for --{flag} <{RFC3339_VALUE_NAME}>: expected an RFC 3339 \
                 date-time, e.g. 2025-01-31T00:00:00Z"
            )),
            other => Ok(other.clone()),
        };
        Ok((check("from", &self.from)?, check("to", &self.to)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use crate::args::tests::parse;

    #[test]
    fn audit_list_takes_filters_and_checks_dates() {
        let list = |args: &[&str]| match parse(args).unwrap().command {
            Command::Audit {
                command: AuditCommand::List(l),
                conn,
            } => (l, conn.json),
            other => panic!("{other:?}"),
        };
        let (l, json) = list(&[
            "audit",
            "list",
            "--from",
            "2025-01-01T00:00:00+02:00",
            "--to",
            "2025-01-02T00:00:00Z",
            "--actor",
            "t",
            "--action",
            "create",
            "--outcome",
            "denied",
            "--store-id",
            "s",
            "--secret-id",
            "x",
            "--page",
            "2",
            "--per-page",
            "5",
            "--direction",
            "asc",
            "--json",
        ]);
        assert!(json);
        assert_eq!(
            l.time_range(),
            Ok((
                Some("2025-01-01T00:00:00+02:00".to_owned()),
                Some("2025-01-02T00:00:00Z".to_owned())
            ))
        );
        assert_eq!(
            (
                l.actor.as_deref(),
                l.action.map(AuditActionArg::as_str),
                l.outcome.map(AuditOutcomeArg::as_str)
            ),
            (Some("t"), Some("create"), Some("denied"))
        );
        assert_eq!(
            (l.store_id.as_deref(), l.secret_id.as_deref()),
            (Some("s"), Some("x"))
        );
        assert_eq!((l.page.page, l.page.per_page), (Some(2), Some(5)));
        assert_eq!(l.direction, Some(DirectionArg::Asc));

        let (l, json) = list(&["audit", "list"]);
        assert!(!json);
        assert_eq!(l.time_range(), Ok((None, None)));
        assert_eq!(l.direction, None);

        for (flag, bad) in [
            ("--from", "yesterday"),
            ("--to", "2025-01-01"),
            ("--from", "2025-13-01T00:00:00Z"),
        ] {
            let (l, _) = list(&["audit", "list", flag, bad]);
            let err = l.time_range().unwrap_err();
            assert!(err.contains(flag), "{err}");
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        assert!(parse(&["audit", "list", "--direction", "up"]).is_err());
        // Actions and outcomes are the ones the log records, as it writes them.
        let (l, _) = list(&[
            "audit",
            "list",
            "--action",
            "read_audit",
            "--outcome",
            "rate_limited",
        ]);
        assert_eq!(l.action.map(AuditActionArg::as_str), Some("read_audit"));
        assert_eq!(l.outcome.map(AuditOutcomeArg::as_str), Some("rate_limited"));
        for action in AuditActionArg::value_variants() {
            let (l, _) = list(&["audit", "list", "--action", action.as_str()]);
            assert_eq!(l.action, Some(*action));
        }
        let err = parse(&["audit", "list", "--action", "bogus"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.contains(
                "[possible values: access, bind, create, delete, list, login, read, read_audit, \
                 revoke, unbind, update, verify_audit]"
            ),
            "{text}"
        );
        assert!(parse(&["audit", "list", "--outcome", "fine"]).is_err());
        assert!(parse(&["audit", "list", "--page", "0"]).is_err());
        assert!(matches!(
            parse(&["audit", "verify", "--json"]).unwrap().command,
            Command::Audit {
                command: AuditCommand::Verify,
                conn
            } if conn.json
        ));
        assert!(parse(&["audit", "verify", "x"]).is_err());
        assert!(parse(&["audit"]).is_err());
    }
}
