//! Instance keys, accounts, tokens and DEKs.

use std::sync::Arc;

use coffer_types::AccountId;

use super::fixtures::{
    account_record, all_changes, assert_head, id_bytes, token_record, ts, wrapped_key,
};
use crate::{Change, DekRecord, Entity, Storage, StorageError};

pub(super) async fn instance_keys(s: Arc<dyn Storage>) {
    let s = &*s;
    assert_eq!(
        s.get_instance_key("token-mac").await.unwrap(),
        None,
        "a fresh backend has no instance key"
    );
    let first = wrapped_key(1);
    let second = wrapped_key(2);
    let stored = s
        .put_instance_key_if_absent("token-mac", first.clone())
        .await
        .unwrap();
    assert_eq!(stored, first, "the first put stores and returns its key");
    let again = s
        .put_instance_key_if_absent("token-mac", second.clone())
        .await
        .unwrap();
    assert_eq!(again, first, "a later put returns the key already stored");
    assert_eq!(s.get_instance_key("token-mac").await.unwrap(), Some(first));
    let other = s
        .put_instance_key_if_absent("other-purpose", second.clone())
        .await
        .unwrap();
    assert_eq!(other, second, "purposes are independent");
    assert_eq!(
        s.change_head().await.unwrap(),
        0,
        "instance keys never enter the change log"
    );
}

pub(super) async fn accounts(s: Arc<dyn Storage>) {
    let s = &*s;
    assert!(s.list_accounts().await.unwrap().is_empty());
    let mut a = account_record("first");
    a.created = ts(2);
    let mut b = account_record("second");
    b.created = ts(1);
    b.secrets_quota = Some(7);
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();
    assert_eq!(s.get_account(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(
        s.get_account(b.id).await.unwrap(),
        Some(b.clone()),
        "the quota override round-trips"
    );
    assert_eq!(
        s.get_account(AccountId::from_bytes(id_bytes()))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.list_accounts().await.unwrap(),
        vec![b.clone(), a.clone()],
        "accounts list in creation order"
    );

    let err = s.create_account(a.clone(), &[]).await.unwrap_err();
    assert!(
        matches!(err, StorageError::AlreadyExists(Entity::Account)),
        "re-creating an account id: {err:?}"
    );
    assert_head(s, 2, "create_account with an existing id").await;

    let log = all_changes(s).await;
    let changes: Vec<Change> = log.iter().map(|c| c.change().unwrap()).collect();
    assert_eq!(
        changes,
        vec![
            Change::AccountPut {
                account_id: a.id,
                name: a.name.clone()
            },
            Change::AccountPut {
                account_id: b.id,
                name: b.name.clone()
            },
        ]
    );
}

pub(super) async fn tokens(s: Arc<dyn Storage>) {
    let s = &*s;
    let account = account_record("acme");
    s.create_account(account.clone(), &[]).await.unwrap();
    let head = s.change_head().await.unwrap();

    let token = token_record(account.id);
    s.create_token(token.clone(), &[]).await.unwrap();
    assert_eq!(
        s.get_token(token.id).await.unwrap(),
        Some(token.clone()),
        "every token field round-trips"
    );
    let mut bare = token_record(account.id);
    bare.operator = true;
    bare.expires = None;
    bare.last_used = None;
    bare.revoked = Some(ts(9));
    s.create_token(bare.clone(), &[]).await.unwrap();
    assert_eq!(s.get_token(bare.id).await.unwrap(), Some(bare));
    assert_eq!(
        s.get_token(crate::TokenId::from_bytes(id_bytes()))
            .await
            .unwrap(),
        None
    );

    let err = s
        .create_token(token_record(AccountId::from_bytes(id_bytes())), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Account)),
        "a token of an unknown account: {err:?}"
    );
    let err = s.create_token(token, &[]).await.unwrap_err();
    assert!(
        matches!(err, StorageError::AlreadyExists(Entity::Token)),
        "re-creating a token id: {err:?}"
    );
    assert_eq!(
        s.change_head().await.unwrap(),
        head,
        "tokens never enter the change log"
    );
}

