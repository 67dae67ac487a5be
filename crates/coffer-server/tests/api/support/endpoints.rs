//! Every endpoint of the API, with a body each accepts, for the tests that go through all of
//! them (authentication, permissions, bad paths and bodies).

use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::{Value, json};

use super::*;

/// An endpoint that takes a JSON body, with a body it accepts.
pub struct BodyEndpoint {
    pub name: &'static str,
    pub method: Method,
    /// Relative to the account's `secrets_store`.
    pub path: String,
    pub valid: Value,
}

impl Fixture {
    /// The endpoints with a JSON body that needs one: the five of the secrets store, then
    /// deploy. (A token rotation's body is optional, so it is tested on its own.)
    pub fn body_endpoints(&self) -> Vec<BodyEndpoint> {
        let (s, x) = (&self.store, &self.secret);
        vec![
            BodyEndpoint {
                name: "create store",
                method: Method::POST,
                path: "/stores".into(),
                valid: json!({ "name": "fresh" }),
            },
            BodyEndpoint {
                name: "create secrets",
                method: Method::POST,
                path: format!("/stores/{s}/secrets"),
                valid: json!([{ "name": "fresh", "value": "v", "scopes": ["workers"] }]),
            },
            BodyEndpoint {
                name: "bulk delete",
                method: Method::DELETE,
                path: format!("/stores/{s}/secrets"),
                valid: json!([x]),
            },
            BodyEndpoint {
                name: "update",
                method: Method::PATCH,
                path: format!("/stores/{s}/secrets/{x}"),
                valid: json!({ "comment": "changed" }),
            },
            BodyEndpoint {
                name: "duplicate",
                method: Method::POST,
                path: format!("/stores/{s}/secrets/{x}/duplicate"),
                valid: json!({ "name": "fresh", "scopes": ["workers"] }),
            },
            BodyEndpoint {
                name: "deploy",
                method: Method::POST,
                path: "/services".into(),
                valid: json!({
                    "name": "fresh",
                    "secrets_store_secrets": [secret_binding("BOUND", s, "EXISTING")],
                    "secrets_store_stores": [store_binding("ALL", s)],
                }),
            },
        ]
    }
}

/// One of the 12 operations, as a URI template over `{a}` (account), `{s}` (store) and `{x}`
/// (secret), with a body it accepts.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: &'static str,
    pub method: Method,
    pub template: &'static str,
    pub body: Option<Value>,
}

impl Endpoint {
    pub fn uri(&self, a: &str, s: &str, x: &str) -> String {
        format!(
            "{V4}/{}",
            self.template
                .replace("{a}", a)
                .replace("{s}", s)
                .replace("{x}", x)
        )
    }

    pub fn has(&self, placeholder: &str) -> bool {
        self.template.contains(placeholder)
    }
}

/// All 12 operations.
pub fn all_endpoints() -> Vec<Endpoint> {
    let ep = |name, method, template, body| Endpoint {
        name,
        method,
        template,
        body,
    };
    vec![
        ep("list stores", Method::GET, "{a}/secrets_store/stores", None),
        ep(
            "create store",
            Method::POST,
            "{a}/secrets_store/stores",
            Some(json!({ "name": "fresh" })),
        ),
        ep(
            "get store",
            Method::GET,
            "{a}/secrets_store/stores/{s}",
            None,
        ),
        ep(
            "delete store",
            Method::DELETE,
            "{a}/secrets_store/stores/{s}",
            None,
        ),
        ep(
            "list secrets",
            Method::GET,
            "{a}/secrets_store/stores/{s}/secrets",
            None,
        ),
        ep(
            "create secrets",
            Method::POST,
            "{a}/secrets_store/stores/{s}/secrets",
            Some(json!([{ "name": "fresh", "value": "v", "scopes": ["workers"] }])),
        ),
        ep(
            "bulk delete",
            Method::DELETE,
            "{a}/secrets_store/stores/{s}/secrets",
            Some(json!([])),
        ),
        ep(
            "get secret",
            Method::GET,
            "{a}/secrets_store/stores/{s}/secrets/{x}",
            None,
        ),
        ep(
            "update secret",
            Method::PATCH,
            "{a}/secrets_store/stores/{s}/secrets/{x}",
            Some(json!({ "comment": "changed" })),
        ),
        ep(
            "delete secret",
            Method::DELETE,
            "{a}/secrets_store/stores/{s}/secrets/{x}",
            None,
        ),
        ep(
            "duplicate",
            Method::POST,
            "{a}/secrets_store/stores/{s}/secrets/{x}/duplicate",
            Some(json!({ "name": "fresh", "scopes": ["workers"] })),
        ),
        ep("quota", Method::GET, "{a}/secrets_store/quota", None),
    ]
}

impl Harness {
    /// Calls `ep` at `uri` with the given Authorization header (or none), and its body with a
    /// JSON content type. The bulk delete body names `x`.
    pub async fn call_as(
        &self,
        ep: &Endpoint,
        uri: &str,
        x: &str,
        authorization: Option<&str>,
    ) -> Resp {
        let mut b = Request::builder().method(ep.method.clone()).uri(uri);
        if let Some(a) = authorization {
            b = b.header(header::AUTHORIZATION, a);
        }
        let body = match &ep.body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                let v = if ep.name == "bulk delete" {
                    json!([x])
                } else {
                    v.clone()
                };
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        self.send(b.body(body).unwrap()).await
    }

    /// Calls `ep` with this instance's token.
    pub async fn call(&self, ep: &Endpoint, a: &str, s: &str, x: &str) -> Resp {
        let auth = self.bearer();
        self.call_as(ep, &ep.uri(a, s, x), x, Some(&auth)).await
    }
}
