//! Focused tests, one rule each.

use coffer_storage::{Change, ChangeRecord};
use coffer_types::{AccountId, Timestamp};

use crate::{
    AlarmKind, Config, Error, Follower, Input, Log, Output, Phase, Position, Snapshot,
    SnapshotDigest, SnapshotSeal, SwitchReason,
};

const A: u32 = 1;
const B: u32 = 2;
const STALE: u64 = 30_000;
/// What an unsigned staged snapshot says (no key is pinned in these tests).
const UNSIGNED: SnapshotSeal = SnapshotSeal {
    cluster_id: [0; 16],
    count: 0,
    digest: [0; 32],
    origin_ms: 0,
    signature: None,
};

fn payload(i: u64) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&i.to_be_bytes());
    serde_json::to_vec(&Change::AccountPut {
        account_id: AccountId::from_bytes(id),
        name: format!("a{i}"),
    })
    .unwrap()
}

fn log_of(n: u64) -> Log {
    let mut log = Log::new();
    for i in 1..=n {
        log.append(payload(i), Timestamp::from_unix_micros(0));
    }
    log
}

fn entries(log: &Log, after: u64, n: usize) -> Vec<ChangeRecord> {
    log.entries_after(after, n).unwrap()
}

/// A follower of A then B, already following from `pos`, its first fetch drained.
fn following(pos: Position) -> Follower<u32> {
    let mut f = Follower::resume(vec![A, B], Config::default(), 0, pos).unwrap();
    let out = f.handle(0, Input::Tick);
    assert_eq!(
        out,
        vec![Output::Fetch {
            to: A,
            after: pos.seq
        }]
    );
    f
}

fn applies(out: &[Output<u32>]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Apply { entries: v, .. } => Some(v.iter().map(|e| e.seq)),
            _ => None,
        })
        .flatten()
        .collect()
}

fn alarm_kind(out: &[Output<u32>]) -> Option<AlarmKind> {
    out.iter().find_map(|o| match o {
        Output::Alarm(a) => Some(a.kind),
        _ => None,
    })
}

fn switched(out: &[Output<u32>]) -> Option<(u32, u32, SwitchReason)> {
    out.iter().find_map(|o| match o {
        Output::Switched { from, to, why } => Some((*from, *to, *why)),
        _ => None,
    })
}

#[test]
fn needs_an_upstream() {
    assert_eq!(
        Follower::<u32>::new(vec![], Config::default(), 0).unwrap_err(),
        Error::NoUpstreams
    );
}

#[test]
fn bootstraps_from_a_snapshot_then_follows() {
    let log = log_of(5);
    let mut f = Follower::new(vec![A, B], Config::default(), 0).unwrap();
    assert_eq!(f.phase(), Phase::NeedsSnapshot);
    assert_eq!(
        f.handle(0, Input::Tick),
        vec![Output::FetchSnapshot { to: A }]
    );
    let snap = log.snapshot();
    let out = f.handle(
        10,
        Input::Snapshot {
            from: A,
            snapshot: snap.clone(),
        },
    );
    assert_eq!(
        out,
        vec![
            Output::InstallSnapshot(snap),
            Output::Fetch { to: A, after: 5 }
        ]
    );
    assert_eq!(f.phase(), Phase::Following);
    assert_eq!(f.verified(), log.head());
    // Not durable until the driver says so.
    assert_eq!(f.applied(), Position::GENESIS);
    f.handle(11, Input::Applied { seq: 5 });
    assert_eq!(f.applied(), log.head());
}

