//! The embedded SQLite backend.
//!
//! Shape: one writer thread owns the only read-write connection and applies write jobs with
//! group commit (see `writer`); reads go to a small pool of read-only connections on tokio's
//! blocking pool (see `readers`). WAL mode lets the readers run while the writer writes, and
//! every read sees exactly the transactions committed before it started. The on-disk layout is
//! in docs/storage-format.md.

mod account_keys;
mod audit;
mod backup;
mod codec;
mod deks;
mod export;
mod integrity;
mod key_versions;
mod lifecycle;
mod log_head;
mod node_keys;
mod nodes;
mod readers;
mod reads;
mod replica;
mod replication;
mod rewrap;
mod schema;
mod snapshot;
mod writer;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coffer_types::{
    AccountId, DekId, SecretId, SecretName, ServiceId, ServiceName, StoreId, Timestamp, TokenId,
    Version,
};

use self::codec::DbResultExt;
pub use self::export::{EXPORT_TABLES, RawRows, RawValue, export_rows};
use self::readers::Readers;
pub use self::replica::SnapshotInstall;
use self::writer::{WriteCx, WriterHandle};
use crate::{
    AccountRecord, AuditCheckpoint, AuditEntry, AuditQuery, AuditRecord, ChangeRecord, DekRecord,
    DestroyedDek, FeedSignature, FeedSigner, KekUsage, LogState, NewSecret, Page, Reseal, Result,
    Rewrap, SealedValue, SecretQuery, SecretRecord, SecretUpdate, ServiceQuery, ServiceRecord,
    ServiceTokenRecord, SnapshotPart, Storage, StoreQuery, StoreRecord, StoredKey, TokenRecord,
    VersionRecord, WrappedKeyRecord, WriteObserver, WriteStats,
};

/// Tuning knobs of [`SqliteStorage`]. `Default` suits a small server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// Read-only connections (and so concurrent reads) at most.
    pub max_readers: usize,
    /// Write jobs committed together in one transaction at most.
    pub max_batch: usize,
    /// How long a statement waits for a lock held by another connection before failing.
    pub busy_timeout: Duration,
    /// Sync the WAL at every COMMIT (`synchronous=FULL`), so an acknowledged write survives
    /// power loss. An edge replica turns it off (`NORMAL`): it survives process crashes, and
    /// after a power loss it re-fetches the entries it lost, since its position is committed
    /// with its data.
    pub sync_commits: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            max_readers: 4,
            max_batch: 256,
            busy_timeout: Duration::from_secs(5),
            sync_commits: true,
        }
    }
}

