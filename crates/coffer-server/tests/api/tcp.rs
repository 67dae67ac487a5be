//! Over real TCP on 127.0.0.1:0: body limits when the length is declared or chunked, which
//! only a real HTTP/1.1 connection exercises.

use std::net::SocketAddr;
use std::time::Duration;

use coffer_api::ErrorCode;
use coffer_server::{MAX_BODY_BYTES, ServeOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Backing, random_id};

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) token: String,
    pub(crate) account: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), coffer_server::ServerError>>>,
    data_dir: std::path::PathBuf,
    trusted_proxies: coffer_server::TrustedProxies,
    http: coffer_server::HttpLimits,
    dashboard_cookies: coffer_server::SecureCookies,
    _dir: tempfile::TempDir,
    /// Last: the server stops before its database goes.
    pub(crate) backing: Backing,
}

impl Server {
    pub(crate) async fn start() -> Server {
        Server::start_behind(coffer_server::TrustedProxies::default()).await
    }

    async fn start_behind(trusted_proxies: coffer_server::TrustedProxies) -> Server {
        Server::start_with(trusted_proxies, coffer_server::HttpLimits::default()).await
    }

    /// A server whose listener applies `http`.
    pub(crate) async fn start_limited(http: coffer_server::HttpLimits) -> Server {
        Server::start_with(coffer_server::TrustedProxies::default(), http).await
    }

    async fn start_with(
        trusted_proxies: coffer_server::TrustedProxies,
        http: coffer_server::HttpLimits,
    ) -> Server {
        Server::start_full(trusted_proxies, http, Default::default()).await
    }

    async fn start_full(
        trusted_proxies: coffer_server::TrustedProxies,
        http: coffer_server::HttpLimits,
        dashboard_cookies: coffer_server::SecureCookies,
    ) -> Server {
        let backing = Backing::new().await;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let init = backing.init(&data_dir).await;
        let mut server = Server {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: init.api_token.expose_secret().to_owned(),
            account: init.account_id.to_string(),
            stop: None,
            task: None,
            data_dir,
            trusted_proxies,
            http,
            dashboard_cookies,
            _dir: dir,
            backing,
        };
        server.launch().await;
        server
    }

