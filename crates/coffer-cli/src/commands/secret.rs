//! `coffer secret ...`. Values go from the user to the server and nowhere else.

use std::io::Write;
use std::path::PathBuf;

use coffer_client::{CreateSecret, DuplicateSecret, ListSecrets, SecretOrder, UpdateSecret};

use super::store::direction;
use super::{UsageError, bound, connect};
use crate::args::{ConnArgs, SecretCommand, SecretOrderArg, ValueArg};
use crate::output::{self, Format};
use crate::value::Source;
use crate::{resolve, value};

pub async fn run(conn: &ConnArgs, command: SecretCommand) -> anyhow::Result<()> {
    let format = Format::of(conn);
    let text = match command {
        SecretCommand::Create(args) => {
            let (store, name) = args.target.get().map_err(UsageError)?;
            // Read (and check) the value before any request is made. Without a flag that gives
            // it, it is prompted for or read from standard input.
            let keep_trailing_newline = args.keep_trailing_newline;
            let source = value_source(args.value, args.value_file, keep_trailing_newline)?
                .unwrap_or(Source::Input {
                    keep_trailing_newline,
                });
            let value = value::obtain(source)?;
            let client = connect(conn).await?;
            let store = resolve::store(&client, store).await?;
            let created = client
                .create_secrets(
                    &store.id,
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
            let page = client.list_secrets(&store.id, &params).await?;
            output::secret_list(&page, format)
        }
        SecretCommand::Get(args) => {
            let client = connect(conn).await?;
            let store = resolve::store(&client, args.store.id()).await?;
            let secret = resolve::secret(&client, &store, &args.secret_id).await?;
            let secret = client.get_secret(&store.id, &secret.id).await?;
            let binders = bound::find(&client, &secret).await?;
            output::secret_with_binders(&secret, &binders, format)
        }
        SecretCommand::Update(args) => {
            // Only `--value` or `--value-file` changes the value; `--value -` prompts or reads
            // standard input.
            let source = value_source(args.value, args.value_file, args.keep_trailing_newline)?;
            if source.is_none() && args.keep_trailing_newline {
                return Err(keep_without_input().into());
            }
            if source.is_none() && args.scopes.is_none() && args.comment.is_none() {
                return Err(UsageError(
                    "nothing to update: pass --value (or `--value -` to be prompted), \
                     --value-file, --scopes or --comment"
                        .to_owned(),
                )
                .into());
            }
            let value = source.map(value::obtain).transpose()?;
            let client = connect(conn).await?;
            let store = resolve::store(&client, args.store.id()).await?;
            let secret = resolve::secret(&client, &store, &args.secret_id).await?;
            let (store, id) = (store.id, secret.id);
            let warning = match &args.scopes {
                Some(scopes) => {
                    bound::check_scope_change(&client, &store, &id, &scopes.0, args.yes).await?
                }
                None => None,
            };
            let update = UpdateSecret {
                value,
                scopes: args.scopes.map(|s| s.0),
                comment: args.comment,
            };
            let secret = client.update_secret(&store, &id, update).await?;
            // Once done: a refused update took nothing away.
            if let Some(warning) = warning {
                let _ = writeln!(std::io::stderr(), "warning: {warning}");
            }
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
            let mut secrets = resolve::secrets(&client, &store, &given).await?;
            let mut seen = std::collections::HashSet::new();
            secrets.retain(|s| seen.insert(s.id.clone()));
            let message = match secrets.as_slice() {
                [secret] => {
                    client.delete_secret(&store.id, &secret.id).await?;
                    format!(
                        "Deleted secret {} from store {}.",
                        secret.shown(),
                        store.shown()
                    )
                }
                _ => {
                    let n = secrets.len();
                    let ids = secrets.into_iter().map(|s| s.id).collect();
                    client.bulk_delete_secrets(&store.id, ids).await?;
                    format!("Deleted {n} secrets from store {}.", store.shown())
                }
            };
            output::deleted(&message, format)
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
            let secret = resolve::secret(&client, &store, &args.secret_id).await?;
            let secret = client
                .duplicate_secret(&store.id, &secret.id, duplicate)
                .await?;
            output::secret(&secret, format)
        }
    };
    output::print(&text)?;
    Ok(())
}

/// Where the value comes from, as the flags say; `None` without a flag that gives one (`secret
/// create` then prompts or reads standard input, `secret update` leaves the value as it is).
fn value_source(
    value: Option<ValueArg>,
    file: Option<PathBuf>,
    keep_trailing_newline: bool,
) -> Result<Option<Source>, UsageError> {
    let source = match (value, file) {
        // clap refuses --value with --value-file.
        (_, Some(path)) => Source::File(path),
        (Some(ValueArg::Given(value)), None) => Source::Given(value),
        (Some(ValueArg::Interactive), None) => Source::Input {
            keep_trailing_newline,
        },
        (None, None) => return Ok(None),
    };
    if keep_trailing_newline && !matches!(source, Source::Input { .. }) {
        return Err(keep_without_input());
    }
    Ok(Some(source))
}

/// `--keep-trailing-newline` for a value that is not read from standard input.
fn keep_without_input() -> UsageError {
    UsageError(
        "--keep-trailing-newline applies to a value read from standard input (`--value -`); \
         --value and --value-file values are stored exactly as given"
            .to_owned(),
    )
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
