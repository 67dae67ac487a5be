/// The kinds of row an error can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Account,
    Token,
    Dek,
    Store,
    Secret,
    Version,
}

/// Storage errors in domain terms. Never carries a value (storage never has one) and never a
/// raw SQL string.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("{0:?} not found")]
    NotFound(Entity),
    /// A name is already used in its parent; carries the name.
    #[error("{entity:?} name {name:?} is already taken")]
    NameTaken { entity: Entity, name: String },
    #[error("store is not empty")]
    NotEmpty,
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
    /// Stored data failed a consistency check (bad hash chain, undecodable row).
    #[error("corrupted storage: {0}")]
    Corrupted(String),
    /// The backend could not be reached or failed (I/O, lock, connection). The string is for
    /// logs, not for API responses.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}
