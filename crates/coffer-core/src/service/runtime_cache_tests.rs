//! Tests of the runtime cache: its keys, and the age bound on a shared database.

use std::hash::BuildHasher;

use super::*;
use coffer_types::Timestamp;

fn ids() -> (AccountId, StoreId, ServiceId, TokenId, SecretId) {
    (
        AccountId::from_bytes([1; 16]),
        StoreId::from_bytes([2; 16]),
        ServiceId::from_bytes([3; 16]),
        TokenId::from_bytes([4; 16]),
        SecretId::from_bytes([5; 16]),
    )
}

/// The caches are filled with owned keys and read with borrowed ones: both must hash and
/// compare alike, or every read would miss (and every access be counted apart).
#[test]
fn borrowed_keys_find_what_owned_keys_stored() {
    let (account, store, service, token, secret) = ids();
    let mut values: NameMap<ValueKey, u32> = NameMap::default();
    for (i, name) in ["a", "api-key", "b"].into_iter().enumerate() {
        values.insert(
            ValueKey {
                account,
                store,
                name: SecretName::parse(name).unwrap(),
            },
            i as u32,
        );
    }
    let found = |name| {
        values
            .get(&ValueKeyRef {
                account,
                store,
                name,
            })
            .copied()
    };
    assert_eq!(found("api-key"), Some(1));
    assert_eq!(found("b"), Some(2));
    assert_eq!(found("api-keY"), None);
    let other_store = ValueKeyRef {
        account,
        store: StoreId::from_bytes([9; 16]),
        name: "a",
    };
    assert_eq!(values.get(&other_store), None);
    // The account is not hashed, but still told apart.
    let other_account = ValueKeyRef {
        account: AccountId::from_bytes([8; 16]),
        store,
        name: "a",
    };
    assert_eq!(values.get(&other_account), None);
    let owned = ValueKey {
        account,
        store,
        name: SecretName::parse("a").unwrap(),
    };
    let h = values.hasher();
    assert_eq!(h.hash_one(&owned), h.hash_one(owned.borrowed()));

    let key = |binding, secret_name, refused| AccessKeyRef {
        account,
        service,
        token,
        binding,
        store: Some(store),
        secret: Some(secret),
        secret_name,
        refused,
    };
    let mut counts: NameMap<AccessKey, u32> = NameMap::default();
    let noted = [
        key("K", "k", None),
        key("K", "k", Some(AccessRefusal::ScopeMissing)),
        key("", "", Some(AccessRefusal::NoSuchBinding)),
        // The names split differently: a distinct key.
        key("Kk", "", None),
        key("K", "k", None),
    ];
    for k in noted {
        match counts.get_mut(&k) {
            Some(n) => *n += 1,
            None => {
                counts.insert(k.to_key(), 1);
            }
        }
    }
    assert_eq!(counts.len(), 4);
    assert_eq!(counts.get(&key("K", "k", None)), Some(&2));
    assert_eq!(counts.get(&key("Kk", "", None)), Some(&1));
    assert_eq!(counts.get(&key("K", "kk", None)), None);
    // Neither is the service or the store, and they are told apart as well.
    let other_service = AccessKeyRef {
        service: ServiceId::from_bytes([7; 16]),
        ..key("K", "k", None)
    };
    let other_store = AccessKeyRef {
        store: None,
        ..key("K", "k", None)
    };
    assert_eq!(counts.get(&other_service), None);
    assert_eq!(counts.get(&other_store), None);
    let h = counts.hasher();
    let owned = key("K", "k", None).to_key();
    assert_eq!(h.hash_one(&owned), h.hash_one(owned.borrowed()));
}

/// On a shared database an entry is served at most `max_age` after its read began, even while
/// the head does not move (a lost notification connection): a revocation committed by another
/// instance is then read within that time.
#[test]
fn on_a_shared_database_entries_expire_although_the_head_stays() {
    use std::time::{Duration, Instant};
    let (account, _, service, token, _) = ids();
    let row = ServiceTokenRecord {
        id: token,
        account_id: account,
        service_id: service,
        hash: [0; 32],
        created: Timestamp::now(),
        revoked: None,
    };
    let get = |cache: &RuntimeCache| cache.read(7, |c| c.tokens.get(&token).cloned());
    let cache = RuntimeCache::default();
    cache.fill((7, Instant::now()), |c| {
        c.tokens.insert(token, row.clone());
    });
    assert!(get(&cache).is_some());
    cache.set_max_age(Duration::from_millis(200));
    // Setting the bound drops what was cached without one.
    assert!(get(&cache).is_none());
    cache.fill((7, Instant::now()), |c| {
        c.tokens.insert(token, row.clone());
    });
    assert!(get(&cache).is_some());
    std::thread::sleep(Duration::from_millis(250));
    assert!(get(&cache).is_none(), "served past its maximum age");
    // A read that began longer ago than the bound is not kept.
    cache.fill((7, Instant::now() - Duration::from_millis(250)), |c| {
        c.tokens.insert(token, row.clone());
    });
    assert!(get(&cache).is_none());
    // A fresh read is, and an older one joining it makes the whole cache expire with it.
    cache.fill((7, Instant::now()), |c| {
        c.tokens.insert(token, row.clone());
    });
    assert!(get(&cache).is_some());
    cache.fill((7, Instant::now() - Duration::from_millis(150)), |_| {});
    std::thread::sleep(Duration::from_millis(80));
    assert!(get(&cache).is_none());
}