#[test]
fn applies_verified_entries_and_advances_only_when_confirmed() {
    let log = log_of(6);
    let mut f = following(Position::GENESIS);
    let out = f.handle(
        1,
        Input::Entries {
            from: A,
            entries: entries(&log, 0, 3),
            signatures: vec![],
        },
    );
    assert_eq!(applies(&out), vec![1, 2, 3]);
    assert_eq!(f.applied(), Position::GENESIS);
    // Pipelined: the next fetch goes out from the verified position.
    assert_eq!(out.last(), Some(&Output::Fetch { to: A, after: 3 }));
    let out = f.handle(
        2,
        Input::Entries {
            from: A,
            entries: entries(&log, 3, 3),
            signatures: vec![],
        },
    );
    assert_eq!(applies(&out), vec![4, 5, 6]);
    f.handle(3, Input::Applied { seq: 3 });
    assert_eq!(f.applied().seq, 3);
    f.handle(4, Input::Applied { seq: 6 });
    assert_eq!(f.applied(), log.head());
    // A crash before confirming re-fetches from the durable position instead of skipping.
    let mut g = Follower::resume(vec![A], Config::default(), 0, Position::GENESIS).unwrap();
    let out = g.handle(
        0,
        Input::Entries {
            from: A,
            entries: entries(&log, 0, 6),
            signatures: vec![],
        },
    );
    assert_eq!(applies(&out), vec![1, 2, 3, 4, 5, 6]);
    let mut restarted = Follower::resume(vec![A], Config::default(), 5, g.applied()).unwrap();
    assert_eq!(
        restarted.handle(5, Input::Tick),
        vec![Output::Fetch { to: A, after: 0 }]
    );
}

#[test]
fn duplicates_are_skipped() {
    let log = log_of(5);
    let mut f = following(Position::GENESIS);
    let out = f.handle(
        1,
        Input::Entries {
            from: A,
            entries: entries(&log, 0, 3),
            signatures: vec![],
        },
    );
    assert_eq!(applies(&out), vec![1, 2, 3]);
    let out = f.handle(
        2,
        Input::Entries {
            from: A,
            entries: entries(&log, 0, 3),
            signatures: vec![],
        },
    );
    assert!(applies(&out).is_empty() && alarm_kind(&out).is_none());
    let out = f.handle(
        3,
        Input::Entries {
            from: A,
            entries: entries(&log, 1, 4),
            signatures: vec![],
        },
    );
    assert_eq!(applies(&out), vec![4, 5]);
}

#[test]
fn out_of_order_batch_is_not_applied_and_refetched() {
    let log = log_of(6);
    let mut f = following(Position::GENESIS);
    let out = f.handle(
        1,
        Input::Entries {
            from: A,
            entries: entries(&log, 3, 3),
            signatures: vec![],
        },
    );
    assert!(applies(&out).is_empty());
    assert_eq!(alarm_kind(&out), None);
    assert_eq!(out, vec![Output::Fetch { to: A, after: 0 }]);
    assert_eq!(f.phase(), Phase::Following);
}

fn assert_refused(batch: Vec<ChangeRecord>, applied: &[u64], kind: AlarmKind) {
    let mut f = following(Position::GENESIS);
    let out = f.handle(
        1,
        Input::Entries {
            from: A,
            entries: batch,
            signatures: vec![],
        },
    );
    assert_eq!(applies(&out), applied, "{out:?}");
    assert_eq!(alarm_kind(&out), Some(kind), "{out:?}");
    assert_eq!(f.phase(), Phase::Resyncing);
    // Resync from a snapshot of the same upstream.
    assert_eq!(out.last(), Some(&Output::FetchSnapshot { to: A }));
    // Later entries are not applied while resyncing.
    let out = f.handle(
        2,
        Input::Entries {
            from: A,
            entries: entries(&log_of(5), 0, 5),
            signatures: vec![],
        },
    );
    assert!(applies(&out).is_empty());
}

#[test]
fn flipped_payload_byte_is_refused() {
    let mut batch = entries(&log_of(4), 0, 4);
    batch[2].payload[5] ^= 1;
    assert_refused(batch, &[1, 2], AlarmKind::HashMismatch);
}

#[test]
fn flipped_hash_byte_is_refused() {
    let mut batch = entries(&log_of(4), 0, 4);
    batch[0].hash[0] ^= 0x80;
    assert_refused(batch, &[], AlarmKind::HashMismatch);
}

#[test]
fn truncated_payload_is_refused() {
    let mut batch = entries(&log_of(4), 0, 4);
    batch[1].payload.truncate(10);
    assert_refused(batch, &[1], AlarmKind::HashMismatch);
}

#[test]
fn gap_inside_a_batch_is_refused() {
    let mut batch = entries(&log_of(4), 0, 4);
    batch.remove(2);
    assert_refused(batch, &[1, 2], AlarmKind::Gap);
}

#[test]
fn chained_but_unparseable_payload_is_refused() {
    let mut log = log_of(2);
    log.append(b"not a change".to_vec(), Timestamp::from_unix_micros(0));
    assert_refused(entries(&log, 0, 3), &[1, 2], AlarmKind::CorruptPayload);
}

