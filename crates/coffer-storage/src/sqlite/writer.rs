//! The single writer: one thread owns the read-write connection and applies write jobs with
//! group commit.
//!
//! The thread takes every job already queued (up to `max_batch`) into one transaction. Each job
//! runs inside its own SAVEPOINT, so a job that fails is rolled back alone and answered with its
//! own error at once; the others are answered after the one COMMIT, so they share its fsync. If
//! the COMMIT fails, every job that was waiting for it gets the error.
//!
//! The change-log head (last seq and hash) is read from the database at the start of every
//! batch, right after `BEGIN IMMEDIATE` took the write lock: one lookup by primary key (or, when
//! the log holds no entry, the base in the `replication` row). So it is
//! the last committed entry even when another connection (another process, or another
//! `SqliteStorage` on the same file) appended since our previous batch; a head kept in memory
//! across batches would make every later append clash on `seq`. Within the batch the lock keeps
//! other writers out, so the in-memory copy is exact: a job's appends advance it and a job rolled
//! back to its savepoint restores the value from before the job. Nothing of it outlives the
//! batch, so a batch that does not commit needs no repair.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coffer_types::Timestamp;
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot, watch};

use super::codec::DbResultExt;
use super::log_head::{base, log_head};
use crate::{
    Change, ChangeRecord, FeedSignature, FeedSigner, Result, StorageError, WriteObserver,
    WriteStats, checkpoint_message,
};

/// [`crate::SIGN_EVERY_ENTRIES`], the rule every backend keeps.
#[cfg(not(test))]
const SIGN_EVERY_ENTRIES: u64 = crate::SIGN_EVERY_ENTRIES;
/// Small in tests, so that a batch of a few jobs shows the checkpoints between them.
#[cfg(test)]
const SIGN_EVERY_ENTRIES: u64 = 4;

/// The control plane's feed signer, set once after open (`SqliteStorage::set_feed_signer`).
pub(super) type SignerSlot = Arc<OnceLock<Arc<dyn FeedSigner>>>;

/// Who is told of each group commit, set once after open (`Storage::set_write_observer`).
type ObserverSlot = Arc<OnceLock<Arc<dyn WriteObserver>>>;

/// How many queued jobs wait for a free slot before `submit` waits (backpressure).
const QUEUE_DEPTH: usize = 1024;

/// How long the writer waits for readers to leave the WAL when it truncates it after a
/// snapshot install.
const TRUNCATE_WAIT: Duration = Duration::from_millis(200);

#[derive(Debug)]
struct Counters {
    commits: AtomicU64,
    jobs: AtomicU64,
    audit_entries: AtomicU64,
    audit_failures: AtomicU64,
    /// `Storage::committed_head`: moved after every COMMIT that appended to (or replaced) the
    /// log, before any job of the batch is answered. Only the writer thread stores it.
    committed_seq: AtomicU64,
    /// `Storage::subscribe_head`: the head's seq, sent at the same moment.
    head: watch::Sender<u64>,
}

/// The last change-log entry (its base when the log holds none: seq 0 and the genesis hash
/// for a log that never had one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    seq: u64,
    hash: [u8; 32],
    /// Unix micros of the last entry; new entries never go below it, so `at` is monotonic
    /// even if the wall clock steps back.
    at: i64,
    /// Whether the batch has appended to or replaced the log so far. Part of the head so that
    /// a job rolled back to its savepoint takes its mark back with the rest.
    moved: bool,
    /// Whether the batch has replaced the whole state (a snapshot install): after its COMMIT
    /// the WAL, as large as the install, is checkpointed and truncated.
    replaced: bool,
    /// Whether the batch's head is to be signed at COMMIT (it appended entries of its own, or
    /// a job asked for it): with a signer set, the batch's last entry gets a signature.
    sign: bool,
    /// Audit entries the batch has appended so far (taken back with a rolled-back job's work).
    audit: u64,
}

