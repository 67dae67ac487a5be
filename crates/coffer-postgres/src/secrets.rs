//! Secrets and their sealed versions: bulk create (quota), read, list, compare-and-swap
//! update (also queued), delete, and the runtime reads.

use std::collections::{HashMap, HashSet};

use coffer_storage::{
    AuditEntry, Change, DekRecord, Direction, Entity, NewSecret, Page, PageWindow, Pending, Result,
    SecretOrder, SecretQuery, SecretRecord, SecretUpdate, StorageError, VersionRecord,
};
use coffer_types::{AccountId, DekId, SecretId, SecretName, StoreId, Version};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStorage;
use crate::db::{
    DbResultExt, Params, Violation, bytes_col, col, contains_pattern, db_error, direction_sql,
    encode_scopes, opt_bytes_col, scope_needle, scopes_col, ts_col, u64_col, version_col,
    violation,
};
use crate::keys::insert_carried_deks;
use crate::stores::require_store;
use crate::tx::TxFuture;
use crate::write::WriteTx;

// Column lists and their decoders change together: a decoder reads by position.
pub(crate) const SECRET_COLS: &str =
    "id, store_id, account_id, name, comment, scopes, created, modified, version";
const VERSION_COLS: &str = "secret_id, version, dek_id, sealed, created";

pub(crate) fn secret_from_row(row: &Row) -> Result<SecretRecord> {
    let name: String = col(row, 3, "secrets.name")?;
    Ok(SecretRecord {
        id: SecretId::from_bytes(bytes_col(row, 0, "secrets.id")?),
        store_id: StoreId::from_bytes(bytes_col(row, 1, "secrets.store_id")?),
        account_id: AccountId::from_bytes(bytes_col(row, 2, "secrets.account_id")?),
        name: SecretName::parse(&name)
            .map_err(|_| StorageError::Corrupted("secrets.name: invalid name".into()))?,
        comment: col(row, 4, "secrets.comment")?,
        scopes: scopes_col(row, 5, "secrets.scopes")?,
        created: ts_col(row, 6, "secrets.created")?,
        modified: ts_col(row, 7, "secrets.modified")?,
        version: version_col(row, 8, "secrets.version")?,
    })
}

fn version_from_row(row: &Row) -> Result<VersionRecord> {
    Ok(VersionRecord {
        secret_id: SecretId::from_bytes(bytes_col(row, 0, "versions.secret_id")?),
        version: version_col(row, 1, "versions.version")?,
        dek_id: DekId::from_bytes(bytes_col(row, 2, "versions.dek_id")?),
        sealed: col(row, 3, "versions.sealed")?,
        created: ts_col(row, 4, "versions.created")?,
    })
}

fn name_taken(name: &SecretName) -> StorageError {
    StorageError::NameTaken {
        entity: Entity::Secret,
        name: name.as_str().to_owned(),
    }
}

/// Whether `id` is a DEK of `account` (a secret may only be sealed under its account's keys).
async fn dek_belongs_to(c: &impl GenericClient, id: DekId, account: AccountId) -> Result<bool> {
    let stmt = c
        .prepare_cached("SELECT 1 FROM deks WHERE id = $1 AND account_id = $2")
        .await
        .db("check dek")?;
    Ok(c.query_opt(
        &stmt,
        &[&id.as_bytes().as_slice(), &account.as_bytes().as_slice()],
    )
    .await
    .db("check dek")?
    .is_some())
}

async fn read_secret_count(c: &impl GenericClient, account: AccountId) -> Result<u64> {
    let stmt = c
        .prepare_cached("SELECT secret_count FROM accounts WHERE id = $1")
        .await
        .db("secret count")?;
    c.query_opt(&stmt, &[&account.as_bytes().as_slice()])
        .await
        .db("secret count")?
        .map(|row| u64_col(&row, 0, "accounts.secret_count"))
        .transpose()
        .map(|count| count.unwrap_or(0))
}

