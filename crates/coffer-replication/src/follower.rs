//! The follower: a sans-I/O state machine that keeps a replica current from upstream feeds.

use std::collections::VecDeque;
use std::fmt;

use coffer_storage::{ChangeRecord, FeedSignature, SIGNATURE_LEN};

use crate::ClusterId;
pub use crate::alarm::{Alarm, AlarmKind, SwitchReason};
use crate::sign::{FeedKey, Freshness};
use crate::{Error, Position, Snapshot};

mod snapshots;

/// How far ahead of this node's clock a signed origin time (a freshness statement's, a
/// snapshot's) may be: clocks must agree within the staleness anyway; a time further ahead is
/// refused, since kept it would make every genuine time after it look old.
pub const MAX_CLOCK_AHEAD_MS: u64 = 60_000;

/// Timing knobs, all in milliseconds of the caller's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The current upstream is abandoned when nothing was heard from it (no entries, no
    /// heartbeat, no answer) for longer than this; when its heartbeats' origin time is older
    /// than this; or when it advertises entries we lack and delivers none (or, while we need
    /// a snapshot, no usable snapshot) for longer than this. Default 30 s.
    pub staleness_ms: u64,
    /// An unanswered request is sent again (to the same upstream) after this long. Default 2 s:
    /// short against the staleness, so a healthy upstream on a lossy link gets many retries
    /// before it could be judged unresponsive.
    pub request_timeout_ms: u64,
    /// While following and up to date, ask for new entries this often even without a
    /// heartbeat announcing them. Default 1 s.
    pub poll_interval_ms: u64,
    /// After a connection failure, wait this long before the next request (so a node whose
    /// upstreams are all down does not spin through them). Each further failure in a row
    /// doubles the wait, up to `max_backoff_ms`; the wait is jittered (between half of it and
    /// all of it) so that a fleet cut off together does not come back in lockstep. Default 1 s.
    pub failure_backoff_ms: u64,
    /// The longest wait after failures in a row, and the most of an upstream's `Retry-After`
    /// that is honoured (so an upstream cannot park its followers for longer). Default 30 s.
    pub max_backoff_ms: u64,
    /// The control plane's feed-signing public key, pinned. With it, entries are applied only
    /// up to a checkpoint whose signature verifies and only signed snapshots are installed.
    /// `None` accepts unsigned data (corruption is still caught, forgery is not): for tests of
    /// the rest of the protocol only; an edge always pins a key.
    pub feed_key: Option<FeedKey>,
    /// With a key pinned: a snapshot whose signed origin time is older than this (against the
    /// caller's clock) is refused, so that a recorded snapshot cannot be replayed to a fresh
    /// follower long after. It must exceed the longest a snapshot takes to stream (the control
    /// plane stamps it when it starts) plus the clock skew between the two. Default 30 min.
    pub max_snapshot_age_ms: u64,
    /// The longest a snapshot may take to stream in, from the first request for it. While
    /// it streams (the driver reports [`Input::Progress`]) the staleness checks wait for its
    /// end, so that a large snapshot on a slow link is not cut short; this deadline bounds
    /// that wait, so an upstream that trickles a snapshot a few bytes at a time holds a
    /// failover off for this long at most. Make it at least what the upstream allows a
    /// snapshot (the control plane's snapshot deadline). Default 15 min.
    pub snapshot_deadline_ms: u64,
    /// The upstreams' compaction gap: an honest log moves its base past destroyed DEKs at most
    /// once per this long, so an upstream sends a follower back to a snapshot at most about
    /// that often. A slow snapshot (one that would leave the upstream stale on arrival but for
    /// the time it streamed) is credited with its streaming time at most once per upstream
    /// per gap: the next slow one from the same upstream, asked for within the gap, counts as
    /// fresh as of its signed origin only, and the upstream is left once it is installed
    /// ([`SwitchReason::RepeatedSlowSnapshot`]). So an upstream that answers `Compacted`
    /// after every install and trickles a fresh snapshot each time holds a failover off for
    /// two deadlines at most, not forever. Default: the control plane's and relays' gap,
    /// [`coffer_storage::DEFAULT_COMPACTION_GAP`] (10 min).
    pub compaction_gap_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            staleness_ms: 30_000,
            request_timeout_ms: 2_000,
            poll_interval_ms: 1_000,
            failure_backoff_ms: 1_000,
            max_backoff_ms: 30_000,
            feed_key: None,
            max_snapshot_age_ms: 30 * 60 * 1_000,
            snapshot_deadline_ms: 15 * 60 * 1_000,
            compaction_gap_ms: u64::try_from(coffer_storage::DEFAULT_COMPACTION_GAP.as_millis())
                .unwrap_or(u64::MAX),
        }
    }
}

