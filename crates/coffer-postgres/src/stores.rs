//! Stores: create (name unique per account, a limit per account), read, list, delete.

use coffer_storage::{
    AuditEntry, Change, Entity, Page, Result, StorageError, StoreOrder, StoreQuery, StoreRecord,
};
use coffer_types::{AccountId, SecretId, StoreId, StoreName};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStorage;
use crate::db::{
    DbResultExt, Violation, bytes_col, col, db_error, direction_sql, offset, ts_col, u64_col,
    violation,
};
use crate::tx::TxFuture;
use crate::write::WriteTx;

// The column list and its decoder change together: the decoder reads by position.
pub(crate) const STORE_COLS: &str = "id, account_id, name, created, modified";

pub(crate) fn store_from_row(row: &Row) -> Result<StoreRecord> {
    let name: String = col(row, 2, "stores.name")?;
    Ok(StoreRecord {
        id: StoreId::from_bytes(bytes_col(row, 0, "stores.id")?),
        account_id: AccountId::from_bytes(bytes_col(row, 1, "stores.account_id")?),
        name: StoreName::parse(&name)
            .map_err(|_| StorageError::Corrupted("stores.name: invalid name".into()))?,
        created: ts_col(row, 3, "stores.created")?,
        modified: ts_col(row, 4, "stores.modified")?,
    })
}

/// `NotFound(Store)` unless the account has store `id` (a store of another account is
/// missing to it).
pub(crate) async fn require_store(
    c: &impl GenericClient,
    account: AccountId,
    id: StoreId,
) -> Result<()> {
    let stmt = c
        .prepare_cached("SELECT 1 FROM stores WHERE id = $1 AND account_id = $2")
        .await
        .db("check store")?;
    c.query_opt(
        &stmt,
        &[&id.as_bytes().as_slice(), &account.as_bytes().as_slice()],
    )
    .await
    .db("check store")?
    .map(|_| ())
    .ok_or(StorageError::NotFound(Entity::Store))
}

fn name_taken(name: &StoreName) -> StorageError {
    StorageError::NameTaken {
        entity: Entity::Store,
        name: name.as_str().to_owned(),
    }
}

pub(crate) async fn create_store(
    s: &PgStorage,
    store: StoreRecord,
    max_stores: u64,
    audit: &[AuditEntry],
) -> Result<()> {
    s.write(audit, move |w| {
        Box::pin(async move {
            let account = store.account_id.as_bytes().as_slice();
            let taken = w
                .tx()
                .prepare_cached("SELECT 1 FROM stores WHERE account_id = $1 AND name = $2")
                .await
                .db("check store name")?;
            if w.tx()
                .query_opt(&taken, &[&account, &store.name.as_str()])
                .await
                .db("check store name")?
                .is_some()
            {
                return Err(name_taken(&store.name));
            }
            let count = w
                .tx()
                .prepare_cached("SELECT count(*) FROM stores WHERE account_id = $1")
                .await
                .db("count stores")?;
            let count = u64_col(
                &w.tx()
                    .query_one(&count, &[&account])
                    .await
                    .db("count stores")?,
                0,
                "count",
            )?;
            if count >= max_stores {
                return Err(StorageError::LimitExceeded {
                    what: "stores",
                    limit: max_stores,
                });
            }
            let insert = w
                .tx()
                .prepare_cached(
                    "INSERT INTO stores (id, account_id, name, created, modified)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .await
                .db("create store")?;
            w.tx()
                .execute(
                    &insert,
                    &[
                        &store.id.as_bytes().as_slice(),
                        &account,
                        &store.name.as_str(),
                        &store.created.unix_micros(),
                        &store.modified.unix_micros(),
                    ],
                )
                .await
                .map_err(|e| match violation(&e) {
                    Some(Violation::Unique("stores_pkey")) => {
                        StorageError::AlreadyExists(Entity::Store)
                    }
                    Some(Violation::Unique("stores_name_unique")) => name_taken(&store.name),
                    Some(Violation::ForeignKey(_)) => StorageError::NotFound(Entity::Account),
                    _ => db_error("create store", &e),
                })?;
            w.append(&Change::StorePut {
                account_id: store.account_id,
                store_id: store.id,
                name: store.name.as_str().to_owned(),
            })
            .await
        })
    })
    .await
}

pub(crate) async fn get_store(
    s: &PgStorage,
    account: AccountId,
    id: StoreId,
) -> Result<Option<StoreRecord>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {STORE_COLS} FROM stores WHERE id = $1 AND account_id = $2"
        ))
        .await
        .db("get store")?;
    c.query_opt(
        &stmt,
        &[&id.as_bytes().as_slice(), &account.as_bytes().as_slice()],
    )
    .await
    .db("get store")?
    .map(|row| store_from_row(&row))
    .transpose()
}

