//! Mutations. Each runs on the writer thread inside its own savepoint: returning an error rolls
//! back everything it did, including its change-log appends, so checks may come in whatever
//! order reads best and inserts may be relied on to detect clashes.

use std::collections::HashSet;

use coffer_types::{
    AccountId, BindingName, DekId, SecretId, ServiceId, StoreId, Timestamp, TokenId,
};
use rusqlite::params;

use super::codec::{
    Constraint, DbResultExt, constraint, db_error, encode_scopes, execute, id_col, query_all,
    query_opt, to_hex, to_i64,
};
use super::reads::{
    self, require_service, require_store, secret_cols, secret_from_row, service_token_cols,
    service_token_from_row,
};
use super::writer::WriteCx;
use crate::{
    AccountRecord, Change, ChangeSecretBinding, ChangeStoreBinding, Entity, NewSecret, Result,
    SecretRecord, SecretUpdate, ServiceRecord, ServiceTokenRecord, StorageError, StoreRecord,
    TokenRecord, VersionRecord, WrappedKeyRecord,
};

use super::deks::insert_carried_deks;

pub(super) fn put_instance_key_if_absent(
    cx: &mut WriteCx<'_>,
    purpose: &str,
    key: &WrappedKeyRecord,
) -> Result<WrappedKeyRecord> {
    super::rewrap::refuse_retired(cx.conn, &key.kek_id)?;
    // The writer applies jobs one at a time, so between this insert and the read below no
    // other initialiser can run: whoever's insert came first is what both read back.
    execute(
        cx.conn,
        "INSERT INTO instance_keys (purpose, key_id, kek_id, wrapped, created)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (purpose) DO NOTHING",
        params![
            purpose,
            key.id.as_bytes(),
            key.kek_id,
            key.wrapped,
            key.created.unix_micros()
        ],
        "put instance key",
        |_| None,
    )?;
    reads::get_instance_key(cx.conn, purpose)?
        .ok_or_else(|| StorageError::Unavailable("instance key vanished after insert".into()))
}

pub(super) fn create_account(cx: &mut WriteCx<'_>, account: &AccountRecord) -> Result<()> {
    let quota = account
        .secrets_quota
        .map(|q| to_i64(q, "secrets quota is larger than storage can hold"))
        .transpose()?;
    execute(
        cx.conn,
        "INSERT INTO accounts (id, name, created, secrets_quota) VALUES (?1, ?2, ?3, ?4)",
        params![
            account.id.as_bytes(),
            account.name,
            account.created.unix_micros(),
            quota
        ],
        "create account",
        |c| (c == Constraint::PrimaryKey).then_some(StorageError::AlreadyExists(Entity::Account)),
    )?;
    cx.append(&Change::AccountPut {
        account_id: account.id,
        name: account.name.clone(),
    })
}

pub(super) fn set_account_quota(
    cx: &mut WriteCx<'_>,
    account: AccountId,
    quota: Option<u64>,
) -> Result<()> {
    let quota = quota
        .map(|q| to_i64(q, "secrets quota is larger than storage can hold"))
        .transpose()?;
    let changed = execute(
        cx.conn,
        "UPDATE accounts SET secrets_quota = ?1 WHERE id = ?2",
        params![quota, account.as_bytes()],
        "set account quota",
        |_| None,
    )?;
    if changed == 0 {
        return Err(StorageError::NotFound(Entity::Account));
    }
    // Quotas are enforced by the control plane alone; edges need not hear of them.
    Ok(())
}

