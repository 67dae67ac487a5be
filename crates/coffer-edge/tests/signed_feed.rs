//! Edges verify the control plane's signed feed end to end, over real HTTP: a rewriting proxy
//! between an edge and its upstream (the control plane, or an honest relay: then the proxy is
//! a malicious relay as far as the edge can tell) replays an older `SecretPut`, widens a
//! secret's scopes, re-points a service token at another account, serves snapshots with a
//! recomputed digest (re-signed by another key, unsigned, or with the root's signature over the
//! genuine digest), and downgrades the media type; each is refused, raises the replication
//! alarm, and the edge keeps serving its last good state. Also: the pin (trust on first use or
//! `--feed-key`) survives a restart and is never replaced, a `--feed-key` that disagrees with
//! it refuses to start, and a relay tier (forwarding the root's signed snapshots) works with
//! verification on.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use coffer_client::{DeployService, SecretBinding};
use coffer_edge::{EdgeError, EdgeOptions, FeedKey};
use coffer_replication::wire::{FeedAnswer, FeedBody, Frame, FrameDecoder};
use coffer_replication::{FeedKeyPair, Position, SnapshotDigest};
use coffer_storage::{ChangeRecord, FeedSignature};
use serde_json::Value;

mod common;
use common::proxy::{Answer, Served, ask_upstream, node_with_key, read_request, respond, serve};
use common::*;

// ---- a rewriting proxy ----

/// What the proxy does to the signatures of a feed answer it rewrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signatures {
    /// Left as the root made them (over the genuine hashes).
    Keep,
    /// Dropped.
    Strip,
    /// Replaced by signatures of the attacker's own key over the rewritten hashes.
    Resign,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attack {
    /// Passes everything on unchanged.
    None,
    /// The newest `SecretPut` of the secret replaced by an older one of the same secret.
    ReplayOlderPut,
    /// A `SecretPut`'s scopes widened to every scope there is.
    WidenScopes,
    /// A `ServiceTokenPut` moved to another account.
    RepointServiceToken,
    /// Feed answers passed on as the unsigned v1 media type.
    DowngradeMediaType,
    /// The edge frozen: every feed answer replaced by an empty one claiming that the asked
    /// position is the head, with a fresh unsigned origin time, and carrying the last genuine
    /// freshness statement seen before the freeze (replayed) or none.
    Freeze,
}

struct ProxyState {
    upstream: String,
    attack: Mutex<(Attack, Signatures)>,
    /// How snapshots are forged while an attack is on (or, with `Attack::None`, when
    /// `forge_snapshots` is set): an item changed and the digest recomputed.
    forge_snapshots: Mutex<Option<Signatures>>,
    /// The attacker's key.
    impostor: FeedKeyPair,
    /// Answer `/replication/v1/feed-key` with the impostor's key.
    impostor_key: std::sync::atomic::AtomicBool,
    /// The chain hash of every position passed on (entries and snapshot heads).
    hashes: Mutex<HashMap<u64, [u8; 32]>>,
    /// Every `SecretPut` payload passed on, oldest first.
    puts: Mutex<Vec<Vec<u8>>>,
    /// Feed answers rewritten, and snapshots forged.
    rewritten: AtomicU64,
    forged: AtomicU64,
    /// How each snapshot forged by `forge_snapshot` was signed, in order.
    forged_as: Mutex<Vec<Signatures>>,
    /// The last genuine freshness statement passed on.
    last_statement: Mutex<Option<coffer_replication::Freshness>>,
    /// The first snapshot passed on, as it was.
    recorded_snapshot: Mutex<Option<Vec<u8>>>,
    /// Answer snapshot requests with the recorded snapshot.
    replay_snapshot: std::sync::atomic::AtomicBool,
}

struct Proxy {
    url: String,
    state: Arc<ProxyState>,
    _served: Served,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.to_owned(),
            attack: Mutex::new((Attack::None, Signatures::Keep)),
            forge_snapshots: Mutex::new(None),
            impostor: FeedKeyPair::generate().unwrap().0,
            impostor_key: Default::default(),
            hashes: Mutex::default(),
            puts: Mutex::default(),
            rewritten: AtomicU64::new(0),
            forged: AtomicU64::new(0),
            forged_as: Mutex::default(),
            last_statement: Mutex::default(),
            recorded_snapshot: Mutex::default(),
            replay_snapshot: Default::default(),
        });
        let app = {
            let state = state.clone();
            axum::Router::new().fallback(move |req: Request| forward(state.clone(), req))
        };
        let served = serve(app).await;
        Proxy {
            url: served.url.clone(),
            state,
            _served: served,
        }
    }

    /// Turns an attack on: feed answers rewritten, and snapshots forged (so that the edge
    /// cannot resync to the new state either).
    fn attack(&self, attack: Attack, signatures: Signatures, snapshots: Signatures) {
        *self.state.attack.lock().unwrap() = (attack, signatures);
        *self.state.forge_snapshots.lock().unwrap() = Some(snapshots);
    }

    fn honest(&self) {
        *self.state.attack.lock().unwrap() = (Attack::None, Signatures::Keep);
        *self.state.forge_snapshots.lock().unwrap() = None;
    }

    fn rewritten(&self) -> u64 {
        self.state.rewritten.load(Ordering::SeqCst)
    }

    fn forged(&self) -> u64 {
        self.state.forged.load(Ordering::SeqCst)
    }

    /// Snapshots forged so far with their signature made as `mode` says.
    fn forged_as(&self, mode: Signatures) -> usize {
        let modes = self.state.forged_as.lock().unwrap();
        modes.iter().filter(|m| **m == mode).count()
    }
}

