//! `coffer service ...`: the account's services and their tokens. A service is named by its
//! name or its id.

use coffer_client::{Client, ListServices};

use super::connect;
use crate::args::{ConnArgs, ServiceCommand, ServiceTokenCommand};
use crate::output::{self, Format};
use crate::resolve;
use crate::table::one_line;

pub async fn run(conn: &ConnArgs, command: ServiceCommand) -> anyhow::Result<()> {
    let format = Format::of(conn);
    let client = connect(conn).await?;
    match command {
        ServiceCommand::List(args) => {
            let params = ListServices {
                page: args.page.page,
                per_page: args.page.per_page,
                name: args.name,
            };
            let page = client.list_services(&params).await?;
            output::print(&output::service_list(&page, format))?;
        }
        ServiceCommand::Get(arg) => {
            let service = resolve::service(&client, &arg.service).await?;
            output::print(&output::service(&service, format))?;
        }
        ServiceCommand::Delete(arg) => {
            let service = resolve::service(&client, &arg.service).await?;
            client.delete_service(&service.id).await?;
            let message = format!(
                "Deleted service {} ({}) with its bindings; its tokens no longer work.",
                one_line(&service.name),
                one_line(&service.id)
            );
            output::print(&output::deleted(&message, format))?;
        }
        ServiceCommand::Token { command } => token(&client, command, format).await?,
    }
    Ok(())
}

async fn token(
    client: &Client,
    command: ServiceTokenCommand,
    format: Format,
) -> anyhow::Result<()> {
    match command {
        ServiceTokenCommand::List(arg) => {
            let service = resolve::service(client, &arg.service).await?;
            let page = client.list_service_tokens(&service.id).await?;
            output::print(&output::service_token_list(&page, format))?;
        }
        ServiceTokenCommand::Rotate(args) => {
            let service = resolve::service(client, &args.service.service).await?;
            let rotated = client
                .rotate_service_token(&service.id, !args.keep_previous)
                .await?;
            // Zeroized on drop, like `rotated` itself.
            let text = output::service_token_rotated(&rotated, &service.name, format);
            output::print(&text)?;
        }
        ServiceTokenCommand::Revoke(args) => {
            let service = resolve::service(client, &args.service.service).await?;
            let text = match args.token_id {
                Some(id) => {
                    // A token the service does not have (404) or already revoked (409) is an
                    // error from the server, shown as such; a success lists the token revoked.
                    let revoked = client.revoke_service_token(&service.id, &id).await?;
                    let token = revoked.iter().find(|t| t.id == id).ok_or_else(|| {
                        anyhow::anyhow!(
                            "unexpected response from the server: it answered the revocation of \
                             token {:?} without that token",
                            one_line(&id)
                        )
                    })?;
                    output::service_token_revoked(token, &service.name, format)
                }
                None => {
                    let revoked = client.revoke_service_tokens(&service.id).await?;
                    output::service_tokens_revoked(&revoked, &service.name, format)
                }
            };
            output::print(&text)?;
        }
    }
    Ok(())
}
