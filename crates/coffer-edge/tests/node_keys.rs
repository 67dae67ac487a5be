//! Edges hold no KEK: each makes its own X25519 key, registers it with its node token, and
//! opens what the feed carries with the replication keys granted to it. The test that matters:
//! the files of a node copied before its revocation open nothing written after it. And since
//! edges hold no KEK, a KEK rotation on the control plane does not reach them: they serve
//! throughout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_client::{
    Client, CreateSecret, DeployService, SecretBinding, SecretValue, UpdateSecret,
};
use coffer_crypto::{DataKey, DekContext, Grant, NodeKey, SealedValue, ValueContext};
use coffer_edge::{EdgeError, EdgeOptions, EdgeStatus};
use coffer_replication::wire::{FeedAnswer, FeedBody};
use coffer_storage::ArkStorage;
use coffer_storage::{Change, SqliteStorage, Storage};
use coffer_types::{DekId, TokenId, Version};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

const PROMPTLY: Duration = Duration::from_secs(20);

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

struct ControlPlane {
    url: String,
    client: Client,
    /// The operator's API token.
    token: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), coffer_server::ServerError>>,
}

async fn control_plane(dir: &Path) -> ControlPlane {
    control_plane_with(dir, Default::default()).await
}

async fn control_plane_with(dir: &Path, keys: coffer_server::KeyOptions) -> ControlPlane {
    let init = coffer_server::init_data_dir(dir).await.unwrap();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let opts = coffer_server::ServeOptions {
        data_dir: dir.to_owned(),
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
        keys,
        reload: Default::default(),
        metrics_listen: None,
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
        .unwrap()
        .unwrap();
    let url = format!("http://{addr}");
    let client = Client::new(
        &url,
        init.api_token.expose_secret(),
        &init.account_id.to_string(),
    )
    .unwrap();
    ControlPlane {
        url,
        client,
        token: init.api_token.expose_secret().to_owned(),
        stop: Some(stop_tx),
        task,
    }
}

struct Edge {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), EdgeError>>,
    _status: Arc<EdgeStatus>,
}

async fn edge(upstream: &str, token: &str, dir: &Path, serve_feed: bool) -> Edge {
    let opts = EdgeOptions {
        upstreams: vec![upstream.to_owned()],
        node_token: Zeroizing::new(token.to_owned()),
        data_dir: dir.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        insecure_http: false,
        insecure_http_upstream: false,
        ca_cert: None,
        feed_key: None,
        serve_feed,
        staleness: EdgeOptions::DEFAULT_STALENESS,
        long_poll: Duration::from_secs(1),
        max_staleness: None,
        snapshot_bounds: coffer_edge::SnapshotBounds::default(),
        trusted_proxies: Default::default(),
        http: Default::default(),
        snapshots: Default::default(),
        runtime_rate: None,
        reload: Default::default(),
        metrics_listen: None,
    };
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
    let (addr, status) = tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .unwrap()
        .unwrap();
    Edge {
        url: format!("http://{addr}"),
        stop: Some(stop_tx),
        task,
        _status: status,
    }
}

