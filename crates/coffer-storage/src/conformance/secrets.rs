//! Secrets and their versions: creation, names, quota, updates, deletion.

use std::sync::Arc;

use coffer_types::{Scope, Scopes, SecretId, Version};

use super::fixtures::{
    all_changes, assert_head, create_secret, id_bytes, secret, secret_query, store, tenant, ts,
};
use crate::{
    Change, Entity, NewSecret, SecretRecord, SecretUpdate, Storage, StorageError, VersionRecord,
};

fn metadata_update(record: &SecretRecord, expected: Version) -> SecretUpdate {
    SecretUpdate {
        account_id: record.account_id,
        store_id: record.store_id,
        secret_id: record.id,
        expected_version: expected,
        value: None,
        scopes: None,
        comment: None,
        modified: ts(1000),
        dek: None,
    }
}

fn next_value(new: &NewSecret, version: u32, sealed: &[u8]) -> VersionRecord {
    VersionRecord {
        secret_id: new.record.id,
        version: Version(version),
        dek_id: new.value.dek_id,
        sealed: sealed.to_vec(),
        created: ts(1000 + i64::from(version)),
    }
}

pub(super) async fn secret_lifecycle(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    let mut a = secret(t, st, "OPENAI_KEY");
    a.record.comment = "for the gateway".into();
    a.record.scopes = Scopes::new([Scope::AiGateway, Scope::Workers]);
    let b = secret(t, st, "stripe-key");
    s.create_secrets(t.account, st, vec![a.clone(), b.clone()], 10, &[])
        .await
        .unwrap();
    assert_eq!(
        s.get_secret(t.account, st, a.record.id).await.unwrap(),
        Some(a.record.clone()),
        "a secret's metadata round-trips"
    );
    assert_eq!(
        s.get_version(a.record.id, Version::FIRST).await.unwrap(),
        Some(a.value.clone()),
        "a sealed version round-trips byte for byte"
    );
    assert_eq!(s.get_version(a.record.id, Version(2)).await.unwrap(), None);
    assert_eq!(
        s.get_secret(t.account, st, SecretId::from_bytes(id_bytes()))
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.secret_count(t.account).await.unwrap(), 2);
    let page = s
        .list_secrets(t.account, st, &secret_query(1, 10))
        .await
        .unwrap();
    assert_eq!(page.total_count, 2);
    assert_eq!(page.items.len(), 2);

    s.create_secrets(t.account, st, Vec::new(), 10, &[])
        .await
        .expect("an empty batch is a no-op");
    assert_eq!(s.secret_count(t.account).await.unwrap(), 2);

    let changes: Vec<Change> = all_changes(s)
        .await
        .iter()
        .map(|c| c.change().unwrap())
        .filter(|c| matches!(c, Change::SecretPut { .. }))
        .collect();
    assert_eq!(
        changes,
        vec![
            Change::SecretPut {
                account_id: t.account,
                store_id: st,
                secret_id: a.record.id,
                name: "OPENAI_KEY".into(),
                scopes: vec!["workers".into(), "ai_gateway".into()],
                version: 1,
                dek_id: t.dek,
                sealed_hex: hex::encode(&a.value.sealed),
            },
            Change::SecretPut {
                account_id: t.account,
                store_id: st,
                secret_id: b.record.id,
                name: "stripe-key".into(),
                scopes: vec!["workers".into()],
                version: 1,
                dek_id: t.dek,
                sealed_hex: hex::encode(&b.value.sealed),
            },
        ],
        "one SecretPut per created secret, in batch order"
    );

    // Arguments that contradict each other are refused, not silently reinterpreted.
    let mut stray = secret(t, st, "stray");
    stray.value.version = Version(2);
    let err = s
        .create_secrets(t.account, st, vec![stray], 10, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Invalid(_)),
        "a value whose version is not the record's: {err:?}"
    );
    let other_store = store(s, t, "other").await;
    let err = s
        .create_secrets(
            t.account,
            other_store,
            vec![secret(t, st, "misfiled")],
            10,
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Invalid(_)),
        "a record naming another store than the call: {err:?}"
    );
    let err = s
        .create_secrets(t.account, st, vec![a.clone()], 10, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::NameTaken { .. } | StorageError::AlreadyExists(Entity::Secret)
        ),
        "re-creating a secret: {err:?}"
    );
}

