//! KEK rotation: counting keys per KEK, finding the keys a KEK wraps, and the compare-and-set
//! rewrap, which appends nothing to the change log.

use std::sync::Arc;

use super::fixtures::{tenant, wrapped_key};
use crate::{DekRecord, KekUsage, KeyOwner, Rewrap, Storage, StoredKey};

fn usage(kek_id: &str, deks: u64, instance_keys: u64) -> KekUsage {
    KekUsage {
        kek_id: kek_id.to_owned(),
        deks,
        instance_keys,
    }
}

fn rewrap(old: &StoredKey, kek_id: &str, tag: u8) -> Rewrap {
    Rewrap {
        old: old.clone(),
        new_kek_id: kek_id.to_owned(),
        new_wrapped: vec![tag; 44],
    }
}

pub(super) async fn rewrap_counts_finds_and_compare_and_sets(s: Arc<dyn Storage>) {
    let a = tenant(&*s, "a").await;
    let b = tenant(&*s, "b").await;
    let other = DekRecord {
        account_id: a.account,
        key: wrapped_key(2),
        rk: None,
    };
    s.put_dek(other.clone()).await.unwrap();
    let token_mac = s
        .put_instance_key_if_absent("token-mac", wrapped_key(1))
        .await
        .unwrap();
    assert_eq!(
        s.kek_usage().await.unwrap(),
        vec![usage("kek-1", 2, 1), usage("kek-2", 1, 0)]
    );

    // Instance keys come first; the limit holds across both kinds.
    let one = s.keys_wrapped_by("kek-1", 1).await.unwrap();
    assert_eq!(
        one,
        vec![StoredKey {
            owner: KeyOwner::Instance("token-mac".into()),
            key: token_mac.clone(),
        }]
    );
    assert_eq!(s.keys_wrapped_by("kek-1", 2).await.unwrap().len(), 2);
    let all = s.keys_wrapped_by("kek-1", 100).await.unwrap();
    assert_eq!(all.len(), 3);
    let mut dek_ids: Vec<_> = all
        .iter()
        .filter_map(|k| match k.owner {
            KeyOwner::Account(account) => Some((account, k.key.id)),
            KeyOwner::Instance(_) => None,
        })
        .collect();
    dek_ids.sort();
    let mut expected = vec![(a.account, a.dek), (b.account, b.dek)];
    expected.sort();
    assert_eq!(dek_ids, expected);
    assert!(s.keys_wrapped_by("kek-3", 100).await.unwrap().is_empty());

    let head = s.change_head().await.unwrap();
    let rewraps: Vec<Rewrap> = all.iter().map(|k| rewrap(k, "kek-9", 9)).collect();
    assert_eq!(s.rewrap_keys(rewraps.clone()).await.unwrap(), 3);
    assert_eq!(
        s.change_head().await.unwrap(),
        head,
        "rewrapping appends nothing to the change log"
    );
    let dek = s.get_dek(a.dek).await.unwrap().unwrap();
    assert_eq!(
        (dek.key.kek_id.as_str(), dek.key.wrapped.as_slice()),
        ("kek-9", &[9u8; 44][..])
    );
    assert_eq!(
        dek.key.created,
        wrapped_key(1).created,
        "only the wrapping changes"
    );
    let mac = s.get_instance_key("token-mac").await.unwrap().unwrap();
    assert_eq!((mac.kek_id.as_str(), mac.id), ("kek-9", token_mac.id));
    assert_eq!(s.get_dek(other.key.id).await.unwrap().unwrap(), other);
    assert_eq!(
        s.kek_usage().await.unwrap(),
        vec![usage("kek-2", 1, 0), usage("kek-9", 2, 1)]
    );
    assert!(s.keys_wrapped_by("kek-1", 100).await.unwrap().is_empty());

    // Compare-and-set: a rewrap read before another one changed the row does nothing.
    let stale: Vec<Rewrap> = all.iter().map(|k| rewrap(k, "kek-8", 8)).collect();
    assert_eq!(s.rewrap_keys(stale).await.unwrap(), 0);
    assert_eq!(s.get_dek(a.dek).await.unwrap().unwrap().key.kek_id, "kek-9");
    // The right KEK id with other bytes is a mismatch too.
    let current = s.keys_wrapped_by("kek-9", 100).await.unwrap();
    let mut forged = current[0].clone();
    forged.key.wrapped = vec![7; 44];
    assert_eq!(
        s.rewrap_keys(vec![rewrap(&forged, "kek-8", 8)])
            .await
            .unwrap(),
        0
    );
    // A key of another owner with the same id is not touched either.
    let mut wrong_owner = current
        .iter()
        .find(|k| k.owner == KeyOwner::Account(a.account) && k.key.id == a.dek)
        .unwrap()
        .clone();
    wrong_owner.owner = KeyOwner::Account(b.account);
    assert_eq!(
        s.rewrap_keys(vec![rewrap(&wrong_owner, "kek-8", 8)])
            .await
            .unwrap(),
        0
    );
    // The current form rewraps, and a batch mixes applied and stale items.
    let mixed = vec![rewrap(&current[0], "kek-10", 10), rewraps[1].clone()];
    assert_eq!(s.rewrap_keys(mixed).await.unwrap(), 1);
    assert_eq!(s.change_head().await.unwrap(), head);
}

