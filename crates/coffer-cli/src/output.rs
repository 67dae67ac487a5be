//! How results are shown: tables for people, JSON for programs.
//!
//! `--json` prints the API's `result`: an object for one item, the array for `secret create`,
//! `{"result": [...], "result_info": {...}}` for lists (so that scripts can page), and `null`
//! for deletes; a new token is also `token`, whatever its kind. Tables fit 100 columns unless
//! `--wide` (see `table`).

use std::io::Write;

use coffer_client::{
    Account, AuditVerification, CreatedNode, CreatedToken, DeployedService, Node, Page, Quota,
    ResultInfo, RotatedServiceToken, Secret, SecretValue, Service, ServiceToken, Store, Token,
};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::args::ConnArgs;
use crate::table::{Table, one_line};

mod audit;
mod whoami;

pub use audit::audit_list;
pub use whoami::whoami;

/// Every column: `--wide` (and wrangler's secret columns). A default table leaves out some and
/// fits [`crate::table::WIDTH`].
const STORE_COLUMNS: [&str; 5] = ["Name", "ID", "AccountID", "Created", "Modified"];
const SECRET_COLUMNS: [&str; 8] = [
    "Name", "ID", "StoreID", "Comment", "Scopes", "Status", "Created", "Modified",
];
const ACCOUNT_COLUMNS: [&str; 4] = ["Name", "ID", "Created", "Secrets quota"];
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

/// How a result is shown: a table that fits 100 columns, every column (`--wide`), or the API's
/// JSON (`--json`, which wins over `--wide`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Wide,
    Json,
}

impl Format {
    pub fn of(conn: &ConnArgs) -> Format {
        match (conn.json, conn.wide) {
            (true, _) => Format::Json,
            (false, true) => Format::Wide,
            (false, false) => Format::Table,
        }
    }

    pub fn json(self) -> bool {
        self == Format::Json
    }

    fn wide(self) -> bool {
        self == Format::Wide
    }
}

/// An optional time to the second, or `none` for its absence.
fn time_or(at: Option<&str>, none: &str) -> String {
    at.map_or_else(|| none.to_owned(), time)
}

/// An RFC 3339 time to the second, in UTC as the server wrote it: `2025-01-31T23:30:00Z`
/// (fractions of a second dropped). Anything else is shown as it came, made safe.
pub fn time(at: &str) -> String {
    use coffer_types::Timestamp;
    match Timestamp::parse_rfc3339(at) {
        Some(t) => {
            let micros = t.unix_micros();
            Timestamp::from_unix_micros(micros - micros.rem_euclid(1_000_000)).to_rfc3339()
        }
        None => one_line(at),
    }
}

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

/// The `--json` form of a result holding a new token (API, service or node token): the API's
/// result as it came, where the token has the name the API gives that kind (`value`,
/// `service_token`, `node_token`, kept for the scripts that read them), and the token once more
/// as `token`, the one name for every kind.
#[derive(Serialize)]
struct WithToken<'a, T> {
    #[serde(flatten)]
    result: &'a T,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a SecretValue>,
}

/// [`WithToken`] as text, zeroized on drop.
fn with_token<T: Serialize>(result: &T, token: Option<&SecretValue>) -> Zeroizing<String> {
    Zeroizing::new(json_text(&WithToken { result, token }))
}

/// The `--json` form of a list.
#[derive(Serialize)]
struct ListJson<'a, T> {
    result: &'a [T],
    result_info: &'a ResultInfo,
}

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

