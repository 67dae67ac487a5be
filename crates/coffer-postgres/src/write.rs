//! The write primitive: every mutation is one transaction, serialised across instances.
//!
//! [`PgStorage::write`] begins a transaction, takes `pg_advisory_xact_lock(WRITER_LOCK)` (held
//! until COMMIT or ROLLBACK, by one writer of all instances at a time), reads the change-log
//! head from its row, and hands the area module a [`WriteTx`]: the transaction for its
//! queries, [`WriteTx::append`] for change entries (hash-chained exactly like SQLite's, with
//! `coffer_storage::ChangeRecord::chain_hash`) and [`WriteTx::audit`] for audit entries. Once
//! the operation succeeded, the carried audit entries are appended, the head row moves, the
//! head is signed when due (as SQLite's writer does: the last entry of a write that appended,
//! once the log has a cluster id and a signer is set), `NOTIFY coffer_head` is queued and the
//! transaction commits. Then this handle's `committed_head` and `subscribe_head` move, before
//! the write is acknowledged. Any error rolls the whole transaction back: nothing of a failed
//! write remains, neither rows nor entries nor audit.
//!
//! The write's transaction sets `idle_in_transaction_session_timeout` for itself: a process
//! that freezes mid-write (stopped, swapped out, wedged) has its session ended by the database
//! after that long, which releases the lock for the other instances; its write fails.
//!
//! Because the lock is taken first and every statement after it runs in READ COMMITTED, each
//! statement sees every write committed before the lock was granted: checks made inside the
//! write (quotas, names, compare-and-set) cannot be overshot by another instance.
//!
//! There is no group commit: each write is its own transaction and COMMIT. Batching
//! concurrent writes into one transaction (as SQLite's writer does, with savepoints) is a
//! later optimisation.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use coffer_storage::{
    AuditEntry, Change, ChangeRecord, FeedSignature, Result, StorageError, checkpoint_message,
};
use coffer_types::Timestamp;
use deadpool_postgres::GenericClient;

use crate::PgStorage;
use crate::db::{DbResultExt, bytes_col, col, u64_col};

/// A boxed future borrowing the write's transaction for `'a`.
pub(crate) type TxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// The advisory lock key every write takes first ("coffer" + 2 in ASCII).
pub(crate) const WRITER_LOCK: i64 = 0x636f_6666_6572_0002;

/// The channel that tells every instance the log moved; the payload is the new head's seq.
pub(crate) const HEAD_CHANNEL: &str = "coffer_head";

/// Counters behind `Storage::write_stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) jobs: AtomicU64,
    pub(crate) audit_entries: AtomicU64,
    pub(crate) audit_failures: AtomicU64,
}

/// The change log's head: its last entry, or its base when it holds none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) hash: [u8; 32],
    /// Unix micros of the last entry; new entries never go below it.
    pub(crate) at: i64,
}

/// Reads the head row (inside a write: under the writer lock).
pub(crate) async fn read_head(c: &impl GenericClient) -> Result<Head> {
    let row = c
        .query_opt("SELECT seq, hash, at FROM change_head WHERE id = 1", &[])
        .await
        .db("read change head")?
        .ok_or_else(|| StorageError::Corrupted("change_head: the head row is missing".into()))?;
    Ok(Head {
        seq: u64_col(&row, 0, "change_head.seq")?,
        hash: bytes_col(&row, 1, "change_head.hash")?,
        at: col(&row, 2, "change_head.at")?,
    })
}

/// What a write operation sees: its transaction, and the change log and audit chains to
/// append to.
pub(crate) struct WriteTx<'c> {
    tx: deadpool_postgres::Transaction<'c>,
    head: Head,
    /// The head when the write began.
    start: Head,
    /// Sign the head at COMMIT even if nothing was appended (`Storage::sign_head`).
    sign: bool,
    /// Audit entries appended so far.
    audited: u64,
}