pub(super) async fn secret_names_are_unique_per_store(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    let other = store(s, t, "dev").await;
    create_secret(s, t, st, "TAKEN").await;
    let head = s.change_head().await.unwrap();
    let expect_taken = |what: &str, err: StorageError, name: &str| match err {
        StorageError::NameTaken { entity, name: got } => {
            assert_eq!(entity, Entity::Secret, "{what}");
            assert_eq!(got, name, "{what}: NameTaken must name the first clash");
        }
        other => panic!("{what}: expected NameTaken, got {other:?}"),
    };

    let err = s
        .create_secrets(t.account, st, vec![secret(t, st, "TAKEN")], 100, &[])
        .await
        .unwrap_err();
    expect_taken("an existing name", err, "TAKEN");

    let fresh = secret(t, st, "fresh");
    let batch = vec![
        fresh.clone(),
        secret(t, st, "twice"),
        secret(t, st, "TAKEN"),
        secret(t, st, "twice"),
    ];
    let err = s
        .create_secrets(t.account, st, batch, 100, &[])
        .await
        .unwrap_err();
    expect_taken(
        "a batch with an existing name after a fresh one",
        err,
        "TAKEN",
    );

    let batch = vec![
        fresh.clone(),
        secret(t, st, "twice"),
        secret(t, st, "twice"),
        secret(t, st, "TAKEN"),
    ];
    let err = s
        .create_secrets(t.account, st, batch, 100, &[])
        .await
        .unwrap_err();
    expect_taken("two items of one batch with one name", err, "twice");

    assert_head(s, head, "create_secrets with a name clash").await;
    assert_eq!(
        s.get_secret(t.account, st, fresh.record.id).await.unwrap(),
        None,
        "a batch with a clash creates nothing, not even the items before it"
    );
    assert_eq!(s.secret_count(t.account).await.unwrap(), 1);

    s.create_secrets(t.account, other, vec![secret(t, other, "TAKEN")], 100, &[])
        .await
        .expect("another store may use the same secret name");
    s.create_secrets(t.account, st, vec![secret(t, st, "taken")], 100, &[])
        .await
        .expect("secret names are case-sensitive");
}

pub(super) async fn quota_is_enforced_exactly(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = tenant(s, "a").await;
    let b = tenant(s, "b").await;
    let one = store(s, a, "one").await;
    let two = store(s, a, "two").await;
    let quota_err = |what: &str, err: StorageError, expected: (u64, u64, u64)| match err {
        StorageError::QuotaExceeded {
            quota,
            usage,
            requested,
        } => assert_eq!((quota, usage, requested), expected, "{what}"),
        other => panic!("{what}: expected QuotaExceeded, got {other:?}"),
    };

    s.create_secrets(
        a.account,
        one,
        vec![secret(a, one, "A"), secret(a, one, "B")],
        3,
        &[],
    )
    .await
    .unwrap();
    s.create_secrets(a.account, two, vec![secret(a, two, "C")], 3, &[])
        .await
        .expect("reaching the quota exactly is allowed (and counts every store)");
    assert_eq!(s.secret_count(a.account).await.unwrap(), 3);
    let head = s.change_head().await.unwrap();

    let err = s
        .create_secrets(a.account, one, vec![secret(a, one, "D")], 3, &[])
        .await
        .unwrap_err();
    quota_err("one past the quota", err, (3, 3, 1));

    let d = secret(a, one, "D");
    let err = s
        .create_secrets(
            a.account,
            one,
            vec![d.clone(), secret(a, one, "E"), secret(a, one, "F")],
            5,
            &[],
        )
        .await
        .unwrap_err();
    quota_err("a batch that would overshoot", err, (5, 3, 3));
    assert_head(s, head, "create_secrets over the quota").await;
    assert_eq!(s.secret_count(a.account).await.unwrap(), 3);
    assert_eq!(
        s.get_secret(a.account, one, d.record.id).await.unwrap(),
        None,
        "a batch over the quota creates none of its items"
    );

    s.create_secrets(a.account, one, vec![d, secret(a, one, "E")], 5, &[])
        .await
        .expect("a batch that lands exactly on the quota");
    assert_eq!(s.secret_count(a.account).await.unwrap(), 5);

    let b_store = store(s, b, "one").await;
    s.create_secrets(b.account, b_store, vec![secret(b, b_store, "A")], 1, &[])
        .await
        .expect("another account's secrets do not count");
    assert_eq!(s.secret_count(b.account).await.unwrap(), 1);
    assert_eq!(s.secret_count(a.account).await.unwrap(), 5);
}

