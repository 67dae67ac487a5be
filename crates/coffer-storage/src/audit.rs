//! The audit log: per-account hash chains of what core records about every change and every
//! denied attempt, appended in the same transaction as the change they describe.
//!
//! Storage never interprets an entry's payload; it only assigns the entry its place in its
//! account's chain (`seq`, `prev_hash`) and its `hash`. The chain is what makes tampering
//! evident: `coffer audit verify` re-reads the raw rows ([`crate::Storage::audit_entries`]) and
//! recomputes every hash with [`AuditRecord::compute_hash`]; checkpoints MACed by core under a
//! key storage never sees pin the head, so a truncated or rewritten tail is caught too.

use aws_lc_rs::digest;
use coffer_types::{AccountId, SecretId, StoreId, Timestamp, TokenId};

use crate::Direction;

/// One audit entry as a caller appends it. `payload` is core's JSON with every detail (actor
/// name, resource names, request id, client address, value_modified, ...); the columns are the
/// filterable subset. Storage never interprets the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// The account whose chain the entry joins. Need not exist (any more): the audit log
    /// outlives the account.
    pub account_id: AccountId,
    pub at: Timestamp,
    /// Must not be empty (`Invalid`).
    pub action: String,
    /// Must not be empty (`Invalid`).
    pub outcome: String,
    pub actor_token: Option<TokenId>,
    pub store_id: Option<StoreId>,
    pub secret_id: Option<SecretId>,
    pub payload: Vec<u8>,
}

/// A stored audit entry with its place in its account's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// 1, 2, 3, ... per account, gap-free, in commit order.
    pub seq: u64,
    /// The hash of the account's entry `seq - 1`; [`AuditRecord::GENESIS_HASH`] for seq 1.
    pub prev_hash: [u8; 32],
    /// [`AuditRecord::compute_hash`] of (`prev_hash`, `seq`, `entry`) when it was written.
    pub hash: [u8; 32],
    pub entry: AuditEntry,
}

impl AuditRecord {
    /// The `prev_hash` of every account's first entry.
    pub const GENESIS_HASH: [u8; 32] = [0; 32];

