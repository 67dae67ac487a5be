//! Applying one change (a feed entry or a snapshot item) to a replica's tables: the one
//! function both go through, [`apply`], and its helpers.

use std::fmt;

use coffer_types::{Scope, Scopes};
use rusqlite::{Connection, Params, params};

use super::super::codec::{
    DbResultExt, col, constraint, db_error, encode_scopes, id_col, query_opt,
};
use crate::{
    Change, ChangeSecretBinding, ChangeStoreBinding, REPLICATED_KEY_PURPOSES, Result, StorageError,
};

/// Where a change being applied came from, for error messages.
#[derive(Debug, Clone, Copy)]
pub(super) enum Origin {
    /// A feed entry, by seq.
    Entry(u64),
    /// A snapshot item, by position (1-based).
    Item(u64),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Entry(seq) => write!(f, "change {seq}"),
            Origin::Item(n) => write!(f, "snapshot item {n}"),
        }
    }
}

fn corrupted(origin: Origin, what: &str) -> StorageError {
    StorageError::Corrupted(format!("{origin}: {what}"))
}

/// Runs one cached statement; a constraint violation means the change does not fit the
/// replica's rows (`Corrupted`, naming the change), anything else is a database failure.
fn exec(
    conn: &Connection,
    sql: &'static str,
    params: impl Params,
    origin: Origin,
    context: &'static str,
) -> Result<usize> {
    let mut stmt = conn.prepare_cached(sql).db(context)?;
    stmt.execute(params).map_err(|e| match constraint(&e) {
        Some(kind) => corrupted(
            origin,
            &format!("{context}: the replica's rows refuse it ({kind:?} constraint)"),
        ),
        None => db_error(context, &e),
    })
}

/// Whether `sql` (with `params`) finds a row.
fn exists(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    context: &'static str,
) -> Result<bool> {
    Ok(query_opt(conn, sql, params, context, |_| Ok(()))?.is_some())
}

/// The account of the row `sql` finds by id, if any.
fn owner(
    conn: &Connection,
    sql: &str,
    id: &[u8; 16],
    context: &'static str,
) -> Result<Option<[u8; 16]>> {
    query_opt(conn, sql, [id], context, |row| id_col(row, 0, context))
}

fn unhex(origin: Origin, value: &str, what: &str) -> Result<Vec<u8>> {
    hex::decode(value).map_err(|_| corrupted(origin, &format!("{what} is not hex")))
}

fn hash32(origin: Origin, value: &str, what: &str) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(unhex(origin, value, what)?.as_slice())
        .map_err(|_| corrupted(origin, &format!("{what} is not 32 bytes")))
}

fn check_key_purpose(purpose: &str) -> Result<()> {
    if REPLICATED_KEY_PURPOSES.contains(&purpose) {
        Ok(())
    } else {
        Err(StorageError::Invalid(
            "only the service- and node-token MAC keys are replicated",
        ))
    }
}

