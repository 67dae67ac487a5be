//! Accounts: create, read, list, quota, delete (with everything the account holds).

use coffer_storage::{AccountRecord, AuditEntry, Change, Entity, Result, StorageError};
use coffer_types::{AccountId, DekId, ServiceId, StoreId};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStorage;
use crate::db::{
    DbResultExt, Violation, bytes_col, col, db_error, opt_u64_col, sql_u64, ts_col, violation,
};

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

/// The ids `sql` (one `$1` parameter: the account or store id) selects, in its order.
async fn ids(
    c: &impl GenericClient,
    sql: &str,
    owner: &[u8],
    context: &'static str,
) -> Result<Vec<[u8; 16]>> {
    let stmt = c.prepare_cached(sql).await.db(context)?;
    c.query(&stmt, &[&owner])
        .await
        .db(context)?
        .iter()
        .map(|row| bytes_col(row, 0, context))
        .collect()
}

async fn exec(
    c: &impl GenericClient,
    sql: &str,
    owner: &[u8],
    context: &'static str,
) -> Result<u64> {
    let stmt = c.prepare_cached(sql).await.db(context)?;
    c.execute(&stmt, &[&owner]).await.db(context)
}

pub(crate) async fn delete_account(
    s: &PgStorage,
    id: AccountId,
    audit: &[AuditEntry],
) -> Result<()> {
    s.write(audit, move |w| {
        Box::pin(async move {
            require_account(w.tx(), id).await?;
            let account = id.as_bytes().to_vec();
            // Id order for stores and secrets, so every backend logs the same entries in the
            // same order.
            let stores = ids(
                w.tx(),
                "SELECT id FROM stores WHERE account_id = $1 ORDER BY id",
                &account,
                "list account stores",
            )
            .await?;
            for store in &stores {
                // Store by store: `secrets` is indexed by store, not by account.
                let store = StoreId::from_bytes(*store);
                let secrets = crate::stores::store_secret_ids(w.tx(), store).await?;
                crate::stores::delete_store_secrets(w, id, store, secrets).await?;
            }
            exec(
                w.tx(),
                "DELETE FROM stores WHERE account_id = $1",
                &account,
                "delete account stores",
            )
            .await?;
            for store in stores {
                w.append(&Change::StoreDeleted {
                    account_id: id,
                    store_id: StoreId::from_bytes(store),
                })
                .await?;
            }
            // Services in id order too. Their bindings and tokens go with them (ON DELETE
            // CASCADE) and get no entries: `ServiceDeleted` implies them.
            let services = ids(
                w.tx(),
                "SELECT id FROM services WHERE account_id = $1 ORDER BY id",
                &account,
                "list account services",
            )
            .await?;
            exec(
                w.tx(),
                "DELETE FROM services WHERE account_id = $1",
                &account,
                "delete account services",
            )
            .await?;
            for service in services {
                w.append(&Change::ServiceDeleted {
                    account_id: id,
                    service_id: ServiceId::from_bytes(service),
                })
                .await?;
            }
            exec(
                w.tx(),
                "DELETE FROM tokens WHERE account_id = $1",
                &account,
                "delete account tokens",
            )
            .await?;
            // Every version of the account is gone by now, and no other account's version can
            // name one of its DEKs (writes check that), so a reference still found is damage.
            let deks = ids(
                w.tx(),
                "SELECT id FROM deks WHERE account_id = $1",
                &account,
                "list account deks",
            )
            .await?;
            let stmt = w
                .tx()
                .prepare_cached("DELETE FROM deks WHERE account_id = $1")
                .await
                .db("delete account deks")?;
            w.tx()
                .execute(&stmt, &[&account.as_slice()])
                .await
                .map_err(|e| match violation(&e) {
                    Some(Violation::ForeignKey(_)) => StorageError::Corrupted(
                        "a value of another account is sealed under a DEK of the deleted account"
                            .into(),
                    ),
                    _ => db_error("delete account deks", &e),
                })?;
            // Its replication keys (ARK), their grants and the nodes' keys for it.
            for (sql, context) in [
                (
                    "DELETE FROM account_replication_keys WHERE account_id = $1",
                    "delete account replication keys",
                ),
                (
                    "DELETE FROM account_grants WHERE account_id = $1",
                    "delete account grants",
                ),
                (
                    "DELETE FROM account_node_keys WHERE account_id = $1",
                    "delete node account keys",
                ),
                ("DELETE FROM accounts WHERE id = $1", "delete account"),
            ] {
                exec(w.tx(), sql, &account, context).await?;
            }
            // Its DEKs are destroyed with it: no retained entry may still carry one, nor one of
            // its account grants (`AccountDeleted` tells replicas to drop theirs).
            crate::change_log::compact_past_account(
                w.tx(),
                id,
                deks.into_iter().map(DekId::from_bytes),
                u64::MAX,
            )
            .await?;
            w.append(&Change::AccountDeleted { account_id: id }).await
        })
    })
    .await
}