pub(super) async fn values_need_a_dek_of_the_account(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = tenant(s, "a").await;
    let b = tenant(s, "b").await;
    let st = store(s, a, "prod").await;
    let head = s.change_head().await.unwrap();
    let mut foreign = secret(a, st, "X");
    foreign.value.dek_id = b.dek;
    let err = s
        .create_secrets(a.account, st, vec![foreign], 10, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Dek)),
        "a value sealed under another account's DEK: {err:?}"
    );
    let mut unknown = secret(a, st, "X");
    unknown.value.dek_id = crate::DekId::from_bytes(id_bytes());
    let err = s
        .create_secrets(a.account, st, vec![unknown], 10, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Dek)),
        "a value sealed under an unknown DEK: {err:?}"
    );
    assert_head(s, head, "create_secrets with a bad DEK").await;

    let ok = create_secret(s, a, st, "X").await;
    let mut value = next_value(&ok, 2, b"two");
    value.dek_id = b.dek;
    let err = s
        .update_secret(
            SecretUpdate {
                value: Some(value),
                ..metadata_update(&ok.record, Version::FIRST)
            },
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Dek)),
        "an update sealed under another account's DEK: {err:?}"
    );
}

pub(super) async fn update_is_compare_and_swap(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    let mut new = secret(t, st, "KEY");
    new.record.comment = "first".into();
    s.create_secrets(t.account, st, vec![new.clone()], 10, &[])
        .await
        .unwrap();

    // A new value: version 2, metadata kept.
    let v2 = next_value(&new, 2, b"two");
    let updated = s
        .update_secret(
            SecretUpdate {
                value: Some(v2.clone()),
                modified: ts(2000),
                ..metadata_update(&new.record, Version::FIRST)
            },
            &[],
        )
        .await
        .unwrap();
    let expected = SecretRecord {
        version: Version(2),
        modified: ts(2000),
        ..new.record.clone()
    };
    assert_eq!(updated, expected, "update returns the new record");
    assert_eq!(
        s.get_secret(t.account, st, new.record.id).await.unwrap(),
        Some(expected.clone())
    );

    // Metadata only: the version stays, the change carries the current value.
    let head = s.change_head().await.unwrap();
    let updated = s
        .update_secret(
            SecretUpdate {
                comment: Some("second".into()),
                scopes: Some(Scopes::new([Scope::Dex])),
                modified: ts(3000),
                ..metadata_update(&new.record, Version(2))
            },
            &[],
        )
        .await
        .unwrap();
    let expected = SecretRecord {
        comment: "second".into(),
        scopes: Scopes::new([Scope::Dex]),
        modified: ts(3000),
        ..expected
    };
    assert_eq!(updated, expected);
    assert_eq!(
        s.get_secret(t.account, st, new.record.id).await.unwrap(),
        Some(expected.clone())
    );
    let log = all_changes(s).await;
    assert_eq!(log.len() as u64, head + 1, "one entry per update");
    assert_eq!(
        log[head as usize].change().unwrap(),
        Change::SecretPut {
            account_id: t.account,
            store_id: st,
            secret_id: new.record.id,
            name: "KEY".into(),
            scopes: vec!["dex".into()],
            version: 2,
            dek_id: t.dek,
            sealed_hex: hex::encode(b"two"),
        },
        "a metadata update logs the full current state, value included"
    );

    // Stale expectations are refused and change nothing.
    let head = head + 1;
    let err = s
        .update_secret(
            SecretUpdate {
                comment: Some("lost update".into()),
                ..metadata_update(&new.record, Version::FIRST)
            },
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Conflict),
        "an update expecting an old version: {err:?}"
    );
    let err = s
        .update_secret(
            SecretUpdate {
                value: Some(next_value(&new, 2, b"again")),
                ..metadata_update(&new.record, Version::FIRST)
            },
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Conflict),
        "a value update expecting an old version: {err:?}"
    );
    let err = s
        .update_secret(
            SecretUpdate {
                value: Some(next_value(&new, 4, b"skip")),
                ..metadata_update(&new.record, Version(2))
            },
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Invalid(_)),
        "a new value that is not expected + 1: {err:?}"
    );
    let err = s
        .update_secret(
            SecretUpdate {
                secret_id: SecretId::from_bytes(id_bytes()),
                ..metadata_update(&new.record, Version(2))
            },
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Secret)),
        "updating a missing secret: {err:?}"
    );
    assert_head(s, head, "update_secret").await;
    assert_eq!(
        s.get_secret(t.account, st, new.record.id).await.unwrap(),
        Some(expected)
    );
    assert_eq!(
        s.get_version(new.record.id, Version(2)).await.unwrap(),
        Some(v2),
        "a refused update leaves the current version as it was"
    );
}

