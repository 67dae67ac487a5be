//! The replication API (`/replication/v1`): who may call it, the feed's answers (order, chain,
//! long-polls, compaction) under concurrent writers, the streamed snapshot (shape, digest,
//! secrecy) and access-event batches (recorded once, into the audit log).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use coffer_api::ErrorCode;
use coffer_core::{AccessEvent, AccessOutcome, AccessRefusal};
use coffer_replication::wire::{
    FEED_CONTENT_TYPE, FeedAnswer, FeedBody, Frame, FrameDecoder, SNAPSHOT_CONTENT_TYPE,
};
use coffer_replication::{Position, Snapshot, SnapshotDigest};
use coffer_storage::{Change, ChangeRecord};
use coffer_types::{AccountId, SecretId, ServiceId, StoreId, Timestamp, TokenId};
use serde_json::{Value, json};

use crate::secrecy::assert_absent;
use crate::support::*;

const FEED: &str = "/replication/v1/feed";
const SNAPSHOT: &str = "/replication/v1/snapshot";
const ACCESS: &str = "/replication/v1/access";

/// An instance whose change log has its cluster id (as `coffer_server::serve` makes it at
/// start), with one registered node.
async fn replicating() -> (Harness, IssuedNode) {
    let h = Harness::new().await;
    h.coffer.storage().ensure_cluster_id().await.unwrap();
    let node = h.create_node("edge-test").await;
    (h, node)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `GET /replication/v1/feed?{query}` as `token`.
async fn feed(h: &Harness, token: &str, query: &str) -> Resp {
    h.get_as(token, &format!("{FEED}?{query}")).await
}

/// A feed answer: 200, the feed's media type, and a body that decodes whole.
#[track_caller]
fn decode_answer(r: &Resp) -> FeedAnswer {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap()),
        Some(FEED_CONTENT_TYPE)
    );
    FeedAnswer::decode(&r.bytes).unwrap_or_else(|e| panic!("feed answer does not decode: {e}"))
}

#[track_caller]
fn entries_of(a: &FeedAnswer) -> &[ChangeRecord] {
    match &a.body {
        FeedBody::Entries { entries: e, .. } => e,
        FeedBody::Compacted { base_seq } => panic!("compacted at {base_seq}, expected entries"),
    }
}

/// Checks that `entries` continue the log right after `prev`: consecutive seqs, each chaining
/// onto its predecessor, each a `Change`. Returns the position after the last one.
#[track_caller]
fn check_chain(prev: Position, entries: &[ChangeRecord]) -> Position {
    let mut prev = prev;
    for e in entries {
        assert_eq!(e.seq, prev.seq + 1, "entries are consecutive");
        assert!(
            e.follows(&prev.hash),
            "entry {} chains onto entry {}",
            e.seq,
            prev.seq
        );
        e.change()
            .unwrap_or_else(|err| panic!("entry {} is not a change: {err}", e.seq));
        prev = Position::of(e);
    }
    prev
}

async fn head_position(h: &Harness) -> Position {
    let state = h.coffer.storage().log_state().await.unwrap();
    Position {
        seq: state.head_seq,
        hash: state.head_hash,
    }
}

async fn cluster_id(h: &Harness) -> [u8; 16] {
    h.coffer
        .storage()
        .log_state()
        .await
        .unwrap()
        .cluster_id
        .expect("a cluster id")
}

/// A store with secret `k` (scope workers) bound as `K` to service `svc`.
struct Bound {
    store: String,
    secret: String,
    svc: DeployedService,
}

async fn bound(h: &Harness, value: &str) -> Bound {
    let store = h.create_store("prod").await;
    let secret = h.create_secret(&store, "k", value).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let svc = h.deploy_secrets("svc", &[("K", &store, "k")]).await;
    Bound { store, secret, svc }
}

// ---- who may call it ----

/// One call to each replication endpoint with `authorization` (a full header value, or none).
async fn call_each(h: &Harness, authorization: Option<&str>) -> Vec<(&'static str, Resp)> {
    let batch = json!({ "batch_id": random_id(), "events": [] });
    vec![
        (
            "feed",
            h.send_as(Method::GET, &format!("{FEED}?after=0"), authorization, None)
                .await,
        ),
        (
            "snapshot",
            h.send_as(Method::GET, SNAPSHOT, authorization, None).await,
        ),
        (
            "access",
            h.send_as(Method::POST, ACCESS, authorization, Some(&batch))
                .await,
        ),
    ]
}

