//! The audit log page: the account's entries, newest first, filtered as the API's audit
//! endpoint filters them (the same `AuditQuery`: time range, actor, action, outcome, store,
//! secret) and paged; each entry's details in a disclosure; and the verification of the chain
//! (`Coffer::verify_audit`, as `GET .../audit_logs/verify` and `coffer audit verify`). Reading
//! it is `account:manage`, as on the API.

use askama::Template;
use coffer_core::{AuditAction, AuditOutcome};
use coffer_storage::{AuditQuery, AuditRecord};
use coffer_types::TokenId;
use serde_json::Value;

use super::*;

/// One entry as the page shows it.
#[derive(Debug)]
pub(crate) struct EntryRow {
    pub seq: u64,
    pub time: String,
    pub actor: String,
    /// The instance operator's token acted (shown as a badge).
    pub operator: bool,
    /// The actor's token id, to filter by.
    pub actor_id: Option<String>,
    pub action: String,
    pub outcome: String,
    pub resource: String,
    pub store_id: Option<String>,
    pub secret_id: Option<String>,
    pub hash: String,
    /// The entry's payload, pretty-printed.
    pub details: String,
}

/// The filter form as typed, with what was wrong.
#[derive(Debug, Default)]
pub(crate) struct Filters {
    pub from: String,
    pub to: String,
    pub actor: String,
    pub store_id: String,
    pub secret_id: String,
    pub from_error: Option<String>,
    pub to_error: Option<String>,
    pub actor_error: Option<String>,
    pub store_error: Option<String>,
    pub secret_error: Option<String>,
    pub action_error: Option<String>,
    pub outcome_error: Option<String>,
}

/// The verification's result as the page shows it.
#[derive(Debug)]
pub(crate) struct Verified {
    pub ok: bool,
    pub entries: u64,
    pub checkpoints: u64,
    pub head_seq: Option<u64>,
    pub head_hash: Option<String>,
    pub first_bad: Option<(u64, String)>,
}

#[derive(Template, Debug)]
#[template(path = "audit.html")]
pub(crate) struct AuditPage {
    pub layout: Layout,
    pub filters: Filters,
    pub actions: Vec<Choice>,
    pub outcomes: Vec<Choice>,
    pub filtered: bool,
    pub entries: Vec<EntryRow>,
    pub total: u64,
    pub pager: Pager,
    pub verified: Option<Verified>,
}

/// The query's filters, parsed as the API parses its query (each problem named beside its
/// field); `None` if any is wrong.
fn parse_filters(q: &Form, f: &mut Filters) -> Option<AuditQuery> {
    let text = |k: &str| q.get(k).unwrap_or_default().trim().to_owned();
    f.from = text("from");
    f.to = text("to");
    f.actor = text("actor");
    f.store_id = text("store_id");
    f.secret_id = text("secret_id");
    let from = parse_time("from", &f.from)
        .map_err(|e| f.from_error = Some(e))
        .ok();
    let to = parse_time("to", &f.to)
        .map_err(|e| f.to_error = Some(e))
        .ok();
    fn id<T>(
        name: &str,
        typed: &str,
        parse: fn(&str) -> Result<T, coffer_types::IdError>,
        error: &mut Option<String>,
    ) -> Option<Option<T>> {
        if typed.is_empty() {
            return Some(None);
        }
        parse(typed)
            .map(Some)
            .map_err(|e| *error = Some(format!("{name}: {e}")))
            .ok()
    }
    let actor = id("actor", &f.actor, TokenId::parse, &mut f.actor_error);
    let store = id(
        "store_id",
        &f.store_id,
        coffer_types::StoreId::parse,
        &mut f.store_error,
    );
    let secret = id(
        "secret_id",
        &f.secret_id,
        coffer_types::SecretId::parse,
        &mut f.secret_error,
    );
    // The API's rule for a word; the select offers the known ones.
    let word = |name: &str, error: &mut Option<String>| -> Option<Option<String>> {
        match q.get(name).map(str::trim) {
            None | Some("") => Some(None),
            Some(v) if v.len() <= 64 && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => {
                Some(Some(v.to_owned()))
            }
            Some(_) => {
                *error = Some(format!(
                    "{name}: must be a lowercase word such as \"create\""
                ));
                None
            }
        }
    };
    let action = word("action", &mut f.action_error);
    let outcome = word("outcome", &mut f.outcome_error);
    Some(AuditQuery {
        from: from?,
        to: to?,
        actor_token: actor?,
        action: action?,
        outcome: outcome?,
        store_id: store?,
        secret_id: secret?,
        page: page_number(q),
        per_page: PER_PAGE,
        direction: Direction::Desc,
    })
}

