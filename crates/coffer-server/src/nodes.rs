//! Handlers of `/client/v4/nodes`: the instance's edge nodes (instance operator only). A node's
//! token is shown once, in the answer to its creation.

use axum::Json;
use axum::extract::{FromRequestParts, RawPathParams, State};
use axum::http::request::Parts;
use coffer_api::{CreateNode, CreatedNode, Envelope, ErrorCode, Node, NodeContact, SecretValue};
use coffer_core::CoreError;
use coffer_storage::NodeRecord;
use coffer_types::{NodeName, Timestamp, TokenId};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, JsonBody};
use crate::state::AppState;
use crate::wire;

type Reply<T> = ApiResult<Json<Envelope<T>>>;

fn node(n: &NodeRecord, contact: Option<coffer_core::NodeContact>) -> Node {
    Node {
        id: n.id.to_string(),
        name: n.name.clone(),
        created: n.created.to_rfc3339(),
        revoked: n.revoked.map(Timestamp::to_rfc3339),
        contact: contact.map(|c| NodeContact {
            last_seen: c.last_seen.to_rfc3339(),
            applied_seq: c.applied_seq,
            head_seq: c.head_seq,
            lag: c.lag(),
        }),
    }
}

/// The `{node_id}` of the path, parsed.
#[derive(Debug, Clone, Copy)]
pub struct NodeId(pub TokenId);

impl<S: Send + Sync> FromRequestParts<S> for NodeId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<NodeId, ApiError> {
        let invalid = |message: String| ApiError::at(ErrorCode::InvalidId, "node_id", message);
        // Fails only for a segment that does not percent-decode to UTF-8.
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| invalid("node_id: must be 32 lowercase hexadecimal characters".into()))?;
        let value = params
            .iter()
            .find_map(|(name, value)| (name == "node_id").then_some(value))
            .ok_or_else(|| ApiError::new(ErrorCode::RouteNotFound, "no node in path"))?;
        TokenId::parse(value)
            .map(NodeId)
            .map_err(|e| invalid(format!("node_id: {e}")))
    }
}

/// `POST /client/v4/nodes`: registers a node; the answer holds its token, this once.
pub async fn create(
    State(app): State<AppState>,
    Auth(who): Auth,
    body: JsonBody,
) -> Reply<CreatedNode> {
    let req: CreateNode = body.object()?;
    let name = NodeName::parse(&req.name).map_err(|e| {
        ApiError::at(
            ErrorCode::InvalidName,
            "/name",
            format!("/name: node name {e}"),
        )
    })?;
    let (record, token) = app.coffer.create_node(&who, name).await?;
    Ok(Json(Envelope::ok(CreatedNode {
        node: node(&record, None),
        node_token: SecretValue::new(token.expose_secret().to_owned()),
        feed_public_key: app.coffer.feed_public_key().map(hex::encode),
    })))
}

/// `GET /client/v4/nodes`: every node, revoked ones included, oldest first, each with its last
/// feed request to this instance.
pub async fn list(State(app): State<AppState>, Auth(who): Auth) -> Reply<Vec<Node>> {
    let fleet = app.coffer.fleet(&who).await?;
    Ok(Json(wire::whole_list(
        fleet.iter().map(|(n, c)| node(n, *c)).collect(),
    )))
}

pub async fn get(State(app): State<AppState>, Auth(who): Auth, id: NodeId) -> Reply<Node> {
    let (record, contact) = app.coffer.node_in_fleet(&who, id.0).await?;
    Ok(Json(Envelope::ok(node(&record, contact))))
}

/// `DELETE /client/v4/nodes/{node_id}` revokes the node (the record stays, with `revoked`).
pub async fn revoke(State(app): State<AppState>, Auth(who): Auth, id: NodeId) -> Reply<Node> {
    let record = app
        .coffer
        .revoke_node(&who, id.0)
        .await
        .map_err(|e| match e {
            CoreError::AlreadyRevoked => ApiError::new(
                ErrorCode::TokenAlreadyRevoked,
                "the node is already revoked",
            ),
            other => other.into(),
        })?;
    Ok(Json(Envelope::ok(node(&record, None))))
}

#[cfg(test)]
mod tests {
    //! The `NodeAuth` extractor, through a tiny route that answers the node's id: the feed's
    //! endpoints will use it the same way.

    use std::net::SocketAddr;
    use std::sync::Arc;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{Request, StatusCode, header};
    use axum::routing::get;
    use coffer_core::{Coffer, Deploy, Limits, NewToken, Principal, Role};
    use coffer_types::{BindingName, Scope, ServiceName, StoreName};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::extract::NodeAuth;

    async fn whoami(NodeAuth(node): NodeAuth) -> String {
        node.id.to_string()
    }

    struct Fx {
        _dir: tempfile::TempDir,
        coffer: Arc<Coffer>,
        op: Principal,
        app: Router,
    }