async fn forward(state: Arc<ProxyState>, req: Request) -> Response {
    let asked = read_request(req).await;
    let path = asked.path.as_str();
    if path.starts_with("/replication/v1/feed-key") && state.impostor_key.load(Ordering::SeqCst) {
        return axum::Json(serde_json::json!({
            "success": true, "errors": [], "messages": [],
            "result": { "public_key": state.impostor.public_key().to_hex() },
        }))
        .into_response();
    }
    let Answer {
        status,
        mut content_type,
        mut bytes,
    } = match ask_upstream(&state.upstream, &asked).await {
        Ok(answer) => answer,
        Err(failed) => return failed,
    };
    if status == StatusCode::OK {
        let (attack, signatures) = *state.attack.lock().unwrap();
        if path.starts_with("/replication/v1/feed?") {
            if attack == Attack::Freeze {
                bytes = freeze_feed(&state, path, bytes);
            } else if attack == Attack::DowngradeMediaType {
                state.rewritten.fetch_add(1, Ordering::SeqCst);
                content_type = Some("application/vnd.coffer.feed.v1".parse().unwrap());
            } else {
                bytes = rewrite_feed(&state, attack, signatures, bytes);
            }
        } else if path.starts_with("/replication/v1/snapshot") {
            let mut recorded = state.recorded_snapshot.lock().unwrap();
            if state.replay_snapshot.load(Ordering::SeqCst)
                && let Some(old) = recorded.clone()
            {
                state.forged.fetch_add(1, Ordering::SeqCst);
                bytes = old;
            } else {
                recorded.get_or_insert_with(|| bytes.clone());
                drop(recorded);
                bytes = forge_snapshot(&state, bytes);
            }
        }
    }
    respond(status, content_type, Body::from(bytes))
}

