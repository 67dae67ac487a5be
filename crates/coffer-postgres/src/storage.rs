//! `impl Storage for PgStorage` and `impl ArkStorage for PgStorage`: delegation only. Each
//! method is implemented in its area's module, so that areas can be built side by side.

use std::sync::Arc;

use async_trait::async_trait;
use coffer_storage::{
    AccountGrant, AccountRecord, ArkRotation, ArkStorage, AuditCheckpoint, AuditEntry, AuditQuery,
    AuditRecord, ChangeRecord, DekGateHold, DekRecord, DestroyedDek, FeedSignature, FeedSigner,
    KekUsage, LogState, NewSecret, NodeAccountKey, NodeGrant, NodeRecord, Page, Pending, Reseal,
    Result, Rewrap, RkRotation, RkWrap, SealedValue, SecretQuery, SecretRecord, SecretUpdate,
    ServiceQuery, ServiceRecord, ServiceTokenRecord, SnapshotPart, Storage, StoreQuery,
    StoreRecord, StoredKey, TokenRecord, VersionRecord, WrappedKeyRecord, WriteObserver,
    WriteStats,
};
use coffer_types::{
    AccountId, DekId, SecretId, SecretName, ServiceId, ServiceName, StoreId, Timestamp, TokenId,
    Version,
};

use crate::{
    PgStorage, accounts, ark, audit, change_log, dek_gate, keys, lifecycle, nodes, replication,
    secrets, services, snapshot, stores, tokens,
};

#[async_trait]
impl Storage for PgStorage {
    async fn shutdown(&self) {
        self.close().await;
    }

    fn committed_head(&self) -> u64 {
        self.shared
            .committed_seq
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_feed_signer(&self, signer: Arc<dyn FeedSigner>) -> bool {
        self.shared.signer.set(signer).is_ok()
    }

    fn set_write_observer(&self, observer: Arc<dyn WriteObserver>) -> bool {
        self.shared.observer.set(observer).is_ok()
    }

    fn write_stats(&self) -> WriteStats {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.shared.stats;
        WriteStats {
            commits: s.commits.load(Relaxed),
            jobs: s.jobs.load(Relaxed),
            audit_entries: s.audit_entries.load(Relaxed),
            audit_failures: s.audit_failures.load(Relaxed),
        }
    }

    fn subscribe_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.head.subscribe()
    }

    async fn get_instance_key(&self, purpose: &str) -> Result<Option<WrappedKeyRecord>> {
        keys::get_instance_key(self, purpose).await
    }

    async fn put_instance_key_if_absent(
        &self,
        purpose: &str,
        key: WrappedKeyRecord,
    ) -> Result<WrappedKeyRecord> {
        keys::put_instance_key_if_absent(self, purpose, key).await
    }

    async fn latest_replication_key(&self) -> Result<Option<(u32, WrappedKeyRecord)>> {
        replication::latest_replication_key(self).await
    }

    async fn instance_key_rk(&self, purpose: &str) -> Result<Option<RkWrap>> {
        replication::instance_key_rk(self, purpose).await
    }

    async fn list_deks(&self) -> Result<Vec<DekRecord>> {
        replication::list_deks(self).await
    }

    async fn backfill_rk_wraps(
        &self,
        version: u32,
        deks: Vec<(DekId, Vec<u8>)>,
        instance_keys: Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        replication::backfill_rk_wraps(self, version, deks, instance_keys).await
    }

    async fn register_node_key(
        &self,
        node: TokenId,
        public_key: [u8; 32],
        grant: NodeGrant,
        audit: &[AuditEntry],
    ) -> Result<bool> {
        replication::register_node_key(self, node, public_key, grant, audit).await
    }

    async fn node_public_keys(&self) -> Result<Vec<(TokenId, [u8; 32])>> {
        replication::node_public_keys(self).await
    }

    async fn node_grant(&self, node: TokenId, version: u32) -> Result<Option<NodeGrant>> {
        replication::node_grant(self, node, version).await
    }

