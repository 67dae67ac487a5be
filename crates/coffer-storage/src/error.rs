/// The kinds of row an error can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Account,
    Token,
    Dek,
    Store,
    Secret,
    Version,
    AuditCheckpoint,
    Service,
    ServiceToken,
    Node,
    /// A node's registered public key.
    NodeKey,
}

/// Storage errors in domain terms. Never carries a value (storage never has one) and never a
/// raw SQL string.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("{0:?} not found")]
    NotFound(Entity),
    /// A row with this id already exists. Ids are random 128-bit values, so this means a
    /// create was repeated (or a caller bug), never a user-visible name clash.
    #[error("{0:?} with this id already exists")]
    AlreadyExists(Entity),
    /// A name is already used in its parent; carries the name.
    #[error("{entity:?} name {name:?} is already taken")]
    NameTaken { entity: Entity, name: String },
    #[error("store is not empty")]
    NotEmpty,
    /// The token (or node) was revoked before; revoking it again changes nothing.
    #[error("token is already revoked")]
    AlreadyRevoked,
    #[error("secrets quota exceeded: quota {quota}, in use {usage}, requested {requested}")]
    QuotaExceeded {
        quota: u64,
        usage: u64,
        requested: u64,
    },
    #[error("limit exceeded: at most {limit} {what}")]
    LimitExceeded { what: &'static str, limit: u64 },
    /// An optimistic-concurrency check failed; the caller should re-read and retry.
    #[error("concurrent modification")]
    Conflict,
    /// The caller passed arguments that contradict each other (e.g. a secret record whose store
    /// is not the store named by the call, or a new version that is not `expected + 1`). This
    /// is a bug in the caller, not a user error; the message is a fixed string without values.
    #[error("invalid storage request: {0}")]
    Invalid(&'static str),
    /// The change log no longer holds the entries asked for: everything up to `base` was
    /// compacted (or, on an edge, is covered by its installed snapshot). A follower that far
    /// behind needs a snapshot.
    #[error("change log entries up to {base} are compacted")]
    Compacted { base: u64 },
    /// Stored data failed a consistency check (bad hash chain, undecodable row), or a write
    /// would have left it inconsistent (a change-log head past the log's entries).
    #[error("corrupted storage: {0}")]
    Corrupted(String),
    /// The backend could not be reached or failed (I/O, lock, connection). The string is for
    /// logs, not for API responses.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}
