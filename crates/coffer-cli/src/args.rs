//! The command line, as clap derive types. Parsing only: the commands live in `commands/`.
//!
//! Types that can hold a secret (the API token, a secret value) are newtypes whose `Debug`
//! prints `[redacted]`, so that deriving `Debug` on the argument structs is safe.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use zeroize::Zeroizing;

mod account;
mod audit;
mod backup;
mod kek;
mod migrate;
mod node;
mod operator;
mod run;
mod secret;
mod server;
mod service;
mod store;
pub mod token;

#[cfg(test)]
mod systemd_units;

pub use account::{AccountCommand, QuotaCommand};
pub use audit::AuditCommand;
pub use backup::{BackupArgs, RepairArgs, RestoreArgs, VerifyArgs};
pub use kek::KekCommand;
pub use migrate::MigrateArgs;
pub use node::NodeCommand;
pub use operator::OperatorCommand;
pub use run::RunArgs;
pub use secret::{SecretCommand, SecretOrderArg, ValueArg};
pub use server::{ConfigCheckArgs, ConfigCommand, DevArgs, EdgeArgs, InitArgs, ServerArgs};
pub use server::{LogArgs, LogFormat};
pub use service::{DeployArgs, ServiceCommand, ServiceTokenCommand};
pub use store::{StoreCommand, StoreOrderArg};
pub use token::TokenCommand;

use backup::{BACKUP_LONG_ABOUT, REPAIR_LONG_ABOUT, RESTORE_LONG_ABOUT, VERIFY_LONG_ABOUT};
use migrate::MIGRATE_LONG_ABOUT;
use run::RUN_AFTER_HELP;
use server::{DEV_LONG_ABOUT, EDGE_LONG_ABOUT};
use service::DEPLOY_AFTER_HELP;

const ABOUT: &str = "Coffer: a self-hostable secrets store, wire-compatible with Cloudflare's \
                     Secrets Store API";

const AFTER_HELP: &str = "\
Getting started:
  coffer dev                      run a local server with a ready-made account and token
  coffer store create s           then manage stores and secrets (see `coffer dev` output)

