//! `coffer init`

use std::path::Path;

use coffer_hsm::{PIN_ENV, Pkcs11Uri};
use coffer_server::{KekChoice, KekSecrets};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::commands::UsageError;
use crate::output;

/// The PKCS#11 user PIN from the environment (`COFFER_PKCS11_PIN`), for a KEK in an HSM. The
/// PIN is never a command-line argument: arguments are visible to every local user.
pub fn kek_secrets() -> KekSecrets {
    KekSecrets {
        pkcs11_pin: std::env::var(PIN_ENV).ok().map(Zeroizing::new),
    }
}

pub async fn run(args: crate::args::InitArgs) -> anyhow::Result<()> {
    let kek = match &args.kek {
        None => KekChoice::File,
        // Parsed here rather than by clap, whose error would quote the value (which may hold a
        // PIN the parser refuses).
        Some(uri) => {
            let uri = Pkcs11Uri::parse(uri).map_err(|e| UsageError(format!("--kek: {e}")))?;
            KekChoice::Pkcs11(Box::new(uri))
        }
    };
    let database = args.database.database()?;
    let outcome =
        coffer_server::init_data_dir_in(&args.data_dir, kek, kek_secrets(), database.as_ref())
            .await?;
    let account_id = outcome.account_id.to_string();
    let token = outcome.api_token.expose_secret();
    let text = if args.json {
        credentials_json(&account_id, token)
    } else {
        human(
            &args.data_dir,
            &account_id,
            token,
            &outcome.kek.description,
            database.is_some(),
        )
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

fn human(data_dir: &Path, account_id: &str, token: &str, kek: &str, postgres: bool) -> String {
    let dir = data_dir.display();
    let database = if postgres { " --database-url URL" } else { "" };
    format!(
        "Initialised data dir {dir}\n\
         \n\
         \x20 Account ID:  {account_id}\n\
         \x20 API token:   {token}\n\
         \x20 KEK:         {kek}\n\
         \n\
         The API token is shown only this once and cannot be recovered: store it now, e.g. in a\n\
         password manager.\n\
         \n\
         Start the server with:\n\
         \x20 coffer server --data-dir {dir}{database} --listen 127.0.0.1:8080\n"
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
        let text = human(
            Path::new("/d"),
            "acc",
            "coffer_tok",
            "key file /d/kek.key",
            false,
        );
        assert!(text.contains("acc") && text.contains("coffer_tok"));
        assert!(text.contains("KEK:         key file /d/kek.key"));
        assert!(text.contains("shown only this once"));
        assert!(text.contains("coffer server --data-dir /d"));
    }
}
