//! Accounts and API tokens: their URIs, the shape of an issued token, and the harness's calls
//! that make and read them.

use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::{Value, json};

use super::*;

/// The four roles, in the contract's order.
pub const ROLES: [&str; 4] = [
    "super_admin",
    "secrets_store_admin",
    "secrets_store_deployer",
    "secrets_store_reporter",
];

/// `/client/v4/accounts/{account}`.
pub fn account_uri(account: &str) -> String {
    format!("{V4}/{account}")
}

/// `/client/v4/accounts/{account}/tokens[/{token}]`.
pub fn tokens_uri(account: &str, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("{V4}/{account}/tokens/{t}"),
        None => format!("{V4}/{account}/tokens"),
    }
}

/// The token a successful create answered with.
pub fn issued(r: &Resp) -> IssuedToken {
    let t = assert_ok(r);
    IssuedToken {
        id: assert_hex_id(&t["id"]),
        value: t["value"].as_str().expect("value").to_owned(),
    }
}

/// A token made through the API: its id and its value (shown once).
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub id: String,
    pub value: String,
}

impl IssuedToken {
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.value)
    }
}

impl Harness {
    /// `method` on `uri` with `authorization` (or none) and an optional JSON body.
    pub async fn send_as(
        &self,
        method: Method,
        uri: &str,
        authorization: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(a) = authorization {
            b = b.header(header::AUTHORIZATION, a);
        }
        let body = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(v).unwrap())
            }
            None => Body::empty(),
        };
        self.send(b.body(body).unwrap()).await
    }

    /// `GET uri` as `token` (a full token value).
    pub async fn get_as(&self, token: &str, uri: &str) -> Resp {
        let auth = format!("Bearer {token}");
        self.send_as(Method::GET, uri, Some(&auth), None).await
    }

    /// Creates an account as the operator; returns its id.
    pub async fn create_account(&self, name: &str) -> String {
        let r = self
            .json_abs(Method::POST, V4, &json!({ "name": name }))
            .await;
        assert_hex_id(&assert_ok(&r)["id"])
    }

    /// Creates a token in `account` as the operator.
    /// A second account with a super_admin token, a store `b-store` and one secret `one`
    /// (scope workers) holding `value`: `(account, its admin, store id)`.
    pub async fn other_account_with_secret(&self, value: &str) -> (String, IssuedToken, String) {
        let b = self.create_account("bee").await;
        let admin = self.issue_token(&b, "bee-admin", "super_admin").await;
        let uri = |rel: &str| format!("{V4}/{b}/secrets_store{rel}");
        let r = self
            .send_as(
                Method::POST,
                &uri("/stores"),
                Some(&admin.bearer()),
                Some(&json!({ "name": "b-store" })),
            )
            .await;
        let store = assert_hex_id(&assert_ok(&r)["id"]);
        let r = self
            .send_as(
                Method::POST,
                &uri(&format!("/stores/{store}/secrets")),
                Some(&admin.bearer()),
                Some(&json!([secret_item("one", value, &["workers"])])),
            )
            .await;
        assert_ok(&r);
        (b, admin, store)
    }

    /// Creates a token in `account` as the operator: any token in its own account, only the
    /// first (a super_admin) in another; make the others with [`Harness::issue_token_by`].
    pub async fn issue_token(&self, account: &str, name: &str, role: &str) -> IssuedToken {
        let r = self
            .json_abs(
                Method::POST,
                &tokens_uri(account, None),
                &json!({ "name": name, "role": role }),
            )
            .await;
        issued(&r)
    }

    /// Creates a token in `account` as `by` (a super_admin of that account).
    pub async fn issue_token_by(
        &self,
        by: &IssuedToken,
        account: &str,
        name: &str,
        role: &str,
    ) -> IssuedToken {
        let r = self
            .send_as(
                Method::POST,
                &tokens_uri(account, None),
                Some(&by.bearer()),
                Some(&json!({ "name": name, "role": role })),
            )
            .await;
        issued(&r)
    }

    /// Every account the operator sees with its tokens' metadata, minus `last_used_on` (which
    /// reading changes): what an identity write would change.
    pub async fn identity_snapshot(&self) -> Value {
        let (accounts, _) = assert_ok_list(&self.raw_abs(Method::GET, V4, None, "").await);
        let mut out = Vec::new();
        for a in accounts {
            let id = a["id"].as_str().unwrap();
            let r = self
                .raw_abs(Method::GET, &tokens_uri(id, None), None, "")
                .await;
            let mut tokens = assert_ok_list(&r).0;
            for t in &mut tokens {
                t.as_object_mut().unwrap().remove("last_used_on");
            }
            out.push(json!({ "account": a, "tokens": tokens }));
        }
        Value::Array(out)
    }
}
