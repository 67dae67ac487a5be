//! One function per command. Each returns `anyhow::Result`; `main` turns errors into one line.

mod account;
mod audit;
mod backup;
pub mod bound;
mod deploy;
mod init;
mod kek;
mod migrate;
mod node;
mod operator;
pub mod run;
mod secret;
mod serve;
mod service;
mod store;
mod token;
mod whoami;

use std::io::Write;

use coffer_client::{Client, Membership, MembershipAccount, Page};

use crate::args::{Command, ConfigCheckArgs, ConfigCommand, ConnArgs};
use crate::table::one_line;

pub(crate) use serve::json_log;

pub use crate::usage::UsageError;

/// Several problems found before any request (a configuration file's), each shown on a line of
/// its own (exit status 1).
#[derive(Debug)]
pub struct Problems(pub Vec<String>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

impl std::error::Error for Problems {}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init(args) => init::run(args).await,
        Command::Server(args) => serve::server(args).await,
        Command::Dev(args) => serve::dev(args).await,
        Command::Edge(args) => serve::edge(args).await,
        Command::Config {
            command: ConfigCommand::Check(args),
        } => config_check(&args),
        Command::Store { conn, command } => store::run(&conn, command).await,
        Command::Secret { conn, command } => secret::run(&conn, command).await,
        Command::Whoami { conn } => whoami::run(&conn).await,
        Command::Quota { conn, command } => account::quota(&conn, command).await,
        Command::Account { conn, command } => account::run(&conn, command).await,
        Command::Token { conn, command } => token::run(&conn, command).await,
        Command::Audit { conn, command } => audit::run(&conn, command).await,
        Command::Deploy { conn, args } => deploy::run(&conn, args).await,
        Command::Service { conn, command } => service::run(&conn, command).await,
        Command::Node { conn, command } => node::run(&conn, command).await,
        Command::Kek { conn, command } => kek::run(&conn, command).await,
        Command::Operator { conn, command } => operator::run(&conn, command).await,
        Command::Completions { shell } => crate::manpages::completions(shell),
        Command::Man { out_dir } => crate::manpages::write(&out_dir),
        Command::Backup(args) => backup::backup(args).await,
        Command::Restore(args) => backup::restore(args).await,
        Command::Verify(args) => backup::verify(args).await,
        Command::Repair(args) => backup::repair(args).await,
        Command::Migrate(args) => migrate::run(args).await,
        // `main` runs it before any runtime is started.
        Command::Run(_) => Err(anyhow::anyhow!("`coffer run` is handled by main")),
    }
}

/// `coffer config check`: `ok: FILE`, or the file's first problem as a usage error.
fn config_check(args: &ConfigCheckArgs) -> anyhow::Result<()> {
    crate::config_file::check(&args.config, args.kind).map_err(UsageError)?;
    crate::output::print(&format!("ok: {}\n", args.config.display()))?;
    Ok(())
}

/// The client for the connection settings, or a usage error naming every missing setting with
/// its flag and environment variable. Without an account id, the account is the token's own,
/// found with one request (`GET /client/v4/memberships`), and a second (`GET
/// /client/v4/user/tokens/verify`) says whether the token is the operator's: the operator acts
/// on every account, so a note on standard error names the one it falls back to, its own.
async fn connect(conn: &ConnArgs) -> anyhow::Result<Client> {
    let client = connect_instance(conn)?;
    if !client.account_id().is_empty() {
        return Ok(client);
    }
    let account = token_account(&client).await?;
    let verified = client.verify_token().await.map_err(|e| {
        anyhow::Error::new(e).context("cannot tell whether the API token is the operator's")
    })?;
    if verified.operator {
        let _ = writeln!(std::io::stderr(), "note: {}", operator_note(&account));
    }
    Ok(client.with_account(&account.id))
}

/// What the operator's token is told when it acts on its own account for want of another.
fn operator_note(account: &MembershipAccount) -> String {
    format!(
        "the operator token acts on its own account {} ({}); give another with --account-id (or \
         COFFER_ACCOUNT_ID)",
        one_line(&account.name),
        one_line(&account.id)
    )
}

