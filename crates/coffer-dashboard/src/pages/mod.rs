//! The stores and secrets pages. Each action parses its form as the API parses its body and
//! calls the same `Coffer` method as the API's handler; what the role may not do is not shown,
//! and core refuses it anyway. What they share is here; the stores' pages are in `stores.rs`,
//! a store's secrets in `secrets.rs`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
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
use crate::sign_in::Signed;
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
    Layout {
        title,
        nav: "stores",
        who: Some(s.who()),
    }
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

mod operator;
mod secrets;
mod stores;

pub(crate) use operator::{
    accounts, create_account, delete_account, first_token, keys, rotate, set_quota,
};
pub(crate) use secrets::{blank_row, create_secrets, delete_secret, secrets};
pub(crate) use stores::{create_store, delete_store, stores};

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
}
