//! Stores, secrets and values: the `secrets_store` part of the API (mirroring the server's
//! `secrets_store.rs`), and what orders the updates of one secret within this process.

use coffer_crypto::{Plaintext, random_array, random_id};
use coffer_storage::{
    AccountRecord, Direction, NewSecret, Page, SecretOrder, SecretQuery, SecretRecord,
    SecretUpdate, StoreOrder, StoreQuery, StoreRecord,
};
use coffer_types::{
    AccountId, Scopes, SecretId, SecretName, StoreId, StoreName, Timestamp, Version,
};

use super::Coffer;
use super::audit::{Details, Target};
use super::values::VersionSlot;
use crate::AuditAction;
use crate::limits::UPDATE_RETRIES;
use crate::{Comment, CoreError, Permission, Principal, Resource};

/// Lock stripes for [`UpdateLocks`]: enough that unrelated secrets rarely share one.
const UPDATE_STRIPES: usize = 256;

/// Orders the updates of each secret within this process. An update is read, seal (the
/// version number is part of the sealed value's AAD), then compare-and-swap on the version;
/// without an order, concurrent updates of one secret landing in one group commit would all
/// but one fail the swap, over and over.
///
/// The lock is held only until the update is *queued* in storage, not until it commits:
/// storage applies queued writes in order, so the next update of the secret is sealed as the
/// version after the last queued one ([`QueuedUpdate`]) and queued behind it, and a burst of
/// updates of one secret shares one commit (one fsync) instead of paying one each. Striped by
/// secret id (random, so uniformly spread) to bound memory; a stripe lists the queued updates
/// of its secrets that have not been answered yet.
#[derive(Debug)]
pub(super) struct UpdateLocks {
    stripes: Vec<tokio::sync::Mutex<Vec<QueuedUpdate>>>,
    tickets: std::sync::atomic::AtomicU64,
}

/// The last update of a secret queued in storage and not answered yet: the state the next
/// update of the secret builds on.
#[derive(Debug)]
struct QueuedUpdate {
    secret: SecretId,
    ticket: u64,
    name: SecretName,
    /// The secret's version once this update is applied.
    version: Version,
}

