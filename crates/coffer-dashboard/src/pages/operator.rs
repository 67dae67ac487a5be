//! The instance operator's pages: **accounts** (the list, create, the secrets quota, delete,
//! and a new account's first token, shown once) and **keys** (the KEK's versions and what each
//! wraps, a rotation's progress, the DEK lifecycle job's; start a rotation). Other tokens get
//! a 403 page naming the permission, as core would refuse them anyway.

use coffer_core::{KekStatusReport, NewToken, Role};
use coffer_types::AccountId;

use super::*;
use crate::views::{AccountRow, Accounts, KekRow, Keys, TokenOnce, page_once};

fn operator_only(s: &Signed) -> Option<Response> {
    (!s.who.operator)
        .then(|| failure_page(&CoreError::Forbidden(Permission::Operator), Some(s.who())))
}

/// What the accounts page shows besides the list: the create form's input and error, and
/// which account's quota or delete form failed and why.
#[derive(Default)]
struct AccountsForm {
    name: String,
    name_error: Option<String>,
    /// The account, what was typed, and the message.
    quota: Option<(AccountId, String, String)>,
    delete: Option<(AccountId, String)>,
    first_token: Option<(AccountId, String, String)>,
}

async fn render_accounts(
    d: &crate::Inner,
    s: &Signed,
    form: AccountsForm,
    status: StatusCode,
) -> Response {
    let accounts = match d.coffer.list_accounts(&s.who).await {
        Ok(list) => list,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let error_of = |slot: &Option<(AccountId, String, String)>, id: AccountId| {
        slot.as_ref()
            .filter(|(a, _, _)| *a == id)
            .map(|(_, typed, e)| (typed.clone(), e.clone()))
    };
    let rows = accounts
        .iter()
        .map(|a| {
            let quota = error_of(&form.quota, a.id);
            let first = error_of(&form.first_token, a.id);
            AccountRow {
                id: a.id.to_string(),
                name: a.name.clone(),
                created: when(a.created),
                quota: a
                    .secrets_quota
                    .map_or_else(|| "the server's default".to_owned(), |q| q.to_string()),
                quota_typed: quota.as_ref().map_or_else(
                    || a.secrets_quota.map(|q| q.to_string()).unwrap_or_default(),
                    |(t, _)| t.clone(),
                ),
                quota_error: quota.map(|(_, e)| e),
                own: a.id == s.who.account_id,
                delete_error: form
                    .delete
                    .as_ref()
                    .filter(|(id, _)| *id == a.id)
                    .map(|(_, e)| e.clone()),
                first_token_name: first.as_ref().map(|(t, _)| t.clone()).unwrap_or_default(),
                first_token_error: first.map(|(_, e)| e),
            }
        })
        .collect();
    page(
        status,
        &Accounts {
            layout: layout_at("Accounts".to_owned(), "accounts", s),
            csrf: s.csrf.clone(),
            once: s.once(d),
            accounts: rows,
            name: form.name,
            name_error: form.name_error,
        },
    )
}

/// `GET /accounts`
pub(crate) async fn accounts(axum::extract::State(d): State, s: Signed) -> Response {
    if let Some(r) = operator_only(&s) {
        return r;
    }
    render_accounts(&d, &s, AccountsForm::default(), StatusCode::OK).await
}

/// The account a form of an account's row is about, if the caller is the operator and the id
/// parses (the form's CSRF check is [`SignedForm`]'s).
fn account_form(s: &Signed, id: &str) -> Result<AccountId, Box<Response>> {
    if let Some(r) = operator_only(s) {
        return Err(Box::new(r));
    }
    id_of(id, AccountId::parse).ok_or_else(|| Box::new(not_found(s, "account")))
}

/// `POST /accounts`: create (`Coffer::create_account`, as `POST /client/v4/accounts`).
pub(crate) async fn create_account(
    axum::extract::State(d): State,
    SignedForm { s, form }: SignedForm,
) -> Response {
    if let Some(r) = operator_only(&s) {
        return r;
    }
    let typed = form.get("name").unwrap_or_default().to_owned();
    match d.coffer.create_account(&s.who, typed.trim()).await {
        Ok(_) => Redirect::to(&format!("{BASE}/accounts")).into_response(),
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() {
                return failure_page(&e, Some(s.who()));
            }
            let f = AccountsForm {
                name: typed,
                name_error: Some(message),
                ..AccountsForm::default()
            };
            render_accounts(&d, &s, f, status).await
        }
    }
}

