//! Account replication keys (ARKs), the nodes' keys for one account, and account grants: the
//! replication-key side of an account with a KEK of its own (schema version 12). Opaque bytes
//! here as everywhere: the wrapping and sealing are core's and crypto's.

use async_trait::async_trait;
use coffer_types::{AccountId, DekId, TokenId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::codec::{DbResultExt, col, id_col, query_all, query_opt, to_hex, ts_col};
use super::key_versions::ark_version;
use super::reads;
use super::writer::WriteCx;
use super::{SqliteStorage, audit};
use crate::ARK_KEK_ID_PREFIX;
use crate::{
    AccountGrant, ArkRotation, ArkStorage, AuditEntry, Change, Entity, NodeAccountKey, Result,
    StorageError, WrappedKeyRecord,
};

fn version_col(row: &Row<'_>, idx: usize, what: &'static str) -> Result<u32> {
    let v: i64 = col(row, idx, what)?;
    u32::try_from(v).map_err(|_| StorageError::Corrupted(format!("{what}: {v} out of range")))
}

fn key_from_row(row: &Row<'_>, at: usize) -> Result<WrappedKeyRecord> {
    Ok(WrappedKeyRecord {
        id: DekId::from_bytes(id_col(row, at, "account_replication_keys.key_id")?),
        kek_id: col(row, at + 1, "account_replication_keys.kek_id")?,
        wrapped: col(row, at + 2, "account_replication_keys.wrapped")?,
        created: ts_col(row, at + 3, "account_replication_keys.created")?,
    })
}

/// Stores `key` as `account`'s ARK `version`, which must be its current version + 1 (1 for
/// its first), else `Conflict`.
fn insert_key(
    cx: &mut WriteCx<'_>,
    account: AccountId,
    version: u32,
    key: &WrappedKeyRecord,
) -> Result<()> {
    let expected = ark_version(cx.conn, account)?
        .map_or(Some(1), |v| v.checked_add(1))
        .ok_or(StorageError::Conflict)?;
    if version != expected {
        return Err(StorageError::Conflict);
    }
    cx.conn
        .prepare_cached(
            "INSERT INTO account_replication_keys
                 (account_id, version, key_id, kek_id, wrapped, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                account.as_bytes(),
                version,
                key.id.as_bytes(),
                key.kek_id,
                key.wrapped,
                key.created.unix_micros()
            ])
        })
        .db("store account replication key")?;
    Ok(())
}

/// The change a stored account grant travels as (its own variant, never a node grant's).
pub(super) fn grant_change(grant: &AccountGrant) -> Change {
    Change::AccountKeyGrant {
        account_id: grant.account_id,
        node_id: grant.node_id,
        ark_version: grant.ark_version,
        ephemeral_public_hex: to_hex(grant.ephemeral_public),
        sealed_hex: to_hex(&grant.sealed),
    }
}

/// Stores `grant` and appends its `AccountKeyGrant`.
pub(super) fn insert_grant(cx: &mut WriteCx<'_>, grant: &AccountGrant) -> Result<()> {
    store_grant(cx.conn, grant)?;
    cx.append(&grant_change(grant))
}

/// Stores `grant` (a replica's apply and the control plane's writes alike).
pub(super) fn store_grant(conn: &Connection, grant: &AccountGrant) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO account_grants (account_id, node_id, ark_version, ephemeral, sealed)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (account_id, node_id, ark_version) DO UPDATE
             SET ephemeral = excluded.ephemeral, sealed = excluded.sealed",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            grant.account_id.as_bytes(),
            grant.node_id.as_bytes(),
            grant.ark_version,
            grant.ephemeral_public,
            grant.sealed
        ])
    })
    .db("store account grant")?;
    Ok(())
}

fn check_grants(grants: &[AccountGrant], account: AccountId, version: u32) -> Result<()> {
    if grants
        .iter()
        .any(|g| g.account_id != account || g.ark_version != version)
    {
        return Err(StorageError::Invalid(
            "an account grant must be of its account's new replication key version",
        ));
    }
    Ok(())
}

/// Stores `key` as version `version` of `account`'s ARK with its `grants` (see
/// `ArkStorage::put_account_replication_key`): `NotFound(Account)` for an unknown account,
/// `Invalid` for a grant of another account or version, `Conflict` unless `version` is the
/// current + 1. The first version retires the account's DEKs still under the instance RK.
pub(super) fn put_key(
    cx: &mut WriteCx<'_>,
    account: AccountId,
    version: u32,
    key: &WrappedKeyRecord,
    grants: &[AccountGrant],
) -> Result<()> {
    reads::require_account(cx.conn, account)?;
    check_grants(grants, account, version)?;
    insert_key(cx, account, version, key)?;
    if version == 1 {
        // Their instance-RK wraps reached the feed and every edge: their values move onto
        // DEKs the ARK wraps, then they are destroyed (the lifecycle job).
        cx.conn
            .prepare_cached("UPDATE deks SET retired = 1 WHERE account_id = ?1 AND rk_account = 0")
            .and_then(|mut stmt| stmt.execute([account.as_bytes()]))
            .db("retire the account's deks")?;
    }
    for grant in grants {
        insert_grant(cx, grant)?;
    }
    Ok(())
}

