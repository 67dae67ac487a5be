//! `coffer quota [set]` and `coffer account ...`

use coffer_client::Client;

use super::{UsageError, connect};
use crate::args::{AccountCommand, ConnArgs, QuotaCommand};
use crate::output;

/// `coffer quota`: the quota in force and its usage; `coffer quota set`: the account's own quota.
pub async fn quota(conn: &ConnArgs, command: Option<QuotaCommand>) -> anyhow::Result<()> {
    let text = match command {
        None => {
            let client = connect(conn)?;
            output::quota(&client.quota().await?, conn.json)
        }
        Some(QuotaCommand::Set(args)) => {
            // The value is checked before the connection settings, and before any request.
            let quota = args.quota().map_err(UsageError)?;
            let client = connect(conn)?;
            output::account(&client.set_secrets_quota(quota).await?, conn.json)
        }
    };
    output::print(&text)?;
    Ok(())
}

pub async fn run(client: &Client, command: AccountCommand, json: bool) -> anyhow::Result<()> {
    let text = match command {
        AccountCommand::Get => output::account(&client.get_account().await?, json),
    };
    output::print(&text)?;
    Ok(())
}
