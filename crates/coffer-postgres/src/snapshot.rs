//! Streaming a snapshot of the replicated state (see `Storage::snapshot`).
//!
//! One REPEATABLE READ, READ ONLY transaction reads the header (the log head and base from
//! the head row and the `replication` row), the count and every item, so the snapshot is the
//! state at exactly its header's log position whatever commits meanwhile. Each query is read
//! through a portal a batch at a time and every item is sent as it is made (`send` waits
//! while the receiver is behind), so memory stays bounded by the channel and one batch,
//! whatever the number of rows. REPEATABLE READ suffices: every write commits its rows, its
//! log entries and the head row together (under the writer lock), so one MVCC snapshot sees
//! each write whole or not at all. While a snapshot is read, the database keeps the row
//! versions it may need (vacuum does not remove them), as SQLite's WAL grows meanwhile.

use coffer_storage::{
    ARK_KEK_ID_PREFIX, Change, ChangeSecretBinding, ChangeStoreBinding, REPLICATED_KEY_PURPOSES,
    Result, SnapshotPart, StorageError,
};
use coffer_types::{AccountId, DekId, SecretId, ServiceId, StoreId, TokenId};
use tokio::sync::mpsc;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::PgStorage;
use crate::db::{DbResultExt, bytes_col, col, scopes_col, u32_col, u64_col};
use crate::write::TxFuture;

/// Rows fetched per round trip from each query's portal.
const BATCH: i32 = 1000;

/// Counts what the queries below return, in the same transaction, so the header's count is
/// exact.
const COUNT: &str = "SELECT
    (SELECT count(*) FROM instance_keys WHERE purpose IN ($1, $2))
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