pub(crate) async fn list_stores(
    s: &PgStorage,
    account: AccountId,
    query: &StoreQuery,
) -> Result<Page<StoreRecord>> {
    let query = query.clone();
    s.read_snapshot(move |tx| -> TxFuture<'_, _> {
        Box::pin(async move {
            let column = match query.order {
                StoreOrder::Name => "name",
                StoreOrder::Created => "created",
                StoreOrder::Modified => "modified",
            };
            let dir = direction_sql(query.direction);
            // Only fixed identifiers are spliced in; every value is a bound parameter.
            let page = tx
                .prepare_cached(&format!(
                    "SELECT {STORE_COLS} FROM stores WHERE account_id = $1
                     ORDER BY {column} {dir}, id {dir} LIMIT $2 OFFSET $3"
                ))
                .await
                .db("list stores")?;
            let account = account.as_bytes().as_slice();
            let items = tx
                .query(
                    &page,
                    &[
                        &account,
                        &i64::from(query.per_page),
                        &offset(query.page, query.per_page),
                    ],
                )
                .await
                .db("list stores")?
                .iter()
                .map(store_from_row)
                .collect::<Result<Vec<_>>>()?;
            let count = tx
                .prepare_cached("SELECT count(*) FROM stores WHERE account_id = $1")
                .await
                .db("count stores")?;
            let total = u64_col(
                &tx.query_one(&count, &[&account]).await.db("count stores")?,
                0,
                "count",
            )?;
            Ok(Page {
                items,
                total_count: total,
            })
        })
    })
    .await
}

/// A store's secret ids in id order: the order every backend logs their deletion in.
pub(crate) async fn store_secret_ids(
    c: &impl GenericClient,
    store: StoreId,
) -> Result<Vec<SecretId>> {
    let stmt = c
        .prepare_cached("SELECT id FROM secrets WHERE store_id = $1 ORDER BY id")
        .await
        .db("list store secrets")?;
    c.query(&stmt, &[&store.as_bytes().as_slice()])
        .await
        .db("list store secrets")?
        .iter()
        .map(|row| bytes_col(row, 0, "secrets.id").map(SecretId::from_bytes))
        .collect()
}

/// Deletes every secret of `store` (`secrets`, as [`store_secret_ids`] listed them) and logs
/// each deletion. Versions go with their secrets (ON DELETE CASCADE); the account's secret
/// count follows by trigger.
pub(crate) async fn delete_store_secrets(
    w: &mut WriteTx<'_>,
    account: AccountId,
    store: StoreId,
    secrets: Vec<SecretId>,
) -> Result<()> {
    let stmt = w
        .tx()
        .prepare_cached("DELETE FROM secrets WHERE store_id = $1")
        .await
        .db("delete store secrets")?;
    w.tx()
        .execute(&stmt, &[&store.as_bytes().as_slice()])
        .await
        .db("delete store secrets")?;
    for secret_id in secrets {
        w.append(&Change::SecretDeleted {
            account_id: account,
            store_id: store,
            secret_id,
        })
        .await?;
    }
    Ok(())
}

pub(crate) async fn delete_store(
    s: &PgStorage,
    account: AccountId,
    id: StoreId,
    force: bool,
    audit: &[AuditEntry],
) -> Result<()> {
    s.write(audit, move |w| {
        Box::pin(async move {
            require_store(w.tx(), account, id).await?;
            let secrets = store_secret_ids(w.tx(), id).await?;
            if !secrets.is_empty() && !force {
                return Err(StorageError::NotEmpty);
            }
            if !secrets.is_empty() {
                // The DEKs its values used may be shared with the account's other stores: none
                // seals again, the others' values are re-sealed away from them, and they are
                // destroyed.
                w.tx()
                    .execute(
                        "UPDATE deks SET retired = true WHERE account_id = $1",
                        &[&account.as_bytes().as_slice()],
                    )
                    .await
                    .db("retire account deks")?;
            }
            delete_store_secrets(w, account, id, secrets).await?;
            w.tx()
                .execute(
                    "DELETE FROM stores WHERE id = $1",
                    &[&id.as_bytes().as_slice()],
                )
                .await
                .db("delete store")?;
            w.append(&Change::StoreDeleted {
                account_id: account,
                store_id: id,
            })
            .await
        })
    })
    .await
}
