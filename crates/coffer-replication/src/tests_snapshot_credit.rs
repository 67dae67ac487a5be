//! How long a pinned follower credits a slow snapshot's streaming time, and what a snapshot it
//! does not install changes (split from `tests_signed.rs`, whose helpers it uses).

use coffer_types::Timestamp;

use crate::tests_signed::{
    A, B, CLUSTER, MIN, Root, alarm, applied, config, feed, following, payload, root, seal,
};
use crate::{AlarmKind, Config, Follower, Input, Output, Position, SwitchReason};

/// A pinned follower at the root's head (every entry applied at `t = 2`).
fn caught_up(root: &Root) -> Follower<u32> {
    let mut f = following(root);
    let head = root.log.head().seq;
    let (entries, sigs) = root.log.feed_after(0, 1_000).unwrap();
    assert_eq!(applied(&feed(&mut f, entries, sigs)).len() as u64, head);
    f.handle(2, Input::Applied { seq: head });
    f
}

fn switched(out: &[Output<u32>]) -> Option<SwitchReason> {
    out.iter().find_map(|o| match o {
        Output::Switched { why, .. } => Some(*why),
        _ => None,
    })
}

/// The follower is asked (at `now`, after whatever sent it back to a snapshot) for a snapshot
/// of A; A makes a fresh one of the root at once and trickles it for `d` ms (progress every
/// second), then ends it. Returns when it arrived and what the follower answered to it. Panics
/// if the follower left A before the end.
fn trickled(f: &mut Follower<u32>, root: &Root, now: u64, d: u64) -> (u64, Vec<Output<u32>>) {
    let snap = root.log.snapshot_at(now);
    let mut t = now;
    while t + 1_000 <= now + d {
        t += 1_000;
        let out = f.handle(t, Input::Progress { from: A });
        assert_eq!(switched(&out), None, "left while streaming at {t}: {out:?}");
    }
    let out = f.handle(
        t,
        Input::StagedSnapshot {
            from: A,
            position: snap.position,
            intact: true,
            seal: seal(&snap),
        },
    );
    assert!(
        out.contains(&Output::InstallStaged(snap.position)),
        "a signed, newer snapshot is installed: {out:?}"
    );
    // The install comes before any switch, so the driver commits what it staged.
    let installed = out
        .iter()
        .position(|o| matches!(o, Output::InstallStaged(_)));
    let left = out
        .iter()
        .position(|o| matches!(o, Output::Switched { .. }));
    assert!(left.is_none_or(|l| installed < Some(l)), "{out:?}");
    f.handle(
        t,
        Input::Applied {
            seq: snap.position.seq,
        },
    );
    (t, out)
}

/// The reviewer's case: an upstream answers `Compacted` right after every install, then
/// trickles a fresh root snapshot for just under the deadline. Each used to be credited with
/// the time it streamed, so the follower stayed on it, up to two deadlines behind the root,
/// forever. Now the second slow one within the compaction gap is credited with its origin
/// only: it is installed and the upstream is left, within two deadlines of the first
/// `Compacted`.
#[test]
fn chained_trickled_snapshots_fail_over_within_two_deadlines() {
    let mut root = root(4);
    let mut f = caught_up(&root);
    let d = 14 * MIN; // under the 15 min default deadline, longer than the 10 min gap
    let first = 1_000;
    let mut now = first;
    let mut worst_lag = 0;
    let mut left = None;
    for cycle in 0..10 {
        root.log
            .append(payload(100 + cycle), Timestamp::from_unix_micros(0));
        let out = f.handle(now, Input::NeedSnapshot { from: A });
        assert_eq!(switched(&out), None, "{out:?}");
        assert!(out.contains(&Output::FetchSnapshot { to: A }), "{out:?}");
        let (at, out) = trickled(&mut f, &root, now, d);
        worst_lag = worst_lag.max(at - f.fresh_as_of_ms().unwrap());
        if let Some(why) = switched(&out) {
            left = Some((at, why, out));
            break;
        }
        now = at + 100;
    }
    let (at, why, out) = left.expect("never failed over");
    assert_eq!(why, SwitchReason::RepeatedSlowSnapshot);
    assert_eq!(f.current_upstream(), &B);
    assert!(at <= first + 2 * d + 1_000, "left at {} min", at / MIN);
    assert!(worst_lag <= d + 1_000, "data lag {} min", worst_lag / MIN);
    // The last snapshot was installed before leaving: the next upstream is asked for what
    // follows it.
    assert!(
        out.contains(&Output::Fetch {
            to: B,
            after: root.log.head().seq
        }),
        "{out:?}"
    );
}