pub(super) fn delete_account(cx: &mut WriteCx<'_>, account: AccountId) -> Result<()> {
    reads::require_account(cx.conn, account)?;

    // Id order for stores and secrets, so every backend logs the same entries in the same
    // order.
    let stores = query_all(
        cx.conn,
        "SELECT id FROM stores WHERE account_id = ?1 ORDER BY id",
        [account.as_bytes()],
        "list account stores",
        |row| id_col(row, 0, "stores.id").map(StoreId::from_bytes),
    )?;
    for &store in &stores {
        // Store by store: `secrets` is indexed by store, not by account. Versions go with
        // their secrets (ON DELETE CASCADE); the triggers keep `secret_count` right until the
        // account row itself goes.
        let secrets = store_secret_ids(cx, store)?;
        delete_store_secrets(cx, account, store, secrets)?;
    }
    execute(
        cx.conn,
        "DELETE FROM stores WHERE account_id = ?1",
        [account.as_bytes()],
        "delete account stores",
        |_| None,
    )?;
    for &store_id in &stores {
        cx.append(&Change::StoreDeleted {
            account_id: account,
            store_id,
        })?;
    }
    // Services in id order, like stores. Their bindings and tokens go with them (ON DELETE
    // CASCADE) and get no entries: `ServiceDeleted` implies them.
    let services = query_all(
        cx.conn,
        "SELECT id FROM services WHERE account_id = ?1 ORDER BY id",
        [account.as_bytes()],
        "list account services",
        |row| id_col(row, 0, "services.id").map(ServiceId::from_bytes),
    )?;
    execute(
        cx.conn,
        "DELETE FROM services WHERE account_id = ?1",
        [account.as_bytes()],
        "delete account services",
        |_| None,
    )?;
    for &service_id in &services {
        cx.append(&Change::ServiceDeleted {
            account_id: account,
            service_id,
        })?;
    }
    execute(
        cx.conn,
        "DELETE FROM tokens WHERE account_id = ?1",
        [account.as_bytes()],
        "delete account tokens",
        |_| None,
    )?;
    // Every version of the account is gone by now, and no other account's version can name
    // one of its DEKs (writes check that), so a reference still found is damage, not a race.
    let deks = query_all(
        cx.conn,
        "SELECT id FROM deks WHERE account_id = ?1",
        [account.as_bytes()],
        "list account deks",
        |row| id_col(row, 0, "deks.id").map(DekId::from_bytes),
    )?;
    execute(
        cx.conn,
        "DELETE FROM deks WHERE account_id = ?1",
        [account.as_bytes()],
        "delete account deks",
        |c| {
            (c == Constraint::ForeignKey).then(|| {
                StorageError::Corrupted(
                    "a value of another account is sealed under a DEK of the deleted account"
                        .into(),
                )
            })
        },
    )?;
    super::account_keys::delete_account(cx, account)?;
    execute(
        cx.conn,
        "DELETE FROM accounts WHERE id = ?1",
        [account.as_bytes()],
        "delete account",
        |_| None,
    )?;
    // Its DEKs are destroyed with it: no retained entry may still carry one, nor one of its
    // account grants (the `AccountDeleted` below tells replicas to drop theirs).
    super::lifecycle::compact_past_account(cx, account, deks, u64::MAX)?;
    cx.append(&Change::AccountDeleted {
        account_id: account,
    })
}

pub(super) fn create_token(cx: &mut WriteCx<'_>, token: &TokenRecord) -> Result<()> {
    execute(
        cx.conn,
        "INSERT INTO tokens (id, account_id, name, hash, role, operator, created, expires,
                             revoked, last_used)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            token.id.as_bytes(),
            token.account_id.as_bytes(),
            token.name,
            token.hash,
            token.role,
            token.operator,
            token.created.unix_micros(),
            token.expires.map(|t| t.unix_micros()),
            token.revoked.map(|t| t.unix_micros()),
            token.last_used.map(|t| t.unix_micros()),
        ],
        "create token",
        |c| match c {
            Constraint::PrimaryKey => Some(StorageError::AlreadyExists(Entity::Token)),
            Constraint::ForeignKey => Some(StorageError::NotFound(Entity::Account)),
            _ => None,
        },
    )?;
    // Tokens are control-plane only: edges never see them, so nothing is logged.
    Ok(())
}

/// [`create_token`] unless the account holds a token already (`Conflict`). The writer thread
/// runs one write at a time, so nothing comes between the look and the insert.
pub(super) fn create_first_token(cx: &mut WriteCx<'_>, token: &TokenRecord) -> Result<()> {
    let held: bool = cx
        .conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE account_id = ?1)",
            [token.account_id.as_bytes()],
            |r| r.get(0),
        )
        .db("look for an account's tokens")?;
    if held {
        return Err(StorageError::Conflict);
    }
    create_token(cx, token)
}

