//! Edge replicas: applying verified feed entries, installing snapshots, and the outbox of
//! access-event batches still to be delivered upstream.
//!
//! A replica has the control plane's schema and holds the replicated rows (see
//! `Storage::snapshot` for which). Feed entries and snapshot items are both [`Change`]s and go
//! through one function, [`apply`]. Each entry is also inserted into the replica's `changes`
//! table exactly as received, in the same transaction as its effect, so the replica's position
//! is durable with its data and a relay serves the same bytes to the edges below it.
//!
//! Rows are created with the times the changes carry: `created` / `modified` of an entry's rows
//! are the entry's `at`, of a snapshot's rows the install time (the control plane's own times
//! are not replicated; edges do not serve them). Comments, quotas and API tokens are not
//! replicated either.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use coffer_types::{DekId, Scope, Scopes, Timestamp, TokenId};
use rusqlite::{Connection, Params, params};
use tokio::sync::{mpsc, oneshot};

use super::SqliteStorage;
use super::codec::{DbResultExt, col, constraint, db_error, encode_scopes, id_col};
use super::reads::{query_all, query_opt};
use super::replication;
use super::writer::{WriteCx, WriterHandle};
use crate::{
    Change, ChangeRecord, ChangeSecretBinding, ChangeStoreBinding, FeedSignature,
    REPLICATED_KEY_PURPOSES, Result, StorageError,
};

/// Snapshot items handed to the writer in one message: one wake-up of the writer thread per
/// batch rather than per item.
const INSTALL_BATCH: usize = 256;

/// Batches queued between [`SnapshotInstall::push`] and the writer at most: with the one
/// being filled and the one being applied, about a thousand parsed items in memory.
const INSTALL_QUEUE: usize = 2;

