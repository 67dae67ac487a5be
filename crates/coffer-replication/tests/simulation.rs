//! Deterministic network simulation: a root producer, a relay tier and leaves, under a network
//! that drops, duplicates, delays, reorders and corrupts messages, cuts nodes off and takes
//! upstreams down. Every step checks that what each node applied is a prefix of the root's
//! log; after healing, every node must reach the root's head within a bounded time.
//!
//! The root signs its log and snapshots; every follower pins its key, relays forward the
//! signatures and serve the root's snapshot they installed. Among the corruptions is what a
//! Byzantine upstream would do (rewrite a payload or a snapshot item and recompute the hashes
//! and digest): it must be refused like any other, and never applied.

use std::collections::VecDeque;
use std::sync::Arc;

use coffer_replication::{
    Config, FeedKeyPair, Follower, Freshness, Input, Log, Output, Phase, Position, Snapshot,
    SnapshotSeal, SwitchReason,
};
use coffer_storage::{Change, ChangeRecord, FeedSignature};
use coffer_types::{AccountId, Timestamp};

/// splitmix64: tiny, deterministic, good enough for fault injection.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `per_mille` / 1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

const STEP_MS: u64 = 20;
const TICK_MS: u64 = 100;
const HEARTBEAT_MS: u64 = 200;
const BATCH: usize = 64;
const CONFIG: Config = Config {
    staleness_ms: 3_000,
    request_timeout_ms: 250,
    poll_interval_ms: 300,
    failure_backoff_ms: 200,
    max_backoff_ms: 1_600,
    // Set per simulation: the root's key.
    feed_key: None,
    // Relays here serve the root snapshot they installed as it is (the real ones forward a
    // fresh one): long enough for every run.
    max_snapshot_age_ms: 3_600_000,
    snapshot_deadline_ms: 60_000,
    compaction_gap_ms: 600_000,
};
const CLUSTER: [u8; 16] = [0x5e; 16];

#[derive(Clone, Debug)]
enum Msg {
    Fetch {
        after: u64,
    },
    FetchSnapshot,
    Entries(Vec<ChangeRecord>, Vec<FeedSignature>),
    Snapshot(Snapshot),
    NeedSnapshot,
    /// With the root's signed statement (the root's own; a relay's newest verified one).
    Heartbeat {
        head: u64,
        origin: u64,
        freshness: Option<Freshness>,
    },
    Failed,
}

#[derive(Clone, Debug)]
struct Envelope {
    at: u64,
    order: u64,
    from: usize,
    to: usize,
    msg: Msg,
    /// For corrupted entries: the lowest seq the corruption touches; for a corrupted snapshot: 0.
    corrupt: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Faults {
    drop: u64,
    dup: u64,
    corrupt: u64,
    max_delay: u64,
    /// Per step, per mille: cut a node off / take an upstream down / restart a node / compact.
    cut: u64,
    down: u64,
    restart: u64,
    compact: u64,
    write: u64,
}

const CHAOS: Faults = Faults {
    drop: 80,
    dup: 80,
    corrupt: 30,
    max_delay: 100,
    cut: 3,
    down: 3,
    restart: 2,
    compact: 2,
    write: 150,
};

/// A lossy but otherwise healthy network: no partitions, no outages, no corruption.
const LOSSY: Faults = Faults {
    corrupt: 0,
    cut: 0,
    down: 0,
    restart: 0,
    ..CHAOS
};

struct Node {
    upstreams: Vec<usize>,
    /// `None` for the root.
    follower: Option<Follower<usize>>,
    /// The root's log; for the others, their durable state (and what relays serve).
    log: Log,
    installed: bool,
    /// Odd-numbered nodes receive snapshots the way the real edge does: staged (streamed into
    /// a transaction) and announced with `Input::StagedSnapshot`, installed on `InstallStaged`.
    staged: Option<Snapshot>,
    pending_applied: VecDeque<(u64, u64)>,
    down_until: u64,
    down_since: Option<u64>,
    cut_until: u64,
    /// Last switch or restart: failover deadlines count from here.
    last_reset: u64,
}

#[derive(Default, Debug)]
struct Stats {
    alarms: u64,
    expected_alarms: u64,
    switches: u64,
    corrupted_sent: u64,
    snapshots_installed: u64,
    restarts: u64,
    converge_ms: u64,
}

struct Sim {
    /// `CONFIG` with the root's key pinned.
    config: Config,
    now: u64,
    rng: Rng,
    faults: Faults,
    nodes: Vec<Node>,
    queue: Vec<Envelope>,
    order: u64,
    history: Vec<ChangeRecord>,
    stats: Stats,
    /// `SIM_TRACE=<node>` prints what that node receives, emits and is sent by the root.
    trace: Option<usize>,
}

fn payload(i: u64) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&i.to_be_bytes());
    serde_json::to_vec(&Change::AccountPut {
        account_id: AccountId::from_bytes(id),
        name: format!("account-{i}"),
    })
    .expect("serializes")
}

