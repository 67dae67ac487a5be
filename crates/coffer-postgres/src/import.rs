//! `coffer migrate`'s PostgreSQL side: an embedded (SQLite) installation's rows copied into an
//! empty database as they are stored — ciphertexts, wrapped keys, hashes, signatures, audit
//! records and checkpoints — with nothing decrypted or recomputed, in one transaction.
//!
//! The rows come from [`coffer_storage::export_rows`] (a blocking reader on its own thread,
//! batches handed over a bounded channel) and go in with `COPY ... (FORMAT binary)`, table by
//! table, parents first. Each value is converted by the target column's type: SQLite's
//! integers become `BIGINT`, `SMALLINT` or `BOOLEAN` (0 or 1 only), blobs `BYTEA`, text
//! `TEXT`; anything else is refused naming the column. What PostgreSQL derives itself is made
//! by it: `deks.ord` and `outbox.ord` (identity columns SQLite does not have, assigned in the
//! source's insertion order, which the export keeps), `accounts.secret_count` and
//! `stores.secret_count` (columns both have, but here the counting triggers': not copied, kept
//! as the secrets go in, then compared with the source's), and the `change_head` row (a table only PostgreSQL has), set to the
//! source's last entry (or its base when compaction left none); `replication` gets a cluster id
//! if the source had none. Before COMMIT the row count of every table is compared
//! with the source's, and the change log and every audit chain are recomputed from the
//! transaction's own rows and their heads compared with the source's. Any error rolls the whole
//! import back: nothing needs undoing after a COMMIT (which the append-only tables' guards
//! would refuse anyway).

use std::collections::HashMap;
use std::path::Path;

use coffer_storage::{
    AuditCheckpoint, AuditRecord, ChainReport, ChainSource, ChangeRecord, EXPORT_TABLES, LogState,
    RawValue, Result, StorageError, verify_chains_in,
};
use coffer_types::AccountId;
use tokio_postgres::types::{ToSql, Type};

use crate::PgStorage;
use crate::db::DbResultExt;
use crate::tx::WRITER_LOCK;

/// Rows per batch handed from the reader to the importer.
const BATCH: usize = 1000;

/// One batch, owned, as it crosses threads.
struct Batch {
    table: &'static str,
    columns: Vec<String>,
    rows: Vec<Vec<RawValue>>,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The target holds an instance or rows; the message names what it holds.
    #[error("{0}")]
    NotEmpty(String),
    /// The copy, checked in its transaction before COMMIT, does not verify or its heads are
    /// not the source's; it was rolled back.
    #[error("{0}")]
    Verify(String),
    /// The COMMIT failed and the database could not be read to tell whether it took effect:
    /// the target may hold the whole copy (or nothing).
    #[error("{0}")]
    CommitUnknown(String),
    /// Reading the source, writing the target, or a count that did not match.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Rows copied, per table, in [`EXPORT_TABLES`]'s order.
pub type ImportCounts = Vec<(&'static str, u64)>;

/// What [`PgStorage::import_sqlite`] committed.
#[derive(Debug)]
pub struct Imported {
    /// Rows copied per table, equal to the source's.
    pub counts: ImportCounts,
    /// The copy's chains, verified before COMMIT: its log equals the source's (with the cluster
    /// id the import kept or made), its audit heads the source's.
    pub report: ChainReport,
}

/// The import's open transaction as a [`ChainSource`]: the chain check reads what it wrote.
struct InTx<'a>(&'a deadpool_postgres::Transaction<'a>);

#[async_trait::async_trait]
impl ChainSource for InTx<'_> {
    async fn log_state(&self) -> Result<LogState> {
        crate::change_log::log_state_in(self.0).await
    }
    async fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeRecord>> {
        crate::change_log::read_changes(self.0, after, limit).await
    }
    async fn audit_accounts(&self) -> Result<Vec<AccountId>> {
        crate::audit::audit_accounts_in(self.0).await
    }
    async fn audit_head(&self, account: AccountId) -> Result<Option<(u64, [u8; 32])>> {
        crate::audit::head(self.0, account).await
    }
    async fn audit_entries(
        &self,
        account: AccountId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        crate::audit::audit_entries_in(self.0, account, after_seq, limit).await
    }
    async fn audit_checkpoints(
        &self,
        account: AccountId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditCheckpoint>> {
        crate::audit::audit_checkpoints_in(self.0, account, after_seq, limit).await
    }
}

impl PgStorage {
    /// Copies every row of the SQLite database at `path` into this database, which must hold
    /// no instance and no row (refused with [`ImportError::NotEmpty`], naming the instance or
    /// the first table that holds rows). One transaction under the writer lock, which also
    /// makes the cluster id when the source had none. Before COMMIT, the row counts are
    /// compared with the source's and the chains recomputed in the transaction
    /// (`verify_chains_in`) and compared with `expected`, the source's as `verify_chains`
    /// reported them. On any error nothing is committed (the append-only tables could not be
    /// emptied after).
    pub async fn import_sqlite(
        &self,
        path: &Path,
        expected: &ChainReport,
    ) -> Result<Imported, ImportError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.db("begin the import")?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITER_LOCK])
            .await
            .db("take the writer lock")?;
        check_empty(&tx).await?;

