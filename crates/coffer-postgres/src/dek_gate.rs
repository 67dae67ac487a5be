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
//! transaction sits idle past its `idle_in_transaction_session_timeout`, the hold idle limit
//! (a few seconds: [`HOLD_IDLE`]). The holder proves it is alive: a task of its own owns the
//! holding connection and runs a statement on it every quarter of that limit (the keepalive),
//! which restarts the idle clock; a frozen process (stopped, swapped out, wedged) stops its
//! keepalive, and the database ends the session after the limit. The revocation checks the hold
//! right before each commit ([`HeldGate::check`], bounded by [`CHECK_TIMEOUT`] on the client
//! side too). Dropping the hold ends the task, which closes the connection rather than
//! returning it to the pool, which ends the transaction with it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use coffer_storage::{DekGateHold, HeldGate, Result, StorageError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_postgres::error::SqlState;

use crate::db::{DbResultExt, col};
use crate::write::WriteTx;
use crate::{PgStorage, Shared};

/// The advisory lock key of the DEK gate ("coffer" + 3 in ASCII).
pub(crate) const DEK_GATE_LOCK: i64 = 0x636f_6666_6572_0003;

/// How often a refused process tries the gate again while a revocation holds it.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// How long the holding session may sit idle before the database ends it (and so releases the
/// gate): the keepalive renews it every quarter of this.
pub(crate) const HOLD_IDLE: Duration = Duration::from_secs(20);

/// How long [`HeldGate::check`] waits for the holding session's answer.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a hold lasts, alive or not: a revocation takes seconds, so one past this is stuck
/// (on a KEK call that does not answer, say); its hold is let go, its commit then refused (the
/// hold is lost), and other instances' writes stop waiting on it.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(120);

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
    /// Until when the wait under way polls: the latest deadline of its callers (each caller
    /// waits for its own gate wait from when it came, and moves this on).
    poll_until: Mutex<Option<Instant>>,
}

/// The connection whose open transaction is to hold the gate exclusive, until [`close`] has
/// the lock and hands it to a [`Holder`]. Dropped, it is detached from the pool and closed,
/// which ends the transaction and so releases the lock.
struct Pending {
    client: Option<deadpool_postgres::Object>,
    shared: Arc<Shared>,
}