#[tokio::test]
async fn only_a_valid_node_token_reaches_the_replication_api() {
    let (h, node) = replicating().await;
    let b = bound(&h, "auth-matrix-value").await;
    let reporter = h
        .issue_token(&h.account, "reporter", "secrets_store_reporter")
        .await;
    let revoked = h.create_node("revoked-edge").await;
    assert_ok(
        &h.raw_abs(
            Method::DELETE,
            &nodes_uri(Some(&revoked.id)),
            None,
            Body::empty(),
        )
        .await,
    );
    // Well-formed tokens that verify nowhere: a node token with the right id and a wrong
    // secret, and a service token nobody issued.
    let mut forged_node = node.token.clone();
    let last = forged_node.pop().unwrap();
    forged_node.push(if last == 'A' { 'B' } else { 'A' });
    let mut forged_svc = b.svc.token().to_owned();
    let last = forged_svc.pop().unwrap();
    forged_svc.push(if last == 'A' { 'B' } else { 'A' });

    let refused: Vec<(&str, Option<String>, ErrorCode, &str)> = vec![
        (
            "no credentials",
            None,
            ErrorCode::Unauthenticated,
            "Authorization",
        ),
        (
            "garbage",
            Some("Bearer garbage".into()),
            ErrorCode::Unauthenticated,
            "",
        ),
        (
            "basic scheme",
            Some(format!("Basic {}", node.token)),
            ErrorCode::Unauthenticated,
            "Bearer",
        ),
        (
            "the operator's API token",
            Some(h.bearer()),
            ErrorCode::WrongTokenKind,
            "node token",
        ),
        (
            "a reporter API token",
            Some(reporter.bearer()),
            ErrorCode::WrongTokenKind,
            "node token",
        ),
        (
            "a service token",
            Some(bearer(b.svc.token())),
            ErrorCode::WrongTokenKind,
            "node token",
        ),
        (
            "a forged service token",
            Some(bearer(&forged_svc)),
            ErrorCode::Unauthenticated,
            "",
        ),
        (
            "a forged node token",
            Some(bearer(&forged_node)),
            ErrorCode::Unauthenticated,
            "",
        ),
        (
            "a revoked node token",
            Some(bearer(&revoked.token)),
            ErrorCode::NodeRevoked,
            "revoked",
        ),
    ];
    let head = h.change_head().await;
    let mark = h.transcript().len();
    for (who, auth, code, needle) in &refused {
        for (endpoint, r) in call_each(&h, auth.as_deref()).await {
            assert_eq!(
                r.status.as_u16(),
                code.http_status(),
                "{who} on {endpoint}: {}",
                r.text()
            );
            let e = assert_err(&r, *code, needle);
            assert_eq!(
                e["code"],
                json!(code.code()),
                "{who} on {endpoint}: {}",
                r.text()
            );
        }
    }
    assert_eq!(
        h.change_head().await,
        head,
        "refused calls append nothing to the log"
    );
    assert_eq!(ErrorCode::WrongTokenKind.code(), 1104);

    // The valid node token is served by all three.
    for (endpoint, r) in call_each(&h, Some(&bearer(&node.token))).await {
        assert_eq!(r.status, StatusCode::OK, "{endpoint}: {}", r.text());
    }

    // And it is good for nothing else: the v4 API and the runtime API refuse it as the wrong
    // kind of token.
    let bearer_node = bearer(&node.token);
    for uri in [
        format!("{V4}/{}", h.account),
        h.api("/stores"),
        h.api(&format!("/stores/{}/secrets/{}", b.store, b.secret)),
        nodes_uri(None),
        format!("{RUNTIME}/bindings"),
        format!("{RUNTIME}/bindings/K"),
    ] {
        let r = h.send_as(Method::GET, &uri, Some(&bearer_node), None).await;
        assert_err(&r, ErrorCode::WrongTokenKind, "");
    }
    // Nor does any of these answers carry a token.
    let transcript = h.transcript();
    for t in [
        &node.token,
        &revoked.token,
        &h.token,
        &reporter.value,
        &forged_node,
    ] {
        assert!(!contains(&transcript[mark..], t.as_bytes()));
    }
}

// ---- the feed ----

#[tokio::test]
async fn feed_queries_are_checked_and_name_the_parameter() {
    let (h, node) = replicating().await;
    let head = h.change_head().await;
    let cases: Vec<(String, &str, &str)> = vec![
        (String::new(), "after", "required"),
        ("wait=1".into(), "after", "required"),
        ("after=".into(), "after", "sequence number"),
        ("after=abc".into(), "after", "sequence number"),
        ("after=-1".into(), "after", "sequence number"),
        ("after=1.5".into(), "after", "sequence number"),
        ("after=0&wait=soon".into(), "wait", "seconds"),
        ("after=0&wait=-1".into(), "wait", "seconds"),
        ("after=0&wait_ms=1s".into(), "wait_ms", "milliseconds"),
        ("after=0&limit=5".into(), "limit", "unknown query parameter"),
        ("after=0&After=0".into(), "After", "unknown query parameter"),
        (format!("after={}", head + 1), "after", "beyond the head"),
        (format!("after={}", u64::MAX), "after", "beyond the head"),
    ];
    for (query, pointer, needle) in cases {
        let r = feed(&h, &node.token, &query).await;
        let e = assert_err(&r, ErrorCode::InvalidQuery, needle);
        assert_eq!(
            e["source"]["pointer"],
            json!(pointer),
            "{query:?}: {}",
            r.text()
        );
    }
    // `after` beyond the head is refused even with a wait: it is not a long-poll for entries
    // that this log will never have. The refusal names the cluster and the head in headers,
    // so that an edge can tell an upstream of another cluster from one that is behind.
    let r = feed(&h, &node.token, &format!("after={}&wait=2", head + 5)).await;
    assert_err(&r, ErrorCode::InvalidQuery, "beyond the head");
    let header = |name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header("coffer-log-head"), Some(head.to_string()));
    assert_eq!(
        header("coffer-cluster-id"),
        Some(hex::encode(cluster_id(&h).await))
    );
    assert_eq!(h.change_head().await, head);
}

#[tokio::test]
async fn the_feed_serves_every_entry_in_order_chained_with_the_cluster_id() {
    let (h, node) = replicating().await;
    let b = bound(&h, "feed-order-value").await;
    let r = h
        .patch(
            &format!("/stores/{}/secrets/{}", b.store, b.secret),
            &json!({ "value": "feed-order-value-2" }),
        )
        .await;
    assert_ok(&r);
    let head = head_position(&h).await;
    assert!(head.seq >= 5, "a few writes: {head:?}");
    let cluster = cluster_id(&h).await;

    let before = coffer_replication::wire::unix_ms();
    let a = decode_answer(&feed(&h, &node.token, "after=0").await);
    let after = coffer_replication::wire::unix_ms();
    assert_eq!(a.cluster_id, cluster);
    assert_eq!(a.head_seq, head.seq);
    assert!(
        before <= a.origin_ms && a.origin_ms <= after,
        "the root stamps its own clock: {} not in [{before}, {after}]",
        a.origin_ms
    );
    let all = entries_of(&a).to_vec();
    assert_eq!(all.len() as u64, head.seq, "every entry");
    assert_eq!(
        check_chain(Position::GENESIS, &all),
        head,
        "ends at the head"
    );
    // The entries are the log's, byte for byte.
    assert_eq!(
        all,
        h.coffer.storage().changes_after(0, 10_000).await.unwrap()
    );
    // Both versions of the secret are there, sealed.
    let versions: Vec<u32> = all
        .iter()
        .filter_map(|e| match e.change().unwrap() {
            Change::SecretPut {
                secret_id, version, ..
            } if secret_id.to_string() == b.secret => Some(version),
            _ => None,
        })
        .collect();
    assert_eq!(versions, vec![1, 2]);
    for e in &all {
        assert!(
            !contains(&e.payload, b"feed-order-value"),
            "plaintext in {e:?}"
        );
    }

    // From the middle: the rest, identical; the cluster id does not change between answers.
    for after in [1, head.seq / 2, head.seq - 1] {
        let a = decode_answer(&feed(&h, &node.token, &format!("after={after}")).await);
        assert_eq!(a.cluster_id, cluster);
        assert_eq!(a.head_seq, head.seq);
        assert_eq!(entries_of(&a), &all[after as usize..]);
    }
    // At the head, without a wait: at once, empty, a heartbeat.
    let start = Instant::now();
    let a = decode_answer(&feed(&h, &node.token, &format!("after={}", head.seq)).await);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(entries_of(&a).is_empty());
    assert_eq!((a.cluster_id, a.head_seq), (cluster, head.seq));
}

