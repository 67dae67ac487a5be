//! One function per command. Each returns `anyhow::Result`; `main` turns errors into one line.

mod account;
mod audit;
mod bound;
mod deploy;
mod init;
mod node;
pub mod run;
mod secret;
mod serve;
mod service;
mod store;
mod token;

use coffer_client::Client;

use crate::args::{Command, ConnArgs};

/// A mistake in how the command was called (exit status 2), as opposed to a failed operation.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

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
        Command::Store { conn, command } => {
            let client = connect(&conn)?;
            store::run(&client, command, conn.json).await
        }
        Command::Secret { conn, command } => {
            let client = connect(&conn)?;
            secret::run(&client, command, conn.json).await
        }
        Command::Quota { conn, command } => account::quota(&conn, command).await,
        Command::Account { conn, command } => account::run(&conn, command).await,
        Command::Token { conn, command } => token::run(&conn, command).await,
        Command::Audit { conn, command } => audit::run(&conn, command).await,
        Command::Deploy { conn, args } => deploy::run(&conn, args).await,
        Command::Service { conn, command } => service::run(&conn, command).await,
        Command::Node { conn, command } => node::run(&conn, command).await,
        // `main` runs it before any runtime is started.
        Command::Run(_) => Err(anyhow::anyhow!("`coffer run` is handled by main")),
    }
}

/// The client for the connection settings, or a usage error naming every missing setting with
/// its flag and environment variable.
fn connect(conn: &ConnArgs) -> anyhow::Result<Client> {
    connect_to(conn, true)
}

/// The client for a command that acts on the instance rather than on one account (`account
/// create`, `list`, `delete`, and `node ...`): the account id is not needed, and not used if
/// given.
fn connect_instance(conn: &ConnArgs) -> anyhow::Result<Client> {
    connect_to(conn, false)
}

fn connect_to(conn: &ConnArgs, need_account: bool) -> anyhow::Result<Client> {
    fn given(s: Option<&str>) -> Option<&str> {
        s.filter(|s| !s.trim().is_empty())
    }
    let url = given(conn.api_url.as_deref());
    let token = given(conn.api_token.as_ref().map(|t| t.0.as_str()));
    let account = given(conn.account_id.as_deref());
    let account_missing = need_account && account.is_none();
    let (Some(url), Some(token), false) = (url, token, account_missing) else {
        let mut missing = Vec::new();
        if url.is_none() {
            missing.push("--api-url (or COFFER_API_URL)");
        }
        if token.is_none() {
            missing.push("--api-token (or COFFER_API_TOKEN)");
        }
        if account_missing {
            missing.push("--account-id (or COFFER_ACCOUNT_ID)");
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
