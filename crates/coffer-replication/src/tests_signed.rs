//! The follower with a pinned feed key: only what the control plane signed is applied.

use std::sync::Arc;

use coffer_storage::{Change, ChangeRecord, FeedSignature};
use coffer_types::{AccountId, Timestamp};

use crate::sign::{FeedKeyPair, Freshness};
use crate::{
    AlarmKind, Config, Follower, Input, Log, Output, Phase, Position, Snapshot, SnapshotSeal,
    SwitchReason,
};

pub(crate) const A: u32 = 1;
pub(crate) const B: u32 = 2;
pub(crate) const CLUSTER: [u8; 16] = [0xc1; 16];

pub(crate) fn payload(i: u64) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&i.to_be_bytes());
    serde_json::to_vec(&Change::AccountPut {
        account_id: AccountId::from_bytes(id),
        name: format!("a{i}"),
    })
    .unwrap()
}

pub(crate) struct Root {
    pub(crate) key: Arc<FeedKeyPair>,
    pub(crate) log: Log,
}

pub(crate) fn root(n: u64) -> Root {
    let key = Arc::new(FeedKeyPair::generate().unwrap().0);
    let mut log = Log::signed(CLUSTER, key.clone());
    for i in 1..=n {
        log.append(payload(i), Timestamp::from_unix_micros(0));
    }
    Root { key, log }
}

pub(crate) fn config(root: &Root) -> Config {
    Config {
        feed_key: Some(root.key.public_key()),
        ..Config::default()
    }
}

/// A follower pinned to `root`'s key, resumed at genesis of `CLUSTER`, its first fetch drained.
pub(crate) fn following(root: &Root) -> Follower<u32> {
    let mut f = Follower::resume(vec![A, B], config(root), 0, Position::GENESIS)
        .unwrap()
        .with_cluster_id(CLUSTER);
    assert_eq!(
        f.handle(0, Input::Tick),
        vec![Output::Fetch { to: A, after: 0 }]
    );
    f
}

pub(crate) fn feed(
    f: &mut Follower<u32>,
    entries: Vec<ChangeRecord>,
    signatures: Vec<FeedSignature>,
) -> Vec<Output<u32>> {
    f.handle(
        1,
        Input::Entries {
            from: A,
            entries,
            signatures,
        },
    )
}

pub(crate) fn applied(out: &[Output<u32>]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Apply { entries: v, .. } => Some(v.iter().map(|e| e.seq)),
            _ => None,
        })
        .flatten()
        .collect()
}

pub(crate) fn alarm(out: &[Output<u32>]) -> Option<AlarmKind> {
    out.iter().find_map(|o| match o {
        Output::Alarm(a) => Some(a.kind),
        _ => None,
    })
}

#[test]
fn signed_entries_are_applied() {
    let root = root(4);
    let mut f = following(&root);
    let (entries, sigs) = root.log.feed_after(0, 10).unwrap();
    assert_eq!(sigs.len(), 4);
    let out = feed(&mut f, entries, sigs);
    assert_eq!(applied(&out), vec![1, 2, 3, 4]);
    assert_eq!(alarm(&out), None);
}

#[test]
fn one_checkpoint_covers_the_entries_before_it_and_an_unsigned_tail_is_refused() {
    let root = root(5);
    let mut f = following(&root);
    let (entries, sigs) = root.log.feed_after(0, 10).unwrap();
    // Only entry 3 keeps its signature: 1..=3 are covered, 4 and 5 are not.
    let only_3: Vec<_> = sigs.into_iter().filter(|s| s.seq == 3).collect();
    let out = feed(&mut f, entries, only_3);
    assert_eq!(applied(&out), vec![1, 2, 3]);
    assert_eq!(alarm(&out), Some(AlarmKind::BadSignature));
    assert_eq!(f.verified().seq, 3);
    assert_eq!(f.phase(), Phase::Resyncing);
}