async fn read_version(
    c: &impl GenericClient,
    secret: SecretId,
    version: Version,
) -> Result<Option<VersionRecord>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {VERSION_COLS} FROM versions WHERE secret_id = $1 AND version = $2"
        ))
        .await
        .db("get version")?;
    c.query_opt(
        &stmt,
        &[&secret.as_bytes().as_slice(), &i64::from(version.0)],
    )
    .await
    .db("get version")?
    .map(|row| version_from_row(&row))
    .transpose()
}

async fn prepare_insert_version(c: &impl GenericClient) -> Result<tokio_postgres::Statement> {
    c.prepare_cached(
        "INSERT INTO versions (secret_id, version, dek_id, sealed, created)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .await
    .db("create version")
}

/// Runs the statement of [`prepare_insert_version`] for `value`.
async fn run_insert_version(
    c: &impl GenericClient,
    stmt: &tokio_postgres::Statement,
    value: &VersionRecord,
) -> Result<()> {
    c.execute(
        stmt,
        &[
            &value.secret_id.as_bytes().as_slice(),
            &i64::from(value.version.0),
            &value.dek_id.as_bytes().as_slice(),
            &value.sealed,
            &value.created.unix_micros(),
        ],
    )
    .await
    .map_err(|e| match violation(&e) {
        Some(Violation::Unique("versions_pkey")) => StorageError::AlreadyExists(Entity::Version),
        Some(Violation::ForeignKey(_)) => StorageError::NotFound(Entity::Dek),
        _ => db_error("create version", &e),
    })?;
    Ok(())
}

pub(crate) async fn create_secrets(
    s: &PgStorage,
    account: AccountId,
    store: StoreId,
    secrets: Vec<NewSecret>,
    quota: u64,
    audit: &[AuditEntry],
) -> Result<()> {
    coffer_storage::validate::check_new_secrets(account, store, &secrets)?;
    s.write(audit, move |w| {
        Box::pin(async move {
            // Under the writer lock: no concurrent create slips in between these reads and the
            // inserts. The store, the account's count and the stored secrets that clash with
            // the new ones, pipelined (one round trip).
            let ids: Vec<&[u8]> = secrets
                .iter()
                .map(|n| n.record.id.as_bytes().as_slice())
                .collect();
            let names: Vec<&str> = secrets.iter().map(|n| n.record.name.as_str()).collect();
            let clash_stmt = w
                .tx()
                .prepare_cached(
                    // One index look-up per new name and per new id, whatever the plan (an
                    // OR, or `= ANY` of a long array, makes a generic plan scan the whole
                    // table and compare each row with every element).
                    "SELECT s.id, s.name, true
                     FROM unnest($2::text[]) AS n(name)
                     JOIN secrets AS s ON s.store_id = $1 AND s.name = n.name
                     UNION ALL
                     SELECT s.id, s.name, s.store_id = $1
                     FROM unnest($3::bytea[]) AS i(id)
                     JOIN secrets AS s ON s.id = i.id",
                )
                .await
                .db("check new secrets")?;
            let tx = w.tx();
            let clashes = async {
                tx.query(&clash_stmt, &[&store.as_bytes().as_slice(), &names, &ids])
                    .await
                    .db("check new secrets")
            };
            let ((), usage, clashes) = futures_util::future::try_join3(
                require_store(tx, account, store),
                read_secret_count(tx, account),
                clashes,
            )
            .await?;
            let requested = secrets.len() as u64;
            if usage.saturating_add(requested) > quota {
                return Err(StorageError::QuotaExceeded {
                    quota,
                    usage,
                    requested,
                });
            }
            // Before the checks below, which then find carried DEKs like stored ones, and
            // before the secrets, so an edge has each DEK before the values sealed under it.
            let carried: Vec<&DekRecord> =
                secrets.iter().filter_map(|new| new.dek.as_ref()).collect();
            let owners = insert_carried_deks(w, &carried).await?;
            let mut checked: HashSet<DekId> = HashSet::new();
            for new in &secrets {
                let dek = new.value.dek_id;
                if checked.insert(dek) && !dek_is_accounts(w, &owners, dek, account).await? {
                    return Err(StorageError::NotFound(Entity::Dek));
                }
            }
            // The first clash in order, with a stored secret or an earlier item of this
            // batch, as inserting them one by one would meet it (an id before a name).
            let mut taken_ids: HashSet<[u8; 16]> = HashSet::new();
            let mut taken_names: HashSet<String> = HashSet::new();
            for row in &clashes {
                taken_ids.insert(bytes_col(row, 0, "secrets.id")?);
                if col::<bool>(row, 2, "secrets.store_id")? {
                    taken_names.insert(col(row, 1, "secrets.name")?);
                }
            }
            for new in &secrets {
                if !taken_ids.insert(*new.record.id.as_bytes()) {
                    return Err(StorageError::AlreadyExists(Entity::Secret));
                }
                if !taken_names.insert(new.record.name.as_str().to_owned()) {
                    return Err(name_taken(&new.record.name));
                }
            }
            let changes: Vec<Change> = secrets
                .iter()
                .map(|new| coffer_storage::validate::secret_put(&new.record, &new.value))
                .collect();
            let staged = w.stage(&changes)?;
            insert_new_secrets(w.tx(), &secrets, &staged).await
        })
    })
    .await
}

/// The rows of a bulk create, one multi-row statement per table (secrets, then their
/// versions, then the change-log entries), pipelined: one round trip whatever the count.
async fn insert_new_secrets(
    tx: &deadpool_postgres::Transaction<'_>,
    secrets: &[NewSecret],
    staged: &crate::write::StagedChanges,
) -> Result<()> {
    let secrets_stmt = tx
        .prepare_cached(
            "INSERT INTO secrets (id, store_id, account_id, name, comment, scopes, created,
                                  modified, version)
             SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::text[],
                                  $5::text[], $6::text[], $7::int8[], $8::int8[], $9::int8[])",
        )
        .await
        .db("create secret")?;
    let versions_stmt = tx
        .prepare_cached(
            "INSERT INTO versions (secret_id, version, dek_id, sealed, created)
             SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::bytea[], $5::int8[])",
        )
        .await
        .db("create version")?;
    let records = secrets.iter().map(|n| &n.record);
    let values = secrets.iter().map(|n| &n.value);
    let ids: Vec<&[u8]> = records
        .clone()
        .map(|r| r.id.as_bytes().as_slice())
        .collect();
    let stores: Vec<&[u8]> = records
        .clone()
        .map(|r| r.store_id.as_bytes().as_slice())
        .collect();
    let accounts: Vec<&[u8]> = records
        .clone()
        .map(|r| r.account_id.as_bytes().as_slice())
        .collect();
    let names: Vec<&str> = records.clone().map(|r| r.name.as_str()).collect();
    let comments: Vec<&str> = records.clone().map(|r| r.comment.as_str()).collect();
    let scopes: Vec<String> = records.clone().map(|r| encode_scopes(&r.scopes)).collect();
    let created: Vec<i64> = records.clone().map(|r| r.created.unix_micros()).collect();
    let modified: Vec<i64> = records.clone().map(|r| r.modified.unix_micros()).collect();
    let version: Vec<i64> = records.map(|r| i64::from(r.version.0)).collect();
    let v_ids: Vec<&[u8]> = values
        .clone()
        .map(|v| v.secret_id.as_bytes().as_slice())
        .collect();
    let v_versions: Vec<i64> = values.clone().map(|v| i64::from(v.version.0)).collect();
    let v_deks: Vec<&[u8]> = values
        .clone()
        .map(|v| v.dek_id.as_bytes().as_slice())
        .collect();
    let v_sealed: Vec<&[u8]> = values.clone().map(|v| v.sealed.as_slice()).collect();
    let v_created: Vec<i64> = values.map(|v| v.created.unix_micros()).collect();
    let insert_secrets = async {
        tx.execute(
            &secrets_stmt,
            &[
                &ids, &stores, &accounts, &names, &comments, &scopes, &created, &modified, &version,
            ],
        )
        .await
        .map_err(|e| match violation(&e) {
            // Checked above under the writer lock: only a bug gets here.
            Some(Violation::Unique("secrets_pkey")) => StorageError::AlreadyExists(Entity::Secret),
            // Also checked above; should a clash get past the check, it is still a clash.
            Some(Violation::Unique("secrets_name_unique")) => StorageError::NameTaken {
                entity: Entity::Secret,
                name: names.first().map(|n| (*n).to_owned()).unwrap_or_default(),
            },
            Some(Violation::ForeignKey(_)) => StorageError::NotFound(Entity::Store),
            _ => db_error("create secret", &e),
        })
    };
    let insert_versions = async {
        tx.execute(
            &versions_stmt,
            &[&v_ids, &v_versions, &v_deks, &v_sealed, &v_created],
        )
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::Unique("versions_pkey")) => {
                StorageError::AlreadyExists(Entity::Version)
            }
            Some(Violation::ForeignKey(_)) => StorageError::NotFound(Entity::Dek),
            _ => db_error("create version", &e),
        })
    };
    // In this order on the wire: the secrets before the versions that refer to them.
    futures_util::future::try_join3(
        insert_secrets,
        insert_versions,
        crate::write::insert_changes(tx, staged),
    )
    .await?;
    Ok(())
}