/// The current (highest) version of every account's ARK, wrapped by the account's KEK, in
/// account id order; accounts without an ARK are absent.
pub(super) fn current_keys(conn: &Connection) -> Result<Vec<(AccountId, u32, WrappedKeyRecord)>> {
    query_all(
        conn,
        "SELECT k.account_id, k.version, k.key_id, k.kek_id, k.wrapped, k.created
         FROM account_replication_keys AS k
         WHERE k.version = (SELECT max(version) FROM account_replication_keys
                            WHERE account_id = k.account_id)
         ORDER BY k.account_id",
        [],
        "account replication keys",
        |row| {
            Ok((
                AccountId::from_bytes(id_col(row, 0, "account_replication_keys.account_id")?),
                version_col(row, 1, "account_replication_keys.version")?,
                key_from_row(row, 2)?,
            ))
        },
    )
}

/// Every stored version of `account`'s ARK, oldest first (empty for an account without one).
pub(super) fn versions(
    conn: &Connection,
    account: AccountId,
) -> Result<Vec<(u32, WrappedKeyRecord)>> {
    query_all(
        conn,
        "SELECT version, key_id, kek_id, wrapped, created FROM account_replication_keys
         WHERE account_id = ?1 ORDER BY version",
        [account.as_bytes()],
        "account replication key versions",
        |row| {
            Ok((
                version_col(row, 0, "account_replication_keys.version")?,
                key_from_row(row, 1)?,
            ))
        },
    )
}

/// Records `public_key` as `node`'s node account key for `account` and stores `grant` (see
/// `ArkStorage::register_node_account_key` for the answers). `Ok(false)`: this very key was
/// registered before, nothing written.
pub(super) fn register(
    cx: &mut WriteCx<'_>,
    node: TokenId,
    account: AccountId,
    public_key: [u8; 32],
    grant: Option<&AccountGrant>,
) -> Result<bool> {
    if grant.is_some_and(|g| g.node_id != node || g.account_id != account) {
        return Err(StorageError::Invalid("a grant for another node or account"));
    }
    let row: Option<(Option<i64>, Option<Vec<u8>>)> = cx
        .conn
        .prepare_cached("SELECT revoked, public_key FROM nodes WHERE id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([node.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .db("read node")?;
    let (revoked, node_key) = row.ok_or(StorageError::NotFound(Entity::Node))?;
    if revoked.is_some() {
        return Err(StorageError::AlreadyRevoked);
    }
    // Account grants are sealed to the node account key and the node key together, so that a
    // node token alone (which is all a registration proves) captures nothing: a node that has
    // no node key yet cannot be granted anything for an account.
    if node_key.is_none() {
        return Err(StorageError::NotFound(Entity::NodeKey));
    }
    reads::require_account(cx.conn, account)?;
    let known: Option<Vec<u8>> = query_opt(
        cx.conn,
        "SELECT public_key FROM account_node_keys WHERE account_id = ?1 AND node_id = ?2",
        params![account.as_bytes(), node.as_bytes()],
        "read node account key",
        |row| col(row, 0, "account_node_keys.public_key"),
    )?;
    match known {
        Some(known) if known == public_key => return Ok(false),
        Some(_) => return Err(StorageError::AlreadyExists(Entity::NodeKey)),
        None => {}
    }
    // One private key opens what is sealed to its public half: a key registered twice (for
    // another account, or as a node key) would open the other's grants too, and outlive the
    // account it was made for.
    let taken: bool = cx
        .conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM nodes WHERE public_key = ?1)
                 OR EXISTS (SELECT 1 FROM account_node_keys WHERE public_key = ?1)",
        )
        .and_then(|mut stmt| stmt.query_row([public_key], |r| r.get(0)))
        .db("check node account key")?;
    if taken {
        return Err(StorageError::AlreadyExists(Entity::NodeKey));
    }
    let current = ark_version(cx.conn, account)?;
    if current != grant.map(|g| g.ark_version) {
        return Err(StorageError::Conflict);
    }
    cx.conn
        .prepare_cached(
            "INSERT INTO account_node_keys (account_id, node_id, public_key) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut stmt| stmt.execute(params![account.as_bytes(), node.as_bytes(), public_key]))
        .db("record node account key")?;
    if let Some(grant) = grant {
        insert_grant(cx, grant)?;
    }
    Ok(true)
}