#[test]
fn unsigned_entries_are_never_applied() {
    let root = root(3);
    let mut f = following(&root);
    let (entries, _) = root.log.feed_after(0, 10).unwrap();
    let out = feed(&mut f, entries, Vec::new());
    assert_eq!(applied(&out), Vec::<u64>::new());
    assert_eq!(alarm(&out), Some(AlarmKind::BadSignature));
    assert_eq!(f.verified(), Position::GENESIS);
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let root = root(3);
    let forger = self::root(3);
    let mut f = following(&root);
    // The forger's log has the same entries (same payloads, so the same hashes), signed by it.
    let (entries, sigs) = forger.log.feed_after(0, 10).unwrap();
    let out = feed(&mut f, entries, sigs);
    assert_eq!(applied(&out), Vec::<u64>::new());
    assert_eq!(alarm(&out), Some(AlarmKind::BadSignature));
}

#[test]
fn a_signature_over_another_cluster_or_seq_is_refused() {
    let root = root(3);
    let (entries, sigs) = root.log.feed_after(0, 10).unwrap();
    // Another cluster: the same key and entries, but this follower is of another cluster.
    let mut other = Follower::resume(vec![A, B], config(&root), 0, Position::GENESIS)
        .unwrap()
        .with_cluster_id([0xc2; 16]);
    other.handle(0, Input::Tick);
    let out = feed(&mut other, entries.clone(), sigs.clone());
    assert_eq!(applied(&out), Vec::<u64>::new());
    assert_eq!(alarm(&out), Some(AlarmKind::BadSignature));
    // Entry 2's signature presented for entry 3.
    let mut f = following(&root);
    let moved = vec![FeedSignature {
        seq: 3,
        signature: sigs[1].signature,
    }];
    let out = feed(&mut f, entries, moved);
    assert_eq!(applied(&out), Vec::<u64>::new());
    assert_eq!(alarm(&out), Some(AlarmKind::BadSignature));
}

#[test]
fn a_rewritten_entry_with_a_recomputed_chain_is_refused() {
    let root = root(3);
    let mut f = following(&root);
    let (mut entries, sigs) = root.log.feed_after(0, 10).unwrap();
    // What an attacker in the middle can do: rewrite entry 2 and recompute every hash after.
    entries[1].payload = payload(99);
    let mut prev = entries[0].hash;
    for e in &mut entries[1..] {
        e.hash = ChangeRecord::chain_hash(&prev, e.seq, &e.payload);
        prev = e.hash;
    }
    let out = feed(&mut f, entries, sigs);
    // Only the answer's last signature is checked (the chain covers the rest): it fails, so
    // nothing of the answer is applied, entry 1 included (it comes again).
    assert_eq!(applied(&out), Vec::<u64>::new());
    assert_eq!(alarm(&out), Some(AlarmKind::BadSignature));
    assert_eq!(f.verified(), Position::GENESIS);
}

pub(crate) fn seal(s: &Snapshot) -> SnapshotSeal {
    SnapshotSeal {
        cluster_id: s.cluster_id,
        count: s.items.len() as u64,
        digest: s.digest,
        origin_ms: s.origin_ms,
        signature: s.signature,
    }
}

