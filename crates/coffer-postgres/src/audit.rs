//! The audit log: appending to per-account chains (inside writes, see [`append`]), reading
//! them back, checkpoints, and the record of access-event batches from edges.
//!
//! An account's chain head is read from `audit` right before each append, inside the write's
//! transaction, which holds the writer lock: no other instance appends meanwhile, and a
//! write rolled back takes its rows, and so its head, with it. Seqs stay gap-free in commit
//! order with any number of instances.

use coffer_storage::{
    AuditCheckpoint, AuditEntry, AuditQuery, AuditRecord, Entity, Page, Result, StorageError,
};
use coffer_types::{AccountId, SecretId, StoreId, Timestamp, TokenId};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStorage;
use crate::db::{
    DbResultExt, Params, Violation, bytes_col, col, db_error, direction_sql, offset, opt_bytes_col,
    sql_limit, ts_col, u64_col, violation,
};
use crate::tx::TxFuture;

// The column list and its decoder change together: the decoder reads by position.
const AUDIT_COLS: &str = "account_id, seq, at, action, outcome, actor_token, store_id, secret_id, \
                          payload, prev_hash, hash";

/// Names the entry a decoding error is about.
fn in_entry(seq: u64, e: StorageError) -> StorageError {
    match e {
        StorageError::Corrupted(m) => StorageError::Corrupted(format!("audit entry {seq}: {m}")),
        other => other,
    }
}

/// Decodes a row as stored: no hash is recomputed here.
fn record_from_row(row: &Row) -> Result<AuditRecord> {
    let seq = u64_col(row, 1, "audit.seq")?;
    let decode = || -> Result<AuditRecord> {
        Ok(AuditRecord {
            seq,
            prev_hash: bytes_col(row, 9, "audit.prev_hash")?,
            hash: bytes_col(row, 10, "audit.hash")?,
            entry: AuditEntry {
                account_id: AccountId::from_bytes(bytes_col(row, 0, "audit.account_id")?),
                at: ts_col(row, 2, "audit.at")?,
                action: col(row, 3, "audit.action")?,
                outcome: col(row, 4, "audit.outcome")?,
                actor_token: opt_bytes_col(row, 5, "audit.actor_token")?.map(TokenId::from_bytes),
                store_id: opt_bytes_col(row, 6, "audit.store_id")?.map(StoreId::from_bytes),
                secret_id: opt_bytes_col(row, 7, "audit.secret_id")?.map(SecretId::from_bytes),
                payload: col(row, 8, "audit.payload")?,
            },
        })
    };
    decode().map_err(|e| in_entry(seq, e))
}

fn checkpoint_from_row(row: &Row) -> Result<AuditCheckpoint> {
    Ok(AuditCheckpoint {
        account_id: AccountId::from_bytes(bytes_col(row, 0, "audit_checkpoints.account_id")?),
        seq: u64_col(row, 1, "audit_checkpoints.seq")?,
        hash: bytes_col(row, 2, "audit_checkpoints.hash")?,
        mac: col(row, 3, "audit_checkpoints.mac")?,
        at: ts_col(row, 4, "audit_checkpoints.at")?,
    })
}

