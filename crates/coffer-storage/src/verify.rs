//! Checks a store's hash chains through the [`Storage`] trait alone, so that every backend is
//! checked by the same code: `coffer verify` on a live data dir, `coffer restore` on the copy
//! it restored, and `coffer backup` on the copy it is about to write.
//!
//! What is checked: the change log up to the head read when the check starts, and each
//! account's audit chain up to the head read when that account's turn comes (writes committed
//! meanwhile are left for the next run):
//! - the change log, from its base (after any compaction) to its head: every seq follows the
//!   one before it, every entry's hash chains onto its predecessor's (the first onto the base
//!   hash), every payload is a change this build reads, and the last hash is the head's;
//! - every account's audit chain, from seq 1 to its head: gap-free, each entry's `prev_hash`
//!   is its predecessor's hash, and each hash is the one recomputed from the entry;
//! - every audit checkpoint names an entry of its chain and that entry's hash: a checkpoint
//!   past the head means entries were removed (an account whose entries are all gone but
//!   whose checkpoints remain fails here).
//!
//! **What this proves, and what it does not.** These hashes are unkeyed: they detect damage
//! (a flipped bit, a lost page, a torn copy) and edits by someone who did not recompute the
//! chains. Someone who can rewrite the database can edit rows and recompute every hash, and
//! this check passes. The keyed checks are the audit checkpoints' MACs (a key the KEK wraps),
//! which `coffer audit verify` and `coffer restore --kek-from` verify; they are not checked
//! here, because that needs the KEK. A suffix removed from the end of a chain past its last
//! checkpoint is invisible to a chain check by itself: compare the heads reported with ones
//! recorded elsewhere (a backup's manifest does exactly that on restore).

use async_trait::async_trait;
use coffer_types::AccountId;

use crate::{AuditCheckpoint, AuditRecord, ChangeRecord, LogState, Storage, StorageError};

/// What the chain check reads: the [`Storage`] trait's reads of the same names (any backend,
/// [`verify_chains`]), or a backend's own open transaction ([`verify_chains_in`]: `coffer
/// migrate` checks its copy before COMMIT, so a copy that does not verify is never committed).
#[async_trait]
pub trait ChainSource: Send + Sync {
    async fn log_state(&self) -> crate::Result<LogState>;
    async fn changes_after(&self, after: u64, limit: usize) -> crate::Result<Vec<ChangeRecord>>;
    async fn audit_accounts(&self) -> crate::Result<Vec<AccountId>>;
    async fn audit_head(&self, account: AccountId) -> crate::Result<Option<(u64, [u8; 32])>>;
    async fn audit_entries(
        &self,
        account: AccountId,
        after_seq: u64,
        limit: usize,
    ) -> crate::Result<Vec<AuditRecord>>;
    async fn audit_checkpoints(
        &self,
        account: AccountId,
        after_seq: u64,
        limit: usize,
    ) -> crate::Result<Vec<AuditCheckpoint>>;
}

/// A [`Storage`] as a [`ChainSource`].
struct Stored<'a>(&'a dyn Storage);

#[async_trait]
impl ChainSource for Stored<'_> {
    async fn log_state(&self) -> crate::Result<LogState> {
        self.0.log_state().await
    }
    async fn changes_after(&self, after: u64, limit: usize) -> crate::Result<Vec<ChangeRecord>> {
        self.0.changes_after(after, limit).await
    }
    async fn audit_accounts(&self) -> crate::Result<Vec<AccountId>> {
        self.0.audit_accounts().await
    }
    async fn audit_head(&self, account: AccountId) -> crate::Result<Option<(u64, [u8; 32])>> {
        self.0.audit_head(account).await
    }
    async fn audit_entries(
        &self,
        account: AccountId,
        after_seq: u64,
        limit: usize,
    ) -> crate::Result<Vec<AuditRecord>> {
        self.0.audit_entries(account, after_seq, limit).await
    }
    async fn audit_checkpoints(
        &self,
        account: AccountId,
        after_seq: u64,
        limit: usize,
    ) -> crate::Result<Vec<AuditCheckpoint>> {
        self.0.audit_checkpoints(account, after_seq, limit).await
    }
}

