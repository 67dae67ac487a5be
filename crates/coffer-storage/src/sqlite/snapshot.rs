//! Streaming a snapshot of the replicated state (see `Storage::snapshot`).
//!
//! One read transaction on a dedicated read-only connection, on a blocking thread: every query
//! steps through its rows and hands each item to the channel as it is made (`blocking_send`
//! waits while the receiver is behind), so memory stays bounded by the channel, whatever the
//! number of rows. The WAL cannot be checkpointed past the transaction's snapshot while it
//! runs, so the `-wal` file may grow meanwhile; it shrinks back at the next checkpoint.

use rusqlite::{Connection, Row};
use tokio::sync::mpsc;

use super::codec::{DbResultExt, col, id_col, query_opt, scopes_col, to_hex, u64_col};
use super::replication;
use crate::{
    Change, ChangeSecretBinding, ChangeStoreBinding, REPLICATED_KEY_PURPOSES, Result, SnapshotPart,
    StorageError,
};
use coffer_types::{AccountId, DekId, SecretId, ServiceId, StoreId, TokenId};

/// Counts what the queries below return, in the same read transaction, so the header's count
/// is exact.
const COUNT: &str = "SELECT
    (SELECT count(*) FROM instance_keys WHERE purpose IN (?1, ?2))
  + (SELECT count(*) FROM accounts)
  + (SELECT count(*) FROM deks)
  + (SELECT count(*) FROM stores)
  + (SELECT count(*) FROM secrets)
  + (SELECT count(*) FROM services)
  + (SELECT count(*) FROM service_tokens WHERE revoked IS NULL)
  + (SELECT count(*) FROM nodes WHERE revoked IS NULL)
  + 2 * (SELECT count(*) FROM nodes WHERE revoked IS NOT NULL)
  + (SELECT count(*) FROM node_grants AS g JOIN nodes AS n ON n.id = g.node_id
     WHERE n.revoked IS NULL)
  + (SELECT count(*) FROM account_grants AS g JOIN nodes AS n ON n.id = g.node_id
     WHERE n.revoked IS NULL)";

