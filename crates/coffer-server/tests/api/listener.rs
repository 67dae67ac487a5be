//! The listener under unauthenticated load, over real TCP on 127.0.0.1:0: connections that
//! trickle header bytes (slowloris) are closed at the header timeout and starve nobody,
//! connections past the cap wait unaccepted (holding no descriptor), and oversized headers are
//! answered 431.

use std::time::{Duration, Instant};

use coffer_server::HttpLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::tcp::Server;

/// A store, a secret and a service binding it as `K`; the service token.
async fn bound_service(server: &Server) -> String {
    let store = server
        .operator(
            reqwest::Method::POST,
            "/secrets_store/stores",
            serde_json::json!({"name": "s"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .operator(
            reqwest::Method::POST,
            &format!("/secrets_store/stores/{store}/secrets"),
            serde_json::json!([{"name": "k", "value": "the-value", "scopes": ["workers"]}]),
        )
        .await;
    let svc = server
        .operator(
            reqwest::Method::POST,
            "/secrets_store/services",
            serde_json::json!({"name": "app", "secrets_store_secrets": [
                {"binding": "K", "store_id": store, "secret_name": "k"}]}),
        )
        .await;
    svc["service_token"].as_str().unwrap().to_owned()
}

/// One request on a new connection, which must be answered 200 with `body` within a second.
async fn answers_within_a_second(url: &str, token: Option<&str>, body: &str) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let started = Instant::now();
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = tokio::time::timeout(Duration::from_secs(1), async {
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
    .await
    .unwrap_or_else(|_| panic!("{url} did not answer within a second"));
    assert_eq!(r.0, 200, "{url}: {}", r.1);
    assert!(r.1.contains(body), "{url}: {}", r.1);
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// 1,000 connections trickle a request's headers a byte at a time. While they are all open,
/// `/healthz` and a runtime read on new connections answer within a second; each trickling
/// connection is closed by the server at the header timeout, never answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_trickling_connections_starve_nobody_and_are_closed_at_the_header_timeout() {
    const N: usize = 1_000;
    // Long enough that opening 1,000 connections and probing fit well inside it on a loaded
    // 2-core machine (with 3 s, the first connections were sometimes closed, rightly, before
    // the probes were done).
    let timeout = Duration::from_secs(10);
    let server = Server::start_limited(HttpLimits {
        header_timeout: timeout,
        ..HttpLimits::default()
    })
    .await;
    let token = bound_service(&server).await;
    let addr = server.addr;
    let (opened_tx, mut opened) = tokio::sync::mpsc::channel::<()>(N);
    let mut tricklers = JoinSet::new();
    for _ in 0..N {
        let opened_tx = opened_tx.clone();
        tricklers.spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let start = Instant::now();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: coffer\r\nX-Slow: ")
                .await
                .expect("first bytes");
            let _ = opened_tx.send(()).await;
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return (start, Instant::now()),
                        Ok(n) => panic!(
                            "a request never sent whole was answered: {}",
                            String::from_utf8_lossy(&buf[..n])
                        ),
                    },
                    // The attack's pace, not a synchronisation: one more header byte.
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        if s.write_all(b"a").await.is_err() {
                            return (start, Instant::now());
                        }
                    }
                }
            }
        });
    }
    drop(opened_tx);
    for _ in 0..N {
        opened
            .recv()
            .await
            .expect("every trickler opened its connection");
    }
    // All of them are trickling now.
    for _ in 0..3 {
        answers_within_a_second(&server.url("/healthz"), None, "ok").await;
        answers_within_a_second(
            &server.url("/runtime/v1/bindings/K"),
            Some(&token),
            "the-value",
        )
        .await;
    }
    let probes_done = Instant::now();
    let mut closed = Vec::with_capacity(N);
    tokio::time::timeout(timeout + Duration::from_secs(10), async {
        while let Some(r) = tricklers.join_next().await {
            closed.push(r.unwrap());
        }
    })
    .await
    .expect("the server closes every trickling connection");
    for (start, end) in &closed {
        assert!(
            *end >= probes_done,
            "a trickling connection was closed before the probes were done"
        );
        let held = end.duration_since(*start);
        assert!(
            held <= timeout + Duration::from_secs(2),
            "a trickling connection was held {held:?}, past the header timeout of {timeout:?}"
        );
    }
    server.stop().await;
}

