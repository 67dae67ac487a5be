//! Who may do what. Every operation of [`crate::Coffer`] asks [`Principal::require`] first; this
//! is the one place the role table lives, with the instance operator's reach into other
//! accounts ([`operator_reaches`]).

use coffer_types::{AccountId, TokenId};

use crate::permission::Permission;

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
            Permission::ViewAccount | Permission::Read => true,
            Permission::Edit => matches!(self, Role::SuperAdmin | Role::SecretsStoreAdmin),
            Permission::Bind => matches!(self, Role::SuperAdmin | Role::SecretsStoreDeployer),
            Permission::ManageAccount => self == Role::SuperAdmin,
            // Not a role's right: only the instance operator's token carries it.
            Permission::Operator => false,
        }
    }
}

/// What the instance operator may do in an account other than its own: administer the account,
/// never its contents. It sees the account and its quota, manages its tokens (lists, reads and
/// revokes them, and creates its *first* token, a super_admin: see
/// [`crate::Coffer::create_token`]), reads and verifies its audit log, and creates, deletes and
/// sets the quota of accounts. It does not see or change stores, secrets or services, and does
/// not bind: binding hands a service the values, so an operator that could mint itself a
/// super_admin in a working account, or bind there, could read that account's values.
pub fn operator_reaches(permission: Permission) -> bool {
    match permission {
        Permission::ViewAccount | Permission::ManageAccount | Permission::Operator => true,
        Permission::Read | Permission::Edit | Permission::Bind => false,
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
    /// The client's address: the TCP peer, or the address a `--trusted-proxy` peer names in its
    /// header (never a header just any client could set).
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
    /// The instance operator acts on other accounts within [`operator_reaches`] only.
    pub fn require(
        &self,
        account: AccountId,
        permission: Permission,
    ) -> Result<(), crate::CoreError> {
        if self.account_id != account {
            if !self.operator {
                return Err(crate::CoreError::NotFound(crate::Resource::Account));
            }
            if !operator_reaches(permission) {
                return Err(crate::CoreError::OutsideOperatorReach(permission));
            }
        }
        if !self.role.allows(permission) {
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
            (Role::SuperAdmin, [true, true, true, true, true, false]),
            (
                Role::SecretsStoreAdmin,
                [true, true, true, false, false, false],
            ),
            (
                Role::SecretsStoreDeployer,
                [true, true, false, true, false, false],
            ),
            (
                Role::SecretsStoreReporter,
                [true, true, false, false, false, false],
            ),
        ];
        for (role, expected) in table {
            let got =
                [ViewAccount, Read, Edit, Bind, ManageAccount, Operator].map(|p| role.allows(p));
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
        // In another account the operator administers the account, not its contents.
        for p in [Permission::ViewAccount, Permission::ManageAccount] {
            assert!(op.require(other, p).is_ok(), "{p}");
        }
        assert!(op.require_operator_on(other).is_ok());
        for p in [Permission::Read, Permission::Edit, Permission::Bind] {
            assert!(
                matches!(
                    op.require(other, p),
                    Err(crate::CoreError::OutsideOperatorReach(q)) if q == p
                ),
                "{p}"
            );
            // In its own account it is a super_admin like any other.
            assert!(op.require(op.account_id, p).is_ok(), "{p}");
        }
    }
}
