//! Query parameters of the list endpoints.

use serde::Serialize;

/// Sort direction of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Asc,
    Desc,
}

/// Sort key of `GET /stores`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreOrder {
    Name,
    Created,
    Modified,
}

/// Sort key of `GET /stores/{store_id}/secrets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretOrder {
    Name,
    Comment,
    Created,
    Modified,
    Status,
}

/// Parameters of [`crate::Client::list_secrets`]. Fields left `None` are not sent, so the
/// server's defaults apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSecrets {
    pub page: Option<u32>,
    pub per_page: Option<u32>,
    pub order: Option<SecretOrder>,
    pub direction: Option<Direction>,
    /// Substring matched against names and comments.
    pub search: Option<String>,
    /// Only secrets carrying these scopes. Sent as one comma-separated `scopes` parameter.
    pub scopes: Option<Vec<String>>,
}

/// The query string pairs of a list request, in a stable order.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ListQuery<'a, O> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_page: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<O>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<String>,
}

impl ListSecrets {
    pub(crate) fn query(&self) -> ListQuery<'_, SecretOrder> {
        ListQuery {
            page: self.page,
            per_page: self.per_page,
            order: self.order,
            direction: self.direction,
            search: self.search.as_deref(),
            scopes: self.scopes.as_ref().map(|s| s.join(",")),
        }
    }
}

/// Filters and paging of [`crate::Client::list_audit`]. Fields left `None` are not sent, so the
/// server's defaults apply (every entry, first page, newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditFilter {
    /// Entries at or after this RFC 3339 date-time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Entries at or before this RFC 3339 date-time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Entries of this actor, by token id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// e.g. `create`, `update`, `delete`, `login`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `success` or `denied`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_page: Option<u32>,
    /// Newest first (`desc`) unless given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
}

/// Parameters of [`crate::Client::list_services`]. Fields left `None` are not sent, so the
/// server's defaults apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListServices {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_page: Option<u32>,
    /// Only the service with exactly this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