impl Sim {
    fn new(seed: u64, faults: Faults) -> Sim {
        // Root 0; relays 1 and 2 follow the root; leaves follow relays and the root.
        let topology: [&[usize]; 8] =
            [&[], &[0], &[0], &[1, 2], &[2, 1], &[1, 0], &[2, 0], &[0, 1]];
        let key = Arc::new(FeedKeyPair::generate().expect("a key").0);
        let config = Config {
            feed_key: Some(key.public_key()),
            ..CONFIG
        };
        let nodes = topology
            .iter()
            .map(|ups| Node {
                upstreams: ups.to_vec(),
                follower: (!ups.is_empty())
                    .then(|| Follower::new(ups.to_vec(), config, 0).expect("has upstreams")),
                log: if ups.is_empty() {
                    Log::signed(CLUSTER, key.clone())
                } else {
                    Log::new()
                },
                installed: ups.is_empty(),
                staged: None,
                pending_applied: VecDeque::new(),
                down_until: 0,
                down_since: None,
                cut_until: 0,
                last_reset: 0,
            })
            .collect();
        let mut sim = Sim {
            config,
            now: 0,
            rng: Rng(seed),
            faults,
            nodes,
            queue: Vec::new(),
            order: 0,
            history: Vec::new(),
            stats: Stats::default(),
            trace: std::env::var("SIM_TRACE").ok().and_then(|v| v.parse().ok()),
        };
        // The root's log is never empty (a real one holds `coffer init`'s entries), so every
        // relay installs a signed snapshot it can serve on.
        let first = sim.nodes[0]
            .log
            .append(payload(1), Timestamp::from_unix_micros(0))
            .clone();
        sim.history.push(first);
        sim
    }

    fn position(&self, seq: u64) -> Position {
        if seq == 0 {
            Position::GENESIS
        } else {
            Position::of(&self.history[usize::try_from(seq - 1).unwrap()])
        }
    }

    fn is_down(&self, n: usize) -> bool {
        self.now < self.nodes[n].down_until
    }

    fn is_cut(&self, n: usize) -> bool {
        self.now < self.nodes[n].cut_until
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        if self.trace == Some(to) && from == 0 && !matches!(msg, Msg::Heartbeat { .. }) {
            eprintln!(
                "t={} send {from}->{to} {:?}",
                self.now,
                match &msg {
                    Msg::Entries(v, _) =>
                        format!("entries {:?}", v.iter().map(|e| e.seq).collect::<Vec<_>>()),
                    m => format!("{m:?}"),
                }
            );
        }
        let trace = self.trace == Some(to) && from == 0 && !matches!(msg, Msg::Heartbeat { .. });
        if self.is_cut(from) || self.is_cut(to) || self.rng.chance(self.faults.drop) {
            if trace {
                eprintln!("t={} dropped", self.now);
            }
            return;
        }
        let copies = if self.rng.chance(self.faults.dup) {
            2
        } else {
            1
        };
        let (msg, corrupt) = if self.rng.chance(self.faults.corrupt) {
            match self.corrupt(msg.clone()) {
                Some((m, c)) => {
                    self.stats.corrupted_sent += 1;
                    (m, Some(c))
                }
                None => (msg, None),
            }
        } else {
            (msg, None)
        };
        for _ in 0..copies {
            let at = self.now + 1 + self.rng.below(self.faults.max_delay);
            self.order += 1;
            if trace {
                eprintln!("t={} queued for {at}", self.now);
            }
            self.queue.push(Envelope {
                at,
                order: self.order,
                from,
                to,
                msg: msg.clone(),
                corrupt,
            });
        }
    }