/// Entries read per page: memory stays bounded whatever the log's size.
const PAGE: usize = 1000;

/// The head of one account's audit chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditHead {
    pub account: AccountId,
    pub seq: u64,
    pub hash: [u8; 32],
}

/// What [`verify_chains`] checked: the log's state and every account's audit head, as read
/// when it started, and how many entries it recomputed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    pub log: LogState,
    /// Change-log entries whose link was recomputed.
    pub changes_checked: u64,
    /// Accounts with at least one audit entry, ordered by id (an account with checkpoints but
    /// no entry fails the check).
    pub audit_heads: Vec<AuditHead>,
    /// Audit entries whose hash was recomputed, over every account.
    pub audit_entries_checked: u64,
    /// Audit checkpoints compared with the entry they name (not their MACs: see the module's
    /// comment).
    pub audit_checkpoints_checked: u64,
}

/// Why a chain check failed. The first broken link is named; nothing after it is checked.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("change-log chain broken at seq {seq}: {detail}")]
    ChangeLog { seq: u64, detail: String },
    #[error("audit chain of account {account} broken at seq {seq}: {detail}")]
    Audit {
        account: AccountId,
        seq: u64,
        detail: String,
    },
    #[error("reading the store failed: {0}")]
    Storage(#[from] StorageError),
}

/// Recomputes the change log's and every account's audit chain (see the module's comment).
pub async fn verify_chains(storage: &dyn Storage) -> Result<ChainReport, ChainError> {
    verify_chains_in(&Stored(storage)).await
}

/// [`verify_chains`] over any [`ChainSource`].
pub async fn verify_chains_in(storage: &dyn ChainSource) -> Result<ChainReport, ChainError> {
    let log = storage.log_state().await?;
    if log.head_seq < log.base_seq {
        return Err(ChainError::ChangeLog {
            seq: log.head_seq,
            detail: format!("the log's head is below its base (seq {})", log.base_seq),
        });
    }
    let changes_checked = verify_change_log(storage, &log).await?;
    let mut audit_heads = Vec::new();
    let (mut audit_entries_checked, mut audit_checkpoints_checked) = (0u64, 0u64);
    for account in storage.audit_accounts().await? {
        let head = storage.audit_head(account).await?;
        let (entries, checkpoints) = verify_audit_chain(storage, account, head).await?;
        audit_entries_checked = audit_entries_checked.saturating_add(entries);
        audit_checkpoints_checked = audit_checkpoints_checked.saturating_add(checkpoints);
        if let Some((seq, hash)) = head {
            audit_heads.push(AuditHead { account, seq, hash });
        }
    }
    Ok(ChainReport {
        log,
        changes_checked,
        audit_heads,
        audit_entries_checked,
        audit_checkpoints_checked,
    })
}

