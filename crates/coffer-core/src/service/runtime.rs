//! The runtime read: the second permission check, on every read by a bound service.
//!
//! A read needs the service token's row, the service's bindings and the secret's current sealed
//! version. All three are cached in memory ([`RuntimeCache`]) so that a read is one HMAC, a few
//! hash lookups and one AES-GCM open, without a storage read. The cache is exact, not
//! eventually consistent: every entry is tagged with the change-log position
//! ([`coffer_storage::Storage::committed_head`]) read *before* the storage read that filled it,
//! and is used only while the head has not moved. Every write that can change a runtime answer
//! (a value, a scope, a binding, a token, a deletion) appends to the change log and advances the
//! head before it is acknowledged, so the read after an acknowledged write misses the cache and
//! sees the write. Writes that do not touch the log (audit entries, last-used times) leave the
//! cache alone. The cache therefore needs no invalidation hooks, and a cancelled write cannot
//! leave a stale entry behind.
//!
//! Access events are aggregated in memory ([`AccessLog`]) and written to the audit log by the
//! periodic flush, so no read waits for an audit write.
//!
//! The maps on the read path are hashbrown's, so that names can be looked up borrowed
//! ([`ValueKeyRef`], [`AccessKeyRef`]) and a read allocates nothing for its keys. Maps keyed
//! by ids alone (tokens, services; DEKs in the keyring) hash with foldhash: the ids are random
//! and an entry is only made for a row that exists, so nobody chooses what they hold. Maps
//! keyed by names (values, access counts) keep std's keyed SipHash ([`NameMap`]): secret and
//! binding names are chosen by tenants, these maps are shared by every account, and foldhash
//! does not claim to resist an attacker who can choose keys and time look-ups.

use std::hash::RandomState;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hashbrown::HashMap;

mod access;
mod cache;

use crate::AccessRefusal;
#[cfg(test)]
use access::AccessKey;
use access::AccessKeyRef;
pub(crate) use access::AccessLog;
pub(crate) use cache::RuntimeCache;
use cache::{CacheInner, CachedValue, ValueKey, ValueKeyRef};

/// A hashbrown map hashed with std's randomly keyed SipHash, for keys that hold names.
type NameMap<K, V> = HashMap<K, V, RandomState>;

use coffer_crypto::{Plaintext, PresentedToken, TokenHash, TokenKind, ValueContext, open_bytes};
use coffer_storage::{ServiceRecord, ServiceTokenRecord};
use coffer_types::{AccountId, BindingName, SecretId, SecretName, ServiceId, StoreId, TokenId};

use crate::{Coffer, CoreError, RequestContext};

const INVALID_SERVICE_TOKEN: &str = "invalid service token";

/// An authenticated bound service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePrincipal {
    pub token_id: TokenId,
    pub account_id: AccountId,
    pub service_id: ServiceId,
}

/// Runtime reads since start, by outcome, and the runtime cache's look-ups; see
/// [`Coffer::runtime_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Secrets served (a batch read counts each).
    pub served: u64,
    /// Reads of a binding the service lacks, or of a secret without the service's scope.
    pub denied: u64,
    /// Reads of a bound secret that does not exist (any more).
    pub not_found: u64,
    /// Look-ups (token, service, value) the runtime cache answered.
    pub cache_hits: u64,
    /// Look-ups that went to storage.
    pub cache_misses: u64,
}

/// What a service reads in one request: every secret binding's value, and the names of its
/// store bindings (not read: a store binding gives secrets by name).
#[derive(Debug)]
pub struct AllBindings {
    pub values: Vec<(BindingName, Plaintext)>,
    pub store_bindings: Vec<BindingName>,
}

/// One secret a service may read, resolved from a binding.
struct Resolved<'a> {
    service: &'a ServiceRecord,
    binding: &'a BindingName,
    store: StoreId,
    secret_name: &'a str,
    /// Read through a store binding: the name comes from the request, so a miss is neither
    /// cached nor recorded under that name, and a secret the service may not read is
    /// indistinguishable from a missing one.
    via_store: bool,
}

