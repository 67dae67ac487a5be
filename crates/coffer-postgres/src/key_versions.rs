//! Which version of each replication key is current: the instance's (RK) and an account's
//! own (ARK), and whether an account owes a rotation. A leaf, as SQLite's
//! `sqlite/key_versions.rs`: read by the DEK inserts (`keys.rs`, which refuse a DEK wrapped by a
//! version that is not current) and by the modules that make and rotate those keys
//! (`replication.rs`, `ark.rs`).

use coffer_storage::{REPLICATION_KEY_PURPOSE_PREFIX, Result, StorageError};
use coffer_types::AccountId;
use deadpool_postgres::GenericClient;

use crate::db::{DbResultExt, col};

/// The current instance replication key's version (the highest `replication-key:<n>`).
pub(crate) async fn current_rk_version(c: &impl GenericClient) -> Result<Option<u32>> {
    let stmt = c
        .prepare_cached(
            "SELECT max(CAST(substr(purpose, $1) AS BIGINT)) FROM instance_keys
             WHERE purpose LIKE $2",
        )
        .await
        .db("current replication key version")?;
    let start = i32::try_from(REPLICATION_KEY_PURPOSE_PREFIX.len() + 1).unwrap_or(i32::MAX);
    let found: Option<i64> = col(
        &c.query_one(
            &stmt,
            &[&start, &format!("{REPLICATION_KEY_PURPOSE_PREFIX}%")],
        )
        .await
        .db("current replication key version")?,
        0,
        "replication key version",
    )?;
    found
        .map(|v| {
            u32::try_from(v).map_err(|_| {
                StorageError::Corrupted(format!("replication key version {v} out of range"))
            })
        })
        .transpose()
}

/// The account's current ARK version, if it has one.
pub(crate) async fn current_ark_version(
    c: &impl GenericClient,
    account: AccountId,
) -> Result<Option<u32>> {
    let stmt = c
        .prepare_cached("SELECT max(version) FROM account_replication_keys WHERE account_id = $1")
        .await
        .db("current account replication key version")?;
    let found: Option<i64> = col(
        &c.query_one(&stmt, &[&account.as_bytes().as_slice()])
            .await
            .db("current account replication key version")?,
        0,
        "account replication key version",
    )?;
    found
        .map(|v| {
            u32::try_from(v).map_err(|_| {
                StorageError::Corrupted(format!("account replication key version {v} out of range"))
            })
        })
        .transpose()
}

/// Whether `account`'s current ARK version is granted to a revoked node (its rotation owed,
/// as [`crate::ark::accounts_owing_ark_rotation`] lists): `insert_dek` then refuses its ARK-wrapped DEKs.
pub(crate) async fn owes_rotation(c: &impl GenericClient, account: AccountId) -> Result<bool> {
    let stmt = c
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM account_grants AS g
                 JOIN nodes AS n ON n.id = g.node_id
                 WHERE g.account_id = $1 AND n.revoked IS NOT NULL
                   AND g.ark_version = (SELECT max(version) FROM account_replication_keys
                                        WHERE account_id = $1))",
        )
        .await
        .db("account owing a replication key rotation")?;
    col(
        &c.query_one(&stmt, &[&account.as_bytes().as_slice()])
            .await
            .db("account owing a replication key rotation")?,
        0,
        "owes rotation",
    )
}
