//! `coffer quota [set]` and `coffer account ...`

use clap::{Args, Subcommand};

use super::one_of;

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set the account's secrets quota, or return it to the server default (instance operator
    /// token only)
    #[command(after_help = "Examples:\n  coffer quota set 500\n  coffer quota set default")]
    Set(QuotaSetArgs),
}

#[derive(Debug, Args)]
pub struct QuotaSetArgs {
    /// A whole number of secrets, or `default` for the server's default quota
    // Taken as text (hyphens included, so that `-1` is not mistaken for a flag) and checked by
    // `quota()`, so that a bad value is a one-line usage error rather than clap's report.
    #[arg(value_name = QUOTA_VALUE_NAME, allow_hyphen_values = true)]
    pub quota: String,
}

const QUOTA_VALUE_NAME: &str = "N|default";

impl QuotaSetArgs {
    /// `Some(n)` for a whole number, `None` for `default`; otherwise a one-line message naming
    /// the argument.
    pub fn quota(&self) -> Result<Option<u64>, String> {
        let given = self.quota.as_str();
        if given == "default" {
            return Ok(None);
        }
        let bad = |why: &str| format!("invalid value {given:?} for <{QUOTA_VALUE_NAME}>: {why}");
        // Digits only: no sign, no spaces, no `1e3` or `1_000` (`u64::from_str` would take `+5`).
        if given.is_empty() || !given.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(
                "expected a whole number of secrets, or `default` for the server default",
            ));
        }
        given
            .parse::<u64>()
            .map(Some)
            .map_err(|_| bad("the number is too large"))
    }
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Show the account (--account-id): id, name, creation time and its own secrets quota
    Get,
    /// Create an account (instance operator token only; --account-id is not needed)
    #[command(after_help = ACCOUNT_CREATE_AFTER_HELP)]
    Create(AccountCreateArgs),
    /// List the instance's accounts (instance operator token; any other token sees its own)
    List,
    /// Delete an account with all its stores, secrets and tokens (instance operator token only);
    /// an account KEK Coffer made for it (`--kek file`, `--kek pkcs11`) is destroyed with it
    Delete(AccountDeleteArgs),
    /// Give an account a KEK of its own, which alone wraps its DEKs from then on (instance
    /// operator token only)
    #[command(name = "set-kek", after_help = ACCOUNT_SET_KEK_AFTER_HELP)]
    SetKek(AccountSetKekArgs),
    /// Show which KEK wraps an account's DEKs: its own or the instance's (instance operator
    /// token only)
    Kek(AccountKekArgs),
}

const ACCOUNT_SET_KEK_AFTER_HELP: &str = "\
Examples:
  coffer account set-kek team-b --kek file
  coffer account set-kek team-b --kek file:/etc/coffer/team-b.key
  coffer account set-kek team-b --kek pkcs11
  coffer account set-kek team-b --kek 'pkcs11:token=coffer;object=team-b-kek'

`pkcs11` generates an AES-256 key in the instance KEK's token (the instance KEK must be in a
PKCS#11 token); `pkcs11:URI` takes an existing AES-256 key object of that same token
(module-path may be left out). Deleting the account destroys a key Coffer made (`--kek file`,
`--kek pkcs11`); one given as file:PATH or pkcs11:URI is left in place, for the operator to
destroy. Removing the key makes the account's values unreadable on the control plane (503
account_kek_unavailable), and nothing else.";

#[derive(Debug, Args)]
pub struct AccountSetKekArgs {
    /// The name or id of the account (not --account-id)
    #[arg(value_name = "ACCOUNT")]
    pub id: String,
    /// `file` (Coffer makes a key file in the data dir), `file:/path` (an existing 32-byte key
    /// file, mode 0600, outside the data dir), `pkcs11` (Coffer generates a key in the instance
    /// KEK's token), `pkcs11:URI` (an existing AES-256 key object in that token)
    #[arg(long, value_name = "file|file:PATH|pkcs11|pkcs11:URI")]
    pub kek: String,
}

#[derive(Debug, Args)]
pub struct AccountKekArgs {
    /// The name or id of the account (not --account-id)
    #[arg(value_name = "ACCOUNT")]
    pub id: String,
}

