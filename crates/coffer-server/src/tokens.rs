//! Handlers of `/client/v4/accounts/{account_id}/tokens`: API tokens of an account.

use axum::Json;
use axum::extract::State;
use coffer_api::{CreateToken, CreatedToken, Envelope, ErrorCode, SecretValue, Token};
use coffer_core::{NewToken, Role};
use coffer_storage::TokenRecord;
use coffer_types::Timestamp;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, JsonBody, PathIds};
use crate::state::AppState;
use crate::wire;

fn token(t: &TokenRecord) -> Token {
    let now = Timestamp::now();
    let status = if t.revoked.is_some() {
        "revoked"
    } else if t.expires.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "active"
    };
    Token {
        id: t.id.to_string(),
        name: t.name.clone(),
        role: t.role.clone(),
        status: status.to_owned(),
        issued_on: t.created.to_rfc3339(),
        expires_on: t.expires.map(Timestamp::to_rfc3339),
        last_used_on: t.last_used.map(Timestamp::to_rfc3339),
        revoked_on: t.revoked.map(Timestamp::to_rfc3339),
        operator: t.operator,
    }
}

pub async fn create_token(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    body: JsonBody,
) -> ApiResult<Json<Envelope<CreatedToken>>> {
    let req: CreateToken = body.object()?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        ApiError::at(
            ErrorCode::InvalidRole,
            "/role",
            format!("/role: unknown role (known roles: {})", known.join(", ")),
        )
    })?;
    let expires = req
        .expires_on
        .as_deref()
        .map(|s| {
            Timestamp::parse_rfc3339(s).ok_or_else(|| {
                ApiError::at(
                    ErrorCode::InvalidExpiry,
                    "/expires_on",
                    "/expires_on: must be an RFC 3339 date-time",
                )
            })
        })
        .transpose()?;
    let (record, value) = app
        .coffer
        .create_token(
            &who,
            ids.account,
            NewToken {
                name: req.name,
                role,
                expires,
            },
        )
        .await?;
    let created = CreatedToken {
        token: token(&record),
        value: SecretValue::new(value.expose_secret().to_owned()),
    };
    Ok(Json(Envelope::ok(created)))
}

pub async fn list_tokens(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
) -> ApiResult<Json<Envelope<Vec<Token>>>> {
    let tokens: Vec<Token> = app
        .coffer
        .list_tokens(&who, ids.account)
        .await?
        .iter()
        .map(token)
        .collect();
    Ok(Json(wire::whole_list(tokens)))
}

pub async fn get_token(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
) -> ApiResult<Json<Envelope<Token>>> {
    let record = app
        .coffer
        .get_token(&who, ids.account, ids.token()?)
        .await?;
    Ok(Json(Envelope::ok(token(&record))))
}

/// `DELETE .../tokens/{token_id}` revokes the token (the record stays, as `revoked`).
pub async fn revoke_token(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
) -> ApiResult<Json<Envelope<Token>>> {
    let record = app
        .coffer
        .revoke_token(&who, ids.account, ids.token()?)
        .await?;
    Ok(Json(Envelope::ok(token(&record))))
}

/// `POST /client/v4/operator/token/rotate` (instance operator only): a new operator token,
/// whose value is in this answer and never again; every earlier operator token, the caller's
/// own included, stops working at once.
pub async fn rotate_operator_token(
    State(app): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<Json<Envelope<CreatedToken>>> {
    let (record, value) = app.coffer.rotate_operator_token(Some(&who)).await?;
    Ok(Json(Envelope::ok(CreatedToken {
        token: token(&record),
        value: SecretValue::new(value.expose_secret().to_owned()),
    })))
}