impl Coffer {
    /// Authenticates a service token. An API or node token gets `WrongTokenKind` if it is
    /// valid (and the usual `Unauthenticated` if not), so a caller learns nothing about a token
    /// it cannot present. `context` is asked for only when an API token is presented (the
    /// audit entry of its use); a service token's read costs no context.
    pub async fn authenticate_service(
        &self,
        bearer: &str,
        context: impl FnOnce() -> RequestContext,
    ) -> Result<ServicePrincipal, CoreError> {
        let token = PresentedToken::parse(bearer)
            .map_err(|_| CoreError::Unauthenticated(INVALID_SERVICE_TOKEN))?;
        match token.kind() {
            TokenKind::Service => {}
            TokenKind::Api => {
                self.authenticate(bearer, context()).await?;
                return Err(CoreError::WrongTokenKind(
                    "API tokens cannot read secret values; a bound service reads with its service token (coffersvc_...)",
                ));
            }
            TokenKind::Node => {
                return Err(if self.is_node_token(&token).await? {
                    CoreError::WrongTokenKind(
                        "node tokens cannot read secret values; a bound service reads with its service token (coffersvc_...)",
                    )
                } else {
                    CoreError::Unauthenticated(INVALID_SERVICE_TOKEN)
                });
            }
        }
        let record = self.service_token_row(token.id()).await?;
        self.check_service_token(&token, record.as_ref())
    }

    /// Whether `bearer` is a valid service token; for the control-plane API, which refuses
    /// such tokens with a message that says what they are for.
    pub(crate) async fn is_service_token(
        &self,
        token: &PresentedToken<'_>,
    ) -> Result<bool, CoreError> {
        let record = self.service_token_row(token.id()).await?;
        Ok(self.check_service_token(token, record.as_ref()).is_ok())
    }

    async fn service_token_row(
        &self,
        id: TokenId,
    ) -> Result<Option<ServiceTokenRecord>, CoreError> {
        let head = (self.storage.committed_head(), std::time::Instant::now());
        if let Some(row) = self
            .runtime_cache
            .read(head.0, |c| c.tokens.get(&id).cloned())
        {
            return Ok(Some(row));
        }
        let row = self.storage.get_service_token(id).await?;
        if let Some(row) = &row {
            self.runtime_cache.fill(head, |c| {
                c.tokens.insert(id, row.clone());
            });
        }
        Ok(row)
    }

    fn check_service_token(
        &self,
        token: &PresentedToken<'_>,
        record: Option<&ServiceTokenRecord>,
    ) -> Result<ServicePrincipal, CoreError> {
        let record = record.ok_or(CoreError::Unauthenticated(INVALID_SERVICE_TOKEN))?;
        // Constant-time comparison of the keyed hash.
        if !self
            .keys
            .service_mac()
            .verify_token(*token, &TokenHash(record.hash))
        {
            return Err(CoreError::Unauthenticated(INVALID_SERVICE_TOKEN));
        }
        if record.revoked.is_some() {
            return Err(CoreError::Unauthenticated("service token has been revoked"));
        }
        Ok(ServicePrincipal {
            token_id: record.id,
            account_id: record.account_id,
            service_id: record.service_id,
        })
    }

    async fn runtime_service(
        &self,
        who: &ServicePrincipal,
    ) -> Result<Arc<ServiceRecord>, CoreError> {
        let head = (self.storage.committed_head(), std::time::Instant::now());
        if let Some(s) = self
            .runtime_cache
            .read(head.0, |c| c.services.get(&who.service_id).cloned())
        {
            return Ok(s);
        }
        // A token outlives its service only between the service's deletion and the next
        // change-log position; treat it as the invalid token it has become.
        let service = self
            .storage
            .get_service(who.account_id, who.service_id)
            .await?
            .ok_or(CoreError::Unauthenticated(INVALID_SERVICE_TOKEN))?;
        let service = Arc::new(service);
        self.runtime_cache.fill(head, |c| {
            c.services.insert(who.service_id, service.clone());
        });
        Ok(service)
    }

