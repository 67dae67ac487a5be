//! `coffer quota [set]` and `coffer account ...`
//!
//! `account get` shows the account of the connection settings; `account create`, `list` and
//! `delete` act on the instance (the instance operator's token), whatever account is set.

use super::{UsageError, connect, connect_instance};
use crate::args::{AccountCommand, ConnArgs, QuotaCommand};
use crate::output::{self, Format};
use crate::resolve;

/// `coffer quota`: the quota in force and its usage; `coffer quota set`: the account's own quota.
pub async fn quota(conn: &ConnArgs, command: Option<QuotaCommand>) -> anyhow::Result<()> {
    let text = match command {
        None => {
            let client = connect(conn).await?;
            output::quota(&client.quota().await?, Format::of(conn))
        }
        Some(QuotaCommand::Set(args)) => {
            // The value is checked before the connection settings, and before any request.
            let quota = args.quota().map_err(UsageError)?;
            let client = connect(conn).await?;
            output::account(&client.set_secrets_quota(quota).await?, Format::of(conn))
        }
    };
    output::print(&text)?;
    Ok(())
}

pub async fn run(conn: &ConnArgs, command: AccountCommand) -> anyhow::Result<()> {
    let format = Format::of(conn);
    let text = match command {
        AccountCommand::Get => output::account(&connect(conn).await?.get_account().await?, format),
        AccountCommand::Create(args) => {
            let account = connect_instance(conn)?.create_account(args.name()).await?;
            output::account_created(&account, format)
        }
        AccountCommand::List => {
            output::account_list(&connect_instance(conn)?.list_accounts().await?, format)
        }
        AccountCommand::Delete(args) => {
            let client = connect_instance(conn)?;
            let account = resolve::account(&client, &args.id).await?;
            client.delete_account(&account.id).await?;
            output::deleted(
                &format!(
                    "Deleted account {} with its stores, secrets and tokens.",
                    account.shown()
                ),
                format,
            )
        }
        AccountCommand::SetKek(args) => {
            let client = connect_instance(conn)?;
            let account = resolve::account(&client, &args.id).await?;
            output::account_kek(
                &client.set_account_kek(&account.id, &args.kek).await?,
                format,
            )
        }
        AccountCommand::Kek(args) => {
            let client = connect_instance(conn)?;
            let account = resolve::account(&client, &args.id).await?;
            output::account_kek(&client.account_kek(&account.id).await?, format)
        }
    };
    output::print(&text)?;
    Ok(())
}
