//! The DEK lifecycle's storage side: values under old DEKs, their compare-and-set re-seal
//! (logged for current versions only), pruning superseded versions, and destroying DEKs that
//! no value references.

use std::sync::Arc;

use coffer_types::{SecretId, Version};

use super::fixtures::{create_secret, store, tenant, ts, wrapped_key};
use crate::{
    Change, DekRecord, DestroyedDek, Reseal, SealedValue, SecretUpdate, Storage, StorageError,
    VersionRecord,
};

/// Every change of the log after `head`, decoded.
async fn changes_since(s: &dyn Storage, head: u64) -> Vec<Change> {
    s.changes_after(head, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|c| c.change().expect("every payload decodes"))
        .collect()
}

fn by_version(mut values: Vec<SealedValue>) -> Vec<SealedValue> {
    values.sort_by_key(|v| v.version);
    values
}

pub(super) async fn reseal_prune_and_destroy_follow_the_rules(s: Arc<dyn Storage>) {
    let s = &*s;
    // The tenant's DEK is created at ts(1); the next one at ts(5).
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    let a = create_secret(s, t, st, "A").await;
    let id: SecretId = a.record.id;
    s.update_secret(
        SecretUpdate {
            account_id: t.account,
            store_id: st,
            secret_id: id,
            expected_version: Version::FIRST,
            value: Some(VersionRecord {
                secret_id: id,
                version: Version(2),
                dek_id: t.dek,
                sealed: b"A:2".to_vec(),
                created: ts(30),
            }),
            dek: None,
            scopes: None,
            comment: None,
            modified: ts(30),
        },
        &[],
    )
    .await
    .unwrap();
    let newer = DekRecord {
        account_id: t.account,
        key: wrapped_key(5),
        rk: None,
    };

    // Both versions are under the DEK made before the cutoff; the current DEK is left out.
    let old = by_version(
        s.values_sealed_before(t.account, ts(3), Some(newer.key.id), 100)
            .await
            .unwrap(),
    );
    assert_eq!(
        old.iter()
            .map(|v| (v.version, v.dek_id))
            .collect::<Vec<_>>(),
        vec![(Version(1), t.dek), (Version(2), t.dek)]
    );
    assert_eq!(old[1].sealed, b"A:2");
    assert_eq!(
        (old[0].account_id, old[0].store_id, old[0].secret_id),
        (t.account, st, id)
    );
    assert_eq!(s.count_sealed_before(t.account, ts(3)).await.unwrap(), 2);
    assert_eq!(
        s.values_sealed_before(t.account, ts(3), None, 1)
            .await
            .unwrap()
            .len(),
        1,
        "the limit holds"
    );
    assert!(
        s.values_sealed_before(t.account, ts(3), Some(t.dek), 100)
            .await
            .unwrap()
            .is_empty(),
        "values under the current DEK are not listed"
    );
    assert!(
        s.values_sealed_before(t.account, ts(0), None, 100)
            .await
            .unwrap()
            .is_empty(),
        "nothing is sealed under a DEK made before ts(0)"
    );

    // Under another account's DEK: refused, nothing written.
    let other = tenant(s, "other").await;
    let head = s.change_head().await.unwrap();
    let foreign = vec![Reseal {
        old: old[0].clone(),
        dek_id: other.dek,
        sealed: b"x".to_vec(),
    }];
    assert!(matches!(
        s.reseal_values(None, foreign).await,
        Err(StorageError::Invalid(_))
    ));
    assert_eq!(s.change_head().await.unwrap(), head);

    // The re-seal carries the new DEK (logged first); a stale reseal (bytes that are not the
    // row's any more) is skipped; only the current version's re-seal is logged.
    let mut reseals: Vec<Reseal> = old
        .iter()
        .map(|v| Reseal {
            old: v.clone(),
            dek_id: newer.key.id,
            sealed: format!("re:{}", v.version.0).into_bytes(),
        })
        .collect();
    reseals.push(Reseal {
        old: SealedValue {
            sealed: b"not what is stored".to_vec(),
            ..old[1].clone()
        },
        dek_id: newer.key.id,
        sealed: b"stale".to_vec(),
    });
    assert_eq!(
        s.reseal_values(Some(newer.clone()), reseals).await.unwrap(),
        2
    );
    let logged = changes_since(s, head).await;
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert!(matches!(&logged[0], Change::DekPut { dek_id, .. } if *dek_id == newer.key.id));
    assert_eq!(
        logged[1],
        Change::ValueResealed {
            account_id: t.account,
            store_id: st,
            secret_id: id,
            version: 2,
            dek_id: newer.key.id,
            sealed_hex: hex::encode(b"re:2"),
        }
    );
    for v in [1, 2] {
        let stored = s.get_version(id, Version(v)).await.unwrap().unwrap();
        assert_eq!(stored.dek_id, newer.key.id);
        assert_eq!(stored.sealed, format!("re:{v}").into_bytes());
    }
    let record = s.get_secret(t.account, st, id).await.unwrap().unwrap();
    assert_eq!(
        (record.version, record.modified),
        (Version(2), ts(30)),
        "a re-seal changes neither the version nor `modified`"
    );
    assert_eq!(s.count_sealed_before(t.account, ts(3)).await.unwrap(), 0);

    // Pruning keeps the newest `keep` versions (at least 1) of each secret.
    let head = s.change_head().await.unwrap();
    assert_eq!(s.prune_versions(0, 100).await.unwrap(), 1);
    assert!(s.get_version(id, Version(1)).await.unwrap().is_none());
    assert!(s.get_version(id, Version(2)).await.unwrap().is_some());
    assert_eq!(s.prune_versions(1, 100).await.unwrap(), 0);
    assert_eq!(s.change_head().await.unwrap(), head, "pruning logs nothing");

    // The old DEK seals nothing now: destroyed (the kept ones stay), once, and logged.
    assert!(
        s.destroy_unreferenced_deks(vec![], 0)
            .await
            .unwrap()
            .is_empty(),
        "the limit holds"
    );
    let destroyed = s
        .destroy_unreferenced_deks(vec![newer.key.id, other.dek], 100)
        .await
        .unwrap();
    assert_eq!(
        destroyed,
        vec![DestroyedDek {
            account_id: t.account,
            dek_id: t.dek,
        }]
    );
    assert!(s.get_dek(t.dek).await.unwrap().is_none());
    assert!(s.get_dek(newer.key.id).await.unwrap().is_some());
    assert!(s.get_dek(other.dek).await.unwrap().is_some());
    assert_eq!(
        changes_since(s, head).await,
        vec![Change::DekDestroyed {
            account_id: t.account,
            dek_id: t.dek,
        }]
    );
    assert!(
        s.destroy_unreferenced_deks(vec![newer.key.id, other.dek], 100)
            .await
            .unwrap()
            .is_empty()
    );
}