/// Applies one change to the replica's tables; `at` (Unix micros) is the time its rows get.
pub(super) fn apply(conn: &Connection, change: &Change, at: i64, origin: Origin) -> Result<()> {
    match change {
        Change::AccountPut { account_id, name } => {
            exec(
                conn,
                "INSERT INTO accounts (id, name, created) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                params![account_id.as_bytes(), name, at],
                origin,
                "put account",
            )?;
        }
        Change::DekPut {
            account_id,
            dek_id,
            kek_id,
            wrapped_hex,
        } => {
            let wrapped = unhex(origin, wrapped_hex, "wrapped_hex")?;
            // A DEK's key never changes, but its wrap does: a node's revocation rewraps every
            // DEK under the next replication key.
            exec(
                conn,
                "INSERT INTO deks (id, account_id, kek_id, wrapped, created)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET kek_id = excluded.kek_id,
                     wrapped = excluded.wrapped",
                params![
                    dek_id.as_bytes(),
                    account_id.as_bytes(),
                    kek_id,
                    wrapped,
                    at
                ],
                origin,
                "put dek (of an account the replica does not hold?)",
            )?;
        }
        Change::StorePut {
            account_id,
            store_id,
            name,
        } => {
            match owner(
                conn,
                "SELECT account_id FROM stores WHERE id = ?1",
                store_id.as_bytes(),
                "stores.account_id",
            )? {
                Some(owner) if owner != *account_id.as_bytes() => {
                    return Err(corrupted(origin, "the store belongs to another account"));
                }
                Some(_) => {
                    exec(
                        conn,
                        "UPDATE stores SET name = ?1, modified = ?2 WHERE id = ?3",
                        params![name, at, store_id.as_bytes()],
                        origin,
                        "update store",
                    )?;
                }
                None => {
                    exec(
                        conn,
                        "INSERT INTO stores (id, account_id, name, created, modified)
                         VALUES (?1, ?2, ?3, ?4, ?4)",
                        params![store_id.as_bytes(), account_id.as_bytes(), name, at],
                        origin,
                        "insert store",
                    )?;
                }
            }
        }
        Change::StoreDeleted {
            account_id,
            store_id,
        } => {
            // Versions go with their secrets (ON DELETE CASCADE), the count by trigger.
            exec(
                conn,
                "DELETE FROM secrets WHERE store_id = ?1 AND account_id = ?2",
                [store_id.as_bytes(), account_id.as_bytes()],
                origin,
                "delete store secrets",
            )?;
            exec(
                conn,
                "DELETE FROM stores WHERE id = ?1 AND account_id = ?2",
                [store_id.as_bytes(), account_id.as_bytes()],
                origin,
                "delete store",
            )?;
        }
        Change::SecretPut { .. } => apply_secret_put(conn, change, at, origin)?,
        Change::ValueResealed {
            account_id,
            store_id,
            secret_id,
            version,
            dek_id,
            sealed_hex,
        } => {
            let sealed = unhex(origin, sealed_hex, "sealed_hex")?;
            match owner(
                conn,
                "SELECT account_id FROM deks WHERE id = ?1",
                dek_id.as_bytes(),
                "deks.account_id",
            )? {
                Some(owner) if owner == *account_id.as_bytes() => {}
                _ => {
                    return Err(corrupted(
                        origin,
                        "a value re-sealed under a DEK the account does not hold here",
                    ));
                }
            }
            // Only the very version it names: a later version (or a deletion) supersedes it,
            // and then it changes nothing. Neither the version nor `modified` moves.
            exec(
                conn,
                "UPDATE versions SET dek_id = ?1, sealed = ?2
                 WHERE secret_id = ?3 AND version = ?4
                   AND EXISTS (SELECT 1 FROM secrets
                               WHERE id = ?3 AND store_id = ?5 AND account_id = ?6)",
                params![
                    dek_id.as_bytes(),
                    sealed,
                    secret_id.as_bytes(),
                    i64::from(*version),
                    store_id.as_bytes(),
                    account_id.as_bytes()
                ],
                origin,
                "reseal value",
            )?;
        }
        Change::DekDestroyed { account_id, dek_id } => {
            // The control plane destroys a DEK only once no value references it; the values a
            // replica holds are a subset of its, so a reference left here is a foreign-key
            // refusal (`Corrupted`), never a silent keep.
            exec(
                conn,
                "DELETE FROM deks WHERE id = ?1 AND account_id = ?2",
                [dek_id.as_bytes(), account_id.as_bytes()],
                origin,
                "destroy dek",
            )?;
        }
        Change::SecretDeleted {
            account_id,
            store_id,
            secret_id,
        } => {
            exec(
                conn,
                "DELETE FROM secrets WHERE id = ?1 AND store_id = ?2 AND account_id = ?3",
                [
                    secret_id.as_bytes(),
                    store_id.as_bytes(),
                    account_id.as_bytes(),
                ],
                origin,
                "delete secret",
            )?;
        }
        Change::AccountDeleted { account_id } => {
            let account = account_id.as_bytes();
            // Like `delete_account`, without appending: secrets store by store (through the
            // `secrets` index on store_id), then the rest; bindings and service tokens go with
            // their services.
            exec(
                conn,
                "DELETE FROM secrets
                 WHERE store_id IN (SELECT id FROM stores WHERE account_id = ?1)",
                [account],
                origin,
                "delete account secrets",
            )?;
            for (sql, context) in [
                (
                    "DELETE FROM stores WHERE account_id = ?1",
                    "delete account stores",
                ),
                (
                    "DELETE FROM services WHERE account_id = ?1",
                    "delete account services",
                ),
                (
                    "DELETE FROM tokens WHERE account_id = ?1",
                    "delete account tokens",
                ),
                (
                    "DELETE FROM deks WHERE account_id = ?1",
                    "delete account deks (a value of another account under one?)",
                ),
                ("DELETE FROM accounts WHERE id = ?1", "delete account"),
                (
                    "DELETE FROM account_grants WHERE account_id = ?1",
                    "delete account grants",
                ),
            ] {
                exec(conn, sql, [account], origin, context)?;
            }
        }
        Change::ServicePut { .. } => apply_service_put(conn, change, at, origin)?,
        Change::ServiceDeleted {
            account_id,
            service_id,
        } => {
            exec(
                conn,
                "DELETE FROM services WHERE id = ?1 AND account_id = ?2",
                [service_id.as_bytes(), account_id.as_bytes()],
                origin,
                "delete service",
            )?;
        }
        Change::ServiceTokenPut {
            account_id,
            service_id,
            token_id,
            hash_hex,
        } => {
            let hash = hash32(origin, hash_hex, "hash_hex")?;
            exec(
                conn,
                "INSERT INTO service_tokens (id, account_id, service_id, hash, created)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
                params![
                    token_id.as_bytes(),
                    account_id.as_bytes(),
                    service_id.as_bytes(),
                    hash,
                    at
                ],
                origin,
                "put service token (of a service the replica does not hold?)",
            )?;
        }
        Change::ServiceTokenRevoked {
            account_id,
            service_id,
            token_id,
        } => {
            // A token revoked before keeps its first revocation time.
            exec(
                conn,
                "UPDATE service_tokens SET revoked = ?1
                 WHERE id = ?2 AND service_id = ?3 AND account_id = ?4 AND revoked IS NULL",
                params![
                    at,
                    token_id.as_bytes(),
                    service_id.as_bytes(),
                    account_id.as_bytes()
                ],
                origin,
                "revoke service token",
            )?;
        }
        Change::NodePut {
            node_id,
            name,
            hash_hex,
        } => {
            let hash = hash32(origin, hash_hex, "hash_hex")?;
            // At every commit of the control plane at most one node of a name is active, but
            // an entry registering a name may come before the one revoking the name's previous
            // holder, even in another batch of the feed. A replica must not fail on a valid
            // log, so the previous holder is revoked right away (fail closed: its token stops
            // working a moment early, never late).
            exec(
                conn,
                "UPDATE nodes SET revoked = ?1 WHERE name = ?2 AND revoked IS NULL AND id != ?3",
                params![at, name, node_id.as_bytes()],
                origin,
                "revoke the name's previous node",
            )?;
            if exists(
                conn,
                "SELECT 1 FROM nodes WHERE id = ?1",
                [node_id.as_bytes()],
                "check node",
            )? {
                exec(
                    conn,
                    "UPDATE nodes SET name = ?1, hash = ?2 WHERE id = ?3",
                    params![name, hash, node_id.as_bytes()],
                    origin,
                    "update node",
                )?;
            } else {
                exec(
                    conn,
                    "INSERT INTO nodes (id, name, hash, created) VALUES (?1, ?2, ?3, ?4)",
                    params![node_id.as_bytes(), name, hash, at],
                    origin,
                    "insert node",
                )?;
            }
        }
        Change::NodeRevoked { node_id } => {
            exec(
                conn,
                "UPDATE nodes SET revoked = ?1 WHERE id = ?2 AND revoked IS NULL",
                params![at, node_id.as_bytes()],
                origin,
                "revoke node",
            )?;
        }
        Change::NodeKeyGrant {
            node_id,
            rk_version,
            ephemeral_public_hex,
            sealed_hex,
        } => {
            let ephemeral = unhex(origin, ephemeral_public_hex, "ephemeral_public_hex")?;
            let sealed = unhex(origin, sealed_hex, "sealed_hex")?;
            exec(
                conn,
                "INSERT INTO node_grants (node_id, rk_version, ephemeral, sealed)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (node_id, rk_version) DO UPDATE
                     SET ephemeral = excluded.ephemeral, sealed = excluded.sealed",
                params![node_id.as_bytes(), rk_version, ephemeral, sealed],
                origin,
                "put node grant",
            )?;
        }
        Change::AccountKeyGrant {
            account_id,
            node_id,
            ark_version,
            ephemeral_public_hex,
            sealed_hex,
        } => {
            let ephemeral = hash32(origin, ephemeral_public_hex, "ephemeral_public_hex")?;
            let sealed = unhex(origin, sealed_hex, "sealed_hex")?;
            super::super::account_keys::store_grant(
                conn,
                &crate::AccountGrant {
                    account_id: *account_id,
                    node_id: *node_id,
                    ark_version: *ark_version,
                    ephemeral_public: ephemeral,
                    sealed,
                },
            )?;
        }
        Change::InstanceKeyPut {
            purpose,
            key_id,
            kek_id,
            wrapped_hex,
        } => {
            check_key_purpose(purpose)?;
            let wrapped = unhex(origin, wrapped_hex, "wrapped_hex")?;
            exec(
                conn,
                "INSERT INTO instance_keys (purpose, key_id, kek_id, wrapped, created)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (purpose) DO UPDATE SET key_id = excluded.key_id,
                     kek_id = excluded.kek_id, wrapped = excluded.wrapped",
                params![purpose, key_id.as_bytes(), kek_id, wrapped, at],
                origin,
                "put instance key",
            )?;
        }
    }
    Ok(())
}

