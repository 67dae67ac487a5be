//! The DEK gate across instances (`Storage::close_dek_gate`, `wait_dek_gate`): a node's
//! revocation on one instance is not starved by DEKs that writes on the others insert.
//!
//! The gate is the advisory lock [`DEK_GATE_LOCK`]:
//! - a revocation takes it *exclusive* (`pg_advisory_xact_lock`) in a transaction of its own on
//!   a pooled connection, which it keeps open from before its DEK listing until its commit has
//!   answered ([`Holder`]). Taking it waits for the writes that hold it shared (each until
//!   its COMMIT), so the listing sees their DEKs; it waits at most the longer of the gate wait
//!   and the write idle timeout (a write holding it shared lasts no longer), then fails
//!   `Unavailable`;
//! - a write that *inserts* a DEK takes it shared in its own transaction
//!   ([`enter_shared`], `pg_try_advisory_xact_lock_shared`, after the insert: a DEK already
//!   stored needs nothing), without waiting: if a revocation holds it or waits for it
//!   (PostgreSQL queues a new shared request behind a waiting exclusive one), the insert is
//!   refused with `Conflict` and rolled back with its write's savepoint, and the refusal is
//!   noted in [`GateState`]. Waiting there instead would hold the writer lock while the
//!   revocation waits for it to commit its rotation: a deadlock broken only by a timeout. The
//!   shared hold lasts until the batch commits;
//! - the refused write's process then waits in [`wait`] and seals again under the replication
//!   key the revocation installed. Only a process the gate refused waits (a plain lost race
//!   returns at once), never the one holding the gate, and one wait serves all of a
//!   process's callers: a task of its own (a caller that goes away does not cancel it) tries
//!   the lock shared (`pg_try_advisory_xact_lock_shared`, never a blocking wait on the
//!   server) every [`POLL`], taking a pooled connection for that statement only, until it
//!   gets it or the gate wait is over (`Unavailable`, a 503).
//!
//! A hold never outlives its holder: the lock is transaction-level, so it goes with the
//! session, which the database ends when the process dies (its socket closes) or when the
//! transaction sits idle past its `idle_in_transaction_session_timeout` (a frozen or
//! partitioned revocation). That idle limit is longer than a revocation's commit can take
//! (the writer lock's wait plus a statement's), and the revocation checks the hold right
//! before each commit ([`HeldGate::check`]), which also restarts the idle clock. A hold
//! dropped without its commit closes its connection rather than returning it to the pool,
//! which ends the transaction with it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use coffer_storage::{DekGateHold, HeldGate, Result, StorageError};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;

use crate::db::{DbResultExt, col};
use crate::write::WriteTx;
use crate::{GateSettings, PgStorage, Shared};

/// The advisory lock key of the DEK gate ("coffer" + 3 in ASCII).
pub(crate) const DEK_GATE_LOCK: i64 = 0x636f_6666_6572_0003;

/// How often a refused process tries the gate again while a revocation holds it.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// What a wait that ran out says.
const HELD_TOO_LONG: &str =
    "a node revocation held the DEK gate longer than the gate wait; the write can be retried";
/// What closing the gate says when it ran out.
const CLOSE_TOO_LONG: &str = "writes inserting DEKs (or another revocation) held the DEK gate \
                              longer than closing it may wait; the revocation can be retried";
/// What a revocation says when its hold was lost before its commit.
const HOLD_LOST: &str = "the DEK gate's hold was lost (its database session ended); the \
                         revocation can be retried";

/// A wait's outcome, once it has ended: `Err` carries the `Unavailable` message.
type WaitOutcome = Option<Result<(), String>>;

/// This process's view of the gate, shared by its handles and its writer.
#[derive(Debug, Default)]
pub(crate) struct GateState {
    /// Set when the gate refused one of this process's DEK inserts; cleared by a wait that
    /// then found the gate open.
    refused: AtomicBool,
    /// Holds of the gate this process has now (a revocation under way here).
    held_here: AtomicUsize,
    /// The wait under way, which every caller of `wait` in this process shares: `None` in
    /// the channel until it ends, then its outcome.
    waiting: Mutex<Option<watch::Receiver<WaitOutcome>>>,
}

/// The connection whose open transaction holds the gate exclusive. Dropped, it is detached
/// from the pool and closed, which ends the transaction and so releases the lock.
struct Holder {
    client: Option<deadpool_postgres::Object>,
    shared: Arc<Shared>,
}

impl Holder {
    /// A connection from the pool, in a transaction whose waits and idle time are bounded
    /// (`lock_ms` for a lock, `idle_ms` idle in the transaction).
    async fn begin(s: &PgStorage, lock_ms: i64, idle_ms: i64) -> Result<Holder> {
        let holder = Holder {
            client: Some(s.client().await?),
            shared: Arc::clone(&s.shared),
        };
        // Counted from here on (a revocation under way here): the drop uncounts it.
        holder.shared.gate.held_here.fetch_add(1, Ordering::AcqRel);
        // From here on, an error drops the holder, which closes the connection.
        let client = holder.client()?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .db("begin on the DEK gate")?;
        // The statement may take the lock wait and a little more. The server also checks,
        // while a statement waits, that the client is still there (PostgreSQL 14 and later),
        // so a dropped wait leaves no backend waiting.
        let statement = lock_ms.saturating_add(5_000).to_string();
        client
            .execute(
                "SELECT set_config('lock_timeout', $1, true),
                        set_config('statement_timeout', $2, true),
                        set_config('idle_in_transaction_session_timeout', $3, true)",
                &[&lock_ms.to_string(), &statement, &idle_ms.to_string()],
            )
            .await
            .db("begin on the DEK gate")?;
        client
            .batch_execute(
                "SELECT set_config('client_connection_check_interval', '1000', true)
                 WHERE current_setting('server_version_num')::int >= 140000",
            )
            .await
            .db("begin on the DEK gate")?;
        Ok(holder)
    }