fn choices(words: Vec<&'static str>, selected: Option<&str>, any: &'static str) -> Vec<Choice> {
    std::iter::once(("", any))
        .chain(words.into_iter().map(|w| (w, w)))
        .map(|(value, label)| Choice {
            value,
            label,
            selected: selected.unwrap_or_default() == value,
        })
        .collect()
}

/// What an entry is about, in a few words: its type and the names it records (another kind's
/// name says which kind).
fn resource(payload: &Value) -> String {
    let r = &payload["resource"];
    let s = |k: &str| r[k].as_str().map(str::to_owned);
    let kind = s("type").unwrap_or_else(|| "?".to_owned());
    let mut parts = vec![kind.clone()];
    for (key, of) in [
        ("secret_name", "secret"),
        ("store_name", "store"),
        ("token_name", "token"),
        ("service_name", "service"),
        ("binding", "binding"),
        ("account_name", "account"),
        ("node_name", "node"),
    ] {
        if let Some(v) = s(key) {
            parts.push(if of == kind { v } else { format!("{of} {v}") });
        }
    }
    if parts.len() == 1 {
        for key in ["secret_id", "store_id", "token_id", "service_id", "node_id"] {
            if let Some(v) = s(key) {
                parts.push(v);
                break;
            }
        }
    }
    parts.join(" · ")
}

fn entry_row(r: &AuditRecord) -> EntryRow {
    let payload: Value = serde_json::from_slice(&r.entry.payload).unwrap_or(Value::Null);
    let actor = &payload["actor"];
    let actor_id = actor["token_id"].as_str().map(str::to_owned);
    let who = match (actor["token_name"].as_str(), &actor_id) {
        (Some(name), _) => name.to_owned(),
        (None, Some(id)) => format!("token {id}"),
        (None, None) => "anonymous".to_owned(),
    };
    EntryRow {
        // A badge of its own, not words after the name: a token may be named "x (operator)".
        operator: actor["operator"].as_bool() == Some(true),
        seq: r.seq,
        time: when(r.entry.at),
        actor: who,
        actor_id,
        action: r.entry.action.clone(),
        outcome: r.entry.outcome.clone(),
        resource: resource(&payload),
        store_id: r.entry.store_id.map(|id| id.to_string()),
        secret_id: r.entry.secret_id.map(|id| id.to_string()),
        hash: hex::encode(r.hash),
        details: serde_json::to_string_pretty(&payload).unwrap_or_default(),
    }
}

