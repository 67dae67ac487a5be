//! What lists and quotas trust without re-deriving it, checked: every store's and account's
//! `secret_count` equals the secrets it holds (an unfiltered list's `total_count` and
//! `PageWindow`'s reading from the end of the order rely on the store's; quotas on the
//! account's), and every foreign key holds (a secret's `account_id` is its store's: lists no
//! longer filter by account). [`Storage::check_integrity`] answers it on each backend;
//! [`verify_integrity`] turns its first problem into an error naming the check. `coffer
//! verify` (both backends), `coffer backup` (on its copy) and `coffer restore` (SQLite, on the
//! untrusted file) run it.
//!
//! Counts are derived data: [`Storage::recount_secrets`] sets every one to its rows (`coffer
//! repair`), reporting what it changed ([`Recounted`]). A broken foreign key is not derived:
//! nothing here repairs it ([`IntegrityProblem::is_count`] tells the two apart).
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

impl IntegrityProblem {
    /// Whether the problem is a maintained count ([`Storage::recount_secrets`] repairs it), not
    /// a broken foreign key (which only a backup can).
    pub fn is_count(&self) -> bool {
        matches!(
            self,
            IntegrityProblem::StoreCount { .. } | IntegrityProblem::AccountCount { .. }
        )
    }
}

/// One count [`Storage::recount_secrets`] set: the row's id, the count it held, and the number
/// of its secrets it now holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Recount<Id> {
    pub id: Id,
    pub was: i64,
    pub now: i64,
}

/// What [`Storage::recount_secrets`] corrected, each by id (empty when every count was right).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Recounted {
    pub stores: Vec<Recount<StoreId>>,
    pub accounts: Vec<Recount<AccountId>>,
}

impl Recounted {
    /// How many counts were set.
    pub fn corrected(&self) -> usize {
        self.stores.len() + self.accounts.len()
    }
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

/// Why [`verify_integrity`] (or `SqliteStorage::check_untrusted`) failed.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error("integrity check failed: {0}")]
    Broken(IntegrityProblem),
    /// The check could not be made (a failed read), or, for an untrusted file, the file is not
    /// a Coffer database of a schema this build knows.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl IntegrityError {
    /// Whether the failure is a drifted count, which `coffer repair` (through
    /// [`Storage::recount_secrets`]) corrects.
    pub fn is_count(&self) -> bool {
        matches!(self, IntegrityError::Broken(p) if p.is_count())
    }
}

/// [`Storage::check_integrity`], its first problem as an error.
pub async fn verify_integrity(storage: &dyn Storage) -> Result<IntegrityReport, IntegrityError> {
    let mut report = storage.check_integrity().await?;
    match report.problem.take() {
        Some(problem) => Err(IntegrityError::Broken(problem)),
        None => Ok(report),
    }
}
