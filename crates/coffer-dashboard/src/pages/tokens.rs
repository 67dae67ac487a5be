//! The tokens page: the account's API tokens (paged), create (the new token's value shown on
//! the answer page, once) and revoke. Managing tokens is `account:manage` (a super_admin):
//! core refuses everyone else, the list included, so no other role is shown the page at all.

use askama::Template;
use coffer_core::{NewToken, Role};
use coffer_storage::TokenRecord;
use coffer_types::{Timestamp, TokenId};

use super::*;
use crate::views::page_once;

#[derive(Debug)]
pub(crate) struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub status: &'static str,
    pub expires: String,
    pub last_used: String,
    pub created: String,
    /// The token this session is signed in with.
    pub current: bool,
    /// Active and not the operator's (which the API does not revoke).
    pub revocable: bool,
    pub revoke_error: Option<String>,
}

#[derive(Template, Debug)]
#[template(path = "tokens.html")]
pub(crate) struct TokensPage {
    pub layout: Layout,
    pub csrf: String,
    /// The single-use nonce of the form that mints a token.
    pub once: String,
    pub tokens: Vec<TokenRow>,
    pub total: u64,
    pub pager: Pager,
    pub roles: Vec<Choice>,
    pub name: String,
    pub expires: String,
    pub name_error: Option<String>,
    pub role_error: Option<String>,
    pub expires_error: Option<String>,
    pub error: Option<String>,
}

/// The answer to a create: the new token, its value shown this once.
#[derive(Template)]
#[template(path = "token_created.html")]
pub(crate) struct TokenCreated<'a> {
    pub layout: Layout,
    pub name: String,
    pub role: &'static str,
    pub expires: String,
    pub value: &'a str,
}

/// A token's status as the API's token endpoint gives it.
pub(crate) fn status(t: &TokenRecord) -> &'static str {
    if t.revoked.is_some() {
        "revoked"
    } else if t.expires.is_some_and(|at| at <= Timestamp::now()) {
        "expired"
    } else {
        "active"
    }
}

/// What the tokens page shows besides the list: the create form as typed, and errors.
#[derive(Default)]
struct TokensForm {
    name: String,
    role: String,
    expires: String,
    name_error: Option<String>,
    role_error: Option<String>,
    expires_error: Option<String>,
    error: Option<String>,
    revoke: Option<(TokenId, String)>,
}

fn role_choices(selected: &str) -> Vec<Choice> {
    // The least a new token may do is the default choice.
    let selected = if selected.is_empty() {
        Role::SecretsStoreReporter.as_str()
    } else {
        selected
    };
    Role::ALL
        .iter()
        .map(|r| Choice {
            value: r.as_str(),
            label: r.as_str(),
            selected: r.as_str() == selected,
        })
        .collect()
}

