//! Handlers of `/client/v4/user/tokens/verify` and `/client/v4/memberships`: who the bearer
//! token is and which account it belongs to, in Cloudflare's shapes. With them wrangler (and
//! the `coffer` CLI) need only a token: the account is the token's.
//!
//! Any valid API token may call them, whatever its role. A token has one account, so the
//! memberships list has one item; the operator's token, which acts on every account, is listed
//! as a member of its own account only (`GET /client/v4/accounts` lists all of them).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use coffer_api::{
    ApiMessage, Envelope, Membership, MembershipAccount, PermissionGrant, ResultInfo,
    TOKEN_VALID_CODE, TOKEN_VALID_MESSAGE, TokenVerification,
};
use coffer_core::{Permission, Role};
use coffer_storage::AccountRecord;
use coffer_types::Timestamp;

use crate::error::ApiResult;
use crate::extract::{Auth, QueryPairs};
use crate::state::AppState;

fn account(a: &AccountRecord) -> MembershipAccount {
    MembershipAccount {
        id: a.id.to_string(),
        name: a.name.clone(),
        kind: "standard".to_owned(),
        created_on: a.created.to_rfc3339(),
    }
}

/// Cloudflare's display name of a role.
fn role_title(role: Role) -> &'static str {
    match role {
        Role::SuperAdmin => "Super Administrator - All Privileges",
        Role::SecretsStoreAdmin => "Secrets Store Admin",
        Role::SecretsStoreDeployer => "Secrets Store Deployer",
        Role::SecretsStoreReporter => "Secrets Store Reporter",
    }
}

/// What `role` allows, as Cloudflare's read/write grants by area.
fn permissions(role: Role) -> BTreeMap<String, PermissionGrant> {
    let grant = |read: Permission, write: Permission| PermissionGrant {
        read: role.allows(read),
        write: role.allows(write),
    };
    BTreeMap::from([
        (
            "secrets_store".to_owned(),
            grant(Permission::Read, Permission::Edit),
        ),
        (
            "services".to_owned(),
            grant(Permission::Read, Permission::Bind),
        ),
        (
            "api_tokens".to_owned(),
            grant(Permission::ManageAccount, Permission::ManageAccount),
        ),
    ])
}

/// `GET /client/v4/user/tokens/verify`: the token's id, status and expiry (Cloudflare's), and
/// its name, role, operator flag and account (Coffer's).
pub async fn verify_token(
    State(app): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<Json<Envelope<TokenVerification>>> {
    let (token, account_rec) = app.coffer.whoami(&who).await?;
    let result = TokenVerification {
        id: token.id.to_string(),
        status: "active".to_owned(),
        expires_on: token.expires.map(Timestamp::to_rfc3339),
        name: token.name,
        role: who.role.as_str().to_owned(),
        operator: who.operator,
        account: account(&account_rec),
    };
    Ok(Json(Envelope {
        messages: vec![ApiMessage {
            code: TOKEN_VALID_CODE,
            message: TOKEN_VALID_MESSAGE.to_owned(),
            documentation_url: None,
            source: None,
        }],
        ..Envelope::ok(result)
    }))
}

/// `GET /client/v4/memberships?page=&per_page=`: the token's one membership, paged like every
/// list (a page past it is empty).
pub async fn memberships(
    State(app): State<AppState>,
    Auth(who): Auth,
    query: QueryPairs,
) -> ApiResult<Json<Envelope<Vec<Membership>>>> {
    let (page, per_page) = query.page()?;
    let (token, account_rec) = app.coffer.whoami(&who).await?;
    let membership = Membership {
        id: token.id.to_string(),
        account: account(&account_rec),
        status: "accepted".to_owned(),
        roles: vec![role_title(who.role).to_owned()],
        permissions: permissions(who.role),
    };
    let items = if page == 1 { vec![membership] } else { vec![] };
    let info = ResultInfo {
        page,
        per_page,
        count: items.len() as u64,
        total_count: 1,
    };
    Ok(Json(Envelope::ok_page(items, info)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_follow_the_role_table() {
        let p = permissions(Role::SecretsStoreDeployer);
        assert_eq!(
            p["secrets_store"],
            PermissionGrant {
                read: true,
                write: false
            }
        );
        assert!(p["services"].write);
        assert!(!p["api_tokens"].read);
        let p = permissions(Role::SuperAdmin);
        assert!(p.values().all(|g| g.read && g.write));
        let p = permissions(Role::SecretsStoreReporter);
        assert!(p.values().all(|g| !g.write));
        let titles: Vec<&str> = Role::ALL.into_iter().map(role_title).collect();
        assert_eq!(
            titles,
            [
                "Super Administrator - All Privileges",
                "Secrets Store Admin",
                "Secrets Store Deployer",
                "Secrets Store Reporter"
            ]
        );
    }
}
