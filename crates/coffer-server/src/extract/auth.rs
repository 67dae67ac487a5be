//! Who is asking: the API token (`Auth`) or node token (`NodeAuth`) of a request, checked by
//! core; the client's address and the request's context for the audit log; and the one answer
//! to a refused authentication (counted against the failed-authentication limit).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use coffer_api::ErrorCode;
use coffer_core::{CoreError, Principal, RequestContext};
use coffer_storage::NodeRecord;

use crate::error::ApiError;
use crate::frame::REQUEST_ID;
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug)]
pub struct Auth(pub Principal);

impl<S> FromRequestParts<S> for Auth
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Auth, ApiError> {
        let app = AppState::from_ref(state);
        let token = bearer_token(parts, "API token", &app)?;
        let client = client_addr(parts, &app);
        let context = request_context(parts, client);
        match app.coffer.authenticate(token, context).await {
            Ok(principal) => {
                tracing::Span::current()
                    .record("token_id", tracing::field::display(principal.token_id));
                Ok(Auth(principal))
            }
            Err(e) => Err(refusal(&app, e, client).await),
        }
    }
}

/// An authenticated edge node: a `coffernode_` bearer token, checked by
/// [`coffer_core::Coffer::authenticate_node`], with the request context, the failed-attempt
/// limit per address and the error envelope of the other token extractors (401 for a missing,
/// malformed, unknown or revoked token; 403 `wrong_token_kind` for a valid API or service
/// token).
#[derive(Debug)]
pub(crate) struct NodeAuth(pub NodeRecord);

impl<S> FromRequestParts<S> for NodeAuth
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<NodeAuth, ApiError> {
        let app = AppState::from_ref(state);
        let token = bearer_token(parts, "node token", &app)?;
        let client = client_addr(parts, &app);
        let context = request_context(parts, client);
        match app.coffer.authenticate_node(token, context).await {
            Ok(node) => {
                tracing::Span::current().record("token_id", tracing::field::display(node.id));
                Ok(NodeAuth(node))
            }
            Err(e) => Err(refusal(&app, e, client).await),
        }
    }
}

/// The client's address: the TCP peer, or the address a trusted proxy reports for it
/// ([`crate::TrustedProxies`]). Absent only when the router is driven in-process without a
/// peer.
pub(crate) fn client_addr(parts: &Parts, app: &AppState) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    Some(app.trusted_proxies.client(peer, &parts.headers))
}

/// What the audit log records about where a request came from.
pub(crate) fn request_context(parts: &Parts, client: Option<IpAddr>) -> RequestContext {
    RequestContext {
        request_id: parts
            .headers
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        client: client.map(|ip| ip.to_string()),
    }
}

/// The answer to a failed authentication, and the failed-authentication limit, applied only
/// here, after a failure: a token that verifies is never refused because of other requests'
/// failures from its address (a proxy, a NAT), and a successful request never touches the
/// limiter. From an address over its budget, a token that does not verify gets 429; otherwise
/// the failure counts against the address, and using up the budget is recorded once. What a
/// verified token is told (a valid token of the wrong kind, a revoked node) and storage
/// outages pass through.
pub(crate) async fn refusal(app: &AppState, e: CoreError, client: Option<IpAddr>) -> ApiError {
    // Every token refused is counted: unknown, revoked (a node too), or of the wrong kind for
    // this API. The answer to an address over its budget (429 below) is counted here as well
    // as among the rate-limited.
    if let (
        CoreError::Unauthenticated(_) | CoreError::WrongTokenKind(_) | CoreError::NodeRevoked,
        Some(metrics),
    ) = (&e, &app.metrics)
    {
        metrics.auth_failure();
    }
    let (CoreError::Unauthenticated(_), Some(ip)) = (&e, client) else {
        return e.into();
    };
    if let Some(wait) = app.auth_limiter.blocked(ip) {
        if let Some(metrics) = &app.metrics {
            metrics.rate_limited(coffer_metrics::Limit::AuthFailures);
        }
        return rate_limited(wait);
    }
    if app.auth_limiter.failed(ip) {
        tracing::warn!(client = %ip, "too many failed authentications; refusing this address's failures for a while");
        app.coffer
            .record_rate_limited(&ip.to_string(), crate::limiter::MAX_FAILURES)
            .await;
    }
    e.into()
}

/// The answer to an address that used up its failed-authentication budget.
pub(crate) fn rate_limited(wait: std::time::Duration) -> ApiError {
    let secs = wait.as_secs().max(1);
    ApiError {
        retry_after: Some(secs),
        ..ApiError::new(
            ErrorCode::RateLimited,
            format!("too many failed authentications from this address; retry in {secs} s"),
        )
    }
}

/// The bearer token of the request, or why there is none.
/// A malformed header (not text, not `Bearer`) counts as a failed authentication in the
/// metrics; a missing one does not (a probe, or a client that was not given a token).
pub(crate) fn bearer_token<'p>(
    parts: &'p Parts,
    kind: &str,
    app: &AppState,
) -> Result<&'p str, ApiError> {
    let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            format!("missing Authorization header (expected \"Bearer <{kind}>\")"),
        )
    })?;
    let malformed = |message: &'static str| {
        if let Some(metrics) = &app.metrics {
            metrics.auth_failure();
        }
        ApiError::new(ErrorCode::Unauthenticated, message)
    };
    let value = header
        .to_str()
        .map_err(|_| malformed("Authorization header is not valid text"))?;
    bearer(value).ok_or_else(|| malformed("Authorization header must use the Bearer scheme"))
}

/// The credentials of a `Bearer` authorization value (scheme case-insensitive, RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
