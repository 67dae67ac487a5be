//! A snapshot cannot hold a slot or a read transaction forever: slots are limited per node and
//! in all, and a snapshot still streaming at its deadline is abandoned, so a slow reader stops
//! neither other edges from bootstrapping nor the control plane's WAL from checkpointing.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use coffer_api::ErrorCode;
use coffer_replication::wire::{Frame, FrameDecoder};
use coffer_server::{AppOptions, SnapshotLimits};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::support::*;

const SNAPSHOT: &str = "/replication/v1/snapshot";

fn snapshot_request(node_token: &str) -> Request<Body> {
    Request::get(SNAPSHOT)
        .header(header::AUTHORIZATION, format!("Bearer {node_token}"))
        .body(Body::empty())
        .unwrap()
}

/// The frames of a snapshot body, and whether it ended with its closing frame.
fn frames_of(bytes: &[u8]) -> (usize, bool) {
    let mut dec = FrameDecoder::new();
    dec.push(bytes);
    let mut n = 0;
    let mut closed = false;
    while let Ok(Some(f)) = dec.next_frame() {
        n += 1;
        closed = matches!(f, Frame::SnapshotEnd { .. });
    }
    (n, closed)
}

#[track_caller]
fn assert_busy(r: &Resp, needle: &str) {
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(
        r.headers.get(header::RETRY_AFTER).is_some(),
        "{:?}",
        r.headers
    );
    let v: Value = r.json();
    assert_eq!(v["errors"][0]["code"], ErrorCode::Unavailable.code());
    assert!(
        v["errors"][0]["message"].as_str().unwrap().contains(needle),
        "{v}"
    );
}

/// Watches the instance's database for read transactions left open.
enum ReadTransactions {
    /// A connection of its own to `coffer.db`.
    Sqlite(rusqlite::Connection),
    /// The cluster's superuser, and the instance's database.
    Postgres(tokio_postgres::Client, String),
}

impl ReadTransactions {
    async fn watch(h: &Harness) -> ReadTransactions {
        match backend() {
            Backend::Sqlite => {
                let db = rusqlite::Connection::open(h.data_dir.join("coffer.db")).unwrap();
                db.busy_timeout(Duration::ZERO).unwrap();
                ReadTransactions::Sqlite(db)
            }
            Backend::Postgres => {
                let client = h.backing.admin_client().await;
                let name = h.backing.database_name().unwrap().to_owned();
                ReadTransactions::Postgres(client, name)
            }
        }
    }

    /// 1 while a reader holds a transaction open: on SQLite, one that keeps the WAL from being
    /// checkpointed whole and truncated; on PostgreSQL, a session of the instance's database
    /// inside a transaction (a snapshot's cursor, fetching or waiting for its reader; the
    /// instance's other connections are idle between requests). 0 otherwise.
    async fn open(&self) -> i64 {
        match self {
            ReadTransactions::Sqlite(db) => db
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                .unwrap(),
            ReadTransactions::Postgres(client, name) => client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid() \
                     AND xact_start IS NOT NULL",
                    &[name],
                )
                .await
                .unwrap()
                .get(0),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_snapshot_reader_holds_its_slot_and_read_transaction_only_until_the_deadline() {
    let mut h = Harness::new().await;
    h.coffer.storage().ensure_cluster_id().await.unwrap();
    // More than a snapshot's buffers hold (4,096 items queued, 2 MiB of frames), so a reader
    // that reads nothing keeps the producer, and its read transaction, waiting.
    let store = h.create_store("big").await;
    let value = "v".repeat(900);
    for batch in 0..9 {
        let items: Vec<Value> = (0..1000)
            .map(|i| secret_item(&format!("s{batch}-{i}"), &value, &["workers"]))
            .collect();
        h.create_secrets(&store, &items).await;
    }
    let slow = h.create_node("slow").await;
    let other = h.create_node("other").await;
    let third = h.create_node("third").await;
    // Long enough for a whole snapshot of this size to be read in a debug build on a busy
    // machine: the other nodes' snapshots must finish within it.
    let deadline = Duration::from_secs(10);
    h.app = app(
        h.coffer.clone(),
        AppOptions {
            snapshots: SnapshotLimits {
                max_concurrent: 2,
                per_node: 1,
                deadline,
                stall: Duration::from_secs(600),
            },
            ..AppOptions::default()
        },
    );
    let read_tx = ReadTransactions::watch(&h).await;

    // The slow node starts a snapshot and reads nothing of it. The clock starts before the
    // request: the server's deadline starts when its handler does, before the answer's head.
    let started = Instant::now();
    let held = h
        .app
        .clone()
        .oneshot(snapshot_request(&slow.token))
        .await
        .unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    h.create_secret(&store, "after", "written after the snapshot began")
        .await;
    // The answer's head comes before the producer has begun its transaction: wait for it.
    let began = Instant::now();
    while read_tx.open().await != 1 {
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "the snapshot's read transaction is not open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // It may not take a second slot.
    assert_busy(
        &h.get_as(&slow.token, SNAPSHOT).await,
        "this node is receiving 1 snapshot(s) already",
    );
    // Another node takes the other slot; with both taken a third is refused.
    let other_held = h
        .app
        .clone()
        .oneshot(snapshot_request(&other.token))
        .await
        .unwrap();
    assert_eq!(other_held.status(), StatusCode::OK);
    assert_busy(
        &h.get_as(&third.token, SNAPSHOT).await,
        "2 snapshots are being served already",
    );
    // The other node reads its snapshot whole: it bootstraps while the slow one stalls.
    let body = other_held.into_body().collect().await.unwrap().to_bytes();
    let (n, closed) = frames_of(&body);
    assert!(closed && n > 9_000, "{n} frames, closed: {closed}");
    // Its slot is free again: the third node reads a whole snapshot too.
    let r = h.get_as(&third.token, SNAPSHOT).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(frames_of(&r.bytes).1);

    // At the deadline the slow snapshot is abandoned: the read transaction ends (SQLite's WAL is
    // checkpointed whole) and the node may ask again.
    let released = loop {
        if read_tx.open().await == 0 {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < deadline + Duration::from_secs(20),
            "the slow snapshot's read transaction is still open past its deadline"
        );
        // Polling the database for the release, not waiting for it to happen.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        released >= deadline,
        "released after {released:?}, before the deadline"
    );
    // What the slow reader gets is cut short: the edge refuses it as truncated and asks again.
    let body = held.into_body().collect().await.unwrap().to_bytes();
    let (n, closed) = frames_of(&body);
    assert!(!closed && n > 0, "{n} frames, closed: {closed}");
    let r = h.get_as(&slow.token, SNAPSHOT).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (n, closed) = frames_of(&r.bytes);
    assert!(closed && n > 9_000, "{n} frames, closed: {closed}");
}
