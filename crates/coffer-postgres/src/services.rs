//! Services, their bindings and service tokens.

use std::collections::HashSet;

use coffer_storage::{
    AuditEntry, Change, ChangeSecretBinding, ChangeStoreBinding, Entity, Page, Result,
    SecretBindingRecord, ServiceQuery, ServiceRecord, ServiceTokenRecord, StorageError,
    StoreBindingRecord,
};
use coffer_types::{
    AccountId, BindingName, SecretName, ServiceId, ServiceName, StoreId, Timestamp, TokenId,
};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStorage;
use crate::db::{
    DbResultExt, Violation, bytes_col, col, db_error, offset, opt_ts_col, scope_col, ts_col,
    u64_col, violation,
};
use crate::tx::TxFuture;
use crate::write::WriteTx;

// Column lists and their decoders change together: a decoder reads by position.
pub(crate) const SERVICE_COLS: &str = "id, account_id, name, kind, created, modified";
pub(crate) const SERVICE_TOKEN_COLS: &str = "id, account_id, service_id, hash, created, revoked";

/// A service row without its bindings (see [`load_bindings`]).
fn service_from_row(row: &Row) -> Result<ServiceRecord> {
    let name: String = col(row, 2, "services.name")?;
    Ok(ServiceRecord {
        id: ServiceId::from_bytes(bytes_col(row, 0, "services.id")?),
        account_id: AccountId::from_bytes(bytes_col(row, 1, "services.account_id")?),
        name: ServiceName::parse(&name)
            .map_err(|_| StorageError::Corrupted("services.name: invalid name".into()))?,
        kind: scope_col(row, 3, "services.kind")?,
        secrets: Vec::new(),
        stores: Vec::new(),
        created: ts_col(row, 4, "services.created")?,
        modified: ts_col(row, 5, "services.modified")?,
    })
}

pub(crate) fn service_token_from_row(row: &Row) -> Result<ServiceTokenRecord> {
    Ok(ServiceTokenRecord {
        id: TokenId::from_bytes(bytes_col(row, 0, "service_tokens.id")?),
        account_id: AccountId::from_bytes(bytes_col(row, 1, "service_tokens.account_id")?),
        service_id: ServiceId::from_bytes(bytes_col(row, 2, "service_tokens.service_id")?),
        hash: bytes_col(row, 3, "service_tokens.hash")?,
        created: ts_col(row, 4, "service_tokens.created")?,
        revoked: opt_ts_col(row, 5, "service_tokens.revoked")?,
    })
}

/// Fills in the service's bindings, in position order: its secret bindings, then its store
/// bindings, each in the order given.
pub(crate) async fn load_bindings(
    c: &impl GenericClient,
    mut service: ServiceRecord,
) -> Result<ServiceRecord> {
    let stmt = c
        .prepare_cached(
            "SELECT binding, store_id, secret_name FROM service_bindings
             WHERE service_id = $1 ORDER BY position",
        )
        .await
        .db("read bindings")?;
    for row in c
        .query(&stmt, &[&service.id.as_bytes().as_slice()])
        .await
        .db("read bindings")?
    {
        let binding: String = col(&row, 0, "service_bindings.binding")?;
        let binding = BindingName::parse(&binding).map_err(|_| {
            StorageError::Corrupted("service_bindings.binding: invalid name".into())
        })?;
        let store_id = StoreId::from_bytes(bytes_col(&row, 1, "service_bindings.store_id")?);
        match col::<Option<String>>(&row, 2, "service_bindings.secret_name")? {
            Some(name) => service.secrets.push(SecretBindingRecord {
                binding,
                store_id,
                secret_name: SecretName::parse(&name).map_err(|_| {
                    StorageError::Corrupted("service_bindings.secret_name: invalid name".into())
                })?,
            }),
            None => service
                .stores
                .push(StoreBindingRecord { binding, store_id }),
        }
    }
    Ok(service)
}

