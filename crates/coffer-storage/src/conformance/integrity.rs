//! `check_integrity`: what lists and quotas trust holds after every write the application
//! makes (a store's and an account's count equal their rows), and a count changed behind the
//! storage's back is found, naming the store or account ([`drifted_counts_are_found`], which
//! each backend's tests run with raw SQL of their own); `recount_secrets` sets drifted counts
//! right and nothing else ([`recount_corrects_drifted_counts`], the same way).

use std::future::Future;
use std::sync::Arc;

use coffer_types::{AccountId, StoreId};

use super::fixtures::{create_secret, secret, secret_query, store, tenant};
use crate::{
    IntegrityError, IntegrityProblem, IntegrityReport, Recount, Recounted, Storage,
    verify_integrity,
};

/// The report, which must find nothing; `what` names the moment in the failure.
async fn clean(s: &dyn Storage, what: &str) -> IntegrityReport {
    let report = s.check_integrity().await.unwrap();
    assert_eq!(report.problem, None, "{what}: nothing is broken");
    report
}

pub(super) async fn counts_hold_through_every_write(s: Arc<dyn Storage>) {
    let s = &*s;
    let empty = clean(s, "an empty store").await;
    assert_eq!((empty.stores_checked, empty.accounts_checked), (0, 0));

    let t = tenant(s, "acme").await;
    let a = store(s, t, "a").await;
    let b = store(s, t, "b").await;
    let batch: Vec<_> = (0..4).map(|i| secret(t, a, &format!("s{i}"))).collect();
    let ids: Vec<_> = batch.iter().map(|n| n.record.id).collect();
    s.create_secrets(t.account, a, batch, 100, &[])
        .await
        .unwrap();
    create_secret(s, t, b, "other").await;
    let u = tenant(s, "umbrella").await;
    let c = store(s, u, "c").await;
    create_secret(s, u, c, "theirs").await;
    let report = clean(s, "after creates").await;
    assert_eq!((report.stores_checked, report.accounts_checked), (3, 2));

    s.delete_secrets(t.account, a, &[ids[0], ids[1]], &[])
        .await
        .unwrap();
    clean(s, "after deletes").await;
    s.delete_store(t.account, b, true, &[]).await.unwrap();
    let report = clean(s, "after a forced store deletion").await;
    assert_eq!(report.stores_checked, 2);
    s.delete_account(t.account, &[]).await.unwrap();
    let report = clean(s, "after an account's deletion").await;
    assert_eq!((report.stores_checked, report.accounts_checked), (1, 1));
}

/// A stored count set behind the storage's back (a backend's test does it with raw SQL).
#[derive(Debug, Clone, Copy)]
pub enum Drift {
    /// `UPDATE stores SET secret_count = to WHERE id = store`.
    Store { store: StoreId, to: i64 },
    /// `UPDATE accounts SET secret_count = to WHERE id = account`.
    Account { account: AccountId, to: i64 },
}

/// A count set wrong (over and under) by `drift` is found by `check_integrity` (the store or
/// account, its count and its rows) and refused by `verify_integrity`; set right again, the
/// check passes. `storage` must be fresh and empty; `drift` changes the count in the same
/// database by the backend's own means, committed before it returns.
pub async fn drifted_counts_are_found<F, Fut>(storage: Arc<dyn Storage>, mut drift: F)
where
    F: FnMut(Drift) -> Fut,
    Fut: Future<Output = ()>,
{
    let s = &*storage;
    let t = tenant(s, "acme").await;
    let a = store(s, t, "a").await;
    let b = store(s, t, "b").await;
    let batch: Vec<_> = (0..3).map(|i| secret(t, a, &format!("s{i}"))).collect();
    s.create_secrets(t.account, a, batch, 100, &[])
        .await
        .unwrap();
    create_secret(s, t, b, "other").await;
    let u = tenant(s, "umbrella").await;
    clean(s, "before any drift").await;

    drift(Drift::Store { store: a, to: 1000 }).await;
    let over = IntegrityProblem::StoreCount {
        store: a,
        counts: 1000,
        holds: 3,
    };
    assert_eq!(
        s.check_integrity().await.unwrap().problem,
        Some(over.clone())
    );
    match verify_integrity(s).await {
        Err(IntegrityError::Broken(problem)) => {
            assert_eq!(problem, over);
            assert_eq!(
                IntegrityError::Broken(problem).to_string(),
                format!("integrity check failed: store {a} counts 1000 secrets, holds 3")
            );
        }
        other => panic!("an over-count is refused: {other:?}"),
    }
    drift(Drift::Store { store: a, to: 3 }).await;
    clean(s, "the store's count set right").await;

    drift(Drift::Store { store: b, to: 0 }).await;
    assert_eq!(
        s.check_integrity().await.unwrap().problem,
        Some(IntegrityProblem::StoreCount {
            store: b,
            counts: 0,
            holds: 1
        }),
        "an under-count"
    );
    drift(Drift::Store { store: b, to: 1 }).await;

    drift(Drift::Account {
        account: u.account,
        to: 5,
    })
    .await;
    let report = s.check_integrity().await.unwrap();
    assert_eq!(
        report.problem,
        Some(IntegrityProblem::AccountCount {
            account: u.account,
            counts: 5,
            holds: 0
        })
    );
    assert_eq!(
        report.problem.unwrap().to_string(),
        format!("account {} counts 5 secrets, holds 0", u.account)
    );
    drift(Drift::Account {
        account: u.account,
        to: 0,
    })
    .await;
    let report = clean(s, "every count set right").await;
    assert_eq!((report.stores_checked, report.accounts_checked), (2, 2));
}

