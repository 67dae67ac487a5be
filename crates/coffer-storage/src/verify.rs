//! Checks a store's hash chains through the [`Storage`] trait alone, so that every backend is
//! checked by the same code: `coffer verify` on a live data dir, `coffer restore` on the copy
//! it restored, and `coffer backup` on the copy it is about to write.
//!
//! What is checked, up to the heads read when the check starts (writes committed meanwhile
//! are left for the next run):
//! - the change log, from its base (after any compaction) to its head: every seq follows the
//!   one before it, every entry's hash chains onto its predecessor's (the first onto the base
//!   hash), every payload is a change this build reads, and the last hash is the head's;
//! - every account's audit chain, from seq 1 to its head: gap-free, each entry's `prev_hash`
//!   is its predecessor's hash, and each hash is the one recomputed from the entry.
//!
//! Audit checkpoints (MACs by a key the KEK wraps) are not checked here: that needs the KEK,
//! and `coffer audit verify` does it through the running server. A suffix removed from the end
//! of a chain is invisible to a chain check by itself: compare the heads reported with ones
//! recorded elsewhere (a backup's manifest does exactly that on restore).

use coffer_types::AccountId;

use crate::{AuditRecord, LogState, Storage, StorageError};

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
    /// Change-log entries checked (`head_seq - base_seq`).
    pub changes_checked: u64,
    /// Accounts with at least one audit entry, ordered by id; accounts with checkpoints but no
    /// entry are left out.
    pub audit_heads: Vec<AuditHead>,
    pub audit_entries_checked: u64,
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
    let log = storage.log_state().await?;
    let changes_checked = verify_change_log(storage, &log).await?;
    let mut audit_heads = Vec::new();
    let mut audit_entries_checked = 0;
    for account in storage.audit_accounts().await? {
        let Some((head_seq, head_hash)) = storage.audit_head(account).await? else {
            continue;
        };
        verify_audit_chain(storage, account, head_seq, head_hash).await?;
        audit_entries_checked += head_seq;
        audit_heads.push(AuditHead {
            account,
            seq: head_seq,
            hash: head_hash,
        });
    }
    Ok(ChainReport {
        log,
        changes_checked,
        audit_heads,
        audit_entries_checked,
    })
}

async fn verify_change_log(storage: &dyn Storage, log: &LogState) -> Result<u64, ChainError> {
    let broken = |seq, detail: String| ChainError::ChangeLog { seq, detail };
    let (mut seq, mut hash) = (log.base_seq, log.base_hash);
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
        }
    }
    if hash != log.head_hash {
        return Err(broken(
            seq,
            "the last entry's hash is not the log's head hash".to_owned(),
        ));
    }
    Ok(log.head_seq - log.base_seq)
}

async fn verify_audit_chain(
    storage: &dyn Storage,
    account: AccountId,
    head_seq: u64,
    head_hash: [u8; 32],
) -> Result<(), ChainError> {
    let broken = |seq, detail: &str| ChainError::Audit {
        account,
        seq,
        detail: detail.to_owned(),
    };
    let (mut seq, mut hash) = (0, AuditRecord::GENESIS_HASH);
    while seq < head_seq {
        let page = storage.audit_entries(account, seq, PAGE).await?;
        if page.is_empty() {
            return Err(broken(seq + 1, "missing: the chain ends before its head"));
        }
        for record in page.iter().take_while(|r| r.seq <= head_seq) {
            if record.seq != seq + 1 {
                return Err(broken(seq + 1, "missing: the next entry has a later seq"));
            }
            if record.prev_hash != hash {
                return Err(broken(
                    record.seq,
                    "its previous hash is not the previous entry's hash",
                ));
            }
            if !record.hash_matches() {
                return Err(broken(
                    record.seq,
                    "its hash is not the one computed from its contents",
                ));
            }
            (seq, hash) = (record.seq, record.hash);
        }
    }
    if hash != head_hash {
        return Err(broken(seq, "the last entry's hash is not the chain's head"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_chain_and_the_seq() {
        let e = ChainError::ChangeLog {
            seq: 7,
            detail: "x".into(),
        };
        assert_eq!(e.to_string(), "change-log chain broken at seq 7: x");
        let account = AccountId::from_bytes([1; 16]);
        let e = ChainError::Audit {
            account,
            seq: 3,
            detail: "y".into(),
        };
        assert_eq!(
            e.to_string(),
            format!("audit chain of account {account} broken at seq 3: y")
        );
    }
}
