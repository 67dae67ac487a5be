//! Rows as the storage trait exchanges them. Sealed values and wrapped keys are opaque bytes.

use coffer_types::{
    AccountId, BindingName, DekId, Scope, Scopes, SecretId, SecretName, ServiceId, ServiceName,
    StoreId, StoreName, Timestamp, TokenId, Version,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRecord {
    pub id: AccountId,
    pub name: String,
    pub created: Timestamp,
    /// Per-account override of the server's default secrets quota.
    pub secrets_quota: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub account_id: AccountId,
    pub name: String,
    /// HMAC-SHA256 of the token under the instance MAC key.
    pub hash: [u8; 32],
    /// Role name as core spells it (`super_admin`, ...). Storage does not interpret it.
    pub role: String,
    /// An operator token may act on every account.
    pub operator: bool,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    pub revoked: Option<Timestamp>,
    pub last_used: Option<Timestamp>,
}

/// A key wrapped by the KEK: an instance key or a DEK's key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKeyRecord {
    /// The id the key is bound to in its wrapping AAD.
    pub id: DekId,
    pub kek_id: String,
    pub wrapped: Vec<u8>,
    pub created: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DekRecord {
    pub account_id: AccountId,
    /// The KEK wrap (on the control plane; on an edge, the replicated RK wrap, `kek_id`
    /// `rk:<version>`).
    pub key: WrappedKeyRecord,
    /// The control plane's RK wrap of the same key, the form the feed carries. `None` on an
    /// edge, and for a DEK stored before replication keys existed (until backfilled).
    pub rk: Option<RkWrap>,
}

/// A key wrapped by the replication key of `version`. Opaque bytes to storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RkWrap {
    pub version: u32,
    pub wrapped: Vec<u8>,
    /// `true`: wrapped by version `version` of the DEK's account's own replication key (ARK,
    /// `ark:<version>`), not by the instance RK (`rk:<version>`). Only DEKs have ARK wraps.
    pub ark: bool,
}

impl RkWrap {
    /// The key id the feed carries for this wrap: `rk:<n>` or `ark:<n>`.
    pub fn kek_id(&self) -> String {
        if self.ark {
            crate::ark_kek_id(self.version)
        } else {
            crate::rk_kek_id(self.version)
        }
    }
}

/// A version of an account's replication key (ARK) sealed to the X25519 key one node
/// registered for that account. Opaque bytes to storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountGrant {
    pub account_id: AccountId,
    pub node_id: TokenId,
    pub ark_version: u32,
    pub ephemeral_public: [u8; 32],
    pub sealed: Vec<u8>,
}

/// A key a node registered for one account, with the node's own key: an account grant is
/// sealed to both (docs/envelope-format.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAccountKey {
    pub node_id: TokenId,
    /// The X25519 public key the node made for the account alone.
    pub account_key: [u8; 32],
    /// The node's own X25519 public key (`nodes.public_key`).
    pub node_key: [u8; 32],
}

/// What a node's revocation does to one account's ARK: version `version` (wrapped by the
/// account's KEK), its grants to the remaining nodes' keys for the account, and every DEK of
/// the account rewrapped by it. Part of an [`RkRotation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArkRotation {
    pub account_id: AccountId,
    pub version: u32,
    pub key: WrappedKeyRecord,
    pub grants: Vec<AccountGrant>,
    pub deks: Vec<(DekId, Vec<u8>)>,
}

/// A replication-key version sealed to one node's X25519 public key. Opaque bytes to storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeGrant {
    pub node_id: TokenId,
    pub rk_version: u32,
    pub ephemeral_public: [u8; 32],
    pub sealed: Vec<u8>,
}

/// Everything a node's revocation writes besides the revocation: the next replication key
/// (wrapped by the KEK), its grants to the remaining nodes, and every DEK and replicated
/// instance key wrapped by it. See `Storage::revoke_node_rotating`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RkRotation {
    pub version: u32,
    pub key: WrappedKeyRecord,
    pub grants: Vec<NodeGrant>,
    pub deks: Vec<(DekId, Vec<u8>)>,
    pub instance_keys: Vec<(String, Vec<u8>)>,
    /// The accounts with an ARK whose ARK rotates too (every one whose KEK is available).
    /// `deks` holds no DEK of theirs.
    pub accounts: Vec<ArkRotation>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreRecord {
    pub id: StoreId,
    pub account_id: AccountId,
    pub name: StoreName,
    pub created: Timestamp,
    pub modified: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRecord {
    pub id: SecretId,
    pub store_id: StoreId,
    pub account_id: AccountId,
    pub name: SecretName,
    pub comment: String,
    pub scopes: Scopes,
    pub created: Timestamp,
    pub modified: Timestamp,
    /// The version that holds the current value.
    pub version: Version,
}

/// One immutable, sealed value version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRecord {
    pub secret_id: SecretId,
    pub version: Version,
    pub dek_id: DekId,
    pub sealed: Vec<u8>,
    pub created: Timestamp,
}

