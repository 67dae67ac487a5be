//! The pages' templates (`templates/*.html`, compiled in by askama, which HTML-escapes every
//! value it writes) and what each is given.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// What the layout shows: the page title and, when signed in, who.
#[derive(Debug)]
pub(crate) struct Layout {
    pub title: String,
    /// Which entry of the navigation is current.
    pub nav: &'static str,
    pub who: Option<Who>,
}

/// The signed-in caller as the header shows it.
#[derive(Debug)]
pub(crate) struct Who {
    pub token_name: String,
    pub role: &'static str,
    pub account: String,
    pub csrf: String,
    /// The instance operator (the accounts and keys pages).
    pub operator: bool,
    /// The role may manage the account (its tokens, its audit log): the navigation shows
    /// those pages only then.
    pub can_manage: bool,
}

#[derive(Template, Debug)]
#[template(path = "sign_in.html")]
pub(crate) struct SignIn {
    pub layout: Layout,
    pub next: Option<String>,
    pub error: Option<String>,
}

#[derive(Template, Debug)]
#[template(path = "message.html")]
pub(crate) struct Message {
    pub layout: Layout,
    pub heading: String,
    pub message: String,
}

/// Links to the pages before and after this one.
#[derive(Debug, Default)]
pub(crate) struct Pager {
    pub page: u32,
    pub pages: u64,
    pub prev: Option<String>,
    pub next: Option<String>,
}

#[derive(Debug)]
pub(crate) struct StoreRow {
    pub id: String,
    pub name: String,
    pub created: String,
    pub delete_error: Option<String>,
}

#[derive(Template, Debug)]
#[template(path = "stores.html")]
pub(crate) struct Stores {
    pub layout: Layout,
    pub csrf: String,
    pub can_edit: bool,
    pub stores: Vec<StoreRow>,
    pub total: u64,
    pub pager: Pager,
    /// What was typed into the create form, and what was wrong with it.
    pub name: String,
    pub name_error: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug)]
pub(crate) struct SecretRow {
    pub id: String,
    pub name: String,
    pub comment: String,
    pub scopes: String,
    pub modified: String,
    pub delete_error: Option<String>,
}

/// One option of a `<select>`.
#[derive(Debug)]
pub(crate) struct Choice {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

#[derive(Debug)]
pub(crate) struct ScopeBox {
    pub name: &'static str,
    pub checked: bool,
}

/// One row of the create form: what was typed (never the value) and its errors.
#[derive(Debug)]
pub(crate) struct FormRow {
    pub index: usize,
    pub number: usize,
    pub name: String,
    pub comment: String,
    pub scopes: Vec<ScopeBox>,
    pub name_error: Option<String>,
    pub value_error: Option<String>,
    pub scopes_error: Option<String>,
    pub comment_error: Option<String>,
}

#[derive(Template, Debug)]
#[template(path = "secrets.html")]
pub(crate) struct Secrets {
    pub layout: Layout,
    pub csrf: String,
    pub can_edit: bool,
    pub store_id: String,
    pub store_name: String,
    pub search: String,
    /// The scope filter's options and the sort's.
    pub scopes: Vec<Choice>,
    pub sorts: Vec<Choice>,
    pub filtered: bool,
    pub secrets: Vec<SecretRow>,
    pub total: u64,
    pub pager: Pager,
    pub rows: Vec<FormRow>,
    pub more_rows: usize,
    pub error: Option<String>,
}

#[derive(Template, Debug)]
#[template(path = "secret.html")]
pub(crate) struct SecretPage {
    pub layout: Layout,
    pub csrf: String,
    pub can_edit: bool,
    pub store_id: String,
    pub store_name: String,
    pub secret_id: String,
    pub name: String,
    pub scopes: String,
    pub comment: String,
    pub version: String,
    pub created: String,
    pub modified: String,
    /// The edit form (its `name` unused) and the duplicate form, as typed, with their errors.
    pub edit: FormRow,
    pub dup: FormRow,
    pub error: Option<String>,
}

#[derive(Debug)]
pub(crate) struct AccountRow {
    pub id: String,
    pub name: String,
    pub created: String,
    /// The quota in words (a number, or the server's default).
    pub quota: String,
    /// The quota field: what was typed, or the override.
    pub quota_typed: String,
    pub quota_error: Option<String>,
    /// The operator's own account (it cannot be deleted).
    pub own: bool,
    pub delete_error: Option<String>,
    pub first_token_name: String,
    pub first_token_error: Option<String>,
}

#[derive(Template, Debug)]
#[template(path = "accounts.html")]
pub(crate) struct Accounts {
    pub layout: Layout,
    pub csrf: String,
    /// The single-use nonce of the first-token forms.
    pub once: String,
    pub accounts: Vec<AccountRow>,
    pub name: String,
    pub name_error: Option<String>,
}

#[derive(Debug)]
pub(crate) struct KekRow {
    pub version: u32,
    pub kek_id: String,
    pub provider: &'static str,
    pub state: &'static str,
    pub created: String,
    pub deks: u64,
    pub instance_keys: u64,
    pub active: bool,
}

#[derive(Template, Debug)]
#[template(path = "keys.html")]
pub(crate) struct Keys {
    pub layout: Layout,
    pub csrf: String,
    pub active: u32,
    pub versions: Vec<KekRow>,
    pub rotation: Option<coffer_core::RotationReport>,
    pub reseal: Option<coffer_core::ResealStatus>,
    /// The stored DEKs: how many, the oldest's and the newest's creation with their ages, and
    /// how often an account's DEK is replaced, in words.
    pub dek_count: u64,
    pub dek_oldest: String,
    pub dek_newest: String,
    pub dek_refresh: String,
    pub error: Option<String>,
}

/// A new account's first token, its value shown this once ([`page_once`]; no `Debug`, which
/// would print the value).
#[derive(Template)]
#[template(path = "token_once.html")]
pub(crate) struct TokenOnce<'a> {
    pub layout: Layout,
    pub name: String,
    pub role: &'static str,
    pub account: String,
    pub value: &'a str,
    /// Where "Done" leads.
    pub back: String,
}

/// A rendered page with its status. A template that fails to render (it cannot, short of a
/// formatting error in a value's `Display`) is a 500 that says nothing more.
pub(crate) fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render a dashboard page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error · Coffer</title><p>Internal error.</p>"),
            )
                .into_response()
        }
    }
}

/// A page that carries a token's value, shown this once: rendered into a zeroizing buffer
/// (sized ahead, so growing it leaves no copy behind) that is wiped once the body is sent.
/// `no-store` like every dashboard page; the value is kept nowhere else.
pub(crate) fn page_once(status: StatusCode, template: &impl Template) -> Response {
    let mut html = zeroize::Zeroizing::new(String::with_capacity(ONCE_CAPACITY));
    match template.render_into(&mut *html) {
        Ok(()) => {
            let bytes = zeroize::Zeroizing::new(std::mem::take(&mut *html).into_bytes());
            let body = axum::body::Body::from(axum::body::Bytes::from_owner(bytes));
            let mut response = (status, body).into_response();
            response.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot render a dashboard page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error · Coffer</title><p>Internal error.</p>"),
            )
                .into_response()
        }
    }
}

/// Room for a page carrying a value (its HTML is a few KiB).
const ONCE_CAPACITY: usize = 64 * 1024;
