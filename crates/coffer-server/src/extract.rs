//! Extractors: authentication, path ids, query parameters and JSON bodies, each turning bad
//! input into an [`ApiError`] that names the problem.

use axum::body::Bytes;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use coffer_api::ErrorCode;
use coffer_core::{CoreError, Principal, RequestContext};
use coffer_storage::NodeRecord;
use coffer_types::{AccountId, IdError, SecretId, ServiceId, StoreId, TokenId};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::frame::REQUEST_ID;
use crate::state::AppState;

/// Request bodies larger than this are refused before parsing.
pub const MAX_BODY_BYTES: usize = coffer_core::MAX_REQUEST_BODY_BYTES;

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

/// The ids in the request path, parsed.
#[derive(Debug, Clone, Copy)]
pub struct PathIds {
    pub account: AccountId,
    store: Option<StoreId>,
    secret: Option<SecretId>,
    token: Option<TokenId>,
    service: Option<ServiceId>,
}

impl PathIds {
    /// The `{token_id}` of the route; an error only if the route has none (a routing bug).
    pub fn token(&self) -> Result<TokenId, ApiError> {
        self.token
            .ok_or_else(|| ApiError::new(ErrorCode::RouteNotFound, "no token in path"))
    }

    /// The `{service_id}` of the route; an error only if the route has none (a routing bug).
    pub fn service(&self) -> Result<ServiceId, ApiError> {
        self.service
            .ok_or_else(|| ApiError::new(ErrorCode::RouteNotFound, "no service in path"))
    }

    /// The `{token_id}` of the route, if it has one.
    pub fn token_opt(&self) -> Option<TokenId> {
        self.token
    }

    /// The `{store_id}` of the route; an error only if the route has none (a routing bug).
    pub fn store(&self) -> Result<StoreId, ApiError> {
        self.store
            .ok_or_else(|| ApiError::new(ErrorCode::RouteNotFound, "no store in path"))
    }

    pub fn secret(&self) -> Result<SecretId, ApiError> {
        self.secret
            .ok_or_else(|| ApiError::new(ErrorCode::RouteNotFound, "no secret in path"))
    }
}

fn parse_id<T>(
    name: &str,
    value: &str,
    parse: fn(&str) -> Result<T, IdError>,
) -> Result<T, ApiError> {
    parse(value).map_err(|e| ApiError::at(ErrorCode::InvalidId, name, format!("{name}: {e}")))
}

impl<S: Send + Sync> FromRequestParts<S> for PathIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<PathIds, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                // Nested routers see a stripped path; the original names every segment.
                let path = parts
                    .extensions
                    .get::<axum::extract::OriginalUri>()
                    .map_or(parts.uri.path(), |o| o.0.path());
                non_utf8_param(path)
            })
            .map_err(|param| match param {
                Some(name) => ApiError::at(
                    ErrorCode::InvalidId,
                    name,
                    format!("{name}: must be 32 lowercase hexadecimal characters"),
                ),
                None => ApiError::new(ErrorCode::InvalidId, "path parameters are not valid UTF-8"),
            })?;
        let mut account = None;
        let mut store = None;
        let mut secret = None;
        let mut token = None;
        let mut service = None;
        for (name, value) in &params {
            match name {
                "account_id" => account = Some(parse_id(name, value, AccountId::parse)?),
                "store_id" => store = Some(parse_id(name, value, StoreId::parse)?),
                "secret_id" => secret = Some(parse_id(name, value, SecretId::parse)?),
                "token_id" => token = Some(parse_id(name, value, TokenId::parse)?),
                "service_id" => service = Some(parse_id(name, value, ServiceId::parse)?),
                _ => {}
            }
        }
        let account =
            account.ok_or_else(|| ApiError::new(ErrorCode::RouteNotFound, "no account in path"))?;
        Ok(PathIds {
            account,
            store,
            secret,
            token,
            service,
        })
    }
}

/// Which id of a `/client/v4/accounts/{account_id}/...` path does not percent-decode to UTF-8
/// (axum's rejection does not say).
fn non_utf8_param(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // Where each route keeps its ids: segment index → parameter name.
    let ids: &[(usize, &'static str)] = match (segments.get(4), segments.get(5)) {
        (Some(&"secrets_store"), Some(&"services")) => {
            &[(3, "account_id"), (6, "service_id"), (8, "token_id")]
        }
        (Some(&"secrets_store"), _) => &[(3, "account_id"), (6, "store_id"), (8, "secret_id")],
        (Some(&"tokens"), _) => &[(3, "account_id"), (5, "token_id")],
        _ => &[(3, "account_id")],
    };
    ids.iter()
        .find(|(i, _)| {
            segments
                .get(*i)
                .is_some_and(|s| String::from_utf8(percent_decode(s)).is_err())
        })
        .map(|(_, name)| *name)
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Query parameters as decoded pairs, in order. Unknown parameters are ignored, as Cloudflare
/// does; known ones are validated by the handler's query parser.
#[derive(Debug, Default)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<QueryPairs, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        Ok(QueryPairs(
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        ))
    }
}

/// A JSON body: at most [`MAX_BODY_BYTES`], UTF-8, and
/// deserialized with the path of any bad field reported as a JSON pointer.
///
/// The bytes may hold secret values, so `Debug` shows only their length.
pub struct JsonBody(pub Bytes);

impl std::fmt::Debug for JsonBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JsonBody([redacted; {} bytes])", self.0.len())
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<JsonBody, ApiError> {
        // wrangler labels its JSON bodies `text/plain;charset=UTF-8`, some SDKs send no content
        // type, and `curl -d` says form-urlencoded: the body is parsed as JSON whatever it
        // claims to be. Only multipart, which is certainly not JSON, is refused.
        let is_multipart = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/")
            });
        if is_multipart {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "request body must be JSON, not multipart",
            ));
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::BodyTooLarge,
                    format!("request body exceeds {MAX_BODY_BYTES} bytes"),
                )
            })?;
        Ok(JsonBody(bytes))
    }
}

