//! What an operation needs: the permissions the role table ([`crate::Role::allows`]) grants.
//! A leaf, so that errors can name the permission a caller lacks without importing the policy
//! that returns them.

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// View the account itself: its record, quota and usage.
    ViewAccount,
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
            Permission::ViewAccount => "account:read",
            Permission::Read => "secrets_store:read",
            Permission::Edit => "secrets_store:edit",
            Permission::Bind => "secrets_store:bind",
            Permission::ManageAccount => "account:manage",
            Permission::Operator => "instance:operator",
        })
    }
}