/// Where a change being applied came from, for error messages.
#[derive(Debug, Clone, Copy)]
enum Origin {
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
fn apply(conn: &Connection, change: &Change, at: i64, origin: Origin) -> Result<()> {
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
            account_id: None,
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
        Change::NodeKeyGrant {
            account_id: Some(_),
            ..
        }
        | Change::AccountKeyGrant { .. } => {
            let Some(grant) = change.account_grant() else {
                return Ok(());
            };
            let ephemeral = hash32(origin, grant.ephemeral_public_hex, "ephemeral_public_hex")?;
            let sealed = unhex(origin, grant.sealed_hex, "sealed_hex")?;
            super::account_keys::store_grant(
                conn,
                &crate::AccountGrant {
                    account_id: grant.account_id,
                    node_id: grant.node_id,
                    ark_version: grant.ark_version,
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

/// The writer job of [`SqliteStorage::apply_entries`].
fn apply_entries(cx: &mut WriteCx<'_>, records: &[ChangeRecord]) -> Result<Vec<TokenId>> {
    if replication::base(cx.conn)?.is_none() {
        return Err(StorageError::Invalid(
            "the replica has no cluster id yet: install a snapshot first",
        ));
    }
    let mut revoked_nodes = Vec::new();
    for record in records {
        // Checks the seq and the chain before anything of the entry is applied; an error
        // anywhere rolls the whole call back (the job's savepoint).
        cx.append_verbatim(record)?;
        let change: Change = serde_json::from_slice(&record.payload)
            .map_err(|_| StorageError::Invalid("a feed entry's payload is not a change"))?;
        // A relay serves its log on: entries carrying a deleted account's DEKs leave it at
        // once, as they left the control plane's. A destroyed DEK is only entered as such:
        // compacting past each one as it comes would send the edges below back to a snapshot
        // as often as a tenant can force destructions; the relay compacts past them at most
        // once per gap (`Storage::compact_destroyed_deks`), as the control plane does.
        if let Change::DekDestroyed { dek_id, .. } = &change {
            super::lifecycle::record_destroyed(cx, *dek_id)?;
        }
        // Listed before the apply deletes them.
        let deleted_deks: Vec<DekId> = match &change {
            Change::AccountDeleted { account_id } => query_all(
                cx.conn,
                "SELECT id FROM deks WHERE account_id = ?1",
                [account_id.as_bytes()],
                "list account deks",
                |row| id_col(row, 0, "deks.id").map(DekId::from_bytes),
            )?,
            _ => Vec::new(),
        };
        apply(
            cx.conn,
            &change,
            record.at.unix_micros(),
            Origin::Entry(record.seq),
        )?;
        // A deleted account's entries leave too: its DEKs' and its account grants (which
        // carry its replication key sealed to the nodes' keys for it), as on the control plane.
        if let Change::AccountDeleted { account_id } = &change {
            super::lifecycle::compact_past_account(cx, *account_id, deleted_deks, record.seq)?;
        }
        if let Change::NodeRevoked { node_id } = change {
            revoked_nodes.push(node_id);
        }
    }
    Ok(revoked_nodes)
}

/// The header an install was started with.
#[derive(Debug, Clone, Copy)]
struct InstallHeader {
    cluster_id: [u8; 16],
    seq: u64,
    hash: [u8; 32],
    count: u64,
}

/// What [`SnapshotInstall`] hands the writer job.
#[derive(Debug)]
enum InstallMsg {
    Items(Vec<Change>),
    Commit,
}

/// Empties the replicated state and puts the log's base at the snapshot's position.
fn clear_replica(cx: &WriteCx<'_>, header: &InstallHeader, now: i64) -> Result<()> {
    let seq = i64::try_from(header.seq)
        .map_err(|_| StorageError::Invalid("a snapshot's seq is beyond storage's range"))?;
    if header.seq == 0 && header.hash != ChangeRecord::GENESIS_HASH {
        return Err(StorageError::Invalid(
            "a snapshot at seq 0 must carry the genesis hash",
        ));
    }
    if let Some(base) = replication::base(cx.conn)?
        && base.cluster_id != header.cluster_id
    {
        return Err(StorageError::Invalid(
            "the snapshot is of another cluster than the replica's",
        ));
    }
    // The trigger `changes_no_delete` lets only entries at or below the base go, and the
    // replica may hold entries beyond the snapshot's seq (a diverged history): the base is
    // raised over all of them, they are deleted, then the base is put at the snapshot's seq.
    let top: i64 = query_opt(
        cx.conn,
        "SELECT coalesce(max(seq), 0) FROM changes",
        [],
        "read log top",
        |row| super::codec::col(row, 0, "max(changes.seq)"),
    )?
    .unwrap_or(0);
    cx.conn
        .prepare_cached(
            "INSERT INTO replication (id, cluster_id, base_seq, base_hash, base_at)
             VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET cluster_id = excluded.cluster_id,
                 base_seq = excluded.base_seq, base_hash = excluded.base_hash,
                 base_at = excluded.base_at",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![header.cluster_id, seq.max(top), header.hash, now])
        })
        .db("set log base")?;
    cx.conn
        .prepare_cached("DELETE FROM changes")
        .and_then(|mut stmt| stmt.execute([]))
        .db("drop replaced log")?;
    cx.conn
        .prepare_cached("DELETE FROM change_signatures")
        .and_then(|mut stmt| stmt.execute([]))
        .db("drop replaced signatures")?;
    cx.conn
        .prepare_cached("UPDATE replication SET base_seq = ?1 WHERE id = 1")
        .and_then(|mut stmt| stmt.execute([seq]))
        .db("set log base")?;
    // Children before parents (the foreign keys); versions before their DEKs; the secret
    // counters follow the secrets by trigger while their accounts still exist. The outbox and
    // the audit tables are the replica's own and stay.
    cx.conn
        .execute_batch(
            "DELETE FROM service_tokens;
             DELETE FROM service_bindings;
             DELETE FROM services;
             DELETE FROM versions;
             DELETE FROM secrets;
             DELETE FROM stores;
             DELETE FROM deks;
             DELETE FROM tokens;
             DELETE FROM accounts;
             DELETE FROM nodes;
             DELETE FROM node_grants;
             DELETE FROM account_grants;",
        )
        .db("clear replicated rows")?;
    cx.conn
        .prepare_cached("DELETE FROM instance_keys WHERE purpose IN (?1, ?2)")
        .and_then(|mut stmt| stmt.execute(REPLICATED_KEY_PURPOSES))
        .db("clear replicated instance keys")?;
    Ok(())
}

/// The writer job of a [`SnapshotInstall`]: runs until the commit message (or the install is
/// dropped), holding the writer (and its transaction) meanwhile.
fn run_install(
    cx: &mut WriteCx<'_>,
    header: InstallHeader,
    mut items: mpsc::Receiver<InstallMsg>,
) -> Result<()> {
    // A snapshot inserts every row at random places of indexes keyed by random ids: with
    // SQLite's default 2 MiB page cache most inserts miss it and dirty pages spill to the WAL
    // mid-transaction (docs/benchmarks.md, "Cold start"). A large cache for the install only,
    // then back to the default, so a steady-state edge stays small.
    pragma(cx.conn, "cache_size", -65_536)?;
    // The trigger that counts an account's secrets makes every secret insert a statement
    // that writes several rows and may abort halfway, which SQLite runs in a statement
    // transaction: its journal copies every page the insert touches, a write to a temporary
    // file per page (a third of an install's time). The install counts instead and sets
    // the counters at the end; the trigger is put back, from its own stored definition, in
    // the same transaction (a failed install rolls both back).
    let trigger: String = cx
        .conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name = 'secrets_count_insert'",
            [],
            |row| row.get(0),
        )
        .db("read the secret count trigger")?;
    cx.conn
        .execute_batch("DROP TRIGGER secrets_count_insert")
        .db("suspend the secret count trigger")?;
    let result = install_items(cx, header, &mut items).and_then(|counts| {
        for (account, n) in counts {
            cx.conn
                .prepare_cached(
                    "UPDATE accounts SET secret_count = secret_count + ?2 WHERE id = ?1",
                )
                .and_then(|mut stmt| stmt.execute(params![account, n]))
                .db("count an account's secrets")?;
        }
        cx.conn
            .execute_batch(&trigger)
            .db("restore the secret count trigger")
    });
    if let Err(e) = pragma(cx.conn, "cache_size", -2_000) {
        tracing::warn!(error = %e, "could not restore the page cache size after an install");
    }
    result
}

fn pragma(conn: &Connection, name: &str, value: i64) -> Result<()> {
    conn.pragma_update(None, name, value).db("set a pragma")
}

/// Applies the items; returns how many secrets each account got (the count trigger is
/// suspended meanwhile: see `run_install`).
fn install_items(
    cx: &mut WriteCx<'_>,
    header: InstallHeader,
    items: &mut mpsc::Receiver<InstallMsg>,
) -> Result<HashMap<[u8; 16], i64>> {
    let now = Timestamp::now().unix_micros();
    clear_replica(cx, &header, now)?;
    let mut applied = 0u64;
    let mut counts: HashMap<[u8; 16], i64> = HashMap::new();
    // The writer is a plain thread, not a runtime worker: blocking here is what it is for.
    while let Some(msg) = items.blocking_recv() {
        match msg {
            InstallMsg::Items(changes) => {
                for change in &changes {
                    applied += 1;
                    if applied > header.count {
                        return Err(StorageError::Invalid(
                            "more snapshot items than the header's count",
                        ));
                    }
                    apply(cx.conn, change, now, Origin::Item(applied))?;
                    if let Change::SecretPut { account_id, .. } = change {
                        *counts.entry(*account_id.as_bytes()).or_default() += 1;
                    }
                }
            }
            InstallMsg::Commit => {
                if applied != header.count {
                    return Err(StorageError::Invalid(
                        "fewer snapshot items than the header's count",
                    ));
                }
                cx.reset_head(header.seq, header.hash, now);
                return Ok(counts);
            }
        }
    }
    Err(StorageError::Unavailable(
        "the snapshot install was dropped before its commit".into(),
    ))
}

enum InstallState {
    /// No item pushed yet: the writer is not held.
    NotStarted,
    /// The writer job runs and takes the items.
    Running {
        items: mpsc::Sender<InstallMsg>,
        done: oneshot::Receiver<Result<()>>,
    },
    /// An item or the job failed; the job has been let go (its work is rolled back).
    Failed,
}

/// A snapshot being installed into a replica ([`SqliteStorage::install_snapshot`]).
///
/// The first batch of pushed items (or [`SnapshotInstall::commit`]) starts one writer job
/// that empties the replicated state and applies the items as they are pushed, all in one
/// transaction that stays open until the commit; readers see the old state until then. The
/// writer is held meanwhile: other writes of this storage (and `close`) wait for the install
/// to end, so do not await one between pushes. Items reach the writer in batches of
/// [`INSTALL_BATCH`], so an item's failure surfaces a few batches later (at a later push or
/// at the commit). Dropping the value without committing rolls everything back (after the
/// writer has finished the batch in hand) and frees the writer.
pub struct SnapshotInstall {
    writer: Arc<WriterHandle>,
    header: InstallHeader,
    pushed: u64,
    /// Parsed items not yet handed to the writer (fewer than [`INSTALL_BATCH`]).
    batch: Vec<Change>,
    state: InstallState,
}

impl fmt::Debug for SnapshotInstall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotInstall")
            .field("seq", &self.header.seq)
            .field("count", &self.header.count)
            .field("pushed", &self.pushed)
            .finish_non_exhaustive()
    }
}

impl SnapshotInstall {
    /// Parses the next item (a [`Change`] as JSON) and queues it for the install, which
    /// applies it. `Invalid` for an item that is not a change or one beyond the header's count; an
    /// item the replica cannot apply (say, a secret of a store no earlier item created) fails
    /// this push or a later one, or the commit, with that error. After any failure the
    /// install is rolled back and every later call fails.
    pub async fn push(&mut self, item: Vec<u8>) -> Result<()> {
        if matches!(self.state, InstallState::Failed) {
            return Err(failed_already());
        }
        if self.pushed >= self.header.count {
            self.state = InstallState::Failed;
            return Err(StorageError::Invalid(
                "more snapshot items than the header's count",
            ));
        }
        let Ok(change) = serde_json::from_slice::<Change>(&item) else {
            self.state = InstallState::Failed;
            return Err(StorageError::Invalid("a snapshot item is not a change"));
        };
        self.batch.push(change);
        self.pushed += 1;
        if self.batch.len() >= INSTALL_BATCH {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(INSTALL_BATCH));
            self.send(InstallMsg::Items(batch)).await?;
        }
        Ok(())
    }