async fn read_service(
    c: &impl GenericClient,
    account: AccountId,
    id: ServiceId,
) -> Result<Option<ServiceRecord>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {SERVICE_COLS} FROM services WHERE id = $1 AND account_id = $2"
        ))
        .await
        .db("get service")?;
    let Some(row) = c
        .query_opt(
            &stmt,
            &[&id.as_bytes().as_slice(), &account.as_bytes().as_slice()],
        )
        .await
        .db("get service")?
    else {
        return Ok(None);
    };
    Ok(Some(load_bindings(c, service_from_row(&row)?).await?))
}

/// `NotFound(Service)` unless `id` is a service of `account`.
async fn require_service(c: &impl GenericClient, account: AccountId, id: ServiceId) -> Result<()> {
    let stmt = c
        .prepare_cached("SELECT 1 FROM services WHERE id = $1 AND account_id = $2")
        .await
        .db("check service")?;
    c.query_opt(
        &stmt,
        &[&id.as_bytes().as_slice(), &account.as_bytes().as_slice()],
    )
    .await
    .db("check service")?
    .map(|_| ())
    .ok_or(StorageError::NotFound(Entity::Service))
}

async fn read_service_token(
    c: &impl GenericClient,
    id: TokenId,
) -> Result<Option<ServiceTokenRecord>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {SERVICE_TOKEN_COLS} FROM service_tokens WHERE id = $1"
        ))
        .await
        .db("get service token")?;
    c.query_opt(&stmt, &[&id.as_bytes().as_slice()])
        .await
        .db("get service token")?
        .map(|row| service_token_from_row(&row))
        .transpose()
}

const DUPLICATE_BINDINGS: StorageError =
    StorageError::Invalid("a service's binding names are not unique across its secrets and stores");

fn check_binding_names(service: &ServiceRecord) -> Result<()> {
    let mut seen: HashSet<&BindingName> = HashSet::new();
    let names = service
        .secrets
        .iter()
        .map(|b| &b.binding)
        .chain(service.stores.iter().map(|b| &b.binding));
    for name in names {
        if !seen.insert(name) {
            return Err(DUPLICATE_BINDINGS);
        }
    }
    Ok(())
}

/// Inserts `service`'s bindings in one position sequence: its secret bindings in order, then
/// its store bindings in order (so reading them back by position restores both lists).
async fn insert_bindings(c: &impl GenericClient, service: &ServiceRecord) -> Result<()> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO service_bindings (service_id, position, binding, store_id, secret_name)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await
        .db("insert binding")?;
    let secrets = service
        .secrets
        .iter()
        .map(|b| (&b.binding, b.store_id, Some(b.secret_name.as_str())));
    let stores = service
        .stores
        .iter()
        .map(|b| (&b.binding, b.store_id, None));
    for (position, (binding, store_id, secret_name)) in (0i64..).zip(secrets.chain(stores)) {
        c.execute(
            &stmt,
            &[
                &service.id.as_bytes().as_slice(),
                &position,
                &binding.as_str(),
                &store_id.as_bytes().as_slice(),
                &secret_name,
            ],
        )
        .await
        .map_err(|e| match violation(&e) {
            // Checked before; the indexes agree.
            Some(Violation::Unique(_)) => DUPLICATE_BINDINGS,
            _ => db_error("insert binding", &e),
        })?;
    }
    Ok(())
}

/// The log entry of a service's whole current state.
fn service_put(service: &ServiceRecord) -> Change {
    Change::ServicePut {
        account_id: service.account_id,
        service_id: service.id,
        name: service.name.as_str().to_owned(),
        kind: service.kind.as_str().to_owned(),
        secrets: service
            .secrets
            .iter()
            .map(|b| ChangeSecretBinding {
                binding: b.binding.as_str().to_owned(),
                store_id: b.store_id,
                secret_name: b.secret_name.as_str().to_owned(),
            })
            .collect(),
        stores: service
            .stores
            .iter()
            .map(|b| ChangeStoreBinding {
                binding: b.binding.as_str().to_owned(),
                store_id: b.store_id,
            })
            .collect(),
    }
}