pub(crate) async fn get_secret(
    s: &PgStorage,
    account: AccountId,
    store: StoreId,
    id: SecretId,
) -> Result<Option<SecretRecord>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {SECRET_COLS} FROM secrets WHERE id = $1 AND store_id = $2 AND account_id = $3"
        ))
        .await
        .db("get secret")?;
    c.query_opt(
        &stmt,
        &[
            &id.as_bytes().as_slice(),
            &store.as_bytes().as_slice(),
            &account.as_bytes().as_slice(),
        ],
    )
    .await
    .db("get secret")?
    .map(|row| secret_from_row(&row))
    .transpose()
}

/// Flat in the store's size where page numbers allow (docs/benchmarks.md, "Lists"): the
/// unfiltered count is the store's `secret_count` (kept by triggers); the page's ids are read
/// off the order's index (no `account_id` filter: a secret's account is its store's, by the
/// foreign key, and the store check has established it), from the nearer end of the order
/// (`PageWindow`), and only those rows are read whole. A filtered list (`search`, `scopes`)
/// reads the rows it tests and counts its matches.
pub(crate) async fn list_secrets(
    s: &PgStorage,
    account: AccountId,
    store: StoreId,
    query: &SecretQuery,
) -> Result<Page<SecretRecord>> {
    query.check()?;
    let query = query.clone();
    s.read_snapshot(move |tx| -> TxFuture<'_, _> {
        Box::pin(async move {
            let stored = tx
                .prepare_cached("SELECT secret_count FROM stores WHERE id = $1 AND account_id = $2")
                .await
                .db("check store")?;
            let stored = tx
                .query_opt(
                    &stored,
                    &[&store.as_bytes().as_slice(), &account.as_bytes().as_slice()],
                )
                .await
                .db("check store")?
                .ok_or(StorageError::NotFound(Entity::Store))?;
            let stored = u64_col(&stored, 0, "stores.secret_count")?;
            let mut params = Params::default();
            let mut filter = format!("store_id = {}", params.push(store.as_bytes().to_vec()));
            if let Some(search) = &query.search {
                let p = params.push(contains_pattern(search));
                // The columns are COLLATE "C": ILIKE folds ASCII letters only, like SQLite's
                // LIKE (names are ASCII; other letters in comments match exactly).
                filter.push_str(&format!(
                    " AND (name ILIKE {p} ESCAPE '\\' OR comment ILIKE {p} ESCAPE '\\')"
                ));
            }
            for scope in query.scopes.iter() {
                let p = params.push(scope_needle(scope));
                filter.push_str(&format!(" AND strpos(scopes, {p}) > 0"));
            }
            let total = if query.is_unfiltered() {
                stored
            } else {
                let count = tx
                    .prepare_cached(&format!("SELECT count(*) FROM secrets WHERE {filter}"))
                    .await
                    .db("count secrets")?;
                u64_col(
                    &tx.query_one(&count, &params.refs())
                        .await
                        .db("count secrets")?,
                    0,
                    "count",
                )?
            };
            let Some(window) = PageWindow::new(query.page, query.per_page, total) else {
                return Ok(Page {
                    items: Vec::new(),
                    total_count: total,
                });
            };
            let limit = params.push(i64::try_from(window.limit).unwrap_or(i64::MAX));
            let skip = params.push(i64::try_from(window.skip).unwrap_or(i64::MAX));
            let read = secret_order(query.order, window.read_direction(query.direction));
            let order = secret_order(query.order, query.direction);
            // A deferred join: the subquery reads the page's ids off the order's index (an
            // index-only walk over the rows skipped), the outer query reads those rows only,
            // filtered again (ids are unique, but a list must not lean on that alone: a key
            // re-made in the database would show another store's row under the same id).
            let page = tx
                .prepare_cached(&format!(
                    "SELECT {SECRET_COLS} FROM secrets WHERE {filter} AND id IN (
                         SELECT id FROM secrets WHERE {filter} ORDER BY {read}
                         LIMIT {limit} OFFSET {skip})
                     ORDER BY {order}"
                ))
                .await
                .db("list secrets")?;
            let items = tx
                .query(&page, &params.refs())
                .await
                .db("list secrets")?
                .iter()
                .map(secret_from_row)
                .collect::<Result<Vec<_>>>()?;
            Ok(Page {
                items,
                total_count: total,
            })
        })
    })
    .await
}

