//! Handlers of `/client/v4/accounts/{account_id}/secrets_store/services`: services, their
//! bindings (deploy) and their tokens.

use axum::Json;
use axum::extract::State;
use coffer_api::{
    DeployService, DeployedService, Envelope, ErrorCode, ResultInfo, RotateServiceToken,
    RotatedServiceToken, SecretValue, Service, ServiceToken,
};
use coffer_core::{DEFAULT_PER_PAGE, Deploy, MAX_BINDINGS, ServiceListQuery};
use coffer_storage::{SecretBindingRecord, StoreBindingRecord};
use coffer_types::{BindingName, BindingNameError, Scope, SecretName, ServiceName, StoreId};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, JsonBody, PathIds, QueryPairs};
use crate::state::AppState;
use crate::wire;

type Reply<T> = ApiResult<Json<Envelope<T>>>;

fn binding_error(pointer: String, message: impl std::fmt::Display) -> ApiError {
    ApiError::at(
        ErrorCode::InvalidBinding,
        pointer.clone(),
        format!("{pointer}: {message}"),
    )
}

/// A new binding's name: well-formed, and not one `coffer run` would refuse to export (the one
/// rule, `BindingName::parse_exportable`). A reserved name is short and known, so it is named.
fn binding_name(pointer: String, s: &str) -> Result<BindingName, ApiError> {
    BindingName::parse_exportable(s).map_err(|e| match e {
        BindingNameError::Reserved => binding_error(pointer, format!("binding name {s:?} {e}")),
        e => binding_error(pointer, format!("binding name {e}")),
    })
}

fn store_id(pointer: String, s: &str) -> Result<StoreId, ApiError> {
    StoreId::parse(s).map_err(|e| binding_error(pointer, format!("store id {e}")))
}

/// The deploy body in core's terms; every problem names its JSON pointer.
fn parse_deploy(req: DeployService) -> Result<Deploy, ApiError> {
    let name = ServiceName::parse(&req.name).map_err(|e| {
        ApiError::at(
            ErrorCode::InvalidName,
            "/name",
            format!("/name: service name {e}"),
        )
    })?;
    let kind = match req.kind.as_deref() {
        None => Scope::Workers,
        Some(k) => Scope::parse(k).map_err(|e| {
            binding_error(
                "/type".to_owned(),
                format!("the service type must be a scope: {e}"),
            )
        })?,
    };
    let total = req.secrets_store_secrets.len() + req.secrets_store_stores.len();
    if total > MAX_BINDINGS {
        return Err(binding_error(
            "/secrets_store_secrets".to_owned(),
            format!("a service may have at most {MAX_BINDINGS} bindings (got {total})"),
        ));
    }
    let mut secrets = Vec::with_capacity(req.secrets_store_secrets.len());
    for (i, b) in req.secrets_store_secrets.iter().enumerate() {
        let at = |field: &str| format!("/secrets_store_secrets/{i}/{field}");
        secrets.push(SecretBindingRecord {
            binding: binding_name(at("binding"), &b.binding)?,
            store_id: store_id(at("store_id"), &b.store_id)?,
            secret_name: SecretName::parse(&b.secret_name)
                .map_err(|e| binding_error(at("secret_name"), format!("secret name {e}")))?,
        });
    }
    let mut stores = Vec::with_capacity(req.secrets_store_stores.len());
    for (i, b) in req.secrets_store_stores.iter().enumerate() {
        let at = |field: &str| format!("/secrets_store_stores/{i}/{field}");
        stores.push(StoreBindingRecord {
            binding: binding_name(at("binding"), &b.binding)?,
            store_id: store_id(at("store_id"), &b.store_id)?,
        });
    }
    Ok(Deploy {
        name,
        kind,
        secrets,
        stores,
    })
}

pub async fn deploy(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    body: JsonBody,
) -> Reply<DeployedService> {
    let deploy = parse_deploy(body.object()?)?;
    let deployed = app.coffer.deploy_service(&who, ids.account, deploy).await?;
    Ok(Json(Envelope::ok(DeployedService {
        service: wire::service(&deployed.service),
        created: deployed.created,
        service_token: deployed
            .token
            .map(|t| SecretValue::new(t.expose_secret().to_owned())),
    })))
}

pub async fn list(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    q: QueryPairs,
) -> Reply<Vec<Service>> {
    let (page, per_page) = q.page()?;
    let name = q
        .get("name")
        .map(|n| {
            ServiceName::parse(n).map_err(|e| {
                ApiError::at(
                    ErrorCode::InvalidQuery,
                    "name",
                    format!("name: service name {e}"),
                )
            })
        })
        .transpose()?;
    let result = app
        .coffer
        .list_services(
            &who,
            ids.account,
            ServiceListQuery {
                page,
                per_page,
                name,
            },
        )
        .await?;
    let items: Vec<Service> = result.items.iter().map(wire::service).collect();
    let info = ResultInfo {
        page,
        per_page,
        count: items.len() as u64,
        total_count: result.total_count,
    };
    debug_assert!(per_page >= 1 && DEFAULT_PER_PAGE >= 1);
    Ok(Json(Envelope::ok_page(items, info)))
}

pub async fn get(State(app): State<AppState>, Auth(who): Auth, ids: PathIds) -> Reply<Service> {
    let service = app
        .coffer
        .get_service(&who, ids.account, ids.service()?)
        .await?;
    Ok(Json(Envelope::ok(wire::service(&service))))
}

pub async fn delete(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
) -> Reply<serde_json::Value> {
    let id = ids.service()?;
    app.coffer.delete_service(&who, ids.account, id).await?;
    Ok(Json(Envelope::ok(
        serde_json::json!({ "id": id.to_string() }),
    )))
}

pub async fn list_tokens(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
) -> Reply<Vec<ServiceToken>> {
    let tokens = app
        .coffer
        .list_service_tokens(&who, ids.account, ids.service()?)
        .await?;
    Ok(Json(wire::whole_list(
        tokens.iter().map(wire::service_token).collect(),
    )))
}

/// `POST .../tokens`: the body is optional (`{}` or none means revoke the previous tokens).
pub async fn rotate_token(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    body: JsonBody,
) -> Reply<RotatedServiceToken> {
    let req: RotateServiceToken = if body.0.iter().all(u8::is_ascii_whitespace) {
        RotateServiceToken::default()
    } else {
        body.object()?
    };
    let (record, token, revoked) = app
        .coffer
        .rotate_service_token(
            &who,
            ids.account,
            ids.service()?,
            req.revoke_previous.unwrap_or(true),
        )
        .await?;
    Ok(Json(Envelope::ok(RotatedServiceToken {
        token: wire::service_token(&record),
        service_token: SecretValue::new(token.expose_secret().to_owned()),
        revoked: revoked.iter().map(wire::service_token).collect(),
    })))
}

/// `DELETE .../tokens` revokes every active token; `DELETE .../tokens/{token_id}` one.
pub async fn revoke_tokens(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
) -> Reply<Vec<ServiceToken>> {
    let revoked = app
        .coffer
        .revoke_service_tokens(&who, ids.account, ids.service()?, ids.token_opt())
        .await?;
    Ok(Json(wire::whole_list(
        revoked.iter().map(wire::service_token).collect(),
    )))
}