#[tokio::test]
async fn a_long_log_is_served_in_answers_of_at_most_1000_entries_or_one_write_batch() {
    let (h, node) = replicating().await;
    let store = h.create_store("bulk").await;
    let items: Vec<Value> = (0..1000)
        .map(|i| secret_item(&format!("S{i:04}"), "v", &["workers"]))
        .collect();
    h.create_secrets(&store, &items).await;
    let bulk_end = head_position(&h).await;
    assert!(bulk_end.seq > 1000, "{bulk_end:?}");
    // Three more writes, a batch each.
    for i in 0..3 {
        h.create_secret(&store, &format!("T{i}"), "v").await;
    }
    let head = head_position(&h).await;

    let mut pos = Position::GENESIS;
    let mut ends = Vec::new();
    while pos.seq < head.seq {
        let a = decode_answer(&feed(&h, &node.token, &format!("after={}", pos.seq)).await);
        let FeedBody::Entries {
            entries,
            signatures,
        } = &a.body
        else {
            panic!("entries expected");
        };
        assert!(!entries.is_empty());
        assert_eq!(a.head_seq, head.seq, "the heartbeat says there is more");
        // Every answer ends on a signed entry (a follower applies nothing past its last
        // checkpoint). Past 1000 entries only to finish the write batch under way: no
        // checkpoint between the 1000th entry and the last.
        let last = entries.last().unwrap().seq;
        assert_eq!(signatures.last().map(|s| s.seq), Some(last));
        if entries.len() > 1000 {
            let limit = entries[999].seq;
            assert!(
                signatures.iter().all(|s| s.seq < limit || s.seq == last),
                "an answer of {} entries goes past a checkpoint after its 1000th",
                entries.len()
            );
        }
        pos = check_chain(pos, entries);
        ends.push(pos.seq);
    }
    assert_eq!(pos, head);
    // The bulk create is one write batch, so the first answer ends with it.
    assert_eq!(ends, vec![bulk_end.seq, head.seq]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_as_soon_as_a_write_commits() {
    let (h, node) = replicating().await;
    let store = h.create_store("poll").await;
    let h = Arc::new(h);
    let head = head_position(&h).await;

    let start = Instant::now();
    let poll = {
        let h = h.clone();
        let token = node.token.clone();
        tokio::spawn(async move {
            let r = feed(&h, &token, &format!("after={}&wait=5", head.seq)).await;
            (r, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poll.is_finished(), "a long-poll at the head waits");
    h.create_secret(&store, "fresh", "long-poll-value").await;
    let written = start.elapsed();
    let (r, answered) = poll.await.unwrap();
    assert!(
        answered < written + Duration::from_millis(1_500) && answered < Duration::from_secs(4),
        "answered {answered:?} after the start, the write was done at {written:?}"
    );
    let a = decode_answer(&r);
    let new = h
        .coffer
        .storage()
        .changes_after(head.seq, 1000)
        .await
        .unwrap();
    assert!(!new.is_empty());
    assert_eq!(entries_of(&a), &new[..], "exactly the new entries");
    assert_eq!(check_chain(head, entries_of(&a)), head_position(&h).await);
    assert_eq!(a.head_seq, new.last().unwrap().seq);

    // With nothing written, the wait runs out and the answer is an empty heartbeat.
    let head = head_position(&h).await;
    let start = Instant::now();
    let a = decode_answer(&feed(&h, &node.token, &format!("after={}&wait=1", head.seq)).await);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(entries_of(&a).is_empty());
    assert_eq!(a.head_seq, head.seq);
    assert_eq!(a.cluster_id, cluster_id(&h).await);
    // The same in milliseconds.
    let start = Instant::now();
    let a = decode_answer(&feed(&h, &node.token, &format!("after={}&wait_ms=300", head.seq)).await);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(entries_of(&a).is_empty());

    // A long-poll from behind the head answers at once.
    let start = Instant::now();
    let a = decode_answer(&feed(&h, &node.token, &format!("after={}&wait=5", head.seq - 1)).await);
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(entries_of(&a).len(), 1);
}

#[tokio::test]
async fn a_position_the_log_no_longer_holds_is_answered_compacted() {
    let (h, node) = replicating().await;
    bound(&h, "compacted-value").await;
    let head = head_position(&h).await;
    assert!(head.seq >= 4);
    let all = h.coffer.storage().changes_after(0, 1000).await.unwrap();
    let base = head.seq - 2;
    h.coffer.storage().compact_log(base).await.unwrap();
    let cluster = cluster_id(&h).await;

    for after in [0, 1, base - 1] {
        for wait in ["", "&wait=5"] {
            let start = Instant::now();
            let a = decode_answer(&feed(&h, &node.token, &format!("after={after}{wait}")).await);
            assert!(start.elapsed() < Duration::from_secs(3), "at once");
            assert_eq!(
                a.body,
                FeedBody::Compacted { base_seq: base },
                "after={after}"
            );
            assert_eq!((a.cluster_id, a.head_seq), (cluster, head.seq));
        }
    }
    // From the base on, the entries are still served, chaining onto the base's hash.
    let a = decode_answer(&feed(&h, &node.token, &format!("after={base}")).await);
    assert_eq!(entries_of(&a), &all[base as usize..]);
    let base_pos = Position::of(&all[base as usize - 1]);
    assert_eq!(check_chain(base_pos, entries_of(&a)), head);

    // Compacting everything: the head is still a valid position, and the next write chains on.
    h.coffer.storage().compact_log(head.seq).await.unwrap();
    let a = decode_answer(&feed(&h, &node.token, &format!("after={}", head.seq)).await);
    assert!(entries_of(&a).is_empty());
    let a = decode_answer(&feed(&h, &node.token, &format!("after={}", head.seq - 1)).await);
    assert_eq!(a.body, FeedBody::Compacted { base_seq: head.seq });
    let store = h.create_store("after-compaction").await;
    assert!(!store.is_empty());
    let a = decode_answer(&feed(&h, &node.token, &format!("after={}", head.seq)).await);
    assert_eq!(check_chain(head, entries_of(&a)), head_position(&h).await);
}

/// The issue's concurrency requirement: many writers through the HTTP API while a reader
/// follows the feed with long-polls; every seq arrives exactly once, in order, without gaps,
/// chained, and the reader ends at the storage head.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_polling_reader_sees_every_entry_of_parallel_writers_once_in_order() {
    const WRITERS: usize = 8;
    const OPS: usize = 40;
    let (h, node) = replicating().await;
    let h = Arc::new(h);
    let mut stores = Vec::new();
    for w in 0..WRITERS {
        stores.push(h.create_store(&format!("w{w}")).await);
    }
    let start = head_position(&h).await;

    // The reader: long-polls from the start until told the final head, checking every entry.
    let (target_tx, mut target_rx) = tokio::sync::watch::channel(None::<u64>);
    let reader = {
        let h = h.clone();
        let token = node.token.clone();
        tokio::spawn(async move {
            let mut pos = start;
            let mut seen = Vec::new();
            let mut answers = 0u32;
            let mut changes = Vec::new();
            loop {
                if target_rx.borrow_and_update().is_some_and(|t| pos.seq >= t) {
                    break;
                }
                let query = format!("after={}&wait=5", pos.seq);
                let r = tokio::select! {
                    r = feed(&h, &token, &query) => r,
                    _ = target_rx.changed() => continue,
                };
                // The position is one the feed itself just served: it is never "beyond the
                // head" of the same log.
                assert!(
                    r.status == StatusCode::OK,
                    "the feed refused the position it had just served (entry {} was in its \
                     previous answer): {}",
                    pos.seq,
                    r.text()
                );
                let a = decode_answer(&r);
                answers += 1;
                assert!(
                    a.head_seq >= pos.seq,
                    "the head went back: {} < {}",
                    a.head_seq,
                    pos.seq
                );
                let entries = entries_of(&a);
                pos = check_chain(pos, entries);
                assert!(a.head_seq >= pos.seq, "the heartbeat lags its own entries");
                for e in entries {
                    seen.push(e.seq);
                    changes.push(e.change().unwrap());
                }
            }
            (pos, seen, answers, changes)
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let h = h.clone();
            let store = stores[w].clone();
            tokio::spawn(async move {
                let mut ids: Vec<String> = Vec::new();
                let mut expected: BTreeMap<String, u32> = BTreeMap::new();
                for i in 0..OPS {
                    if i % 3 == 0 || ids.is_empty() {
                        let made = h
                            .create_secrets(
                                &store,
                                &[secret_item(
                                    &format!("S{i:02}"),
                                    &format!("v{w}-{i}"),
                                    &["workers"],
                                )],
                            )
                            .await;
                        let id = made[0]["id"].as_str().unwrap().to_owned();
                        expected.insert(id.clone(), 1);
                        ids.push(id);
                    } else {
                        let id = ids[i % ids.len()].clone();
                        let r = h
                            .patch(
                                &format!("/stores/{store}/secrets/{id}"),
                                &json!({ "value": format!("v{w}-{i}") }),
                            )
                            .await;
                        assert_ok(&r);
                        *expected.get_mut(&id).unwrap() += 1;
                    }
                }
                expected
            })
        })
        .collect();
    let mut expected: BTreeMap<String, u32> = BTreeMap::new();
    for w in writers {
        expected.extend(w.await.unwrap());
    }
    let head = head_position(&h).await;
    // (If the reader failed, its panic is reported below.)
    let _ = target_tx.send(Some(head.seq));
    let (pos, seen, answers, changes) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the reader catches up")
        .unwrap();

    assert_eq!(pos, head, "the reader ends at the storage head");
    assert_eq!(h.change_head().await, head.seq);
    let want: Vec<u64> = (start.seq + 1..=head.seq).collect();
    assert_eq!(seen, want, "every seq once, in order");
    assert!(
        head.seq - start.seq >= (WRITERS * OPS) as u64,
        "one entry per write at least"
    );
    // Every write is in what the reader saw: the last version of every secret.
    let mut versions: BTreeMap<String, u32> = BTreeMap::new();
    for c in &changes {
        if let Change::SecretPut {
            secret_id, version, ..
        } = c
        {
            let v = versions.entry(secret_id.to_string()).or_default();
            assert_eq!(*v + 1, *version, "versions of {secret_id} in order");
            *v = *version;
        }
    }
    assert_eq!(versions, expected);
    assert!(
        answers >= 2,
        "the reader followed along ({answers} answers)"
    );
}

// ---- snapshots ----

/// Splits a snapshot body into its frames, which must decode with nothing left over.
#[track_caller]
fn snapshot_frames(r: &Resp) -> Vec<Frame> {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap()),
        Some(SNAPSHOT_CONTENT_TYPE)
    );
    let mut dec = FrameDecoder::new();
    let mut frames = Vec::new();
    // In small pieces, as a network would deliver it.
    for piece in r.bytes.chunks(977) {
        dec.push(piece);
        while let Some(f) = dec.next_frame().expect("frames decode") {
            frames.push(f);
        }
    }
    dec.finish().expect("nothing left over");
    frames
}

#[tokio::test]
async fn a_snapshot_streams_every_live_row_with_its_digest_and_nothing_secret() {
    let (h, node) = replicating().await;
    let value = format!("snapshot-plaintext-{}", random_tag());
    let b = bound(&h, &value).await;
    // A second version, so that only the current one should travel.
    let r = h
        .patch(
            &format!("/stores/{}/secrets/{}", b.store, b.secret),
            &json!({ "value": format!("{value}-v2") }),
        )
        .await;
    assert_ok(&r);
    let old_token = b.svc.token().to_owned();
    let rotated = h
        .rotate(&b.svc.id, Some(&json!({ "revoke_previous": true })))
        .await;
    let new_token = rotated["service_token"].as_str().unwrap().to_owned();
    let reporter = h
        .issue_token(&h.account, "reporter", "secrets_store_reporter")
        .await;
    let gone = h.create_node("gone-edge").await;
    assert_ok(
        &h.raw_abs(
            Method::DELETE,
            &nodes_uri(Some(&gone.id)),
            None,
            Body::empty(),
        )
        .await,
    );
    let head = head_position(&h).await;
    let cluster = cluster_id(&h).await;

    let before = coffer_replication::wire::unix_ms();
    let r = h.get_as(&node.token, SNAPSHOT).await;
    let frames = snapshot_frames(&r);
    let Some(Frame::SnapshotHeader {
        cluster_id: sent_cluster,
        position,
        count,
        origin_ms,
    }) = frames.first().cloned()
    else {
        panic!("a snapshot starts with its header: {:?}", frames.first());
    };
    assert_eq!(sent_cluster, cluster);
    assert_eq!(position, head, "the snapshot is at the head");
    assert!(origin_ms >= before && origin_ms <= coffer_replication::wire::unix_ms());
    assert_eq!(frames.len() as u64, count + 2, "header, count items, end");
    let items: Vec<Vec<u8>> = frames[1..frames.len() - 1]
        .iter()
        .map(|f| match f {
            Frame::Item(i) => i.clone(),
            other => panic!("expected an item, got {other:?}"),
        })
        .collect();
    let Some(Frame::SnapshotEnd { digest, .. }) = frames.last().cloned() else {
        panic!("a snapshot ends with its digest");
    };
    assert_eq!(digest, Snapshot::digest_of(position, &items));
    let mut incremental = SnapshotDigest::new(position, count);
    for i in &items {
        incremental.update(i);
    }
    assert_eq!(incremental.finish(), Some(digest));
    assert!(Snapshot::new(position, items.clone()).verify());

    // What it holds: one change per live row.
    let changes: Vec<Change> = items
        .iter()
        .map(|i| serde_json::from_slice(i).expect("an item is a Change"))
        .collect();
    let kind = |c: &Change| -> &'static str {
        match c {
            Change::AccountPut { .. } => "account",
            Change::DekPut { .. } => "dek",
            Change::StorePut { .. } => "store",
            Change::SecretPut { .. } => "secret",
            Change::ServicePut { .. } => "service",
            Change::ServiceTokenPut { .. } => "service_token",
            Change::NodePut { .. } => "node",
            // Revoked nodes travel as revoked, so that a relay recognises their tokens.
            Change::NodeRevoked { .. } => "node_revoked",
            Change::InstanceKeyPut { .. } => "instance_key",
            other => panic!("a snapshot holds rows only, not {other:?}"),
        }
    };
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &changes {
        *kinds.entry(kind(c)).or_default() += 1;
    }
    assert_eq!(kinds["account"], 1, "{kinds:?}");
    assert_eq!(kinds["store"], 1, "{kinds:?}");
    assert_eq!(kinds["secret"], 1, "{kinds:?}");
    assert_eq!(kinds["service"], 1, "{kinds:?}");
    assert_eq!(
        kinds["service_token"], 1,
        "only the unrevoked token: {kinds:?}"
    );
    assert_eq!(
        (kinds["node"], kinds["node_revoked"]),
        (2, 1),
        "the unrevoked node, and the revoked one as revoked: {kinds:?}"
    );
    let purposes: BTreeSet<&str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::InstanceKeyPut { purpose, .. } => Some(purpose.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        purposes,
        BTreeSet::from(["node-token-mac", "service-token-mac"])
    );
    let secret = changes
        .iter()
        .find_map(|c| match c {
            Change::SecretPut {
                secret_id,
                version,
                sealed_hex,
                name,
                ..
            } => Some((
                secret_id.to_string(),
                *version,
                sealed_hex.clone(),
                name.clone(),
            )),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (secret.0.as_str(), secret.1, secret.3.as_str()),
        (b.secret.as_str(), 2, "k")
    );
    let sealed = hex::decode(&secret.2).expect("sealed bytes in hex");
    assert!(sealed.len() > value.len() + 16, "sealed, with a tag");
    let new_token_id = service_token_id(&new_token);
    assert!(changes.iter().any(|c| matches!(c,
        Change::ServiceTokenPut { token_id, .. } if token_id.to_string() == new_token_id)));
    assert!(changes.iter().any(|c| matches!(c,
        Change::NodePut { node_id, name, .. } if node_id.to_string() == node.id && name == "edge-test")));

    // Nothing secret anywhere in the body: no value, no token, no hash of an API token, not
    // the keys that verify API tokens or sign the audit log.
    let body = &r.bytes;
    for v in [value.clone(), format!("{value}-v2")] {
        assert_absent(body, &v, "the snapshot");
    }
    for t in [
        &h.token,
        &reporter.value,
        &old_token,
        &new_token,
        &node.token,
        &gone.token,
    ] {
        assert_absent(body, t, "the snapshot");
        assert_absent(body, &t[t.len() - 43..], "the snapshot");
    }
    let storage = h.coffer.storage();
    for id in [
        &h.token["coffer_".len().."coffer_".len() + 32],
        reporter.id.as_str(),
    ] {
        let t = storage
            .get_token(TokenId::parse(id).unwrap())
            .await
            .unwrap()
            .expect("the API token's row");
        assert!(!contains(body, &t.hash), "an API token's hash");
        assert!(
            !contains(body, hex::encode(t.hash).as_bytes()),
            "an API token's hash"
        );
    }
    for purpose in ["token-mac", "audit-mac"] {
        let key = storage
            .get_instance_key(purpose)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{purpose} is stored"));
        assert!(!contains(body, &key.wrapped), "{purpose}");
        assert!(
            !contains(body, hex::encode(&key.wrapped).as_bytes()),
            "{purpose}"
        );
        assert!(
            !contains(body, format!("\"{purpose}\"").as_bytes()),
            "{purpose}"
        );
    }

    // A second snapshot of an unchanged log holds the same items.
    let again = snapshot_frames(&h.get_as(&node.token, SNAPSHOT).await);
    assert_eq!(again.len(), frames.len());
    let n = frames.len() - 1;
    assert_eq!(&again[1..n], &frames[1..n]);
    // The same digest; the signature differs, as it covers the time the snapshot was made.
    let digest = |f: &Frame| match f {
        Frame::SnapshotEnd { digest, .. } => *digest,
        other => panic!("a snapshot end, not {other:?}"),
    };
    assert_eq!(digest(&again[n]), digest(&frames[n]));
}

/// The secrets a snapshot holds: id -> (version, sealed value).
fn snapshot_secrets(frames: &[Frame]) -> BTreeMap<String, (u32, String)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Item(i) => match serde_json::from_slice(i).unwrap() {
                Change::SecretPut {
                    secret_id,
                    version,
                    sealed_hex,
                    ..
                } => Some((secret_id.to_string(), (version, sealed_hex))),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_taken_during_writes_is_the_state_at_its_position() {
    let (h, node) = replicating().await;
    let h = Arc::new(h);
    let store = h.create_store("busy").await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let h = h.clone();
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids: Vec<String> = Vec::new();
                for i in 0..30 {
                    match i % 5 {
                        0 | 1 => {
                            let made = h
                                .create_secrets(
                                    &store,
                                    &[secret_item(&format!("W{w}-{i}"), "v", &["workers"])],
                                )
                                .await;
                            ids.push(made[0]["id"].as_str().unwrap().to_owned());
                        }
                        2 | 3 => {
                            let id = &ids[i % ids.len()];
                            let r = h
                                .patch(
                                    &format!("/stores/{store}/secrets/{id}"),
                                    &json!({ "value": format!("v{i}") }),
                                )
                                .await;
                            assert_ok(&r);
                        }
                        _ => {
                            let id = ids.remove(0);
                            assert_deleted(
                                &h.delete(&format!("/stores/{store}/secrets/{id}")).await,
                            );
                        }
                    }
                }
            })
        })
        .collect();
    let mut snapshots = Vec::new();
    while writers.iter().any(|w| !w.is_finished()) {
        snapshots.push(snapshot_frames(&h.get_as(&node.token, SNAPSHOT).await));
    }
    for w in writers {
        w.await.unwrap();
    }
    snapshots.push(snapshot_frames(&h.get_as(&node.token, SNAPSHOT).await));
    assert!(snapshots.len() >= 2, "{} snapshots", snapshots.len());

    let log = h.coffer.storage().changes_after(0, 100_000).await.unwrap();
    for frames in &snapshots {
        let Some(Frame::SnapshotHeader { position, .. }) = frames.first() else {
            panic!("a header first");
        };
        // Its position is an entry of the log, hash included.
        let at = log
            .iter()
            .find(|e| e.seq == position.seq)
            .expect("the position is in the log");
        assert_eq!(Position::of(at), *position);
        // Replaying the log up to the position gives exactly the snapshot's secrets.
        let mut replayed: BTreeMap<String, (u32, String)> = BTreeMap::new();
        for e in log.iter().take_while(|e| e.seq <= position.seq) {
            match e.change().unwrap() {
                Change::SecretPut {
                    secret_id,
                    version,
                    sealed_hex,
                    ..
                } => {
                    replayed.insert(secret_id.to_string(), (version, sealed_hex));
                }
                Change::SecretDeleted { secret_id, .. } => {
                    replayed.remove(&secret_id.to_string());
                }
                _ => {}
            }
        }
        assert_eq!(
            snapshot_secrets(frames),
            replayed,
            "the snapshot at {} is the log's state there",
            position.seq
        );
    }
}

