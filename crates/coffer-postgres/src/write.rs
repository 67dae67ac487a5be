//! The write primitive: every mutation runs in a transaction serialised across instances.
//!
//! [`PgStorage::write`] queues the operation for this handle's writer task. The task takes every
//! write already queued (up to 256) into one transaction (group commit, as SQLite's writer does),
//! which first takes `pg_advisory_xact_lock(WRITER_LOCK)` (the key in `tx.rs`; held until COMMIT or
//! ROLLBACK, by one batch of all instances at a time) and reads the change-log head from its row.
//! Each write then runs in a SAVEPOINT of its own and gets a [`WriteTx`]: the transaction for its
//! queries, [`WriteTx::append`] for change entries (hash-chained exactly like SQLite's, with
//! `coffer_storage::ChangeRecord::chain_hash`) and [`WriteTx::audit`] for audit entries; once it
//! succeeded, its carried audit entries are appended in the same savepoint. A write that fails (or
//! whose audit entries fail) is rolled back to its savepoint alone and answered at once: nothing of
//! it remains, neither rows nor entries nor audit. After the last write the head row moves, the
//! head is signed when due (as SQLite's writer does: the batch's last entry, and one every 256
//! entries between its writes, once the log has a cluster id and a signer is set), `NOTIFY
//! coffer_head` is queued and the transaction commits; then this handle's `committed_head` and
//! `subscribe_head` move, and only then are the writes answered. If the batch cannot commit, every
//! write waiting for it gets the error. Writes run in the order they were queued.
//!
//! Round trips are what a batch costs (the writer lock is held throughout, so they bound
//! every instance's write rate): the batch's statements are prepared once per connection
//! (`prepare_cached`); its begin takes three after BEGIN (the limits, the lock, then the schema
//! version and the head in one statement); one job's savepoint is released together with the
//! next one's made (and a rolled-back job's is reused); each account's audit head is read once
//! per batch ([`WriteTx`] keeps what the batch appended) and a job's audit entries go in one
//! multi-row statement, as do its change-log entries ([`WriteTx::stage`], [`insert_changes`]);
//! a write's independent statements are pipelined (tokio-postgres sends concurrently polled
//! statements of one connection back to back), and so are the head's move, its signature and
//! the notification before COMMIT.
//!
//! The transaction sets `idle_in_transaction_session_timeout` for itself: a process that
//! freezes mid-write (stopped, swapped out, wedged) has its session ended by the database
//! after that long, which releases the lock for the other instances; its writes fail.
//!
//! Because the lock is taken first and every statement after it runs in READ COMMITTED, each
//! statement sees every write committed before the lock was granted: checks made inside a
//! write (quotas, names, compare-and-set) cannot be overshot by another instance.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_util::FutureExt as _;
use tokio::sync::{mpsc, oneshot};

use coffer_storage::{
    AuditEntry, Change, ChangeRecord, FeedSignature, Result, SIGN_EVERY_ENTRIES, StorageError,
    checkpoint_message,
};
use coffer_types::Timestamp;
use deadpool_postgres::GenericClient;

use crate::PgStorage;
use crate::db::{DbResultExt, bytes_col, col, u64_col};
use crate::tx::{TxFuture, WRITER_LOCK};

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

/// Change-log entries taken by [`WriteTx::stage`], column by column, not yet written.
/// Dropping them unwritten leaves the head past entries that do not exist: the batch's COMMIT
/// then refuses to move the head row (`Writer::finish`) and the whole batch fails.
#[derive(Debug, Default)]
#[must_use = "staged change-log entries must be written with insert_changes in the same write"]
pub(crate) struct StagedChanges {
    seqs: Vec<i64>,
    ats: Vec<i64>,
    hashes: Vec<Vec<u8>>,
    payloads: Vec<Vec<u8>>,
}