    /// Serves the data dir on a free port.
    async fn launch(&mut self) {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = ServeOptions {
            data_dir: self.data_dir.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            insecure_http: false,
            dashboard_secure_cookies: self.dashboard_cookies,
            secrets_quota: 10,
            max_stores: 3,
            feed_retention: coffer_server::ServeOptions::DEFAULT_FEED_RETENTION,
            trusted_proxies: self.trusted_proxies.clone(),
            http: self.http,
            snapshots: Default::default(),
            runtime_rate: None,
            keys: Default::default(),
            reload: Default::default(),
            metrics_listen: None,
        };
        let task = tokio::spawn(coffer_server::serve_on(
            opts,
            self.backing.database.clone(),
            Default::default(),
            move |addr| {
                let _ = ready_tx.send(addr);
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        self.addr = tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("server ready in time")
            .expect("server started");
        self.stop = Some(stop_tx);
        self.task = Some(task);
    }

    /// Stops the server and waits for it: at shutdown it writes what it keeps in memory
    /// (aggregated access events and failed authentications, last-used times).
    async fn halt(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(15), self.task.take().unwrap())
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
    }

    pub(crate) async fn stop(mut self) {
        self.halt().await;
    }

    /// Stops the server and serves the same data dir again (on another port).
    async fn restart(mut self) -> Server {
        self.halt().await;
        self.launch().await;
        self
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

impl Server {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn account_url(&self, path: &str) -> String {
        self.url(&format!("/client/v4/accounts/{}{path}", self.account))
    }

    /// `GET` with `token`, and optionally an `X-Forwarded-For`; the status.
    async fn status_of(&self, url: &str, token: &str, forwarded_for: Option<&str>) -> u16 {
        let mut req = reqwest::Client::new().get(url).bearer_auth(token);
        if let Some(f) = forwarded_for {
            req = req.header("x-forwarded-for", f);
        }
        req.send().await.unwrap().status().as_u16()
    }

    /// A JSON call as the operator; the `result`.
    pub(crate) async fn operator(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r: Value = reqwest::Client::new()
            .request(method, self.account_url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["success"], true, "{r}");
        r["result"].clone()
    }

    /// The instance's audit entries with `outcome`.
    async fn audit(&self, query: &str) -> Vec<Value> {
        let log: Value = reqwest::Client::new()
            .get(self.account_url(&format!("/audit_logs?{query}&per_page=100")))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        log["result"].as_array().expect("entries").clone()
    }
}

/// Repeated failed authentications from one address are refused for a while (429 with
/// Retry-After, the refusal audited once, the failures after it not each audited), but a token
/// that verifies is never refused because of other requests' failures: one bad client behind a
/// shared address (a proxy, a NAT) cannot lock out the others, whether their tokens were used
/// before or not, on the control-plane API and on the runtime API alike.
#[tokio::test]
async fn failed_authentications_are_limited_but_valid_tokens_never_are() {
    let server = Server::start().await;
    let quota = server.account_url("/secrets_store/quota");
    // Made before the flood, used for the first time after it (nothing cached for them).
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
            serde_json::json!([{"name": "k", "value": "v", "scopes": ["workers"]}]),
        )
        .await;
    let fresh_api = server
        .operator(
            reqwest::Method::POST,
            "/tokens",
            serde_json::json!({"name": "late", "role": "secrets_store_reporter"}),
        )
        .await;
    let fresh_api = fresh_api["value"]
        .as_str()
        .unwrap_or_else(|| panic!("a token value: {fresh_api}"))
        .to_owned();
    let svc = server
        .operator(
            reqwest::Method::POST,
            "/secrets_store/services",
            serde_json::json!({"name": "app", "secrets_store_secrets": [
                {"binding": "K", "store_id": store, "secret_name": "k"}]}),
        )
        .await;
    let svc_token = svc["service_token"].as_str().unwrap().to_owned();
    let read = server.url("/runtime/v1/bindings/K");

    // A flood of failures: malformed tokens, unknown ids, a real id with a wrong secret.
    let real_id_wrong_secret = format!("{}{}", &fresh_api[..fresh_api.len() - 43], "A".repeat(43));
    let bad = format!("coffer_{}_{}", random_id(), "A".repeat(43));
    let mut statuses = Vec::new();
    for i in 0..20 {
        let token = match i % 3 {
            0 => "garbage".to_owned(),
            1 => bad.clone(),
            _ => format!("coffersvc_{}_{}", random_id(), "Z".repeat(43)),
        };
        let url = if i % 2 == 0 { &quota } else { &read };
        statuses.push(server.status_of(url, &token, None).await);
    }
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let r = reqwest::Client::new()
        .get(&quota)
        .bearer_auth(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], ErrorCode::RateLimited.code());
    let denied_logins = server.audit("action=login&outcome=denied").await.len();
    // Failures go on being refused, on both APIs, and are no longer audited one by one.
    for url in [&quota, &read] {
        assert_eq!(server.status_of(url, &bad, None).await, 429);
        assert_eq!(server.status_of(url, "garbage", None).await, 429);
    }
    assert_eq!(
        server.status_of(&quota, &real_id_wrong_secret, None).await,
        429
    );
    // Valid tokens work from the refused address: the operator's, and tokens nothing has
    // cached yet, on the control-plane API and the runtime API.
    assert_eq!(server.status_of(&quota, &server.token, None).await, 200);
    assert_eq!(server.status_of(&quota, &fresh_api, None).await, 200);
    assert_eq!(server.status_of(&read, &svc_token, None).await, 200);
    // What a valid token is told still holds: an API token on the runtime API is the wrong kind.
    assert_eq!(server.status_of(&read, &fresh_api, None).await, 403);

    // The moment the budget ran out is in the instance's audit log (the operator's account),
    // once the aggregated failures are written: at the next round, or at shutdown.
    assert_eq!(
        server.audit("outcome=rate_limited").await,
        Vec::<Value>::new()
    );
    let server = server.restart().await;
    let entries = server.audit("outcome=rate_limited").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["action"], "login");
    assert_eq!(entries[0]["client"], "127.0.0.1");
    assert_eq!(entries[0]["attempts"], 1);
    // The failure over the limit with a real token id is counted, not written on its own:
    // one aggregated entry for that token and address.
    let denied: Vec<Value> = server.audit("action=login&outcome=denied").await;
    assert_eq!(denied.len(), denied_logins + 1, "{denied:?}");
    let late = denied
        .iter()
        .find(|e| e["resource"]["token_id"] == fresh_api[7..39])
        .unwrap_or_else(|| panic!("the forged secret of a real id: {denied:?}"));
    assert_eq!(late["attempts"], 1, "{late}");
    assert!(
        !serde_json::to_string(&entries).unwrap().contains(&bad),
        "the guessed token is not recorded"
    );
    server.stop().await;
}

/// Behind a trusted proxy, the client is the address the proxy names: failures are counted per
/// client, not per proxy, and the audit log records the client. From any other peer the header
/// is ignored, so nobody can dodge the limit, or lock someone else out, by writing it.
#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_limited_and_recorded() {
    let proxies = coffer_server::TrustedProxies::with_header(
        vec!["127.0.0.0/8".parse().unwrap()],
        "x-forwarded-for",
    )
    .unwrap();
    let server = Server::start_behind(proxies).await;
    let quota = server.account_url("/secrets_store/quota");
    let bad = format!("coffer_{}_{}", random_id(), "A".repeat(43));
    // The client wrote its own header too; the proxy appended what it saw.
    let client_a = Some("6.6.6.6, 198.51.100.1");
    for _ in 0..20 {
        assert_eq!(server.status_of(&quota, &bad, client_a).await, 401);
    }
    assert_eq!(server.status_of(&quota, &bad, client_a).await, 429);
    // Another client behind the same proxy is not refused, nor is the claimed "6.6.6.6".
    assert_eq!(
        server.status_of(&quota, &bad, Some("198.51.100.2")).await,
        401
    );
    assert_eq!(server.status_of(&quota, &bad, Some("6.6.6.6")).await, 401);
    let server = server.restart().await;
    let entries = server.audit("outcome=rate_limited").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["client"], "198.51.100.1");
    server.stop().await;

    // Without trusted proxies the header means nothing: every failure is 127.0.0.1's.
    let server = Server::start().await;
    let quota = server.account_url("/secrets_store/quota");
    for i in 0..20 {
        let spoofed = format!("198.51.100.{i}");
        assert_eq!(server.status_of(&quota, &bad, Some(&spoofed)).await, 401);
    }
    assert_eq!(
        server.status_of(&quota, &bad, Some("203.0.113.9")).await,
        429
    );
    let server = server.restart().await;
    let entries = server.audit("outcome=rate_limited").await;
    assert_eq!(entries[0]["client"], "127.0.0.1");
    server.stop().await;
}

