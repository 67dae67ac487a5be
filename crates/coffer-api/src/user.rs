//! Who a token is: `GET /client/v4/user/tokens/verify` and `GET /client/v4/memberships`, in
//! Cloudflare's shapes, so that wrangler and the SDKs find the account from the token alone.
//!
//! A Coffer API token belongs to exactly one account, so it has exactly one membership. The
//! instance operator's token acts on every account but is a member of its own (first) account
//! only: that is the account a client picks when none is given.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /client/v4/user/tokens/verify`: Cloudflare's `id`, `status` and `expires_on` (absent
/// for a token that does not expire), and Coffer's own `name`, `role`, `operator` and `account`
/// (what `coffer whoami` shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenVerification {
    pub id: String,
    /// `active` (a token that is revoked or expired does not get this far: it is answered 401).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<String>,
    pub name: String,
    /// `super_admin`, `secrets_store_admin`, `secrets_store_deployer` or `secrets_store_reporter`.
    pub role: String,
    /// True only for the instance operator's token (the one `coffer init` printed).
    pub operator: bool,
    pub account: MembershipAccount,
}

/// The message Cloudflare puts in `messages[]` of a successful verify.
pub const TOKEN_VALID_MESSAGE: &str = "This API Token is valid and active";

/// The code Cloudflare gives [`TOKEN_VALID_MESSAGE`] (a message, never an error: as an error
/// code, 10000 makes wrangler report an authentication failure).
pub const TOKEN_VALID_CODE: u32 = 10000;

/// One item of `GET /client/v4/memberships`: the token's account, as Cloudflare shapes a
/// user's membership of an account. wrangler reads `account.id` and `account.name` (to pick
/// the account) and `roles` (`wrangler whoami`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The membership's id: the token's id (a token is a member of one account).
    pub id: String,
    pub account: MembershipAccount,
    /// Always `accepted`: there are no invitations.
    pub status: String,
    /// Cloudflare's display name of the token's role, e.g. `Secrets Store Admin`.
    pub roles: Vec<String>,
    /// What the role allows, as Cloudflare's `{"read": bool, "write": bool}` grants, keyed by
    /// Coffer's areas: `secrets_store` (write: create, change and delete stores and secrets),
    /// `services` (write: deploy bindings) and `api_tokens` (read and write: manage the
    /// account's tokens and read its audit log).
    pub permissions: BTreeMap<String, PermissionGrant>,
}

/// The account of a membership or a verified token: Cloudflare's account object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipAccount {
    pub id: String,
    pub name: String,
    /// Always `standard`.
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339.
    pub created_on: String,
}

/// Cloudflare's permission grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionGrant {
    pub read: bool,
    pub write: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_cloudflare() {
        let account = MembershipAccount {
            id: "a".repeat(32),
            name: "default".into(),
            kind: "standard".into(),
            created_on: "2025-01-01T00:00:00Z".into(),
        };
        let m = Membership {
            id: "b".repeat(32),
            account: account.clone(),
            status: "accepted".into(),
            roles: vec!["Secrets Store Admin".into()],
            permissions: BTreeMap::from([(
                "secrets_store".to_owned(),
                PermissionGrant {
                    read: true,
                    write: true,
                },
            )]),
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["account"]["type"], "standard");
        assert_eq!(v["permissions"]["secrets_store"]["write"], true);
        assert_eq!(serde_json::from_value::<Membership>(v).unwrap(), m);

        let t = TokenVerification {
            id: "b".repeat(32),
            status: "active".into(),
            expires_on: None,
            name: "ci".into(),
            role: "super_admin".into(),
            operator: false,
            account,
        };
        let v = serde_json::to_value(&t).unwrap();
        assert!(v.get("expires_on").is_none(), "{v}");
        assert_eq!(serde_json::from_value::<TokenVerification>(v).unwrap(), t);
    }
}