/// Writes staged entries, in one statement whatever their number.
pub(crate) async fn insert_changes(
    tx: &deadpool_postgres::Transaction<'_>,
    staged: &StagedChanges,
) -> Result<()> {
    if staged.seqs.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO changes (seq, at, hash, payload)
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::bytea[], $4::bytea[])",
        )
        .await
        .db("append change")?;
    tx.execute(
        &stmt,
        &[&staged.seqs, &staged.ats, &staged.hashes, &staged.payloads],
    )
    .await
    .db("append change")?;
    Ok(())
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
    /// Audit entries appended so far (taken back with a rolled-back job's work).
    audited: u64,
    /// Audit entries of jobs whose append the database refused (lost with their job).
    lost_audit: u64,
    /// The cluster id read while signing, cached in `Shared` once the batch committed.
    cluster_seen: Option<[u8; 16]>,
    /// What the storage's handles share with the writer (the DEK gate's refusals).
    shared: std::sync::Arc<crate::Shared>,
    /// Each account's audit chain head as this transaction left it (read once per account
    /// and batch, under the writer lock; restored with a rolled-back job's work).
    audit_heads: crate::audit::Heads,
}

impl<'c> WriteTx<'c> {
    /// The transaction, for the operation's own statements (`prepare_cached`, `query`, ...).
    pub(crate) fn tx(&self) -> &deadpool_postgres::Transaction<'c> {
        &self.tx
    }

    /// What the storage's handles share with the writer.
    pub(crate) fn shared(&self) -> &crate::Shared {
        &self.shared
    }

    /// Appends `change` to the log as the next entry.
    pub(crate) async fn append(&mut self, change: &Change) -> Result<()> {
        let staged = self.stage(std::slice::from_ref(change))?;
        insert_changes(&self.tx, &staged).await
    }

    /// Takes the next entries of the log for `changes` (their seq, time and chained hash)
    /// without writing them: the caller writes them with [`insert_changes`] in this write,
    /// possibly pipelined with its other statements. If that insert fails, the write fails and
    /// its savepoint (head included) is rolled back. If the caller never writes them, the head
    /// row refuses to move onto an entry the log does not hold, and the batch fails whole.
    pub(crate) fn stage(&mut self, changes: &[Change]) -> Result<StagedChanges> {
        let mut staged = StagedChanges::default();
        for change in changes {
            let payload = serde_json::to_vec(change)
                .map_err(|e| StorageError::Unavailable(format!("encoding a change: {e}")))?;
            let seq = self.head.seq + 1;
            let hash = ChangeRecord::chain_hash(&self.head.hash, seq, &payload);
            let at = Timestamp::now().unix_micros().max(self.head.at);
            let seq_sql = i64::try_from(seq)
                .map_err(|_| StorageError::Unavailable("change log sequence exhausted".into()))?;
            staged.seqs.push(seq_sql);
            staged.ats.push(at);
            staged.hashes.push(hash.to_vec());
            staged.payloads.push(payload);
            self.head = Head { seq, hash, at };
        }
        Ok(staged)
    }

    /// Appends audit entries, in order, each to its own account's chain (see `audit.rs`).
    /// Entries the database refuses are counted lost (`audit_failures`), whether a write's
    /// operation appends them or they are the write's carried entries.
    pub(crate) async fn audit(&mut self, entries: &[AuditEntry]) -> Result<()> {
        if let Err(e) = crate::audit::append(&self.tx, &mut self.audit_heads, entries).await {
            // Its savepoint is rolled back: every entry of the list is lost.
            self.lost_audit += entries.len() as u64;
            return Err(e);
        }
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

/// Write jobs waiting for the writer at most; `submit` waits for a free slot beyond.
const QUEUE_DEPTH: usize = 1024;

/// How long a batch waits for the writer lock, in milliseconds.
pub(crate) const WRITER_LOCK_WAIT_MS: u64 = 60_000;

/// `statement_timeout` of every statement of a write after the writer lock, in milliseconds.
pub(crate) const WRITE_STATEMENT_TIMEOUT_MS: u64 = 30_000;

/// `lock_timeout` of a write after the writer lock (row and table locks), in milliseconds.
const WRITE_LOCK_TIMEOUT_MS: u64 = 5_000;

/// Jobs committed together in one transaction at most.
const MAX_BATCH: usize = 256;

/// A queued write: run once inside its savepoint, then answered exactly once.
trait Job: Send {
    /// Runs the operation and its audit entries; `true` when both succeeded. Keeps the
    /// output for [`Job::answer`].
    fn run<'a, 'c>(
        &'a mut self,
        w: &'a mut WriteTx<'c>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
    /// Delivers the result. `batch_error` is set when the job's work did not commit (or it
    /// never ran); a job that failed on its own reports its own error regardless.
    fn answer(self: Box<Self>, batch_error: Option<StorageError>);
}

struct TypedJob<T, F> {
    op: Option<F>,
    audit: Vec<AuditEntry>,
    output: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: for<'a, 'c> FnOnce(&'a mut WriteTx<'c>) -> TxFuture<'a, T> + Send + 'static,
{
    fn run<'a, 'c>(
        &'a mut self,
        w: &'a mut WriteTx<'c>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            let Some(op) = self.op.take() else {
                return false;
            };
            let audit = &self.audit;
            // A panicking operation is a bug, but it must not take the writer (and every later
            // write) down: its savepoint is rolled back like any failure.
            let run = AssertUnwindSafe(async {
                let out = op(&mut *w).await?;
                w.audit(audit).await?;
                Ok(out)
            });
            let output = run.catch_unwind().await.unwrap_or_else(|_| {
                Err(StorageError::Unavailable(
                    "a write operation panicked".into(),
                ))
            });
            let ok = output.is_ok();
            self.output = Some(output);
            ok
        })
    }

    fn answer(self: Box<Self>, batch_error: Option<StorageError>) {
        let TypedJob { output, reply, .. } = *self;
        let result = match (output, batch_error) {
            (Some(Err(own)), _) => Err(own),
            (_, Some(batch)) => Err(batch),
            (Some(Ok(value)), None) => Ok(value),
            (None, None) => Err(StorageError::Unavailable("write job was not run".into())),
        };
        // The caller may have stopped waiting; nothing to do then.
        let _ = reply.send(result);
    }
}

/// The async side of the writer: submits jobs to its task and waits for their answers.
pub(crate) struct WriterHandle {
    /// `None` once closed. Each submission clones the sender and drops the clone as soon as its
    /// job is queued.
    jobs: std::sync::Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    /// Taken by the first `close`, which awaits it; an async mutex so that a concurrent
    /// `close` waits for the same end.
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// A read-only storage's handle (`PgOptions::read_only`): no task, every write refused.
    read_only: bool,
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle").finish_non_exhaustive()
    }
}

