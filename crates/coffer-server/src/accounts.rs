//! Handlers of `/client/v4/accounts`: accounts (instance operator) and their quota override.

use axum::Json;
use axum::extract::State;
use coffer_api::{Account, CreateAccount, Envelope, UpdateAccount};
use coffer_storage::AccountRecord;

use crate::error::ApiResult;
use crate::extract::{Auth, JsonBody, PathIds};
use crate::state::AppState;
use crate::wire;

fn account(a: &AccountRecord) -> Account {
    Account {
        id: a.id.to_string(),
        name: a.name.clone(),
        created: a.created.to_rfc3339(),
        secrets_quota: a.secrets_quota,
    }
}

/// Every account for the operator; the caller's own account for anyone else.
pub async fn list_accounts(
    State(app): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<Json<Envelope<Vec<Account>>>> {
    let accounts: Vec<Account> = app
        .coffer
        .list_accounts(&who)
        .await?
        .iter()
        .map(account)
        .collect();
    Ok(Json(wire::whole_list(accounts)))
}

pub async fn create_account(
    State(app): State<AppState>,
    Auth(who): Auth,
    body: JsonBody,
) -> ApiResult<Json<Envelope<Account>>> {
    let req: CreateAccount = body.object()?;
    let record = app.coffer.create_account(&who, &req.name).await?;
    Ok(Json(Envelope::ok(account(&record))))
}

pub async fn get_account(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
) -> ApiResult<Json<Envelope<Account>>> {
    let record = app.coffer.get_account(&who, ids.account).await?;
    Ok(Json(Envelope::ok(account(&record))))
}

pub async fn update_account(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    body: JsonBody,
) -> ApiResult<Json<Envelope<Account>>> {
    let req: UpdateAccount = body.object()?;
    let record = app
        .coffer
        .update_account(&who, ids.account, req.secrets_quota)
        .await?;
    Ok(Json(Envelope::ok(account(&record))))
}

pub async fn delete_account(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
) -> ApiResult<Json<Envelope<()>>> {
    app.coffer.delete_account(&who, ids.account).await?;
    Ok(Json(Envelope {
        result: None,
        ..Envelope::ok(())
    }))
}