async fn render_tokens(
    d: &crate::Inner,
    s: &Signed,
    page_no: u32,
    form: TokensForm,
    status_code: StatusCode,
) -> Response {
    let mut list = match d.coffer.list_tokens(&s.who, s.who.account_id).await {
        Ok(list) => list,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    // Newest first.
    list.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    let total = list.len() as u64;
    let tokens = page_of(list, page_no)
        .iter()
        .map(|t| TokenRow {
            id: t.id.to_string(),
            name: t.name.clone(),
            role: t.role.clone(),
            status: status(t),
            expires: t.expires.map(when).unwrap_or_else(|| "never".to_owned()),
            last_used: t.last_used.map(when).unwrap_or_else(|| "never".to_owned()),
            created: when(t.created),
            current: t.id == s.who.token_id,
            revocable: t.revoked.is_none() && !t.operator,
            revoke_error: form
                .revoke
                .as_ref()
                .filter(|(id, _)| *id == t.id)
                .map(|(_, e)| e.clone()),
        })
        .collect();
    page(
        status_code,
        &TokensPage {
            layout: layout_at("Tokens".to_owned(), "tokens", s),
            csrf: s.csrf.clone(),
            once: s.once(d),
            tokens,
            total,
            pager: pager(&format!("{BASE}/tokens"), "", page_no, total),
            roles: role_choices(&form.role),
            name: form.name,
            expires: form.expires,
            name_error: form.name_error,
            role_error: form.role_error,
            expires_error: form.expires_error,
            error: form.error,
        },
    )
}

/// `GET /tokens`
pub(crate) async fn tokens(
    axum::extract::State(d): State,
    s: Signed,
    RawQuery(q): RawQuery,
) -> Response {
    let q = Form::query(q.as_deref());
    render_tokens(
        &d,
        &s,
        page_number(&q),
        TokensForm::default(),
        StatusCode::OK,
    )
    .await
}

/// `POST /tokens`: create (`Coffer::create_token`, as `POST .../tokens`); the answer page shows
/// the value once.
pub(crate) async fn create_token(
    axum::extract::State(d): State,
    SignedForm { s, form }: SignedForm,
) -> Response {
    if let Some(r) = s.replayed(&d, &form) {
        return r;
    }
    let mut typed = TokensForm {
        name: form.get("name").unwrap_or_default().to_owned(),
        role: form.get("role").unwrap_or_default().to_owned(),
        expires: form.get("expires").unwrap_or_default().to_owned(),
        ..TokensForm::default()
    };
    let role = Role::parse(&typed.role);
    if role.is_none() {
        let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        typed.role_error = Some(format!(
            "role: unknown role (known roles: {})",
            known.join(", ")
        ));
    }
    let expires = parse_time("expires", &typed.expires)
        .map_err(|e| typed.expires_error = Some(e))
        .ok();
    let (Some(role), Some(expires)) = (role, expires) else {
        return render_tokens(&d, &s, 1, typed, StatusCode::UNPROCESSABLE_ENTITY).await;
    };
    let new = NewToken {
        name: typed.name.trim().to_owned(),
        role,
        expires,
    };
    match d.coffer.create_token(&s.who, s.who.account_id, new).await {
        Ok((record, value)) => page_once(
            StatusCode::OK,
            &TokenCreated {
                layout: layout_at("Token created".to_owned(), "tokens", &s),
                name: record.name.clone(),
                role: role.as_str(),
                expires: record
                    .expires
                    .map(when)
                    .unwrap_or_else(|| "never".to_owned()),
                value: value.expose_secret(),
            },
        ),
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() {
                return failure_page(&e, Some(s.who()));
            }
            match &e {
                CoreError::Invalid(i) if i.field.contains("expires") => {
                    typed.expires_error = Some(message)
                }
                CoreError::Invalid(_) => typed.name_error = Some(message),
                _ => typed.error = Some(message),
            }
            render_tokens(&d, &s, 1, typed, status).await
        }
    }
}

/// `POST /tokens/{id}/revoke` (`Coffer::revoke_token`, as `DELETE .../tokens/{id}`).
pub(crate) async fn revoke_token(
    axum::extract::State(d): State,
    Path(token_id): Path<String>,
    SignedForm { s, .. }: SignedForm,
) -> Response {
    let Some(token_id) = id_of(&token_id, TokenId::parse) else {
        return not_found(&s, "token");
    };
    match d
        .coffer
        .revoke_token(&s.who, s.who.account_id, token_id)
        .await
    {
        // Revoking the session's own token ends the session: the next page is sign-in.
        Ok(_) => Redirect::to(&format!("{BASE}/tokens")).into_response(),
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() || matches!(e, CoreError::Forbidden(_)) {
                return failure_page(&e, Some(s.who()));
            }
            let f = TokensForm {
                revoke: Some((token_id, message.clone())),
                error: matches!(e, CoreError::NotFound(_)).then_some(message),
                ..TokensForm::default()
            };
            render_tokens(&d, &s, 1, f, status).await
        }
    }
}
