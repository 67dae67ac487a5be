//! One secret's page: what is known of it (never its value), and, for a role that may edit,
//! editing its value, scopes and comment (`Coffer::update_secret`, as `PATCH .../secrets/{id}`)
//! and duplicating it (`Coffer::duplicate_secret`, as `POST .../secrets/{id}/duplicate`).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use coffer_core::{Comment, CoreError, DuplicateSecret, UpdateSecret, check_value};
use coffer_crypto::Plaintext;
use coffer_storage::SecretRecord;
use coffer_types::{Scopes, SecretId, SecretName, StoreId};

use crate::errors::{describe, failure_page};
use crate::forms::Form;
use crate::pages::{blank_row, can_edit, id_of, layout, not_found};
use crate::sign_in::{Signed, SignedForm};
use crate::views::{FormRow, SecretPage, page};
use crate::{BASE, Inner, State};

/// A form row showing `secret`'s scopes and comment.
fn row_of(secret: &SecretRecord) -> FormRow {
    let mut row = blank_row(0);
    row.comment = secret.comment.clone();
    for b in &mut row.scopes {
        b.checked = secret.scopes.iter().any(|s| s.as_str() == b.name);
    }
    row
}

/// The row as typed into `form` (never its value).
fn typed_row(form: &Form) -> FormRow {
    let mut row = blank_row(0);
    row.name = form.get("name").unwrap_or_default().to_owned();
    row.comment = form.get_text("comment").unwrap_or_default();
    for b in &mut row.scopes {
        b.checked = form.all("scopes").any(|t| t == b.name);
    }
    row
}

fn parse_scopes(form: &Form, row: &mut FormRow) -> Option<Scopes> {
    let typed: Vec<&str> = form.all("scopes").collect();
    if typed.is_empty() {
        row.scopes_error = Some("scopes: at least one scope is required".to_owned());
        return None;
    }
    Scopes::parse(&typed)
        .map_err(|e| row.scopes_error = Some(format!("scopes: {e}")))
        .ok()
}

fn parse_comment(form: &Form, row: &mut FormRow) -> Option<Comment> {
    Comment::parse(form.get_text("comment").unwrap_or_default(), "comment")
        .map_err(|e| row.comment_error = Some(describe(&e).1))
        .ok()
}

/// Which of the page's forms was sent back, as typed.
enum Sent {
    None,
    Edit(FormRow),
    Duplicate(FormRow),
}

