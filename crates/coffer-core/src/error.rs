use coffer_storage::{Entity, StorageError};
use coffer_types::AccountId;

/// What kind of input was invalid; the server maps each to a stable API error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    /// A body field out of its range (one without a more specific kind below).
    Field,
    Id,
    Name,
    Role,
    Expiry,
    Scope,
    Value,
    Comment,
    Query,
    Batch,
    /// A binding: its name, a duplicate, the service type, too many bindings.
    Binding,
}

/// An invalid input, naming where it was found (a JSON pointer like `/0/name` or a query
/// parameter name) and why. The message never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub kind: InvalidKind,
    pub field: String,
    pub message: String,
}

/// Resources an error can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Account,
    Store,
    Secret,
    Token,
    Service,
    ServiceToken,
    Node,
}

impl Resource {
    /// The resource as a noun in messages ("a store named ... already exists").
    pub fn noun(self) -> &'static str {
        match self {
            Resource::Account => "account",
            Resource::Store => "store",
            Resource::Secret => "secret",
            Resource::Token => "token",
            Resource::Service => "service",
            Resource::ServiceToken => "service token",
            Resource::Node => "node",
        }
    }

    /// Where a name of this resource must be unique, as said after "already exists".
    fn name_scope(self) -> &'static str {
        match self {
            Resource::Store | Resource::Service | Resource::Token => " in this account",
            Resource::Secret => " in this store",
            Resource::Node => " among the nodes that are not revoked",
            Resource::Account | Resource::ServiceToken => "",
        }
    }
}

/// Errors of core operations, in domain terms.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(Invalid),
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A node token that verifies but was revoked: said only to the holder of the real token,
    /// so that a revoked edge learns it is revoked and stops serving.
    #[error("node token has been revoked")]
    NodeRevoked,
    #[error("this token lacks the {0} permission")]
    Forbidden(crate::Permission),
    /// The instance operator in another account, asking for what it may do only in its own
    /// ([`crate::operator_reaches`]).
    #[error(
        "the instance operator administers other accounts, not their contents: {0} in this account is for the account's own tokens"
    )]
    OutsideOperatorReach(crate::Permission),
    /// The instance operator creating a token in another account that already has one, or
    /// one that is not a super_admin.
    #[error(
        "in another account the instance operator creates only the first token, a super_admin; more tokens are made by that account's super_admin (account:manage)"
    )]
    OperatorFirstTokenOnly,
    #[error("{0:?} not found")]
    NotFound(Resource),
    #[error("a {} named {name:?} already exists{}", resource.noun(), resource.name_scope())]
    NameTaken { resource: Resource, name: String },
    #[error(
        "store_not_empty: the store still holds secrets; delete them first, or delete the store with them: `coffer store delete ID --force`, or `?force=true` on the API (wrangler's `secrets-store store delete` has no such option)"
    )]
    StoreNotEmpty,
    #[error(
        "secrets quota exceeded: the account may hold {quota} secrets and holds {usage}; this request adds {requested}"
    )]
    QuotaExceeded {
        quota: u64,
        usage: u64,
        requested: u64,
    },
    #[error("store limit exceeded: an account may hold at most {limit} stores")]
    StoreLimitExceeded { limit: u64 },
    /// The operator's token and account are not removable through the API: that would lock the
    /// instance out.
    #[error("{0}")]
    OperatorProtected(&'static str),
    /// An API token, a service token or a node (its token) that was revoked before.
    #[error("the token is already revoked")]
    AlreadyRevoked,
    /// A deploy refused by its first permission check: the deployer's role, a missing store
    /// or secret, or a secret without the service's scope. `binding` names the binding that
    /// failed (none when the role alone refuses a deploy without bindings).
    #[error("{}{reason}", binding.as_ref().map(|b| format!("binding {b}: ")).unwrap_or_default())]
    BindingDenied {
        binding: Option<String>,
        reason: String,
    },
    /// A valid token used on the API it is not for (service token on the control plane, API
    /// token on the runtime API).
    #[error("{0}")]
    WrongTokenKind(&'static str),
    /// A runtime read of a binding the service does not have. Carries the name asked for
    /// (`binding "<name>" not found`).
    #[error("binding \"{0}\" not found")]
    BindingNotFound(String),
    /// A runtime read through a binding the service has, of a secret that is gone (or, through
    /// a store binding, that the store does not give the service). Carries the secret's name
    /// (`Secret "<name>" not found`, as Miniflare says it).
    #[error("Secret \"{0}\" not found")]
    BoundSecretNotFound(String),
    /// A runtime read of a secret whose scopes no longer include the service's type.
    #[error("{0}")]
    ScopeDenied(String),
    #[error("the secret was modified concurrently; retry")]
    Conflict,
    /// A KEK rotation has keys left to rewrap (or stopped on one it cannot rewrap).
    #[error("{0}")]
    KekRotationRunning(String),
    /// This server's KEK cannot be rotated.
    #[error("{0}")]
    KekRotationUnsupported(&'static str),
    /// A node's key registration refused: the key is not a usable X25519 key, or it cannot be
    /// registered yet.
    #[error("{}", .0.message())]
    InvalidNodeKey(NodeKeyRefusal),
    /// A node registered another public key before (first registration wins), or another node,
    /// revoked ones included, registered this one (a key is never shared between nodes).
    #[error(
        "this node registered another public key before, or another node (possibly revoked) registered this one: first registration wins and no two nodes share a key. If the edge's node key was replaced or copied from another edge, or another machine uses this node token, register a new node (coffer node create) and start its edge on a fresh data dir"
    )]
    NodeKeyConflict,
    /// The account has a KEK of its own and it cannot be used (the key file or token object
    /// was removed, or the token is unreachable): the account's DEKs are wrapped by it alone.
    #[error(
        "the account's own KEK ({kek_id}) is unavailable: the values of account {account} cannot be read or written until the operator restores that key; other accounts are not affected"
    )]
    AccountKekUnavailable { account: AccountId, kek_id: String },
    /// The account already has a KEK of its own.
    #[error("{0}")]
    AccountKekExists(String),
    /// A key or the storage backend is unavailable. The detail is for logs only.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Stored data failed to open or decode. The detail is for logs only.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a client is told of [`CoreError::Unavailable`] (the detail goes to the log only).