    /// Commits the install once exactly `count` items were pushed and applied: afterwards the
    /// replica holds exactly the snapshot's state, its log is empty with its base at the
    /// snapshot's (seq, hash), its cluster id is the snapshot's, `committed_head` has changed
    /// and `subscribe_head` shows `seq`. `Invalid` if fewer items were pushed, if an item
    /// failed, or if the replica already has another cluster id; then nothing changed.
    pub async fn commit(mut self) -> Result<()> {
        if matches!(self.state, InstallState::Failed) {
            return Err(failed_already());
        }
        if self.pushed != self.header.count {
            self.state = InstallState::Failed;
            return Err(StorageError::Invalid(
                "fewer snapshot items than the header's count",
            ));
        }
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.send(InstallMsg::Items(batch)).await?;
        }
        self.send(InstallMsg::Commit).await?;
        match std::mem::replace(&mut self.state, InstallState::Failed) {
            InstallState::Running { items, done } => {
                drop(items);
                answer(done).await
            }
            _ => Err(failed_already()),
        }
    }

    /// Sends `msg` to the writer job, starting it first if need be. If the job has ended (it
    /// failed), its error.
    async fn send(&mut self, msg: InstallMsg) -> Result<()> {
        if matches!(self.state, InstallState::NotStarted) {
            let (items, receiver) = mpsc::channel(INSTALL_QUEUE);
            let header = self.header;
            match self
                .writer
                .submit(move |cx| run_install(cx, header, receiver))
                .await
            {
                Ok(done) => self.state = InstallState::Running { items, done },
                Err(e) => {
                    self.state = InstallState::Failed;
                    return Err(e);
                }
            }
        }
        let InstallState::Running { items, .. } = &self.state else {
            return Err(failed_already());
        };
        if items.send(msg).await.is_ok() {
            return Ok(());
        }
        // The job stopped taking items: it failed, and its error says why.
        match std::mem::replace(&mut self.state, InstallState::Failed) {
            InstallState::Running { done, .. } => {
                Err(answer(done).await.err().unwrap_or_else(|| {
                    StorageError::Unavailable("the snapshot install ended before its commit".into())
                }))
            }
            _ => Err(failed_already()),
        }
    }
}

