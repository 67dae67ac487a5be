//! Services, their bindings and their tokens: the first permission check (deploy).
//!
//! A deploy is checked in full before anything is written: the deployer's role must allow
//! binding, every bound store must exist in the account, and every bound secret must exist and
//! carry the service's type among its scopes. The first failure refuses the whole deploy
//! (`BindingDenied`, code 10021) naming the binding and the reason. The check runs before the
//! write, not inside it: a secret whose scope is removed in between is caught by the second
//! check, at every runtime read.

use std::collections::HashSet;

use coffer_crypto::{Token, TokenKind, random_id};
use coffer_storage::{
    Page, SecretBindingRecord, ServiceQuery, ServiceRecord, ServiceTokenRecord, StorageError,
    StoreBindingRecord,
};
use coffer_types::{AccountId, Scope, ServiceId, ServiceName, Timestamp, TokenId};

use super::Coffer;
use super::audit::{Details, Target};
use crate::AuditAction;
use crate::{CoreError, InvalidKind, Permission, Principal, Resource};

/// The most bindings (secret and store bindings together) one service may have.
pub const MAX_BINDINGS: usize = 256;

/// A deploy: the service's name, type and complete set of bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deploy {
    pub name: ServiceName,
    pub kind: Scope,
    pub secrets: Vec<SecretBindingRecord>,
    pub stores: Vec<StoreBindingRecord>,
}