#[test]
fn messages_from_other_upstreams_are_ignored() {
    let log = log_of(3);
    let mut f = following(Position::GENESIS);
    let out = f.handle(
        1,
        Input::Entries {
            from: B,
            entries: entries(&log, 0, 3),
            signatures: vec![],
        },
    );
    assert!(out.is_empty());
    let out = f.handle(
        2,
        Input::Failed {
            from: B,
            retry_after_ms: None,
        },
    );
    assert!(out.is_empty());
    assert_eq!(*f.current_upstream(), A);
}

#[test]
fn corrupt_snapshot_is_refused_and_the_next_upstream_asked() {
    for corrupt in [
        (|s: &mut Snapshot| s.items[1][0] ^= 1) as fn(&mut Snapshot),
        |s| {
            s.items.pop();
        },
        |s| s.position.seq += 1,
        |s| s.digest[31] ^= 1,
    ] {
        let mut snap = log_of(3).snapshot();
        corrupt(&mut snap);
        assert!(!snap.verify());
        let mut f = Follower::new(vec![A, B], Config::default(), 0).unwrap();
        f.handle(0, Input::Tick);
        let out = f.handle(
            1,
            Input::Snapshot {
                from: A,
                snapshot: snap,
            },
        );
        assert_eq!(alarm_kind(&out), Some(AlarmKind::CorruptSnapshot));
        assert!(!out.iter().any(|o| matches!(o, Output::InstallSnapshot(_))));
        assert_eq!(switched(&out), Some((A, B, SwitchReason::CorruptSnapshot)));
        // Snapshots are large: the next one is asked for after the failure backoff only.
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::FetchSnapshot { .. }))
        );
        assert!(f.handle(999, Input::Tick).is_empty());
        assert_eq!(
            f.handle(1_001, Input::Tick),
            vec![Output::FetchSnapshot { to: B }]
        );
        assert_eq!(f.phase(), Phase::NeedsSnapshot);
    }
}

#[test]
fn older_snapshot_is_refused_and_following_resumes() {
    let log = log_of(5);
    let old = log_of(3).snapshot();
    let mut f = following(log.head());
    let out = f.handle(1, Input::NeedSnapshot { from: A });
    assert_eq!(out, vec![Output::FetchSnapshot { to: A }]);
    assert_eq!(f.phase(), Phase::Resyncing);
    let out = f.handle(
        2,
        Input::Snapshot {
            from: A,
            snapshot: old,
        },
    );
    assert_eq!(out, vec![Output::Fetch { to: A, after: 5 }]);
    assert_eq!(f.verified(), log.head());
    assert_eq!(f.phase(), Phase::Following);
}

#[test]
fn newer_snapshot_after_need_snapshot_is_installed() {
    let mut f = following(log_of(2).head());
    f.handle(1, Input::NeedSnapshot { from: A });
    let snap = log_of(9).snapshot();
    let out = f.handle(
        2,
        Input::Snapshot {
            from: A,
            snapshot: snap.clone(),
        },
    );
    assert_eq!(out[0], Output::InstallSnapshot(snap));
    assert_eq!(f.verified().seq, 9);
    // An unsolicited snapshot while following is ignored.
    let out = f.handle(
        3,
        Input::Snapshot {
            from: A,
            snapshot: log_of(12).snapshot(),
        },
    );
    assert!(out.iter().all(|o| !matches!(o, Output::InstallSnapshot(_))));
}

#[test]
fn connection_failure_switches_with_backoff_and_continues_from_position() {
    let log = log_of(3);
    let mut f = following(Position::GENESIS);
    f.handle(
        1,
        Input::Entries {
            from: A,
            entries: entries(&log, 0, 3),
            signatures: vec![],
        },
    );
    let out = f.handle(
        2,
        Input::Failed {
            from: A,
            retry_after_ms: None,
        },
    );
    assert_eq!(switched(&out), Some((A, B, SwitchReason::Failed)));
    assert!(
        !out.iter().any(|o| matches!(o, Output::Fetch { .. })),
        "backoff"
    );
    let out = f.handle(2 + 1_000, Input::Tick);
    assert_eq!(out, vec![Output::Fetch { to: B, after: 3 }]);
}

