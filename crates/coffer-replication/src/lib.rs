//! Edge replication of Coffer's change log.
//!
//! Every edge node keeps every secret, current through the ordered, hash-chained change feed
//! (`coffer_storage::ChangeRecord`: gap-free `seq`, `hash = SHA-256(prev || seq || payload)`).
//! This crate holds the replication logic as a state machine without I/O, [`Follower`], plus
//! an in-memory chained [`Log`] (the producer side for tests, and what a relay re-serves) and
//! [`Snapshot`]s. Networking, storage and clocks belong to the driver (the server's edge mode);
//! the tests drive it under a simulated network that drops, duplicates, delays and reorders
//! messages, corrupts them and partitions nodes (`tests/simulation.rs`).
//!
//! # Protocol
//!
//! An edge has an ordered list of upstreams (the root, or relays of a higher tier) and talks
//! to one at a time, the *current* one. Messages, from upstream to edge: entries (answering a
//! fetch), snapshots (answering a snapshot fetch), "need a snapshot" (the upstream's log no
//! longer holds the entries after the asked position), and heartbeats `(head_seq, origin_ms)`
//! that upstreams send their subscribers periodically (the root every second or so). From
//! edge to upstream: `Fetch { after }` and `FetchSnapshot`.
//!
//! The driver calls [`Follower::handle`] with the current time in milliseconds and one
//! [`Input`], and carries out the returned [`Output`]s in order:
//!
//! 1. **Bootstrap.** A fresh follower ([`Follower::new`]) fetches a snapshot, checks its
//!    digest and emits [`Output::InstallSnapshot`]. A restarted one resumes from the position
//!    its driver stored ([`Follower::resume`]).
//! 2. **Tail.** It fetches the entries after its position: when a heartbeat announces a higher
//!    head, right after a batch arrived (until an answer comes back empty), or every
//!    `poll_interval_ms`. An unanswered request is re-sent after
//!    `request_timeout_ms`, to the same upstream.
//! 3. **Verify, then apply.** Entries at or below the position are duplicates and skipped. A
//!    batch whose first new entry is beyond position + 1 is out of order: dropped, and the
//!    range is fetched again. Otherwise each entry must have the next seq, chain onto its
//!    predecessor's hash ([`ChangeRecord::follows`](coffer_storage::ChangeRecord::follows))
//!    and parse as a `Change`; the verified run is emitted as one [`Output::Apply`]. The first
//!    entry that fails stops applying: nothing from it on is applied, an [`Output::Alarm`] is
//!    raised, and the follower resyncs from a snapshot of the same upstream.
//! 4. **Durability.** The driver applies a batch and stores the last entry's seq and hash in
//!    one local transaction, then reports [`Input::Applied`]. [`Follower::applied`] moves
//!    only then, so a crash between the two re-fetches rather than skips. Fetching continues
//!    from [`Follower::verified`] meanwhile (applies are pipelined, and never overlap).
//! 5. **Snapshots** carry their position and a digest over position and items
//!    ([`Snapshot::digest_of`]). One failing its digest raises an alarm and the follower
//!    switches upstream and asks again. One older than (or equal to) the verified position is
//!    not installed: the follower keeps its state and follows on from it.
//! 6. **Failover.** The follower moves to the next upstream (round robin) when the current one
//!    fails at the connection level or refuses the request ([`Input::Failed`]; the next
//!    request then waits `failure_backoff_ms`, doubled for each further failure in a row up to
//!    `max_backoff_ms`, jittered, and at least what the upstream asked with `Retry-After`
//!    within that cap), is silent (no message at all) for longer than `staleness_ms`,
//!    sends heartbeats whose origin is older than `staleness_ms` (a relay cut off from the
//!    root), or is behind what it advertises (or cannot produce a usable snapshot) for longer
//!    than `staleness_ms`. A lost request or answer is only re-sent: a healthy upstream on a
//!    lossy network is never left. After a switch the follower continues from its position:
//!    the new upstream's log has the same seqs and hashes, and if its entries do not chain
//!    on, that is a hash mismatch (alarm, resync from its snapshot). Messages from upstreams
//!    other than the current one are ignored. With every upstream down, it moves on at most
//!    once per staleness period (or per backoff, on connection failures).
//! 7. **Relays** are a follower plus a [`Log`]: installed snapshots become the log's base
//!    ([`Log::from_snapshot`]) and applied entries are appended unchanged ([`Log::extend`]),
//!    hashes included, so the tiers below see the root's log exactly. A relay stamps its own
//!    heartbeats with [`Follower::freshest_origin_ms`] and forwards the newest signed
//!    freshness statement it verified ([`Follower::latest_freshness`]) unchanged.
//! 8. **Freshness.** With a key pinned, heartbeats only say an upstream is alive: the head it
//!    is held to and the staleness come from the root's signed freshness statements alone
//!    ([`Input::Freshness`], [`sign::Freshness`]), each accepted only if newer than every one
//!    verified before, so an upstream that withholds entries (answering "nothing new", or
//!    replaying old statements) is left as stale, or for no progress towards the head it
//!    names. [`Follower::fresh_as_of_ms`] is the root's time as of which the applied state is
//!    known current. A signed snapshot counts as a statement of its origin time, and one
//!    older than [`Config::max_snapshot_age_ms`] is refused ([`AlarmKind::StaleSnapshot`]).
//!
//! # Guarantees
//!
//! - What a follower applies is always a prefix of the root's log: the same seqs and hashes,
//!   in order, each applied once (or covered by a snapshot at a later position).
//! - Nothing unverified is applied or installed: a flipped byte in a payload or hash, a
//!   truncated payload, a gap or a corrupted snapshot is refused, with an alarm.
//! - Once the network heals and writes stop, every follower reaches the root's head.
//!
//! What it does not guarantee: `ChangeRecord::at` is not covered by the hash, so a corrupted
//! time is not detected here. The snapshot digest and the hash chain catch corruption, not a
//! malicious upstream, which could recompute both: that is what signatures are for. A follower
//! given the control plane's public key ([`Config::feed_key`]) applies entries only up to a
//! checkpoint whose signature verifies ([`sign`]), and installs only signed snapshots; a
//! missing or bad signature is an alarm ([`AlarmKind::BadSignature`]) and a resync, exactly
//! like a hash mismatch.