    /// Corrupts entries or a snapshot; `None` for messages it leaves alone.
    fn corrupt(&mut self, msg: Msg) -> Option<(Msg, u64)> {
        match msg {
            Msg::Entries(mut v, sigs) if !v.is_empty() => {
                let i = usize::try_from(self.rng.below(v.len() as u64)).unwrap();
                let seq = v[i].seq;
                match self.rng.below(6) {
                    0 => {
                        let j = usize::try_from(self.rng.below(v[i].payload.len() as u64)).unwrap();
                        v[i].payload[j] ^= 1 << self.rng.below(8);
                    }
                    1 => {
                        let j = usize::try_from(self.rng.below(32)).unwrap();
                        v[i].hash[j] ^= 1 << self.rng.below(8);
                    }
                    2 => {
                        let half = v[i].payload.len() / 2;
                        v[i].payload.truncate(half);
                    }
                    // A missing entry in the middle: a gap (at the end it would be harmless).
                    3 if i + 1 < v.len() => {
                        v.remove(i);
                    }
                    // Two entries swapped.
                    4 if i + 1 < v.len() => v.swap(i, i + 1),
                    // A Byzantine upstream: another change in place of entry i, the chain
                    // recomputed from there on so that every hash checks out.
                    5 => {
                        v[i].payload = payload(1_000_000 + seq);
                        for k in i..v.len() {
                            let prev = if k == 0 {
                                self.position(v[0].seq - 1).hash
                            } else {
                                v[k - 1].hash
                            };
                            v[k].hash = ChangeRecord::chain_hash(&prev, v[k].seq, &v[k].payload);
                        }
                    }
                    _ => v[i].payload.push(b' '),
                }
                Some((Msg::Entries(v, sigs), seq))
            }
            Msg::Snapshot(mut s) => {
                match self.rng.below(5) {
                    0 if !s.items.is_empty() => {
                        let i = usize::try_from(self.rng.below(s.items.len() as u64)).unwrap();
                        s.items[i][0] ^= 0x20;
                    }
                    1 if !s.items.is_empty() => {
                        s.items.pop();
                    }
                    2 => s.position.seq += 1,
                    // Byzantine: an item replaced and the digest recomputed (the snapshot is
                    // intact; only its signature gives it away).
                    3 if !s.items.is_empty() => {
                        let i = usize::try_from(self.rng.below(s.items.len() as u64)).unwrap();
                        s.items[i] = payload(2_000_000 + s.position.seq);
                        s.digest = Snapshot::digest_of(s.position, &s.items);
                    }
                    _ => s.digest[7] ^= 0x01,
                }
                Some((Msg::Snapshot(s), 0))
            }
            _ => None,
        }
    }

    fn chaos(&mut self) {
        let f = self.faults;
        let n = self.nodes.len() as u64;
        if self.rng.chance(f.cut) {
            let node = usize::try_from(self.rng.below(n)).unwrap();
            self.nodes[node].cut_until = self.now + 1_000 + self.rng.below(8_000);
        }
        if self.rng.chance(f.down) {
            // Only upstreams go down (root or relay); their state survives.
            let node = usize::try_from(self.rng.below(3)).unwrap();
            if !self.is_down(node) {
                self.nodes[node].down_since = Some(self.now);
            }
            self.nodes[node].down_until = self.now + 1_000 + self.rng.below(8_000);
        }
        if self.rng.chance(f.restart) {
            // A crash and restart of a non-root node: unconfirmed applies are forgotten, the
            // follower resumes from what its durable log holds.
            let node = 1 + usize::try_from(self.rng.below(n - 1)).unwrap();
            let now = self.now;
            let nd = &mut self.nodes[node];
            nd.pending_applied.clear();
            nd.follower = Some(if nd.installed || nd.log.head().seq > 0 {
                Follower::resume(nd.upstreams.clone(), self.config, now, nd.log.head())
                    .unwrap()
                    .with_cluster_id(CLUSTER)
            } else {
                Follower::new(nd.upstreams.clone(), self.config, now).unwrap()
            });
            nd.last_reset = now;
            self.stats.restarts += 1;
        }
        if self.rng.chance(f.compact) {
            let node = usize::try_from(self.rng.below(3)).unwrap();
            self.nodes[node].log.compact();
        }
    }

