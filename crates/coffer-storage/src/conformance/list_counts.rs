//! What keeps lists flat: the store's secret count behind an unfiltered list's `total_count`
//! stays exact through every write that changes a store's secrets, a filtered list's
//! `total_count` is its matches and never that count, and pages read from either end of the
//! order (`PageWindow`) tile the list with no gap or repeat, ties and filters included.

use std::sync::Arc;

use coffer_types::{AccountId, Scope, Scopes, SecretId, StoreId};

use super::fixtures::{create_secret, secret, secret_query, store, tenant, ts};
use crate::{Direction, Entity, SecretOrder, SecretQuery, SecretRecord, Storage, StorageError};

/// The store's `total_count` as an unfiltered list gives it (the maintained count), after
/// checking it against the rows themselves: a search for "" matches every secret and is counted
/// over the rows, and paging through the store finds that many.
async fn counted(s: &dyn Storage, account: AccountId, store: StoreId, what: &str) -> u64 {
    let stored = s
        .list_secrets(account, store, &secret_query(1, 1))
        .await
        .unwrap()
        .total_count;
    let mut search = secret_query(1, 1);
    search.search = Some(String::new());
    let rows = s
        .list_secrets(account, store, &search)
        .await
        .unwrap()
        .total_count;
    assert_eq!(
        stored, rows,
        "{what}: the store's maintained count matches its rows"
    );
    let mut seen = 0u64;
    for page in 1.. {
        let got = s
            .list_secrets(account, store, &secret_query(page, 7))
            .await
            .unwrap();
        if got.items.is_empty() {
            break;
        }
        seen += got.items.len() as u64;
    }
    assert_eq!(seen, stored, "{what}: paging finds as many as the count");
    stored
}

pub(super) async fn store_secret_counts_follow_every_write(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let a = store(s, t, "a").await;
    let b = store(s, t, "b").await;
    assert_eq!(counted(s, t.account, a, "a new store").await, 0);

    // A bulk create counts in its own store only.
    let batch: Vec<_> = (0..5).map(|i| secret(t, a, &format!("s{i}"))).collect();
    let ids: Vec<SecretId> = batch.iter().map(|n| n.record.id).collect();
    s.create_secrets(t.account, a, batch, 100, &[])
        .await
        .unwrap();
    create_secret(s, t, b, "other").await;
    assert_eq!(
        counted(s, t.account, a, "after a bulk create of 5").await,
        5
    );
    assert_eq!(counted(s, t.account, b, "the other store").await, 1);

    // Refused writes change nothing: over the quota, a name taken, a delete naming a missing id.
    let over: Vec<_> = (0..3).map(|i| secret(t, a, &format!("q{i}"))).collect();
    assert!(matches!(
        s.create_secrets(t.account, a, over, 8, &[]).await,
        Err(StorageError::QuotaExceeded { .. })
    ));
    let clash = vec![secret(t, a, "new"), secret(t, a, "s0")];
    s.create_secrets(t.account, a, clash, 100, &[])
        .await
        .unwrap_err();
    let missing = SecretId::from_bytes(super::fixtures::id_bytes());
    s.delete_secrets(t.account, a, &[ids[0], missing], &[])
        .await
        .unwrap_err();
    assert_eq!(counted(s, t.account, a, "after refused writes").await, 5);

    // Deleting one, then several (one named twice).
    s.delete_secrets(t.account, a, &[ids[0]], &[])
        .await
        .unwrap();
    assert_eq!(counted(s, t.account, a, "after deleting one").await, 4);
    s.delete_secrets(t.account, a, &[ids[1], ids[2], ids[1]], &[])
        .await
        .unwrap();
    assert_eq!(counted(s, t.account, a, "after deleting several").await, 2);
    assert_eq!(
        s.secret_count(t.account).await.unwrap(),
        3,
        "the account's count moves with its stores'"
    );

    // A forced store deletion takes its secrets; a store made again starts at 0.
    s.delete_store(t.account, b, true, &[]).await.unwrap();
    assert!(matches!(
        s.list_secrets(t.account, b, &secret_query(1, 10)).await,
        Err(StorageError::NotFound(Entity::Store))
    ));
    assert_eq!(
        counted(s, t.account, a, "after deleting the other store").await,
        2
    );
    let c = store(s, t, "b").await;
    assert_eq!(counted(s, t.account, c, "a store made again").await, 0);
    create_secret(s, t, c, "other").await;
    assert_eq!(counted(s, t.account, c, "the store made again").await, 1);

    // An account's deletion leaves another account's stores exact.
    let u = tenant(s, "umbrella").await;
    let kept = store(s, u, "kept").await;
    let batch: Vec<_> = (0..4).map(|i| secret(u, kept, &format!("k{i}"))).collect();
    s.create_secrets(u.account, kept, batch, 100, &[])
        .await
        .unwrap();
    s.delete_account(t.account, &[]).await.unwrap();
    assert!(matches!(
        s.list_secrets(t.account, a, &secret_query(1, 10)).await,
        Err(StorageError::NotFound(Entity::Store))
    ));
    assert_eq!(
        counted(s, u.account, kept, "another account's store").await,
        4
    );
}