    fn client(&self) -> Result<&deadpool_postgres::Object> {
        self.client
            .as_ref()
            .ok_or_else(|| StorageError::Unavailable(HOLD_LOST.into()))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(object) = self.client.take() {
            // Not back into the pool with its transaction open: the client is dropped, the
            // connection closes, the server rolls back and releases the lock.
            drop(deadpool_postgres::Object::take(object));
            self.shared.gate.held_here.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[async_trait]
impl HeldGate for Holder {
    async fn check(&self) -> Result<()> {
        // A statement on the holding session: it fails if the session ended, and restarts
        // its idle clock.
        match self.client()?.batch_execute("SELECT 1").await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "the DEK gate's hold was lost");
                Err(StorageError::Unavailable(HOLD_LOST.into()))
            }
        }
    }
}

/// Whether `e` is the lock wait running out (`lock_timeout` or `statement_timeout`).
fn timed_out(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::QUERY_CANCELED)
}

/// `Storage::close_dek_gate`: the exclusive hold, once every write holding the gate shared
/// has committed or rolled back.
pub(crate) async fn close(s: &PgStorage) -> Result<DekGateHold> {
    let holder = Holder::begin(s, s.gate.close_ms, s.gate.hold_idle_ms).await?;
    if let Err(e) = holder
        .client()?
        .execute("SELECT pg_advisory_xact_lock($1)", &[&DEK_GATE_LOCK])
        .await
    {
        if timed_out(&e) {
            return Err(StorageError::Unavailable(CLOSE_TOO_LONG.into()));
        }
        return Err(e).db("close the DEK gate");
    }
    Ok(DekGateHold::new(holder))
}

/// `Storage::wait_dek_gate`: see the module comment.
pub(crate) async fn wait(s: &PgStorage) -> Result<()> {
    let gate = &s.shared.gate;
    let mut outcome = {
        let mut slot = gate.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(under_way) => under_way.clone(),
            None => {
                if gate.held_here.load(Ordering::Acquire) > 0
                    || !gate.refused.load(Ordering::Acquire)
                {
                    return Ok(());
                }
                let (tx, rx) = watch::channel(None);
                *slot = Some(rx.clone());
                tokio::spawn(poll(s.pool.clone(), Arc::clone(&s.shared), s.gate, tx));
                rx
            }
        }
    };
    let ended = outcome
        .wait_for(Option::is_some)
        .await
        .map_err(|_| StorageError::Unavailable("the wait for the DEK gate was abandoned".into()))?
        .clone();
    match ended {
        Some(Err(message)) => Err(StorageError::Unavailable(message)),
        _ => Ok(()),
    }
}

/// The one wait of a process (see [`wait`]): tries the gate every [`POLL`] until it is open
/// or the gate wait is over, then answers every caller.
async fn poll(
    pool: deadpool_postgres::Pool,
    shared: Arc<Shared>,
    settings: GateSettings,
    answer: watch::Sender<WaitOutcome>,
) {
    let wait = Duration::from_millis(u64::try_from(settings.wait_ms).unwrap_or(0));
    let deadline = Instant::now() + wait;
    let gate = &shared.gate;
    let outcome = loop {
        // Cleared before each try: a refusal after this try started sets it again, so the
        // next `wait` does not miss it.
        gate.refused.store(false, Ordering::Release);
        match tokio::time::timeout_at(deadline, try_shared(&pool)).await {
            Ok(Ok(true)) => break Ok(()),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                gate.refused.store(true, Ordering::Release);
                break Err(format!("waiting for the DEK gate: {e}"));
            }
            Err(_) => {}
        }
        gate.refused.store(true, Ordering::Release);
        if Instant::now() + POLL > deadline {
            break Err(HELD_TOO_LONG.into());
        }
        tokio::time::sleep(POLL).await;
    };
    *gate.waiting.lock().unwrap_or_else(PoisonError::into_inner) = None;
    let _ = answer.send(Some(outcome));
}

/// Whether the gate is open: tries it shared in a statement of its own (the lock goes with
/// the statement's transaction), on a pooled connection given back at once.
async fn try_shared(pool: &deadpool_postgres::Pool) -> Result<bool> {
    let client = pool.get().await.db("take a database connection")?;
    let row = client
        .query_one(
            "SELECT pg_try_advisory_xact_lock_shared($1)",
            &[&DEK_GATE_LOCK],
        )
        .await
        .db("try the DEK gate")?;
    col::<bool>(&row, 0, "pg_try_advisory_xact_lock_shared")
}

/// In a write that has just inserted a DEK: holds the gate shared until the write's batch
/// commits, or refuses the insert (`Conflict`) if a revocation holds it or waits for it.
pub(crate) async fn enter_shared(w: &WriteTx<'_>) -> Result<()> {
    let stmt = w
        .tx()
        .prepare_cached("SELECT pg_try_advisory_xact_lock_shared($1)")
        .await
        .db("enter the DEK gate")?;
    let row = w
        .tx()
        .query_one(&stmt, &[&DEK_GATE_LOCK])
        .await
        .db("enter the DEK gate")?;
    if col::<bool>(&row, 0, "pg_try_advisory_xact_lock_shared")? {
        Ok(())
    } else {
        // Before the write is answered, so that its `wait_dek_gate` waits.
        w.shared().gate.refused.store(true, Ordering::Release);
        Err(StorageError::Conflict)
    }
}