impl JsonBody {
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|b| b.is_ascii_whitespace())
    }

    fn text(&self) -> Result<&str, ApiError> {
        if self.is_empty() {
            return Err(ApiError::new(
                ErrorCode::MalformedJson,
                "request body is empty; expected JSON",
            ));
        }
        std::str::from_utf8(&self.0)
            .map_err(|_| ApiError::new(ErrorCode::MalformedJson, "request body is not valid UTF-8"))
    }

    /// Any JSON document of type `T` (used for arrays of ids).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        parse_at(self.text()?, "")
    }

    /// A JSON object of type `T`. serde's derived structs would also accept a positional array
    /// (`["name", ...]`); request bodies must be objects, so anything else is refused.
    pub fn object<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        object_at(self.text()?, "")
    }

    /// One object, or an array of objects. Returns the items and whether the body was an array.
    pub fn objects<T: DeserializeOwned>(&self) -> Result<(Vec<T>, bool), ApiError> {
        let text = self.text()?;
        if first_char(text) != Some('[') {
            return Ok((vec![object_at(text, "")?], false));
        }
        // Borrowed raw items: each is parsed (and checked to be an object) on its own, with
        // its index in the error pointer, and no copy of the body is made.
        let raw: Vec<&serde_json::value::RawValue> = parse_at(text, "")?;
        let items = raw
            .iter()
            .enumerate()
            .map(|(i, item)| object_at(item.get(), &format!("/{i}")))
            .collect::<Result<Vec<T>, _>>()?;
        Ok((items, true))
    }
}

fn first_char(text: &str) -> Option<char> {
    text.chars().find(|c| !c.is_ascii_whitespace())
}

fn object_at<'de, T: serde::Deserialize<'de>>(text: &'de str, prefix: &str) -> Result<T, ApiError> {
    if first_char(text) != Some('{') {
        // Say "malformed" for what is not JSON at all, "wrong type" for JSON that is not an object.
        parse_at::<serde::de::IgnoredAny>(text, prefix)?;
        let place = if prefix.is_empty() { "body" } else { prefix };
        let kind = match first_char(text) {
            Some('"') => "string",
            Some('[') => "sequence",
            Some('t' | 'f') => "boolean",
            Some('n') => "null",
            _ => "number",
        };
        return Err(ApiError::at(
            ErrorCode::InvalidField,
            place,
            format!("{place}: invalid type: {kind}, expected a JSON object"),
        ));
    }
    parse_at(text, prefix)
}

fn parse_at<'de, T: serde::Deserialize<'de>>(text: &'de str, prefix: &str) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(e, prefix))?;
    de.end()
        .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("malformed JSON: {e}")))?;
    Ok(value)
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>, prefix: &str) -> ApiError {
    let pointer = format!("{prefix}{}", pointer_of(e.path()));
    let inner = e.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let place = if pointer.is_empty() {
                "body".to_owned()
            } else {
                pointer.clone()
            };
            let message = scrub_literal(&strip_position(&inner));
            ApiError::at(
                ErrorCode::InvalidField,
                place.clone(),
                format!("{place}: {message}"),
            )
        }
        _ => ApiError::new(ErrorCode::MalformedJson, format!("malformed JSON: {inner}")),
    }
}

/// serde_json appends " at line L column C"; the pointer says more, so drop it.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// serde's type errors quote the offending input (`invalid type: integer `1234`, expected a
/// string`). A mistyped value may be a secret, so keep only its kind and what was expected.
fn scrub_literal(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let kind_end = rest.find(['`', '"', ',']).unwrap_or(rest.len());
            let kind = rest[..kind_end].trim();
            let expected = rest.rfind(", expected").map_or("", |i| &rest[i..]);
            return format!("{prefix}{kind}{expected}");
        }
    }
    message.to_owned()
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                out.push('/');
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Enum { variant } => {
                out.push('/');
                out.push_str(variant);
            }
            Segment::Unknown => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_do_not_echo_input() {
        for (json, expected) in [
            (
                r#"{"name": 123456}"#,
                "invalid type: integer, expected a string",
            ),
            (r#"{"name": "hunter2"}"#, "invalid type: string, expected"),
            (
                r#"{"name": 1.5}"#,
                "invalid type: floating point, expected a string",
            ),
            (
                r#"{"name": true}"#,
                "invalid type: boolean, expected a string",
            ),
        ] {
            #[derive(Debug, serde::Deserialize)]
            #[allow(dead_code)]
            struct Named {
                name: Vec<String>,
            }
            #[derive(Debug, serde::Deserialize)]
            #[allow(dead_code)]
            struct Strict {
                name: String,
            }
            let body = JsonBody(Bytes::from(json));
            let err = if json.contains("hunter2") {
                body.parse::<Named>().unwrap_err()
            } else {
                body.parse::<Strict>().unwrap_err()
            };
            assert_eq!(err.code, ErrorCode::InvalidField);
            assert!(err.message.contains(expected), "{}", err.message);
            for literal in ["123456", "hunter2", "1.5", "true"] {
                assert!(
                    !err.message.contains(literal),
                    "{} echoes {literal}",
                    err.message
                );
            }
            assert_eq!(err.pointer.as_deref(), Some("/name"));
        }
    }

    #[test]
    fn body_debug_shows_only_the_length() {
        let body = JsonBody(Bytes::from_static(
            br#"[{"name":"k","value":"hunter2","scopes":["workers"]}]"#,
        ));
        let debug = format!("{body:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("redacted"), "{debug}");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