/// An empty answer claiming the asked position is the head, stamped now (unsigned), with the
/// last genuine statement seen before the freeze.
fn freeze_feed(state: &ProxyState, path: &str, bytes: Vec<u8>) -> Vec<u8> {
    let Ok(answer) = FeedAnswer::decode(&bytes) else {
        return bytes;
    };
    let after: u64 = path
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("after="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    state.rewritten.fetch_add(1, Ordering::SeqCst);
    FeedAnswer {
        head_seq: after,
        origin_ms: coffer_replication::wire::unix_ms(),
        freshness: *state.last_statement.lock().unwrap(),
        body: FeedBody::Entries {
            entries: Vec::new(),
            signatures: Vec::new(),
        },
        ..answer
    }
    .encode()
}

/// Applies the attack to a feed answer (re-chaining the entries, so the hash chain holds).
/// Remembers what it passes on.
fn rewrite_feed(
    state: &ProxyState,
    attack: Attack,
    signatures_mode: Signatures,
    bytes: Vec<u8>,
) -> Vec<u8> {
    let Ok(mut answer) = FeedAnswer::decode(&bytes) else {
        return bytes;
    };
    if answer.freshness.is_some() {
        *state.last_statement.lock().unwrap() = answer.freshness;
    }
    let cluster = answer.cluster_id;
    let FeedBody::Entries {
        entries,
        signatures,
    } = &mut answer.body
    else {
        return bytes;
    };
    let target = entries.iter().position(|e| {
        let v: Value = serde_json::from_slice(&e.payload).unwrap_or_default();
        match attack {
            Attack::ReplayOlderPut | Attack::WidenScopes => v["type"] == "secret_put",
            Attack::RepointServiceToken => v["type"] == "service_token_put",
            Attack::None | Attack::DowngradeMediaType | Attack::Freeze => false,
        }
    });
    let rewritten = target.and_then(|i| {
        let mut v: Value = serde_json::from_slice(&entries[i].payload).unwrap();
        match attack {
            Attack::ReplayOlderPut => {
                let puts = state.puts.lock().unwrap();
                let older = puts.iter().rev().find(|p| {
                    let old: Value = serde_json::from_slice(p).unwrap();
                    old["secret_id"] == v["secret_id"]
                        && old["version"].as_u64() < v["version"].as_u64()
                })?;
                v = serde_json::from_slice(older).unwrap();
            }
            Attack::WidenScopes => {
                v["scopes"] = serde_json::json!([
                    "workers",
                    "ai_gateway",
                    "dex",
                    "access",
                    "containers",
                    "websearch"
                ]);
            }
            Attack::RepointServiceToken => {
                v["account_id"] = Value::String("0123456789abcdef0123456789abcdef".into());
            }
            Attack::None | Attack::DowngradeMediaType | Attack::Freeze => return None,
        }
        Some((i, serde_json::to_vec(&v).unwrap()))
    });
    let Some((i, payload)) = rewritten else {
        // Passed on as it is: remembered.
        let mut hashes = state.hashes.lock().unwrap();
        let mut puts = state.puts.lock().unwrap();
        for e in entries.iter() {
            hashes.insert(e.seq, e.hash);
            if e.payload.starts_with(b"{\"type\":\"secret_put\"") {
                puts.push(e.payload.clone());
            }
        }
        return bytes;
    };
    let prev = if i == 0 {
        let known = state
            .hashes
            .lock()
            .unwrap()
            .get(&(entries[0].seq - 1))
            .copied();
        let Some(prev) = known else {
            return bytes;
        };
        prev
    } else {
        entries[i - 1].hash
    };
    entries[i].payload = payload;
    let mut prev = prev;
    for e in &mut entries[i..] {
        e.hash = ChangeRecord::chain_hash(&prev, e.seq, &e.payload);
        prev = e.hash;
    }
    match signatures_mode {
        Signatures::Keep => {}
        Signatures::Strip => signatures.clear(),
        Signatures::Resign => {
            let hash_of: HashMap<u64, [u8; 32]> = entries.iter().map(|e| (e.seq, e.hash)).collect();
            for s in signatures.iter_mut() {
                s.signature = state
                    .impostor
                    .sign_checkpoint(&cluster, s.seq, &hash_of[&s.seq]);
            }
            if signatures.is_empty()
                && let Some(last) = entries.last()
            {
                signatures.push(FeedSignature {
                    seq: last.seq,
                    signature: state
                        .impostor
                        .sign_checkpoint(&cluster, last.seq, &last.hash),
                });
            }
        }
    }
    state.rewritten.fetch_add(1, Ordering::SeqCst);
    answer.encode()
}

/// While forging is on: one item's sealed value changed, the digest recomputed over the
/// changed items, and the signature as the mode says. Otherwise the snapshot's head is
/// remembered and it is passed on.
fn forge_snapshot(state: &ProxyState, bytes: Vec<u8>) -> Vec<u8> {
    let mut dec = FrameDecoder::new();
    dec.push(&bytes);
    let mut frames = Vec::new();
    while let Ok(Some(f)) = dec.next_frame() {
        frames.push(f);
    }
    let Some(Frame::SnapshotHeader {
        cluster_id,
        position,
        count,
        origin_ms,
    }) = frames.first().cloned()
    else {
        return bytes;
    };
    let Some(mode) = *state.forge_snapshots.lock().unwrap() else {
        state
            .hashes
            .lock()
            .unwrap()
            .insert(position.seq, position.hash);
        return bytes;
    };
    let target = frames
        .iter()
        .position(|f| matches!(f, Frame::Item(i) if i.windows(10).any(|w| w == b"sealed_hex")));
    let Some(target) = target else {
        return bytes;
    };
    if let Frame::Item(item) = &mut frames[target] {
        const KEY: &[u8] = b"sealed_hex\":\"";
        let at = item.windows(KEY.len()).position(|w| w == KEY).unwrap() + KEY.len() + 8;
        item[at] = if item[at] == b'0' { b'1' } else { b'0' };
    }
    let mut digest = SnapshotDigest::new(position, count);
    for f in &frames {
        if let Frame::Item(item) = f {
            digest.update(item);
        }
    }
    let digest = digest.finish().unwrap();
    let resigned = forged_seal(
        state,
        mode,
        &cluster_id,
        (position, count, origin_ms),
        &digest,
    );
    if let Some(Frame::SnapshotEnd {
        digest: d,
        signature,
    }) = frames.last_mut()
    {
        *d = digest;
        if mode != Signatures::Keep {
            *signature = resigned;
        }
    }
    state.forged_as.lock().unwrap().push(mode);
    state.forged.fetch_add(1, Ordering::SeqCst);
    frames.iter().flat_map(Frame::to_bytes).collect()
}

fn forged_seal(
    state: &ProxyState,
    mode: Signatures,
    cluster: &[u8; 16],
    (position, count, origin_ms): (Position, u64, u64),
    digest: &[u8; 32],
) -> Option<[u8; 64]> {
    match mode {
        Signatures::Keep | Signatures::Strip => None,
        Signatures::Resign => Some(
            state
                .impostor
                .sign_snapshot(cluster, position, count, digest, origin_ms),
        ),
    }
}

// ---- helpers ----

/// Quick to give up on a bad upstream and to come back to it, so that rounds stay short.
fn options(upstream: &str, token: &str, dir: &Path, key: Option<FeedKey>) -> EdgeOptions {
    let mut opts = edge_options(&[upstream], token, dir);
    opts.staleness = Duration::from_secs(8);
    opts.feed_key = key;
    opts
}

/// Waits until the edge counts more alarms than `before` and its health says why.
async fn wait_alarm(edge: &Edge, before: u64, kind: &str) -> Value {
    wait_until("an alarm", PROMPTLY, || async {
        edge.alarms().await > before
    })
    .await;
    let (status, health) = edge.health().await;
    assert_eq!(status, 200, "it keeps serving: {health}");
    assert_eq!(health["status"], "degraded", "{health}");
    let last = health["last_alarm"].as_str().unwrap_or_default();
    assert!(last.contains(kind), "alarm {kind} expected: {health}");
    health
}

// ---- the tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewriting_proxy_is_refused_and_the_edge_keeps_its_last_good_state() {
    let w = world("v1", "probe-only").await;
    let (token, key) = node_with_key(&w.cp, "edge-a").await;
    let proxy = Proxy::start(&w.cp.url).await;
    let dir = w.tmp.path().join("edge");
    let edge = Edge::start_with(options(&proxy.url, &token, &dir, Some(key))).await;
    edge.wait_serving().await;
    edge.wait_applied(w.cp.head().await).await;
    assert_eq!(edge.health().await.1["feed_key"], key.to_hex());
    // Two versions through the feed, so there is an older SecretPut to replay.
    for v in ["v2", "v3"] {
        w.cp.set_value(&w.b, v).await;
        edge.wait_applied(w.cp.head().await).await;
    }
    assert_eq!(edge.value(&w.b.token, "K").await, "v3");

    // (a) an older SecretPut replayed in place of the new one, re-chained and re-signed by
    // the attacker; snapshots forged with a recomputed digest and the attacker's signature.
    let before = edge.alarms().await;
    proxy.attack(
        Attack::ReplayOlderPut,
        Signatures::Resign,
        Signatures::Resign,
    );
    w.cp.set_value(&w.b, "v4").await;
    let health = wait_alarm(&edge, before, "BadSignature").await;
    assert!(proxy.rewritten() >= 1);
    assert_eq!(edge.value(&w.b.token, "K").await, "v3", "{health}");
    assert!(edge.status.applied_seq() < w.cp.head().await);
    // Resyncing, it is offered forged snapshots: refused too, still serving v3.
    wait_until("a forged snapshot", PROMPTLY, || async {
        proxy.forged() >= 1
    })
    .await;
    let refused = edge.alarms().await;
    wait_until("its refusal", PROMPTLY, || async {
        edge.alarms().await > refused
    })
    .await;
    assert_eq!(edge.value(&w.b.token, "K").await, "v3");
    proxy.honest();
    edge.wait_applied(w.cp.head().await).await;
    assert_eq!(edge.value(&w.b.token, "K").await, "v4");

    // (b) the secret's scopes widened, the root's signatures kept (over the genuine hashes);
    // snapshots forged and unsigned.
    let before = edge.alarms().await;
    let rewritten = proxy.rewritten();
    proxy.attack(Attack::WidenScopes, Signatures::Keep, Signatures::Strip);
    w.cp.set_value(&w.b, "v5").await;
    wait_alarm(&edge, before, "BadSignature").await;
    assert!(proxy.rewritten() > rewritten);
    assert_eq!(edge.value(&w.b.token, "K").await, "v4");
    let forged = proxy.forged();
    wait_until("a forged snapshot", PROMPTLY, || async {
        proxy.forged() > forged
    })
    .await;
    assert_eq!(edge.value(&w.b.token, "K").await, "v4");
    proxy.honest();
    edge.wait_applied(w.cp.head().await).await;
    assert_eq!(edge.value(&w.b.token, "K").await, "v5");

    // (c) a new service token re-pointed at another account, signatures stripped; snapshots
    // forged with the root's signature left over the genuine digest.
    let before = edge.alarms().await;
    let rewritten = proxy.rewritten();
    proxy.attack(
        Attack::RepointServiceToken,
        Signatures::Strip,
        Signatures::Keep,
    );
    let deployed =
        w.cp.client
            .deploy_service(&DeployService {
                name: "svc2".into(),
                kind: None,
                secrets_store_secrets: vec![SecretBinding {
                    binding: "K".into(),
                    store_id: w.b.store.clone(),
                    secret_name: "k".into(),
                }],
                secrets_store_stores: vec![],
            })
            .await
            .unwrap();
    let token2 = deployed.service_token.unwrap().expose_secret().to_owned();
    wait_alarm(&edge, before, "BadSignature").await;
    assert!(proxy.rewritten() > rewritten);
    let (status, body) = edge.read(&token2, "K").await;
    assert_eq!(status, 401, "the new service is not on the edge: {body}");
    assert_eq!(edge.value(&w.b.token, "K").await, "v5");
    proxy.honest();
    edge.wait_applied(w.cp.head().await).await;
    assert_eq!(edge.value(&token2, "K").await, "v5");

    // A feed answer of the unsigned media type: refused as it is, never read.
    let before = edge.alarms().await;
    proxy.attack(
        Attack::DowngradeMediaType,
        Signatures::Keep,
        Signatures::Resign,
    );
    w.cp.set_value(&w.b, "v6").await;
    wait_alarm(&edge, before, "media type").await;
    assert_eq!(edge.value(&w.b.token, "K").await, "v5");
    proxy.honest();
    edge.wait_applied(w.cp.head().await).await;
    assert_eq!(edge.value(&w.b.token, "K").await, "v6");
    let mut edge = edge;
    edge.stop().await;
}