/// Where a follower is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Fresh: no state yet, bootstrapping from a snapshot.
    NeedsSnapshot,
    /// Tailing the current upstream's feed from the verified position.
    Following,
    /// Stopped applying after an alarm, or the upstream no longer holds the entries after our
    /// position: fetching a snapshot.
    Resyncing,
}

/// What the driver feeds the follower. `from` names the upstream a message came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<U> {
    /// Time passed; check timeouts and health. Call it regularly (e.g. every 100 ms).
    Tick,
    /// An answer to [`Output::Fetch`]: entries in seq order (possibly none: up to date), and
    /// the signatures that came with them (in seq order).
    Entries {
        from: U,
        entries: Vec<ChangeRecord>,
        signatures: Vec<FeedSignature>,
    },
    /// The upstream is alive; its head is `head_seq`. `origin_ms` is when the root stamped the
    /// freshest heartbeat this upstream has seen (the root's own clock for the root; a relay
    /// forwards its follower's [`Follower::freshest_origin_ms`]), so a relay cut off from the
    /// root looks stale even though it answers.
    ///
    /// With a key pinned, a heartbeat only says the upstream is alive: its head and origin are
    /// unsigned (anyone on the path could make them up), so they are ignored, and only
    /// [`Input::Freshness`] statements say how far the log goes and how fresh it is.
    Heartbeat {
        from: U,
        head_seq: u64,
        origin_ms: u64,
    },
    /// A freshness statement signed by the control plane (forwarded unchanged by relays). With
    /// a key pinned it sets the known head and the freshness, once verified, and only if newer
    /// than every statement verified before (a replayed one changes nothing). Without a key it
    /// is ignored.
    Freshness { from: U, statement: Freshness },
    /// An answer to [`Output::FetchSnapshot`].
    Snapshot { from: U, snapshot: Snapshot },
    /// An answer to [`Output::FetchSnapshot`] that the driver streamed into a staging
    /// transaction instead of holding it in memory (a snapshot of a million secrets does not
    /// fit comfortably): `position` is the snapshot's, `intact` whether its digest
    /// ([`crate::SnapshotDigest`]) matched. The follower answers [`Output::InstallStaged`] if
    /// it is to be installed; otherwise the driver discards it.
    StagedSnapshot {
        from: U,
        position: Position,
        intact: bool,
        seal: SnapshotSeal,
    },
    /// The upstream no longer holds the entries right after our position (its log was
    /// compacted past it): follow from one of its snapshots instead.
    NeedSnapshot { from: U },
    /// A request to this upstream failed at the connection level (refused, reset, TLS) or was
    /// refused (an HTTP error). `retry_after_ms`: how long the upstream asked to be left alone
    /// (`Retry-After`), honoured up to [`Config::max_backoff_ms`].
    Failed {
        from: U,
        retry_after_ms: Option<u64>,
    },
    /// The answer to the outstanding request is still arriving (a large snapshot streams for
    /// a while): the request is not sent again, and a snapshot streaming in is judged when it
    /// ends, within [`Config::snapshot_deadline_ms`] of the first request for it, not by the
    /// staleness meanwhile. With a key pinned that is all it does: bytes arriving are no
    /// signed state, so they make the upstream neither fresh nor progressing (a trickle
    /// cannot hold a failover off past the deadline). The driver reports it every second or so
    /// while bytes arrive, and reports [`Input::Failed`] itself if they stop.
    Progress { from: U },
    /// The driver has durably applied everything up to `seq`: the last entry of an
    /// [`Output::Apply`], or the position of an [`Output::InstallSnapshot`], in the order they
    /// were emitted (confirming a later one confirms the earlier ones).
    Applied { seq: u64 },
}

