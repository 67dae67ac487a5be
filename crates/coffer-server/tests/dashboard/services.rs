//! The services pages (bindings, tokens, rotate and revoke) and the quota page.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

use crate::support::Harness;

/// A store `app` with a secret `DB`, and a service `web` binding it (`DB_URL`) and the whole
/// store (`ALL`): (service id, its first token).
async fn deployed(h: &Harness) -> (String, String) {
    let store = h.create_store("app").await;
    let (status, v) = h
        .api(
            Method::POST,
            &format!(
                "/client/v4/accounts/{}/secrets_store/stores/{store}/secrets",
                h.account
            ),
            &h.token,
            Some(json!([{ "name": "DB", "value": "db-value", "scopes": ["workers"] }])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = h
        .api(
            Method::POST,
            &format!("/client/v4/accounts/{}/secrets_store/services", h.account),
            &h.token,
            Some(json!({
                "name": "web",
                "secrets_store_secrets": [{ "binding": "DB_URL", "store_id": store, "secret_name": "DB" }],
                "secrets_store_stores": [{ "binding": "ALL", "store_id": store }],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    (
        v["result"]["id"].as_str().unwrap().to_owned(),
        v["result"]["service_token"].as_str().unwrap().to_owned(),
    )
}

/// A runtime read of `DB_URL` with `token`: its status.
async fn read(h: &Harness, token: &str) -> StatusCode {
    h.send(
        Request::get("/runtime/v1/bindings/DB_URL")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .status
}

/// The service's tokens through the API: (id, revoked).
async fn service_tokens(h: &Harness, service: &str) -> Vec<(String, bool)> {
    let (_, v) = h
        .api(
            Method::GET,
            &format!(
                "/client/v4/accounts/{}/secrets_store/services/{service}/tokens",
                h.account
            ),
            &h.token,
            None,
        )
        .await;
    v["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                !t["revoked_on"].is_null(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_service_shows_its_bindings_and_tokens_and_rotates_with_the_value_shown_once() {
    let h = Harness::new().await;
    let (service, first) = deployed(&h).await;
    assert_eq!(read(&h, &first).await, StatusCode::OK);
    let b = h.sign_in(&h.token).await;
    let list = h.get(&b, "/dashboard/services").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("1 service") && list.body.contains(">web<"));
    assert!(
        list.body
            .contains(&format!("/dashboard/services/{service}"))
    );
    let path = format!("/dashboard/services/{service}");
    let page = h.get(&b, &path).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for text in [
        "DB_URL",
        ">app</a>",
        ">DB<",
        "ALL",
        "every secret of the store",
        "workers",
    ] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    assert!(page.body.contains("Rotate token") && page.body.contains("Revoke…"));
    let tokens = service_tokens(&h, &service).await;
    assert_eq!(tokens.len(), 1);
    assert!(page.body.contains(&tokens[0].0));

    // Rotate: the new value on the answer page only; the old token revoked with it.
    let csrf = page.csrf();
    let r = h
        .post(&b, &format!("{path}/tokens"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    let second = r.once_value().expect("the new value");
    assert!(second.starts_with("coffersvc_"), "a service token");
    assert!(r.body.contains("data-copy=\"once-value\""));
    assert!(r.body.contains("1 other token"), "{}", r.body);
    assert_eq!(read(&h, &second).await, StatusCode::OK);
    assert_ne!(
        read(&h, &first).await,
        StatusCode::OK,
        "the old one revoked"
    );
    for _ in 0..2 {
        let again = h.get(&b, &path).await;
        assert!(!again.body.contains(&second) && !again.body.contains(&first));
        assert!(again.body.contains("status-revoked"));
    }

    // Keeping the others: both work.
    let r = h
        .post(
            &b,
            &format!("{path}/tokens"),
            &[("csrf", &csrf), ("keep", "true")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let third = r.once_value().unwrap();
    assert!(r.body.contains("no other token"));
    assert_eq!(read(&h, &second).await, StatusCode::OK);
    assert_eq!(read(&h, &third).await, StatusCode::OK);

    // Revoke one: it stops working; again is the API's refusal beside its row.
    let active: Vec<String> = service_tokens(&h, &service)
        .await
        .into_iter()
        .filter(|(_, revoked)| !revoked)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(active.len(), 2);
    let revoke = format!("{path}/tokens/{}/revoke", active[0]);
    let r = h.post(&b, &revoke, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), path);
    let still: Vec<_> = service_tokens(&h, &service)
        .await
        .into_iter()
        .filter(|(_, revoked)| !revoked)
        .collect();
    assert_eq!(still.len(), 1);
    assert_eq!(still[0].0, active[1]);
    let r = h.post(&b, &revoke, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("already revoked"), "{}", r.body);
    // Not a token of this service: said in the banner.
    let r = h
        .post(
            &b,
            &format!("{path}/tokens/{}/revoke", "ab".repeat(16)),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("error banner"), "{}", r.body);
    // Ids that are not ids, and a service that is not there.
    assert_eq!(
        h.get(&b, "/dashboard/services/zz").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.get(&b, &format!("/dashboard/services/{}", "cd".repeat(16)))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn only_a_role_that_binds_rotates_or_revokes() {
    let h = Harness::new().await;
    let (service, first) = deployed(&h).await;
    let path = format!("/dashboard/services/{service}");
    let (_, deployer) = h.token_with_role("secrets_store_deployer").await;
    let b = h.sign_in(&deployer).await;
    let page = h.get(&b, &path).await;
    assert!(page.body.contains("Rotate token") && page.body.contains("Revoke…"));
    for role in ["secrets_store_reporter", "secrets_store_admin"] {
        let (_, token) = h.token_with_role(role).await;
        let b = h.sign_in(&token).await;
        let page = h.get(&b, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{role} reads services");
        assert!(page.body.contains("DB_URL"));
        assert!(!page.body.contains("Rotate token") && !page.body.contains("Revoke…"));
        let csrf = page.csrf();
        let before = service_tokens(&h, &service).await;
        let r = h
            .post(&b, &format!("{path}/tokens"), &[("csrf", &csrf)])
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{role}");
        assert!(r.body.contains("secrets_store:bind"), "{}", r.body);
        assert!(r.once_value().is_none());
        let r = h
            .post(
                &b,
                &format!("{path}/tokens/{}/revoke", before[0].0),
                &[("csrf", &csrf)],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{role}");
        assert_eq!(service_tokens(&h, &service).await, before, "{role}");
    }
    assert_eq!(read(&h, &first).await, StatusCode::OK);
    // And without the CSRF token, not even the super_admin.
    let b = h.sign_in(&h.token).await;
    let r = h.post(&b, &format!("{path}/tokens"), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("Request refused"));
    assert_eq!(service_tokens(&h, &service).await.len(), 1);
}

#[tokio::test]
async fn the_quota_page_shows_the_accounts_limit_and_usage() {
    let h = Harness::new().await;
    let (_, reporter) = h.token_with_role("secrets_store_reporter").await;
    let b = h.sign_in(&reporter).await;
    let (_, v) = h
        .api(
            Method::GET,
            &format!("/client/v4/accounts/{}/secrets_store/quota", h.account),
            &h.token,
            None,
        )
        .await;
    let quota = v["result"]["secrets"]["quota"].as_u64().unwrap();
    let page = h.get(&b, "/dashboard/quota").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("/dashboard/quota\" aria-current=\"page\"")
    );
    assert!(
        page.body
            .contains(&format!("<strong>0</strong> of <strong>{quota}</strong>")),
        "{}",
        page.body
    );
    deployed(&h).await;
    let page = h.get(&b, "/dashboard/quota").await;
    assert!(
        page.body
            .contains(&format!("<strong>1</strong> of <strong>{quota}</strong>")),
        "{}",
        page.body
    );
    assert!(page.body.contains(&format!("{} left", quota - 1)));
}