    /// SHA-256 over prev_hash || an unambiguous, length-prefixed encoding of seq and every field
    /// of `entry` (account_id, at, action, outcome, actor_token, store_id, secret_id, payload).
    ///
    /// The encoding, after the 32 bytes of `prev_hash` (integers big-endian):
    /// - `seq`: 8 bytes;
    /// - `account_id`: its 16 bytes;
    /// - `at`: Unix microseconds as a signed 8-byte integer;
    /// - `action`, `outcome`: each an 8-byte length then its UTF-8 bytes;
    /// - `actor_token`, `store_id`, `secret_id`: each one byte, 0 for none, or 1 followed by
    ///   the id's 16 bytes;
    /// - `payload`: an 8-byte length then its bytes.
    ///
    /// Every field has a fixed size or a length in front, so no two different entries encode
    /// alike. Documented in docs/storage-format.md.
    pub fn compute_hash(prev_hash: &[u8; 32], seq: u64, entry: &AuditEntry) -> [u8; 32] {
        fn bytes(ctx: &mut digest::Context, data: &[u8]) {
            ctx.update(&(data.len() as u64).to_be_bytes());
            ctx.update(data);
        }
        fn id(ctx: &mut digest::Context, id: Option<&[u8; 16]>) {
            match id {
                None => ctx.update(&[0]),
                Some(id) => {
                    ctx.update(&[1]);
                    ctx.update(id);
                }
            }
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(prev_hash);
        ctx.update(&seq.to_be_bytes());
        ctx.update(entry.account_id.as_bytes());
        ctx.update(&entry.at.unix_micros().to_be_bytes());
        bytes(&mut ctx, entry.action.as_bytes());
        bytes(&mut ctx, entry.outcome.as_bytes());
        id(&mut ctx, entry.actor_token.as_ref().map(TokenId::as_bytes));
        id(&mut ctx, entry.store_id.as_ref().map(StoreId::as_bytes));
        id(&mut ctx, entry.secret_id.as_ref().map(SecretId::as_bytes));
        bytes(&mut ctx, &entry.payload);
        let digest = ctx.finish();
        let mut out = [0u8; 32];
        // SHA-256 output is exactly 32 bytes, so the lengths always match.
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// Whether the stored hash is the one recomputed from `prev_hash`, `seq` and `entry`. This
    /// says nothing about whether `prev_hash` is the previous entry's hash: a verifier checks
    /// that link itself.
    pub fn hash_matches(&self) -> bool {
        // Not secret material: a plain comparison is fine.
        Self::compute_hash(&self.prev_hash, self.seq, &self.entry) == self.hash
    }
}

/// Which audit records [`crate::Storage::list_audit`] returns. Every filter that is set must
/// hold (they are ANDed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Entries with `at >= from` (inclusive).
    pub from: Option<Timestamp>,
    /// Entries with `at < to` (exclusive).
    pub to: Option<Timestamp>,
    pub actor_token: Option<TokenId>,
    /// Exact match.
    pub action: Option<String>,
    /// Exact match.
    pub outcome: Option<String>,
    pub store_id: Option<StoreId>,
    pub secret_id: Option<SecretId>,
    /// 1-based; 0 is read as 1.
    pub page: u32,
    /// Validated by core (>= 1); 0 returns no items (the count only).
    pub per_page: u32,
    /// Order by `seq`.
    pub direction: Direction,
}

/// A MACed statement by core that an account's chain had `hash` at `seq`. Storage keeps it
/// as given: it neither computes nor checks the MAC (the key never reaches storage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditCheckpoint {
    pub account_id: AccountId,
    /// >= 1 (`Invalid` otherwise).
    pub seq: u64,
    pub hash: [u8; 32],
    pub mac: Vec<u8>,
    pub at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            account_id: AccountId::from_bytes([1; 16]),
            at: Timestamp::from_unix_micros(1_700_000_000_000_000),
            action: "create".into(),
            outcome: "success".into(),
            actor_token: Some(TokenId::from_bytes([2; 16])),
            store_id: Some(StoreId::from_bytes([3; 16])),
            secret_id: None,
            payload: br#"{"request_id":"r1"}"#.to_vec(),
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = entry();
        let h = AuditRecord::compute_hash(&[0; 32], 1, &base);
        assert_eq!(h, AuditRecord::compute_hash(&[0; 32], 1, &base.clone()));
        assert_ne!(h, AuditRecord::compute_hash(&[9; 32], 1, &base));
        assert_ne!(h, AuditRecord::compute_hash(&[0; 32], 2, &base));
        let variants: Vec<AuditEntry> = vec![
            AuditEntry {
                account_id: AccountId::from_bytes([4; 16]),
                ..base.clone()
            },
            AuditEntry {
                at: Timestamp::from_unix_micros(1),
                ..base.clone()
            },
            AuditEntry {
                action: "update".into(),
                ..base.clone()
            },
            AuditEntry {
                outcome: "denied".into(),
                ..base.clone()
            },
            AuditEntry {
                actor_token: None,
                ..base.clone()
            },
            AuditEntry {
                store_id: None,
                ..base.clone()
            },
            AuditEntry {
                secret_id: Some(SecretId::from_bytes([5; 16])),
                ..base.clone()
            },
            AuditEntry {
                payload: b"{}".to_vec(),
                ..base.clone()
            },
            // Moving bytes between adjacent fields must not keep the hash.
            AuditEntry {
                action: "createsuccess".into(),
                outcome: String::new(),
                ..base.clone()
            },
            // The same id in another optional slot.
            AuditEntry {
                actor_token: None,
                store_id: None,
                secret_id: Some(SecretId::from_bytes([3; 16])),
                ..base.clone()
            },
        ];
        for v in &variants {
            assert_ne!(h, AuditRecord::compute_hash(&[0; 32], 1, v), "{v:?}");
        }
    }

    #[test]
    fn known_answer() {
        // Pins the encoding: a change here breaks every stored chain.
        let mut manual = Vec::new();
        manual.extend_from_slice(&[0; 32]);
        manual.extend_from_slice(&1u64.to_be_bytes());
        manual.extend_from_slice(&[1; 16]);
        manual.extend_from_slice(&1_700_000_000_000_000i64.to_be_bytes());
        manual.extend_from_slice(&6u64.to_be_bytes());
        manual.extend_from_slice(b"create");
        manual.extend_from_slice(&7u64.to_be_bytes());
        manual.extend_from_slice(b"success");
        manual.push(1);
        manual.extend_from_slice(&[2; 16]);
        manual.push(1);
        manual.extend_from_slice(&[3; 16]);
        manual.push(0);
        let payload = br#"{"request_id":"r1"}"#;
        manual.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        manual.extend_from_slice(payload);
        let expected = digest::digest(&digest::SHA256, &manual);
        assert_eq!(
            AuditRecord::compute_hash(&[0; 32], 1, &entry()).as_slice(),
            expected.as_ref()
        );
    }
}