#[test]
fn silent_upstream_is_left_after_staleness_only() {
    let mut f = following(Position::GENESIS);
    let out = f.handle(STALE, Input::Tick);
    assert_eq!(switched(&out), None);
    let out = f.handle(STALE + 1, Input::Tick);
    assert_eq!(switched(&out), Some((A, B, SwitchReason::Silent)));
    assert!(out.contains(&Output::Fetch { to: B, after: 0 }));
}

#[test]
fn healthy_upstream_is_never_left() {
    let log = log_of(1);
    let mut f = following(Position::GENESIS);
    f.handle(
        1,
        Input::Entries {
            from: A,
            entries: entries(&log, 0, 1),
            signatures: vec![],
        },
    );
    // Ten minutes of heartbeats, every request unanswered (lost): re-sent, never switched.
    let mut fetches = 0;
    for t in (100..600_000).step_by(100) {
        let mut out = f.handle(t, Input::Tick);
        if t % 1_000 == 0 {
            out.extend(f.handle(
                t,
                Input::Heartbeat {
                    from: A,
                    head_seq: 1,
                    origin_ms: t,
                },
            ));
        }
        assert_eq!(switched(&out), None, "t={t}");
        fetches += out
            .iter()
            .filter(|o| matches!(o, Output::Fetch { to: A, .. }))
            .count();
    }
    assert!(fetches > 100, "lost requests are re-sent");
    assert_eq!(*f.current_upstream(), A);
}

#[test]
fn stale_heartbeats_switch() {
    let mut f = following(Position::GENESIS);
    let mut left = None;
    for t in (1_000..60_000).step_by(1_000) {
        // Alive, but its view of the root stopped at time 500 (a relay cut off from the root).
        let out = f.handle(
            t,
            Input::Heartbeat {
                from: A,
                head_seq: 0,
                origin_ms: 500,
            },
        );
        if let Some(s) = switched(&out) {
            left = Some((t, s));
            break;
        }
    }
    assert_eq!(left, Some((31_000, (A, B, SwitchReason::Stale))));
}

#[test]
fn upstream_advertising_entries_it_never_delivers_is_left() {
    let mut f = following(Position::GENESIS);
    let mut left = None;
    for t in (1_000..60_000).step_by(1_000) {
        let out = f.handle(
            t,
            Input::Heartbeat {
                from: A,
                head_seq: 10,
                origin_ms: t,
            },
        );
        if let Some(s) = switched(&out) {
            left = Some((t, s));
            break;
        }
    }
    assert_eq!(left, Some((31_000, (A, B, SwitchReason::NoProgress))));
}

#[test]
fn unanswered_request_is_resent_to_the_same_upstream() {
    let mut f = following(Position::GENESIS);
    assert!(f.handle(1_999, Input::Tick).is_empty());
    assert_eq!(
        f.handle(2_000, Input::Tick),
        vec![Output::Fetch { to: A, after: 0 }]
    );
}

#[test]
fn new_upstream_that_does_not_chain_triggers_resync_from_it() {
    let ours = log_of(3);
    let mut f = following(ours.head());
    f.handle(
        1,
        Input::Failed {
            from: A,
            retry_after_ms: None,
        },
    );
    f.handle(2_000, Input::Tick);
    // B's log has other history: its entry 4 does not chain onto our entry 3.
    let mut theirs = Log::new();
    for i in 1..=5 {
        theirs.append(payload(100 + i), Timestamp::from_unix_micros(0));
    }
    let out = f.handle(
        2_001,
        Input::Entries {
            from: B,
            entries: entries(&theirs, 3, 2),
            signatures: vec![],
        },
    );
    assert!(applies(&out).is_empty());
    assert_eq!(alarm_kind(&out), Some(AlarmKind::HashMismatch));
    assert_eq!(out.last(), Some(&Output::FetchSnapshot { to: B }));
}