#[test]
fn only_signed_snapshots_are_installed_and_they_name_the_cluster() {
    let root = root(4);
    let good = root.log.snapshot();
    assert!(good.signature.is_some());
    let bootstrap = || {
        let mut f = Follower::new(vec![A, B], config(&root), 0).unwrap();
        assert_eq!(
            f.handle(0, Input::Tick),
            vec![Output::FetchSnapshot { to: A }]
        );
        f
    };
    let refused = |out: &[Output<u32>]| {
        assert_eq!(alarm(out), Some(AlarmKind::BadSignature), "{out:?}");
        assert!(
            out.iter().any(|o| matches!(
                o,
                Output::Switched {
                    why: SwitchReason::BadSignature,
                    ..
                }
            )),
            "{out:?}"
        );
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::InstallSnapshot(_) | Output::InstallStaged(_))),
            "{out:?}"
        );
    };
    // Unsigned (a relay's own, or a stripped one).
    let mut f = bootstrap();
    let unsigned = Snapshot {
        signature: None,
        ..good.clone()
    };
    refused(&f.handle(
        1,
        Input::Snapshot {
            from: A,
            snapshot: unsigned,
        },
    ));
    // Items rewritten, digest recomputed: intact, but the signature is over the old digest.
    let mut f = bootstrap();
    let mut items = good.items.clone();
    items[0] = payload(99);
    let forged = Snapshot {
        digest: Snapshot::digest_of(good.position, &items),
        items,
        ..good.clone()
    };
    assert!(forged.verify());
    refused(&f.handle(
        1,
        Input::Snapshot {
            from: A,
            snapshot: forged,
        },
    ));
    // Signed by another key.
    let mut f = bootstrap();
    let other = self::root(4).log.snapshot();
    refused(&f.handle(
        1,
        Input::Snapshot {
            from: A,
            snapshot: other,
        },
    ));
    // The same, staged: the follower checks the seal the driver read.
    let mut f = bootstrap();
    let staged_forgery = Input::StagedSnapshot {
        from: A,
        position: good.position,
        intact: true,
        seal: SnapshotSeal {
            signature: None,
            ..seal(&good)
        },
    };
    refused(&f.handle(1, staged_forgery));
    // A signed one is installed, and tells the follower its cluster: signed entries follow.
    let mut f = bootstrap();
    let out = f.handle(
        1,
        Input::StagedSnapshot {
            from: A,
            position: good.position,
            intact: true,
            seal: seal(&good),
        },
    );
    assert!(
        out.contains(&Output::InstallStaged(good.position)),
        "{out:?}"
    );
    f.handle(2, Input::Applied { seq: 4 });
    let mut root = root;
    root.log.append(payload(5), Timestamp::from_unix_micros(0));
    let (entries, sigs) = root.log.feed_after(4, 10).unwrap();
    let out = feed(&mut f, entries, sigs);
    assert_eq!(applied(&out), vec![5]);
}

#[test]
fn a_snapshot_of_another_cluster_is_refused_once_the_cluster_is_known() {
    let root = root(2);
    let mut f = Follower::resync(vec![A, B], config(&root), 0, Position::GENESIS)
        .unwrap()
        .with_cluster_id([0xc2; 16]);
    f.handle(0, Input::Tick);
    let out = f.handle(
        1,
        Input::Snapshot {
            from: A,
            snapshot: root.log.snapshot(),
        },
    );
    assert_eq!(alarm(&out), Some(AlarmKind::BadSignature));
    assert_eq!(f.verified(), Position::GENESIS);
}

#[test]
fn a_relay_serves_the_signatures_and_the_snapshot_it_received() {
    let root = root(3);
    let snap = root.log.snapshot();
    let mut relay = Log::from_snapshot(&snap).unwrap();
    let mut root = root;
    root.log.append(payload(4), Timestamp::from_unix_micros(0));
    root.log.append(payload(5), Timestamp::from_unix_micros(0));
    let (entries, sigs) = root.log.feed_after(3, 10).unwrap();
    relay.extend_signed(&entries, &sigs).unwrap();
    // Entries and signatures byte for byte; the root's own snapshot, not one of the relay's.
    assert_eq!(relay.feed_after(3, 10).unwrap(), (entries, sigs));
    relay.compact();
    assert_eq!(relay.snapshot(), snap);
    assert_eq!(relay.feed_after(3, 1).unwrap().0.len(), 1);
}

#[test]
fn a_feed_answer_goes_on_to_the_next_signed_entry() {
    let root = root(5);
    let (entries, sigs) = root.log.feed_after(0, 10).unwrap();
    // A relay that received entries 1..=5 with only 2 and 5 signed (two group commits).
    let kept: Vec<_> = sigs
        .into_iter()
        .filter(|s| s.seq == 2 || s.seq == 5)
        .collect();
    let mut relay = Log::from_snapshot(&Snapshot::new(Position::GENESIS, Vec::new())).unwrap();
    relay.extend_signed(&entries, &kept).unwrap();
    let seqs = |v: Vec<ChangeRecord>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
    let (got, got_sigs) = relay.feed_after(0, 3).unwrap();
    assert_eq!(seqs(got), vec![1, 2, 3, 4, 5]);
    assert_eq!(got_sigs, kept);
    assert_eq!(seqs(relay.feed_after(0, 1).unwrap().0), vec![1, 2]);
}

// ---- freshness (H1, M1) ----

