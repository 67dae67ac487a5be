//! The audit log in SQLite: appending to the per-account chains (on the writer, inside the
//! savepoint of the operation being recorded) and reading them back.
//!
//! The chain head of an account is read from the `audit` table right before each append, inside
//! the writing transaction (one primary-key lookup). It is never cached: the connection sees its
//! own uncommitted rows, a savepoint rolled back takes its rows and so its head with it, and
//! `BEGIN IMMEDIATE` keeps other connections (other processes) out until the COMMIT. So seqs are
//! gap-free in commit order without any state to repair.

use std::fmt::Write as _;

use coffer_types::{AccountId, SecretId, StoreId, TokenId};
use rusqlite::types::Value;
use rusqlite::{Connection, Row, params, params_from_iter};

use super::codec::{
    Constraint, DbResultExt, col, constraint, db_error, direction_sql, id_col, offset, query_all,
    query_opt, ts_col,
};
use super::writer::WriteCx;
use crate::{
    AuditCheckpoint, AuditEntry, AuditQuery, AuditRecord, Entity, Page, Result, StorageError,
};

// The column list and its decoder change together: the decoder reads by position.
macro_rules! audit_cols {
    () => {
        "account_id, seq, at, action, outcome, actor_token, store_id, secret_id, payload, \
         prev_hash, hash"
    };
}

/// Refuses entries that cannot be meaningful records, before anything is written.
pub(super) fn check(entries: &[AuditEntry]) -> Result<()> {
    if entries
        .iter()
        .any(|e| e.action.is_empty() || e.outcome.is_empty())
    {
        return Err(StorageError::Invalid(
            "an audit entry needs an action and an outcome",
        ));
    }
    Ok(())
}

/// Appends `entries`, in order, each to its own account's chain, in the current savepoint. An
/// error leaves the caller to roll the savepoint back (the writer does), so a partly appended
/// list never commits.
pub(super) fn append(cx: &mut WriteCx<'_>, entries: &[AuditEntry]) -> Result<()> {
    check(entries)?;
    if let Err(e) = append_each(cx, entries) {
        // The savepoint is rolled back: every entry of the list is lost, not only the one
        // the database refused.
        cx.audit_failed(entries.len());
        return Err(e);
    }
    cx.audit_appended(entries.len());
    Ok(())
}

fn append_each(cx: &mut WriteCx<'_>, entries: &[AuditEntry]) -> Result<()> {
    for entry in entries {
        let (last, prev_hash) =
            head(cx.conn, entry.account_id)?.unwrap_or((0, AuditRecord::GENESIS_HASH));
        let seq = last + 1;
        let seq_sql = i64::try_from(seq)
            .map_err(|_| StorageError::Unavailable("audit sequence exhausted".into()))?;
        let hash = AuditRecord::compute_hash(&prev_hash, seq, entry);
        let mut stmt = cx
            .conn
            .prepare_cached(concat!(
                "INSERT INTO audit (",
                audit_cols!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ))
            .db("append audit entry")?;
        let inserted = stmt.execute(params![
            entry.account_id.as_bytes(),
            seq_sql,
            entry.at.unix_micros(),
            entry.action,
            entry.outcome,
            entry.actor_token.as_ref().map(TokenId::as_bytes),
            entry.store_id.as_ref().map(StoreId::as_bytes),
            entry.secret_id.as_ref().map(SecretId::as_bytes),
            entry.payload,
            prev_hash,
            hash,
        ]);
        inserted.db("append audit entry")?;
    }
    Ok(())
}