pub(super) fn revoke_token(
    cx: &mut WriteCx<'_>,
    account: AccountId,
    id: TokenId,
    at: Timestamp,
) -> Result<TokenRecord> {
    let token = reads::get_token(cx.conn, id)?
        .filter(|t| t.account_id == account)
        .ok_or(StorageError::NotFound(Entity::Token))?;
    if token.revoked.is_some() {
        return Err(StorageError::AlreadyRevoked);
    }
    // The writer runs one job at a time, so the row is as just read; the guard restates it.
    let changed = execute(
        cx.conn,
        "UPDATE tokens SET revoked = ?1 WHERE id = ?2 AND revoked IS NULL",
        params![at.unix_micros(), id.as_bytes()],
        "revoke token",
        |_| None,
    )?;
    if changed != 1 {
        return Err(StorageError::AlreadyRevoked);
    }
    // Tokens are control-plane only: nothing is logged.
    Ok(TokenRecord {
        revoked: Some(at),
        ..token
    })
}

pub(super) fn touch_tokens(cx: &mut WriteCx<'_>, used: &[(TokenId, Timestamp)]) -> Result<()> {
    // One cached statement for the whole batch. The guard makes `last_used` the maximum of
    // the stored and the given time (a NULL is older than any time) and leaves a row that is
    // already as recent alone, so it is not rewritten; an unknown id matches no row.
    let mut stmt = cx
        .conn
        .prepare_cached(
            "UPDATE tokens SET last_used = ?2
             WHERE id = ?1 AND (last_used IS NULL OR last_used < ?2)",
        )
        .db("touch tokens")?;
    for (id, at) in used {
        stmt.execute(params![id.as_bytes(), at.unix_micros()])
            .db("touch tokens")?;
    }
    // Last-used times are control-plane only: nothing is logged.
    Ok(())
}

pub(super) fn create_store(
    cx: &mut WriteCx<'_>,
    store: &StoreRecord,
    max_stores: u64,
) -> Result<()> {
    let account = store.account_id.as_bytes();
    let taken = query_opt(
        cx.conn,
        "SELECT 1 FROM stores WHERE account_id = ?1 AND name = ?2",
        params![account, store.name.as_str()],
        "check store name",
        |_| Ok(()),
    )?;
    if taken.is_some() {
        return Err(name_taken(Entity::Store, store.name.as_str()));
    }
    let count = query_opt(
        cx.conn,
        "SELECT count(*) FROM stores WHERE account_id = ?1",
        [account],
        "count stores",
        |row| super::codec::u64_col(row, 0, "count"),
    )?
    .unwrap_or(0);
    if count >= max_stores {
        return Err(StorageError::LimitExceeded {
            what: "stores",
            limit: max_stores,
        });
    }
    execute(
        cx.conn,
        "INSERT INTO stores (id, account_id, name, created, modified) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            store.id.as_bytes(),
            account,
            store.name.as_str(),
            store.created.unix_micros(),
            store.modified.unix_micros()
        ],
        "create store",
        |c| match c {
            Constraint::PrimaryKey => Some(StorageError::AlreadyExists(Entity::Store)),
            Constraint::ForeignKey => Some(StorageError::NotFound(Entity::Account)),
            Constraint::Unique => Some(name_taken(Entity::Store, store.name.as_str())),
            Constraint::Other => None,
        },
    )?;
    cx.append(&Change::StorePut {
        account_id: store.account_id,
        store_id: store.id,
        name: store.name.as_str().to_owned(),
    })
}

/// A store's secret ids in id order: the order every backend logs their deletion in.
fn store_secret_ids(cx: &mut WriteCx<'_>, store: StoreId) -> Result<Vec<SecretId>> {
    query_all(
        cx.conn,
        "SELECT id FROM secrets WHERE store_id = ?1 ORDER BY id",
        [store.as_bytes()],
        "list store secrets",
        |row| id_col(row, 0, "secrets.id").map(SecretId::from_bytes),
    )
}

/// Deletes every secret of `store` (`secrets`, as [`store_secret_ids`] listed them) and logs
/// each deletion. Versions go with their secrets (ON DELETE CASCADE); the account's secret
/// count follows by trigger.
fn delete_store_secrets(
    cx: &mut WriteCx<'_>,
    account: AccountId,
    store: StoreId,
    secrets: Vec<SecretId>,
) -> Result<()> {
    execute(
        cx.conn,
        "DELETE FROM secrets WHERE store_id = ?1",
        [store.as_bytes()],
        "delete store secrets",
        |_| None,
    )?;
    for secret_id in secrets {
        cx.append(&Change::SecretDeleted {
            account_id: account,
            store_id: store,
            secret_id,
        })?;
    }
    Ok(())
}