/// The quota field: empty clears the account's override (the server's default applies), a
/// whole number sets it.
fn parse_quota(typed: &str) -> Result<Option<u64>, String> {
    let typed = typed.trim();
    if typed.is_empty() {
        return Ok(None);
    }
    typed.parse::<u64>().map(Some).map_err(|_| {
        "secrets_quota: a whole number of secrets, or empty for the server's default".to_owned()
    })
}

/// `POST /accounts/{id}/quota` (`Coffer::update_account`, as `PATCH /client/v4/accounts/{id}`).
pub(crate) async fn set_quota(
    axum::extract::State(d): State,
    Path(id): Path<String>,
    SignedForm { s, form }: SignedForm,
) -> Response {
    let account = match account_form(&s, &id) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let typed = form.get("secrets_quota").unwrap_or_default().to_owned();
    let refused = |message: String, status| {
        let f = AccountsForm {
            quota: Some((account, typed.clone(), message)),
            ..AccountsForm::default()
        };
        render_accounts(&d, &s, f, status)
    };
    let quota = match parse_quota(&typed) {
        Ok(q) => q,
        Err(message) => return refused(message, StatusCode::UNPROCESSABLE_ENTITY).await,
    };
    match d.coffer.update_account(&s.who, account, Some(quota)).await {
        Ok(_) => Redirect::to(&format!("{BASE}/accounts")).into_response(),
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() {
                return failure_page(&e, Some(s.who()));
            }
            refused(message, status).await
        }
    }
}

/// `POST /accounts/{id}/delete`: the account's name typed to confirm (`Coffer::delete_account`,
/// as `DELETE /client/v4/accounts/{id}`).
pub(crate) async fn delete_account(
    axum::extract::State(d): State,
    Path(id): Path<String>,
    SignedForm { s, form }: SignedForm,
) -> Response {
    let account = match account_form(&s, &id) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let record = match d.coffer.get_account(&s.who, account).await {
        Ok(r) => r,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    let refused = |message: String, status| {
        let f = AccountsForm {
            delete: Some((account, message)),
            ..AccountsForm::default()
        };
        render_accounts(&d, &s, f, status)
    };
    if form.get("confirm").map(str::trim) != Some(record.name.trim()) {
        let message = format!("type the account's name, {}, to confirm", record.name);
        return refused(message, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    match d.coffer.delete_account(&s.who, account).await {
        Ok(()) => Redirect::to(&format!("{BASE}/accounts")).into_response(),
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() {
                return failure_page(&e, Some(s.who()));
            }
            refused(message, status).await
        }
    }
}

/// `POST /accounts/{id}/first-token`: an account's first token, a super_admin (what the
/// operator may make in another account, once: `Coffer::create_token`). The answer shows its
/// value this once.
pub(crate) async fn first_token(
    axum::extract::State(d): State,
    Path(id): Path<String>,
    SignedForm { s, form }: SignedForm,
) -> Response {
    let account = match account_form(&s, &id) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    if let Some(r) = s.replayed(&d, &form) {
        return r;
    }
    let typed = form.get("name").unwrap_or_default().to_owned();
    let new = NewToken {
        name: typed.trim().to_owned(),
        role: Role::SuperAdmin,
        expires: None,
    };
    match d.coffer.create_token(&s.who, account, new).await {
        Ok((record, token)) => page_once(
            StatusCode::OK,
            &TokenOnce {
                layout: layout_at("New token".to_owned(), "accounts", &s),
                name: record.name,
                role: Role::SuperAdmin.as_str(),
                account: account.to_string(),
                value: token.expose_secret(),
                back: format!("{BASE}/accounts"),
            },
        ),
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() {
                return failure_page(&e, Some(s.who()));
            }
            let f = AccountsForm {
                first_token: Some((account, typed, message)),
                ..AccountsForm::default()
            };
            render_accounts(&d, &s, f, status).await
        }
    }
}

/// A duration in the largest whole unit that fits: "3 days", "5 h", "12 min", "40 s".
fn span(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 3_600 => format!("{} h", s / 3_600),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// When `t` was, and how long ago.
fn when_ago(t: Option<coffer_types::Timestamp>, now: coffer_types::Timestamp) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| {
            let micros = now.unix_micros().saturating_sub(t.unix_micros()).max(0);
            let ago = std::time::Duration::from_micros(u64::try_from(micros).unwrap_or(0));
            format!("{} ({} ago)", when(t), span(ago))
        },
    )
}