fn failed_already() -> StorageError {
    StorageError::Invalid("the snapshot install failed; nothing of it was installed")
}

async fn answer(done: oneshot::Receiver<Result<()>>) -> Result<()> {
    done.await
        .map_err(|_| StorageError::Unavailable("the writer stopped before answering".into()))?
}

/// Replica-only operations. Edges run SQLite only, so these are not part of [`crate::Storage`].
impl SqliteStorage {
    /// Applies verified feed entries, in ONE transaction through the writer. Each must have
    /// seq = head + 1 and chain onto the head's hash ([`ChangeRecord::follows`]), and its
    /// payload must parse as a [`Change`]; otherwise `Invalid`, and nothing of the call is
    /// applied. Each entry's change is applied to the tables and the entry is inserted into
    /// `changes` verbatim (seq, at, hash, payload), so the position is durable with the data
    /// and a relay re-serves it byte for byte; `committed_head` and `subscribe_head` move as
    /// for any append. `Invalid` before the first snapshot install (no cluster id). A change
    /// that does not fit the replica's rows (a secret whose DEK it does not hold, say) is
    /// `Corrupted`, naming the entry's seq; then nothing is applied either. An empty list
    /// changes nothing. Returns the nodes the entries revoked (an edge stops when it is one).
    pub async fn apply_entries(&self, records: Vec<ChangeRecord>) -> Result<Vec<TokenId>> {
        self.apply_signed_entries(records, Vec::new()).await
    }

