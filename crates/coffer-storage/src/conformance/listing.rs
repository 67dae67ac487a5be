//! Listings: pagination, every order in both directions, search and the scopes filter.

use std::sync::Arc;

use coffer_types::{AccountId, Scope, Scopes, StoreId};

use super::fixtures::{create_secret, secret, secret_query, store_query, store_record, tenant, ts};
use crate::{Direction, SecretOrder, SecretQuery, SecretRecord, Storage, StoreOrder, StoreRecord};

/// Every page of a store listing, asserting the page sizes and the total on the way.
async fn all_store_pages(
    s: &dyn Storage,
    account: AccountId,
    per_page: u32,
    order: StoreOrder,
    direction: Direction,
    total: usize,
) -> Vec<StoreRecord> {
    let mut out = Vec::new();
    let pages = total.div_ceil(per_page as usize);
    for page in 1..=pages as u32 + 1 {
        let got = s
            .list_stores(account, &store_query(page, per_page, order, direction))
            .await
            .unwrap();
        assert_eq!(got.total_count, total as u64, "total_count on page {page}");
        let expected_len = total
            .saturating_sub((page as usize - 1) * per_page as usize)
            .min(per_page as usize);
        assert_eq!(
            got.items.len(),
            expected_len,
            "page {page} of {total} items by {per_page} ({order:?} {direction:?})"
        );
        out.extend(got.items);
    }
    out
}

async fn all_secret_pages(
    s: &dyn Storage,
    account: AccountId,
    store: StoreId,
    query: &SecretQuery,
    total: usize,
) -> Vec<SecretRecord> {
    let mut out = Vec::new();
    let per_page = query.per_page as usize;
    let pages = total.div_ceil(per_page);
    for page in 1..=pages as u32 + 1 {
        let q = SecretQuery {
            page,
            ..query.clone()
        };
        let got = s.list_secrets(account, store, &q).await.unwrap();
        assert_eq!(
            got.total_count, total as u64,
            "total_count on page {page} of {q:?}"
        );
        let expected_len = total
            .saturating_sub((page as usize - 1) * per_page)
            .min(per_page);
        assert_eq!(got.items.len(), expected_len, "page {page} of {q:?}");
        out.extend(got.items);
    }
    out
}

pub(super) async fn store_pagination_and_ordering(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    // Ties on `created` and on `modified`, names in mixed case (byte order: "B" < "a").
    let specs = [
        ("b", 1, 9),
        ("a", 1, 8),
        ("B", 2, 8),
        ("c-1", 2, 7),
        ("c_1", 2, 7),
        ("A", 3, 7),
        ("zz", 1, 9),
    ];
    let mut all = Vec::new();
    for (name, created, modified) in specs {
        let mut record = store_record(t.account, name);
        record.created = ts(created);
        record.modified = ts(modified);
        s.create_store(record.clone(), 100, &[]).await.unwrap();
        all.push(record);
    }
    // Another account's stores never show up.
    let other = tenant(s, "other").await;
    s.create_store(store_record(other.account, "a"), 100, &[])
        .await
        .unwrap();

    let far = s
        .list_stores(
            t.account,
            &store_query(u32::MAX, u32::MAX, StoreOrder::Name, Direction::Asc),
        )
        .await
        .unwrap();
    assert!(
        far.items.is_empty() && far.total_count == all.len() as u64,
        "a page far past the end is empty but still counts: {far:?}"
    );

    for order in [StoreOrder::Name, StoreOrder::Created, StoreOrder::Modified] {
        let mut expected = all.clone();
        expected.sort_by(|x, y| {
            let key = |r: &StoreRecord| match order {
                StoreOrder::Name => (r.name.as_str().to_owned(), 0),
                StoreOrder::Created => (String::new(), r.created.unix_micros()),
                StoreOrder::Modified => (String::new(), r.modified.unix_micros()),
            };
            key(x)
                .cmp(&key(y))
                .then_with(|| x.id.as_bytes().cmp(y.id.as_bytes()))
        });
        for per_page in [3, 7, 50] {
            let asc =
                all_store_pages(s, t.account, per_page, order, Direction::Asc, all.len()).await;
            assert_eq!(
                asc, expected,
                "stores by {order:?} ascending, then id, {per_page} per page"
            );
            let desc =
                all_store_pages(s, t.account, per_page, order, Direction::Desc, all.len()).await;
            let reversed: Vec<_> = expected.iter().rev().cloned().collect();
            assert_eq!(
                desc, reversed,
                "stores by {order:?} descending is exactly ascending reversed"
            );
        }
    }
}