/// A secret to create, with its first sealed version (whose `version` equals `record.version`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSecret {
    pub record: SecretRecord,
    pub value: VersionRecord,
    /// The DEK `value` is sealed under, when it may not be stored yet (see [`crate::Storage`]'s
    /// "DEKs carried by writes"). `None` when the DEK is known to be stored.
    pub dek: Option<DekRecord>,
}

/// A change to an existing secret. `None` fields are left as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretUpdate {
    pub account_id: AccountId,
    pub store_id: StoreId,
    pub secret_id: SecretId,
    pub expected_version: Version,
    /// A new value version; its `version` must be `expected_version.next()`.
    pub value: Option<VersionRecord>,
    /// The DEK `value` is sealed under, when it may not be stored yet (see [`crate::Storage`]'s
    /// "DEKs carried by writes"). Must be `None` when `value` is.
    pub dek: Option<DekRecord>,
    pub scopes: Option<Scopes>,
    pub comment: Option<String>,
    pub modified: Timestamp,
}

/// A binding of one secret to a service, by store id and secret name (resolved at read time:
/// the secret need not exist, and deleting it leaves the binding in place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretBindingRecord {
    pub binding: BindingName,
    pub store_id: StoreId,
    pub secret_name: SecretName,
}

/// A binding of a whole store to a service, by store id (resolved at read time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreBindingRecord {
    pub binding: BindingName,
    pub store_id: StoreId,
}

/// A named consumer of secrets in an account (the analogue of a Worker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    pub id: ServiceId,
    pub account_id: AccountId,
    pub name: ServiceName,
    /// The scope every bound secret must carry (the service's type).
    pub kind: Scope,
    /// In the order given at deploy.
    pub secrets: Vec<SecretBindingRecord>,
    pub stores: Vec<StoreBindingRecord>,
    pub created: Timestamp,
    pub modified: Timestamp,
}

/// A token that lets a service read its bound secrets at runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTokenRecord {
    pub id: TokenId,
    pub account_id: AccountId,
    pub service_id: ServiceId,
    /// HMAC-SHA256 of the token under the instance "service-token-mac" key.
    pub hash: [u8; 32],
    pub created: Timestamp,
    pub revoked: Option<Timestamp>,
}

/// A registered edge node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: TokenId,
    pub name: String,
    /// HMAC-SHA256 of the node token under the instance "node-token-mac" key.
    pub hash: [u8; 32],
    pub created: Timestamp,
    pub revoked: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    #[default]
    Asc,
    Desc,
}

impl Direction {
    /// The other direction.
    pub fn reversed(self) -> Self {
        match self {
            Self::Asc => Self::Desc,
            Self::Desc => Self::Asc,
        }
    }
}

/// Which rows of an ordered list of `total` a page is, as a backend reads them: `limit` rows
/// after skipping `skip`, counted from the start of the order, or from its end (`from_end`:
/// read in the opposite direction, then put back in order) when fewer rows lie after the page
/// than before it. With page numbers, skipping is a walk over the rows skipped; from the nearer
/// end, the last page costs what the first does and no page walks more than half the list.
/// Only exact when `total` is the count in the same snapshot as the page, and the order is
/// total (every listing's ends in a unique column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageWindow {
    pub from_end: bool,
    pub skip: u64,
    pub limit: u64,
}

impl PageWindow {
    /// The window of 1-based `page` (page 0 is read as page 1); `None` when the page starts
    /// past the end.
    pub fn new(page: u32, per_page: u32, total: u64) -> Option<Self> {
        let per_page = u64::from(per_page);
        // Cannot overflow: both factors are below 2^32.
        let start = u64::from(page.max(1) - 1) * per_page;
        if start >= total {
            return None;
        }
        let limit = per_page.min(total - start);
        let after = total - start - limit;
        Some(if after < start {
            Self {
                from_end: true,
                skip: after,
                limit,
            }
        } else {
            Self {
                from_end: false,
                skip: start,
                limit,
            }
        })
    }