pub(super) fn delete_store(
    cx: &mut WriteCx<'_>,
    account: AccountId,
    id: StoreId,
    force: bool,
) -> Result<()> {
    require_store(cx.conn, account, id)?;
    let secrets = store_secret_ids(cx, id)?;
    if !secrets.is_empty() && !force {
        return Err(StorageError::NotEmpty);
    }
    if !secrets.is_empty() {
        // The DEKs its values used may be shared with the account's other stores: none seals
        // again, the others' values are re-sealed away from them, and they are destroyed.
        execute(
            cx.conn,
            "UPDATE deks SET retired = 1 WHERE account_id = ?1",
            [account.as_bytes()],
            "retire account deks",
            |_| None,
        )?;
    }
    delete_store_secrets(cx, account, id, secrets)?;
    execute(
        cx.conn,
        "DELETE FROM stores WHERE id = ?1",
        [id.as_bytes()],
        "delete store",
        |_| None,
    )?;
    cx.append(&Change::StoreDeleted {
        account_id: account,
        store_id: id,
    })
}

pub(super) fn create_secrets(
    cx: &mut WriteCx<'_>,
    account: AccountId,
    store: StoreId,
    secrets: &[NewSecret],
    quota: u64,
) -> Result<()> {
    require_store(cx.conn, account, store)?;
    crate::validate::check_new_secrets(account, store, secrets)?;

    // Checked here, inside the transaction the inserts commit in: no concurrent create can
    // slip in between the count and the insert.
    let usage = reads::secret_count(cx.conn, account)?;
    let requested = secrets.len() as u64;
    if usage.saturating_add(requested) > quota {
        return Err(StorageError::QuotaExceeded {
            quota,
            usage,
            requested,
        });
    }

    // Before the checks below, which then find carried DEKs like stored ones, and before the
    // secrets, so an edge reading the log has each DEK before the values sealed under it.
    insert_carried_deks(cx, secrets.iter().filter_map(|new| new.dek.as_ref()))?;
    let mut checked_deks: HashSet<DekId> = HashSet::new();
    for new in secrets {
        let dek = new.value.dek_id;
        if checked_deks.insert(dek) && !reads::dek_belongs_to(cx.conn, dek, account)? {
            return Err(StorageError::NotFound(Entity::Dek));
        }
    }

    // Inserting in order makes the first clash (with an existing secret or with an earlier
    // item of this batch, which is already inserted) the one the UNIQUE index reports.
    for new in secrets {
        insert_secret(cx, &new.record)?;
        insert_version(cx, &new.value)?;
        cx.append(&crate::validate::secret_put(&new.record, &new.value))?;
    }
    Ok(())
}

fn insert_secret(cx: &WriteCx<'_>, record: &SecretRecord) -> Result<()> {
    execute(
        cx.conn,
        "INSERT INTO secrets (id, store_id, account_id, name, comment, scopes, created,
                              modified, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            record.id.as_bytes(),
            record.store_id.as_bytes(),
            record.account_id.as_bytes(),
            record.name.as_str(),
            record.comment,
            encode_scopes(&record.scopes),
            record.created.unix_micros(),
            record.modified.unix_micros(),
            i64::from(record.version.0),
        ],
        "create secret",
        |c| match c {
            Constraint::PrimaryKey => Some(StorageError::AlreadyExists(Entity::Secret)),
            Constraint::Unique => Some(name_taken(Entity::Secret, record.name.as_str())),
            Constraint::ForeignKey => Some(StorageError::NotFound(Entity::Store)),
            Constraint::Other => None,
        },
    )
    .map(drop)
}

