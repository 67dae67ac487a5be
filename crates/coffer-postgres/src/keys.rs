//! Instance keys, DEKs, KEK rotation (rewrap, retire) and the DEK lifecycle (re-seal, prune, destroy).

#![allow(unused_imports)]

use coffer_storage::*;
use coffer_types::*;

use crate::{PgStorage, not_yet};

pub(crate) async fn get_instance_key(
    s: &PgStorage,
    purpose: &str,
) -> Result<Option<WrappedKeyRecord>> {
    let _ = s;
    let _ = purpose;
    Err(not_yet("get_instance_key"))
}

pub(crate) async fn put_instance_key_if_absent(
    s: &PgStorage,
    purpose: &str,
    key: WrappedKeyRecord,
) -> Result<WrappedKeyRecord> {
    let _ = s;
    let _ = purpose;
    let _ = key;
    Err(not_yet("put_instance_key_if_absent"))
}

pub(crate) async fn put_dek(s: &PgStorage, dek: DekRecord) -> Result<()> {
    let _ = s;
    let _ = dek;
    Err(not_yet("put_dek"))
}

pub(crate) async fn get_dek(s: &PgStorage, id: DekId) -> Result<Option<DekRecord>> {
    let _ = s;
    let _ = id;
    Err(not_yet("get_dek"))
}

pub(crate) async fn latest_dek(s: &PgStorage, account: AccountId) -> Result<Option<DekRecord>> {
    let _ = s;
    let _ = account;
    Err(not_yet("latest_dek"))
}

pub(crate) async fn kek_usage(s: &PgStorage) -> Result<Vec<KekUsage>> {
    let _ = s;
    Err(not_yet("kek_usage"))
}

pub(crate) async fn keys_wrapped_by(
    s: &PgStorage,
    kek_id: &str,
    limit: usize,
) -> Result<Vec<StoredKey>> {
    let _ = s;
    let _ = kek_id;
    let _ = limit;
    Err(not_yet("keys_wrapped_by"))
}

pub(crate) async fn rewrap_keys(s: &PgStorage, rewraps: Vec<Rewrap>) -> Result<u64> {
    let _ = s;
    let _ = rewraps;
    Err(not_yet("rewrap_keys"))
}

pub(crate) async fn account_dek_usage(s: &PgStorage, account: AccountId) -> Result<Vec<KekUsage>> {
    let _ = s;
    let _ = account;
    Err(not_yet("account_dek_usage"))
}

pub(crate) async fn account_deks_not_wrapped_by(
    s: &PgStorage,
    account: AccountId,
    kek_id: &str,
    limit: usize,
) -> Result<Vec<StoredKey>> {
    let _ = s;
    let _ = account;
    let _ = kek_id;
    let _ = limit;
    Err(not_yet("account_deks_not_wrapped_by"))
}

pub(crate) async fn retire_kek(s: &PgStorage, kek_id: &str) -> Result<()> {
    let _ = s;
    let _ = kek_id;
    Err(not_yet("retire_kek"))
}

pub(crate) async fn is_kek_retired(s: &PgStorage, kek_id: &str) -> Result<bool> {
    let _ = s;
    let _ = kek_id;
    Err(not_yet("is_kek_retired"))
}

pub(crate) async fn values_sealed_before(
    s: &PgStorage,
    account: AccountId,
    cutoff: Timestamp,
    current: Option<DekId>,
    limit: usize,
) -> Result<Vec<SealedValue>> {
    let _ = s;
    let _ = account;
    let _ = cutoff;
    let _ = current;
    let _ = limit;
    Err(not_yet("values_sealed_before"))
}

pub(crate) async fn count_sealed_before(
    s: &PgStorage,
    account: AccountId,
    cutoff: Timestamp,
) -> Result<u64> {
    let _ = s;
    let _ = account;
    let _ = cutoff;
    Err(not_yet("count_sealed_before"))
}

pub(crate) async fn reseal_values(
    s: &PgStorage,
    dek: Option<DekRecord>,
    reseals: Vec<Reseal>,
) -> Result<u64> {
    let _ = s;
    let _ = dek;
    let _ = reseals;
    Err(not_yet("reseal_values"))
}

pub(crate) async fn prune_versions(s: &PgStorage, keep: u32, limit: usize) -> Result<u64> {
    let _ = s;
    let _ = keep;
    let _ = limit;
    Err(not_yet("prune_versions"))
}

pub(crate) async fn destroy_unreferenced_deks(
    s: &PgStorage,
    keep: Vec<DekId>,
    limit: usize,
) -> Result<Vec<DestroyedDek>> {
    let _ = s;
    let _ = keep;
    let _ = limit;
    Err(not_yet("destroy_unreferenced_deks"))
}

pub(crate) async fn compact_destroyed_deks(s: &PgStorage) -> Result<Option<u64>> {
    let _ = s;
    Err(not_yet("compact_destroyed_deks"))
}
