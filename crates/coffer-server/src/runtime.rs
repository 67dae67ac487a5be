//! The runtime API (`/runtime/v1`): where a bound service reads its secrets with its service
//! token. The second permission check (binding, secret, scope) is core's; this module turns the
//! answer into a `text/plain` or JSON body that is wiped from memory once sent.

use std::borrow::Cow;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use coffer_api::{ErrorCode, STORE_BINDINGS_HEADER};
use coffer_core::{AllBindings, CoreError, ServicePrincipal};
use coffer_crypto::Plaintext;
use coffer_types::BindingName;
use zeroize::Zeroizing;

use crate::error::{ApiError, ApiResult};
use crate::extract::{bearer_token, client_addr, refusal, request_context};
use crate::request_log::{AccessLogged, LoggedToken};
use crate::state::{AppState, BATCH_BUDGET, BATCH_BUDGET_KIB};
use crate::static_headers::{application_json, no_store, text_plain};

/// The authenticated bound service.
#[derive(Debug)]
pub struct ServiceAuth(pub ServicePrincipal);

impl FromRequestParts<AppState> for ServiceAuth {
    /// A refusal; one past the token's read rate names the token in its log line, as the
    /// token verified.
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<ServiceAuth, Response> {
        let token =
            bearer_token(parts, "service token", app).map_err(IntoResponse::into_response)?;
        let client = client_addr(parts, app);
        // The context is only built for an API token presented here (its audit entry).
        let context = || request_context(parts, client);
        // The token is named in the request's log line by the handler's response
        // ([`LoggedToken`]), not recorded in the span as the control-plane API does: a span
        // field recorded after the fact costs the fmt subscriber a span lookup and a re-format,
        // a measurable part of a read.
        match app.coffer.authenticate_service(token, context).await {
            Ok(principal) => {
                if let Some(limiter) = &app.read_limiter
                    && let Err(wait) = limiter.take(principal.token_id)
                {
                    if let Some(metrics) = &app.metrics {
                        metrics.rate_limited(coffer_metrics::Limit::RuntimeReads);
                    }
                    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                    let refused = Err(ApiError {
                        retry_after: Some(secs),
                        ..ApiError::new(
                            ErrorCode::ReadRateLimited,
                            format!("this service token is over its read rate; retry in {secs} s"),
                        )
                    });
                    // Not a success: its line is always written.
                    return Err(logged(&principal, AccessLogged(true), refused));
                }
                Ok(ServiceAuth(principal))
            }
            Err(e) => Err(refusal(app, e, client).await.into_response()),
        }
    }
}

/// `result` as a response naming `who`'s token in the log line, served or refused, if the line
/// is written (`access`, decided by the frame): the extension costs two allocations, a good
/// part of what a read allocates, and a success without `--access-log` gets no line.
fn logged(who: &ServicePrincipal, access: AccessLogged, result: ApiResult<Response>) -> Response {
    let mut response = result.into_response();
    if access.writes_line(response.status()) {
        response.extensions_mut().insert(LoggedToken(who.token_id));
    }
    response
}

/// Response bytes that are wiped when the response has been sent (or dropped).
struct Wiped<T>(T);