/// The same chain started by an alarm instead of `Compacted` (entries with a bad signature
/// send the follower to a snapshot of the same upstream): the credit is per upstream and gap,
/// whatever sent the follower back.
#[test]
fn trickled_snapshots_after_alarms_fail_over_too() {
    let mut root = root(4);
    let forger = self::root(8);
    let mut f = caught_up(&root);
    let d = 5 * MIN;
    let mut now = 1_000;
    let mut left = None;
    for cycle in 0..4 {
        // Entries after our head that are refused (signed by another key, or not chaining on).
        let (entries, sigs) = forger.log.feed_after(root.log.head().seq, 10).unwrap();
        let out = f.handle(
            now,
            Input::Entries {
                from: A,
                entries,
                signatures: sigs,
            },
        );
        assert!(
            matches!(
                alarm(&out),
                Some(AlarmKind::BadSignature | AlarmKind::HashMismatch)
            ),
            "{out:?}"
        );
        assert!(out.contains(&Output::FetchSnapshot { to: A }), "{out:?}");
        root.log
            .append(payload(200 + cycle), Timestamp::from_unix_micros(0));
        let (at, out) = trickled(&mut f, &root, now, d);
        if let Some(why) = switched(&out) {
            left = Some((cycle, why));
            break;
        }
        now = at + 100;
    }
    assert_eq!(left, Some((1, SwitchReason::RepeatedSlowSnapshot)));
}

/// The honest cases. One long snapshot after `Compacted`, then the feed: credited, and the
/// upstream kept as long as it delivers. A second one, asked for past the gap: credited too.
/// A quick one right after a slow one: nothing to credit, kept.
#[test]
fn a_slow_snapshot_is_credited_once_per_gap_and_quick_ones_always() {
    let mut root = root(4);
    let mut f = caught_up(&root);
    let d = 14 * MIN;
    root.log.append(payload(5), Timestamp::from_unix_micros(0));
    f.handle(1_000, Input::NeedSnapshot { from: A });
    let (mut now, out) = trickled(&mut f, &root, 1_000, d);
    assert_eq!(switched(&out), None, "{out:?}");
    // It follows on over the feed past the gap, with fresh signed statements.
    let until = now + 12 * MIN;
    while now < until {
        now += 1_000;
        root.log
            .append(payload(now), Timestamp::from_unix_micros(0));
        let after = f.verified().seq;
        let (entries, sigs) = root.log.feed_after(after, 100).unwrap();
        let out = feed_at(&mut f, now, entries, sigs);
        assert_eq!(switched(&out), None, "{now}: {out:?}");
        let head = root.log.head();
        f.handle(now, Input::Applied { seq: head.seq });
        let statement = root.log.freshness(now).unwrap();
        let out = f.handle(now, Input::Freshness { from: A, statement });
        assert_eq!(switched(&out), None, "{now}: {out:?}");
    }
    assert_eq!(f.fresh_as_of_ms(), Some(now));
    // Compacted again, past the gap since the credited one: a slow one is credited again.
    now += 1_000;
    root.log.append(payload(0), Timestamp::from_unix_micros(0));
    f.handle(now, Input::NeedSnapshot { from: A });
    let (now, out) = trickled(&mut f, &root, now, d);
    assert_eq!(switched(&out), None, "{out:?}");
    // And right after it, a quick one (a compaction that happened while it streamed).
    root.log.append(payload(1), Timestamp::from_unix_micros(0));
    f.handle(now + 100, Input::NeedSnapshot { from: A });
    let (now, out) = trickled(&mut f, &root, now + 100, 5_000);
    assert_eq!(switched(&out), None, "{out:?}");
    assert_eq!(f.current_upstream(), &A);
    for s in 1..=20 {
        let out = f.handle(now + s * 1_000, Input::Tick);
        assert_eq!(switched(&out), None, "{out:?}");
    }
}

