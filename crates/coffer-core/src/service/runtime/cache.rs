//! The runtime cache: service tokens, services and secrets' current versions, each entry
//! tagged with the change-log head read before the storage read that filled it and used only
//! while the head has not moved (see the parent module).

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use coffer_storage::{SecretRecord, ServiceRecord, ServiceTokenRecord, VersionRecord};
use coffer_types::{AccountId, SecretName, ServiceId, StoreId, TokenId};
use hashbrown::{Equivalent, HashMap};

use super::NameMap;

/// Entries of each map kept at most; past it the map is emptied (and refilled on demand).
const CACHE_CAPACITY: usize = 100_000;

pub(super) type CachedValue = Option<Arc<(SecretRecord, VersionRecord)>>;

#[derive(Debug, Default)]
pub(super) struct CacheInner {
    /// The change-log head every entry below was read at (or after).
    head: u64,
    /// When the oldest entry below was read (its storage read began), and how long entries
    /// are served after that; `None` for ever (one process per database). On a shared
    /// database the head alone is not enough: it moves on other instances' commits only as
    /// long as their notifications arrive (see `shared.rs`).
    since: Option<std::time::Instant>,
    max_age: Option<std::time::Duration>,
    pub(super) tokens: HashMap<TokenId, ServiceTokenRecord>,
    pub(super) services: HashMap<ServiceId, Arc<ServiceRecord>>,
    pub(super) values: NameMap<ValueKey, CachedValue>,
}

/// A secret by name, as the value cache holds it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ValueKey {
    pub(super) account: AccountId,
    pub(super) store: StoreId,
    pub(super) name: SecretName,
}

/// A [`ValueKey`] borrowing its name, to look one up; hashes as the key it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ValueKeyRef<'a> {
    pub(super) account: AccountId,
    pub(super) store: StoreId,
    pub(super) name: &'a str,
}

impl ValueKey {
    pub(super) fn borrowed(&self) -> ValueKeyRef<'_> {
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
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
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
    pub(super) fn read<T>(&self, head: u64, f: impl FnOnce(&CacheInner) -> Option<T>) -> Option<T> {
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
    pub(super) fn read_uncounted<T>(
        &self,
        head: u64,
        f: impl FnOnce(&CacheInner) -> Option<T>,
    ) -> Option<T> {
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
    pub(super) fn fill(
        &self,
        (head, read_at): (u64, std::time::Instant),
        f: impl FnOnce(&mut CacheInner),
    ) {
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
