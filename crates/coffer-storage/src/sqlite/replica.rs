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
//!
//! Split by topic: applying one change (`apply.rs`), installing a snapshot (`install.rs`); here,
//! applying feed entries and the outbox.

use std::sync::Arc;

use coffer_types::{DekId, Timestamp, TokenId};
use rusqlite::params;

use super::SqliteStorage;
use super::codec::{DbResultExt, id_col, query_all};
use super::log_head;
use super::writer::WriteCx;
use crate::{Change, ChangeRecord, FeedSignature, Result, StorageError};

mod apply;
mod install;

use apply::{Origin, apply};
pub use install::SnapshotInstall;

/// The writer job of [`SqliteStorage::apply_entries`].
fn apply_entries(cx: &mut WriteCx<'_>, records: &[ChangeRecord]) -> Result<Vec<TokenId>> {
    if log_head::base(cx.conn)?.is_none() {
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
        SnapshotInstall::new(Arc::clone(&self.writer), cluster_id, seq, hash, count)
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
