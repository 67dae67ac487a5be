//! Streaming a consistent snapshot of the replicated state (see `Storage::snapshot`).
//!
//! One REPEATABLE READ, READ ONLY transaction; each query runs as a server-side cursor read
//! in batches, and each item is handed to the channel as it is made (`send` waits while the
//! receiver is behind), so memory stays bounded by a batch and the channel, whatever the
//! number of rows. The items and their order are SQLite's (`coffer-storage`'s
//! `sqlite/snapshot.rs`).

use coffer_storage::{
    ARK_KEK_ID_PREFIX, Change, ChangeSecretBinding, ChangeStoreBinding, REPLICATED_KEY_PURPOSES,
    Result, SnapshotPart, StorageError,
};
use coffer_types::{AccountId, DekId, SecretId, ServiceId, StoreId, TokenId};
use deadpool_postgres::GenericClient;
use tokio::sync::mpsc;
use tokio_postgres::Row;

use crate::PgStorage;
use crate::db::{DbResultExt, bytes_col, col, scopes_col, u32_col, u64_col};
use crate::tx::TxFuture;

/// Rows fetched from a cursor at a time.
const BATCH: usize = 256;

/// A constant spliced into SQL as a string literal (cursors take no bound parameters here).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub(crate) async fn snapshot(s: &PgStorage, out: mpsc::Sender<SnapshotPart>) -> Result<()> {
    // A slow receiver keeps the connection (and its snapshot) for as long as it is slow: only
    // so many streams at once, so that other reads keep connections.
    let _permit = s
        .snapshots
        .acquire()
        .await
        .map_err(|_| StorageError::Unavailable("the storage is shut down".into()))?;
    s.read_snapshot(move |tx| -> TxFuture<'_, _> {
        Box::pin(async move { stream(tx, &out).await })
    })
    .await
}