// ---- access batches ----

fn parse_id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

/// Two events observed at an edge: three reads of `K` and two of a binding the service lacks.
fn edge_events(h: &Harness, b: &Bound) -> Vec<AccessEvent> {
    let first = Timestamp::from_unix_micros(1_700_000_000_000_000);
    let last = Timestamp::from_unix_micros(1_700_000_005_000_000);
    let token: TokenId = parse_id(&service_token_id(b.svc.token()));
    let served = AccessEvent {
        account: parse_id::<AccountId>(&h.account),
        service: Some(parse_id::<ServiceId>(&b.svc.id)),
        service_name: "svc".into(),
        token: Some(token),
        binding: "K".into(),
        store: Some(parse_id::<StoreId>(&b.store)),
        secret: Some(parse_id::<SecretId>(&b.secret)),
        secret_name: "k".into(),
        outcome: AccessOutcome::Served,
        reads: 3,
        first,
        last,
    };
    let refused = AccessEvent {
        binding: "NOPE".into(),
        store: None,
        secret: None,
        secret_name: String::new(),
        outcome: AccessOutcome::Refused(AccessRefusal::NoSuchBinding),
        reads: 2,
        ..served.clone()
    };
    vec![served, refused]
}

async fn post_batch(h: &Harness, node: &IssuedNode, body: &Value) -> Resp {
    h.send_as(Method::POST, ACCESS, Some(&bearer(&node.token)), Some(body))
        .await
}