/// `SecretPut`: the secret's metadata and its current version, the only one a replica keeps.
fn apply_secret_put(conn: &Connection, change: &Change, at: i64, origin: Origin) -> Result<()> {
    let Change::SecretPut {
        account_id,
        store_id,
        secret_id,
        name,
        scopes,
        version,
        dek_id,
        sealed_hex,
    } = change
    else {
        return Ok(());
    };
    let (account, store, id) = (
        account_id.as_bytes(),
        store_id.as_bytes(),
        secret_id.as_bytes(),
    );
    let sealed = unhex(origin, sealed_hex, "sealed_hex")?;
    let names: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let scopes =
        Scopes::parse(&names).map_err(|_| corrupted(origin, "a scope this build does not know"))?;
    if !exists(
        conn,
        "SELECT 1 FROM stores WHERE id = ?1 AND account_id = ?2",
        [store, account],
        "check store",
    )? {
        return Err(corrupted(
            origin,
            "a secret of a store the replica does not hold",
        ));
    }
    match owner(
        conn,
        "SELECT account_id FROM deks WHERE id = ?1",
        dek_id.as_bytes(),
        "deks.account_id",
    )? {
        None => {
            return Err(corrupted(
                origin,
                "a value sealed under a DEK the replica does not hold",
            ));
        }
        Some(owner) if owner != *account => {
            return Err(corrupted(
                origin,
                "a value sealed under another account's DEK",
            ));
        }
        Some(_) => {}
    }
    // A snapshot is installed into emptied tables: its secrets are all new (the id's
    // uniqueness refuses a snapshot naming one twice), so neither the lookup nor the clean-up
    // of older versions below has anything to find. Skipping both halves an install's
    // random reads.
    let installing = matches!(origin, Origin::Item(_));
    let held = if installing {
        None
    } else {
        query_opt(
            conn,
            "SELECT store_id, account_id, version FROM secrets WHERE id = ?1",
            [id],
            "check secret",
            |row| {
                Ok((
                    id_col(row, 0, "secrets.store_id")?,
                    id_col(row, 1, "secrets.account_id")?,
                    col::<i64>(row, 2, "secrets.version")?,
                ))
            },
        )?
    };
    let version = i64::from(*version);
    match held {
        Some((s, a, _)) if (&s, &a) != (store, account) => {
            return Err(corrupted(
                origin,
                "the secret belongs to another store or account",
            ));
        }
        // The control plane only ever raises a secret's version (a change of metadata keeps
        // it): an entry that lowers it is a replayed or forged one, whatever its chain.
        Some((_, _, held_version)) if version < held_version => {
            return Err(corrupted(
                origin,
                &format!(
                    "it would move the secret's version backwards (from {held_version} to {version})"
                ),
            ));
        }
        Some(_) => {
            exec(
                conn,
                "UPDATE secrets SET name = ?1, scopes = ?2, modified = ?3, version = ?4
                 WHERE id = ?5",
                params![name, encode_scopes(&scopes), at, version, id],
                origin,
                "update secret",
            )?;
        }
        None => {
            exec(
                conn,
                "INSERT INTO secrets (id, store_id, account_id, name, comment, scopes, created,
                                      modified, version)
                 VALUES (?1, ?2, ?3, ?4, '', ?5, ?6, ?6, ?7)",
                params![
                    id,
                    store,
                    account,
                    name,
                    encode_scopes(&scopes),
                    at,
                    version
                ],
                origin,
                "insert secret",
            )?;
        }
    }
    // Versions are immutable: one already held (the same entry applied before a restart of
    // the snapshot, say) stays as it is.
    exec(
        conn,
        "INSERT INTO versions (secret_id, version, dek_id, sealed, created)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (secret_id, version) DO NOTHING",
        params![id, version, dek_id.as_bytes(), sealed, at],
        origin,
        "insert version",
    )?;
    if !installing {
        exec(
            conn,
            "DELETE FROM versions WHERE secret_id = ?1 AND version != ?2",
            params![id, version],
            origin,
            "drop older versions",
        )?;
    }
    Ok(())
}