pub(super) fn put_checkpoint(cx: &mut WriteCx<'_>, cp: &AuditCheckpoint) -> Result<()> {
    let seq = i64::try_from(cp.seq)
        .ok()
        .filter(|s| *s >= 1)
        .ok_or(StorageError::Invalid(
            "an audit checkpoint's seq must be at least 1 (and fit storage)",
        ))?;
    let mut stmt = cx
        .conn
        .prepare_cached(
            "INSERT INTO audit_checkpoints (account_id, seq, hash, mac, at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .db("put audit checkpoint")?;
    stmt.execute(params![
        cp.account_id.as_bytes(),
        seq,
        cp.hash,
        cp.mac,
        cp.at.unix_micros()
    ])
    .map_err(|e| match constraint(&e) {
        Some(Constraint::PrimaryKey) => StorageError::AlreadyExists(Entity::AuditCheckpoint),
        _ => db_error("put audit checkpoint", &e),
    })?;
    Ok(())
}

/// The account's last record's seq and hash (read by the writer inside its transaction, and by
/// readers).
pub(super) fn head(conn: &Connection, account: AccountId) -> Result<Option<(u64, [u8; 32])>> {
    query_opt(
        conn,
        "SELECT seq, hash FROM audit WHERE account_id = ?1 ORDER BY seq DESC LIMIT 1",
        [account.as_bytes()],
        "read audit head",
        |row| {
            let seq = seq_col(row, 0)?;
            let hash = col(row, 1, "audit.hash").map_err(|e| in_entry(seq, e))?;
            Ok((seq, hash))
        },
    )
}

fn seq_col(row: &Row<'_>, idx: usize) -> Result<u64> {
    let raw: i64 = col(row, idx, "audit.seq")?;
    u64::try_from(raw).map_err(|_| StorageError::Corrupted("audit.seq: negative".into()))
}

/// Names the entry a decoding error is about.
fn in_entry(seq: u64, e: StorageError) -> StorageError {
    match e {
        StorageError::Corrupted(m) => StorageError::Corrupted(format!("audit entry {seq}: {m}")),
        other => other,
    }
}

fn opt_id_col(row: &Row<'_>, idx: usize, what: &'static str) -> Result<Option<[u8; 16]>> {
    col::<Option<Vec<u8>>>(row, idx, what)?
        .map(|bytes| {
            <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| {
                StorageError::Corrupted(format!("{what}: id is {} bytes, not 16", bytes.len()))
            })
        })
        .transpose()
}

/// Decodes a row as stored: no hash is recomputed here.
fn record_from_row(row: &Row<'_>) -> Result<AuditRecord> {
    let seq = seq_col(row, 1)?;
    let decode = || -> Result<AuditRecord> {
        Ok(AuditRecord {
            seq,
            prev_hash: col(row, 9, "audit.prev_hash")?,
            hash: col(row, 10, "audit.hash")?,
            entry: AuditEntry {
                account_id: AccountId::from_bytes(id_col(row, 0, "audit.account_id")?),
                at: ts_col(row, 2, "audit.at")?,
                action: col(row, 3, "audit.action")?,
                outcome: col(row, 4, "audit.outcome")?,
                actor_token: opt_id_col(row, 5, "audit.actor_token")?.map(TokenId::from_bytes),
                store_id: opt_id_col(row, 6, "audit.store_id")?.map(StoreId::from_bytes),
                secret_id: opt_id_col(row, 7, "audit.secret_id")?.map(SecretId::from_bytes),
                payload: col(row, 8, "audit.payload")?,
            },
        })
    };
    decode().map_err(|e| in_entry(seq, e))
}

/// Run inside one read transaction by the caller, so the count and the page agree.
pub(super) fn list(
    conn: &Connection,
    account: AccountId,
    query: &AuditQuery,
) -> Result<Page<AuditRecord>> {
    let mut filter = String::from("account_id = ?1");
    let mut values: Vec<Value> = vec![Value::Blob(account.as_bytes().to_vec())];
    // Only fixed column names and operators are spliced in; every value is bound.
    let mut add = |column_op: &str, value: Value| {
        values.push(value);
        // Writing to a String cannot fail.
        let _ = write!(filter, " AND {column_op} ?{}", values.len());
    };
    if let Some(from) = query.from {
        add("at >=", Value::Integer(from.unix_micros()));
    }
    if let Some(to) = query.to {
        add("at <", Value::Integer(to.unix_micros()));
    }
    if let Some(actor) = query.actor_token {
        add("actor_token =", Value::Blob(actor.as_bytes().to_vec()));
    }
    if let Some(action) = &query.action {
        add("action =", Value::Text(action.clone()));
    }
    if let Some(outcome) = &query.outcome {
        add("outcome =", Value::Text(outcome.clone()));
    }
    if let Some(store) = query.store_id {
        add("store_id =", Value::Blob(store.as_bytes().to_vec()));
    }
    if let Some(secret) = query.secret_id {
        add("secret_id =", Value::Blob(secret.as_bytes().to_vec()));
    }
    let total = query_opt(
        conn,
        &format!("SELECT count(*) FROM audit WHERE {filter}"),
        params_from_iter(values.iter()),
        "count audit entries",
        |row| col::<i64>(row, 0, "count"),
    )?
    .unwrap_or(0);

    let dir = direction_sql(query.direction);
    values.push(Value::Integer(i64::from(query.per_page)));
    values.push(Value::Integer(offset(query.page, query.per_page)));
    let (limit, skip) = (values.len() - 1, values.len());
    let sql = format!(
        concat!(
            "SELECT ",
            audit_cols!(),
            " FROM audit WHERE {filter} ORDER BY seq {dir} LIMIT ?{limit} OFFSET ?{skip}"
        ),
        filter = filter,
        dir = dir,
        limit = limit,
        skip = skip
    );
    let items = query_all(
        conn,
        &sql,
        params_from_iter(values.iter()),
        "list audit entries",
        record_from_row,
    )?;
    Ok(Page {
        items,
        total_count: u64::try_from(total).unwrap_or(0),
    })
}