fn access_entries(log: &[Value]) -> Vec<Value> {
    log.iter()
        .filter(|e| e["action"] == json!("access"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn access_batches_are_recorded_once_in_the_audit_log_naming_the_node() {
    let (h, node) = replicating().await;
    let b = bound(&h, "access-value").await;
    let events = edge_events(&h, &b);
    let batch_id = coffer_crypto::random_array::<16>();
    let batch = serde_json::to_value(coffer_api::replication::AccessBatch::encode(
        batch_id, &events,
    ))
    .unwrap();
    let head = h.change_head().await;
    let before = h.audit_entries_all(&h.account).await.0;
    assert!(access_entries(&before).is_empty());

    let r = post_batch(&h, &node, &batch).await;
    assert_eq!(assert_ok(&r), json!({ "recorded": true }));
    let log = h.audit_entries_all(&h.account).await.0;
    assert_eq!(log.len(), before.len() + 2, "one entry per event");
    let access = access_entries(&log);
    assert_eq!(access.len(), 2, "{access:#?}");
    let token_id = service_token_id(b.svc.token());
    for e in &access {
        assert_eq!(e["edge_node"], json!("edge-test"), "{e}");
        assert_eq!(e["edge_node_id"], json!(node.id), "{e}");
        assert!(
            e.get("edge_relay").is_none(),
            "delivered by the edge itself: {e}"
        );
        assert_eq!(e["actor"]["token_id"], json!(token_id), "{e}");
        assert_eq!(e["resource"]["service_id"], json!(b.svc.id), "{e}");
        assert_eq!(
            timestamp(&e["first_read"]).unix_micros(),
            1_700_000_000_000_000,
            "{e}"
        );
        assert_eq!(
            timestamp(&e["last_read"]).unix_micros(),
            1_700_000_005_000_000,
            "{e}"
        );
    }
    let served = access
        .iter()
        .find(|e| e["resource"]["binding"] == json!("K"))
        .expect("the served reads");
    assert_eq!(served["outcome"], json!("success"), "{served}");
    assert_eq!(served["reads"], json!(3), "{served}");
    assert_eq!(served["resource"]["secret_id"], json!(b.secret), "{served}");
    let refused = access
        .iter()
        .find(|e| e["resource"]["binding"] == json!("NOPE"))
        .expect("the refused reads");
    assert_eq!(refused["outcome"], json!("denied"), "{refused}");
    assert_eq!(refused["reads"], json!(2), "{refused}");
    assert_eq!(refused["reason"], json!("no such binding"), "{refused}");
    assert_eq!(h.change_head().await, head, "the change log is not written");

    // The same batch again (a retry after a lost acknowledgement): nothing new.
    for _ in 0..2 {
        let r = post_batch(&h, &node, &batch).await;
        assert_eq!(assert_ok(&r), json!({ "recorded": false }));
    }
    assert_eq!(
        h.audit_entries_all(&h.account).await.0,
        log,
        "recorded once"
    );

    // The same events under another id are another batch.
    let other = serde_json::to_value(coffer_api::replication::AccessBatch::encode(
        coffer_crypto::random_array::<16>(),
        &events,
    ))
    .unwrap();
    let r = post_batch(&h, &node, &other).await;
    assert_eq!(assert_ok(&r), json!({ "recorded": true }));
    assert_eq!(
        access_entries(&h.audit_entries_all(&h.account).await.0).len(),
        4
    );

    // A relay forwarding another edge's batch: the entries name the edge that served the
    // reads, and the relay that vouches for it.
    let relay = h.create_node("relay-1").await;
    let mut forwarded =
        coffer_api::replication::AccessBatch::encode(coffer_crypto::random_array::<16>(), &events);
    forwarded.set_observer(&coffer_api::replication::Observer {
        node_id: parse_id(&node.id),
        node_name: "edge-test".into(),
    });
    let r = post_batch(&h, &relay, &serde_json::to_value(&forwarded).unwrap()).await;
    assert_eq!(assert_ok(&r), json!({ "recorded": true }));
    let access = access_entries(&h.audit_entries_all(&h.account).await.0);
    assert_eq!(access.len(), 6);
    for e in &access[4..] {
        assert_eq!(e["edge_node"], json!("edge-test"), "{e}");
        assert_eq!(e["edge_node_id"], json!(node.id), "{e}");
        assert_eq!(e["edge_relay"], json!("relay-1"), "{e}");
        assert_eq!(e["edge_relay_id"], json!(relay.id), "{e}");
    }
    // Delivered again through the edge itself (a retry along another path): once.
    let r = post_batch(&h, &node, &serde_json::to_value(&forwarded).unwrap()).await;
    assert_eq!(assert_ok(&r), json!({ "recorded": false }));
    assert_eq!(
        access_entries(&h.audit_entries_all(&h.account).await.0).len(),
        6
    );

    // The chain still verifies.
    let r = h
        .raw_abs(
            Method::GET,
            &format!("{V4}/{}/audit_logs/verify", h.account),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(assert_ok(&r)["ok"], json!(true));
}

#[tokio::test]
async fn malformed_access_batches_are_refused_naming_the_field() {
    let (h, node) = replicating().await;
    let b = bound(&h, "malformed-access-value").await;
    let events = edge_events(&h, &b);
    let good = || {
        serde_json::to_value(coffer_api::replication::AccessBatch::encode(
            coffer_crypto::random_array::<16>(),
            &events,
        ))
        .unwrap()
    };
    let before = h.audit_entries_all(&h.account).await.0;

    type Breaker = fn(&mut Value);
    let invalid: Vec<(&str, Breaker, &str)> = vec![
        (
            "short batch id",
            |b| b["batch_id"] = json!("abc"),
            "/batch_id",
        ),
        (
            "uppercase batch id",
            |b| {
                let id = b["batch_id"].as_str().unwrap().to_uppercase();
                b["batch_id"] = json!(id.replace(|c: char| c.is_ascii_digit(), "A"));
            },
            "/batch_id",
        ),
        (
            "account id",
            |b| b["events"][0]["account_id"] = json!("not-an-id"),
            "/events/0/account_id",
        ),
        (
            "outcome",
            |b| b["events"][1]["outcome"] = json!("maybe"),
            "/events/1/outcome",
        ),
        (
            "reason",
            |b| b["events"][1]["reason"] = json!("because"),
            "/events/1/reason",
        ),
        (
            "success with a reason",
            |b| b["events"][0]["reason"] = json!("no such binding"),
            "/events/0/outcome",
        ),
        (
            "no reads",
            |b| b["events"][0]["reads"] = json!(0),
            "/events/0/reads",
        ),
        (
            "a long binding",
            |b| b["events"][0]["binding"] = json!("B".repeat(256)),
            "/events/0/binding",
        ),
        (
            "no token",
            |b| {
                b["events"][0].as_object_mut().unwrap().remove("token_id");
            },
            "/events/0/token_id",
        ),
        (
            "store id",
            |b| b["events"][0]["store_id"] = json!("12"),
            "/events/0/store_id",
        ),
        (
            "observer id",
            |b| b["observed_by"] = json!({ "node_id": "zz", "node_name": "edge" }),
            "/observed_by/node_id",
        ),
        (
            "observer name",
            |b| b["observed_by"] = json!({ "node_id": "ab".repeat(16), "node_name": "" }),
            "/observed_by/node_name",
        ),
    ];
    for (what, break_it, pointer) in invalid {
        let mut body = good();
        break_it(&mut body);
        let r = post_batch(&h, &node, &body).await;
        let e = assert_err(&r, ErrorCode::InvalidField, "");
        assert_eq!(
            e["source"]["pointer"],
            json!(pointer),
            "{what}: {}",
            r.text()
        );
    }

    type Mangler = fn(&mut Value);
    let malformed: Vec<(&str, Mangler)> = vec![
        ("an unknown field", |b| b["extra"] = json!(1)),
        ("an unknown event field", |b| {
            b["events"][0]["value"] = json!("x")
        }),
        ("no batch id", |b| {
            b.as_object_mut().unwrap().remove("batch_id");
        }),
        ("reads not a number", |b| {
            b["events"][0]["reads"] = json!("3")
        }),
        ("negative reads", |b| b["events"][0]["reads"] = json!(-3)),
        ("events not a list", |b| b["events"] = json!({})),
    ];
    for (what, mangle) in malformed {
        let mut body = good();
        mangle(&mut body);
        let r = post_batch(&h, &node, &body).await;
        assert_err(&r, ErrorCode::MalformedJson, "");
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}");
    }
    for raw in [&b"not json"[..], b"", b"[]", b"{\"batch_id\": 5}"] {
        let r = h
            .raw_abs(Method::POST, ACCESS, Some("application/json"), raw.to_vec())
            .await;
        // The operator's token is refused before the body is read.
        assert_err(&r, ErrorCode::WrongTokenKind, "");
        let r = h
            .send(
                axum::http::Request::builder()
                    .method(Method::POST)
                    .uri(ACCESS)
                    .header(header::AUTHORIZATION, bearer(&node.token))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(raw.to_vec()))
                    .unwrap(),
            )
            .await;
        assert_err(&r, ErrorCode::MalformedJson, "");
    }
    assert_eq!(
        h.audit_entries_all(&h.account).await.0,
        before,
        "nothing recorded"
    );

    // A refused batch is not remembered as delivered: once fixed, the same id records.
    let mut body = good();
    let fixed = body.clone();
    body["events"][0]["reads"] = json!(0);
    assert_err(
        &post_batch(&h, &node, &body).await,
        ErrorCode::InvalidField,
        "",
    );
    let r = post_batch(&h, &node, &fixed).await;
    assert_eq!(assert_ok(&r), json!({ "recorded": true }));
}

#[tokio::test]
async fn access_events_of_an_unknown_account_are_dropped() {
    let (h, node) = replicating().await;
    let b = bound(&h, "unknown-account-value").await;
    let mut events = edge_events(&h, &b);
    let stranger: AccountId = parse_id(&random_id());
    let mut foreign = events[0].clone();
    foreign.account = stranger;
    events.push(foreign.clone());
    let before = access_entries(&h.audit_entries_all(&h.account).await.0).len();

    let batch =
        coffer_api::replication::AccessBatch::encode(coffer_crypto::random_array::<16>(), &events);
    let r = post_batch(&h, &node, &serde_json::to_value(batch).unwrap()).await;
    assert_eq!(assert_ok(&r), json!({ "recorded": true }));
    assert_eq!(
        access_entries(&h.audit_entries_all(&h.account).await.0).len(),
        before + 2,
        "the known account's events are recorded"
    );
    let storage = h.coffer.storage();
    assert_eq!(
        storage.audit_head(stranger).await.unwrap(),
        None,
        "no chain for a stranger"
    );
    assert!(!storage.audit_accounts().await.unwrap().contains(&stranger));

    // A batch of nothing but strangers is acknowledged (so the edge stops sending it) and
    // writes nothing.
    let batch = coffer_api::replication::AccessBatch::encode(
        coffer_crypto::random_array::<16>(),
        &[foreign],
    );
    let r = post_batch(&h, &node, &serde_json::to_value(batch).unwrap()).await;
    assert_ok(&r);
    assert_eq!(storage.audit_head(stranger).await.unwrap(), None);
    assert_eq!(
        access_entries(&h.audit_entries_all(&h.account).await.0).len(),
        before + 2
    );
}

/// Each feed request tells the operator where the node stands (`contact` on the node): the
/// position it asked from, the head then and the lag; a node that never asked has none.
#[tokio::test]
async fn the_nodes_list_shows_where_each_node_last_asked_from() {
    let h = Harness::new().await;
    h.coffer.storage().ensure_cluster_id().await.unwrap();
    let asking = h.create_node("asking").await;
    let silent = h.create_node("silent").await;
    h.create_store("s").await;
    let head = h.change_head().await;
    assert!(head >= 2, "{head}");
    let contact_of = |nodes: &[Value], id: &str| {
        nodes
            .iter()
            .find(|n| n["id"] == id)
            .map(|n| n.get("contact").cloned())
            .unwrap()
    };

    decode_answer(&feed(&h, &asking.token, "after=1&wait=0").await);
    let nodes = h.nodes_state().await;
    let c = contact_of(&nodes, &asking.id).expect("a node that asked has a contact");
    assert_eq!(
        (c["applied_seq"].as_u64(), c["head_seq"].as_u64()),
        (Some(1), Some(head))
    );
    assert_eq!(c["lag"].as_u64(), Some(head - 1));
    timestamp(&c["last_seen"]);
    assert_eq!(
        contact_of(&nodes, &silent.id),
        None,
        "never asked: no contact"
    );
    // A position past the head (refused) is not one the node stands at.
    let r = feed(&h, &silent.token, &format!("after={}&wait=0", head + 5)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(contact_of(&h.nodes_state().await, &silent.id), None);

    // Caught up: its next request says so.
    decode_answer(&feed(&h, &asking.token, &format!("after={head}&wait=0")).await);
    let nodes = h.nodes_state().await;
    let c = contact_of(&nodes, &asking.id).unwrap();
    assert_eq!(
        (c["applied_seq"].as_u64(), c["lag"].as_u64()),
        (Some(head), Some(0))
    );
}
