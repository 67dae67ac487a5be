//! The audit log: appending to per-account chains (inside writes), reading them back, checkpoints, access batches.

#![allow(unused_imports)]

use coffer_storage::*;
use coffer_types::*;

use crate::{PgStorage, not_yet};

pub(crate) async fn record_access_batch(
    s: &PgStorage,
    batch_id: [u8; 16],
    node: TokenId,
    audit: &[AuditEntry],
) -> Result<bool> {
    let _ = s;
    let _ = batch_id;
    let _ = node;
    let _ = audit;
    Err(not_yet("record_access_batch"))
}

pub(crate) async fn append_audit(s: &PgStorage, entries: &[AuditEntry]) -> Result<()> {
    let _ = s;
    let _ = entries;
    Err(not_yet("append_audit"))
}

pub(crate) async fn list_audit(
    s: &PgStorage,
    account: AccountId,
    query: &AuditQuery,
) -> Result<Page<AuditRecord>> {
    let _ = s;
    let _ = account;
    let _ = query;
    Err(not_yet("list_audit"))
}

pub(crate) async fn audit_entries(
    s: &PgStorage,
    account: AccountId,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<AuditRecord>> {
    let _ = s;
    let _ = account;
    let _ = after_seq;
    let _ = limit;
    Err(not_yet("audit_entries"))
}

pub(crate) async fn audit_head(
    s: &PgStorage,
    account: AccountId,
) -> Result<Option<(u64, [u8; 32])>> {
    let _ = s;
    let _ = account;
    Err(not_yet("audit_head"))
}

pub(crate) async fn audit_accounts(s: &PgStorage) -> Result<Vec<AccountId>> {
    let _ = s;
    Err(not_yet("audit_accounts"))
}

pub(crate) async fn put_audit_checkpoint(s: &PgStorage, cp: AuditCheckpoint) -> Result<()> {
    let _ = s;
    let _ = cp;
    Err(not_yet("put_audit_checkpoint"))
}

pub(crate) async fn audit_checkpoints(
    s: &PgStorage,
    account: AccountId,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<AuditCheckpoint>> {
    let _ = s;
    let _ = account;
    let _ = after_seq;
    let _ = limit;
    Err(not_yet("audit_checkpoints"))
}

pub(crate) async fn last_audit_checkpoint(
    s: &PgStorage,
    account: AccountId,
) -> Result<Option<AuditCheckpoint>> {
    let _ = s;
    let _ = account;
    Err(not_yet("last_audit_checkpoint"))
}

/// Refuses entries that cannot be meaningful records, before anything is written.
pub(crate) fn check(entries: &[AuditEntry]) -> Result<()> {
    if entries
        .iter()
        .any(|e| e.action.is_empty() || e.outcome.is_empty())
    {
        return Err(StorageError::Invalid(
            "an audit entry needs an action and an outcome",
        ));
    }
    Ok(())
}

/// Appends `entries`, in order, each to its own account's chain, in the write's transaction
/// (under the writer lock, so each account's head read here is its last committed entry or
/// one this transaction appended). An error leaves the caller to roll back: a partly
/// appended list never commits.
pub(crate) async fn append(
    tx: &deadpool_postgres::Transaction<'_>,
    entries: &[AuditEntry],
) -> Result<()> {
    use crate::db::DbResultExt as _;
    use deadpool_postgres::GenericClient as _;
    check(entries)?;
    if entries.is_empty() {
        return Ok(());
    }
    let head = tx
        .prepare_cached(
            "SELECT seq, hash FROM audit WHERE account_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .await
        .db("read audit head")?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO audit (account_id, seq, at, action, outcome, actor_token, store_id,
                                secret_id, payload, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .await
        .db("append audit entry")?;
    for entry in entries {
        let account = entry.account_id.as_bytes().as_slice();
        let (last, prev_hash) = match tx
            .query_opt(&head, &[&account])
            .await
            .db("read audit head")?
        {
            Some(row) => (
                crate::db::u64_col(&row, 0, "audit.seq")?,
                crate::db::bytes_col::<32>(&row, 1, "audit.hash")?,
            ),
            None => (0, AuditRecord::GENESIS_HASH),
        };
        let seq = last + 1;
        let seq_sql = i64::try_from(seq)
            .map_err(|_| StorageError::Unavailable("audit sequence exhausted".into()))?;
        let hash = AuditRecord::compute_hash(&prev_hash, seq, entry);
        tx.execute(
            &insert,
            &[
                &account,
                &seq_sql,
                &entry.at.unix_micros(),
                &entry.action,
                &entry.outcome,
                &entry.actor_token.as_ref().map(|t| t.as_bytes().as_slice()),
                &entry.store_id.as_ref().map(|t| t.as_bytes().as_slice()),
                &entry.secret_id.as_ref().map(|t| t.as_bytes().as_slice()),
                &entry.payload,
                &prev_hash.as_slice(),
                &hash.as_slice(),
            ],
        )
        .await
        .db("append audit entry")?;
    }
    Ok(())
}