/// Minutes in ms, for readable times.
pub(crate) const MIN: u64 = 60_000;

/// Feeds a heartbeat with the given unsigned head and origin, and optionally a statement.
fn beat(
    f: &mut Follower<u32>,
    now: u64,
    head: u64,
    statement: Option<Freshness>,
) -> Vec<Output<u32>> {
    let mut out = f.handle(
        now,
        Input::Heartbeat {
            from: A,
            head_seq: head,
            origin_ms: now,
        },
    );
    if let Some(statement) = statement {
        out.extend(f.handle(now, Input::Freshness { from: A, statement }));
    }
    // An empty feed answer, as a withholding upstream sends.
    out.extend(f.handle(
        now,
        Input::Entries {
            from: A,
            entries: Vec::new(),
            signatures: Vec::new(),
        },
    ));
    out
}

fn stale_switch(out: &[Output<u32>]) -> bool {
    out.iter().any(|o| {
        matches!(
            o,
            Output::Switched {
                why: SwitchReason::Stale,
                ..
            }
        )
    })
}

/// Runs a follower against an upstream that answers every second with fresh-looking unsigned
/// heartbeats (and `statement(now)`) for `secs`; returns whether it left for staleness.
fn withheld(
    root: &Root,
    secs: u64,
    statement: impl Fn(u64) -> Option<Freshness>,
) -> (Follower<u32>, bool) {
    let mut f = following(root);
    let mut left = false;
    for s in 1..=secs {
        let now = s * 1_000;
        left |= stale_switch(&beat(&mut f, now, 0, statement(now)));
        if left {
            break;
        }
    }
    (f, left)
}

#[test]
fn unsigned_heartbeats_never_make_a_pinned_follower_fresh() {
    let root = root(3);
    // Claims "head 0, origin now" every second: nothing signed, so never fresh.
    let (f, left) = withheld(&root, 40, |_| None);
    assert!(left, "a withholding upstream was never left");
    assert_eq!(f.fresh_as_of_ms(), None);
    assert_eq!(f.latest_freshness(), None);
    // The same with a signed statement every second: never left, and fresh.
    let (f, left) = withheld(&root, 40, |now| {
        Some(Freshness::sign(&root.key, CLUSTER, Position::GENESIS, now))
    });
    assert!(!left, "an honest idle upstream was left");
    assert_eq!(f.fresh_as_of_ms(), Some(40_000));
}

#[test]
fn forged_freshness_is_an_alarm_and_counts_for_nothing() {
    let root = root(3);
    let impostor = FeedKeyPair::generate().unwrap().0;
    let mut f = following(&root);
    let forged = Freshness::sign(&impostor, CLUSTER, Position::GENESIS, 1_000);
    let out = beat(&mut f, 1_000, 0, Some(forged));
    assert_eq!(alarm(&out), Some(AlarmKind::BadSignature));
    // A genuine statement with its origin moved forward.
    let genuine = Freshness::sign(&root.key, CLUSTER, Position::GENESIS, 1_000);
    let moved = Freshness {
        origin_ms: 5_000,
        ..genuine
    };
    let out = beat(&mut f, 2_000, 0, Some(moved));
    assert_eq!(alarm(&out), Some(AlarmKind::BadSignature));
    // Of another cluster, under the right key.
    let other = Freshness::sign(&root.key, [0xc2; 16], Position::GENESIS, 3_000);
    let out = beat(&mut f, 3_000, 0, Some(other));
    assert_eq!(alarm(&out), Some(AlarmKind::BadSignature));
    assert_eq!(f.fresh_as_of_ms(), None);
    assert_eq!(f.latest_freshness(), None);
    // Forged statements every second: left for staleness all the same.
    let (_, left) = withheld(&root, 40, |now| {
        Some(Freshness::sign(&impostor, CLUSTER, Position::GENESIS, now))
    });
    assert!(left);
}

