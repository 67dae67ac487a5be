//! API tokens: create, read, list, revoke, touch (last used), replace. Tokens are control-plane
//! only: nothing here appends to the change log.

use coffer_storage::{AuditEntry, Entity, Result, StorageError, TokenRecord};
use coffer_types::{AccountId, Timestamp, TokenId};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStorage;
use crate::db::{DbResultExt, Violation, bytes_col, col, db_error, opt_ts_col, ts_col, violation};

// The column list and its decoder change together: the decoder reads by position.
const TOKEN_COLS: &str =
    "id, account_id, name, hash, role, operator, created, expires, revoked, last_used";

fn token_from_row(row: &Row) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: TokenId::from_bytes(bytes_col(row, 0, "tokens.id")?),
        account_id: AccountId::from_bytes(bytes_col(row, 1, "tokens.account_id")?),
        name: col(row, 2, "tokens.name")?,
        hash: bytes_col(row, 3, "tokens.hash")?,
        role: col(row, 4, "tokens.role")?,
        operator: col(row, 5, "tokens.operator")?,
        created: ts_col(row, 6, "tokens.created")?,
        expires: opt_ts_col(row, 7, "tokens.expires")?,
        revoked: opt_ts_col(row, 8, "tokens.revoked")?,
        last_used: opt_ts_col(row, 9, "tokens.last_used")?,
    })
}

async fn read_token(c: &impl GenericClient, id: TokenId) -> Result<Option<TokenRecord>> {
    let stmt = c
        .prepare_cached(&format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = $1"))
        .await
        .db("get token")?;
    c.query_opt(&stmt, &[&id.as_bytes().as_slice()])
        .await
        .db("get token")?
        .map(|row| token_from_row(&row))
        .transpose()
}

async fn insert_token(c: &impl GenericClient, token: &TokenRecord) -> Result<()> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO tokens (id, account_id, name, hash, role, operator, created, expires,
                                 revoked, last_used)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await
        .db("create token")?;
    c.execute(
        &stmt,
        &[
            &token.id.as_bytes().as_slice(),
            &token.account_id.as_bytes().as_slice(),
            &token.name,
            &token.hash.as_slice(),
            &token.role,
            &token.operator,
            &token.created.unix_micros(),
            &token.expires.map(|t| t.unix_micros()),
            &token.revoked.map(|t| t.unix_micros()),
            &token.last_used.map(|t| t.unix_micros()),
        ],
    )
    .await
    .map_err(|e| match violation(&e) {
        Some(Violation::Unique("tokens_pkey")) => StorageError::AlreadyExists(Entity::Token),
        Some(Violation::ForeignKey(_)) => StorageError::NotFound(Entity::Account),
        _ => db_error("create token", &e),
    })?;
    Ok(())
}

/// Revokes the account's token `id` at `at` in the caller's write; returns the updated record.
async fn revoke(
    c: &impl GenericClient,
    account: AccountId,
    id: TokenId,
    at: Timestamp,
) -> Result<TokenRecord> {
    let token = read_token(c, id)
        .await?
        .filter(|t| t.account_id == account)
        .ok_or(StorageError::NotFound(Entity::Token))?;
    if token.revoked.is_some() {
        return Err(StorageError::AlreadyRevoked);
    }
    // Under the writer lock the row is as just read; the guard restates it.
    let stmt = c
        .prepare_cached("UPDATE tokens SET revoked = $1 WHERE id = $2 AND revoked IS NULL")
        .await
        .db("revoke token")?;
    let changed = c
        .execute(&stmt, &[&at.unix_micros(), &id.as_bytes().as_slice()])
        .await
        .db("revoke token")?;
    if changed != 1 {
        return Err(StorageError::AlreadyRevoked);
    }
    Ok(TokenRecord {
        revoked: Some(at),
        ..token
    })
}

pub(crate) async fn create_token(
    s: &PgStorage,
    token: TokenRecord,
    audit: &[AuditEntry],
) -> Result<()> {
    s.write(audit, move |w| {
        Box::pin(async move { insert_token(w.tx(), &token).await })
    })
    .await
}

/// [`create_token`] unless the account holds a token already (`Conflict`): writes run under the
/// writer lock every instance takes, so nothing comes between the look and the insert.
pub(crate) async fn create_first_token(
    s: &PgStorage,
    token: TokenRecord,
    audit: &[AuditEntry],
) -> Result<()> {
    s.write(audit, move |w| {
        Box::pin(async move {
            let stmt = w
                .tx()
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM tokens WHERE account_id = $1)")
                .await
                .db("look for an account's tokens")?;
            let held = w
                .tx()
                .query_one(&stmt, &[&token.account_id.as_bytes().as_slice()])
                .await
                .db("look for an account's tokens")?;
            if held.get::<_, bool>(0) {
                return Err(StorageError::Conflict);
            }
            insert_token(w.tx(), &token).await
        })
    })
    .await
}

pub(crate) async fn get_token(s: &PgStorage, id: TokenId) -> Result<Option<TokenRecord>> {
    read_token(&s.client().await?, id).await
}

pub(crate) async fn list_tokens(s: &PgStorage, account: AccountId) -> Result<Vec<TokenRecord>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {TOKEN_COLS} FROM tokens WHERE account_id = $1 ORDER BY created, id"
        ))
        .await
        .db("list tokens")?;
    c.query(&stmt, &[&account.as_bytes().as_slice()])
        .await
        .db("list tokens")?
        .iter()
        .map(token_from_row)
        .collect()
}

pub(crate) async fn revoke_token(
    s: &PgStorage,
    account: AccountId,
    id: TokenId,
    at: Timestamp,
    audit: &[AuditEntry],
) -> Result<TokenRecord> {
    s.write(audit, move |w| {
        Box::pin(async move { revoke(w.tx(), account, id, at).await })
    })
    .await
}

pub(crate) async fn touch_tokens(s: &PgStorage, used: Vec<(TokenId, Timestamp)>) -> Result<()> {
    if used.is_empty() {
        return Ok(());
    }
    s.write(&[], move |w| {
        Box::pin(async move {
            // `last_used` becomes the later of the stored and the given time (a NULL is older
            // than any); a row already as recent is not rewritten; an unknown id matches none.
            let stmt = w
                .tx()
                .prepare_cached(
                    "UPDATE tokens SET last_used = $2
                     WHERE id = $1 AND (last_used IS NULL OR last_used < $2)",
                )
                .await
                .db("touch tokens")?;
            for (id, at) in &used {
                w.tx()
                    .execute(&stmt, &[&id.as_bytes().as_slice(), &at.unix_micros()])
                    .await
                    .db("touch tokens")?;
            }
            Ok(())
        })
    })
    .await
}

pub(crate) async fn replace_tokens(
    s: &PgStorage,
    token: TokenRecord,
    revoke_ids: Vec<TokenId>,
    at: Timestamp,
    audit: &[AuditEntry],
) -> Result<()> {
    s.write(audit, move |w| {
        Box::pin(async move {
            for id in revoke_ids {
                revoke(w.tx(), token.account_id, id, at).await?;
            }
            insert_token(w.tx(), &token).await
        })
    })
    .await
}
