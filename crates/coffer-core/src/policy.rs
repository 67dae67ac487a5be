//! Who may do what. Every operation of [`crate::Coffer`] asks [`Principal::require`] first; this
//! is the one place the role table lives.

use coffer_types::{AccountId, TokenId};

/// The roles of an account's members and tokens (Cloudflare's four).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    SuperAdmin,
    SecretsStoreAdmin,
    SecretsStoreDeployer,
    SecretsStoreReporter,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::SuperAdmin,
        Role::SecretsStoreAdmin,
        Role::SecretsStoreDeployer,
        Role::SecretsStoreReporter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::SuperAdmin => "super_admin",
            Role::SecretsStoreAdmin => "secrets_store_admin",
            Role::SecretsStoreDeployer => "secrets_store_deployer",
            Role::SecretsStoreReporter => "secrets_store_reporter",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The role table of Cloudflare's Secrets Store (contract section 7).
    pub fn allows(self, permission: Permission) -> bool {
        match permission {
            Permission::Read => true,
            Permission::Edit => matches!(self, Role::SuperAdmin | Role::SecretsStoreAdmin),
            Permission::Bind => matches!(self, Role::SuperAdmin | Role::SecretsStoreDeployer),
            Permission::ManageAccount => self == Role::SuperAdmin,
            // Not a role's right: only the instance operator's token carries it.
            Permission::Operator => false,
        }
    }
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// View stores' and secrets' metadata ("Secrets Store Read").
    Read,
    /// Create, update, duplicate and delete stores and secrets ("Secrets Store Edit").
    Edit,
    /// Bind secrets to services.
    Bind,
    /// Manage the account's tokens and members.
    ManageAccount,
    /// Create, list and delete accounts and set their quotas: the instance operator only.
    Operator,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Permission::Read => "secrets_store:read",
            Permission::Edit => "secrets_store:edit",
            Permission::Bind => "secrets_store:bind",
            Permission::ManageAccount => "account:manage",
            Permission::Operator => "instance:operator",
        })
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: TokenId,
    pub token_name: String,
    /// The account the token belongs to.
    pub account_id: AccountId,
    pub role: Role,
    /// The instance operator (the token `coffer init` prints) acts on every account.
    pub operator: bool,
    /// Where the request came from, for the audit log.
    pub context: RequestContext,
}

/// Where a request came from; recorded in every audit entry it causes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    pub request_id: String,
    /// The peer address (never a header a client could set).
    pub client: Option<String>,
}

impl Principal {
    /// Operator-only actions (accounts and their quotas). The flag makes the operator; the role
    /// check keeps a (hypothetical) operator token with a lesser role within that role.
    pub fn require_operator(&self) -> Result<(), crate::CoreError> {
        if self.operator && self.role.allows(Permission::ManageAccount) {
            Ok(())
        } else {
            Err(crate::CoreError::Forbidden(Permission::Operator))
        }
    }

    /// An operator-only action on `account`: another account stays invisible (404, as for every
    /// other operation), the caller's own account answers 403 naming the operator permission.
    pub fn require_operator_on(&self, account: AccountId) -> Result<(), crate::CoreError> {
        if !self.operator && self.account_id != account {
            return Err(crate::CoreError::NotFound(crate::Resource::Account));
        }
        self.require_operator()
    }

    /// Checks that the caller may act on `account` with `permission`. A token of another account
    /// learns nothing: the answer is the same `NotFound(Account)` whether `account` exists or not.
    pub fn require(
        &self,
        account: AccountId,
        permission: Permission,
    ) -> Result<(), crate::CoreError> {
        if !self.operator && self.account_id != account {
            return Err(crate::CoreError::NotFound(crate::Resource::Account));
        }
        if !self.role.allows(permission) {
            return Err(crate::CoreError::Forbidden(permission));
        }
        // Binding hands a service the values of what it binds. The operator manages every
        // account, but reading another account's values is not part of that: it binds only
        // in its own account, like any super_admin.
        if permission == Permission::Bind && self.account_id != account {
            return Err(crate::CoreError::Forbidden(permission));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_table_matches_the_contract() {
        use Permission::*;
        let table = [
            (Role::SuperAdmin, [true, true, true, true, false]),
            (Role::SecretsStoreAdmin, [true, true, false, false, false]),
            (
                Role::SecretsStoreDeployer,
                [true, false, true, false, false],
            ),
            (
                Role::SecretsStoreReporter,
                [true, false, false, false, false],
            ),
        ];
        for (role, expected) in table {
            let got = [Read, Edit, Bind, ManageAccount, Operator].map(|p| role.allows(p));
            assert_eq!(got, expected, "{role:?}");
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("admin"), None);
    }

    #[test]
    fn other_accounts_look_missing() {
        let p = Principal {
            token_id: TokenId::from_bytes([1; 16]),
            token_name: "t".into(),
            account_id: AccountId::from_bytes([1; 16]),
            role: Role::SuperAdmin,
            operator: false,
            context: RequestContext::default(),
        };
        let other = AccountId::from_bytes([2; 16]);
        assert!(matches!(
            p.require(other, Permission::Read),
            Err(crate::CoreError::NotFound(crate::Resource::Account))
        ));
        assert!(p.require(p.account_id, Permission::Edit).is_ok());
        let op = Principal {
            operator: true,
            ..p
        };
        assert!(op.require(other, Permission::Edit).is_ok());
        // The operator binds (and so could read values) in its own account only.
        assert!(op.require(op.account_id, Permission::Bind).is_ok());
        assert!(matches!(
            op.require(other, Permission::Bind),
            Err(crate::CoreError::Forbidden(Permission::Bind))
        ));
    }
}
