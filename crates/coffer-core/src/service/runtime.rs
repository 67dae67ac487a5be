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

use std::collections::HashMap as StdHashMap;
use std::hash::{Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hashbrown::{Equivalent, HashMap};

/// A hashbrown map hashed with std's randomly keyed SipHash, for keys that hold names.
type NameMap<K, V> = HashMap<K, V, RandomState>;

use coffer_crypto::{Plaintext, PresentedToken, TokenHash, TokenKind, ValueContext, open_bytes};
use coffer_storage::{AuditEntry, SecretRecord, ServiceRecord, ServiceTokenRecord, VersionRecord};
use coffer_types::{
    AccountId, BindingName, SecretId, SecretName, ServiceId, StoreId, Timestamp, TokenId,
};

use super::audit::{Actor, Details, Event, Target};
use crate::{AuditAction, AuditOutcome, TargetKind};
use crate::{Coffer, CoreError, RequestContext};

/// Entries of each map kept at most; past it the map is emptied (and refilled on demand).
const CACHE_CAPACITY: usize = 100_000;
/// Distinct (token, binding, outcome) keys the access log aggregates between flushes at most;
/// reads past it are counted in the log's `dropped` counter and reported at the next flush.
const ACCESS_CAPACITY: usize = 100_000;

const INVALID_SERVICE_TOKEN: &str = "invalid service token";

/// An authenticated bound service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePrincipal {
    pub token_id: TokenId,
    pub account_id: AccountId,
    pub service_id: ServiceId,
}

type CachedValue = Option<Arc<(SecretRecord, VersionRecord)>>;

#[derive(Debug, Default)]
struct CacheInner {
    /// The change-log head every entry below was read at (or after).
    head: u64,
    /// When the oldest entry below was read (its storage read began), and how long entries
    /// are served after that; `None` for ever (one process per database). On a shared
    /// database the head alone is not enough: it moves on other instances' commits only as
    /// long as their notifications arrive (see `shared.rs`).
    since: Option<std::time::Instant>,
    max_age: Option<std::time::Duration>,
    tokens: HashMap<TokenId, ServiceTokenRecord>,
    services: HashMap<ServiceId, Arc<ServiceRecord>>,
    values: NameMap<ValueKey, CachedValue>,
}

/// A secret by name, as the value cache holds it.
#[derive(Debug, PartialEq, Eq)]
struct ValueKey {
    account: AccountId,
    store: StoreId,
    name: SecretName,
}

/// A [`ValueKey`] borrowing its name, to look one up; hashes as the key it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ValueKeyRef<'a> {
    account: AccountId,
    store: StoreId,
    name: &'a str,
}

impl ValueKey {
    fn borrowed(&self) -> ValueKeyRef<'_> {
        ValueKeyRef {
            account: self.account,
            store: self.store,
            name: self.name.as_str(),
        }
    }
}

impl Hash for ValueKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.borrowed().hash(state);
    }
}

/// The store and the name: a store id is unique across accounts, so the account adds nothing
/// to the hash (equality still compares it). Fewer bytes through SipHash on every read.
impl Hash for ValueKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.store.hash(state);
        self.name.hash(state);
    }
}

impl Equivalent<ValueKey> for ValueKeyRef<'_> {
    fn equivalent(&self, key: &ValueKey) -> bool {
        *self == key.borrowed()
    }
}

/// See the module comment.
#[derive(Debug, Default)]
pub(crate) struct RuntimeCache {
    inner: RwLock<CacheInner>,
    /// Look-ups answered from the cache, and those that were not (for metrics).
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheInner {
    fn expired(&self) -> bool {
        match (self.max_age, self.since) {
            (Some(max), Some(since)) => since.elapsed() >= max,
            _ => false,
        }
    }

    fn clear(&mut self) {
        self.tokens.clear();
        self.services.clear();
        self.values.clear();
        self.since = None;
    }
}

impl RuntimeCache {
    fn read<T>(&self, head: u64, f: impl FnOnce(&CacheInner) -> Option<T>) -> Option<T> {
        let found = self.read_uncounted(head, f);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// [`RuntimeCache::read`] without counting the look-up in the metrics: for look-ups
    /// whose hit or miss would tell something the answer does not (see `current`).
    fn read_uncounted<T>(&self, head: u64, f: impl FnOnce(&CacheInner) -> Option<T>) -> Option<T> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        if inner.head == head && !inner.expired() {
            f(&inner)
        } else {
            None
        }
    }