    async fn fx() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let init = crate::init_data_dir(&path).await.unwrap();
        let coffer = Arc::new(
            crate::open_data_dir(&path, Limits::default())
                .await
                .unwrap()
                .coffer,
        );
        let op = coffer
            .authenticate(init.api_token.expose_secret(), Default::default())
            .await
            .unwrap();
        let app = Router::new()
            .route("/whoami", get(whoami))
            .with_state(AppState::new(
                coffer.clone(),
                None,
                Default::default(),
                None,
            ));
        Fx {
            _dir: dir,
            coffer,
            op,
            app,
        }
    }

    impl Fx {
        /// `(status, error code or body)` of `GET /whoami` from `peer` with `authorization`.
        async fn call(&self, authorization: Option<&str>, peer: [u8; 4]) -> (StatusCode, String) {
            let mut req = Request::get("/whoami");
            if let Some(a) = authorization {
                req = req.header(header::AUTHORIZATION, a);
            }
            let mut req = req.body(Body::empty()).unwrap();
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::from((peer, 4242))));
            let res = self.app.clone().oneshot(req).await.unwrap();
            let status = res.status();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if status.is_success() {
                return (status, text);
            }
            let v: serde_json::Value = serde_json::from_str(&text).expect("an envelope");
            assert_eq!(v["success"], false, "{text}");
            (status, v["errors"][0]["code"].to_string())
        }

        async fn service_token(&self) -> String {
            let account = self.op.account_id;
            let store = self
                .coffer
                .create_store(&self.op, account, StoreName::parse("prod").unwrap())
                .await
                .unwrap()
                .id;
            let deploy = Deploy {
                name: ServiceName::parse("svc").unwrap(),
                kind: Scope::Workers,
                secrets: vec![],
                stores: vec![coffer_storage::StoreBindingRecord {
                    binding: BindingName::parse("ALL").unwrap(),
                    store_id: store,
                }],
            };
            let token = self
                .coffer
                .deploy_service(&self.op, account, deploy)
                .await
                .unwrap()
                .token
                .unwrap();
            token.expose_secret().to_owned()
        }
    }

    const HERE: [u8; 4] = [192, 0, 2, 1];

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn code(c: ErrorCode) -> String {
        c.code().to_string()
    }

    #[tokio::test]
    async fn node_auth_admits_node_tokens_only() {
        let f = fx().await;
        let (record, token) = f
            .coffer
            .create_node(&f.op, NodeName::parse("edge-1").unwrap())
            .await
            .unwrap();
        let token = token.expose_secret().to_owned();
        assert_eq!(
            f.call(Some(&bearer(&token)), HERE).await,
            (StatusCode::OK, record.id.to_string())
        );

        let unauthenticated = (StatusCode::UNAUTHORIZED, code(ErrorCode::Unauthenticated));
        assert_eq!(f.call(None, HERE).await, unauthenticated);
        assert_eq!(f.call(Some("Basic abc"), HERE).await, unauthenticated);
        assert_eq!(f.call(Some("Bearer garbage"), HERE).await, unauthenticated);
        let forged = format!("{}{}", &token[..token.len() - 43], "A".repeat(43));
        assert_eq!(f.call(Some(&bearer(&forged)), HERE).await, unauthenticated);

        // Valid tokens of the other kinds are told what they are for; forged ones are not.
        let wrong_kind = (StatusCode::FORBIDDEN, code(ErrorCode::WrongTokenKind));
        let (_, api) = f
            .coffer
            .create_token(
                &f.op,
                f.op.account_id,
                NewToken {
                    name: "ci".into(),
                    role: Role::SuperAdmin,
                    expires: None,
                },
            )
            .await
            .unwrap();
        let svc = f.service_token().await;
        for other in [api.expose_secret(), svc.as_str()] {
            assert_eq!(f.call(Some(&bearer(other)), HERE).await, wrong_kind);
            let forged = format!("{}{}", &other[..other.len() - 43], "A".repeat(43));
            assert_eq!(f.call(Some(&bearer(&forged)), HERE).await, unauthenticated);
        }

        // Revoked: refused on the very next request, and told so (it verifies); a forgery of
        // it learns nothing.
        f.coffer.revoke_node(&f.op, record.id).await.unwrap();
        assert_eq!(
            f.call(Some(&bearer(&token)), HERE).await,
            (StatusCode::UNAUTHORIZED, code(ErrorCode::NodeRevoked))
        );
        assert_eq!(f.call(Some(&bearer(&forged)), HERE).await, unauthenticated);
    }

    #[tokio::test]
    async fn node_auth_counts_failures_per_address_but_never_refuses_a_valid_token() {
        let f = fx().await;
        let (record, token) = f
            .coffer
            .create_node(&f.op, NodeName::parse("edge-1").unwrap())
            .await
            .unwrap();
        let token = bearer(token.expose_secret());
        let guess = bearer(&format!(
            "coffernode_{}_{}",
            "ab".repeat(16),
            "A".repeat(43)
        ));
        let mut statuses = Vec::new();
        for _ in 0..=crate::limiter::MAX_FAILURES {
            statuses.push(f.call(Some(&guess), HERE).await.0);
        }
        assert_eq!(
            statuses.last(),
            Some(&StatusCode::TOO_MANY_REQUESTS),
            "{statuses:?}"
        );
        assert_eq!(
            f.call(Some(&guess), HERE).await,
            (StatusCode::TOO_MANY_REQUESTS, code(ErrorCode::RateLimited))
        );
        assert_eq!(
            f.call(Some(&token), HERE).await,
            (StatusCode::OK, record.id.to_string()),
            "a valid node token still works from the refused address"
        );
        // Also one never seen before (nothing cached for it), and a revoked one is told so.
        let (second, fresh) = f
            .coffer
            .create_node(&f.op, NodeName::parse("edge-2").unwrap())
            .await
            .unwrap();
        let fresh = bearer(fresh.expose_secret());
        assert_eq!(
            f.call(Some(&fresh), HERE).await,
            (StatusCode::OK, second.id.to_string())
        );
        f.coffer.revoke_node(&f.op, second.id).await.unwrap();
        assert_eq!(
            f.call(Some(&fresh), HERE).await,
            (StatusCode::UNAUTHORIZED, code(ErrorCode::NodeRevoked))
        );
        // Other addresses are not affected.
        assert_eq!(
            f.call(Some(&guess), [192, 0, 2, 2]).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
}