/// The account's last record's seq and hash.
pub(crate) async fn head(
    c: &impl GenericClient,
    account: AccountId,
) -> Result<Option<(u64, [u8; 32])>> {
    let stmt = c
        .prepare_cached(
            "SELECT seq, hash FROM audit WHERE account_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .await
        .db("read audit head")?;
    c.query_opt(&stmt, &[&account.as_bytes().as_slice()])
        .await
        .db("read audit head")?
        .map(|row| {
            let seq = u64_col(&row, 0, "audit.seq")?;
            let hash = bytes_col(&row, 1, "audit.hash").map_err(|e| in_entry(seq, e))?;
            Ok((seq, hash))
        })
        .transpose()
}

pub(crate) async fn append_audit(s: &PgStorage, entries: &[AuditEntry]) -> Result<()> {
    if entries.is_empty() {
        // Nothing to record: no transaction needed.
        return Ok(());
    }
    s.write(entries, |_| Box::pin(async { Ok(()) })).await
}

pub(crate) async fn list_audit(
    s: &PgStorage,
    account: AccountId,
    query: &AuditQuery,
) -> Result<Page<AuditRecord>> {
    let query = query.clone();
    s.read_snapshot(move |tx| -> TxFuture<'_, _> {
        Box::pin(async move {
            let mut params = Params::default();
            // Only fixed column names and operators are spliced in; every value is bound.
            let mut filter = format!("account_id = {}", params.push(account.as_bytes().to_vec()));
            let mut add = |column_op: &str, placeholder: String| {
                filter.push_str(&format!(" AND {column_op} {placeholder}"));
            };
            if let Some(from) = query.from {
                add("at >=", params.push(from.unix_micros()));
            }
            if let Some(to) = query.to {
                add("at <", params.push(to.unix_micros()));
            }
            if let Some(actor) = query.actor_token {
                add("actor_token =", params.push(actor.as_bytes().to_vec()));
            }
            if let Some(action) = &query.action {
                add("action =", params.push(action.clone()));
            }
            if let Some(outcome) = &query.outcome {
                add("outcome =", params.push(outcome.clone()));
            }
            if let Some(store) = query.store_id {
                add("store_id =", params.push(store.as_bytes().to_vec()));
            }
            if let Some(secret) = query.secret_id {
                add("secret_id =", params.push(secret.as_bytes().to_vec()));
            }
            let count = tx
                .prepare_cached(&format!("SELECT count(*) FROM audit WHERE {filter}"))
                .await
                .db("count audit entries")?;
            let total: i64 = col(
                &tx.query_one(&count, &params.refs())
                    .await
                    .db("count audit entries")?,
                0,
                "count",
            )?;
            let limit = params.push(i64::from(query.per_page));
            let skip = params.push(offset(query.page, query.per_page));
            let page = tx
                .prepare_cached(&format!(
                    "SELECT {AUDIT_COLS} FROM audit WHERE {filter} ORDER BY seq {} LIMIT {limit} \
                     OFFSET {skip}",
                    direction_sql(query.direction)
                ))
                .await
                .db("list audit entries")?;
            let items = tx
                .query(&page, &params.refs())
                .await
                .db("list audit entries")?
                .iter()
                .map(record_from_row)
                .collect::<Result<Vec<_>>>()?;
            Ok(Page {
                items,
                total_count: u64::try_from(total).unwrap_or(0),
            })
        })
    })
    .await
}

pub(crate) async fn audit_entries(
    s: &PgStorage,
    account: AccountId,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<AuditRecord>> {
    audit_entries_in(&s.client().await?, account, after_seq, limit).await
}

pub(crate) async fn audit_entries_in(
    c: &impl GenericClient,
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
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {AUDIT_COLS} FROM audit WHERE account_id = $1 AND seq > $2 ORDER BY seq \
             LIMIT $3"
        ))
        .await
        .db("read audit entries")?;
    c.query(
        &stmt,
        &[&account.as_bytes().as_slice(), &after, &sql_limit(limit)],
    )
    .await
    .db("read audit entries")?
    .iter()
    .map(record_from_row)
    .collect()
}

pub(crate) async fn audit_head(
    s: &PgStorage,
    account: AccountId,
) -> Result<Option<(u64, [u8; 32])>> {
    head(&s.client().await?, account).await
}

pub(crate) async fn audit_accounts(s: &PgStorage) -> Result<Vec<AccountId>> {
    audit_accounts_in(&s.client().await?).await
}