impl WriterHandle {
    /// Starts the writer's task.
    pub(crate) fn start(writer: Writer) -> WriterHandle {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        WriterHandle {
            jobs: std::sync::Mutex::new(Some(tx)),
            task: tokio::sync::Mutex::new(Some(tokio::spawn(writer.run(rx)))),
            read_only: false,
        }
    }

    /// A read-only storage's handle: no writer task, so nothing takes the writer's lock;
    /// every write is refused at once.
    pub(crate) fn read_only() -> WriterHandle {
        WriterHandle {
            jobs: std::sync::Mutex::new(None),
            task: tokio::sync::Mutex::new(None),
            read_only: true,
        }
    }

    /// Queues `op` (with `audit` appended after it) and returns the receiver of its answer.
    async fn submit<T, F>(
        &self,
        audit: &[AuditEntry],
        op: F,
    ) -> Result<oneshot::Receiver<Result<T>>>
    where
        T: Send + 'static,
        F: for<'a, 'c> FnOnce(&'a mut WriteTx<'c>) -> TxFuture<'a, T> + Send + 'static,
    {
        if self.read_only {
            return Err(StorageError::Unavailable(
                "the database is open read-only (coffer verify): writes are refused".into(),
            ));
        }
        // Refused before anything is queued; nothing is counted as lost.
        crate::audit::check(audit)?;
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(TypedJob {
            op: Some(op),
            audit: audit.to_vec(),
            output: None,
            reply,
        });
        let stopped = || StorageError::Unavailable("the storage is shut down".into());
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(stopped)?;
        jobs.send(job).await.map_err(|_| stopped())?;
        Ok(answer)
    }

