/// Coffer's stable numeric error codes (all >= 1000), documented in `docs/api-errors.md`.
/// A code never changes meaning once released; new conditions get new codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: the body is not valid JSON or not UTF-8.
    MalformedJson,
    /// 400: a field has the wrong type, is missing, or is unknown.
    InvalidField,
    /// 413: the body is larger than 1 MiB.
    BodyTooLarge,
    /// 400: a path or query id is not 32 lowercase hex characters.
    InvalidId,
    /// 400: a store or secret name breaks the naming rules.
    InvalidName,
    /// 400: a scope is not one of the known scopes, or none was given.
    InvalidScope,
    /// 400: a value is empty or longer than 65,536 bytes.
    InvalidValue,
    /// 400: a comment is longer than allowed.
    InvalidComment,
    /// 400: a query parameter (page, per_page, order, direction, force, ...) is invalid.
    InvalidQuery,
    /// 400: a bulk request is empty or has too many items.
    InvalidBatch,
    /// 401: no credentials, or credentials that are not valid.
    Unauthenticated,
    /// 403: the credentials are valid but do not allow this.
    Forbidden,
    /// 429: too many failed authentications from this address; retry later.
    RateLimited,
    /// 429: a service token read faster than the runtime API's rate limit allows
    /// (`--runtime-rate-limit`); retry after `Retry-After`.
    ReadRateLimited,
    /// 401: a node token that is valid but was revoked (`coffer node revoke`). Said only to the
    /// holder of the real token; an edge that gets it stops serving.
    NodeRevoked,
    /// 404: the account does not exist or is not visible to the caller.
    AccountNotFound,
    /// 404: no such store.
    StoreNotFound,
    /// 404: no such secret.
    SecretNotFound,
    /// 404: no such route.
    RouteNotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 409: a store of that name exists.
    StoreNameTaken,
    /// 409: a secret of that name exists in the store.
    SecretNameTaken,
    /// 409: the store still holds secrets and `force` was not set (`store_not_empty`).
    StoreNotEmpty,
    /// 409: the secret changed concurrently too many times; retry.
    Conflict,
    /// 400: a node registered a public key that is not a usable X25519 key.
    InvalidNodeKey,
    /// 409: the node registered another public key before (first registration wins).
    NodeKeyConflict,
    /// 400: the account's secrets quota would be exceeded (Cloudflare answers quota errors with
    /// 400 too).
    QuotaExceeded,
    /// 400: the account's store limit would be exceeded.
    StoreLimitExceeded,
    /// 400: a role is not one of the four roles.
    InvalidRole,
    /// 400: an expiry is unparseable or not in the future.
    InvalidExpiry,
    /// 404: no such API token in the account.
    TokenNotFound,
    /// 409: the token (an API or service token, or a node's) is already revoked.
    TokenAlreadyRevoked,
    /// 409: the operator's token and account cannot be revoked or deleted through the API.
    OperatorProtected,
    /// 409: a KEK rotation is still rewrapping keys (or stopped on a key it cannot rewrap).
    KekRotationRunning,
    /// 409: this server's KEK cannot be rotated (an edge, or a provider without rotation).
    KekRotationUnsupported,
    /// 409: the account already has a KEK of its own.
    AccountKekExists,
    /// 503: the account has a KEK of its own and it is unavailable (removed, or its token
    /// unreachable): its values cannot be opened; other accounts are not affected.
    AccountKekUnavailable,
    /// 415: the body is multipart, which is never JSON.
    UnsupportedMediaType,
    /// 400: a binding is malformed: a bad binding name, a name used twice, a bad service type.
    InvalidBinding,
    /// 403: a deploy was refused because one of its bindings is not allowed (the deployer's
    /// role, a missing store or secret, or a secret without the service's scope). Cloudflare's
    /// code for the same refusal.
    BindingAuthorizationFailed,
    /// 403: a runtime read of a secret that no longer carries the service's type in its scopes.
    ScopeDenied,
    /// 403: a valid token used on the wrong API: a service token on the control-plane API, or an
    /// API token on the runtime API.
    WrongTokenKind,
    /// 404: no such service in the account.
    ServiceNotFound,
    /// 404: a runtime read of a binding the service does not have, or whose secret is gone
    /// (`Secret "<name>" not found`).
    BindingNotFound,
    /// 404: no such edge node.
    NodeNotFound,
    /// 409: a node that is not revoked has that name.
    NodeNameTaken,
    /// 503: a key or the storage backend is unavailable; retry later.
    Unavailable,
    /// 503: this edge node was revoked and serves nothing any more (it discarded its replica).
    EdgeRevoked,
    /// 500: an internal error. The body says no more; the log has a request id.
    Internal,
}

