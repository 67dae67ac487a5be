//! Handlers of `/client/v4/accounts/{account_id}/audit_logs`: the account's audit log and its
//! verification (super_admin of the account, or the operator).

use axum::Json;
use axum::extract::State;
use coffer_api::{AuditLogEntry, AuditProblem, AuditVerification, Envelope, ResultInfo};
use coffer_storage::{AuditQuery, AuditRecord, Direction};
use coffer_types::{SecretId, StoreId, TokenId};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, PathIds, QueryPairs};
use crate::state::AppState;

fn entry(r: &AuditRecord) -> ApiResult<AuditLogEntry> {
    let event = serde_json::from_slice(&r.entry.payload).map_err(|e| {
        ApiError::from(coffer_core::CoreError::Internal(format!(
            "audit entry {}: {e}",
            r.seq
        )))
    })?;
    Ok(AuditLogEntry {
        seq: r.seq,
        hash: hex::encode(r.hash),
        event,
    })
}

fn query(q: &QueryPairs) -> ApiResult<AuditQuery> {
    let (page, per_page) = q.page()?;
    Ok(AuditQuery {
        from: q.time("from")?,
        to: q.time("to")?,
        actor_token: q.id("actor", TokenId::parse)?,
        action: q.word("action")?,
        outcome: q.word("outcome")?,
        store_id: q.id("store_id", StoreId::parse)?,
        secret_id: q.id("secret_id", SecretId::parse)?,
        page,
        per_page,
        direction: q.direction_or(Direction::Desc)?,
    })
}

/// Newest first unless `direction=asc`.
pub async fn list(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
    q: QueryPairs,
) -> ApiResult<Json<Envelope<Vec<AuditLogEntry>>>> {
    let query = query(&q)?;
    let page = app.coffer.list_audit(&who, ids.account, &query).await?;
    let items = page
        .items
        .iter()
        .map(entry)
        .collect::<ApiResult<Vec<_>>>()?;
    let info = ResultInfo {
        page: query.page,
        per_page: query.per_page,
        count: items.len() as u64,
        total_count: page.total_count,
    };
    Ok(Json(Envelope::ok_page(items, info)))
}

pub async fn verify(
    State(app): State<AppState>,
    Auth(who): Auth,
    ids: PathIds,
) -> ApiResult<Json<Envelope<AuditVerification>>> {
    let v = app.coffer.verify_audit(&who, ids.account).await?;
    Ok(Json(Envelope::ok(AuditVerification {
        ok: v.first_bad.is_none(),
        entries_checked: v.entries_checked,
        checkpoints_checked: v.checkpoints_checked,
        head_seq: v.head.map(|(seq, _)| seq),
        head_hash: v.head.map(|(_, hash)| hex::encode(hash)),
        first_bad: v
            .first_bad
            .map(|(seq, problem)| AuditProblem { seq, problem }),
    })))
}