/// SQLite storage in one database file (WAL mode, synchronous=FULL).
///
/// Reads need a tokio runtime (they run on its blocking pool); `open` does not. Dropping the
/// value stops the writer once its queue is drained (and any [`SnapshotInstall`] of it is
/// gone); [`SqliteStorage::close`] (which is [`Storage::shutdown`]) also waits for it, and
/// works through a shared reference.
///
/// Edges use the same type as a replica: see [`SqliteStorage::apply_entries`],
/// [`SqliteStorage::install_snapshot`] and the outbox methods.
pub struct SqliteStorage {
    path: PathBuf,
    /// Shared with snapshot installs in progress ([`SnapshotInstall`]).
    writer: Arc<WriterHandle>,
    readers: Arc<Readers>,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The path only: nothing read from the database belongs in logs.
        f.debug_struct("SqliteStorage")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Test support: see [`SqliteStorage::hold_writer`].
#[cfg(feature = "test-support")]
#[derive(Debug)]
pub struct WriterHold {
    release: std::sync::mpsc::Sender<()>,
    _done: tokio::sync::oneshot::Receiver<crate::Result<()>>,
}

#[cfg(feature = "test-support")]
impl WriterHold {
    /// Lets the writer go on.
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path` and migrates its schema.
    pub fn open(path: &Path) -> crate::Result<SqliteStorage> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// [`SqliteStorage::open`] with explicit tuning. Blocks while it opens and migrates; call
    /// it at startup (or from `spawn_blocking`).
    pub fn open_with(path: &Path, options: SqliteOptions) -> crate::Result<SqliteStorage> {
        let conn = schema::open_writer(path, options.busy_timeout, options.sync_commits)?;
        let writer = Arc::new(WriterHandle::start(conn, options.max_batch)?);
        let readers = Arc::new(Readers::new(
            path.to_owned(),
            options.busy_timeout,
            options.max_readers,
        ));
        Ok(SqliteStorage {
            path: path.to_owned(),
            writer,
            readers,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the writer has done so far (to observe group commit).
    pub fn write_stats(&self) -> WriteStats {
        self.writer.stats()
    }

    /// Test support: holds the writer inside a transaction until the returned hold is released
    /// (or dropped), so that a test can queue writes behind it and see what one batch does.
    #[cfg(feature = "test-support")]
    pub async fn hold_writer(&self) -> crate::Result<WriterHold> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let done = self
            .writer
            .submit(move |_cx| {
                let _ = started_tx.send(());
                // Returns on release or when the hold is dropped.
                let _ = held.recv();
                Ok(())
            })
            .await?;
        // Once the writer runs the hold, it has taken its batch; what is queued now waits.
        let _ = started.await;
        Ok(WriterHold {
            release,
            _done: done,
        })
    }

    /// Test support: how many write jobs are queued and not yet taken by the writer.
    #[cfg(feature = "test-support")]
    pub fn queued_writes(&self) -> usize {
        self.writer.queued()
    }

    /// Stops accepting writes, finishes the queued ones, stops the writer thread and closes the
    /// read-write connection. Later writes fail with `Unavailable`; reads keep working (they use
    /// their own read-only connections). Idempotent.
    pub async fn close(&self) {
        self.writer.close().await;
    }

    /// Refuses every further read (`Unavailable`) and closes the read-only connections (those
    /// in use when their read ends): for a replica about to be deleted, so that no open
    /// connection keeps its file readable. Snapshots being streamed read on connections of
    /// their own and finish. Call [`SqliteStorage::close`] first.
    pub fn close_reads(&self) {
        self.readers.close();
    }

    /// Runs a mutation and then appends its audit entries, in one savepoint: if either fails,
    /// neither is written (see the `Storage` trait's "Audit entries carried by writes").
    async fn write_audited<T, F>(&self, audit: &[AuditEntry], op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCx<'_>) -> Result<T> + Send + 'static,
    {
        self.submit_audited(audit, op).await?.await
    }

    /// [`SqliteStorage::write_audited`], returning once the job is queued, with its outcome to
    /// come. Jobs run in the order they were queued.
    async fn submit_audited<T, F>(
        &self,
        audit: &[AuditEntry],
        op: F,
    ) -> Result<impl Future<Output = Result<T>> + Send + 'static>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCx<'_>) -> Result<T> + Send + 'static,
    {
        // Refused before the job is queued; `append` checks again on the writer.
        audit::check(audit)?;
        let audit = audit.to_vec();
        let answer = self
            .writer
            .submit(move |cx| {
                let out = op(cx)?;
                audit::append(cx, &audit)?;
                Ok(out)
            })
            .await?;
        Ok(async move {
            answer.await.map_err(|_| {
                crate::StorageError::Unavailable("the writer stopped before answering".into())
            })?
        })
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        self.readers.run(move |conn| f(conn)).await
    }

    /// Like `read`, inside one read transaction so that several statements see one snapshot.
    async fn read_snapshot<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        self.readers
            .run(move |conn| {
                let tx = conn.transaction().db("begin read")?;
                let out = f(&tx)?;
                // Ending a read-only transaction; commit and rollback are equivalent.
                tx.commit().db("end read")?;
                Ok(out)
            })
            .await
    }
}

#[async_trait]
impl Storage for SqliteStorage {
    async fn shutdown(&self) {
        self.close().await;
    }

    async fn get_instance_key(&self, purpose: &str) -> Result<Option<WrappedKeyRecord>> {
        let purpose = purpose.to_owned();
        self.read(move |c| reads::get_instance_key(c, &purpose))
            .await
    }

    async fn put_instance_key_if_absent(
        &self,
        purpose: &str,
        key: WrappedKeyRecord,
    ) -> Result<WrappedKeyRecord> {
        let purpose = purpose.to_owned();
        self.writer
            .run(move |cx| writes::put_instance_key_if_absent(cx, &purpose, &key))
            .await
    }

    async fn create_account(&self, account: AccountRecord, audit: &[AuditEntry]) -> Result<()> {
        self.write_audited(audit, move |cx| writes::create_account(cx, &account))
            .await
    }

    async fn get_account(&self, id: AccountId) -> Result<Option<AccountRecord>> {
        self.read(move |c| reads::get_account(c, id)).await
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>> {
        self.read(reads::list_accounts).await
    }

    async fn set_account_quota(
        &self,
        account: AccountId,
        quota: Option<u64>,
        audit: &[AuditEntry],
    ) -> Result<()> {
        self.write_audited(audit, move |cx| {
            writes::set_account_quota(cx, account, quota)
        })
        .await
    }

    async fn delete_account(&self, id: AccountId, audit: &[AuditEntry]) -> Result<()> {
        self.write_audited(audit, move |cx| writes::delete_account(cx, id))
            .await
    }

    async fn create_token(&self, token: TokenRecord, audit: &[AuditEntry]) -> Result<()> {
        self.write_audited(audit, move |cx| writes::create_token(cx, &token))
            .await
    }

    async fn create_first_token(&self, token: TokenRecord, audit: &[AuditEntry]) -> Result<()> {
        self.write_audited(audit, move |cx| writes::create_first_token(cx, &token))
            .await
    }

    async fn get_token(&self, id: TokenId) -> Result<Option<TokenRecord>> {
        self.read(move |c| reads::get_token(c, id)).await
    }

    async fn list_tokens(&self, account: AccountId) -> Result<Vec<TokenRecord>> {
        self.read(move |c| reads::list_tokens(c, account)).await
    }

    async fn revoke_token(
        &self,
        account: AccountId,
        id: TokenId,
        at: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<TokenRecord> {
        self.write_audited(audit, move |cx| writes::revoke_token(cx, account, id, at))
            .await
    }

    async fn touch_tokens(&self, used: Vec<(TokenId, Timestamp)>) -> Result<()> {
        if used.is_empty() {
            // Nothing to record: no need to wake the writer or commit an empty transaction.
            return Ok(());
        }
        self.writer
            .run(move |cx| writes::touch_tokens(cx, &used))
            .await
    }

    async fn replace_tokens(
        &self,
        token: TokenRecord,
        revoke: Vec<TokenId>,
        at: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<()> {
        self.write_audited(audit, move |cx| {
            for id in revoke {
                writes::revoke_token(cx, token.account_id, id, at)?;
            }
            writes::create_token(cx, &token)
        })
        .await
    }

    async fn put_dek(&self, dek: DekRecord) -> Result<()> {
        self.writer.run(move |cx| deks::put_dek(cx, &dek)).await
    }

    async fn get_dek(&self, id: DekId) -> Result<Option<DekRecord>> {
        self.read(move |c| reads::get_dek(c, id)).await
    }

    async fn latest_dek(&self, account: AccountId) -> Result<Option<DekRecord>> {
        self.read(move |c| reads::latest_dek(c, account)).await
    }

    async fn kek_usage(&self) -> Result<Vec<KekUsage>> {
        self.read(rewrap::kek_usage).await
    }

    async fn keys_wrapped_by(&self, kek_id: &str, limit: usize) -> Result<Vec<StoredKey>> {
        let kek_id = kek_id.to_owned();
        self.read(move |c| rewrap::keys_wrapped_by(c, &kek_id, limit))
            .await
    }

    async fn rewrap_keys(&self, rewraps: Vec<Rewrap>) -> Result<u64> {
        self.writer
            .run(move |cx| rewrap::rewrap_keys(cx, &rewraps))
            .await
    }

    async fn account_dek_usage(&self, account: AccountId) -> Result<Vec<KekUsage>> {
        self.read(move |c| rewrap::account_dek_usage(c, account))
            .await
    }

    async fn account_deks_not_wrapped_by(
        &self,
        account: AccountId,
        kek_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredKey>> {
        let kek_id = kek_id.to_owned();
        self.read(move |c| rewrap::account_deks_not_wrapped_by(c, account, &kek_id, limit))
            .await
    }

    async fn retire_kek(&self, kek_id: &str) -> Result<()> {
        let kek_id = kek_id.to_owned();
        let at = Timestamp::now().unix_micros();
        self.writer
            .run(move |cx| rewrap::retire_kek(cx, &kek_id, at))
            .await
    }

    async fn is_kek_retired(&self, kek_id: &str) -> Result<bool> {
        let kek_id = kek_id.to_owned();
        self.read(move |c| rewrap::is_retired(c, &kek_id)).await
    }

    async fn values_sealed_before(
        &self,
        account: AccountId,
        cutoff: Timestamp,
        current: Option<DekId>,
        limit: usize,
    ) -> Result<Vec<SealedValue>> {
        self.read(move |c| lifecycle::values_sealed_before(c, account, cutoff, current, limit))
            .await
    }

    async fn count_sealed_before(&self, account: AccountId, cutoff: Timestamp) -> Result<u64> {
        self.read(move |c| lifecycle::count_sealed_before(c, account, cutoff))
            .await
    }

    async fn reseal_values(&self, dek: Option<DekRecord>, reseals: Vec<Reseal>) -> Result<u64> {
        self.writer
            .run(move |cx| lifecycle::reseal_values(cx, dek.as_ref(), &reseals))
            .await
    }

    async fn prune_versions(&self, keep: u32, limit: usize) -> Result<u64> {
        self.writer
            .run(move |cx| lifecycle::prune_versions(cx, keep, limit))
            .await
    }

    async fn destroy_unreferenced_deks(
        &self,
        keep: Vec<DekId>,
        limit: usize,
    ) -> Result<Vec<DestroyedDek>> {
        self.writer
            .run(move |cx| lifecycle::destroy_unreferenced_deks(cx, &keep, limit))
            .await
    }

    async fn compact_destroyed_deks(&self) -> Result<Option<u64>> {
        self.writer.run(lifecycle::compact_destroyed_deks).await
    }

    async fn create_store(
        &self,
        store: StoreRecord,
        max_stores: u64,
        audit: &[AuditEntry],
    ) -> Result<()> {
        self.write_audited(audit, move |cx| {
            writes::create_store(cx, &store, max_stores)
        })
        .await
    }

    async fn get_store(&self, account: AccountId, id: StoreId) -> Result<Option<StoreRecord>> {
        self.read(move |c| reads::get_store(c, account, id)).await
    }

    async fn list_stores(
        &self,
        account: AccountId,
        query: &StoreQuery,
    ) -> Result<Page<StoreRecord>> {
        let query = query.clone();
        self.read_snapshot(move |c| reads::list_stores(c, account, &query))
            .await
    }

    async fn delete_store(
        &self,
        account: AccountId,
        id: StoreId,
        force: bool,
        audit: &[AuditEntry],
    ) -> Result<()> {
        self.write_audited(audit, move |cx| {
            writes::delete_store(cx, account, id, force)
        })
        .await
    }

    async fn create_secrets(
        &self,
        account: AccountId,
        store: StoreId,
        secrets: Vec<NewSecret>,
        quota: u64,
        audit: &[AuditEntry],
    ) -> Result<()> {
        self.write_audited(audit, move |cx| {
            writes::create_secrets(cx, account, store, &secrets, quota)
        })
        .await
    }

    async fn get_secret(
        &self,
        account: AccountId,
        store: StoreId,
        id: SecretId,
    ) -> Result<Option<SecretRecord>> {
        self.read(move |c| reads::get_secret(c, account, store, id))
            .await
    }

    async fn list_secrets(
        &self,
        account: AccountId,
        store: StoreId,
        query: &SecretQuery,
    ) -> Result<Page<SecretRecord>> {
        let query = query.clone();
        self.read_snapshot(move |c| reads::list_secrets(c, account, store, &query))
            .await
    }

    async fn update_secret(
        &self,
        update: SecretUpdate,
        audit: &[AuditEntry],
    ) -> Result<SecretRecord> {
        self.write_audited(audit, move |cx| writes::update_secret(cx, update))
            .await
    }

    async fn queue_update_secret(
        &self,
        update: SecretUpdate,
        audit: &[AuditEntry],
    ) -> Result<crate::Pending<SecretRecord>> {
        let answer = self
            .submit_audited(audit, move |cx| writes::update_secret(cx, update))
            .await?;
        Ok(Box::pin(answer))
    }

    async fn delete_secrets(
        &self,
        account: AccountId,
        store: StoreId,
        ids: &[SecretId],
        audit: &[AuditEntry],
    ) -> Result<()> {
        let ids = ids.to_vec();
        self.write_audited(audit, move |cx| {
            writes::delete_secrets(cx, account, store, &ids)
        })
        .await
    }

    async fn get_version(
        &self,
        secret: SecretId,
        version: Version,
    ) -> Result<Option<VersionRecord>> {
        self.read(move |c| reads::get_version(c, secret, version))
            .await
    }

    async fn secret_count(&self, account: AccountId) -> Result<u64> {
        self.read(move |c| reads::secret_count(c, account)).await
    }

    async fn create_service(
        &self,
        service: ServiceRecord,
        token: ServiceTokenRecord,
        audit: &[AuditEntry],
    ) -> Result<()> {
        self.write_audited(audit, move |cx| {
            writes::create_service(cx, &service, &token)
        })
        .await
    }

    async fn update_service(
        &self,
        service: ServiceRecord,
        audit: &[AuditEntry],
    ) -> Result<ServiceRecord> {
        self.write_audited(audit, move |cx| writes::update_service(cx, service))
            .await
    }

    async fn get_service(
        &self,
        account: AccountId,
        id: ServiceId,
    ) -> Result<Option<ServiceRecord>> {
        self.read_snapshot(move |c| reads::get_service(c, account, id))
            .await
    }

    async fn get_service_by_name(
        &self,
        account: AccountId,
        name: &ServiceName,
    ) -> Result<Option<ServiceRecord>> {
        let name = name.clone();
        self.read_snapshot(move |c| reads::get_service_by_name(c, account, &name))
            .await
    }

    async fn list_services(
        &self,
        account: AccountId,
        query: &ServiceQuery,
    ) -> Result<Page<ServiceRecord>> {
        let query = query.clone();
        self.read_snapshot(move |c| reads::list_services(c, account, &query))
            .await
    }

    async fn delete_service(
        &self,
        account: AccountId,
        id: ServiceId,
        audit: &[AuditEntry],
    ) -> Result<()> {
        self.write_audited(audit, move |cx| writes::delete_service(cx, account, id))
            .await
    }

    async fn create_service_token(
        &self,
        token: ServiceTokenRecord,
        revoke_others_at: Option<Timestamp>,
        audit: &[AuditEntry],
    ) -> Result<Vec<ServiceTokenRecord>> {
        self.write_audited(audit, move |cx| {
            writes::create_service_token(cx, &token, revoke_others_at)
        })
        .await
    }

    async fn revoke_service_tokens(
        &self,
        account: AccountId,
        service: ServiceId,
        only: Option<TokenId>,
        at: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<Vec<ServiceTokenRecord>> {
        self.write_audited(audit, move |cx| {
            writes::revoke_service_tokens(cx, account, service, only, at)
        })
        .await
    }

    async fn get_service_token(&self, id: TokenId) -> Result<Option<ServiceTokenRecord>> {
        self.read(move |c| reads::get_service_token(c, id)).await
    }

    async fn list_service_tokens(
        &self,
        account: AccountId,
        service: ServiceId,
    ) -> Result<Vec<ServiceTokenRecord>> {
        self.read(move |c| reads::list_service_tokens(c, account, service))
            .await
    }

    async fn create_node(&self, node: crate::NodeRecord, audit: &[AuditEntry]) -> Result<()> {
        self.write_audited(audit, move |cx| nodes::create_node(cx, &node))
            .await
    }

    async fn latest_replication_key(&self) -> Result<Option<(u32, WrappedKeyRecord)>> {
        self.read(node_keys::latest_replication_key).await
    }

    async fn instance_key_rk(&self, purpose: &str) -> Result<Option<crate::RkWrap>> {
        let purpose = purpose.to_owned();
        self.read(move |c| node_keys::instance_key_rk(c, &purpose))
            .await
    }

    async fn list_deks(&self) -> Result<Vec<DekRecord>> {
        self.read(reads::list_deks).await
    }

    async fn backfill_rk_wraps(
        &self,
        version: u32,
        deks: Vec<(DekId, Vec<u8>)>,
        instance_keys: Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        self.writer
            .run(move |cx| node_keys::backfill(cx, version, &deks, &instance_keys))
            .await
    }

    async fn register_node_key(
        &self,
        node: TokenId,
        public_key: [u8; 32],
        grant: crate::NodeGrant,
        audit: &[AuditEntry],
    ) -> Result<bool> {
        self.write_audited(audit, move |cx| {
            node_keys::register(cx, node, public_key, &grant)
        })
        .await
    }

    async fn node_public_keys(&self) -> Result<Vec<(TokenId, [u8; 32])>> {
        self.read(node_keys::node_public_keys).await
    }

    async fn node_grant(&self, node: TokenId, version: u32) -> Result<Option<crate::NodeGrant>> {
        self.read(move |c| node_keys::node_grant(c, node, version))
            .await
    }

    async fn grants_of_version(&self, version: u32) -> Result<Vec<crate::NodeGrant>> {
        self.read(move |c| node_keys::grants_of_version(c, version))
            .await
    }

    async fn revoke_node_rotating(
        &self,
        id: TokenId,
        at: Timestamp,
        rotation: crate::RkRotation,
        audit: &[AuditEntry],
    ) -> Result<crate::NodeRecord> {
        self.write_audited(audit, move |cx| {
            node_keys::revoke_rotating(cx, id, at, &rotation)
        })
        .await
    }

    async fn close_dek_gate(&self) -> Result<crate::DekGateHold> {
        // One process writes to the file (its data dir's lock): its in-memory gate suffices.
        Ok(crate::DekGateHold::not_in_storage())
    }

    async fn wait_dek_gate(&self) -> Result<()> {
        Ok(())
    }

    async fn get_node(&self, id: TokenId) -> Result<Option<crate::NodeRecord>> {
        self.read(move |c| nodes::get_node(c, id)).await
    }

    async fn list_nodes(&self) -> Result<Vec<crate::NodeRecord>> {
        self.read(nodes::list_nodes).await
    }

    async fn revoke_node(
        &self,
        id: TokenId,
        at: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<crate::NodeRecord> {
        self.write_audited(audit, move |cx| nodes::revoke_node(cx, id, at))
            .await
    }

    async fn get_secret_by_name(
        &self,
        account: AccountId,
        store: StoreId,
        name: &SecretName,
    ) -> Result<Option<SecretRecord>> {
        let name = name.clone();
        self.read(move |c| reads::get_secret_by_name(c, account, store, &name))
            .await
    }

    async fn current_value(
        &self,
        account: AccountId,
        store: StoreId,
        name: &SecretName,
    ) -> Result<Option<(SecretRecord, VersionRecord)>> {
        // One statement on one reader connection: a snapshot without a transaction.
        let name = name.clone();
        self.read(move |c| reads::current_value(c, account, store, &name))
            .await
    }

    fn committed_head(&self) -> u64 {
        self.writer.committed_seq()
    }

    async fn change_head(&self) -> Result<u64> {
        self.read_snapshot(reads::change_head).await
    }

    async fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeRecord>> {
        self.read_snapshot(move |c| reads::changes_after(c, after, limit))
            .await
    }

    async fn feed_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<ChangeRecord>, Vec<FeedSignature>)> {
        self.read_snapshot(move |c| reads::feed_after(c, after, limit))
            .await
    }

    fn set_feed_signer(&self, signer: Arc<dyn FeedSigner>) -> bool {
        self.writer.set_signer(signer)
    }

    fn set_write_observer(&self, observer: Arc<dyn WriteObserver>) -> bool {
        self.writer.set_observer(observer)
    }

    fn write_stats(&self) -> WriteStats {
        self.writer.stats()
    }

    async fn sign_head(&self) -> Result<()> {
        self.writer
            .run(|cx| {
                cx.sign_head();
                Ok(())
            })
            .await
    }

    async fn log_state(&self) -> Result<LogState> {
        self.read_snapshot(replication::log_state).await
    }

    async fn ensure_cluster_id(&self) -> Result<[u8; 16]> {
        self.writer.run(replication::ensure_cluster_id).await
    }

    fn subscribe_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.writer.subscribe_head()
    }

    async fn compact_log(&self, through: u64) -> Result<()> {
        self.writer
            .run(move |cx| replication::compact_log(cx, through))
            .await
    }

    async fn snapshot(&self, out: tokio::sync::mpsc::Sender<SnapshotPart>) -> Result<()> {
        self.readers
            .run_dedicated(move |conn| snapshot::stream(conn, &out))
            .await
    }

    async fn record_access_batch(
        &self,
        batch_id: [u8; 16],
        node: TokenId,
        audit: &[AuditEntry],
    ) -> Result<bool> {
        // Refused before the job is queued; `append` checks again on the writer.
        audit::check(audit)?;
        let audit = audit.to_vec();
        self.writer
            .run(move |cx| {
                let new = replication::record_access_batch(cx, batch_id, node)?;
                if new {
                    audit::append(cx, &audit)?;
                }
                Ok(new)
            })
            .await
    }

    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<()> {
        if entries.is_empty() {
            // Nothing to record: no need to wake the writer or commit an empty transaction.
            return Ok(());
        }
        self.write_audited(entries, |_| Ok(())).await
    }

    async fn list_audit(
        &self,
        account: AccountId,
        query: &AuditQuery,
    ) -> Result<Page<AuditRecord>> {
        let query = query.clone();
        self.read_snapshot(move |c| audit::list(c, account, &query))
            .await
    }

    async fn audit_entries(
        &self,
        account: AccountId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        self.read(move |c| audit::entries(c, account, after_seq, limit))
            .await
    }

    async fn audit_head(&self, account: AccountId) -> Result<Option<(u64, [u8; 32])>> {
        self.read(move |c| audit::head(c, account)).await
    }

    async fn audit_accounts(&self) -> Result<Vec<AccountId>> {
        self.read_snapshot(audit::accounts).await
    }

    async fn put_audit_checkpoint(&self, cp: AuditCheckpoint) -> Result<()> {
        self.writer
            .run(move |cx| audit::put_checkpoint(cx, &cp))
            .await
    }

    async fn audit_checkpoints(
        &self,
        account: AccountId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditCheckpoint>> {
        self.read(move |c| audit::checkpoints(c, account, after_seq, limit))
            .await
    }

    async fn last_audit_checkpoint(&self, account: AccountId) -> Result<Option<AuditCheckpoint>> {
        self.read(move |c| audit::last_checkpoint(c, account)).await
    }

    async fn check_integrity(&self) -> Result<crate::IntegrityReport> {
        self.read_snapshot(integrity::check).await
    }

    async fn recount_secrets(&self) -> Result<crate::Recounted> {
        self.writer.run(integrity::recount).await
    }
}

#[cfg(test)]
mod tests;