/// `page 1 of 3 (10 per page, 25 secrets in all)`.
fn page_footer<T>(page: &Page<T>, noun: &str) -> String {
    let noun = if page.result_info.total_count == 1 {
        match noun.strip_suffix("ies") {
            Some(stem) => format!("{stem}y"),
            None => noun.trim_end_matches('s').to_owned(),
        }
    } else {
        noun.to_owned()
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
    let mut text = Zeroizing::new(format!(
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

/// `audit verify` of a log that checks out: counts and the head to record elsewhere. Under
/// `--json`, the verification result whatever it says.
pub fn audit_verification(v: &AuditVerification, format: Format) -> String {
    if format.json() {
        return json_text(v);
    }
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let head = match (v.head_seq, &v.head_hash) {
        (Some(seq), Some(hash)) => format!("head #{seq} {}", one_line(hash)),
        (Some(seq), None) => format!("head #{seq}"),
        _ => "no head (the log is empty)".to_owned(),
    };
    format!(
        "audit log OK: {}, {}; {head}\n",
        plural(v.entries_checked, "entry", "entries"),
        plural(v.checkpoints_checked, "checkpoint", "checkpoints"),
    )
}

const SERVICE_COLUMNS: [&str; 6] = ["Name", "ID", "Type", "Bindings", "Created", "Modified"];
const BINDING_COLUMNS: [&str; 3] = ["Binding", "Store", "Secret"];
const SERVICE_TOKEN_COLUMNS: [&str; 4] = ["ID", "Status", "Issued", "Revoked"];

fn services_table(services: &[Service], format: Format) -> String {
    let mut t = Table::new(&SERVICE_COLUMNS)
        .wide_only(&["Created"])
        .flexible(&["Name"]);
    for s in services {
        t.row(vec![
            s.name.clone(),
            s.id.clone(),
            s.kind.clone(),
            (s.secrets_store_secrets.len() + s.secrets_store_stores.len()).to_string(),
            time(&s.created),
            time(&s.modified),
        ]);
    }
    t.render(format.wide())
}

/// Each binding and what it reaches: a secret of a store, or every secret of a store that
/// carries the service's type.
fn bindings_table(service: &Service, format: Format) -> String {
    if service.secrets_store_secrets.is_empty() && service.secrets_store_stores.is_empty() {
        return "No bindings.\n".to_owned();
    }
    let mut t = Table::new(&BINDING_COLUMNS).flexible(&["Binding", "Secret"]);
    for b in &service.secrets_store_secrets {
        t.row(vec![
            b.binding.clone(),
            b.store_id.clone(),
            b.secret_name.clone(),
        ]);
    }
    for b in &service.secrets_store_stores {
        t.row(vec![
            b.binding.clone(),
            b.store_id.clone(),
            format!("(every secret with scope {})", service.kind),
        ]);
    }
    t.render(format.wide())
}

pub fn service_list(page: &Page<Service>, format: Format) -> String {
    if format.json() {
        return page_json(page);
    }
    if page.items.is_empty() && page.result_info.total_count == 0 {
        return "No services found. Deploy one with `coffer deploy --config wrangler.toml`.\n"
            .to_owned();
    }
    services_table(&page.items, format) + &page_footer(page, "services")
}

/// `service get`: the service, then its bindings.
pub fn service(service: &Service, format: Format) -> String {
    if format.json() {
        return json_text(service);
    }
    services_table(std::slice::from_ref(service), format) + "\n" + &bindings_table(service, format)
}

/// `deploy`: what was deployed and, on the first deploy, the service token with a warning that
/// it is shown once. Under `--json`, the API's result as it came (token included). The text is
/// zeroized on drop.
pub fn service_deployed(deployed: &DeployedService, format: Format) -> Zeroizing<String> {
    if format.json() {
        return with_token(deployed, deployed.service_token.as_ref());
    }
    let service = &deployed.service;
    let count = service.secrets_store_secrets.len() + service.secrets_store_stores.len();
    let mut text = Zeroizing::new(format!(
        "Deployed service {name} ({how}): type {kind}, {count} binding{s}.\n\
         \n\
         \x20 Service ID:  {id}\n\
         \n",
        name = one_line(&service.name),
        how = if deployed.created {
            "created"
        } else {
            "updated"
        },
        kind = one_line(&service.kind),
        s = if count == 1 { "" } else { "s" },
        id = one_line(&service.id),
    ));
    text.push_str(&bindings_table(service, format));
    if let Some(token) = &deployed.service_token {
        text.push_str("\n  Service token:  ");
        text.push_str(&Zeroizing::new(one_line(token.expose_secret())));
        text.push_str(&format!(
            "\n\n\
             The service token is shown only now and cannot be recovered: store it now. The\n\
             service reads its bindings with it: COFFER_SERVICE_TOKEN=... coffer run -- CMD.\n\
             A new one: coffer service token rotate {}\n",
            one_line(&service.name)
        ));
    }
    text
}

fn service_tokens_table(tokens: &[ServiceToken], format: Format) -> String {
    let mut t = Table::new(&SERVICE_TOKEN_COLUMNS);
    for token in tokens {
        t.row(vec![
            token.id.clone(),
            token.status.clone(),
            time(&token.issued_on),
            time_or(token.revoked_on.as_deref(), "-"),
        ]);
    }
    t.render(format.wide())
}

pub fn service_token_list(page: &Page<ServiceToken>, format: Format) -> String {
    if format.json() {
        return page_json(page);
    }
    if page.items.is_empty() {
        return "No tokens for this service.\n".to_owned();
    }
    service_tokens_table(&page.items, format)
}

/// `service token rotate`: the new token, once, and what was revoked. Zeroized on drop.
pub fn service_token_rotated(
    rotated: &RotatedServiceToken,
    service_name: &str,
    format: Format,
) -> Zeroizing<String> {
    if format.json() {
        return with_token(rotated, Some(&rotated.service_token));
    }
    let previous = match rotated.revoked.len() {
        0 => "no other token was revoked".to_owned(),
        1 => "revoked 1 previous token".to_owned(),
        n => format!("revoked {n} previous tokens"),
    };
    let mut text = Zeroizing::new(format!(
        "Issued a new token for service {name}; {previous}.\n\
         \n\
         \x20 Token ID:       {id}\n\
         \x20 Service token:  ",
        name = one_line(service_name),
        id = one_line(&rotated.token.id),
    ));
    text.push_str(&Zeroizing::new(one_line(
        rotated.service_token.expose_secret(),
    )));
    text.push_str(
        "\n\n\
         The service token is shown only now and cannot be recovered: store it now, and give it\n\
         to the service as COFFER_SERVICE_TOKEN.\n",
    );
    text
}

/// `service token revoke` of every active token: how many, or the tokens under `--json`.
pub fn service_tokens_revoked(
    revoked: &[ServiceToken],
    service_name: &str,
    format: Format,
) -> String {
    if format.json() {
        return json_text(revoked);
    }
    let name = one_line(service_name);
    match revoked.len() {
        0 => format!("Service {name} had no active token; nothing was revoked.\n"),
        1 => format!("Revoked 1 token of service {name}; it no longer works.\n"),
        n => format!("Revoked {n} tokens of service {name}; they no longer work.\n"),
    }
}

/// `service token revoke --token-id`: a confirmation, or the token under `--json`.
pub fn service_token_revoked(token: &ServiceToken, service_name: &str, format: Format) -> String {
    if format.json() {
        return json_text(token);
    }
    format!(
        "Revoked token {} of service {}; it no longer works.\n",
        one_line(&token.id),
        one_line(service_name)
    )
}

const NODE_COLUMNS: [&str; 4] = ["Name", "ID", "Created", "Revoked"];

fn nodes_table(nodes: &[Node], format: Format) -> String {
    let mut t = Table::new(&NODE_COLUMNS).flexible(&["Name"]);
    for node in nodes {
        t.row(vec![
            node.name.clone(),
            node.id.clone(),
            time(&node.created),
            time_or(node.revoked.as_deref(), "-"),
        ]);
    }
    t.render(format.wide())
}

pub fn node_list(page: &Page<Node>, format: Format) -> String {
    if format.json() {
        return page_json(page);
    }
    if page.items.is_empty() {
        return "No edge nodes registered.\n".to_owned();
    }
    nodes_table(&page.items, format)
}

/// `node create`: the only output that ever holds a node's token. Under `--json`, the node's
/// fields and `node_token`; otherwise the node, the token, and a warning that it is shown once.
/// The text is zeroized on drop.
pub fn node_created(created: &CreatedNode, format: Format) -> Zeroizing<String> {
    if format.json() {
        return with_token(created, Some(&created.node_token));
    }
    let mut text = Zeroizing::new(format!(
        "Registered edge node {name}.\n\
         \n\
         \x20 Node ID:     {id}\n\
         \x20 Node token:  ",
        name = one_line(&created.node.name),
        id = one_line(&created.node.id),
    ));
    // Escaped like everything else from the server, in case it is not a plain token.
    text.push_str(&Zeroizing::new(one_line(
        created.node_token.expose_secret(),
    )));
    text.push_str(
        "\n\n\
         The node token is shown only now and cannot be recovered: store it now, in the edge\n\
         node's configuration. It can read the replication feed and nothing else.\n",
    );
    text
}

/// `node revoke`: a confirmation, or the node (now with its `revoked` time) under `--json`.
pub fn node_revoked(node: &Node, format: Format) -> String {
    if format.json() {
        return json_text(node);
    }
    format!(
        "Revoked edge node {} ({}); its token no longer works.\n",
        one_line(&node.name),
        one_line(&node.id)
    )
}

/// A delete's confirmation, or `null` under `--json`.
pub fn deleted(message: &str, format: Format) -> String {
    if format.json() {
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

    fn sample_node(revoked: Option<&str>) -> Node {
        Node {
            id: "e".repeat(32),
            name: "edge-1".into(),
            created: "2025-01-01T00:00:00Z".into(),
            revoked: revoked.map(str::to_owned),
        }
    }

    #[test]
    fn nodes_show_their_token_once_and_list_with_their_revocation() {
        let created = CreatedNode {
            node: sample_node(None),
            node_token: coffer_client::SecretValue::new("coffernode_x_s3cr3t".into()),
        };
        let v: serde_json::Value =
            serde_json::from_str(&node_created(&created, Format::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "e".repeat(32),
                "name": "edge-1",
                "created": "2025-01-01T00:00:00Z",
                "revoked": null,
                "node_token": "coffernode_x_s3cr3t",
                "token": "coffernode_x_s3cr3t",
            })
        );
        let text = node_created(&created, Format::Table);
        assert_eq!(text.matches("coffernode_x_s3cr3t").count(), 1, "{}", *text);
        assert!(
            text.contains("  Node token:  coffernode_x_s3cr3t\n"),
            "{}",
            *text
        );
        assert!(text.contains(&format!("  Node ID:     {}\n", "e".repeat(32))));
        assert!(text.contains("store it now"), "{}", *text);

        let nodes = Page {
            items: vec![
                sample_node(Some("2025-01-02T00:00:00Z")),
                Node {
                    name: "edge-\u{1b}[31m2".into(),
                    ..sample_node(None)
                },
            ],
            result_info: ResultInfo {
                page: 1,
                per_page: 2,
                count: 2,
                total_count: 2,
            },
        };
        let table = node_list(&nodes, Format::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "header, rule, two rows: {table}");
        for column in NODE_COLUMNS {
            assert!(lines[0].contains(column), "{table}");
        }
        assert!(lines[2].contains("2025-01-02T00:00:00Z"), "{table}");
        assert!(lines[3].trim_end().ends_with(" -"), "not revoked: {table}");
        assert!(!table.contains('\u{1b}'), "control characters are escaped");
        let v: serde_json::Value = serde_json::from_str(&node_list(&nodes, Format::Json)).unwrap();
        assert_eq!(v["result"][0]["revoked"], "2025-01-02T00:00:00Z");
        assert_eq!(v["result_info"]["total_count"], 2);
        let empty = Page {
            items: vec![],
            result_info: ResultInfo {
                count: 0,
                total_count: 0,
                ..nodes.result_info
            },
        };
        assert_eq!(
            node_list(&empty, Format::Table),
            "No edge nodes registered.\n"
        );

        let revoked = node_revoked(&sample_node(Some("2025-01-02T00:00:00Z")), Format::Table);
        assert_eq!(
            revoked,
            format!(
                "Revoked edge node edge-1 ({}); its token no longer works.\n",
                "e".repeat(32)
            )
        );
        let v: serde_json::Value =
            serde_json::from_str(&node_revoked(&sample_node(Some("t")), Format::Json)).unwrap();
        assert_eq!(v["revoked"], "t");
    }

    #[test]
    fn audit_verification_states_counts_and_head() {
        let mut v = AuditVerification {
            ok: true,
            entries_checked: 12,
            checkpoints_checked: 1,
            head_seq: Some(12),
            head_hash: Some("cd".repeat(32)),
            first_bad: None,
        };
        assert_eq!(
            audit_verification(&v, Format::Table),
            format!(
                "audit log OK: 12 entries, 1 checkpoint; head #12 {}\n",
                "cd".repeat(32)
            )
        );
        let j: serde_json::Value =
            serde_json::from_str(&audit_verification(&v, Format::Json)).unwrap();
        assert_eq!(j["ok"], true);
        assert_eq!(j["entries_checked"], 12);
        assert_eq!(j["head_hash"], "cd".repeat(32));
        assert_eq!(j["first_bad"], serde_json::Value::Null);

        v.entries_checked = 0;
        v.checkpoints_checked = 0;
        v.head_seq = None;
        v.head_hash = None;
        assert_eq!(
            audit_verification(&v, Format::Table),
            "audit log OK: 0 entries, 0 checkpoints; no head (the log is empty)\n"
        );
    }

    fn sample_service() -> Service {
        Service {
            id: "c".repeat(32),
            name: "ai-gateway".into(),
            kind: "workers".into(),
            secrets_store_secrets: vec![coffer_client::SecretBinding {
                binding: "OPENAI_KEY".into(),
                store_id: "a".repeat(32),
                secret_name: "openai-key".into(),
            }],
            secrets_store_stores: vec![coffer_client::StoreBinding {
                binding: "SHARED".into(),
                store_id: "b".repeat(32),
            }],
            created: "2025-01-01T00:00:00Z".into(),
            modified: "2025-01-02T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_first_deploy_shows_bindings_and_the_token_once() {
        let deployed = DeployedService {
            service: sample_service(),
            created: true,
            service_token: Some(coffer_client::SecretValue::new("coffersvc_x_s3cr3t".into())),
        };
        let text = service_deployed(&deployed, Format::Table);
        assert!(
            text.starts_with(
                "Deployed service ai-gateway (created): type workers, 2 bindings.\n\n  Service ID:  "
            ),
            "{}",
            *text
        );
        let row = |binding: &str| -> Vec<String> {
            text.lines()
                .find(|l| l.starts_with(binding))
                .unwrap()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            row("OPENAI_KEY"),
            ["OPENAI_KEY", &"a".repeat(32), "openai-key"]
        );
        assert_eq!(
            row("SHARED").join(" "),
            format!(
                "SHARED {} (every secret with scope workers)",
                "b".repeat(32)
            )
        );
        assert_eq!(text.matches("coffersvc_x_s3cr3t").count(), 1, "{}", *text);
        assert!(text.contains("  Service token:  coffersvc_x_s3cr3t\n"));
        assert!(text.contains("shown only now"));
        assert!(text.contains("coffer service token rotate ai-gateway"));

        // A redeploy has no token; --json is the result as the API sent it.
        let redeploy = DeployedService {
            service: sample_service(),
            created: false,
            service_token: None,
        };
        let text = service_deployed(&redeploy, Format::Table);
        assert!(text.starts_with("Deployed service ai-gateway (updated)"));
        assert!(!text.contains("token"), "{}", *text);
        let v: serde_json::Value =
            serde_json::from_str(&service_deployed(&deployed, Format::Json)).unwrap();
        assert_eq!(v["service_token"], "coffersvc_x_s3cr3t");
        assert_eq!(v["name"], "ai-gateway");
        assert_eq!(v["first_deploy"], true);
        assert_eq!(v["created"], "2025-01-01T00:00:00Z");
    }

    #[test]
    fn services_and_their_tokens_in_tables() {
        let out = service_list(&page(vec![sample_service()], 1), Format::Table);
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["Name", "ID", "Type", "Bindings", "Modified"]);
        lines.next();
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(row[..4], ["ai-gateway", &"c".repeat(32), "workers", "2"]);
        let wide = service_list(&page(vec![sample_service()], 1), Format::Wide);
        let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, SERVICE_COLUMNS);
        assert!(out.ends_with("(10 per page, 1 service in all)\n"), "{out}");
        assert!(service_list(&page(vec![], 0), Format::Table).starts_with("No services found."));
        let out = service(&sample_service(), Format::Table);
        assert!(out.contains("\nBinding "), "{out}");
        let mut bare = sample_service();
        bare.secrets_store_secrets.clear();
        bare.secrets_store_stores.clear();
        assert!(service(&bare, Format::Table).ends_with("\nNo bindings.\n"));

        let token = ServiceToken {
            id: "d".repeat(32),
            service_id: "c".repeat(32),
            status: "revoked".into(),
            issued_on: "2025-01-01T00:00:00Z".into(),
            revoked_on: Some("2025-01-02T00:00:00Z".into()),
        };
        let out = service_token_list(&page(vec![token.clone()], 1), Format::Table);
        assert!(
            out.lines()
                .nth(2)
                .unwrap()
                .ends_with("2025-01-02T00:00:00Z")
        );
        assert_eq!(
            service_token_list(&page(vec![], 0), Format::Table),
            "No tokens for this service.\n"
        );
        let rotated = RotatedServiceToken {
            token: ServiceToken {
                status: "active".into(),
                revoked_on: None,
                ..token.clone()
            },
            service_token: coffer_client::SecretValue::new("coffersvc_y_n3w".into()),
            revoked: vec![token.clone(), token.clone()],
        };
        let text = service_token_rotated(&rotated, "ai-gateway", Format::Table);
        assert!(
            text.starts_with(
                "Issued a new token for service ai-gateway; revoked 2 previous tokens."
            )
        );
        assert_eq!(text.matches("coffersvc_y_n3w").count(), 1);
        let v: serde_json::Value =
            serde_json::from_str(&service_token_rotated(&rotated, "x", Format::Json)).unwrap();
        assert_eq!(v["service_token"], "coffersvc_y_n3w");
        assert_eq!(v["revoked"].as_array().unwrap().len(), 2);
        assert_eq!(
            service_tokens_revoked(&[], "app", Format::Table),
            "Service app had no active token; nothing was revoked.\n"
        );
        assert!(
            service_tokens_revoked(std::slice::from_ref(&token), "app", Format::Table)
                .starts_with("Revoked 1 token")
        );
        assert!(
            service_token_revoked(&token, "app", Format::Table)
                .starts_with(&format!("Revoked token {}", token.id))
        );
    }

    #[test]
    fn quota_and_deletes() {
        let q = Quota {
            secrets: QuotaDetail {
                quota: 100,
                usage: 3,
            },
        };
        assert_eq!(
            quota(&q, Format::Table),
            "secrets: 3 used of 100 (97 left)\n"
        );
        let v: serde_json::Value = serde_json::from_str(&quota(&q, Format::Json)).unwrap();
        assert_eq!(v["secrets"]["usage"], 3);
        assert_eq!(deleted("Deleted.", Format::Json), "null\n");
        assert_eq!(deleted("Deleted.", Format::Table), "Deleted.\n");
    }
}
