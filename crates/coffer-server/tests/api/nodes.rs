//! Edge nodes (`/client/v4/nodes`): the operator registers, lists, reads and revokes them; a
//! node token is good for the replication feed only. (Every role's refusal on these routes is
//! also in the permission matrix, `permissions.rs`.)

use axum::body::Body;
use axum::http::{Method, StatusCode};
use coffer_api::ErrorCode;
use serde_json::{Value, json};

use crate::secrecy::{assert_absent, captured, captured_logs};
use crate::support::*;

async fn get_abs(h: &Harness, uri: &str) -> Resp {
    h.raw_abs(Method::GET, uri, None, Body::empty()).await
}

async fn delete_abs(h: &Harness, uri: &str) -> Resp {
    h.raw_abs(Method::DELETE, uri, None, Body::empty()).await
}

/// What the nodes are and where the change log stands.
async fn node_state(h: &Harness) -> (Vec<Value>, u64) {
    (h.nodes_state().await, h.change_head().await)
}

#[tokio::test]
async fn the_operator_registers_lists_reads_and_revokes_nodes() {
    let h = Harness::new().await;
    assert!(
        h.nodes_state().await.is_empty(),
        "a new instance has no nodes"
    );

    let a = h.create_node("edge-1.fra").await;
    assert_eq!(a.result["name"], json!("edge-1.fra"));
    assert_eq!(a.result["revoked"], Value::Null);
    let created_a = timestamp(&a.result["created"]);
    let b = h.create_node("edge_2").await;
    assert_ne!(a.token, b.token);

    // Listed oldest first, with the token never part of a node.
    let listed = h.nodes_state().await;
    // The feed key is the instance's, shown when a node is made, not part of the node.
    assert_eq!(a.result["feed_public_key"], b.result["feed_public_key"]);
    let mut plain_a = a.result.clone();
    let mut plain_b = b.result.clone();
    for plain in [&mut plain_a, &mut plain_b] {
        let fields = plain.as_object_mut().unwrap();
        fields.remove("node_token");
        fields.remove("feed_public_key");
    }
    assert_eq!(listed, vec![plain_a.clone(), plain_b.clone()]);
    let r = get_abs(&h, &nodes_uri(Some(&a.id))).await;
    let got = assert_ok(&r);
    assert_node_shape(&got);
    assert_eq!(got, plain_a);

    // Revoking answers the node, now revoked; it stays listed.
    let r = delete_abs(&h, &nodes_uri(Some(&b.id))).await;
    let revoked = assert_ok(&r);
    assert_node_shape(&revoked);
    assert_eq!(revoked["id"], json!(b.id));
    assert!(timestamp(&revoked["revoked"]) >= created_a);
    assert_eq!(
        assert_ok(&get_abs(&h, &nodes_uri(Some(&b.id))).await),
        revoked
    );
    assert_eq!(
        h.nodes_state().await,
        vec![plain_a.clone(), revoked.clone()]
    );

    // A second revocation is refused and changes nothing.
    let before = node_state(&h).await;
    let r = delete_abs(&h, &nodes_uri(Some(&b.id))).await;
    assert_err(
        &r,
        ErrorCode::TokenAlreadyRevoked,
        "node is already revoked",
    );
    assert_eq!(
        r.headers.get("x-should-retry").map(|v| v.to_str().unwrap()),
        Some("false")
    );
    assert_eq!(node_state(&h).await, before);

    // Unknown ids.
    let unknown = random_id();
    let r = get_abs(&h, &nodes_uri(Some(&unknown))).await;
    assert_err(&r, ErrorCode::NodeNotFound, "node not found");
    let r = delete_abs(&h, &nodes_uri(Some(&unknown))).await;
    assert_err(&r, ErrorCode::NodeNotFound, "node not found");
    assert_eq!(node_state(&h).await, before);

    // One active node per name; a revoked node's name is free again.
    let r = h
        .json_abs(
            Method::POST,
            &nodes_uri(None),
            &json!({ "name": "edge-1.fra" }),
        )
        .await;
    assert_err(&r, ErrorCode::NodeNameTaken, "\"edge-1.fra\"");
    assert_eq!(
        r.headers.get("x-should-retry").map(|v| v.to_str().unwrap()),
        Some("false")
    );
    assert_eq!(node_state(&h).await, before);
    let again = h.create_node("edge_2").await;
    assert_ne!(again.id, b.id);
    assert_eq!(h.nodes_state().await.len(), 3);

    // Audited in the operator's account: creations and the revocation, by id and name.
    let entries = h.audit_entries_all(&h.account).await.0;
    let nodes: Vec<(String, String, String)> = entries
        .iter()
        .filter(|e| e["resource"]["type"] == json!("node"))
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["resource"]["node_id"].as_str().unwrap().to_owned(),
                e["resource"]["node_name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let row = |action: &str, n: &IssuedNode, name: &str| {
        (action.to_owned(), n.id.clone(), name.to_owned())
    };
    assert_eq!(
        nodes,
        [
            row("create", &a, "edge-1.fra"),
            row("create", &b, "edge_2"),
            row("revoke", &b, "edge_2"),
            row("create", &again, "edge_2"),
        ]
    );
}