impl Pending {
    /// A connection from the pool, in a transaction whose waits and idle time are bounded
    /// (`lock_ms` for a lock, `idle_ms` idle in the transaction).
    async fn begin(s: &PgStorage, lock_ms: i64, idle_ms: i64) -> Result<Pending> {
        let pending = Pending {
            client: Some(s.client().await?),
            shared: Arc::clone(&s.shared),
        };
        // Counted from here on (a revocation under way here): the drop uncounts it.
        pending.shared.gate.held_here.fetch_add(1, Ordering::AcqRel);
        // From here on, an error drops it, which closes the connection.
        let client = pending.client()?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .db("begin on the DEK gate")?;
        // The statement may take the lock wait and a little more; PostgreSQL takes no
        // timeout beyond i32::MAX ms. The server also checks, while a statement waits, that
        // the client is still there (PostgreSQL 14 and later), so a dropped wait leaves no
        // backend waiting.
        let [lock, statement, idle] =
            [lock_ms, lock_ms.saturating_add(5_000), idle_ms].map(timeout_setting);
        client
            .execute(
                "SELECT set_config('lock_timeout', $1, true),
                        set_config('statement_timeout', $2, true),
                        set_config('idle_in_transaction_session_timeout', $3, true)",
                &[&lock, &statement, &idle],
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
        Ok(pending)
    }

    fn client(&self) -> Result<&deadpool_postgres::Object> {
        self.client
            .as_ref()
            .ok_or_else(|| StorageError::Unavailable(HOLD_LOST.into()))
    }

    /// The hold, once the lock is taken: its connection handed to the keepalive task.
    fn hold(mut self, idle: Duration, max: Duration) -> Holder {
        // Owned before the task exists: a task aborted before its first poll still closes the
        // connection when it is dropped.
        let owned = Owned(self.client.take());
        let (checks, requests) = mpsc::channel(1);
        let keepalive = tokio::spawn(keep_alive(owned, idle / 4, max, requests));
        // The hold stays counted until the holder is dropped (`Holder`'s drop uncounts it).
        Holder {
            checks,
            _keepalive: AbortOnDrop(keepalive),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(object) = self.client.take() {
            // Not back into the pool with its transaction open: the client is dropped, the
            // connection closes, the server rolls back and releases the lock.
            drop(deadpool_postgres::Object::take(object));
            self.shared.gate.held_here.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A PostgreSQL timeout setting in milliseconds, within what the server takes (`i32::MAX`),
/// and at least 1 ms: PostgreSQL reads 0 as no timeout at all.
pub(crate) fn timeout_setting(ms: i64) -> String {
    ms.clamp(1, i64::from(i32::MAX)).to_string()
}

/// Ends a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The hold: the keepalive task owns the connection; checks go through it. Dropped, the task
/// ends (its channel closes, or it is aborted), and with it the connection.
struct Holder {
    checks: mpsc::Sender<oneshot::Sender<bool>>,
    _keepalive: AbortOnDrop,
    shared: Arc<Shared>,
}

impl Drop for Holder {
    fn drop(&mut self) {
        // At once, not when the task ends: from here on this process's writes wait for the
        // gate like any other's until the connection has closed.
        self.shared.gate.held_here.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The holding connection, owned by the keepalive task: however the task ends (aborted
/// included) it closes the connection.
struct Owned(Option<deadpool_postgres::Object>);

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            drop(deadpool_postgres::Object::take(object));
        }
    }
}

/// The holder's task: a statement on the holding session every `every` (restarting its idle
/// clock) and on each check, until the hold is dropped, the session is lost, or `max` has
/// passed ([`MAX_HOLD`]: a stuck revocation lets go). Then it closes
/// the connection (never back into the pool with the transaction open).
async fn keep_alive(
    owned: Owned,
    every: Duration,
    max: Duration,
    mut checks: mpsc::Receiver<oneshot::Sender<bool>>,
) {
    let Some(client) = owned.0.as_ref() else {
        return;
    };
    let mut alive = true;
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expired = false;
    let too_long = tokio::time::sleep(max);
    tokio::pin!(too_long);
    loop {
        tokio::select! {
            () = &mut too_long, if alive => {
                tracing::warn!(
                    "the DEK gate was held for {} s without the revocation committing; let go",
                    max.as_secs()
                );
                expired = true;
                break;
            }
            check = checks.recv() => {
                let Some(answer) = check else { break };
                if alive {
                    alive = client.batch_execute("SELECT 1").await.is_ok();
                }
                let _ = answer.send(alive);
            }
            _ = tick.tick(), if alive => {
                if let Err(e) = client.batch_execute("SELECT 1").await {
                    tracing::warn!(error = %e, "the DEK gate's hold was lost");
                    alive = false;
                }
            }
        }
    }
    // The session ends with the connection, and the lock with it.
    drop(owned);
    if expired {
        // Checks from here on answer that the hold is lost, until the hold is dropped.
        while let Some(answer) = checks.recv().await {
            let _ = answer.send(false);
        }
    }
}

#[async_trait]
impl HeldGate for Holder {
    async fn check(&self) -> Result<()> {
        // A statement on the holding session, by its task: it fails if the session ended.
        // Bounded here too: a session that does not answer is not a hold to commit under.
        let (answer, answered) = oneshot::channel();
        let asked = async {
            self.checks.send(answer).await.ok()?;
            answered.await.ok()
        };
        match tokio::time::timeout(CHECK_TIMEOUT, asked).await {
            Ok(Some(true)) => Ok(()),
            Ok(_) => Err(StorageError::Unavailable(HOLD_LOST.into())),
            Err(_) => {
                tracing::warn!("the DEK gate's hold did not answer its check in time");
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
    let pending = Pending::begin(s, s.gate.close_ms, s.gate.hold_idle_ms).await?;
    if let Err(e) = pending
        .client()?
        .execute("SELECT pg_advisory_xact_lock($1)", &[&DEK_GATE_LOCK])
        .await
    {
        if timed_out(&e) {
            return Err(StorageError::Unavailable(CLOSE_TOO_LONG.into()));
        }
        return Err(e).db("close the DEK gate");
    }
    let idle = Duration::from_millis(u64::try_from(s.gate.hold_idle_ms).unwrap_or(0));
    Ok(DekGateHold::new(pending.hold(idle, s.gate.max_hold)))
}

/// `Storage::wait_dek_gate`: see the module comment. Each caller waits at most the gate wait
/// from when it came, whether it started the process's wait or joined one under way.
pub(crate) async fn wait(s: &PgStorage) -> Result<()> {
    let gate = &s.shared.gate;
    let wait = Duration::from_millis(u64::try_from(s.gate.wait_ms).unwrap_or(0));
    let deadline = Instant::now() + wait;
    let mut outcome = {
        let mut slot = gate.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // The process holding the gate never waits for its own hold, whether a wait (begun
        // before its hold) is under way or not: its in-memory gate orders its own writes.
        if gate.held_here.load(Ordering::Acquire) > 0 {
            return Ok(());
        }
        let mut until = gate
            .poll_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(under_way) => {
                // The wait under way polls until this caller's deadline too.
                *until = Some(until.map_or(deadline, |u| u.max(deadline)));
                under_way.clone()
            }
            None => {
                if !gate.refused.load(Ordering::Acquire) {
                    return Ok(());
                }
                *until = Some(deadline);
                let (tx, rx) = watch::channel(None);
                *slot = Some(rx.clone());
                tokio::spawn(poll(s.pool.clone(), Arc::clone(&s.shared), tx));
                rx
            }
        }
    };
    match tokio::time::timeout_at(deadline, outcome.wait_for(Option::is_some)).await {
        Err(_) => Err(StorageError::Unavailable(HELD_TOO_LONG.into())),
        Ok(Err(_)) => Err(StorageError::Unavailable(
            "the wait for the DEK gate was abandoned".into(),
        )),
        Ok(Ok(ended)) => match &*ended {
            Some(Err(message)) => Err(StorageError::Unavailable(message.clone())),
            _ => Ok(()),
        },
    }
}

/// The one wait of a process (see [`wait`]): tries the gate every [`POLL`] until it is open,
/// this process holds the gate itself, or the latest deadline of its callers has passed;
/// then answers every caller. Whether to end is decided under the lock callers join by, so
/// none joins a wait that has decided to end.
async fn poll(
    pool: deadpool_postgres::Pool,
    shared: Arc<Shared>,
    answer: watch::Sender<WaitOutcome>,
) {
    let gate = &shared.gate;
    let until = || {
        gate.poll_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or_else(Instant::now)
    };
    let end = |outcome: Result<(), String>| {
        *gate.waiting.lock().unwrap_or_else(PoisonError::into_inner) = None;
        outcome
    };
    let outcome = loop {
        // Cleared before each try: a refusal after this try started sets it again, so the
        // next `wait` does not miss it.
        gate.refused.store(false, Ordering::Release);
        match tokio::time::timeout_at(until(), try_shared(&pool)).await {
            Ok(Ok(true)) => break end(Ok(())),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                gate.refused.store(true, Ordering::Release);
                break end(Err(format!("waiting for the DEK gate: {e}")));
            }
            Err(_) => {}
        }
        gate.refused.store(true, Ordering::Release);
        {
            let mut slot = gate.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            if gate.held_here.load(Ordering::Acquire) > 0 {
                // This process closed the gate meanwhile: its writes no longer wait for it.
                *slot = None;
                break Ok(());
            }
            if Instant::now() + POLL > until() {
                *slot = None;
                break Err(HELD_TOO_LONG.into());
            }
        }
        tokio::time::sleep(POLL).await;
    };
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

#[cfg(test)]
mod tests {
    #[test]
    fn timeout_settings_stay_within_what_postgresql_reads_as_a_bound() {
        // 0 would be no timeout at all; past i32::MAX ms the server refuses the setting.
        assert_eq!(super::timeout_setting(0), "1");
        assert_eq!(super::timeout_setting(-5), "1");
        assert_eq!(super::timeout_setting(250), "250");
        assert_eq!(super::timeout_setting(i64::MAX), i32::MAX.to_string());
    }
}
