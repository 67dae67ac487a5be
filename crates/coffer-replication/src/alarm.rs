//! What the follower reports when it refuses what an upstream sent, and why it leaves one.

use std::fmt;

/// A refused message: what was wrong and who sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alarm<U> {
    pub upstream: U,
    pub kind: AlarmKind,
    pub detail: String,
}

impl<U: fmt::Debug> fmt::Display for Alarm<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} from {:?}: {}",
            self.kind, self.upstream, self.detail
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmKind {
    /// Inside a batch, an entry does not have the next seq.
    Gap,
    /// An entry does not chain onto its predecessor (flipped byte, truncated payload, forged
    /// or diverged history), or a snapshot at our own seq carries another hash.
    HashMismatch,
    /// An entry chains but its payload is not a `Change`.
    CorruptPayload,
    /// A snapshot's digest does not match its position and items.
    CorruptSnapshot,
    /// Entries or a snapshot without a signature that verifies under the pinned key: none, one
    /// by another key, or one over another cluster, seq or hash (a forged or rewritten feed);
    /// also a freshness statement whose signature does not verify.
    BadSignature,
    /// A signed snapshot older than [`crate::Config::max_snapshot_age_ms`]: a recorded snapshot
    /// replayed.
    StaleSnapshot,
}

/// Why the follower left an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchReason {
    /// A connection-level failure ([`crate::Input::Failed`]).
    Failed,
    /// Nothing heard from it for longer than the staleness.
    Silent,
    /// Its heartbeats' origin time is older than the staleness.
    Stale,
    /// It advertised entries (or we needed a snapshot) and delivered nothing usable for
    /// longer than the staleness.
    NoProgress,
    /// It sent a snapshot whose digest does not match.
    CorruptSnapshot,
    /// It sent a snapshot without a signature that verifies under the pinned key.
    BadSignature,
    /// It sent a signed snapshot older than [`crate::Config::max_snapshot_age_ms`].
    StaleSnapshot,
    /// Its snapshot was still streaming in at [`crate::Config::snapshot_deadline_ms`].
    SnapshotDeadline,
    /// It sent a second slow snapshot (one it would be stale on but for the time it
    /// streamed) asked for within [`crate::Config::compaction_gap_ms`] of one whose
    /// streaming time was credited: installed, but counted as fresh as of its signed origin
    /// only, so the upstream is stale on it and left (an upstream that answers `Compacted`
    /// after every install and trickles each snapshot would otherwise hold the follower
    /// behind the root forever).
    RepeatedSlowSnapshot,
}