impl UpdateLocks {
    pub(super) fn new() -> UpdateLocks {
        UpdateLocks {
            stripes: (0..UPDATE_STRIPES)
                .map(|_| tokio::sync::Mutex::new(Vec::new()))
                .collect(),
            tickets: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn of(&self, secret: SecretId) -> &tokio::sync::Mutex<Vec<QueuedUpdate>> {
        let b = secret.as_bytes();
        &self.stripes[usize::from(u16::from_le_bytes([b[0], b[1]])) % self.stripes.len()]
    }

    fn ticket(&self) -> u64 {
        self.tickets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// One secret of a (bulk) create.
#[derive(Debug)]
pub struct CreateSecretItem {
    pub name: SecretName,
    pub value: Plaintext,
    pub scopes: Scopes,
    pub comment: Comment,
}

/// A PATCH: only the `Some` fields change. With none set it changes nothing at all.
#[derive(Debug, Default)]
pub struct UpdateSecret {
    pub value: Option<Plaintext>,
    pub scopes: Option<Scopes>,
    pub comment: Option<Comment>,
}

impl UpdateSecret {
    fn is_empty(&self) -> bool {
        self.value.is_none() && self.scopes.is_none() && self.comment.is_none()
    }
}

#[derive(Debug)]
pub struct DuplicateSecret {
    pub name: SecretName,
    pub scopes: Scopes,
    pub comment: Option<Comment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreListQuery {
    pub page: u32,
    pub per_page: u32,
    pub order: StoreOrder,
    pub direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretListQuery {
    pub page: u32,
    pub per_page: u32,
    pub order: SecretOrder,
    pub direction: Direction,
    pub search: Option<String>,
    pub scopes: Scopes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub quota: u64,
    pub usage: u64,
}

impl Coffer {
    // ---- stores ----

    pub async fn create_store(
        &self,
        who: &Principal,
        account: AccountId,
        name: StoreName,
    ) -> Result<StoreRecord, CoreError> {
        self.require_account(
            who,
            account,
            Permission::Edit,
            AuditAction::Create,
            Target::store(None, Some(name.as_str())),
        )
        .await?;
        let now = Timestamp::now();
        let store = StoreRecord {
            id: StoreId::from_bytes(random_id()),
            account_id: account,
            name,
            created: now,
            modified: now,
        };
        let entry = self.change_entry(
            who,
            account,
            AuditAction::Create,
            Target::store(Some(store.id), Some(store.name.as_str())),
            Details::default(),
        )?;
        self.storage
            .create_store(store.clone(), self.limits.max_stores, &[entry])
            .await?;
        Ok(store)
    }

    pub async fn list_stores(
        &self,
        who: &Principal,
        account: AccountId,
        q: StoreListQuery,
    ) -> Result<Page<StoreRecord>, CoreError> {
        self.require_account(
            who,
            account,
            Permission::Read,
            AuditAction::List,
            Target::store(None, None),
        )
        .await?;
        let query = StoreQuery {
            page: q.page,
            per_page: q.per_page,
            order: q.order,
            direction: q.direction,
        };
        Ok(self.storage.list_stores(account, &query).await?)
    }

    pub async fn get_store(
        &self,
        who: &Principal,
        account: AccountId,
        store: StoreId,
    ) -> Result<StoreRecord, CoreError> {
        self.require_account(
            who,
            account,
            Permission::Read,
            AuditAction::Read,
            Target::store(Some(store), None),
        )
        .await?;
        self.storage
            .get_store(account, store)
            .await?
            .ok_or(CoreError::NotFound(Resource::Store))
    }

    pub async fn delete_store(
        &self,
        who: &Principal,
        account: AccountId,
        store: StoreId,
        force: bool,
    ) -> Result<(), CoreError> {
        self.require_account(
            who,
            account,
            Permission::Edit,
            AuditAction::Delete,
            Target::store(Some(store), None),
        )
        .await?;
        let name = self
            .storage
            .get_store(account, store)
            .await?
            .map(|s| s.name.into_string());
        let entry = self.change_entry(
            who,
            account,
            AuditAction::Delete,
            Target::store(Some(store), name.as_deref()),
            Details {
                force: Some(force),
                ..Details::default()
            },
        )?;
        self.storage
            .delete_store(account, store, force, &[entry])
            .await?;
        // The store's values are gone; the DEKs they used may be shared with the account's
        // other stores. A new DEK seals from now on, the lifecycle job re-seals the other
        // stores' values onto it, and the old DEKs, then unreferenced, are destroyed.
        self.keys.retire_sealing(account);
        if let Some(job) = self.lifecycle.get() {
            job.wake();
        }
        Ok(())
    }

    // ---- secrets ----

    pub(super) fn quota_of(&self, account: &AccountRecord) -> u64 {
        account
            .secrets_quota
            .unwrap_or(self.limits.default_secrets_quota)
    }

    /// Creates every item or none.
    pub async fn create_secrets(
        &self,
        who: &Principal,
        account: AccountId,
        store: StoreId,
        items: Vec<CreateSecretItem>,
    ) -> Result<Vec<SecretRecord>, CoreError> {
        let account_rec = self
            .require_account(
                who,
                account,
                Permission::Edit,
                AuditAction::Create,
                Target::secret(store, None, None),
            )
            .await?;
        // Check the store before sealing anything, so a missing store is a plain 404.
        let store_rec = self
            .storage
            .get_store(account, store)
            .await?
            .ok_or(CoreError::NotFound(Resource::Store))?;
        // A DEK wrapped by a KEK version retired after it was taken is refused by storage
        // (`Conflict`); sealing again takes a DEK of the active version. On a shared database
        // the DEK may have been destroyed, or the replication key rotated, by another
        // instance: `after_conflict` drops the one and loads the other.
        for attempt in 1.. {
            match self
                .try_create_secrets(who, account, store, &account_rec, &store_rec, &items)
                .await
            {
                Err(CoreError::Conflict) if attempt < UPDATE_RETRIES => {
                    self.refresh_after_conflict(account).await?;
                    continue;
                }
                other => return other,
            }
        }
        Err(CoreError::Conflict)
    }

    async fn try_create_secrets(
        &self,
        who: &Principal,
        account: AccountId,
        store: StoreId,
        account_rec: &AccountRecord,
        store_rec: &StoreRecord,
        items: &[CreateSecretItem],
    ) -> Result<Vec<SecretRecord>, CoreError> {
        let now = Timestamp::now();
        let mut write = self.keys.dek_write();
        let mut new = Vec::with_capacity(items.len());
        for item in items {
            let id = SecretId::from_bytes(random_id());
            let record = SecretRecord {
                id,
                store_id: store,
                account_id: account,
                name: item.name.clone(),
                comment: item.comment.clone().into_string(),
                scopes: item.scopes.clone(),
                created: now,
                modified: now,
                version: Version::FIRST,
            };
            let slot = VersionSlot {
                account,
                store,
                secret: id,
                version: Version::FIRST,
            };
            let (value, dek) = self
                .seal_version(&mut write, slot, &item.value, now)
                .await?;
            new.push(NewSecret {
                record,
                value,
                dek: Some(dek),
            });
        }
        let records: Vec<SecretRecord> = new.iter().map(|n| n.record.clone()).collect();
        let entries = records
            .iter()
            .map(|r| {
                let mut target = Target::secret(store, Some(r.id), Some(r.name.as_str()));
                target.store_name = Some(store_rec.name.to_string());
                self.change_entry(
                    who,
                    account,
                    AuditAction::Create,
                    target,
                    Details::default(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A node's revocation replaced the keys while this batch was sealed: the caller's
        // retry seals it again under new DEKs.
        write.enter().await.map_err(|_| CoreError::Conflict)?;
        let created = self
            .storage
            .create_secrets(account, store, new, self.quota_of(account_rec), &entries)
            .await;
        write.finish(&created);
        created?;
        Ok(records)
    }

    pub async fn list_secrets(
        &self,
        who: &Principal,
        account: AccountId,
        store: StoreId,
        q: SecretListQuery,
    ) -> Result<Page<SecretRecord>, CoreError> {
        self.require_account(
            who,
            account,
            Permission::Read,
            AuditAction::List,
            Target::secret(store, None, None),
        )
        .await?;
        self.storage
            .get_store(account, store)
            .await?
            .ok_or(CoreError::NotFound(Resource::Store))?;
        let query = SecretQuery {
            page: q.page,
            per_page: q.per_page,
            order: q.order,
            direction: q.direction,
            search: q.search,
            scopes: q.scopes,
        };
        Ok(self.storage.list_secrets(account, store, &query).await?)
    }

    pub async fn get_secret(
        &self,
        who: &Principal,
        account: AccountId,
        store: StoreId,
        secret: SecretId,
    ) -> Result<SecretRecord, CoreError> {
        self.require_account(
            who,
            account,
            Permission::Read,
            AuditAction::Read,
            Target::secret(store, Some(secret), None),
        )
        .await?;
        self.find_secret(account, store, secret).await
    }

    async fn find_secret(
        &self,
        account: AccountId,
        store: StoreId,
        secret: SecretId,
    ) -> Result<SecretRecord, CoreError> {
        match self.storage.get_secret(account, store, secret).await? {
            Some(s) => Ok(s),
            None => {
                // Say which of the two is missing.
                self.storage
                    .get_store(account, store)
                    .await?
                    .ok_or(CoreError::NotFound(Resource::Store))?;
                Err(CoreError::NotFound(Resource::Secret))
            }
        }
    }

    pub async fn update_secret(
        &self,
        who: &Principal,
        account: AccountId,
        store: StoreId,
        secret: SecretId,
        update: UpdateSecret,
    ) -> Result<SecretRecord, CoreError> {
        self.require_account(
            who,
            account,
            Permission::Edit,
            AuditAction::Update,
            Target::secret(store, Some(secret), None),
        )
        .await?;
        if update.is_empty() {
            // Nothing to change: no write, no change-log entry, `modified` stays.
            return self.find_secret(account, store, secret).await;
        }
        let stripe = self.update_locks.of(secret);
        for attempt in 0..UPDATE_RETRIES {
            if attempt > 0 {
                // The secret changed under this update; back off a random 1-16 ms before
                // re-reading.
                let jitter = u64::from(random_array::<1>()[0] % 16) + 1;
                tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
            }
            let mut write = self.keys.dek_write();
            let (ticket, pending) = {
                let mut queued = stripe.lock().await;
                // Build on the last queued update of this secret if one is pending, else on
                // what storage holds (everything queued before has been answered).
                let (name, version) = match queued.iter().find(|q| q.secret == secret) {
                    Some(q) => (q.name.clone(), q.version),
                    None => {
                        let current = self.find_secret(account, store, secret).await?;
                        (current.name, current.version)
                    }
                };
                let now = Timestamp::now();
                let (value, dek, new_version) = match &update.value {
                    Some(v) => {
                        let next = version.next().ok_or_else(|| {
                            CoreError::invalid(
                                crate::InvalidKind::Value,
                                "/value",
                                "this secret has reached the maximum number of versions",
                            )
                        })?;
                        let slot = VersionSlot {
                            account,
                            store,
                            secret,
                            version: next,
                        };
                        let (value, dek) = self.seal_version(&mut write, slot, v, now).await?;
                        (Some(value), Some(dek), next)
                    }
                    None => (None, None, version),
                };
                let entry = self.change_entry(
                    who,
                    account,
                    AuditAction::Update,
                    self.secret_target(account, store, secret, name.as_str())
                        .await?,
                    Details {
                        value_modified: Some(update.value.is_some()),
                        ..Details::default()
                    },
                )?;
                // A node's revocation replaced the keys while the value was sealed: sealed
                // again by the next attempt.
                if write.enter().await.is_err() {
                    continue;
                }
                let pending = self
                    .storage
                    .queue_update_secret(
                        SecretUpdate {
                            account_id: account,
                            store_id: store,
                            secret_id: secret,
                            expected_version: version,
                            value,
                            scopes: update.scopes.clone(),
                            comment: update.comment.clone().map(Comment::into_string),
                            modified: now,
                            dek,
                        },
                        &[entry],
                    )
                    .await?;
                let ticket = self.update_locks.ticket();
                queued.retain(|q| q.secret != secret);
                queued.push(QueuedUpdate {
                    secret,
                    ticket,
                    name,
                    version: new_version,
                });
                (ticket, pending)
            };
            let result = pending.await;
            // Released, whatever the answer, before the stripe is locked again: another update
            // of the stripe may be waiting for the gate while holding the stripe.
            write.finish(&result);
            // Once the last queued update of the secret is answered, storage holds everything
            // queued before it. After a failure, the updates queued behind this one fail too
            // (`Conflict`, and retry): the next one reads storage. A request cancelled while
            // waiting leaves its entry; if its update failed, the next update meets `Conflict`
            // and clears it.
            stripe
                .lock()
                .await
                .retain(|q| q.secret != secret || (result.is_ok() && q.ticket != ticket));
            match result {
                Err(coffer_storage::StorageError::Conflict) => {
                    // On a shared database, another instance may have destroyed the DEK this
                    // one seals with, or rotated the replication key: refresh before retrying.
                    self.refresh_after_conflict(account).await?;
                    continue;
                }
                other => return Ok(other?),
            }
        }
        Err(CoreError::Conflict)
    }

    pub async fn delete_secrets(
        &self,
        who: &Principal,
        account: AccountId,
        store: StoreId,
        ids: &[SecretId],
    ) -> Result<(), CoreError> {
        let one = (ids.len() == 1).then(|| ids[0]);
        self.require_account(
            who,
            account,
            Permission::Edit,
            AuditAction::Delete,
            Target::secret(store, one, None),
        )
        .await?;
        let store_name = Some(
            self.storage
                .get_store(account, store)
                .await?
                .ok_or(CoreError::NotFound(Resource::Store))?
                .name
                .into_string(),
        );
        // Names for the audit log; a missing id fails the delete in storage anyway.
        let mut entries = Vec::with_capacity(ids.len());
        for &id in ids {
            let name = self
                .storage
                .get_secret(account, store, id)
                .await?
                .map(|s| s.name.into_string());
            entries.push(self.change_entry(
                who,
                account,
                AuditAction::Delete,
                Target {
                    store_name: store_name.clone(),
                    ..Target::secret(store, Some(id), name.as_deref())
                },
                Details::default(),
            )?);
        }
        Ok(self
            .storage
            .delete_secrets(account, store, ids, &entries)
            .await?)
    }

    /// Copies a secret under a new name, keeping its value. The value is opened and resealed
    /// server-side under the new secret's context; it never leaves the process.
    pub async fn duplicate_secret(
        &self,
        who: &Principal,
        account: AccountId,
        store: StoreId,
        source: SecretId,
        dup: DuplicateSecret,
    ) -> Result<SecretRecord, CoreError> {
        let account_rec = self
            .require_account(
                who,
                account,
                Permission::Edit,
                AuditAction::Create,
                Target::secret(store, None, Some(dup.name.as_str())),
            )
            .await?;
        let original = self.find_secret(account, store, source).await?;
        let plaintext = self.open_current(&original).await?;
        let now = Timestamp::now();
        let id = SecretId::from_bytes(random_id());
        let record = SecretRecord {
            id,
            store_id: store,
            account_id: account,
            name: dup.name,
            comment: dup
                .comment
                .map(Comment::into_string)
                .unwrap_or_else(|| original.comment.clone()),
            scopes: dup.scopes,
            created: now,
            modified: now,
            version: Version::FIRST,
        };
        let slot = VersionSlot {
            account,
            store,
            secret: id,
            version: Version::FIRST,
        };
        // Cloudflare logs a duplicate as a create that names its source. Built before the gate
        // is entered: nothing but the storage call runs under the hold.
        let entry = self.change_entry(
            who,
            account,
            AuditAction::Create,
            self.secret_target(account, store, id, record.name.as_str())
                .await?,
            Details {
                duplicated_from_id: Some(source),
                value_modified: Some(false),
                ..Details::default()
            },
        )?;
        // Sealed again, a bounded number of times (then `Conflict`, as a create answers), when
        // a node's revocation replaced the keys while the value was sealed, or when storage
        // refused the write (`Conflict`: as `create_secrets` retries, after the refresh a
        // shared database needs).
        for attempt in 1..=UPDATE_RETRIES {
            let mut write = self.keys.dek_write();
            let (value, dek) = self.seal_version(&mut write, slot, &plaintext, now).await?;
            if write.enter().await.is_err() {
                continue;
            }
            let created = self
                .storage
                .create_secrets(
                    account,
                    store,
                    vec![NewSecret {
                        record: record.clone(),
                        value,
                        dek: Some(dek),
                    }],
                    self.quota_of(&account_rec),
                    std::slice::from_ref(&entry),
                )
                .await;
            write.finish(&created);
            match created {
                Err(coffer_storage::StorageError::Conflict) if attempt < UPDATE_RETRIES => {
                    self.refresh_after_conflict(account).await?;
                }
                other => {
                    other?;
                    return Ok(record);
                }
            }
        }
        Err(CoreError::Conflict)
    }

    pub async fn quota(&self, who: &Principal, account: AccountId) -> Result<Quota, CoreError> {
        let account_rec = self
            .require_account(
                who,
                account,
                Permission::ViewAccount,
                AuditAction::Read,
                Target::account(),
            )
            .await?;
        let usage = self.storage.secret_count(account).await?;
        Ok(Quota {
            quota: self.quota_of(&account_rec),
            usage,
        })
    }

    /// A secret's audit target, with its store's name.
    async fn secret_target(
        &self,
        account: AccountId,
        store: StoreId,
        secret: SecretId,
        name: &str,
    ) -> Result<Target, CoreError> {
        let store_name = self
            .storage
            .get_store(account, store)
            .await?
            .map(|s| s.name.into_string());
        Ok(Target {
            store_name,
            ..Target::secret(store, Some(secret), Some(name))
        })
    }
}