impl Edge {
    async fn read(&self, token: &str) -> (u16, String) {
        let r = http()
            .get(format!("{}/runtime/v1/bindings/K", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Waits until the edge serves `value` for binding `K`.
    async fn wait_value(&self, token: &str, value: &str) {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let (status, body) = self.read(token).await;
            if status == 200 && body == value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "edge {} never served {value:?}; last {status} {body}",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

struct Bound {
    store: String,
    secret: String,
    token: String,
}

async fn bind(client: &Client, value: &str) -> Bound {
    let store = client.create_store("prod").await.unwrap().id;
    let secret = client
        .create_secrets(
            &store,
            vec![CreateSecret {
                name: "k".into(),
                value: SecretValue::new(value.into()),
                scopes: vec!["workers".into()],
                comment: None,
            }],
        )
        .await
        .unwrap()
        .remove(0)
        .id;
    let deployed = client
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
        token: deployed.service_token.unwrap().expose_secret().to_owned(),
    }
}

async fn set_value(client: &Client, b: &Bound, value: &str) {
    client
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

/// Every entry of the control plane's feed, as any node (or any edge's disk) holds it.
async fn whole_feed(cp: &ControlPlane, probe: &str) -> Vec<Change> {
    let r = http()
        .get(format!("{}/replication/v1/feed?after=0", cp.url))
        .bearer_auth(probe)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer = FeedAnswer::decode(&r.bytes().await.unwrap()).unwrap();
    let FeedBody::Entries { entries, .. } = answer.body else {
        panic!("the feed is not compacted in this test");
    };
    entries.iter().map(|e| e.change().unwrap()).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Everything the copied files of `node` open: its grants (every grant in its replica tried
/// with its key) give replication keys, which give the DEKs its replica holds.
async fn what_the_copy_opens(copy: &Path, node: TokenId) -> HashMap<DekId, DataKey> {
    let key = NodeKey::open(&copy.join("node.key")).unwrap();
    let replica = SqliteStorage::open(&copy.join("replica.db")).unwrap();
    let mut rks = HashMap::new();
    for version in 1..=16 {
        // Every grant the copy holds, whoever it names: only those sealed to this key open.
        for g in replica.grants_of_version(version).await.unwrap() {
            let grant = Grant {
                ephemeral_public: g.ephemeral_public,
                sealed: g.sealed,
            };
            for as_node in [g.node_id, node] {
                if let Ok(rk) = key.open_grant(as_node, version, &grant) {
                    rks.insert(version, rk);
                }
            }
        }
    }
    assert!(!rks.is_empty(), "the copy holds at least its first grant");
    let mut deks = HashMap::new();
    for dek in replica.list_deks().await.unwrap() {
        let version = coffer_crypto::rk_version_of(&dek.key.kek_id).unwrap();
        let Some(rk) = rks.get(&version) else {
            continue;
        };
        let ctx = DekContext {
            account: Some(dek.account_id),
            dek: dek.key.id,
            purpose: "dek",
        };
        if let Ok(k) = coffer_crypto::rk_unwrap(rk, version, &dek.key.wrapped, &ctx) {
            deks.insert(dek.key.id, k);
        }
    }
    replica.shutdown().await;
    deks
}

/// The sealed current value of `secret` as the feed last carried it, with its context.
fn last_sealed(feed: &[Change], secret: &str) -> (ValueContext, SealedValue) {
    feed.iter()
        .rev()
        .find_map(|c| match c {
            Change::SecretPut {
                account_id,
                store_id,
                secret_id,
                version,
                dek_id,
                sealed_hex,
                ..
            } if secret_id.to_string() == secret => Some((
                ValueContext {
                    account: *account_id,
                    store: *store_id,
                    secret: *secret_id,
                    version: Version(*version),
                    dek: *dek_id,
                },
                SealedValue(hex::decode(sealed_hex).unwrap()),
            )),
            _ => None,
        })
        .expect("the feed carries the secret")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_nodes_copied_files_open_nothing_written_after_its_revocation() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = control_plane(&tmp.path().join("cp")).await;
    let b = bind(&cp.client, "before").await;
    let node_a = cp.client.create_node("edge-a").await.unwrap();
    let node_b = cp.client.create_node("edge-b").await.unwrap();
    let probe = cp.client.create_node("probe").await.unwrap();
    let token = |n: &coffer_client::CreatedNode| n.node_token.expose_secret().to_owned();

    // Neither edge has any key file of the control plane's.
    let a = edge(&cp.url, &token(&node_a), &tmp.path().join("a"), false).await;
    let e_b = edge(&cp.url, &token(&node_b), &tmp.path().join("b"), false).await;
    a.wait_value(&b.token, "before").await;
    e_b.wait_value(&b.token, "before").await;
    assert!(!tmp.path().join("a").join("kek.key").exists());

    // The thief's copy: everything on A's disk (stopped, so the copy is whole).
    a.stop().await;
    let copy = tmp.path().join("stolen");
    copy_dir(&tmp.path().join("a"), &copy);
    let a_id: TokenId = node_a.node.id.parse().unwrap();

    // Control: the copy opens what was written before the revocation.
    let feed = whole_feed(&cp, &token(&probe)).await;
    let opened = what_the_copy_opens(&copy, a_id).await;
    let (ctx, sealed) = last_sealed(&feed, &b.secret);
    let dek = opened
        .get(&ctx.dek)
        .expect("the copy holds the old value's DEK");
    let plain = coffer_crypto::open(dek, &ctx, &sealed).unwrap();
    assert_eq!(plain.expose_secret(), b"before");

    cp.client.revoke_node(&node_a.node.id).await.unwrap();
    set_value(&cp.client, &b, "after").await;
    e_b.wait_value(&b.token, "after").await;

    // The new value, as the feed (and so every other edge's disk) carries it.
    let feed = whole_feed(&cp, &token(&probe)).await;
    let (ctx, sealed) = last_sealed(&feed, &b.secret);
    assert!(
        !opened.contains_key(&ctx.dek),
        "the new value is sealed under a DEK the revoked node never had"
    );
    for key in opened.values() {
        assert!(coffer_crypto::open(key, &ctx, &sealed).is_err());
    }
    // Its DEK travels wrapped by a replication key the copy cannot open, and the grants of
    // that key are to the remaining nodes only.
    let new_dek = feed
        .iter()
        .rev()
        .find_map(|c| match c {
            Change::DekPut { dek_id, kek_id, .. } if *dek_id == ctx.dek => Some(kek_id.clone()),
            _ => None,
        })
        .unwrap();
    let version = coffer_crypto::rk_version_of(&new_dek).unwrap();
    assert!(version >= 2, "the revocation rotated the replication key");
    let granted: Vec<TokenId> = feed
        .iter()
        .filter_map(|c| match c {
            Change::NodeKeyGrant {
                node_id,
                rk_version,
                ..
            } if *rk_version == version => Some(*node_id),
            _ => None,
        })
        .collect();
    assert_eq!(granted, vec![node_b.node.id.parse::<TokenId>().unwrap()]);
    let stolen_key = NodeKey::open(&copy.join("node.key")).unwrap();
    for c in &feed {
        if let Change::NodeKeyGrant {
            node_id,
            rk_version,
            ephemeral_public_hex,
            sealed_hex,
        } = c
            && *rk_version == version
        {
            let grant = Grant {
                ephemeral_public: hex::decode(ephemeral_public_hex)
                    .unwrap()
                    .try_into()
                    .unwrap(),
                sealed: hex::decode(sealed_hex).unwrap(),
            };
            assert!(stolen_key.open_grant(*node_id, version, &grant).is_err());
            assert!(stolen_key.open_grant(a_id, version, &grant).is_err());
        }
    }

    // A, restarted with its own (revoked) token, is told so and serves nothing.
    let a = edge(&cp.url, &token(&node_a), &tmp.path().join("a"), false).await;
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let (status, _) = a.read(&b.token).await;
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "the revoked edge kept serving");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(a);
    e_b.stop().await;
    let ControlPlane { stop, task, .. } = cp;
    let _ = stop.unwrap().send(());
    task.await.unwrap().unwrap();
}

/// A KEK rotation rewraps the control plane's copies of every key; edges hold only
/// replication-key wraps, so they serve the right value throughout, a value written after the
/// rotation reaches them, and an edge bootstrapping afterwards opens everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_serve_the_right_values_through_a_kek_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    // One DEK per value, and a slow rewrap, so that reads run while keys move.
    let keys = coffer_server::KeyOptions {
        dek_policy: coffer_server::DekPolicy {
            max_seals: 1,
            ..Default::default()
        },
        rewrap: coffer_server::RewrapSettings {
            batch: 4,
            pause: Duration::from_millis(50),
            grace: Duration::ZERO,
            ..coffer_server::RewrapSettings::with_rate(80)
        },
        reseal: Default::default(),
    };
    let cp = control_plane_with(&tmp.path().join("cp"), keys).await;
    let b = bind(&cp.client, "v0").await;
    for i in 1..=40 {
        set_value(&cp.client, &b, &format!("v{i}")).await;
    }
    let node = cp.client.create_node("e1").await.unwrap();
    let e1 = edge(
        &cp.url,
        node.node_token.expose_secret(),
        &tmp.path().join("e1"),
        false,
    )
    .await;
    e1.wait_value(&b.token, "v40").await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (url, token, stop) = (e1.url.clone(), b.token.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut reads, client) = (0u64, http());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client
                    .get(format!("{url}/runtime/v1/bindings/K"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap();
                assert!(
                    status == 200 && (body == "v40" || body == "v41"),
                    "read {reads} during the rotation: {status} {body}"
                );
                reads += 1;
            }
            reads
        })
    };
    let started = cp.client.rotate_kek().await.unwrap();
    let mut during = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cp.client.kek_status().await.unwrap();
        if status.rotation.is_none() && status.versions.len() == 1 {
            assert_eq!(status.active_version, 2);
            break;
        }
        during += 1;
        assert!(
            Instant::now() < deadline,
            "the rotation never ended: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        during > 0,
        "the rotation was over before it could be watched: {started:?}"
    );
    set_value(&cp.client, &b, "v41").await;
    e1.wait_value(&b.token, "v41").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.await.unwrap();
    assert!(reads > 0, "no read ran during the rotation");

    // An edge that bootstraps after the rotation opens what the snapshot carries.
    let node = cp.client.create_node("e2").await.unwrap();
    let e2 = edge(
        &cp.url,
        node.node_token.expose_secret(),
        &tmp.path().join("e2"),
        false,
    )
    .await;
    e2.wait_value(&b.token, "v41").await;
    e2.stop().await;
    e1.stop().await;
}

/// Deleting a store shreds its keys at the edges too: the account's other values are re-sealed
/// off the DEK they shared with it (the edge serves the right value throughout), the DEK is
/// destroyed, and no DEK the edge still holds opens the deleted values, taken from a copy of
/// the edge's files made before the delete. The copy itself still opens them with its own node
/// key (the documented limit, docs/key-hierarchy.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_store_delete_no_dek_an_edge_holds_opens_the_deleted_values() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = coffer_server::KeyOptions {
        reseal: coffer_server::ResealSettings {
            pause: Duration::ZERO,
            interval: Duration::from_millis(200),
            ..Default::default()
        },
        ..Default::default()
    };
    let cp = control_plane_with(&tmp.path().join("cp"), keys).await;
    let doomed = cp.client.create_store("doomed").await.unwrap().id;
    let gone = cp
        .client
        .create_secrets(
            &doomed,
            vec![CreateSecret {
                name: "gone".into(),
                value: SecretValue::new("the deleted value".into()),
                scopes: vec!["workers".into()],
                comment: None,
            }],
        )
        .await
        .unwrap()
        .remove(0);
    let b = bind(&cp.client, "v1").await;
    let node = cp.client.create_node("e1").await.unwrap();
    let node_id: TokenId = node.node.id.parse().unwrap();
    let e1_dir = tmp.path().join("e1");
    let e1 = edge(&cp.url, node.node_token.expose_secret(), &e1_dir, false).await;
    e1.wait_value(&b.token, "v1").await;

    // The edge's files before the delete, and the deleted value as they hold it.
    let before = tmp.path().join("e1-before");
    copy_dir(&e1_dir, &before);
    let (ctx, sealed) = {
        let replica = SqliteStorage::open(&before.join("replica.db")).unwrap();
        let secret = gone.id.parse().unwrap();
        let v = replica
            .get_version(secret, Version::FIRST)
            .await
            .unwrap()
            .expect("the edge holds the value before the delete");
        let accounts = replica.list_accounts().await.unwrap();
        assert_eq!(accounts.len(), 1);
        replica.shutdown().await;
        (
            ValueContext {
                account: accounts[0].id,
                store: doomed.parse().unwrap(),
                secret,
                version: Version::FIRST,
                dek: v.dek_id,
            },
            SealedValue(v.sealed),
        )
    };
    let opened = what_the_copy_opens(&before, node_id).await;
    let shared = opened.get(&ctx.dek).expect("the copy opens the DEK");
    assert_eq!(
        coffer_crypto::open(shared, &ctx, &sealed)
            .unwrap()
            .expose_secret(),
        b"the deleted value",
        "the check below can fail: before the delete, the edge's DEK opens it"
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (url, token, stop) = (e1.url.clone(), b.token.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut reads, client) = (0u64, http());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client
                    .get(format!("{url}/runtime/v1/bindings/K"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap();
                assert!(
                    status == 200 && (body == "v1" || body == "v2"),
                    "read {reads} during the re-seal: {status} {body}"
                );
                reads += 1;
            }
            reads
        })
    };
    cp.client.delete_store(&doomed, true).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cp.client.kek_status().await.unwrap();
        let r = status.reseal.clone().expect("the server runs the job");
        if r.resealed >= 1 && r.remaining == 0 && r.destroyed_deks >= 1 && !r.running {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the re-seal never ended: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Written after the destruction: once the edge serves it, it applied everything before.
    set_value(&cp.client, &b, "v2").await;
    e1.wait_value(&b.token, "v2").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.await.unwrap() > 0, "no read ran during the re-seal");
    e1.stop().await;

