//! Account replication keys (ARKs), node account keys and account grants: the `ArkStorage`
//! part of the trait (docs/key-hierarchy.md), as SQLite's `sqlite/account_keys.rs` does it.

use coffer_storage::{
    ARK_KEK_ID_PREFIX, AccountGrant, ArkRotation, AuditEntry, Change, Entity, NodeAccountKey,
    Result, StorageError, WrappedKeyRecord,
};
use coffer_types::{AccountId, DekId, TokenId};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStorage;
use crate::accounts::require_account;
use crate::db::{DbResultExt, bytes_col, col, ts_col, u32_col, u64_col};
use crate::key_versions::current_ark_version;
use crate::keys::rewrap_deks;
use crate::nodes::node_key_row;
use crate::write::WriteTx;

fn key_from_row(row: &Row, at: usize) -> Result<WrappedKeyRecord> {
    Ok(WrappedKeyRecord {
        id: DekId::from_bytes(bytes_col(row, at, "account_replication_keys.key_id")?),
        kek_id: col(row, at + 1, "account_replication_keys.kek_id")?,
        wrapped: col(row, at + 2, "account_replication_keys.wrapped")?,
        created: ts_col(row, at + 3, "account_replication_keys.created")?,
    })
}

fn grant_from_row(row: &Row) -> Result<AccountGrant> {
    Ok(AccountGrant {
        account_id: AccountId::from_bytes(bytes_col(row, 0, "account_grants.account_id")?),
        node_id: TokenId::from_bytes(bytes_col(row, 1, "account_grants.node_id")?),
        ark_version: u32_col(row, 2, "account_grants.ark_version")?,
        ephemeral_public: bytes_col(row, 3, "account_grants.ephemeral")?,
        sealed: col(row, 4, "account_grants.sealed")?,
    })
}

/// Stores `key` as `account`'s ARK `version`, which must be its current version + 1 (1 for
/// its first), else `Conflict`.
async fn insert_key(
    w: &mut WriteTx<'_>,
    account: AccountId,
    version: u32,
    key: &WrappedKeyRecord,
) -> Result<()> {
    let expected = current_ark_version(w.tx(), account)
        .await?
        .map_or(Some(1), |v| v.checked_add(1))
        .ok_or(StorageError::Conflict)?;
    if version != expected {
        return Err(StorageError::Conflict);
    }
    w.tx()
        .execute(
            "INSERT INTO account_replication_keys
                 (account_id, version, key_id, kek_id, wrapped, created)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &account.as_bytes().as_slice(),
                &i64::from(version),
                &key.id.as_bytes().as_slice(),
                &key.kek_id,
                &key.wrapped,
                &key.created.unix_micros(),
            ],
        )
        .await
        .db("store account replication key")?;
    Ok(())
}

/// Stores `grant` and appends its `AccountKeyGrant` (its own variant, never a node grant's).
async fn insert_grant(w: &mut WriteTx<'_>, grant: &AccountGrant) -> Result<()> {
    let stmt = w
        .tx()
        .prepare_cached(
            "INSERT INTO account_grants (account_id, node_id, ark_version, ephemeral, sealed)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account_id, node_id, ark_version) DO UPDATE
                 SET ephemeral = excluded.ephemeral, sealed = excluded.sealed",
        )
        .await
        .db("store account grant")?;
    w.tx()
        .execute(
            &stmt,
            &[
                &grant.account_id.as_bytes().as_slice(),
                &grant.node_id.as_bytes().as_slice(),
                &i64::from(grant.ark_version),
                &grant.ephemeral_public.as_slice(),
                &grant.sealed,
            ],
        )
        .await
        .db("store account grant")?;
    w.append(&Change::AccountKeyGrant {
        account_id: grant.account_id,
        node_id: grant.node_id,
        ark_version: grant.ark_version,
        ephemeral_public_hex: hex::encode(grant.ephemeral_public),
        sealed_hex: hex::encode(&grant.sealed),
    })
    .await
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

pub(crate) async fn put_account_replication_key(
    s: &PgStorage,
    account: AccountId,
    version: u32,
    key: WrappedKeyRecord,
    grants: Vec<AccountGrant>,
    audit: &[AuditEntry],
) -> Result<()> {
    s.write(audit, move |w| {
        Box::pin(async move {
            require_account(w.tx(), account).await?;
            check_grants(&grants, account, version)?;
            insert_key(w, account, version, &key).await?;
            if version == 1 {
                // Their instance-RK wraps reached the feed and every edge: their values move
                // onto DEKs the ARK wraps, then they are destroyed (the lifecycle job).
                w.tx()
                    .execute(
                        "UPDATE deks SET retired = true WHERE account_id = $1 AND NOT rk_account",
                        &[&account.as_bytes().as_slice()],
                    )
                    .await
                    .db("retire the account's deks")?;
            }
            for grant in &grants {
                insert_grant(w, grant).await?;
            }
            Ok(())
        })
    })
    .await
}

pub(crate) async fn account_replication_keys(
    s: &PgStorage,
) -> Result<Vec<(AccountId, u32, WrappedKeyRecord)>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT DISTINCT ON (account_id)
                    account_id, version, key_id, kek_id, wrapped, created
             FROM account_replication_keys
             ORDER BY account_id, version DESC",
        )
        .await
        .db("account replication keys")?;
    c.query(&stmt, &[])
        .await
        .db("account replication keys")?
        .iter()
        .map(|row| {
            Ok((
                AccountId::from_bytes(bytes_col(row, 0, "account_replication_keys.account_id")?),
                u32_col(row, 1, "account_replication_keys.version")?,
                key_from_row(row, 2)?,
            ))
        })
        .collect()
}

