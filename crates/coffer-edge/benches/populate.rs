//! Fills a control plane with secrets through the public API, as fast as it takes them: bulk
//! creates of `coffer_core::MAX_BATCH` (1,000) secrets per request, several requests in
//! flight (the server commits concurrent requests together, one fsync per group). Used by
//! `scripts/bench-edge-cold-start` to make the snapshot an edge bootstraps from.
//!
//! Run: `COFFER_API_URL=http://127.0.0.1:PORT COFFER_API_TOKEN=... COFFER_ACCOUNT_ID=... \
//!   cargo bench -p coffer-edge --bench populate -- N [CONCURRENCY]` (CONCURRENCY defaults to 4).
//! The account's quota must allow N more secrets (`coffer server --secrets-quota`). Creates one
//! store, `populate-N`, holding secrets `s-0000000` … with 32-byte values, scope `workers`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use coffer_client::{Client, CreateSecret, SecretValue};

const BATCH: usize = coffer_core::MAX_BATCH;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("set {name}"))
}

fn main() {
    let nums: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse().expect("usage: populate N [CONCURRENCY]"))
        .collect();
    let n = *nums.first().expect("usage: populate N [CONCURRENCY]");
    let concurrency = nums.get(1).copied().unwrap_or(4).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let client = Client::builder(
            &env("COFFER_API_URL"),
            &env("COFFER_API_TOKEN"),
            &env("COFFER_ACCOUNT_ID"),
        )
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .expect("client");
        let store = client
            .create_store(&format!("populate-{n}"))
            .await
            .expect("create store")
            .id;
        let batches = n.div_ceil(BATCH);
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let client = client.clone();
            let store = store.clone();
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= batches {
                        return;
                    }
                    let items = (b * BATCH..((b + 1) * BATCH).min(n))
                        .map(|i| CreateSecret {
                            name: format!("s-{i:07}"),
                            value: SecretValue::new(format!("populated-{i:07}-0123456789abcdef")),
                            scopes: vec!["workers".into()],
                            comment: None,
                        })
                        .collect();
                    client
                        .create_secrets(&store, items)
                        .await
                        .unwrap_or_else(|e| panic!("batch {b}: {e}"));
                    if (b + 1).is_multiple_of(100) {
                        eprintln!(
                            "populate: ~{} secrets, {:.0} s",
                            (b + 1) * BATCH,
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("worker");
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "populated {n} secrets in {secs:.1} s ({:.0}/s; {BATCH} per request, {concurrency} in flight)",
            n as f64 / secs
        );
    });
}