pub(crate) async fn snapshot(s: &PgStorage, out: mpsc::Sender<SnapshotPart>) -> Result<()> {
    s.read_snapshot(move |tx| -> TxFuture<'_, _> { Box::pin(stream(tx, out)) })
        .await
}

async fn stream(
    tx: &deadpool_postgres::Transaction<'_>,
    out: mpsc::Sender<SnapshotPart>,
) -> Result<()> {
    // The first statement fixes the transaction's snapshot: the header and every item below
    // are read from it.
    let head = crate::write::read_head(tx).await?;
    let cluster_id = crate::change_log::base(tx)
        .await?
        .map(|b| b.cluster_id)
        .ok_or(StorageError::Invalid(
            "the log has no cluster id: edges cannot bootstrap from it",
        ))?;
    let [service_mac, node_mac] = REPLICATED_KEY_PURPOSES;
    let count = u64_col(
        &tx.query_one(COUNT, &[&service_mac, &node_mac])
            .await
            .db("count snapshot")?,
        0,
        "snapshot count",
    )?;
    send(
        &out,
        SnapshotPart::Header {
            cluster_id,
            seq: head.seq,
            hash: head.hash,
            count,
        },
    )
    .await?;
    let mut items = Items {
        tx,
        out: &out,
        sent: 0,
    };

    // Each DEK, store and value comes after what it refers to, so a replica applies the items
    // in order (as it applies log entries).
    items
        .each(
            // The replication-key wrap where this side holds one, else the row as stored:
            // never the KEK's (a control plane without a replication key has none to send).
            "SELECT purpose, key_id, COALESCE('rk:' || rk_version, kek_id),
                    COALESCE(rk_wrapped, wrapped)
             FROM instance_keys WHERE purpose IN ($1, $2) ORDER BY purpose",
            &[&service_mac, &node_mac],
            "snapshot instance keys",
            |row| {
                Ok(Change::InstanceKeyPut {
                    purpose: col(row, 0, "instance_keys.purpose")?,
                    key_id: DekId::from_bytes(bytes_col(row, 1, "instance_keys.key_id")?),
                    kek_id: col(row, 2, "instance_keys.kek_id")?,
                    wrapped_hex: hex::encode(col::<&[u8]>(row, 3, "instance_keys.wrapped")?),
                })
            },
        )
        .await?;
    items
        .each(
            "SELECT id, name FROM accounts ORDER BY created, id",
            &[],
            "snapshot accounts",
            |row| {
                Ok(Change::AccountPut {
                    account_id: AccountId::from_bytes(bytes_col(row, 0, "accounts.id")?),
                    name: col(row, 1, "accounts.name")?,
                })
            },
        )
        .await?;
    items
        .each(
            // As for the instance keys: the RK wrap (or the account's ARK wrap), never the
            // KEK's.
            &format!(
                "SELECT account_id, id,
                        CASE WHEN rk_account THEN '{ARK_KEK_ID_PREFIX}' || rk_version
                             ELSE COALESCE('rk:' || rk_version, kek_id) END,
                        COALESCE(rk_wrapped, wrapped)
                 FROM deks ORDER BY id"
            ),
            &[],
            "snapshot deks",
            |row| {
                Ok(Change::DekPut {
                    account_id: AccountId::from_bytes(bytes_col(row, 0, "deks.account_id")?),
                    dek_id: DekId::from_bytes(bytes_col(row, 1, "deks.id")?),
                    kek_id: col(row, 2, "deks.kek_id")?,
                    wrapped_hex: hex::encode(col::<&[u8]>(row, 3, "deks.wrapped")?),
                })
            },
        )
        .await?;
    items
        .each(
            "SELECT account_id, id, name FROM stores ORDER BY id",
            &[],
            "snapshot stores",
            |row| {
                Ok(Change::StorePut {
                    account_id: AccountId::from_bytes(bytes_col(row, 0, "stores.account_id")?),
                    store_id: StoreId::from_bytes(bytes_col(row, 1, "stores.id")?),
                    name: col(row, 2, "stores.name")?,
                })
            },
        )
        .await?;
    // The current version only; a missing one is damage. In id order, which a replica's
    // indexes (keyed by the random secret id) take fastest.
    items
        .each(
            "SELECT s.account_id, s.store_id, s.id, s.name, s.scopes, s.version, v.dek_id,
                    v.sealed
             FROM secrets AS s
             LEFT JOIN versions AS v ON v.secret_id = s.id AND v.version = s.version
             ORDER BY s.id",
            &[],
            "snapshot secrets",
            secret_put,
        )
        .await?;
    // Each service with its bindings in position order (the secret bindings, then the store
    // bindings, as `ServicePut` lists them), gathered by the database: one row per service.
    items
        .each(
            "SELECT s.account_id, s.id, s.name, s.kind,
                    ARRAY(SELECT b.binding FROM service_bindings AS b
                          WHERE b.service_id = s.id ORDER BY b.position),
                    ARRAY(SELECT b.store_id FROM service_bindings AS b
                          WHERE b.service_id = s.id ORDER BY b.position),
                    ARRAY(SELECT b.secret_name FROM service_bindings AS b
                          WHERE b.service_id = s.id ORDER BY b.position)
             FROM services AS s ORDER BY s.id",
            &[],
            "snapshot services",
            service_put,
        )
        .await?;
    items
        .each(
            "SELECT account_id, service_id, id, hash FROM service_tokens
             WHERE revoked IS NULL ORDER BY id",
            &[],
            "snapshot service tokens",
            |row| {
                Ok(Change::ServiceTokenPut {
                    account_id: AccountId::from_bytes(bytes_col(
                        row,
                        0,
                        "service_tokens.account_id",
                    )?),
                    service_id: ServiceId::from_bytes(bytes_col(
                        row,
                        1,
                        "service_tokens.service_id",
                    )?),
                    token_id: TokenId::from_bytes(bytes_col(row, 2, "service_tokens.id")?),
                    hash_hex: hex::encode(bytes_col::<32>(row, 3, "service_tokens.hash")?),
                })
            },
        )
        .await?;
    // Revoked nodes too, first (a `NodePut` each, then their `NodeRevoked`s): a relay that
    // bootstraps from this snapshot must still recognise a revoked node's token, to tell that
    // edge it is revoked. Before the nodes in service, whose `NodePut`s would otherwise be
    // revoked by an earlier holder's `NodePut` of the same name.
    items
        .each(
            "SELECT id, name, hash FROM nodes WHERE revoked IS NOT NULL ORDER BY created, id",
            &[],
            "snapshot revoked nodes",
            node_put,
        )
        .await?;
    items
        .each(
            "SELECT id FROM nodes WHERE revoked IS NOT NULL ORDER BY created, id",
            &[],
            "snapshot node revocations",
            |row| {
                Ok(Change::NodeRevoked {
                    node_id: TokenId::from_bytes(bytes_col(row, 0, "nodes.id")?),
                })
            },
        )
        .await?;
    items
        .each(
            "SELECT id, name, hash FROM nodes WHERE revoked IS NULL ORDER BY created, id",
            &[],
            "snapshot nodes",
            node_put,
        )
        .await?;
    // The grants of the nodes in service, after them; then their account grants.
    items
        .each(
            crate::replication::LIVE_GRANTS,
            &[],
            "snapshot node grants",
            crate::replication::grant_change,
        )
        .await?;
    items
        .each(
            crate::replication::LIVE_ACCOUNT_GRANTS,
            &[],
            "snapshot account grants",
            crate::replication::grant_row_change,
        )
        .await?;
    if items.sent != count {
        // One transaction counted and read: only a bug gets here. The receiver must not take
        // a snapshot that disagrees with its header.
        return Err(StorageError::Corrupted(format!(
            "snapshot: counted {count} items but produced {}",
            items.sent
        )));
    }
    Ok(())
}

async fn send(out: &mpsc::Sender<SnapshotPart>, part: SnapshotPart) -> Result<()> {
    out.send(part).await.map_err(|_| {
        StorageError::Unavailable("the snapshot's receiver went away before the end".into())
    })
}

struct Items<'a, 'c> {
    tx: &'a deadpool_postgres::Transaction<'c>,
    out: &'a mpsc::Sender<SnapshotPart>,
    sent: u64,
}

impl Items<'_, '_> {
    /// Sends one item per row of `sql`, reading its rows through a portal a batch at a time.
    async fn each(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        context: &'static str,
        change: impl Fn(&Row) -> Result<Change>,
    ) -> Result<()> {
        let stmt = self.tx.prepare(sql).await.db(context)?;
        let portal = self.tx.bind(&stmt, params).await.db(context)?;
        loop {
            let rows = self.tx.query_portal(&portal, BATCH).await.db(context)?;
            for row in &rows {
                // The log's own serialization (`WriteTx::append`), so a snapshot item and a
                // log entry of one change are the same bytes.
                let payload = serde_json::to_vec(&change(row)?)
                    .map_err(|e| StorageError::Unavailable(format!("encoding a change: {e}")))?;
                send(self.out, SnapshotPart::Item(payload)).await?;
                self.sent += 1;
            }
            if rows.len() < BATCH as usize {
                return Ok(());
            }
        }
    }
}

/// A node's row (`id, name, hash`) as the change that registers it.
fn node_put(row: &Row) -> Result<Change> {
    Ok(Change::NodePut {
        node_id: TokenId::from_bytes(bytes_col(row, 0, "nodes.id")?),
        name: col(row, 1, "nodes.name")?,
        hash_hex: hex::encode(bytes_col::<32>(row, 2, "nodes.hash")?),
    })
}

fn secret_put(row: &Row) -> Result<Change> {
    let dek: Option<[u8; 16]> = crate::db::opt_bytes_col(row, 6, "versions.dek_id")?;
    let Some(dek) = dek else {
        return Err(StorageError::Corrupted(
            "a secret's current version row is missing".into(),
        ));
    };
    Ok(Change::SecretPut {
        account_id: AccountId::from_bytes(bytes_col(row, 0, "secrets.account_id")?),
        store_id: StoreId::from_bytes(bytes_col(row, 1, "secrets.store_id")?),
        secret_id: SecretId::from_bytes(bytes_col(row, 2, "secrets.id")?),
        name: col(row, 3, "secrets.name")?,
        scopes: scopes_col(row, 4, "secrets.scopes")?.to_strings(),
        version: u32_col(row, 5, "secrets.version")?,
        dek_id: DekId::from_bytes(dek),
        sealed_hex: hex::encode(col::<&[u8]>(row, 7, "versions.sealed")?),
    })
}

/// A service row with its bindings' columns as arrays, in position order.
fn service_put(row: &Row) -> Result<Change> {
    let bindings: Vec<String> = col(row, 4, "service_bindings.binding")?;
    let store_ids: Vec<&[u8]> = col(row, 5, "service_bindings.store_id")?;
    let secret_names: Vec<Option<String>> = col(row, 6, "service_bindings.secret_name")?;
    if bindings.len() != store_ids.len() || bindings.len() != secret_names.len() {
        return Err(StorageError::Corrupted(
            "service_bindings: a service's binding columns disagree".into(),
        ));
    }
    let mut secrets = Vec::new();
    let mut stores = Vec::new();
    for ((binding, store_id), secret_name) in bindings.into_iter().zip(store_ids).zip(secret_names)
    {
        let store_id = StoreId::from_bytes(<[u8; 16]>::try_from(store_id).map_err(|_| {
            StorageError::Corrupted("service_bindings.store_id: not 16 bytes".into())
        })?);
        match secret_name {
            Some(secret_name) => secrets.push(ChangeSecretBinding {
                binding,
                store_id,
                secret_name,
            }),
            None => stores.push(ChangeStoreBinding { binding, store_id }),
        }
    }
    Ok(Change::ServicePut {
        account_id: AccountId::from_bytes(bytes_col(row, 0, "services.account_id")?),
        service_id: ServiceId::from_bytes(bytes_col(row, 1, "services.id")?),
        name: col(row, 2, "services.name")?,
        kind: col(row, 3, "services.kind")?,
        secrets,
        stores,
    })
}