/// The gap is counted from the credited snapshot's arrival to the next one's request, and
/// honoured as configured: a slow snapshot asked for within it is refused its credit, one
/// asked for past it is not.
#[test]
fn the_gap_is_counted_from_the_credited_arrival_to_the_next_request() {
    let run = |wait: u64| {
        let mut root = root(4);
        let gap = Config {
            compaction_gap_ms: 2 * MIN,
            ..config(&root)
        };
        let mut f = Follower::resume(vec![A, B], gap, 0, Position::GENESIS)
            .unwrap()
            .with_cluster_id(CLUSTER);
        f.handle(0, Input::Tick);
        let (entries, sigs) = root.log.feed_after(0, 10).unwrap();
        feed(&mut f, entries, sigs);
        f.handle(2, Input::Applied { seq: 4 });
        root.log.append(payload(5), Timestamp::from_unix_micros(0));
        f.handle(1_000, Input::NeedSnapshot { from: A });
        let (at, out) = trickled(&mut f, &root, 1_000, MIN);
        assert_eq!(switched(&out), None, "{out:?}");
        // Following on, kept fresh by statements until the next `Compacted`.
        let mut now = at;
        while now < at + wait {
            now += 1_000;
            let statement = root.log.freshness(now).unwrap();
            let out = feed_at(&mut f, now, Vec::new(), Vec::new());
            assert_eq!(switched(&out), None, "{out:?}");
            let out = f.handle(now, Input::Freshness { from: A, statement });
            assert_eq!(switched(&out), None, "{out:?}");
        }
        root.log.append(payload(6), Timestamp::from_unix_micros(0));
        f.handle(now, Input::NeedSnapshot { from: A });
        let (_, out) = trickled(&mut f, &root, now, MIN);
        switched(&out)
    };
    assert_eq!(run(MIN + 50_000), Some(SwitchReason::RepeatedSlowSnapshot));
    assert_eq!(run(2 * MIN + 1_000), None);
}

/// A signed snapshot not newer than what the follower holds says nothing: it moves neither
/// the replica's freshness nor the origin a relay passes on.
#[test]
fn a_snapshot_not_newer_is_no_freshness_of_the_replica() {
    let root = root(4);
    let mut f = caught_up(&root);
    assert_eq!(f.fresh_as_of_ms(), None);
    assert_eq!(f.freshest_origin_ms(), None);
    let same = root.log.snapshot_at(5_000);
    f.handle(5_000, Input::NeedSnapshot { from: A });
    let out = f.handle(
        6_000,
        Input::StagedSnapshot {
            from: A,
            position: same.position,
            intact: true,
            seal: seal(&same),
        },
    );
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::InstallStaged(_) | Output::Switched { .. })),
        "{out:?}"
    );
    assert_eq!(f.fresh_as_of_ms(), None);
    assert_eq!(f.freshest_origin_ms(), None);
}

fn feed_at(
    f: &mut Follower<u32>,
    now: u64,
    entries: Vec<coffer_storage::ChangeRecord>,
    signatures: Vec<coffer_storage::FeedSignature>,
) -> Vec<Output<u32>> {
    f.handle(
        now,
        Input::Entries {
            from: A,
            entries,
            signatures,
        },
    )
}