    /// How many jobs are queued and not yet taken by the writer (test support).
    #[cfg(feature = "test-support")]
    pub(crate) fn queued(&self) -> usize {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map_or(0, |jobs| jobs.max_capacity() - jobs.capacity())
    }

    /// Stops accepting jobs, lets the writer finish the queued ones, and waits for its task.
    pub(crate) async fn close(&self) {
        let mut task = self.task.lock().await;
        drop(
            self.jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        if let Some(task) = task.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the storage writer's task failed");
        }
    }
}

fn stopped_before_answering(_: oneshot::error::RecvError) -> StorageError {
    StorageError::Unavailable("the writer stopped before answering".into())
}

impl PgStorage {
    /// Runs `op` as one write (see the module doc), then appends `audit` after it, in its
    /// savepoint: if either fails, nothing of it is written. `op` gets the transaction by
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
        T: Send + 'static,
        F: for<'a, 'c> FnOnce(&'a mut WriteTx<'c>) -> TxFuture<'a, T> + Send + 'static,
    {
        self.writer
            .submit(audit, op)
            .await?
            .await
            .map_err(stopped_before_answering)?
    }

    /// [`PgStorage::write`] in two steps: returns once the write is queued (writes run in the
    /// order they were queued), with the future of its outcome; the write is applied whether
    /// or not that future is awaited.
    pub(crate) async fn queue_write<T, F>(
        &self,
        audit: &[AuditEntry],
        op: F,
    ) -> Result<coffer_storage::Pending<T>>
    where
        T: Send + 'static,
        F: for<'a, 'c> FnOnce(&'a mut WriteTx<'c>) -> TxFuture<'a, T> + Send + 'static,
    {
        let answer = self.writer.submit(audit, op).await?;
        Ok(Box::pin(async move {
            answer.await.map_err(stopped_before_answering)?
        }))
    }
}

/// The writer's task: takes every job already queued (up to [`MAX_BATCH`]) into one
/// transaction, each job in a savepoint of its own.
pub(crate) struct Writer {
    /// The writer's own connection (a pool of one, so that it is replaced when it breaks).
    pub(crate) pool: deadpool_postgres::Pool,
    /// The read pool: checks a lost COMMIT on a fresh connection.
    pub(crate) read_pool: deadpool_postgres::Pool,
    pub(crate) shared: std::sync::Arc<crate::Shared>,
    /// `PgOptions::write_idle_timeout`, in milliseconds.
    pub(crate) idle_timeout_ms: i64,
}

/// Where the batch's savepoint stands before the next job.
#[derive(Debug, Clone, Copy)]
enum Savepoint {
    /// None made yet.
    None,
    /// The last job succeeded inside it: released when the next one begins (or by COMMIT).
    Kept,
    /// The last job was rolled back to it: it is still there, holding nothing of that job.
    Empty,
}

/// One batch error goes to many callers; `StorageError` is not `Clone`, and they only need to
/// know the write did not happen (the detail is logged).
fn copy_error(error: &StorageError) -> StorageError {
    match error {
        StorageError::Corrupted(m) => StorageError::Corrupted(m.clone()),
        other => StorageError::Unavailable(other.to_string()),
    }
}