#[test]
fn log_serves_checks_and_compacts() {
    let mut log = log_of(5);
    assert_eq!(log.entries_after(5, 10).unwrap(), vec![]);
    assert_eq!(log.entries_after(9, 10).unwrap(), vec![]);
    assert_eq!(
        entries(&log, 2, 2)
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![3, 4]
    );

    // A relay re-serves exactly what it received.
    let mut relay = Log::from_snapshot(&log_of(2).snapshot()).unwrap();
    relay.extend(&entries(&log, 2, 3)).unwrap();
    assert_eq!(relay.head(), log.head());
    assert_eq!(relay.entries_after(2, 9).unwrap(), entries(&log, 2, 9));
    assert_eq!(relay.snapshot(), log.snapshot());
    assert!(matches!(
        relay.entries_after(1, 9),
        Err(Error::Compacted { .. })
    ));

    let mut gap = entries(&log_of(8), 6, 2);
    assert_eq!(
        relay.extend(&gap),
        Err(Error::Gap {
            expected: 6,
            got: 7
        })
    );
    gap = entries(&log_of(8), 5, 1);
    gap[0].hash[3] ^= 1;
    assert_eq!(relay.extend(&gap), Err(Error::HashMismatch { seq: 6 }));
    assert_eq!(relay.head(), log.head(), "nothing appended");

    let snap = log.snapshot();
    log.compact();
    assert_eq!(log.base(), log.head());
    assert!(matches!(
        log.entries_after(4, 9),
        Err(Error::Compacted { after: 4, base: 5 })
    ));
    assert_eq!(log.snapshot(), snap);

    let mut bad = snap;
    bad.items[0].push(b'x');
    assert_eq!(
        Log::from_snapshot(&bad).unwrap_err(),
        Error::CorruptSnapshot
    );
}

#[test]
fn snapshot_at_seq_zero_must_carry_the_genesis_hash() {
    assert!(Log::new().snapshot().verify());
    let forged = Snapshot::new(
        Position {
            seq: 0,
            hash: [1; 32],
        },
        vec![],
    );
    assert!(!forged.verify());
}

#[test]
fn the_streaming_digest_is_the_snapshot_digest_and_counts_items() {
    let snap = log_of(4).snapshot();
    let mut d = SnapshotDigest::new(snap.position, snap.items.len() as u64);
    for item in &snap.items {
        d.update(item);
    }
    assert_eq!(d.items(), 4);
    assert_eq!(d.finish(), Some(snap.digest));
    // One item short, or one too many: no digest at all.
    let mut short = SnapshotDigest::new(snap.position, 4);
    for item in &snap.items[..3] {
        short.update(item);
    }
    assert_eq!(short.finish(), None);
    let mut long = SnapshotDigest::new(snap.position, 3);
    for item in &snap.items {
        long.update(item);
    }
    assert_eq!(long.finish(), None);
}

#[test]
fn a_staged_snapshot_is_installed_only_if_intact_and_newer() {
    let log = log_of(5);
    let head = log.head();
    let mut f = Follower::new(vec![A, B], Config::default(), 0).unwrap();
    f.handle(0, Input::Tick);
    // Corrupt: alarm, no install, switch to B and ask it.
    let out = f.handle(
        1,
        Input::StagedSnapshot {
            from: A,
            position: head,
            intact: false,
            seal: UNSIGNED,
        },
    );
    assert_eq!(alarm_kind(&out), Some(AlarmKind::CorruptSnapshot));
    assert!(!out.iter().any(|o| matches!(o, Output::InstallStaged(_))));
    assert_eq!(switched(&out), Some((A, B, SwitchReason::CorruptSnapshot)));
    assert_eq!(
        f.handle(1_001, Input::Tick),
        vec![Output::FetchSnapshot { to: B }]
    );
    // From a non-current upstream: ignored.
    let out = f.handle(
        2,
        Input::StagedSnapshot {
            from: A,
            position: head,
            intact: true,
            seal: UNSIGNED,
        },
    );
    assert!(out.is_empty(), "{out:?}");
    // Intact from the current one: installed, then followed on.
    let out = f.handle(
        3,
        Input::StagedSnapshot {
            from: B,
            position: head,
            intact: true,
            seal: UNSIGNED,
        },
    );
    assert_eq!(
        out,
        vec![
            Output::InstallStaged(head),
            Output::Fetch { to: B, after: 5 }
        ]
    );
    f.handle(4, Input::Applied { seq: 5 });
    assert_eq!(f.applied(), head);
    // Later, a resync answered by an older snapshot: kept out, our state stands.
    f.handle(5, Input::NeedSnapshot { from: B });
    let older = log_of(3).head();
    let out = f.handle(
        6,
        Input::StagedSnapshot {
            from: B,
            position: older,
            intact: true,
            seal: UNSIGNED,
        },
    );
    assert!(
        !out.iter().any(|o| matches!(o, Output::InstallStaged(_))),
        "{out:?}"
    );
    assert_eq!(f.phase(), Phase::Following);
    assert_eq!(f.verified(), head);
}