    async fn grants_of_version(&self, version: u32) -> Result<Vec<NodeGrant>> {
        replication::grants_of_version(self, version).await
    }

    async fn revoke_node_rotating(
        &self,
        id: TokenId,
        at: Timestamp,
        rotation: RkRotation,
        audit: &[AuditEntry],
    ) -> Result<NodeRecord> {
        replication::revoke_node_rotating(self, id, at, rotation, audit).await
    }

    async fn close_dek_gate(&self) -> Result<DekGateHold> {
        dek_gate::close(self).await
    }

    async fn wait_dek_gate(&self) -> Result<()> {
        dek_gate::wait(self).await
    }

    async fn create_account(&self, account: AccountRecord, audit: &[AuditEntry]) -> Result<()> {
        accounts::create_account(self, account, audit).await
    }

    async fn get_account(&self, id: AccountId) -> Result<Option<AccountRecord>> {
        accounts::get_account(self, id).await
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>> {
        accounts::list_accounts(self).await
    }

    async fn set_account_quota(
        &self,
        account: AccountId,
        quota: Option<u64>,
        audit: &[AuditEntry],
    ) -> Result<()> {
        accounts::set_account_quota(self, account, quota, audit).await
    }

    async fn delete_account(&self, id: AccountId, audit: &[AuditEntry]) -> Result<()> {
        accounts::delete_account(self, id, audit).await
    }

    async fn create_token(&self, token: TokenRecord, audit: &[AuditEntry]) -> Result<()> {
        tokens::create_token(self, token, audit).await
    }

    async fn create_first_token(&self, token: TokenRecord, audit: &[AuditEntry]) -> Result<()> {
        tokens::create_first_token(self, token, audit).await
    }

    async fn get_token(&self, id: TokenId) -> Result<Option<TokenRecord>> {
        tokens::get_token(self, id).await
    }

    async fn list_tokens(&self, account: AccountId) -> Result<Vec<TokenRecord>> {
        tokens::list_tokens(self, account).await
    }

    async fn revoke_token(
        &self,
        account: AccountId,
        id: TokenId,
        at: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<TokenRecord> {
        tokens::revoke_token(self, account, id, at, audit).await
    }

    async fn touch_tokens(&self, used: Vec<(TokenId, Timestamp)>) -> Result<()> {
        tokens::touch_tokens(self, used).await
    }

    async fn replace_tokens(
        &self,
        token: TokenRecord,
        revoke: Vec<TokenId>,
        at: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<()> {
        tokens::replace_tokens(self, token, revoke, at, audit).await
    }

    async fn put_dek(&self, dek: DekRecord) -> Result<()> {
        keys::put_dek(self, dek).await
    }

    async fn get_dek(&self, id: DekId) -> Result<Option<DekRecord>> {
        keys::get_dek(self, id).await
    }

    async fn latest_dek(&self, account: AccountId) -> Result<Option<DekRecord>> {
        keys::latest_dek(self, account).await
    }

    async fn kek_usage(&self) -> Result<Vec<KekUsage>> {
        keys::kek_usage(self).await
    }

    async fn keys_wrapped_by(&self, kek_id: &str, limit: usize) -> Result<Vec<StoredKey>> {
        keys::keys_wrapped_by(self, kek_id, limit).await
    }

    async fn rewrap_keys(&self, rewraps: Vec<Rewrap>) -> Result<u64> {
        keys::rewrap_keys(self, rewraps).await
    }

    async fn account_dek_usage(&self, account: AccountId) -> Result<Vec<KekUsage>> {
        keys::account_dek_usage(self, account).await
    }

    async fn account_deks_not_wrapped_by(
        &self,
        account: AccountId,
        kek_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredKey>> {
        keys::account_deks_not_wrapped_by(self, account, kek_id, limit).await
    }

    async fn retire_kek(&self, kek_id: &str) -> Result<()> {
        keys::retire_kek(self, kek_id).await
    }

    async fn is_kek_retired(&self, kek_id: &str) -> Result<bool> {
        keys::is_kek_retired(self, kek_id).await
    }

    async fn values_sealed_before(
        &self,
        account: AccountId,
        cutoff: Timestamp,
        current: Option<DekId>,
        limit: usize,
    ) -> Result<Vec<SealedValue>> {
        lifecycle::values_sealed_before(self, account, cutoff, current, limit).await
    }

    async fn count_sealed_before(&self, account: AccountId, cutoff: Timestamp) -> Result<u64> {
        lifecycle::count_sealed_before(self, account, cutoff).await
    }

    async fn reseal_values(&self, dek: Option<DekRecord>, reseals: Vec<Reseal>) -> Result<u64> {
        lifecycle::reseal_values(self, dek, reseals).await
    }

    async fn prune_versions(&self, keep: u32, limit: usize) -> Result<u64> {
        lifecycle::prune_versions(self, keep, limit).await
    }

    async fn destroy_unreferenced_deks(
        &self,
        keep: Vec<DekId>,
        limit: usize,
    ) -> Result<Vec<DestroyedDek>> {
        lifecycle::destroy_unreferenced_deks(self, keep, limit).await
    }

    async fn compact_destroyed_deks(&self) -> Result<Option<u64>> {
        lifecycle::compact_destroyed_deks(self).await
    }

    async fn create_store(
        &self,
        store: StoreRecord,
        max_stores: u64,
        audit: &[AuditEntry],
    ) -> Result<()> {
        stores::create_store(self, store, max_stores, audit).await
    }

    async fn get_store(&self, account: AccountId, id: StoreId) -> Result<Option<StoreRecord>> {
        stores::get_store(self, account, id).await
    }

    async fn list_stores(
        &self,
        account: AccountId,
        query: &StoreQuery,
    ) -> Result<Page<StoreRecord>> {
        stores::list_stores(self, account, query).await
    }

    async fn delete_store(
        &self,
        account: AccountId,
        id: StoreId,
        force: bool,
        audit: &[AuditEntry],
    ) -> Result<()> {
        stores::delete_store(self, account, id, force, audit).await
    }

    async fn create_secrets(
        &self,
        account: AccountId,
        store: StoreId,
        secrets: Vec<NewSecret>,
        quota: u64,
        audit: &[AuditEntry],
    ) -> Result<()> {
        secrets::create_secrets(self, account, store, secrets, quota, audit).await
    }

    async fn get_secret(
        &self,
        account: AccountId,
        store: StoreId,
        id: SecretId,
    ) -> Result<Option<SecretRecord>> {
        secrets::get_secret(self, account, store, id).await
    }

    async fn list_secrets(
        &self,
        account: AccountId,
        store: StoreId,
        query: &SecretQuery,
    ) -> Result<Page<SecretRecord>> {
        secrets::list_secrets(self, account, store, query).await
    }

    async fn update_secret(
        &self,
        update: SecretUpdate,
        audit: &[AuditEntry],
    ) -> Result<SecretRecord> {
        secrets::update_secret(self, update, audit).await
    }

    async fn queue_update_secret(
        &self,
        update: SecretUpdate,
        audit: &[AuditEntry],
    ) -> Result<Pending<SecretRecord>> {
        secrets::queue_update_secret(self, update, audit).await
    }

    async fn delete_secrets(
        &self,
        account: AccountId,
        store: StoreId,
        ids: &[SecretId],
        audit: &[AuditEntry],
    ) -> Result<()> {
        secrets::delete_secrets(self, account, store, ids, audit).await
    }

    async fn get_version(
        &self,
        secret: SecretId,
        version: Version,
    ) -> Result<Option<VersionRecord>> {
        secrets::get_version(self, secret, version).await
    }

    async fn secret_count(&self, account: AccountId) -> Result<u64> {
        secrets::secret_count(self, account).await
    }

    async fn create_service(
        &self,
        service: ServiceRecord,
        token: ServiceTokenRecord,
        audit: &[AuditEntry],
    ) -> Result<()> {
        services::create_service(self, service, token, audit).await
    }

    async fn update_service(
        &self,
        service: ServiceRecord,
        audit: &[AuditEntry],
    ) -> Result<ServiceRecord> {
        services::update_service(self, service, audit).await
    }

    async fn get_service(
        &self,
        account: AccountId,
        id: ServiceId,
    ) -> Result<Option<ServiceRecord>> {
        services::get_service(self, account, id).await
    }

    async fn get_service_by_name(
        &self,
        account: AccountId,
        name: &ServiceName,
    ) -> Result<Option<ServiceRecord>> {
        services::get_service_by_name(self, account, name).await
    }

    async fn list_services(
        &self,
        account: AccountId,
        query: &ServiceQuery,
    ) -> Result<Page<ServiceRecord>> {
        services::list_services(self, account, query).await
    }

    async fn delete_service(
        &self,
        account: AccountId,
        id: ServiceId,
        audit: &[AuditEntry],
    ) -> Result<()> {
        services::delete_service(self, account, id, audit).await
    }

    async fn create_service_token(
        &self,
        token: ServiceTokenRecord,
        revoke_others_at: Option<Timestamp>,
        audit: &[AuditEntry],
    ) -> Result<Vec<ServiceTokenRecord>> {
        services::create_service_token(self, token, revoke_others_at, audit).await
    }

    async fn revoke_service_tokens(
        &self,
        account: AccountId,
        service: ServiceId,
        only: Option<TokenId>,
        at: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<Vec<ServiceTokenRecord>> {
        services::revoke_service_tokens(self, account, service, only, at, audit).await
    }

    async fn get_service_token(&self, id: TokenId) -> Result<Option<ServiceTokenRecord>> {
        services::get_service_token(self, id).await
    }

    async fn list_service_tokens(
        &self,
        account: AccountId,
        service: ServiceId,
    ) -> Result<Vec<ServiceTokenRecord>> {
        services::list_service_tokens(self, account, service).await
    }

    async fn create_node(&self, node: NodeRecord, audit: &[AuditEntry]) -> Result<()> {
        nodes::create_node(self, node, audit).await
    }

    async fn get_node(&self, id: TokenId) -> Result<Option<NodeRecord>> {
        nodes::get_node(self, id).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        nodes::list_nodes(self).await
    }

    async fn revoke_node(
        &self,
        id: TokenId,
        at: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<NodeRecord> {
        nodes::revoke_node(self, id, at, audit).await
    }

    async fn get_secret_by_name(
        &self,
        account: AccountId,
        store: StoreId,
        name: &SecretName,
    ) -> Result<Option<SecretRecord>> {
        secrets::get_secret_by_name(self, account, store, name).await
    }

    async fn current_value(
        &self,
        account: AccountId,
        store: StoreId,
        name: &SecretName,
    ) -> Result<Option<(SecretRecord, VersionRecord)>> {
        secrets::current_value(self, account, store, name).await
    }

    async fn change_head(&self) -> Result<u64> {
        change_log::change_head(self).await
    }

    async fn probe(&self) -> Result<()> {
        self.probe().await
    }

    fn is_remote(&self) -> bool {
        true
    }

    async fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeRecord>> {
        change_log::changes_after(self, after, limit).await
    }

    async fn feed_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<ChangeRecord>, Vec<FeedSignature>)> {
        change_log::feed_after(self, after, limit).await
    }

    async fn sign_head(&self) -> Result<()> {
        change_log::sign_head(self).await
    }

    async fn log_state(&self) -> Result<LogState> {
        change_log::log_state(self).await
    }

    async fn ensure_cluster_id(&self) -> Result<[u8; 16]> {
        change_log::ensure_cluster_id(self).await
    }

    async fn compact_log(&self, through: u64) -> Result<()> {
        change_log::compact_log(self, through).await
    }

    async fn snapshot(&self, out: tokio::sync::mpsc::Sender<SnapshotPart>) -> Result<()> {
        snapshot::snapshot(self, out).await
    }

    async fn record_access_batch(
        &self,
        batch_id: [u8; 16],
        node: TokenId,
        audit: &[AuditEntry],
    ) -> Result<bool> {
        audit::record_access_batch(self, batch_id, node, audit).await
    }

    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<()> {
        audit::append_audit(self, entries).await
    }

    async fn list_audit(
        &self,
        account: AccountId,
        query: &AuditQuery,
    ) -> Result<Page<AuditRecord>> {
        audit::list_audit(self, account, query).await
    }

    async fn audit_entries(
        &self,
        account: AccountId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        audit::audit_entries(self, account, after_seq, limit).await
    }

    async fn audit_head(&self, account: AccountId) -> Result<Option<(u64, [u8; 32])>> {
        audit::audit_head(self, account).await
    }

    async fn audit_accounts(&self) -> Result<Vec<AccountId>> {
        audit::audit_accounts(self).await
    }

    async fn put_audit_checkpoint(&self, cp: AuditCheckpoint) -> Result<()> {
        audit::put_audit_checkpoint(self, cp).await
    }

    async fn audit_checkpoints(
        &self,
        account: AccountId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditCheckpoint>> {
        audit::audit_checkpoints(self, account, after_seq, limit).await
    }

    async fn last_audit_checkpoint(&self, account: AccountId) -> Result<Option<AuditCheckpoint>> {
        audit::last_audit_checkpoint(self, account).await
    }

    async fn check_integrity(&self) -> Result<coffer_storage::IntegrityReport> {
        crate::integrity::check_integrity(self).await
    }

    async fn recount_secrets(&self) -> Result<coffer_storage::Recounted> {
        crate::recount::recount_secrets(self).await
    }
}

#[async_trait]
impl ArkStorage for PgStorage {
    async fn put_account_replication_key(
        &self,
        account: AccountId,
        version: u32,
        key: WrappedKeyRecord,
        grants: Vec<AccountGrant>,
        audit: &[AuditEntry],
    ) -> Result<()> {
        ark::put_account_replication_key(self, account, version, key, grants, audit).await
    }

    async fn account_replication_keys(&self) -> Result<Vec<(AccountId, u32, WrappedKeyRecord)>> {
        ark::account_replication_keys(self).await
    }

    async fn account_replication_key_versions(
        &self,
        account: AccountId,
    ) -> Result<Vec<(u32, WrappedKeyRecord)>> {
        ark::account_replication_key_versions(self, account).await
    }

    async fn register_node_account_key(
        &self,
        node: TokenId,
        account: AccountId,
        public_key: [u8; 32],
        grant: Option<AccountGrant>,
        audit: &[AuditEntry],
    ) -> Result<bool> {
        ark::register_node_account_key(self, node, account, public_key, grant, audit).await
    }

    async fn ark_accounts(&self) -> Result<Vec<AccountId>> {
        ark::ark_accounts(self).await
    }

    async fn account_grant_versions(&self, account: AccountId, node: TokenId) -> Result<Vec<u32>> {
        ark::account_grant_versions(self, account, node).await
    }

    async fn node_account_keys(&self, account: AccountId) -> Result<Vec<NodeAccountKey>> {
        ark::node_account_keys(self, account).await
    }

    async fn rotate_account_replication_key(
        &self,
        rotation: ArkRotation,
        audit: &[AuditEntry],
    ) -> Result<()> {
        ark::rotate_account_replication_key(self, rotation, audit).await
    }

    async fn accounts_owing_ark_rotation(&self) -> Result<Vec<AccountId>> {
        ark::accounts_owing_ark_rotation(self).await
    }

    async fn account_grants(&self, account: AccountId, version: u32) -> Result<Vec<AccountGrant>> {
        ark::account_grants(self, account, version).await
    }
}