const ACCOUNT_CREATE_AFTER_HELP: &str = "\
Then create the account's first super_admin token, as the operator:
  COFFER_ACCOUNT_ID=<new account id> coffer token create admin --role super_admin";

#[derive(Debug, Args)]
#[group(id = "account_name", required = true, multiple = false)]
pub struct AccountCreateArgs {
    /// The account's name (same as --name)
    #[arg(value_name = "NAME")]
    name_pos: Option<String>,

    /// The account's name: 1 to 255 bytes, no control characters
    #[arg(long = "name", value_name = "NAME")]
    name: Option<String>,
}

impl AccountCreateArgs {
    pub fn name(&self) -> &str {
        one_of(&self.name, &self.name_pos)
    }
}

#[derive(Debug, Args)]
pub struct AccountDeleteArgs {
    /// The name or id of the account to delete (not --account-id)
    #[arg(value_name = "ACCOUNT")]
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use crate::args::tests::parse;

    #[test]
    fn quota_alone_still_shows_and_set_takes_a_number_or_default() {
        match parse(&["quota", "--json"]).unwrap().command {
            Command::Quota {
                conn,
                command: None,
            } => assert!(conn.json),
            other => panic!("{other:?}"),
        }
        let set = |args: &[&str]| match parse(args).unwrap().command {
            Command::Quota {
                conn,
                command: Some(QuotaCommand::Set(s)),
            } => (s.quota(), conn.json),
            other => panic!("{other:?}"),
        };
        assert_eq!(set(&["quota", "set", "3"]), (Ok(Some(3)), false));
        assert_eq!(set(&["quota", "set", "0", "--json"]), (Ok(Some(0)), true));
        assert_eq!(
            set(&["quota", "--json", "set", "default"]),
            (Ok(None), true)
        );
        assert_eq!(
            set(&["quota", "set", "18446744073709551615"]).0,
            Ok(Some(u64::MAX))
        );
        // Bad values reach the command (which reports them in one line), `-1` included.
        for bad in ["-1", "lots", "", "+3", " 3", "3.0", "1e3", "Default", "-"] {
            let err = set(&["quota", "set", bad]).0.unwrap_err();
            assert!(err.contains("<N|default>"), "{bad:?}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let err = set(&["quota", "set", "18446744073709551616"])
            .0
            .unwrap_err();
        assert!(err.ends_with("the number is too large"), "{err}");
        assert!(parse(&["quota", "set"]).is_err());
        assert!(parse(&["quota", "set", "1", "2"]).is_err());
    }

    #[test]
    fn account_get_takes_no_argument() {
        assert!(matches!(
            parse(&["account", "get", "--json"]).unwrap().command,
            Command::Account {
                command: AccountCommand::Get,
                conn
            } if conn.json
        ));
        assert!(parse(&["account"]).is_err());
        assert!(parse(&["account", "get", "x"]).is_err());
    }

    #[test]
    fn account_admin_commands_take_a_name_or_an_id() {
        for args in [
            &["account", "create", "team-b"][..],
            &["account", "create", "--name", "team-b", "--json"],
        ] {
            match parse(args).unwrap().command {
                Command::Account {
                    command: AccountCommand::Create(c),
                    ..
                } => assert_eq!(c.name(), "team-b"),
                other => panic!("{other:?}"),
            }
        }
        assert!(parse(&["account", "create"]).is_err());
        assert!(parse(&["account", "create", "a", "--name", "b"]).is_err());
        assert!(matches!(
            parse(&["account", "list", "--json"]).unwrap().command,
            Command::Account {
                command: AccountCommand::List,
                conn
            } if conn.json
        ));
        match parse(&["account", "delete", "abc"]).unwrap().command {
            Command::Account {
                command: AccountCommand::Delete(d),
                ..
            } => assert_eq!(d.id, "abc"),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["account", "delete"]).is_err());
        match parse(&["account", "set-kek", "abc", "--kek", "file"])
            .unwrap()
            .command
        {
            Command::Account {
                command: AccountCommand::SetKek(a),
                ..
            } => assert_eq!((a.id.as_str(), a.kek.as_str()), ("abc", "file")),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["account", "set-kek", "abc"]).is_err());
        assert!(matches!(
            parse(&["account", "kek", "abc"]).unwrap().command,
            Command::Account {
                command: AccountCommand::Kek(_),
                ..
            }
        ));
    }
}
