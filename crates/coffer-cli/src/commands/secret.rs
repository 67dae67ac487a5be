//! `coffer secret ...`. Values go from the user to the server and nowhere else.

use std::path::PathBuf;

use coffer_client::{
    Client, CreateSecret, DuplicateSecret, ListSecrets, SecretOrder, UpdateSecret,
};

use super::store::direction;
use super::{UsageError, bound};
use crate::args::{SecretCommand, SecretOrderArg, ValueArg};
use crate::table::one_line;
use crate::value::Source;
use crate::{output, value};

pub async fn run(client: &Client, command: SecretCommand, json: bool) -> anyhow::Result<()> {
    let text = match command {
        SecretCommand::Create(args) => {
            // Read (and check) the value before any request is made.
            let source = value_source(
                args.value,
                args.value_file,
                args.keep_trailing_newline,
                true,
            )?
            .unwrap_or(Source::Input);
            let value = value::obtain(source, args.keep_trailing_newline)?;
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
            let binders = bound::find(client, &secret).await?;
            bound::secret_with_binders(&secret, &binders, json)
        }
        SecretCommand::Update(args) => {
            // Only `--value` or `--value-file` changes the value; `--value -` prompts or reads
            // standard input.
            let source = value_source(
                args.value,
                args.value_file,
                args.keep_trailing_newline,
                false,
            )?;
            if source.is_none() && args.scopes.is_none() && args.comment.is_none() {
                return Err(UsageError(
                    "nothing to update: pass --value (or `--value -` to be prompted), \
                     --value-file, --scopes or --comment"
                        .to_owned(),
                )
                .into());
            }
            let value = source
                .map(|source| value::obtain(source, args.keep_trailing_newline))
                .transpose()?;
            if let Some(scopes) = &args.scopes {
                bound::check_scope_change(
                    client,
                    args.store.id(),
                    &args.secret_id,
                    &scopes.0,
                    args.yes,
                )
                .await?;
            }
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

/// Where the value comes from, as the flags say. Without a flag that gives one, `secret create`
/// (`prompt_by_default`) prompts or reads standard input, and `secret update` leaves the value
/// as it is (`None`).
fn value_source(
    value: Option<ValueArg>,
    file: Option<PathBuf>,
    keep_trailing_newline: bool,
    prompt_by_default: bool,
) -> Result<Option<Source>, UsageError> {
    let source = match (value, file) {
        // clap refuses --value with --value-file.
        (_, Some(path)) => Some(Source::File(path)),
        (Some(ValueArg::Given(value)), None) => Some(Source::Given(value)),
        (Some(ValueArg::Interactive), None) => Some(Source::Input),
        (None, None) => prompt_by_default.then_some(Source::Input),
    };
    if keep_trailing_newline && !matches!(source, Some(Source::Input)) {
        return Err(UsageError(
            "--keep-trailing-newline applies to a value read from standard input (`--value -`); \
             --value and --value-file values are stored exactly as given"
                .to_owned(),
        ));
    }
    Ok(source)
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