impl<'c> WriteTx<'c> {
    /// The transaction, for the operation's own statements (`prepare_cached`, `query`, ...).
    pub(crate) fn tx(&self) -> &deadpool_postgres::Transaction<'c> {
        &self.tx
    }

    /// Appends `change` to the log as the next entry.
    pub(crate) async fn append(&mut self, change: &Change) -> Result<()> {
        let payload = serde_json::to_vec(change)
            .map_err(|e| StorageError::Unavailable(format!("encoding a change: {e}")))?;
        let seq = self.head.seq + 1;
        let hash = ChangeRecord::chain_hash(&self.head.hash, seq, &payload);
        let at = Timestamp::now().unix_micros().max(self.head.at);
        let seq_sql = i64::try_from(seq)
            .map_err(|_| StorageError::Unavailable("change log sequence exhausted".into()))?;
        let stmt = self
            .tx
            .prepare_cached("INSERT INTO changes (seq, at, hash, payload) VALUES ($1, $2, $3, $4)")
            .await
            .db("append change")?;
        self.tx
            .execute(&stmt, &[&seq_sql, &at, &hash.as_slice(), &payload])
            .await
            .db("append change")?;
        self.head = Head { seq, hash, at };
        Ok(())
    }

    /// Appends audit entries, in order, each to its own account's chain (see `audit.rs`).
    pub(crate) async fn audit(&mut self, entries: &[AuditEntry]) -> Result<()> {
        crate::audit::append(&self.tx, entries).await?;
        self.audited += entries.len() as u64;
        Ok(())
    }

    /// Has the head signed at COMMIT even if this write appends nothing (a control plane that
    /// gained its key signs the head it already has). No effect without a signer.
    pub(crate) fn sign_head(&mut self) {
        self.sign = true;
    }

    /// The log head as of this point of the write: seq and hash.
    pub(crate) fn head(&self) -> (u64, [u8; 32]) {
        (self.head.seq, self.head.hash)
    }

    fn appended(&self) -> bool {
        self.head != self.start
    }
}

/// What every write needs, cloneable so that a queued write can run on a task of its own.
#[derive(Clone)]
pub(crate) struct Writer {
    pub(crate) pool: deadpool_postgres::Pool,
    pub(crate) shared: std::sync::Arc<crate::Shared>,
    /// `PgOptions::write_idle_timeout`, in milliseconds.
    pub(crate) idle_timeout_ms: i64,
}

/// A write's turn in this process: held from before its transaction begins until it ends.
/// Shutdown waits for every turn taken (the gate), and turns are taken in FIFO order.
pub(crate) struct Turn {
    _gate: tokio::sync::OwnedRwLockReadGuard<()>,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

impl PgStorage {
    /// See [`Writer::write`].
    pub(crate) async fn write<T, F>(&self, audit: &[AuditEntry], op: F) -> Result<T>
    where
        T: Send,
        F: for<'a, 'c> FnOnce(&'a mut WriteTx<'c>) -> TxFuture<'a, T> + Send,
    {
        self.writer.write(audit, op).await
    }

    /// [`PgStorage::write`] in two steps: returns once the write has its turn (every write
    /// this process queued before it has finished), with the future of its outcome; the write
    /// runs on a task of its own, whether or not that future is awaited.
    pub(crate) async fn queue_write<T, F>(
        &self,
        audit: &[AuditEntry],
        op: F,
    ) -> Result<coffer_storage::Pending<T>>
    where
        T: Send + 'static,
        F: for<'a, 'c> FnOnce(&'a mut WriteTx<'c>) -> TxFuture<'a, T> + Send + 'static,
    {
        crate::audit::check(audit)?;
        let turn = self.writer.turn().await?;
        let writer = self.writer.clone();
        let audit = audit.to_vec();
        let task = tokio::spawn(async move { writer.write_in_turn(turn, &audit, op).await });
        Ok(Box::pin(async move {
            task.await.map_err(|_| {
                StorageError::Unavailable("a queued write's task ended without an answer".into())
            })?
        }))
    }
}

impl Writer {
    /// Takes this process's next turn to write; `Unavailable` once the storage is shut down.
    pub(crate) async fn turn(&self) -> Result<Turn> {
        let gate = std::sync::Arc::clone(&self.shared.gate).read_owned().await;
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(StorageError::Unavailable("the storage is shut down".into()));
        }
        // This process's writes would wait for each other on the writer lock anyway; waiting
        // here (FIFO) leaves the pool to reads instead of filling it with waiting connections.
        let local = std::sync::Arc::clone(&self.shared.local_writer)
            .lock_owned()
            .await;
        Ok(Turn {
            _gate: gate,
            _local: local,
        })
    }

