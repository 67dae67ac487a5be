//! Page security: the headers of every response, CSRF, escaping, what a reporter sees and may
//! do, error pages that say nothing more.

use axum::http::{Method, StatusCode, header};

use crate::support::{Harness, Resp};

fn assert_secure_headers(r: &Resp, what: &str) {
    let h = |name: header::HeaderName| {
        r.headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {name}"))
            .to_owned()
    };
    assert_eq!(
        h(header::CONTENT_SECURITY_POLICY),
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        "{what}"
    );
    assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{what}");
    assert_eq!(h(header::REFERRER_POLICY), "no-referrer", "{what}");
    assert_eq!(h(header::X_FRAME_OPTIONS), "DENY", "{what}");
    assert_eq!(h(header::CACHE_CONTROL), "no-store", "{what}");
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let h = Harness::new().await;
    let anon = Default::default();
    let b = h.sign_in(&h.token).await;
    let store = h.create_store("headers").await;
    let csrf = h.get(&b, "/dashboard/stores").await.csrf();
    let responses = [
        ("sign-in page", h.get(&anon, "/dashboard/sign-in").await),
        ("redirect", h.get(&anon, "/dashboard/stores").await),
        ("stores", h.get(&b, "/dashboard/stores").await),
        (
            "secrets",
            h.get(&b, &format!("/dashboard/stores/{store}")).await,
        ),
        ("css", h.get(&anon, "/dashboard/assets/dashboard.css").await),
        ("js", h.get(&anon, "/dashboard/assets/dashboard.js").await),
        ("404", h.get(&b, "/dashboard/nope").await),
        ("bad store id", h.get(&b, "/dashboard/stores/zz").await),
        (
            "forged",
            h.post(&b, "/dashboard/stores", &[("name", "x")]).await,
        ),
        (
            "invalid",
            h.post(&b, "/dashboard/stores", &[("csrf", &csrf), ("name", "a b")])
                .await,
        ),
        (
            "created",
            h.post(&b, "/dashboard/stores", &[("csrf", &csrf), ("name", "ok")])
                .await,
        ),
        ("tokens", h.get(&b, "/dashboard/tokens").await),
        (
            "token created",
            h.post(
                &b,
                "/dashboard/tokens",
                &[
                    ("csrf", &csrf),
                    ("name", "t"),
                    ("role", "secrets_store_reporter"),
                ],
            )
            .await,
        ),
        ("services", h.get(&b, "/dashboard/services").await),
        ("audit log", h.get(&b, "/dashboard/audit").await),
        ("verified", h.get(&b, "/dashboard/audit/verify").await),
        ("quota", h.get(&b, "/dashboard/quota").await),
    ];
    for (what, r) in &responses {
        assert_secure_headers(r, what);
    }
    let css = &responses[4].1;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(
        css.headers.get(header::CONTENT_TYPE).unwrap(),
        "text/css; charset=utf-8"
    );
    // No inline script or style anywhere (the CSP would block it).
    for (what, r) in &responses {
        assert!(
            !r.body.contains("<script>") && !r.body.contains("style="),
            "{what}"
        );
        assert!(
            !r.body.contains("onclick") && !r.body.contains("javascript:"),
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused() {
    let h = Harness::new().await;
    let b = h.sign_in(&h.token).await;
    let csrf = h.get(&b, "/dashboard/stores").await.csrf();
    assert_eq!(csrf.len(), 64);
    let wrong = "0".repeat(64);
    for pairs in [
        vec![("name", "forged")],
        vec![("name", "forged"), ("csrf", wrong.as_str())],
        vec![("name", "forged"), ("csrf", "")],
    ] {
        let r = h.post(&b, "/dashboard/stores", &pairs).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{pairs:?}");
        assert!(r.body.contains("Request refused"));
    }
    // Another site's form, even with the right token, is refused by its Origin.
    let r = h
        .send(
            b.request(Method::POST, "/dashboard/stores")
                .header(header::HOST, "127.0.0.1:8080")
                .header(header::ORIGIN, "https://evil.test")
                .body(crate::support::form(&[("csrf", &csrf), ("name", "forged")]).into())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mut cross = b
        .request(Method::POST, "/dashboard/stores")
        .header(header::ORIGIN, "null")
        .body(crate::support::form(&[("csrf", &csrf), ("name", "forged")]).into())
        .unwrap();
    cross.headers_mut().insert(
        "sec-fetch-site",
        header::HeaderValue::from_static("cross-site"),
    );
    let r = h.send(cross).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A sign-in no browser vouches for (neither Sec-Fetch-Site nor a real Origin) is refused:
    // another site cannot sign this browser into its own session.
    for origin in [None, Some("null")] {
        let mut req = axum::http::Request::post("/dashboard/sign-in");
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        let r = h
            .send(
                req.body(crate::support::form(&[("token", &h.token)]).into())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{origin:?}");
        assert!(r.set_cookie().is_none());
    }
    let r = h
        .send(
            axum::http::Request::post("/dashboard/sign-in")
                .header(header::HOST, "127.0.0.1:8080")
                .header(header::ORIGIN, "http://127.0.0.1:8080")
                .body(crate::support::form(&[("token", &h.token)]).into())
                .unwrap(),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "a real Origin of this host vouches"
    );
    assert!(h.store_names().await.is_empty(), "nothing was created");
    // Another session's token is not this one's.
    let other = h.sign_in(&h.token).await;
    let r = h
        .post(
            &other,
            "/dashboard/stores",
            &[("csrf", &csrf), ("name", "x")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = h
        .post(
            &b,
            "/dashboard/stores",
            &[("csrf", &csrf), ("name", "mine")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(h.store_names().await, ["mine"]);
}

#[tokio::test]
async fn tenant_strings_are_escaped() {
    let h = Harness::new().await;
    let b = h.sign_in(&h.token).await;
    let csrf = h.get(&b, "/dashboard/stores").await.csrf();
    // A name names do not allow is kept in the form, escaped.
    let r = h
        .post(
            &b,
            "/dashboard/stores",
            &[("csrf", &csrf), ("name", "<script>alert(1)</script>")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
            || r.body.contains("&lt;script&gt;"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("<script>alert"));
    assert!(
        r.body
            .contains("may only contain letters, digits, underscores and dashes")
    );
    // Comments allow markup-like text: rendered as text.
    let store = h.create_store("xss").await;
    let evil = "<img src=x onerror=alert(1)>\"'&";
    let r = h
        .post(
            &b,
            &format!("/dashboard/stores/{store}/secrets"),
            &[
                ("csrf", &csrf),
                ("name-0", "S1"),
                ("value-0", "v"),
                ("scopes-0", "workers"),
                ("comment-0", evil),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = h
        .get(&b, &format!("/dashboard/stores/{store}?search=%3Cimg"))
        .await;
    assert!(
        page.body.contains("S1"),
        "the search finds it: {}",
        page.body
    );
    assert!(!page.body.contains("<img"), "{}", page.body);
    assert!(!page.body.contains("\"'&"));
}

/// Every form the dashboard takes, as the operator (whom every action is open to): without the
/// session's CSRF token each is refused before anything is looked at, even with real ids, and
/// nothing changes.
#[tokio::test]
async fn every_form_route_refuses_a_post_without_the_csrf_token() {
    let h = Harness::new().await;
    let store = h.create_store("kept").await;
    let b = h.sign_in(&h.token).await;
    let head = h.coffer.storage().change_head().await.unwrap();
    let id = "0".repeat(32);
    let account = &h.account;
    let routes = [
        "/dashboard/stores".to_owned(),
        format!("/dashboard/stores/{store}/delete"),
        format!("/dashboard/stores/{store}/secrets"),
        format!("/dashboard/stores/{store}/secrets/{id}"),
        format!("/dashboard/stores/{store}/secrets/{id}/duplicate"),
        format!("/dashboard/stores/{store}/secrets/{id}/delete"),
        "/dashboard/accounts".to_owned(),
        format!("/dashboard/accounts/{account}/quota"),
        format!("/dashboard/accounts/{account}/first-token"),
        format!("/dashboard/accounts/{account}/delete"),
        "/dashboard/edges".to_owned(),
        format!("/dashboard/edges/{id}/revoke"),
        "/dashboard/keys/rotate".to_owned(),
        "/dashboard/tokens".to_owned(),
        format!("/dashboard/tokens/{id}/revoke"),
        format!("/dashboard/services/{id}/tokens"),
        format!("/dashboard/services/{id}/tokens/{id}/revoke"),
    ];
    for path in &routes {
        let r = h
            .post(&b, path, &[("name", "forged"), ("confirm", "kept")])
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
        assert!(r.body.contains("Request refused"), "{path}: {}", r.body);
    }
    assert_eq!(
        h.coffer.storage().change_head().await.unwrap(),
        head,
        "a refused form changed nothing"
    );
}

#[tokio::test]
async fn a_reporter_sees_no_write_controls_and_its_forged_posts_are_refused() {
    let h = Harness::new().await;
    let store = h.create_store("kept").await;
    let (_, reporter) = h.token_with_role("secrets_store_reporter").await;
    let b = h.sign_in(&reporter).await;
    let stores = h.get(&b, "/dashboard/stores").await;
    assert_eq!(stores.status, StatusCode::OK);
    assert!(stores.body.contains("secrets_store_reporter"));
    assert!(stores.body.contains("kept"));
    for control in ["Create store", "Delete store", "/delete"] {
        assert!(!stores.body.contains(control), "{control}");
    }
    let secrets = h.get(&b, &format!("/dashboard/stores/{store}")).await;
    assert_eq!(secrets.status, StatusCode::OK);
    for control in ["Add secrets", "secret-value", "Delete secret"] {
        assert!(!secrets.body.contains(control), "{control}");
    }
    // Its own session's CSRF token (the sign-out form's) does not make it an editor.
    let csrf = stores.csrf();
    let r = h
        .post(
            &b,
            "/dashboard/stores",
            &[("csrf", &csrf), ("name", "mine")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("secrets_store:edit"));
    let r = h
        .post(
            &b,
            &format!("/dashboard/stores/{store}/delete"),
            &[("csrf", &csrf), ("confirm", "kept"), ("force", "true")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("secrets_store:edit"));
    let r = h
        .post(
            &b,
            &format!("/dashboard/stores/{store}/secrets"),
            &[
                ("csrf", &csrf),
                ("name-0", "X"),
                ("value-0", "v"),
                ("scopes-0", "workers"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("secrets_store:edit"));
    assert_eq!(h.store_names().await, ["kept"]);
    assert!(h.secrets(&store).await.is_empty());
}

#[tokio::test]
async fn error_pages_say_what_happened_and_nothing_more() {
    let h = Harness::new().await;
    let b = h.sign_in(&h.token).await;
    let r = h.get(&b, "/dashboard/no/such/page").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("Page not found"));
    assert!(
        r.headers
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let missing = "0".repeat(32);
    let r = h.get(&b, &format!("/dashboard/stores/{missing}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("store not found"));
    let r = h.get(&b, "/dashboard/stores/..%2F..%2Fetc").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
