//! Secrets and their sealed versions: bulk create (quota), read, list, compare-and-swap update, delete, runtime reads.

#![allow(unused_imports)]

use coffer_storage::*;
use coffer_types::*;

use crate::{PgStorage, not_yet};

pub(crate) async fn create_secrets(
    s: &PgStorage,
    account: AccountId,
    store: StoreId,
    secrets: Vec<NewSecret>,
    quota: u64,
    audit: &[AuditEntry],
) -> Result<()> {
    let _ = s;
    let _ = account;
    let _ = store;
    let _ = secrets;
    let _ = quota;
    let _ = audit;
    Err(not_yet("create_secrets"))
}

pub(crate) async fn get_secret(
    s: &PgStorage,
    account: AccountId,
    store: StoreId,
    id: SecretId,
) -> Result<Option<SecretRecord>> {
    let _ = s;
    let _ = account;
    let _ = store;
    let _ = id;
    Err(not_yet("get_secret"))
}

pub(crate) async fn list_secrets(
    s: &PgStorage,
    account: AccountId,
    store: StoreId,
    query: &SecretQuery,
) -> Result<Page<SecretRecord>> {
    let _ = s;
    let _ = account;
    let _ = store;
    let _ = query;
    Err(not_yet("list_secrets"))
}

pub(crate) async fn update_secret(
    s: &PgStorage,
    update: SecretUpdate,
    audit: &[AuditEntry],
) -> Result<SecretRecord> {
    let _ = s;
    let _ = update;
    let _ = audit;
    Err(not_yet("update_secret"))
}

pub(crate) async fn queue_update_secret(
    s: &PgStorage,
    update: SecretUpdate,
    audit: &[AuditEntry],
) -> Result<Pending<SecretRecord>> {
    let _ = s;
    let _ = update;
    let _ = audit;
    Err(not_yet("queue_update_secret"))
}

pub(crate) async fn delete_secrets(
    s: &PgStorage,
    account: AccountId,
    store: StoreId,
    ids: &[SecretId],
    audit: &[AuditEntry],
) -> Result<()> {
    let _ = s;
    let _ = account;
    let _ = store;
    let _ = ids;
    let _ = audit;
    Err(not_yet("delete_secrets"))
}

pub(crate) async fn get_version(
    s: &PgStorage,
    secret: SecretId,
    version: Version,
) -> Result<Option<VersionRecord>> {
    let _ = s;
    let _ = secret;
    let _ = version;
    Err(not_yet("get_version"))
}

pub(crate) async fn secret_count(s: &PgStorage, account: AccountId) -> Result<u64> {
    let _ = s;
    let _ = account;
    Err(not_yet("secret_count"))
}

pub(crate) async fn get_secret_by_name(
    s: &PgStorage,
    account: AccountId,
    store: StoreId,
    name: &SecretName,
) -> Result<Option<SecretRecord>> {
    let _ = s;
    let _ = account;
    let _ = store;
    let _ = name;
    Err(not_yet("get_secret_by_name"))
}

pub(crate) async fn current_value(
    s: &PgStorage,
    account: AccountId,
    store: StoreId,
    name: &SecretName,
) -> Result<Option<(SecretRecord, VersionRecord)>> {
    let _ = s;
    let _ = account;
    let _ = store;
    let _ = name;
    Err(not_yet("current_value"))
}
