//! Installing a snapshot into a replica: one writer job that empties the replicated state and
//! applies the items as they are pushed, in one transaction held open until the commit.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use coffer_types::Timestamp;
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::super::codec::{DbResultExt, query_opt};
use super::super::log_head;
use super::super::writer::{WriteCx, WriterHandle};
use super::apply::{Origin, apply};
use crate::{Change, ChangeRecord, REPLICATED_KEY_PURPOSES, Result, StorageError};

/// Snapshot items handed to the writer in one message: one wake-up of the writer thread per
/// batch rather than per item.
const INSTALL_BATCH: usize = 256;

/// Batches queued between [`SnapshotInstall::push`] and the writer at most: with the one
/// being filled and the one being applied, about a thousand parsed items in memory.
const INSTALL_QUEUE: usize = 2;

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
    if let Some(base) = log_head::base(cx.conn)?
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
        |row| super::super::codec::col(row, 0, "max(changes.seq)"),
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
    // The trigger that counts an account's and a store's secrets makes every secret insert a
    // statement that writes several rows and may abort halfway, which SQLite runs in a
    // statement transaction: its journal copies every page the insert touches, a write to a
    // temporary file per page (a third of an install's time). The install counts instead and
    // sets the counters at the end; the trigger is put back, from its own stored definition,
    // in the same transaction (a failed install rolls both back).
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
        for (account, n) in counts.accounts {
            cx.conn
                .prepare_cached(
                    "UPDATE accounts SET secret_count = secret_count + ?2 WHERE id = ?1",
                )
                .and_then(|mut stmt| stmt.execute(params![account, n]))
                .db("count an account's secrets")?;
        }
        for (store, n) in counts.stores {
            cx.conn
                .prepare_cached("UPDATE stores SET secret_count = secret_count + ?2 WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute(params![store, n]))
                .db("count a store's secrets")?;
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

/// How many secrets each account and each store got in an install.
#[derive(Default)]
struct Counts {
    accounts: HashMap<[u8; 16], i64>,
    stores: HashMap<[u8; 16], i64>,
}

/// Applies the items; returns how many secrets each account and store got (the count trigger
/// is suspended meanwhile: see `run_install`).
fn install_items(
    cx: &mut WriteCx<'_>,
    header: InstallHeader,
    items: &mut mpsc::Receiver<InstallMsg>,
) -> Result<Counts> {
    let now = Timestamp::now().unix_micros();
    clear_replica(cx, &header, now)?;
    let mut applied = 0u64;
    let mut counts = Counts::default();
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
                    if let Change::SecretPut {
                        account_id,
                        store_id,
                        ..
                    } = change
                    {
                        *counts.accounts.entry(*account_id.as_bytes()).or_default() += 1;
                        *counts.stores.entry(*store_id.as_bytes()).or_default() += 1;
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
    /// An install into the replica `writer` writes, under (`cluster_id`, `seq`, `hash`,
    /// `count`); see [`SqliteStorage::install_snapshot`](super::SqliteStorage::install_snapshot).
    pub(super) fn new(
        writer: Arc<WriterHandle>,
        cluster_id: [u8; 16],
        seq: u64,
        hash: [u8; 32],
        count: u64,
    ) -> SnapshotInstall {
        SnapshotInstall {
            writer,
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