#[test]
fn a_replayed_old_statement_does_not_reset_staleness() {
    let root = root(3);
    // One genuine statement at t=1 s, then only replays of it (or of older ones).
    let first = Freshness::sign(&root.key, CLUSTER, Position::GENESIS, 1_000);
    let older = Freshness::sign(&root.key, CLUSTER, Position::GENESIS, 500);
    let (f, left) = withheld(&root, 40, |now| {
        Some(if now % 2_000 == 0 { older } else { first })
    });
    assert!(left, "replays kept the upstream looking fresh");
    assert_eq!(f.fresh_as_of_ms(), Some(1_000));
    assert_eq!(f.latest_freshness(), Some(first));
}

#[test]
fn a_statement_of_a_head_not_delivered_is_no_freshness_and_no_progress() {
    let root = root(3);
    let mut f = following(&root);
    let head = root.log.head();
    // The root says its head is 3; the upstream delivers nothing, forever, with fresh
    // statements (a relay withholding the entries but passing statements on).
    let mut left = None;
    for s in 1..=40 {
        let now = s * 1_000;
        let st = Freshness::sign(&root.key, CLUSTER, head, now);
        let out = beat(&mut f, now, 3, Some(st));
        left = left.or(out.iter().find_map(|o| match o {
            Output::Switched { why, .. } => Some(*why),
            _ => None,
        }));
    }
    assert_eq!(left, Some(SwitchReason::NoProgress));
    assert_eq!(f.known_head(), 3);
    // The replica is not known fresh as of any of them: it does not hold their head.
    assert_eq!(f.fresh_as_of_ms(), None);
    // Once the entries are applied, it is.
    let (entries, sigs) = root.log.feed_after(0, 10).unwrap();
    let mut g = following(&root);
    g.handle(
        1_000,
        Input::Freshness {
            from: A,
            statement: Freshness::sign(&root.key, CLUSTER, head, 1_000),
        },
    );
    assert_eq!(applied(&feed(&mut g, entries, sigs)), vec![1, 2, 3]);
    assert_eq!(g.fresh_as_of_ms(), None, "not before the apply is durable");
    g.handle(1_500, Input::Applied { seq: 3 });
    assert_eq!(g.fresh_as_of_ms(), Some(1_000));
}

#[test]
fn an_old_signed_snapshot_is_refused_by_a_fresh_follower() {
    let root = root(4);
    let now = 90 * MIN;
    let bootstrap = || {
        let mut f = Follower::new(vec![A, B], config(&root), now).unwrap();
        f.handle(now, Input::Tick);
        f
    };
    // Made an hour ago (recorded, replayed): refused, whole, with an alarm.
    let old = root.log.snapshot_at(now - 60 * MIN);
    let mut f = bootstrap();
    let out = f.handle(
        now,
        Input::StagedSnapshot {
            from: A,
            position: old.position,
            intact: true,
            seal: seal(&old),
        },
    );
    assert_eq!(alarm(&out), Some(AlarmKind::StaleSnapshot), "{out:?}");
    assert!(!out.iter().any(|o| matches!(o, Output::InstallStaged(_))));
    assert_eq!(f.phase(), Phase::NeedsSnapshot);
    // Its origin moved forward: the signature no longer verifies.
    let out = f.handle(
        now + 2_000,
        Input::StagedSnapshot {
            from: B,
            position: old.position,
            intact: true,
            seal: SnapshotSeal {
                origin_ms: now,
                ..seal(&old)
            },
        },
    );
    assert_eq!(alarm(&out), Some(AlarmKind::BadSignature), "{out:?}");
    // A recent one is installed, and counts as a statement of its origin.
    let recent = root.log.snapshot_at(now - 1_000);
    let mut f = bootstrap();
    let out = f.handle(
        now,
        Input::StagedSnapshot {
            from: A,
            position: recent.position,
            intact: true,
            seal: seal(&recent),
        },
    );
    assert!(
        out.contains(&Output::InstallStaged(recent.position)),
        "{out:?}"
    );
    f.handle(now, Input::Applied { seq: 4 });
    assert_eq!(f.fresh_as_of_ms(), Some(now - 1_000));
}

