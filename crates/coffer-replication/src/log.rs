//! An in-memory chained log: the producer side for tests, and what a relay re-serves.

use std::sync::Arc;

use coffer_storage::{ChangeRecord, FeedSignature};
use coffer_types::Timestamp;

use crate::ClusterId;
use crate::sign::FeedKeyPair;
use crate::{Error, Position, Snapshot};

/// An in-memory, hash-chained change log that serves entries and snapshots.
///
/// A root producer appends payloads with [`Log::append`]. A relay starts from the snapshot its
/// follower installed ([`Log::from_snapshot`]) and appends the entries its follower applied
/// with [`Log::extend`], which keeps them byte for byte (hashes and times included), so
/// downstream edges see exactly the root's log.
///
/// The log keeps a base: everything up to the base is held only as snapshot items
/// ([`Log::compact`] moves the base to the head). A follower asking for entries after a
/// position older than the base gets [`Error::Compacted`] and must fetch a snapshot.
///
/// **Signed logs.** A root made with [`Log::signed`] signs every entry's checkpoint and every
/// snapshot. A relay holds no key: it keeps the signatures it received with its entries
/// ([`Log::extend_signed`]) and serves them unchanged, and it serves the root-signed snapshot
/// it installed, as it was, rather than one of its own (which it could not sign); so it never
/// compacts past that snapshot.
#[derive(Clone, Debug)]
pub struct Log {
    base: Position,
    /// The snapshot items as of `base` (for this log: the payloads of entries `1..=base.seq`).
    base_items: Vec<Vec<u8>>,
    /// Entries `base.seq + 1 ..= head`, in order.
    entries: Vec<ChangeRecord>,
    /// Signatures of held entries, in seq order.
    signatures: Vec<FeedSignature>,
    /// The root's key: it signs what it appends and the snapshots it makes.
    signer: Option<(ClusterId, Arc<FeedKeyPair>)>,
    /// A relay's installed, signed snapshot (its base), served as it is.
    base_snapshot: Option<Snapshot>,
}

impl Default for Log {
    fn default() -> Self {
        Log::new()
    }
}

impl Log {
    /// An empty log at genesis.
    pub fn new() -> Log {
        Log {
            base: Position::GENESIS,
            base_items: Vec::new(),
            entries: Vec::new(),
            signatures: Vec::new(),
            signer: None,
            base_snapshot: None,
        }
    }

    /// An empty root log of `cluster_id` that signs with `key`.
    pub fn signed(cluster_id: ClusterId, key: Arc<FeedKeyPair>) -> Log {
        Log {
            signer: Some((cluster_id, key)),
            ..Log::new()
        }
    }

    /// A log whose base is a verified snapshot (a relay after bootstrapping or resyncing).
    pub fn from_snapshot(snapshot: &Snapshot) -> Result<Log, Error> {
        if !snapshot.verify() {
            return Err(Error::CorruptSnapshot);
        }
        Ok(Log {
            base: snapshot.position,
            base_items: snapshot.items.clone(),
            entries: Vec::new(),
            signatures: Vec::new(),
            signer: None,
            base_snapshot: snapshot.signature.is_some().then(|| snapshot.clone()),
        })
    }

    /// The last entry's position.
    pub fn head(&self) -> Position {
        self.entries.last().map_or(self.base, Position::of)
    }

    /// The oldest position entries can be served after.
    pub fn base(&self) -> Position {
        self.base
    }

    /// Appends a payload as the next entry (the producer side; a real producer appends in the
    /// same transaction as the change). `at` is clamped to be monotonic.
    pub fn append(&mut self, payload: Vec<u8>, at: Timestamp) -> &ChangeRecord {
        let head = self.head();
        let at = self.entries.last().map_or(at, |last| at.max(last.at));
        let seq = head.seq + 1;
        let hash = ChangeRecord::chain_hash(&head.hash, seq, &payload);
        self.entries.push(ChangeRecord {
            seq,
            at,
            hash,
            payload,
        });
        if let Some((cluster, key)) = &self.signer {
            self.signatures.push(FeedSignature {
                seq,
                signature: key.sign_checkpoint(cluster, seq, &hash),
            });
        }
        &self.entries[self.entries.len() - 1]
    }

    /// Appends entries received from upstream, unchanged. Each must have the next seq and chain
    /// onto its predecessor; on the first that does not, nothing of the call is appended.
    pub fn extend(&mut self, records: &[ChangeRecord]) -> Result<(), Error> {
        self.extend_signed(records, &[])
    }