    // Everything the edge holds now (its live replica, opened with its live node key).
    let after = tmp.path().join("e1-after");
    copy_dir(&e1_dir, &after);
    let live = what_the_copy_opens(&after, node_id).await;
    assert!(!live.is_empty(), "the edge still holds the current DEK");
    assert!(
        !live.contains_key(&ctx.dek),
        "the shared DEK is gone from the edge"
    );
    for (id, key) in &live {
        for claimed in [ctx.dek, *id] {
            let try_ctx = ValueContext {
                dek: claimed,
                ..ctx
            };
            assert!(
                coffer_crypto::open(key, &try_ctx, &sealed).is_err(),
                "DEK {id} the edge holds opens the deleted value"
            );
        }
    }
}

/// Every file under `from`, subdirectories included (the node account keys).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The account replication keys of `account` that `keys` open from the grants in `replica`:
/// every pair of them is tried (an account grant needs the node's key for the account and its
/// node key together), a key with itself too.
async fn arks_opened(
    replica: &Path,
    account: coffer_types::AccountId,
    keys: &[NodeKey],
) -> HashMap<u32, DataKey> {
    let replica = SqliteStorage::open(replica).unwrap();
    let mut out = HashMap::new();
    for version in account_grant_versions(&replica, account).await {
        for g in replica.account_grants(account, version).await.unwrap() {
            let grant = Grant {
                ephemeral_public: g.ephemeral_public,
                sealed: g.sealed,
            };
            for key in keys {
                for with in keys {
                    if let Ok(ark) =
                        key.open_account_grant(with, g.node_id, account, version, &grant)
                    {
                        out.insert(version, ark);
                    }
                }
                assert!(
                    key.open_grant(g.node_id, version, &grant).is_err(),
                    "an account grant never opens as a node grant"
                );
            }
        }
    }
    replica.shutdown().await;
    out
}

