//! Prometheus metrics (`--metrics-listen`) on a real control plane and a real edge: after a
//! write, runtime reads served, denied and not found, and a refused token, both scrapes parse
//! with a Prometheus text parser and show the counts moved; no secret name or value, token or
//! account id appears in them; the public port does not serve them; an address in use stops
//! the start.

use std::net::SocketAddr;

use coffer_client::{CreateSecret, DeployService, SecretBinding, SecretValue};
use prometheus_parse::{Scrape, Value};

mod common;
use common::*;

const VALUE: &str = "metrics-test-value-7f3a9c";
const SECRET: &str = "db-password-metrics";
const GONE: &str = "deleted-secret-metrics";

/// A loopback address no one listens on (bound and released).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn scrape(addr: SocketAddr) -> (String, Scrape) {
    let r = http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    (text, parsed)
}

/// The value of the counter or gauge `name` whose labels include `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = s
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)));
    match found.map(|x| &x.value) {
        Some(Value::Counter(n) | Value::Gauge(n) | Value::Untyped(n)) => *n,
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

/// Requests counted by the latency histogram of `route`, `method` and status class.
fn requests(s: &Scrape, route: &str, method: &str, status: &str) -> f64 {
    s.samples
        .iter()
        .find(|x| {
            x.metric == "coffer_http_request_duration_seconds"
                && x.labels.get("route") == Some(route)
                && x.labels.get("method") == Some(method)
                && x.labels.get("status") == Some(status)
        })
        .map_or(0.0, |x| match &x.value {
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            other => panic!("not a histogram: {other:?}"),
        })
}

fn histogram_count(s: &Scrape, name: &str) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .map(|x| match &x.value {
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            other => panic!("not a histogram: {other:?}"),
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_processes_expose_what_happened_and_nothing_secret() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let cp_metrics = free_addr();
    let cp = ControlPlane::start_with_metrics(tmp.path().join("cp"), Some(cp_metrics)).await;
    let account = cp.client.account_id().to_owned();

    // A service with two bindings; the second's secret is then deleted (reads: not found).
    let store = cp.client.create_store("prod-metrics").await.unwrap().id;
    let made = cp
        .client
        .create_secrets(
            &store,
            [SECRET, GONE]
                .iter()
                .map(|name| CreateSecret {
                    name: (*name).into(),
                    value: SecretValue::new(VALUE.into()),
                    scopes: vec!["workers".into()],
                    comment: None,
                })
                .collect(),
        )
        .await
        .unwrap();
    let deployed = cp
        .client
        .deploy_service(&DeployService {
            name: "svc-metrics".into(),
            kind: None,
            secrets_store_secrets: vec![
                SecretBinding {
                    binding: "DB".into(),
                    store_id: store.clone(),
                    secret_name: SECRET.into(),
                },
                SecretBinding {
                    binding: "GONE".into(),
                    store_id: store.clone(),
                    secret_name: GONE.into(),
                },
            ],
            secrets_store_stores: vec![],
        })
        .await
        .unwrap();
    let svc_token = deployed.service_token.unwrap().expose_secret().to_owned();
    cp.client.delete_secret(&store, &made[1].id).await.unwrap();
    let node_token = cp.node("edge-metrics").await;

    let edge_metrics = free_addr();
    let mut opts = edge_options(&[&cp.url], &node_token, &tmp.path().join("edge"));
    opts.metrics_listen = Some(edge_metrics);
    let mut edge = Edge::start_with(opts).await;
    edge.wait_serving().await;
    let head = cp.head().await;
    edge.wait_applied(head).await;

    // At the edge: two served, one denied (no such binding), one not found, one bad token.
    assert_eq!(edge.read(&svc_token, "DB").await.0, 200);
    assert_eq!(edge.read(&svc_token, "DB").await.0, 200);
    assert_eq!(edge.read(&svc_token, "NOPE").await.0, 404);
    assert_eq!(edge.read(&svc_token, "GONE").await.0, 404);
    let last = if svc_token.ends_with('A') { 'B' } else { 'A' };
    let bogus = format!("{}{last}", &svc_token[..svc_token.len() - 1]);
    assert_eq!(edge.read(&bogus, "DB").await.0, 401);
    // And one served by the control plane itself.
    let r = http()
        .get(format!("{}/runtime/v1/bindings/DB", cp.url))
        .bearer_auth(&svc_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // ---- the edge ----
    let (text, s) = scrape(edge_metrics).await;
    assert_eq!(
        value(&s, "coffer_runtime_reads_total", &[("outcome", "served")]),
        2.0
    );
    assert_eq!(
        value(&s, "coffer_runtime_reads_total", &[("outcome", "denied")]),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "coffer_runtime_reads_total",
            &[("outcome", "not_found")]
        ),
        1.0
    );
    let hits = value(
        &s,
        "coffer_runtime_cache_lookups_total",
        &[("result", "hit")],
    );
    let misses = value(
        &s,
        "coffer_runtime_cache_lookups_total",
        &[("result", "miss")],
    );
    assert!(hits >= 1.0 && misses >= 1.0, "hits {hits}, misses {misses}");
    let route = "/runtime/v1/bindings/:binding";
    assert_eq!(requests(&s, route, "GET", "2xx"), 2.0, "{text}");
    assert_eq!(requests(&s, route, "GET", "4xx"), 3.0, "{text}");
    assert_eq!(value(&s, "coffer_auth_failures_total", &[]), 1.0);
    assert_eq!(value(&s, "coffer_edge_applied_seq", &[]), head as f64);
    assert_eq!(value(&s, "coffer_change_log_head", &[]), head as f64);
    assert_eq!(value(&s, "coffer_edge_upstreams", &[]), 1.0);
    assert_eq!(value(&s, "coffer_edge_upstream_index", &[]), 0.0);
    assert_eq!(value(&s, "coffer_edge_alarms_total", &[]), 0.0);
    assert_eq!(value(&s, "coffer_edge_failovers_total", &[]), 0.0);
    assert_eq!(value(&s, "coffer_edge_serving", &[]), 1.0);
    let lag = value(&s, "coffer_edge_lag_seconds", &[]);
    assert!((0.0..30.0).contains(&lag), "{lag}");
    assert!(value(&s, "coffer_dek_cache_keys", &[]) >= 1.0);
    // The test's client keeps its connection to the public port open (keep-alive).
    assert!(
        value(&s, "coffer_http_connections_open", &[]) >= 1.0,
        "{text}"
    );
    // The replica's writer committed what it applied.
    assert!(
        histogram_count(&s, "coffer_storage_commit_batch_jobs") >= 1.0,
        "{text}"
    );
    // An edge keeps no audit log.
    assert!(!text.contains("coffer_audit_entries_written"), "{text}");
    assert_secret_free(
        &text,
        &[
            VALUE,
            SECRET,
            GONE,
            &svc_token,
            &node_token,
            &account,
            &store,
        ],
    );

    // ---- the control plane ----
    let (text, s) = scrape(cp_metrics).await;
    assert_eq!(
        value(&s, "coffer_runtime_reads_total", &[("outcome", "served")]),
        1.0
    );
    assert_eq!(value(&s, "coffer_change_log_head", &[]), head as f64);
    assert!(
        value(&s, "coffer_audit_entries_written_total", &[]) >= 4.0,
        "{text}"
    );
    assert_eq!(value(&s, "coffer_audit_write_failures_total", &[]), 0.0);
    assert!(
        histogram_count(&s, "coffer_storage_commit_batch_jobs") >= 4.0,
        "{text}"
    );
    assert!(
        histogram_count(&s, "coffer_storage_commit_seconds") >= 4.0,
        "{text}"
    );
    assert!(
        s.samples
            .iter()
            .any(|x| x.metric == "coffer_kek_operation_seconds"
                && x.labels.get("backend") == Some("file")
                && x.labels.get("op") == Some("wrap")
                && x.labels.get("outcome") == Some("ok")),
        "a new DEK was wrapped by the file KEK: {text}"
    );
    assert_eq!(
        requests(
            &s,
            "/client/v4/accounts/:account_id/secrets_store/stores/:store_id/secrets",
            "POST",
            "2xx"
        ),
        1.0,
        "{text}"
    );
    // The edge's first feed answer may still be held in its long poll at the first scrape
    // (a request is counted when its response head is sent): wait for it.
    wait_until("a feed answer counted", PROMPTLY, || async {
        requests(
            &scrape(cp_metrics).await.1,
            "/replication/v1/feed",
            "GET",
            "2xx",
        ) >= 1.0
    })
    .await;
    assert_secret_free(
        &text,
        &[
            VALUE,
            SECRET,
            GONE,
            &svc_token,
            &node_token,
            &account,
            &store,
        ],
    );

    // The public ports do not serve metrics; the metrics port serves nothing else.
    let r = http()
        .get(format!("{}/metrics", edge.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http()
        .get(format!("{}/metrics", cp.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http()
        .get(format!("http://{cp_metrics}/client/v4/accounts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // That 404 on the public port is counted under one route label, whatever the path.
    let (text, s) = scrape(cp_metrics).await;
    assert_eq!(requests(&s, "unmatched", "GET", "4xx"), 1.0, "{text}");
    assert!(!text.contains("/metrics\""), "{text}");

    edge.stop().await;
    let mut cp = cp;
    cp.stop().await;
}

fn assert_secret_free(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{secret:?} appears in the scrape");
    }
}

#[tokio::test]
async fn a_metrics_address_in_use_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let tmp = tempfile::tempdir().unwrap();

    let mut opts = edge_options(
        &["http://127.0.0.1:9"],
        "coffernode_x",
        &tmp.path().join("e"),
    );
    opts.metrics_listen = Some(addr);
    let result = coffer_edge::run(opts, |_, _| {}, std::future::pending()).await;
    let message = result.expect_err("the edge does not start").to_string();
    assert!(
        message.contains(&format!(
            "cannot listen on {addr} for metrics (--metrics-listen)"
        )),
        "{message}"
    );

    let data_dir = tmp.path().join("cp");
    coffer_server::init_data_dir(&data_dir).await.unwrap();
    let opts = coffer_server::ServeOptions {
        data_dir,
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        insecure_http: false,
        dashboard_secure_cookies: Default::default(),
        secrets_quota: coffer_server::ServeOptions::DEFAULT_SECRETS_QUOTA,
        max_stores: coffer_server::ServeOptions::DEFAULT_MAX_STORES,
        feed_retention: coffer_server::ServeOptions::DEFAULT_FEED_RETENTION,
        trusted_proxies: Default::default(),
        http: Default::default(),
        snapshots: Default::default(),
        runtime_rate: None,
        keys: Default::default(),
        reload: Default::default(),
        metrics_listen: Some(addr),
    };
    let result = coffer_server::serve(opts, |_| {}, std::future::pending()).await;
    let message = result.expect_err("the server does not start").to_string();
    assert!(
        message.contains(&format!(
            "cannot listen on {addr} for metrics (--metrics-listen)"
        )),
        "{message}"
    );
    drop(taken);
}

/// A connection to the metrics port that sent half a request head and then nothing (no final
/// CRLF) does not hold up shutdown: the control plane and the edge both stop in bounded time
/// (the header timeout closes it, and the drain is bounded), so the control plane's queued
/// writes and audit checkpoints are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_scrape_does_not_hold_up_shutdown() {
    use tokio::io::AsyncWriteExt;
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let cp_metrics = free_addr();
    let mut cp = ControlPlane::start_with_metrics(tmp.path().join("cp"), Some(cp_metrics)).await;
    let node_token = cp.node("edge-stalled").await;
    let edge_metrics = free_addr();
    let mut opts = edge_options(&[&cp.url], &node_token, &tmp.path().join("edge"));
    opts.metrics_listen = Some(edge_metrics);
    let mut edge = Edge::start_with(opts).await;

    let mut stalled = Vec::new();
    for addr in [cp_metrics, edge_metrics] {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n")
            .await
            .unwrap();
        stalled.push(conn);
    }
    // Let both servers read the partial head.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Header timeout (5 s) or the drain (10 s) at most, with room for a loaded machine.
    let bound = std::time::Duration::from_secs(20);
    tokio::time::timeout(bound, edge.stop())
        .await
        .expect("the edge stops although a scrape is stalled");
    tokio::time::timeout(bound, cp.stop())
        .await
        .expect("the control plane stops although a scrape is stalled");
    drop(stalled);
}

/// Every refused credential counts as a failed authentication: a malformed `Authorization`
/// header (not `Bearer`, not text) and a valid token of the wrong kind for the API, as well as
/// an unknown token; a request without the header does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_credential_counts_as_an_auth_failure() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let metrics = free_addr();
    let mut cp = ControlPlane::start_with_metrics(tmp.path().join("cp"), Some(metrics)).await;
    let runtime = format!("{}/runtime/v1/bindings/DB", cp.url);
    let api = format!("{}/client/v4/user/tokens/verify", cp.url);
    let send = |url: &str, auth: Option<reqwest::header::HeaderValue>| {
        let mut r = http().get(url);
        if let Some(auth) = auth {
            r = r.header(reqwest::header::AUTHORIZATION, auth);
        }
        r.send()
    };
    let value = |s: &[u8]| Some(reqwest::header::HeaderValue::from_bytes(s).unwrap());
    let node = format!("Bearer {}", cp.probe);
    let refused = [
        send(&runtime, value(b"Basic dXNlcjpwYXNz")).await.unwrap(),
        send(&runtime, value(b"Bearer caf\xe9")).await.unwrap(),
        // A node token is valid, but not on the runtime API nor the control-plane API.
        send(&runtime, value(node.as_bytes())).await.unwrap(),
        send(&api, value(node.as_bytes())).await.unwrap(),
        send(&api, value(b"Bearer cofferapi_not_a_token"))
            .await
            .unwrap(),
    ];
    for r in &refused {
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    // No header at all: not counted.
    assert_eq!(send(&runtime, None).await.unwrap().status(), 401);
    let (text, s) = scrape(metrics).await;
    assert_eq!(
        value_of(&s, "coffer_auth_failures_total"),
        refused.len() as f64,
        "{text}"
    );
    cp.stop().await;
}

fn value_of(s: &Scrape, name: &str) -> f64 {
    value(s, name, &[])
}
