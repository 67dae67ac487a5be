//! The DEK gate across instances (`Storage::close_dek_gate`, `wait_dek_gate`): a node's
//! revocation on one instance is not starved by DEKs that writes on the others insert.
//!
//! The gate is the advisory lock [`DEK_GATE_LOCK`]:
//! - a revocation takes it *exclusive* (`pg_advisory_xact_lock`) in a transaction of its own on
//!   a pooled connection, which it keeps open from before its DEK listing until its commit has
//!   answered ([`DekGateHold`]). Taking it waits for the writes that hold it shared (each until
//!   its COMMIT), so the listing sees their DEKs; it waits at most the gate wait
//!   (`lock_timeout`), then fails `Unavailable`;
//! - a write that *inserts* a DEK takes it shared in its own transaction
//!   ([`enter_shared`], `pg_try_advisory_xact_lock_shared`, after the insert: a DEK already
//!   stored needs nothing), without waiting: if a revocation holds it or waits for it
//!   (PostgreSQL queues a new shared request behind a waiting exclusive one), the insert is
//!   refused with `Conflict` and rolled back with its write's savepoint. Waiting there instead
//!   would hold the writer lock while the revocation waits for it to commit its rotation: a
//!   deadlock broken only by a timeout. The shared hold lasts until the batch commits;
//! - the refused write's process then waits in [`wait`] (the lock taken shared and released
//!   at once, in a transaction of its own, bounded by the gate wait: `Unavailable` after it)
//!   and seals again under the replication key the revocation installed.
//!
//! A hold never outlives its holder: the lock is transaction-level, so it goes with the
//! session, which the database ends when the process dies (its socket closes) or when the
//! transaction sits idle past `idle_in_transaction_session_timeout` (the write idle timeout, set
//! for this transaction: a frozen or partitioned revocation). A hold dropped without its
//! commit closes its connection rather than returning it to the pool, which ends the
//! transaction with it.

use coffer_storage::{DekGateHold, Result, StorageError};
use tokio_postgres::error::SqlState;

use crate::PgStorage;
use crate::db::{DbResultExt, col};
use crate::write::WriteTx;

/// The advisory lock key of the DEK gate ("coffer" + 3 in ASCII).
pub(crate) const DEK_GATE_LOCK: i64 = 0x636f_6666_6572_0003;

/// What a refused wait says: a revocation on another instance (or one stuck) held the gate.
const HELD_TOO_LONG: &str =
    "a node revocation held the DEK gate longer than the gate wait; the write can be retried";

/// The connection whose open transaction holds the gate exclusive. Dropped, it is detached
/// from the pool and closed, which ends the transaction and so releases the lock.
struct Holder(Option<deadpool_postgres::Object>);

impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            // Not back into the pool with its transaction open: the client is dropped, the
            // connection closes, the server rolls back and releases the lock.
            drop(deadpool_postgres::Object::take(object));
        }
    }
}

/// Whether `e` is the lock wait running out (`lock_timeout` or `statement_timeout`).
fn timed_out(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::QUERY_CANCELED)
}

/// Begins a transaction on `client` whose lock waits and idle time are bounded.
async fn begin_bounded(client: &deadpool_postgres::Object, s: &PgStorage) -> Result<()> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await
        .db("begin on the DEK gate")?;
    let wait = s.gate.wait_ms.to_string();
    // The statement may take the wait and a little more; the lock wait is what is bounded.
    let statement = (s.gate.wait_ms.saturating_add(5_000)).to_string();
    client
        .execute(
            "SELECT set_config('lock_timeout', $1, true),
                    set_config('statement_timeout', $2, true),
                    set_config('idle_in_transaction_session_timeout', $3, true)",
            &[&wait, &statement, &s.gate.idle_ms.to_string()],
        )
        .await
        .db("begin on the DEK gate")?;
    Ok(())
}

/// `Storage::close_dek_gate`: the exclusive hold, once every write holding the gate shared
/// has committed or rolled back.
pub(crate) async fn close(s: &PgStorage) -> Result<DekGateHold> {
    let client = s.client().await?;
    // From here on, an error drops the holder, which closes the connection.
    let holder = Holder(Some(client));
    let Some(client) = holder.0.as_ref() else {
        return Err(StorageError::Unavailable(
            "DEK gate connection vanished".into(),
        ));
    };
    begin_bounded(client, s).await?;
    if let Err(e) = client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&DEK_GATE_LOCK])
        .await
    {
        if timed_out(&e) {
            return Err(StorageError::Unavailable(
                "closing the DEK gate: writes inserting DEKs (or another revocation) held it \
                 longer than the gate wait"
                    .into(),
            ));
        }
        return Err(e).db("close the DEK gate");
    }
    Ok(DekGateHold::new(holder))
}

/// `Storage::wait_dek_gate`: returns once no revocation holds the gate (or waits for it).
pub(crate) async fn wait(s: &PgStorage) -> Result<()> {
    let client = s.client().await?;
    let holder = Holder(Some(client));
    let Some(client) = holder.0.as_ref() else {
        return Err(StorageError::Unavailable(
            "DEK gate connection vanished".into(),
        ));
    };
    begin_bounded(client, s).await?;
    if let Err(e) = client
        .execute("SELECT pg_advisory_xact_lock_shared($1)", &[&DEK_GATE_LOCK])
        .await
    {
        if timed_out(&e) {
            return Err(StorageError::Unavailable(HELD_TOO_LONG.into()));
        }
        return Err(e).db("wait for the DEK gate");
    }
    client
        .batch_execute("COMMIT")
        .await
        .db("wait for the DEK gate")?;
    // Committed: the connection goes back to the pool.
    let mut holder = holder;
    drop(holder.0.take());
    Ok(())
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
        Err(StorageError::Conflict)
    }
}
