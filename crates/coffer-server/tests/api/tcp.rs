//! Over real TCP on 127.0.0.1:0: body limits when the length is declared or chunked, which
//! only a real HTTP/1.1 connection exercises.

use std::net::SocketAddr;
use std::time::Duration;

use coffer_api::ErrorCode;
use coffer_server::{MAX_BODY_BYTES, ServeOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::random_id;

struct Server {
    addr: SocketAddr,
    token: String,
    account: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), coffer_server::ServerError>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let init = coffer_server::init_data_dir(&data_dir).await.unwrap();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = ServeOptions {
            data_dir,
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            insecure_http: false,
            secrets_quota: 10,
            max_stores: 3,
            feed_retention: coffer_server::ServeOptions::DEFAULT_FEED_RETENTION,
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
        let addr = tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("server ready in time")
            .expect("server started");
        Server {
            addr,
            token: init.api_token.expose_secret().to_owned(),
            account: init.account_id.to_string(),
            stop: Some(stop_tx),
            task,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
    }

    /// Sends `head` (without the blank line) and `body`, concurrently reading the response;
    /// returns its status and JSON body.
    async fn exchange(&self, head: String, body: Vec<u8>) -> (u16, Value) {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let writer = tokio::spawn(async move {
            // The server may answer and close before reading everything; that is fine.
            let _ = wr.write_all(head.as_bytes()).await;
            let _ = wr.write_all(b"\r\n").await;
            let _ = wr.write_all(&body).await;
            let _ = wr.flush().await;
            wr
        });
        let read = async {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                if let Some(parsed) = parse_response(&buf) {
                    return parsed;
                }
                match rd.read(&mut chunk).await {
                    Ok(0) => panic!(
                        "connection closed before a full response: {}",
                        String::from_utf8_lossy(&buf)
                    ),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => panic!(
                        "read failed: {e}; so far: {}",
                        String::from_utf8_lossy(&buf)
                    ),
                }
            }
        };
        let response = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("a response in time");
        writer.abort();
        response
    }
}

/// A complete HTTP/1.1 response with a Content-Length body, if `buf` holds one.
fn parse_response(buf: &[u8]) -> Option<(u16, Value)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).unwrap();
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("a content-length");
    let body = buf.get(end + 4..end + 4 + len)?;
    Some((status, serde_json::from_slice(body).unwrap()))
}

fn padded_store_body(len: usize) -> Vec<u8> {
    let mut body = br#"{"name":"big"}"#.to_vec();
    body.resize(len, b' ');
    body
}

#[track_caller]
fn assert_code(got: &(u16, Value), code: ErrorCode) {
    assert_eq!(got.0, code.http_status(), "{}", got.1);
    assert_eq!(got.1["success"], Value::Bool(false));
    assert_eq!(
        got.1["errors"][0]["code"],
        Value::from(code.code()),
        "{}",
        got.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limits_over_tcp() {
    let server = Server::start().await;
    let path = format!(
        "/client/v4/accounts/{}/secrets_store/stores",
        server.account
    );
    let head = |extra: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nConnection: close\r\n{extra}",
            server.token
        )
    };

    // A declared length over the limit.
    let body = padded_store_body(MAX_BODY_BYTES + 1);
    let got = server
        .exchange(head(&format!("Content-Length: {}\r\n", body.len())), body)
        .await;
    assert_code(&got, ErrorCode::BodyTooLarge);

    // No length: chunked transfer encoding, over the limit.
    let raw = padded_store_body(MAX_BODY_BYTES + 1);
    let mut chunked = Vec::new();
    for c in raw.chunks(100_000) {
        chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let got = server
        .exchange(head("Transfer-Encoding: chunked\r\n"), chunked)
        .await;
    assert_code(&got, ErrorCode::BodyTooLarge);

    // Chunked and within the limit: accepted.
    let raw = padded_store_body(200_000);
    let mut chunked = Vec::new();
    for c in raw.chunks(50_000) {
        chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let got = server
        .exchange(head("Transfer-Encoding: chunked\r\n"), chunked)
        .await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["result"]["name"], Value::from("big"));

    // Nothing of the refused bodies was written: one store.
    let list = server
        .exchange(
            format!(
                "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
                server.token
            ),
            Vec::new(),
        )
        .await;
    assert_eq!(list.0, 200);
    assert_eq!(list.1["result_info"]["total_count"], Value::from(1));

    // Another account over TCP is also a v4 404.
    let other = server
        .exchange(
            format!(
                "GET /client/v4/accounts/{}/secrets_store/quota HTTP/1.1\r\nHost: localhost\r\n\
                 Authorization: Bearer {}\r\nConnection: close\r\n",
                random_id(),
                server.token
            ),
            Vec::new(),
        )
        .await;
    assert_code(&other, ErrorCode::AccountNotFound);

    server.stop().await;
}

/// Repeated failed authentications from one address are refused for a while (429 with
/// Retry-After) without even looking the token up; a token already known to be good keeps
/// working from that address, so one bad client cannot lock out the others behind a proxy.
#[tokio::test]
async fn repeated_failed_authentications_are_refused() {
    let server = Server::start().await;
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/client/v4/accounts/{}/secrets_store/quota",
        server.addr, server.account
    );
    let get = |token: String| {
        let (http, url) = (http.clone(), url.clone());
        async move { http.get(&url).bearer_auth(token).send().await.unwrap() }
    };
    // A legitimate client, before the flood.
    assert_eq!(get(server.token.clone()).await.status().as_u16(), 200);
    let bad = format!("coffer_{}_{}", random_id(), "A".repeat(43));
    for i in 0..20 {
        assert_eq!(get(bad.clone()).await.status().as_u16(), 401, "failure {i}");
    }
    let r = get(bad.clone()).await;
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], ErrorCode::RateLimited.code());
    // Another guess is refused without being looked up (429, not 401)...
    let other_guess = format!("coffer_{}_{}", random_id(), "B".repeat(43));
    assert_eq!(get(other_guess).await.status().as_u16(), 429);
    // ...while the legitimate client's known-good token still works.
    assert_eq!(get(server.token.clone()).await.status().as_u16(), 200);
    // The moment the budget ran out is in the instance's audit log (the operator's account).
    let audit = format!(
        "http://{}/client/v4/accounts/{}/audit_logs?outcome=rate_limited",
        server.addr, server.account
    );
    let log: Value = http
        .get(&audit)
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = log["result"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{log}");
    assert_eq!(entries[0]["action"], "login");
    assert_eq!(entries[0]["client"], "127.0.0.1");
    assert!(
        !log.to_string().contains(&bad),
        "the guessed token is not recorded"
    );
    server.stop().await;
}
