//! DEKs carried by writes: inserted with the write that first uses them, once, and never by a
//! write that fails; a destroyed or retired DEK is never stored or sealed with again.

use std::sync::Arc;

use coffer_types::{DekId, Version};
use tokio::task::JoinSet;

use super::fixtures::{
    Tenant, all_changes, assert_chain, assert_head, create_secret, secret, store, tenant, ts,
    wrapped_key,
};
use crate::{
    Change, DekRecord, Entity, NewSecret, SecretUpdate, Storage, StorageError, VersionRecord,
};

/// A DEK of `t`'s account that is not stored.
fn new_dek(t: Tenant, tag: u8) -> DekRecord {
    DekRecord {
        account_id: t.account,
        key: wrapped_key(tag),
        rk: None,
    }
}

/// `secret(..)` sealed under `dek`, carrying it.
fn carrying(t: Tenant, store: crate::StoreId, name: &str, dek: &DekRecord) -> NewSecret {
    let mut new = secret(t, store, name);
    new.value.dek_id = dek.key.id;
    new.dek = Some(dek.clone());
    new
}

/// Version 2 of `of`, sealed under `dek` and carrying it.
fn update_carrying(of: &NewSecret, dek: &DekRecord) -> SecretUpdate {
    SecretUpdate {
        account_id: of.record.account_id,
        store_id: of.record.store_id,
        secret_id: of.record.id,
        expected_version: Version::FIRST,
        value: Some(VersionRecord {
            secret_id: of.record.id,
            version: Version(2),
            dek_id: dek.key.id,
            sealed: b"two".to_vec(),
            created: ts(50),
        }),
        scopes: None,
        comment: None,
        modified: ts(50),
        dek: Some(dek.clone()),
    }
}

fn dek_put(d: &DekRecord) -> Change {
    Change::DekPut {
        account_id: d.account_id,
        dek_id: d.key.id,
        kek_id: d.key.kek_id.clone(),
        wrapped_hex: hex::encode(&d.key.wrapped),
    }
}

/// Every change of the log after `head`, decoded.
async fn changes_since(s: &dyn Storage, head: u64) -> Vec<Change> {
    all_changes(s).await[head as usize..]
        .iter()
        .map(|c| c.change().expect("every payload decodes"))
        .collect()
}

async fn assert_no_dek(s: &dyn Storage, id: DekId, after: &str) {
    assert_eq!(
        s.get_dek(id).await.unwrap(),
        None,
        "a failed write ({after}) must not store the DEK it carried"
    );
}

pub(super) async fn a_carried_dek_is_stored_once_before_its_values(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    let k = new_dek(t, 5);
    let head = s.change_head().await.unwrap();

    // Three items of one create carry the same new DEK.
    let items: Vec<NewSecret> = ["A", "B", "C"]
        .iter()
        .map(|n| carrying(t, st, n, &k))
        .collect();
    s.create_secrets(t.account, st, items.clone(), 10, &[])
        .await
        .unwrap();
    assert_eq!(s.get_dek(k.key.id).await.unwrap(), Some(k.clone()));
    let changes = changes_since(s, head).await;
    assert_eq!(changes.len(), 4, "one dek_put and three secret_puts");
    assert_eq!(
        changes[0],
        dek_put(&k),
        "the DEK is logged once, before the values sealed under it"
    );
    assert!(
        changes[1..]
            .iter()
            .all(|c| matches!(c, Change::SecretPut { dek_id, .. } if *dek_id == k.key.id))
    );

    // Later writes carrying the stored DEK do not store or log it again.
    let head = s.change_head().await.unwrap();
    s.create_secrets(t.account, st, vec![carrying(t, st, "D", &k)], 10, &[])
        .await
        .unwrap();
    s.update_secret(update_carrying(&items[0], &k), &[])
        .await
        .unwrap();
    let changes = changes_since(s, head).await;
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(
        changes
            .iter()
            .all(|c| matches!(c, Change::SecretPut { .. })),
        "a DEK already stored is not logged again: {changes:?}"
    );

    // An update may carry a new DEK too.
    let k2 = new_dek(t, 6);
    let head = s.change_head().await.unwrap();
    let updated = s
        .update_secret(update_carrying(&items[1], &k2), &[])
        .await
        .unwrap();
    assert_eq!(updated.version, Version(2));
    assert_eq!(s.get_dek(k2.key.id).await.unwrap(), Some(k2.clone()));
    let changes = changes_since(s, head).await;
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0], dek_put(&k2));
    assert!(matches!(
        &changes[1],
        Change::SecretPut { dek_id, version: 2, .. } if *dek_id == k2.key.id
    ));
    assert_eq!(
        s.latest_dek(t.account).await.unwrap().map(|d| d.key.id),
        Some(k2.key.id),
        "a carried DEK is an ordinary DEK once stored"
    );
    assert_chain(&all_changes(s).await);
}

