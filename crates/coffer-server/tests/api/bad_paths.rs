//! Bad paths and queries: malformed ids in every position of every route, missing stores and
//! secrets, bad query parameters, unknown routes and wrong methods.

use axum::body::Body;
use axum::http::Method;
use coffer_api::ErrorCode;
use serde_json::json;

use crate::support::*;

fn bad_ids() -> Vec<String> {
    vec![
        "A".repeat(32),
        "0123456789ABCDEF0123456789abcdef".into(),
        "a".repeat(31),
        "a".repeat(33),
        "g".repeat(32),
        "not-an-id".into(),
        format!("{}%20", "a".repeat(31)),
        format!("{}-", "a".repeat(31)),
        "0x0123456789abcdef0123456789abcd".into(),
    ]
}

#[tokio::test]
async fn malformed_ids_in_every_path_position() {
    let fx = fixture().await;
    let h = &fx.h;
    let (a, s, x) = (h.account.as_str(), fx.store.as_str(), fx.secret.as_str());
    let before = h.snapshot().await;
    let mut checked = 0;
    for ep in all_endpoints() {
        for (placeholder, field) in [
            ("{a}", "account_id"),
            ("{s}", "store_id"),
            ("{x}", "secret_id"),
        ] {
            if !ep.has(placeholder) {
                continue;
            }
            for bad in bad_ids() {
                let (a2, s2, x2) = match placeholder {
                    "{a}" => (bad.as_str(), s, x),
                    "{s}" => (a, bad.as_str(), x),
                    _ => (a, s, bad.as_str()),
                };
                eprintln!("case: {} with {field} = {bad:?}", ep.name);
                let r = h.call(&ep, a2, s2, x2).await;
                let e = assert_err_at(&r, ErrorCode::InvalidId, field);
                assert!(
                    e["message"].as_str().unwrap().contains("32 lowercase hex"),
                    "{e}"
                );
                checked += 1;
            }
        }
    }
    // 12 account positions, 9 store positions, 4 secret positions.
    assert_eq!(checked, 25 * bad_ids().len());
    h.assert_unchanged(&before, "malformed ids").await;
}

#[tokio::test]
async fn ids_that_are_not_utf8_name_their_position() {
    let fx = fixture().await;
    let h = &fx.h;
    let (a, s, x) = (h.account.as_str(), fx.store.as_str(), fx.secret.as_str());
    let before = h.snapshot().await;
    let bad = format!("{}%FF", "a".repeat(30));
    for ep in all_endpoints() {
        for (placeholder, field) in [
            ("{a}", "account_id"),
            ("{s}", "store_id"),
            ("{x}", "secret_id"),
        ] {
            if !ep.has(placeholder) {
                continue;
            }
            let (a2, s2, x2) = match placeholder {
                "{a}" => (bad.as_str(), s, x),
                "{s}" => (a, bad.as_str(), x),
                _ => (a, s, bad.as_str()),
            };
            eprintln!("case: {} with {field} = {bad:?}", ep.name);
            let r = h.call(&ep, a2, s2, x2).await;
            assert_err(&r, ErrorCode::InvalidId, field);
        }
    }
    h.assert_unchanged(&before, "non-UTF-8 ids").await;
}

#[tokio::test]
async fn missing_store_on_every_store_route() {
    let fx = fixture().await;
    let h = &fx.h;
    let a = h.account.clone();
    let before = h.snapshot().await;
    let missing = random_id();
    for ep in all_endpoints().iter().filter(|e| e.has("{s}")) {
        for x in [fx.secret.clone(), random_id()] {
            eprintln!("case: {} in a missing store", ep.name);
            let r = h.call(ep, &a, &missing, &x).await;
            assert_err(&r, ErrorCode::StoreNotFound, "store");
        }
    }
    h.assert_unchanged(&before, "missing store").await;
}

#[tokio::test]
async fn missing_secret_on_every_secret_route() {
    let fx = fixture().await;
    let h = &fx.h;
    let a = h.account.clone();
    let before = h.snapshot().await;
    for ep in all_endpoints()
        .iter()
        .filter(|e| e.has("{x}") || e.name == "bulk delete")
    {
        eprintln!("case: {} of a missing secret", ep.name);
        let r = h.call(ep, &a, &fx.store, &random_id()).await;
        assert_err(&r, ErrorCode::SecretNotFound, "secret");
    }
    h.assert_unchanged(&before, "missing secret").await;
}

/// A secret is reachable only through its own store.
#[tokio::test]
async fn a_secret_is_not_reachable_through_another_store() {
    let fx = fixture().await;
    let h = &fx.h;
    let a = h.account.clone();
    let other = h.create_store("other").await;
    let before = h.snapshot().await;
    for ep in all_endpoints()
        .iter()
        .filter(|e| e.has("{x}") || e.name == "bulk delete")
    {
        eprintln!("case: {} through another store", ep.name);
        let r = h.call(ep, &a, &other, &fx.secret).await;
        assert_err(&r, ErrorCode::SecretNotFound, "secret");
    }
    h.assert_unchanged(&before, "cross-store access").await;
}