/// (d) A fresh edge offered only forged snapshots (digest recomputed; signed by another key,
/// unsigned, or with the root's signature over the genuine digest) installs none of them.
///
/// Every wait is for an event, with a bound generous enough for a loaded CI machine (a slow
/// round costs only time); the forgery is on before the edge starts, so no genuine snapshot
/// can slip in first however the start is scheduled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_snapshots_are_never_installed() {
    const UNDER_LOAD: Duration = Duration::from_secs(180);
    let w = world("v1", "probe-only").await;
    let (token, key) = node_with_key(&w.cp, "edge-d").await;
    let proxy = Proxy::start(&w.cp.url).await;
    let modes = [Signatures::Resign, Signatures::Strip, Signatures::Keep];
    proxy.attack(Attack::None, Signatures::Keep, modes[0]);
    let mut edge = Edge::start_with(options(
        &proxy.url,
        &token,
        &w.tmp.path().join("edge"),
        Some(key),
    ))
    .await;
    for mode in modes {
        let before = edge.alarms().await;
        proxy.attack(Attack::None, Signatures::Keep, mode);
        // The edge asks for the next snapshot only once it has judged the one before: a
        // second one forged this way means the first reached it and was refused.
        wait_until("two snapshots forged this way", UNDER_LOAD, || async {
            proxy.forged_as(mode) >= 2
        })
        .await;
        wait_until("their refusal", UNDER_LOAD, || async {
            edge.alarms().await > before
        })
        .await;
        let (status, health) = edge.health().await;
        assert_eq!(status, 503, "nothing installed ({mode:?}): {health}");
        assert_eq!(health["status"], "syncing");
        assert!(
            health["last_alarm"]
                .as_str()
                .unwrap()
                .contains("BadSignature"),
            "{mode:?}: {health}"
        );
        assert_eq!(edge.status.applied_seq(), 0);
    }
    proxy.honest();
    edge.wait_serving_within(UNDER_LOAD).await;
    assert_eq!(edge.value(&w.b.token, "K").await, "v1");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_learnt_on_first_use_survives_a_restart_and_is_never_replaced() {
    let mut w = world("v1", "probe-only").await;
    let (token, key) = node_with_key(&w.cp, "edge-t").await;
    let dir = w.tmp.path().join("edge");
    // No --feed-key: the key is learnt from the first upstream, and stored.
    let mut edge = Edge::start_with(options(&w.cp.url, &token, &dir, None)).await;
    edge.wait_serving().await;
    let pinned = std::fs::read_to_string(dir.join("feed.pub")).unwrap();
    assert_eq!(pinned.trim(), key.to_hex());
    assert_eq!(edge.health().await.1["feed_key"], key.to_hex());
    edge.stop().await;

    // Restarted behind an impostor that names its own key and re-signs what it rewrites: the
    // pin stands, the forgery is refused, the edge serves what it had.
    let proxy = Proxy::start(&w.cp.url).await;
    proxy.state.impostor_key.store(true, Ordering::SeqCst);
    let mut edge = Edge::start_with(options(&proxy.url, &token, &dir, None)).await;
    edge.wait_serving().await;
    assert_eq!(edge.health().await.1["feed_key"], key.to_hex());
    // One honest write through the proxy first (it re-chains from what it has seen).
    w.cp.set_value(&w.b, "v2").await;
    edge.wait_applied(w.cp.head().await).await;
    let before = edge.alarms().await;
    proxy.attack(Attack::WidenScopes, Signatures::Resign, Signatures::Resign);
    w.cp.set_value(&w.b, "v3").await;
    wait_alarm(&edge, before, "BadSignature").await;
    assert_eq!(edge.value(&w.b.token, "K").await, "v2");
    edge.stop().await;
    assert_eq!(
        std::fs::read_to_string(dir.join("feed.pub")).unwrap(),
        pinned,
        "never replaced"
    );

    // A --feed-key that disagrees with the pin: refused at start, in one line.
    let other = FeedKeyPair::generate().unwrap().0.public_key();
    let started = tokio::time::timeout(
        Duration::from_secs(10),
        coffer_edge::run(
            options(&w.cp.url, &token, &dir, Some(other)),
            |_, _| {},
            async {},
        ),
    )
    .await
    .expect("refused at once");
    let e = started.unwrap_err();
    assert!(matches!(e, EdgeError::FeedKeyMismatch { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&other.to_hex()) && text.contains(&key.to_hex()),
        "{text}"
    );
    assert!(!text.contains('\n'));
    // A replica whose pin is gone is not pinned again on first use: whoever answered could
    // name its own key. Refused at start; the key given, it serves.
    std::fs::remove_file(dir.join("feed.pub")).unwrap();
    let started = tokio::time::timeout(
        Duration::from_secs(10),
        coffer_edge::run(options(&w.cp.url, &token, &dir, None), |_, _| {}, async {}),
    )
    .await
    .expect("refused at once");
    let e = started.unwrap_err();
    assert!(matches!(e, EdgeError::FeedKeyRequired { .. }), "{e}");
    assert!(e.to_string().contains("--feed-key"), "{e}");
    assert!(
        !dir.join("feed.pub").exists(),
        "nothing pinned by the refusal"
    );
    // The same key as the pin is fine, and it still serves.
    let mut edge = Edge::start_with(options(&w.cp.url, &token, &dir, Some(key))).await;
    edge.wait_serving().await;
    edge.wait_applied(w.cp.head().await).await;
    assert_eq!(edge.value(&w.b.token, "K").await, "v3");
    edge.stop().await;
    w.cp.stop().await;
}

/// An edge given the wrong key from the start (or pinned to another control plane's) applies
/// nothing the real one signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_pinned_to_another_key_applies_nothing() {
    let w = world("v1", "probe-only").await;
    let (token, _) = node_with_key(&w.cp, "edge-w").await;
    let other = FeedKeyPair::generate().unwrap().0.public_key();
    let mut edge = Edge::start_with(options(
        &w.cp.url,
        &token,
        &w.tmp.path().join("edge"),
        Some(other),
    ))
    .await;
    wait_until("an alarm", PROMPTLY, || async { edge.alarms().await > 0 }).await;
    let (status, health) = edge.health().await;
    assert_eq!(status, 503, "{health}");
    assert!(
        health["last_alarm"]
            .as_str()
            .unwrap()
            .contains("BadSignature"),
        "{health}"
    );
    assert_eq!(edge.status.applied_seq(), 0);
    edge.stop().await;
}