/// The node account keys registered for `account` by nodes in service that have a node key,
/// each with that node key (a grant is sealed to both), in node id order.
pub(super) fn node_keys(conn: &Connection, account: AccountId) -> Result<Vec<NodeAccountKey>> {
    let key32 = |row: &Row<'_>, idx: usize, what: &'static str| -> Result<[u8; 32]> {
        let key: Vec<u8> = col(row, idx, what)?;
        key.try_into()
            .map_err(|_| StorageError::Corrupted(format!("{what}: not 32 bytes")))
    };
    query_all(
        conn,
        "SELECT k.node_id, k.public_key, n.public_key FROM account_node_keys AS k
         JOIN nodes AS n ON n.id = k.node_id
         WHERE k.account_id = ?1 AND n.revoked IS NULL AND n.public_key IS NOT NULL
         ORDER BY k.node_id",
        [account.as_bytes()],
        "node account keys",
        |row| {
            Ok(NodeAccountKey {
                node_id: TokenId::from_bytes(id_col(row, 0, "account_node_keys.node_id")?),
                account_key: key32(row, 1, "account_node_keys.public_key")?,
                node_key: key32(row, 2, "nodes.public_key")?,
            })
        },
    )
}

pub(super) fn grant_from_row(row: &Row<'_>) -> Result<AccountGrant> {
    let ephemeral: Vec<u8> = col(row, 3, "account_grants.ephemeral")?;
    Ok(AccountGrant {
        account_id: AccountId::from_bytes(id_col(row, 0, "account_grants.account_id")?),
        node_id: TokenId::from_bytes(id_col(row, 1, "account_grants.node_id")?),
        ark_version: version_col(row, 2, "account_grants.ark_version")?,
        ephemeral_public: ephemeral.try_into().map_err(|_| {
            StorageError::Corrupted("account_grants.ephemeral: not 32 bytes".into())
        })?,
        sealed: col(row, 4, "account_grants.sealed")?,
    })
}

pub(super) fn grants(
    conn: &Connection,
    account: AccountId,
    version: u32,
) -> Result<Vec<AccountGrant>> {
    query_all(
        conn,
        "SELECT account_id, node_id, ark_version, ephemeral, sealed FROM account_grants
         WHERE account_id = ?1 AND ark_version = ?2 ORDER BY node_id",
        params![account.as_bytes(), version],
        "account grants",
        grant_from_row,
    )
}

/// One account's ARK rotation: its part of a node's revocation (see
/// `Storage::revoke_node_rotating`, which revokes the node first in the same transaction), or a
/// rotation a revocation owed (`ArkStorage::rotate_account_replication_key`). An account
/// deleted since the rotation was prepared has nothing left to rotate: skipped, so that an
/// operator deleting an account cannot make a revocation fail.
pub(super) fn rotate(cx: &mut WriteCx<'_>, rotation: &ArkRotation) -> Result<()> {
    let account = rotation.account_id;
    if ark_version(cx.conn, account)?.is_none() {
        return Ok(());
    }
    check_grants(&rotation.grants, account, rotation.version)?;
    for grant in &rotation.grants {
        let revoked: Option<Option<i64>> = query_opt(
            cx.conn,
            "SELECT revoked FROM nodes WHERE id = ?1",
            [grant.node_id.as_bytes()],
            "check a grant's node",
            |row| col(row, 0, "nodes.revoked"),
        )?;
        if !matches!(revoked, Some(None)) {
            return Err(StorageError::Invalid(
                "a rotation's grants must go to nodes in service only",
            ));
        }
    }
    insert_key(cx, account, rotation.version, &rotation.key)?;
    for grant in &rotation.grants {
        insert_grant(cx, grant)?;
    }
    super::deks::rewrap_deks(cx, &rotation.deks, rotation.version, Some(account))?;
    // Every ARK-wrapped DEK of the account must now be under the new version: one made
    // meanwhile would still open with what the revoked node held. (Its DEKs still under the
    // instance RK, retired and awaiting re-seal, are the instance rotation's.)
    let left = query_opt(
        cx.conn,
        "SELECT count(*) FROM deks WHERE account_id = ?1
             AND rk_account = 1 AND rk_version != ?2",
        params![account.as_bytes(), rotation.version],
        "count account deks left",
        |row| col::<i64>(row, 0, "count"),
    )?
    .unwrap_or(0);
    if left != 0 {
        return Err(StorageError::Conflict);
    }
    Ok(())
}

/// The accounts whose current ARK version is granted to a revoked node (see
/// `ArkStorage::accounts_owing_ark_rotation`).
pub(super) fn owing_rotation(conn: &Connection) -> Result<Vec<AccountId>> {
    query_all(
        conn,
        "SELECT DISTINCT g.account_id FROM account_grants AS g
         JOIN nodes AS n ON n.id = g.node_id
         WHERE n.revoked IS NOT NULL
           AND g.ark_version = (SELECT max(version) FROM account_replication_keys
                                WHERE account_id = g.account_id)
         ORDER BY g.account_id",
        [],
        "accounts owing a replication key rotation",
        |row| id_col(row, 0, "account_grants.account_id").map(AccountId::from_bytes),
    )
}

