//! The dashboard's pages. Each action parses its form as the API parses its body and calls the
//! same `Coffer` method as the API's handler; what the role may not do is not shown, and core
//! refuses it anyway. What they share is here (paging, times as forms type them); the stores'
//! pages are in `stores.rs`, a store's secrets in `secrets.rs`, services in `services.rs`, API
//! tokens in `tokens.rs`, the audit log in `audit.rs`, the quota in `quota.rs`.

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use coffer_core::{
    Comment, CoreError, CreateSecretItem, MAX_PAGE, MAX_SEARCH_BYTES, Permission, SecretListQuery,
    StoreListQuery, check_value,
};
use coffer_crypto::Plaintext;
use coffer_storage::{Direction, SecretOrder, StoreOrder};
use coffer_types::{Scope, Scopes, SecretId, SecretName, StoreId, StoreName};

use crate::errors::{describe, failure_page, message_page};
use crate::forms::Form;
use crate::sign_in::{Signed, SignedForm};
use crate::views::{
    Choice, FormRow, Layout, Pager, ScopeBox, SecretRow, Secrets, StoreRow, Stores, page,
};
use crate::{BASE, State};

/// Rows per page of a list.
pub const PER_PAGE: u32 = 25;
/// Secrets one create form may hold.
pub const MAX_FORM_ROWS: usize = 50;

pub(crate) async fn home() -> Response {
    Redirect::to(&format!("{BASE}/stores")).into_response()
}

pub(crate) fn layout(title: String, s: &Signed) -> Layout {
    layout_at(title, "stores", s)
}

/// The layout of a page under the navigation's entry `nav`.
pub(crate) fn layout_at(title: String, nav: &'static str, s: &Signed) -> Layout {
    Layout {
        title,
        nav,
        who: Some(s.who()),
    }
}

pub(crate) fn can_manage(s: &Signed) -> bool {
    s.who.role.allows(Permission::ManageAccount)
}

pub(crate) fn can_bind(s: &Signed) -> bool {
    s.who.role.allows(Permission::Bind)
}

pub(crate) fn can_edit(s: &Signed) -> bool {
    s.who.role.allows(Permission::Edit)
}

/// The `page` parameter: 1 when absent or not a number, at most the API's [`MAX_PAGE`].
fn page_number(q: &Form) -> u32 {
    q.get("page")
        .and_then(|p| p.trim().parse::<u64>().ok())
        .map_or(1, |p| p.clamp(1, u64::from(MAX_PAGE)) as u32)
}

/// The `search` parameter, trimmed and cut to the API's [`MAX_SEARCH_BYTES`] (at a character's
/// edge).
fn search_text(q: &Form) -> String {
    let search = q.get("search").unwrap_or_default().trim();
    let mut end = search.len().min(MAX_SEARCH_BYTES);
    while !search.is_char_boundary(end) {
        end -= 1;
    }
    search[..end].to_owned()
}

fn pager(base: &str, extra: &str, page: u32, total: u64) -> Pager {
    let pages = total.div_ceil(u64::from(PER_PAGE)).max(1);
    let link = |p: u32| format!("{base}?page={p}{extra}");
    Pager {
        page,
        pages,
        prev: (page > 1).then(|| link(page - 1)),
        next: (u64::from(page) < pages).then(|| link(page + 1)),
    }
}

pub(crate) fn id_of<T>(s: &str, parse: fn(&str) -> Result<T, coffer_types::IdError>) -> Option<T> {
    parse(s).ok()
}

pub(crate) fn not_found(s: &Signed, what: &str) -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "Not found",
        format!("{what} not found"),
        Some(s.who()),
    )
}

/// `items`' page `page` of [`PER_PAGE`] (a list core gives whole).
fn page_of<T>(items: Vec<T>, page: u32) -> Vec<T> {
    let skip = (page.saturating_sub(1) as usize).saturating_mul(PER_PAGE as usize);
    items
        .into_iter()
        .skip(skip)
        .take(PER_PAGE as usize)
        .collect()
}