#[tokio::test]
async fn bad_query_parameters_on_lists_and_store_delete() {
    let fx = fixture().await;
    let h = &fx.h;
    let s = &fx.store;
    let before = h.snapshot().await;
    let common = [
        ("per_page=0", "per_page"),
        ("per_page=101", "per_page"),
        ("per_page=x", "per_page"),
        ("per_page=-1", "per_page"),
        ("per_page=1.5", "per_page"),
        ("per_page=", "per_page"),
        ("per_page=99999999999999999999", "per_page"),
        ("page=0", "page"),
        ("page=x", "page"),
        ("page=-1", "page"),
        ("page=1e3", "page"),
        ("order=bogus", "order"),
        ("order=id", "order"),
        ("order=NAME", "order"),
        ("direction=up", "direction"),
        ("direction=", "direction"),
        ("per_page=10&direction=sideways", "direction"),
    ];
    for (q, param) in common {
        for path in ["/stores".to_owned(), format!("/stores/{s}/secrets")] {
            eprintln!("case: {path}?{q}");
            let r = h.get(&format!("{path}?{q}")).await;
            let e = assert_err_at(&r, ErrorCode::InvalidQuery, param);
            assert!(e["message"].as_str().unwrap().starts_with(param), "{e}");
        }
    }
    // Secret-only orders are not store orders.
    for q in ["order=comment", "order=status"] {
        assert_err_at(
            &h.get(&format!("/stores?{q}")).await,
            ErrorCode::InvalidQuery,
            "order",
        );
        assert_ok_list(&h.get(&format!("/stores/{s}/secrets?{q}")).await);
    }
    let long = "a".repeat(257);
    let r = h.get(&format!("/stores/{s}/secrets?search={long}")).await;
    assert_err_at(&r, ErrorCode::InvalidQuery, "search");
    assert_ok_list(
        &h.get(&format!("/stores/{s}/secrets?search={}", "a".repeat(256)))
            .await,
    );

    for q in ["force=yes", "force=truee", "force=", "force=2"] {
        eprintln!("case: delete store ?{q}");
        let r = h.delete(&format!("/stores/{s}?{q}")).await;
        assert_err_at(&r, ErrorCode::InvalidQuery, "force");
    }
    // Unknown parameters are ignored, as Cloudflare does.
    assert_ok_list(&h.get("/stores?foo=bar").await);
    h.assert_unchanged(&before, "bad query parameters").await;
}

#[tokio::test]
async fn unknown_routes_are_404_in_the_envelope() {
    let fx = fixture().await;
    let h = &fx.h;
    let (a, s, x) = (&h.account, &fx.store, &fx.secret);
    // `/` is the dashboard's (it redirects there): tests/dashboard in coffer-dashboard.
    let routes = [
        "/nope".to_owned(),
        "/client/v4".to_owned(),
        format!("{V4}/{a}/nope"),
        format!("{V4}/{a}/secrets_store"),
        format!("{V4}/{a}/secrets_store/nope"),
        format!("{V4}/{a}/secrets_store/stores/{s}/nope"),
        format!("{V4}/{a}/secrets_store/stores/{s}/secrets/{x}/nope"),
        format!("{V4}/{a}/secrets_store/stores/{s}/secrets/{x}/duplicate/more"),
        format!("{V4}/{a}/workers/scripts"),
        format!("/client/v5/accounts/{a}/secrets_store/stores"),
    ];
    for uri in routes {
        for method in [Method::GET, Method::POST, Method::DELETE] {
            eprintln!("case: {method} {uri}");
            let r = h.raw_abs(method, &uri, None, Body::empty()).await;
            assert_err(&r, ErrorCode::RouteNotFound, "route");
        }
    }
}

#[tokio::test]
async fn wrong_methods_are_405_in_the_envelope() {
    let fx = fixture().await;
    let h = &fx.h;
    let (s, x) = (&fx.store, &fx.secret);
    let before = h.snapshot().await;
    let cases = [
        (Method::PUT, "/stores".to_owned()),
        (Method::PATCH, "/stores".to_owned()),
        (Method::DELETE, "/stores".to_owned()),
        (Method::POST, format!("/stores/{s}")),
        (Method::PUT, format!("/stores/{s}")),
        (Method::PATCH, format!("/stores/{s}")),
        (Method::PUT, format!("/stores/{s}/secrets")),
        (Method::PATCH, format!("/stores/{s}/secrets")),
        (Method::POST, format!("/stores/{s}/secrets/{x}")),
        (Method::PUT, format!("/stores/{s}/secrets/{x}")),
        (Method::GET, format!("/stores/{s}/secrets/{x}/duplicate")),
        (Method::DELETE, format!("/stores/{s}/secrets/{x}/duplicate")),
        (Method::POST, "/quota".to_owned()),
        (Method::DELETE, "/quota".to_owned()),
    ];
    for (method, path) in cases {
        eprintln!("case: {method} {path}");
        let r = h.raw(method, &path, Some("application/json"), "{}").await;
        assert_err(&r, ErrorCode::MethodNotAllowed, "method");
    }
    h.assert_unchanged(&before, "wrong methods").await;
    // The healthz probe is outside the API and needs no token.
    let r = h
        .send(
            axum::http::Request::get("/healthz")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200);
    // On PostgreSQL it covers the database (health.rs tells when it does not answer).
    let expected = match backend() {
        Backend::Sqlite => json!({ "status": "ok" }),
        Backend::Postgres => json!({ "status": "ok", "database": "ok" }),
    };
    assert_eq!(r.json(), expected);
}