    async fn current(
        &self,
        account: AccountId,
        store: StoreId,
        name: &SecretName,
        cache_missing: bool,
    ) -> Result<CachedValue, CoreError> {
        let head = (self.storage.committed_head(), std::time::Instant::now());
        let key = ValueKeyRef {
            account,
            store,
            name: name.as_str(),
        };
        // Through a store binding the name is the caller's and a missing one is not cached, so
        // a hit would tell that the name exists where the answer does not: such look-ups are
        // not counted.
        let lookup = |c: &CacheInner| c.values.get(&key).cloned();
        let cached = if cache_missing {
            self.runtime_cache.read(head.0, lookup)
        } else {
            self.runtime_cache.read_uncounted(head.0, lookup)
        };
        if let Some(v) = cached {
            return Ok(v);
        }
        let value = self
            .storage
            .current_value(account, store, name)
            .await?
            .map(Arc::new);
        if value.is_some() || cache_missing {
            self.runtime_cache.fill(head, |c| {
                c.values.insert(
                    ValueKey {
                        account,
                        store,
                        name: name.clone(),
                    },
                    value.clone(),
                );
            });
        }
        Ok(value)
    }

    /// Runtime reads since start, by outcome, and the runtime cache's hits and misses. Plain
    /// counters, read by the server's metrics at scrape time.
    pub fn runtime_stats(&self) -> RuntimeStats {
        let (log, cache) = (&self.access_log, &self.runtime_cache);
        RuntimeStats {
            served: log.served.load(Ordering::Relaxed),
            denied: log.denied.load(Ordering::Relaxed),
            not_found: log.not_found.load(Ordering::Relaxed),
            cache_hits: cache.hits.load(Ordering::Relaxed),
            cache_misses: cache.misses.load(Ordering::Relaxed),
        }
    }

    /// Reads the secret bound as `binding`.
    pub async fn read_binding(
        &self,
        who: &ServicePrincipal,
        binding: &str,
    ) -> Result<Plaintext, CoreError> {
        let service = self.runtime_service(who).await?;
        let Some(b) = service
            .secrets
            .iter()
            .find(|b| b.binding.as_str() == binding)
        else {
            return Err(self.no_such_binding(who, &service, binding));
        };
        let resolved = Resolved {
            binding: &b.binding,
            store: b.store_id,
            secret_name: b.secret_name.as_str(),
            service: &service,
            via_store: false,
        };
        let (value, key) = self.read_resolved(who, resolved, &b.secret_name).await?;
        self.access_log.note(key, service.name.as_str());
        Ok(value)
    }

    /// Reads every secret binding of the service, in binding order, and names its store
    /// bindings (whose secrets are read one by one, by name). Fails as a whole if any one
    /// secret binding fails: a service started with one of its secrets silently missing is
    /// worse than one that does not start.
    pub async fn read_all_bindings(
        &self,
        who: &ServicePrincipal,
    ) -> Result<AllBindings, CoreError> {
        let service = self.runtime_service(who).await?;
        let mut out = Vec::with_capacity(service.secrets.len());
        let mut served = Vec::with_capacity(service.secrets.len());
        for b in &service.secrets {
            let resolved = Resolved {
                binding: &b.binding,
                store: b.store_id,
                secret_name: b.secret_name.as_str(),
                service: &service,
                via_store: false,
            };
            let (value, key) = self.read_resolved(who, resolved, &b.secret_name).await?;
            out.push((b.binding.clone(), value));
            served.push(key);
        }
        // Recorded only now: a batch that failed part-way returned no value at all.
        for key in served {
            self.access_log.note(key, service.name.as_str());
        }
        Ok(AllBindings {
            values: out,
            store_bindings: service.stores.iter().map(|b| b.binding.clone()).collect(),
        })
    }

