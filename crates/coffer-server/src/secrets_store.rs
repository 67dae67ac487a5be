//! Handlers of the Cloudflare-compatible Secrets Store API. Each parses its input into a core
//! command, calls core, and wraps the result in the v4 envelope; nothing else.

use axum::Json;
use axum::extract::State;
use coffer_api::{
    CreateSecret, CreateStore, DuplicateSecret, Envelope, ErrorCode, QuotaDetail, ResultInfo,
    Secret, Store, UpdateSecret,
};
use coffer_core::{Comment, CreateSecretItem, MAX_BATCH, check_value};
use coffer_crypto::Plaintext;
use coffer_storage::Page;
use coffer_types::{NameError, Scopes, SecretId, SecretName, StoreName};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, JsonBody, PathIds, QueryPairs};
use crate::state::AppState;
use crate::wire;

type Reply<T> = ApiResult<Json<Envelope<T>>>;

fn ok<T>(result: T) -> Reply<T> {
    Ok(Json(Envelope::ok(result)))
}

fn deleted() -> Reply<()> {
    Ok(Json(Envelope {
        result: None,
        ..Envelope::ok(())
    }))
}

fn page<R, T>(page: Page<R>, number: u32, per_page: u32, f: impl Fn(&R) -> T) -> Reply<Vec<T>> {
    let items: Vec<T> = page.items.iter().map(f).collect();
    let info = ResultInfo {
        page: number,
        per_page,
        count: items.len() as u64,
        total_count: page.total_count,
    };
    Ok(Json(Envelope::ok_page(items, info)))
}

fn name_error(pointer: &str, e: NameError) -> ApiError {
    ApiError::at(
        ErrorCode::InvalidName,
        pointer,
        format!("{pointer}: name {e}"),
    )
}

fn scopes(pointer: &str, items: &[String]) -> Result<Scopes, ApiError> {
    if items.is_empty() {
        return Err(ApiError::at(
            ErrorCode::InvalidScope,
            pointer,
            format!("{pointer}: at least one scope is required"),
        ));
    }
    Scopes::parse(items)
        .map_err(|e| ApiError::at(ErrorCode::InvalidScope, pointer, format!("{pointer}: {e}")))
}

fn comment(pointer: &str, c: Option<String>) -> Result<Option<Comment>, ApiError> {
    c.map(|c| Comment::parse(c, pointer))
        .transpose()
        .map_err(ApiError::from)
}

fn value(pointer: &str, v: coffer_api::SecretValue) -> Result<Plaintext, ApiError> {
    let plaintext = Plaintext::new(v.into_bytes());
    check_value(&plaintext, pointer)?;
    Ok(plaintext)
}

// ---- stores ----

pub async fn list_stores(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    q: QueryPairs,
) -> Reply<Vec<Store>> {
    let query = q.stores()?;
    let (number, per_page) = (query.page, query.per_page);
    let result = app.coffer.list_stores(&who, ids.account, query).await?;
    page(result, number, per_page, wire::store)
}

/// `POST /stores` answers with the store object; given the one-element array that early SDKs
/// send (TypeScript SDK 5.x), it answers with a one-element array, which is what those SDKs
/// parse.
pub async fn create_store(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    body: JsonBody,
) -> ApiResult<Json<Envelope<serde_json::Value>>> {
    let (mut items, as_array) = body.objects::<CreateStore>()?;
    if items.len() != 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidBatch,
            "body must be one store object (or an array of exactly one)",
        ));
    }
    let req = items.remove(0);
    let pointer = if as_array { "/0/name" } else { "/name" };
    let name = StoreName::parse(&req.name).map_err(|e| name_error(pointer, e))?;
    let store = wire::store(&app.coffer.create_store(&who, ids.account, name).await?);
    let result = if as_array {
        serde_json::to_value([store])
    } else {
        serde_json::to_value(store)
    };
    let result =
        result.map_err(|e| ApiError::from(coffer_core::CoreError::Internal(e.to_string())))?;
    Ok(Json(Envelope::ok(result)))
}

pub async fn get_store(State(app): State<AppState>, Auth(who): Auth, ids: PathIds) -> Reply<Store> {
    ok(wire::store(
        &app.coffer
            .get_store(&who, ids.account, ids.store()?)
            .await?,
    ))
}

pub async fn delete_store(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    q: QueryPairs,
) -> Reply<()> {
    app.coffer
        .delete_store(&who, ids.account, ids.store()?, q.force()?)
        .await?;
    deleted()
}

// ---- secrets ----