/// The ORDER BY of a secrets list, each served by an index on (store_id, column, id), or
/// (store_id, name) INCLUDE (id) for names, which are unique in a store and so need no
/// tie-break. Every stored secret is active: ordering by status is ordering by id alone.
fn secret_order(order: SecretOrder, direction: Direction) -> String {
    let dir = direction_sql(direction);
    match order {
        SecretOrder::Name => format!("name {dir}"),
        SecretOrder::Comment => format!("comment {dir}, id {dir}"),
        SecretOrder::Created => format!("created {dir}, id {dir}"),
        SecretOrder::Modified => format!("modified {dir}, id {dir}"),
        SecretOrder::Status => format!("id {dir}"),
    }
}

/// Whether DEK `id` is `account`'s: from `owners` (what the write's carried DEKs were found
/// to be) when it is there, else from storage.
async fn dek_is_accounts(
    w: &WriteTx<'_>,
    owners: &HashMap<DekId, AccountId>,
    id: DekId,
    account: AccountId,
) -> Result<bool> {
    match owners.get(&id) {
        Some(owner) => Ok(*owner == account),
        None => dek_belongs_to(w.tx(), id, account).await,
    }
}

/// A secret's columns from the `s` side of a join with its store.
const JOINED_SECRET_COLS: &str = "s.id, s.store_id, s.account_id, s.name, s.comment, s.scopes, \
                                  s.created, s.modified, s.version";