pub(super) async fn versions_are_immutable(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    let new = create_secret(s, t, st, "KEY").await;
    let mut versions = vec![new.value.clone()];
    for v in 2..=4u32 {
        let value = next_value(&new, v, format!("value {v}").as_bytes());
        s.update_secret(
            SecretUpdate {
                value: Some(value.clone()),
                ..metadata_update(&new.record, Version(v - 1))
            },
            &[],
        )
        .await
        .unwrap();
        versions.push(value);
        // Metadata updates in between must not touch any version row either.
        s.update_secret(
            SecretUpdate {
                comment: Some(format!("after {v}")),
                ..metadata_update(&new.record, Version(v))
            },
            &[],
        )
        .await
        .unwrap();
    }
    for value in &versions {
        assert_eq!(
            s.get_version(new.record.id, value.version)
                .await
                .unwrap()
                .as_ref(),
            Some(value),
            "version {} reads back exactly as written, after later updates",
            value.version
        );
    }
    assert_eq!(
        s.get_version(new.record.id, Version(5)).await.unwrap(),
        None
    );
}

pub(super) async fn delete_secrets_is_all_or_nothing(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    let a = create_secret(s, t, st, "A").await;
    let b = create_secret(s, t, st, "B").await;
    let c = create_secret(s, t, st, "C").await;
    let head = s.change_head().await.unwrap();

    let missing = SecretId::from_bytes(id_bytes());
    let err = s
        .delete_secrets(t.account, st, &[a.record.id, missing], &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Secret)),
        "deleting a list with a missing id: {err:?}"
    );
    assert_head(s, head, "delete_secrets with a missing id").await;
    assert!(
        s.get_secret(t.account, st, a.record.id)
            .await
            .unwrap()
            .is_some(),
        "nothing is deleted when one id is missing"
    );
    assert_eq!(s.secret_count(t.account).await.unwrap(), 3);

    s.delete_secrets(t.account, st, &[b.record.id, a.record.id], &[])
        .await
        .unwrap();
    for gone in [&a, &b] {
        assert_eq!(
            s.get_secret(t.account, st, gone.record.id).await.unwrap(),
            None
        );
        assert_eq!(
            s.get_version(gone.record.id, Version::FIRST).await.unwrap(),
            None,
            "deleting a secret deletes its versions"
        );
    }
    assert_eq!(s.secret_count(t.account).await.unwrap(), 1);
    let log = all_changes(s).await;
    let tail: Vec<Change> = log[head as usize..]
        .iter()
        .map(|r| r.change().unwrap())
        .collect();
    let deleted = |id| Change::SecretDeleted {
        account_id: t.account,
        store_id: st,
        secret_id: id,
    };
    assert_eq!(
        tail,
        vec![deleted(b.record.id), deleted(a.record.id)],
        "one SecretDeleted per secret, in the order given"
    );

    s.delete_secrets(t.account, st, &[c.record.id, c.record.id], &[])
        .await
        .expect("naming a secret twice deletes it once");
    assert_eq!(s.secret_count(t.account).await.unwrap(), 0);
    s.delete_secrets(t.account, st, &[], &[])
        .await
        .expect("an empty list is a no-op");
    let err = s
        .delete_secrets(t.account, st, &[c.record.id], &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Secret)),
        "deleting a deleted secret: {err:?}"
    );
}

/// Runtime caches are validated against `committed_head`: every write that changes what a
/// runtime read answers must advance it before it is acknowledged, and a failed write must not.
pub(super) async fn secret_writes_advance_committed_head(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    let mut position = s.committed_head();
    let mut moved = |what: &str| {
        let now = s.committed_head();
        assert!(now > position, "{what} must advance committed_head");
        position = now;
    };
    let new = create_secret(s, t, st, "KEY").await;
    moved("create_secrets");
    s.update_secret(
        SecretUpdate {
            value: Some(next_value(&new, 2, b"two")),
            modified: ts(2000),
            ..metadata_update(&new.record, Version::FIRST)
        },
        &[],
    )
    .await
    .unwrap();
    moved("update_secret (value)");
    s.update_secret(
        SecretUpdate {
            scopes: Some(Scopes::new([Scope::AiGateway])),
            modified: ts(2001),
            ..metadata_update(&new.record, Version(2))
        },
        &[],
    )
    .await
    .unwrap();
    moved("update_secret (scopes)");
    // A refused update (stale version) changes nothing and must not move it.
    let before = s.committed_head();
    assert!(
        s.update_secret(metadata_update(&new.record, Version::FIRST), &[])
            .await
            .is_err()
    );
    assert_eq!(s.committed_head(), before, "a refused write leaves it");
    s.delete_secrets(t.account, st, &[new.record.id], &[])
        .await
        .unwrap();
    moved("delete_secrets");
    create_secret(s, t, st, "OTHER").await;
    moved("create_secrets");
    s.delete_store(t.account, st, true, &[]).await.unwrap();
    moved("delete_store (force)");
    s.delete_account(t.account, &[]).await.unwrap();
    moved("delete_account");
}
