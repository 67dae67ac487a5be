//! Handlers of `/client/v4/accounts/{account_id}/kek`: an account's own KEK (instance operator
//! only). Answers name keys by public id and location; never key material or a PIN.

use axum::Json;
use axum::extract::State;
use coffer_api::{AccountKek, AccountKekUsage, Envelope, SetAccountKek};
use coffer_core::{AccountKekReport, AccountKekSpec};

use crate::error::ApiResult;
use crate::extract::{Auth, JsonBody, PathIds};
use crate::state::AppState;

type Reply<T> = ApiResult<Json<Envelope<T>>>;

fn wire(r: AccountKekReport) -> AccountKek {
    let rewrap = if r.rewrap_running {
        "running"
    } else if r.rewrap_error.is_some() {
        "failed"
    } else {
        "done"
    };
    let state = if r.unavailable.is_some() {
        "unavailable"
    } else {
        "available"
    };
    let (wrapped_by, kek_id, provider, location) = match r.own {
        Some(own) => (
            "account",
            own.kek_id.0,
            Some(own.provider),
            Some(own.location),
        ),
        None => ("instance", r.instance_kek_id, None, None),
    };
    AccountKek {
        account_id: r.account.to_string(),
        wrapped_by: wrapped_by.to_owned(),
        kek_id,
        provider,
        location,
        state: state.to_owned(),
        deks: r
            .deks
            .into_iter()
            .map(|u| AccountKekUsage {
                kek_id: u.kek_id,
                deks: u.deks,
            })
            .collect(),
        rewrap: rewrap.to_owned(),
        error: r.rewrap_error.or(r.unavailable),
    }
}

/// `GET /client/v4/accounts/{account_id}/kek`: which KEK wraps the account's DEKs.
pub async fn get(State(app): State<AppState>, Auth(who): Auth, ids: PathIds) -> Reply<AccountKek> {
    let report = app.coffer.account_kek_status(&who, ids.account).await?;
    Ok(Json(Envelope::ok(wire(report))))
}

/// `PUT /client/v4/accounts/{account_id}/kek`: gives the account a KEK of its own; its DEKs
/// are rewrapped onto it in the background. 409 `account_kek_exists` if it has one.
pub async fn set(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    body: JsonBody,
) -> Reply<AccountKek> {
    let req: SetAccountKek = body.object()?;
    let spec = AccountKekSpec::parse(&req.kek)?;
    let report = app.coffer.set_account_kek(&who, ids.account, spec).await?;
    Ok(Json(Envelope::ok(wire(report))))
}