/// Applies `update` in the caller's write (see `Storage::update_secret`): the store and the
/// secret read in one statement, the carried DEK checked in one, and the version, the
/// secret's row and the change-log entry written pipelined (one round trip).
async fn apply_update(w: &mut WriteTx<'_>, update: SecretUpdate) -> Result<SecretRecord> {
    let (account, store, id) = (update.account_id, update.store_id, update.secret_id);
    let stmt = w
        .tx()
        .prepare_cached(&format!(
            "SELECT {JOINED_SECRET_COLS} FROM stores AS st
             LEFT JOIN secrets AS s ON s.id = $1 AND s.store_id = st.id
                                   AND s.account_id = st.account_id
             WHERE st.id = $2 AND st.account_id = $3"
        ))
        .await
        .db("read secret")?;
    let row = w
        .tx()
        .query_opt(
            &stmt,
            &[
                &id.as_bytes().as_slice(),
                &store.as_bytes().as_slice(),
                &account.as_bytes().as_slice(),
            ],
        )
        .await
        .db("read secret")?
        .ok_or(StorageError::NotFound(Entity::Store))?;
    if opt_bytes_col::<16>(&row, 0, "secrets.id")?.is_none() {
        return Err(StorageError::NotFound(Entity::Secret));
    }
    let current = secret_from_row(&row)?;
    if current.version != update.expected_version {
        return Err(StorageError::Conflict);
    }
    coffer_storage::validate::check_update_value(
        update.value.as_ref(),
        update.dek.as_ref(),
        id,
        update.expected_version,
        account,
    )?;
    let (value, new_value) = match update.value {
        Some(value) => {
            let carried: Vec<&DekRecord> = update.dek.iter().collect();
            let owners = insert_carried_deks(w, &carried).await?;
            if !dek_is_accounts(w, &owners, value.dek_id, account).await? {
                return Err(StorageError::NotFound(Entity::Dek));
            }
            (value, true)
        }
        // The change carries the full current state, so the unchanged value is read back.
        None => (
            read_version(w.tx(), id, current.version)
                .await?
                .ok_or_else(|| {
                    StorageError::Corrupted("a secret's current version row is missing".into())
                })?,
            false,
        ),
    };
    let record = SecretRecord {
        comment: update.comment.unwrap_or(current.comment),
        scopes: update.scopes.unwrap_or(current.scopes),
        modified: update.modified,
        version: value.version,
        ..current
    };
    let staged = w.stage(&[coffer_storage::validate::secret_put(&record, &value)])?;
    let version_stmt = if new_value {
        Some(prepare_insert_version(w.tx()).await?)
    } else {
        None
    };
    // The version guard repeats the check above; it can only fail if that check was wrong.
    let update_stmt = w
        .tx()
        .prepare_cached(
            "UPDATE secrets SET comment = $1, scopes = $2, modified = $3, version = $4
             WHERE id = $5 AND version = $6",
        )
        .await
        .db("update secret")?;
    let tx = w.tx();
    let scopes = encode_scopes(&record.scopes);
    let insert_version = async {
        match &version_stmt {
            Some(stmt) => run_insert_version(tx, stmt, &value).await,
            None => Ok(()),
        }
    };
    let update_row = async {
        tx.execute(
            &update_stmt,
            &[
                &record.comment,
                &scopes,
                &record.modified.unix_micros(),
                &i64::from(record.version.0),
                &id.as_bytes().as_slice(),
                &i64::from(update.expected_version.0),
            ],
        )
        .await
        .db("update secret")
    };
    // In this order on the wire: the version before the row pointing at it.
    let ((), changed, ()) = futures_util::future::try_join3(
        insert_version,
        update_row,
        crate::write::insert_changes(tx, &staged),
    )
    .await?;
    if changed != 1 {
        return Err(StorageError::Conflict);
    }
    Ok(record)
}