/// root -> relay -> edge with verification on: the relay pins the root's key, tells it to the
/// edge below (trust on first use), and forwards the root's signed snapshots; a proxy between
/// the relay and another edge (a malicious relay, as that edge sees it) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_tier_verifies_end_to_end_and_a_malicious_relay_is_refused() {
    let w = world("v1", "probe-only").await;
    let (relay_token, key) = node_with_key(&w.cp, "relay").await;
    let (edge_token, _) = node_with_key(&w.cp, "edge-r").await;
    let (edge2_token, _) = node_with_key(&w.cp, "edge-m").await;
    let mut relay_opts = options(&w.cp.url, &relay_token, &w.tmp.path().join("relay"), None);
    relay_opts.serve_feed = true;
    let mut relay = Edge::start_with(relay_opts).await;
    relay.wait_serving().await;
    relay.wait_applied(w.cp.head().await).await;

    // An edge below the relay, trusting the first key it hears: the root's, through the relay.
    let edge_dir = w.tmp.path().join("edge");
    let mut edge = Edge::start_with(options(&relay.url, &edge_token, &edge_dir, None)).await;
    edge.wait_serving().await;
    assert_eq!(
        std::fs::read_to_string(edge_dir.join("feed.pub"))
            .unwrap()
            .trim(),
        key.to_hex()
    );
    assert_eq!(edge.value(&w.b.token, "K").await, "v1");
    w.cp.set_value(&w.b, "v2").await;
    edge.wait_applied(w.cp.head().await).await;
    assert_eq!(edge.value(&w.b.token, "K").await, "v2");
    assert_eq!(edge.alarms().await, 0, "{:?}", edge.health().await);

    // The relay forwards the root's freshness statement, unchanged (it cannot make one).
    let feed = |after: u64, wait_ms: u64| {
        let url = format!(
            "{}/replication/v1/feed?after={after}&wait_ms={wait_ms}",
            relay.url
        );
        // A node with no edge running yet: it holds no long-poll but these.
        let token = edge2_token.clone();
        async move {
            let started = std::time::Instant::now();
            let res = http().get(url).bearer_auth(token).send().await.unwrap();
            let status = res.status().as_u16();
            let body = res.bytes().await.unwrap();
            (status, body, started.elapsed())
        }
    };
    let (status, body, _) = feed(relay.status.applied_seq(), 0).await;
    assert_eq!(status, 200);
    let answer = FeedAnswer::decode(&body).unwrap();
    let head = answer.head_seq;
    let statement = answer.freshness.expect("forwarded");
    assert!(statement.verifies(&key));
    // (L3) A position past every head the relay knows of is refused at once, not held for
    // the long-poll.
    let (status, _, took) = feed(u64::MAX, 30_000).await;
    assert_eq!(status, 400);
    assert!(took < Duration::from_secs(5), "held {took:?}");
    // At most 4 long-polls per node: a fifth is answered without waiting.
    let held: Vec<_> = (0..4).map(|_| tokio::spawn(feed(head, 8_000))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _, took) = feed(head, 8_000).await;
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_secs(4),
        "a fifth long-poll waited {took:?}"
    );
    for h in held {
        let (status, _, took) = h.await.unwrap();
        assert_eq!(status, 200);
        assert!(
            took >= Duration::from_secs(4),
            "the first four wait: {took:?}"
        );
    }

    // A malicious relay: rewrites what the honest relay serves.
    let proxy = Proxy::start(&relay.url).await;
    let mut edge2 = Edge::start_with(options(
        &proxy.url,
        &edge2_token,
        &w.tmp.path().join("edge2"),
        Some(key),
    ))
    .await;
    edge2.wait_serving().await;
    edge2.wait_applied(w.cp.head().await).await;
    let before = edge2.alarms().await;
    proxy.attack(Attack::WidenScopes, Signatures::Resign, Signatures::Resign);
    w.cp.set_value(&w.b, "v3").await;
    wait_alarm(&edge2, before, "BadSignature").await;
    assert_eq!(edge2.value(&w.b.token, "K").await, "v2");
    // The honest path is unaffected.
    edge.wait_applied(w.cp.head().await).await;
    assert_eq!(edge.value(&w.b.token, "K").await, "v3");
    proxy.honest();
    edge2.wait_applied(w.cp.head().await).await;
    assert_eq!(edge2.value(&w.b.token, "K").await, "v3");
    for e in [&mut edge2, &mut edge, &mut relay] {
        e.stop().await;
    }
}

