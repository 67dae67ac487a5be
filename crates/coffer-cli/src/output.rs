//! How results are shown: tables for people, JSON for programs.
//!
//! `--json` prints the API's `result`: an object for one item, the array for `secret create`,
//! `{"result": [...], "result_info": {...}}` for lists (so that scripts can page), and `null`
//! for deletes.

use std::io::Write;

use coffer_client::{Account, Page, Quota, ResultInfo, Secret, Store};
use serde::Serialize;

use crate::table::Table;

const STORE_COLUMNS: [&str; 4] = ["Name", "ID", "Created", "Modified"];
const SECRET_COLUMNS: [&str; 8] = [
    "Name", "ID", "StoreID", "Comment", "Scopes", "Status", "Created", "Modified",
];
const ACCOUNT_COLUMNS: [&str; 4] = ["ID", "Name", "Created", "Secrets quota"];

/// Writes `text` to standard output. Errors (a closed pipe) are returned, not panicked on.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Pretty JSON and a newline.
pub fn json_text<T: Serialize + ?Sized>(value: &T) -> String {
    // Serializing these types cannot fail: they are plain structs of strings, numbers and
    // vectors, with no maps keyed by non-strings.
    let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
    s.push('\n');
    s
}

/// The `--json` form of a list.
#[derive(Serialize)]
struct ListJson<'a, T> {
    result: &'a [T],
    result_info: &'a ResultInfo,
}

pub fn stores_table(stores: &[Store]) -> String {
    let mut t = Table::new(&STORE_COLUMNS);
    for s in stores {
        t.row(vec![
            s.name.clone(),
            s.id.clone(),
            s.created.clone(),
            s.modified.clone(),
        ]);
    }
    t.render()
}

pub fn secrets_table(secrets: &[Secret]) -> String {
    let mut t = Table::new(&SECRET_COLUMNS);
    for s in secrets {
        t.row(vec![
            s.name.clone(),
            s.id.clone(),
            s.store_id.clone(),
            s.comment.clone(),
            s.scopes.join(","),
            s.status.clone(),
            s.created.clone(),
            s.modified.clone(),
        ]);
    }
    t.render()
}

/// `page 1 of 3 (10 per page, 25 secrets in all)`.
fn page_footer<T>(page: &Page<T>, noun: &str) -> String {
    let noun = if page.result_info.total_count == 1 {
        noun.trim_end_matches('s')
    } else {
        noun
    };
    let info = &page.result_info;
    let pages = if info.per_page == 0 {
        1
    } else {
        info.total_count.div_ceil(u64::from(info.per_page)).max(1)
    };
    format!(
        "page {} of {pages} ({} per page, {} {noun} in all)\n",
        info.page, info.per_page, info.total_count
    )
}

fn page_json<T: Serialize>(page: &Page<T>) -> String {
    json_text(&ListJson {
        result: &page.items,
        result_info: &page.result_info,
    })
}

pub fn store_list(page: &Page<Store>, as_json: bool) -> String {
    if as_json {
        return page_json(page);
    }
    if page.items.is_empty() {
        return if page.result_info.total_count == 0 {
            "No stores yet. Create one with `coffer store create --name NAME`.\n".to_owned()
        } else {
            page_footer(page, "stores")
        };
    }
    stores_table(&page.items) + &page_footer(page, "stores")
}

pub fn secret_list(page: &Page<Secret>, as_json: bool) -> String {
    if as_json {
        return page_json(page);
    }
    if page.items.is_empty() && page.result_info.total_count == 0 {
        return "No secrets found.\n".to_owned();
    }
    secrets_table(&page.items) + &page_footer(page, "secrets")
}

pub fn store(store: &Store, as_json: bool) -> String {
    if as_json {
        return json_text(store);
    }
    stores_table(std::slice::from_ref(store))
}

pub fn secret(secret: &Secret, as_json: bool) -> String {
    if as_json {
        return json_text(secret);
    }
    secrets_table(std::slice::from_ref(secret))
}

pub fn secrets_created(secrets: &[Secret], as_json: bool) -> String {
    if as_json {
        return json_text(secrets);
    }
    secrets_table(secrets)
}

