//! The key-encryption key (`/client/v4/kek`): Coffer's own, instance-level and operator-only.
//! Its status names KEK versions by number and public id; no key material is ever part of it.

use serde::{Deserialize, Serialize};

/// `GET /client/v4/kek`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekStatus {
    /// The version that wraps new keys. Each rotation raises it by one.
    pub active_version: u32,
    /// Every version not yet retired, oldest first.
    pub versions: Vec<KekVersion>,
    /// The rewrap of a rotation that has not finished; `null` when none.
    pub rotation: Option<KekRotation>,
    /// The DEK lifecycle job (values re-sealed onto current DEKs, unreferenced DEKs
    /// destroyed); absent when the server does not run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reseal: Option<KekReseal>,
}

/// Progress of the DEK lifecycle job since the server started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekReseal {
    /// A pass is under way now.
    pub running: bool,
    /// Values re-sealed onto their account's current DEK.
    pub resealed: u64,
    /// Values still sealed under a DEK due to be re-sealed away from.
    pub remaining: u64,
    /// DEKs destroyed once no value referenced them.
    pub destroyed_deks: u64,
    /// Superseded versions deleted (beyond `--keep-versions`).
    pub pruned_versions: u64,
    /// Why the last pass stopped early (the next pass retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One KEK version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekVersion {
    pub version: u32,
    /// The KEK's public fingerprint, as recorded beside every key it wraps.
    pub kek_id: String,
    /// `file` or `pkcs11`.
    pub provider: String,
    /// `active`, or `retiring` while keys it wraps remain to be rewrapped.
    pub state: String,
    /// Data-encryption keys it wraps now.
    pub deks: u64,
    /// Instance keys (token, audit, ... MAC keys) it wraps now.
    pub instance_keys: u64,
    /// RFC 3339: when the version was made.
    pub created: String,
}

/// Progress of a rotation's rewrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekRotation {
    /// `running`, or `failed` (stopped on a key it cannot rewrap; `error` says which).
    pub state: String,
    /// The oldest version still being rewrapped away from.
    pub from_version: u32,
    pub to_version: u32,
    /// Keys rewrapped by this process since the rewrap (re)started.
    pub rewrapped: u64,
    /// Keys still wrapped by a retiring version.
    pub remaining: u64,
    /// RFC 3339: when the rotation began.
    pub started: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to `POST /client/v4/kek/rotations`: the new active version; the rewrap runs in
/// the background (follow it with `GET /client/v4/kek`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekRotationStarted {
    pub active_version: u32,
    pub kek_id: String,
    pub from_version: u32,
}

/// The body of `PUT /client/v4/accounts/{account_id}/kek`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAccountKek {
    /// `file` (a new key file in the data dir), `file:/path` (an existing 32-byte key file,
    /// mode 0600) or a `pkcs11:` URI.
    pub kek: String,
}

/// `GET` / `PUT /client/v4/accounts/{account_id}/kek`: which KEK wraps an account's DEKs.
/// Public ids and locations only, never key material or a PIN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountKek {
    pub account_id: String,
    /// `account` (a KEK of its own) or `instance` (the instance KEK).
    pub wrapped_by: String,
    /// The id of the KEK that wraps the account's new DEKs.
    pub kek_id: String,
    /// `file` or `pkcs11` for an account KEK; `null` for the instance KEK.
    pub provider: Option<String>,
    /// Where the account KEK lives (a path, or a URI without PIN); `null` for the instance KEK.
    pub location: Option<String>,
    /// `available`, or `unavailable` when the account KEK could not be opened (its values
    /// answer 503 `account_kek_unavailable`).
    pub state: String,
    /// How many of the account's DEKs each KEK wraps, by KEK id.
    pub deks: Vec<AccountKekUsage>,
    /// `running` while DEKs made before the account KEK are being rewrapped onto it, `failed`
    /// if that stopped (`error` says why), `done` otherwise.
    pub rewrap: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountKekUsage {
    pub kek_id: String,
    pub deks: u64,
}