/// An account given a KEK of its own: its DEKs per KEK, and the ones another KEK still wraps,
/// of that account only.
pub(super) async fn account_deks_are_counted_and_found_per_account(s: Arc<dyn Storage>) {
    let a = tenant(&*s, "a").await;
    let b = tenant(&*s, "b").await;
    let second = DekRecord {
        account_id: a.account,
        key: wrapped_key(2),
        rk: None,
    };
    s.put_dek(second.clone()).await.unwrap();
    assert_eq!(
        s.account_dek_usage(a.account).await.unwrap(),
        vec![usage("kek-1", 1, 0), usage("kek-2", 1, 0)]
    );
    assert_eq!(
        s.account_dek_usage(b.account).await.unwrap(),
        vec![usage("kek-1", 1, 0)]
    );

    // "Not wrapped by kek-2" in account a: its kek-1 DEK only, never b's.
    let left = s
        .account_deks_not_wrapped_by(a.account, "kek-2", 100)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].owner, KeyOwner::Account(a.account));
    assert_eq!(left[0].key.id, a.dek);
    assert_eq!(
        s.account_deks_not_wrapped_by(a.account, "none", 1)
            .await
            .unwrap()
            .len(),
        1,
        "the limit holds"
    );
    assert_eq!(
        s.account_deks_not_wrapped_by(a.account, "none", 100)
            .await
            .unwrap()
            .len(),
        2
    );

    // Moved with the compare-and-set rewrap, nothing is left.
    assert_eq!(
        s.rewrap_keys(vec![rewrap(&left[0], "kek-2", 2)])
            .await
            .unwrap(),
        1
    );
    assert!(
        s.account_deks_not_wrapped_by(a.account, "kek-2", 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.account_dek_usage(a.account).await.unwrap(),
        vec![usage("kek-2", 2, 0)]
    );
    assert_eq!(
        s.account_dek_usage(b.account).await.unwrap(),
        vec![usage("kek-1", 1, 0)]
    );
}

/// Retiring a KEK id: refused while any key is wrapped by it, and afterwards no key wrapped by
/// it is stored, whether carried by a write, put alone or as an instance key.
pub(super) async fn a_retired_kek_wraps_nothing_stored_after_it(s: Arc<dyn Storage>) {
    use super::fixtures::{assert_head, secret, store};
    use crate::{NewSecret, StorageError};

    let t = tenant(&*s, "a").await;
    let st = store(&*s, t, "s").await;
    // The tenant's DEK is wrapped by kek-1: not yet.
    assert!(matches!(
        s.retire_kek("kek-1").await,
        Err(StorageError::Conflict)
    ));
    assert!(!s.is_kek_retired("kek-1").await.unwrap());
    // Rewrapped away, it may retire (twice is fine).
    let all = s.keys_wrapped_by("kek-1", 100).await.unwrap();
    let rewraps: Vec<Rewrap> = all.iter().map(|k| rewrap(k, "kek-2", 2)).collect();
    assert_eq!(s.rewrap_keys(rewraps).await.unwrap(), 1);
    s.retire_kek("kek-1").await.unwrap();
    s.retire_kek("kek-1").await.unwrap();
    assert!(s.is_kek_retired("kek-1").await.unwrap());
    assert!(!s.is_kek_retired("kek-2").await.unwrap());

    // A write that took a DEK wrapped by kek-1 before the retirement commits after it.
    let head = s.change_head().await.unwrap();
    let late = DekRecord {
        account_id: t.account,
        key: wrapped_key(1),
        rk: None,
    };
    let mut new: NewSecret = secret(t, st, "LATE");
    new.value.dek_id = late.key.id;
    new.dek = Some(late.clone());
    assert!(matches!(
        s.create_secrets(t.account, st, vec![new.clone()], 10, &[])
            .await,
        Err(StorageError::Conflict)
    ));
    assert!(s.get_dek(late.key.id).await.unwrap().is_none());
    assert_head(&*s, head, "a write carrying a DEK of a retired KEK").await;
    assert!(matches!(
        s.put_dek(late.clone()).await,
        Err(StorageError::Conflict)
    ));
    assert!(matches!(
        s.put_instance_key_if_absent("audit-mac", wrapped_key(1))
            .await,
        Err(StorageError::Conflict)
    ));
    assert!(s.get_instance_key("audit-mac").await.unwrap().is_none());
    // The retry, with a DEK of the active KEK, goes through.
    let fresh = DekRecord {
        account_id: t.account,
        key: wrapped_key(2),
        rk: None,
    };
    new.value.dek_id = fresh.key.id;
    new.dek = Some(fresh.clone());
    s.create_secrets(t.account, st, vec![new], 10, &[])
        .await
        .unwrap();
    assert_eq!(s.get_dek(fresh.key.id).await.unwrap().unwrap(), fresh);
}
