//! Stores: create (name unique, limit), read, list (keyset pages), delete.

#![allow(unused_imports)]

use coffer_storage::*;
use coffer_types::*;

use crate::{PgStorage, not_yet};

pub(crate) async fn create_store(
    s: &PgStorage,
    store: StoreRecord,
    max_stores: u64,
    audit: &[AuditEntry],
) -> Result<()> {
    let _ = s;
    let _ = store;
    let _ = max_stores;
    let _ = audit;
    Err(not_yet("create_store"))
}

pub(crate) async fn get_store(
    s: &PgStorage,
    account: AccountId,
    id: StoreId,
) -> Result<Option<StoreRecord>> {
    let _ = s;
    let _ = account;
    let _ = id;
    Err(not_yet("get_store"))
}

pub(crate) async fn list_stores(
    s: &PgStorage,
    account: AccountId,
    query: &StoreQuery,
) -> Result<Page<StoreRecord>> {
    let _ = s;
    let _ = account;
    let _ = query;
    Err(not_yet("list_stores"))
}

pub(crate) async fn delete_store(
    s: &PgStorage,
    account: AccountId,
    id: StoreId,
    force: bool,
    audit: &[AuditEntry],
) -> Result<()> {
    let _ = s;
    let _ = account;
    let _ = id;
    let _ = force;
    let _ = audit;
    Err(not_yet("delete_store"))
}