pub(super) async fn a_failed_write_stores_no_carried_dek(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "other").await;
    let st = store(s, t, "prod").await;
    let existing = create_secret(s, t, st, "EXISTS").await;
    let head = s.change_head().await.unwrap();

    let k = new_dek(t, 7);
    let err = s
        .create_secrets(t.account, st, vec![carrying(t, st, "NEW", &k)], 1, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::QuotaExceeded { .. }), "{err:?}");
    assert_no_dek(s, k.key.id, "create_secrets over the quota").await;
    assert_head(s, head, "create_secrets over the quota").await;

    let err = s
        .create_secrets(
            t.account,
            st,
            vec![carrying(t, st, "NEW", &k), carrying(t, st, "EXISTS", &k)],
            10,
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::NameTaken { .. }), "{err:?}");
    assert_no_dek(s, k.key.id, "create_secrets with a clash").await;
    assert_head(s, head, "create_secrets with a clash").await;

    let stale = SecretUpdate {
        expected_version: Version(9),
        ..update_carrying(&existing, &k)
    };
    let err = s.update_secret(stale, &[]).await.unwrap_err();
    assert!(matches!(err, StorageError::Conflict), "{err:?}");
    assert_no_dek(s, k.key.id, "update_secret with a stale version").await;
    assert_head(s, head, "update_secret with a stale version").await;

    // Carried DEKs that contradict the call are refused, and not stored either.
    let of_other = new_dek(other, 8);
    let err = s
        .create_secrets(
            t.account,
            st,
            vec![carrying(t, st, "NEW", &of_other)],
            10,
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Invalid(_)),
        "a carried DEK of another account: {err:?}"
    );
    assert_no_dek(s, of_other.key.id, "a carried DEK of another account").await;
    let mut mismatched = carrying(t, st, "NEW", &k);
    mismatched.value.dek_id = t.dek;
    let err = s
        .create_secrets(t.account, st, vec![mismatched], 10, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Invalid(_)),
        "a carried DEK that is not the value's: {err:?}"
    );
    let without_value = SecretUpdate {
        value: None,
        ..update_carrying(&existing, &k)
    };
    let err = s.update_secret(without_value, &[]).await.unwrap_err();
    assert!(
        matches!(err, StorageError::Invalid(_)),
        "an update carrying a DEK but no value: {err:?}"
    );
    // An id already stored for another account is not taken over by carrying it.
    let stolen = DekRecord {
        account_id: t.account,
        key: s.get_dek(other.dek).await.unwrap().unwrap().key,
        rk: None,
    };
    let err = s
        .create_secrets(
            t.account,
            st,
            vec![carrying(t, st, "NEW", &stolen)],
            10,
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Dek)),
        "a value under another account's stored DEK, carried as ours: {err:?}"
    );
    assert_eq!(
        s.get_dek(other.dek).await.unwrap().map(|d| d.account_id),
        Some(other.account)
    );
    assert_no_dek(s, k.key.id, "invalid carried DEKs").await;
    assert_head(s, head, "invalid carried DEKs").await;

    // The same DEK goes in with the next write that succeeds.
    s.create_secrets(t.account, st, vec![carrying(t, st, "NEW", &k)], 10, &[])
        .await
        .unwrap();
    assert_eq!(s.get_dek(k.key.id).await.unwrap(), Some(k.clone()));
    assert_eq!(changes_since(s, head).await[0], dek_put(&k));
}

pub(super) async fn racing_writes_carrying_one_dek_store_it_once(s: Arc<dyn Storage>) {
    let t = tenant(&*s, "acme").await;
    let st = store(&*s, t, "prod").await;
    let k = new_dek(t, 9);
    let head = s.change_head().await.unwrap();
    const TASKS: usize = 30;
    let mut tasks = JoinSet::new();
    for i in 0..TASKS {
        let s = Arc::clone(&s);
        let item = carrying(t, st, &format!("S{i}"), &k);
        tasks.spawn(async move { s.create_secrets(t.account, st, vec![item], 1000, &[]).await });
    }
    for result in tasks.join_all().await {
        result.unwrap();
    }
    let changes = changes_since(&*s, head).await;
    assert_eq!(changes.len(), TASKS + 1);
    assert_eq!(
        changes.iter().filter(|c| **c == dek_put(&k)).count(),
        1,
        "racing writes carrying one DEK store and log it exactly once"
    );
    assert_eq!(
        changes[0],
        dek_put(&k),
        "and before any value sealed under it"
    );
    assert_chain(&all_changes(&*s).await);
}

