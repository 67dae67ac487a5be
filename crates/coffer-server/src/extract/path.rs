//! Which resource: the ids in a request's path, each parsed (a bad one named in the error).

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use coffer_api::ErrorCode;
use coffer_types::{AccountId, IdError, SecretId, ServiceId, StoreId, TokenId};

use crate::error::ApiError;

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
            .map_err(|rejection| match invalid_utf8_param(&rejection) {
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

/// The id parameter whose value does not percent-decode to UTF-8, named by axum's rejection
/// (its text is "Invalid UTF-8 in `NAME`"), if it is one of the ids routes take.
fn invalid_utf8_param(rejection: &RawPathParamsRejection) -> Option<&'static str> {
    let RawPathParamsRejection::InvalidUtf8InPathParam(e) = rejection else {
        return None;
    };
    let text = e.body_text();
    let name = text.split('`').nth(1)?;
    [
        "account_id",
        "store_id",
        "secret_id",
        "token_id",
        "service_id",
    ]
    .into_iter()
    .find(|known| *known == name)
}