    /// Runs `op` as one write (see the module doc), then appends `audit` in the same
    /// transaction: if either fails, nothing is written. `op` gets the transaction by
    /// reference; what it needs from the caller it takes by value:
    ///
    /// ```text
    /// self.write(audit, move |w| Box::pin(async move {
    ///     w.tx().execute("...", &[...]).await.db("...")?;
    ///     w.append(&change).await
    /// })).await
    /// ```
    pub(crate) async fn write<T, F>(&self, audit: &[AuditEntry], op: F) -> Result<T>
    where
        T: Send,
        F: for<'a, 'c> FnOnce(&'a mut WriteTx<'c>) -> TxFuture<'a, T> + Send,
    {
        // Refused before anything is begun; nothing is counted as lost.
        crate::audit::check(audit)?;
        let turn = self.turn().await?;
        self.write_in_turn(turn, audit, op).await
    }

    /// [`Writer::write`] in a turn already taken.
    pub(crate) async fn write_in_turn<T, F>(
        &self,
        turn: Turn,
        audit: &[AuditEntry],
        op: F,
    ) -> Result<T>
    where
        T: Send,
        F: for<'a, 'c> FnOnce(&'a mut WriteTx<'c>) -> TxFuture<'a, T> + Send,
    {
        let _turn = turn;
        let stats = &self.shared.stats;
        stats.jobs.fetch_add(1, Ordering::Relaxed);
        let mut client = match self.pool.get().await.db("take a connection for a write") {
            Ok(c) => c,
            Err(e) => return Err(self.batch_failed(0, e)),
        };
        let tx = match client.transaction().await.db("begin a write") {
            Ok(tx) => tx,
            Err(e) => return Err(self.batch_failed(0, e)),
        };
        // The idle timeout for this transaction only (a stuck process must not hold the
        // writer lock for ever), then the lock itself.
        if let Err(e) = tx
            .execute(
                "SELECT set_config('idle_in_transaction_session_timeout', $1, true),
                        pg_advisory_xact_lock($2)",
                &[&self.idle_timeout_ms.to_string(), &WRITER_LOCK],
            )
            .await
            .db("take the writer lock")
        {
            return Err(self.batch_failed(0, e));
        }
        let head = match read_head(&tx).await {
            Ok(h) => h,
            Err(e) => return Err(self.batch_failed(0, e)),
        };
        let mut w = WriteTx {
            tx,
            head,
            start: head,
            sign: false,
            audited: 0,
        };
        let out = match op(&mut w).await {
            Ok(out) => out,
            Err(e) => {
                // The operation's own failure: rolled back, nothing of it remains. A rollback
                // that fails leaves the connection to the pool's recycling check.
                let _ = w.tx.rollback().await;
                return Err(e);
            }
        };
        if let Err(e) = w.audit(audit).await {
            stats
                .audit_failures
                .fetch_add(audit.len() as u64, Ordering::Relaxed);
            let _ = w.tx.rollback().await;
            return Err(e);
        }
        let appended = w.appended();
        if let Err(e) = self.finish(&mut w, appended).await {
            let audited = w.audited;
            let _ = w.tx.rollback().await;
            return Err(self.batch_failed(audited, e));
        }
        let audited = w.audited;
        let new_head = w.head;
        let committing = Instant::now();
        if let Err(e) = w.tx.commit().await.db("commit a write") {
            return Err(self.batch_failed(audited, e));
        }
        let took = committing.elapsed();
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats.audit_entries.fetch_add(audited, Ordering::Relaxed);
        if appended {
            self.shared.advance(new_head.seq);
        }
        if let Some(observer) = self.shared.observer.get() {
            observer.committed(1, took);
        }
        Ok(out)
    }