pub(crate) async fn audit_accounts_in(c: &impl GenericClient) -> Result<Vec<AccountId>> {
    // Each table walked one account at a time (the next larger id off the primary key): a
    // lookup per account, not a scan of every entry.
    let stmt = c
        .prepare_cached(
            "WITH RECURSIVE
                 a(id) AS (
                     (SELECT account_id FROM audit ORDER BY account_id LIMIT 1)
                     UNION ALL
                     SELECT (SELECT account_id FROM audit WHERE account_id > a.id
                             ORDER BY account_id LIMIT 1)
                     FROM a WHERE a.id IS NOT NULL
                 ),
                 c(id) AS (
                     (SELECT account_id FROM audit_checkpoints ORDER BY account_id LIMIT 1)
                     UNION ALL
                     SELECT (SELECT account_id FROM audit_checkpoints WHERE account_id > c.id
                             ORDER BY account_id LIMIT 1)
                     FROM c WHERE c.id IS NOT NULL
                 )
             SELECT id FROM a WHERE id IS NOT NULL
             UNION
             SELECT id FROM c WHERE id IS NOT NULL
             ORDER BY id",
        )
        .await
        .db("list audit accounts")?;
    c.query(&stmt, &[])
        .await
        .db("list audit accounts")?
        .iter()
        .map(|row| bytes_col(row, 0, "audit.account_id").map(AccountId::from_bytes))
        .collect()
}

