//! Services, their bindings and service tokens.

#![allow(unused_imports)]

use coffer_storage::*;
use coffer_types::*;

use crate::{PgStorage, not_yet};

pub(crate) async fn create_service(
    s: &PgStorage,
    service: ServiceRecord,
    token: ServiceTokenRecord,
    audit: &[AuditEntry],
) -> Result<()> {
    let _ = s;
    let _ = service;
    let _ = token;
    let _ = audit;
    Err(not_yet("create_service"))
}

pub(crate) async fn update_service(
    s: &PgStorage,
    service: ServiceRecord,
    audit: &[AuditEntry],
) -> Result<ServiceRecord> {
    let _ = s;
    let _ = service;
    let _ = audit;
    Err(not_yet("update_service"))
}

pub(crate) async fn get_service(
    s: &PgStorage,
    account: AccountId,
    id: ServiceId,
) -> Result<Option<ServiceRecord>> {
    let _ = s;
    let _ = account;
    let _ = id;
    Err(not_yet("get_service"))
}

pub(crate) async fn get_service_by_name(
    s: &PgStorage,
    account: AccountId,
    name: &ServiceName,
) -> Result<Option<ServiceRecord>> {
    let _ = s;
    let _ = account;
    let _ = name;
    Err(not_yet("get_service_by_name"))
}

pub(crate) async fn list_services(
    s: &PgStorage,
    account: AccountId,
    query: &ServiceQuery,
) -> Result<Page<ServiceRecord>> {
    let _ = s;
    let _ = account;
    let _ = query;
    Err(not_yet("list_services"))
}

pub(crate) async fn delete_service(
    s: &PgStorage,
    account: AccountId,
    id: ServiceId,
    audit: &[AuditEntry],
) -> Result<()> {
    let _ = s;
    let _ = account;
    let _ = id;
    let _ = audit;
    Err(not_yet("delete_service"))
}

pub(crate) async fn create_service_token(
    s: &PgStorage,
    token: ServiceTokenRecord,
    revoke_others_at: Option<Timestamp>,
    audit: &[AuditEntry],
) -> Result<Vec<ServiceTokenRecord>> {
    let _ = s;
    let _ = token;
    let _ = revoke_others_at;
    let _ = audit;
    Err(not_yet("create_service_token"))
}

pub(crate) async fn revoke_service_tokens(
    s: &PgStorage,
    account: AccountId,
    service: ServiceId,
    only: Option<TokenId>,
    at: Timestamp,
    audit: &[AuditEntry],
) -> Result<Vec<ServiceTokenRecord>> {
    let _ = s;
    let _ = account;
    let _ = service;
    let _ = only;
    let _ = at;
    let _ = audit;
    Err(not_yet("revoke_service_tokens"))
}

pub(crate) async fn get_service_token(
    s: &PgStorage,
    id: TokenId,
) -> Result<Option<ServiceTokenRecord>> {
    let _ = s;
    let _ = id;
    Err(not_yet("get_service_token"))
}

pub(crate) async fn list_service_tokens(
    s: &PgStorage,
    account: AccountId,
    service: ServiceId,
) -> Result<Vec<ServiceTokenRecord>> {
    let _ = s;
    let _ = account;
    let _ = service;
    Err(not_yet("list_service_tokens"))
}
