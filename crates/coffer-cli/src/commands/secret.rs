//! `coffer secret ...`. Values go from the user to the server and nowhere else.

use coffer_client::{
    Client, CreateSecret, DuplicateSecret, ListSecrets, SecretOrder, UpdateSecret,
};

use super::UsageError;
use super::store::direction;
use crate::args::{SecretCommand, SecretOrderArg};
use crate::table::one_line;
use crate::{output, value};

pub async fn run(client: &Client, command: SecretCommand, json: bool) -> anyhow::Result<()> {
    let text = match command {
        SecretCommand::Create(args) => {
            // Read (and check) the value before any request is made.
            let value = value::obtain(args.value)?;
            let created = client
                .create_secrets(
                    args.store.id(),
                    vec![CreateSecret {
                        name: args.name,
                        value,
                        scopes: args.scopes.0,
                        comment: args.comment,
                    }],
                )
                .await?;
            output::secrets_created(&created, json)
        }
        SecretCommand::List(args) => {
            let params = ListSecrets {
                page: args.page.page,
                per_page: args.page.per_page,
                order: args.order.map(secret_order),
                direction: args.direction.map(direction),
                search: args.search,
                scopes: args.scopes.map(|s| s.0),
            };
            let page = client.list_secrets(args.store.id(), &params).await?;
            output::secret_list(&page, json)
        }
        SecretCommand::Get(args) => {
            let secret = client.get_secret(args.store.id(), &args.secret_id).await?;
            output::secret(&secret, json)
        }
        SecretCommand::Update(args) => {
            if args.value.is_none() && args.scopes.is_none() && args.comment.is_none() {
                return Err(UsageError(
                    "nothing to update: pass --value (or `--value -` to be prompted), \
                     --scopes or --comment"
                        .to_owned(),
                )
                .into());
            }
            // Only `--value` changes the value; `--value -` prompts or reads standard input.
            let value = args.value.map(|arg| value::obtain(Some(arg))).transpose()?;
            let update = UpdateSecret {
                value,
                scopes: args.scopes.map(|s| s.0),
                comment: args.comment,
            };
            let secret = client
                .update_secret(args.store.id(), &args.secret_id, update)
                .await?;
            output::secret(&secret, json)
        }
        SecretCommand::Delete(args) => {
            let mut ids = args.secret_id;
            let mut seen = std::collections::HashSet::new();
            ids.retain(|id| !id.trim().is_empty() && seen.insert(id.clone()));
            let store = args.store.id();
            let message = match ids.as_slice() {
                [] => return Err(UsageError("--secret-id is empty".to_owned()).into()),
                [id] => {
                    client.delete_secret(store, id).await?;
                    format!(
                        "Deleted secret {} from store {}.",
                        one_line(id),
                        one_line(store)
                    )
                }
                _ => {
                    let n = ids.len();
                    client.bulk_delete_secrets(store, ids).await?;
                    format!("Deleted {n} secrets from store {}.", one_line(store))
                }
            };
            output::deleted(&message, json)
        }
        SecretCommand::Duplicate(args) => {
            let duplicate = DuplicateSecret {
                name: args.name,
                scopes: args.scopes.0,
                comment: args.comment,
            };
            let secret = client
                .duplicate_secret(args.store.id(), &args.secret_id, duplicate)
                .await?;
            output::secret(&secret, json)
        }
    };
    output::print(&text)?;
    Ok(())
}

fn secret_order(o: SecretOrderArg) -> SecretOrder {
    match o {
        SecretOrderArg::Name => SecretOrder::Name,
        SecretOrderArg::Comment => SecretOrder::Comment,
        SecretOrderArg::Created => SecretOrder::Created,
        SecretOrderArg::Modified => SecretOrder::Modified,
        SecretOrderArg::Status => SecretOrder::Status,
    }
}