    /// Serves entries for at most `max_age` after they were read (a database other instances
    /// write to as well); drops what was cached so far.
    pub(crate) fn set_max_age(&self, max_age: std::time::Duration) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.max_age = Some(max_age);
        inner.clear();
    }

    /// Stores what was read from storage after observing `head` at `read_at` (taken with the
    /// head, before the read). If the cache has moved past `head`, the read may be stale and
    /// is not kept; if `head` is newer, or the entries held have reached the maximum age,
    /// everything older is dropped first.
    fn fill(&self, (head, read_at): (u64, std::time::Instant), f: impl FnOnce(&mut CacheInner)) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if head < inner.head {
            return;
        }
        if inner.max_age.is_some_and(|max| read_at.elapsed() >= max) {
            return;
        }
        if head > inner.head || inner.expired() {
            inner.clear();
            inner.head = head;
        }
        inner.since = Some(inner.since.map_or(read_at, |since| since.min(read_at)));
        if inner.tokens.len() >= CACHE_CAPACITY {
            inner.tokens.clear();
        }
        if inner.services.len() >= CACHE_CAPACITY {
            inner.services.clear();
        }
        if inner.values.len() >= CACHE_CAPACITY {
            inner.values.clear();
        }
        f(&mut inner);
    }
}

/// What the access log aggregates reads by. Hashes as its borrowed form ([`AccessKeyRef`]),
/// which is what a read notes: the names are copied only for the first read of an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AccessKey {
    account: AccountId,
    service: ServiceId,
    token: TokenId,
    /// As the service asked for it (a binding it may not have).
    binding: String,
    store: Option<StoreId>,
    secret: Option<SecretId>,
    secret_name: String,
    /// `None` for a read that was served; otherwise why it was refused.
    refused: Option<AccessRefusal>,
}

/// An [`AccessKey`] borrowing its names from the read that is noted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AccessKeyRef<'a> {
    account: AccountId,
    service: ServiceId,
    token: TokenId,
    binding: &'a str,
    store: Option<StoreId>,
    secret: Option<SecretId>,
    secret_name: &'a str,
    refused: Option<AccessRefusal>,
}

impl AccessKey {
    fn borrowed(&self) -> AccessKeyRef<'_> {
        AccessKeyRef {
            account: self.account,
            service: self.service,
            token: self.token,
            binding: &self.binding,
            store: self.store,
            secret: self.secret,
            secret_name: &self.secret_name,
            refused: self.refused,
        }
    }
}

impl AccessKeyRef<'_> {
    fn to_key(self) -> AccessKey {
        AccessKey {
            account: self.account,
            service: self.service,
            token: self.token,
            binding: self.binding.to_owned(),
            store: self.store,
            secret: self.secret,
            secret_name: self.secret_name.to_owned(),
            refused: self.refused,
        }
    }
}

impl Hash for AccessKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.borrowed().hash(state);
    }
}

/// The token, the names, the secret and the outcome: the account and the service follow from
/// the token, the store from the binding, so they add nothing to the hash (equality still
/// compares every field). Fewer bytes through SipHash on every read.
impl Hash for AccessKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.token.hash(state);
        self.binding.hash(state);
        self.secret.hash(state);
        self.secret_name.hash(state);
        self.refused.hash(state);
    }
}

impl Equivalent<AccessKey> for AccessKeyRef<'_> {
    fn equivalent(&self, key: &AccessKey) -> bool {
        *self == key.borrowed()
    }
}

/// Why a runtime read was refused, as access events record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessRefusal {
    /// The service has no binding of that name.
    NoSuchBinding,
    /// The bound secret does not exist (any more).
    SecretNotFound,
    /// The secret does not carry the scope the service's type needs.
    ScopeMissing,
}

