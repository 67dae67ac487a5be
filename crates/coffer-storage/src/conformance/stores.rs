//! Stores: lifecycle, names, limit, deletion, and account isolation.

use std::sync::Arc;

use coffer_types::{StoreId, Version};

use super::fixtures::{
    all_changes, assert_head, create_secret, id_bytes, secret, secret_query, store, store_query,
    store_record, tenant, ts,
};
use crate::{Change, Direction, Entity, SecretUpdate, Storage, StorageError, StoreOrder};

pub(super) async fn store_lifecycle(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let mut record = store_record(t.account, "prod");
    record.created = ts(100);
    record.modified = ts(150);
    s.create_store(record.clone(), 10, &[]).await.unwrap();
    assert_eq!(
        s.get_store(t.account, record.id).await.unwrap(),
        Some(record.clone()),
        "a store round-trips"
    );
    assert_eq!(
        s.get_store(t.account, StoreId::from_bytes(id_bytes()))
            .await
            .unwrap(),
        None
    );
    let page = s
        .list_stores(
            t.account,
            &store_query(1, 10, StoreOrder::Created, Direction::Asc),
        )
        .await
        .unwrap();
    assert_eq!(page.items, vec![record.clone()]);
    assert_eq!(page.total_count, 1);

    s.delete_store(t.account, record.id, false, &[])
        .await
        .unwrap();
    assert_eq!(s.get_store(t.account, record.id).await.unwrap(), None);
    let err = s
        .delete_store(t.account, record.id, false, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Store)),
        "deleting a deleted store: {err:?}"
    );
    let page = s
        .list_stores(
            t.account,
            &store_query(1, 10, StoreOrder::Created, Direction::Asc),
        )
        .await
        .unwrap();
    assert!(page.items.is_empty() && page.total_count == 0);

    let unknown = super::fixtures::account_record("ghost").id;
    let err = s
        .create_store(store_record(unknown, "x"), 10, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Account)),
        "a store of an unknown account: {err:?}"
    );
    let err = s.create_store(record.clone(), 10, &[]).await;
    assert!(
        err.is_ok(),
        "a deleted store's name and id are free again: {err:?}"
    );
    let err = s.create_store(record.clone(), 10, &[]).await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::NameTaken { .. } | StorageError::AlreadyExists(Entity::Store)
        ),
        "re-creating a store: {err:?}"
    );

    let changes: Vec<Change> = all_changes(s)
        .await
        .iter()
        .map(|c| c.change().unwrap())
        .filter(|c| matches!(c, Change::StorePut { .. } | Change::StoreDeleted { .. }))
        .collect();
    let put = Change::StorePut {
        account_id: t.account,
        store_id: record.id,
        name: "prod".into(),
    };
    let deleted = Change::StoreDeleted {
        account_id: t.account,
        store_id: record.id,
    };
    assert_eq!(changes, vec![put.clone(), deleted, put]);
}

pub(super) async fn store_names_are_unique_per_account(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = tenant(s, "a").await;
    let b = tenant(s, "b").await;
    store(s, a, "shared").await;
    let head = s.change_head().await.unwrap();
    let err = s
        .create_store(store_record(a.account, "shared"), 10, &[])
        .await
        .unwrap_err();
    match err {
        StorageError::NameTaken { entity, name } => {
            assert_eq!((entity, name.as_str()), (Entity::Store, "shared"));
        }
        other => panic!("a second store named `shared` in one account: {other:?}"),
    }
    assert_head(s, head, "create_store with a taken name").await;
    s.create_store(store_record(b.account, "shared"), 10, &[])
        .await
        .expect("another account may use the same store name");
    s.create_store(store_record(a.account, "Shared"), 10, &[])
        .await
        .expect("store names are case-sensitive");
}

pub(super) async fn store_limit(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = tenant(s, "a").await;
    let b = tenant(s, "b").await;
    let first = store_record(a.account, "one");
    s.create_store(first.clone(), 2, &[]).await.unwrap();
    s.create_store(store_record(a.account, "two"), 2, &[])
        .await
        .expect("a second store with max_stores = 2");
    let head = s.change_head().await.unwrap();
    let err = s
        .create_store(store_record(a.account, "three"), 2, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::LimitExceeded {
                what: "stores",
                limit: 2
            }
        ),
        "a third store with max_stores = 2: {err:?}"
    );
    assert_head(s, head, "create_store over the limit").await;
    s.create_store(store_record(b.account, "one"), 2, &[])
        .await
        .expect("the limit is per account");
    s.delete_store(a.account, first.id, false, &[])
        .await
        .unwrap();
    s.create_store(store_record(a.account, "three"), 2, &[])
        .await
        .expect("deleting a store frees its slot");
}

