//! Propagation (issue 5): how long after a write is acknowledged every edge serves the new value.
//!
//! Run: `cargo bench -p coffer-edge --bench propagation -- EDGES WRITES` (defaults 10 and 200).
//!
//! Everything runs in this one process, on one multi-threaded tokio runtime: a control plane
//! (a real data dir, `coffer_server::app` served on 127.0.0.1:0, SQLite with fsync per commit),
//! EDGES in-process edges (`coffer_edge::run`, each with its own data dir, SQLite replica and
//! HTTP listener on 127.0.0.1:0, following the control plane's feed over loopback HTTP exactly
//! as the `coffer edge` process does), and the writer (a `coffer_client::Client`). No tracing
//! subscriber is installed, so nothing is logged.
//!
//! Each write PATCHes the value of one secret bound to a service and waits for the answer; `t0`
//! is taken right after the acknowledgement, and the write's position in the change log is the
//! control plane's committed head at that moment. A watcher task per edge timestamps every
//! change of the edge's applied seq (`EdgeStatus::subscribe_applied`); the edge has the write
//! from the first timestamp at which its applied seq is at least the write's position. The
//! figure per write is the time from `t0` until the LAST edge has it (0 if every edge had it
//! before the acknowledgement reached the writer). Writes are sequential: the next one starts
//! when every edge has the previous one, after a pseudo-random pause of 0-20 ms.
//!
//! Applied means served: the edge's runtime cache is keyed on its applied head. Every 10th
//! write (after the timed wait, not timed) the binding is read over HTTP from every edge with
//! the service token, and the value must be the one just written.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coffer_client::{
    Client, CreateSecret, DeployService, SecretBinding, SecretValue, UpdateSecret,
};
use coffer_core::Limits;
use coffer_edge::{EdgeOptions, EdgeStatus};
use zeroize::Zeroizing;

const BINDING: &str = "PROPAGATED";
const WARMUP: usize = 10;
const VERIFY_EVERY: usize = 10;

/// When an edge's applied seq changed, as seen by its watcher task.
type AppliedLog = Arc<Mutex<Vec<(u64, Instant)>>>;

struct Edge {
    addr: SocketAddr,
    status: Arc<EdgeStatus>,
    applied: AppliedLog,
    /// The highest seq the watcher task has recorded in `applied`.
    recorded: tokio::sync::watch::Receiver<u64>,
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
        "{name:<34} n={:<6} mean={mean:>7.2} p50={:>7.2} p90={:>7.2} p99={:>7.2} max={:>7.2} ms",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.9),
        pct(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN),
    );
}

/// The first time this edge's applied seq was at least `seq`.
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

fn main() {
    let nums: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse().expect("usage: propagation [EDGES [WRITES]]"))
        .collect();
    let edges_n = nums.first().copied().unwrap_or(10);
    let writes = nums.get(1).copied().unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(edges_n, writes));
}

async fn bench(edges_n: usize, writes: usize) {
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
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

    // The edges.
    let started = Instant::now();
    let mut handles = Vec::new();
    let mut edges = Vec::new();
    for i in 0..edges_n {
        let node = client
            .create_node(&format!("edge-{i}"))
            .await
            .expect("node");
        let opts = EdgeOptions {
            upstreams: vec![cp_url.clone()],
            node_token: Zeroizing::new(node.node_token.expose_secret().to_owned()),
            data_dir: dir.path().join(format!("edge-{i}")),
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            insecure_http: false,
            insecure_http_upstream: false,
            ca_cert: None,
            feed_key: None,
            serve_feed: false,
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
        handles.push(tokio::spawn(coffer_edge::run(
            opts,
            move |addr, status| {
                let _ = tx.send((addr, status));
            },
            stopped(stop_rx.clone()),
        )));
        let (addr, status) = rx.await.expect("edge listening");
        let applied: AppliedLog = Arc::new(Mutex::new(Vec::new()));
        let (recorded_tx, recorded) = tokio::sync::watch::channel(0u64);
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
        edges.push(Edge {
            addr,
            status,
            applied,
            recorded,
        });
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .build()
        .expect("http client");
    // Ready: caught up, and the runtime API answers (it is built just after the first sync).
    for edge in &edges {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if edge.status.is_ready() {
                let (status, body) = read_binding(&http, edge.addr, &service_token).await;
                if status == 200 && body == value_of(0) {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "edge {} never got ready",
                edge.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!(
        "{edges_n} in-process edges ready in {:.2} s; {writes} timed writes after {WARMUP} warm-up ones",
        started.elapsed().as_secs_f64()
    );

    let mut last_edge = Vec::new(); // per write: ack -> last edge has it
    let mut from_send = Vec::new(); // per write: request sent -> last edge has it
    let mut per_edge = Vec::new(); // per write and edge: ack -> that edge has it
    let mut acks = Vec::new(); // per write: request sent -> ack
    let mut ahead_of_ack = 0usize; // writes every edge had before the ack reached the writer
    let mut verified = 0usize;
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 1..=WARMUP + writes {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_micros(rng % 20_000)).await;
        let value = value_of(i);
        let sent = Instant::now();
        client
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
        let mut times = Vec::with_capacity(edges.len());
        for edge in &edges {
            // Waits for the watcher task to have recorded the edge reaching `seq` (no polling:
            // the bench takes no CPU from the edges while it waits).
            let mut rx = edge.recorded.clone();
            tokio::time::timeout_at(deadline.into(), rx.wait_for(|s| *s >= seq))
                .await
                .unwrap_or_else(|_| {
                    panic!("write {i} (seq {seq}) did not reach edge {}", edge.addr)
                })
                .expect("watcher stopped");
            times.push(reached(&edge.applied, seq).expect("recorded"));
        }
        if i <= WARMUP {
            continue;
        }
        let ms = |t: Instant| t.saturating_duration_since(t0).as_secs_f64() * 1000.0;
        let last = times.iter().copied().max().expect("at least one edge");
        if last <= t0 {
            ahead_of_ack += 1;
        }
        last_edge.push(ms(last));
        from_send.push(last.saturating_duration_since(sent).as_secs_f64() * 1000.0);
        acks.push(t0.duration_since(sent).as_secs_f64() * 1000.0);
        per_edge.extend(times.iter().map(|t| ms(*t)));
        if i % VERIFY_EVERY == 0 {
            for edge in &edges {
                let (status, body) = read_binding(&http, edge.addr, &service_token).await;
                assert_eq!(status, 200, "edge {} answered {status}: {body}", edge.addr);
                assert_eq!(
                    body, value,
                    "edge {} applied seq {seq} but served an older value",
                    edge.addr
                );
            }
            verified += 1;
        }
    }
    println!(
        "verified: after {verified} of the writes, all {edges_n} edges served the new value over HTTP"
    );
    println!(
        "writes every edge had applied before the ack reached the writer: {ahead_of_ack} of {writes}"
    );
    summary("write: send -> ack", acks);
    summary("ack -> every edge has it", last_edge);
    summary("send -> every edge has it", from_send);
    summary("ack -> one edge has it (all edges)", per_edge);

    let _ = stop_tx.send(true);
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(15), h).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), cp).await;
    coffer.shutdown().await;
    drop(coffer);
    drop(dir);
}