fn insert_version(cx: &WriteCx<'_>, value: &VersionRecord) -> Result<()> {
    execute(
        cx.conn,
        "INSERT INTO versions (secret_id, version, dek_id, sealed, created)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            value.secret_id.as_bytes(),
            i64::from(value.version.0),
            value.dek_id.as_bytes(),
            value.sealed,
            value.created.unix_micros()
        ],
        "create version",
        |c| match c {
            Constraint::PrimaryKey => Some(StorageError::AlreadyExists(Entity::Version)),
            Constraint::ForeignKey => Some(StorageError::NotFound(Entity::Dek)),
            _ => None,
        },
    )
    .map(drop)
}

fn name_taken(entity: Entity, name: &str) -> StorageError {
    StorageError::NameTaken {
        entity,
        name: name.to_owned(),
    }
}

pub(super) fn update_secret(cx: &mut WriteCx<'_>, update: SecretUpdate) -> Result<SecretRecord> {
    let (account, store, id) = (update.account_id, update.store_id, update.secret_id);
    require_store(cx.conn, account, store)?;
    let current = query_opt(
        cx.conn,
        concat!(
            "SELECT ",
            secret_cols!(),
            " FROM secrets WHERE id = ?1 AND store_id = ?2 AND account_id = ?3"
        ),
        [id.as_bytes(), store.as_bytes(), account.as_bytes()],
        "read secret",
        secret_from_row,
    )?
    .ok_or(StorageError::NotFound(Entity::Secret))?;
    if current.version != update.expected_version {
        return Err(StorageError::Conflict);
    }

    crate::validate::check_update_value(
        update.value.as_ref(),
        update.dek.as_ref(),
        id,
        update.expected_version,
        account,
    )?;
    let value = match update.value {
        Some(value) => {
            insert_carried_deks(cx, update.dek.as_ref())?;
            if !reads::dek_belongs_to(cx.conn, value.dek_id, account)? {
                return Err(StorageError::NotFound(Entity::Dek));
            }
            insert_version(cx, &value)?;
            value
        }
        // The change carries the full current state, so the unchanged value is read back.
        None => reads::get_version(cx.conn, id, current.version)?.ok_or_else(|| {
            StorageError::Corrupted("a secret's current version row is missing".into())
        })?,
    };

    let record = SecretRecord {
        comment: update.comment.unwrap_or(current.comment),
        scopes: update.scopes.unwrap_or(current.scopes),
        modified: update.modified,
        version: value.version,
        ..current
    };
    // The version guard repeats the check above; it can only fail if that check was wrong.
    let changed = execute(
        cx.conn,
        "UPDATE secrets SET comment = ?1, scopes = ?2, modified = ?3, version = ?4
         WHERE id = ?5 AND version = ?6",
        params![
            record.comment,
            encode_scopes(&record.scopes),
            record.modified.unix_micros(),
            i64::from(record.version.0),
            id.as_bytes(),
            i64::from(update.expected_version.0),
        ],
        "update secret",
        |_| None,
    )?;
    if changed != 1 {
        return Err(StorageError::Conflict);
    }
    cx.append(&crate::validate::secret_put(&record, &value))?;
    Ok(record)
}

pub(super) fn delete_secrets(
    cx: &mut WriteCx<'_>,
    account: AccountId,
    store: StoreId,
    ids: &[SecretId],
) -> Result<()> {
    require_store(cx.conn, account, store)?;
    // Naming a secret twice deletes it once.
    let mut seen = HashSet::with_capacity(ids.len());
    for id in ids.iter().filter(|id| seen.insert(**id)) {
        let deleted = execute(
            cx.conn,
            "DELETE FROM secrets WHERE id = ?1 AND store_id = ?2 AND account_id = ?3",
            [id.as_bytes(), store.as_bytes(), account.as_bytes()],
            "delete secret",
            |_| None,
        )?;
        if deleted == 0 {
            // Returning the error rolls back the deletions already made: all or nothing.
            return Err(StorageError::NotFound(Entity::Secret));
        }
        cx.append(&Change::SecretDeleted {
            account_id: account,
            store_id: store,
            secret_id: *id,
        })?;
    }
    Ok(())
}

/// `Invalid` unless every binding name of `service` is used once, across secrets and stores.
fn check_binding_names(service: &ServiceRecord) -> Result<()> {
    let mut seen: HashSet<&BindingName> = HashSet::new();
    let names = service
        .secrets
        .iter()
        .map(|b| &b.binding)
        .chain(service.stores.iter().map(|b| &b.binding));
    for name in names {
        if !seen.insert(name) {
            return Err(StorageError::Invalid(
                "a service's binding names are not unique across its secrets and stores",
            ));
        }
    }
    Ok(())
}

