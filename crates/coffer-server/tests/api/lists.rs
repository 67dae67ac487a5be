//! Listing: pagination, ordering, search and the scopes filter.

use std::collections::HashSet;

use axum::http::Method;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn stores_paginate_with_counts() {
    let h = Harness::new().await;
    let mut created = Vec::new();
    for name in ["s1", "s2", "s3", "s4", "s5"] {
        created.push(h.create_store(name).await);
    }
    let mut seen = Vec::new();
    for (page, expected_count) in [(1, 2), (2, 2), (3, 1), (4, 0)] {
        let r = h.get(&format!("/stores?per_page=2&page={page}")).await;
        let (items, info) = assert_ok_list(&r);
        assert_eq!(info, (page, 2, expected_count, 5), "page {page}");
        seen.extend(items.iter().map(|s| s["id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(
        seen, created,
        "pages cover every store once, in creation order"
    );
}

#[tokio::test]
async fn stores_order_by_name_created_modified_both_directions() {
    let h = Harness::new().await;
    // Creation order differs from name order.
    for name in ["charlie", "alpha", "delta", "bravo"] {
        h.create_store(name).await;
    }
    let list = |q: &'static str| {
        let h = &h;
        async move { names(&assert_ok_list(&h.get(&format!("/stores?{q}")).await).0) }
    };
    let by_created = ["charlie", "alpha", "delta", "bravo"];
    let by_name = ["alpha", "bravo", "charlie", "delta"];
    let rev = |a: &[&str]| a.iter().rev().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(list("").await, by_created, "default: created asc");
    assert_eq!(list("order=name").await, by_name);
    assert_eq!(list("order=name&direction=asc").await, by_name);
    assert_eq!(list("order=name&direction=desc").await, rev(&by_name));
    assert_eq!(list("order=created&direction=asc").await, by_created);
    assert_eq!(list("order=created&direction=desc").await, rev(&by_created));
    assert_eq!(list("order=modified").await, by_created);
    assert_eq!(
        list("order=modified&direction=desc").await,
        rev(&by_created)
    );
    assert_eq!(list("direction=desc").await, rev(&by_created));
    // Ordering composes with paging.
    assert_eq!(
        list("order=name&direction=desc&per_page=2&page=2").await,
        ["bravo", "alpha"]
    );
}

#[tokio::test]
async fn secrets_per_page_default_20_max_100_and_pages_partition() {
    let h = Harness::new().await;
    let store = h.create_store("big").await;
    let items: Vec<Value> = (0..105)
        .map(|i| secret_item(&format!("S{i:03}"), "v", &["workers"]))
        .collect();
    let created = h.create_secrets(&store, &items).await;
    assert_eq!(created.len(), 105);
    let all: HashSet<String> = created
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();

    let (page, info) = assert_ok_list(&h.get(&format!("/stores/{store}/secrets")).await);
    assert_eq!(info, (1, 20, 20, 105), "default per_page is 20");
    assert_eq!(page.len(), 20);

    let (_, info) = assert_ok_list(
        &h.get(&format!("/stores/{store}/secrets?per_page=100"))
            .await,
    );
    assert_eq!(info, (1, 100, 100, 105), "per_page 100 is allowed");
    let (_, info) = assert_ok_list(
        &h.get(&format!("/stores/{store}/secrets?per_page=100&page=2"))
            .await,
    );
    assert_eq!(info, (2, 100, 5, 105));
    let (items, info) = assert_ok_list(
        &h.get(&format!("/stores/{store}/secrets?per_page=100&page=3"))
            .await,
    );
    assert_eq!(
        info,
        (3, 100, 0, 105),
        "past the end: empty page, same total"
    );
    assert!(items.is_empty());

    // Every default-size page, in each order, partitions the set.
    for order in ["name", "created", "modified", "comment", "status"] {
        for direction in ["asc", "desc"] {
            let mut seen = HashSet::new();
            for page in 1..=6u64 {
                let r = h
                    .get(&format!(
                        "/stores/{store}/secrets?page={page}&order={order}&direction={direction}"
                    ))
                    .await;
                let (items, info) = assert_ok_list(&r);
                assert_eq!(info.3, 105);
                assert_eq!(info.2, if page == 6 { 5 } else { 20 });
                for s in items {
                    assert!(
                        seen.insert(s["id"].as_str().unwrap().to_owned()),
                        "{order} {direction}: a secret appears on two pages"
                    );
                }
            }
            assert_eq!(seen, all, "{order} {direction}");
        }
    }
}

#[tokio::test]
async fn secrets_order_by_each_field_both_directions() {
    let h = Harness::new().await;
    let store = h.create_store("prod").await;
    // Created in this order, with comments in yet another order.
    let mut ids = std::collections::HashMap::new();
    for (name, comment) in [
        ("bravo", "3"),
        ("delta", "1"),
        ("alpha", "4"),
        ("charlie", "2"),
    ] {
        let s = h
            .create_secrets(
                &store,
                &[json!({ "name": name, "value": "v", "scopes": ["workers"], "comment": comment })],
            )
            .await
            .remove(0);
        ids.insert(name, s["id"].as_str().unwrap().to_owned());
    }
    // Touch bravo last, so it is the most recently modified.
    let r = h
        .patch(
            &format!("/stores/{store}/secrets/{}", ids["bravo"]),
            &json!({ "value": "w" }),
        )
        .await;
    assert_ok(&r);

    let rev = |a: &[&str]| a.iter().rev().map(|s| s.to_string()).collect::<Vec<_>>();
    let by_created = ["bravo", "delta", "alpha", "charlie"];
    let by_name = ["alpha", "bravo", "charlie", "delta"];
    let by_comment = ["delta", "charlie", "bravo", "alpha"];
    let by_modified = ["delta", "alpha", "charlie", "bravo"];
    let cases: [(&str, &[&str]); 4] = [
        ("created", &by_created),
        ("name", &by_name),
        ("comment", &by_comment),
        ("modified", &by_modified),
    ];
    assert_eq!(h.secret_names(&store, "").await, by_created, "default");
    for (order, expected) in cases {
        assert_eq!(
            h.secret_names(&store, &format!("order={order}")).await,
            expected,
            "{order}"
        );
        assert_eq!(
            h.secret_names(&store, &format!("order={order}&direction=asc"))
                .await,
            expected,
            "{order} asc"
        );
        assert_eq!(
            h.secret_names(&store, &format!("order={order}&direction=desc"))
                .await,
            rev(expected),
            "{order} desc"
        );
    }
    // Every secret is active, so status ordering is accepted and returns them all.
    for direction in ["asc", "desc"] {
        let mut got = h
            .secret_names(&store, &format!("order=status&direction={direction}"))
            .await;
        got.sort();
        assert_eq!(got, by_name, "status {direction}");
    }
}

#[tokio::test]
async fn search_is_a_case_insensitive_substring_of_name_or_comment() {
    let h = Harness::new().await;
    let store = h.create_store("prod").await;
    let items = [
        json!({ "name": "OPENAI_KEY", "value": "v", "scopes": ["workers"], "comment": "" }),
        json!({ "name": "db-password", "value": "v", "scopes": ["workers"], "comment": "For the OpenAI proxy" }),
        json!({ "name": "stripe", "value": "v", "scopes": ["workers"], "comment": "billing 100%" }),
        json!({ "name": "KEYRING", "value": "v", "scopes": ["workers"], "comment": "x" }),
        json!({ "name": "win", "value": "v", "scopes": ["workers"], "comment": "C:\\Temp" }),
    ];
    h.create_secrets(&store, &items).await;
    let search = |q: &'static str| {
        let h = &h;
        let store = &store;
        async move {
            let r = h.get(&format!("/stores/{store}/secrets?search={q}")).await;
            let (items, info) = assert_ok_list(&r);
            assert_eq!(info.3, items.len() as u64, "total_count counts matches");
            let mut n = names(&items);
            n.sort();
            n
        }
    };
    assert_eq!(search("openai").await, ["OPENAI_KEY", "db-password"]);
    assert_eq!(search("OpEnAi").await, ["OPENAI_KEY", "db-password"]);
    assert_eq!(search("key").await, ["KEYRING", "OPENAI_KEY"]);
    assert_eq!(search("PASS").await, ["db-password"]);
    assert_eq!(search("billing").await, ["stripe"], "comment only");
    assert!(search("nothing-matches").await.is_empty());
    // `_` and `%` are literal, not wildcards.
    assert_eq!(search("_").await, ["OPENAI_KEY"]);
    assert_eq!(search("%25").await, ["stripe"]);
    assert_eq!(search("I_K").await, ["OPENAI_KEY"]);
    assert!(
        search("d_-").await.is_empty(),
        "`_` must not match any character"
    );
    // So is `\\`, whatever escape character the backend uses.
    assert_eq!(search("%5C").await, ["win"]);
    assert_eq!(search(":%5CT").await, ["win"]);
    assert!(search("%5C%25").await.is_empty());
    assert!(search("%5C_").await.is_empty());
    // An empty search is no filter.
    assert_eq!(search("").await.len(), 5);
    // Search composes with paging: total_count is the number of matches.
    let r = h
        .get(&format!("/stores/{store}/secrets?search=openai&per_page=1"))
        .await;
    let (_, info) = assert_ok_list(&r);
    assert_eq!(info, (1, 1, 1, 2));
}

#[tokio::test]
async fn scopes_filter_in_every_form() {
    let h = Harness::new().await;
    let store = h.create_store("prod").await;
    h.create_secrets(
        &store,
        &[
            secret_item("w", "v", &["workers"]),
            secret_item("g", "v", &["ai_gateway"]),
            secret_item("wg", "v", &["workers", "ai_gateway"]),
            secret_item("d", "v", &["dex"]),
        ],
    )
    .await;
    let filter = |q: &'static str| {
        let h = &h;
        let store = &store;
        async move {
            let r = h.get(&format!("/stores/{store}/secrets?{q}")).await;
            let (items, info) = assert_ok_list(&r);
            assert_eq!(info.3, items.len() as u64, "{q}: total_count");
            let mut n = names(&items);
            n.sort();
            n
        }
    };
    assert_eq!(filter("scopes=workers").await, ["w", "wg"]);
    assert_eq!(filter("scopes=ai_gateway").await, ["g", "wg"]);
    assert_eq!(filter("scopes=dex").await, ["d"]);
    assert!(filter("scopes=access").await.is_empty());
    for q in [
        "scopes=workers,ai_gateway",
        "scopes=workers&scopes=ai_gateway",
        "scopes%5B%5D=workers&scopes%5B%5D=ai_gateway",
        "scopes=ai_gateway,%20workers",
    ] {
        assert_eq!(filter(q).await, ["wg"], "{q}: has every listed scope");
    }
    // Composes with search.
    assert_eq!(filter("scopes=workers&search=g").await, ["wg"]);
    // No filter: everything.
    assert_eq!(filter("").await.len(), 4);
}

#[tokio::test]
async fn lists_reflect_deletes_and_updates() {
    let h = Harness::new().await;
    let store = h.create_store("prod").await;
    let a = h.create_secret(&store, "a", "1").await;
    h.create_secret(&store, "b", "2").await;
    let r = h
        .json(
            Method::PATCH,
            &format!("/stores/{store}/secrets/{}", a["id"].as_str().unwrap()),
            &json!({ "comment": "edited" }),
        )
        .await;
    let patched = assert_ok(&r);
    let (items, _) = assert_ok_list(&h.get(&format!("/stores/{store}/secrets")).await);
    assert_eq!(items[0], patched, "the list shows the update");
    h.delete(&format!(
        "/stores/{store}/secrets/{}",
        a["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(h.secret_names(&store, "").await, ["b"]);
}
