//! What lists and quotas trust without re-deriving it, checked: every store's and account's
//! `secret_count` equals the secrets it holds (an unfiltered list's `total_count` and
//! `PageWindow`'s reading from the end of the order rely on the store's; quotas on the
//! account's), and every foreign key holds (a secret's `account_id` is its store's: lists no
//! longer filter by account). [`Storage::check_integrity`] answers it on each backend;
//! [`verify_integrity`] turns its first problem into an error naming the check. `coffer
//! verify` (both backends) and `coffer restore` (SQLite, on the untrusted file) run it.
//!
//! Foreign keys: SQLite enforces them on writes only (and `PRAGMA integrity_check` does not
//! look at them), so an edited or damaged file may break them: SQLite checks every row
//! (`PRAGMA foreign_key_check`). PostgreSQL enforces them on writes, but its foreign keys are
//! triggers, which a superuser can bypass (`session_replication_role = replica`, `DISABLE
//! TRIGGER`, a data-only `pg_restore --disable-triggers`) and a restored dump may lack or hold
//! `NOT VALID`: PostgreSQL checks every row of each of Coffer's foreign keys too (anti-joins),
//! and that Coffer's constraints are all there and validated and its triggers all there and
//! enabled ([`IntegrityProblem::Schema`]).

use coffer_types::{AccountId, StoreId};
use serde::Serialize;

use crate::{Storage, StorageError};

/// How foreign keys were checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForeignKeys {
    /// Every row of every table with one was checked against its parent.
    Checked,
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityProblem {
    /// A row whose foreign key names no parent row (SQLite's rowid, when the table has one).
    #[error("{table} row {} breaks its foreign key to {parent}", row.map_or_else(|| "?".to_owned(), |r| r.to_string()))]
    ForeignKey {
        table: String,
        row: Option<i64>,
        parent: String,
    },
    /// A row whose foreign key names no parent row, named by its key (PostgreSQL: the row's
    /// primary key, ids in hex).
    #[error("{table} row {key} breaks its foreign key to {parent}")]
    ForeignKeyRow {
        table: String,
        key: String,
        parent: String,
    },
    /// One of the database's own constraints or triggers (PostgreSQL) is missing, not
    /// validated or disabled: what the database enforces on the next write is not what
    /// Coffer relies on.
    #[error("schema: {0}")]
    Schema(String),
    /// A store whose maintained count is not its secrets'.
    #[error("store {store} counts {counts} secrets, holds {holds}")]
    StoreCount {
        store: StoreId,
        counts: i64,
        holds: i64,
    },
    /// An account whose maintained count is not its secrets'.
    #[error("account {account} counts {counts} secrets, holds {holds}")]
    AccountCount {
        account: AccountId,
        counts: i64,
        holds: i64,
    },
}

/// What [`Storage::check_integrity`] read, from one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Stores whose count was compared with their secrets.
    pub stores_checked: u64,
    /// Accounts whose count was compared with their secrets.
    pub accounts_checked: u64,
    pub foreign_keys: ForeignKeys,
    /// The first broken invariant found (PostgreSQL: its constraints and triggers first; then
    /// foreign keys, then stores', then accounts' counts, each by id), if any.
    pub problem: Option<IntegrityProblem>,
}

/// Why [`verify_integrity`] failed.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error("integrity check failed: {0}")]
    Broken(IntegrityProblem),
    #[error("reading the store failed: {0}")]
    Storage(#[from] StorageError),
}

/// [`Storage::check_integrity`], its first problem as an error.
pub async fn verify_integrity(storage: &dyn Storage) -> Result<IntegrityReport, IntegrityError> {
    let mut report = storage.check_integrity().await?;
    match report.problem.take() {
        Some(problem) => Err(IntegrityError::Broken(problem)),
        None => Ok(report),
    }
}