#[tokio::test]
async fn bad_node_requests_are_refused_and_write_nothing() {
    let h = Harness::new().await;
    let node = h.create_node("edge-1").await;
    let before = node_state(&h).await;

    for (name, needle) in [
        (json!(""), "must not be empty"),
        (
            json!("a b"),
            "may only contain ASCII letters, digits, '-', '_' and '.'",
        ),
        (json!("edge/1"), "may only contain"),
        (json!("ébène"), "may only contain"),
        (json!("n".repeat(64)), "at most 63 characters (got 64)"),
    ] {
        let r = h
            .json_abs(Method::POST, &nodes_uri(None), &json!({ "name": name }))
            .await;
        let e = assert_err_at(&r, ErrorCode::InvalidName, "/name");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains("node name"), "{message}");
        assert!(message.contains(needle), "{name}: {message}");
    }
    for (body, code, pointer) in [
        ("{}", ErrorCode::InvalidField, None),
        (
            r#"{"name": "ok", "extra": 1}"#,
            ErrorCode::InvalidField,
            None,
        ),
        (
            r#"{"name": 123456}"#,
            ErrorCode::InvalidField,
            Some("/name"),
        ),
        (r#"["edge-9"]"#, ErrorCode::InvalidField, Some("body")),
        (r#""edge-9""#, ErrorCode::InvalidField, Some("body")),
        ("", ErrorCode::MalformedJson, None),
        ("{", ErrorCode::MalformedJson, None),
        ("name=edge-9", ErrorCode::MalformedJson, None),
    ] {
        let r = h
            .raw_abs(
                Method::POST,
                &nodes_uri(None),
                Some("application/json"),
                body,
            )
            .await;
        let e = assert_err(&r, code, "");
        if let Some(p) = pointer {
            assert_eq!(e["source"]["pointer"], json!(p), "{body}: {e}");
        }
        assert!(!r.text().contains("123456"), "{}", r.text());
    }
    let r = h
        .raw_abs(
            Method::POST,
            &nodes_uri(None),
            Some("multipart/form-data; boundary=x"),
            "--x--",
        )
        .await;
    assert_err(&r, ErrorCode::UnsupportedMediaType, "multipart");

    for bad in [
        "xyz".to_owned(),
        node.id.to_uppercase(),
        node.id[..31].to_owned(),
        format!("{}0", node.id),
        "%FF%FE".to_owned(),
    ] {
        for method in [Method::GET, Method::DELETE] {
            let r = h
                .raw_abs(method.clone(), &nodes_uri(Some(&bad)), None, Body::empty())
                .await;
            assert_err_at(&r, ErrorCode::InvalidId, "node_id");
        }
    }
    for (method, uri) in [
        (Method::PATCH, nodes_uri(Some(&node.id))),
        (Method::PUT, nodes_uri(Some(&node.id))),
        (Method::POST, nodes_uri(Some(&node.id))),
        (Method::DELETE, nodes_uri(None)),
        (Method::PATCH, nodes_uri(None)),
    ] {
        let r = h.raw_abs(method.clone(), &uri, None, Body::empty()).await;
        assert_err(&r, ErrorCode::MethodNotAllowed, "");
    }
    let r = get_abs(&h, &format!("{}/tokens", nodes_uri(Some(&node.id)))).await;
    assert_err(&r, ErrorCode::RouteNotFound, "");
    assert_eq!(node_state(&h).await, before);
}

#[tokio::test]
async fn only_the_operator_manages_nodes() {
    let h = Harness::new().await;
    let node = h.create_node("edge-1").await;
    let b = h.create_account("bee").await;
    let b_admin = h.issue_token(&b, "b admin", "super_admin").await;
    let mut callers = Vec::new();
    for role in ROLES {
        callers.push((
            format!("A's {role}"),
            h.issue_token(&h.account, role, role).await,
        ));
        callers.push((
            format!("B's {role}"),
            h.issue_token_by(&b_admin, &b, role, role).await,
        ));
    }
    let before = node_state(&h).await;
    for (who, token) in &callers {
        let auth = token.bearer();
        for (method, uri, body) in [
            (Method::GET, nodes_uri(None), None),
            (
                Method::POST,
                nodes_uri(None),
                Some(json!({ "name": "sneaky" })),
            ),
            (Method::GET, nodes_uri(Some(&node.id)), None),
            (Method::DELETE, nodes_uri(Some(&node.id)), None),
            // An unknown node answers the same: the refusal comes first.
            (Method::GET, nodes_uri(Some(&random_id())), None),
        ] {
            let r = h
                .send_as(method.clone(), &uri, Some(&auth), body.as_ref())
                .await;
            let e = assert_err(&r, ErrorCode::Forbidden, "instance:operator");
            assert!(e["message"].is_string(), "{who} {method} {uri}");
        }
    }
    assert_eq!(node_state(&h).await, before, "nothing was written");

    // Each refusal is audited in the caller's own account.
    for account in [&h.account, &b] {
        let denied = h
            .audit_entries_all(account)
            .await
            .0
            .into_iter()
            .filter(|e| e["resource"]["type"] == json!("node") && e["outcome"] == json!("denied"))
            .count();
        assert_eq!(denied, ROLES.len() * 5, "account {account}");
    }

    // No credentials, or bad ones: 401 before anything else.
    let r = h.send_as(Method::GET, &nodes_uri(None), None, None).await;
    assert_err(&r, ErrorCode::Unauthenticated, "Authorization");
    let r = h
        .send_as(Method::GET, &nodes_uri(None), Some("Bearer garbage"), None)
        .await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
}

#[tokio::test]
async fn a_node_token_is_refused_on_the_runtime_api() {
    let h = Harness::new().await;
    let store = h.create_store("prod").await;
    h.create_secret(&store, "k", "value").await;
    let svc = h.deploy_secrets("svc", &[("K", &store, "k")]).await;
    let node = h.create_node("edge-1").await;
    let bearer = format!("Bearer {}", node.token);
    for path in [
        "/bindings".to_owned(),
        "/bindings/K".to_owned(),
        "/stores/ALL/secrets/k".to_owned(),
    ] {
        let r = h.runtime_as(Some(&bearer), &path).await;
        let e = assert_err(
            &r,
            ErrorCode::WrongTokenKind,
            "node tokens cannot read secret values",
        );
        assert!(!e.to_string().contains(&node.token));
    }
    // The service token still reads; the node token's revocation makes it a plain failure.
    assert_eq!(h.read_value(svc.token(), "K").await, "value");
    assert_ok(&delete_abs(&h, &nodes_uri(Some(&node.id))).await);
    let r = h.runtime_as(Some(&bearer), "/bindings/K").await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
    let r = h.get_as(&node.token, &nodes_uri(None)).await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
}

#[tokio::test]
async fn a_node_token_is_shown_once_and_never_logged_stored_or_audited() {
    let logs = captured_logs();
    let h = Harness::new().await;
    let node = h.create_node("edge-secret").await;
    let secret_part = node.token["coffernode_".len() + 33..].to_owned();
    assert_eq!(secret_part.len(), 43);

    // Everything else one does with a node.
    h.nodes_state().await;
    assert_ok(&get_abs(&h, &nodes_uri(Some(&node.id))).await);
    // Used where it does not belong, and where it does not work any more.
    let r = h.get_as(&node.token, &format!("{V4}/{}", h.account)).await;
    assert_err(&r, ErrorCode::WrongTokenKind, "");
    assert_ok(&delete_abs(&h, &nodes_uri(Some(&node.id))).await);
    let r = h.get_as(&node.token, &format!("{V4}/{}", h.account)).await;
    assert_err(&r, ErrorCode::Unauthenticated, "");
    let audit = h.audit_entries_all(&h.account).await.0;
    h.coffer.shutdown().await;

    // Responses: exactly once, in the create's answer.
    let transcript = h.transcript();
    let hits = transcript
        .windows(secret_part.len())
        .filter(|w| *w == secret_part.as_bytes())
        .count();
    assert_eq!(hits, 1, "the token appears in the create's answer only");
    let audit = serde_json::to_vec(&audit).unwrap();
    assert!(
        contains(&audit, node.id.as_bytes()),
        "the audit names the node"
    );
    assert_absent(&audit, &secret_part, "the audit log");
    let all_logs = captured(&logs);
    assert!(
        contains(&all_logs, b"/client/v4/nodes"),
        "the log capture saw these requests"
    );
    assert_absent(&all_logs, &secret_part, "the log");
    for (part, bytes) in h.at_rest_bytes("edge-secret").await {
        assert_absent(&bytes, &secret_part, &part);
    }
}

/// A node answered by the API can be read back through the client-facing status codes only:
/// a created node is 200 (like every other create), with its token.
#[tokio::test]
async fn creating_a_node_answers_200_with_the_token() {
    let h = Harness::new().await;
    let r = h
        .json_abs(Method::POST, &nodes_uri(None), &json!({ "name": "edge-1" }))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let result = assert_ok(&r);
    assert_node_token(&result["node_token"]);
}