pub const UNAVAILABLE_MESSAGE: &str = "service temporarily unavailable; retry later";
/// What a client is told of [`CoreError::Internal`] (the detail goes to the log only).
pub const INTERNAL_MESSAGE: &str = "internal error";

impl CoreError {
    /// The HTTP status of this error wherever a client is answered (the API's error codes map
    /// to the same; the dashboard shows an invalid form with 422 instead of 400).
    pub fn http_status(&self) -> u16 {
        match self {
            CoreError::Invalid(_)
            | CoreError::InvalidNodeKey(_)
            | CoreError::QuotaExceeded { .. }
            | CoreError::StoreLimitExceeded { .. } => 400,
            CoreError::Unauthenticated(_) | CoreError::NodeRevoked => 401,
            CoreError::Forbidden(_)
            | CoreError::OutsideOperatorReach(_)
            | CoreError::OperatorFirstTokenOnly
            | CoreError::BindingDenied { .. }
            | CoreError::ScopeDenied(_)
            | CoreError::WrongTokenKind(_) => 403,
            CoreError::NotFound(_)
            | CoreError::BindingNotFound(_)
            | CoreError::BoundSecretNotFound(_) => 404,
            CoreError::NameTaken { .. }
            | CoreError::StoreNotEmpty
            | CoreError::AlreadyRevoked
            | CoreError::OperatorProtected(_)
            | CoreError::KekRotationRunning(_)
            | CoreError::KekRotationUnsupported(_)
            | CoreError::AccountKekExists(_)
            | CoreError::NodeKeyConflict
            | CoreError::Conflict => 409,
            CoreError::Unavailable(_) | CoreError::AccountKekUnavailable { .. } => 503,
            CoreError::Internal(_) => 500,
        }
    }

    /// What a client may be told: the error's own sentence, or a fixed one for an outage or
    /// an internal error, whose detail is for the log alone.
    ///
    /// Every variant is named, so a new one is a decision here, not a default: its sentence
    /// goes to clients only if it carries nothing meant for the log.
    pub fn public_message(&self) -> String {
        match self {
            CoreError::Unavailable(_) => UNAVAILABLE_MESSAGE.to_owned(),
            CoreError::Internal(_) => INTERNAL_MESSAGE.to_owned(),
            // Sentences written for the caller: fixed text, the caller's own input (names,
            // fields), or ids the caller may know (the account's own KEK id, counts).
            CoreError::Invalid(_)
            | CoreError::Unauthenticated(_)
            | CoreError::NodeRevoked
            | CoreError::Forbidden(_)
            | CoreError::OutsideOperatorReach(_)
            | CoreError::OperatorFirstTokenOnly
            | CoreError::NotFound(_)
            | CoreError::NameTaken { .. }
            | CoreError::StoreNotEmpty
            | CoreError::QuotaExceeded { .. }
            | CoreError::StoreLimitExceeded { .. }
            | CoreError::OperatorProtected(_)
            | CoreError::AlreadyRevoked
            | CoreError::BindingDenied { .. }
            | CoreError::WrongTokenKind(_)
            | CoreError::BindingNotFound(_)
            | CoreError::BoundSecretNotFound(_)
            | CoreError::ScopeDenied(_)
            | CoreError::Conflict
            | CoreError::KekRotationRunning(_)
            | CoreError::KekRotationUnsupported(_)
            | CoreError::InvalidNodeKey(_)
            | CoreError::NodeKeyConflict
            | CoreError::AccountKekUnavailable { .. }
            | CoreError::AccountKekExists(_) => self.to_string(),
        }
    }