/// The client for a command that acts on the instance rather than on one account (`account
/// create`, `list`, `delete`, `node ...` and `whoami`): the account id is not needed, and not
/// used if given.
fn connect_instance(conn: &ConnArgs) -> anyhow::Result<Client> {
    fn given(s: Option<&str>) -> Option<&str> {
        s.filter(|s| !s.trim().is_empty())
    }
    let url = given(conn.api_url.as_deref());
    let token = given(conn.api_token.as_ref().map(|t| t.0.as_str()));
    let account = given(conn.account_id.as_deref());
    let (Some(url), Some(token)) = (url, token) else {
        let mut missing = Vec::new();
        if url.is_none() {
            missing.push("--api-url (or COFFER_API_URL)");
        }
        if token.is_none() {
            missing.push("--api-token (or COFFER_API_TOKEN)");
        }
        return Err(UsageError(format!(
            "missing connection settings: {}; `coffer dev` prints them for a local server",
            missing.join(", ")
        ))
        .into());
    };
    let mut builder = Client::builder(url, token, account.unwrap_or_default().trim());
    if let Some(ca) = &conn.ca_cert {
        builder = builder.root_ca_pem(ca);
    }
    Ok(builder.build()?)
}

/// The one account the token is a member of.
async fn token_account(client: &Client) -> anyhow::Result<MembershipAccount> {
    let page = client.memberships(None).await.map_err(|e| {
        anyhow::Error::new(e).context(
            "cannot find the API token's account (give one with --account-id or \
             COFFER_ACCOUNT_ID)",
        )
    })?;
    one_account(&page)
}

/// The account of a token's memberships, or a one-line error when there is not exactly one.
fn one_account(page: &Page<Membership>) -> anyhow::Result<MembershipAccount> {
    let total = page.result_info.total_count.max(page.items.len() as u64);
    match page.items.as_slice() {
        [one] if total == 1 => Ok(one.account.clone()),
        [] => anyhow::bail!(
            "the API token is not a member of any account: give one with --account-id (or \
             COFFER_ACCOUNT_ID)"
        ),
        some => {
            let shown: Vec<String> = some
                .iter()
                .map(|m| {
                    format!(
                        "{} ({})",
                        one_line(&m.account.id),
                        one_line(&m.account.name)
                    )
                })
                .collect();
            let more = if total > some.len() as u64 {
                ", ..."
            } else {
                ""
            };
            anyhow::bail!(
                "the API token is a member of {total} accounts ({}{more}): choose one with \
                 --account-id (or COFFER_ACCOUNT_ID)",
                shown.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use coffer_client::ResultInfo;

    use super::*;

    fn memberships(accounts: &[(&str, &str)], total: u64) -> Page<Membership> {
        let items: Vec<Membership> = accounts
            .iter()
            .map(|(id, name)| Membership {
                id: "t".repeat(32),
                account: MembershipAccount {
                    id: (*id).to_owned(),
                    name: (*name).to_owned(),
                    kind: "standard".into(),
                    created_on: "2025-01-01T00:00:00Z".into(),
                },
                status: "accepted".into(),
                roles: vec![],
                permissions: Default::default(),
            })
            .collect();
        Page {
            result_info: ResultInfo {
                page: 1,
                per_page: 20,
                count: items.len() as u64,
                total_count: total,
            },
            items,
        }
    }

    #[test]
    fn the_token_must_have_exactly_one_account() {
        let one = one_account(&memberships(&[("a1", "one")], 1)).unwrap();
        assert_eq!((one.id.as_str(), one.name.as_str()), ("a1", "one"));
        let err = one_account(&memberships(&[], 0)).unwrap_err().to_string();
        assert!(
            err.starts_with("the API token is not a member of any account"),
            "{err}"
        );
        assert!(err.contains("COFFER_ACCOUNT_ID"), "{err}");
        let err = one_account(&memberships(&[("a1", "one"), ("a2", "t\nwo")], 2))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the API token is a member of 2 accounts (a1 (one), a2 (t\\nwo)): choose one with \
             --account-id (or COFFER_ACCOUNT_ID)"
        );
        // A first page that does not hold them all.
        let err = one_account(&memberships(&[("a1", "one")], 3))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("member of 3 accounts (a1 (one), ...)"),
            "{err}"
        );
    }
}