/// Raw rows after `after_seq`, in seq order, for a verifier: nothing is checked here.
pub(super) fn entries(
    conn: &Connection,
    account: AccountId,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<AuditRecord>> {
    let Ok(after) = i64::try_from(after_seq) else {
        return Ok(Vec::new());
    };
    if limit == 0 {
        return Ok(Vec::new());
    }
    query_all(
        conn,
        concat!(
            "SELECT ",
            audit_cols!(),
            " FROM audit WHERE account_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
        ),
        params![
            account.as_bytes(),
            after,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        "read audit entries",
        record_from_row,
    )
}

/// Accounts with audit rows or checkpoints. Each table is walked one account at a time (the
/// next larger id off the primary key), so this costs a lookup per account, not a scan of
/// every entry.
pub(super) fn accounts(conn: &Connection) -> Result<Vec<AccountId>> {
    query_all(
        conn,
        "WITH RECURSIVE
             a(id) AS (
                 SELECT min(account_id) FROM audit
                 UNION ALL
                 SELECT (SELECT min(account_id) FROM audit WHERE account_id > a.id)
                 FROM a WHERE a.id IS NOT NULL
             ),
             c(id) AS (
                 SELECT min(account_id) FROM audit_checkpoints
                 UNION ALL
                 SELECT (SELECT min(account_id) FROM audit_checkpoints WHERE account_id > c.id)
                 FROM c WHERE c.id IS NOT NULL
             )
         SELECT id FROM a WHERE id IS NOT NULL
         UNION
         SELECT id FROM c WHERE id IS NOT NULL
         ORDER BY id",
        [],
        "list audit accounts",
        |row| id_col(row, 0, "audit.account_id").map(AccountId::from_bytes),
    )
}

pub(super) fn checkpoints(
    conn: &Connection,
    account: AccountId,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<AuditCheckpoint>> {
    let Ok(after) = i64::try_from(after_seq) else {
        return Ok(Vec::new());
    };
    if limit == 0 {
        return Ok(Vec::new());
    }
    query_all(
        conn,
        "SELECT account_id, seq, hash, mac, at FROM audit_checkpoints
         WHERE account_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        params![
            account.as_bytes(),
            after,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        "read audit checkpoints",
        checkpoint_from_row,
    )
}

pub(super) fn last_checkpoint(
    conn: &Connection,
    account: AccountId,
) -> Result<Option<AuditCheckpoint>> {
    query_opt(
        conn,
        "SELECT account_id, seq, hash, mac, at FROM audit_checkpoints
         WHERE account_id = ?1 ORDER BY seq DESC LIMIT 1",
        [account.as_bytes()],
        "read the last audit checkpoint",
        checkpoint_from_row,
    )
}

fn checkpoint_from_row(row: &Row<'_>) -> Result<AuditCheckpoint> {
    let raw: i64 = col(row, 1, "audit_checkpoints.seq")?;
    Ok(AuditCheckpoint {
        account_id: AccountId::from_bytes(id_col(row, 0, "audit_checkpoints.account_id")?),
        seq: u64::try_from(raw)
            .map_err(|_| StorageError::Corrupted("audit_checkpoints.seq: negative".into()))?,
        hash: col(row, 2, "audit_checkpoints.hash")?,
        mac: col(row, 3, "audit_checkpoints.mac")?,
        at: ts_col(row, 4, "audit_checkpoints.at")?,
    })
}