/// `ServicePut`: the service row and, wholesale, its bindings.
fn apply_service_put(conn: &Connection, change: &Change, at: i64, origin: Origin) -> Result<()> {
    let Change::ServicePut {
        account_id,
        service_id,
        name,
        kind,
        secrets,
        stores,
    } = change
    else {
        return Ok(());
    };
    if Scope::parse(kind).is_err() {
        return Err(corrupted(origin, "a service kind this build does not know"));
    }
    let (account, id) = (account_id.as_bytes(), service_id.as_bytes());
    match owner(
        conn,
        "SELECT account_id FROM services WHERE id = ?1",
        id,
        "services.account_id",
    )? {
        Some(owner) if owner != *account => {
            return Err(corrupted(origin, "the service belongs to another account"));
        }
        Some(_) => {
            exec(
                conn,
                "UPDATE services SET name = ?1, kind = ?2, modified = ?3 WHERE id = ?4",
                params![name, kind, at, id],
                origin,
                "update service",
            )?;
        }
        None => {
            exec(
                conn,
                "INSERT INTO services (id, account_id, name, kind, created, modified)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![id, account, name, kind, at],
                origin,
                "insert service (of an account the replica does not hold?)",
            )?;
        }
    }
    exec(
        conn,
        "DELETE FROM service_bindings WHERE service_id = ?1",
        [id],
        origin,
        "replace bindings",
    )?;
    // One position sequence: the secret bindings in order, then the store bindings, as the
    // control plane stores them.
    let secret_bindings = secrets.iter().map(
        |ChangeSecretBinding {
             binding,
             store_id,
             secret_name,
         }| (binding, store_id, Some(secret_name)),
    );
    let store_bindings = stores
        .iter()
        .map(|ChangeStoreBinding { binding, store_id }| (binding, store_id, None));
    for (position, (binding, store_id, secret_name)) in
        (0i64..).zip(secret_bindings.chain(store_bindings))
    {
        exec(
            conn,
            "INSERT INTO service_bindings (service_id, position, binding, store_id, secret_name)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, position, binding, store_id.as_bytes(), secret_name],
            origin,
            "insert binding",
        )?;
    }
    Ok(())
}