impl ErrorCode {
    pub const fn code(self) -> u32 {
        match self {
            ErrorCode::MalformedJson => 1001,
            ErrorCode::InvalidField => 1002,
            ErrorCode::BodyTooLarge => 1003,
            ErrorCode::InvalidId => 1004,
            ErrorCode::InvalidName => 1005,
            ErrorCode::InvalidScope => 1006,
            ErrorCode::InvalidValue => 1007,
            ErrorCode::InvalidComment => 1008,
            ErrorCode::InvalidQuery => 1009,
            ErrorCode::InvalidBatch => 1010,
            ErrorCode::UnsupportedMediaType => 1011,
            ErrorCode::InvalidRole => 1012,
            ErrorCode::InvalidExpiry => 1013,
            ErrorCode::InvalidBinding => 1014,
            ErrorCode::BindingAuthorizationFailed => 10021,
            ErrorCode::ScopeDenied => 1103,
            ErrorCode::WrongTokenKind => 1104,
            ErrorCode::ServiceNotFound => 1206,
            ErrorCode::BindingNotFound => 1207,
            ErrorCode::NodeNotFound => 1208,
            ErrorCode::NodeNameTaken => 1306,
            ErrorCode::TokenNotFound => 1205,
            ErrorCode::TokenAlreadyRevoked => 1304,
            ErrorCode::OperatorProtected => 1305,
            ErrorCode::KekRotationRunning => 1310,
            ErrorCode::KekRotationUnsupported => 1311,
            ErrorCode::AccountKekExists => 1312,
            ErrorCode::AccountKekUnavailable => 1503,
            ErrorCode::Unauthenticated => 1100,
            ErrorCode::Forbidden => 1101,
            ErrorCode::RateLimited => 1102,
            ErrorCode::ReadRateLimited => 1106,
            ErrorCode::NodeRevoked => 1105,
            ErrorCode::AccountNotFound => 1200,
            ErrorCode::StoreNotFound => 1201,
            ErrorCode::SecretNotFound => 1202,
            ErrorCode::RouteNotFound => 1203,
            ErrorCode::MethodNotAllowed => 1204,
            ErrorCode::StoreNameTaken => 1300,
            ErrorCode::SecretNameTaken => 1301,
            ErrorCode::StoreNotEmpty => 1302,
            ErrorCode::Conflict => 1303,
            ErrorCode::InvalidNodeKey => 1015,
            ErrorCode::NodeKeyConflict => 1307,
            ErrorCode::QuotaExceeded => 1400,
            ErrorCode::StoreLimitExceeded => 1401,
            ErrorCode::Unavailable => 1500,
            ErrorCode::Internal => 1501,
            ErrorCode::EdgeRevoked => 1502,
        }
    }

    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::MalformedJson
            | ErrorCode::InvalidNodeKey
            | ErrorCode::InvalidField
            | ErrorCode::InvalidId
            | ErrorCode::InvalidName
            | ErrorCode::InvalidScope
            | ErrorCode::InvalidValue
            | ErrorCode::InvalidComment
            | ErrorCode::InvalidQuery
            | ErrorCode::InvalidBatch
            | ErrorCode::InvalidRole
            | ErrorCode::InvalidExpiry
            | ErrorCode::InvalidBinding
            | ErrorCode::QuotaExceeded
            | ErrorCode::StoreLimitExceeded => 400,
            ErrorCode::BodyTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::Unauthenticated | ErrorCode::NodeRevoked => 401,
            ErrorCode::Forbidden
            | ErrorCode::BindingAuthorizationFailed
            | ErrorCode::ScopeDenied
            | ErrorCode::WrongTokenKind => 403,
            ErrorCode::RateLimited | ErrorCode::ReadRateLimited => 429,
            ErrorCode::AccountNotFound
            | ErrorCode::StoreNotFound
            | ErrorCode::SecretNotFound
            | ErrorCode::TokenNotFound
            | ErrorCode::ServiceNotFound
            | ErrorCode::BindingNotFound
            | ErrorCode::NodeNotFound
            | ErrorCode::RouteNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::StoreNameTaken
            | ErrorCode::SecretNameTaken
            | ErrorCode::NodeNameTaken
            | ErrorCode::StoreNotEmpty
            | ErrorCode::TokenAlreadyRevoked
            | ErrorCode::OperatorProtected
            | ErrorCode::KekRotationRunning
            | ErrorCode::KekRotationUnsupported
            | ErrorCode::AccountKekExists
            | ErrorCode::NodeKeyConflict
            | ErrorCode::Conflict => 409,
            ErrorCode::Unavailable | ErrorCode::EdgeRevoked | ErrorCode::AccountKekUnavailable => {
                503
            }
            ErrorCode::Internal => 500,
        }
    }

    /// The short stable name, e.g. `store_not_empty`.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::InvalidId => "invalid_id",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::InvalidComment => "invalid_comment",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::InvalidBatch => "invalid_batch",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::InvalidRole => "invalid_role",
            ErrorCode::InvalidExpiry => "invalid_expiry",
            ErrorCode::InvalidBinding => "invalid_binding",
            ErrorCode::BindingAuthorizationFailed => "binding_authorization_failed",
            ErrorCode::ScopeDenied => "scope_denied",
            ErrorCode::WrongTokenKind => "wrong_token_kind",
            ErrorCode::ServiceNotFound => "service_not_found",
            ErrorCode::BindingNotFound => "binding_not_found",
            ErrorCode::NodeNotFound => "node_not_found",
            ErrorCode::NodeNameTaken => "node_name_taken",
            ErrorCode::TokenNotFound => "token_not_found",
            ErrorCode::TokenAlreadyRevoked => "token_already_revoked",
            ErrorCode::OperatorProtected => "operator_protected",
            ErrorCode::KekRotationRunning => "kek_rotation_running",
            ErrorCode::KekRotationUnsupported => "kek_rotation_unsupported",
            ErrorCode::AccountKekExists => "account_kek_exists",
            ErrorCode::AccountKekUnavailable => "account_kek_unavailable",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ReadRateLimited => "read_rate_limited",
            ErrorCode::NodeRevoked => "node_revoked",
            ErrorCode::AccountNotFound => "account_not_found",
            ErrorCode::StoreNotFound => "store_not_found",
            ErrorCode::SecretNotFound => "secret_not_found",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::StoreNameTaken => "store_name_taken",
            ErrorCode::SecretNameTaken => "secret_name_taken",
            ErrorCode::StoreNotEmpty => "store_not_empty",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InvalidNodeKey => "invalid_node_key",
            ErrorCode::NodeKeyConflict => "node_key_conflict",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::StoreLimitExceeded => "store_limit_exceeded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal_error",
            ErrorCode::EdgeRevoked => "edge_revoked",
        }
    }
}
