//! Accounts: create, read, list, quota, delete (with everything the account holds).

use coffer_storage::{AccountRecord, AuditEntry, Change, Entity, Result, StorageError};
use coffer_types::AccountId;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::db::{DbResultExt, Violation, bytes_col, col, opt_u64_col, sql_u64, ts_col, violation};
use crate::{PgStorage, not_yet};

// The column list and its decoder change together: the decoder reads by position.
const ACCOUNT_COLS: &str = "id, name, created, secrets_quota";

fn account_from_row(row: &Row) -> Result<AccountRecord> {
    Ok(AccountRecord {
        id: AccountId::from_bytes(bytes_col(row, 0, "accounts.id")?),
        name: col(row, 1, "accounts.name")?,
        created: ts_col(row, 2, "accounts.created")?,
        secrets_quota: opt_u64_col(row, 3, "accounts.secrets_quota")?,
    })
}

/// `NotFound(Account)` unless the account exists (read in the caller's transaction).
pub(crate) async fn require_account(c: &impl GenericClient, account: AccountId) -> Result<()> {
    let stmt = c
        .prepare_cached("SELECT 1 FROM accounts WHERE id = $1")
        .await
        .db("find account")?;
    match c
        .query_opt(&stmt, &[&account.as_bytes().as_slice()])
        .await
        .db("find account")?
    {
        Some(_) => Ok(()),
        None => Err(StorageError::NotFound(Entity::Account)),
    }
}

pub(crate) async fn create_account(
    s: &PgStorage,
    account: AccountRecord,
    audit: &[AuditEntry],
) -> Result<()> {
    let quota = account
        .secrets_quota
        .map(|q| sql_u64(q, "secrets quota is larger than storage can hold"))
        .transpose()?;
    s.write(audit, move |w| {
        Box::pin(async move {
            let stmt = w
                .tx()
                .prepare_cached(
                    "INSERT INTO accounts (id, name, created, secrets_quota)
                     VALUES ($1, $2, $3, $4)",
                )
                .await
                .db("create account")?;
            w.tx()
                .execute(
                    &stmt,
                    &[
                        &account.id.as_bytes().as_slice(),
                        &account.name,
                        &account.created.unix_micros(),
                        &quota,
                    ],
                )
                .await
                .map_err(|e| match violation(&e) {
                    Some(Violation::Unique("accounts_pkey")) => {
                        StorageError::AlreadyExists(Entity::Account)
                    }
                    _ => crate::db::db_error("create account", &e),
                })?;
            w.append(&Change::AccountPut {
                account_id: account.id,
                name: account.name,
            })
            .await
        })
    })
    .await
}

pub(crate) async fn get_account(s: &PgStorage, id: AccountId) -> Result<Option<AccountRecord>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE id = $1"
        ))
        .await
        .db("get account")?;
    c.query_opt(&stmt, &[&id.as_bytes().as_slice()])
        .await
        .db("get account")?
        .map(|row| account_from_row(&row))
        .transpose()
}

pub(crate) async fn list_accounts(s: &PgStorage) -> Result<Vec<AccountRecord>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLS} FROM accounts ORDER BY created, id"
        ))
        .await
        .db("list accounts")?;
    c.query(&stmt, &[])
        .await
        .db("list accounts")?
        .iter()
        .map(account_from_row)
        .collect()
}

pub(crate) async fn set_account_quota(
    s: &PgStorage,
    account: AccountId,
    quota: Option<u64>,
    audit: &[AuditEntry],
) -> Result<()> {
    let quota = quota
        .map(|q| sql_u64(q, "secrets quota is larger than storage can hold"))
        .transpose()?;
    s.write(audit, move |w| {
        Box::pin(async move {
            let stmt = w
                .tx()
                .prepare_cached("UPDATE accounts SET secrets_quota = $1 WHERE id = $2")
                .await
                .db("set account quota")?;
            let changed = w
                .tx()
                .execute(&stmt, &[&quota, &account.as_bytes().as_slice()])
                .await
                .db("set account quota")?;
            if changed == 0 {
                return Err(StorageError::NotFound(Entity::Account));
            }
            // Quotas are enforced by the control plane alone; edges need not hear of them.
            Ok(())
        })
    })
    .await
}

pub(crate) async fn delete_account(
    s: &PgStorage,
    id: AccountId,
    audit: &[AuditEntry],
) -> Result<()> {
    let _ = s;
    let _ = id;
    let _ = audit;
    Err(not_yet("delete_account"))
}
