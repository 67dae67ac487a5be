//! The tokens page: the list, create (the value shown once), revoke, and who sees and may do
//! what.

use axum::http::{StatusCode, header};

use crate::support::Harness;

#[tokio::test]
async fn a_token_is_created_its_value_shown_once_and_revoked() {
    let h = Harness::new().await;
    let b = h.sign_in(&h.token).await;
    let page = h.get(&b, "/dashboard/tokens").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // The navigation offers the pages a super_admin may see.
    for link in [
        "/dashboard/tokens\"",
        "/dashboard/audit\"",
        "/dashboard/services\"",
        "/dashboard/quota\"",
    ] {
        assert!(page.body.contains(link), "{link}");
    }
    assert!(page.body.contains("Create token") && page.body.contains("this session"));
    for role in [
        "super_admin",
        "secrets_store_admin",
        "secrets_store_deployer",
        "secrets_store_reporter",
    ] {
        assert!(
            page.body.contains(&format!("<option value=\"{role}\"")),
            "{role}"
        );
    }
    let csrf = page.csrf();
    let name = "<img src=x onerror=alert(1)> & ci";
    let r = h
        .post(
            &b,
            "/dashboard/tokens",
            &[
                ("csrf", &csrf),
                ("name", name),
                ("role", "secrets_store_deployer"),
                ("expires", "2099-01-02T03:04"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    assert_eq!(
        r.headers.get(header::CONTENT_TYPE).unwrap(),
        "text/html; charset=utf-8"
    );
    let value = r.once_value().expect("the new token's value");
    assert!(h.token_works(&value).await, "the value shown is the token");
    // A copy button, hidden until the script (which needs a clipboard) shows it.
    assert!(
        r.body
            .contains("data-copy=\"once-value\" hidden>Copy</button>"),
        "a copy button"
    );
    assert!(r.body.contains("2099-01-02T03:04:00Z"), "{}", r.body);
    assert!(
        r.body
            .contains("&#60;img src=x onerror=alert(1)&#62; &#38; ci")
    );
    assert!(!r.body.contains("<img src=x"));
    // Never again: the list, and the list once more.
    let (id, _, status) = h
        .tokens()
        .await
        .into_iter()
        .find(|(_, n, _)| n == name)
        .expect("created");
    assert_eq!(status, "active");
    for _ in 0..2 {
        let list = h.get(&b, "/dashboard/tokens").await;
        assert!(!list.body.contains(&value));
        assert!(
            list.body
                .contains("&#60;img src=x onerror=alert(1)&#62; &#38; ci")
        );
        assert!(!list.body.contains("<img src=x"));
        assert!(list.body.contains(&id) && list.body.contains("secrets_store_deployer"));
    }

    // Revoke: the token stops working, its row says so and offers no revoke.
    let r = h
        .post(
            &b,
            &format!("/dashboard/tokens/{id}/revoke"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(!h.token_works(&value).await);
    let list = h.get(&b, "/dashboard/tokens").await;
    assert!(
        !list
            .body
            .contains(&format!("/dashboard/tokens/{id}/revoke"))
    );
    assert!(list.body.contains("status-revoked"));
    // Again: the API's answer beside the row.
    let r = h
        .post(
            &b,
            &format!("/dashboard/tokens/{id}/revoke"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("already revoked"), "{}", r.body);
}

#[tokio::test]
async fn bad_input_shows_the_apis_message_and_keeps_what_was_typed() {
    let h = Harness::new().await;
    let b = h.sign_in(&h.token).await;
    let csrf = h.get(&b, "/dashboard/tokens").await.csrf();
    let before = h.tokens().await.len();
    // (the form's fields, the status, the message beside a field)
    type Case<'a> = (&'a [(&'a str, &'a str)], StatusCode, &'a str);
    let cases: [Case; 4] = [
        (
            &[("name", "  "), ("role", "secrets_store_admin")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "/name: must not be empty",
        ),
        (
            &[("name", "kept-name"), ("role", "root")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "role: unknown role (known roles: super_admin",
        ),
        (
            &[
                ("name", "kept-name"),
                ("role", "secrets_store_admin"),
                ("expires", "soon"),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires: must be an RFC 3339 date-time",
        ),
        (
            &[
                ("name", "kept-name"),
                ("role", "secrets_store_admin"),
                ("expires", "2001-01-01T00:00"),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
            "/expires_on: must be in the future",
        ),
    ];
    for (pairs, status, message) in cases {
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(pairs);
        let r = h.post(&b, "/dashboard/tokens", &all).await;
        assert_eq!(r.status, status, "{pairs:?}: {}", r.body);
        assert!(r.body.contains(message), "{message}: {}", r.body);
        assert!(r.once_value().is_none());
        if pairs[0].1 == "kept-name" {
            assert!(r.body.contains("value=\"kept-name\""), "the name is kept");
        }
    }
    assert_eq!(h.tokens().await.len(), before, "nothing created");
    // The typed role stays chosen.
    let r = h
        .post(
            &b,
            "/dashboard/tokens",
            &[
                ("csrf", &csrf),
                ("name", ""),
                ("role", "secrets_store_admin"),
            ],
        )
        .await;
    assert!(
        r.body
            .contains("<option value=\"secrets_store_admin\" selected>")
    );
}

#[tokio::test]
async fn only_a_role_that_manages_tokens_sees_or_changes_them() {
    let h = Harness::new().await;
    let (admin_id, admin) = h.token_with_role("secrets_store_admin").await;
    let (_, reporter) = h.token_with_role("secrets_store_reporter").await;
    for token in [&admin, &reporter] {
        let b = h.sign_in(token).await;
        let stores = h.get(&b, "/dashboard/stores").await;
        assert!(!stores.body.contains("/dashboard/tokens\""), "no nav link");
        assert!(!stores.body.contains("/dashboard/audit\""), "no nav link");
        assert!(stores.body.contains("/dashboard/services\""));
        let r = h.get(&b, "/dashboard/tokens").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.body.contains("account:manage"), "{}", r.body);
        assert!(!r.body.contains("Create token"));
        // Forged writes from its own session, with its own CSRF token: refused by core.
        let csrf = stores.csrf();
        let before = h.tokens().await;
        let r = h
            .post(
                &b,
                "/dashboard/tokens",
                &[("csrf", &csrf), ("name", "mine"), ("role", "super_admin")],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.once_value().is_none());
        let r = h
            .post(
                &b,
                &format!("/dashboard/tokens/{admin_id}/revoke"),
                &[("csrf", &csrf)],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(h.tokens().await, before, "nothing created or revoked");
    }
    assert!(h.token_works(&admin).await);
}

#[tokio::test]
async fn token_writes_need_the_csrf_token() {
    let h = Harness::new().await;
    let (id, value) = h.token_with_role("secrets_store_reporter").await;
    let b = h.sign_in(&h.token).await;
    let before = h.tokens().await.len();
    let r = h
        .post(
            &b,
            "/dashboard/tokens",
            &[("name", "forged"), ("role", "super_admin")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("Request refused"));
    let r = h
        .post(
            &b,
            &format!("/dashboard/tokens/{id}/revoke"),
            &[("csrf", &"0".repeat(64))],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(h.tokens().await.len(), before);
    assert!(h.token_works(&value).await);
}

#[tokio::test]
async fn revoking_the_sessions_own_token_signs_it_out() {
    let h = Harness::new().await;
    let (id, admin) = h.token_with_role("super_admin").await;
    let b = h.sign_in(&admin).await;
    let page = h.get(&b, "/dashboard/tokens").await;
    assert!(
        page.body.contains("this session's included"),
        "{}",
        page.body
    );
    let r = h
        .post(
            &b,
            &format!("/dashboard/tokens/{id}/revoke"),
            &[("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = h.get(&b, r.location()).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        r.location().starts_with("/dashboard/sign-in"),
        "{}",
        r.location()
    );
}

#[tokio::test]
async fn the_list_is_paged() {
    let h = Harness::new().await;
    for i in 0..26 {
        h.named_token(&format!("bulk-{i:02}"), "secrets_store_reporter")
            .await;
    }
    let b = h.sign_in(&h.token).await;
    let first = h.get(&b, "/dashboard/tokens").await;
    assert!(first.body.contains("27 tokens") && first.body.contains("Page 1 of 2"));
    // Newest first: the last made is on the first page, the operator's on the second.
    assert!(first.body.contains("<td>bulk-25<br>"), "{}", first.body);
    let second = h.get(&b, "/dashboard/tokens?page=2").await;
    assert!(second.body.contains("this session"), "{}", second.body);
    assert!(!second.body.contains("bulk-25"));
}

/// A form that mints a token carries a single-use nonce: sent again (a reload of the answer,
/// the back button, a second click) it mints nothing and says so; a fresh page's form works.
#[tokio::test]
async fn a_minting_form_sent_twice_mints_once() {
    let h = Harness::new().await;
    let b = h.sign_in(&h.token).await;
    let page = h.get(&b, "/dashboard/tokens").await;
    let (csrf, once) = (page.csrf(), page.once());
    let form = [
        ("csrf", csrf.as_str()),
        ("once", once.as_str()),
        ("name", "ci"),
        ("role", "secrets_store_reporter"),
    ];
    let before = h.tokens().await.len();
    let r = h.post(&b, "/dashboard/tokens", &form).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.once_value().is_some());
    let again = h.post(&b, "/dashboard/tokens", &form).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert!(again.body.contains("sent already"), "{}", again.body);
    assert!(again.once_value().is_none());
    assert_eq!(h.tokens().await.len(), before + 1, "one token, not two");
    // A nonce of another session, or made up, is no better.
    let other = h.sign_in(&h.token).await;
    let theirs = h.get(&other, "/dashboard/tokens").await.once();
    for nonce in [theirs.as_str(), "00112233445566778899aabbccddeeff", "x"] {
        let forged = [
            ("csrf", csrf.as_str()),
            ("once", nonce),
            ("name", "ci"),
            ("role", "secrets_store_reporter"),
        ];
        let r = h.post(&b, "/dashboard/tokens", &forged).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{nonce}");
    }
    assert_eq!(h.tokens().await.len(), before + 1);
    // The same form on a page loaded afresh mints again.
    let fresh = h.get(&b, "/dashboard/tokens").await.once();
    let form = [
        ("csrf", csrf.as_str()),
        ("once", fresh.as_str()),
        ("name", "ci"),
        ("role", "secrets_store_reporter"),
    ];
    assert_eq!(
        h.post(&b, "/dashboard/tokens", &form).await.status,
        StatusCode::OK
    );
    assert_eq!(h.tokens().await.len(), before + 2);
}