async fn insert_service_token(w: &mut WriteTx<'_>, token: &ServiceTokenRecord) -> Result<()> {
    let stmt = w
        .tx()
        .prepare_cached(
            "INSERT INTO service_tokens (id, account_id, service_id, hash, created, revoked)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .db("create service token")?;
    w.tx()
        .execute(
            &stmt,
            &[
                &token.id.as_bytes().as_slice(),
                &token.account_id.as_bytes().as_slice(),
                &token.service_id.as_bytes().as_slice(),
                &token.hash.as_slice(),
                &token.created.unix_micros(),
                &token.revoked.map(|t| t.unix_micros()),
            ],
        )
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::Unique("service_tokens_pkey")) => {
                StorageError::AlreadyExists(Entity::ServiceToken)
            }
            Some(Violation::ForeignKey(_)) => StorageError::NotFound(Entity::Service),
            _ => db_error("create service token", &e),
        })?;
    // The HMAC only: the token itself never reaches storage.
    w.append(&Change::ServiceTokenPut {
        account_id: token.account_id,
        service_id: token.service_id,
        token_id: token.id,
        hash_hex: hex::encode(token.hash),
    })
    .await
}

pub(crate) async fn create_service(
    s: &PgStorage,
    service: ServiceRecord,
    token: ServiceTokenRecord,
    audit: &[AuditEntry],
) -> Result<()> {
    if token.account_id != service.account_id || token.service_id != service.id {
        return Err(StorageError::Invalid(
            "a new service's token names another account or service",
        ));
    }
    check_binding_names(&service)?;
    s.write(audit, move |w| {
        Box::pin(async move {
            let account = service.account_id.as_bytes().as_slice();
            let taken = w
                .tx()
                .prepare_cached("SELECT 1 FROM services WHERE account_id = $1 AND name = $2")
                .await
                .db("check service name")?;
            if w.tx()
                .query_opt(&taken, &[&account, &service.name.as_str()])
                .await
                .db("check service name")?
                .is_some()
            {
                return Err(StorageError::NameTaken {
                    entity: Entity::Service,
                    name: service.name.as_str().to_owned(),
                });
            }
            let insert = w
                .tx()
                .prepare_cached(
                    "INSERT INTO services (id, account_id, name, kind, created, modified)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .await
                .db("create service")?;
            w.tx()
                .execute(
                    &insert,
                    &[
                        &service.id.as_bytes().as_slice(),
                        &account,
                        &service.name.as_str(),
                        &service.kind.as_str(),
                        &service.created.unix_micros(),
                        &service.modified.unix_micros(),
                    ],
                )
                .await
                .map_err(|e| match violation(&e) {
                    Some(Violation::ForeignKey(_)) => StorageError::NotFound(Entity::Account),
                    // The name is free (checked above), so a clash is on the id, whichever of
                    // its indexes reports it.
                    Some(Violation::Unique(_)) => StorageError::AlreadyExists(Entity::Service),
                    _ => db_error("create service", &e),
                })?;
            insert_bindings(w.tx(), &service).await?;
            w.append(&service_put(&service)).await?;
            insert_service_token(w, &token).await
        })
    })
    .await
}

pub(crate) async fn update_service(
    s: &PgStorage,
    service: ServiceRecord,
    audit: &[AuditEntry],
) -> Result<ServiceRecord> {
    check_binding_names(&service)?;
    s.write(audit, move |w| {
        Box::pin(async move {
            let current = read_service(w.tx(), service.account_id, service.id)
                .await?
                .ok_or(StorageError::NotFound(Entity::Service))?;
            let record = ServiceRecord {
                name: current.name,
                created: current.created,
                ..service
            };
            w.tx()
                .execute(
                    "UPDATE services SET kind = $1, modified = $2 WHERE id = $3",
                    &[
                        &record.kind.as_str(),
                        &record.modified.unix_micros(),
                        &record.id.as_bytes().as_slice(),
                    ],
                )
                .await
                .db("update service")?;
            // Replaced wholesale, like the `ServicePut` that carries them.
            w.tx()
                .execute(
                    "DELETE FROM service_bindings WHERE service_id = $1",
                    &[&record.id.as_bytes().as_slice()],
                )
                .await
                .db("replace bindings")?;
            insert_bindings(w.tx(), &record).await?;
            w.append(&service_put(&record)).await?;
            Ok(record)
        })
    })
    .await
}

pub(crate) async fn get_service(
    s: &PgStorage,
    account: AccountId,
    id: ServiceId,
) -> Result<Option<ServiceRecord>> {
    // One snapshot, so the row and its bindings agree.
    s.read_snapshot(move |tx| -> TxFuture<'_, _> {
        Box::pin(async move { read_service(tx, account, id).await })
    })
    .await
}