    /// The direction to read in for a list ordered in `direction`.
    pub fn read_direction(&self, direction: Direction) -> Direction {
        if self.from_end {
            direction.reversed()
        } else {
            direction
        }
    }
}

/// Listing order. Names and comments compare byte-wise (so `B` sorts before `a`); ties are
/// broken by id in the same direction, so `Desc` is exactly `Asc` reversed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreOrder {
    Name,
    #[default]
    Created,
    Modified,
}

/// See [`StoreOrder`] for how values compare and ties break.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecretOrder {
    Name,
    Comment,
    #[default]
    Created,
    Modified,
    /// Every stored secret is active, so this orders by the id tie-break alone.
    Status,
}

/// Page numbers are 1-based; `per_page` is already validated by core (>= 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreQuery {
    pub page: u32,
    pub per_page: u32,
    pub order: StoreOrder,
    pub direction: Direction,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretQuery {
    pub page: u32,
    pub per_page: u32,
    pub order: SecretOrder,
    pub direction: Direction,
    /// Case-insensitive substring over name and comment; `%` and `_` match literally. Case is
    /// folded for ASCII letters (names are ASCII; other letters in comments match exactly).
    pub search: Option<String>,
    /// Only secrets whose scopes include every one of these.
    pub scopes: Scopes,
}

impl SecretQuery {
    /// The checks every backend makes before listing: a search holding a NUL is `Invalid`
    /// (PostgreSQL's text cannot hold one, and SQLite would cut the pattern there, matching
    /// more than asked).
    pub fn check(&self) -> crate::Result<()> {
        if self.search.as_deref().is_some_and(|s| s.contains('\0')) {
            return Err(crate::StorageError::Invalid(
                "a search cannot contain a NUL character",
            ));
        }
        Ok(())
    }

    /// Whether the query filters nothing: no search (not even an empty one) and no scope.
    /// Every backend decides by this alone whether a list's `total_count` is the
    /// store's maintained count or a count of the matching rows; a filter field added to the
    /// struct does not compile here until it is named.
    pub fn is_unfiltered(&self) -> bool {
        let SecretQuery {
            page: _,
            per_page: _,
            order: _,
            direction: _,
            search,
            scopes,
        } = self;
        search.is_none() && scopes.is_empty()
    }
}

/// Services are listed by name (byte-wise), ties impossible (names unique per account). Page
/// numbers are 1-based; `per_page` is already validated by core (>= 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceQuery {
    pub page: u32,
    pub per_page: u32,
    /// Only the service with exactly this name.
    pub name: Option<ServiceName>,
}

/// One page of a listing. Ties in the sort order are broken by id, so pages never overlap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Rows matching the query across all pages.
    pub total_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_read_from_the_nearer_end() {
        let w = |from_end, skip, limit| {
            Some(PageWindow {
                from_end,
                skip,
                limit,
            })
        };
        // 1,000 rows by 100: the first half from the start, the rest from the end.
        assert_eq!(PageWindow::new(1, 100, 1000), w(false, 0, 100));
        assert_eq!(PageWindow::new(0, 100, 1000), w(false, 0, 100));
        assert_eq!(PageWindow::new(5, 100, 1000), w(false, 400, 100));
        assert_eq!(PageWindow::new(6, 100, 1000), w(true, 400, 100));
        assert_eq!(PageWindow::new(10, 100, 1000), w(true, 0, 100));
        // A short last page: only the rows there are.
        assert_eq!(PageWindow::new(4, 3, 10), w(true, 0, 1));
        assert_eq!(PageWindow::new(3, 3, 10), w(true, 1, 3));
        // Past the end, or nothing to list.
        assert_eq!(PageWindow::new(11, 100, 1000), None);
        assert_eq!(PageWindow::new(u32::MAX, u32::MAX, 1000), None);
        assert_eq!(PageWindow::new(1, 10, 0), None);
        assert_eq!(
            w(true, 0, 1).unwrap().read_direction(Direction::Asc),
            Direction::Desc
        );
        assert_eq!(
            w(false, 0, 1).unwrap().read_direction(Direction::Desc),
            Direction::Desc
        );
    }
}