/// What a deploy did.
#[derive(Debug)]
pub struct Deployed {
    pub service: ServiceRecord,
    /// Whether this deploy created the service.
    pub created: bool,
    /// The service's first token, on the deploy that created it; shown once.
    pub token: Option<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceListQuery {
    pub page: u32,
    pub per_page: u32,
    pub name: Option<ServiceName>,
}

/// How many times a deploy retries when another deploy of the same name raced it.
const DEPLOY_RETRIES: usize = 4;

impl Coffer {
    /// Creates the service named in `deploy` or replaces the type and bindings of the existing
    /// one, after checking every binding.
    pub async fn deploy_service(
        &self,
        who: &Principal,
        account: AccountId,
        deploy: Deploy,
    ) -> Result<Deployed, CoreError> {
        check_bindings(&deploy)?;
        let first_binding = deploy
            .secrets
            .first()
            .map(|b| b.binding.as_str())
            .or_else(|| deploy.stores.first().map(|b| b.binding.as_str()));
        let service_target = || Target::service(None, Some(deploy.name.as_str()));
        match who.require(account, Permission::Bind) {
            Ok(()) => {}
            // Another account stays invisible (404), as for every operation.
            Err(e @ CoreError::NotFound(_)) => {
                return Err(self
                    .deny(who, account, AuditAction::Bind, service_target(), e)
                    .await);
            }
            Err(e) => {
                let reason = match e {
                    CoreError::OutsideOperatorReach(_) => {
                        if self.storage.get_account(account).await?.is_none() {
                            return Err(CoreError::NotFound(Resource::Account));
                        }
                        "the instance operator binds secrets only in its own account (a binding gives a service the values); use a token of this account".to_owned()
                    }
                    _ => format!(
                        "the token's role {} may not bind secrets to services (that needs super_admin or secrets_store_deployer)",
                        who.role.as_str()
                    ),
                };
                let denial = CoreError::BindingDenied {
                    binding: first_binding.map(str::to_owned),
                    reason,
                };
                return Err(self
                    .deny(who, account, AuditAction::Bind, service_target(), denial)
                    .await);
            }
        }
        self.storage
            .get_account(account)
            .await?
            .ok_or(CoreError::NotFound(Resource::Account))?;

        // Resolve every binding; the first that fails refuses the deploy.
        let mut resolved = Vec::with_capacity(deploy.secrets.len());
        for b in &deploy.secrets {
            let denied = |reason: String| CoreError::BindingDenied {
                binding: Some(b.binding.as_str().to_owned()),
                reason,
            };
            if self.storage.get_store(account, b.store_id).await?.is_none() {
                let e = denied(format!("store {} not found in this account", b.store_id));
                return Err(self
                    .deny(who, account, AuditAction::Bind, service_target(), e)
                    .await);
            }
            let Some(secret) = self
                .storage
                .get_secret_by_name(account, b.store_id, &b.secret_name)
                .await?
            else {
                let e = denied(format!(
                    "secret \"{}\" not found in store {}",
                    b.secret_name, b.store_id
                ));
                return Err(self
                    .deny(who, account, AuditAction::Bind, service_target(), e)
                    .await);
            };
            if !secret.scopes.contains(deploy.kind) {
                let has: Vec<&str> = secret.scopes.iter().map(|s| s.as_str()).collect();
                let e = denied(format!(
                    "secret \"{}\" in store {} does not carry the scope \"{}\" (its scopes: {})",
                    b.secret_name,
                    b.store_id,
                    deploy.kind,
                    if has.is_empty() {
                        "none".to_owned()
                    } else {
                        has.join(", ")
                    }
                ));
                return Err(self
                    .deny(who, account, AuditAction::Bind, service_target(), e)
                    .await);
            }
            resolved.push(secret.id);
        }
        for b in &deploy.stores {
            if self.storage.get_store(account, b.store_id).await?.is_none() {
                let e = CoreError::BindingDenied {
                    binding: Some(b.binding.as_str().to_owned()),
                    reason: format!("store {} not found in this account", b.store_id),
                };
                return Err(self
                    .deny(who, account, AuditAction::Bind, service_target(), e)
                    .await);
            }
        }

        // Deploys and token changes of this process run one at a time, so the audit entries
        // computed from what was read (bindings added and removed, tokens revoked) describe
        // exactly what the write then changes: one process writes a data dir.
        let _guard = self.service_writes.lock().await;
        for _ in 0..DEPLOY_RETRIES {
            let now = Timestamp::now();
            let existing = self
                .storage
                .get_service_by_name(account, &deploy.name)
                .await?;
            let record = ServiceRecord {
                id: existing
                    .as_ref()
                    .map_or_else(|| ServiceId::from_bytes(random_id()), |s| s.id),
                account_id: account,
                name: deploy.name.clone(),
                kind: deploy.kind,
                secrets: deploy.secrets.clone(),
                stores: deploy.stores.clone(),
                created: existing.as_ref().map_or(now, |s| s.created),
                modified: now,
            };
            let mut audit = Vec::new();
            audit.push(self.change_entry(
                who,
                account,
                if existing.is_some() {
                    AuditAction::Update
                } else {
                    AuditAction::Create
                },
                Target::service(Some(record.id), Some(record.name.as_str())),
                Details {
                    service_type: Some(record.kind.as_str()),
                    ..Details::default()
                },
            )?);
            audit.extend(self.binding_entries(who, existing.as_ref(), &record, &resolved)?);
            match existing {
                None => {
                    let (token_record, token) = self.new_service_token(&record, now);
                    audit.push(self.change_entry(
                        who,
                        account,
                        AuditAction::Create,
                        Target::service_token(
                            record.id,
                            Some(record.name.as_str()),
                            Some(token_record.id),
                        ),
                        Details::default(),
                    )?);
                    match self
                        .storage
                        .create_service(record.clone(), token_record, &audit)
                        .await
                    {
                        Ok(()) => {
                            return Ok(Deployed {
                                service: record,
                                created: true,
                                token: Some(token),
                            });
                        }
                        // A concurrent first deploy of the same name won: update it instead.
                        Err(StorageError::NameTaken { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(_) => match self.storage.update_service(record, &audit).await {
                    Ok(service) => {
                        return Ok(Deployed {
                            service,
                            created: false,
                            token: None,
                        });
                    }
                    // Deleted meanwhile: deploy it afresh.
                    Err(StorageError::NotFound(_)) => continue,
                    Err(e) => return Err(e.into()),
                },
            }
        }
        Err(CoreError::Conflict)
    }

    /// `bind` entries for bindings the deploy adds or changes, `unbind` for those it removes.
    fn binding_entries(
        &self,
        who: &Principal,
        before: Option<&ServiceRecord>,
        after: &ServiceRecord,
        resolved: &[coffer_types::SecretId],
    ) -> Result<Vec<coffer_storage::AuditEntry>, CoreError> {
        let account = after.account_id;
        let details = || Details {
            service_type: Some(after.kind.as_str()),
            ..Details::default()
        };
        let mut out = Vec::new();
        let unchanged_kind = before.is_some_and(|b| b.kind == after.kind);
        for (b, secret) in after.secrets.iter().zip(resolved) {
            let same =
                unchanged_kind && before.is_some_and(|s| s.secrets.iter().any(|old| old == b));
            if !same {
                out.push(self.change_entry(
                    who,
                    account,
                    AuditAction::Bind,
                    Target::bound_secret(
                        after,
                        b.binding.as_str(),
                        b.store_id,
                        Some(*secret),
                        b.secret_name.as_str(),
                    ),
                    details(),
                )?);
            }
        }
        for b in &after.stores {
            let same =
                unchanged_kind && before.is_some_and(|s| s.stores.iter().any(|old| old == b));
            if !same {
                let target = Target::bound_store(after, b.binding.as_str(), b.store_id);
                out.push(self.change_entry(who, account, AuditAction::Bind, target, details())?);
            }
        }
        if let Some(before) = before {
            for b in &before.secrets {
                if !after.secrets.contains(b) {
                    out.push(self.change_entry(
                        who,
                        account,
                        AuditAction::Unbind,
                        Target::bound_secret(
                            after,
                            b.binding.as_str(),
                            b.store_id,
                            None,
                            b.secret_name.as_str(),
                        ),
                        Details::default(),
                    )?);
                }
            }
            for b in &before.stores {
                if !after.stores.contains(b) {
                    let target = Target::bound_store(after, b.binding.as_str(), b.store_id);
                    out.push(self.change_entry(
                        who,
                        account,
                        AuditAction::Unbind,
                        target,
                        Details::default(),
                    )?);
                }
            }
        }
        Ok(out)
    }

    fn new_service_token(
        &self,
        service: &ServiceRecord,
        now: Timestamp,
    ) -> (ServiceTokenRecord, Token) {
        let id = TokenId::from_bytes(random_id());
        let token = Token::generate_kind(TokenKind::Service, id);
        let record = ServiceTokenRecord {
            id,
            account_id: service.account_id,
            service_id: service.id,
            hash: self.keys.service_mac().hash_token(&token).0,
            created: now,
            revoked: None,
        };
        (record, token)
    }

    pub async fn list_services(
        &self,
        who: &Principal,
        account: AccountId,
        q: ServiceListQuery,
    ) -> Result<Page<ServiceRecord>, CoreError> {
        self.require_account(
            who,
            account,
            Permission::Read,
            AuditAction::List,
            Target::service(None, None),
        )
        .await?;
        let query = ServiceQuery {
            page: q.page,
            per_page: q.per_page,
            name: q.name,
        };
        Ok(self.storage.list_services(account, &query).await?)
    }

    pub async fn get_service(
        &self,
        who: &Principal,
        account: AccountId,
        id: ServiceId,
    ) -> Result<ServiceRecord, CoreError> {
        self.require_account(
            who,
            account,
            Permission::Read,
            AuditAction::Read,
            Target::service(Some(id), None),
        )
        .await?;
        self.storage
            .get_service(account, id)
            .await?
            .ok_or(CoreError::NotFound(Resource::Service))
    }

    /// Deletes the service with its bindings and tokens; its reads fail from the next request.
    pub async fn delete_service(
        &self,
        who: &Principal,
        account: AccountId,
        id: ServiceId,
    ) -> Result<(), CoreError> {
        self.require_account(
            who,
            account,
            Permission::Bind,
            AuditAction::Delete,
            Target::service(Some(id), None),
        )
        .await?;
        let _guard = self.service_writes.lock().await;
        let name = self
            .storage
            .get_service(account, id)
            .await?
            .map(|s| s.name.into_string());
        let entry = self.change_entry(
            who,
            account,
            AuditAction::Delete,
            Target::service(Some(id), name.as_deref()),
            Details::default(),
        )?;
        Ok(self.storage.delete_service(account, id, &[entry]).await?)
    }

    pub async fn list_service_tokens(
        &self,
        who: &Principal,
        account: AccountId,
        service: ServiceId,
    ) -> Result<Vec<ServiceTokenRecord>, CoreError> {
        self.require_account(
            who,
            account,
            Permission::Read,
            AuditAction::List,
            Target::service_token(service, None, None),
        )
        .await?;
        if self.storage.get_service(account, service).await?.is_none() {
            return Err(CoreError::NotFound(Resource::Service));
        }
        Ok(self.storage.list_service_tokens(account, service).await?)
    }

    /// Issues a new token for the service; with `revoke_previous`, every other active token of
    /// the service is revoked in the same transaction. Returns the new token (shown once) and
    /// the tokens revoked.
    pub async fn rotate_service_token(
        &self,
        who: &Principal,
        account: AccountId,
        service: ServiceId,
        revoke_previous: bool,
    ) -> Result<(ServiceTokenRecord, Token, Vec<ServiceTokenRecord>), CoreError> {
        self.require_account(
            who,
            account,
            Permission::Bind,
            AuditAction::Create,
            Target::service_token(service, None, None),
        )
        .await?;
        let _guard = self.service_writes.lock().await;
        let record = self
            .storage
            .get_service(account, service)
            .await?
            .ok_or(CoreError::NotFound(Resource::Service))?;
        let now = Timestamp::now();
        let (token_record, token) = self.new_service_token(&record, now);
        let mut audit = vec![self.change_entry(
            who,
            account,
            AuditAction::Create,
            Target::service_token(service, Some(record.name.as_str()), Some(token_record.id)),
            Details::default(),
        )?];
        if revoke_previous {
            for old in self.storage.list_service_tokens(account, service).await? {
                if old.revoked.is_none() {
                    audit.push(self.change_entry(
                        who,
                        account,
                        AuditAction::Revoke,
                        Target::service_token(service, Some(record.name.as_str()), Some(old.id)),
                        Details::default(),
                    )?);
                }
            }
        }
        let revoked = self
            .storage
            .create_service_token(token_record.clone(), revoke_previous.then_some(now), &audit)
            .await?;
        Ok((token_record, token, revoked))
    }

    /// Revokes one token of the service (`only`), or every active one. Revoked tokens fail
    /// from the next read on.
    pub async fn revoke_service_tokens(
        &self,
        who: &Principal,
        account: AccountId,
        service: ServiceId,
        only: Option<TokenId>,
    ) -> Result<Vec<ServiceTokenRecord>, CoreError> {
        self.require_account(
            who,
            account,
            Permission::Bind,
            AuditAction::Revoke,
            Target::service_token(service, None, only),
        )
        .await?;
        let _guard = self.service_writes.lock().await;
        let record = self
            .storage
            .get_service(account, service)
            .await?
            .ok_or(CoreError::NotFound(Resource::Service))?;
        let mut audit = Vec::new();
        for t in self.storage.list_service_tokens(account, service).await? {
            if t.revoked.is_none() && only.is_none_or(|id| id == t.id) {
                audit.push(self.change_entry(
                    who,
                    account,
                    AuditAction::Revoke,
                    Target::service_token(service, Some(record.name.as_str()), Some(t.id)),
                    Details::default(),
                )?);
            }
        }
        Ok(self
            .storage
            .revoke_service_tokens(account, service, only, Timestamp::now(), &audit)
            .await?)
    }
}

/// Binding names are unique across both kinds, and a service has at most [`MAX_BINDINGS`].
fn check_bindings(deploy: &Deploy) -> Result<(), CoreError> {
    let total = deploy.secrets.len() + deploy.stores.len();
    if total > MAX_BINDINGS {
        return Err(CoreError::invalid(
            InvalidKind::Binding,
            "/secrets_store_secrets",
            format!("a service may have at most {MAX_BINDINGS} bindings (got {total})"),
        ));
    }
    let mut seen = HashSet::new();
    let names = deploy
        .secrets
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("/secrets_store_secrets/{i}/binding"), &b.binding))
        .chain(
            deploy
                .stores
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("/secrets_store_stores/{i}/binding"), &b.binding)),
        );
    for (field, name) in names {
        if !seen.insert(name.as_str()) {
            return Err(CoreError::invalid(
                InvalidKind::Binding,
                field,
                format!("the binding name {name} is used more than once"),
            ));
        }
    }
    Ok(())
}
