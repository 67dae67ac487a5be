//! `coffer token ...`: API tokens, and the expiry `token create` takes.

use clap::{Args, Subcommand};

use super::one_of;

const ROLE_HELP: &str = "The token's role: super_admin (everything, tokens included), \
    secrets_store_admin (create, change and delete stores and secrets), secrets_store_deployer \
    (view and bind), secrets_store_reporter (view metadata only)";

const EXPIRES_IN_VALUE_NAME: &str = "DURATION";

/// The longest `--expires-in`: 100 years of 365 days.
pub const MAX_EXPIRES_IN_SECS: u64 = 36_500 * 86_400;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token in the account (--account-id); its value is shown once, here only
    #[command(
        after_help = "Examples:\n  coffer token create --name ci --role secrets_store_deployer \
                      --expires-in 30d\n  COFFER_ACCOUNT_ID=<id> coffer token create --name admin \
                      --role super_admin"
    )]
    Create(TokenCreateArgs),
    /// List the account's tokens (metadata only, never values)
    List,
    /// Show one token's metadata
    Get(TokenIdArg),
    /// Revoke a token: it stops working from the very next request
    Revoke(TokenIdArg),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    name: TokenName,

    #[arg(long, value_name = "ROLE", help = ROLE_HELP)]
    pub role: String,

    /// Expire the token after this long: a positive whole number and a unit, s, m, h or d
    /// (e.g. 90m, 12h, 30d; at most 36500d). Without it, the token does not expire
    // Taken as text and checked by `expires_in()`, so that a bad value is a one-line usage error.
    #[arg(long, value_name = EXPIRES_IN_VALUE_NAME, allow_hyphen_values = true)]
    pub expires_in: Option<String>,
}

#[derive(Debug, Args)]
#[group(id = "token_name", required = true, multiple = false)]
struct TokenName {
    /// The token's name (same as --name)
    #[arg(value_name = "NAME")]
    name_pos: Option<String>,

    /// The token's name, e.g. what or who uses it
    #[arg(long = "name", value_name = "NAME")]
    name: Option<String>,
}

impl TokenCreateArgs {
    pub fn name(&self) -> &str {
        one_of(&self.name.name, &self.name.name_pos)
    }

    /// `--expires-in` in seconds, if given; otherwise a one-line message naming the flag.
    pub fn expires_in(&self) -> Result<Option<u64>, String> {
        self.expires_in.as_deref().map(parse_duration).transpose()
    }
}

/// `30d` -> 2_592_000: digits, then one unit letter; positive and at most 36500 days.
fn parse_duration(given: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!("invalid value {given:?} for --expires-in <{EXPIRES_IN_VALUE_NAME}>: {why}")
    };
    let expected = "expected a positive whole number and a unit, s, m, h or d (e.g. 90m, 12h, 30d)";
    let Some(unit) = given.chars().last() else {
        return Err(bad(expected));
    };
    let digits = &given[..given.len() - unit.len_utf8()];
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(bad(expected)),
    };
    // Digits only: no sign, no spaces, no `1.5h` or `1_000s`.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(expected));
    }
    let too_long = || bad("the longest expiry is 36500d");
    let secs = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(too_long)?;
    if secs == 0 {
        return Err(bad("the duration must be positive"));
    }
    if secs > MAX_EXPIRES_IN_SECS {
        return Err(too_long());
    }
    Ok(secs)
}

/// A token, by name or id, positional.
#[derive(Debug, Args)]
pub struct TokenIdArg {
    /// The token's name (tokens that still work are matched first), or its id (32 hex
    /// characters)
    #[arg(value_name = "TOKEN")]
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use crate::args::tests::parse;

    #[test]
    fn token_create_needs_a_name_and_a_role() {
        let create = |args: &[&str]| match parse(args).unwrap().command {
            Command::Token {
                command: TokenCommand::Create(c),
                conn,
            } => (c, conn.json),
            other => panic!("{other:?}"),
        };
        let (c, json) = create(&["token", "create", "--name", "ci", "--role", "super_admin"]);
        assert_eq!(
            (c.name(), c.role.as_str(), json),
            ("ci", "super_admin", false)
        );
        assert_eq!(c.expires_in(), Ok(None));
        // The name positionally, as everywhere a name is given.
        let (c, _) = create(&["token", "create", "ci", "--role", "super_admin"]);
        assert_eq!(c.name(), "ci");
        assert!(parse(&["token", "create", "a", "--name", "b", "--role", "x"]).is_err());
        assert!(parse(&["token", "create", "a", "b", "--role", "x"]).is_err());
        let (c, json) = create(&[
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "x",
            "--expires-in",
            "30d",
            "--json",
        ]);
        assert_eq!((c.expires_in(), json), (Ok(Some(30 * 86_400)), true));
        // `-1d` reaches the command, which reports it in one line.
        let (c, _) = create(&[
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "x",
            "--expires-in",
            "-1d",
        ]);
        assert!(c.expires_in().is_err());
        assert!(parse(&["token", "create", "--name", "ci"]).is_err());
        assert!(parse(&["token", "create", "--role", "super_admin"]).is_err());
        for args in [&["token", "get", "t"][..], &["token", "revoke", "t"]] {
            assert!(parse(args).is_ok());
        }
        assert!(parse(&["token", "revoke"]).is_err());
        assert!(parse(&["token", "list"]).is_ok());
    }

    #[test]
    fn durations_are_a_positive_number_and_a_unit() {
        for (given, secs) in [
            ("1s", 1),
            ("90m", 5_400),
            ("12h", 43_200),
            ("30d", 2_592_000),
            ("007s", 7),
            ("36500d", MAX_EXPIRES_IN_SECS),
            ("3153600000s", MAX_EXPIRES_IN_SECS),
        ] {
            assert_eq!(parse_duration(given), Ok(secs), "{given}");
        }
        for bad in [
            "",
            "0d",
            "0s",
            "000m",
            "soon",
            "30",
            "d",
            "30D",
            "30 d",
            " 30d",
            "+30d",
            "-1d",
            "1.5h",
            "1_000s",
            "30dd",
            "1w",
            "3e2s",
            "٣d",
            "30é",
            "36501d",
            "3153600001s",
            "99999999999999999999d",
            "18446744073709551615d",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("--expires-in"), "{bad:?}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        assert!(
            parse_duration("0d")
                .unwrap_err()
                .ends_with("must be positive")
        );
        assert!(parse_duration("36501d").unwrap_err().ends_with("36500d"));
    }
}