pub async fn list_secrets(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    q: QueryPairs,
) -> Reply<Vec<Secret>> {
    let query = q.secrets()?;
    let (number, per_page) = (query.page, query.per_page);
    let result = app
        .coffer
        .list_secrets(&who, ids.account, ids.store()?, query)
        .await?;
    page(result, number, per_page, wire::secret)
}

pub async fn create_secrets(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    body: JsonBody,
) -> Reply<Vec<Secret>> {
    let store = ids.store()?;
    let (items, prefixed) = body.objects::<CreateSecret>()?;
    if items.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidBatch,
            "body must contain at least one secret",
        ));
    }
    if items.len() > MAX_BATCH {
        return Err(ApiError::new(
            ErrorCode::InvalidBatch,
            format!(
                "at most {MAX_BATCH} secrets per request (got {})",
                items.len()
            ),
        ));
    }
    let mut parsed = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = |field: &str| {
            if prefixed {
                format!("/{i}/{field}")
            } else {
                format!("/{field}")
            }
        };
        let name = SecretName::parse(&item.name).map_err(|e| name_error(&at("name"), e))?;
        if !seen.insert(name.clone()) {
            return Err(ApiError::at(
                ErrorCode::SecretNameTaken,
                at("name"),
                format!(
                    "{}: the name {name:?} appears more than once in this request",
                    at("name")
                ),
            ));
        }
        parsed.push(CreateSecretItem {
            scopes: scopes(&at("scopes"), &item.scopes)?,
            comment: comment(&at("comment"), item.comment)?.unwrap_or_default(),
            value: value(&at("value"), item.value)?,
            name,
        });
    }
    let created = app
        .coffer
        .create_secrets(&who, ids.account, store, parsed)
        .await?;
    ok(created.iter().map(wire::secret).collect())
}

pub async fn bulk_delete_secrets(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    body: JsonBody,
) -> Reply<()> {
    let store = ids.store()?;
    // Cloudflare's SDKs send this request without a body; never read that as "delete all".
    if body.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidBatch,
            "body must be a JSON array of the secret ids to delete",
        ));
    }
    let raw: Vec<String> = body.parse()?;
    if raw.is_empty() || raw.len() > MAX_BATCH {
        return Err(ApiError::new(
            ErrorCode::InvalidBatch,
            format!("body must be an array of 1 to {MAX_BATCH} secret ids"),
        ));
    }
    let mut secret_ids = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let id = SecretId::parse(s).map_err(|e| {
            ApiError::at(ErrorCode::InvalidId, format!("/{i}"), format!("/{i}: {e}"))
        })?;
        secret_ids.push(id);
    }
    secret_ids.sort();
    secret_ids.dedup();
    app.coffer
        .delete_secrets(&who, ids.account, store, &secret_ids)
        .await?;
    deleted()
}

pub async fn get_secret(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
) -> Reply<Secret> {
    ok(wire::secret(
        &app.coffer
            .get_secret(&who, ids.account, ids.store()?, ids.secret()?)
            .await?,
    ))
}

pub async fn update_secret(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    body: JsonBody,
) -> Reply<Secret> {
    let req: UpdateSecret = body.object()?;
    let update = coffer_core::UpdateSecret {
        value: req.value.map(|v| value("/value", v)).transpose()?,
        scopes: req.scopes.map(|s| scopes("/scopes", &s)).transpose()?,
        comment: comment("/comment", req.comment)?,
    };
    let updated = app
        .coffer
        .update_secret(&who, ids.account, ids.store()?, ids.secret()?, update)
        .await?;
    ok(wire::secret(&updated))
}

pub async fn delete_secret(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
) -> Reply<()> {
    app.coffer
        .delete_secrets(&who, ids.account, ids.store()?, &[ids.secret()?])
        .await?;
    deleted()
}

pub async fn duplicate_secret(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    body: JsonBody,
) -> Reply<Secret> {
    let req: DuplicateSecret = body.object()?;
    let dup = coffer_core::DuplicateSecret {
        name: SecretName::parse(&req.name).map_err(|e| name_error("/name", e))?,
        scopes: scopes("/scopes", &req.scopes)?,
        comment: comment("/comment", req.comment)?,
    };
    let created = app
        .coffer
        .duplicate_secret(&who, ids.account, ids.store()?, ids.secret()?, dup)
        .await?;
    ok(wire::secret(&created))
}

pub async fn quota(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
) -> Reply<coffer_api::Quota> {
    let q = app.coffer.quota(&who, ids.account).await?;
    ok(coffer_api::Quota {
        secrets: QuotaDetail {
            quota: q.quota,
            usage: q.usage,
        },
    })
}