pub(super) async fn deks(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    let b = account_record("b");
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();
    assert_eq!(s.latest_dek(a.id).await.unwrap(), None);

    let dek = |account: AccountId, tag: u8, created: i64| {
        let mut key = wrapped_key(tag);
        key.created = ts(created);
        DekRecord {
            account_id: account,
            key,
            rk: None,
        }
    };
    let older = dek(a.id, 1, 100);
    let newer = dek(a.id, 2, 200);
    let of_b = dek(b.id, 3, 300);
    // Inserted newest-first: "latest" is about `created`, not insertion order.
    s.put_dek(newer.clone()).await.unwrap();
    s.put_dek(older.clone()).await.unwrap();
    s.put_dek(of_b.clone()).await.unwrap();

    assert_eq!(s.get_dek(older.key.id).await.unwrap(), Some(older.clone()));
    assert_eq!(s.get_dek(of_b.key.id).await.unwrap(), Some(of_b.clone()));
    assert_eq!(
        s.get_dek(crate::DekId::from_bytes(id_bytes()))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.latest_dek(a.id).await.unwrap(),
        Some(newer.clone()),
        "latest_dek is the account's DEK with the newest `created`"
    );
    assert_eq!(
        s.latest_dek(b.id).await.unwrap(),
        Some(of_b.clone()),
        "latest_dek only sees the account's own DEKs"
    );

    let head = s.change_head().await.unwrap();
    let err = s
        .put_dek(dek(AccountId::from_bytes(id_bytes()), 4, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Account)),
        "a DEK of an unknown account: {err:?}"
    );
    let err = s.put_dek(older.clone()).await.unwrap_err();
    assert!(
        matches!(err, StorageError::AlreadyExists(Entity::Dek)),
        "re-putting a DEK id: {err:?}"
    );
    assert_head(s, head, "put_dek").await;

    let log = all_changes(s).await;
    let dek_puts: Vec<Change> = log
        .iter()
        .map(|c| c.change().unwrap())
        .filter(|c| matches!(c, Change::DekPut { .. }))
        .collect();
    let put = |d: &DekRecord| Change::DekPut {
        account_id: d.account_id,
        dek_id: d.key.id,
        kek_id: d.key.kek_id.clone(),
        wrapped_hex: hex::encode(&d.key.wrapped),
    };
    assert_eq!(dek_puts, vec![put(&newer), put(&older), put(&of_b)]);
}

pub(super) async fn account_quota_override(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    s.create_account(a.clone(), &[]).await.unwrap();
    let head = s.change_head().await.unwrap();

    s.set_account_quota(a.id, Some(5), &[]).await.unwrap();
    assert_eq!(
        s.get_account(a.id).await.unwrap().unwrap().secrets_quota,
        Some(5),
        "the override is stored"
    );
    s.set_account_quota(a.id, Some(0), &[]).await.unwrap();
    assert_eq!(
        s.get_account(a.id).await.unwrap().unwrap().secrets_quota,
        Some(0),
        "zero is an override like any other"
    );
    s.set_account_quota(a.id, None, &[]).await.unwrap();
    assert_eq!(
        s.get_account(a.id).await.unwrap(),
        Some(a.clone()),
        "None clears the override and changes nothing else"
    );

    let err = s
        .set_account_quota(AccountId::from_bytes(id_bytes()), Some(1), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Account)),
        "the quota of an unknown account: {err:?}"
    );
    let err = s
        .set_account_quota(a.id, Some(u64::MAX), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Invalid(_)),
        "a quota above i64::MAX: {err:?}"
    );
    s.set_account_quota(a.id, Some(i64::MAX as u64), &[])
        .await
        .unwrap();
    assert_eq!(
        s.get_account(a.id).await.unwrap().unwrap().secrets_quota,
        Some(i64::MAX as u64)
    );
    assert_eq!(
        s.change_head().await.unwrap(),
        head,
        "quota changes never enter the change log"
    );
}

pub(super) async fn shutdown_finishes_writes_then_refuses_more(s: Arc<dyn Storage>) {
    let a = account_record("before");
    s.create_account(a.clone(), &[]).await.unwrap();
    let head = s.change_head().await.unwrap();
    // Two at once, then a third: each returns only once the backend has stopped.
    let (s1, s2) = (Arc::clone(&s), Arc::clone(&s));
    tokio::join!(s1.shutdown(), s2.shutdown());
    s.shutdown().await;

    let err = s
        .create_account(account_record("after"), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Unavailable(_)),
        "a write after shutdown: {err:?}"
    );
    let err = s.set_account_quota(a.id, Some(1), &[]).await.unwrap_err();
    assert!(
        matches!(err, StorageError::Unavailable(_)),
        "a write after shutdown: {err:?}"
    );
    // What was written before shutdown is there. (Reads after shutdown are not promised by
    // the trait, so a backend that refuses them passes too.)
    if let Ok(account) = s.get_account(a.id).await {
        assert_eq!(account, Some(a));
    }
    if let Ok(now) = s.change_head().await {
        assert_eq!(now, head);
    }
}