/// Every page of `query` (its page number replaced) checked against `expected`'s slice: a page
/// read from the end of the order must hold exactly the rows a walk from the start would.
async fn check_pages(
    s: &dyn Storage,
    account: AccountId,
    store: StoreId,
    query: &SecretQuery,
    expected: &[SecretRecord],
) {
    let per_page = query.per_page as usize;
    let pages = expected.len().div_ceil(per_page) + 1;
    for page in 1..=pages {
        let q = SecretQuery {
            page: page as u32,
            ..query.clone()
        };
        let got = s.list_secrets(account, store, &q).await.unwrap();
        assert_eq!(got.total_count, expected.len() as u64, "total of {q:?}");
        let from = ((page - 1) * per_page).min(expected.len());
        let to = (from + per_page).min(expected.len());
        let names = |r: &[SecretRecord]| r.iter().map(|x| x.name.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(&got.items),
            names(&expected[from..to]),
            "page {page} of {q:?}"
        );
        assert_eq!(got.items, expected[from..to], "page {page} of {q:?}");
    }
}

pub(super) async fn pages_from_either_end_tile_the_list(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    // 23 secrets: `created` in runs of 4 (ties), `modified` in 3 values, comments in 5 with
    // some empty; names in mixed case. Half match the search "x".
    let mut batch = Vec::new();
    for i in 0..23i64 {
        let name = if i % 3 == 0 {
            format!("X{i:02}")
        } else {
            format!("a{i:02}")
        };
        let mut new = secret(t, st, &name);
        new.record.comment = ["", "y", "x", "Y", "b"][i as usize % 5].to_owned();
        new.record.created = ts(i / 4);
        new.record.modified = ts(i % 3);
        batch.push(new);
    }
    let all: Vec<SecretRecord> = batch.iter().map(|n| n.record.clone()).collect();
    s.create_secrets(t.account, st, batch, 100, &[])
        .await
        .unwrap();
    let other = store(s, t, "dev").await;
    create_secret(s, t, other, "a00").await;

    for order in [
        SecretOrder::Name,
        SecretOrder::Comment,
        SecretOrder::Created,
        SecretOrder::Modified,
        SecretOrder::Status,
    ] {
        for search in [None, Some("x")] {
            let mut expected: Vec<SecretRecord> = all
                .iter()
                .filter(|r| {
                    search.is_none()
                        || r.name.as_str().to_ascii_lowercase().contains('x')
                        || r.comment.to_ascii_lowercase().contains('x')
                })
                .cloned()
                .collect();
            expected.sort_by(|x, y| {
                let key = |r: &SecretRecord| match order {
                    SecretOrder::Name => (r.name.as_str().to_owned(), 0),
                    SecretOrder::Comment => (r.comment.clone(), 0),
                    SecretOrder::Created => (String::new(), r.created.unix_micros()),
                    SecretOrder::Modified => (String::new(), r.modified.unix_micros()),
                    SecretOrder::Status => (String::new(), 0),
                };
                key(x)
                    .cmp(&key(y))
                    .then_with(|| x.id.as_bytes().cmp(y.id.as_bytes()))
            });
            for per_page in [1, 4, 5, 22, 23] {
                for direction in [Direction::Asc, Direction::Desc] {
                    let mut query = secret_query(1, per_page);
                    query.order = order;
                    query.direction = direction;
                    query.search = search.map(str::to_owned);
                    let mut want = expected.clone();
                    if direction == Direction::Desc {
                        want.reverse();
                    }
                    check_pages(s, t.account, st, &query, &want).await;
                }
            }
        }
    }
}