    fn step(&mut self, chaos: bool) {
        self.now += STEP_MS;
        let now = self.now;
        for n in 0..self.nodes.len() {
            if self.nodes[n].down_until <= now {
                self.nodes[n].down_since = None;
            }
        }
        if chaos {
            self.chaos();
            if !self.is_down(0) && self.rng.chance(self.faults.write) {
                let i = self.history.len() as u64 + 1;
                let rec = self.nodes[0]
                    .log
                    .append(
                        payload(i),
                        Timestamp::from_unix_micros(i64::try_from(now).unwrap() * 1000),
                    )
                    .clone();
                self.history.push(rec);
            }
        }

        // Deliver what is due, in delivery order.
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            if self.queue[i].at <= now {
                due.push(self.queue.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|e| (e.at, e.order));
        for env in due {
            self.deliver(env);
        }

        // Durability confirmations.
        for n in 1..self.nodes.len() {
            while let Some(&(at, seq)) = self.nodes[n].pending_applied.front() {
                if at > now {
                    break;
                }
                self.nodes[n].pending_applied.pop_front();
                self.feed(n, Input::Applied { seq });
            }
        }

        if now.is_multiple_of(TICK_MS) {
            for n in 1..self.nodes.len() {
                if !self.is_down(n) {
                    self.feed(n, Input::Tick);
                }
            }
        }
        if now.is_multiple_of(HEARTBEAT_MS) {
            for up in 0..3 {
                if self.is_down(up) {
                    continue;
                }
                let origin = match &self.nodes[up].follower {
                    None => Some(now),
                    Some(f) => f.freshest_origin_ms(),
                };
                let Some(origin) = origin else { continue };
                let head = self.nodes[up].log.head().seq;
                let freshness = match &self.nodes[up].follower {
                    None => self.nodes[up].log.freshness(now),
                    Some(f) => f.latest_freshness(),
                };
                for down in 0..self.nodes.len() {
                    if self.nodes[down].upstreams.contains(&up) {
                        self.send(
                            up,
                            down,
                            Msg::Heartbeat {
                                head,
                                origin,
                                freshness,
                            },
                        );
                    }
                }
            }
        }
        self.check(chaos);
    }

    fn deliver(&mut self, env: Envelope) {
        let (from, to) = (env.from, env.to);
        if self.trace == Some(to) && from == 0 && !matches!(env.msg, Msg::Heartbeat { .. }) {
            eprintln!("t={} deliver {from}->{to} {:?}", self.now, env.msg);
        }
        if self.is_cut(to) || self.is_cut(from) {
            return;
        }
        if self.is_down(to) {
            if matches!(env.msg, Msg::Fetch { .. } | Msg::FetchSnapshot) {
                // Connection refused: the requester learns at once, not subject to loss.
                self.order += 1;
                let at = self.now + 1 + self.rng.below(20);
                self.queue.push(Envelope {
                    at,
                    order: self.order,
                    from: to,
                    to: from,
                    msg: Msg::Failed,
                    corrupt: None,
                });
            }
            return;
        }
        let input = match env.msg {
            Msg::Fetch { after } => {
                let reply = match self.nodes[to].log.feed_after(after, BATCH) {
                    Ok((entries, sigs)) => Msg::Entries(entries, sigs),
                    Err(_) => Msg::NeedSnapshot,
                };
                self.send(to, from, reply);
                return;
            }
            Msg::FetchSnapshot => {
                let snap = self.nodes[to].log.snapshot_at(self.now);
                if snap.signature.is_none() {
                    // A relay that has not installed the root's snapshot yet has none to
                    // serve (the real one answers 503); the request is sent again.
                    return;
                }
                self.send(to, from, Msg::Snapshot(snap));
                return;
            }
            Msg::Entries(entries, signatures) => Input::Entries {
                from,
                entries,
                signatures,
            },
            Msg::Snapshot(snapshot) if to % 2 == 1 => {
                let input = Input::StagedSnapshot {
                    from,
                    position: snapshot.position,
                    intact: snapshot.verify(),
                    seal: SnapshotSeal {
                        cluster_id: snapshot.cluster_id,
                        count: snapshot.items.len() as u64,
                        digest: snapshot.digest,
                        origin_ms: snapshot.origin_ms,
                        signature: snapshot.signature,
                    },
                };
                self.nodes[to].staged = Some(snapshot);
                input
            }
            Msg::Snapshot(snapshot) => Input::Snapshot { from, snapshot },
            Msg::NeedSnapshot => Input::NeedSnapshot { from },
            Msg::Heartbeat {
                head,
                origin,
                freshness,
            } => {
                let beat = Input::Heartbeat {
                    from,
                    head_seq: head,
                    origin_ms: origin,
                };
                match freshness {
                    Some(statement) => {
                        if self.nodes[to].follower.is_some() {
                            self.feed(to, beat);
                        }
                        Input::Freshness { from, statement }
                    }
                    None => beat,
                }
            }
            Msg::Failed => Input::Failed {
                from,
                retry_after_ms: None,
            },
        };
        let Some(f) = &self.nodes[to].follower else {
            return;
        };
        // Must this delivery raise an alarm?
        let verified = f.verified().seq;
        let current = *f.current_upstream() == from;
        let expect_alarm = match (&input, env.corrupt) {
            (Input::Entries { entries, .. }, Some(cseq)) => {
                current
                    && f.phase() == Phase::Following
                    && entries.iter().find(|e| e.seq > verified).map(|e| e.seq)
                        == Some(verified + 1)
                    && cseq > verified
            }
            (Input::Snapshot { .. } | Input::StagedSnapshot { .. }, Some(_)) => {
                current && f.phase() != Phase::Following
            }
            _ => false,
        };
        let alarmed = self.feed(to, input);
        if expect_alarm {
            self.stats.expected_alarms += 1;
            assert!(
                alarmed,
                "t={} node {to}: corrupted delivery from {from} raised no alarm",
                self.now
            );
        }
    }

    /// Feeds one input to node `n`'s follower and carries out its outputs; returns whether
    /// it raised an alarm.
    fn feed(&mut self, n: usize, input: Input<usize>) -> bool {
        let now = self.now;
        let trace = self.trace == Some(n);
        if trace {
            let f = self.nodes[n].follower.as_ref().unwrap();
            let shown = match &input {
                Input::Entries { from, entries, .. } => format!(
                    "Entries from {from}: {:?}",
                    entries.iter().map(|e| e.seq).collect::<Vec<_>>()
                ),
                Input::Snapshot { from, snapshot } => {
                    format!("Snapshot from {from} at {}", snapshot.position.seq)
                }
                other => format!("{other:?}"),
            };
            eprintln!(
                "t={now} n{n} {:?} v={} cur={} <- {shown}",
                f.phase(),
                f.verified().seq,
                f.current_upstream()
            );
        }
        let outs = self.nodes[n]
            .follower
            .as_mut()
            .expect("not the root")
            .handle(now, input);
        let mut alarmed = false;
        for out in outs {
            if trace {
                match &out {
                    Output::Apply { entries: v, .. } => eprintln!(
                        "   -> Apply {:?}",
                        v.iter().map(|e| e.seq).collect::<Vec<_>>()
                    ),
                    Output::InstallSnapshot(s) => eprintln!("   -> Install {}", s.position.seq),
                    o => eprintln!("   -> {o:?}"),
                }
            }
            match out {
                Output::Apply {
                    entries,
                    signatures,
                } => {
                    for e in &entries {
                        let want = &self.history[usize::try_from(e.seq - 1).unwrap()];
                        assert_eq!(
                            e, want,
                            "t={now} node {n} applied an entry not in the root's log"
                        );
                    }
                    let last = entries.last().expect("never empty").seq;
                    self.nodes[n]
                        .log
                        .extend_signed(&entries, &signatures)
                        .unwrap_or_else(|err| {
                            panic!("t={now} node {n}: apply not contiguous: {err}")
                        });
                    self.confirm(n, last);
                }
                Output::InstallStaged(pos) => {
                    let s = self.nodes[n]
                        .staged
                        .take()
                        .expect("InstallStaged answers a staged snapshot");
                    assert_eq!(s.position, pos, "node {n}: installs another snapshot");
                    self.install(n, s);
                }
                Output::InstallSnapshot(s) => self.install(n, s),
                Output::Fetch { to, after } => self.send(n, to, Msg::Fetch { after }),
                Output::FetchSnapshot { to } => self.send(n, to, Msg::FetchSnapshot),
                Output::Alarm(_) => {
                    alarmed = true;
                    self.stats.alarms += 1;
                    let f = self.nodes[n].follower.as_ref().unwrap();
                    assert_ne!(
                        f.phase(),
                        Phase::Following,
                        "node {n}: an alarm must start a resync"
                    );
                }
                Output::Switched { from, to, why } => {
                    assert!(self.nodes[n].upstreams.contains(&to) && from != to);
                    // Corruption aside, a switch is only allowed while the network is unhealthy.
                    assert!(
                        self.faults.cut + self.faults.down + self.faults.restart > 0
                            || why == SwitchReason::CorruptSnapshot,
                        "t={now} node {n} left healthy upstream {from} for {to}: {why:?}"
                    );
                    self.stats.switches += 1;
                    self.nodes[n].last_reset = now;
                }
            }
        }
        alarmed
    }

    /// Installs a snapshot the follower verified and accepted at node `n`.
    fn install(&mut self, n: usize, s: Snapshot) {
        let now = self.now;
        assert!(s.verify(), "node {n} installed an unverified snapshot");
        let seq = s.position.seq;
        assert_eq!(
            s.position,
            self.position(seq),
            "node {n}: snapshot off the root's log"
        );
        let want: Vec<Vec<u8>> = self.history[..usize::try_from(seq).unwrap()]
            .iter()
            .map(|e| e.payload.clone())
            .collect();
        assert_eq!(
            s.items, want,
            "node {n}: snapshot content differs from the root's"
        );
        assert!(
            seq > self.nodes[n].log.head().seq,
            "t={now} node {n}: snapshot at {seq} would roll back {}",
            self.nodes[n].log.head().seq
        );
        self.nodes[n].log = Log::from_snapshot(&s).expect("verified");
        self.nodes[n].installed = true;
        self.stats.snapshots_installed += 1;
        self.confirm(n, seq);
    }

    fn confirm(&mut self, n: usize, seq: u64) {
        let last = self.nodes[n].pending_applied.back().map_or(0, |p| p.0);
        let at = (self.now + self.rng.below(60)).max(last);
        self.nodes[n].pending_applied.push_back((at, seq));
    }

    fn check(&self, chaos: bool) {
        for (n, node) in self.nodes.iter().enumerate().skip(1) {
            let head = node.log.head();
            assert_eq!(
                head,
                self.position(head.seq),
                "node {n}: log is not a prefix of the root's"
            );
            let f = node.follower.as_ref().unwrap();
            let applied = f.applied();
            assert!(
                applied.seq <= head.seq,
                "node {n}: applied beyond its durable log"
            );
            assert_eq!(
                applied,
                self.position(applied.seq),
                "node {n}: applied position off the root's log"
            );
            if chaos {
                // Failover: a down current upstream is left within staleness (plus delays),
                // unless every upstream is down.
                let cur = *f.current_upstream();
                if let Some(since) = self.nodes[cur].down_since
                    && node.upstreams.iter().any(|&u| !self.is_down(u))
                {
                    let from = since.max(node.last_reset);
                    assert!(
                        self.now - from <= CONFIG.staleness_ms + 1_000,
                        "t={} node {n} still on upstream {cur}, down since {since}",
                        self.now
                    );
                }
            }
        }
    }

    fn converged(&self) -> bool {
        let head = self.nodes[0].log.head();
        self.nodes.iter().skip(1).all(|n| {
            n.log.head() == head && n.follower.as_ref().is_some_and(|f| f.applied() == head)
        })
    }

    /// Runs `chaos_ms` of faults and writes, then heals and waits for convergence.
    fn run(&mut self, chaos_ms: u64, heal_bound_ms: u64) {
        while self.now < chaos_ms {
            self.step(true);
        }
        for node in &mut self.nodes {
            node.cut_until = 0;
            node.down_until = 0;
            node.down_since = None;
        }
        self.faults.corrupt = 0;
        let healed = self.now;
        while !self.converged() {
            assert!(
                self.now - healed <= heal_bound_ms,
                "not converged {heal_bound_ms} ms after healing: root at {}, nodes at {:?}",
                self.nodes[0].log.head().seq,
                self.nodes
                    .iter()
                    .skip(1)
                    .map(|n| (
                        n.log.head().seq,
                        n.follower
                            .as_ref()
                            .map(|f| (f.phase(), *f.current_upstream()))
                    ))
                    .collect::<Vec<_>>()
            );
            self.step(false);
        }
        self.stats.converge_ms = self.now - healed;
    }
}

/// Bound on convergence after healing: a stale relay is noticed and left within a staleness
/// period or two; catching up takes a few round trips.
const HEAL_BOUND_MS: u64 = 4 * CONFIG.staleness_ms + 5_000;

#[test]
fn chaos_many_seeds() {
    let mut total = Stats::default();
    for seed in 0..200 {
        let mut sim = Sim::new(seed, CHAOS);
        sim.run(60_000, HEAL_BOUND_MS);
        assert!(!sim.history.is_empty());
        total.alarms += sim.stats.alarms;
        total.expected_alarms += sim.stats.expected_alarms;
        total.switches += sim.stats.switches;
        total.corrupted_sent += sim.stats.corrupted_sent;
        total.snapshots_installed += sim.stats.snapshots_installed;
        total.restarts += sim.stats.restarts;
        total.converge_ms = total.converge_ms.max(sim.stats.converge_ms);
    }
    eprintln!("chaos totals over 200 seeds: {total:?}");
    // The faults actually happened and were handled, so the properties were exercised.
    assert!(total.expected_alarms > 100, "{total:?}");
    assert!(total.alarms >= total.expected_alarms);
    assert!(total.switches > 100, "{total:?}");
    assert!(total.restarts > 50, "{total:?}");
    assert!(total.snapshots_installed > 200 * 7, "{total:?}");
}

#[test]
fn lossy_but_healthy_network_never_switches() {
    let mut total = Stats::default();
    for seed in 1_000..1_100 {
        let mut sim = Sim::new(seed, LOSSY);
        sim.run(60_000, HEAL_BOUND_MS);
        // `feed` already refuses any switch here; also no alarm without corruption.
        assert_eq!(sim.stats.switches, 0);
        assert_eq!(sim.stats.alarms, 0, "seed {seed}: alarm without corruption");
        total.converge_ms = total.converge_ms.max(sim.stats.converge_ms);
        total.snapshots_installed += sim.stats.snapshots_installed;
    }
    eprintln!("lossy totals: {total:?}");
    // Healthy and lossy: catching up is a matter of round trips, well within a staleness.
    assert!(total.converge_ms < CONFIG.staleness_ms, "{total:?}");
}

#[test]
fn simulation_is_deterministic() {
    let run = |seed| {
        let mut sim = Sim::new(seed, CHAOS);
        sim.run(20_000, HEAL_BOUND_MS);
        (
            sim.history.len(),
            sim.stats.alarms,
            sim.stats.switches,
            sim.now,
        )
    };
    assert_eq!(run(7), run(7));
}