/// `--dashboard-secure-cookies` as `serve` wires it: the cookie a sign-in over plain HTTP on
/// 127.0.0.1 gets, with and without a trusted proxy saying the browser used HTTPS.
#[tokio::test]
async fn the_dashboard_cookie_is_secure_as_the_option_says() {
    use coffer_server::SecureCookies;
    let localhost: coffer_server::IpNet = "127.0.0.1/32".parse().unwrap();
    let behind = coffer_server::TrustedProxies::new(
        vec![localhost],
        coffer_server::TrustedProxies::DEFAULT_HEADER,
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // (option, trusted proxies, X-Forwarded-Proto sent, Secure expected)
    let cases = [
        (SecureCookies::Auto, false, Some("https"), false),
        (SecureCookies::Auto, true, None, false),
        (SecureCookies::Auto, true, Some("http"), false),
        (SecureCookies::Auto, true, Some("https"), true),
        (SecureCookies::Always, false, None, true),
        (SecureCookies::Never, true, Some("https"), false),
    ];
    for (option, trusted, proto, secure) in cases {
        let proxies = if trusted {
            behind.clone()
        } else {
            Default::default()
        };
        let server = Server::start_full(proxies, Default::default(), option).await;
        let mut req = client
            .post(format!("http://{}/dashboard/sign-in", server.addr))
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={}", server.token));
        if let Some(p) = proto {
            req = req.header("x-forwarded-proto", p);
        }
        let r = req.send().await.unwrap();
        let case = format!("{option:?}, trusted {trusted}, {proto:?}");
        assert_eq!(r.status(), 303, "{case}");
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert_eq!(cookie.ends_with("; Secure"), secure, "{case}: {cookie}");
        assert_eq!(
            cookie.starts_with("__Host-coffer_session=") && cookie.contains("; Path=/;"),
            secure,
            "{case}: {cookie}"
        );
        // The cookie works on the next request, as a browser would send it back.
        let pair = cookie.split(';').next().unwrap().to_owned();
        let mut next = client
            .get(format!("http://{}/dashboard/stores", server.addr))
            .header("cookie", pair);
        if let Some(p) = proto {
            next = next.header("x-forwarded-proto", p);
        }
        assert_eq!(next.send().await.unwrap().status(), 200, "{case}");
        server.stop().await;
    }
}
