//! Accounts (`/client/v4/accounts/{account_id}`): Coffer's own, beyond Cloudflare's Secrets
//! Store API.

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub created: String,
    /// The account's own secrets quota; `null` when the server default applies.
    pub secrets_quota: Option<u64>,
}

/// `POST /client/v4/accounts` (instance operator only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    pub name: String,
}

/// `PATCH /client/v4/accounts/{account_id}` (instance operator only). A field that is absent is
/// left as it is; `"secrets_quota": null` returns the account to the server default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub secrets_quota: Option<Option<u64>>,
}

/// Tells `"field": null` (`Some(None)`) from an absent field (`None`, via `default`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_null_and_number_are_three_things() {
        let absent: UpdateAccount = serde_json::from_str("{}").unwrap();
        let null: UpdateAccount = serde_json::from_str(r#"{"secrets_quota": null}"#).unwrap();
        let set: UpdateAccount = serde_json::from_str(r#"{"secrets_quota": 5}"#).unwrap();
        assert_eq!(absent.secrets_quota, None);
        assert_eq!(null.secrets_quota, Some(None));
        assert_eq!(set.secrets_quota, Some(Some(5)));
        assert!(serde_json::from_str::<UpdateAccount>(r#"{"secrets_quota": -1}"#).is_err());
        assert!(serde_json::from_str::<UpdateAccount>(r#"{"quota": 1}"#).is_err());
        assert_eq!(
            serde_json::to_string(&null).unwrap(),
            r#"{"secrets_quota":null}"#
        );
    }
}
