//! The harness the in-process edge tests share: a control plane on 127.0.0.1:0, edges
//! run in-process, and waiting helpers.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use coffer_client::{
    Client, CreateSecret, DeployService, SecretBinding, SecretValue, UpdateSecret,
};
use coffer_edge::{EdgeError, EdgeOptions, EdgeStatus};
use coffer_replication::wire::FeedAnswer;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

pub mod proxy;

pub const LONG_POLL: Duration = Duration::from_secs(2);
/// How long anything that should happen promptly may take.
pub const PROMPTLY: Duration = Duration::from_secs(20);

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn,coffer_edge=info")
        .try_init();
}

pub fn http() -> &'static reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap()
    })
}

/// Polls `check` every 50 ms until it holds; panics after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- the control plane ----

pub struct ControlPlane {
    pub url: String,
    pub client: Client,
    /// A node token used by the test itself to read the feed (the head, the cluster id).
    pub probe: String,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), coffer_server::ServerError>>>,
}

impl ControlPlane {
    pub async fn start(data_dir: PathBuf) -> ControlPlane {
        ControlPlane::start_with_metrics(data_dir, None).await
    }

    /// A control plane serving metrics on `metrics_listen`.
    pub async fn start_with_metrics(
        data_dir: PathBuf,
        metrics_listen: Option<SocketAddr>,
    ) -> ControlPlane {
        let init = coffer_server::init_data_dir(&data_dir).await.unwrap();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let opts = coffer_server::ServeOptions {
            data_dir: data_dir.clone(),
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
            metrics_listen,
        };
        let task = tokio::spawn(coffer_server::serve(
            opts,
            move |addr| {
                let _ = ready_tx.send(addr);
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        let addr: SocketAddr = tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("the control plane starts")
            .expect("the control plane starts");
        let url = format!("http://{addr}");
        let client = Client::new(
            &url,
            init.api_token.expose_secret(),
            &init.account_id.to_string(),
        )
        .unwrap();
        let mut cp = ControlPlane {
            url,
            client,
            probe: String::new(),
            stop: Some(stop_tx),
            task: Some(task),
        };
        cp.probe = cp.node("probe").await;
        cp
    }

    /// Registers a node; its token.
    pub async fn node(&self, name: &str) -> String {
        let made = self.client.create_node(name).await.unwrap();
        made.node_token.expose_secret().to_owned()
    }

    pub async fn feed(&self, after: u64) -> FeedAnswer {
        let r = http()
            .get(format!("{}/replication/v1/feed?after={after}", self.url))
            .bearer_auth(&self.probe)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        FeedAnswer::decode(&r.bytes().await.unwrap()).unwrap()
    }

    pub async fn head(&self) -> u64 {
        self.feed(0).await.head_seq
    }

    pub async fn cluster_hex(&self) -> String {
        hex::encode(self.feed(0).await.cluster_id)
    }

    /// A store `prod` with secret `k` (scope workers) = `value`, bound as `K` to service `svc`.
    pub async fn bind(&self, value: &str) -> Bound {
        let store = self.client.create_store("prod").await.unwrap().id;
        let secret = self.create_secret(&store, "k", value).await;
        let deployed = self
            .client
            .deploy_service(&DeployService {
                name: "svc".into(),
                kind: None,
                secrets_store_secrets: vec![SecretBinding {
                    binding: "K".into(),
                    store_id: store.clone(),
                    secret_name: "k".into(),
                }],
                secrets_store_stores: vec![],
            })
            .await
            .unwrap();
        Bound {
            store,
            secret,
            service: deployed.service.id.clone(),
            token: deployed
                .service_token
                .expect("the first deploy shows the token")
                .expose_secret()
                .to_owned(),
        }
    }

    pub async fn create_secret(&self, store: &str, name: &str, value: &str) -> String {
        self.create_secrets(store, &[(name, value)]).await.remove(0)
    }

    /// Creates the secrets in one request (one transaction); their ids.
    pub async fn create_secrets(&self, store: &str, items: &[(&str, &str)]) -> Vec<String> {
        let made = self
            .client
            .create_secrets(
                store,
                items
                    .iter()
                    .map(|(name, value)| CreateSecret {
                        name: (*name).into(),
                        value: SecretValue::new((*value).into()),
                        scopes: vec!["workers".into()],
                        comment: None,
                    })
                    .collect(),
            )
            .await
            .unwrap();
        made.into_iter().map(|s| s.id).collect()
    }

    pub async fn set_value(&self, b: &Bound, value: &str) {
        self.client
            .update_secret(
                &b.store,
                &b.secret,
                UpdateSecret {
                    value: Some(SecretValue::new(value.into())),
                    scopes: None,
                    comment: None,
                },
            )
            .await
            .unwrap();
    }

    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the control plane stops")
                .unwrap()
                .unwrap();
        }
    }
}

pub struct Bound {
    pub store: String,
    pub secret: String,
    pub service: String,
    pub token: String,
}

// ---- edges ----

/// The options the tests' edges start with.
pub fn edge_options(upstreams: &[&str], node_token: &str, data_dir: &Path) -> EdgeOptions {
    EdgeOptions {
        upstreams: upstreams.iter().map(|u| (*u).to_owned()).collect(),
        node_token: Zeroizing::new(node_token.to_owned()),
        data_dir: data_dir.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        insecure_http: false,
        insecure_http_upstream: false,
        ca_cert: None,
        feed_key: None,
        serve_feed: false,
        staleness: EdgeOptions::DEFAULT_STALENESS,
        long_poll: LONG_POLL,
        max_staleness: None,
        snapshot_bounds: coffer_edge::SnapshotBounds::default(),
        trusted_proxies: Default::default(),
        http: Default::default(),
        snapshots: Default::default(),
        runtime_rate: None,
        reload: Default::default(),
        metrics_listen: None,
    }
}

pub struct Edge {
    pub url: String,
    pub status: Arc<EdgeStatus>,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), EdgeError>>>,
}