/// Checks the log from its base to its head; the number of entries checked.
async fn verify_change_log(storage: &dyn ChainSource, log: &LogState) -> Result<u64, ChainError> {
    let broken = |seq, detail: String| ChainError::ChangeLog { seq, detail };
    let (mut seq, mut hash) = (log.base_seq, log.base_hash);
    let mut checked = 0u64;
    // A backend may check the chain as it reads (SQLite does) and refuse a page holding a
    // broken link: then read one entry at a time from the last good one, which names it.
    let mut page_size = PAGE;
    while seq < log.head_seq {
        let page = match storage.changes_after(seq, page_size).await {
            Ok(page) => page,
            Err(StorageError::Corrupted(detail)) => {
                if page_size == 1 {
                    return Err(broken(seq + 1, detail));
                }
                page_size = 1;
                continue;
            }
            Err(StorageError::Compacted { base }) => {
                return Err(broken(
                    seq + 1,
                    format!(
                        "the log was compacted through seq {base} while it was being checked; \
                         run the check again"
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        if page.is_empty() {
            return Err(broken(
                seq + 1,
                format!(
                    "the log ends at seq {seq}, but its head is seq {}",
                    log.head_seq
                ),
            ));
        }
        for entry in page.iter().take_while(|e| e.seq <= log.head_seq) {
            if entry.seq != seq + 1 {
                return Err(broken(
                    seq + 1,
                    format!("seq {} follows seq {seq}: entries are missing", entry.seq),
                ));
            }
            if !entry.follows(&hash) {
                return Err(broken(
                    entry.seq,
                    format!(
                        "its hash is not the one computed from its payload and entry {seq}'s hash"
                    ),
                ));
            }
            entry
                .change()
                .map_err(|e| broken(entry.seq, format!("its payload does not decode: {e}")))?;
            (seq, hash) = (entry.seq, entry.hash);
            checked += 1;
        }
    }
    if hash != log.head_hash {
        return Err(broken(
            seq,
            "the last entry's hash is not the log's head hash".to_owned(),
        ));
    }
    Ok(checked)
}

/// Checks `account`'s audit chain up to `head` (`None`: it has no entry) and that each of its
/// checkpoints names an entry of that chain with that entry's hash. The entries and the
/// checkpoints checked.
async fn verify_audit_chain(
    storage: &dyn ChainSource,
    account: AccountId,
    head: Option<(u64, [u8; 32])>,
) -> Result<(u64, u64), ChainError> {
    let broken = |seq, detail: String| ChainError::Audit {
        account,
        seq,
        detail,
    };
    let (head_seq, head_hash) = head.unwrap_or((0, AuditRecord::GENESIS_HASH));
    let mut checkpoints = std::collections::VecDeque::new();
    let (mut checkpoints_after, mut checkpoints_done) = (0u64, false);
    let (mut seq, mut hash) = (0, AuditRecord::GENESIS_HASH);
    let (mut entries_checked, mut checkpoints_checked) = (0u64, 0u64);
    loop {
        if checkpoints.is_empty() && !checkpoints_done {
            let page = storage
                .audit_checkpoints(account, checkpoints_after, PAGE)
                .await?;
            checkpoints_done = page.len() < PAGE;
            if let Some(last) = page.last() {
                checkpoints_after = last.seq;
            }
            checkpoints.extend(page);
        }
        if seq >= head_seq {
            break;
        }
        let page = storage.audit_entries(account, seq, PAGE).await?;
        if page.is_empty() {
            return Err(broken(
                seq + 1,
                "missing: the chain ends before its head".into(),
            ));
        }
        for record in page.iter().take_while(|r| r.seq <= head_seq) {
            if record.seq != seq + 1 {
                return Err(broken(
                    seq + 1,
                    "missing: the next entry has a later seq".into(),
                ));
            }
            if record.prev_hash != hash {
                return Err(broken(
                    record.seq,
                    "its previous hash is not the previous entry's hash".into(),
                ));
            }
            if !record.hash_matches() {
                return Err(broken(
                    record.seq,
                    "its hash is not the one computed from its contents".into(),
                ));
            }
            (seq, hash) = (record.seq, record.hash);
            entries_checked += 1;
            while let Some(cp) = checkpoints.front().filter(|cp| cp.seq <= seq) {
                if cp.seq < seq || cp.hash != hash {
                    return Err(broken(
                        cp.seq,
                        "its checkpoint records another hash for this entry".into(),
                    ));
                }
                checkpoints.pop_front();
                checkpoints_checked += 1;
            }
            if checkpoints.is_empty() && !checkpoints_done {
                break;
            }
        }
    }
    if hash != head_hash {
        return Err(broken(
            seq,
            "the last entry's hash is not the chain's head".into(),
        ));
    }
    if let Some(cp) = checkpoints.front() {
        return Err(broken(
            cp.seq,
            format!(
                "a checkpoint covers this entry but the chain ends at seq {head_seq}: entries \
                 were removed"
            ),
        ));
    }
    Ok((entries_checked, checkpoints_checked))
}
