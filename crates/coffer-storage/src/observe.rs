//! What a backend tells about its writes: counters, and an observer told of every commit.
//! Shared by every backend so that the server's metrics need no backend of their own.

use std::time::Duration;

/// Told of every group commit on the writer (SQLite: its thread, before the batch's writes are
/// answered; PostgreSQL: its task, after; both batch queued writes into one transaction), so a
/// caller reading metrics right after its write may have to wait for the count: keep it cheap
/// (an atomic add, a histogram's observation). The server's metrics implement it, so that
/// storage needs no metrics library.
pub trait WriteObserver: Send + Sync + std::fmt::Debug {
    /// A batch of `jobs` writes committed; its COMMIT (the fsync that makes it durable) took
    /// `took`.
    fn committed(&self, jobs: usize, took: Duration);
    /// A batch could not begin, be signed or commit: each of its writes was refused.
    fn failed(&self, jobs: usize);
}

/// Counters of the writer's work, for benchmarks, tests of group commit, and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed.
    pub commits: u64,
    /// Jobs run (successful or not).
    pub jobs: u64,
    /// Audit entries committed.
    pub audit_entries: u64,
    /// Audit entries that were not written: an insert the database refused (its write is
    /// refused with it), or entries in a batch that did not commit.
    pub audit_failures: u64,
}
