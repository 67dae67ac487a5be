//! `/client/v4/user/tokens/verify` and `/client/v4/memberships`: who a token is and which
//! account it belongs to, in Cloudflare's shapes.

use axum::http::Method;
use coffer_api::ErrorCode;
use serde_json::{Value, json};

use crate::support::*;

const VERIFY: &str = "/client/v4/user/tokens/verify";
const MEMBERSHIPS: &str = "/client/v4/memberships";

/// A verify answer: the envelope with Cloudflare's message; returns `result`.
#[track_caller]
fn assert_verified(r: &Resp) -> Value {
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_common_headers(r);
    let v = r.json();
    assert_keys(&v, &["success", "errors", "messages", "result"]);
    assert_eq!(v["success"], json!(true));
    assert_eq!(v["errors"], json!([]));
    assert_eq!(
        v["messages"],
        json!([{ "code": 10000, "message": "This API Token is valid and active" }])
    );
    v["result"].clone()
}

#[track_caller]
fn assert_account(a: &Value, id: &str, name: &str) {
    assert_keys(a, &["id", "name", "type", "created_on"]);
    assert_eq!(a["id"], json!(id), "{a}");
    assert_eq!(a["name"], json!(name), "{a}");
    assert_eq!(a["type"], json!("standard"));
    timestamp(&a["created_on"]);
}

#[tokio::test]
async fn verify_names_the_token_its_role_and_its_account() {
    let h = Harness::new().await;
    let op = assert_verified(&h.raw_abs(Method::GET, VERIFY, None, "").await);
    assert_keys(
        &op,
        &["id", "status", "name", "role", "operator", "account"],
    );
    assert_eq!(
        op["id"],
        json!(&h.token["coffer_".len().."coffer_".len() + 32])
    );
    assert_eq!(op["status"], json!("active"));
    assert_eq!(op["name"], json!("init"));
    assert_eq!(op["role"], json!("super_admin"));
    assert_eq!(op["operator"], json!(true));
    let name = op["account"]["name"].as_str().unwrap().to_owned();
    assert_account(&op["account"], &h.account, &name);

    // A token of another account, with an expiry and a lesser role.
    let b = h.create_account("team-b").await;
    // (The operator makes only an account's first token, its super_admin; that one the rest.)
    let admin = h.issue_token(&b, "admin", "super_admin").await;
    let expires = "2999-01-01T00:00:00Z";
    let r = h
        .send_as(
            Method::POST,
            &tokens_uri(&b, None),
            Some(&admin.bearer()),
            Some(&json!({ "name": "ci", "role": "secrets_store_reporter", "expires_on": expires })),
        )
        .await;
    let created = assert_ok(&r);
    let token = created["value"].as_str().unwrap().to_owned();
    let t = assert_verified(&h.get_as(&token, VERIFY).await);
    assert_keys(
        &t,
        &[
            "id",
            "status",
            "expires_on",
            "name",
            "role",
            "operator",
            "account",
        ],
    );
    assert_eq!(t["id"], created["id"]);
    assert_eq!(timestamp(&t["expires_on"]), timestamp(&json!(expires)));
    assert_eq!(t["name"], json!("ci"));
    assert_eq!(t["role"], json!("secrets_store_reporter"));
    assert_eq!(t["operator"], json!(false));
    assert_account(&t["account"], &b, "team-b");
    // Reading who one is writes nothing.
    let before = h.snapshot().await;
    let identity = h.identity_snapshot().await;
    assert_verified(&h.get_as(&token, VERIFY).await);
    assert_ok_list(&h.get_as(&token, MEMBERSHIPS).await);
    h.assert_unchanged(&before, "verify and memberships").await;
    assert_eq!(h.identity_snapshot().await, identity);
}

