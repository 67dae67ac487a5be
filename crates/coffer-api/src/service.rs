//! Services and their bindings (`/client/v4/accounts/{account_id}/secrets_store/services`),
//! and service tokens. Binding lists use wrangler's configuration keys, so the body of a deploy
//! is the binding part of a wrangler.toml as JSON.

use serde::{Deserialize, Serialize};

use crate::SecretValue;

/// `[[secrets_store_secrets]]`: one secret under a binding name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBinding {
    pub binding: String,
    pub store_id: String,
    pub secret_name: String,
}

/// `[[secrets_store_stores]]`: every secret of a store that carries the service's type among
/// its scopes, under one binding name (a Coffer extension; on Cloudflare's roadmap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreBinding {
    pub binding: String,
    pub store_id: String,
}

/// A service: a named consumer of secrets (the analogue of a Worker) and its bindings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub name: String,
    /// The scope a bound secret must carry: `workers`, `ai_gateway`, `containers`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub secrets_store_secrets: Vec<SecretBinding>,
    pub secrets_store_stores: Vec<StoreBinding>,
    pub created: String,
    pub modified: String,
}

/// `POST .../secrets_store/services`: create the service named `name`, or replace the type and
/// bindings of the existing one, atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployService {
    pub name: String,
    /// Defaults to `workers`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub secrets_store_secrets: Vec<SecretBinding>,
    #[serde(default)]
    pub secrets_store_stores: Vec<StoreBinding>,
}

/// The deploy response: the service as stored, `first_deploy` (whether this deploy created
/// it), and on the first deploy only the service token, shown this once.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeployedService {
    #[serde(flatten)]
    pub service: Service,
    #[serde(rename = "first_deploy")]
    pub created: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_token: Option<SecretValue>,
}

/// A service token's metadata. The value is never part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceToken {
    pub id: String,
    pub service_id: String,
    /// `active` or `revoked`.
    pub status: String,
    pub issued_on: String,
    pub revoked_on: Option<String>,
}

/// `POST .../services/{service_id}/tokens`: issue a new service token.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateServiceToken {
    /// Revoke every other active token of the service in the same transaction (the default).
    /// `false` keeps them, for a rollout that replaces the token before revoking the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_previous: Option<bool>,
}

/// The rotate response: the new token's metadata, its value (shown this once), and the tokens
/// this rotation revoked.
#[derive(Debug, Serialize, Deserialize)]
pub struct RotatedServiceToken {
    #[serde(flatten)]
    pub token: ServiceToken,
    pub service_token: SecretValue,
    pub revoked: Vec<ServiceToken>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Service {
        Service {
            id: "c".repeat(32),
            name: "api".into(),
            kind: "workers".into(),
            secrets_store_secrets: vec![SecretBinding {
                binding: "A".into(),
                store_id: "a".repeat(32),
                secret_name: "a".into(),
            }],
            secrets_store_stores: vec![],
            created: "2025-01-01T00:00:00Z".into(),
            modified: "2025-01-02T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_deploy_response_is_flat_with_distinct_keys() {
        let deployed = DeployedService {
            service: service(),
            created: true,
            service_token: Some(SecretValue::new("coffersvc_x".into())),
        };
        let text = serde_json::to_string(&deployed).unwrap();
        assert_eq!(text.matches("\"created\"").count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["first_deploy"], true);
        assert_eq!(v["created"], "2025-01-01T00:00:00Z");
        assert_eq!(v["type"], "workers");
        assert_eq!(v["service_token"], "coffersvc_x");
        assert_eq!(v.as_object().unwrap().len(), 9);

        let back: DeployedService = serde_json::from_str(&text).unwrap();
        assert!(back.created);
        assert_eq!(back.service, deployed.service);
        assert_eq!(back.service_token.unwrap().expose_secret(), "coffersvc_x");

        let redeploy = DeployedService {
            service: service(),
            created: false,
            service_token: None,
        };
        let text = serde_json::to_string(&redeploy).unwrap();
        assert!(!text.contains("service_token"), "{text}");
        let back: DeployedService = serde_json::from_str(&text).unwrap();
        assert!(!back.created && back.service_token.is_none());
        assert!(!format!("{deployed:?}").contains("coffersvc_x"));
    }
}