/// Sends the whole snapshot on `out` (see `Storage::snapshot`).
pub(super) fn stream(conn: &mut Connection, out: &mpsc::Sender<SnapshotPart>) -> Result<()> {
    let tx = conn.transaction().db("begin snapshot read")?;
    let state = replication::log_state(&tx)?;
    let cluster_id = state.cluster_id.ok_or(StorageError::Invalid(
        "the log has no cluster id: edges cannot bootstrap from it",
    ))?;
    let count = query_opt(
        &tx,
        COUNT,
        REPLICATED_KEY_PURPOSES,
        "count snapshot",
        |row| u64_col(row, 0, "snapshot count"),
    )?
    .unwrap_or(0);
    send(
        out,
        SnapshotPart::Header {
            cluster_id,
            seq: state.head_seq,
            hash: state.head_hash,
            count,
        },
    )?;
    let mut items = Items { out, sent: 0 };

    // Each DEK, store and value comes after what it refers to, so a replica applies the items
    // in order (as it applies log entries).
    items.each(
        &tx,
        // The replication-key wrap where this side holds one (the control plane), else the
        // row as replicated (a relay holds the RK wrap as its only wrap): never the KEK's.
        "SELECT purpose, key_id, COALESCE('rk:' || rk_version, kek_id),
                COALESCE(rk_wrapped, wrapped)
         FROM instance_keys WHERE purpose IN (?1, ?2) ORDER BY purpose",
        REPLICATED_KEY_PURPOSES,
        "snapshot instance keys",
        |row| {
            Ok(Change::InstanceKeyPut {
                purpose: col(row, 0, "instance_keys.purpose")?,
                key_id: DekId::from_bytes(id_col(row, 1, "instance_keys.key_id")?),
                kek_id: col(row, 2, "instance_keys.kek_id")?,
                wrapped_hex: to_hex(col::<Vec<u8>>(row, 3, "instance_keys.wrapped")?),
            })
        },
    )?;
    items.each(
        &tx,
        "SELECT id, name FROM accounts",
        [],
        "snapshot accounts",
        |row| {
            Ok(Change::AccountPut {
                account_id: AccountId::from_bytes(id_col(row, 0, "accounts.id")?),
                name: col(row, 1, "accounts.name")?,
            })
        },
    )?;
    items.each(
        &tx,
        // As for the instance keys: the RK wrap (or the account's ARK wrap), never the KEK's.
        "SELECT account_id, id,
                CASE WHEN rk_account = 1 THEN ?1 || rk_version
                     ELSE COALESCE('rk:' || rk_version, kek_id) END,
                COALESCE(rk_wrapped, wrapped)
         FROM deks",
        [crate::ARK_KEK_ID_PREFIX],
        "snapshot deks",
        |row| {
            Ok(Change::DekPut {
                account_id: AccountId::from_bytes(id_col(row, 0, "deks.account_id")?),
                dek_id: DekId::from_bytes(id_col(row, 1, "deks.id")?),
                kek_id: col(row, 2, "deks.kek_id")?,
                wrapped_hex: to_hex(col::<Vec<u8>>(row, 3, "deks.wrapped")?),
            })
        },
    )?;
    items.each(
        &tx,
        "SELECT account_id, id, name FROM stores",
        [],
        "snapshot stores",
        |row| {
            Ok(Change::StorePut {
                account_id: AccountId::from_bytes(id_col(row, 0, "stores.account_id")?),
                store_id: StoreId::from_bytes(id_col(row, 1, "stores.id")?),
                name: col(row, 2, "stores.name")?,
            })
        },
    )?;
    // The current version only, joined like the runtime read; a missing one is damage. In id
    // order: a replica's secret and version indexes are keyed by the (random) secret id, so
    // rows arriving in that order are appended to them rather than inserted at random pages,
    // which was most of a large install's time (docs/benchmarks.md, "Cold start"). Reading
    // through the id index costs this side a random row lookup each: 3-4 s more for 1M
    // secrets with the database in the OS page cache (more when it must come from disk).
    items.each(
        &tx,
        "SELECT s.account_id, s.store_id, s.id, s.name, s.scopes, s.version, v.dek_id, v.sealed
         FROM secrets AS s
         LEFT JOIN versions AS v ON v.secret_id = s.id AND v.version = s.version
         ORDER BY s.id",
        [],
        "snapshot secrets",
        secret_put,
    )?;
    items.each(
        &tx,
        "SELECT account_id, id, name, kind FROM services",
        [],
        "snapshot services",
        |row| service_put(&tx, row),
    )?;
    items.each(
        &tx,
        "SELECT account_id, service_id, id, hash FROM service_tokens WHERE revoked IS NULL",
        [],
        "snapshot service tokens",
        |row| {
            Ok(Change::ServiceTokenPut {
                account_id: AccountId::from_bytes(id_col(row, 0, "service_tokens.account_id")?),
                service_id: ServiceId::from_bytes(id_col(row, 1, "service_tokens.service_id")?),
                token_id: TokenId::from_bytes(id_col(row, 2, "service_tokens.id")?),
                hash_hex: to_hex(col::<[u8; 32]>(row, 3, "service_tokens.hash")?),
            })
        },
    )?;
    // Revoked nodes too, first (a `NodePut` each, then their `NodeRevoked`s): a relay that
    // bootstraps from this snapshot must still recognise a revoked node's real token, to tell
    // that edge it is revoked (401 `node_revoked`) rather than only that its token is unknown.
    // Before the nodes in service, whose `NodePut`s would otherwise be revoked by an earlier
    // holder's `NodePut` of the same name.
    items.each(
        &tx,
        "SELECT id, name, hash FROM nodes WHERE revoked IS NOT NULL",
        [],
        "snapshot revoked nodes",
        node_put,
    )?;
    items.each(
        &tx,
        "SELECT id FROM nodes WHERE revoked IS NOT NULL",
        [],
        "snapshot node revocations",
        |row| {
            Ok(Change::NodeRevoked {
                node_id: TokenId::from_bytes(id_col(row, 0, "nodes.id")?),
            })
        },
    )?;
    items.each(
        &tx,
        "SELECT id, name, hash FROM nodes WHERE revoked IS NULL",
        [],
        "snapshot nodes",
        node_put,
    )?;
    // The grants of the nodes in service, after them.
    items.each(
        &tx,
        "SELECT g.node_id, g.rk_version, g.ephemeral, g.sealed
         FROM node_grants AS g JOIN nodes AS n ON n.id = g.node_id
         WHERE n.revoked IS NULL ORDER BY g.node_id, g.rk_version",
        [],
        "snapshot node grants",
        |row| {
            let grant = super::node_keys::grant_from_row(row)?;
            Ok(Change::NodeKeyGrant {
                node_id: grant.node_id,
                rk_version: grant.rk_version,
                ephemeral_public_hex: to_hex(grant.ephemeral_public),
                sealed_hex: to_hex(&grant.sealed),
            })
        },
    )?;
    // The account grants of the nodes in service, after the accounts they name.
    items.each(
        &tx,
        "SELECT g.account_id, g.node_id, g.ark_version, g.ephemeral, g.sealed
         FROM account_grants AS g JOIN nodes AS n ON n.id = g.node_id
         WHERE n.revoked IS NULL ORDER BY g.account_id, g.node_id, g.ark_version",
        [],
        "snapshot account grants",
        |row| {
            let grant = super::account_keys::grant_from_row(row)?;
            Ok(super::account_keys::grant_change(&grant))
        },
    )?;
    if items.sent != count {
        // One read transaction counted and read: only a bug gets here. The receiver must not
        // take a snapshot that disagrees with its header.
        return Err(StorageError::Corrupted(format!(
            "snapshot: counted {count} items but produced {}",
            items.sent
        )));
    }
    // Ending a read-only transaction; commit and rollback are equivalent.
    tx.commit().db("end snapshot read")
}

