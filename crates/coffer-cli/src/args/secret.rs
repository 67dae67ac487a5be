//! `coffer secret ...`, and the values it takes (scopes, a secret value).

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Subcommand, ValueEnum};
use zeroize::Zeroizing;

use super::store::StoreIdArg;
use super::{DirectionArg, PageArgs};

/// A store and the name of a secret to make in it: `STORE NAME`, or either one as a flag
/// (`--store-id`, `--name`), like every command that creates something.
#[derive(Debug, Args)]
pub struct StoreAndName {
    /// The store's name or id (same as --store-id)
    #[arg(value_name = "STORE")]
    store_pos: Option<String>,

    /// The new secret's name (same as --name); with --store-id, the only argument
    #[arg(value_name = "NAME")]
    name_pos: Option<String>,

    /// The store's name, or its id (32 hex characters)
    #[arg(long = "store-id", value_name = "STORE")]
    store: Option<String>,

    /// The new secret's name: letters, digits, `_` and `-`
    #[arg(long = "name", value_name = "NAME")]
    name: Option<String>,
}

impl StoreAndName {
    /// `(store, name)`; otherwise a one-line message saying what is missing or given twice.
    pub fn get(&self) -> Result<(&str, &str), String> {
        let mut given = [self.store_pos.as_deref(), self.name_pos.as_deref()]
            .into_iter()
            .flatten();
        let store = match self.store.as_deref() {
            Some(store) => store,
            None => given
                .next()
                .ok_or("give the store: STORE (its name or id) or --store-id")?,
        };
        let name = match (self.name.as_deref(), given.next()) {
            (Some(_), Some(extra)) => {
                return Err(format!(
                    "the name is given twice, as {extra:?} and with --name: give one of them"
                ));
            }
            (Some(name), None) | (None, Some(name)) => name,
            (None, None) => return Err("give the new secret's name: NAME or --name".to_owned()),
        };
        if let Some(extra) = given.next() {
            return Err(format!(
                "unexpected argument {extra:?} (the store is given with --store-id)"
            ));
        }
        Ok((store, name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecretOrderArg {
    Name,
    Comment,
    Created,
    Modified,
    Status,
}

const VALUE_HELP: &str = "The value, stored exactly as given. Omit it (or pass `-`) to be \
    prompted with hidden input on a terminal (the newline that ends the line is not part of the \
    value), or to have it read from standard input otherwise (one trailing newline is dropped, \
    unless --keep-trailing-newline). A value given here stays in your shell history";

const UPDATE_VALUE_HELP: &str = "A new value, stored exactly as given. Without --value or \
    --value-file the value is left unchanged; `--value -` prompts for it with hidden input on a \
    terminal, or reads it from standard input otherwise (one trailing newline is dropped, unless \
    --keep-trailing-newline). A value given here stays in your shell history";

const VALUE_FILE_HELP: &str = "Read the value from FILE, byte for byte (a final newline, as in a \
    PEM file, is kept); at most 64 KiB of UTF-8";

const KEEP_NEWLINE_HELP: &str = "Keep the trailing newline of a value read from standard input \
    (by default exactly one trailing \"\\n\" or \"\\r\\n\" is dropped, and nothing else)";

const SCOPES_HELP: &str = "Comma-separated scopes: workers, ai_gateway, dex, access, containers, \
    websearch";

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a secret
    #[command(
        after_help = "Values are stored byte for byte. From standard input, exactly one trailing \
                      newline is dropped (--keep-trailing-newline keeps it).\n\n\
                      Examples:\n  printf %s \"$TOKEN\" | coffer secret create STORE \
                      --name openai-key --scopes workers\n  coffer secret create STORE \
                      --name tls-key --scopes workers --value-file key.pem"
    )]
    Create(SecretCreateArgs),
    /// List a store's secrets (metadata only)
    List(SecretListArgs),
    /// Show a secret's metadata and the deployed services that bind it
    Get(SecretGetArgs),
    /// Change a secret's value, scopes or comment
    Update(SecretUpdateArgs),
    /// Delete one or more secrets
    Delete(SecretDeleteArgs),
    /// Copy a secret, value included, under a new name
    Duplicate(SecretDuplicateArgs),
}

#[derive(Debug, Args)]
pub struct SecretCreateArgs {
    #[command(flatten)]
    pub target: StoreAndName,