pub(crate) async fn account_replication_key_versions(
    s: &PgStorage,
    account: AccountId,
) -> Result<Vec<(u32, WrappedKeyRecord)>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT version, key_id, kek_id, wrapped, created FROM account_replication_keys
             WHERE account_id = $1 ORDER BY version",
        )
        .await
        .db("account replication key versions")?;
    c.query(&stmt, &[&account.as_bytes().as_slice()])
        .await
        .db("account replication key versions")?
        .iter()
        .map(|row| {
            Ok((
                u32_col(row, 0, "account_replication_keys.version")?,
                key_from_row(row, 1)?,
            ))
        })
        .collect()
}

pub(crate) async fn register_node_account_key(
    s: &PgStorage,
    node: TokenId,
    account: AccountId,
    public_key: [u8; 32],
    grant: Option<AccountGrant>,
    audit: &[AuditEntry],
) -> Result<bool> {
    if grant
        .as_ref()
        .is_some_and(|g| g.node_id != node || g.account_id != account)
    {
        return Err(StorageError::Invalid("a grant for another node or account"));
    }
    crate::audit::check(audit)?;
    // Audited only when it records something: a repeated registration of the same key (an
    // edge retrying) writes nothing.
    let audit = audit.to_vec();
    s.write(&[], move |w| {
        Box::pin(async move {
            let (revoked, node_key) = node_key_row(w.tx(), node).await?;
            if revoked.is_some() {
                return Err(StorageError::AlreadyRevoked);
            }
            // Account grants are sealed to the node account key and the node key together: a
            // node without a node key cannot be granted anything for an account.
            if node_key.is_none() {
                return Err(StorageError::NotFound(Entity::NodeKey));
            }
            require_account(w.tx(), account).await?;
            let known = w
                .tx()
                .query_opt(
                    "SELECT public_key FROM account_node_keys
                     WHERE account_id = $1 AND node_id = $2",
                    &[&account.as_bytes().as_slice(), &node.as_bytes().as_slice()],
                )
                .await
                .db("read node account key")?
                .map(|row| bytes_col::<32>(&row, 0, "account_node_keys.public_key"))
                .transpose()?;
            match known {
                Some(known) if known == public_key => return Ok(false),
                Some(_) => return Err(StorageError::AlreadyExists(Entity::NodeKey)),
                None => {}
            }
            // One private key opens what is sealed to its public half: a key registered twice
            // would open the other's grants too, and outlive the account it was made for.
            let taken: bool = col(
                &w.tx()
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM nodes WHERE public_key = $1)
                             OR EXISTS (SELECT 1 FROM account_node_keys WHERE public_key = $1)",
                        &[&public_key.as_slice()],
                    )
                    .await
                    .db("check node account key")?,
                0,
                "node account key taken",
            )?;
            if taken {
                return Err(StorageError::AlreadyExists(Entity::NodeKey));
            }
            let current = current_ark_version(w.tx(), account).await?;
            if current != grant.as_ref().map(|g| g.ark_version) {
                return Err(StorageError::Conflict);
            }
            w.tx()
                .execute(
                    "INSERT INTO account_node_keys (account_id, node_id, public_key)
                     VALUES ($1, $2, $3)",
                    &[
                        &account.as_bytes().as_slice(),
                        &node.as_bytes().as_slice(),
                        &public_key.as_slice(),
                    ],
                )
                .await
                .db("record node account key")?;
            if let Some(grant) = &grant {
                insert_grant(w, grant).await?;
            }
            w.audit(&audit).await?;
            Ok(true)
        })
    })
    .await
}

pub(crate) async fn ark_accounts(s: &PgStorage) -> Result<Vec<AccountId>> {
    let c = s.client().await?;
    // `rk_account` finds them on the control plane; a replica's feed wrap is in `kek_id`
    // (`ark:<n>`), hence the LIKE, as in SQLite.
    let stmt = c
        .prepare_cached(
            "SELECT DISTINCT account_id FROM deks
             WHERE rk_account OR kek_id LIKE $1 || '%'
             ORDER BY account_id",
        )
        .await
        .db("accounts with account replication keys")?;
    c.query(&stmt, &[&ARK_KEK_ID_PREFIX])
        .await
        .db("accounts with account replication keys")?
        .iter()
        .map(|row| bytes_col(row, 0, "deks.account_id").map(AccountId::from_bytes))
        .collect()
}