    /// Before COMMIT: moves the head row, signs the head when due, queues the notification.
    async fn finish(&self, w: &mut WriteTx<'_>, appended: bool) -> Result<()> {
        if appended {
            let seq = i64::try_from(w.head.seq)
                .map_err(|_| StorageError::Unavailable("change log sequence exhausted".into()))?;
            let stmt = w
                .tx
                .prepare_cached("UPDATE change_head SET seq = $1, hash = $2, at = $3 WHERE id = 1")
                .await
                .db("move change head")?;
            w.tx.execute(&stmt, &[&seq, &w.head.hash.as_slice(), &w.head.at])
                .await
                .db("move change head")?;
        }
        if (appended || w.sign) && w.head.seq > 0 {
            self.sign(w).await?;
        }
        if appended {
            // Delivered to every listening instance at COMMIT, and only if it commits.
            let stmt =
                w.tx.prepare_cached("SELECT pg_notify($1, $2)")
                    .await
                    .db("notify head")?;
            w.tx.execute(&stmt, &[&HEAD_CHANNEL, &w.head.seq.to_string()])
                .await
                .db("notify head")?;
        }
        Ok(())
    }

    /// Signs the head (with the signer set, once the log has a cluster id), in the write's
    /// transaction: signed or not written.
    async fn sign(&self, w: &mut WriteTx<'_>) -> Result<()> {
        let Some(signer) = self.shared.signer.get() else {
            return Ok(());
        };
        let cluster = match self.shared.cluster.get() {
            Some(c) => *c,
            None => {
                let row =
                    w.tx.query_opt("SELECT cluster_id FROM replication WHERE id = 1", &[])
                        .await
                        .db("read cluster id")?;
                let Some(row) = row else {
                    // Signed later: the server signs its head at start, once the id exists.
                    return Ok(());
                };
                let id: [u8; 16] = bytes_col(&row, 0, "replication.cluster_id")?;
                *self.shared.cluster.get_or_init(|| id)
            }
        };
        let signature = signer.sign(&checkpoint_message(&cluster, w.head.seq, &w.head.hash));
        insert_signature(
            &w.tx,
            &FeedSignature {
                seq: w.head.seq,
                signature,
            },
        )
        .await
    }

    /// Counts a write that could not begin, be signed or commit, and tells the observer.
    fn batch_failed(&self, audited: u64, e: StorageError) -> StorageError {
        self.shared
            .stats
            .audit_failures
            .fetch_add(audited, Ordering::Relaxed);
        if let Some(observer) = self.shared.observer.get() {
            observer.failed(1);
        }
        tracing::error!(error = %e, "a storage write was not committed");
        e
    }
}

impl PgStorage {
    /// Runs `f` in one REPEATABLE READ, READ ONLY transaction, so that its statements see one
    /// snapshot of the database.
    pub(crate) async fn read_snapshot<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: for<'a, 'c> FnOnce(&'a deadpool_postgres::Transaction<'c>) -> TxFuture<'a, T> + Send,
    {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .db("begin read")?;
        let out = f(&tx).await?;
        tx.commit().await.db("end read")?;
        Ok(out)
    }
}

impl crate::Shared {
    /// Moves `committed_head` and the head watch to `seq` (never back).
    pub(crate) fn advance(&self, seq: u64) {
        self.committed_seq.fetch_max(seq, Ordering::AcqRel);
        self.head.send_if_modified(|current| {
            if seq > *current {
                *current = seq;
                true
            } else {
                false
            }
        });
    }
}

pub(crate) async fn insert_signature(
    tx: &deadpool_postgres::Transaction<'_>,
    s: &FeedSignature,
) -> Result<()> {
    let seq = i64::try_from(s.seq)
        .map_err(|_| StorageError::Invalid("a signature's seq is beyond storage's range"))?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO change_signatures (seq, signature) VALUES ($1, $2)
             ON CONFLICT (seq) DO UPDATE SET signature = excluded.signature",
        )
        .await
        .db("store signature")?;
    tx.execute(&stmt, &[&seq, &s.signature.as_slice()])
        .await
        .db("store signature")?;
    Ok(())
}