#[test]
fn progress_keeps_a_long_answer_from_being_resent_or_judged_silent() {
    let mut f = Follower::new(vec![A, B], Config::default(), 0).unwrap();
    assert_eq!(
        f.handle(0, Input::Tick),
        vec![Output::FetchSnapshot { to: A }]
    );
    // A snapshot streaming for two minutes, reporting progress every second: never re-sent,
    // never abandoned.
    for t in (1_000..120_000).step_by(1_000) {
        let out = f.handle(t, Input::Progress { from: A });
        assert!(out.is_empty(), "t={t}: {out:?}");
    }
    // Progress from another upstream does not count.
    let out = f.handle(120_000, Input::Progress { from: B });
    assert!(out.is_empty(), "{out:?}");
    // Once it stops, the usual timeouts apply again: re-sent after the request timeout...
    let out = f.handle(121_000, Input::Tick);
    assert_eq!(out, vec![Output::FetchSnapshot { to: A }]);
    // ...and abandoned after the staleness.
    let out = f.handle(119_000 + STALE + 1, Input::Tick);
    assert!(switched(&out).is_some(), "{out:?}");
}

#[test]
fn a_resyncing_follower_fetches_a_snapshot_and_keeps_its_state_until_a_newer_one() {
    let log = log_of(6);
    let at4 = log_of(4).head();
    let mut f = Follower::resync(vec![A], Config::default(), 0, at4).unwrap();
    assert_eq!(f.phase(), Phase::Resyncing);
    assert_eq!(f.applied(), at4);
    assert_eq!(
        f.handle(0, Input::Tick),
        vec![Output::FetchSnapshot { to: A }]
    );
    let snap = log.snapshot();
    let out = f.handle(
        1,
        Input::Snapshot {
            from: A,
            snapshot: snap.clone(),
        },
    );
    assert_eq!(out[0], Output::InstallSnapshot(snap));
}

#[test]
fn failures_in_a_row_back_off_exponentially_with_jitter_and_an_answer_resets_it() {
    let config = Config {
        failure_backoff_ms: 1_000,
        max_backoff_ms: 8_000,
        staleness_ms: 1_000_000,
        ..Config::default()
    };
    // The wait before the request that follows each failure, for one seed.
    let waits = |seed: u64, retry_after_ms: Option<u64>, answer_after: Option<usize>| {
        let mut f = Follower::resume(vec![A], config, 0, Position::GENESIS)
            .unwrap()
            .with_jitter_seed(seed);
        f.handle(0, Input::Tick);
        let mut now = 0;
        let mut waits = Vec::new();
        for i in 0..6 {
            if answer_after == Some(i) {
                f.handle(
                    now,
                    Input::Heartbeat {
                        from: A,
                        head_seq: 0,
                        origin_ms: now,
                    },
                );
            }
            f.handle(
                now,
                Input::Failed {
                    from: A,
                    retry_after_ms,
                },
            );
            let failed_at = now;
            loop {
                now += 10;
                if f.handle(now, Input::Tick)
                    .iter()
                    .any(|o| matches!(o, Output::Fetch { .. }))
                {
                    break;
                }
            }
            waits.push(now - failed_at);
        }
        waits
    };
    let w = waits(1, None, None);
    // Each within [half, all] of 1, 2, 4, 8, 8, 8 s (to the tick).
    for (wait, full) in w.iter().zip([1_000u64, 2_000, 4_000, 8_000, 8_000, 8_000]) {
        assert!(
            *wait >= full / 2 && *wait <= full + 10,
            "{w:?}: {wait} not within [{}, {full}]",
            full / 2
        );
    }
    // Jittered: another seed waits differently.
    assert_ne!(w, waits(2, None, None));
    // An answer in between starts over.
    let w = waits(1, None, Some(3));
    assert!(w[3] <= 1_010, "{w:?}");
    // Retry-After is honoured, but only up to the cap.
    let w = waits(1, Some(5_000), None);
    assert!(w[0] >= 5_000, "{w:?}");
    let w = waits(1, Some(3_600_000), None);
    assert!(w.iter().all(|w| *w <= 8_010), "{w:?}");
}