#[test]
fn a_statement_from_the_future_is_refused_and_a_later_head_counts_after_a_clock_step_back() {
    let root = root(3);
    let mut f = following(&root);
    // Dated an hour ahead: an alarm, and it is not kept.
    let ahead = Freshness::sign(&root.key, CLUSTER, Position::GENESIS, 3_600_000 + 1_000);
    let out = f.handle(
        1_000,
        Input::Freshness {
            from: A,
            statement: ahead,
        },
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Alarm(a) if a.kind == AlarmKind::BadSignature)),
        "{out:?}"
    );
    assert_eq!(f.latest_freshness(), None);
    // A genuine statement afterwards is taken.
    let now = Freshness::sign(&root.key, CLUSTER, Position::GENESIS, 2_000);
    f.handle(
        2_000,
        Input::Freshness {
            from: A,
            statement: now,
        },
    );
    assert_eq!(f.latest_freshness(), Some(now));
    // The root's clock steps back: a statement of a later head with an earlier time counts.
    let head = root.log.head();
    let later = Freshness::sign(&root.key, CLUSTER, head, 1_500);
    f.handle(
        3_000,
        Input::Freshness {
            from: A,
            statement: later,
        },
    );
    assert_eq!(f.latest_freshness(), Some(later));
    assert_eq!(f.known_head(), head.seq);
}

#[test]
fn a_statement_before_the_first_snapshot_is_not_believed_whatever_its_cluster() {
    let root = root(4);
    let now = 10 * MIN;
    let mut f = Follower::new(vec![A, B], config(&root), now).unwrap();
    assert_eq!(
        f.handle(now, Input::Tick),
        vec![Output::FetchSnapshot { to: A }]
    );
    // Another cluster's statement, under the pinned key, with a later head and time than
    // anything of ours: the follower holds no cluster yet to check it against.
    let other = Log::signed([0xc2; 16], root.key.clone());
    let mut other = other;
    for i in 1..=50 {
        other.append(payload(i), Timestamp::from_unix_micros(0));
    }
    let foreign = Freshness::sign(&root.key, [0xc2; 16], other.head(), now + 1_000);
    let out = f.handle(
        now + 1_000,
        Input::Freshness {
            from: A,
            statement: foreign,
        },
    );
    assert_eq!(alarm(&out), None, "{out:?}");
    assert_eq!(f.latest_freshness(), None, "a relay would serve it on");
    assert_eq!(f.known_head(), 0, "a head of another cluster to wait for");
    assert_eq!(f.freshest_origin_ms(), None);
    // Our cluster's snapshot comes: it sets the cluster, and only its own origin counts.
    let snap = root.log.snapshot_at(now - 2_000);
    let out = f.handle(
        now + 2_000,
        Input::StagedSnapshot {
            from: A,
            position: snap.position,
            intact: true,
            seal: seal(&snap),
        },
    );
    assert!(
        out.contains(&Output::InstallStaged(snap.position)),
        "{out:?}"
    );
    f.handle(now + 2_000, Input::Applied { seq: 4 });
    assert_eq!(f.fresh_as_of_ms(), Some(now - 2_000));
    assert_eq!(f.known_head(), 4);
    // From then on, another cluster's statement is an alarm, and ours are believed.
    let out = f.handle(
        now + 3_000,
        Input::Freshness {
            from: A,
            statement: Freshness::sign(&root.key, [0xc2; 16], other.head(), now + 3_000),
        },
    );
    assert_eq!(alarm(&out), Some(AlarmKind::BadSignature));
    assert_eq!(f.latest_freshness(), None);
    let ours = Freshness::sign(&root.key, CLUSTER, root.log.head(), now + 4_000);
    f.handle(
        now + 4_000,
        Input::Freshness {
            from: A,
            statement: ours,
        },
    );
    assert_eq!(f.latest_freshness(), Some(ours));
    assert_eq!(f.fresh_as_of_ms(), Some(now + 4_000));
}

/// A pinned follower bootstrapping from `A`, its snapshot request sent at `now`.
fn bootstrapping(root: &Root, deadline_ms: u64, now: u64) -> Follower<u32> {
    let config = Config {
        snapshot_deadline_ms: deadline_ms,
        ..config(root)
    };
    let mut f = Follower::new(vec![A, B], config, now).unwrap();
    assert_eq!(
        f.handle(now, Input::Tick),
        vec![Output::FetchSnapshot { to: A }]
    );
    f
}