    /// [`SqliteStorage::apply_entries`], also keeping the control plane's signatures that
    /// came with the entries (those of seqs among them; others are ignored), in the same
    /// transaction, so that a relay serves them on byte for byte. Storage does not check
    /// them: the follower verified them before the driver got here.
    pub async fn apply_signed_entries(
        &self,
        records: Vec<ChangeRecord>,
        signatures: Vec<FeedSignature>,
    ) -> Result<Vec<TokenId>> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(Vec::new());
        };
        let range = first.seq..=last.seq;
        self.writer
            .run(move |cx| {
                let revoked = apply_entries(cx, &records)?;
                for s in signatures.iter().filter(|s| range.contains(&s.seq)) {
                    cx.store_signature(s)?;
                }
                Ok(revoked)
            })
            .await
    }

    /// Starts replacing the whole replicated state with a snapshot whose header is (`cluster_id`,
    /// `seq`, `hash`, `count`); see [`SnapshotInstall`]. Nothing happens until the first batch
    /// of pushed items (or the commit of a snapshot smaller than a batch).
    ///
    /// In one transaction: `Invalid` if the replica has a cluster id and it is not
    /// `cluster_id` (the caller checks first; this is defence in depth), or for seq 0 with a
    /// hash other than the genesis; the `replication` row becomes (`cluster_id`, base `seq`,
    /// `hash`, now); every replicated row is deleted (the log, accounts with everything under
    /// them, DEKs, stores, secrets, versions, services, bindings, service tokens, nodes, and
    /// the instance keys in [`crate::REPLICATED_KEY_PURPOSES`]; not the outbox and not the
    /// audit tables); the items are applied in order.
    pub fn install_snapshot(
        &self,
        cluster_id: [u8; 16],
        seq: u64,
        hash: [u8; 32],
        count: u64,
    ) -> SnapshotInstall {
        SnapshotInstall {
            writer: Arc::clone(&self.writer),
            header: InstallHeader {
                cluster_id,
                seq,
                hash,
                count,
            },
            pushed: 0,
            batch: Vec::with_capacity(INSTALL_BATCH),
            state: InstallState::NotStarted,
        }
    }

    /// Keeps an access-event batch until it is delivered upstream. Idempotent on `id`: a batch
    /// already kept stays as it is (its first body).
    pub async fn outbox_put(&self, id: [u8; 16], body: Vec<u8>) -> Result<()> {
        self.writer
            .run(move |cx| {
                cx.conn
                    .prepare_cached(
                        "INSERT INTO outbox (id, created, body) VALUES (?1, ?2, ?3)
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .and_then(|mut stmt| {
                        stmt.execute(params![id, Timestamp::now().unix_micros(), body])
                    })
                    .db("put outbox batch")
                    .map(drop)
            })
            .await
    }

    /// Up to `limit` kept batches, oldest (first put) first.
    pub async fn outbox_list(&self, limit: usize) -> Result<Vec<([u8; 16], Vec<u8>)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            // A new row's rowid is above every row present (SQLite takes the largest + 1), so
            // rowid order is the order of the puts.
            query_all(
                conn,
                "SELECT id, body FROM outbox ORDER BY rowid LIMIT ?1",
                [limit],
                "list outbox",
                |row| {
                    Ok((
                        id_col(row, 0, "outbox.id")?,
                        super::codec::col(row, 1, "outbox.body")?,
                    ))
                },
            )
        })
        .await
    }

    /// Forgets delivered batches; ids not kept are ignored.
    pub async fn outbox_delete(&self, ids: Vec<[u8; 16]>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.writer
            .run(move |cx| {
                let mut stmt = cx
                    .conn
                    .prepare_cached("DELETE FROM outbox WHERE id = ?1")
                    .db("delete outbox batch")?;
                for id in &ids {
                    stmt.execute([id]).db("delete outbox batch")?;
                }
                Ok(())
            })
            .await
    }
}