pub(super) async fn delete_store_not_empty_and_force(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let full = store(s, t, "full").await;
    let keep = store(s, t, "keep").await;
    let x = create_secret(s, t, full, "X").await;
    let y = create_secret(s, t, full, "Y").await;
    let other = create_secret(s, t, keep, "X").await;
    // Give `x` a second version, so force-deleting must remove more than first versions.
    s.update_secret(
        SecretUpdate {
            account_id: t.account,
            store_id: full,
            secret_id: x.record.id,
            expected_version: Version::FIRST,
            value: Some(crate::VersionRecord {
                version: Version(2),
                sealed: b"second".to_vec(),
                ..x.value.clone()
            }),
            scopes: None,
            comment: None,
            modified: ts(30),
            dek: None,
        },
        &[],
    )
    .await
    .unwrap();
    let head = s.change_head().await.unwrap();

    let err = s
        .delete_store(t.account, full, false, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotEmpty),
        "deleting a store with secrets without force: {err:?}"
    );
    assert_head(s, head, "delete_store without force").await;
    assert!(s.get_store(t.account, full).await.unwrap().is_some());
    assert!(
        s.get_secret(t.account, full, x.record.id)
            .await
            .unwrap()
            .is_some(),
        "NotEmpty deletes nothing"
    );
    assert_eq!(s.secret_count(t.account).await.unwrap(), 3);

    s.delete_store(t.account, full, true, &[]).await.unwrap();
    assert_eq!(s.get_store(t.account, full).await.unwrap(), None);
    for n in [&x, &y] {
        assert_eq!(
            s.get_secret(t.account, full, n.record.id).await.unwrap(),
            None
        );
        for v in [1, 2] {
            assert_eq!(
                s.get_version(n.record.id, Version(v)).await.unwrap(),
                None,
                "force deletes every version of every secret"
            );
        }
    }
    assert_eq!(s.secret_count(t.account).await.unwrap(), 1);
    assert!(
        s.get_secret(t.account, keep, other.record.id)
            .await
            .unwrap()
            .is_some(),
        "other stores are untouched"
    );

    let log = all_changes(s).await;
    let tail: Vec<Change> = log[head as usize..]
        .iter()
        .map(|c| c.change().unwrap())
        .collect();
    assert_eq!(
        tail.len(),
        3,
        "two SecretDeleted then StoreDeleted: {tail:?}"
    );
    let deleted = |id| Change::SecretDeleted {
        account_id: t.account,
        store_id: full,
        secret_id: id,
    };
    assert!(
        tail[..2].contains(&deleted(x.record.id)) && tail[..2].contains(&deleted(y.record.id)),
        "{tail:?}"
    );
    assert_eq!(
        tail[2],
        Change::StoreDeleted {
            account_id: t.account,
            store_id: full
        }
    );
    s.delete_store(t.account, keep, true, &[])
        .await
        .expect("force on a store works whatever it holds");
}

/// Everything addressed through account A with B's ids behaves as if the ids did not exist,
/// and leaves B's data alone.
pub(super) async fn account_isolation(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = tenant(s, "a").await;
    let b = tenant(s, "b").await;
    let store_a = store(s, a, "mine").await;
    let store_b = store(s, b, "theirs").await;
    let secret_b = create_secret(s, b, store_b, "TOKEN").await;
    let head = s.change_head().await.unwrap();
    let not_found_store = |what: &str, r: crate::Result<()>| match r {
        Err(StorageError::NotFound(Entity::Store)) => {}
        other => panic!("{what} with another account's store: {other:?}"),
    };

    assert_eq!(s.get_store(a.account, store_b).await.unwrap(), None);
    let listed = s
        .list_stores(
            a.account,
            &store_query(1, 50, StoreOrder::Name, Direction::Asc),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].id, store_a);
    assert_eq!(listed.total_count, 1);
    not_found_store(
        "delete_store",
        s.delete_store(a.account, store_b, true, &[]).await,
    );
    not_found_store(
        "create_secrets",
        s.create_secrets(a.account, store_b, vec![secret(a, store_b, "X")], 100, &[])
            .await,
    );
    not_found_store(
        "list_secrets",
        s.list_secrets(a.account, store_b, &secret_query(1, 10))
            .await
            .map(drop),
    );
    not_found_store(
        "delete_secrets",
        s.delete_secrets(a.account, store_b, &[secret_b.record.id], &[])
            .await,
    );
    let update = SecretUpdate {
        account_id: a.account,
        store_id: store_b,
        secret_id: secret_b.record.id,
        expected_version: Version::FIRST,
        value: None,
        scopes: None,
        comment: Some("hijacked".into()),
        modified: ts(99),
        dek: None,
    };
    not_found_store(
        "update_secret",
        s.update_secret(update.clone(), &[]).await.map(drop),
    );
    assert_eq!(
        s.get_secret(a.account, store_b, secret_b.record.id)
            .await
            .unwrap(),
        None
    );
    // B's secret through A's own store.
    assert_eq!(
        s.get_secret(a.account, store_a, secret_b.record.id)
            .await
            .unwrap(),
        None
    );
    let err = s
        .update_secret(
            SecretUpdate {
                store_id: store_a,
                ..update
            },
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Secret)),
        "update of another account's secret through an own store: {err:?}"
    );
    let err = s
        .delete_secrets(a.account, store_a, &[secret_b.record.id], &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Secret)),
        "delete of another account's secret through an own store: {err:?}"
    );
    assert_eq!(s.secret_count(a.account).await.unwrap(), 0);

    assert_head(s, head, "cross-account access").await;
    assert_eq!(
        s.get_secret(b.account, store_b, secret_b.record.id)
            .await
            .unwrap(),
        Some(secret_b.record.clone()),
        "the other account's data is untouched"
    );
    assert_eq!(s.secret_count(b.account).await.unwrap(), 1);
}