pub(super) async fn secret_pagination_and_ordering(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let st = {
        let record = store_record(t.account, "prod");
        let id = record.id;
        s.create_store(record, 10, &[]).await.unwrap();
        id
    };
    // (name, comment, created, modified): ties in every column but the name.
    let specs = [
        ("b", "x", 1, 5),
        ("a", "y", 1, 5),
        ("B", "x", 2, 4),
        ("c_1", "", 2, 4),
        ("c-1", "", 3, 6),
        ("A", "Y", 3, 5),
        ("zz", "x", 1, 6),
        ("m", "y", 2, 4),
    ];
    let mut all = Vec::new();
    let mut batch = Vec::new();
    for (name, comment, created, modified) in specs {
        let mut new = secret(t, st, name);
        new.record.comment = comment.to_owned();
        new.record.created = ts(created);
        new.record.modified = ts(modified);
        all.push(new.record.clone());
        batch.push(new);
    }
    s.create_secrets(t.account, st, batch, 100, &[])
        .await
        .unwrap();
    // A second store's secrets never show up.
    let record = store_record(t.account, "dev");
    let dev = record.id;
    s.create_store(record, 10, &[]).await.unwrap();
    s.create_secrets(t.account, dev, vec![secret(t, dev, "a")], 100, &[])
        .await
        .unwrap();

    for order in [
        SecretOrder::Name,
        SecretOrder::Comment,
        SecretOrder::Created,
        SecretOrder::Modified,
        SecretOrder::Status,
    ] {
        let mut expected = all.clone();
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
        for per_page in [3, 8, 100] {
            let mut query = secret_query(1, per_page);
            query.order = order;
            query.direction = Direction::Asc;
            let asc = all_secret_pages(s, t.account, st, &query, all.len()).await;
            assert_eq!(
                asc, expected,
                "secrets by {order:?} ascending, then id, {per_page} per page"
            );
            query.direction = Direction::Desc;
            let desc = all_secret_pages(s, t.account, st, &query, all.len()).await;
            let reversed: Vec<_> = expected.iter().rev().cloned().collect();
            assert_eq!(
                desc, reversed,
                "secrets by {order:?} descending is exactly ascending reversed"
            );
        }
    }
}

/// A search holding a NUL (PostgreSQL's text cannot hold one; SQLite would cut the pattern
/// there) is the caller's error on every backend, never an outage nor a wider match.
pub(super) async fn a_search_with_a_nul_is_not_an_outage(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let record = store_record(t.account, "prod");
    let st = record.id;
    s.create_store(record, 10, &[]).await.unwrap();
    create_secret(s, t, st, "a").await;
    let mut query = secret_query(1, 10);
    query.search = Some("a\0".into());
    match s.list_secrets(t.account, st, &query).await {
        Err(crate::StorageError::Invalid(_)) => {}
        other => panic!("a NUL in a search: {other:?}"),
    }
}