        let (send, mut receive) = tokio::sync::mpsc::channel::<Batch>(4);
        let source = path.to_owned();
        let reader = tokio::task::spawn_blocking(move || {
            coffer_storage::export_rows(&source, BATCH, |rows| {
                send.blocking_send(Batch {
                    table: rows.table,
                    columns: rows.columns.to_vec(),
                    rows: rows.rows,
                })
                .map_err(|_| StorageError::Unavailable("the import stopped".into()))
            })
        });

        let mut source_counts: HashMap<(&'static str, Vec<u8>), i64> = HashMap::new();
        let mut types: HashMap<&'static str, Vec<Type>> = HashMap::new();
        let mut failed = None;
        while let Some(batch) = receive.recv().await {
            if let Err(e) = copy_batch(&tx, &batch, &mut types, &mut source_counts).await {
                failed = Some(e);
                break;
            }
        }
        // Dropping the receiver ends a reader still sending.
        drop(receive);
        let exported = reader
            .await
            .map_err(|e| StorageError::Unavailable(format!("the export thread failed: {e}")))?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        let counts = exported?;

        for &(table, expected) in &counts {
            let row = tx
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .db("count the rows copied")?;
            let found: i64 = row.get(0);
            if u64::try_from(found).ok() != Some(expected) {
                return Err(StorageError::Corrupted(format!(
                    "{table}: {found} rows copied, the source holds {expected}"
                ))
                .into());
            }
        }
        for (table, what) in [("accounts", "account"), ("stores", "store")] {
            for row in tx
                .query(&format!("SELECT id, secret_count FROM {table}"), &[])
                .await
                .db("read the secret counts")?
            {
                let id: Vec<u8> = row.get(0);
                let count: i64 = row.get(1);
                if source_counts.get(&(table, id.clone())) != Some(&count) {
                    return Err(StorageError::Corrupted(format!(
                        "{table}: {what} {}'s secret count is not the source's",
                        hex::encode(&id)
                    ))
                    .into());
                }
            }
        }
        let head = set_head(&tx).await?;
        // A store no edge ever followed has no cluster id: it gets one in this transaction, so
        // the committed copy is a whole instance and nothing is written after the COMMIT.
        crate::change_log::ensure_cluster_id_in(&tx).await?;
        // The chains, recomputed from what this transaction wrote, before anything is
        // committed: a copy that does not verify is rolled back, never undone after.
        let report = verify_chains_in(&InTx(&tx))
            .await
            .map_err(|e| ImportError::Verify(format!("the copy does not verify: {e}")))?;
        let source_log = LogState {
            cluster_id: report.log.cluster_id,
            ..expected.log
        };
        if expected
            .log
            .cluster_id
            .is_some_and(|id| Some(id) != report.log.cluster_id)
            || report.log != source_log
        {
            return Err(ImportError::Verify(format!(
                "the copy's change log (base {}, head {}) is not the source's (base {}, head {})",
                report.log.base_seq,
                report.log.head_seq,
                expected.log.base_seq,
                expected.log.head_seq
            )));
        }
        if report.audit_heads != expected.audit_heads {
            return Err(ImportError::Verify(
                "the copy's audit heads are not the source's".into(),
            ));
        }
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&crate::write::HEAD_CHANNEL, &head.to_string()],
        )
        .await
        .db("announce the head")?;
        if let Err(e) = tx.commit().await {
            // The connection may have failed after the server committed: look.
            drop(client);
            match crate::change_log::log_state(self).await {
                Ok(state) if state == report.log => {}
                Ok(_) => return Err(crate::db::db_error("commit the import", &e).into()),
                Err(check) => {
                    return Err(ImportError::CommitUnknown(format!(
                        "the COMMIT failed ({}), and whether it took effect could not be read \
                         ({check})",
                        crate::db::db_error("commit the import", &e)
                    )));
                }
            }
        }
        self.shared
            .committed_seq
            .fetch_max(head, std::sync::atomic::Ordering::AcqRel);
        self.shared.head.send_if_modified(|h| {
            let moved = *h < head;
            *h = (*h).max(head);
            moved
        });
        Ok(Imported { counts, report })
    }
}

/// Refuses a database that holds any row an instance writes (or a moved head row).
async fn check_empty(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), ImportError> {
    if let Some(row) = tx
        .query_opt("SELECT cluster_id FROM replication WHERE id = 1", &[])
        .await
        .db("look for an instance")?
    {
        let cluster: Vec<u8> = row.get(0);
        return Err(ImportError::NotEmpty(format!(
            "the target database already holds the Coffer instance with cluster id {}: migrate needs an empty database",
            hex::encode(cluster)
        )));
    }
    for (table, _) in EXPORT_TABLES {
        let row = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])
            .await
            .db("look for rows")?;
        if row.get::<_, bool>(0) {
            return Err(ImportError::NotEmpty(format!(
                "the target database is not empty: table {table} holds rows; migrate needs an empty database"
            )));
        }
    }
    let head: i64 = tx
        .query_one("SELECT seq FROM change_head WHERE id = 1", &[])
        .await
        .db("read the head row")?
        .get(0);
    if head != 0 {
        return Err(ImportError::NotEmpty(format!(
            "the target database is not empty: its change log's head is at seq {head}; migrate needs an empty database"
        )));
    }
    Ok(())
}