/// What the follower asks the driver to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<U> {
    /// Apply these entries, and record the last one's seq and hash, in one local transaction;
    /// then report [`Input::Applied`]. They are verified (seq, chain, payload parses) and
    /// start right after the previous `Apply` or `InstallSnapshot`. `signatures` are those
    /// among the entries (the last entry is always signed when a key is pinned): store them
    /// with the entries, so that a relay serves them on.
    Apply {
        entries: Vec<ChangeRecord>,
        signatures: Vec<FeedSignature>,
    },
    /// Replace the local state with this verified snapshot and record its position, in one
    /// transaction; then report [`Input::Applied`] with its seq.
    InstallSnapshot(Snapshot),
    /// Commit the snapshot staged for [`Input::StagedSnapshot`] (at this position); then
    /// report [`Input::Applied`] with its seq.
    InstallStaged(Position),
    /// Ask `to` for the entries after `after`.
    Fetch { to: U, after: u64 },
    /// Ask `to` for a snapshot of its current state.
    FetchSnapshot { to: U },
    /// Something arrived that must not be applied. Log it loudly; the follower has already
    /// stopped applying and started a resync.
    Alarm(Alarm<U>),
    /// The follower moved to another upstream.
    Switched { from: U, to: U, why: SwitchReason },
}

/// What a streamed snapshot's header and end said, for the follower to check its signature:
/// the cluster id and count from the header, the digest and signature from the end.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSeal {
    pub cluster_id: ClusterId,
    pub count: u64,
    pub digest: [u8; 32],
    /// When the control plane started producing it (Unix ms; signed).
    pub origin_ms: u64,
    pub signature: Option<[u8; SIGNATURE_LEN]>,
}

impl fmt::Debug for SnapshotSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotSeal")
            .field("count", &self.count)
            .field("signed", &self.signature.is_some())
            .finish_non_exhaustive()
    }
}

/// What the signature of one entry says.
enum Checkpoint {
    Good,
    Bad(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Entries {
        after: u64,
    },
    /// `since`: when this upstream was first asked for it (a re-send keeps it: the deadline
    /// bounds the whole); `streaming`: progress was reported since it was last sent.
    Snapshot {
        since: u64,
        streaming: bool,
    },
}

/// The replication state machine of one edge (or relay). See the crate docs for the protocol.
#[derive(Clone, Debug)]
pub struct Follower<U> {
    config: Config,
    upstreams: Vec<U>,
    current: usize,
    phase: Phase,
    /// What the driver has confirmed durable.
    applied: Position,
    /// The end of the last verified batch or snapshot emitted (>= applied).
    verified: Position,
    /// Positions of emitted, unconfirmed `Apply`/`InstallSnapshot` outputs, oldest first.
    in_flight: VecDeque<Position>,
    /// The outstanding request to the current upstream and when it was sent.
    request: Option<(Request, u64)>,
    /// No request before this time (backoff after a connection failure).
    next_request_ms: u64,
    /// Last message of any kind from the current upstream (or the switch to it).
    last_heard_ms: u64,
    /// Newest heartbeat origin from the current upstream (or the switch to it).
    last_origin_ms: u64,
    /// Last time we advanced, were up to date, or switched.
    last_progress_ms: u64,
    /// Last answer to a fetch (for the poll interval).
    last_answer_ms: u64,
    /// Fetch as soon as possible (fresh start, after a switch, after entries arrived, after
    /// an out-of-order batch), without waiting for the poll interval.
    fetch_now: bool,
    /// The current upstream's advertised head.
    known_head: u64,
    /// Newest heartbeat origin ever received, from any upstream (with a key pinned: of a
    /// verified statement or snapshot only).
    freshest_origin: Option<u64>,
    /// The newest verified freshness statement (key pinned only): what a relay forwards.
    statement: Option<Freshness>,
    /// Verified (head seq, origin) not yet covered by what is applied, oldest first.
    fresh_pending: VecDeque<(u64, u64)>,
    /// The origin of the newest verified statement (or snapshot) whose head is applied: the
    /// replica holds the root's state as of then.
    fresh_as_of: Option<u64>,
    /// Connection failures since the last answer: the exponent of the backoff.
    failures: u32,
    /// State of the jitter's pseudo-random sequence (seeded by the driver; the jitter need not
    /// be unpredictable, only different from node to node).
    jitter: u64,
    /// The cluster whose log this follower holds: from the driver on resume, or from the first
    /// verified snapshot. Checkpoint signatures are checked against it.
    cluster: Option<ClusterId>,
    /// Per upstream (by index): when a slow snapshot of its was last credited with the time
    /// it streamed (see [`Config::compaction_gap_ms`]).
    stream_credited_ms: Vec<Option<u64>>,
}

impl<U: Clone + PartialEq + fmt::Debug> Follower<U> {
    /// A fresh follower with no state: it bootstraps from a snapshot of the first upstream.
    pub fn new(upstreams: Vec<U>, config: Config, now_ms: u64) -> Result<Self, Error> {
        Self::build(
            upstreams,
            config,
            now_ms,
            Phase::NeedsSnapshot,
            Position::GENESIS,
        )
    }

