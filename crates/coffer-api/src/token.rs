//! API tokens (`/client/v4/accounts/{account_id}/tokens`). Field names follow Cloudflare's
//! token objects (`issued_on`, `expires_on`, `last_used_on`).

use serde::{Deserialize, Serialize};

use crate::SecretValue;

/// A token's metadata. The value is never part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: String,
    pub name: String,
    /// `super_admin`, `secrets_store_admin`, `secrets_store_deployer` or `secrets_store_reporter`.
    pub role: String,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    pub issued_on: String,
    pub expires_on: Option<String>,
    pub last_used_on: Option<String>,
    pub revoked_on: Option<String>,
    /// True only for the instance operator's token (the one `coffer init` printed).
    #[serde(default)]
    pub operator: bool,
}

/// The create response: the metadata and, this once, the value.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: Token,
    pub value: SecretValue,
}

/// `POST /client/v4/accounts/{account_id}/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    pub role: String,
    /// RFC 3339; absent for a token that does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<String>,
}