/// An account with its own KEK has its own replication key: the edge makes a key for the
/// account, registers it, opens the account's DEKs through it and serves the account's values.
/// After the account's delete the edge deletes that key, and neither its node key nor any key
/// it still holds opens the account grants of a copy of its files made before the delete;
/// another account's reads go on throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_account_delete_no_key_an_edge_holds_opens_the_copied_account_grants() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = control_plane(&tmp.path().join("cp")).await;
    let kept = bind(&cp.client, "kept-value").await;
    let doomed = cp.client.create_account("doomed").await.unwrap();
    let account: coffer_types::AccountId = doomed.id.parse().unwrap();
    let admin = Client::new(&cp.url, &cp.token, &doomed.id)
        .unwrap()
        .create_token("admin", "super_admin", None)
        .await
        .unwrap();
    let doomed_client = Client::new(&cp.url, admin.value.expose_secret(), &doomed.id).unwrap();
    cp.client.set_account_kek(&doomed.id, "file").await.unwrap();
    let gone = bind(&doomed_client, "the doomed value").await;

    let node = cp.client.create_node("e1").await.unwrap();
    let e1_dir = tmp.path().join("e1");
    let e1 = edge(&cp.url, node.node_token.expose_secret(), &e1_dir, false).await;
    e1.wait_value(&kept.token, "kept-value").await;
    // Served once the edge has registered its key for the account and been granted its ARK.
    e1.wait_value(&gone.token, "the doomed value").await;
    let account_key = e1_dir.join(format!("node-account-keys/{account}.key"));
    assert!(account_key.exists());

    let before = tmp.path().join("e1-before");
    copy_tree(&e1_dir, &before);
    let copied_node_key = NodeKey::open(&before.join("node.key")).unwrap();
    let copied_account_key =
        NodeKey::open(&before.join(format!("node-account-keys/{account}.key"))).unwrap();
    // Positive control: the copied node account key with the copied node key opens the copied
    // grant, and the ARK the account's DEKs in the copy; either key alone opens none.
    let opened = arks_opened(
        &before.join("replica.db"),
        account,
        &[
            copied_account_key,
            NodeKey::open(&before.join("node.key")).unwrap(),
        ],
    )
    .await;
    let (version, ark) = opened
        .iter()
        .next()
        .expect("the copy opens its account grant");
    {
        let replica = SqliteStorage::open(&before.join("replica.db")).unwrap();
        let deks: Vec<_> = replica
            .list_deks()
            .await
            .unwrap()
            .into_iter()
            .filter(|d| d.account_id == account)
            .collect();
        assert!(!deks.is_empty());
        for d in &deks {
            assert_eq!(d.key.kek_id, format!("ark:{version}"));
            let ctx = DekContext {
                account: Some(account),
                dek: d.key.id,
                purpose: "dek",
            };
            coffer_crypto::ark_unwrap(ark, *version, &d.key.wrapped, &ctx).unwrap();
        }
        replica.shutdown().await;
    }
    for alone in [
        copied_node_key,
        NodeKey::open(&before.join(format!("node-account-keys/{account}.key"))).unwrap(),
    ] {
        assert!(
            arks_opened(&before.join("replica.db"), account, &[alone])
                .await
                .is_empty(),
            "one of the two keys alone opens no account grant"
        );
    }

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (url, token, stop) = (e1.url.clone(), kept.token.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut reads, client) = (0u64, http());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client
                    .get(format!("{url}/runtime/v1/bindings/K"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap();
                assert!(
                    status == 200 && (body == "kept-value" || body == "kept-after"),
                    "read {reads} across the delete: {status} {body}"
                );
                reads += 1;
            }
            reads
        })
    };
    cp.client.delete_account(&doomed.id).await.unwrap();
    set_value(&cp.client, &kept, "kept-after").await;
    e1.wait_value(&kept.token, "kept-after").await;
    // Within a housekeeping round (10 s) the edge deletes its key for the account.
    let deadline = Instant::now() + Duration::from_secs(30);
    while account_key.exists() {
        assert!(
            Instant::now() < deadline,
            "the account key was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.await.unwrap() > 0, "no read ran across the delete");
    let (status, _) = e1.read(&gone.token).await;
    assert_ne!(
        status, 200,
        "the deleted account's value is no longer served"
    );
    e1.stop().await;

    // Every key the edge holds now: its node key and whatever node account keys are left.
    let mut live = vec![NodeKey::open(&e1_dir.join("node.key")).unwrap()];
    if let Ok(dir) = std::fs::read_dir(e1_dir.join("node-account-keys")) {
        for entry in dir {
            live.push(NodeKey::open(&entry.unwrap().path()).unwrap());
        }
    }
    assert!(
        arks_opened(&before.join("replica.db"), account, &live)
            .await
            .is_empty(),
        "a key the edge still holds opens the deleted account's copied grants"
    );
    // And its live replica holds nothing of the account.
    let replica = SqliteStorage::open(&e1_dir.join("replica.db")).unwrap();
    assert!(!replica.list_nodes().await.unwrap().is_empty());
    assert!(account_grant_versions(&replica, account).await.is_empty());
    replica.shutdown().await;
}

/// Every ARK version of `account` granted to any node the replica knows, oldest first.
async fn account_grant_versions(
    replica: &SqliteStorage,
    account: coffer_types::AccountId,
) -> Vec<u32> {
    let mut versions = std::collections::BTreeSet::new();
    for node in replica.list_nodes().await.unwrap() {
        versions.extend(
            replica
                .account_grant_versions(account, node.id)
                .await
                .unwrap(),
        );
    }
    versions.into_iter().collect()
}

/// Every log line of this test binary from the first call on (one global subscriber).
fn captured_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .try_init()
            .expect("no other subscriber in this test binary");
        logs
    })
    .clone()
}