/// Removes `account`'s ARK versions, grants and node keys (its deletion).
pub(super) fn delete_account(cx: &mut WriteCx<'_>, account: AccountId) -> Result<()> {
    for (sql, context) in [
        (
            "DELETE FROM account_replication_keys WHERE account_id = ?1",
            "delete account replication keys",
        ),
        (
            "DELETE FROM account_grants WHERE account_id = ?1",
            "delete account grants",
        ),
        (
            "DELETE FROM account_node_keys WHERE account_id = ?1",
            "delete node account keys",
        ),
    ] {
        cx.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([account.as_bytes()]))
            .db(context)?;
    }
    Ok(())
}

/// The accounts with ARK-wrapped DEKs (see `ArkStorage::ark_accounts`). `rk_account = 1` finds
/// them on the control plane; on a replica the `rk_` columns are NULL and the feed's wrap is
/// in `kek_id`/`wrapped` (`ark:<n>`), hence `OR kek_id LIKE 'ark:%'`.
pub(super) fn ark_accounts(conn: &Connection) -> Result<Vec<AccountId>> {
    query_all(
        conn,
        "SELECT DISTINCT account_id FROM deks WHERE rk_account = 1 OR kek_id LIKE ?1 || '%'
         ORDER BY account_id",
        [ARK_KEK_ID_PREFIX],
        "accounts with account replication keys",
        |row| id_col(row, 0, "deks.account_id").map(AccountId::from_bytes),
    )
}

pub(super) fn grant_versions(
    conn: &Connection,
    account: AccountId,
    node: TokenId,
) -> Result<Vec<u32>> {
    query_all(
        conn,
        "SELECT ark_version FROM account_grants WHERE account_id = ?1 AND node_id = ?2
         ORDER BY ark_version",
        params![account.as_bytes(), node.as_bytes()],
        "account grant versions",
        |row| version_col(row, 0, "account_grants.ark_version"),
    )
}

/// The ARK half of the storage trait, delegating to the functions above.
#[async_trait]
impl ArkStorage for SqliteStorage {
    async fn put_account_replication_key(
        &self,
        account: AccountId,
        version: u32,
        key: crate::WrappedKeyRecord,
        grants: Vec<crate::AccountGrant>,
        audit: &[AuditEntry],
    ) -> Result<()> {
        self.write_audited(audit, move |cx| {
            put_key(cx, account, version, &key, &grants)
        })
        .await
    }

    async fn account_replication_keys(
        &self,
    ) -> Result<Vec<(AccountId, u32, crate::WrappedKeyRecord)>> {
        self.read(current_keys).await
    }

    async fn account_replication_key_versions(
        &self,
        account: AccountId,
    ) -> Result<Vec<(u32, crate::WrappedKeyRecord)>> {
        self.read(move |c| versions(c, account)).await
    }

    async fn register_node_account_key(
        &self,
        node: TokenId,
        account: AccountId,
        public_key: [u8; 32],
        grant: Option<crate::AccountGrant>,
        audit: &[AuditEntry],
    ) -> Result<bool> {
        // Audited only when it records something: a repeated registration of the same key
        // (an edge retrying) writes nothing.
        audit::check(audit)?;
        let audit = audit.to_vec();
        self.writer
            .run(move |cx| {
                let recorded = register(cx, node, account, public_key, grant.as_ref())?;
                if recorded {
                    audit::append(cx, &audit)?;
                }
                Ok(recorded)
            })
            .await
    }

    async fn rotate_account_replication_key(
        &self,
        rotation: crate::ArkRotation,
        audit: &[AuditEntry],
    ) -> Result<()> {
        self.write_audited(audit, move |cx| rotate(cx, &rotation))
            .await
    }

    async fn accounts_owing_ark_rotation(&self) -> Result<Vec<AccountId>> {
        self.read(owing_rotation).await
    }

    async fn account_grant_versions(&self, account: AccountId, node: TokenId) -> Result<Vec<u32>> {
        self.read(move |c| grant_versions(c, account, node)).await
    }

    async fn ark_accounts(&self) -> Result<Vec<AccountId>> {
        self.read(ark_accounts).await
    }

    async fn node_account_keys(&self, account: AccountId) -> Result<Vec<crate::NodeAccountKey>> {
        self.read(move |c| node_keys(c, account)).await
    }

    async fn account_grants(
        &self,
        account: AccountId,
        version: u32,
    ) -> Result<Vec<crate::AccountGrant>> {
        self.read(move |c| grants(c, account, version)).await
    }
}
