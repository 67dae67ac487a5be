//! Replication keys, node keys and grants, the rotating revocation, and account replication keys (ARK).

#![allow(unused_imports)]

use coffer_storage::*;
use coffer_types::*;

use crate::{PgStorage, not_yet};

pub(crate) async fn latest_replication_key(
    s: &PgStorage,
) -> Result<Option<(u32, WrappedKeyRecord)>> {
    let _ = s;
    Err(not_yet("latest_replication_key"))
}

pub(crate) async fn instance_key_rk(s: &PgStorage, purpose: &str) -> Result<Option<RkWrap>> {
    let _ = s;
    let _ = purpose;
    Err(not_yet("instance_key_rk"))
}

pub(crate) async fn list_deks(s: &PgStorage) -> Result<Vec<DekRecord>> {
    let _ = s;
    Err(not_yet("list_deks"))
}

pub(crate) async fn backfill_rk_wraps(
    s: &PgStorage,
    version: u32,
    deks: Vec<(DekId, Vec<u8>)>,
    instance_keys: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let _ = s;
    let _ = version;
    let _ = deks;
    let _ = instance_keys;
    Err(not_yet("backfill_rk_wraps"))
}

pub(crate) async fn register_node_key(
    s: &PgStorage,
    node: TokenId,
    public_key: [u8; 32],
    grant: NodeGrant,
    audit: &[AuditEntry],
) -> Result<bool> {
    let _ = s;
    let _ = node;
    let _ = public_key;
    let _ = grant;
    let _ = audit;
    Err(not_yet("register_node_key"))
}

pub(crate) async fn node_public_keys(s: &PgStorage) -> Result<Vec<(TokenId, [u8; 32])>> {
    let _ = s;
    Err(not_yet("node_public_keys"))
}

pub(crate) async fn node_grant(
    s: &PgStorage,
    node: TokenId,
    version: u32,
) -> Result<Option<NodeGrant>> {
    let _ = s;
    let _ = node;
    let _ = version;
    Err(not_yet("node_grant"))
}

pub(crate) async fn grants_of_version(s: &PgStorage, version: u32) -> Result<Vec<NodeGrant>> {
    let _ = s;
    let _ = version;
    Err(not_yet("grants_of_version"))
}

pub(crate) async fn revoke_node_rotating(
    s: &PgStorage,
    id: TokenId,
    at: Timestamp,
    rotation: RkRotation,
    audit: &[AuditEntry],
) -> Result<NodeRecord> {
    let _ = s;
    let _ = id;
    let _ = at;
    let _ = rotation;
    let _ = audit;
    Err(not_yet("revoke_node_rotating"))
}

pub(crate) async fn put_account_replication_key(
    s: &PgStorage,
    account: AccountId,
    version: u32,
    key: WrappedKeyRecord,
    grants: Vec<AccountGrant>,
    audit: &[AuditEntry],
) -> Result<()> {
    let _ = s;
    let _ = account;
    let _ = version;
    let _ = key;
    let _ = grants;
    let _ = audit;
    Err(not_yet("put_account_replication_key"))
}

pub(crate) async fn account_replication_keys(
    s: &PgStorage,
) -> Result<Vec<(AccountId, u32, WrappedKeyRecord)>> {
    let _ = s;
    Err(not_yet("account_replication_keys"))
}

pub(crate) async fn account_replication_key_versions(
    s: &PgStorage,
    account: AccountId,
) -> Result<Vec<(u32, WrappedKeyRecord)>> {
    let _ = s;
    let _ = account;
    Err(not_yet("account_replication_key_versions"))
}

pub(crate) async fn register_node_account_key(
    s: &PgStorage,
    node: TokenId,
    account: AccountId,
    public_key: [u8; 32],
    grant: Option<AccountGrant>,
    audit: &[AuditEntry],
) -> Result<bool> {
    let _ = s;
    let _ = node;
    let _ = account;
    let _ = public_key;
    let _ = grant;
    let _ = audit;
    Err(not_yet("register_node_account_key"))
}

pub(crate) async fn ark_accounts(s: &PgStorage) -> Result<Vec<AccountId>> {
    let _ = s;
    Err(not_yet("ark_accounts"))
}

pub(crate) async fn account_grant_versions(
    s: &PgStorage,
    account: AccountId,
    node: TokenId,
) -> Result<Vec<u32>> {
    let _ = s;
    let _ = account;
    let _ = node;
    Err(not_yet("account_grant_versions"))
}

pub(crate) async fn node_account_keys(
    s: &PgStorage,
    account: AccountId,
) -> Result<Vec<NodeAccountKey>> {
    let _ = s;
    let _ = account;
    Err(not_yet("node_account_keys"))
}

pub(crate) async fn rotate_account_replication_key(
    s: &PgStorage,
    rotation: ArkRotation,
    audit: &[AuditEntry],
) -> Result<()> {
    let _ = s;
    let _ = rotation;
    let _ = audit;
    Err(not_yet("rotate_account_replication_key"))
}

pub(crate) async fn accounts_owing_ark_rotation(s: &PgStorage) -> Result<Vec<AccountId>> {
    let _ = s;
    Err(not_yet("accounts_owing_ark_rotation"))
}

pub(crate) async fn account_grants(
    s: &PgStorage,
    account: AccountId,
    version: u32,
) -> Result<Vec<AccountGrant>> {
    let _ = s;
    let _ = account;
    let _ = version;
    Err(not_yet("account_grants"))
}