#[tokio::test]
async fn memberships_list_the_tokens_one_account_in_pages() {
    let h = Harness::new().await;
    let b = h.create_account("team-b").await;
    h.create_account("team-c").await;
    let admin = h.issue_token(&b, "admin", "super_admin").await;
    for (role, title, grants) in [
        (
            "super_admin",
            "Super Administrator - All Privileges",
            [true, true, true, true, true, true],
        ),
        (
            "secrets_store_admin",
            "Secrets Store Admin",
            [true, false, false, true, true, false],
        ),
        (
            "secrets_store_deployer",
            "Secrets Store Deployer",
            [true, false, false, false, true, true],
        ),
        (
            "secrets_store_reporter",
            "Secrets Store Reporter",
            [true, false, false, false, true, false],
        ),
    ] {
        let token = h.issue_token_by(&admin, &b, role, role).await;
        let r = h.get_as(&token.value, MEMBERSHIPS).await;
        let (items, (page, per_page, count, total)) = assert_ok_list(&r);
        assert_eq!((page, count, total), (1, 1, 1), "{role}");
        assert!(per_page >= 1);
        let m = &items[0];
        assert_keys(m, &["id", "account", "status", "roles", "permissions"]);
        assert_eq!(m["id"], json!(token.id));
        assert_account(&m["account"], &b, "team-b");
        assert_eq!(m["status"], json!("accepted"));
        assert_eq!(m["roles"], json!([title]), "{role}");
        let p = &m["permissions"];
        assert_keys(p, &["api_tokens", "secrets_store", "services"]);
        let got = [
            &p["secrets_store"]["read"],
            &p["api_tokens"]["read"],
            &p["api_tokens"]["write"],
            &p["secrets_store"]["write"],
            &p["services"]["read"],
            &p["services"]["write"],
        ]
        .map(|g| g.as_bool().unwrap());
        assert_eq!(got, grants, "{role}: {p}");
    }

    // The SDKs and wrangler page until a page is empty, or by total_count.
    let token = h
        .issue_token_by(&admin, &b, "pager", "secrets_store_reporter")
        .await;
    let r = h
        .get_as(&token.value, &format!("{MEMBERSHIPS}?page=2&per_page=5"))
        .await;
    let (items, info) = assert_ok_list(&r);
    assert!(items.is_empty());
    assert_eq!(info, (2, 5, 0, 1));
    let r = h
        .get_as(&token.value, &format!("{MEMBERSHIPS}?per_page=0"))
        .await;
    assert_err_at(&r, ErrorCode::InvalidQuery, "per_page");
}

#[tokio::test]
async fn the_operator_is_a_member_of_its_own_account_only() {
    let h = Harness::new().await;
    h.create_account("team-b").await;
    h.create_account("team-c").await;
    let r = h.raw_abs(Method::GET, MEMBERSHIPS, None, "").await;
    let (items, (_, _, _, total)) = assert_ok_list(&r);
    assert_eq!((items.len(), total), (1, 1), "{}", r.text());
    assert_eq!(items[0]["account"]["id"], json!(h.account));
    assert_eq!(
        items[0]["roles"],
        json!(["Super Administrator - All Privileges"])
    );
    // While the accounts list shows every account.
    let (accounts, _) = assert_ok_list(&h.raw_abs(Method::GET, V4, None, "").await);
    assert_eq!(accounts.len(), 3);
}

#[tokio::test]
async fn only_a_valid_api_token_is_answered() {
    let h = Harness::new().await;
    let store = h.create_store("s").await;
    h.create_secret(&store, "a", "v").await;
    let svc = h.deploy_secrets("app", &[("A", &store, "a")]).await;
    let node = h.create_node("edge-1").await;
    let revoked = h.issue_token(&h.account, "gone", "super_admin").await;
    let r = h
        .raw_abs(
            Method::DELETE,
            &tokens_uri(&h.account, Some(&revoked.id)),
            None,
            "",
        )
        .await;
    assert_ok(&r);
    for uri in [VERIFY, MEMBERSHIPS] {
        let r = h.send_as(Method::GET, uri, None, None).await;
        assert_err(&r, ErrorCode::Unauthenticated, "");
        let r = h.get_as("coffer_nope", uri).await;
        assert_err(&r, ErrorCode::Unauthenticated, "");
        let r = h.get_as(&revoked.value, uri).await;
        assert_err(&r, ErrorCode::Unauthenticated, "revoked");
        let r = h.get_as(svc.token(), uri).await;
        assert_err(&r, ErrorCode::WrongTokenKind, "service token");
        let r = h.get_as(&node.token, uri).await;
        assert_err(&r, ErrorCode::WrongTokenKind, "node token");
        let r = h.json_abs(Method::POST, uri, &json!({})).await;
        assert_err(&r, ErrorCode::MethodNotAllowed, "");
    }
}
