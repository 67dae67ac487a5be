//! Durable secret create and update throughput through the HTTP API on the embedded SQLite
//! store, at several concurrencies.
//!
//! Run: `cargo bench -p coffer-server --bench http_write` (add `-- --seconds 10` for longer
//! runs). The server and the load generator share this process and the machine's cores; every
//! request is a full HTTP/1.1 round trip on loopback with keep-alive, and every acknowledged
//! write has been fsynced (SQLite WAL, synchronous=FULL).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coffer_server::{ServeOptions, init_data_dir, serve};

const VALUE: &str = "bench-value-0123456789abcdef0123456789abcdef";

#[derive(Clone)]
struct Target {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Target {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let res = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = res.status();
        let json: serde_json::Value = res.json().await.expect("json body");
        assert!(status.is_success(), "{status}: {json}");
        json
    }
}

async fn run(target: &Target, concurrency: usize, seconds: f64, op: &str) -> (f64, Vec<Duration>) {
    let store = target
        .send(
            reqwest::Method::POST,
            "/stores",
            serde_json::json!({ "name": format!("{op}-{concurrency}") }),
        )
        .await["result"]["id"]
        .as_str()
        .expect("store id")
        .to_owned();
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let target = target.clone();
        let store = store.clone();
        let done = done.clone();
        let op = op.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let secret_id = if op == "update" {
                let body = serde_json::json!([{ "name": format!("s-{worker}"), "value": VALUE, "scopes": ["workers"] }]);
                let created = target.send(reqwest::Method::POST, &format!("/stores/{store}/secrets"), body).await;
                created["result"][0]["id"].as_str().expect("secret id").to_owned()
            } else {
                String::new()
            };
            let mut i = 0u64;
            while Instant::now() < deadline {
                let start = Instant::now();
                if op == "create" {
                    let body = serde_json::json!([{ "name": format!("w{worker}-{i}"), "value": VALUE, "scopes": ["workers"] }]);
                    target.send(reqwest::Method::POST, &format!("/stores/{store}/secrets"), body).await;
                } else {
                    let body = serde_json::json!({ "value": format!("{VALUE}-{i}") });
                    target.send(reqwest::Method::PATCH, &format!("/stores/{store}/secrets/{secret_id}"), body).await;
                }
                latencies.push(start.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            latencies
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    let ops = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (ops, all)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let mut seconds = 5.0;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--seconds") {
        seconds = args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(seconds);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let init = init_data_dir(&data).await.expect("init");
        let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        let opts = ServeOptions {
            data_dir: data,
            listen: "127.0.0.1:0".parse().expect("addr"),
            tls: None,
            insecure_http: false,
            dashboard_secure_cookies: Default::default(),
            secrets_quota: 10_000_000,
            max_stores: 1000,
            feed_retention: coffer_server::ServeOptions::DEFAULT_FEED_RETENTION,
            trusted_proxies: Default::default(),
            http: Default::default(),
            snapshots: Default::default(),
            runtime_rate: None,
            keys: Default::default(),
            reload: Default::default(),
            metrics_listen: None,
        };
        tokio::spawn(serve(
            opts,
            move |addr| {
                let _ = tx.send(addr);
            },
            std::future::pending(),
        ));
        let addr = rx.await.expect("server ready");
        let target = Target {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(128)
                .build()
                .expect("client"),
            base: format!(
                "http://{addr}/client/v4/accounts/{}/secrets_store",
                init.account_id
            ),
            token: init.api_token.expose_secret().to_owned(),
        };
        println!("op      conc    ops/s   p50 ms   p99 ms   ({seconds} s each)");
        for op in ["create", "update"] {
            for conc in [1, 16, 64] {
                let (ops, lat) = run(&target, conc, seconds, op).await;
                println!(
                    "{op:<7} {conc:>4} {ops:>8.0} {:>8.2} {:>8.2}",
                    pct(&lat, 0.5),
                    pct(&lat, 0.99)
                );
            }
        }
    });
}