pub(crate) async fn get_service_by_name(
    s: &PgStorage,
    account: AccountId,
    name: &ServiceName,
) -> Result<Option<ServiceRecord>> {
    let name = name.clone();
    s.read_snapshot(move |tx| -> TxFuture<'_, _> {
        Box::pin(async move {
            let stmt = tx
                .prepare_cached(&format!(
                    "SELECT {SERVICE_COLS} FROM services WHERE account_id = $1 AND name = $2"
                ))
                .await
                .db("get service by name")?;
            let Some(row) = tx
                .query_opt(&stmt, &[&account.as_bytes().as_slice(), &name.as_str()])
                .await
                .db("get service by name")?
            else {
                return Ok(None);
            };
            Ok(Some(load_bindings(tx, service_from_row(&row)?).await?))
        })
    })
    .await
}

pub(crate) async fn list_services(
    s: &PgStorage,
    account: AccountId,
    query: &ServiceQuery,
) -> Result<Page<ServiceRecord>> {
    let query = query.clone();
    // One snapshot, so the count, the page and the bindings agree. Names are unique per
    // account: ordering by name needs no tie-break.
    s.read_snapshot(move |tx| -> TxFuture<'_, _> {
        Box::pin(async move {
            let account = account.as_bytes().as_slice();
            // `name` is bound as NULL for "any name"; the statements stay fixed (and cached).
            let name = query.name.as_ref().map(|n| n.as_str().to_owned());
            let page = tx
                .prepare_cached(&format!(
                    "SELECT {SERVICE_COLS} FROM services
                     WHERE account_id = $1 AND ($2::text IS NULL OR name = $2)
                     ORDER BY name LIMIT $3 OFFSET $4"
                ))
                .await
                .db("list services")?;
            let rows = tx
                .query(
                    &page,
                    &[
                        &account,
                        &name,
                        &i64::from(query.per_page),
                        &offset(query.page, query.per_page),
                    ],
                )
                .await
                .db("list services")?;
            let count = tx
                .prepare_cached(
                    "SELECT count(*) FROM services
                     WHERE account_id = $1 AND ($2::text IS NULL OR name = $2)",
                )
                .await
                .db("count services")?;
            let total = u64_col(
                &tx.query_one(&count, &[&account, &name])
                    .await
                    .db("count services")?,
                0,
                "count",
            )?;
            let mut items = Vec::with_capacity(rows.len());
            for row in &rows {
                items.push(load_bindings(tx, service_from_row(row)?).await?);
            }
            Ok(Page {
                items,
                total_count: total,
            })
        })
    })
    .await
}

pub(crate) async fn delete_service(
    s: &PgStorage,
    account: AccountId,
    id: ServiceId,
    audit: &[AuditEntry],
) -> Result<()> {
    s.write(audit, move |w| {
        Box::pin(async move {
            // Bindings and tokens go with the row (ON DELETE CASCADE).
            let deleted = w
                .tx()
                .execute(
                    "DELETE FROM services WHERE id = $1 AND account_id = $2",
                    &[&id.as_bytes().as_slice(), &account.as_bytes().as_slice()],
                )
                .await
                .db("delete service")?;
            if deleted == 0 {
                return Err(StorageError::NotFound(Entity::Service));
            }
            w.append(&Change::ServiceDeleted {
                account_id: account,
                service_id: id,
            })
            .await
        })
    })
    .await
}