impl Writer {
    async fn run(self, mut jobs: mpsc::Receiver<Box<dyn Job>>) {
        let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
        // Ends when every sender is gone and the queue is drained.
        while let Some(first) = jobs.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let jobs = std::mem::take(&mut batch);
            self.run_batch(jobs).await;
        }
    }

    /// Begins the batch's transaction: the idle timeout for this transaction only (a stuck
    /// process must not hold the writer lock for ever), the writer lock, the head.
    async fn begin<'c>(&self, client: &'c mut deadpool_postgres::Object) -> Result<WriteTx<'c>> {
        // READ COMMITTED whatever the database's default: each statement must see every
        // commit before the writer lock was granted (a REPEATABLE READ snapshot would predate
        // it).
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
            .start()
            .await
            .db("begin a write")?;
        // Waiting for the writer lock is bounded (another instance's batch, or a frozen one
        // until its idle timeout ends it); every statement after it is bounded more tightly,
        // and so is waiting for a row or table lock (a migration, an administrator).
        // Each statement prepared once per connection (`prepare_cached`): a batch's begin is
        // three round trips after BEGIN, not six.
        let limits = tx
            .prepare_cached(
                "SELECT set_config('idle_in_transaction_session_timeout', $1, true),
                        set_config('statement_timeout', $2, true)",
            )
            .await
            .db("begin a write")?;
        tx.execute(
            &limits,
            &[
                &self.idle_timeout_ms.to_string(),
                &WRITER_LOCK_WAIT_MS.to_string(),
            ],
        )
        .await
        .db("begin a write")?;
        let lock = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1)")
            .await
            .db("take the writer lock")?;
        tx.execute(&lock, &[&WRITER_LOCK])
            .await
            .db("take the writer lock")?;
        // Under the lock, the schema version: once a newer build migrated the database (a
        // rolling upgrade), this one must stop writing (migrations take the writer lock too);
        // and the change log's head, in the same statement.
        let after_lock = tx
            .prepare_cached(
                "SELECT set_config('statement_timeout', $1, true),
                        set_config('lock_timeout', $2, true),
                        (SELECT version FROM coffer_schema_version WHERE id = 1),
                        h.seq, h.hash, h.at
                 FROM (SELECT 1) AS one LEFT JOIN change_head AS h ON h.id = 1",
            )
            .await
            .db("begin a write")?;
        let row = tx
            .query_one(
                &after_lock,
                &[
                    &WRITE_STATEMENT_TIMEOUT_MS.to_string(),
                    &WRITE_LOCK_TIMEOUT_MS.to_string(),
                ],
            )
            .await
            .db("begin a write")?;
        let version: Option<i64> = col(&row, 2, "coffer_schema_version.version")?;
        if let Some(version) = version
            && version > crate::SCHEMA_VERSION
        {
            return Err(StorageError::Unavailable(format!(
                "the database's schema is version {version}, newer than this build's version {}: \
                 a newer Coffer migrated it; this instance no longer writes (upgrade it)",
                crate::SCHEMA_VERSION
            )));
        }
        if col::<Option<i64>>(&row, 3, "change_head.seq")?.is_none() {
            return Err(StorageError::Corrupted(
                "change_head: the head row is missing".into(),
            ));
        }
        let head = Head {
            seq: u64_col(&row, 3, "change_head.seq")?,
            hash: bytes_col(&row, 4, "change_head.hash")?,
            at: col(&row, 5, "change_head.at")?,
        };
        Ok(WriteTx {
            tx,
            head,
            start: head,
            sign: false,
            audited: 0,
            lost_audit: 0,
            cluster_seen: None,
            shared: std::sync::Arc::clone(&self.shared),
            audit_heads: crate::audit::Heads::default(),
        })
    }

    /// Runs and answers every job of `batch`.
    async fn run_batch(&self, batch: Vec<Box<dyn Job>>) {
        let jobs = batch.len();
        let stats = &self.shared.stats;
        stats.jobs.fetch_add(jobs as u64, Ordering::Relaxed);
        let mut client = match self.pool.get().await.db("take a connection for a write") {
            Ok(c) => c,
            Err(e) => return self.fail(batch, Vec::new(), 0, jobs, e),
        };
        let mut w = match self.begin(&mut client).await {
            Ok(w) => w,
            Err(e) => return self.fail(batch, Vec::new(), 0, jobs, e),
        };
        let mut waiting: Vec<Box<dyn Job>> = Vec::with_capacity(jobs);
        let mut queue = batch.into_iter();
        let mut signed_through = w.head.seq;
        let mut savepoint = Savepoint::None;
        while let Some(mut job) = queue.next() {
            // One round trip at most: the last job's savepoint released and this one's made
            // together; after a rollback the savepoint is still there, as this job needs it.
            let open = match savepoint {
                Savepoint::None => Some("SAVEPOINT job"),
                Savepoint::Kept => Some("RELEASE SAVEPOINT job; SAVEPOINT job"),
                Savepoint::Empty => None,
            };
            if let Some(open) = open
                && let Err(e) = w.tx.batch_execute(open).await.db("savepoint")
            {
                waiting.push(job);
                return self.abort(w, queue.collect(), waiting, jobs, e).await;
            }
            let before = (w.head, w.sign, w.audited, w.audit_heads.clone());
            if job.run(&mut w).await {
                savepoint = Savepoint::Kept;
                // A checkpoint between jobs once enough entries went by (kept in this job's
                // savepoint, which only a COMMIT or the next job's release follows).
                let mut step = Ok(());
                if w.head.seq.saturating_sub(signed_through) >= SIGN_EVERY_ENTRIES {
                    step = self.sign(&mut w).await;
                    signed_through = w.head.seq;
                }
                waiting.push(job);
                if let Err(e) = step {
                    return self.abort(w, queue.collect(), waiting, jobs, e).await;
                }
            } else {
                (w.head, w.sign, w.audited, w.audit_heads) = before;
                savepoint = Savepoint::Empty;
                // Rolled back alone; its own error does not depend on the COMMIT.
                let undone =
                    w.tx.batch_execute("ROLLBACK TO SAVEPOINT job")
                        .await
                        .db("roll back savepoint");
                job.answer(None);
                if let Err(e) = undone {
                    return self.abort(w, queue.collect(), waiting, jobs, e).await;
                }
            }
        }
        stats
            .audit_failures
            .fetch_add(w.lost_audit, Ordering::Relaxed);
        w.lost_audit = 0;
        if waiting.is_empty() {
            // Every job rolled back to its savepoint: nothing to make durable.
            let _ = w.tx.rollback().await;
            return;
        }
        let appended = w.appended();
        if let Err(e) = self.finish(&mut w, appended).await {
            return self.abort(w, Vec::new(), waiting, jobs, e).await;
        }
        let audited = w.audited;
        let new_head = w.head;
        let committing = Instant::now();
        if let Err(e) = w.tx.commit().await {
            let error = crate::db::db_error("commit a write", &e);
            // The server answered with an error: the transaction is rolled back.
            if e.as_db_error().is_some() {
                return self.fail(Vec::new(), waiting, audited, jobs, error);
            }
            // The connection failed during COMMIT: it may have committed. Look.
            let outcome = if appended {
                resolve_commit(&self.read_pool, new_head).await
            } else {
                // Nothing in the log tells; a batch that appended nothing is not recognisable.
                CommitOutcome::Unknown("the batch appended no change-log entry".into())
            };
            match outcome {
                CommitOutcome::Committed => {
                    tracing::warn!(
                        error = %error,
                        "the connection failed during COMMIT, but the write batch committed"
                    );
                }
                CommitOutcome::NotCommitted => {
                    return self.fail(Vec::new(), waiting, audited, jobs, error);
                }
                CommitOutcome::Unknown(why) => {
                    tracing::error!(
                        error = %error,
                        why = %why,
                        "a storage write batch's outcome is unknown"
                    );
                    self.shared
                        .stats
                        .audit_failures
                        .fetch_add(audited, Ordering::Relaxed);
                    if let Some(observer) = self.shared.observer.get() {
                        observer.failed(jobs);
                    }
                    let e = StorageError::Unavailable(format!(
                        "outcome unknown: the connection failed during COMMIT ({error}) and \
                         whether the write committed could not be checked ({why}); read \
                         before retrying"
                    ));
                    for job in waiting {
                        job.answer(Some(copy_error(&e)));
                    }
                    return;
                }
            }
        }
        let took = committing.elapsed();
        if let Some(id) = w.cluster_seen {
            self.shared.cluster.get_or_init(|| id);
        }
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats.audit_entries.fetch_add(audited, Ordering::Relaxed);
        if appended {
            // Before any job is answered.
            self.shared.advance(new_head.seq);
        }
        let committed = waiting.len();
        for job in waiting {
            job.answer(None);
        }
        if let Some(observer) = self.shared.observer.get() {
            observer.committed(committed, took);
        }
    }

    /// Ends the batch early: counts the audit entries its jobs lost, rolls the transaction
    /// back and fails every job in it ([`Writer::fail`]).
    async fn abort(
        &self,
        w: WriteTx<'_>,
        unrun: Vec<Box<dyn Job>>,
        waiting: Vec<Box<dyn Job>>,
        jobs: usize,
        e: StorageError,
    ) {
        self.shared
            .stats
            .audit_failures
            .fetch_add(w.lost_audit, Ordering::Relaxed);
        let audited = w.audited;
        let _ = w.tx.rollback().await;
        self.fail(unrun, waiting, audited, jobs, e);
    }

    /// Answers `waiting` (run, not committed) and `unrun` with `e`, counts the audit entries
    /// lost, and tells the observer.
    fn fail(
        &self,
        unrun: Vec<Box<dyn Job>>,
        waiting: Vec<Box<dyn Job>>,
        audited: u64,
        jobs: usize,
        e: StorageError,
    ) {
        tracing::error!(error = %e, "a storage write batch was not committed");
        self.shared
            .stats
            .audit_failures
            .fetch_add(audited, Ordering::Relaxed);
        if let Some(observer) = self.shared.observer.get() {
            observer.failed(jobs);
        }
        let e = StorageError::Unavailable(format!("not committed: {e}"));
        for job in waiting.into_iter().chain(unrun) {
            job.answer(Some(copy_error(&e)));
        }
    }

    /// Before COMMIT: moves the head row, signs the head when due, queues the notification;
    /// the three statements pipelined (one round trip).
    ///
    /// The head row moves only onto an entry that exists with the head's seq and hash (or onto
    /// the log's base, when a job of the batch compacted through its own last entry), and
    /// only if every entry the batch appended after the base is there: an entry staged and
    /// never written ([`WriteTx::stage`] without [`insert_changes`]), last or followed by
    /// other jobs' entries, would otherwise commit a gap that followers stop at and the next
    /// batch chains over. Checked in the same statement (an index probe and a range count of
    /// the batch's own entries); the batch is then refused whole.
    async fn finish(&self, w: &mut WriteTx<'_>, appended: bool) -> Result<()> {
        let signature = if (appended || w.sign) && w.head.seq > 0 {
            self.signature(w).await?
        } else {
            None
        };
        let seq = i64::try_from(w.head.seq)
            .map_err(|_| StorageError::Unavailable("change log sequence exhausted".into()))?;
        let tx = &w.tx;
        let (head_stmt, notify_stmt) = if appended {
            let head = tx
                .prepare_cached(
                    "UPDATE change_head SET seq = $1, hash = $2, at = $3
                     WHERE id = 1
                       AND (EXISTS (SELECT 1 FROM changes WHERE seq = $1 AND hash = $2)
                            OR EXISTS (SELECT 1 FROM replication
                                       WHERE id = 1 AND base_seq = $1 AND base_hash = $2))
                       AND (SELECT count(*) FROM changes WHERE seq > $4 AND seq <= $1)
                           = $1 - GREATEST($4, (SELECT base_seq FROM replication WHERE id = 1))",
                )
                .await
                .db("move change head")?;
            let notify = tx
                .prepare_cached("SELECT pg_notify($1, $2)")
                .await
                .db("notify head")?;
            (Some(head), Some(notify))
        } else {
            (None, None)
        };
        let start = i64::try_from(w.start.seq)
            .map_err(|_| StorageError::Unavailable("change log sequence exhausted".into()))?;
        let hash = w.head.hash;
        let at = w.head.at;
        let payload = w.head.seq.to_string();
        let move_head = async {
            if let Some(stmt) = &head_stmt {
                let moved = tx
                    .execute(stmt, &[&seq, &hash.as_slice(), &at, &start])
                    .await
                    .db("move change head")?;
                if moved != 1 {
                    return Err(StorageError::Corrupted(format!(
                        "the change log's head would move to seq {seq}, which the log does \
                         not hold (an entry taken and never written): the batch is refused"
                    )));
                }
            }
            Ok(())
        };
        let sign = async {
            match &signature {
                Some(s) => insert_signature(tx, s).await,
                None => Ok(()),
            }
        };
        // Delivered to every listening instance at COMMIT, and only if it commits.
        let notify = async {
            if let Some(stmt) = &notify_stmt {
                tx.execute(stmt, &[&HEAD_CHANNEL, &payload])
                    .await
                    .db("notify head")?;
            }
            Ok(())
        };
        futures_util::future::try_join3(move_head, sign, notify).await?;
        Ok(())
    }

    /// Signs the head between jobs (with the signer set, once the log has a cluster id), in
    /// the write's transaction: signed or not written.
    async fn sign(&self, w: &mut WriteTx<'_>) -> Result<()> {
        match self.signature(w).await? {
            Some(s) => insert_signature(&w.tx, &s).await,
            None => Ok(()),
        }
    }

    /// The head's signature, if a signer is set and the log has a cluster id.
    async fn signature(&self, w: &mut WriteTx<'_>) -> Result<Option<FeedSignature>> {
        let Some(signer) = self.shared.signer.get() else {
            return Ok(None);
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
                    return Ok(None);
                };
                let id: [u8; 16] = bytes_col(&row, 0, "replication.cluster_id")?;
                // Cached only once the batch commits: the row may be this batch's own.
                w.cluster_seen = Some(id);
                id
            }
        };
        let signature = signer.sign(&checkpoint_message(&cluster, w.head.seq, &w.head.hash));
        Ok(Some(FeedSignature {
            seq: w.head.seq,
            signature,
        }))
    }
}

