//! API tokens: their tables, and the one output that shows a new token's value.

use coffer_client::{CreatedToken, Page, Token};
use zeroize::Zeroizing;

use super::{Format, json_text, page_json, time, time_or, with_token};
use crate::table::{Table, one_line};

const TOKEN_COLUMNS: [&str; 8] = [
    "Name",
    "ID",
    "Role",
    "Status",
    "Issued",
    "Expires",
    "Last used",
    "Revoked",
];

fn tokens_table(tokens: &[Token], format: Format) -> String {
    let mut t = Table::new(&TOKEN_COLUMNS)
        .wide_only(&["Issued", "Last used", "Revoked"])
        .flexible(&["Name"]);
    for token in tokens {
        t.row(vec![
            token.name.clone(),
            token.id.clone(),
            if token.operator {
                format!("{} (operator)", token.role)
            } else {
                token.role.clone()
            },
            token.status.clone(),
            time(&token.issued_on),
            time_or(token.expires_on.as_deref(), "never"),
            time_or(token.last_used_on.as_deref(), "never"),
            time_or(token.revoked_on.as_deref(), "-"),
        ]);
    }
    t.render(format.wide())
}

pub fn token_list(page: &Page<Token>, format: Format) -> String {
    if format.json() {
        return page_json(page);
    }
    if page.items.is_empty() {
        return "No tokens in this account.\n".to_owned();
    }
    tokens_table(&page.items, format)
}

pub fn token(token: &Token, format: Format) -> String {
    if format.json() {
        return json_text(token);
    }
    tokens_table(std::slice::from_ref(token), format)
}

/// `token create`: the only output that ever holds a token's value. Under `--json`, the token's
/// fields and `value`; otherwise the metadata, the value, and a warning that it is shown once.
/// The text is zeroized on drop.
pub fn token_created(
    created: &CreatedToken,
    account_id: &str,
    format: Format,
) -> Zeroizing<String> {
    if format.json() {
        return with_token(created, Some(&created.value));
    }
    let token = &created.token;
    let expires = match &token.expires_on {
        Some(at) => format!("expires {}", time(at)),
        None => "does not expire".to_owned(),
    };
    // One buffer large enough from the start: no reallocation leaves a copy of the value.
    let mut text = Zeroizing::new(String::with_capacity(8 << 10));
    text.push_str(&format!(
        "Created token {name} in account {account}: role {role}, {expires}.\n\
         \n\
         \x20 Token ID:   {id}\n\
         \x20 API token:  ",
        name = one_line(&token.name),
        account = one_line(account_id),
        role = one_line(&token.role),
        id = one_line(&token.id),
    ));
    // Escaped like everything else from the server, in case it is not a plain token.
    text.push_str(&Zeroizing::new(one_line(created.value.expose_secret())));
    text.push_str(
        "\n\n\
         The API token is shown only now and cannot be recovered: store it now, e.g. in a\n\
         password manager. Use it with COFFER_API_TOKEN (the account is the token's own).\n",
    );
    text
}

/// `token revoke`: a confirmation, or the token (now `revoked`) under `--json`.
pub fn token_revoked(token: &Token, format: Format) -> String {
    if format.json() {
        return json_text(token);
    }
    format!(
        "Revoked token {} ({}); it no longer works.\n",
        one_line(&token.id),
        one_line(&token.name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::page;

    fn sample_token(expires_on: Option<&str>) -> Token {
        Token {
            id: "d".repeat(32),
            name: "ci\u{1b}[2J".into(),
            role: "secrets_store_reporter".into(),
            status: "active".into(),
            issued_on: "2025-01-01T00:00:00Z".into(),
            expires_on: expires_on.map(str::to_owned),
            last_used_on: None,
            revoked_on: None,
            operator: false,
        }
    }

    #[test]
    fn token_tables_say_never_and_escape_names() {
        let out = token(&sample_token(None), Format::Table);
        let mut lines = out.lines();
        assert_eq!(
            lines.next().unwrap(),
            format!(
                "Name         ID{}  Role                    Status  Expires",
                " ".repeat(30)
            )
        );
        lines.next();
        let row = lines.next().unwrap();
        assert!(row.starts_with("ci\\u{1b}[2J  "), "{row}");
        assert!(row.ends_with("active  never"), "{row}");
        assert_eq!(lines.next(), None);
        // --wide: when it was issued, last used and revoked too.
        let out = token(&sample_token(None), Format::Wide);
        let header: Vec<&str> = out
            .lines()
            .next()
            .unwrap()
            .split("  ")
            .filter(|c| !c.is_empty())
            .map(str::trim)
            .collect();
        assert_eq!(header, TOKEN_COLUMNS);
        assert!(
            out.lines()
                .nth(2)
                .unwrap()
                .ends_with("2025-01-01T00:00:00Z  never    never      -"),
            "{out}"
        );

        let t = sample_token(Some("2025-02-01T00:00:00Z"));
        assert!(token(&t, Format::Table).contains("2025-02-01T00:00:00Z"));
        let v: serde_json::Value = serde_json::from_str(&token(&t, Format::Json)).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 9);
        assert_eq!(v["operator"], false);
        let op = Token {
            operator: true,
            ..t.clone()
        };
        assert!(token(&op, Format::Table).contains(" secrets_store_reporter (operator) "));
        assert_eq!(v["last_used_on"], serde_json::Value::Null);

        assert_eq!(
            token_list(&page(vec![], 0), Format::Table),
            "No tokens in this account.\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&token_list(&page(vec![t.clone()], 1), Format::Json)).unwrap();
        assert_eq!(v["result"][0]["id"], "d".repeat(32));
        assert_eq!(v["result_info"]["total_count"], 1);

        let revoked = token_revoked(&t, Format::Table);
        assert!(revoked.starts_with(&format!("Revoked token {} (ci", t.id)));
        assert_eq!(revoked.lines().count(), 1);
    }

    #[test]
    fn a_created_token_shows_its_value_once_with_a_warning() {
        let created = CreatedToken {
            token: sample_token(Some("2025-02-01T00:00:00Z")),
            value: coffer_client::SecretValue::new("coffer_x_s3cr3t".into()),
        };
        let v: serde_json::Value =
            serde_json::from_str(&token_created(&created, "acc", Format::Json)).unwrap();
        assert_eq!(v["id"], "d".repeat(32));
        assert_eq!(v["value"], "coffer_x_s3cr3t");
        // The one name every new token has, whatever its kind.
        assert_eq!(v["token"], "coffer_x_s3cr3t");
        assert_eq!(v["role"], "secrets_store_reporter");
        assert_eq!(v.as_object().unwrap().len(), 11);

        let text = token_created(&created, "acc", Format::Table);
        assert_eq!(text.matches("coffer_x_s3cr3t").count(), 1, "{}", *text);
        assert!(text.contains("  API token:  coffer_x_s3cr3t\n"));
        assert!(text.contains("shown only now"));
        assert!(text.contains("expires 2025-02-01T00:00:00Z"));
        assert!(text.contains("in account acc"));
        assert!(!text.contains('\u{1b}'));

        let never = CreatedToken {
            token: sample_token(None),
            value: coffer_client::SecretValue::new("coffer_y".into()),
        };
        assert!(token_created(&never, "acc", Format::Table).contains("does not expire"));
    }
}