/// Inserts `service`'s bindings in one position sequence: its secret bindings in order, then
/// its store bindings in order (so reading them back by position restores both lists).
fn insert_bindings(cx: &WriteCx<'_>, service: &ServiceRecord) -> Result<()> {
    let mut stmt = cx
        .conn
        .prepare_cached(
            "INSERT INTO service_bindings (service_id, position, binding, store_id, secret_name)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
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
        stmt.execute(params![
            service.id.as_bytes(),
            position,
            binding.as_str(),
            store_id.as_bytes(),
            secret_name,
        ])
        .map_err(|e| match constraint(&e) {
            // Checked before; the index agrees.
            Some(Constraint::Unique | Constraint::PrimaryKey) => StorageError::Invalid(
                "a service's binding names are not unique across its secrets and stores",
            ),
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

fn insert_service_token(cx: &mut WriteCx<'_>, token: &ServiceTokenRecord) -> Result<()> {
    execute(
        cx.conn,
        "INSERT INTO service_tokens (id, account_id, service_id, hash, created, revoked)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            token.id.as_bytes(),
            token.account_id.as_bytes(),
            token.service_id.as_bytes(),
            token.hash,
            token.created.unix_micros(),
            token.revoked.map(|t| t.unix_micros()),
        ],
        "create service token",
        |c| match c {
            Constraint::PrimaryKey => Some(StorageError::AlreadyExists(Entity::ServiceToken)),
            Constraint::ForeignKey => Some(StorageError::NotFound(Entity::Service)),
            _ => None,
        },
    )?;
    // The HMAC only: the token itself never reaches storage.
    cx.append(&Change::ServiceTokenPut {
        account_id: token.account_id,
        service_id: token.service_id,
        token_id: token.id,
        hash_hex: to_hex(token.hash),
    })
}

pub(super) fn create_service(
    cx: &mut WriteCx<'_>,
    service: &ServiceRecord,
    token: &ServiceTokenRecord,
) -> Result<()> {
    if token.account_id != service.account_id || token.service_id != service.id {
        return Err(StorageError::Invalid(
            "a new service's token names another account or service",
        ));
    }
    check_binding_names(service)?;
    let account = service.account_id.as_bytes();
    let taken = query_opt(
        cx.conn,
        "SELECT 1 FROM services WHERE account_id = ?1 AND name = ?2",
        params![account, service.name.as_str()],
        "check service name",
        |_| Ok(()),
    )?;
    if taken.is_some() {
        return Err(name_taken(Entity::Service, service.name.as_str()));
    }
    execute(
        cx.conn,
        "INSERT INTO services (id, account_id, name, kind, created, modified)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            service.id.as_bytes(),
            account,
            service.name.as_str(),
            service.kind.as_str(),
            service.created.unix_micros(),
            service.modified.unix_micros(),
        ],
        "create service",
        |c| match c {
            Constraint::ForeignKey => Some(StorageError::NotFound(Entity::Account)),
            // The name is free (checked above), so a clash is on the id, whichever of its
            // indexes reports it.
            Constraint::PrimaryKey | Constraint::Unique => {
                Some(StorageError::AlreadyExists(Entity::Service))
            }
            Constraint::Other => None,
        },
    )?;
    insert_bindings(cx, service)?;
    cx.append(&service_put(service))?;
    insert_service_token(cx, token)
}

pub(super) fn update_service(
    cx: &mut WriteCx<'_>,
    service: ServiceRecord,
) -> Result<ServiceRecord> {
    check_binding_names(&service)?;
    let current = reads::get_service(cx.conn, service.account_id, service.id)?
        .ok_or(StorageError::NotFound(Entity::Service))?;
    let record = ServiceRecord {
        name: current.name,
        created: current.created,
        ..service
    };
    execute(
        cx.conn,
        "UPDATE services SET kind = ?1, modified = ?2 WHERE id = ?3",
        params![
            record.kind.as_str(),
            record.modified.unix_micros(),
            record.id.as_bytes()
        ],
        "update service",
        |_| None,
    )?;
    // Replaced wholesale, like the `ServicePut` that carries them.
    execute(
        cx.conn,
        "DELETE FROM service_bindings WHERE service_id = ?1",
        [record.id.as_bytes()],
        "replace bindings",
        |_| None,
    )?;
    insert_bindings(cx, &record)?;
    cx.append(&service_put(&record))?;
    Ok(record)
}

pub(super) fn delete_service(
    cx: &mut WriteCx<'_>,
    account: AccountId,
    id: ServiceId,
) -> Result<()> {
    // Bindings and tokens go with the row (ON DELETE CASCADE).
    let deleted = execute(
        cx.conn,
        "DELETE FROM services WHERE id = ?1 AND account_id = ?2",
        [id.as_bytes(), account.as_bytes()],
        "delete service",
        |_| None,
    )?;
    if deleted == 0 {
        return Err(StorageError::NotFound(Entity::Service));
    }
    cx.append(&Change::ServiceDeleted {
        account_id: account,
        service_id: id,
    })
}

/// Sets `revoked = at` on `tokens` (unrevoked tokens of one service, in id order) and logs
/// each; returns them as updated.
fn revoke_service_token_rows(
    cx: &mut WriteCx<'_>,
    tokens: Vec<ServiceTokenRecord>,
    at: Timestamp,
) -> Result<Vec<ServiceTokenRecord>> {
    let mut revoked = Vec::with_capacity(tokens.len());
    for token in tokens {
        let changed = execute(
            cx.conn,
            "UPDATE service_tokens SET revoked = ?1 WHERE id = ?2 AND revoked IS NULL",
            params![at.unix_micros(), token.id.as_bytes()],
            "revoke service token",
            |_| None,
        )?;
        if changed != 1 {
            // Read unrevoked in this transaction a moment ago: only a bug gets here.
            return Err(StorageError::AlreadyRevoked);
        }
        cx.append(&Change::ServiceTokenRevoked {
            account_id: token.account_id,
            service_id: token.service_id,
            token_id: token.id,
        })?;
        revoked.push(ServiceTokenRecord {
            revoked: Some(at),
            ..token
        });
    }
    Ok(revoked)
}

/// The service's unrevoked tokens other than `except`, in id order.
fn active_service_tokens(
    cx: &WriteCx<'_>,
    service: ServiceId,
    except: Option<TokenId>,
) -> Result<Vec<ServiceTokenRecord>> {
    let except = except.map(|id| *id.as_bytes());
    query_all(
        cx.conn,
        concat!(
            "SELECT ",
            service_token_cols!(),
            " FROM service_tokens
              WHERE service_id = ?1 AND revoked IS NULL AND (?2 IS NULL OR id != ?2)
              ORDER BY id"
        ),
        params![service.as_bytes(), except],
        "list active service tokens",
        service_token_from_row,
    )
}

pub(super) fn create_service_token(
    cx: &mut WriteCx<'_>,
    token: &ServiceTokenRecord,
    revoke_others_at: Option<Timestamp>,
) -> Result<Vec<ServiceTokenRecord>> {
    require_service(cx.conn, token.account_id, token.service_id)?;
    insert_service_token(cx, token)?;
    match revoke_others_at {
        None => Ok(Vec::new()),
        Some(at) => {
            let others = active_service_tokens(cx, token.service_id, Some(token.id))?;
            revoke_service_token_rows(cx, others, at)
        }
    }
}

pub(super) fn revoke_service_tokens(
    cx: &mut WriteCx<'_>,
    account: AccountId,
    service: ServiceId,
    only: Option<TokenId>,
    at: Timestamp,
) -> Result<Vec<ServiceTokenRecord>> {
    require_service(cx.conn, account, service)?;
    let tokens = match only {
        None => active_service_tokens(cx, service, None)?,
        Some(id) => {
            let token = reads::get_service_token(cx.conn, id)?
                .filter(|t| t.account_id == account && t.service_id == service)
                .ok_or(StorageError::NotFound(Entity::ServiceToken))?;
            if token.revoked.is_some() {
                return Err(StorageError::AlreadyRevoked);
            }
            vec![token]
        }
    };
    revoke_service_token_rows(cx, tokens, at)
}