/// A write that took a DEK before the lifecycle destroyed it (a bulk create, a queued PATCH)
/// must not store it again: it is refused with `Conflict` (the caller seals again with a
/// fresh DEK), and the log holds no `DekPut` of it after its `DekDestroyed`.
pub(super) async fn a_destroyed_dek_is_never_stored_again(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    let existing = create_secret(s, t, st, "EXISTS").await;
    let d = new_dek(t, 9);
    s.put_dek(d.clone()).await.unwrap();
    let destroyed = s.destroy_unreferenced_deks(vec![], 100).await.unwrap();
    assert!(
        destroyed.iter().any(|x| x.dek_id == d.key.id),
        "the unreferenced DEK is destroyed: {destroyed:?}"
    );
    // Destroying does not compact; `compact_destroyed_deks` does, once, keeping the
    // `DekDestroyed` entry.
    let puts_of_d = |log: &[crate::ChangeRecord]| {
        log.iter()
            .filter(|r| {
                matches!(
                    r.change().expect("every payload decodes"),
                    Change::DekPut { dek_id, .. } if dek_id == d.key.id
                )
            })
            .count()
    };
    let (base, _, retained) = super::fixtures::retained_changes(s).await;
    assert_eq!(puts_of_d(&retained), 1, "destroying compacts nothing");
    let new_base = s.compact_destroyed_deks().await.unwrap();
    assert!(new_base.is_some_and(|b| b > base), "{new_base:?}");
    let (_, _, retained) = super::fixtures::retained_changes(s).await;
    assert_eq!(puts_of_d(&retained), 0);
    assert!(retained.iter().any(|r| matches!(
        r.change().expect("every payload decodes"),
        Change::DekDestroyed { dek_id, .. } if dek_id == d.key.id
    )));
    assert_eq!(
        s.compact_destroyed_deks().await.unwrap(),
        None,
        "nothing due"
    );
    let head = s.change_head().await.unwrap();

    let err = s
        .create_secrets(t.account, st, vec![carrying(t, st, "LATE", &d)], 10, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Conflict), "{err:?}");
    let err = s
        .update_secret(update_carrying(&existing, &d), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Conflict), "{err:?}");
    let err = s.put_dek(d.clone()).await.unwrap_err();
    assert!(matches!(err, StorageError::Conflict), "{err:?}");

    assert_no_dek(s, d.key.id, "a write carrying a destroyed DEK").await;
    assert_head(s, head, "a write carrying a destroyed DEK").await;
    let (_, _, retained) = super::fixtures::retained_changes(s).await;
    assert_eq!(
        puts_of_d(&retained),
        0,
        "no retained entry stores the destroyed DEK"
    );
    // A fresh DEK is still accepted.
    let fresh = new_dek(t, 10);
    s.create_secrets(
        t.account,
        st,
        vec![carrying(t, st, "LATE", &fresh)],
        10,
        &[],
    )
    .await
    .unwrap();
}

/// A DEK retired by a store's deletion never seals again: a write carrying it (taken as its
/// current DEK before the deletion, here or on another instance) is refused with `Conflict`,
/// and stores nothing; a write carrying a new DEK then succeeds.
pub(super) async fn a_retired_dek_never_seals_again(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let doomed = store(s, t, "doomed").await;
    let kept = store(s, t, "kept").await;
    let current = new_dek(t, 6);
    let existing = create_secret(s, t, kept, "EXISTS").await;
    s.create_secrets(
        t.account,
        doomed,
        vec![carrying(t, doomed, "A", &current)],
        10,
        &[],
    )
    .await
    .unwrap();
    s.delete_store(t.account, doomed, true, &[]).await.unwrap();
    let head = s.change_head().await.unwrap();

    let err = s
        .create_secrets(
            t.account,
            kept,
            vec![carrying(t, kept, "B", &current)],
            10,
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Conflict), "{err:?}");
    let update = SecretUpdate {
        account_id: t.account,
        store_id: kept,
        secret_id: existing.record.id,
        expected_version: Version::FIRST,
        value: Some(VersionRecord {
            secret_id: existing.record.id,
            version: Version(2),
            dek_id: current.key.id,
            sealed: b"two".to_vec(),
            created: ts(50),
        }),
        scopes: None,
        comment: None,
        modified: ts(50),
        dek: Some(current.clone()),
    };
    let err = s.update_secret(update, &[]).await.unwrap_err();
    assert!(matches!(err, StorageError::Conflict), "{err:?}");
    assert_eq!(
        s.change_head().await.unwrap(),
        head,
        "a write carrying a retired DEK writes nothing"
    );

    let next = new_dek(t, 7);
    s.create_secrets(
        t.account,
        kept,
        vec![carrying(t, kept, "B", &next)],
        10,
        &[],
    )
    .await
    .expect("a new DEK seals");
}
