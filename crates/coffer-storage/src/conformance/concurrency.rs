//! Many tasks at once: checks inside the writing transaction, a gap-free log.

use std::sync::Arc;

use tokio::task::JoinSet;

use super::fixtures::{
    all_changes, assert_chain, secret, store, store_record, tenant, wrapped_key,
};
use crate::{Change, Entity, Storage, StorageError};

const TASKS: usize = 50;

pub(super) async fn racing_instance_key_initialisers_agree(s: Arc<dyn Storage>) {
    let mut tasks = JoinSet::new();
    for i in 0..20u8 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            s.put_instance_key_if_absent("token-mac", wrapped_key(i))
                .await
                .unwrap()
        });
    }
    let winners = tasks.join_all().await;
    let stored = s.get_instance_key("token-mac").await.unwrap();
    assert!(stored.is_some());
    for got in winners {
        assert_eq!(
            Some(got),
            stored,
            "every racing initialiser gets the one key that was stored"
        );
    }
}

pub(super) async fn concurrent_creates_respect_the_quota(s: Arc<dyn Storage>) {
    let t = tenant(&*s, "acme").await;
    let st = store(&*s, t, "prod").await;
    let head = s.change_head().await.unwrap();
    const QUOTA: u64 = 20;

    let mut tasks = JoinSet::new();
    for i in 0..TASKS {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            s.create_secrets(
                t.account,
                st,
                vec![secret(t, st, &format!("S{i}"))],
                QUOTA,
                &[],
            )
            .await
        });
    }
    let results = tasks.join_all().await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, StorageError::QuotaExceeded { quota: QUOTA, .. }),
                "a refused concurrent create is QuotaExceeded: {e:?}"
            );
        }
    }
    assert_eq!(
        created as u64, QUOTA,
        "{TASKS} concurrent creates against quota {QUOTA}: exactly the quota succeeds"
    );
    assert_eq!(s.secret_count(t.account).await.unwrap(), QUOTA);

    // Batches of three against quota 50 (20 already used): exactly 10 batches fit.
    let mut tasks = JoinSet::new();
    for i in 0..TASKS {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            let batch = (0..3)
                .map(|j| secret(t, st, &format!("B{i}-{j}")))
                .collect();
            s.create_secrets(t.account, st, batch, 50, &[]).await
        });
    }
    let created = tasks.join_all().await.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        created, 10,
        "concurrent batches of 3 fill 30 free slots exactly"
    );
    assert_eq!(s.secret_count(t.account).await.unwrap(), 50);

    let log = all_changes(&*s).await;
    assert_chain(&log);
    assert_eq!(
        log.len() as u64,
        head + 50,
        "one SecretPut per created secret, and nothing for refused ones"
    );
}

pub(super) async fn concurrent_creates_of_one_name_admit_one(s: Arc<dyn Storage>) {
    let t = tenant(&*s, "acme").await;
    let st = store(&*s, t, "prod").await;
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            let store_result = s
                .create_store(store_record(t.account, "contested"), 1000, &[])
                .await;
            let secret_result = s
                .create_secrets(t.account, st, vec![secret(t, st, "CONTESTED")], 1000, &[])
                .await;
            (store_result, secret_result)
        });
    }
    let results = tasks.join_all().await;
    for (what, entity, oks) in [
        (
            "store",
            Entity::Store,
            results.iter().map(|(r, _)| r).collect::<Vec<_>>(),
        ),
        (
            "secret",
            Entity::Secret,
            results.iter().map(|(_, r)| r).collect::<Vec<_>>(),
        ),
    ] {
        assert_eq!(
            oks.iter().filter(|r| r.is_ok()).count(),
            1,
            "exactly one of {TASKS} concurrent creates of one {what} name succeeds"
        );
        for r in oks {
            if let Err(e) = r {
                assert!(
                    matches!(e, StorageError::NameTaken { entity: got, .. } if *got == entity),
                    "the losers of a {what} name race get NameTaken: {e:?}"
                );
            }
        }
    }
    assert_chain(&all_changes(&*s).await);
}

pub(super) async fn concurrent_writers_keep_the_log_gap_free(s: Arc<dyn Storage>) {
    let mut tasks = JoinSet::new();
    for i in 0..TASKS {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            let t = tenant(&*s, &format!("tenant-{i}")).await;
            let st = store(&*s, t, "prod").await;
            s.create_secrets(t.account, st, vec![secret(t, st, "KEY")], 10, &[])
                .await
                .unwrap();
            // Each write is visible once its future has resolved.
            assert!(
                s.get_store(t.account, st).await.unwrap().is_some(),
                "a store is readable once create_store returned"
            );
            assert_eq!(s.secret_count(t.account).await.unwrap(), 1);
            t.account
        });
    }
    let accounts = tasks.join_all().await;
    let log = all_changes(&*s).await;
    assert_chain(&log);
    assert_eq!(
        log.len(),
        TASKS * 4,
        "account, DEK, store and secret per task"
    );
    for account in accounts {
        let own: Vec<Change> = log
            .iter()
            .map(|r| r.change().unwrap())
            .filter(|c| match c {
                Change::AccountPut { account_id, .. }
                | Change::DekPut { account_id, .. }
                | Change::StorePut { account_id, .. }
                | Change::SecretPut { account_id, .. } => *account_id == account,
                _ => false,
            })
            .collect();
        let kinds: Vec<&str> = own
            .iter()
            .map(|c| match c {
                Change::AccountPut { .. } => "account",
                Change::DekPut { .. } => "dek",
                Change::StorePut { .. } => "store",
                _ => "secret",
            })
            .collect();
        assert_eq!(
            kinds,
            ["account", "dek", "store", "secret"],
            "each task's changes appear in the order it made them"
        );
    }
}
