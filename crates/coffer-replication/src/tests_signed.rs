//! The follower with a pinned feed key: only what the control plane signed is applied.

use std::sync::Arc;

use coffer_storage::{Change, ChangeRecord, FeedSignature};
use coffer_types::{AccountId, Timestamp};

use crate::sign::FeedKeyPair;
use crate::{
    AlarmKind, Config, Follower, Input, Log, Output, Phase, Position, Snapshot, SnapshotSeal,
    SwitchReason,
};

const A: u32 = 1;
const B: u32 = 2;
const CLUSTER: [u8; 16] = [0xc1; 16];

fn payload(i: u64) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&i.to_be_bytes());
    serde_json::to_vec(&Change::AccountPut {
        account_id: AccountId::from_bytes(id),
        name: format!("a{i}"),
    })
    .unwrap()
}

struct Root {
    key: Arc<FeedKeyPair>,
    log: Log,
}

fn root(n: u64) -> Root {
    let key = Arc::new(FeedKeyPair::generate().unwrap().0);
    let mut log = Log::signed(CLUSTER, key.clone());
    for i in 1..=n {
        log.append(payload(i), Timestamp::from_unix_micros(0));
    }
    Root { key, log }
}

fn config(root: &Root) -> Config {
    Config {
        feed_key: Some(root.key.public_key()),
        ..Config::default()
    }
}

/// A follower pinned to `root`'s key, resumed at genesis of `CLUSTER`, its first fetch drained.
fn following(root: &Root) -> Follower<u32> {
    let mut f = Follower::resume(vec![A, B], config(root), 0, Position::GENESIS)
        .unwrap()
        .with_cluster_id(CLUSTER);
    assert_eq!(
        f.handle(0, Input::Tick),
        vec![Output::Fetch { to: A, after: 0 }]
    );
    f
}

fn feed(
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

fn applied(out: &[Output<u32>]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Apply { entries: v, .. } => Some(v.iter().map(|e| e.seq)),
            _ => None,
        })
        .flatten()
        .collect()
}

fn alarm(out: &[Output<u32>]) -> Option<AlarmKind> {
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

fn seal(s: &Snapshot) -> SnapshotSeal {
    SnapshotSeal {
        cluster_id: s.cluster_id,
        count: s.items.len() as u64,
        digest: s.digest,
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