    /// Reads the secret `name` through the store binding `binding`.
    pub async fn read_store_binding(
        &self,
        who: &ServicePrincipal,
        binding: &str,
        name: &str,
    ) -> Result<Plaintext, CoreError> {
        let service = self.runtime_service(who).await?;
        let Some(b) = service
            .stores
            .iter()
            .find(|b| b.binding.as_str() == binding)
        else {
            return Err(self.no_such_binding(who, &service, binding));
        };
        // A name that cannot exist is simply not found; echo at most a bounded prefix.
        let Ok(secret_name) = SecretName::parse(name) else {
            return Err(CoreError::BoundSecretNotFound(
                name.chars().take(255).collect(),
            ));
        };
        let resolved = Resolved {
            binding: &b.binding,
            store: b.store_id,
            secret_name: secret_name.as_str(),
            service: &service,
            via_store: true,
        };
        let (value, key) = self.read_resolved(who, resolved, &secret_name).await?;
        self.access_log.note(key, service.name.as_str());
        Ok(value)
    }

    /// Notes a read of a binding the service does not have (a denied access) and returns the
    /// error for it. The recorded name is bounded: it comes from the request path.
    fn no_such_binding(
        &self,
        who: &ServicePrincipal,
        service: &ServiceRecord,
        binding: &str,
    ) -> CoreError {
        let shown: String = binding.chars().take(255).collect();
        // One key per token, not per name asked for: made-up names cannot flood the log.
        self.access_log.note(
            AccessKeyRef {
                account: who.account_id,
                service: service.id,
                token: who.token_id,
                binding: "",
                store: None,
                secret: None,
                secret_name: "",
                refused: Some(AccessRefusal::NoSuchBinding),
            },
            service.name.as_str(),
        );
        CoreError::BindingNotFound(shown)
    }

    /// Opens the resolved secret. Refusals are noted in the access log here; a success is
    /// returned with its access key for the caller to note once the value is really served.
    async fn read_resolved<'a>(
        &self,
        who: &ServicePrincipal,
        r: Resolved<'a>,
        name: &SecretName,
    ) -> Result<(Plaintext, AccessKeyRef<'a>), CoreError> {
        let value = self
            .current(who.account_id, r.store, name, !r.via_store)
            .await?;
        let key = |secret: Option<SecretId>, refused: Option<AccessRefusal>| AccessKeyRef {
            account: who.account_id,
            service: r.service.id,
            token: who.token_id,
            binding: r.binding.as_str(),
            store: Some(r.store),
            secret,
            secret_name: r.secret_name,
            refused,
        };
        let Some(value) = value else {
            // Through a store binding the name is the caller's: one key per binding, so made-up
            // names cannot flood the access log.
            let mut k = key(None, Some(AccessRefusal::SecretNotFound));
            if r.via_store {
                k.secret_name = "";
            }
            self.access_log.note(k, r.service.name.as_str());
            return Err(CoreError::BoundSecretNotFound(r.secret_name.to_owned()));
        };
        let (secret, version) = &*value;
        if !secret.scopes.contains(r.service.kind) {
            // Through a store binding it is answered as not found, and counted so in the
            // metrics: counting it denied would tell which names exist.
            let counted = if r.via_store {
                AccessRefusal::SecretNotFound
            } else {
                AccessRefusal::ScopeMissing
            };
            self.access_log.note_counted_as(
                key(Some(secret.id), Some(AccessRefusal::ScopeMissing)),
                r.service.name.as_str(),
                Some(counted),
            );
            if r.via_store {
                // A store binding gives the secrets that carry the type; the others are not
                // part of it, and their names are not the service's to learn.
                return Err(CoreError::BoundSecretNotFound(r.secret_name.to_owned()));
            }
            return Err(CoreError::ScopeDenied(format!(
                "secret \"{}\" does not carry the scope \"{}\" that this service's type needs",
                r.secret_name, r.service.kind
            )));
        }
        let dek = self
            .keys
            .opening_key(who.account_id, version.dek_id)
            .await?;
        let ctx = ValueContext {
            account: secret.account_id,
            store: secret.store_id,
            secret: secret.id,
            version: version.version,
            dek: version.dek_id,
        };
        let plain = open_bytes(&dek, &ctx, &version.sealed).map_err(|_| {
            CoreError::Internal(format!(
                "secret {} version {} failed to open",
                secret.id, version.version
            ))
        })?;
        Ok((plain, key(Some(secret.id), None)))
    }
}

#[cfg(test)]
#[path = "runtime_cache_tests.rs"]
mod cache_tests;