async fn stream(
    tx: &deadpool_postgres::Transaction<'_>,
    out: &mpsc::Sender<SnapshotPart>,
) -> Result<()> {
    let base = crate::change_log::base(tx).await?;
    let cluster_id = base.map(|b| b.cluster_id).ok_or(StorageError::Invalid(
        "the log has no cluster id: edges cannot bootstrap from it",
    ))?;
    let head = crate::write::read_head(tx).await?;
    let purposes = REPLICATED_KEY_PURPOSES
        .iter()
        .map(|p| literal(p))
        .collect::<Vec<_>>()
        .join(", ");
    // Counted in the same snapshot as the items, so the header's count is exact.
    let count_sql = format!(
        "SELECT
             (SELECT count(*) FROM instance_keys WHERE purpose IN ({purposes}))
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
              WHERE n.revoked IS NULL)"
    );
    let count = u64_col(
        &tx.query_one(&count_sql, &[]).await.db("count snapshot")?,
        0,
        "snapshot count",
    )?;
    send(
        out,
        SnapshotPart::Header {
            cluster_id,
            seq: head.seq,
            hash: head.hash,
            count,
        },
    )
    .await?;
    let mut items = Items { tx, out, sent: 0 };

    // Each DEK, store and value comes after what it refers to, so a replica applies the items
    // in order (as it applies log entries).
    items
        .each(
            // The replication-key wrap where this side holds one, never the KEK's.
            &format!(
                "SELECT purpose, key_id, COALESCE('rk:' || rk_version, kek_id),
                        COALESCE(rk_wrapped, wrapped)
                 FROM instance_keys WHERE purpose IN ({purposes}) ORDER BY purpose"
            ),
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
            "SELECT id, name FROM accounts",
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
                        CASE WHEN rk_account THEN {} || rk_version
                             ELSE COALESCE('rk:' || rk_version, kek_id) END,
                        COALESCE(rk_wrapped, wrapped)
                 FROM deks",
                literal(ARK_KEK_ID_PREFIX)
            ),
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
            "SELECT account_id, id, name FROM stores",
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
    // The current version only, joined like the runtime read; a missing one is damage. In id
    // order, which a replica's indexes take fastest (see SQLite's snapshot).
    items
        .each(
            "SELECT s.account_id, s.store_id, s.id, s.name, s.scopes, s.version, v.dek_id,
                    v.sealed
             FROM secrets AS s
             LEFT JOIN versions AS v ON v.secret_id = s.id AND v.version = s.version
             ORDER BY s.id",
            "snapshot secrets",
            secret_put,
        )
        .await?;
    items.services().await?;
    items
        .each(
            "SELECT account_id, service_id, id, hash FROM service_tokens WHERE revoked IS NULL",
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
    // Revoked nodes first (a `NodePut` each, then their `NodeRevoked`s), so a relay that
    // bootstraps from this snapshot still recognises a revoked node's token; before the nodes
    // in service, whose `NodePut`s would otherwise be revoked by an earlier holder's of the
    // same name.
    items
        .each(
            "SELECT id, name, hash FROM nodes WHERE revoked IS NOT NULL",
            "snapshot revoked nodes",
            node_put,
        )
        .await?;
    items
        .each(
            "SELECT id FROM nodes WHERE revoked IS NOT NULL",
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
            "SELECT id, name, hash FROM nodes WHERE revoked IS NULL",
            "snapshot nodes",
            node_put,
        )
        .await?;
    // The grants of the nodes in service, after them.
    items
        .each(
            "SELECT g.node_id, g.rk_version, g.ephemeral, g.sealed
             FROM node_grants AS g JOIN nodes AS n ON n.id = g.node_id
             WHERE n.revoked IS NULL ORDER BY g.node_id, g.rk_version",
            "snapshot node grants",
            |row| {
                Ok(Change::NodeKeyGrant {
                    node_id: TokenId::from_bytes(bytes_col(row, 0, "node_grants.node_id")?),
                    rk_version: u32_col(row, 1, "node_grants.rk_version")?,
                    ephemeral_public_hex: hex::encode(bytes_col::<32>(
                        row,
                        2,
                        "node_grants.ephemeral",
                    )?),
                    sealed_hex: hex::encode(col::<&[u8]>(row, 3, "node_grants.sealed")?),
                })
            },
        )
        .await?;
    // The account grants of the nodes in service, after the accounts they name.
    items
        .each(
            "SELECT g.account_id, g.node_id, g.ark_version, g.ephemeral, g.sealed
             FROM account_grants AS g JOIN nodes AS n ON n.id = g.node_id
             WHERE n.revoked IS NULL ORDER BY g.account_id, g.node_id, g.ark_version",
            "snapshot account grants",
            |row| {
                Ok(Change::AccountKeyGrant {
                    account_id: AccountId::from_bytes(bytes_col(
                        row,
                        0,
                        "account_grants.account_id",
                    )?),
                    node_id: TokenId::from_bytes(bytes_col(row, 1, "account_grants.node_id")?),
                    ark_version: u32_col(row, 2, "account_grants.ark_version")?,
                    ephemeral_public_hex: hex::encode(bytes_col::<32>(
                        row,
                        3,
                        "account_grants.ephemeral",
                    )?),
                    sealed_hex: hex::encode(col::<&[u8]>(row, 4, "account_grants.sealed")?),
                })
            },
        )
        .await?;
    if items.sent != count {
        // One snapshot counted and read: only a bug gets here. The receiver must not take a
        // snapshot that disagrees with its header.
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

struct Items<'a, 't> {
    tx: &'a deadpool_postgres::Transaction<'t>,
    out: &'a mpsc::Sender<SnapshotPart>,
    sent: u64,
}

impl Items<'_, '_> {
    /// Runs `sql` as a cursor and hands `f` each batch of rows, in order.
    async fn batches<F>(&mut self, sql: &str, context: &'static str, mut f: F) -> Result<()>
    where
        F: for<'r> FnMut(&'r mut Self, Vec<Row>) -> TxFuture<'r, ()>,
    {
        self.tx
            .batch_execute(&format!("DECLARE snapshot_rows NO SCROLL CURSOR FOR {sql}"))
            .await
            .db(context)?;
        loop {
            let rows = self
                .tx
                .query(&format!("FETCH {BATCH} FROM snapshot_rows"), &[])
                .await
                .db(context)?;
            if rows.is_empty() {
                break;
            }
            f(self, rows).await?;
        }
        self.tx
            .batch_execute("CLOSE snapshot_rows")
            .await
            .db(context)
    }

    async fn item(&mut self, change: &Change) -> Result<()> {
        // The log's own serialization (`WriteTx::append`), so a snapshot item and a log entry
        // of one change are the same bytes.
        let payload = serde_json::to_vec(change)
            .map_err(|e| StorageError::Unavailable(format!("encoding a change: {e}")))?;
        send(self.out, SnapshotPart::Item(payload)).await?;
        self.sent += 1;
        Ok(())
    }

    /// Sends one item per row of `sql`.
    async fn each(
        &mut self,
        sql: &str,
        context: &'static str,
        change: fn(&Row) -> Result<Change>,
    ) -> Result<()> {
        self.batches(sql, context, move |items, rows| {
            Box::pin(async move {
                for row in &rows {
                    items.item(&change(row)?).await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// A `ServicePut` per service, with its bindings (read between the cursor's batches).
    async fn services(&mut self) -> Result<()> {
        self.batches(
            "SELECT account_id, id, name, kind FROM services",
            "snapshot services",
            |items, rows| {
                Box::pin(async move {
                    for row in &rows {
                        let change = service_put(items.tx, row).await?;
                        items.item(&change).await?;
                    }
                    Ok(())
                })
            },
        )
        .await
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
    let dek: Option<&[u8]> = col(row, 6, "versions.dek_id")?;
    let Some(dek) = dek else {
        return Err(StorageError::Corrupted(
            "a secret's current version row is missing".into(),
        ));
    };
    let dek = <[u8; 16]>::try_from(dek)
        .map_err(|_| StorageError::Corrupted("versions.dek_id: id is not 16 bytes".into()))?;
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

/// A service row with its bindings, in position order: the secret bindings, then the store
/// bindings, as `ServicePut` lists them.
async fn service_put(c: &impl GenericClient, row: &Row) -> Result<Change> {
    let service_id = ServiceId::from_bytes(bytes_col(row, 1, "services.id")?);
    let stmt = c
        .prepare_cached(
            "SELECT binding, store_id, secret_name FROM service_bindings
             WHERE service_id = $1 ORDER BY position",
        )
        .await
        .db("snapshot bindings")?;
    let mut secrets = Vec::new();
    let mut stores = Vec::new();
    for b in c
        .query(&stmt, &[&service_id.as_bytes().as_slice()])
        .await
        .db("snapshot bindings")?
    {
        let binding: String = col(&b, 0, "service_bindings.binding")?;
        let store_id = StoreId::from_bytes(bytes_col(&b, 1, "service_bindings.store_id")?);
        match col::<Option<String>>(&b, 2, "service_bindings.secret_name")? {
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
        service_id,
        name: col(row, 2, "services.name")?,
        kind: col(row, 3, "services.kind")?,
        secrets,
        stores,
    })
}