impl AsRef<[u8]> for Wiped<Plaintext> {
    fn as_ref(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

/// A batch read's body, holding its share of [`BATCH_BUDGET`] until it is sent (or dropped).
struct BatchBody {
    bytes: Zeroizing<Vec<u8>>,
    _budget: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Wiped<BatchBody> {
    fn as_ref(&self) -> &[u8] {
        &self.0.bytes
    }
}

fn secret_response(bytes: Bytes, content_type: HeaderValue) -> Response {
    let mut response = (StatusCode::OK, Body::from(bytes)).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CACHE_CONTROL, no_store());
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

/// `GET /runtime/v1/bindings/{binding}`: the value as `text/plain`. A thin wrapper of
/// [`read_binding_parts`], which an edge calls directly for most of these, before its router
/// (`runtime_front`).
pub async fn read_binding(
    State(app): State<AppState>,
    access: AccessLogged,
    binding: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    // A GET's body is not read.
    let (mut parts, _body) = req.into_parts();
    read_binding_parts(&app, &mut parts, access, path(binding).map(Cow::Owned)).await
}

/// The runtime read of one binding, routed or not: the service token checked ([`ServiceAuth`]),
/// then `binding` (the path's name, or why it names nothing) read. Everything the read does is
/// here, so that the read an edge answers before its router cannot differ from the routed one;
/// layers on the route are the exception (`router.rs`).
pub(crate) async fn read_binding_parts(
    app: &AppState,
    parts: &mut Parts,
    access: AccessLogged,
    binding: Result<Cow<'_, str>, ApiError>,
) -> Response {
    let who = match ServiceAuth::from_request_parts(parts, app).await {
        Ok(ServiceAuth(who)) => who,
        Err(refused) => return refused,
    };
    let result = async {
        let value = app.coffer.read_binding(&who, &binding?).await?;
        Ok(secret_response(
            Bytes::from_owner(Wiped(value)),
            text_plain(),
        ))
    };
    logged(&who, access, result.await)
}

/// `GET /runtime/v1/stores/{binding}/secrets/{name}`: one secret through a store binding.
pub async fn read_store_secret(
    State(app): State<AppState>,
    access: AccessLogged,
    ServiceAuth(who): ServiceAuth,
    names: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let result = async {
        let (binding, name) = path(names)?;
        let value = app.coffer.read_store_binding(&who, &binding, &name).await?;
        Ok(secret_response(
            Bytes::from_owner(Wiped(value)),
            text_plain(),
        ))
    };
    logged(&who, access, result.await)
}

/// `GET /runtime/v1/bindings`: every secret binding as `{"BINDING": "value", ...}`, and the
/// store bindings' names in the `coffer-store-bindings` header.
pub async fn read_all(
    State(app): State<AppState>,
    access: AccessLogged,
    ServiceAuth(who): ServiceAuth,
) -> Response {
    let result = read_all_values(&app, &who).await;
    logged(&who, access, result)
}

async fn read_all_values(app: &AppState, who: &ServicePrincipal) -> ApiResult<Response> {
    let AllBindings {
        values,
        store_bindings,
    } = app.coffer.read_all_bindings(who).await?;
    // Sized exactly, so the buffer is allocated once, never grows (a reallocation would leave
    // an unwiped copy) and costs no more than the answer.
    let len = json_object_len(&values);
    let held = values.iter().map(|(_, v)| v.len()).sum::<usize>() + len;
    let need = u32::try_from(held.div_ceil(1024).clamp(1, BATCH_BUDGET_KIB)).unwrap_or(u32::MAX);
    let Ok(budget) = app.batch_budget.clone().try_acquire_many_owned(need) else {
        return Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "too many batch reads in flight (at most {} MiB at once); retry in 1 s",
                    BATCH_BUDGET >> 20
                ),
            )
        });
    };
    let mut body = Zeroizing::new(vec![0u8; len]);
    let written = {
        use serde::ser::{SerializeMap, Serializer};
        // A fixed slice: writing past its end fails rather than reallocating.
        let mut out: &mut [u8] = &mut body;
        let mut ser = serde_json::Serializer::new(&mut out);
        let mut map = ser.serialize_map(Some(values.len())).map_err(internal)?;
        for (binding, value) in &values {
            // Values arrive as JSON strings, so they are UTF-8.
            let text = std::str::from_utf8(value.expose_secret())
                .map_err(|_| internal("a stored value is not UTF-8"))?;
            map.serialize_entry(binding.as_str(), text)
                .map_err(internal)?;
        }
        map.end().map_err(internal)?;
        len - out.len()
    };
    if written != len {
        return Err(internal(format!("the body is {written} bytes, not {len}")));
    }
    drop(values);
    let mut response = secret_response(
        Bytes::from_owner(Wiped(BatchBody {
            bytes: body,
            _budget: budget,
        })),
        application_json(),
    );
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

/// The length of `{"BINDING":"value",...}` as serde_json writes it.
fn json_object_len(values: &[(BindingName, Plaintext)]) -> usize {
    2 + values.len().saturating_sub(1)
        + values
            .iter()
            .map(|(b, v)| {
                json_string_len(b.as_str().as_bytes()) + 1 + json_string_len(v.expose_secret())
            })
            .sum::<usize>()
}

/// The length of `s` as a JSON string, quotes included, escaped as serde_json escapes: `"` and
/// `\` and the control characters with a short form take two bytes, the other control
/// characters six (`\u001f`), everything else (UTF-8 included) stays as it is.
fn json_string_len(s: &[u8]) -> usize {
    2 + s
        .iter()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::from(CoreError::Internal(format!("runtime response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The computed length is the length serde_json writes, for every kind of byte.
    #[test]
    fn batch_bodies_are_sized_exactly() {
        let all_ascii: String = (0u8..0x80).map(char::from).collect();
        let cases: Vec<Vec<(&str, String)>> = vec![
            vec![],
            vec![("A", String::new())],
            vec![
                ("A", "plain".into()),
                ("B_2", "with \"quotes\" and \\".into()),
            ],
            vec![
                ("C", all_ascii.clone()),
                ("D", "é€𝄞 \u{7f}\u{1f}\n\t".into()),
            ],
            vec![("E", "\u{0}".repeat(1000)), ("F", all_ascii.repeat(3))],
        ];
        for case in cases {
            let values: Vec<(BindingName, Plaintext)> = case
                .iter()
                .map(|(b, v)| {
                    (
                        BindingName::parse(b).unwrap(),
                        Plaintext::new(v.as_bytes().to_vec()),
                    )
                })
                .collect();
            let map: serde_json::Map<String, serde_json::Value> = case
                .iter()
                .map(|(b, v)| ((*b).to_owned(), serde_json::Value::String(v.clone())))
                .collect();
            let expected = serde_json::to_vec(&map).unwrap().len();
            assert_eq!(json_object_len(&values), expected, "{case:?}");
        }
    }
}