    pub fn invalid(
        kind: InvalidKind,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> CoreError {
        CoreError::Invalid(Invalid {
            kind,
            field: field.into(),
            message: message.into(),
        })
    }
}

impl From<StorageError> for CoreError {
    fn from(e: StorageError) -> CoreError {
        match e {
            StorageError::NotFound(Entity::Store) => CoreError::NotFound(Resource::Store),
            StorageError::NotFound(Entity::Secret | Entity::Version) => {
                CoreError::NotFound(Resource::Secret)
            }
            StorageError::NotFound(Entity::Account) => CoreError::NotFound(Resource::Account),
            StorageError::NotFound(Entity::Token) => CoreError::NotFound(Resource::Token),
            StorageError::NotFound(Entity::Service) => CoreError::NotFound(Resource::Service),
            StorageError::NotFound(Entity::ServiceToken) => {
                CoreError::NotFound(Resource::ServiceToken)
            }
            StorageError::NotFound(Entity::Node) => CoreError::NotFound(Resource::Node),
            StorageError::AlreadyRevoked => CoreError::AlreadyRevoked,
            StorageError::NotFound(other) => CoreError::Internal(format!("{other:?} not found")),
            StorageError::NameTaken { entity, name } => match entity {
                Entity::Store => CoreError::NameTaken {
                    resource: Resource::Store,
                    name,
                },
                Entity::Secret => CoreError::NameTaken {
                    resource: Resource::Secret,
                    name,
                },
                Entity::Node => CoreError::NameTaken {
                    resource: Resource::Node,
                    name,
                },
                Entity::Service => CoreError::NameTaken {
                    resource: Resource::Service,
                    name,
                },
                other => CoreError::Internal(format!("a name of a {other:?} taken")),
            },
            StorageError::NotEmpty => CoreError::StoreNotEmpty,
            StorageError::QuotaExceeded {
                quota,
                usage,
                requested,
            } => CoreError::QuotaExceeded {
                quota,
                usage,
                requested,
            },
            StorageError::LimitExceeded { limit, .. } => CoreError::StoreLimitExceeded { limit },
            StorageError::Conflict => CoreError::Conflict,
            StorageError::AlreadyExists(Entity::NodeKey) => CoreError::NodeKeyConflict,
            StorageError::Corrupted(m) => CoreError::Internal(m),
            StorageError::Unavailable(m) => CoreError::Unavailable(m),
            other => CoreError::Internal(other.to_string()),
        }
    }
}

impl From<coffer_crypto::CryptoError> for CoreError {
    fn from(e: coffer_crypto::CryptoError) -> CoreError {
        match e {
            coffer_crypto::CryptoError::KeyUnavailable(m) => CoreError::Unavailable(m),
            other => CoreError::Internal(other.to_string()),
        }
    }
}

/// Why a node's key registration was refused ([`CoreError::InvalidNodeKey`]): the kind decides
/// the answer's words and the audit log's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKeyRefusal {
    /// Not 64 hex digits; the message names the key the edge should send.
    Malformed(&'static str),
    /// A low-order point, or not the canonical encoding of one.
    Unusable,
    /// The node has not registered its node key yet (a node account key needs it).
    NoNodeKey,
    /// No account by this id has a replication key of its own: none at all, or no such
    /// account (the same answer, so a node token cannot tell which accounts exist).
    NoArk,
}

impl NodeKeyRefusal {
    /// The answer's message.
    pub fn message(&self) -> &'static str {
        match self {
            NodeKeyRefusal::Malformed(message) => message,
            NodeKeyRefusal::Unusable => {
                "public_key is not a usable X25519 public key (a low-order point, or not its canonical encoding)"
            }
            NodeKeyRefusal::NoNodeKey => {
                "this node has not registered its node key yet (PUT /replication/v1/node-key): a node account key's grants are sealed to both keys, so register the node key first"
            }
            NodeKeyRefusal::NoArk => {
                "there is no replication key of its own for this account id (an account gets one with a KEK of its own; the same answer when no such account exists): node account keys are registered only for accounts that have one"
            }
        }
    }

    /// The audit log's fixed words for it.
    pub(crate) fn audit_reason(&self) -> &'static str {
        match self {
            NodeKeyRefusal::Malformed(_) => "refused: not 64 hex digits",
            NodeKeyRefusal::Unusable => {
                "refused: not the canonical encoding of a usable X25519 public key"
            }
            NodeKeyRefusal::NoNodeKey => "refused: the node has not registered its node key",
            NodeKeyRefusal::NoArk => "refused: the account has no replication key of its own",
        }
    }
}