    #[arg(long, value_name = "SCOPES", required = true, help = SCOPES_HELP)]
    pub scopes: ScopeList,

    /// Free-text comment
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,

    #[arg(long, value_name = "VALUE", help = VALUE_HELP)]
    pub value: Option<ValueArg>,

    #[arg(long, value_name = "FILE", conflicts_with = "value", help = VALUE_FILE_HELP)]
    pub value_file: Option<PathBuf>,

    #[arg(long, conflicts_with = "value_file", help = KEEP_NEWLINE_HELP)]
    pub keep_trailing_newline: bool,
}

#[derive(Debug, Args)]
pub struct SecretListArgs {
    #[command(flatten)]
    pub store: StoreIdArg,

    #[command(flatten)]
    pub page: PageArgs,

    /// Only secrets whose name or comment contains this text
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,

    /// Only secrets with these scopes (comma-separated)
    #[arg(long, value_name = "SCOPES")]
    pub scopes: Option<ScopeList>,

    /// Sort by
    #[arg(long, value_enum)]
    pub order: Option<SecretOrderArg>,

    /// Sort direction
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
}

#[derive(Debug, Args)]
pub struct SecretGetArgs {
    #[command(flatten)]
    pub store: StoreIdArg,

    /// The secret's name or id
    #[arg(long, value_name = "SECRET")]
    pub secret_id: String,
}

#[derive(Debug, Args)]
pub struct SecretUpdateArgs {
    #[command(flatten)]
    pub store: StoreIdArg,

    /// The secret's name or id
    #[arg(long, value_name = "SECRET")]
    pub secret_id: String,

    #[arg(long, value_name = "VALUE", help = UPDATE_VALUE_HELP)]
    pub value: Option<ValueArg>,

    #[arg(long, value_name = "FILE", conflicts_with = "value", help = VALUE_FILE_HELP)]
    pub value_file: Option<PathBuf>,

    #[arg(long, conflicts_with = "value_file", help = KEEP_NEWLINE_HELP)]
    pub keep_trailing_newline: bool,

    /// New scopes, replacing the old ones (comma-separated)
    #[arg(long, value_name = "SCOPES")]
    pub scopes: Option<ScopeList>,

    /// New comment (`--comment ''` clears it)
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,

