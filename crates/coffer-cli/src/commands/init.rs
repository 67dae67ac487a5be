//! `coffer init`

use std::path::Path;

use serde::Serialize;

use crate::output;

pub async fn run(args: crate::args::InitArgs) -> anyhow::Result<()> {
    let outcome = coffer_server::init_data_dir(&args.data_dir).await?;
    let account_id = outcome.account_id.to_string();
    let token = outcome.api_token.expose_secret();
    let text = if args.json {
        credentials_json(&account_id, token)
    } else {
        human(&args.data_dir, &account_id, token)
    };
    output::print(&text)?;
    Ok(())
}

#[derive(Serialize)]
struct Credentials<'a> {
    account_id: &'a str,
    api_token: &'a str,
    /// The same token under the name every new token has in `--json` output.
    token: &'a str,
}

/// Exactly `{"account_id": ..., "api_token": ..., "token": ...}` (the token twice: `token` is
/// the name of every new token in `--json` output, `api_token` the name scripts used before);
/// also the format of `dev-credentials.json`.
pub fn credentials_json(account_id: &str, api_token: &str) -> String {
    output::json_text(&Credentials {
        account_id,
        api_token,
        token: api_token,
    })
}

fn human(data_dir: &Path, account_id: &str, token: &str) -> String {
    let dir = data_dir.display();
    format!(
        "Initialised data dir {dir}\n\
         \n\
         \x20 Account ID:  {account_id}\n\
         \x20 API token:   {token}\n\
         \n\
         The API token is shown only this once and cannot be recovered: store it now, e.g. in a\n\
         password manager.\n\
         \n\
         Start the server with:\n\
         \x20 coffer server --data-dir {dir} --listen 127.0.0.1:8080\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_exactly_the_three_keys() {
        let v: serde_json::Value =
            serde_json::from_str(&credentials_json("acc", "coffer_tok")).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 3);
        assert_eq!(obj["account_id"], "acc");
        assert_eq!(obj["api_token"], "coffer_tok");
        assert_eq!(obj["token"], "coffer_tok");
    }

    #[test]
    fn human_output_says_the_token_is_shown_once() {
        let text = human(Path::new("/d"), "acc", "coffer_tok");
        assert!(text.contains("acc") && text.contains("coffer_tok"));
        assert!(text.contains("shown only this once"));
        assert!(text.contains("coffer server --data-dir /d"));
    }
}
