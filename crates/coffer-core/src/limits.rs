//! Input limits and the validation that goes with them; how often a write retries after a
//! conflict.

use coffer_crypto::Plaintext;

use crate::{CoreError, InvalidKind};

/// How many times an update re-reads and retries when the secret changed first: another
/// control-plane instance sharing the database wrote it, or an update queued before this one
/// failed (see `service::secrets_store::UpdateLocks`). The DEK lifecycle's re-seal retries a
/// refused batch as often.
pub(crate) const UPDATE_RETRIES: usize = 8;

/// The largest secret value, in bytes (Cloudflare's limit).
pub const MAX_VALUE_BYTES: usize = 65_536;
/// The longest comment, in bytes.
pub const MAX_COMMENT_BYTES: usize = 1024;
/// The most items in one bulk create or bulk delete.
pub const MAX_BATCH: usize = 1000;
/// The largest `per_page`.
pub const MAX_PER_PAGE: u32 = 100;
/// `per_page` when the request gives none.
pub const DEFAULT_PER_PAGE: u32 = 20;
/// The largest `page` (pages past `u32::MAX / per_page` would overflow storage's offsets;
/// nobody pages that far).
pub const MAX_PAGE: u32 = 1_000_000;
/// The longest list `search`, in bytes.
pub const MAX_SEARCH_BYTES: usize = 256;
/// The largest request body the API and the dashboard's forms accept, in bytes.
pub const MAX_REQUEST_BODY_BYTES: usize = 1 << 20;
/// The largest per-account secrets quota (storage keeps quotas as signed 64-bit integers).
pub const MAX_SECRETS_QUOTA: u64 = i64::MAX as u64;

/// Per-instance limits, set in server configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Secrets an account may hold unless it has its own quota.
    pub default_secrets_quota: u64,
    /// Stores an account may hold.
    pub max_stores: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            default_secrets_quota: 10_000,
            max_stores: 100,
        }
    }
}

/// Checks a value's size. `field` names it in the error (e.g. `/0/value`).
pub fn check_value(value: &Plaintext, field: &str) -> Result<(), CoreError> {
    if value.is_empty() {
        return Err(CoreError::invalid(
            InvalidKind::Value,
            field,
            "value must not be empty",
        ));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(CoreError::invalid(
            InvalidKind::Value,
            field,
            format!(
                "value must be at most {MAX_VALUE_BYTES} bytes (got {})",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// A secret's free-text comment, at most [`MAX_COMMENT_BYTES`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comment(String);

impl Comment {
    pub fn parse(s: String, field: &str) -> Result<Comment, CoreError> {
        if s.len() > MAX_COMMENT_BYTES {
            return Err(CoreError::invalid(
                InvalidKind::Comment,
                field,
                format!(
                    "comment must be at most {MAX_COMMENT_BYTES} bytes (got {})",
                    s.len()
                ),
            ));
        }
        if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(CoreError::invalid(
                InvalidKind::Comment,
                field,
                "comment must not contain control characters",
            ));
        }
        Ok(Comment(s))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}
