//! The instance operator's account-KEK operations: giving an account a KEK of its own, its
//! status, and destroying it when the account is deleted. Which KEK wraps what is decided in
//! the keyring; the registry and the rewrap job are in `account_kek.rs`.
//!
//! Only the instance operator sets or reads an account's KEK (`require_operator_on`); setting
//! it is audited in the account and in the operator's own, with the key's public id only.

use std::sync::Arc;

use coffer_storage::KekUsage;
use coffer_types::AccountId;

use super::Coffer;
use super::audit::{Details, Target};
use crate::AuditAction;
use crate::account_kek::{AccountKekInfo, AccountKekSpec, AccountKekStore};
use crate::kek_call::on_blocking_pool;
use crate::{CoreError, Principal, Resource, RewrapSettings};

/// Which KEK wraps an account's DEKs, as `Coffer::account_kek_status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountKekReport {
    pub account: AccountId,
    /// The account's own KEK; `None`: the instance KEK wraps its DEKs.
    pub own: Option<AccountKekInfo>,
    /// Set when the account's own KEK could not be opened (the reason, for the operator).
    pub unavailable: Option<String>,
    /// The instance KEK's id now.
    pub instance_kek_id: String,
    /// How many of the account's DEKs each KEK wraps.
    pub deks: Vec<KekUsage>,
    /// Whether DEKs are still being moved onto the account's KEK, how many were, and why the
    /// job stopped if it failed.
    pub rewrap_running: bool,
    pub rewrapped: u64,
    pub rewrap_error: Option<String>,
}

impl Coffer {
    /// Installs where account KEKs live and opens every recorded one: an account whose key
    /// cannot be opened is unavailable (logged, naming it), the server serves everything else.
    /// A key left over from an account deleted before its key could be destroyed is destroyed
    /// now. DEKs not yet moved onto their account's KEK are moved in the background.
    pub async fn install_account_keks(
        &self,
        store: Arc<dyn AccountKekStore>,
        settings: RewrapSettings,
    ) -> Result<(), CoreError> {
        if self
            .account_kek_store
            .set((Arc::clone(&store), settings))
            .is_err()
        {
            return Err(CoreError::Internal(
                "account KEKs were installed twice".into(),
            ));
        }
        let loader = Arc::clone(&store);
        let loaded = on_blocking_pool(move || Ok(loader.load())).await?;
        for found in loaded {
            let account = found.account;
            if self.storage.get_account(account).await?.is_none() {
                tracing::warn!(account = %account, "destroying the KEK of a deleted account");
                let store = Arc::clone(&store);
                if let Err(e) = on_blocking_pool(move || store.destroy(account)).await {
                    tracing::error!(account = %account, error = %e, "could not destroy the KEK of a deleted account");
                }
                continue;
            }
            match &found.kek {
                Ok(kek) => {
                    tracing::info!(account = %account, kek = %found.info.kek_id, "account KEK loaded");
                    self.start_account_rewrap(account, Arc::clone(kek), settings)
                        .await?;
                    // Registered first: its DEKs are wrapped by it from then on.
                    self.keys.account_keks().insert(
                        account,
                        found.info.clone(),
                        Ok(Arc::clone(kek)),
                    );
                    if let Err(e) = self.keys.ensure_ark(account, Arc::clone(kek)).await {
                        tracing::error!(account = %account, error = %e, "the account's replication key could not be opened or made: its values cannot be written until this is fixed");
                    }
                }
                Err(reason) => {
                    tracing::error!(account = %account, kek = %found.info.kek_id, %reason, "the account's own KEK is unavailable: the account's values cannot be opened until it is restored; every other account serves");
                }
            }
            self.keys
                .account_keks()
                .insert(account, found.info, found.kek);
        }
        Ok(())
    }

    fn account_kek_store(&self) -> Result<&(Arc<dyn AccountKekStore>, RewrapSettings), CoreError> {
        self.account_kek_store
            .get()
            .ok_or(CoreError::KekRotationUnsupported(
                "this server keeps no account KEKs (an edge, or a control plane opened without them)",
            ))
    }

    /// Starts the rewrap job if some DEK of `account` is not wrapped by `kek` yet.
    async fn start_account_rewrap(
        &self,
        account: AccountId,
        kek: Arc<dyn coffer_crypto::KekProvider>,
        settings: RewrapSettings,
    ) -> Result<(), CoreError> {
        let target = kek.current_kek_id().0;
        if self
            .storage
            .account_deks_not_wrapped_by(account, &target, 1)
            .await?
            .is_empty()
        {
            return Ok(());
        }
        self.account_rewraps.spawn(
            account,
            Arc::clone(&self.storage),
            Arc::clone(self.keys.instance_kek()),
            kek,
            settings,
        );
        Ok(())
    }