impl AccessRefusal {
    pub const ALL: [AccessRefusal; 3] = [
        AccessRefusal::NoSuchBinding,
        AccessRefusal::SecretNotFound,
        AccessRefusal::ScopeMissing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccessRefusal::NoSuchBinding => "no such binding",
            AccessRefusal::SecretNotFound => "secret not found",
            AccessRefusal::ScopeMissing => "secret lacks the service's scope",
        }
    }

    pub fn parse(s: &str) -> Option<AccessRefusal> {
        AccessRefusal::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What became of the reads an [`AccessEvent`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessOutcome {
    Served,
    Refused(AccessRefusal),
    /// Reads of the account not aggregated because the interval saw too many distinct keys.
    Unrecorded,
}

impl AccessOutcome {
    /// How the audit log (and an access batch on the wire) says the reads ended: `success`,
    /// `denied` (the reason apart) or `unrecorded`.
    pub fn audit_outcome(self) -> AuditOutcome {
        match self {
            AccessOutcome::Served => AuditOutcome::Success,
            AccessOutcome::Refused(_) => AuditOutcome::Denied,
            AccessOutcome::Unrecorded => AuditOutcome::Unrecorded,
        }
    }
}

/// Runtime reads aggregated over an interval per (token, binding, secret, outcome): ids and
/// names only, never a value or a token. The control plane writes them to the audit log
/// itself; an edge hands them upstream ([`Coffer::take_access_events`],
/// [`Coffer::record_edge_access`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEvent {
    pub account: AccountId,
    /// `None` only for [`AccessOutcome::Unrecorded`].
    pub service: Option<ServiceId>,
    pub service_name: String,
    pub token: Option<TokenId>,
    /// As the service asked for it (empty when not recorded per name).
    pub binding: String,
    pub store: Option<StoreId>,
    pub secret: Option<SecretId>,
    pub secret_name: String,
    pub outcome: AccessOutcome,
    pub reads: u64,
    pub first: Timestamp,
    pub last: Timestamp,
}

#[derive(Debug, Clone)]
struct AccessCount {
    service_name: String,
    reads: u64,
    first: Timestamp,
    last: Timestamp,
}

/// Runtime reads noted since the last flush, aggregated per token, binding, secret and outcome.
#[derive(Debug, Default)]
pub(crate) struct AccessLog {
    inner: Mutex<AccessInner>,
    /// Reads noted since start, by outcome (for metrics; never reset).
    served: AtomicU64,
    denied: AtomicU64,
    not_found: AtomicU64,
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

#[derive(Debug, Default)]
struct AccessInner {
    counts: NameMap<AccessKey, AccessCount>,
    /// Reads not aggregated because the map was full, per account.
    dropped: StdHashMap<AccountId, u64>,
}

impl AccessLog {
    fn note(&self, key: AccessKeyRef<'_>, service_name: &str) {
        self.note_counted_as(key, service_name, key.refused);
    }

    /// Notes `key` in the access log, counted in the metrics as `counted` (what the caller
    /// was told, which may say less than the key: a store binding's scope miss is answered,
    /// and so counted, as not found).
    fn note_counted_as(
        &self,
        key: AccessKeyRef<'_>,
        service_name: &str,
        counted: Option<AccessRefusal>,
    ) {
        let outcome = match counted {
            None => &self.served,
            Some(AccessRefusal::SecretNotFound) => &self.not_found,
            Some(AccessRefusal::NoSuchBinding | AccessRefusal::ScopeMissing) => &self.denied,
        };
        outcome.fetch_add(1, Ordering::Relaxed);
        let now = Timestamp::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = inner.counts.get_mut(&key) {
            c.reads += 1;
            c.last = now;
            return;
        }
        if inner.counts.len() >= ACCESS_CAPACITY {
            *inner.dropped.entry(key.account).or_default() += 1;
            return;
        }
        inner.counts.insert(
            key.to_key(),
            AccessCount {
                service_name: service_name.to_owned(),
                reads: 1,
                first: now,
                last: now,
            },
        );
    }

    fn take(&self) -> AccessInner {
        std::mem::take(&mut *self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Everything noted since the last take, as events.
    fn take_events(&self) -> Vec<AccessEvent> {
        let inner = self.take();
        let mut events: Vec<AccessEvent> = inner
            .counts
            .into_iter()
            .map(|(key, count)| AccessEvent {
                account: key.account,
                service: Some(key.service),
                service_name: count.service_name,
                token: Some(key.token),
                binding: key.binding,
                store: key.store,
                secret: key.secret,
                secret_name: key.secret_name,
                outcome: key
                    .refused
                    .map_or(AccessOutcome::Served, AccessOutcome::Refused),
                reads: count.reads,
                first: count.first,
                last: count.last,
            })
            .collect();
        let now = Timestamp::now();
        events.extend(inner.dropped.into_iter().map(|(account, n)| AccessEvent {
            account,
            service: None,
            service_name: String::new(),
            token: None,
            binding: String::new(),
            store: None,
            secret: None,
            secret_name: String::new(),
            outcome: AccessOutcome::Unrecorded,
            reads: n,
            first: now,
            last: now,
        }));
        events
    }

    /// Puts back events that could not be delivered.
    fn restore_events(&self, events: Vec<AccessEvent>) {
        let mut back = AccessInner::default();
        for e in events {
            let refused = match e.outcome {
                AccessOutcome::Served => None,
                AccessOutcome::Refused(r) => Some(r),
                AccessOutcome::Unrecorded => {
                    *back.dropped.entry(e.account).or_default() += e.reads;
                    continue;
                }
            };
            let (Some(service), Some(token)) = (e.service, e.token) else {
                continue;
            };
            back.counts.insert(
                AccessKey {
                    account: e.account,
                    service,
                    token,
                    binding: e.binding,
                    store: e.store,
                    secret: e.secret,
                    secret_name: e.secret_name,
                    refused,
                },
                AccessCount {
                    service_name: e.service_name,
                    reads: e.reads,
                    first: e.first,
                    last: e.last,
                },
            );
        }
        self.restore(back);
    }

    /// Puts back what could not be written, merging with reads noted meanwhile.
    fn restore(&self, back: AccessInner) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (key, count) in back.counts {
            match inner.counts.get_mut(&key) {
                Some(c) => {
                    c.reads += count.reads;
                    c.first = c.first.min(count.first);
                    c.last = c.last.max(count.last);
                }
                None => {
                    inner.counts.insert(key, count);
                }
            }
        }
        for (account, n) in back.dropped {
            *inner.dropped.entry(account).or_default() += n;
        }
    }
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

    /// Writes the access events aggregated since the last flush to the audit log: one `access`
    /// entry per (token, binding, secret, outcome) with the number of reads and the times of
    /// the first and last. The server calls this every few seconds and at shutdown; if the
    /// write fails the counts are kept for the next flush. A crash loses at most one interval.
    pub async fn flush_access_events(&self) -> Result<usize, CoreError> {
        let events = self.access_log.take_events();
        if events.is_empty() {
            return Ok(0);
        }
        let entries = self.access_entries(&events, None, None)?;
        // Entries of deleted accounts cannot be written; storage keeps chains per account, so
        // a failure for one would refuse the whole batch. Write them in one call and, on
        // failure, keep them for the next flush.
        let n = entries.len();
        match self.storage.append_audit(&entries).await {
            Ok(()) => Ok(n),
            Err(e) => {
                self.access_log.restore_events(events);
                Err(e.into())
            }
        }
    }

    /// Takes the access events aggregated since the last call, for an edge to send upstream
    /// (instead of [`Coffer::flush_access_events`]). Give back what could not be kept with
    /// [`Coffer::restore_access_events`].
    pub fn take_access_events(&self) -> Vec<AccessEvent> {
        self.access_log.take_events()
    }

    /// Merges events back into the access log (an edge that could not keep them).
    pub fn restore_access_events(&self, events: Vec<AccessEvent>) {
        self.access_log.restore_events(events);
    }

    /// Records access events an edge node delivered (on the control plane): one `access`
    /// entry per event in its account's audit log, naming the edge that served the reads
    /// (`observed_by`: the delivering node, or an edge behind a relay), all in one transaction
    /// and exactly once per `batch_id` (`Ok(false)`, nothing written, for a batch delivered
    /// before). Events of accounts this instance never had (no account, no audit chain) are
    /// dropped with a warning rather than starting a chain for an unknown id.
    pub async fn record_edge_access(
        &self,
        delivered_by: (TokenId, &str),
        observed_by: (TokenId, &str),
        batch_id: [u8; 16],
        events: Vec<AccessEvent>,
    ) -> Result<bool, CoreError> {
        let mut known: StdHashMap<AccountId, bool> = StdHashMap::new();
        let mut kept = Vec::with_capacity(events.len());
        for e in events {
            let is_known = match known.get(&e.account) {
                Some(k) => *k,
                None => {
                    let k = self.storage.get_account(e.account).await?.is_some()
                        || self.storage.audit_head(e.account).await?.is_some();
                    known.insert(e.account, k);
                    k
                }
            };
            if is_known {
                kept.push(e);
            } else {
                tracing::warn!(node = %observed_by.1, account = %e.account, "dropping access events of an unknown account");
            }
        }
        // Forwarded by a relay: say which too, since the relay vouches for the attribution.
        let relay = (delivered_by.0 != observed_by.0).then_some(delivered_by);
        let entries = self.access_entries(&kept, Some(observed_by), relay)?;
        Ok(self
            .storage
            .record_access_batch(batch_id, delivered_by.0, &entries)
            .await?)
    }

    /// The audit entries for access events; `edge` names the node that observed them (none:
    /// this process), `relay` the relay that forwarded them.
    pub(crate) fn access_entries(
        &self,
        events: &[AccessEvent],
        edge: Option<(TokenId, &str)>,
        relay: Option<(TokenId, &str)>,
    ) -> Result<Vec<AuditEntry>, CoreError> {
        let mut entries: Vec<AuditEntry> = Vec::with_capacity(events.len());
        for e in events {
            let (mut target, who) = match (e.outcome, e.service, e.token) {
                (AccessOutcome::Unrecorded, _, _) | (_, None, _) | (_, _, None) => {
                    (Target::of(TargetKind::Service), Actor::Instance)
                }
                (_, Some(_), Some(token_id)) => (
                    match e.store {
                        Some(store) => Target::secret(store, e.secret, Some(&e.secret_name)),
                        None => Target::of(TargetKind::Binding),
                    },
                    Actor::Service { token_id },
                ),
            };
            if e.outcome != AccessOutcome::Unrecorded {
                target.service_id = e.service;
                target.service_name = Some(e.service_name.clone());
                target.binding = (!e.binding.is_empty()).then(|| e.binding.clone());
            }
            let unrecorded = e.outcome == AccessOutcome::Unrecorded;
            let details = Details {
                reads: Some(e.reads),
                first_read: (!unrecorded).then(|| e.first.to_rfc3339()),
                last_read: (!unrecorded).then(|| e.last.to_rfc3339()),
                reason: match e.outcome {
                    AccessOutcome::Served => None,
                    AccessOutcome::Refused(r) => Some(r.as_str().to_owned()),
                    AccessOutcome::Unrecorded => {
                        Some("too many distinct reads in one interval to record each".into())
                    }
                },
                edge_node_id: edge.map(|(id, _)| id),
                edge_node: edge.map(|(_, name)| name.to_owned()),
                edge_relay_id: relay.map(|(id, _)| id),
                edge_relay: relay.map(|(_, name)| name.to_owned()),
                ..Details::default()
            };
            entries.push(self.audit_entry(
                e.account,
                Event {
                    action: AuditAction::Access,
                    outcome: e.outcome.audit_outcome(),
                    target,
                    details,
                    who,
                },
            )?);
        }
        Ok(entries)
    }
}

#[cfg(test)]
#[path = "runtime_cache_tests.rs"]
mod cache_tests;
