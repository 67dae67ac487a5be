//! Records to wire objects.

use coffer_api::{Envelope, ResultInfo};
use coffer_storage::{SecretRecord, StoreRecord};

pub fn store(s: &StoreRecord) -> coffer_api::Store {
    coffer_api::Store {
        id: s.id.to_string(),
        name: s.name.to_string(),
        created: s.created.to_rfc3339(),
        modified: s.modified.to_rfc3339(),
        account_id: Some(s.account_id.to_string()),
    }
}

/// Secrets are `active` as soon as the create is acknowledged: the write is durable and the value
/// readable before the response is sent, so `pending` would never be observable.
pub fn secret(s: &SecretRecord) -> coffer_api::Secret {
    coffer_api::Secret {
        id: s.id.to_string(),
        store_id: s.store_id.to_string(),
        name: s.name.to_string(),
        comment: s.comment.clone(),
        scopes: s.scopes.to_strings(),
        status: "active".to_owned(),
        created: s.created.to_rfc3339(),
        modified: s.modified.to_rfc3339(),
    }
}

/// A list returned whole (accounts of an instance, tokens of an account: small, unpaged), in the
/// paged envelope the SDKs expect.
pub fn whole_list<T>(items: Vec<T>) -> Envelope<Vec<T>> {
    let count = items.len() as u64;
    let info = ResultInfo {
        page: 1,
        per_page: u32::try_from(items.len().max(1)).unwrap_or(u32::MAX),
        count,
        total_count: count,
    };
    Envelope::ok_page(items, info)
}

pub fn service(s: &coffer_storage::ServiceRecord) -> coffer_api::Service {
    coffer_api::Service {
        id: s.id.to_string(),
        name: s.name.to_string(),
        kind: s.kind.as_str().to_owned(),
        secrets_store_secrets: s
            .secrets
            .iter()
            .map(|b| coffer_api::SecretBinding {
                binding: b.binding.to_string(),
                store_id: b.store_id.to_string(),
                secret_name: b.secret_name.to_string(),
            })
            .collect(),
        secrets_store_stores: s
            .stores
            .iter()
            .map(|b| coffer_api::StoreBinding {
                binding: b.binding.to_string(),
                store_id: b.store_id.to_string(),
            })
            .collect(),
        created: s.created.to_rfc3339(),
        modified: s.modified.to_rfc3339(),
    }
}

pub fn service_token(t: &coffer_storage::ServiceTokenRecord) -> coffer_api::ServiceToken {
    coffer_api::ServiceToken {
        id: t.id.to_string(),
        service_id: t.service_id.to_string(),
        status: if t.revoked.is_some() {
            "revoked"
        } else {
            "active"
        }
        .to_owned(),
        issued_on: t.created.to_rfc3339(),
        revoked_on: t.revoked.map(|at| at.to_rfc3339()),
    }
}