    /// Gives `account` a KEK of its own (instance operator only): from now on it alone wraps
    /// the account's new DEKs, and the existing ones are rewrapped onto it in the background.
    /// `AccountKekExists` if the account has one already.
    pub async fn set_account_kek(
        &self,
        who: &Principal,
        account: AccountId,
        spec: AccountKekSpec,
    ) -> Result<AccountKekReport, CoreError> {
        self.check_operator(who, Some(account), AuditAction::SetKek, Target::account())
            .await?;
        if self.database_is_shared() {
            return Err(CoreError::KekRotationUnsupported(
                super::shared::ACCOUNT_KEK_ON_SHARED_DATABASE,
            ));
        }
        let (store, settings) = self.account_kek_store()?.clone();
        let _changes = self.account_kek_changes.lock().await;
        if self.storage.get_account(account).await?.is_none() {
            return Err(CoreError::NotFound(Resource::Account));
        }
        if let Some(id) = self.keys.account_keks().kek_id(account) {
            return Err(CoreError::AccountKekExists(format!(
                "account {account} already has its own KEK ({id}); replacing it is not supported"
            )));
        }
        let destroyer = Arc::clone(&store);
        let (info, kek) = on_blocking_pool(move || store.create(account, &spec)).await?;
        // The account's replication key first, wrapped by the new KEK: its DEKs are RK-wrapped
        // by it alone from the moment the KEK is in use, so the KEK never serves without it. If
        // it cannot be made, the new key was never used: it is destroyed and the account keeps
        // the instance KEK, as before the call.
        if let Err(e) = self.keys.ensure_ark(account, Arc::clone(&kek)).await {
            tracing::error!(account = %account, kek = %info.kek_id, error = %e, "the account's replication key could not be made: its new KEK is not used and is destroyed");
            if let Err(destroy) = on_blocking_pool(move || destroyer.destroy(account)).await {
                tracing::error!(account = %account, error = %destroy, "the unused account KEK could not be destroyed; the next start loads it and makes its replication key then");
            }
            return Err(e);
        }
        let entries = self.change_entries(
            who,
            account,
            AuditAction::SetKek,
            Target::account(),
            Details {
                kek_id: Some(info.kek_id.0.clone()),
                ..Details::default()
            },
        )?;
        // The key, its record and the account's replication key exist: from here on the
        // account's new DEKs are wrapped by it.
        self.keys
            .account_keks()
            .insert(account, info.clone(), Ok(Arc::clone(&kek)));
        tracing::info!(account = %account, kek = %info.kek_id, provider = %info.provider, "account KEK set; rewrapping its DEKs");
        if let Err(e) = self.storage.append_audit(&entries).await {
            // The key is in use: refusing now would not undo it.
            tracing::error!(error = %e, "setting an account KEK could not be audited");
        }
        self.start_account_rewrap(account, kek, settings).await?;
        self.account_kek_report(account).await
    }

    /// Which KEK wraps `account`'s DEKs (instance operator only). Never a secret.
    pub async fn account_kek_status(
        &self,
        who: &Principal,
        account: AccountId,
    ) -> Result<AccountKekReport, CoreError> {
        self.check_operator(
            who,
            Some(account),
            AuditAction::KekStatus,
            Target::account(),
        )
        .await?;
        if self.storage.get_account(account).await?.is_none() {
            return Err(CoreError::NotFound(Resource::Account));
        }
        self.account_kek_report(account).await
    }

    async fn account_kek_report(&self, account: AccountId) -> Result<AccountKekReport, CoreError> {
        let deks = self.storage.account_dek_usage(account).await?;
        let (own, unavailable) = match self.keys.account_keks().info(account) {
            Some((info, reason)) => (Some(info), reason),
            None => (None, None),
        };
        let (rewrap_running, rewrapped, rewrap_error) = self
            .account_rewraps
            .status(account)
            .unwrap_or((false, 0, None));
        Ok(AccountKekReport {
            account,
            own,
            unavailable,
            instance_kek_id: self.keys.current_kek_id().0,
            deks,
            rewrap_running,
            rewrapped,
            rewrap_error,
        })
    }

    /// After `account` was deleted: stops its rewrap job, drops its unwrapped DEKs, and
    /// destroys its own KEK if it has one. The delete has committed, so a failure here is
    /// logged and the key is destroyed at the next start instead.
    pub(crate) async fn shred_account_kek(&self, account: AccountId) {
        self.account_rewraps.stop(Some(account));
        self.keys.forget_deleted_account(account);
        if !self.keys.account_keks().remove(account) {
            return;
        }
        let Ok((store, _)) = self.account_kek_store() else {
            return;
        };
        let store = Arc::clone(store);
        match on_blocking_pool(move || store.destroy(account)).await {
            Ok(()) => tracing::info!(account = %account, "the deleted account's KEK is destroyed"),
            Err(e) => {
                tracing::error!(account = %account, error = %e, "could not destroy the deleted account's KEK; the next start retries")
            }
        }
    }
}
