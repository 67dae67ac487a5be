//! Propagation (issue 5): how long after a write is acknowledged every edge serves the new value,
//! with the edges attached to the control plane or below one or more tiers of relays (issue 14).
//!
//! Run: `cargo bench -p coffer-edge --bench propagation -- EDGES WRITES [RELAYS [TIERS]]`
//! (defaults 10, 200, 0 and 1). With RELAYS 0 every edge follows the control plane. Otherwise
//! each of TIERS tiers has RELAYS relays (edges with `serve_feed`): the first tier's follow the
//! control plane, relay `j` of each further tier follows relay `j % RELAYS` of the tier above,
//! and edge `i` follows relay `i % RELAYS` of the last tier (round robin).
//!
//! Everything runs in this one process, on one multi-threaded tokio runtime: a control plane
//! (a real data dir, `coffer_server::app` served on 127.0.0.1:0, SQLite with fsync per commit),
//! the relays and EDGES edges (`coffer_edge::run`, each a node of its own with its own node
//! token, data dir, SQLite replica and HTTP listener on 127.0.0.1:0, following its upstream's
//! feed over loopback HTTP exactly as the `coffer edge` process does, the control plane's feed
//! key pinned from `coffer node create`'s answer as `--feed-key` does), and the writer (a
//! `coffer_client::Client`). Nothing is logged unless `RUST_LOG` is set (a filter, as
//! `RUST_LOG=error`: then to stderr, every node's lines mixed, and the figures pay for it). The
//! tiers start in order, each once the one above serves the bound value.
//!
//! Each write PATCHes the value of one secret bound to a service and waits for the answer; `t0`
//! is taken right after the acknowledgement, and the write's position in the change log is the
//! control plane's committed head at that moment. A watcher task per node (relay or edge)
//! timestamps every change of its applied seq (`EdgeStatus::subscribe_applied`); the node has
//! the write from the first timestamp at which its applied seq is at least the write's
//! position. The figure per write is the time from `t0` until the LAST edge has it (0 if every
//! edge had it before the acknowledgement reached the writer), and the same for the relays
//! (per tier with more than one). Writes are sequential: the next one starts when every node
//! has the previous one, after a pseudo-random pause of 0-20 ms.
//!
//! Applied means served: the node's runtime cache is keyed on its applied head. Every 10th
//! write (after the timed wait, not timed) the binding is read over HTTP from every edge and
//! every relay with the service token, and the value must be the one just written.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coffer_client::{
    Client, CreateSecret, DeployService, SecretBinding, SecretValue, UpdateSecret,
};
use coffer_core::Limits;
use coffer_edge::{EdgeOptions, EdgeStatus, FeedKey};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

const BINDING: &str = "PROPAGATED";
const WARMUP: usize = 10;
const VERIFY_EVERY: usize = 10;
const USAGE: &str = "usage: propagation [EDGES [WRITES [RELAYS [TIERS]]]]";

/// When a node's applied seq changed, as seen by its watcher task.
type AppliedLog = Arc<Mutex<Vec<(u64, Instant)>>>;

/// A relay or an edge.
struct Node {
    name: String,
    addr: SocketAddr,
    status: Arc<EdgeStatus>,
    applied: AppliedLog,
    /// The highest seq the watcher task has recorded in `applied`.
    recorded: watch::Receiver<u64>,
}

/// The shape of the fleet, from the command line.
#[derive(Clone, Copy)]
struct Shape {
    edges: usize,
    writes: usize,
    /// Relays per tier; 0: the edges follow the control plane.
    relays: usize,
    tiers: usize,
}

impl Shape {
    fn from_args() -> Shape {
        let nums: Vec<usize> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .map(|a| a.parse().expect(USAGE))
            .collect();
        assert!(nums.len() <= 4, "{USAGE}");
        let shape = Shape {
            edges: nums.first().copied().unwrap_or(10),
            writes: nums.get(1).copied().unwrap_or(200),
            relays: nums.get(2).copied().unwrap_or(0),
            tiers: nums.get(3).copied().unwrap_or(1),
        };
        assert!(
            shape.edges > 0 && shape.writes > 0,
            "{USAGE}: EDGES and WRITES at least 1"
        );
        assert!(shape.tiers > 0, "{USAGE}: TIERS at least 1");
        assert!(
            shape.relays > 0 || shape.tiers == 1,
            "{USAGE}: TIERS needs RELAYS at least 1"
        );
        shape
    }

    fn describe(&self) -> String {
        match (self.relays, self.tiers) {
            (0, _) => format!("{} edges attached to the control plane", self.edges),
            (r, 1) => format!("{} edges below {r} relay(s)", self.edges),
            (r, t) => format!("{} edges below {t} tiers of {r} relay(s)", self.edges),
        }
    }
}