    /// [`Log::extend`], keeping the signatures among `signatures` of the entries appended (a
    /// relay serves them on unchanged).
    pub fn extend_signed(
        &mut self,
        records: &[ChangeRecord],
        signatures: &[FeedSignature],
    ) -> Result<(), Error> {
        let mut head = self.head();
        for r in records {
            if r.seq != head.seq + 1 {
                return Err(Error::Gap {
                    expected: head.seq + 1,
                    got: r.seq,
                });
            }
            if !r.follows(&head.hash) {
                return Err(Error::HashMismatch { seq: r.seq });
            }
            head = Position::of(r);
        }
        self.entries.extend_from_slice(records);
        if let (Some(first), Some(last)) = (records.first(), records.last()) {
            self.signatures.extend(
                signatures
                    .iter()
                    .filter(|s| (first.seq..=last.seq).contains(&s.seq)),
            );
        }
        Ok(())
    }

    /// [`Log::entries_after`] with the signatures of the entries returned. When the log holds
    /// signatures, an answer that would end on an unsigned entry goes on to the next signed one
    /// (past `limit` if need be), so a follower can apply all of it.
    pub fn feed_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<ChangeRecord>, Vec<FeedSignature>), Error> {
        let mut entries = self.entries_after(after, limit)?;
        let signed = |seq: u64| {
            self.signatures
                .binary_search_by_key(&seq, |s| s.seq)
                .is_ok()
        };
        if !self.signatures.is_empty()
            && let Some(last) = entries.last()
            && !signed(last.seq)
        {
            let start = usize::try_from(last.seq - self.base.seq).unwrap_or(usize::MAX);
            for e in self.entries.iter().skip(start) {
                entries.push(e.clone());
                if signed(e.seq) {
                    break;
                }
            }
        }
        let sigs = match (entries.first(), entries.last()) {
            (Some(first), Some(last)) => self
                .signatures
                .iter()
                .filter(|s| (first.seq..=last.seq).contains(&s.seq))
                .copied()
                .collect(),
            _ => Vec::new(),
        };
        Ok((entries, sigs))
    }

    /// Up to `limit` entries after `after`, in order: empty when `after` is the head or beyond
    /// it (the caller is up to date, or ahead of this log), [`Error::Compacted`] when the
    /// entries right after `after` are no longer held (fetch a snapshot instead).
    pub fn entries_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeRecord>, Error> {
        if after < self.base.seq {
            return Err(Error::Compacted {
                after,
                base: self.base.seq,
            });
        }
        let start = usize::try_from(after - self.base.seq).unwrap_or(usize::MAX);
        Ok(self
            .entries
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }

    /// A snapshot at the head: the base items followed by every held entry's payload; signed
    /// on a root with a key. A relay that installed a signed snapshot serves that one instead.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_at(0)
    }

    /// [`Log::snapshot`], made (and on a root signed) as of `origin_ms`.
    pub fn snapshot_at(&self, origin_ms: u64) -> Snapshot {
        if self.signer.is_none()
            && let Some(base) = &self.base_snapshot
        {
            return base.clone();
        }
        let mut items = self.base_items.clone();
        items.extend(self.entries.iter().map(|e| e.payload.clone()));
        match &self.signer {
            Some((cluster, key)) => Snapshot::signed(*cluster, self.head(), items, origin_ms, key),
            None => Snapshot {
                origin_ms,
                ..Snapshot::new(self.head(), items)
            },
        }
    }

    /// On a root with a key: its signed statement that its head is current as of `origin_ms`.
    pub fn freshness(&self, origin_ms: u64) -> Option<crate::sign::Freshness> {
        self.signer.as_ref().map(|(cluster, key)| {
            crate::sign::Freshness::sign(key, *cluster, self.head(), origin_ms)
        })
    }

    /// Drops the held entries, folding them into the base: afterwards only positions at the
    /// head can be followed from without a snapshot. A relay serving a signed snapshot keeps
    /// everything (compacting would leave its followers a snapshot they cannot follow on from).
    pub fn compact(&mut self) {
        if self.signer.is_none() && self.base_snapshot.is_some() {
            return;
        }
        self.signatures.clear();
        let head = self.head();
        let entries = std::mem::take(&mut self.entries);
        self.base_items
            .extend(entries.into_iter().map(|e| e.payload));
        self.base = head;
    }
}
