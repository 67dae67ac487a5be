//! Edge nodes: their URIs, tokens and shape, and the harness's calls that make and list them.

use axum::body::Body;
use axum::http::Method;
use serde_json::{Value, json};

use super::*;

/// The API root above accounts: instance-level routes (nodes) live here.
pub const API: &str = "/client/v4";

/// `/client/v4/nodes[/{node}]`.
pub fn nodes_uri(node: Option<&str>) -> String {
    match node {
        Some(n) => format!("{API}/nodes/{n}"),
        None => format!("{API}/nodes"),
    }
}

/// A node registered through the API: its id, its token (shown once) and the create's result.
#[derive(Debug, Clone)]
pub struct IssuedNode {
    pub id: String,
    pub token: String,
    pub result: Value,
}

/// A node token value: `coffernode_<32 hex id>_<43 base64url>`.
#[track_caller]
pub fn assert_node_token(v: &Value) -> String {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("node_token is not a string: {v}"));
    assert_eq!(s.len(), "coffernode_".len() + 32 + 1 + 43, "token {s:?}");
    let rest = s.strip_prefix("coffernode_").expect("coffernode_ prefix");
    assert_hex_id(&json!(&rest[..32]));
    assert_eq!(&rest[32..33], "_");
    assert!(
        rest[33..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "the secret part is base64url"
    );
    s.to_owned()
}

/// A node object: exact field names and well-formed fields.
#[track_caller]
pub fn assert_node_shape(n: &Value) {
    // `contact` only once the node asked this instance for the feed.
    match n.get("contact") {
        None => assert_keys(n, &["id", "name", "created", "revoked"]),
        Some(c) => {
            assert_keys(n, &["id", "name", "created", "revoked", "contact"]);
            assert_keys(c, &["last_seen", "applied_seq", "head_seq", "lag"]);
            timestamp(&c["last_seen"]);
            let (applied, head) = (c["applied_seq"].as_u64(), c["head_seq"].as_u64());
            assert_eq!(
                c["lag"].as_u64(),
                head.zip(applied).map(|(h, a)| h.saturating_sub(a)),
                "{c}"
            );
        }
    }
    assert_hex_id(&n["id"]);
    assert!(n["name"].is_string());
    let created = timestamp(&n["created"]);
    if !n["revoked"].is_null() {
        assert!(timestamp(&n["revoked"]) >= created, "{n}");
    }
}

impl Harness {
    /// `POST /client/v4/nodes` as the operator, which must succeed.
    pub async fn create_node(&self, name: &str) -> IssuedNode {
        let r = self
            .json_abs(Method::POST, &nodes_uri(None), &json!({ "name": name }))
            .await;
        let result = assert_ok(&r);
        assert_keys(
            &result,
            &[
                "id",
                "name",
                "created",
                "revoked",
                "node_token",
                "feed_public_key",
            ],
        );
        assert_eq!(duplicate_key(&r.bytes), None, "{}", r.text());
        let id = assert_hex_id(&result["id"]);
        let token = assert_node_token(&result["node_token"]);
        assert_eq!(&token["coffernode_".len().."coffernode_".len() + 32], id);
        IssuedNode { id, token, result }
    }

    /// Every node, as the operator lists them.
    pub async fn nodes_state(&self) -> Vec<Value> {
        let r = self
            .raw_abs(Method::GET, &nodes_uri(None), None, Body::empty())
            .await;
        let items = assert_ok_list(&r).0;
        for n in &items {
            assert_node_shape(n);
        }
        items
    }
}
