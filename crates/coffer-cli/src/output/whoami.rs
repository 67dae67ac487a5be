//! `coffer whoami`: the token's name and id, role, account, expiry and operator flag.

use coffer_client::TokenVerification;

use super::{Format, json_text};
use crate::table::one_line;

/// Label and value lines, or under `--json` the API's result as it came.
pub fn whoami(v: &TokenVerification, format: Format) -> String {
    if format.json() {
        return json_text(v);
    }
    let expires = match &v.expires_on {
        Some(at) => super::time(at),
        None => "never".to_owned(),
    };
    let operator = if v.operator {
        "yes (acts on every account)"
    } else {
        "no"
    };
    let rows = [
        ("Token", one_line(&v.name)),
        ("Token ID", one_line(&v.id)),
        ("Role", one_line(&v.role)),
        ("Account", one_line(&v.account.name)),
        ("Account ID", one_line(&v.account.id)),
        ("Expires", expires),
        ("Operator", operator.to_owned()),
    ];
    let mut out = String::new();
    for (label, value) in rows {
        out.push_str(&format!("{:<12}{value}\n", format!("{label}:")));
    }
    out
}

#[cfg(test)]
mod tests {
    use coffer_client::MembershipAccount;

    use super::*;

    fn verification(expires_on: Option<&str>, operator: bool) -> TokenVerification {
        TokenVerification {
            id: "b".repeat(32),
            status: "active".into(),
            expires_on: expires_on.map(str::to_owned),
            name: "ci\u{1b}[2J".into(),
            role: "secrets_store_deployer".into(),
            operator,
            account: MembershipAccount {
                id: "a".repeat(32),
                name: "team-b".into(),
                kind: "standard".into(),
                created_on: "2025-01-01T00:00:00Z".into(),
            },
        }
    }

    #[test]
    fn whoami_names_token_role_account_expiry_and_operator() {
        let text = whoami(
            &verification(Some("2025-03-02T23:30:00.123456Z"), false),
            Format::Table,
        );
        let expected = format!(
            "Token:      ci\\u{{1b}}[2J\n\
             Token ID:   {b}\n\
             Role:       secrets_store_deployer\n\
             Account:    team-b\n\
             Account ID: {a}\n\
             Expires:    2025-03-02T23:30:00Z\n\
             Operator:   no\n",
            a = "a".repeat(32),
            b = "b".repeat(32)
        );
        assert_eq!(text, expected);
        let text = whoami(&verification(None, true), Format::Table);
        assert!(text.contains("Expires:    never\n"), "{text}");
        assert!(
            text.ends_with("Operator:   yes (acts on every account)\n"),
            "{text}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&whoami(&verification(None, true), Format::Json)).unwrap();
        assert_eq!(v["operator"], true);
        assert_eq!(v["account"]["name"], "team-b");
        assert_eq!(v["role"], "secrets_store_deployer");
    }
}