/// `COPY`s one batch into its table.
async fn copy_batch(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &Batch,
    types: &mut HashMap<&'static str, Vec<Type>>,
    secret_counts: &mut HashMap<(&'static str, Vec<u8>), i64>,
) -> Result<()> {
    let table = batch.table;
    // accounts' and stores' secret_count are the triggers' to keep: remembered, compared after.
    let skip = matches!(table, "accounts" | "stores")
        .then(|| batch.columns.iter().position(|c| c == "secret_count"))
        .flatten();
    let columns: Vec<&str> = batch
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != skip)
        .map(|(_, c)| c.as_str())
        .collect();
    let list = columns.join(", ");
    if !types.contains_key(table) {
        let stmt = tx
            .prepare(&format!("SELECT {list} FROM {table}"))
            .await
            .db("read the target's columns")?;
        types.insert(
            table,
            stmt.columns().iter().map(|c| c.type_().clone()).collect(),
        );
    }
    if batch.rows.is_empty() {
        return Ok(());
    }
    let column_types = &types[table];
    if let Some(i) = skip {
        let id = batch.columns.iter().position(|c| c == "id");
        for row in &batch.rows {
            if let (Some(RawValue::Blob(id)), Some(RawValue::Integer(n))) =
                (id.and_then(|i| row.get(i)), row.get(i))
            {
                secret_counts.insert((table, id.clone()), *n);
            }
        }
    }
    let sink = tx
        .copy_in(&format!("COPY {table} ({list}) FROM STDIN (FORMAT binary)"))
        .await
        .db("start copying")?;
    let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, column_types);
    let mut writer = std::pin::pin!(writer);
    for row in &batch.rows {
        let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::with_capacity(columns.len());
        for (i, value) in row.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            let at = values.len();
            values.push(convert(table, columns[at], &column_types[at], value)?);
        }
        let refs: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect();
        writer.as_mut().write(&refs).await.db("copy rows")?;
    }
    writer.as_mut().finish().await.db("copy rows")?;
    Ok(())
}

/// One SQLite value as the PostgreSQL column of type `ty` takes it.
fn convert(
    table: &str,
    column: &str,
    ty: &Type,
    value: &RawValue,
) -> Result<Box<dyn ToSql + Sync + Send>> {
    let mismatch = || {
        StorageError::Corrupted(format!(
            "{table}.{column}: a stored value does not fit PostgreSQL's {ty} column"
        ))
    };
    Ok(match (value, ty) {
        (RawValue::Null, &Type::INT8) => Box::new(None::<i64>),
        (RawValue::Null, &Type::INT2) => Box::new(None::<i16>),
        (RawValue::Null, &Type::BOOL) => Box::new(None::<bool>),
        (RawValue::Null, &Type::BYTEA) => Box::new(None::<Vec<u8>>),
        (RawValue::Null, &Type::TEXT) => Box::new(None::<String>),
        (RawValue::Integer(v), &Type::INT8) => Box::new(*v),
        (RawValue::Integer(v), &Type::INT2) => Box::new(i16::try_from(*v).map_err(|_| mismatch())?),
        (RawValue::Integer(0), &Type::BOOL) => Box::new(false),
        (RawValue::Integer(1), &Type::BOOL) => Box::new(true),
        (RawValue::Blob(b), &Type::BYTEA) => Box::new(b.clone()),
        (RawValue::Text(t), &Type::TEXT) => Box::new(t.clone()),
        _ => return Err(mismatch()),
    })
}

/// Sets the head row to the copied log's head: its last entry, else its base (a log compacted
/// to nothing), else the empty log's (left as the migration made it). Returns its seq.
async fn set_head(tx: &deadpool_postgres::Transaction<'_>) -> Result<u64> {
    let last = tx
        .query_opt(
            "SELECT seq, hash, at FROM changes ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .db("read the copied log's head")?;
    let head = match last {
        Some(row) => Some(row),
        None => tx
            .query_opt(
                "SELECT base_seq, base_hash, base_at FROM replication WHERE id = 1",
                &[],
            )
            .await
            .db("read the copied log's base")?,
    };
    let Some(row) = head else {
        return Ok(0);
    };
    let (seq, hash, at): (i64, Vec<u8>, i64) = (row.get(0), row.get(1), row.get(2));
    tx.execute(
        "UPDATE change_head SET seq = $1, hash = $2, at = $3 WHERE id = 1",
        &[&seq, &hash, &at],
    )
    .await
    .db("move the head row")?;
    u64::try_from(seq).map_err(|_| StorageError::Corrupted("changes.seq: negative".into()))
}
