//! Which version of each replication key is current: the instance's (RK) and an account's
//! own (ARK), and whether an account owes a rotation. A leaf, read by the DEK inserts (which
//! refuse a DEK wrapped by a version that is not current) and by the modules that make and
//! rotate those keys.

use coffer_types::AccountId;
use rusqlite::{Connection, params};

use super::codec::DbResultExt;
use crate::{REPLICATION_KEY_PURPOSE_PREFIX, Result, StorageError};

/// The current replication key version, if any (purposes `replication-key:<n>`).
pub(super) fn rk_version(conn: &Connection) -> Result<Option<u32>> {
    let found: Option<i64> = conn
        .prepare_cached(
            "SELECT max(CAST(substr(purpose, ?1) AS INTEGER)) FROM instance_keys
             WHERE purpose LIKE ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row(
                params![
                    (REPLICATION_KEY_PURPOSE_PREFIX.len() + 1) as i64,
                    format!("{REPLICATION_KEY_PURPOSE_PREFIX}%")
                ],
                |row| row.get(0),
            )
        })
        .db("current replication key version")?;
    found
        .map(|v| {
            u32::try_from(v).map_err(|_| {
                StorageError::Corrupted(format!("replication key version {v} out of range"))
            })
        })
        .transpose()
}

/// `account`'s current ARK version, if it has an ARK.
pub(super) fn ark_version(conn: &Connection, account: AccountId) -> Result<Option<u32>> {
    let found: Option<i64> = conn
        .prepare_cached("SELECT max(version) FROM account_replication_keys WHERE account_id = ?1")
        .and_then(|mut stmt| stmt.query_row([account.as_bytes()], |row| row.get(0)))
        .db("current account replication key version")?;
    found
        .map(|v| {
            u32::try_from(v).map_err(|_| {
                StorageError::Corrupted(format!("account replication key version {v} out of range"))
            })
        })
        .transpose()
}

/// Whether `account`'s current ARK version is granted to a revoked node (its rotation owed,
/// as `owing_rotation` lists).
pub(super) fn owes_rotation(conn: &Connection, account: AccountId) -> Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM account_grants AS g
             JOIN nodes AS n ON n.id = g.node_id
             WHERE g.account_id = ?1 AND n.revoked IS NOT NULL
               AND g.ark_version = (SELECT max(version) FROM account_replication_keys
                                    WHERE account_id = ?1))",
    )
    .and_then(|mut stmt| stmt.query_row([account.as_bytes()], |row| row.get(0)))
    .db("account owing a replication key rotation")
}
