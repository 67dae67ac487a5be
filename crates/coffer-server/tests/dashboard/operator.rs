//! The instance operator's pages: accounts (create, quota, first token, delete) and keys (the
//! KEK's versions, starting a rotation); refused to every other token.

use axum::http::{Method, StatusCode};
use serde_json::Value;

use crate::support::Harness;

/// The accounts the API lists to the operator: (id, name, secrets_quota).
async fn accounts(h: &Harness) -> Vec<(String, String, Value)> {
    let (status, v) = h
        .api(Method::GET, "/client/v4/accounts", &h.token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                a["name"].as_str().unwrap().to_owned(),
                a["secrets_quota"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn only_the_operator_sees_and_uses_the_accounts_and_keys_pages() {
    let h = Harness::new().await;
    let op = h.sign_in(&h.token).await;
    let stores = h.get(&op, "/dashboard/stores").await;
    assert!(
        stores.body.contains("/dashboard/accounts\"") && stores.body.contains("/dashboard/keys\"")
    );

    // A super_admin of the operator's own account is not the operator.
    let (_, admin) = h.token_with_role("super_admin").await;
    let b = h.sign_in(&admin).await;
    let page = h.get(&b, "/dashboard/stores").await;
    assert!(
        !page.body.contains("/dashboard/accounts\"") && !page.body.contains("/dashboard/keys\"")
    );
    let csrf = page.csrf();
    for path in ["/dashboard/accounts", "/dashboard/keys"] {
        let r = h.get(&b, path).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert!(r.body.contains("instance:operator"), "{}", r.body);
    }
    // Its forged writes, with its own CSRF token, are refused and change nothing.
    let before = accounts(&h).await;
    let r = h
        .post(
            &b,
            "/dashboard/accounts",
            &[("csrf", &csrf), ("name", "forged")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let own = format!("/dashboard/accounts/{}/quota", h.account);
    let r = h
        .post(&b, &own, &[("csrf", &csrf), ("secrets_quota", "1")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = h
        .post(&b, "/dashboard/keys/rotate", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(accounts(&h).await, before);
    // And the operator's own forms need its CSRF token.
    let r = h
        .post(&op, "/dashboard/accounts", &[("name", "no-csrf")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(accounts(&h).await, before);
}

#[tokio::test]
async fn accounts_are_created_given_a_quota_and_a_first_token_shown_once_then_deleted() {
    let h = Harness::new().await;
    let b = h.sign_in(&h.token).await;
    let page = h.get(&b, "/dashboard/accounts").await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page.csrf();
    // The operator's own account cannot be deleted: no control for it.
    assert!(
        !page
            .body
            .contains(&format!("/dashboard/accounts/{}/delete", h.account))
    );

    // Bad input: the API's message beside the field.
    let r = h
        .post(&b, "/dashboard/accounts", &[("csrf", &csrf), ("name", " ")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("must not be empty"), "{}", r.body);
    let r = h
        .post(
            &b,
            "/dashboard/accounts",
            &[("csrf", &csrf), ("name", "acme <b>")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let list = h.get(&b, "/dashboard/accounts").await;
    assert!(list.body.contains("acme &#60;b&#62;") && !list.body.contains("acme <b>"));
    let acme = accounts(&h)
        .await
        .into_iter()
        .find(|(_, name, _)| name == "acme <b>")
        .unwrap()
        .0;

    // The quota: a number, kept as typed when refused; empty clears it.
    let quota = format!("/dashboard/accounts/{acme}/quota");
    let r = h
        .post(&b, &quota, &[("csrf", &csrf), ("secrets_quota", "ten")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("secrets_quota: a whole number") && r.body.contains("value=\"ten\""));
    let r = h
        .post(&b, &quota, &[("csrf", &csrf), ("secrets_quota", "7")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let quota_of = |list: Vec<(String, String, Value)>| {
        list.into_iter().find(|(id, _, _)| *id == acme).unwrap().2
    };
    assert_eq!(quota_of(accounts(&h).await), 7);
    h.post(&b, &quota, &[("csrf", &csrf), ("secrets_quota", "")])
        .await;
    assert_eq!(quota_of(accounts(&h).await), Value::Null);

    // Its first token: a super_admin, its value on the answer page only, and it works.
    let first = format!("/dashboard/accounts/{acme}/first-token");
    let r = h
        .post(&b, &first, &[("csrf", &csrf), ("name", "acme admin")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let value = r.once_value().expect("the first token, shown once");
    assert!(value.len() > 20, "{value}");
    assert!(r.body.contains("super_admin"));
    let (status, v) = h
        .api(Method::GET, "/client/v4/user/tokens/verify", &value, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(!h.get(&b, "/dashboard/accounts").await.body.contains(&value));
    // A second one is the account's own super_admin's to make.
    let r = h
        .post(&b, &first, &[("csrf", &csrf), ("name", "another")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(
        r.body.contains("creates only the first token"),
        "{}",
        r.body
    );
    assert!(r.body.contains("value=\"another\""));

    // Delete, confirmed by typing the name.
    let delete = format!("/dashboard/accounts/{acme}/delete");
    let r = h
        .post(&b, &delete, &[("csrf", &csrf), ("confirm", "acme")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("to confirm"));
    let r = h
        .post(&b, &delete, &[("csrf", &csrf), ("confirm", "acme <b>")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(accounts(&h).await.iter().all(|(id, _, _)| *id != acme));
    let (status, _) = h
        .api(Method::GET, "/client/v4/user/tokens/verify", &value, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "its token went with it");
}

#[tokio::test]
async fn the_keys_page_shows_the_kek_versions_and_starts_a_rotation() {
    let h = Harness::new().await;
    // A value sealed, so there is a DEK to show.
    let store = h.create_store("s").await;
    let (status, v) = h
        .api(
            Method::POST,
            &format!(
                "/client/v4/accounts/{}/secrets_store/stores/{store}/secrets",
                h.account
            ),
            &h.token,
            Some(serde_json::json!([{"name": "K", "value": "v", "scopes": ["workers"]}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let b = h.sign_in(&h.token).await;
    let page = h.get(&b, "/dashboard/keys").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("Version 1 wraps every new data key"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Rotate the KEK"));
    // The data keys' ages, beside how often one is replaced (the default: hourly).
    assert!(
        page.body.contains("an account's DEK every 1 h"),
        "{}",
        page.body
    );
    let (status, v) = h.api(Method::GET, "/client/v4/kek", &h.token, None).await;
    assert_eq!(status, StatusCode::OK);
    let deks: u64 = v["result"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["deks"].as_u64().unwrap())
        .sum();
    assert!(
        page.body
            .contains(&format!("<dt>DEKs stored</dt><dd>{deks}</dd>")),
        "{deks}: {}",
        page.body
    );
    assert!(
        deks >= 1 && page.body.contains(" ago)</dd>"),
        "{}",
        page.body
    );
    let csrf = page.csrf();
    let r = h.post(&b, "/dashboard/keys/rotate", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no CSRF token");
    let r = h
        .post(&b, "/dashboard/keys/rotate", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = h.get(&b, "/dashboard/keys").await;
    assert!(
        page.body.contains("Version 2 wraps every new data key"),
        "{}",
        page.body
    );
    // The API says the same.
    let (status, v) = h.api(Method::GET, "/client/v4/kek", &h.token, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["active_version"], 2, "{v}");
}

#[tokio::test]
async fn the_edges_page_registers_shows_where_each_stands_and_revokes() {
    let h = Harness::new().await;
    h.coffer.storage().ensure_cluster_id().await.unwrap();
    let b = h.sign_in(&h.token).await;
    let page = h.get(&b, "/dashboard/edges").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("No edge nodes yet"));
    let (csrf, once) = (page.csrf(), page.once());
    let r = h
        .post(
            &b,
            "/dashboard/edges",
            &[
                ("csrf", &csrf),
                ("once", &once),
                ("name", "bad name!"),
                ("token", &h.token),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body.contains("name: node name") && r.body.contains("value=\"bad name!\""),
        "{}",
        r.body
    );
    // The session's cookie is not enough: its API token, typed again.
    let once = r.once();
    for wrong in ["", "not-the-token"] {
        let r = h
            .post(
                &b,
                "/dashboard/edges",
                &[
                    ("csrf", &csrf),
                    ("once", &once),
                    ("name", "edge-fra"),
                    ("token", wrong),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert!(r.body.contains("API token again") && r.once_value().is_none());
    }
    let (_, v) = h.api(Method::GET, "/client/v4/nodes", &h.token, None).await;
    assert_eq!(v["result"].as_array().unwrap().len(), 0, "{v}");
    let once = h.get(&b, "/dashboard/edges").await.once();
    let r = h
        .post(
            &b,
            "/dashboard/edges",
            &[
                ("csrf", &csrf),
                ("once", &once),
                ("name", "edge-fra"),
                ("token", &h.token),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = r.once_value().expect("the node token, shown once");
    assert!(token.starts_with("coffernode_"), "{token}");
    assert!(r.body.contains("Feed key"), "{}", r.body);
    let list = h.get(&b, "/dashboard/edges").await;
    assert!(list.body.contains("edge-fra") && list.body.contains("not seen by this instance"));
    assert!(!list.body.contains(&token), "never shown again");

    // The node asks for the feed with its token: the page says where it stands.
    let (status, _) = h
        .api(
            Method::GET,
            "/replication/v1/feed?after=0&wait=0",
            &token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let list = h.get(&b, "/dashboard/edges").await;
    assert!(
        list.body.contains("entries behind") && list.body.contains("0 of "),
        "{}",
        list.body
    );

    // Revoke, confirmed by typing the name.
    let id = {
        let at = list.body.find("/dashboard/edges/").unwrap() + "/dashboard/edges/".len();
        list.body[at..at + 32].to_owned()
    };
    let revoke = format!("/dashboard/edges/{id}/revoke");
    let r = h
        .post(&b, &revoke, &[("csrf", &csrf), ("confirm", "edge")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("to confirm"));
    let r = h
        .post(&b, &revoke, &[("csrf", &csrf), ("confirm", "edge-fra")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let list = h.get(&b, "/dashboard/edges").await;
    assert!(
        list.body.contains("revoked") && !list.body.contains("Revoke…"),
        "{}",
        list.body
    );
    let (status, _) = h
        .api(
            Method::GET,
            "/replication/v1/feed?after=0&wait=0",
            &token,
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "its token stopped working"
    );

    // Not the operator: no link, 403, and a forged registration makes nothing.
    let (_, admin) = h.token_with_role("super_admin").await;
    let a = h.sign_in(&admin).await;
    let stores = h.get(&a, "/dashboard/stores").await;
    assert!(!stores.body.contains("/dashboard/edges\""));
    assert_eq!(
        h.get(&a, "/dashboard/edges").await.status,
        StatusCode::FORBIDDEN
    );
    let r = h
        .post(
            &a,
            "/dashboard/edges",
            &[("csrf", &stores.csrf()), ("name", "forged")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let (_, v) = h.api(Method::GET, "/client/v4/nodes", &h.token, None).await;
    assert_eq!(v["result"].as_array().unwrap().len(), 1, "{v}");
}