fn keys_view(
    s: &Signed,
    report: KekStatusReport,
    deks: coffer_core::DekAges,
    error: Option<String>,
) -> Keys {
    let now = coffer_types::Timestamp::now();
    let rows = report
        .versions
        .iter()
        .map(|v| KekRow {
            version: v.version.version,
            kek_id: v.version.kek_id.to_string(),
            provider: v.version.provider,
            state: v.version.state.as_str(),
            created: when(v.version.created),
            deks: v.deks,
            instance_keys: v.instance_keys,
            active: v.version.version == report.active.version,
        })
        .collect();
    Keys {
        layout: layout_at("Keys".to_owned(), "keys", s),
        csrf: s.csrf.clone(),
        active: report.active.version,
        versions: rows,
        rotation: report.rotation,
        reseal: report.reseal,
        dek_count: deks.count,
        dek_oldest: when_ago(deks.oldest, now),
        dek_newest: when_ago(deks.newest, now),
        dek_refresh: span(deks.max_age),
        error,
    }
}

async fn render_keys(
    d: &crate::Inner,
    s: &Signed,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let report = match d.coffer.kek_status(&s.who).await {
        Ok(report) => report,
        Err(e) => return failure_page(&e, Some(s.who())),
    };
    match d.coffer.dek_ages(&s.who).await {
        Ok(deks) => page(status, &keys_view(s, report, deks, error)),
        Err(e) => failure_page(&e, Some(s.who())),
    }
}

/// `GET /keys` (`Coffer::kek_status`, as `coffer kek status`).
pub(crate) async fn keys(axum::extract::State(d): State, s: Signed) -> Response {
    if let Some(r) = operator_only(&s) {
        return r;
    }
    render_keys(&d, &s, None, StatusCode::OK).await
}

/// `POST /keys/rotate` (`Coffer::start_kek_rotation`, as `coffer kek rotate`).
pub(crate) async fn rotate(
    axum::extract::State(d): State,
    SignedForm { s, .. }: SignedForm,
) -> Response {
    if let Some(r) = operator_only(&s) {
        return r;
    }
    match d.coffer.start_kek_rotation(&s.who).await {
        Ok(_) => Redirect::to(&format!("{BASE}/keys")).into_response(),
        Err(e) => {
            let (status, message) = describe(&e);
            if status.is_server_error() {
                return failure_page(&e, Some(s.who()));
            }
            render_keys(&d, &s, Some(message), status).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_in_their_largest_whole_unit() {
        let s = |secs| span(std::time::Duration::from_secs(secs));
        assert_eq!(
            [
                s(40),
                s(60),
                s(3_599),
                s(3_600),
                s(86_400 * 2 - 1),
                s(86_400 * 9)
            ],
            ["40 s", "1 min", "59 min", "1 h", "47 h", "9 days"]
        );
    }

    #[test]
    fn a_quota_is_a_whole_number_or_empty() {
        assert_eq!(parse_quota(" 250 "), Ok(Some(250)));
        assert_eq!(parse_quota(""), Ok(None));
        assert_eq!(parse_quota("  "), Ok(None));
        for bad in ["-1", "2.5", "ten", "99999999999999999999999"] {
            assert!(
                parse_quota(bad).unwrap_err().starts_with("secrets_quota:"),
                "{bad}"
            );
        }
    }
}
