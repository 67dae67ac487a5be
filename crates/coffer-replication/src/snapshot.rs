//! Snapshots: the state at one log position, with an integrity digest.

use aws_lc_rs::digest;
use coffer_storage::{ChangeRecord, SIGNATURE_LEN};

use crate::ClusterId;
use crate::Position;
use crate::sign::FeedKeyPair;

/// The replicated state as of one log position, for bootstrapping and resyncing.
///
/// `items` are opaque to replication. The in-memory [`crate::Log`] uses every payload of the
/// log up to `position`, in order (replaying them rebuilds the state); a server would use one
/// `*_put` change per live row. The producer computes `digest` with [`Snapshot::new`]; a
/// follower installs a snapshot only if [`Snapshot::verify`] holds.
///
/// The digest catches corruption (a flipped byte, a truncated item, a lost item), not a
/// malicious upstream: anyone can recompute it. What a malicious upstream cannot make is the
/// control plane's `signature` over cluster id, position, count, digest and origin time
/// ([`crate::sign::snapshot_message`]), which a follower with a pinned key requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The last log entry the state reflects (`seq` 0 and the genesis hash for an empty log).
    pub position: Position,
    pub items: Vec<Vec<u8>>,
    /// [`Snapshot::digest_of`] `(position, items)`.
    pub digest: [u8; 32],
    /// The cluster whose log it reflects (all zeros for an unsigned test snapshot).
    pub cluster_id: ClusterId,
    /// When the producer started making it (Unix ms of the control plane's clock; signed).
    pub origin_ms: u64,
    /// The control plane's signature, if the producer holds the key.
    pub signature: Option<[u8; SIGNATURE_LEN]>,
}

/// Separates snapshot digests from log entry hashes computed with the same primitive.
const DOMAIN: &[u8] = b"coffer-snapshot-v1\0";

impl Snapshot {
    /// A snapshot of `items` at `position`, with its digest.
    pub fn new(position: Position, items: Vec<Vec<u8>>) -> Snapshot {
        let digest = Snapshot::digest_of(position, &items);
        Snapshot {
            position,
            items,
            digest,
            cluster_id: [0; 16],
            origin_ms: 0,
            signature: None,
        }
    }

    /// A snapshot of `items` at `position` in `cluster_id`'s log, made at `origin_ms`, signed
    /// with `key`.
    pub fn signed(
        cluster_id: ClusterId,
        position: Position,
        items: Vec<Vec<u8>>,
        origin_ms: u64,
        key: &FeedKeyPair,
    ) -> Snapshot {
        let digest = Snapshot::digest_of(position, &items);
        let signature = key.sign_snapshot(
            &cluster_id,
            position,
            items.len() as u64,
            &digest,
            origin_ms,
        );
        Snapshot {
            position,
            items,
            digest,
            cluster_id,
            origin_ms,
            signature: Some(signature),
        }
    }

    /// `SHA-256(position.hash || position.seq as 8 bytes big-endian || E)`, where `E` is the
    /// domain tag `coffer-snapshot-v1\0`, the item count (8 bytes big-endian), then each item
    /// as its length (8 bytes big-endian) and its bytes. Every item has its length in front, so
    /// two different item lists never encode alike. [`SnapshotDigest`] computes the same
    /// incrementally.
    pub fn digest_of(position: Position, items: &[Vec<u8>]) -> [u8; 32] {
        let mut digest = SnapshotDigest::new(position, items.len() as u64);
        for item in items {
            digest.update(item);
        }
        digest.finish_unchecked()
    }

    /// Whether the digest matches the position and items, and the position is well formed
    /// (seq 0 carries the genesis hash).
    pub fn verify(&self) -> bool {
        (self.position.seq != 0 || self.position.hash == ChangeRecord::GENESIS_HASH)
            && Snapshot::digest_of(self.position, &self.items) == self.digest
    }
}

/// [`Snapshot::digest_of`] computed one item at a time, for snapshots streamed rather than held
/// in memory: the producer and the receiver both know the count up front (it is in the
/// snapshot's header).
pub struct SnapshotDigest {
    ctx: digest::Context,
    expected: u64,
    seen: u64,
}

impl SnapshotDigest {
    pub fn new(position: Position, count: u64) -> SnapshotDigest {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&position.hash);
        ctx.update(&position.seq.to_be_bytes());
        ctx.update(DOMAIN);
        ctx.update(&count.to_be_bytes());
        SnapshotDigest {
            ctx,
            expected: count,
            seen: 0,
        }
    }

    pub fn update(&mut self, item: &[u8]) {
        self.ctx.update(&(item.len() as u64).to_be_bytes());
        self.ctx.update(item);
        self.seen += 1;
    }

    /// How many items have been added so far.
    pub fn items(&self) -> u64 {
        self.seen
    }

    /// The digest, or `None` if the number of items added is not the count announced (a
    /// truncated or padded snapshot).
    pub fn finish(self) -> Option<[u8; 32]> {
        (self.seen == self.expected).then(|| self.finish_unchecked())
    }

    fn finish_unchecked(self) -> [u8; 32] {
        let d = self.ctx.finish();
        let mut out = [0u8; 32];
        // SHA-256 output is exactly 32 bytes.
        out.copy_from_slice(d.as_ref());
        out
    }
}

impl std::fmt::Debug for SnapshotDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotDigest")
            .field("expected", &self.expected)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}
