//! What signature checks add to a feed batch: the follower verifying a batch of entries (seq,
//! chain, payload parse) without a pinned key, and with one (the same, plus one Ed25519
//! verification per checkpoint). The control plane signs one checkpoint per write batch, so
//! a batch of N entries from N single writes carries N signatures, and one bulk write of N
//! entries carries one: both are measured.

use std::hint::black_box;
use std::sync::Arc;

use coffer_replication::{Config, FeedKeyPair, Follower, Input, Log, Position};
use coffer_storage::{Change, ChangeRecord, FeedSignature};
use coffer_types::{AccountId, Timestamp};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const CLUSTER: [u8; 16] = [9; 16];

fn payload(i: u64) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&i.to_be_bytes());
    serde_json::to_vec(&Change::AccountPut {
        account_id: AccountId::from_bytes(id),
        name: format!("account-{i}"),
    })
    .expect("serializes")
}

fn follower(config: Config) -> Follower<u8> {
    let mut f = Follower::resume(vec![0], config, 0, Position::GENESIS)
        .expect("an upstream")
        .with_cluster_id(CLUSTER);
    f.handle(0, Input::Tick);
    f
}

fn verify(c: &mut Criterion) {
    let key = Arc::new(FeedKeyPair::generate().expect("a key").0);
    let mut log = Log::signed(CLUSTER, key.clone());
    for i in 1..=1000 {
        log.append(payload(i), Timestamp::from_unix_micros(0));
    }
    let signed = Config {
        feed_key: Some(key.public_key()),
        ..Config::default()
    };
    let mut group = c.benchmark_group("feed batch");
    for n in [1usize, 64, 1000] {
        let (entries, every): (Vec<ChangeRecord>, Vec<FeedSignature>) =
            log.feed_after(0, n).expect("held");
        let last_only: Vec<FeedSignature> = every.last().copied().into_iter().collect();
        group.throughput(Throughput::Elements(n as u64));
        for (name, config, sigs) in [
            ("no key", Config::default(), Vec::new()),
            ("key, one signature", signed, last_only),
            ("key, a signature per entry", signed, every),
        ] {
            group.bench_function(format!("{n} entries, {name}"), |b| {
                b.iter_batched(
                    || (follower(config), entries.clone(), sigs.clone()),
                    |(mut f, entries, signatures)| {
                        black_box(f.handle(
                            1,
                            Input::Entries {
                                from: 0,
                                entries,
                                signatures,
                            },
                        ))
                    },
                    BatchSize::SmallInput,
                );
            });
        }
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
