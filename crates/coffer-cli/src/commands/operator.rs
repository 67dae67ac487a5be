//! `coffer operator rotate`: a new instance-operator token, offline on a stopped server's data
//! dir or online through the running server. The value is printed once, on standard output,
//! and nowhere else (never in an error or a log).

use serde::Serialize;

use super::{UsageError, connect_instance};
use crate::args::{ConnArgs, OperatorCommand};
use crate::commands::init::kek_secrets;
use crate::output::{self, Format};

pub async fn run(conn: &ConnArgs, command: OperatorCommand) -> anyhow::Result<()> {
    let OperatorCommand::Rotate(args) = command;
    let format = Format::of(conn);
    let mut note = None;
    let database = args.database.database()?;
    if database.is_some() && args.data_dir.is_none() {
        return Err(UsageError(
            "--database-url is for the offline form (with --data-dir); online, the running server reaches its database".into(),
        )
        .into());
    }
    let text = match &args.data_dir {
        Some(dir) => {
            let rotated = match coffer_server::rotate_operator_token(
                dir,
                kek_secrets(),
                database.as_ref(),
            )
            .await
            {
                Ok(rotated) => rotated,
                Err(coffer_server::ServerError::DataDirInUse { path }) => {
                    return Err(UsageError(format!(
                        "data dir {} is in use by another coffer process (a running server?): stop it first, or rotate through it with `coffer operator rotate` (no --data-dir) and the current operator token",
                        path.display()
                    ))
                    .into());
                }
                Err(e) => return Err(e.into()),
            };
            let token_id = rotated.token_id.to_string();
            let account_id = rotated.account_id.to_string();
            let token = rotated.api_token.expose_secret();
            // A `coffer dev` data dir keeps its operator token in dev-credentials.json.
            let dev_file = crate::commands::serve::replace_dev_token(dir, token)?;
            if dev_file && format != Format::Json {
                note = Some(format!(
                    "{} now holds this token.\n",
                    dir.join(crate::commands::serve::DEV_CREDENTIALS).display()
                ));
            }
            render(&token_id, Some(&account_id), token, format)
        }
        None => {
            let client = connect_instance(conn)?;
            let created = client.rotate_operator_token().await?;
            render(
                &created.token.id,
                None,
                created.value.expose_secret(),
                format,
            )
        }
    };
    // `text` holds the token: wiped once printed.
    let text = zeroize::Zeroizing::new(text);
    output::print(&text)?;
    if let Some(note) = note {
        output::print(&note)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Rotated<'a> {
    token_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
    token: &'a str,
}

fn render(token_id: &str, account_id: Option<&str>, token: &str, format: Format) -> String {
    if format == Format::Json {
        return output::json_text(&Rotated {
            token_id,
            account_id,
            token,
        });
    }
    let account = account_id
        .map(|a| format!("\n  Account ID:  {a}"))
        .unwrap_or_default();
    format!(
        "New instance-operator token{account}\n\
         \x20 Token ID:    {token_id}\n\
         \x20 API token:   {token}\n\
         \n\
         Every earlier operator token has stopped working. This token is shown only this once\n\
         and cannot be recovered: store it now, e.g. in a password manager.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_the_token_and_its_id() {
        let v: serde_json::Value =
            serde_json::from_str(&render("tid", Some("acc"), "coffer_tok", Format::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"token_id": "tid", "account_id": "acc", "token": "coffer_tok"})
        );
        let v: serde_json::Value =
            serde_json::from_str(&render("tid", None, "coffer_tok", Format::Json)).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 2);
    }

    #[test]
    fn human_output_says_the_old_token_stopped_and_this_one_is_shown_once() {
        let text = render("tid", Some("acc"), "coffer_tok", Format::Table);
        assert!(text.contains("Account ID:  acc") && text.contains("Token ID:    tid"));
        assert!(text.contains("API token:   coffer_tok"));
        assert!(text.contains("stopped working") && text.contains("shown only this once"));
    }
}
