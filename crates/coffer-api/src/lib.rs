//! Wire types of Coffer's HTTP API. Every type that derives `Serialize` or `Deserialize` here is a
//! compatibility boundary with wrangler and Cloudflare's SDKs: field names and shapes follow
//! Cloudflare's v4 Secrets Store API and change only deliberately.
//!
//! No logic lives here but one codec: validation of names, ids and scopes happens in core; this
//! crate says what the JSON looks like. Request types reject unknown fields. The exception is
//! the access batch (`replication::AccessBatch::{encode, decode}`), edges' wire form of
//! `coffer_types::AccessEvent`, which the control plane checks for shape on arrival (ids and
//! names parsed with coffer-types' own types).

mod account;
mod audit;
mod envelope;
mod error_code;
mod kek;
mod node;
pub mod replication;
mod secrets_store;
mod service;
mod token;
mod user;
mod value;

pub use account::{Account, CreateAccount, UpdateAccount};
pub use audit::{AuditLogEntry, AuditProblem, AuditVerification};
pub use envelope::{ApiMessage, Envelope, ErrorSource, ResultInfo};
pub use error_code::ErrorCode;
pub use kek::{
    AccountKek, AccountKekUsage, KekReseal, KekRotation, KekRotationStarted, KekStatus, KekVersion,
    SetAccountKek,
};
pub use node::{CreateNode, CreatedNode, Node, NodeContact};
pub use secrets_store::*;
pub use service::{
    DeployService, DeployedService, RotateServiceToken, RotatedServiceToken, SecretBinding,
    Service, ServiceToken, StoreBinding,
};
pub use token::{CreateToken, CreatedToken, Token};
pub use user::{
    Membership, MembershipAccount, PermissionGrant, TOKEN_VALID_CODE, TOKEN_VALID_MESSAGE,
    TokenVerification,
};
pub use value::SecretValue;

/// Path prefix of the Cloudflare-compatible API.
pub const API_PREFIX: &str = "/client/v4";

/// Path prefix of the runtime API, where bound services read secret values.
pub const RUNTIME_PREFIX: &str = "/runtime/v1";

/// Response header of `GET /runtime/v1/bindings`: the names of the service's store bindings,
/// comma-separated (binding names hold no comma), absent when it has none. The body holds the
/// secret bindings only; this tells a caller what it does not hold (`coffer run` says so).
pub const STORE_BINDINGS_HEADER: &str = "coffer-store-bindings";