async fn render(
    d: &Inner,
    s: &Signed,
    store_id: StoreId,
    secret_id: SecretId,
    sent: Sent,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let account = s.who.account_id;
    let store = match d.coffer.get_store(&s.who, account, store_id).await {
        Ok(store) => store,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let secret = match d
        .coffer
        .get_secret(&s.who, account, store_id, secret_id)
        .await
    {
        Ok(secret) => secret,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let (edit, dup) = match sent {
        Sent::None => (row_of(&secret), row_of(&secret)),
        Sent::Edit(row) => (row, row_of(&secret)),
        Sent::Duplicate(row) => (row_of(&secret), row),
    };
    // A role that may not edit sees no form: a refusal goes in the banner.
    let error = if can_edit(s) {
        error
    } else {
        error.or(edit.name_error.clone()).or(dup.name_error.clone())
    };
    page(
        status,
        &SecretPage {
            layout: layout(secret.name.to_string(), s),
            csrf: s.csrf.clone(),
            can_edit: can_edit(s),
            store_id: store_id.to_string(),
            store_name: store.name.to_string(),
            secret_id: secret_id.to_string(),
            name: secret.name.to_string(),
            scopes: secret.scopes.to_strings().join(", "),
            comment: secret.comment.clone(),
            version: secret.version.to_string(),
            created: secret.created.to_rfc3339(),
            modified: secret.modified.to_rfc3339(),
            edit,
            dup,
            error,
        },
    )
}

fn ids(store: &str, secret: &str) -> Option<(StoreId, SecretId)> {
    Some((
        id_of(store, StoreId::parse)?,
        id_of(secret, SecretId::parse)?,
    ))
}

/// `GET /stores/{id}/secrets/{secret}`
pub(crate) async fn show(
    axum::extract::State(d): State,
    s: Signed,
    Path((store, secret)): Path<(String, String)>,
) -> Response {
    let Some((store, secret)) = ids(&store, &secret) else {
        return not_found(&s, "secret");
    };
    render(&d, &s, store, secret, Sent::None, None, StatusCode::OK).await
}

/// The form's error shown beside its field: a core refusal that names no field goes in the
/// banner (a 5xx as its own page).
fn refused(e: &CoreError, row: &mut FormRow) -> Result<(StatusCode, Option<String>), ()> {
    let (status, message) = describe(e);
    if status.is_server_error() || matches!(e, CoreError::NotFound(_)) {
        return Err(());
    }
    match e {
        CoreError::NameTaken { .. } => {
            row.name_error = Some(message);
            Ok((status, None))
        }
        _ => Ok((status, Some(message))),
    }
}

/// `POST /stores/{id}/secrets/{secret}`: a new value (if one is typed), the scopes and the
/// comment.
pub(crate) async fn edit(
    axum::extract::State(d): State,
    Path((store, secret)): Path<(String, String)>,
    SignedForm { s, mut form }: SignedForm,
) -> Response {
    let Some((store, secret)) = ids(&store, &secret) else {
        return not_found(&s, "secret");
    };
    let mut row = typed_row(&form);
    let scopes = parse_scopes(&form, &mut row);
    let comment = parse_comment(&form, &mut row);
    let value = match form.take_text("value") {
        Some(v) if !v.is_empty() => {
            let value = Plaintext::new(v.as_bytes().to_vec());
            match check_value(&value, "value") {
                Ok(()) => Some(Some(value)),
                Err(e) => {
                    row.value_error = Some(describe(&e).1);
                    None
                }
            }
        }
        _ => Some(None),
    };
    drop(form);
    let (Some(scopes), Some(comment), Some(value)) = (scopes, comment, value) else {
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return render(&d, &s, store, secret, Sent::Edit(row), None, status).await;
    };
    let update = UpdateSecret {
        value,
        scopes: Some(scopes),
        comment: Some(comment),
    };
    let account = s.who.account_id;
    match d
        .coffer
        .update_secret(&s.who, account, store, secret, update)
        .await
    {
        Ok(_) => Redirect::to(&format!("{BASE}/stores/{store}/secrets/{secret}")).into_response(),
        Err(e) => match refused(&e, &mut row) {
            Ok((status, error)) => {
                render(&d, &s, store, secret, Sent::Edit(row), error, status).await
            }
            Err(()) => failure_page(&e, Some(s.who())),
        },
    }
}

/// `POST /stores/{id}/secrets/{secret}/duplicate`: a new secret with this one's value.
pub(crate) async fn duplicate(
    axum::extract::State(d): State,
    Path((store, secret)): Path<(String, String)>,
    SignedForm { s, form }: SignedForm,
) -> Response {
    let Some((store, secret)) = ids(&store, &secret) else {
        return not_found(&s, "secret");
    };
    let mut row = typed_row(&form);
    let name = SecretName::parse(row.name.trim())
        .map_err(|e| row.name_error = Some(format!("name: name {e}")))
        .ok();
    let scopes = parse_scopes(&form, &mut row);
    let comment = parse_comment(&form, &mut row);
    let (Some(name), Some(scopes), Some(comment)) = (name, scopes, comment) else {
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return render(&d, &s, store, secret, Sent::Duplicate(row), None, status).await;
    };
    let dup = DuplicateSecret {
        name,
        scopes,
        comment: Some(comment),
    };
    let account = s.who.account_id;
    match d
        .coffer
        .duplicate_secret(&s.who, account, store, secret, dup)
        .await
    {
        Ok(copy) => {
            Redirect::to(&format!("{BASE}/stores/{store}/secrets/{}", copy.id)).into_response()
        }
        Err(e) => match refused(&e, &mut row) {
            Ok((status, error)) => {
                render(&d, &s, store, secret, Sent::Duplicate(row), error, status).await
            }
            Err(()) => failure_page(&e, Some(s.who())),
        },
    }
}
