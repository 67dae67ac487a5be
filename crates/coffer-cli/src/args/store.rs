//! `coffer store ...`

use clap::{Args, Subcommand, ValueEnum};

use super::{DirectionArg, PageArgs, one_of};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create a store
    Create(StoreCreateArgs),
    /// List the account's stores
    List(StoreListArgs),
    /// Show one store
    Get(StoreIdArg),
    /// Delete a store (refused if it holds secrets, unless --force)
    Delete(StoreDeleteArgs),
}

#[derive(Debug, Args)]
#[group(id = "store_name", required = true, multiple = false)]
pub struct StoreCreateArgs {
    /// The store's name (same as --name)
    #[arg(value_name = "NAME")]
    name_pos: Option<String>,

    /// The store's name: letters, digits, `_` and `-`
    #[arg(long = "name", value_name = "NAME")]
    name: Option<String>,
}

impl StoreCreateArgs {
    pub fn name(&self) -> &str {
        one_of(&self.name, &self.name_pos)
    }
}

#[derive(Debug, Args)]
pub struct StoreListArgs {
    #[command(flatten)]
    pub page: PageArgs,

    /// Sort by
    #[arg(long, value_enum)]
    pub order: Option<StoreOrderArg>,

    /// Sort direction
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
}

#[derive(Debug, Args)]
pub struct StoreDeleteArgs {
    #[command(flatten)]
    pub store: StoreIdArg,

    /// Also delete every secret in the store
    #[arg(long)]
    pub force: bool,
}

/// A store, by name or id, given positionally (as wrangler does) or with `--store-id`.
#[derive(Debug, Args)]
#[group(id = "store", required = true, multiple = false)]
pub struct StoreIdArg {
    /// The store's name or id (same as --store-id)
    #[arg(value_name = "STORE")]
    store_id_pos: Option<String>,

    /// The store's name, or its id (32 hex characters)
    #[arg(long = "store-id", value_name = "STORE")]
    store_id: Option<String>,
}

impl StoreIdArg {
    pub fn id(&self) -> &str {
        one_of(&self.store_id, &self.store_id_pos)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreOrderArg {
    Name,
    Created,
    Modified,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use crate::args::tests::parse;

    #[test]
    fn store_id_is_positional_or_a_flag_but_not_both() {
        let id_of = |args: &[&str]| match parse(args).unwrap().command {
            Command::Store {
                command: StoreCommand::Delete(d),
                ..
            } => (d.store.id().to_owned(), d.force),
            other => panic!("{other:?}"),
        };
        assert_eq!(id_of(&["store", "delete", "abc"]), ("abc".into(), false));
        assert_eq!(
            id_of(&["store", "delete", "--store-id", "abc", "--force"]),
            ("abc".into(), true)
        );
        assert!(parse(&["store", "delete"]).is_err());
        assert!(parse(&["store", "delete", "a", "--store-id", "b"]).is_err());
    }

    #[test]
    fn store_name_is_positional_or_a_flag() {
        for args in [
            &["store", "create", "prod"][..],
            &["store", "create", "--name", "prod"],
        ] {
            match parse(args).unwrap().command {
                Command::Store {
                    command: StoreCommand::Create(c),
                    ..
                } => assert_eq!(c.name(), "prod"),
                other => panic!("{other:?}"),
            }
        }
        assert!(parse(&["store", "create"]).is_err());
    }
}