pub(super) async fn search_is_literal_and_case_insensitive(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let record = store_record(t.account, "prod");
    let st = record.id;
    s.create_store(record, 10, &[]).await.unwrap();
    let specs = [
        ("OPENAI_KEY", "prod key"),
        ("openai-dev", "100% test"),
        ("stripe", "uses a_b naming"),
        ("wild", "axb 1000 tests"),
        ("plain", "Fifty PERCENT"),
        ("back", "C:\\path"),
    ];
    let mut batch = Vec::new();
    for (name, comment) in specs {
        let mut new = secret(t, st, name);
        new.record.comment = comment.to_owned();
        batch.push(new);
    }
    s.create_secrets(t.account, st, batch, 100, &[])
        .await
        .unwrap();

    let cases: &[(&str, &[&str])] = &[
        ("openai", &["OPENAI_KEY", "openai-dev"]),
        ("KEY", &["OPENAI_KEY"]),
        ("percent", &["plain"]),
        ("%", &["openai-dev"]),
        ("0%", &["openai-dev"]),
        ("_", &["OPENAI_KEY", "stripe"]),
        ("a_b", &["stripe"]),
        ("\\", &["back"]),
        ("test", &["openai-dev", "wild"]),
        ("nothing here", &[]),
    ];
    for (needle, expected) in cases {
        let mut query = secret_query(1, 50);
        query.order = SecretOrder::Name;
        query.search = Some((*needle).to_owned());
        let page = s.list_secrets(t.account, st, &query).await.unwrap();
        let mut names: Vec<&str> = page.items.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        let mut expected = expected.to_vec();
        expected.sort_unstable();
        assert_eq!(
            names, expected,
            "search {needle:?}: case-insensitive substring of name or comment, wildcards literal"
        );
        assert_eq!(
            page.total_count,
            expected.len() as u64,
            "total_count of search {needle:?}"
        );
    }

    let mut query = secret_query(1, 1);
    query.search = Some("OPENAI".into());
    let page = s.list_secrets(t.account, st, &query).await.unwrap();
    assert_eq!(
        (page.items.len(), page.total_count),
        (1, 2),
        "total_count counts every match, not the page"
    );
}

pub(super) async fn scopes_filter_requires_all(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "acme").await;
    let record = store_record(t.account, "prod");
    let st = record.id;
    s.create_store(record, 10, &[]).await.unwrap();
    let specs: [(&str, &[Scope]); 5] = [
        ("none", &[]),
        ("w", &[Scope::Workers]),
        ("g", &[Scope::AiGateway]),
        ("wg", &[Scope::Workers, Scope::AiGateway]),
        ("dw", &[Scope::Dex, Scope::Workers]),
    ];
    let mut batch = Vec::new();
    for (name, scopes) in specs {
        let mut new = secret(t, st, name);
        new.record.scopes = Scopes::new(scopes.iter().copied());
        batch.push(new);
    }
    s.create_secrets(t.account, st, batch, 100, &[])
        .await
        .unwrap();

    let cases: &[(&[Scope], &[&str])] = &[
        (&[], &["none", "w", "g", "wg", "dw"]),
        (&[Scope::Workers], &["w", "wg", "dw"]),
        (&[Scope::AiGateway], &["g", "wg"]),
        (&[Scope::Workers, Scope::AiGateway], &["wg"]),
        (&[Scope::Dex, Scope::AiGateway], &[]),
        (&[Scope::Websearch], &[]),
    ];
    for (filter, expected) in cases {
        let mut query = secret_query(1, 50);
        query.scopes = Scopes::new(filter.iter().copied());
        let page = s.list_secrets(t.account, st, &query).await.unwrap();
        let mut names: Vec<&str> = page.items.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        let mut expected = expected.to_vec();
        expected.sort_unstable();
        assert_eq!(
            names, expected,
            "scopes filter {filter:?} keeps secrets having all of them"
        );
        assert_eq!(page.total_count, expected.len() as u64);
    }

    let mut query = secret_query(1, 50);
    query.scopes = Scopes::new([Scope::Workers]);
    query.search = Some("W".into());
    let page = s.list_secrets(t.account, st, &query).await.unwrap();
    let mut names: Vec<&str> = page.items.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["dw", "w", "wg"], "search and scopes combine");
}
