//! Stores and secrets: their tables, lists, and what `secret create` made.

use coffer_client::{Page, Secret, Store};
use serde::Serialize;

use super::{Format, json_text, page_footer, page_json, time};
use crate::commands::bound::{Binder, BindingKind};
use crate::table::Table;

/// Every column: `--wide` (and wrangler's secret columns). A default table leaves out some and
/// fits [`crate::table::WIDTH`].
const STORE_COLUMNS: [&str; 5] = ["Name", "ID", "AccountID", "Created", "Modified"];
const SECRET_COLUMNS: [&str; 8] = [
    "Name", "ID", "StoreID", "Comment", "Scopes", "Status", "Created", "Modified",
];

fn stores_table(stores: &[Store], format: Format) -> String {
    let mut t = Table::new(&STORE_COLUMNS)
        .wide_only(&["AccountID"])
        .flexible(&["Name"]);
    for s in stores {
        t.row(vec![
            s.name.clone(),
            s.id.clone(),
            s.account_id.clone().unwrap_or_default(),
            time(&s.created),
            time(&s.modified),
        ]);
    }
    t.render(format.wide())
}

/// The store (a list is of one store, which the command named), the status and the times are
/// left out by default.
fn secrets_table(secrets: &[Secret], format: Format) -> String {
    let mut t = Table::new(&SECRET_COLUMNS)
        .wide_only(&["StoreID", "Status", "Created", "Modified"])
        .flexible(&["Name", "Comment", "Scopes"]);
    for s in secrets {
        t.row(vec![
            s.name.clone(),
            s.id.clone(),
            s.store_id.clone(),
            s.comment.clone(),
            s.scopes.join(","),
            s.status.clone(),
            time(&s.created),
            time(&s.modified),
        ]);
    }
    t.render(format.wide())
}

pub fn store_list(page: &Page<Store>, format: Format) -> String {
    if format.json() {
        return page_json(page);
    }
    if page.items.is_empty() {
        return if page.result_info.total_count == 0 {
            "No stores yet. Create one with `coffer store create --name NAME`.\n".to_owned()
        } else {
            page_footer(page, "stores")
        };
    }
    stores_table(&page.items, format) + &page_footer(page, "stores")
}

pub fn secret_list(page: &Page<Secret>, format: Format) -> String {
    if format.json() {
        return page_json(page);
    }
    if page.items.is_empty() && page.result_info.total_count == 0 {
        return "No secrets found.\n".to_owned();
    }
    secrets_table(&page.items, format) + &page_footer(page, "secrets")
}

pub fn store(store: &Store, format: Format) -> String {
    if format.json() {
        return json_text(store);
    }
    stores_table(std::slice::from_ref(store), format)
}

pub fn secret(secret: &Secret, format: Format) -> String {
    if format.json() {
        return json_text(secret);
    }
    secrets_table(std::slice::from_ref(secret), format)
}

pub fn secrets_created(secrets: &[Secret], format: Format) -> String {
    if format.json() {
        return json_text(secrets);
    }
    secrets_table(secrets, format)
}

/// `secret get`: the secret's metadata and the services that bind it.
#[derive(Serialize)]
struct SecretJson<'a> {
    #[serde(flatten)]
    secret: &'a Secret,
    bound_by: &'a [Binder],
}

pub fn secret_with_binders(secret: &Secret, binders: &[Binder], format: Format) -> String {
    if format.json() {
        return json_text(&SecretJson {
            secret,
            bound_by: binders,
        });
    }
    let mut text = self::secret(secret, format);
    text.push('\n');
    if binders.is_empty() {
        text.push_str("Bound by no service.\n");
        return text;
    }
    let mut t = Table::new(&["Service", "Type", "Binding", "Reads it"]);
    for b in binders {
        t.row(vec![
            b.service.clone(),
            b.service_type.clone(),
            match b.kind {
                BindingKind::Store => format!("{} (store)", b.binding),
                BindingKind::Secret => b.binding.clone(),
            },
            if b.readable {
                "yes".to_owned()
            } else {
                format!("no: the secret lacks scope {}", b.service_type)
            },
        ]);
    }
    text.push_str(&t.render(format.wide()));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::page;

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

    #[test]
    fn secret_table_leaves_out_the_store_and_escapes_comments() {
        let out = secret(&sample_secret(), Format::Table);
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["Name", "ID", "Comment", "Scopes"]);
        lines.next();
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "openai-key",
                &"b".repeat(32),
                "prod\\nkey",
                "workers,ai_gateway"
            ]
        );
        assert_eq!(lines.next(), None);
        // --wide: wrangler's columns.
        let out = secret(&sample_secret(), Format::Wide);
        let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, SECRET_COLUMNS);
        assert!(out.contains(&"a".repeat(32)), "{out}");
    }

    #[test]
    fn list_json_wraps_result_and_result_info() {
        let out = secret_list(&page(vec![sample_secret()], 11), Format::Json);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["result"][0]["name"], "openai-key");
        assert_eq!(v["result_info"]["total_count"], 11);
    }

    #[test]
    fn list_footer_counts_pages() {
        let out = secret_list(&page(vec![sample_secret()], 11), Format::Table);
        assert!(
            out.ends_with("page 1 of 2 (10 per page, 11 secrets in all)\n"),
            "{out}"
        );
        let out = secret_list(&page(vec![sample_secret()], 1), Format::Table);
        assert!(
            out.ends_with("page 1 of 1 (10 per page, 1 secret in all)\n"),
            "{out}"
        );
        assert_eq!(
            secret_list(&page(vec![], 0), Format::Table),
            "No secrets found.\n"
        );
        assert!(store_list(&page(vec![], 0), Format::Table).starts_with("No stores yet."));
    }
}
