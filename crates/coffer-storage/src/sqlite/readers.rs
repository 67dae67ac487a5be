//! A small pool of read-only connections, used from `spawn_blocking` so that SQLite's
//! blocking calls never run on the async runtime's threads.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::schema::open_reader;
use crate::{Result, StorageError};

pub(super) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    /// Connections not in use. Invariant: at most `max` connections exist, because one is only
    /// opened by a holder of a `permits` permit finding this list empty.
    idle: Mutex<Vec<Connection>>,
    /// Bounds concurrent reads to the number of connections; waiting for a permit is async.
    permits: Arc<Semaphore>,
}

impl Readers {
    pub(super) fn new(path: PathBuf, busy_timeout: Duration, max: usize) -> Readers {
        let max = max.max(1);
        Readers {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::with_capacity(max)),
            permits: Arc::new(Semaphore::new(max)),
        }
    }

    /// Runs `f` on a pooled connection on the blocking thread pool. Each call is its own read:
    /// `f` opens a transaction itself when it needs one snapshot across several statements.
    pub(super) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StorageError::Unavailable("the read pool is closed".into()))?;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = match this.take() {
                Some(conn) => conn,
                None => open_reader(&this.path, this.busy_timeout)?,
            };
            let result = f(&mut conn);
            this.give_back(conn);
            result
        })
        .await
        .map_err(|e| StorageError::Unavailable(format!("read task failed: {e}")))?
    }

    /// Runs `f` on a connection of its own (opened for it, closed after), on the blocking
    /// thread pool: for long reads such as a snapshot, which must not hold a pooled connection
    /// (and with it a share of the runtime reads) for as long as their consumer takes.
    pub(super) async fn run_dedicated<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (path, busy_timeout) = (self.path.clone(), self.busy_timeout);
        tokio::task::spawn_blocking(move || {
            let mut conn = open_reader(&path, busy_timeout)?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StorageError::Unavailable(format!("read task failed: {e}")))?
    }

    /// Refuses further reads and closes the idle connections; those in use close when their
    /// read ends.
    pub(super) fn close(&self) {
        self.permits.close();
        drop(std::mem::take(
            &mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner),
        ));
    }

    fn take(&self) -> Option<Connection> {
        // A panic while the lock was held cannot leave the Vec half-updated (push and pop are
        // the only operations), so a poisoned lock is still safe to use.
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock `close` drains under: a connection given back after `close`
        // is dropped, not kept.
        if !self.permits.is_closed() {
            idle.push(conn);
        }
    }
}
