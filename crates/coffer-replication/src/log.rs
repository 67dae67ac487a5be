//! An in-memory chained log: the producer side for tests, and what a relay re-serves.

use coffer_storage::ChangeRecord;
use coffer_types::Timestamp;

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
#[derive(Clone, Debug)]
pub struct Log {
    base: Position,
    /// The snapshot items as of `base` (for this log: the payloads of entries `1..=base.seq`).
    base_items: Vec<Vec<u8>>,
    /// Entries `base.seq + 1 ..= head`, in order.
    entries: Vec<ChangeRecord>,
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
        &self.entries[self.entries.len() - 1]
    }

    /// Appends entries received from upstream, unchanged. Each must have the next seq and chain
    /// onto its predecessor; on the first that does not, nothing of the call is appended.
    pub fn extend(&mut self, records: &[ChangeRecord]) -> Result<(), Error> {
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
        Ok(())
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

    /// A snapshot at the head: the base items followed by every held entry's payload.
    pub fn snapshot(&self) -> Snapshot {
        let mut items = self.base_items.clone();
        items.extend(self.entries.iter().map(|e| e.payload.clone()));
        Snapshot::new(self.head(), items)
    }

    /// Drops the held entries, folding them into the base: afterwards only positions at the
    /// head can be followed from without a snapshot.
    pub fn compact(&mut self) {
        let head = self.head();
        let entries = std::mem::take(&mut self.entries);
        self.base_items
            .extend(entries.into_iter().map(|e| e.payload));
        self.base = head;
    }
}