pub(crate) async fn update_secret(
    s: &PgStorage,
    update: SecretUpdate,
    audit: &[AuditEntry],
) -> Result<SecretRecord> {
    s.write(audit, move |w| Box::pin(apply_update(w, update)))
        .await
}

pub(crate) async fn queue_update_secret(
    s: &PgStorage,
    update: SecretUpdate,
    audit: &[AuditEntry],
) -> Result<Pending<SecretRecord>> {
    s.queue_write(audit, move |w| Box::pin(apply_update(w, update)))
        .await
}

pub(crate) async fn delete_secrets(
    s: &PgStorage,
    account: AccountId,
    store: StoreId,
    ids: &[SecretId],
    audit: &[AuditEntry],
) -> Result<()> {
    let ids = ids.to_vec();
    s.write(audit, move |w| {
        Box::pin(async move {
            require_store(w.tx(), account, store).await?;
            let stmt = w
                .tx()
                .prepare_cached(
                    "DELETE FROM secrets WHERE id = $1 AND store_id = $2 AND account_id = $3",
                )
                .await
                .db("delete secret")?;
            // Naming a secret twice deletes it once.
            let mut seen = HashSet::with_capacity(ids.len());
            for id in ids.iter().filter(|id| seen.insert(**id)) {
                let deleted = w
                    .tx()
                    .execute(
                        &stmt,
                        &[
                            &id.as_bytes().as_slice(),
                            &store.as_bytes().as_slice(),
                            &account.as_bytes().as_slice(),
                        ],
                    )
                    .await
                    .db("delete secret")?;
                if deleted == 0 {
                    // The error rolls back the deletions already made: all or nothing.
                    return Err(StorageError::NotFound(Entity::Secret));
                }
                w.append(&Change::SecretDeleted {
                    account_id: account,
                    store_id: store,
                    secret_id: *id,
                })
                .await?;
            }
            Ok(())
        })
    })
    .await
}

