//! `coffer secret ...`. Values go from the user to the server and nowhere else.

use coffer_client::{CreateSecret, DuplicateSecret, ListSecrets, SecretOrder, UpdateSecret};

use super::store::direction;
use super::{UsageError, connect};
use crate::args::{ConnArgs, SecretCommand, SecretOrderArg};
use crate::output::{self, Format};
use crate::{resolve, value};

pub async fn run(conn: &ConnArgs, command: SecretCommand) -> anyhow::Result<()> {
    let format = Format::of(conn);
    let text = match command {
        SecretCommand::Create(args) => {
            let (store, name) = args.target.get().map_err(UsageError)?;
            // Read (and check) the value before any request is made.
            let value = value::obtain(args.value)?;
            let client = connect(conn).await?;
            let store = resolve::store(&client, store).await?;
            let created = client
                .create_secrets(
                    &store,
                    vec![CreateSecret {
                        name: name.to_owned(),
                        value,
                        scopes: args.scopes.0,
                        comment: args.comment,
                    }],
                )
                .await?;
            output::secrets_created(&created, format)
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
            let client = connect(conn).await?;
            let store = resolve::store(&client, args.store.id()).await?;
            let page = client.list_secrets(&store, &params).await?;
            output::secret_list(&page, format)
        }
        SecretCommand::Get(args) => {
            let client = connect(conn).await?;
            let store = resolve::store(&client, args.store.id()).await?;
            let id = resolve::secret(&client, &store, args.store.id(), &args.secret_id).await?;
            let secret = client.get_secret(&store, &id).await?;
            output::secret(&secret, format)
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
            let client = connect(conn).await?;
            let store = resolve::store(&client, args.store.id()).await?;
            let id = resolve::secret(&client, &store, args.store.id(), &args.secret_id).await?;
            let update = UpdateSecret {
                value,
                scopes: args.scopes.map(|s| s.0),
                comment: args.comment,
            };
            let secret = client.update_secret(&store, &id, update).await?;
            output::secret(&secret, format)
        }
        SecretCommand::Delete(args) => {
            let mut given = args.secret_id;
            given.retain(|id| !id.trim().is_empty());
            if given.is_empty() {
                return Err(UsageError("--secret-id is empty".to_owned()).into());
            }
            let client = connect(conn).await?;
            let store = resolve::store(&client, args.store.id()).await?;
            let mut ids = resolve::secrets(&client, &store, args.store.id(), &given).await?;
            let mut seen = std::collections::HashSet::new();
            ids.retain(|id| seen.insert(id.clone()));
            let store_shown = resolve::shown(args.store.id(), &store);
            let message = match (ids.as_slice(), given.as_slice()) {
                ([id], [name, ..]) => {
                    client.delete_secret(&store, id).await?;
                    let secret = resolve::shown(name, id);
                    format!("Deleted secret {secret} from store {store_shown}.")
                }
                _ => {
                    let n = ids.len();
                    client.bulk_delete_secrets(&store, ids).await?;
                    format!("Deleted {n} secrets from store {store_shown}.")
                }
            };
            output::deleted(&message, format.json())
        }
        SecretCommand::Duplicate(args) => {
            let (given_store, name) = args.target.get().map_err(UsageError)?;
            let duplicate = DuplicateSecret {
                name: name.to_owned(),
                scopes: args.scopes.0,
                comment: args.comment,
            };
            let client = connect(conn).await?;
            let store = resolve::store(&client, given_store).await?;
            let id = resolve::secret(&client, &store, given_store, &args.secret_id).await?;
            let secret = client.duplicate_secret(&store, &id, duplicate).await?;
            output::secret(&secret, format)
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
