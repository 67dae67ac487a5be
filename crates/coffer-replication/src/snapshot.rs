//! Snapshots: the state at one log position, with an integrity digest.

use coffer_storage::ChangeRecord;

use crate::Position;

/// The replicated state as of one log position, for bootstrapping and resyncing.
///
/// `items` are opaque to replication. The in-memory [`crate::Log`] uses every payload of the
/// log up to `position`, in order (replaying them rebuilds the state); a server would use one
/// `*_put` change per live row. The producer computes `digest` with [`Snapshot::new`]; a
/// follower installs a snapshot only if [`Snapshot::verify`] holds.
///
/// The digest catches corruption (a flipped byte, a truncated item, a lost item), not a
/// malicious upstream: anyone can recompute it. Authenticating upstreams is the transport's
/// job (TLS with pinned peers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The last log entry the state reflects (`seq` 0 and the genesis hash for an empty log).
    pub position: Position,
    pub items: Vec<Vec<u8>>,
    /// [`Snapshot::digest_of`] `(position, items)`.
    pub digest: [u8; 32],
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
        }
    }

    /// `SHA-256(position.hash || position.seq as 8 bytes big-endian || E)`, where `E` is the
    /// domain tag `coffer-snapshot-v1\0`, the item count (8 bytes big-endian), then each item
    /// as its length (8 bytes big-endian) and its bytes. Every item has its length in front, so
    /// two different item lists never encode alike.
    pub fn digest_of(position: Position, items: &[Vec<u8>]) -> [u8; 32] {
        let len: usize = items.iter().map(|i| i.len() + 8).sum();
        let mut encoded = Vec::with_capacity(DOMAIN.len() + 8 + len);
        encoded.extend_from_slice(DOMAIN);
        encoded.extend_from_slice(&(items.len() as u64).to_be_bytes());
        for item in items {
            encoded.extend_from_slice(&(item.len() as u64).to_be_bytes());
            encoded.extend_from_slice(item);
        }
        // `chain_hash` is SHA-256(prev || seq || payload): exactly the layout above.
        ChangeRecord::chain_hash(&position.hash, position.seq, &encoded)
    }

    /// Whether the digest matches the position and items, and the position is well formed
    /// (seq 0 carries the genesis hash).
    pub fn verify(&self) -> bool {
        (self.position.seq != 0 || self.position.hash == ChangeRecord::GENESIS_HASH)
            && Snapshot::digest_of(self.position, &self.items) == self.digest
    }
}