/// The inodes of the server's accepted connections on `port`, from `/proc/net/tcp`
/// (connections still in the kernel's accept queue have no inode yet, closed ones have lost
/// theirs).
///
/// One read of the table is not one instant: a socket closed while it is read and its successor
/// accepted further on can both be listed. See [`held_at_once`] for the exact count.
#[cfg(target_os = "linux")]
fn accepted_on(port: u16) -> std::collections::HashSet<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f[1]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            // 0A: listening.
            (local_port == Some(port) && f[3] != "0A" && f[9] != "0").then(|| f[9].to_owned())
        })
        .collect()
}

/// How many connections were certainly open together, from two reads of the table one after
/// the other: a socket listed in both was open from its sighting in the first to its sighting
/// in the second (an inode is never reused while listed), so every socket in both was open at
/// the instant between the reads. A server over its cap for a header timeout is seen whole.
#[cfg(target_os = "linux")]
fn held_at_once(
    first: &std::collections::HashSet<String>,
    second: &std::collections::HashSet<String>,
) -> usize {
    first.intersection(second).count()
}

/// Past the cap, connections wait in the kernel's queue: the server never holds more than the
/// cap (each accepted one, silent, is closed at the header timeout and makes room), and every
/// waiting one is accepted in turn.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_unaccepted_and_are_served_in_turn() {
    const CAP: usize = 8;
    const N: usize = 40;
    let timeout = Duration::from_millis(500);
    let server = Server::start_limited(HttpLimits {
        max_connections: CAP,
        header_timeout: timeout,
        ..HttpLimits::default()
    })
    .await;
    let port = server.addr.port();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            let mut most = 0;
            let mut before = accepted_on(port);
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let now = accepted_on(port);
                most = most.max(held_at_once(&before, &now));
                before = now;
                std::thread::yield_now();
            }
            most
        })
    };
    let started = Instant::now();
    let mut silent = JoinSet::new();
    for _ in 0..N {
        let addr = server.addr;
        silent.spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let mut buf = [0u8; 64];
            // Sends nothing; the server closes it once it has accepted it and the header
            // timeout has passed.
            let _ = s.read(&mut buf).await;
            Instant::now()
        });
    }
    let mut closed = Vec::new();
    while let Some(r) = silent.join_next().await {
        closed.push(r.unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let most = sampler.await.unwrap();
    // Without a cap all of them would be held at once. The timing below tests waiting in turn.
    assert!(
        (1..=CAP).contains(&most),
        "the server held {most} connections at once (cap {CAP})"
    );
    // In turn: N silent connections through CAP slots take N/CAP header timeouts.
    let last = closed.iter().max().unwrap().duration_since(started);
    let waves = N.div_ceil(CAP) as u32;
    assert!(
        last >= timeout * (waves - 1),
        "all {N} closed within {last:?}: they were not kept waiting"
    );
    // And the server still answers once they are gone.
    let r = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}

/// A request head over the limit is answered 431 and the connection closed; one under it is
/// served.
#[tokio::test]
async fn an_oversized_request_head_is_answered_431() {
    let server = Server::start().await;
    let exchange = |header_bytes: usize| {
        let addr = server.addr;
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "GET /healthz HTTP/1.1\r\nHost: coffer\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                "a".repeat(header_bytes)
            );
            let _ = s.write_all(head.as_bytes()).await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let big = exchange(coffer_server::MAX_HEADER_BYTES + 1024).await;
    assert!(big.starts_with("HTTP/1.1 431 "), "{big}");
    let fine = exchange(coffer_server::MAX_HEADER_BYTES * 3 / 4).await;
    assert!(fine.starts_with("HTTP/1.1 200 "), "{fine}");
    server.stop().await;
}

/// Over HTTP/2 (prior knowledge, as a client that knows the server speaks it), a header list
/// over the limit is refused, and one under it is served.
#[tokio::test]
async fn an_oversized_http2_header_list_is_refused() {
    let server = Server::start().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let big = client
        .get(server.url("/healthz"))
        .header("x-big", "a".repeat(coffer_server::MAX_HEADER_BYTES + 1024))
        .send()
        .await;
    match big {
        Ok(r) => assert_eq!(r.status().as_u16(), 431),
        Err(e) => panic!("{e:?}"),
    }
    let fine = client
        .get(server.url("/healthz"))
        .header("x-big", "a".repeat(coffer_server::MAX_HEADER_BYTES * 3 / 4))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status().as_u16(), 200);
    assert_eq!(fine.version(), reqwest::Version::HTTP_2);
    server.stop().await;
}
