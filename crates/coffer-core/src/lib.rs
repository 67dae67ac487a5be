//! Coffer's domain: accounts, stores, secrets and their versions, the keyring that seals and
//! opens values, authentication and the role policy.
//!
//! Every API operation is one method of [`Coffer`] taking the caller's [`Principal`] and a typed,
//! already-validated command. Core knows nothing of HTTP or JSON: the server parses the wire
//! format into these types and maps [`CoreError`] to responses.

mod account_kek;
mod error;
mod kek_call;
mod keyring;
mod limits;
mod permission;
mod policy;
mod reseal;
mod rotation;
mod service;
#[cfg(test)]
mod test_keks;
mod token_cache;

pub use account_kek::{AccountKekInfo, AccountKekSpec, AccountKekStore, LoadedAccountKek};
/// The audit log's words and the access events' (defined in `coffer-types`, which the edge
/// and the wire types share), named here as core's own.
pub use coffer_types::{
    AccessEvent, AccessOutcome, AccessRefusal, AuditAction, AuditOutcome, TargetKind,
};
pub use error::{
    CoreError, INTERNAL_MESSAGE, Invalid, InvalidKind, NodeKeyRefusal, Resource,
    UNAVAILABLE_MESSAGE,
};
pub use keyring::{DEK_CACHE_CAPACITY, DekPolicy, Keyring};
pub use limits::{
    Comment, DEFAULT_PER_PAGE, Limits, MAX_BATCH, MAX_COMMENT_BYTES, MAX_PAGE, MAX_PER_PAGE,
    MAX_REQUEST_BODY_BYTES, MAX_SEARCH_BYTES, MAX_SECRETS_QUOTA, MAX_VALUE_BYTES, check_value,
};
pub use permission::Permission;
pub use policy::{Principal, RequestContext, Role, operator_reaches};
pub use reseal::{ResealSettings, ResealStatus};
pub use rotation::{KekState, KekVersion, KekVersions, RewrapSettings, RotationStatus};
pub use service::account_kek::AccountKekReport;
pub use service::fleet::NodeContact;
pub use service::identity::{MAX_LABEL_BYTES, NewToken, check_label};
pub use service::kek::{DekAges, KekStatusReport, KekVersionUsage, RotationReport};
pub use service::runtime::{AllBindings, RuntimeStats, ServicePrincipal};
pub use service::services::{Deploy, Deployed, MAX_BINDINGS, ServiceListQuery};
pub use service::{
    AuditVerification, Coffer, CreateSecretItem, DuplicateSecret, Quota, SecretListQuery,
    StoreListQuery, UpdateSecret,
};