/// What a write operation sees: the connection inside its savepoint, and the change log.
pub(super) struct WriteCx<'a> {
    pub(super) conn: &'a Connection,
    head: &'a mut Head,
    counters: &'a Counters,
}

impl WriteCx<'_> {
    /// Appends `change` to the log as the next entry (in the current transaction).
    pub(super) fn append(&mut self, change: &Change) -> Result<()> {
        let payload = serde_json::to_vec(change)
            .map_err(|e| StorageError::Unavailable(format!("encoding a change: {e}")))?;
        let seq = self.head.seq + 1;
        let hash = ChangeRecord::chain_hash(&self.head.hash, seq, &payload);
        let at = Timestamp::now().unix_micros().max(self.head.at);
        let seq_sql = i64::try_from(seq)
            .map_err(|_| StorageError::Unavailable("change log sequence exhausted".into()))?;
        self.conn
            .prepare_cached("INSERT INTO changes (seq, at, hash, payload) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut stmt| stmt.execute(params![seq_sql, at, hash, payload]))
            .db("append change")?;
        // Only after the row is in: a failed insert leaves the head untouched.
        *self.head = Head {
            seq,
            hash,
            at,
            moved: true,
            replaced: self.head.replaced,
            sign: true,
            audit: self.head.audit,
        };
        Ok(())
    }

    /// Counts audit entries appended in this savepoint.
    pub(super) fn audit_appended(&mut self, entries: usize) {
        self.head.audit += entries as u64;
    }

    /// Counts audit entries lost to a refusal by the database (the job fails with them).
    pub(super) fn audit_failed(&self, entries: usize) {
        self.counters
            .audit_failures
            .fetch_add(entries as u64, Ordering::Relaxed);
    }

    /// Has the head signed at COMMIT even if the batch appends nothing (a control plane that
    /// gained its key signs the head it already has). No effect without a signer.
    pub(super) fn sign_head(&mut self) {
        self.head.sign = true;
    }

    /// Stores a signature received from upstream with the entries it signs (a replica).
    pub(super) fn store_signature(&mut self, s: &FeedSignature) -> Result<()> {
        insert_signature(self.conn, s)
    }

    /// The log head as of this point of the transaction: seq and hash.
    pub(super) fn head(&self) -> (u64, [u8; 32]) {
        (self.head.seq, self.head.hash)
    }

    /// Appends an entry received from upstream exactly as it is (seq, at, hash, payload), so a
    /// relay serves it on byte for byte. `Invalid` unless it is the next entry and chains onto
    /// the head's hash. The caller applies its change.
    pub(super) fn append_verbatim(&mut self, record: &ChangeRecord) -> Result<()> {
        if Some(record.seq) != self.head.seq.checked_add(1) {
            return Err(StorageError::Invalid(
                "a feed entry's seq is not the one after the replica's head",
            ));
        }
        if !record.follows(&self.head.hash) {
            return Err(StorageError::Invalid(
                "a feed entry does not chain onto the replica's head",
            ));
        }
        let seq_sql = i64::try_from(record.seq)
            .map_err(|_| StorageError::Invalid("a feed entry's seq is beyond storage's range"))?;
        let at = record.at.unix_micros();
        self.conn
            .prepare_cached("INSERT INTO changes (seq, at, hash, payload) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut stmt| stmt.execute(params![seq_sql, at, record.hash, record.payload]))
            .db("append feed entry")?;
        *self.head = Head {
            seq: record.seq,
            hash: record.hash,
            // Entries carry upstream's times; our own appends (none on an edge) would still
            // never go below them.
            at: at.max(self.head.at),
            moved: true,
            replaced: self.head.replaced,
            sign: self.head.sign,
            audit: self.head.audit,
        };
        Ok(())
    }

    /// Puts the head at an installed snapshot's position (the caller has replaced the log's
    /// base and emptied `changes`); the log counts as moved, whatever the position.
    pub(super) fn reset_head(&mut self, seq: u64, hash: [u8; 32], at: i64) {
        *self.head = Head {
            seq,
            hash,
            at,
            moved: true,
            replaced: true,
            sign: self.head.sign,
            audit: self.head.audit,
        };
    }
}

/// A queued write: runs once inside its savepoint, then is answered exactly once.
trait Job: Send {
    /// Runs the operation; returns whether it succeeded. Keeps the output for [`Job::answer`].
    fn run(&mut self, cx: &mut WriteCx<'_>) -> bool;
    /// Delivers the result. `batch_error` is set when the job's work did not commit (or it
    /// never ran); a job that failed on its own reports its own error regardless.
    fn answer(self: Box<Self>, batch_error: Option<StorageError>);
}

struct TypedJob<T, F> {
    op: Option<F>,
    output: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send,
    F: FnOnce(&mut WriteCx<'_>) -> Result<T> + Send,
{
    fn run(&mut self, cx: &mut WriteCx<'_>) -> bool {
        let Some(op) = self.op.take() else {
            return false;
        };
        // A panicking operation is a bug, but it must not take the writer (and with it every
        // later write) down. Its savepoint is rolled back like any failure; nothing it touched
        // outlives that, and the head is restored by the caller.
        let output = catch_unwind(AssertUnwindSafe(|| op(cx))).unwrap_or_else(|_| {
            Err(StorageError::Unavailable(
                "a write operation panicked".into(),
            ))
        });
        let ok = output.is_ok();
        self.output = Some(output);
        ok
    }

    fn answer(self: Box<Self>, batch_error: Option<StorageError>) {
        let TypedJob { output, reply, .. } = *self;
        let result = match (output, batch_error) {
            (Some(Err(own)), _) => Err(own),
            (_, Some(batch)) => Err(batch),
            (Some(Ok(value)), None) => Ok(value),
            (None, None) => Err(StorageError::Unavailable("write job was not run".into())),
        };
        // The caller may have stopped waiting (its future was dropped); nothing to do then.
        let _ = reply.send(result);
    }
}

/// The async side: submits jobs and waits for their answers.
///
/// Closing works through `&self` (the storage is shared behind an `Arc`): the queue's sender is
/// taken out of `jobs`, so no new job gets in, and the writer thread exits once every sender
/// (including clones still held by submissions in flight) is gone and the queue is drained.
pub(super) struct WriterHandle {
    /// `None` once closed. Each submission clones the sender and drops the clone as soon as its
    /// job is queued.
    jobs: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    /// Taken by the first `close`, which joins it; an async mutex so that a concurrent `close`
    /// waits for that join rather than returning while the writer still runs.
    thread: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
    signer: SignerSlot,
    observer: ObserverSlot,
    /// Made by [`WriterHandle::read_only`]: there never was a writer, and a write says so.
    read_only: bool,
}

impl WriterHandle {
    /// Starts the writer thread on `conn` (already migrated).
    pub(super) fn start(conn: Connection, max_batch: usize) -> Result<WriterHandle> {
        let signer = SignerSlot::default();
        let observer = ObserverSlot::default();
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        // Read outside any transaction: nothing else writes through this connection yet.
        let head = read_head(&conn)?;
        let counters = Arc::new(Counters {
            commits: AtomicU64::new(0),
            jobs: AtomicU64::new(0),
            audit_entries: AtomicU64::new(0),
            audit_failures: AtomicU64::new(0),
            committed_seq: AtomicU64::new(head.seq),
            head: watch::Sender::new(head.seq),
        });
        let writer = Writer {
            conn,
            max_batch: max_batch.max(1),
            counters: Arc::clone(&counters),
            signer: Arc::clone(&signer),
            observer: Arc::clone(&observer),
            cluster: None,
        };
        let thread = std::thread::Builder::new()
            .name("coffer-sqlite-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StorageError::Unavailable(format!("starting the writer thread: {e}")))?;
        Ok(WriterHandle {
            jobs: Mutex::new(Some(tx)),
            thread: tokio::sync::Mutex::new(Some(thread)),
            counters,
            signer,
            observer,
            read_only: false,
        })
    }

    /// A handle with no writer thread, for a read-only [`super::SqliteStorage`]: every write
    /// fails with `Unavailable`. The head is read from `conn` (a read-only connection).
    pub(super) fn read_only(conn: &Connection) -> Result<WriterHandle> {
        let head = read_head(conn)?;
        Ok(WriterHandle {
            jobs: Mutex::new(None),
            thread: tokio::sync::Mutex::new(None),
            counters: Arc::new(Counters {
                commits: AtomicU64::new(0),
                jobs: AtomicU64::new(0),
                audit_entries: AtomicU64::new(0),
                audit_failures: AtomicU64::new(0),
                committed_seq: AtomicU64::new(head.seq),
                head: watch::Sender::new(head.seq),
            }),
            signer: SignerSlot::default(),
            observer: ObserverSlot::default(),
            read_only: true,
        })
    }

    /// Sets the write observer; `false` if one was set already (it is kept).
    pub(super) fn set_observer(&self, observer: Arc<dyn WriteObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// Sets the feed signer; `false` if one was set already (it is kept).
    pub(super) fn set_signer(&self, signer: Arc<dyn FeedSigner>) -> bool {
        self.signer.set(signer).is_ok()
    }

    fn sender(&self) -> Option<mpsc::Sender<Box<dyn Job>>> {
        // The guarded value is an Option that is only cloned or taken whole; a panic elsewhere
        // while the lock was held cannot leave it half-updated.
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `op` in the writer's next transaction; resolves once that transaction committed
    /// (or with the error that kept it from committing).
    pub(super) async fn run<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCx<'_>) -> Result<T> + Send + 'static,
    {
        let answer = self.submit(op).await?;
        answer
            .await
            .map_err(|_| StorageError::Unavailable("the writer stopped before answering".into()))?
    }

    /// Queues `op` like [`WriterHandle::run`] and returns as soon as it is queued, with the
    /// receiver of its answer.
    pub(super) async fn submit<T, F>(&self, op: F) -> Result<oneshot::Receiver<Result<T>>>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCx<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(TypedJob {
            op: Some(op),
            output: None,
            reply,
        });
        let stopped = || {
            StorageError::Unavailable(if self.read_only {
                "the database was opened read-only".into()
            } else {
                "the writer has stopped".into()
            })
        };
        let jobs = self.sender().ok_or_else(stopped)?;
        jobs.send(job).await.map_err(|_| stopped())?;
        // Not held while waiting for the answer: only queued jobs keep the writer alive.
        drop(jobs);
        Ok(answer)
    }

    /// See `Storage::committed_head`.
    pub(super) fn committed_seq(&self) -> u64 {
        self.counters.committed_seq.load(Ordering::Acquire)
    }

    /// See `Storage::subscribe_head`.
    pub(super) fn subscribe_head(&self) -> watch::Receiver<u64> {
        self.counters.head.subscribe()
    }

    pub(super) fn stats(&self) -> WriteStats {
        WriteStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            jobs: self.counters.jobs.load(Ordering::Relaxed),
            audit_entries: self.counters.audit_entries.load(Ordering::Relaxed),
            audit_failures: self.counters.audit_failures.load(Ordering::Relaxed),
        }
    }

    /// How many jobs are queued and not yet taken by the writer.
    #[cfg(any(test, feature = "test-support"))]
    pub(super) fn queued(&self) -> usize {
        self.sender()
            .map_or(0, |jobs| jobs.max_capacity() - jobs.capacity())
    }

    /// Stops accepting jobs, lets the writer finish the queued ones (and those whose submission
    /// is already under way) and waits for the thread, which closes the connection, to exit.
    /// Idempotent; a concurrent call waits for the same exit.
    pub(super) async fn close(&self) {
        let mut thread = self.thread.lock().await;
        drop(
            self.jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let Some(handle) = thread.take() else {
            return;
        };
        // Joining blocks, so it happens off the runtime's threads. A writer that panicked has
        // nothing left to clean up, so its panic is only logged.
        match tokio::task::spawn_blocking(move || handle.join()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::error!("the storage writer thread had panicked"),
            Err(e) => tracing::error!(error = %e, "joining the storage writer thread failed"),
        }
    }
}

/// The head the batch starts from: where the log stands ([`log_head`]).
fn read_head(conn: &Connection) -> Result<Head> {
    let head = log_head(conn)?;
    Ok(Head {
        seq: head.seq,
        hash: head.hash,
        at: head.at,
        moved: false,
        replaced: false,
        sign: false,
        audit: 0,
    })
}

struct Writer {
    conn: Connection,
    max_batch: usize,
    counters: Arc<Counters>,
    signer: SignerSlot,
    observer: ObserverSlot,
    /// The log's cluster id, once read (it never changes once made).
    cluster: Option<[u8; 16]>,
}

/// The transaction cannot continue (SQLite rolled it back itself, or a savepoint statement
/// failed); the batch is abandoned.
struct Abandon(StorageError);

impl Writer {
    fn run(mut self, mut jobs: mpsc::Receiver<Box<dyn Job>>) {
        let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(self.max_batch);
        // Ends when every handle is gone and the queue is drained.
        while let Some(first) = jobs.blocking_recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.run_batch(&mut batch);
            debug_assert!(batch.is_empty());
        }
    }

    /// Runs and answers every job in `batch`, leaving it empty.
    fn run_batch(&mut self, batch: &mut Vec<Box<dyn Job>>) {
        let mut head = match self.begin() {
            Ok(head) => head,
            Err(e) => {
                tracing::error!(error = %e, "storage writer cannot begin a transaction");
                self.observe_failure(None, batch.len());
                fail_all(batch.drain(..), &e);
                return;
            }
        };
        let jobs = batch.len();
        let mut waiting: Vec<Box<dyn Job>> = Vec::with_capacity(batch.len());
        let mut queue = batch.drain(..);
        let mut signed_through = head.seq;
        while let Some(mut job) = queue.next() {
            self.counters.jobs.fetch_add(1, Ordering::Relaxed);
            match self.run_in_savepoint(job.as_mut(), &mut head) {
                Ok(true) => {
                    // A checkpoint between jobs once enough entries went by, so that no feed
                    // answer has to reach far past its byte budget for a signed entry (a
                    // batch of many bulk writes would otherwise be one checkpoint apart).
                    if head.seq.saturating_sub(signed_through) >= SIGN_EVERY_ENTRIES {
                        if let Err(e) = self.sign(&head) {
                            tracing::error!(error = %e, "storage writer cannot sign a batch");
                            self.rollback();
                            self.observe_failure(Some(&head), jobs);
                            let e = StorageError::Unavailable(format!("not committed: {e}"));
                            job.answer(Some(copy_error(&e)));
                            fail_all(waiting.into_iter().chain(queue), &e);
                            return;
                        }
                        signed_through = head.seq;
                    }
                    waiting.push(job)
                }
                // Rolled back to its savepoint; its error does not depend on the COMMIT.
                Ok(false) => job.answer(None),
                Err(Abandon(e)) => {
                    tracing::error!(error = %e, "storage writer abandons a batch");
                    self.rollback();
                    self.observe_failure(Some(&head), jobs);
                    job.answer(Some(copy_error(&e)));
                    fail_all(waiting.into_iter().chain(queue), &e);
                    return;
                }
            }
        }
        drop(queue);
        if waiting.is_empty() {
            // Every job rolled back to its savepoint: there is nothing to make durable.
            self.rollback();
            return;
        }
        if let Err(e) = self.sign(&head) {
            // Signed or not written: an unsigned head would keep every edge from applying
            // this batch's entries.
            tracing::error!(error = %e, "storage writer cannot sign a batch");
            self.rollback();
            self.observe_failure(Some(&head), jobs);
            let e = StorageError::Unavailable(format!("not committed: {e}"));
            fail_all(waiting.into_iter(), &e);
            return;
        }
        let committing = Instant::now();
        match exec(&self.conn, "COMMIT", "commit") {
            Ok(()) => {
                let took = committing.elapsed();
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .audit_entries
                    .fetch_add(head.audit, Ordering::Relaxed);
                if head.moved {
                    // Strictly past the previous value even when an install put the head at
                    // or below it; equal to the head's seq while the log only grows.
                    let previous = self.counters.committed_seq.load(Ordering::Acquire);
                    let next = previous.saturating_add(1).max(head.seq);
                    self.counters.committed_seq.store(next, Ordering::Release);
                    self.counters.head.send_replace(head.seq);
                }
                // Before the answers: when an install's commit returns, its WAL is gone (unless
                // a reader held it past TRUNCATE_WAIT).
                if head.replaced {
                    self.truncate_wal();
                }
                // The observer hears of the commit before anyone is answered, so a caller
                // that reads metrics after its write returns sees the write counted.
                if let Some(observer) = self.observer.get() {
                    observer.committed(waiting.len(), took);
                }
                for job in waiting {
                    job.answer(None);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "storage writer failed to commit a batch");
                self.rollback();
                self.observe_failure(Some(&head), jobs);
                let e = StorageError::Unavailable(format!("not committed: {e}"));
                fail_all(waiting.into_iter(), &e);
            }
        }
    }

    /// Counts a batch of `jobs` that did not commit, and the audit entries it had appended.
    fn observe_failure(&self, head: Option<&Head>, jobs: usize) {
        if let Some(head) = head {
            self.counters
                .audit_failures
                .fetch_add(head.audit, Ordering::Relaxed);
        }
        if let Some(observer) = self.observer.get() {
            observer.failed(jobs);
        }
    }

    /// Copies the whole WAL into the database and empties the file. After a snapshot install
    /// the WAL holds a copy of the whole database; this returns that disk space at once. A
    /// reader still using the WAL blocks it: the writer waits for that at most
    /// [`TRUNCATE_WAIT`] (every write waits meanwhile), then leaves it to a later commit
    /// (`journal_size_limit`, once a checkpoint has copied everything).
    fn truncate_wal(&self) {
        let configured: rusqlite::Result<i64> =
            self.conn
                .query_row("PRAGMA busy_timeout", [], |row| row.get(0));
        let result = self.conn.busy_timeout(TRUNCATE_WAIT).and_then(|()| {
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    row.get::<_, i64>(0)
                })
        });
        match result {
            Ok(0) => {}
            Ok(_) => tracing::debug!("the WAL could not be truncated yet (a reader uses it)"),
            Err(e) => tracing::warn!(error = %e, "could not checkpoint the WAL"),
        }
        let restored = configured.and_then(|ms| {
            self.conn
                .busy_timeout(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
        });
        if let Err(e) = restored {
            tracing::warn!(error = %e, "could not restore the busy timeout after a checkpoint");
        }
    }

    /// Signs the batch's last entry (and, between jobs, one every [`SIGN_EVERY_ENTRIES`]), in its transaction, if
    /// the batch asked for it and this storage has a signer. A log without a cluster id yet
    /// (the very first writes of `coffer init`) is signed later: the server signs its head at
    /// start, once the cluster id exists.
    fn sign(&mut self, head: &Head) -> Result<()> {
        if !head.sign || head.seq == 0 {
            return Ok(());
        }
        let Some(signer) = self.signer.get() else {
            return Ok(());
        };
        let cluster = match self.cluster {
            Some(c) => c,
            None => match base(&self.conn)? {
                Some(base) => {
                    self.cluster = Some(base.cluster_id);
                    base.cluster_id
                }
                None => return Ok(()),
            },
        };
        let signature = signer.sign(&checkpoint_message(&cluster, head.seq, &head.hash));
        insert_signature(
            &self.conn,
            &FeedSignature {
                seq: head.seq,
                signature,
            },
        )
    }

    /// Begins the batch's transaction and reads the log head inside it.
    fn begin(&self) -> Result<Head> {
        // A transaction left open by a failed ROLLBACK would make BEGIN fail forever; close it.
        if !self.conn.is_autocommit() {
            exec(&self.conn, "ROLLBACK", "rollback leftover transaction")?;
        }
        // IMMEDIATE takes the write lock now rather than at the first write, so a concurrent
        // writer in another process makes us wait (busy_timeout) instead of failing mid-batch,
        // and nobody else can append between reading the head and committing.
        exec(&self.conn, "BEGIN IMMEDIATE", "begin")?;
        read_head(&self.conn).inspect_err(|_| self.rollback())
    }

    /// `Ok(true)`: the job succeeded and its work is part of the transaction. `Ok(false)`: it
    /// failed and was rolled back alone. `Err`: the whole transaction is gone or unusable.
    fn run_in_savepoint(&mut self, job: &mut dyn Job, head: &mut Head) -> Result<bool, Abandon> {
        exec(&self.conn, "SAVEPOINT job", "savepoint").map_err(Abandon)?;
        let before = *head;
        let ok = job.run(&mut WriteCx {
            conn: &self.conn,
            head,
            counters: &self.counters,
        });
        if ok {
            exec(&self.conn, "RELEASE job", "release savepoint").map_err(Abandon)?;
            return Ok(true);
        }
        *head = before;
        if self.conn.is_autocommit() {
            // Some errors (I/O, disk full, out of memory) make SQLite roll back the whole
            // transaction by itself: the earlier jobs' work is gone too.
            return Err(Abandon(StorageError::Unavailable(
                "the database rolled back the transaction after an error".into(),
            )));
        }
        exec(&self.conn, "ROLLBACK TO job", "roll back savepoint").map_err(Abandon)?;
        exec(&self.conn, "RELEASE job", "release savepoint").map_err(Abandon)?;
        Ok(false)
    }

    /// Ends the current transaction without keeping anything. The next batch reads the head
    /// afresh, so nothing else needs restoring.
    fn rollback(&self) {
        if !self.conn.is_autocommit()
            && let Err(e) = exec(&self.conn, "ROLLBACK", "rollback")
        {
            tracing::error!(error = %e, "storage writer failed to roll back");
        }
    }
}

fn insert_signature(conn: &Connection, s: &FeedSignature) -> Result<()> {
    let seq = i64::try_from(s.seq)
        .map_err(|_| StorageError::Invalid("a signature's seq is beyond storage's range"))?;
    conn.prepare_cached(
        "INSERT INTO change_signatures (seq, signature) VALUES (?1, ?2)
         ON CONFLICT (seq) DO UPDATE SET signature = excluded.signature",
    )
    .and_then(|mut stmt| stmt.execute(params![seq, s.signature.as_slice()]))
    .map(drop)
    .db("store signature")
}

fn exec(conn: &Connection, sql: &'static str, context: &'static str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(drop)
        .db(context)
}

fn fail_all(jobs: impl Iterator<Item = Box<dyn Job>>, error: &StorageError) {
    for job in jobs {
        job.answer(Some(copy_error(error)));
    }
}

/// One batch error goes to many callers; `StorageError` is not `Clone`, and the callers only
/// need to know the write did not happen (the detail is logged above).
fn copy_error(error: &StorageError) -> StorageError {
    match error {
        StorageError::Corrupted(m) => StorageError::Corrupted(m.clone()),
        other => StorageError::Unavailable(other.to_string()),
    }
}