pub(crate) async fn account_grant_versions(
    s: &PgStorage,
    account: AccountId,
    node: TokenId,
) -> Result<Vec<u32>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT ark_version FROM account_grants WHERE account_id = $1 AND node_id = $2
             ORDER BY ark_version",
        )
        .await
        .db("account grant versions")?;
    c.query(
        &stmt,
        &[&account.as_bytes().as_slice(), &node.as_bytes().as_slice()],
    )
    .await
    .db("account grant versions")?
    .iter()
    .map(|row| u32_col(row, 0, "account_grants.ark_version"))
    .collect()
}

pub(crate) async fn node_account_keys(
    s: &PgStorage,
    account: AccountId,
) -> Result<Vec<NodeAccountKey>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT k.node_id, k.public_key, n.public_key FROM account_node_keys AS k
             JOIN nodes AS n ON n.id = k.node_id
             WHERE k.account_id = $1 AND n.revoked IS NULL AND n.public_key IS NOT NULL
             ORDER BY k.node_id",
        )
        .await
        .db("node account keys")?;
    c.query(&stmt, &[&account.as_bytes().as_slice()])
        .await
        .db("node account keys")?
        .iter()
        .map(|row| {
            Ok(NodeAccountKey {
                node_id: TokenId::from_bytes(bytes_col(row, 0, "account_node_keys.node_id")?),
                account_key: bytes_col(row, 1, "account_node_keys.public_key")?,
                node_key: bytes_col(row, 2, "nodes.public_key")?,
            })
        })
        .collect()
}

/// One account's ARK rotation, in the caller's write: its part of a node's revocation (which
/// revoked the node first), or a rotation a revocation owed.
pub(crate) async fn rotate(w: &mut WriteTx<'_>, rotation: &ArkRotation) -> Result<()> {
    let account = rotation.account_id;
    // An account deleted since the rotation was prepared (a revocation's, an owed one) is
    // skipped: nothing of it is stored again, and the rotation is not refused.
    if current_ark_version(w.tx(), account).await?.is_none() {
        return Ok(());
    }
    check_grants(&rotation.grants, account, rotation.version)?;
    for grant in &rotation.grants {
        let revoked: Option<Option<i64>> = w
            .tx()
            .query_opt(
                "SELECT revoked FROM nodes WHERE id = $1",
                &[&grant.node_id.as_bytes().as_slice()],
            )
            .await
            .db("check a grant's node")?
            .map(|row| col(&row, 0, "nodes.revoked"))
            .transpose()?;
        if !matches!(revoked, Some(None)) {
            return Err(StorageError::Invalid(
                "a rotation's grants must go to nodes in service only",
            ));
        }
    }
    insert_key(w, account, rotation.version, &rotation.key).await?;
    for grant in &rotation.grants {
        insert_grant(w, grant).await?;
    }
    rewrap_deks(w, &rotation.deks, rotation.version, Some(account)).await?;
    // Every ARK-wrapped DEK of the account must now be under the new version: one made
    // meanwhile would still open with what the revoked node held.
    let left = u64_col(
        &w.tx()
            .query_one(
                "SELECT count(*) FROM deks WHERE account_id = $1
                     AND rk_account AND rk_version IS DISTINCT FROM $2",
                &[&account.as_bytes().as_slice(), &i64::from(rotation.version)],
            )
            .await
            .db("count account deks left")?,
        0,
        "count",
    )?;
    if left != 0 {
        return Err(StorageError::Conflict);
    }
    Ok(())
}

pub(crate) async fn rotate_account_replication_key(
    s: &PgStorage,
    rotation: ArkRotation,
    audit: &[AuditEntry],
) -> Result<()> {
    s.write(audit, move |w| {
        Box::pin(async move { rotate(w, &rotation).await })
    })
    .await
}

pub(crate) async fn accounts_owing_ark_rotation(s: &PgStorage) -> Result<Vec<AccountId>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT DISTINCT g.account_id FROM account_grants AS g
             JOIN nodes AS n ON n.id = g.node_id
             WHERE n.revoked IS NOT NULL
               AND g.ark_version = (SELECT max(version) FROM account_replication_keys
                                    WHERE account_id = g.account_id)
             ORDER BY g.account_id",
        )
        .await
        .db("accounts owing a replication key rotation")?;
    c.query(&stmt, &[])
        .await
        .db("accounts owing a replication key rotation")?
        .iter()
        .map(|row| bytes_col(row, 0, "account_grants.account_id").map(AccountId::from_bytes))
        .collect()
}

pub(crate) async fn account_grants(
    s: &PgStorage,
    account: AccountId,
    version: u32,
) -> Result<Vec<AccountGrant>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT account_id, node_id, ark_version, ephemeral, sealed FROM account_grants
             WHERE account_id = $1 AND ark_version = $2 ORDER BY node_id",
        )
        .await
        .db("account grants")?;
    c.query(
        &stmt,
        &[&account.as_bytes().as_slice(), &i64::from(version)],
    )
    .await
    .db("account grants")?
    .iter()
    .map(grant_from_row)
    .collect()
}