/// A filtered list counts its matches in the store (`SecretQuery::is_unfiltered` is false);
/// were it given the store's maintained count instead, the pages near the end, read backwards
/// from that count, would hold other rows: every page is checked, both directions.
pub(super) async fn a_filtered_lists_total_is_its_match_count(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = store(s, t, "prod").await;
    // 30 secrets: comment "x" on every third, Workers on all, AiGateway on even ones, Dex on
    // every fifth.
    let mut batch = Vec::new();
    for i in 0..30usize {
        let mut new = secret(t, st, &format!("s{i:02}"));
        new.record.comment = if i % 3 == 0 { "x" } else { "y" }.to_owned();
        let mut scopes = vec![Scope::Workers];
        if i % 2 == 0 {
            scopes.push(Scope::AiGateway);
        }
        if i % 5 == 0 {
            scopes.push(Scope::Dex);
        }
        new.record.scopes = Scopes::new(scopes);
        batch.push(new);
    }
    let all: Vec<SecretRecord> = batch.iter().map(|n| n.record.clone()).collect();
    s.create_secrets(t.account, st, batch, 100, &[])
        .await
        .unwrap();
    // Another store's secrets match every filter too; they count in neither list.
    let other = store(s, t, "dev").await;
    let mut batch = Vec::new();
    for i in 0..4 {
        let mut new = secret(t, other, &format!("o{i}"));
        new.record.comment = "x".to_owned();
        new.record.scopes = Scopes::new([Scope::Workers, Scope::AiGateway, Scope::Dex]);
        batch.push(new);
    }
    s.create_secrets(t.account, other, batch, 100, &[])
        .await
        .unwrap();
    let stored = s
        .list_secrets(t.account, st, &secret_query(1, 1))
        .await
        .unwrap()
        .total_count;
    assert_eq!(stored, 30, "the unfiltered list counts the store");

    let cases: &[(Option<&str>, &[Scope], usize)] = &[
        (Some("x"), &[], 10),
        (None, &[Scope::AiGateway], 15),
        (None, &[Scope::AiGateway, Scope::Dex], 3),
        (Some("X"), &[Scope::AiGateway], 5),
        (Some("x"), &[Scope::AiGateway, Scope::Dex], 1),
        (Some("nothing"), &[], 0),
        (None, &[Scope::Websearch], 0),
        (Some(""), &[], 30),
    ];
    for (search, scopes, matches) in cases {
        let wanted = Scopes::new(scopes.iter().copied());
        let expected: Vec<SecretRecord> = all
            .iter()
            .filter(|r| {
                search.is_none_or(|n| r.comment.contains(&n.to_ascii_lowercase()))
                    && scopes.iter().all(|sc| r.scopes.contains(*sc))
            })
            .cloned()
            .collect();
        assert_eq!(
            expected.len(),
            *matches,
            "the fixture of {search:?} {scopes:?}"
        );
        for direction in [Direction::Asc, Direction::Desc] {
            let mut query = secret_query(1, 4);
            query.order = SecretOrder::Name;
            query.direction = direction;
            query.search = search.map(str::to_owned);
            query.scopes = wanted.clone();
            let mut want = expected.clone();
            if direction == Direction::Desc {
                want.reverse();
            }
            check_pages(s, t.account, st, &query, &want).await;
        }
    }
}