/// Whether a batch whose COMMIT lost its connection committed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CommitOutcome {
    Committed,
    NotCommitted,
    /// Could not be told (the reason).
    Unknown(String),
}

/// How long [`resolve_commit`] waits for the writer lock: the lost session still holds it
/// until the server notices it is gone (or its idle timeout ends it).
const RESOLVE_LOCK_TIMEOUT: &str = "5s";

/// Tells whether the batch that moved the head to `head` committed, on a fresh connection:
/// under the writer lock (so the lost session's COMMIT has finished or was abandoned), its last
/// entry is in the log with its hash, or not.
pub(crate) async fn resolve_commit(pool: &deadpool_postgres::Pool, head: Head) -> CommitOutcome {
    let check = async {
        let mut client = pool.get().await.db("take a connection to check a commit")?;
        let tx = client.transaction().await.db("check a commit")?;
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '{RESOLVE_LOCK_TIMEOUT}'; SET LOCAL statement_timeout = '10s'"
        ))
        .await
        .db("check a commit")?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITER_LOCK])
            .await
            .db("take the writer lock to check a commit")?;
        let seq = i64::try_from(head.seq)
            .map_err(|_| StorageError::Unavailable("change log sequence exhausted".into()))?;
        let row = tx
            .query_opt("SELECT hash FROM changes WHERE seq = $1", &[&seq])
            .await
            .db("check a commit")?;
        let outcome = match row {
            Some(row) => {
                let hash: [u8; 32] = bytes_col(&row, 0, "changes.hash")?;
                if hash == head.hash {
                    CommitOutcome::Committed
                } else {
                    CommitOutcome::NotCommitted
                }
            }
            None => {
                let now = read_head(&tx).await?;
                if now.seq < head.seq {
                    CommitOutcome::NotCommitted
                } else {
                    // The entry is gone though the log passed it: compacted meanwhile.
                    CommitOutcome::Unknown("the entry was compacted".into())
                }
            }
        };
        let _ = tx.rollback().await;
        Ok::<_, StorageError>(outcome)
    };
    check
        .await
        .unwrap_or_else(|e| CommitOutcome::Unknown(e.to_string()))
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

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;
