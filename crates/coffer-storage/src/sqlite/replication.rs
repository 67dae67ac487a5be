//! The replicated log's identity and base (the one `replication` row), compaction, and the
//! control plane's record of access-event batches received from edges.

use coffer_types::{Timestamp, TokenId};
use rusqlite::{Connection, params};

use super::codec::{DbResultExt, col, query_opt};
use super::log_head::{base, log_head};
use super::writer::WriteCx;
use crate::{ChangeRecord, LogState, Result, StorageError};

/// Run inside one read transaction by the caller, so the base and the head agree.
pub(super) fn log_state(conn: &Connection) -> Result<LogState> {
    let base = base(conn)?;
    let (base_seq, base_hash) = base.map_or((0, ChangeRecord::GENESIS_HASH), |b| (b.seq, b.hash));
    let head = log_head(conn)?;
    Ok(LogState {
        cluster_id: base.map(|b| b.cluster_id),
        base_seq,
        base_hash,
        head_seq: head.seq,
        head_hash: head.hash,
    })
}

pub(super) fn ensure_cluster_id(cx: &mut WriteCx<'_>) -> Result<[u8; 16]> {
    // The writer runs one job at a time: nobody can insert between this read and the insert.
    if let Some(base) = base(cx.conn)? {
        return Ok(base.cluster_id);
    }
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id)
        .map_err(|_| StorageError::Unavailable("the random generator failed".into()))?;
    // The log may already hold entries (a control plane from before replication): its base
    // stays at 0, and the head (read from `changes`) is untouched.
    cx.conn
        .prepare_cached(
            "INSERT INTO replication (id, cluster_id, base_seq, base_hash, base_at)
             VALUES (1, ?1, 0, ?2, ?3)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                id,
                ChangeRecord::GENESIS_HASH,
                Timestamp::now().unix_micros()
            ])
        })
        .db("store cluster id")?;
    Ok(id)
}

pub(super) fn compact_log(cx: &mut WriteCx<'_>, through: u64) -> Result<()> {
    let Some(base) = base(cx.conn)? else {
        return if through == 0 {
            Ok(())
        } else {
            Err(StorageError::Invalid(
                "the log has no cluster id yet, so it cannot be compacted",
            ))
        };
    };
    if through < base.seq {
        return Err(StorageError::Invalid(
            "compaction cannot move the log's base backwards",
        ));
    }
    let (head, _) = cx.head();
    if through > head {
        return Err(StorageError::Invalid(
            "compaction cannot go beyond the log's head",
        ));
    }
    if through == base.seq {
        return Ok(());
    }
    // `through` is above the base and at most the head, so it fits and its entry is held.
    let through_sql = i64::try_from(through)
        .map_err(|_| StorageError::Invalid("compaction point beyond storage's range"))?;
    let (hash, at): ([u8; 32], i64) = query_opt(
        cx.conn,
        "SELECT hash, at FROM changes WHERE seq = ?1",
        [through_sql],
        "read compaction point",
        |row| Ok((col(row, 0, "changes.hash")?, col(row, 1, "changes.at")?)),
    )?
    .ok_or_else(|| StorageError::Corrupted(format!("change {through} is missing")))?;
    // The base first: the trigger `changes_no_delete` lets only entries at or below it go.
    cx.conn
        .prepare_cached(
            "UPDATE replication SET base_seq = ?1, base_hash = ?2, base_at = ?3 WHERE id = 1",
        )
        .and_then(|mut stmt| stmt.execute(params![through_sql, hash, at]))
        .db("move log base")?;
    cx.conn
        .prepare_cached("DELETE FROM change_signatures WHERE seq <= ?1")
        .and_then(|mut stmt| stmt.execute([through_sql]))
        .db("drop compacted signatures")?;
    cx.conn
        .prepare_cached("DELETE FROM changes WHERE seq <= ?1")
        .and_then(|mut stmt| stmt.execute([through_sql]))
        .db("compact log")?;
    Ok(())
}

/// Records batch `id` from `node`; `false` (and nothing written) if it was recorded before.
pub(super) fn record_access_batch(
    cx: &mut WriteCx<'_>,
    id: [u8; 16],
    node: TokenId,
) -> Result<bool> {
    let inserted = cx
        .conn
        .prepare_cached(
            "INSERT INTO access_batches (id, node_id, received) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO NOTHING",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![id, node.as_bytes(), Timestamp::now().unix_micros()])
        })
        .db("record access batch")?;
    Ok(inserted == 1)
}