    /// Remove scopes even if deployed services lose access to the secret; without it, the
    /// services are named and the question asked on a terminal, and the update refused otherwise
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct SecretDeleteArgs {
    #[command(flatten)]
    pub store: StoreIdArg,

    /// The secret's name or id; repeat the flag or separate them with commas to delete several
    /// at once
    #[arg(long, value_name = "SECRET", required = true, value_delimiter = ',')]
    pub secret_id: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SecretDuplicateArgs {
    #[command(flatten)]
    pub target: StoreAndName,

    /// The name or id of the secret to copy
    #[arg(long, value_name = "SECRET")]
    pub secret_id: String,

    #[arg(long, value_name = "SCOPES", required = true, help = SCOPES_HELP)]
    pub scopes: ScopeList,

    /// The new secret's comment
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
}

/// `workers, ai_gateway` -> `["workers", "ai_gateway"]`: items are trimmed, empty items are
/// dropped, and at least one must remain. Scope names are checked by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeList(pub Vec<String>);

impl FromStr for ScopeList {
    type Err = String;

    fn from_str(s: &str) -> Result<ScopeList, String> {
        let scopes: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect();
        if scopes.is_empty() {
            return Err("give at least one scope, e.g. --scopes workers".to_owned());
        }
        Ok(ScopeList(scopes))
    }
}

/// A secret value from `--value`. `-` means "prompt or read standard input".
#[derive(Clone)]
pub enum ValueArg {
    Given(Zeroizing<String>),
    Interactive,
}

impl FromStr for ValueArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<ValueArg, Self::Err> {
        Ok(if s == "-" {
            ValueArg::Interactive
        } else {
            ValueArg::Given(Zeroizing::new(s.to_owned()))
        })
    }
}

impl std::fmt::Debug for ValueArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueArg::Given(_) => f.write_str("Given([redacted])"),
            ValueArg::Interactive => f.write_str("Interactive"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use crate::args::tests::parse;

    #[test]
    fn scope_lists_are_trimmed_and_must_not_be_empty() {
        assert_eq!(
            "workers, ai_gateway,,".parse::<ScopeList>().unwrap().0,
            ["workers", "ai_gateway"]
        );
        assert_eq!("dex".parse::<ScopeList>().unwrap().0, ["dex"]);
        assert!(" , ".parse::<ScopeList>().is_err());
        assert!("".parse::<ScopeList>().is_err());
        assert!(parse(&["secret", "create", "s", "--name", "n", "--scopes", ","]).is_err());
    }

    #[test]
    fn a_new_secret_is_named_positionally_or_with_name() {
        let target = |args: &[&str]| -> Result<(String, String), String> {
            let cli = parse(args).unwrap();
            let t = match cli.command {
                Command::Secret {
                    command: SecretCommand::Create(c),
                    ..
                } => c.target,
                Command::Secret {
                    command: SecretCommand::Duplicate(d),
                    ..
                } => d.target,
                other => panic!("{other:?}"),
            };
            t.get().map(|(s, n)| (s.to_owned(), n.to_owned()))
        };
        let ok = |s: &str, n: &str| Ok((s.to_owned(), n.to_owned()));
        let scopes = ["--scopes", "workers"];
        for args in [
            &["secret", "create", "prod", "key"][..],
            &["secret", "create", "prod", "--name", "key"],
            &["secret", "create", "--store-id", "prod", "key"],
            &["secret", "create", "--name", "key", "--store-id", "prod"],
            &["secret", "duplicate", "prod", "key", "--secret-id", "old"],
        ] {
            assert_eq!(
                target(&[args, &scopes].concat()),
                ok("prod", "key"),
                "{args:?}"
            );
        }
        let err = |args: &[&str]| target(&[args, &scopes].concat()).unwrap_err();
        assert_eq!(
            err(&["secret", "create", "prod", "a", "--name", "b"]),
            "the name is given twice, as \"a\" and with --name: give one of them"
        );
        assert_eq!(
            err(&["secret", "create", "--store-id", "prod", "a", "b"]),
            "unexpected argument \"b\" (the store is given with --store-id)"
        );
        assert_eq!(
            err(&["secret", "create", "prod"]),
            "give the new secret's name: NAME or --name"
        );
        assert_eq!(
            err(&["secret", "create", "--name", "a"]),
            "give the store: STORE (its name or id) or --store-id"
        );
        assert!(parse(&["secret", "create", "a", "b", "c", "--scopes", "workers"]).is_err());
    }

    #[test]
    fn secret_ids_for_delete_repeat_or_split_on_commas() {
        let cli = parse(&[
            "secret",
            "delete",
            "--store-id",
            "s",
            "--secret-id",
            "a,b",
            "--secret-id",
            "c",
        ])
        .unwrap();
        match cli.command {
            Command::Secret {
                command: SecretCommand::Delete(d),
                ..
            } => {
                assert_eq!(d.store.id(), "s");
                assert_eq!(d.secret_id, ["a", "b", "c"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["secret", "delete", "s"]).is_err());
    }

    #[test]
    fn value_dash_means_interactive_and_debug_hides_values() {
        let cli = parse(&["secret", "update", "s", "--secret-id", "x", "--value", "-"]).unwrap();
        match cli.command {
            Command::Secret {
                command: SecretCommand::Update(u),
                ..
            } => assert!(matches!(u.value, Some(ValueArg::Interactive))),
            other => panic!("{other:?}"),
        }
        let cli = parse(&[
            "secret",
            "create",
            "s",
            "--name",
            "n",
            "--scopes",
            "workers",
            "--value",
            "hunter2",
            "--api-token",
            "coffer_sekrit",
        ])
        .unwrap();
        let dbg = format!("{cli:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("sekrit"), "{dbg}");
    }
}