/// Whoever holds a node's token but not its node key registers a key for an account before
/// the node's edge does (first wins). The grant made to it is sealed to that key and the
/// node's key together: the edge cannot open it either, says so once in its log, and serves
/// the account nothing, while another account's reads go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_key_registered_with_the_node_token_alone_is_reported_by_the_edge() {
    let logs = captured_logs();
    let tmp = tempfile::tempdir().unwrap();
    let cp = control_plane(&tmp.path().join("cp")).await;
    let kept = bind(&cp.client, "kept-value").await;
    let victim = cp.client.create_account("victim").await.unwrap();
    let admin = Client::new(&cp.url, &cp.token, &victim.id)
        .unwrap()
        .create_token("admin", "super_admin", None)
        .await
        .unwrap();
    let victim_client = Client::new(&cp.url, admin.value.expose_secret(), &victim.id).unwrap();
    cp.client.set_account_kek(&victim.id, "file").await.unwrap();
    let node = cp.client.create_node("e1").await.unwrap();
    let e1 = edge(
        &cp.url,
        node.node_token.expose_secret(),
        &tmp.path().join("e1"),
        false,
    )
    .await;
    // Serving: the edge has registered its node key.
    e1.wait_value(&kept.token, "kept-value").await;

    // The thief's key, with the node token alone, before the account has a value.
    let thief = NodeKey::create(&tmp.path().join("thief.key")).unwrap();
    let r = http()
        .put(format!(
            "{}/replication/v1/node-key/accounts/{}",
            cp.url, victim.id
        ))
        .bearer_auth(node.node_token.expose_secret())
        .json(&serde_json::json!({ "public_key": hex::encode(thief.public_key().as_bytes()) }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let victim_value = bind(&victim_client, "the victim's value").await;

    let deadline = Instant::now() + Duration::from_secs(40);
    let reported = loop {
        let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains(&victim.id) && l.contains("cannot be read on this edge"))
        {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the edge never reported the grant it cannot open"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(reported.contains("ERROR"), "{reported}");
    let (status, body) = e1.read(&victim_value.token).await;
    assert_ne!(status, 200, "{body}");
    assert!(!body.contains("the victim's value"), "{body}");
    e1.wait_value(&kept.token, "kept-value").await;
    e1.stop().await;
}