pub(crate) async fn get_version(
    s: &PgStorage,
    secret: SecretId,
    version: Version,
) -> Result<Option<VersionRecord>> {
    read_version(&s.client().await?, secret, version).await
}

pub(crate) async fn secret_count(s: &PgStorage, account: AccountId) -> Result<u64> {
    read_secret_count(&s.client().await?, account).await
}

pub(crate) async fn get_secret_by_name(
    s: &PgStorage,
    account: AccountId,
    store: StoreId,
    name: &SecretName,
) -> Result<Option<SecretRecord>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {SECRET_COLS} FROM secrets WHERE store_id = $1 AND name = $2 AND account_id = $3"
        ))
        .await
        .db("get secret by name")?;
    c.query_opt(
        &stmt,
        &[
            &store.as_bytes().as_slice(),
            &name.as_str(),
            &account.as_bytes().as_slice(),
        ],
    )
    .await
    .db("get secret by name")?
    .map(|row| secret_from_row(&row))
    .transpose()
}

/// The runtime read: one statement, so one snapshot. The secret is found through the unique
/// (store_id, name) index and its current version through the versions primary key. A LEFT
/// JOIN, so that a secret whose current version row is missing is reported as damage rather
/// than read as "no such secret".
pub(crate) async fn current_value(
    s: &PgStorage,
    account: AccountId,
    store: StoreId,
    name: &SecretName,
) -> Result<Option<(SecretRecord, VersionRecord)>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT s.id, s.store_id, s.account_id, s.name, s.comment, s.scopes, s.created,
                    s.modified, s.version,
                    v.dek_id, v.sealed, v.created
             FROM secrets AS s
             LEFT JOIN versions AS v ON v.secret_id = s.id AND v.version = s.version
             WHERE s.store_id = $1 AND s.name = $2 AND s.account_id = $3",
        )
        .await
        .db("current value")?;
    let Some(row) = c
        .query_opt(
            &stmt,
            &[
                &store.as_bytes().as_slice(),
                &name.as_str(),
                &account.as_bytes().as_slice(),
            ],
        )
        .await
        .db("current value")?
    else {
        return Ok(None);
    };
    let secret = secret_from_row(&row)?;
    if col::<Option<i64>>(&row, 11, "versions.created")?.is_none() {
        return Err(StorageError::Corrupted(
            "a secret's current version row is missing".into(),
        ));
    }
    let version = VersionRecord {
        secret_id: secret.id,
        version: secret.version,
        dek_id: DekId::from_bytes(bytes_col(&row, 9, "versions.dek_id")?),
        sealed: col(&row, 10, "versions.sealed")?,
        created: ts_col(&row, 11, "versions.created")?,
    };
    Ok(Some((secret, version)))
}