/// A date-time typed into a form: RFC 3339 as the API takes it, or what a
/// `datetime-local` field sends (`2026-12-07T10:30`, seconds optional), read as UTC. Empty is
/// `Ok(None)`.
fn parse_time(field: &str, typed: &str) -> Result<Option<coffer_types::Timestamp>, String> {
    let typed = typed.trim();
    if typed.is_empty() {
        return Ok(None);
    }
    let local = typed.len() >= 16 && typed.as_bytes().get(10) == Some(&b'T');
    let attempts = [
        typed.to_owned(),
        format!("{typed}Z"),
        format!("{typed}:00Z"),
    ];
    let tries = if local { &attempts[..] } else { &attempts[..1] };
    tries
        .iter()
        .find_map(|t| coffer_types::Timestamp::parse_rfc3339(t))
        .map(Some)
        .ok_or_else(|| format!("{field}: must be an RFC 3339 date-time, or a date and time (UTC)"))
}

/// A timestamp as the pages show it: RFC 3339 to the second, UTC.
fn when(t: coffer_types::Timestamp) -> String {
    let s = t.to_rfc3339();
    match (s.find('.'), s.ends_with('Z')) {
        (Some(dot), true) => format!("{}Z", &s[..dot]),
        _ => s,
    }
}

mod audit;
mod edges;
mod operator;
mod quota;
mod secrets;
mod services;
mod stores;
mod tokens;

pub(crate) use audit::{audit, verify_audit};
pub(crate) use edges::{create_node, edges, revoke_node};
pub(crate) use operator::{
    accounts, create_account, delete_account, first_token, keys, rotate, set_quota,
};
pub(crate) use quota::quota;
pub(crate) use secrets::{blank_row, create_secrets, delete_secret, secrets};
pub(crate) use services::{revoke_service_token, rotate_service_token, service, services};
pub(crate) use stores::{create_store, delete_store, stores};
pub(crate) use tokens::{create_token, revoke_token, tokens};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_and_search_keep_the_apis_limits() {
        let q = |s: &str| Form::query(Some(s));
        assert_eq!(page_number(&q("page=0")), 1);
        assert_eq!(page_number(&q("page=x")), 1);
        assert_eq!(page_number(&q("page=7")), 7);
        assert_eq!(page_number(&q("page=99999999999")), MAX_PAGE);
        let long = "ü".repeat(200);
        let cut = search_text(&q(&format!("search={long}")));
        assert!(cut.len() <= MAX_SEARCH_BYTES && cut.len() >= MAX_SEARCH_BYTES - 1);
        assert!(long.starts_with(&cut));
        assert_eq!(search_text(&q("search=+db+")), "db");
    }

    #[test]
    fn times_are_rfc3339_or_a_local_date_time_read_as_utc() {
        let t = |s: &str| parse_time("from", s);
        assert_eq!(t("  "), Ok(None));
        let z = t("2026-12-07T10:30:00Z").unwrap().unwrap();
        assert_eq!(t("2026-12-07T10:30").unwrap(), Some(z));
        assert_eq!(t("2026-12-07T10:30:00").unwrap(), Some(z));
        assert_eq!(t("2026-12-07T11:30:00+01:00").unwrap(), Some(z));
        let e = t("yesterday").unwrap_err();
        assert!(e.starts_with("from: must be an RFC 3339 date-time"), "{e}");
        assert_eq!(when(z), "2026-12-07T10:30:00Z");
    }

    #[test]
    fn a_whole_list_is_cut_into_pages() {
        let items: Vec<u32> = (0..60).collect();
        assert_eq!(page_of(items.clone(), 1), (0..25).collect::<Vec<_>>());
        assert_eq!(page_of(items.clone(), 3), (50..60).collect::<Vec<_>>());
        assert!(page_of(items, 4).is_empty());
    }
}