Names work wherever ids are taken (an argument of 32 lowercase hex characters is an id, and
refused if it is also another object's name).

Exit status: 0 on success, 1 when the operation failed (server error, unreachable server, bad
value), 2 on a usage error (bad flags, missing connection settings).";

const JSON_HELP: &str = "Print JSON instead of tables: the API's `result` (for lists, an object \
                         {\"result\": [...], \"result_info\": {...}}; for deletes, null; a new \
                         API, service or node token is also `token`)";

#[derive(Debug, Parser)]
#[command(name = "coffer", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a data dir with a first account and API token, and print them
    Init(InitArgs),
    /// Run the Coffer server on a data dir made by `coffer init`
    Server(ServerArgs),
    /// Run a local development server in one command (creates ./coffer-dev on first use)
    #[command(long_about = DEV_LONG_ABOUT)]
    Dev(DevArgs),
    /// Run an edge node: a local replica of every secret (sealed), kept current from an
    /// upstream's change feed, serving the runtime API from the replica alone
    #[command(long_about = EDGE_LONG_ABOUT)]
    Edge(EdgeArgs),
    /// Check a config file for `coffer server`, `edge` or `dev` without starting anything
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Create, list, show and delete stores
    Store {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Create, list, show, update, duplicate and delete secrets (values are write-only)
    Secret {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Show the account's secrets quota and usage, or set it (`quota set`)
    Quota {
        #[command(flatten)]
        conn: ConnArgs,
        /// Without a subcommand: show the quota in force and how much of it is used
        #[command(subcommand)]
        command: Option<QuotaCommand>,
    },
    /// Show the account; create, list and delete the instance's accounts (instance operator)
    Account {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Create, list, show and revoke the account's API tokens
    Token {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Show who the API token is: its name, role, account, expiry, and whether it is the
    /// instance operator
    Whoami {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Read the account's audit log and verify that it was not tampered with (super_admin)
    Audit {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Deploy a service's secret bindings from a wrangler.toml or wrangler.jsonc
    #[command(after_help = DEPLOY_AFTER_HELP)]
    Deploy {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        args: DeployArgs,
    },
    /// List, show and delete services; list, rotate and revoke their tokens
    Service {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Register, list and revoke edge nodes (instance operator)
    Node {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Rotate the instance's key-encryption key and follow the rewrap (instance operator)
    Kek {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: KekCommand,
    },
    /// Issue a new instance-operator token and retire the old one, offline on a stopped
    /// server's data dir or through the running server (instance operator)
    Operator {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Back up a data dir's database into one file, online, while a server runs on it
    #[command(long_about = BACKUP_LONG_ABOUT)]
    Backup(BackupArgs),
    /// Restore a backup file into a new data dir, checking its checksums and chains
    #[command(long_about = RESTORE_LONG_ABOUT)]
    Restore(RestoreArgs),
    /// Check a data dir's or a PostgreSQL database's change-log and audit chains, counts and
    /// foreign keys (read-only, server running or not)
    #[command(long_about = VERIFY_LONG_ABOUT)]
    Verify(VerifyArgs),
    /// Set secret counts that drifted from their rows right again (a data dir with its server
    /// stopped, or a PostgreSQL database, live)
    #[command(long_about = REPAIR_LONG_ABOUT)]
    Repair(RepairArgs),
    /// Copy an embedded (SQLite) installation into an empty PostgreSQL database and switch the
    /// data dir to it, verifying the copy
    #[command(long_about = MIGRATE_LONG_ABOUT)]
    Migrate(MigrateArgs),
    /// Run a command with the service's secret bindings in its environment
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Print the shell completion script for bash, zsh or fish
    #[command(after_help = COMPLETIONS_AFTER_HELP)]
    Completions {
        #[arg(value_enum)]
        shell: ShellArg,
    },
    /// Write the man pages, one per command (coffer.1, coffer-store-create.1, ...), into a
    /// directory
    #[command(after_help = MAN_AFTER_HELP)]
    Man {
        /// The directory to write into (it must exist)
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

const MAN_AFTER_HELP: &str = "\
Pages of commands that no longer exist are removed: a coffer*.1 in DIR that this run did not
write, and whose .TH line shows `coffer man` wrote it (a \"coffer VERSION\" source and the
\"Coffer Manual\"). Any other file is left alone, so DIR may be shared, e.g.
/usr/local/share/man/man1.";

const COMPLETIONS_AFTER_HELP: &str = "\
Install, e.g.:
  coffer completions bash > ~/.local/share/bash-completion/completions/coffer
  coffer completions zsh > ~/.zfunc/_coffer      (with fpath+=(~/.zfunc) before compinit)
  coffer completions fish > ~/.config/fish/completions/coffer.fish";

/// The shells `coffer completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

impl From<ShellArg> for clap_complete::Shell {
    fn from(shell: ShellArg) -> clap_complete::Shell {
        match shell {
            ShellArg::Bash => clap_complete::Shell::Bash,
            ShellArg::Zsh => clap_complete::Shell::Zsh,
            ShellArg::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// Where the server is and who we are. Each can also come from the environment.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection and output")]
pub struct ConnArgs {
    /// Server URL, e.g. http://127.0.0.1:8080 (a trailing /client/v4 is accepted)
    #[arg(long, env = "COFFER_API_URL", global = true, value_name = "URL")]
    pub api_url: Option<String>,

    /// API token (prefer the environment variable: flags are visible to other local users)
    #[arg(
        long,
        env = "COFFER_API_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub api_token: Option<TokenArg>,

    /// Account id (32 hex characters) [default: the API token's own account]
    #[arg(long, env = "COFFER_ACCOUNT_ID", global = true, value_name = "ID")]
    pub account_id: Option<String>,

    /// PEM file of the CA that signed an https server's certificate (only it is trusted)
    #[arg(long, env = "COFFER_CA_CERT", global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    #[arg(long, global = true, help = JSON_HELP)]
    pub json: bool,

    /// Show every column of a table, and every cell whole (by default tables fit 100 columns)
    #[arg(long, global = true)]
    pub wide: bool,
}

/// What was given of two arguments a required, exclusive group joins (a name positionally or
/// with `--name`, a store positionally or with `--store-id`): exactly one is set, so "" cannot
/// be reached.
fn one_of<'a>(flag: &'a Option<String>, positional: &'a Option<String>) -> &'a str {
    flag.as_deref()
        .or(positional.as_deref())
        .unwrap_or_default()
}

#[derive(Debug, Args)]
pub struct PageArgs {
    /// Page number, from 1
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub page: Option<u32>,

    /// Items per page (the server caps it)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub per_page: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    Asc,
    Desc,
}

/// The API token from `--api-token` or `COFFER_API_TOKEN`.
#[derive(Clone)]
pub struct TokenArg(pub Zeroizing<String>);

impl FromStr for TokenArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<TokenArg, Self::Err> {
        Ok(TokenArg(Zeroizing::new(s.to_owned())))
    }
}

impl std::fmt::Debug for TokenArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    pub(super) fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("coffer").chain(args.iter().copied()))
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn connection_flags_are_accepted_after_the_subcommand() {
        let cli = parse(&[
            "secret",
            "get",
            "s",
            "--secret-id",
            "x",
            "--json",
            "--api-url",
            "http://h:1",
        ])
        .unwrap();
        match cli.command {
            Command::Secret { conn, .. } => {
                assert!(conn.json);
                assert_eq!(conn.api_url.as_deref(), Some("http://h:1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn completions_take_one_of_three_shells() {
        for (name, shell) in [
            ("bash", ShellArg::Bash),
            ("zsh", ShellArg::Zsh),
            ("fish", ShellArg::Fish),
        ] {
            match parse(&["completions", name]).unwrap().command {
                Command::Completions { shell: got } => assert_eq!(got, shell),
                other => panic!("{other:?}"),
            }
        }
        let err = parse(&["completions", "powershell"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(parse(&["completions"]).is_err());
    }

    #[test]
    fn pages_start_at_one() {
        assert!(parse(&["store", "list", "--page", "0"]).is_err());
        assert!(parse(&["store", "list", "--page", "1", "--per-page", "10"]).is_ok());
    }
}