    /// A follower resuming from the position its driver recorded durably (after a restart).
    pub fn resume(
        upstreams: Vec<U>,
        config: Config,
        now_ms: u64,
        position: Position,
    ) -> Result<Self, Error> {
        Self::build(upstreams, config, now_ms, Phase::Following, position)
    }

    /// A follower whose durable state is at `position` but must not follow on from it (its
    /// driver failed to apply what came next): it fetches a snapshot first, and installs one
    /// only if it is newer than `position`.
    pub fn resync(
        upstreams: Vec<U>,
        config: Config,
        now_ms: u64,
        position: Position,
    ) -> Result<Self, Error> {
        Self::build(upstreams, config, now_ms, Phase::Resyncing, position)
    }

    fn build(
        upstreams: Vec<U>,
        config: Config,
        now: u64,
        phase: Phase,
        position: Position,
    ) -> Result<Self, Error> {
        if upstreams.is_empty() {
            return Err(Error::NoUpstreams);
        }
        Ok(Follower {
            config,
            stream_credited_ms: vec![None; upstreams.len()],
            upstreams,
            current: 0,
            phase,
            applied: position,
            verified: position,
            in_flight: VecDeque::new(),
            request: None,
            next_request_ms: 0,
            last_heard_ms: now,
            last_origin_ms: now,
            last_progress_ms: now,
            last_answer_ms: now,
            fetch_now: true,
            known_head: position.seq,
            freshest_origin: None,
            statement: None,
            fresh_pending: VecDeque::new(),
            fresh_as_of: None,
            failures: 0,
            jitter: 0x9E37_79B9_7F4A_7C15,
            cluster: None,
        })
    }

    /// The cluster of the replica the driver holds (resuming or resyncing): signatures over
    /// another cluster's checkpoints are refused.
    #[must_use]
    pub fn with_cluster_id(mut self, cluster_id: ClusterId) -> Self {
        self.cluster = Some(cluster_id);
        self
    }

    /// Seeds the backoff's jitter; give each node its own seed (e.g. random bytes), so that
    /// nodes that fail together retry apart.
    #[must_use]
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter = seed;
        self
    }

