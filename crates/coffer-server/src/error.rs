//! The one place where errors become HTTP responses: a status, a stable v4 error code and a
//! message. Bodies never carry internals; those go to the request's log span.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use coffer_api::replication::BatchError;
use coffer_api::{ApiMessage, Envelope, ErrorCode, ErrorSource};
use coffer_core::{CoreError, InvalidKind, Resource};

/// An error response in the v4 envelope.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Where in the request: a JSON pointer (`/0/name`) or a parameter name.
    pub pointer: Option<String>,
    /// Seconds to send as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            pointer: None,
            retry_after: None,
        }
    }

    pub fn at(code: ErrorCode, pointer: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            pointer: Some(pointer.into()),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body: Envelope<()> = Envelope::error(vec![ApiMessage {
            code: self.code.code(),
            message: self.message,
            documentation_url: None,
            source: self.pointer.map(|pointer| ErrorSource { pointer }),
        }]);
        let mut response = (status, axum::Json(body)).into_response();
        // Cloudflare's SDKs retry 409 and 5xx unless told not to; retrying a name clash or an
        // internal error cannot succeed, only a 1303 conflict or a 503 might.
        let retry = matches!(self.code, ErrorCode::Conflict | ErrorCode::Unavailable);
        if status == StatusCode::CONFLICT || status.is_server_error() {
            response.headers_mut().insert(
                HeaderName::from_static("x-should-retry"),
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> ApiError {
        ApiError {
            pointer: e.pointer,
            ..ApiError::new(e.code, e.message)
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        match e {
            CoreError::Invalid(invalid) => {
                let code = match invalid.kind {
                    InvalidKind::Field => ErrorCode::InvalidField,
                    InvalidKind::Id => ErrorCode::InvalidId,
                    InvalidKind::Name => ErrorCode::InvalidName,
                    InvalidKind::Role => ErrorCode::InvalidRole,
                    InvalidKind::Expiry => ErrorCode::InvalidExpiry,
                    InvalidKind::Scope => ErrorCode::InvalidScope,
                    InvalidKind::Value => ErrorCode::InvalidValue,
                    InvalidKind::Comment => ErrorCode::InvalidComment,
                    InvalidKind::Query => ErrorCode::InvalidQuery,
                    InvalidKind::Batch => ErrorCode::InvalidBatch,
                    InvalidKind::Binding => ErrorCode::InvalidBinding,
                };
                ApiError::at(
                    code,
                    invalid.field.clone(),
                    format!("{}: {}", invalid.field, invalid.message),
                )
            }
            CoreError::Unauthenticated(m) => ApiError::new(ErrorCode::Unauthenticated, m),
            e @ CoreError::NodeRevoked => ApiError::new(ErrorCode::NodeRevoked, e.to_string()),
            CoreError::Forbidden(p) => ApiError::new(
                ErrorCode::Forbidden,
                format!("this token's role lacks the {p} permission"),
            ),
            e @ (CoreError::OutsideOperatorReach(_) | CoreError::OperatorFirstTokenOnly) => {
                ApiError::new(ErrorCode::Forbidden, e.to_string())
            }
            CoreError::NotFound(Resource::Account) => {
                ApiError::new(ErrorCode::AccountNotFound, "account not found")
            }
            CoreError::NotFound(Resource::Store) => {
                ApiError::new(ErrorCode::StoreNotFound, "store not found")
            }
            CoreError::NotFound(Resource::Secret) => {
                ApiError::new(ErrorCode::SecretNotFound, "secret not found")
            }
            CoreError::NotFound(Resource::Token) => {
                ApiError::new(ErrorCode::TokenNotFound, "token not found")
            }
            CoreError::NotFound(Resource::ServiceToken) => ApiError::new(
                ErrorCode::TokenNotFound,
                "service token not found in this service",
            ),
            CoreError::NotFound(Resource::Service) => {
                ApiError::new(ErrorCode::ServiceNotFound, "service not found")
            }
            CoreError::NotFound(Resource::Node) => {
                ApiError::new(ErrorCode::NodeNotFound, "node not found")
            }
            e @ CoreError::BindingDenied { .. } => ApiError::new(
                ErrorCode::BindingAuthorizationFailed,
                format!("Secrets store binding authorization failed: {e}"),
            ),
            CoreError::WrongTokenKind(m) => ApiError::new(ErrorCode::WrongTokenKind, m),
            e @ (CoreError::BindingNotFound(_) | CoreError::BoundSecretNotFound(_)) => {
                ApiError::new(ErrorCode::BindingNotFound, e.to_string())
            }
            CoreError::ScopeDenied(m) => ApiError::new(ErrorCode::ScopeDenied, m),
            e @ CoreError::OperatorProtected(_) => {
                ApiError::new(ErrorCode::OperatorProtected, e.to_string())
            }
            e @ CoreError::AlreadyRevoked => {
                ApiError::new(ErrorCode::TokenAlreadyRevoked, e.to_string())
            }
            e @ CoreError::NameTaken { resource, .. } => {
                let code = match resource {
                    Resource::Store => ErrorCode::StoreNameTaken,
                    Resource::Secret => ErrorCode::SecretNameTaken,
                    Resource::Node => ErrorCode::NodeNameTaken,
                    // A deploy of a name taken meanwhile is retried as an update, so no
                    // request sees these; a clash with no code of its own is a conflict.
                    Resource::Service
                    | Resource::Account
                    | Resource::Token
                    | Resource::ServiceToken => ErrorCode::Conflict,
                };
                ApiError::new(code, e.to_string())
            }
            e @ CoreError::StoreNotEmpty => ApiError::new(ErrorCode::StoreNotEmpty, e.to_string()),
            e @ CoreError::QuotaExceeded { .. } => {
                ApiError::new(ErrorCode::QuotaExceeded, e.to_string())
            }
            e @ CoreError::StoreLimitExceeded { .. } => {
                ApiError::new(ErrorCode::StoreLimitExceeded, e.to_string())
            }
            e @ CoreError::Conflict => ApiError::new(ErrorCode::Conflict, e.to_string()),
            CoreError::KekRotationRunning(m) => ApiError::new(ErrorCode::KekRotationRunning, m),
            CoreError::KekRotationUnsupported(m) => {
                ApiError::new(ErrorCode::KekRotationUnsupported, m)
            }
            CoreError::AccountKekExists(m) => ApiError::new(ErrorCode::AccountKekExists, m),
            e @ CoreError::AccountKekUnavailable { .. } => {
                ApiError::new(ErrorCode::AccountKekUnavailable, e.to_string())
            }
            CoreError::InvalidNodeKey(m) => ApiError::new(ErrorCode::InvalidNodeKey, m.message()),
            e @ CoreError::NodeKeyConflict => {
                ApiError::new(ErrorCode::NodeKeyConflict, e.to_string())
            }
            CoreError::Unavailable(detail) => {
                tracing::error!(%detail, "unavailable");
                ApiError::new(ErrorCode::Unavailable, coffer_core::UNAVAILABLE_MESSAGE)
            }
            other => {
                tracing::error!(detail = %other, "internal error");
                ApiError::new(ErrorCode::Internal, coffer_core::INTERNAL_MESSAGE)
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Each name clash keeps its own code and says which kind of name is taken.
    #[test]
    fn a_name_clash_is_answered_with_its_resources_code() {
        for (resource, code, says) in [
            (
                Resource::Store,
                ErrorCode::StoreNameTaken,
                "a store named \"n\" already exists in this account",
            ),
            (
                Resource::Secret,
                ErrorCode::SecretNameTaken,
                "a secret named \"n\" already exists in this store",
            ),
            (
                Resource::Node,
                ErrorCode::NodeNameTaken,
                "a node named \"n\" already exists among the nodes that are not revoked",
            ),
            (
                Resource::Service,
                ErrorCode::Conflict,
                "a service named \"n\" already exists in this account",
            ),
        ] {
            let e = ApiError::from(CoreError::NameTaken {
                resource,
                name: "n".into(),
            });
            assert_eq!(e.code, code, "{resource:?}");
            assert_eq!(e.message, says, "{resource:?}");
        }
    }
}

#[cfg(test)]
mod shared_mapping {
    use super::*;
    use coffer_core::{Permission, Resource};

    /// The API's status of each error is the one core gives it (which the dashboard shows).
    #[test]
    fn the_api_answers_each_error_with_cores_status() {
        let errors = [
            CoreError::invalid(InvalidKind::Name, "name", "bad"),
            CoreError::Unauthenticated("no"),
            CoreError::NodeRevoked,
            CoreError::Forbidden(Permission::ViewAccount),
            CoreError::OperatorFirstTokenOnly,
            CoreError::NotFound(Resource::Store),
            CoreError::NameTaken {
                resource: Resource::Store,
                name: "x".into(),
            },
            CoreError::StoreNotEmpty,
            CoreError::QuotaExceeded {
                quota: 1,
                usage: 1,
                requested: 1,
            },
            CoreError::StoreLimitExceeded { limit: 1 },
            CoreError::OperatorProtected("p"),
            CoreError::AlreadyRevoked,
            CoreError::BindingDenied {
                binding: None,
                reason: "r".into(),
            },
            CoreError::WrongTokenKind("w"),
            CoreError::BindingNotFound("b".into()),
            CoreError::BoundSecretNotFound("s".into()),
            CoreError::ScopeDenied("s".into()),
            CoreError::Conflict,
            CoreError::KekRotationRunning("k".into()),
            CoreError::KekRotationUnsupported("k"),
            CoreError::AccountKekExists("k".into()),
            CoreError::NodeKeyConflict,
            CoreError::Unavailable("db down at 10.0.0.5".into()),
            CoreError::Internal("stack detail".into()),
        ];
        for e in errors {
            let status = e.http_status();
            let public = e.public_message();
            let api = ApiError::from(e);
            assert_eq!(api.code.http_status(), status, "{api:?}");
            assert!(!api.message.contains("10.0.0.5") && !api.message.contains("stack detail"));
            if status >= 500 {
                assert_eq!(api.message, public);
            }
        }
    }
}
