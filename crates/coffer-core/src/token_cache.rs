//! The token cache: token rows by id, so authentication costs one HMAC instead of a storage
//! read.
//!
//! Correctness rests on one rule: a token (or account) is *barred* from the cache before the
//! write that revokes (or deletes) it is submitted. A barred id is never served from or stored
//! into the cache again, so every later request reads the row from storage and sees the
//! revocation. This holds even if the revoking request is cancelled mid-write (the bar is
//! already in place, whether or not the write commits) and even if a request that read the row
//! before the revocation tries to cache it afterwards (the insert is refused under the same lock).
//!
//! Bars are never lifted (a row read before a revocation could otherwise be cached after it),
//! so only ids that exist are barred: a token of the account asked about, an account that
//! exists. Their number is bounded by the rows storage holds, whatever ids callers make up.
//!
//! On SQLite, rows change only through this process (one process per data dir), so the bars
//! are all it needs. On a database shared by several instances (PostgreSQL), another instance
//! may revoke a token or delete an account without this process knowing: there each row is
//! also kept at most [`TokenCache::set_max_age`] (half a second, set by the server), so a
//! revocation committed elsewhere is seen here within that time, at the cost of one storage
//! read per token and interval. A time bound needs no channel that could be lost: a listener
//! that misses a notification cannot leave a revoked token cached.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use coffer_storage::TokenRecord;
use coffer_types::{AccountId, TokenId};

/// Token rows kept at most.
const CAPACITY: usize = 100_000;

#[derive(Debug, Default)]
struct Inner {
    /// Each row with when it was read from storage.
    rows: HashMap<TokenId, (TokenRecord, Instant)>,
    /// How long a row is served; forever when `None` (one process per database).
    max_age: Option<Duration>,
    barred_tokens: HashSet<TokenId>,
    barred_accounts: HashSet<AccountId>,
}

#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    inner: RwLock<Inner>,
}

impl TokenCache {
    pub(crate) fn get(&self, id: TokenId) -> Option<TokenRecord> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let (record, read_at) = inner.rows.get(&id)?;
        match inner.max_age {
            Some(max) if read_at.elapsed() >= max => None,
            _ => Some(record.clone()),
        }
    }

    /// Serves each row for at most `max_age` after it was read (for a database that other
    /// instances write to as well); drops the rows cached so far.
    pub(crate) fn set_max_age(&self, max_age: Duration) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.max_age = Some(max_age);
        inner.rows.clear();
    }

    /// Caches a row read from storage (`read_at`: when the read began), unless its token or
    /// account was barred meanwhile.
    pub(crate) fn insert(&self, record: &TokenRecord, read_at: Instant) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner.barred_tokens.contains(&record.id)
            || inner.barred_accounts.contains(&record.account_id)
        {
            return;
        }
        if inner.rows.len() >= CAPACITY
            && let Some(victim) = inner.rows.keys().next().copied()
        {
            inner.rows.remove(&victim);
        }
        inner.rows.insert(record.id, (record.clone(), read_at));
    }

    /// Call before submitting a revocation of `id`.
    pub(crate) fn bar_token(&self, id: TokenId) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.rows.remove(&id);
        inner.barred_tokens.insert(id);
    }

    /// Call before submitting the deletion of `account`.
    pub(crate) fn bar_account(&self, account: AccountId) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.rows.retain(|_, (t, _)| t.account_id != account);
        inner.barred_accounts.insert(account);
    }

    /// How many token and account ids are barred.
    #[cfg(test)]
    pub(crate) fn bars(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.barred_tokens.len() + inner.barred_accounts.len()
    }
}

#[cfg(test)]
mod tests {
    use coffer_types::Timestamp;

    use super::*;

    fn row(id: u8, account: u8) -> TokenRecord {
        TokenRecord {
            id: TokenId::from_bytes([id; 16]),
            account_id: AccountId::from_bytes([account; 16]),
            name: "t".into(),
            hash: [0; 32],
            role: "super_admin".into(),
            operator: false,
            created: Timestamp::now(),
            expires: None,
            revoked: None,
            last_used: None,
        }
    }

    #[test]
    fn a_row_read_before_a_revocation_is_not_cached_after_it() {
        let cache = TokenCache::default();
        let stale = row(1, 9);
        cache.insert(&stale, Instant::now());
        assert_eq!(cache.get(stale.id), Some(stale.clone()));
        // The revocation bars the token; a request that read the row earlier then tries to
        // cache it: refused, now and later.
        cache.bar_token(stale.id);
        assert_eq!(cache.get(stale.id), None);
        cache.insert(&stale, Instant::now());
        assert_eq!(cache.get(stale.id), None);
        // Other tokens are unaffected.
        let other = row(2, 9);
        cache.insert(&other, Instant::now());
        assert_eq!(cache.get(other.id), Some(other));
    }

    #[test]
    fn a_deleted_accounts_tokens_are_never_cached_again() {
        let cache = TokenCache::default();
        let (a, b) = (row(1, 7), row(2, 8));
        cache.insert(&a, Instant::now());
        cache.insert(&b, Instant::now());
        cache.bar_account(a.account_id);
        assert_eq!(cache.get(a.id), None);
        cache.insert(&a, Instant::now());
        cache.insert(&row(3, 7), Instant::now());
        assert_eq!(cache.get(a.id), None);
        assert_eq!(cache.get(TokenId::from_bytes([3; 16])), None);
        assert_eq!(cache.get(b.id), Some(b));
    }

    #[test]
    fn with_a_max_age_a_row_is_read_again_once_it_is_older() {
        let cache = TokenCache::default();
        let t = row(1, 9);
        cache.insert(&t, Instant::now());
        cache.set_max_age(Duration::from_millis(200));
        // Setting the bound drops what was cached without one.
        assert_eq!(cache.get(t.id), None);
        cache.insert(&t, Instant::now());
        assert_eq!(cache.get(t.id), Some(t.clone()));
        // A row whose read began longer ago than the bound is not served.
        cache.insert(&t, Instant::now() - Duration::from_millis(250));
        assert_eq!(cache.get(t.id), None);
        cache.insert(&t, Instant::now());
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(cache.get(t.id), None);
    }
}