// ---- freshness: withholding and replays ----

/// (H1) A proxy that freezes the edge (empty answers, a fresh unsigned origin, the last
/// genuine statement replayed): the edge says so (degraded), goes stale, and stops serving
/// past `--max-staleness`; never fresh on the proxy's word. Then (with a second upstream) it
/// fails over and the write withheld arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freezing_proxy_makes_the_edge_go_stale_and_fail_over() {
    let w = world("v1", "probe-only").await;
    let (token, key) = node_with_key(&w.cp, "edge-h1").await;
    let proxy = Proxy::start(&w.cp.url).await;
    let mut opts = options(&proxy.url, &token, &w.tmp.path().join("edge"), Some(key));
    opts.staleness = Duration::from_secs(3);
    opts.max_staleness = Some(Duration::from_secs(6));
    let mut edge = Edge::start_with(opts).await;
    edge.wait_serving().await;
    edge.wait_applied(w.cp.head().await).await;
    assert_eq!(edge.health().await.1["status"], "ok");
    proxy.attack(Attack::Freeze, Signatures::Keep, Signatures::Keep);
    w.cp.set_value(&w.b, "withheld").await;
    wait_until("degraded", PROMPTLY, || async {
        edge.health().await.1["status"] == "degraded"
    })
    .await;
    assert!(proxy.rewritten() >= 1);
    wait_until("stale", PROMPTLY, || async {
        edge.health().await.1["status"] == "stale"
    })
    .await;
    wait_until("cut off", PROMPTLY, || async {
        edge.health().await.0 == 503
    })
    .await;
    let (status, body) = edge.read(&w.b.token, "K").await;
    assert_ne!(
        status, 200,
        "a frozen edge stops serving past --max-staleness: {body}"
    );
    assert!(edge.status.applied_seq() < w.cp.head().await);
    edge.stop().await;

    // The same proxy first, the control plane second: the edge leaves the proxy and the
    // withheld write arrives.
    let (token, key) = node_with_key(&w.cp, "edge-h1b").await;
    let proxy = Proxy::start(&w.cp.url).await;
    let mut opts = edge_options(
        &[&proxy.url, &w.cp.url],
        &token,
        &w.tmp.path().join("edge-b"),
    );
    opts.feed_key = Some(key);
    opts.staleness = Duration::from_secs(3);
    let mut edge = Edge::start_with(opts).await;
    edge.wait_serving().await;
    edge.wait_applied(w.cp.head().await).await;
    proxy.attack(Attack::Freeze, Signatures::Keep, Signatures::Keep);
    let frozen = proxy.rewritten();
    wait_until("a frozen answer", PROMPTLY, || async {
        proxy.rewritten() > frozen
    })
    .await;
    w.cp.set_value(&w.b, "after the freeze").await;
    edge.wait_applied(w.cp.head().await).await;
    assert_eq!(edge.value(&w.b.token, "K").await, "after the freeze");
    let (_, health) = edge.health().await;
    assert_eq!(health["upstream"], w.cp.url.as_str(), "{health}");
    edge.stop().await;
}

