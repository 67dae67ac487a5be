//! The runtime API (`/runtime/v1`): where a bound service reads its secrets with its service
//! token. The second permission check (binding, secret, scope) is core's; this module turns the
//! answer into a `text/plain` or JSON body that is wiped from memory once sent.

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use coffer_api::{ErrorCode, STORE_BINDINGS_HEADER};
use coffer_core::{AllBindings, CoreError, ServicePrincipal};
use coffer_crypto::Plaintext;
use coffer_types::TokenId;
use zeroize::Zeroizing;

use crate::error::{ApiError, ApiResult};
use crate::extract::{bearer_token, client_addr, over_limit, refusal, request_context};
use crate::state::AppState;

/// The authenticated bound service.
#[derive(Debug)]
pub struct ServiceAuth(pub ServicePrincipal);

impl FromRequestParts<AppState> for ServiceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<ServiceAuth, ApiError> {
        let token = bearer_token(parts, "service token")?;
        let client = client_addr(parts, app);
        // The context is only built for an API token presented here (its audit entry).
        let context = || request_context(parts, client);
        let over_limit = over_limit(app, client);
        // The token is named in the request's log line by the handler's response
        // ([`LoggedToken`]), not recorded in the span as the control-plane API does: a span
        // field recorded after the fact costs the fmt subscriber a span lookup and a re-format,
        // a measurable part of a read.
        let result = match over_limit {
            None => app.coffer.authenticate_service(token, context).await,
            Some(_) => {
                app.coffer
                    .authenticate_service_over_limit(token, context)
                    .await
            }
        };
        match result {
            Ok(principal) => Ok(ServiceAuth(principal)),
            Err(e) => Err(refusal(app, e, client, over_limit).await),
        }
    }
}

/// The service token a runtime response was made for, carried in the response's extensions to
/// the request's log line (`token_id`), so that a request id can be tied to the token that made
/// it. Only the id: never the token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoggedToken(pub(crate) TokenId);

/// `result` as a response naming `who`'s token in the log line, served or refused.
fn logged(who: &ServicePrincipal, result: ApiResult<Response>) -> Response {
    let mut response = result.into_response();
    response.extensions_mut().insert(LoggedToken(who.token_id));
    response
}

/// Response bytes that are wiped when the response has been sent (or dropped).
struct Wiped<T>(T);

impl AsRef<[u8]> for Wiped<Plaintext> {
    fn as_ref(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl AsRef<[u8]> for Wiped<Zeroizing<Vec<u8>>> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn secret_response(bytes: Bytes, content_type: &'static str) -> Response {
    let mut response = (StatusCode::OK, Body::from(bytes)).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Names in runtime paths are ASCII when they can exist at all; a segment that does not even
/// decode to UTF-8 names nothing, and is answered like any other name that does not exist.
fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v).map_err(|_| {
        ApiError::new(
            ErrorCode::BindingNotFound,
            "Secret not found: the path is not valid UTF-8",
        )
    })
}

/// `GET /runtime/v1/bindings/{binding}`: the value as `text/plain`.
pub async fn read_binding(
    State(app): State<AppState>,
    ServiceAuth(who): ServiceAuth,
    binding: Result<Path<String>, PathRejection>,
) -> Response {
    let result = async {
        let binding = path(binding)?;
        let value = app.coffer.read_binding(&who, &binding).await?;
        Ok(secret_response(
            Bytes::from_owner(Wiped(value)),
            "text/plain; charset=utf-8",
        ))
    };
    logged(&who, result.await)
}

/// `GET /runtime/v1/stores/{binding}/secrets/{name}`: one secret through a store binding.
pub async fn read_store_secret(
    State(app): State<AppState>,
    ServiceAuth(who): ServiceAuth,
    names: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let result = async {
        let (binding, name) = path(names)?;
        let value = app.coffer.read_store_binding(&who, &binding, &name).await?;
        Ok(secret_response(
            Bytes::from_owner(Wiped(value)),
            "text/plain; charset=utf-8",
        ))
    };
    logged(&who, result.await)
}

/// `GET /runtime/v1/bindings`: every secret binding as `{"BINDING": "value", ...}`, and the
/// store bindings' names in the `coffer-store-bindings` header.
pub async fn read_all(State(app): State<AppState>, ServiceAuth(who): ServiceAuth) -> Response {
    let result = read_all_values(&app, &who).await;
    logged(&who, result)
}

async fn read_all_values(app: &AppState, who: &ServicePrincipal) -> ApiResult<Response> {
    let AllBindings {
        values,
        store_bindings,
    } = app.coffer.read_all_bindings(who).await?;
    // Sized for the worst case (every byte escaped as \uXXXX), so the buffer never grows and
    // leaves no unwiped copy behind.
    let capacity = 2 + values
        .iter()
        .map(|(b, v)| b.as_str().len() + 6 * v.len() + 6)
        .sum::<usize>();
    let mut body = Zeroizing::new(Vec::with_capacity(capacity));
    {
        use serde::ser::{SerializeMap, Serializer};
        let mut ser = serde_json::Serializer::new(&mut *body);
        let mut map = ser.serialize_map(Some(values.len())).map_err(internal)?;
        for (binding, value) in &values {
            // Values arrive as JSON strings, so they are UTF-8.
            let text = std::str::from_utf8(value.expose_secret())
                .map_err(|_| internal("a stored value is not UTF-8"))?;
            map.serialize_entry(binding.as_str(), text)
                .map_err(internal)?;
        }
        map.end().map_err(internal)?;
    }
    debug_assert!(body.len() <= capacity);
    let mut response = secret_response(Bytes::from_owner(Wiped(body)), "application/json");
    if !store_bindings.is_empty() {
        let names: Vec<&str> = store_bindings.iter().map(|b| b.as_str()).collect();
        // Binding names are `[A-Za-z_][A-Za-z0-9_]*`: always a valid header value.
        let value = HeaderValue::from_str(&names.join(",")).map_err(internal)?;
        response
            .headers_mut()
            .insert(HeaderName::from_static(STORE_BINDINGS_HEADER), value);
    }
    Ok(response)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::from(CoreError::Internal(format!("runtime response: {e}")))
}