    /// The wait after the `failures`-th failure in a row: exponential, capped, jittered.
    fn backoff(&mut self) -> u64 {
        let exponent = self.failures.saturating_sub(1).min(20);
        let full = self
            .config
            .failure_backoff_ms
            .saturating_mul(1 << exponent)
            .min(
                self.config
                    .max_backoff_ms
                    .max(self.config.failure_backoff_ms),
            );
        // splitmix64: a well-mixed sequence from any seed.
        self.jitter = self.jitter.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.jitter;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let half = full / 2;
        half + z % (full - half + 1)
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The position the driver has confirmed durable.
    pub fn applied(&self) -> Position {
        self.applied
    }

    /// The position after every emitted `Apply`/`InstallSnapshot` (confirmed or not).
    pub fn verified(&self) -> Position {
        self.verified
    }

    pub fn current_upstream(&self) -> &U {
        &self.upstreams[self.current]
    }

    /// The newest heartbeat origin time received; a relay stamps its own heartbeats with it.
    pub fn freshest_origin_ms(&self) -> Option<u64> {
        self.freshest_origin
    }

    /// The newest verified freshness statement: a relay puts it, unchanged, on its answers.
    pub fn latest_freshness(&self) -> Option<Freshness> {
        self.statement
    }

    /// The root's clock (Unix ms) as of which the applied state is known current: the origin
    /// of the newest verified freshness statement (or signed snapshot) whose head is applied.
    /// `None` until one is. Only meaningful with a key pinned.
    pub fn fresh_as_of_ms(&self) -> Option<u64> {
        self.fresh_as_of
    }

    /// The head of the newest verified freshness statement (key pinned), else the newest
    /// advertised head.
    pub fn known_head(&self) -> u64 {
        self.statement
            .map_or(self.known_head, |s| s.head.seq.max(self.verified.seq))
    }

    /// Records a verified (head, origin) pair: freshness once `head` is applied.
    fn note_fresh(&mut self, head: u64, origin_ms: u64) {
        self.freshest_origin = Some(self.freshest_origin.map_or(origin_ms, |o| o.max(origin_ms)));
        if self.fresh_pending.len() >= 64 {
            self.fresh_pending.pop_front();
        }
        self.fresh_pending.push_back((head, origin_ms));
        self.promote_fresh();
    }

    fn promote_fresh(&mut self) {
        let applied = self.applied.seq;
        while let Some(&(head, origin)) = self.fresh_pending.front() {
            if head > applied {
                break;
            }
            self.fresh_as_of = Some(self.fresh_as_of.map_or(origin, |o| o.max(origin)));
            self.fresh_pending.pop_front();
        }
    }

    fn on_freshness(&mut self, now: u64, statement: Freshness, out: &mut Vec<Output<U>>) {
        let Some(key) = self.config.feed_key else {
            return;
        };
        // The cluster first: a statement is believed only of the cluster whose log this
        // follower holds. Before the first snapshot there is none to check it against, so it
        // says nothing yet (kept, another cluster's head and time would count as ours: a head
        // to wait for, a freshness to serve on as a relay and to promote once applied).
        let Some(cluster) = self.cluster else {
            return;
        };
        if cluster != statement.cluster_id {
            out.push(self.alarm(
                AlarmKind::BadSignature,
                "a freshness statement is of another cluster".to_owned(),
            ));
            return;
        }
        if !statement.verifies(&key) {
            out.push(self.alarm(
                AlarmKind::BadSignature,
                format!(
                    "a freshness statement (head {}) does not verify under the pinned key {}",
                    statement.head.seq,
                    key.fingerprint()
                ),
            ));
            return;
        }
        if statement.origin_ms > now.saturating_add(MAX_CLOCK_AHEAD_MS) {
            // Kept, a statement from the future would make every genuine one after it look
            // old (a root whose clock stepped forward, or one recorded and replayed).
            out.push(self.alarm(
                AlarmKind::BadSignature,
                format!(
                    "a freshness statement is dated {} s ahead of this node's clock",
                    (statement.origin_ms - now) / 1_000
                ),
            ));
            return;
        }
        if self
            .statement
            .is_some_and(|s| statement.origin_ms <= s.origin_ms && statement.head.seq <= s.head.seq)
        {
            // Not newer than what we know: a replay (or a relay that heard nothing new) says
            // nothing about the upstream's freshness. A later head counts even with an
            // earlier time (the root's clock stepped back).
            return;
        }
        self.statement = Some(statement);
        // An origin ahead of our clock (clock skew) counts as now.
        self.last_origin_ms = self.last_origin_ms.max(statement.origin_ms.min(now));
        self.known_head = self.known_head.max(statement.head.seq);
        if self.phase == Phase::Following && statement.head.seq <= self.verified.seq {
            self.last_progress_ms = now;
        }
        self.note_fresh(statement.head.seq, statement.origin_ms);
    }

    /// Feeds one input at time `now_ms`; returns what to do, in order.
    pub fn handle(&mut self, now_ms: u64, input: Input<U>) -> Vec<Output<U>> {
        let now = now_ms;
        let mut out = Vec::new();
        match input {
            Input::Tick => {}
            Input::Entries {
                from,
                entries,
                signatures,
            } => {
                if self.is_current(&from) {
                    self.heard(now);
                    if self.phase == Phase::Following {
                        self.request = None;
                        self.last_answer_ms = now;
                        self.on_entries(now, entries, &signatures, &mut out);
                    }
                }
            }
            Input::Heartbeat {
                from,
                head_seq,
                origin_ms,
            } => {
                if self.is_current(&from) && self.config.feed_key.is_some() {
                    self.heard(now);
                } else if self.is_current(&from) {
                    self.heard(now);
                    self.last_origin_ms = self.last_origin_ms.max(origin_ms);
                    self.freshest_origin =
                        Some(self.freshest_origin.map_or(origin_ms, |o| o.max(origin_ms)));
                    self.known_head = self.known_head.max(head_seq);
                    if self.phase == Phase::Following && head_seq <= self.verified.seq {
                        self.last_progress_ms = now;
                    }
                }
            }
            Input::Freshness { from, statement } => {
                if self.is_current(&from) {
                    self.on_freshness(now, statement, &mut out);
                }
            }
            Input::Snapshot { from, snapshot } => {
                if self.is_current(&from) {
                    self.heard(now);
                    if self.phase != Phase::Following {
                        let requested_at = self.take_snapshot_request();
                        self.on_snapshot(now, snapshot, requested_at, &mut out);
                    }
                }
            }
            Input::StagedSnapshot {
                from,
                position,
                intact,
                seal,
            } => {
                if self.is_current(&from) {
                    self.heard(now);
                    if self.phase != Phase::Following {
                        let requested_at = self.take_snapshot_request();
                        let install = Output::InstallStaged(position);
                        self.accept_snapshot(
                            now,
                            position,
                            intact,
                            &seal,
                            requested_at,
                            install,
                            &mut out,
                        );
                    }
                }
            }
            Input::NeedSnapshot { from } => {
                if self.is_current(&from) {
                    self.heard(now);
                    if self.phase == Phase::Following {
                        self.request = None;
                        self.phase = Phase::Resyncing;
                        // If we are already behind a signed head, keep the no-progress
                        // clock running, so an upstream that answers Compacted to every fetch
                        // is still left after the staleness.
                        if self.known_head <= self.verified.seq {
                            self.last_progress_ms = now;
                        }
                    }
                }
            }
            Input::Progress { from } => {
                if self.is_current(&from) {
                    // Judged when it completes; meanwhile not sent again, and a snapshot is
                    // bounded by its deadline rather than the staleness (see `poll`).
                    if let Some((req, _)) = self.request {
                        let req = match req {
                            Request::Snapshot { since, .. } => Request::Snapshot {
                                since,
                                streaming: true,
                            },
                            entries @ Request::Entries { .. } => entries,
                        };
                        self.request = Some((req, now));
                    }
                    if self.config.feed_key.is_none() {
                        // Unsigned (protocol tests only): the upstream counts as alive, fresh
                        // and progressing, as its unsigned heartbeats would make it.
                        self.heard(now);
                        self.last_origin_ms = self.last_origin_ms.max(now);
                        self.last_progress_ms = self.last_progress_ms.max(now);
                    }
                }
            }
            Input::Failed {
                from,
                retry_after_ms,
            } => {
                if self.is_current(&from) {
                    self.failures = self.failures.saturating_add(1);
                    let asked = retry_after_ms.unwrap_or(0).min(self.config.max_backoff_ms);
                    let wait = self.backoff().max(asked);
                    self.switch(now, SwitchReason::Failed, &mut out);
                    self.next_request_ms = now.saturating_add(wait);
                }
            }
            Input::Applied { seq } => {
                while self.in_flight.front().is_some_and(|p| p.seq < seq) {
                    self.in_flight.pop_front();
                }
                if self.in_flight.front().is_some_and(|p| p.seq == seq)
                    && let Some(p) = self.in_flight.pop_front()
                {
                    self.applied = p;
                }
                self.promote_fresh();
            }
        }
        self.poll(now, &mut out);
        out
    }

    /// Clears the outstanding request; `since` of a snapshot request (see [`Request`]).
    fn take_snapshot_request(&mut self) -> Option<u64> {
        match self.request.take() {
            Some((Request::Snapshot { since, .. }, _)) => Some(since),
            _ => None,
        }
    }

    /// The current upstream answered: it is alive, and the backoff starts over.
    fn heard(&mut self, now: u64) {
        self.last_heard_ms = self.last_heard_ms.max(now);
        self.failures = 0;
    }

    fn is_current(&self, from: &U) -> bool {
        *from == self.upstreams[self.current]
    }

    fn alarm(&self, kind: AlarmKind, detail: String) -> Output<U> {
        Output::Alarm(Alarm {
            upstream: self.upstreams[self.current].clone(),
            kind,
            detail,
        })
    }

    fn on_entries(
        &mut self,
        now: u64,
        entries: Vec<ChangeRecord>,
        signatures: &[FeedSignature],
        out: &mut Vec<Output<U>>,
    ) {
        let mut prev = self.verified;
        // Seq, chain and payload verified, in order.
        let mut chained: Vec<ChangeRecord> = Vec::new();
        let mut alarm = None;
        let start = self.verified.seq;
        let mut fresh = entries
            .into_iter()
            .skip_while(|e| e.seq <= start)
            .peekable();
        if fresh.peek().is_some_and(|e| e.seq > prev.seq + 1) {
            // Out of order (an answer to an older request, or its front was lost): not applied;
            // ask again from our position.
            self.fetch_now = true;
            return;
        }
        for e in fresh {
            if e.seq != prev.seq + 1 {
                alarm = Some((
                    AlarmKind::Gap,
                    format!("expected seq {}, got {}", prev.seq + 1, e.seq),
                ));
                break;
            }
            if !e.follows(&prev.hash) {
                alarm = Some((
                    AlarmKind::HashMismatch,
                    format!("entry {} does not chain onto entry {}", e.seq, prev.seq),
                ));
                break;
            }
            if let Err(err) = e.change() {
                alarm = Some((AlarmKind::CorruptPayload, err.to_string()));
                break;
            }
            prev = Position::of(&e);
            chained.push(e);
        }
        // What is applied: with no key, everything chained; with one, everything up to the
        // last signed entry, if its signature verifies. The chain makes that one signature
        // vouch for every entry before it, so the others need no check (one Ed25519
        // verification per answer, however many write batches it spans).
        let mut batch = chained;
        if self.config.feed_key.is_some() {
            let signed =
                |e: &ChangeRecord| signatures.binary_search_by_key(&e.seq, |s| s.seq).is_ok();
            let covered = batch.iter().rposition(signed).map_or(0, |i| i + 1);
            let unsigned = batch.split_off(covered);
            if let Some(last) = batch.last()
                && let Checkpoint::Bad(detail) = self.checkpoint(Position::of(last), signatures)
            {
                batch.clear();
                alarm = alarm.or(Some((AlarmKind::BadSignature, detail)));
            }
            if alarm.is_none()
                && let (Some(first), Some(last)) = (unsigned.first(), unsigned.last())
            {
                // An honest upstream ends every answer on a signed entry.
                alarm = Some((
                    AlarmKind::BadSignature,
                    format!(
                        "entries {}..={} carry no signature that covers them",
                        first.seq, last.seq
                    ),
                ));
            }
        }
        if let Some(last) = batch.last() {
            let end = Position::of(last);
            let first = batch[0].seq;
            let signatures = signatures
                .iter()
                .filter(|s| (first..=end.seq).contains(&s.seq))
                .copied()
                .collect();
            out.push(Output::Apply {
                entries: batch,
                signatures,
            });
            self.in_flight.push_back(end);
            self.verified = end;
            self.known_head = self.known_head.max(end.seq);
            self.last_progress_ms = now;
            // There may be more: ask right away (an empty answer means we are caught up).
            self.fetch_now = true;
        }
        if let Some((kind, detail)) = alarm {
            out.push(self.alarm(kind, detail));
            self.phase = Phase::Resyncing;
            self.last_progress_ms = now;
        }
    }

    /// Whether the signature of the entry at `pos` holds. With no key pinned, every entry
    /// counts as a good checkpoint.
    fn checkpoint(&self, pos: Position, signatures: &[FeedSignature]) -> Checkpoint {
        let Some(key) = self.config.feed_key else {
            return Checkpoint::Good;
        };
        let Ok(i) = signatures.binary_search_by_key(&pos.seq, |s| s.seq) else {
            return Checkpoint::Bad(format!("entry {} carries no signature", pos.seq));
        };
        let Some(cluster) = self.cluster else {
            return Checkpoint::Bad(format!(
                "entry {} is signed, but this follower knows no cluster to check it against",
                pos.seq
            ));
        };
        if key.verifies_checkpoint(&cluster, pos.seq, &pos.hash, &signatures[i].signature) {
            Checkpoint::Good
        } else {
            Checkpoint::Bad(format!(
                "the signature of entry {} does not verify under the pinned key {}",
                pos.seq,
                key.fingerprint()
            ))
        }
    }

    fn switch(&mut self, now: u64, why: SwitchReason, out: &mut Vec<Output<U>>) {
        if self.upstreams.len() > 1 {
            let from = self.upstreams[self.current].clone();
            self.current = (self.current + 1) % self.upstreams.len();
            out.push(Output::Switched {
                from,
                to: self.upstreams[self.current].clone(),
                why,
            });
        }
        self.request = None;
        self.last_heard_ms = now;
        self.last_origin_ms = now;
        self.last_progress_ms = now;
        self.fetch_now = true;
        self.known_head = self.verified.seq;
    }

    fn poll(&mut self, now: u64, out: &mut Vec<Output<U>>) {
        let stale = self.config.staleness_ms;
        let behind = self.phase != Phase::Following || self.known_head > self.verified.seq;
        let streaming = match self.request {
            Some((Request::Snapshot { since, streaming }, _)) => streaming.then_some(since),
            _ => None,
        };
        if let Some(since) = streaming {
            // A snapshot streaming in: judged when it ends, not by the staleness meanwhile (a
            // large one on a slow link takes longer), but within its deadline, which progress
            // does not extend.
            if now.saturating_sub(since) > self.config.snapshot_deadline_ms {
                self.switch(now, SwitchReason::SnapshotDeadline, out);
                // Not asked again in a tight loop (with one upstream, it is the same one).
                self.next_request_ms = now.saturating_add(self.config.failure_backoff_ms);
            }
        } else if now.saturating_sub(self.last_heard_ms) > stale {
            self.switch(now, SwitchReason::Silent, out);
        } else if now.saturating_sub(self.last_origin_ms) > stale {
            self.switch(now, SwitchReason::Stale, out);
        } else if behind && now.saturating_sub(self.last_progress_ms) > stale {
            self.switch(now, SwitchReason::NoProgress, out);
        }
        if now < self.next_request_ms {
            return;
        }
        let to = self.upstreams[self.current].clone();
        match self.request {
            Some((req, sent)) => {
                if now.saturating_sub(sent) >= self.config.request_timeout_ms {
                    let (req, output) = match req {
                        Request::Entries { .. } => (
                            req,
                            Output::Fetch {
                                to,
                                after: self.verified.seq,
                            },
                        ),
                        // Sent again: no longer streaming, but the same deadline.
                        Request::Snapshot { since, .. } => (
                            Request::Snapshot {
                                since,
                                streaming: false,
                            },
                            Output::FetchSnapshot { to },
                        ),
                    };
                    self.request = Some((req, now));
                    out.push(output);
                }
            }
            None => match self.phase {
                Phase::Following => {
                    if self.fetch_now
                        || self.known_head > self.verified.seq
                        || now.saturating_sub(self.last_answer_ms) >= self.config.poll_interval_ms
                    {
                        let after = self.verified.seq;
                        self.fetch_now = false;
                        self.request = Some((Request::Entries { after }, now));
                        out.push(Output::Fetch { to, after });
                    }
                }
                Phase::NeedsSnapshot | Phase::Resyncing => {
                    let req = Request::Snapshot {
                        since: now,
                        streaming: false,
                    };
                    self.request = Some((req, now));
                    out.push(Output::FetchSnapshot { to });
                }
            },
        }
    }
}
