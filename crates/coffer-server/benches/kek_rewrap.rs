//! KEK rotation: the time to rewrap 10,000 DEKs (file KEK, default pacing: 256 keys a batch,
//! 20 ms apart), and runtime reads while a rotation runs against reads without one.
//!
//! `cargo bench -p coffer-server --bench kek_rewrap [-- --softhsm]`
//!
//! With `--softhsm` the KEK is a PKCS#11 key in a throwaway SoftHSM2 token: the bench re-runs
//! itself with `SOFTHSM2_CONF` pointing at it (SoftHSM reads it once per process).

#[path = "common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use coffer_hsm::testing::{self, SoftHsm, USER_PIN};
use coffer_server::{DekPolicy, KekChoice, KekSecrets, KeyOptions, RewrapSettings, app};
use http_body_util::BodyExt;
use tower::ServiceExt;

const DEKS: usize = 10_000;

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, axum::body::Bytes) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"));
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let res = router
        .clone()
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("infallible");
    let status = res.status();
    (
        status,
        res.into_body().collect().await.expect("body").to_bytes(),
    )
}

async fn json(
    router: &axum::Router,
    method: &str,
    uri: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let (status, bytes) = call(router, method, uri, token, body).await;
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert!(status.is_success(), "{status}: {v}");
    v["result"].clone()
}

/// Starts a rotation and returns how long until it is done (the old version retired).
async fn rotate(router: &axum::Router, token: &str) -> Duration {
    let start = Instant::now();
    json(router, "POST", "/client/v4/kek/rotations", token, None).await;
    loop {
        let s = json(router, "GET", "/client/v4/kek", token, None).await;
        if s["rotation"].is_null() {
            return start.elapsed();
        }
        assert_ne!(s["rotation"]["state"], "failed", "{s}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Reads `binding` until `stop` (or `n` reads when no flag is given); the latencies.
async fn reads(
    router: &axum::Router,
    svc: &str,
    n: usize,
    stop: Option<Arc<AtomicBool>>,
) -> Vec<Duration> {
    let mut samples = Vec::new();
    loop {
        let done = match &stop {
            Some(flag) => flag.load(Ordering::Relaxed),
            None => samples.len() >= n,
        };
        if done {
            return samples;
        }
        let t = Instant::now();
        let (status, _) = call(router, "GET", "/runtime/v1/bindings/B0", svc, None).await;
        samples.push(t.elapsed());
        assert_eq!(status, StatusCode::OK);
    }
}

const CHILD_ENV: &str = "COFFER_BENCH_SOFTHSM_CHILD";

fn main() {
    let softhsm = std::env::args().any(|a| a == "--softhsm");
    if softhsm && std::env::var_os(CHILD_ENV).is_none() {
        let Some(hsm) = SoftHsm::new("kek_rewrap") else {
            return;
        };
        let mut cmd = std::process::Command::new(std::env::current_exe().expect("bench binary"));
        cmd.args(std::env::args().skip(1)).env(CHILD_ENV, "1");
        hsm.configure(&mut cmd);
        let status = cmd.status().expect("re-run the bench");
        assert!(status.success(), "{status}");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let secrets = || KekSecrets {
            pkcs11_pin: softhsm.then(|| zeroize::Zeroizing::new(USER_PIN.to_owned())),
        };
        let choice = if softhsm {
            let module = testing::find_module().expect("SoftHSM");
            let uri = format!(
                "pkcs11:token={};object={}?module-path={}",
                testing::TOKEN,
                testing::OBJECT,
                module.display()
            );
            KekChoice::Pkcs11(Box::new(coffer_hsm::Pkcs11Uri::parse(&uri).expect("uri")))
        } else {
            KekChoice::File
        };
        println!("KEK: {}", if softhsm { "PKCS#11 (SoftHSM2)" } else { "file" });
        let init = coffer_server::init_data_dir_with(&data, choice, secrets())
            .await
            .expect("init");
        let keys = KeyOptions {
            // One DEK per value, so 10,000 values make 10,000 DEKs.
            dek_policy: DekPolicy {
                max_seals: 1,
                ..DekPolicy::default()
            },
            rewrap: RewrapSettings {
                grace: Duration::ZERO,
                ..RewrapSettings::default()
            },
            reseal: Default::default(),
        };
        let coffer = coffer_server::open_data_dir_tuned(&data, Default::default(), secrets(), keys)
            .await
            .expect("open")
            .coffer;
        let router = app(Arc::new(coffer));
        let token = init.api_token.expose_secret().to_owned();
        let api = format!("/client/v4/accounts/{}/secrets_store", init.account_id);
        let store = json(&router, "POST", &format!("{api}/stores"), &token, Some(serde_json::json!({ "name": "bench" })))
            .await["id"]
            .as_str()
            .expect("store id")
            .to_owned();
        for chunk in 0..DEKS / 1000 {
            let items: Vec<_> = (0..1000)
                .map(|i| serde_json::json!({ "name": format!("s{}", chunk * 1000 + i), "value": "v", "scopes": ["workers"] }))
                .collect();
            json(&router, "POST", &format!("{api}/stores/{store}/secrets"), &token, Some(serde_json::json!(items))).await;
        }
        let svc = json(
            &router,
            "POST",
            &format!("{api}/services"),
            &token,
            Some(serde_json::json!({ "name": "bench", "secrets_store_secrets": [
                { "binding": "B0", "store_id": store, "secret_name": "s0" }
            ] })),
        )
        .await["service_token"]
            .as_str()
            .expect("service token")
            .to_owned();
        let s = json(&router, "GET", "/client/v4/kek", &token, None).await;
        println!("DEKs: {}", s["versions"][0]["deks"]);
        let instance = s["versions"][0]["instance_keys"].as_u64().expect("instance keys") as usize;

        let took = rotate(&router, &token).await;
        println!(
            "rewrap {DEKS} DEKs + {instance} instance keys (v1 -> v2): {:.2} s ({:.0} keys/s)",
            took.as_secs_f64(),
            (DEKS + instance) as f64 / took.as_secs_f64()
        );

        // Reads without a rotation, then during one.
        let quiet = reads(&router, &svc, 20_000, None).await;
        let n = quiet.len();
        println!("runtime reads, no rotation     {} ({n} reads)", common::summary(quiet));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (router, svc, stop) = (router.clone(), svc.clone(), stop.clone());
            tokio::spawn(async move { reads(&router, &svc, 0, Some(stop)).await })
        };
        let took = rotate(&router, &token).await;
        stop.store(true, Ordering::Relaxed);
        let during = reader.await.expect("reader");
        let n = during.len();
        println!("runtime reads, during rotation {} ({n} reads)", common::summary(during));
        println!("second rotation (v2 -> v3) with the reader: {:.2} s", took.as_secs_f64());
    });
}