/// (M1) A snapshot recorded and replayed later to a fresh edge is refused as stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_old_snapshot_is_refused_by_a_fresh_edge() {
    let w = world("v1", "probe-only").await;
    let (token, key) = node_with_key(&w.cp, "edge-m1").await;
    let proxy = Proxy::start(&w.cp.url).await;
    // A first edge through the proxy: the proxy records the snapshot it passes on.
    let mut first = Edge::start_with(options(
        &proxy.url,
        &token,
        &w.tmp.path().join("first"),
        Some(key),
    ))
    .await;
    first.wait_serving().await;
    first.stop().await;
    assert!(proxy.state.recorded_snapshot.lock().unwrap().is_some());
    proxy.state.replay_snapshot.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A fresh edge (another node) that accepts snapshots up to 2 s old is offered the
    // recorded one.
    let (token, key) = node_with_key(&w.cp, "edge-m1b").await;
    let mut opts = options(&proxy.url, &token, &w.tmp.path().join("fresh"), Some(key));
    opts.snapshot_bounds.max_age = Duration::from_secs(2);
    let mut edge = Edge::start_with(opts).await;
    wait_until("a replayed snapshot refused", PROMPTLY, || async {
        edge.alarms().await >= 1
    })
    .await;
    let (status, health) = edge.health().await;
    assert_eq!(status, 503, "{health}");
    assert!(
        health["last_alarm"]
            .as_str()
            .unwrap_or_default()
            .contains("StaleSnapshot"),
        "{health}"
    );
    assert_eq!(edge.status.applied_seq(), 0);
    // Honest again: a current snapshot is installed.
    proxy.state.replay_snapshot.store(false, Ordering::SeqCst);
    edge.wait_serving().await;
    edge.wait_applied(w.cp.head().await).await;
    edge.stop().await;
}

/// (L4) A snapshot over the edge's bounds (item count announced, or item bytes) is refused as
/// an alarm before it is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_over_the_bounds_are_refused() {
    let w = world("v1", "probe-only").await;
    for (name, items, bytes, what) in [
        ("edge-l4a", 2, u64::MAX, "items"),
        ("edge-l4b", u64::MAX, 64, "bytes"),
    ] {
        let (token, key) = node_with_key(&w.cp, name).await;
        let mut opts = options(&w.cp.url, &token, &w.tmp.path().join(name), Some(key));
        opts.snapshot_bounds.max_items = items;
        opts.snapshot_bounds.max_bytes = bytes;
        let mut edge = Edge::start_with(opts).await;
        wait_until("an oversized snapshot refused", PROMPTLY, || async {
            edge.alarms().await >= 1
        })
        .await;
        let (status, health) = edge.health().await;
        assert_eq!(status, 503, "{health}");
        let last = health["last_alarm"].as_str().unwrap_or_default();
        assert!(
            last.contains("over the bound") && last.contains(what),
            "{health}"
        );
        assert_eq!(edge.status.applied_seq(), 0);
        edge.stop().await;
    }
}