fn send(out: &mpsc::Sender<SnapshotPart>, part: SnapshotPart) -> Result<()> {
    out.blocking_send(part).map_err(|_| {
        StorageError::Unavailable("the snapshot's receiver went away before the end".into())
    })
}

struct Items<'a> {
    out: &'a mpsc::Sender<SnapshotPart>,
    sent: u64,
}

impl Items<'_> {
    /// Sends one item per row of `sql`, as the rows are stepped through.
    fn each(
        &mut self,
        conn: &Connection,
        sql: &str,
        params: impl rusqlite::Params,
        context: &'static str,
        mut change: impl FnMut(&Row<'_>) -> Result<Change>,
    ) -> Result<()> {
        let mut stmt = conn.prepare_cached(sql).db(context)?;
        let mut rows = stmt.query(params).db(context)?;
        while let Some(row) = rows.next().db(context)? {
            // The log's own serialization (`WriteCx::append`), so a snapshot item and a log
            // entry of one change are the same bytes.
            let payload = serde_json::to_vec(&change(row)?)
                .map_err(|e| StorageError::Unavailable(format!("encoding a change: {e}")))?;
            send(self.out, SnapshotPart::Item(payload))?;
            self.sent += 1;
        }
        Ok(())
    }
}

/// A node's row (`id, name, hash`) as the change that registers it.
fn node_put(row: &Row<'_>) -> Result<Change> {
    Ok(Change::NodePut {
        node_id: TokenId::from_bytes(id_col(row, 0, "nodes.id")?),
        name: col(row, 1, "nodes.name")?,
        hash_hex: to_hex(col::<[u8; 32]>(row, 2, "nodes.hash")?),
    })
}

fn secret_put(row: &Row<'_>) -> Result<Change> {
    let dek: Option<Vec<u8>> = col(row, 6, "versions.dek_id")?;
    let Some(dek) = dek else {
        return Err(StorageError::Corrupted(
            "a secret's current version row is missing".into(),
        ));
    };
    let dek = <[u8; 16]>::try_from(dek.as_slice())
        .map_err(|_| StorageError::Corrupted("versions.dek_id: id is not 16 bytes".into()))?;
    let version: i64 = col(row, 5, "secrets.version")?;
    Ok(Change::SecretPut {
        account_id: AccountId::from_bytes(id_col(row, 0, "secrets.account_id")?),
        store_id: StoreId::from_bytes(id_col(row, 1, "secrets.store_id")?),
        secret_id: SecretId::from_bytes(id_col(row, 2, "secrets.id")?),
        name: col(row, 3, "secrets.name")?,
        scopes: scopes_col(row, 4, "secrets.scopes")?.to_strings(),
        version: u32::try_from(version)
            .map_err(|_| StorageError::Corrupted("secrets.version: out of range".into()))?,
        dek_id: DekId::from_bytes(dek),
        sealed_hex: to_hex(col::<Vec<u8>>(row, 7, "versions.sealed")?),
    })
}

/// A service row with its bindings (one range read of `service_bindings`, in position order:
/// the secret bindings, then the store bindings, as `ServicePut` lists them).
fn service_put(conn: &Connection, row: &Row<'_>) -> Result<Change> {
    let service_id = ServiceId::from_bytes(id_col(row, 1, "services.id")?);
    let mut secrets = Vec::new();
    let mut stores = Vec::new();
    let mut stmt = conn
        .prepare_cached(
            "SELECT binding, store_id, secret_name FROM service_bindings
             WHERE service_id = ?1 ORDER BY position",
        )
        .db("snapshot bindings")?;
    let mut bindings = stmt
        .query([service_id.as_bytes()])
        .db("snapshot bindings")?;
    while let Some(b) = bindings.next().db("snapshot bindings")? {
        let binding: String = col(b, 0, "service_bindings.binding")?;
        let store_id = StoreId::from_bytes(id_col(b, 1, "service_bindings.store_id")?);
        match col::<Option<String>>(b, 2, "service_bindings.secret_name")? {
            Some(secret_name) => secrets.push(ChangeSecretBinding {
                binding,
                store_id,
                secret_name,
            }),
            None => stores.push(ChangeStoreBinding { binding, store_id }),
        }
    }
    Ok(Change::ServicePut {
        account_id: AccountId::from_bytes(id_col(row, 0, "services.account_id")?),
        service_id,
        name: col(row, 2, "services.name")?,
        kind: col(row, 3, "services.kind")?,
        secrets,
        stores,
    })
}
