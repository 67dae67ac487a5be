//! The follower's judgement of a snapshot answer: signature, age, and whether it is newer than
//! what it holds (split from `follower.rs` by topic).

use std::fmt;

use coffer_storage::ChangeRecord;

use super::{
    AlarmKind, Follower, MAX_CLOCK_AHEAD_MS, Output, Phase, Position, SnapshotSeal, SwitchReason,
};
use crate::Snapshot;

impl<U: Clone + PartialEq + fmt::Debug> Follower<U> {
    /// Why a snapshot's signature is not acceptable (`None`: it is, or no key is pinned).
    fn snapshot_refusal(&self, pos: Position, seal: &SnapshotSeal) -> Option<String> {
        let key = self.config.feed_key?;
        let Some(sig) = seal.signature else {
            return Some(format!("snapshot at seq {} carries no signature", pos.seq));
        };
        if !key.verifies_snapshot(
            &seal.cluster_id,
            pos,
            seal.count,
            &seal.digest,
            seal.origin_ms,
            &sig,
        ) {
            return Some(format!(
                "the signature of the snapshot at seq {} does not verify under the pinned key {}",
                pos.seq,
                key.fingerprint()
            ));
        }
        if self.cluster.is_some_and(|c| c != seal.cluster_id) {
            return Some(format!(
                "the snapshot at seq {} is of another cluster",
                pos.seq
            ));
        }
        None
    }

    pub(super) fn on_snapshot(
        &mut self,
        now: u64,
        snapshot: Snapshot,
        requested_at: Option<u64>,
        out: &mut Vec<Output<U>>,
    ) {
        let intact = snapshot.verify();
        let seal = SnapshotSeal {
            cluster_id: snapshot.cluster_id,
            count: snapshot.items.len() as u64,
            digest: snapshot.digest,
            origin_ms: snapshot.origin_ms,
            signature: snapshot.signature,
        };
        let position = snapshot.position;
        let install = Output::InstallSnapshot(snapshot);
        self.accept_snapshot(now, position, intact, &seal, requested_at, install, out);
    }