impl Edge {
    pub async fn start(upstreams: &[&str], node_token: &str, data_dir: &Path) -> Edge {
        Edge::start_with(edge_options(upstreams, node_token, data_dir)).await
    }

    pub async fn start_with(opts: EdgeOptions) -> Edge {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(coffer_edge::run(
            opts,
            move |addr, status| {
                let _ = ready_tx.send((addr, status));
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        let (addr, status) = match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
            Ok(Ok(ready)) => ready,
            _ => panic!("the edge did not start: {:?}", task.await),
        };
        Edge {
            url: format!("http://{addr}"),
            status,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the edge stops")
                .unwrap()
                .unwrap();
        }
    }

    /// `GET /runtime/v1/bindings/{binding}` with `token`: status and body.
    pub async fn read(&self, token: &str, binding: &str) -> (u16, String) {
        let r = http()
            .get(format!("{}/runtime/v1/bindings/{binding}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// A read that must succeed; the value.
    pub async fn value(&self, token: &str, binding: &str) -> String {
        let (status, body) = self.read(token, binding).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn health(&self) -> (u16, Value) {
        let r = http()
            .get(format!("{}/healthz", self.url))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    pub async fn alarms(&self) -> u64 {
        self.health().await.1["alarms"].as_u64().unwrap()
    }

    /// Waits until the replica has durably applied `seq` (or more).
    pub async fn wait_applied(&self, seq: u64) {
        let mut rx = self.status.subscribe_applied();
        let reached = tokio::time::timeout(PROMPTLY, rx.wait_for(|s| *s >= seq)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "the edge did not apply seq {seq} (at {}): {:?}",
            self.status.applied_seq(),
            self.health().await
        );
    }

    /// Waits until the edge is ready and its routes answer (not 503). Asks for a route that
    /// does not exist, so that no read is counted and no token is tried.
    pub async fn wait_serving(&self) {
        self.wait_serving_within(PROMPTLY).await;
    }

    /// [`Self::wait_serving`], for up to `within`.
    pub async fn wait_serving_within(&self, within: Duration) {
        wait_until("the edge to serve", within, move || async move {
            if !self.status.is_ready() {
                return false;
            }
            let r = http()
                .get(format!("{}/runtime/v1/no-such-route", self.url))
                .send()
                .await
                .unwrap();
            r.status() != 503
        })
        .await;
    }
}

/// Records the highest applied seq an edge reports while it runs.
pub struct AppliedWatch {
    pub max: Arc<AtomicU64>,
    pub task: JoinHandle<()>,
}

impl AppliedWatch {
    pub fn new(status: &EdgeStatus) -> AppliedWatch {
        let mut rx = status.subscribe_applied();
        let max = Arc::new(AtomicU64::new(*rx.borrow_and_update()));
        let task = {
            let max = max.clone();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let seq = *rx.borrow_and_update();
                    max.fetch_max(seq, Ordering::SeqCst);
                }
            })
        };
        AppliedWatch { max, task }
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::SeqCst)
    }
}

impl Drop for AppliedWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The start of most tests here: logs, a temp dir, a control plane in it with one secret bound
/// to a service (value `value`), and a node registered as `node`.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub cp: ControlPlane,
    pub b: Bound,
    pub token: String,
}

pub async fn world(value: &str, node: &str) -> World {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(tmp.path().join("cp")).await;
    let b = cp.bind(value).await;
    let token = cp.node(node).await;
    World { tmp, cp, b, token }
}

/// An edge in `tmp/edge` following the control plane directly, serving and caught up.
pub async fn synced_edge(tmp: &Path, cp: &ControlPlane, token: &str) -> Edge {
    let edge = Edge::start(&[&cp.url], token, &tmp.join("edge")).await;
    edge.wait_serving().await;
    edge.wait_applied(cp.head().await).await;
    edge
}