/// What the control plane set up: the writer's view of it, and what nodes need.
struct World {
    url: String,
    client: Client,
    service_token: String,
    stop: watch::Receiver<bool>,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "{name:<36} n={:<6} mean={mean:>7.2} p50={:>7.2} p90={:>7.2} p99={:>7.2} max={:>7.2} ms",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.9),
        pct(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN),
    );
}

/// The first time this node's applied seq was at least `seq`.
fn reached(log: &AppliedLog, seq: u64) -> Option<Instant> {
    // Seqs only grow along the log: a binary search.
    let log = log.lock().unwrap();
    let i = log.partition_point(|(s, _)| *s < seq);
    log.get(i).map(|(_, t)| *t)
}

async fn read_binding(http: &reqwest::Client, addr: SocketAddr, token: &str) -> (u16, String) {
    let res = http
        .get(format!("http://{addr}/runtime/v1/bindings/{BINDING}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("runtime read");
    let status = res.status().as_u16();
    (status, res.text().await.expect("runtime read body"))
}

fn value_of(i: usize) -> String {
    format!("propagated-value-{i:06}-0123456789abcdef")
}

/// CPU time this process used so far, all threads (user + system), from `/proc/self/stat`;
/// `None` where that file is not there or not as Linux writes it.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields 14 and 15 (utime, stime), counted from the state after the command's `)`.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ').skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // In clock ticks: 100 a second on Linux (`getconf CLK_TCK`).
    Some(Duration::from_millis((utime + stime) * 10))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn main() {
    let shape = Shape::from_args();
    if let Ok(filter) = std::env::var("RUST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(shape));
}

/// Registers a node, starts it below `upstream` (a relay if `serve_feed`) and a watcher task
/// recording its applied seq.
async fn start_node(
    world: &World,
    dir: &Path,
    name: String,
    upstream: &str,
    serve_feed: bool,
) -> (JoinHandle<()>, Node) {
    let node = world.client.create_node(&name).await.expect("node");
    let feed_key = node
        .feed_public_key
        .as_deref()
        .map(|k| FeedKey::parse(k).expect("the control plane's feed key"));
    let opts = EdgeOptions {
        upstreams: vec![upstream.to_owned()],
        node_token: Zeroizing::new(node.node_token.expose_secret().to_owned()),
        data_dir: dir.join(&name),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        insecure_http: false,
        insecure_http_upstream: false,
        ca_cert: None,
        feed_key,
        serve_feed,
        staleness: EdgeOptions::DEFAULT_STALENESS,
        long_poll: EdgeOptions::DEFAULT_LONG_POLL,
        max_staleness: None,
        snapshot_bounds: coffer_edge::SnapshotBounds::default(),
        trusted_proxies: Default::default(),
        http: Default::default(),
        snapshots: Default::default(),
        runtime_rate: None,
        reload: Default::default(),
        metrics_listen: None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stop = world.stop.clone();
    let handle = tokio::spawn(async move {
        if let Err(e) = coffer_edge::run(
            opts,
            move |addr, status| {
                let _ = tx.send((addr, status));
            },
            stopped(stop),
        )
        .await
        {
            eprintln!("a node stopped: {e}");
        }
    });
    let (addr, status) = rx.await.expect("node listening");
    let applied: AppliedLog = Arc::new(Mutex::new(Vec::new()));
    let (recorded_tx, recorded) = watch::channel(0u64);
    {
        let applied = applied.clone();
        let mut rx = status.subscribe_applied();
        tokio::spawn(async move {
            loop {
                let seq = *rx.borrow_and_update();
                applied.lock().unwrap().push((seq, Instant::now()));
                recorded_tx.send_replace(seq);
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    let node = Node {
        name,
        addr,
        status,
        applied,
        recorded,
    };
    (handle, node)
}

/// What a node says of itself at `/healthz` (phase, upstream, last error or alarm: no secrets).
async fn health(http: &reqwest::Client, node: &Node) -> String {
    match http
        .get(format!("http://{}/healthz", node.addr))
        .send()
        .await
    {
        Ok(res) => res.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    }
}

/// Waits until every node is caught up and its runtime API answers with the first value (it is
/// built just after the first sync). One that does not within 120 s stops the bench, with its
/// health and that of every node in `above` (the relays).
async fn wait_ready(http: &reqwest::Client, nodes: &[Node], above: &[Vec<Node>], token: &str) {
    for node in nodes {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if node.status.is_ready() {
                let (status, body) = read_binding(http, node.addr, token).await;
                if status == 200 && body == value_of(0) {
                    break;
                }
            }
            if Instant::now() >= deadline {
                let mut said = format!(
                    "{} ({}): {}",
                    node.name,
                    node.addr,
                    health(http, node).await
                );
                for relay in above.iter().flatten() {
                    let h = health(http, relay).await;
                    said.push_str(&format!("\n{} ({}): {h}", relay.name, relay.addr));
                }
                panic!("never got ready: {said}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until every node has applied `seq`, and says when each first had it (no polling: the
/// bench takes no CPU from the nodes while it waits).
async fn times_to(nodes: &[Node], seq: u64, deadline: Instant, write: usize) -> Vec<Instant> {
    let mut times = Vec::with_capacity(nodes.len());
    for node in nodes {
        let mut rx = node.recorded.clone();
        tokio::time::timeout_at(deadline.into(), rx.wait_for(|s| *s >= seq))
            .await
            .unwrap_or_else(|_| panic!("write {write} (seq {seq}) did not reach {}", node.name))
            .expect("watcher stopped");
        times.push(reached(&node.applied, seq).expect("recorded"));
    }
    times
}

/// Reads the binding from every node: each must serve `value`.
async fn verify(http: &reqwest::Client, nodes: &[Node], token: &str, value: &str, seq: u64) {
    for node in nodes {
        let (status, body) = read_binding(http, node.addr, token).await;
        assert_eq!(status, 200, "{} answered {status}: {body}", node.name);
        assert_eq!(
            body, value,
            "{} applied seq {seq} but served an older value",
            node.name
        );
    }
}

/// Per write: from `t0` until the last of `times` (0 if before).
#[derive(Default)]
struct Series {
    last: Vec<f64>,
    each: Vec<f64>,
}

impl Series {
    fn push(&mut self, t0: Instant, times: &[Instant]) -> Instant {
        let ms = |t: Instant| t.saturating_duration_since(t0).as_secs_f64() * 1000.0;
        let last = times.iter().copied().max().expect("at least one node");
        self.last.push(ms(last));
        self.each.extend(times.iter().map(|t| ms(*t)));
        last
    }
}

async fn bench(shape: Shape) {
    let Shape {
        edges: edges_n,
        writes,
        relays: relays_n,
        tiers,
    } = shape;
    let dir = tempfile::tempdir().expect("tempdir");
    let cp_dir = dir.path().join("cp");
    let init = coffer_server::init_data_dir(&cp_dir).await.expect("init");
    let data = coffer_server::open_data_dir(&cp_dir, Limits::default())
        .await
        .expect("open data dir");
    let coffer = Arc::new(data.coffer);
    coffer
        .storage()
        .ensure_cluster_id()
        .await
        .expect("cluster id");
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let cp = tokio::spawn(coffer_server::serve_app(
        coffer_server::app(coffer.clone()),
        "127.0.0.1:0".parse().unwrap(),
        None,
        coffer_server::HttpLimits::default(),
        coffer_server::Reload::new(),
        move |addr| {
            let _ = addr_tx.send(addr);
        },
        stopped(stop_rx.clone()),
    ));
    let cp_addr: SocketAddr = addr_rx.await.expect("control plane ready");
    let cp_url = format!("http://{cp_addr}");
    let client = Client::new(
        &cp_url,
        init.api_token.expose_secret(),
        &init.account_id.to_string(),
    )
    .expect("client");

    let store = client.create_store("propagation").await.expect("store");
    let secret = client
        .create_secrets(
            &store.id,
            vec![CreateSecret {
                name: "propagated".into(),
                value: SecretValue::new(value_of(0)),
                scopes: vec!["workers".into()],
                comment: None,
            }],
        )
        .await
        .expect("secret")
        .remove(0);
    let deployed = client
        .deploy_service(&DeployService {
            name: "propagation".into(),
            kind: None,
            secrets_store_secrets: vec![SecretBinding {
                binding: BINDING.into(),
                store_id: store.id.clone(),
                secret_name: "propagated".into(),
            }],
            secrets_store_stores: vec![],
        })
        .await
        .expect("deploy");
    let service_token = deployed
        .service_token
        .expect("service token on first deploy")
        .expose_secret()
        .to_owned();
    let world = World {
        url: cp_url,
        client,
        service_token,
        stop: stop_rx,
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .build()
        .expect("http client");

    // The relays, tier by tier, then the edges below the last tier.
    let started = Instant::now();
    let mut handles = Vec::new();
    let mut tier_nodes: Vec<Vec<Node>> = Vec::new();
    for t in 0..if relays_n == 0 { 0 } else { tiers } {
        let mut tier = Vec::new();
        for j in 0..relays_n {
            let upstream = match tier_nodes.last() {
                None => world.url.clone(),
                Some(above) => format!("http://{}", above[j % above.len()].addr),
            };
            let name = format!("relay-{}-{j}", t + 1);
            let (h, node) = start_node(&world, dir.path(), name, &upstream, true).await;
            handles.push(h);
            tier.push(node);
        }
        wait_ready(&http, &tier, &tier_nodes, &world.service_token).await;
        tier_nodes.push(tier);
    }
    let mut edges = Vec::new();
    for i in 0..edges_n {
        let upstream = match tier_nodes.last() {
            None => world.url.clone(),
            Some(above) => format!("http://{}", above[i % above.len()].addr),
        };
        let (h, node) = start_node(&world, dir.path(), format!("edge-{i}"), &upstream, false).await;
        handles.push(h);
        edges.push(node);
    }
    wait_ready(&http, &edges, &tier_nodes, &world.service_token).await;
    let relays: Vec<Node> = tier_nodes.iter_mut().flat_map(std::mem::take).collect();
    println!(
        "{} ready in {:.2} s; {writes} timed writes after {WARMUP} warm-up ones",
        shape.describe(),
        started.elapsed().as_secs_f64()
    );

    let mut to_edges = Series::default(); // per write: ack -> last edge has it
    let mut to_relays = Series::default(); // per write: ack -> last relay has it

    // Per tier (with more than one): ack -> its last relay has it.
    let mut to_tier: Vec<Vec<f64>> = vec![Vec::new(); if tiers > 1 { tiers } else { 0 }];
    let mut from_send = Vec::new(); // per write: request sent -> last edge has it
    let mut acks = Vec::new(); // per write: request sent -> ack
    let mut ahead_of_ack = 0usize; // writes every edge had before the ack reached the writer
    let mut verified = 0usize;
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut cpu_from = None; // (process CPU, wall clock) when the first timed write starts
    for i in 1..=WARMUP + writes {
        if i == WARMUP + 1 {
            cpu_from = process_cpu().map(|cpu| (cpu, Instant::now()));
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_micros(rng % 20_000)).await;
        let value = value_of(i);
        let sent = Instant::now();
        world
            .client
            .update_secret(
                &store.id,
                &secret.id,
                UpdateSecret {
                    value: Some(SecretValue::new(value.clone())),
                    ..UpdateSecret::default()
                },
            )
            .await
            .expect("update");
        let t0 = Instant::now();
        let seq = coffer.storage().committed_head();
        let deadline = t0 + Duration::from_secs(30);
        let relay_times = times_to(&relays, seq, deadline, i).await;
        let edge_times = times_to(&edges, seq, deadline, i).await;
        if i <= WARMUP {
            continue;
        }
        let last = to_edges.push(t0, &edge_times);
        if last <= t0 {
            ahead_of_ack += 1;
        }
        from_send.push(last.saturating_duration_since(sent).as_secs_f64() * 1000.0);
        acks.push(t0.duration_since(sent).as_secs_f64() * 1000.0);
        if !relays.is_empty() {
            to_relays.push(t0, &relay_times);
        }
        for (t, series) in to_tier.iter_mut().enumerate() {
            let tier = &relay_times[t * relays_n..(t + 1) * relays_n];
            let last = tier.iter().copied().max().expect("a relay per tier");
            series.push(last.saturating_duration_since(t0).as_secs_f64() * 1000.0);
        }
        if i % VERIFY_EVERY == 0 {
            verify(&http, &relays, &world.service_token, &value, seq).await;
            verify(&http, &edges, &world.service_token, &value, seq).await;
            verified += 1;
        }
    }
    if let (Some((from, wall)), Some(to)) = (cpu_from, process_cpu()) {
        let cpu = to.saturating_sub(from).as_secs_f64();
        println!(
            "process CPU over the timed writes (every node, the control plane, the writer, the pauses and HTTP checks): {cpu:.2} s in {:.2} s, {:.2} ms per write",
            wall.elapsed().as_secs_f64(),
            cpu * 1000.0 / writes as f64
        );
    }
    println!(
        "verified: after {verified} of the writes, all {edges_n} edges and {} relays served the new value over HTTP",
        relays.len()
    );
    println!(
        "writes every edge had applied before the ack reached the writer: {ahead_of_ack} of {writes}"
    );
    summary("write: send -> ack", acks);
    summary("ack -> every edge has it", to_edges.last);
    summary("send -> every edge has it", from_send);
    summary("ack -> one edge has it (all edges)", to_edges.each);
    if !relays.is_empty() {
        summary("ack -> every relay has it", to_relays.last);
        summary("ack -> one relay has it (all relays)", to_relays.each);
    }
    for (t, series) in to_tier.into_iter().enumerate() {
        summary(&format!("ack -> every tier-{} relay has it", t + 1), series);
    }

    let _ = stop_tx.send(true);
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(15), h).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), cp).await;
    coffer.shutdown().await;
    drop(coffer);
    drop(dir);
}