async fn render(d: &crate::Inner, s: &Signed, q: &Form, verified: Option<Verified>) -> Response {
    let mut filters = Filters::default();
    let query = parse_filters(q, &mut filters);
    let filtered = [
        &filters.from,
        &filters.to,
        &filters.actor,
        &filters.store_id,
        &filters.secret_id,
    ]
    .iter()
    .any(|v| !v.is_empty())
        || q.get("action").is_some_and(|v| !v.is_empty())
        || q.get("outcome").is_some_and(|v| !v.is_empty());
    let actions = choices(
        AuditAction::ALL.iter().map(|a| a.as_str()).collect(),
        q.get("action"),
        "any action",
    );
    let outcomes = choices(
        AuditOutcome::ALL.iter().map(|a| a.as_str()).collect(),
        q.get("outcome"),
        "any outcome",
    );
    let (status, entries, total, pager_) = match &query {
        Some(query) => {
            let list = match d.coffer.list_audit(&s.who, s.who.account_id, query).await {
                Ok(list) => list,
                Err(e) => return failure_page(&e, Some(s.who())),
            };
            // What the pager's links keep of the query.
            let mut kept = form_urlencoded::Serializer::new(String::new());
            for key in [
                "from",
                "to",
                "actor",
                "action",
                "outcome",
                "store_id",
                "secret_id",
            ] {
                if let Some(v) = q.get(key).map(str::trim).filter(|v| !v.is_empty()) {
                    kept.append_pair(key, v);
                }
            }
            let kept = kept.finish();
            let extra = if kept.is_empty() {
                kept
            } else {
                format!("&{kept}")
            };
            let pager_ = pager(
                &format!("{BASE}/audit"),
                &extra,
                query.page,
                list.total_count,
            );
            (
                StatusCode::OK,
                list.items.iter().map(entry_row).collect(),
                list.total_count,
                pager_,
            )
        }
        None => {
            // Core decides who may read the log, filters or not: a role that may not is
            // refused here as it would be with good filters.
            if !can_manage(s) {
                let e = CoreError::Forbidden(Permission::ManageAccount);
                return failure_page(&e, Some(s.who()));
            }
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Vec::new(),
                0,
                Pager::default(),
            )
        }
    };
    page(
        status,
        &AuditPage {
            layout: layout_at("Audit log".to_owned(), "audit", s),
            filters,
            actions,
            outcomes,
            filtered,
            entries,
            total,
            pager: pager_,
            verified,
        },
    )
}

/// `GET /audit`: the entries, newest first, filtered and paged.
pub(crate) async fn audit(
    axum::extract::State(d): State,
    s: Signed,
    RawQuery(q): RawQuery,
) -> Response {
    let q = Form::query(q.as_deref());
    render(&d, &s, &q, None).await
}

/// `GET /audit/verify`: the chain verified (a read: it changes nothing), shown above the log.
pub(crate) async fn verify_audit(axum::extract::State(d): State, s: Signed) -> Response {
    let v = match d.coffer.verify_audit(&s.who, s.who.account_id).await {
        Ok(v) => v,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let verified = Verified {
        ok: v.first_bad.is_none(),
        entries: v.entries_checked,
        checkpoints: v.checkpoints_checked,
        head_seq: v.head.map(|(seq, _)| seq),
        head_hash: v.head.map(|(_, hash)| hex::encode(hash)),
        first_bad: v.first_bad,
    };
    render(&d, &s, &Form::query(None), Some(verified)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_parsed_as_the_api_parses_them() {
        let mut f = Filters::default();
        let q = Form::query(Some(
            "from=2026-01-01T00:00&to=&actor=nothex&action=Create&store_id=&outcome=denied",
        ));
        assert!(parse_filters(&q, &mut f).is_none());
        assert!(f.from_error.is_none() && f.to_error.is_none());
        assert!(f.actor_error.as_deref().unwrap().starts_with("actor: "));
        assert_eq!(
            f.action_error.as_deref(),
            Some("action: must be a lowercase word such as \"create\"")
        );
        assert!(f.outcome_error.is_none());
        assert_eq!(f.actor, "nothex", "what was typed is kept");
        let mut f = Filters::default();
        let q = Form::query(Some("action=create&outcome=&page=2"));
        let query = parse_filters(&q, &mut f).unwrap();
        assert_eq!(query.action.as_deref(), Some("create"));
        assert_eq!(query.outcome, None);
        assert_eq!((query.page, query.direction), (2, Direction::Desc));
    }

    #[test]
    fn a_resource_is_named_by_what_the_entry_records() {
        let p: Value = serde_json::json!({
            "resource": { "type": "secret", "secret_name": "API_KEY", "store_name": "prod", "store_id": "ab" }
        });
        assert_eq!(resource(&p), "secret · API_KEY · store prod");
        let p: Value = serde_json::json!({ "resource": { "type": "store", "store_name": "prod" } });
        assert_eq!(resource(&p), "store · prod");
        let p: Value = serde_json::json!({ "resource": { "type": "token", "token_id": "cd" } });
        assert_eq!(resource(&p), "token · cd");
    }
}