pub(crate) async fn put_audit_checkpoint(s: &PgStorage, cp: AuditCheckpoint) -> Result<()> {
    let seq = i64::try_from(cp.seq)
        .ok()
        .filter(|s| *s >= 1)
        .ok_or(StorageError::Invalid(
            "an audit checkpoint's seq must be at least 1 (and fit storage)",
        ))?;
    s.write(&[], move |w| {
        Box::pin(async move {
            let stmt = w
                .tx()
                .prepare_cached(
                    "INSERT INTO audit_checkpoints (account_id, seq, hash, mac, at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .await
                .db("put audit checkpoint")?;
            w.tx()
                .execute(
                    &stmt,
                    &[
                        &cp.account_id.as_bytes().as_slice(),
                        &seq,
                        &cp.hash.as_slice(),
                        &cp.mac,
                        &cp.at.unix_micros(),
                    ],
                )
                .await
                .map_err(|e| match violation(&e) {
                    Some(Violation::Unique("audit_checkpoints_pkey")) => {
                        StorageError::AlreadyExists(Entity::AuditCheckpoint)
                    }
                    _ => db_error("put audit checkpoint", &e),
                })?;
            Ok(())
        })
    })
    .await
}

pub(crate) async fn audit_checkpoints(
    s: &PgStorage,
    account: AccountId,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<AuditCheckpoint>> {
    audit_checkpoints_in(&s.client().await?, account, after_seq, limit).await
}

pub(crate) async fn audit_checkpoints_in(
    c: &impl GenericClient,
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
    let stmt = c
        .prepare_cached(
            "SELECT account_id, seq, hash, mac, at FROM audit_checkpoints
             WHERE account_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .await
        .db("read audit checkpoints")?;
    c.query(
        &stmt,
        &[&account.as_bytes().as_slice(), &after, &sql_limit(limit)],
    )
    .await
    .db("read audit checkpoints")?
    .iter()
    .map(checkpoint_from_row)
    .collect()
}

pub(crate) async fn last_audit_checkpoint(
    s: &PgStorage,
    account: AccountId,
) -> Result<Option<AuditCheckpoint>> {
    let c = s.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT account_id, seq, hash, mac, at FROM audit_checkpoints
             WHERE account_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .await
        .db("read the last audit checkpoint")?;
    c.query_opt(&stmt, &[&account.as_bytes().as_slice()])
        .await
        .db("read the last audit checkpoint")?
        .map(|row| checkpoint_from_row(&row))
        .transpose()
}

pub(crate) async fn record_access_batch(
    s: &PgStorage,
    batch_id: [u8; 16],
    node: TokenId,
    audit: &[AuditEntry],
) -> Result<bool> {
    check(audit)?;
    let audit = audit.to_vec();
    // The entries go in only when the batch is new: appended inside the operation rather
    // than by `write` (which appends its own list unconditionally).
    s.write(&[], move |w| {
        Box::pin(async move {
            let stmt = w
                .tx()
                .prepare_cached(
                    "INSERT INTO access_batches (id, node_id, received) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO NOTHING",
                )
                .await
                .db("record access batch")?;
            let inserted = w
                .tx()
                .execute(
                    &stmt,
                    &[
                        &batch_id.as_slice(),
                        &node.as_bytes().as_slice(),
                        &Timestamp::now().unix_micros(),
                    ],
                )
                .await
                .db("record access batch")?;
            if inserted == 1 {
                w.audit(&audit).await?;
            }
            Ok(inserted == 1)
        })
    })
    .await
}

/// Refuses entries that cannot be meaningful records, before anything is written.
pub(crate) fn check(entries: &[AuditEntry]) -> Result<()> {
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

/// Each account's audit chain head (seq, hash) as a write transaction left it.
pub(crate) type Heads = std::collections::HashMap<AccountId, (u64, [u8; 32])>;

/// Appends `entries`, in order, each to its own account's chain, in the write's transaction
/// (under the writer lock, so each account's head read here is its last committed entry or
/// one this transaction appended). `heads` caches the heads this transaction read or moved:
/// an account's head is read once per batch, and the entries go in one statement. An error
/// leaves the caller to roll back (and to restore `heads`): a partly appended list never
/// commits.
pub(crate) async fn append(
    tx: &deadpool_postgres::Transaction<'_>,
    heads: &mut Heads,
    entries: &[AuditEntry],
) -> Result<()> {
    check(entries)?;
    if entries.is_empty() {
        return Ok(());
    }
    let mut rows = AuditRows::default();
    for entry in entries {
        let (last, prev_hash) = match heads.get(&entry.account_id) {
            Some(head) => *head,
            None => head(tx, entry.account_id)
                .await?
                .unwrap_or((0, AuditRecord::GENESIS_HASH)),
        };
        let seq = last + 1;
        let seq_sql = i64::try_from(seq)
            .map_err(|_| StorageError::Unavailable("audit sequence exhausted".into()))?;
        let hash = AuditRecord::compute_hash(&prev_hash, seq, entry);
        heads.insert(entry.account_id, (seq, hash));
        rows.account.push(entry.account_id.as_bytes().to_vec());
        rows.seq.push(seq_sql);
        rows.at.push(entry.at.unix_micros());
        rows.action.push(entry.action.clone());
        rows.outcome.push(entry.outcome.clone());
        rows.actor
            .push(entry.actor_token.map(|t| t.as_bytes().to_vec()));
        rows.store
            .push(entry.store_id.map(|t| t.as_bytes().to_vec()));
        rows.secret
            .push(entry.secret_id.map(|t| t.as_bytes().to_vec()));
        rows.payload.push(entry.payload.clone());
        rows.prev_hash.push(prev_hash.to_vec());
        rows.hash.push(hash.to_vec());
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO audit (account_id, seq, at, action, outcome, actor_token, store_id,
                                secret_id, payload, prev_hash, hash)
             SELECT * FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::text[], $5::text[],
                                  $6::bytea[], $7::bytea[], $8::bytea[], $9::bytea[],
                                  $10::bytea[], $11::bytea[])",
        )
        .await
        .db("append audit entry")?;
    tx.execute(
        &insert,
        &[
            &rows.account,
            &rows.seq,
            &rows.at,
            &rows.action,
            &rows.outcome,
            &rows.actor,
            &rows.store,
            &rows.secret,
            &rows.payload,
            &rows.prev_hash,
            &rows.hash,
        ],
    )
    .await
    .db("append audit entry")?;
    Ok(())
}

/// Audit rows column by column, for one multi-row insert.
#[derive(Default)]
struct AuditRows {
    account: Vec<Vec<u8>>,
    seq: Vec<i64>,
    at: Vec<i64>,
    action: Vec<String>,
    outcome: Vec<String>,
    actor: Vec<Option<Vec<u8>>>,
    store: Vec<Option<Vec<u8>>>,
    secret: Vec<Option<Vec<u8>>>,
    payload: Vec<Vec<u8>>,
    prev_hash: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
}