pub fn quota(quota: &Quota, as_json: bool) -> String {
    if as_json {
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

/// `account get` and `quota set`: the account, its own quota shown as `default` when the server
/// default applies.
pub fn account(account: &Account, as_json: bool) -> String {
    if as_json {
        return json_text(account);
    }
    let quota = account
        .secrets_quota
        .map_or_else(|| "default".to_owned(), |q| q.to_string());
    let mut t = Table::new(&ACCOUNT_COLUMNS);
    t.row(vec![
        account.id.clone(),
        account.name.clone(),
        account.created.clone(),
        quota,
    ]);
    t.render()
}

/// A delete's confirmation, or `null` under `--json`.
pub fn deleted(message: &str, as_json: bool) -> String {
    if as_json {
        "null\n".to_owned()
    } else {
        format!("{message}\n")
    }
}

#[cfg(test)]
mod tests {
    use coffer_client::{QuotaDetail, ResultInfo};

    use super::*;

    fn sample_secret() -> Secret {
        Secret {
            id: "b".repeat(32),
            store_id: "a".repeat(32),
            name: "openai-key".into(),
            comment: "prod\nkey".into(),
            scopes: vec!["workers".into(), "ai_gateway".into()],
            status: "active".into(),
            created: "2025-01-01T00:00:00Z".into(),
            modified: "2025-01-02T00:00:00Z".into(),
        }
    }

    fn page<T>(items: Vec<T>, total: u64) -> Page<T> {
        Page {
            result_info: ResultInfo {
                page: 1,
                per_page: 10,
                count: items.len() as u64,
                total_count: total,
            },
            items,
        }
    }

    #[test]
    fn secret_table_has_wrangler_columns_and_escapes_comments() {
        let out = secret(&sample_secret(), false);
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(header, SECRET_COLUMNS);
        lines.next();
        let row = lines.next().unwrap();
        assert!(row.contains("openai-key"));
        assert!(row.contains("prod\\nkey"));
        assert!(row.contains("workers,ai_gateway"));
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn list_json_wraps_result_and_result_info() {
        let out = secret_list(&page(vec![sample_secret()], 11), true);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["result"][0]["name"], "openai-key");
        assert_eq!(v["result_info"]["total_count"], 11);
    }

    #[test]
    fn list_footer_counts_pages() {
        let out = secret_list(&page(vec![sample_secret()], 11), false);
        assert!(
            out.ends_with("page 1 of 2 (10 per page, 11 secrets in all)\n"),
            "{out}"
        );
        let out = secret_list(&page(vec![sample_secret()], 1), false);
        assert!(
            out.ends_with("page 1 of 1 (10 per page, 1 secret in all)\n"),
            "{out}"
        );
        assert_eq!(secret_list(&page(vec![], 0), false), "No secrets found.\n");
        assert!(store_list(&page(vec![], 0), false).starts_with("No stores yet."));
    }

    #[test]
    fn account_shows_its_quota_or_default() {
        let mut a = Account {
            id: "c".repeat(32),
            name: "default".into(),
            created: "2025-01-01T00:00:00Z".into(),
            secrets_quota: None,
        };
        let out = account(&a, false);
        let mut lines = out.lines();
        assert_eq!(
            lines.next().unwrap(),
            format!(
                "ID{}  Name     Created               Secrets quota",
                " ".repeat(30)
            )
        );
        lines.next();
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                &"c".repeat(32),
                "default",
                "2025-01-01T00:00:00Z",
                "default"
            ]
        );
        assert_eq!(lines.next(), None);
        let v: serde_json::Value = serde_json::from_str(&account(&a, true)).unwrap();
        assert_eq!(v["secrets_quota"], serde_json::Value::Null);
        assert_eq!(v.as_object().unwrap().len(), 4);

        a.secrets_quota = Some(3);
        assert!(account(&a, false).lines().nth(2).unwrap().ends_with("  3"));
        let v: serde_json::Value = serde_json::from_str(&account(&a, true)).unwrap();
        assert_eq!(v["secrets_quota"], 3);
    }

    #[test]
    fn quota_and_deletes() {
        let q = Quota {
            secrets: QuotaDetail {
                quota: 100,
                usage: 3,
            },
        };
        assert_eq!(quota(&q, false), "secrets: 3 used of 100 (97 left)\n");
        let v: serde_json::Value = serde_json::from_str(&quota(&q, true)).unwrap();
        assert_eq!(v["secrets"]["usage"], 3);
        assert_eq!(deleted("Deleted.", true), "null\n");
        assert_eq!(deleted("Deleted.", false), "Deleted.\n");
    }
}
