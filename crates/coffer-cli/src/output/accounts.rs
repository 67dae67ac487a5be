//! The account, its quota, and the instance's accounts.

use coffer_client::{Account, Page, Quota};
use serde::Serialize;

use super::{Format, json_text, page_json, time};
use crate::table::{Table, one_line};

const ACCOUNT_COLUMNS: [&str; 4] = ["Name", "ID", "Created", "Secrets quota"];

pub fn quota(quota: &Quota, format: Format) -> String {
    if format.json() {
        return json_text(quota);
    }
    let q = quota.secrets;
    format!(
        "secrets: {} used of {} ({} left)\n",
        q.usage,
        q.quota,
        q.quota.saturating_sub(q.usage)
    )
}

fn accounts_table(accounts: &[Account], format: Format) -> String {
    let mut t = Table::new(&ACCOUNT_COLUMNS).flexible(&["Name"]);
    for a in accounts {
        t.row(vec![
            a.name.clone(),
            a.id.clone(),
            time(&a.created),
            a.secrets_quota
                .map_or_else(|| "default".to_owned(), |q| q.to_string()),
        ]);
    }
    t.render(format.wide())
}

/// `account get` and `quota set`: the account, its own quota shown as `default` when the server
/// default applies.
pub fn account(account: &Account, format: Format) -> String {
    if format.json() {
        return json_text(account);
    }
    accounts_table(std::slice::from_ref(account), format)
}

/// The `--json` form of `account create`: the account, and its id once more as `account_id`
/// (the name `coffer init --json` uses).
#[derive(Serialize)]
struct CreatedAccountJson<'a> {
    account_id: &'a str,
    #[serde(flatten)]
    account: &'a Account,
}

/// `account create`: the new id, and how to give the account its first super_admin.
pub fn account_created(account: &Account, format: Format) -> String {
    if format.json() {
        return json_text(&CreatedAccountJson {
            account_id: &account.id,
            account,
        });
    }
    let id = one_line(&account.id);
    format!(
        "Created account {name}.\n\
         \n\
         \x20 Account ID:  {id}\n\
         \n\
         It has no API token yet. Create its first super_admin with the operator token:\n\
         \x20 COFFER_ACCOUNT_ID={id} coffer token create admin --role super_admin\n",
        name = one_line(&account.name),
    )
}

pub fn account_list(page: &Page<Account>, format: Format) -> String {
    if format.json() {
        return page_json(page);
    }
    accounts_table(&page.items, format)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::page;

    #[test]
    fn account_shows_its_quota_or_default() {
        let mut a = Account {
            id: "c".repeat(32),
            name: "default".into(),
            created: "2025-01-01T00:00:00Z".into(),
            secrets_quota: None,
        };
        let out = account(&a, Format::Table);
        let mut lines = out.lines();
        assert_eq!(
            lines.next().unwrap(),
            format!(
                "Name     ID{}  Created               Secrets quota",
                " ".repeat(30)
            )
        );
        lines.next();
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "default",
                &"c".repeat(32),
                "2025-01-01T00:00:00Z",
                "default"
            ]
        );
        assert_eq!(lines.next(), None);
        let v: serde_json::Value = serde_json::from_str(&account(&a, Format::Json)).unwrap();
        assert_eq!(v["secrets_quota"], serde_json::Value::Null);
        assert_eq!(v.as_object().unwrap().len(), 4);

        a.secrets_quota = Some(3);
        assert!(
            account(&a, Format::Table)
                .lines()
                .nth(2)
                .unwrap()
                .ends_with("  3")
        );
        let v: serde_json::Value = serde_json::from_str(&account(&a, Format::Json)).unwrap();
        assert_eq!(v["secrets_quota"], 3);
    }

    #[test]
    fn account_created_has_account_id_and_a_hint() {
        let a = Account {
            id: "c".repeat(32),
            name: "team-b".into(),
            created: "2025-01-01T00:00:00Z".into(),
            secrets_quota: None,
        };
        let v: serde_json::Value =
            serde_json::from_str(&account_created(&a, Format::Json)).unwrap();
        assert_eq!(v["account_id"], "c".repeat(32));
        assert_eq!(v["id"], "c".repeat(32));
        assert_eq!(v["name"], "team-b");
        assert_eq!(v["secrets_quota"], serde_json::Value::Null);
        assert_eq!(v.as_object().unwrap().len(), 5);
        let text = account_created(&a, Format::Table);
        assert!(text.contains(&format!("Account ID:  {}\n", a.id)), "{text}");
        assert!(
            text.contains(&format!(
                "COFFER_ACCOUNT_ID={} coffer token create admin --role super_admin",
                a.id
            )),
            "{text}"
        );

        let list = account_list(&page(vec![a.clone(), a], 2), Format::Table);
        assert_eq!(list.lines().count(), 4);
        assert!(list.starts_with("Name"));
    }
}