/// Sets `revoked = at` on `tokens` (unrevoked tokens of one service, in id order) and logs
/// each; returns them as updated.
async fn revoke_rows(
    w: &mut WriteTx<'_>,
    tokens: Vec<ServiceTokenRecord>,
    at: Timestamp,
) -> Result<Vec<ServiceTokenRecord>> {
    let stmt = w
        .tx()
        .prepare_cached("UPDATE service_tokens SET revoked = $1 WHERE id = $2 AND revoked IS NULL")
        .await
        .db("revoke service token")?;
    let mut revoked = Vec::with_capacity(tokens.len());
    for token in tokens {
        let changed = w
            .tx()
            .execute(&stmt, &[&at.unix_micros(), &token.id.as_bytes().as_slice()])
            .await
            .db("revoke service token")?;
        if changed != 1 {
            // Read unrevoked in this transaction a moment ago: only a bug gets here.
            return Err(StorageError::AlreadyRevoked);
        }
        w.append(&Change::ServiceTokenRevoked {
            account_id: token.account_id,
            service_id: token.service_id,
            token_id: token.id,
        })
        .await?;
        revoked.push(ServiceTokenRecord {
            revoked: Some(at),
            ..token
        });
    }
    Ok(revoked)
}

/// The service's unrevoked tokens other than `except`, in id order.
async fn active_tokens(
    c: &impl GenericClient,
    service: ServiceId,
    except: Option<TokenId>,
) -> Result<Vec<ServiceTokenRecord>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {SERVICE_TOKEN_COLS} FROM service_tokens
             WHERE service_id = $1 AND revoked IS NULL AND ($2::bytea IS NULL OR id <> $2)
             ORDER BY id"
        ))
        .await
        .db("list active service tokens")?;
    let except = except.map(|id| id.as_bytes().to_vec());
    c.query(&stmt, &[&service.as_bytes().as_slice(), &except])
        .await
        .db("list active service tokens")?
        .iter()
        .map(service_token_from_row)
        .collect()
}

pub(crate) async fn create_service_token(
    s: &PgStorage,
    token: ServiceTokenRecord,
    revoke_others_at: Option<Timestamp>,
    audit: &[AuditEntry],
) -> Result<Vec<ServiceTokenRecord>> {
    s.write(audit, move |w| {
        Box::pin(async move {
            require_service(w.tx(), token.account_id, token.service_id).await?;
            insert_service_token(w, &token).await?;
            match revoke_others_at {
                None => Ok(Vec::new()),
                Some(at) => {
                    let others = active_tokens(w.tx(), token.service_id, Some(token.id)).await?;
                    revoke_rows(w, others, at).await
                }
            }
        })
    })
    .await
}

pub(crate) async fn revoke_service_tokens(
    s: &PgStorage,
    account: AccountId,
    service: ServiceId,
    only: Option<TokenId>,
    at: Timestamp,
    audit: &[AuditEntry],
) -> Result<Vec<ServiceTokenRecord>> {
    s.write(audit, move |w| {
        Box::pin(async move {
            require_service(w.tx(), account, service).await?;
            let tokens = match only {
                None => active_tokens(w.tx(), service, None).await?,
                Some(id) => {
                    let token = read_service_token(w.tx(), id)
                        .await?
                        .filter(|t| t.account_id == account && t.service_id == service)
                        .ok_or(StorageError::NotFound(Entity::ServiceToken))?;
                    if token.revoked.is_some() {
                        return Err(StorageError::AlreadyRevoked);
                    }
                    vec![token]
                }
            };
            revoke_rows(w, tokens, at).await
        })
    })
    .await
}

pub(crate) async fn get_service_token(
    s: &PgStorage,
    id: TokenId,
) -> Result<Option<ServiceTokenRecord>> {
    read_service_token(&s.client().await?, id).await
}

pub(crate) async fn list_service_tokens(
    s: &PgStorage,
    account: AccountId,
    service: ServiceId,
) -> Result<Vec<ServiceTokenRecord>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {SERVICE_TOKEN_COLS} FROM service_tokens
             WHERE service_id = $1 AND account_id = $2 ORDER BY created, id"
        ))
        .await
        .db("list service tokens")?;
    c.query(
        &stmt,
        &[
            &service.as_bytes().as_slice(),
            &account.as_bytes().as_slice(),
        ],
    )
    .await
    .db("list service tokens")?
    .iter()
    .map(service_token_from_row)
    .collect()
}