    /// Judges a snapshot answer and emits `install` if it is to be installed (after any alarm,
    /// and before a switch, pushed here). `requested_at`: when the request it answers was first
    /// sent, if one was outstanding.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn accept_snapshot(
        &mut self,
        now: u64,
        pos: Position,
        intact: bool,
        seal: &SnapshotSeal,
        requested_at: Option<u64>,
        install: Output<U>,
        out: &mut Vec<Output<U>>,
    ) {
        let refusal = if !intact || (pos.seq == 0 && pos.hash != ChangeRecord::GENESIS_HASH) {
            Some((
                AlarmKind::CorruptSnapshot,
                SwitchReason::CorruptSnapshot,
                format!("snapshot at seq {} fails its digest", pos.seq),
            ))
        } else if let Some(why) = self.snapshot_refusal(pos, seal) {
            Some((AlarmKind::BadSignature, SwitchReason::BadSignature, why))
        } else if self.config.feed_key.is_some()
            && seal.origin_ms > now.saturating_add(MAX_CLOCK_AHEAD_MS)
        {
            Some((
                AlarmKind::StaleSnapshot,
                SwitchReason::StaleSnapshot,
                format!(
                    "the snapshot at seq {} is dated {} s ahead of this node's clock",
                    pos.seq,
                    (seal.origin_ms - now) / 1_000
                ),
            ))
        } else if self.config.feed_key.is_some()
            && now.saturating_sub(seal.origin_ms) > self.config.max_snapshot_age_ms
        {
            Some((
                AlarmKind::StaleSnapshot,
                SwitchReason::StaleSnapshot,
                format!(
                    "the snapshot at seq {} was made {} s ago, more than the {} s a snapshot may be old (a recorded snapshot replayed?)",
                    pos.seq,
                    now.saturating_sub(seal.origin_ms) / 1_000,
                    self.config.max_snapshot_age_ms / 1_000
                ),
            ))
        } else {
            None
        };
        if let Some((kind, reason, detail)) = refusal {
            out.push(self.alarm(kind, detail));
            self.switch(now, reason, out);
            // A snapshot is large: do not ask for the next one in a tight loop (with a single
            // upstream the switch above changes nothing).
            self.next_request_ms = now.saturating_add(self.config.failure_backoff_ms);
            return;
        }
        self.phase = Phase::Following;
        if self.config.feed_key.is_some() {
            self.cluster = Some(seal.cluster_id);
        }
        self.fetch_now = true;
        // It answered with a usable snapshot: no reason to hold back the next request.
        self.next_request_ms = 0;
        if pos.seq < self.verified.seq || pos == self.verified {
            // Older than (or the same as) what we hold: refused; our verified state stands and
            // we follow on from it. It is no progress, and no freshness of the upstream (nor
            // of the replica): a recorded snapshot replayed must not reset the staleness
            // clocks or move the freshness a relay passes on.
            return;
        }
        let mut repeated = false;
        if self.config.feed_key.is_some() {
            // A signed snapshot is a signed statement of the root's state as of its origin.
            self.note_fresh(pos.seq, seal.origin_ms);
            repeated = self.credit_snapshot(now, seal.origin_ms, requested_at);
        }
        self.last_progress_ms = now;
        if pos.seq == self.verified.seq {
            out.push(self.alarm(
                AlarmKind::HashMismatch,
                format!(
                    "snapshot at our seq {} carries another hash; installing it",
                    pos.seq
                ),
            ));
        }
        self.in_flight.push_back(pos);
        self.verified = pos;
        self.known_head = self.known_head.max(pos.seq);
        out.push(install);
        if repeated {
            // Installed (it is signed and newer), but the upstream is left: see
            // `credit_snapshot`.
            self.switch(now, SwitchReason::RepeatedSlowSnapshot, out);
        }
    }

    /// Makes the upstream as fresh as a newer signed snapshot from it says, from the seal
    /// only, not from its arrival (a recorded snapshot replayed arrives now too). The root
    /// stamps the origin when it starts streaming, so one made for this request is credited
    /// with the time it streamed, bounded by the deadline: a long snapshot does not make the
    /// upstream stale the moment it ends, while a recording is as old as it was when asked
    /// for.
    ///
    /// That credit is given to a slow snapshot (one the upstream would be stale on without
    /// it) at most once per upstream per [`super::Config::compaction_gap_ms`], counted from the
    /// credited one's arrival to the next one's request. An honest upstream sends a follower
    /// back to a snapshot at most about once per gap, after a compaction; one that does so
    /// right after every install and trickles each snapshot for just under the deadline would
    /// otherwise be credited each time, and hold the follower up to two deadlines behind the
    /// root forever. `true`: the credit was refused (the snapshot counts as fresh as of its
    /// origin only) and the upstream, stale on it, is to be left.
    fn credit_snapshot(&mut self, now: u64, origin_ms: u64, requested_at: Option<u64>) -> bool {
        let streamed = requested_at.map_or(0, |since| {
            now.saturating_sub(since)
                .min(self.config.snapshot_deadline_ms)
        });
        let slow =
            now.saturating_sub(self.last_origin_ms.max(origin_ms)) > self.config.staleness_ms;
        let gap = self.config.compaction_gap_ms;
        let credited = &mut self.stream_credited_ms[self.current];
        let refused = slow
            && requested_at
                .is_some_and(|since| credited.is_some_and(|at| since < at.saturating_add(gap)));
        let credit = if refused {
            origin_ms
        } else {
            if slow {
                *credited = Some(now);
            }
            origin_ms.saturating_add(streamed)
        };
        self.last_origin_ms = self.last_origin_ms.max(credit.min(now));
        refused
    }
}
