//! `coffer deploy` and `coffer service ...`

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::PageArgs;

pub(super) const DEPLOY_AFTER_HELP: &str = "\
Reads `name`, `type` (default workers), `[[secrets_store_secrets]]` (binding, store_id,
secret_name) and `[[secrets_store_stores]]` (binding, store_id); other keys are ignored, so the
file that deploys the Worker to Cloudflare deploys its bindings to Coffer. Every problem in the
file is reported before anything is sent. The first deploy of a service prints its service token,
once: the service reads its bindings with it (`coffer run`, or the Rust SDK).

Without --config, the file is ./wrangler.toml, ./wrangler.jsonc or ./wrangler.json, whichever
exists (it is an error if none or several do).

Examples:
  coffer deploy
  coffer deploy --config services/api/wrangler.jsonc";

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// wrangler.toml, wrangler.jsonc or wrangler.json (comments and trailing commas allowed)
    /// [default: the one of ./wrangler.toml, ./wrangler.jsonc and ./wrangler.json that exists]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// List the account's services
    List(ServiceListArgs),
    /// Show a service and its bindings
    Get(ServiceArg),
    /// Delete a service with its bindings and tokens
    Delete(ServiceArg),
    /// List, rotate and revoke a service's tokens
    Token {
        #[command(subcommand)]
        command: ServiceTokenCommand,
    },
}

#[derive(Debug, Args)]
pub struct ServiceListArgs {
    #[command(flatten)]
    pub page: PageArgs,

    /// Only the service with exactly this name
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// A service, by name or by id.
#[derive(Debug, Args)]
pub struct ServiceArg {
    /// The service's name, or its id (32 hex characters)
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

#[derive(Debug, Subcommand)]
pub enum ServiceTokenCommand {
    /// List the service's tokens (metadata only)
    List(ServiceArg),
    /// Issue a new service token, shown once, and revoke the others unless --keep-previous
    Rotate(ServiceTokenRotateArgs),
    /// Revoke every active token of the service, or one with --token-id
    Revoke(ServiceTokenRevokeArgs),
}

#[derive(Debug, Args)]
pub struct ServiceTokenRotateArgs {
    #[command(flatten)]
    pub service: ServiceArg,

    /// Keep the service's other tokens working (revoke them later with `service token revoke`)
    #[arg(long)]
    pub keep_previous: bool,
}

#[derive(Debug, Args)]
pub struct ServiceTokenRevokeArgs {
    #[command(flatten)]
    pub service: ServiceArg,

    /// Revoke only this token (its id, as `service token list` shows it)
    #[arg(long, value_name = "ID")]
    pub token_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use crate::args::tests::parse;

    #[test]
    fn deploy_takes_a_config_file_or_finds_it() {
        match parse(&["deploy", "--config", "wrangler.toml", "--json"])
            .unwrap()
            .command
        {
            Command::Deploy { conn, args } => {
                assert!(conn.json);
                assert_eq!(args.config, Some(PathBuf::from("wrangler.toml")));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["deploy"]).unwrap().command {
            Command::Deploy { args, .. } => assert_eq!(args.config, None),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["deploy", "wrangler.toml"]).is_err());
    }

    #[test]
    fn service_commands_take_a_name_or_id() {
        let service = |args: &[&str]| match parse(args).unwrap().command {
            Command::Service { command, .. } => command,
            other => panic!("{other:?}"),
        };
        match service(&["service", "list", "--name", "api", "--per-page", "5"]) {
            ServiceCommand::List(l) => {
                assert_eq!(l.name.as_deref(), Some("api"));
                assert_eq!(l.page.per_page, Some(5));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            service(&["service", "get", "api"]),
            ServiceCommand::Get(ServiceArg { service }) if service == "api"
        ));
        assert!(matches!(
            service(&["service", "delete", "api"]),
            ServiceCommand::Delete(ServiceArg { service }) if service == "api"
        ));
        match service(&["service", "token", "rotate", "api", "--keep-previous"]) {
            ServiceCommand::Token {
                command: ServiceTokenCommand::Rotate(r),
            } => assert!(r.keep_previous && r.service.service == "api"),
            other => panic!("{other:?}"),
        }
        match service(&["service", "token", "rotate", "api"]) {
            ServiceCommand::Token {
                command: ServiceTokenCommand::Rotate(r),
            } => assert!(!r.keep_previous),
            other => panic!("{other:?}"),
        }
        match service(&["service", "token", "revoke", "api", "--token-id", "t"]) {
            ServiceCommand::Token {
                command: ServiceTokenCommand::Revoke(r),
            } => assert_eq!(r.token_id.as_deref(), Some("t")),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["service", "get"]).is_err());
        assert!(parse(&["service", "token", "list"]).is_err());
        assert!(parse(&["service", "token", "revoke"]).is_err());
    }
}