/// On counts that hold, `recount_secrets` changes nothing and appends nothing.
pub(super) async fn recount_of_right_counts_changes_nothing(s: Arc<dyn Storage>) {
    let s = &*s;
    assert_eq!(s.recount_secrets().await.unwrap(), Recounted::default());
    let t = tenant(s, "acme").await;
    let a = store(s, t, "a").await;
    create_secret(s, t, a, "one").await;
    let head = s.log_state().await.unwrap();
    let recounted = s.recount_secrets().await.unwrap();
    assert_eq!(
        (recounted.corrected(), recounted),
        (0, Recounted::default())
    );
    assert_eq!(s.log_state().await.unwrap(), head, "nothing appended");
    clean(s, "after a recount of right counts").await;
}

/// Counts set wrong by `drift` (over and under, a store's and an account's, another account's
/// left right) are set to their rows by `recount_secrets`, which reports each (its id, the
/// count it held, its rows) and appends nothing to the change log; then `check_integrity`
/// finds nothing, an unfiltered list's `total_count` and the account's count are the rows
/// again, and a second recount corrects nothing. `storage` and `drift` as for
/// [`drifted_counts_are_found`].
pub async fn recount_corrects_drifted_counts<F, Fut>(storage: Arc<dyn Storage>, mut drift: F)
where
    F: FnMut(Drift) -> Fut,
    Fut: Future<Output = ()>,
{
    let s = &*storage;
    let t = tenant(s, "acme").await;
    let a = store(s, t, "a").await;
    let b = store(s, t, "b").await;
    let batch: Vec<_> = (0..3).map(|i| secret(t, a, &format!("s{i}"))).collect();
    s.create_secrets(t.account, a, batch, 100, &[])
        .await
        .unwrap();
    create_secret(s, t, b, "other").await;
    let u = tenant(s, "umbrella").await;
    let c = store(s, u, "c").await;
    create_secret(s, u, c, "theirs").await;
    clean(s, "before any drift").await;

    drift(Drift::Store { store: a, to: 1000 }).await;
    drift(Drift::Store { store: b, to: 0 }).await;
    drift(Drift::Account {
        account: t.account,
        to: 7,
    })
    .await;
    let total = |store| async move {
        s.list_secrets(t.account, store, &secret_query(1, 1))
            .await
            .unwrap()
            .total_count
    };
    assert_eq!(total(a).await, 1000, "a list trusts the drifted count");
    assert!(s.check_integrity().await.unwrap().problem.is_some());
    let head = s.log_state().await.unwrap();

    let recounted = s.recount_secrets().await.unwrap();
    let mut stores = vec![
        Recount {
            id: a,
            was: 1000,
            now: 3,
        },
        Recount {
            id: b,
            was: 0,
            now: 1,
        },
    ];
    stores.sort_by_key(|r| *r.id.as_bytes());
    assert_eq!(
        recounted,
        Recounted {
            stores,
            accounts: vec![Recount {
                id: t.account,
                was: 7,
                now: 4,
            }],
        },
        "each drifted count, by id, and nothing else"
    );
    assert_eq!(recounted.corrected(), 3);
    assert_eq!(
        s.log_state().await.unwrap(),
        head,
        "a recount appends nothing to the change log"
    );
    let report = clean(s, "after the recount").await;
    assert_eq!((report.stores_checked, report.accounts_checked), (3, 2));
    assert_eq!((total(a).await, total(b).await), (3, 1));
    assert_eq!(s.secret_count(t.account).await.unwrap(), 4);
    assert_eq!(s.secret_count(u.account).await.unwrap(), 1);

    // The triggers count on from the right numbers.
    create_secret(s, t, a, "s3").await;
    assert_eq!(total(a).await, 4);
    clean(s, "a write after the recount").await;
    assert_eq!(
        s.recount_secrets().await.unwrap(),
        Recounted::default(),
        "a second recount corrects nothing"
    );
}
