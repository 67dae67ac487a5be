//! Where the change log stands: its base (the `replication` row, once a cluster id exists) and
//! its head, the last entry, else the base (after compacting everything, or on an edge right
//! after a snapshot install), else the genesis. A leaf: the writer, the reads and replication
//! all ask it, and it asks only the database.

use rusqlite::Connection;

use super::codec::{col, id_col, query_opt, u64_col};
use crate::{ChangeRecord, Result, StorageError};

/// The `replication` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Base {
    pub(super) cluster_id: [u8; 16],
    pub(super) seq: u64,
    pub(super) hash: [u8; 32],
    pub(super) at: i64,
}

/// The `replication` row, if the database has one (it has once a cluster id exists).
pub(super) fn base(conn: &Connection) -> Result<Option<Base>> {
    query_opt(
        conn,
        "SELECT cluster_id, base_seq, base_hash, base_at FROM replication WHERE id = 1",
        [],
        "read log base",
        |row| {
            Ok(Base {
                cluster_id: id_col(row, 0, "replication.cluster_id")?,
                seq: u64_col(row, 1, "replication.base_seq")?,
                hash: col(row, 2, "replication.base_hash")?,
                at: col(row, 3, "replication.base_at")?,
            })
        },
    )
}

/// The base's seq and hash; seq 0 and the genesis hash without a `replication` row.
pub(super) fn base_position(conn: &Connection) -> Result<(u64, [u8; 32])> {
    Ok(base(conn)?.map_or((0, ChangeRecord::GENESIS_HASH), |b| (b.seq, b.hash)))
}

/// The log's last position: the last entry of `changes`, else the base, else the genesis
/// (seq 0, [`ChangeRecord::GENESIS_HASH`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LogHead {
    pub(super) seq: u64,
    pub(super) hash: [u8; 32],
    /// Unix micros of that entry (or of the base); `i64::MIN` at the genesis.
    pub(super) at: i64,
}

/// Run inside one transaction by the caller, so the entries and the base agree.
pub(super) fn log_head(conn: &Connection) -> Result<LogHead> {
    let last = query_opt(
        conn,
        "SELECT seq, hash, at FROM changes ORDER BY seq DESC LIMIT 1",
        [],
        "read change head",
        |row| {
            let seq: i64 = col(row, 0, "changes.seq")?;
            Ok(LogHead {
                seq: u64::try_from(seq)
                    .map_err(|_| StorageError::Corrupted("changes.seq: negative".into()))?,
                hash: col(row, 1, "changes.hash")?,
                at: col(row, 2, "changes.at")?,
            })
        },
    )?;
    if let Some(head) = last {
        return Ok(head);
    }
    Ok(match base(conn)? {
        Some(base) => LogHead {
            seq: base.seq,
            hash: base.hash,
            at: base.at,
        },
        None => LogHead {
            seq: 0,
            hash: ChangeRecord::GENESIS_HASH,
            at: i64::MIN,
        },
    })
}