#[test]
fn a_trickled_snapshot_holds_a_failover_off_until_its_deadline_only() {
    let root = root(4);
    let deadline = 5 * MIN;
    let mut f = bootstrapping(&root, deadline, 0);
    // Progress every second, ticks in between: a few bytes at a time, forever. Past the
    // staleness it is still waited for (a large snapshot on a slow link), never sent again;
    // at the deadline it is left.
    let mut left = None;
    for s in 1..=(2 * deadline / 1_000) {
        for (now, input) in [
            (s * 1_000, Input::Progress { from: A }),
            (s * 1_000 + 500, Input::Tick),
        ] {
            let out = f.handle(now, input);
            for o in &out {
                match o {
                    Output::Switched { to, why, .. } => left = Some((now, *to, *why)),
                    Output::FetchSnapshot { .. } => {
                        assert!(
                            left.is_some(),
                            "sent again while streaming at {now}: {out:?}"
                        );
                    }
                    _ => {}
                }
            }
        }
        if left.is_some() {
            break;
        }
    }
    let (at, to, why) = left.expect("a trickling upstream was never left");
    assert_eq!((to, why), (B, SwitchReason::SnapshotDeadline));
    assert!(
        at > deadline && at <= deadline + 500,
        "left at {at} ms, the deadline is {deadline} ms"
    );
    // Progress never made it fresh: only signed state does.
    assert_eq!(f.fresh_as_of_ms(), None);
    assert_eq!(f.freshest_origin_ms(), None);
    // The next upstream is asked, after a pause.
    let out = f.handle(at + 2_000, Input::Tick);
    assert_eq!(out, vec![Output::FetchSnapshot { to: B }]);
}

#[test]
fn a_streaming_snapshot_within_its_deadline_is_installed_and_progress_keeps_nothing_else_alive() {
    let root = root(4);
    let start = 60 * MIN;
    // Streams for twice the staleness, then completes: installed, never sent again.
    let mut f = bootstrapping(&root, 15 * MIN, start);
    for s in 1..=60 {
        let now = start + s * 1_000;
        let mut out = f.handle(now, Input::Progress { from: A });
        out.extend(f.handle(now + 500, Input::Tick));
        assert!(out.is_empty(), "{s} s: {out:?}");
    }
    let snap = root.log.snapshot_at(start);
    let out = f.handle(
        start + 61_000,
        Input::StagedSnapshot {
            from: A,
            position: snap.position,
            intact: true,
            seal: seal(&snap),
        },
    );
    assert!(
        out.contains(&Output::InstallStaged(snap.position)),
        "{out:?}"
    );
    assert!(
        !out.iter().any(|o| matches!(o, Output::Switched { .. })),
        "an upstream that delivered a snapshot is not left for the time it took: {out:?}"
    );
    // It follows on from there, from the same upstream.
    assert!(out.contains(&Output::Fetch { to: A, after: 4 }), "{out:?}");
    f.handle(start + 61_000, Input::Applied { seq: 4 });
    assert_eq!(f.fresh_as_of_ms(), Some(start));
    // Progress on a stream that then stops: once the request is sent again, the upstream is
    // judged by what it said before the stream (nothing signed for longer than the
    // staleness), not kept alive by the bytes it sent.
    let mut f = bootstrapping(&root, 15 * MIN, start);
    for s in 1..=40 {
        let out = f.handle(start + s * 1_000, Input::Progress { from: A });
        assert!(out.is_empty(), "{out:?}");
    }
    let stopped = start + 40_000 + Config::default().request_timeout_ms;
    let out = f.handle(stopped, Input::Tick);
    assert_eq!(out, vec![Output::FetchSnapshot { to: A }]);
    let out = f.handle(stopped + 100, Input::Tick);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Switched { to: B, .. })),
        "{out:?}"
    );
}