mod alarm;
mod follower;
mod log;
pub mod sign;
mod snapshot;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_signed;
#[cfg(test)]
mod tests_snapshot_credit;
pub mod wire;

use coffer_storage::ChangeRecord;

pub use follower::{
    Alarm, AlarmKind, Config, Follower, Input, Output, Phase, SnapshotSeal, SwitchReason,
};
pub use log::Log;
pub use sign::{FeedKey, FeedKeyPair, Freshness};
pub use snapshot::{Snapshot, SnapshotDigest};

/// The identity of a replicated log: 16 random bytes made by the control plane.
pub type ClusterId = [u8; 16];

/// A position in the log: the last entry's seq and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Position {
    /// Before the first entry.
    pub const GENESIS: Position = Position {
        seq: 0,
        hash: ChangeRecord::GENESIS_HASH,
    };

    /// The position right after `record`.
    pub fn of(record: &ChangeRecord) -> Position {
        Position {
            seq: record.seq,
            hash: record.hash,
        }
    }
}

/// Replication errors outside the state machine's own handling (which reports through
/// [`Output::Alarm`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("a follower needs at least one upstream")]
    NoUpstreams,
    #[error("snapshot fails its digest")]
    CorruptSnapshot,
    #[error("expected seq {expected}, got {got}")]
    Gap { expected: u64, got: u64 },
    #[error("entry {seq} does not chain onto its predecessor")]
    HashMismatch { seq: u64 },
    #[error("entries after {after} are compacted (the log starts after {base})")]
    Compacted { after: u64, base: u64 },
}