/// A withholding upstream that recorded `recorded` once: every 10 s it answers the feed with
/// `Compacted` (the driver's `NeedSnapshot`) and serves the recording when asked; in between,
/// empty feed answers, with `statement(now)` if any. Runs from `start` for two minutes at most;
/// returns when and why the follower left it, if it did.
fn replayed(
    f: &mut Follower<u32>,
    start: u64,
    recorded: &Snapshot,
    statement: impl Fn(u64) -> Option<Freshness>,
) -> Option<(u64, SwitchReason)> {
    let switched = |out: &[Output<u32>]| {
        out.iter().find_map(|o| match o {
            Output::Switched { why, .. } => Some(*why),
            _ => None,
        })
    };
    for s in 1..=120 {
        let now = start + s * 1_000;
        if s % 10 == 0 {
            let out = f.handle(now, Input::NeedSnapshot { from: A });
            if let Some(why) = switched(&out) {
                return Some((now, why));
            }
            assert!(out.contains(&Output::FetchSnapshot { to: A }), "{out:?}");
            let out = f.handle(
                now + 500,
                Input::StagedSnapshot {
                    from: A,
                    position: recorded.position,
                    intact: true,
                    seal: seal(recorded),
                },
            );
            if let Some(why) = switched(&out) {
                return Some((now + 500, why));
            }
            if out.contains(&Output::InstallStaged(recorded.position)) {
                f.handle(
                    now + 600,
                    Input::Applied {
                        seq: recorded.position.seq,
                    },
                );
            }
        } else {
            let out = beat(f, now, 0, statement(now));
            if let Some(why) = switched(&out) {
                return Some((now, why));
            }
        }
    }
    None
}

#[test]
fn a_replayed_snapshot_after_compacted_holds_no_failover_off() {
    let root = root(4);
    // Recorded at 1 s, then replayed after every Compacted answer, as not newer than what the
    // follower holds: it is no freshness, and the follower leaves when the staleness runs out.
    let recorded = root.log.snapshot_at(1_000);
    let mut f = following(&root);
    let (entries, sigs) = root.log.feed_after(0, 10).unwrap();
    assert_eq!(applied(&feed(&mut f, entries, sigs)), vec![1, 2, 3, 4]);
    f.handle(2, Input::Applied { seq: 4 });
    let head = root.log.head();
    f.handle(
        1_000,
        Input::Freshness {
            from: A,
            statement: Freshness::sign(&root.key, CLUSTER, head, 1_000),
        },
    );
    let (at, why) = replayed(&mut f, 1_000, &recorded, |_| None).expect("never left");
    assert_eq!(why, SwitchReason::Stale);
    assert!(at <= 1_000 + 30_000 + 1_000, "left at {at} ms");
    assert_eq!(f.current_upstream(), &B);

    // The same recording installed once (the follower was behind it): credited with its
    // origin, not with its arrival, so the staleness runs from 1 s all the same.
    let mut f = following(&root);
    let (entries, sigs) = root.log.feed_after(0, 2).unwrap();
    assert_eq!(applied(&feed(&mut f, entries, sigs)), vec![1, 2]);
    f.handle(2, Input::Applied { seq: 2 });
    let (at, why) = replayed(&mut f, 1_000, &recorded, |_| None).expect("never left");
    assert_eq!(why, SwitchReason::Stale);
    assert!(at <= 1_000 + 30_000 + 1_000, "left at {at} ms");
    assert_eq!(f.verified(), head, "it was installed");
}

#[test]
fn a_replayed_snapshot_after_compacted_is_no_progress_towards_a_newer_head() {
    let mut root = root(4);
    let recorded = root.log.snapshot_at(1_000);
    let mut f = following(&root);
    let (entries, sigs) = root.log.feed_after(0, 10).unwrap();
    assert_eq!(applied(&feed(&mut f, entries, sigs)), vec![1, 2, 3, 4]);
    f.handle(2, Input::Applied { seq: 4 });
    // The root moves on to 5; the upstream passes its fresh statements on, withholds entry 5,
    // answers Compacted and serves the recording at 4: neither makes progress towards 5.
    root.log.append(payload(5), Timestamp::from_unix_micros(0));
    let head = root.log.head();
    let (at, why) = replayed(&mut f, 1_000, &recorded, |now| {
        Some(Freshness::sign(&root.key, CLUSTER, head, now))
    })
    .expect("never left");
    assert_eq!(why, SwitchReason::NoProgress);
    assert!(at <= 2_000 + 30_000 + 1_000, "left at {at} ms");
    assert_eq!(f.current_upstream(), &B);
}
