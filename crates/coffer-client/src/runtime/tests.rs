//! Unit tests of the runtime SDK against a scripted HTTP responder: paths and headers, the
//! cache, and how each answer becomes an error.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Instant;

use super::*;

const TOKEN: &str = "coffersvc_0123456789abcdef0123456789abcdef_tok";
const VALUE: &str = "sk-v4lue-Qx81zPw";

/// One canned answer. With `gate`, the responder waits for a message on it before answering.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    gate: Option<Receiver<()>>,
}

fn text(body: &str) -> Reply {
    Reply {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        body: body.to_owned(),
        gate: None,
    }
}

fn json(status: u16, body: serde_json::Value) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: body.to_string(),
        gate: None,
    }
}

fn error(status: u16, code: u32, message: &str) -> Reply {
    json(
        status,
        serde_json::json!({"success": false, "result": null, "messages": [],
            "errors": [{"code": code, "message": message}]}),
    )
}

/// A request the responder saw.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    headers: String,
}

/// Answers requests on a loopback port with the replies given, in order; once they are used up,
/// with a 500 envelope. Each connection carries one request.
struct Responder {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Responder {
    fn start(replies: Vec<Reply>) -> Responder {
        let mut replies = replies.into_iter();
        Responder::route(move |_| {
            replies
                .next()
                .unwrap_or_else(|| error(500, 1501, "no more scripted replies"))
        })
    }

    /// Answers each request with what `answer` returns for it.
    fn route(mut answer: impl FnMut(&Seen) -> Reply + Send + 'static) -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let Some(request) = read_request(&mut conn) else {
                    continue;
                };
                let reply = answer(&request);
                lock(&log).push(request);
                if let Some(gate) = reply.gate {
                    let _ = gate.recv();
                }
                let response = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{}",
                    reply.status,
                    reply.content_type,
                    reply.body.len(),
                    reply.body
                );
                let _ = conn.write_all(response.as_bytes());
            }
        });
        Responder {
            url: format!("http://{addr}"),
            seen,
            stop,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }

    fn count(&self) -> usize {
        lock(&self.seen).len()
    }

    fn paths(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .map(|s| s.request_line)
            .collect::<Vec<_>>()
    }

    /// Waits (without blocking the test's runtime) until `n` requests have arrived.
    async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "expected {n} requests, saw {:?}",
                self.paths()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that the thread ends.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn read_request(conn: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8(buf).ok()?;
    let (request_line, headers) = head.split_once("\r\n")?;
    Some(Seen {
        request_line: request_line.to_owned(),
        headers: headers.to_ascii_lowercase(),
    })
}

fn env(url: &str) -> Env {
    Env::builder()
        .api_url(url)
        .service_token(TOKEN)
        .build()
        .unwrap()
}

fn cached_env(url: &str, ttl: Duration) -> Env {
    Env::builder()
        .api_url(url)
        .service_token(TOKEN)
        .cache_ttl(ttl)
        .build()
        .unwrap()
}

/// Fails if `err`'s message or `Debug` holds `secret`.
fn assert_hides(err: &RuntimeError, secret: &str) {
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(secret), "{text}");
    }
}

#[tokio::test]
async fn a_read_sends_the_service_token_and_returns_the_body_redacted() {
    let server = Responder::start(vec![text(VALUE)]);
    // A wrangler-style URL works too.
    let env = env(&format!("{}/client/v4/", server.url));
    let value = env.secret("OPENAI_KEY").get().await.unwrap();
    assert_eq!(value.expose_secret(), VALUE);
    assert_eq!(format!("{value:?}"), "[redacted]");
    assert_eq!(format!("{value}"), "[redacted]");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].request_line,
        "GET /runtime/v1/bindings/OPENAI_KEY HTTP/1.1"
    );
    assert!(
        seen[0].headers.contains(&format!(
            "authorization: bearer {}",
            TOKEN.to_ascii_lowercase()
        )),
        "{}",
        seen[0].headers
    );
    // Without a cache, every read is a request of its own.
    let server = Responder::start(vec![text("one"), text("two")]);
    let env = self::env(&server.url);
    assert_eq!(env.secret("K").get().await.unwrap().expose_secret(), "one");
    assert_eq!(env.secret("K").get().await.unwrap().expose_secret(), "two");
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn get_all_reads_one_json_object() {
    let server = Responder::start(vec![json(
        200,
        serde_json::json!({"OPENAI_KEY": VALUE, "DB_URL": "postgres://x"}),
    )]);
    let all = env(&server.url).get_all().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all["OPENAI_KEY"].expose_secret(), VALUE);
    assert_eq!(all["DB_URL"].expose_secret(), "postgres://x");
    assert!(!format!("{all:?}").contains(VALUE));
    assert_eq!(server.paths(), ["GET /runtime/v1/bindings HTTP/1.1"]);
}

#[tokio::test]
async fn store_secrets_have_their_own_path_and_names_are_checked_first() {
    let server = Responder::start(vec![text(VALUE)]);
    let env = env(&server.url);
    let value = env
        .store("SHARED")
        .secret("stripe-key_2")
        .get()
        .await
        .unwrap();
    assert_eq!(value.expose_secret(), VALUE);
    assert_eq!(
        server.paths(),
        ["GET /runtime/v1/stores/SHARED/secrets/stripe-key_2 HTTP/1.1"]
    );

    // Names that cannot exist are refused before any request, with the reason.
    for bad in ["", "a/b", "..", "a b", "%2F", &"x".repeat(300)] {
        let err = env.store("SHARED").secret(bad).get().await.unwrap_err();
        assert!(
            matches!(err, RuntimeError::InvalidSecretName { .. }),
            "{bad:?}: {err:?}"
        );
        assert!(err.to_string().starts_with("invalid secret name"), "{err}");
        assert!(err.to_string().len() < 300, "{err}");
    }
    for bad in ["", "MY-KEY", "1KEY", "a/b", "../x", "K Y", "é"] {
        let err = env.secret(bad).get().await.unwrap_err();
        assert!(
            matches!(err, RuntimeError::InvalidBindingName { .. }),
            "{bad:?}: {err:?}"
        );
        let err = env.store(bad).secret("x").get().await.unwrap_err();
        assert!(
            matches!(err, RuntimeError::InvalidBindingName { .. }),
            "{bad:?}: {err:?}"
        );
    }
    let err = env.secret("MY-KEY").get().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid binding name \"MY-KEY\": must be a valid environment variable name: letters, \
         digits and underscores, not starting with a digit"
    );
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn error_answers_say_what_failed_and_never_hold_a_value() {
    let cases: Vec<(Reply, &str)> = vec![
        (
            error(404, 1207, "Secret \"OPENAI_KEY\" not found"),
            "Secret \"OPENAI_KEY\" not found",
        ),
        (
            error(
                403,
                1103,
                "secret \"openai-key\" does not carry the scope \"workers\"",
            ),
            "scope denied: secret \"openai-key\" does not carry the scope \"workers\"",
        ),
        (
            error(403, 1104, "an API token cannot read bindings"),
            "wrong kind of token: an API token cannot read bindings",
        ),
        (
            error(401, 1100, "the token is revoked"),
            "the service token was refused: the token is revoked",
        ),
        (
            error(500, 1501, "internal error"),
            "/runtime/v1/bindings/OPENAI_KEY: HTTP 500: [1501 internal_error] internal error",
        ),
        (
            Reply {
                status: 502,
                content_type: "text/html",
                body: "<html>\n<b>bad gateway</b></html>".to_owned(),
                gate: None,
            },
            "(HTTP 502): <html> <b>bad gateway</b></html>",
        ),
        // A 404 without a message still names the binding.
        (
            json(
                404,
                serde_json::json!({"success": false, "errors": [{"code": 1207, "message": ""}]}),
            ),
            "Secret \"OPENAI_KEY\" not found",
        ),
    ];
    for (reply, expected) in cases {
        let server = Responder::start(vec![reply]);
        let err = env(&server.url)
            .secret("OPENAI_KEY")
            .get()
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.ends_with(expected),
            "{msg:?} should end with {expected:?}"
        );
        assert!(!msg.contains('\n'), "{msg:?}");
        assert!(!msg.contains(TOKEN), "{msg:?}");
    }

    let server = Responder::start(vec![error(404, 1207, "Secret \"X\" not found")]);
    let err = env(&server.url).secret("X").get().await.unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound { .. }), "{err:?}");
    assert_eq!(err.status(), Some(404));
    let server = Responder::start(vec![error(401, 1100, "revoked")]);
    let err = env(&server.url).get_all().await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::Unauthenticated { .. }),
        "{err:?}"
    );

    // Successful answers that are not what a read expects: the body is never quoted.
    let bad_bodies = [
        json(200, serde_json::json!({"OPENAI_KEY": 5, "B": VALUE})),
        json(200, serde_json::json!([VALUE])),
        text(&format!("{{\"A\": \"{VALUE}")),
        text(&format!("OPENAI_KEY={VALUE}")),
    ];
    for reply in bad_bodies {
        let server = Responder::start(vec![reply]);
        let err = env(&server.url).get_all().await.unwrap_err();
        assert!(matches!(err, RuntimeError::Decode { .. }), "{err:?}");
        assert!(err.to_string().contains("not shown"), "{err}");
        assert_hides(&err, VALUE);
    }
}

#[tokio::test]
async fn transport_errors_name_the_url_and_redirects_are_not_followed() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = env(&format!("http://127.0.0.1:{port}"))
        .secret("K")
        .get()
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot reach http://127.0.0.1:{port}/runtime/v1/bindings/K: connection refused")
    );

    let server = Responder::start(vec![Reply {
        status: 307,
        content_type: "text/plain",
        body: String::new(),
        gate: None,
    }]);
    let err = env(&server.url).secret("K").get().await.unwrap_err();
    assert!(err.to_string().contains("redirects"), "{err}");
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn settings_are_checked_when_building() {
    let err = Env::builder().build().unwrap_err();
    assert!(matches!(err, RuntimeError::MissingServiceToken), "{err:?}");
    assert!(err.to_string().contains("COFFER_SERVICE_TOKEN"), "{err}");
    let err = Env::builder().service_token("  ").build().unwrap_err();
    assert!(matches!(err, RuntimeError::MissingServiceToken), "{err:?}");
    let err = Env::builder()
        .service_token("coffersvc_x\nsecret-part")
        .build()
        .unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidServiceToken), "{err:?}");
    assert_hides(&err, "secret-part");
    for (url, reason) in [
        ("127.0.0.1:8080", "must start with http://"),
        ("ftp://h", "scheme"),
        ("http://u:p@h", "password"),
    ] {
        let err = Env::builder()
            .service_token(TOKEN)
            .api_url(url)
            .build()
            .unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidUrl { .. }), "{err:?}");
        assert!(err.to_string().contains(reason), "{err}");
    }
    // The default server, and Debug without the token.
    let env = Env::builder().service_token(TOKEN).build().unwrap();
    assert_eq!(env.api_url(), DEFAULT_API_URL);
    let builder = Env::builder().service_token(TOKEN);
    for text in [format!("{env:?}"), format!("{builder:?}")] {
        assert!(
            !text.contains(TOKEN) && !text.contains("0123456789abcdef"),
            "{text}"
        );
        assert!(text.contains("[redacted]"), "{text}");
    }
}

#[tokio::test]
async fn the_cache_loads_every_binding_once_and_falls_through_for_the_rest() {
    let server = Responder::start(vec![
        json(200, serde_json::json!({"A": "a-value", "B": "b-value"})),
        text("c-value"),
        text("store-value"),
    ]);
    let env = cached_env(&server.url, Duration::from_secs(600));
    // Concurrent first reads make one batch request.
    let (a, b, again) = tokio::join!(
        env.secret("A").get(),
        env.secret("B").get(),
        env.secret("A").get()
    );
    assert_eq!(a.unwrap().expose_secret(), "a-value");
    assert_eq!(b.unwrap().expose_secret(), "b-value");
    assert_eq!(again.unwrap().expose_secret(), "a-value");
    assert_eq!(server.paths(), ["GET /runtime/v1/bindings HTTP/1.1"]);
    // Served from memory, by every clone.
    let clone = env.clone();
    assert_eq!(
        clone.secret("B").get().await.unwrap().expose_secret(),
        "b-value"
    );
    let all = env.get_all().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(server.count(), 1);
    // A binding the cache does not hold, and a store binding: a request each.
    assert_eq!(
        env.secret("C").get().await.unwrap().expose_secret(),
        "c-value"
    );
    assert_eq!(
        env.store("S")
            .secret("x")
            .get()
            .await
            .unwrap()
            .expose_secret(),
        "store-value"
    );
    assert_eq!(
        server.paths()[1..],
        [
            "GET /runtime/v1/bindings/C HTTP/1.1",
            "GET /runtime/v1/stores/S/secrets/x HTTP/1.1"
        ]
    );
}

/// Everything logged through `tracing` on this thread while the guard lives.
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(Arc::clone(&buf));
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn a_failed_refresh_keeps_serving_the_last_values_and_the_next_one_retries() {
    // The test's runtime runs on this thread, so the refresh task logs here.
    let (logs, _guard) = capture_logs();
    let (release, gate): (Sender<()>, Receiver<()>) = channel();
    let mut third = json(200, serde_json::json!({"A": "new-v4lue-B"}));
    third.gate = Some(gate);
    let server = Responder::start(vec![
        json(200, serde_json::json!({"A": "old-v4lue-A"})),
        error(503, 1500, "storage unavailable"),
        third,
    ]);
    let env = cached_env(&server.url, Duration::from_millis(100));
    let read = || async {
        env.secret("A")
            .get()
            .await
            .unwrap()
            .expose_secret()
            .to_owned()
    };
    assert_eq!(read().await, "old-v4lue-A");
    // The refresh failed (the third request is held until released): still the old value,
    // from memory, and a warning without any value.
    server.wait_for(3).await;
    assert_eq!(read().await, "old-v4lue-A");
    assert_eq!(server.count(), 3);
    assert!(
        server
            .paths()
            .iter()
            .all(|p| p == "GET /runtime/v1/bindings HTTP/1.1"),
        "{:?}",
        server.paths()
    );
    let logged = String::from_utf8(lock(&logs).clone()).unwrap();
    assert!(logged.contains("WARN"), "{logged}");
    assert!(
        logged.contains("cannot reload the secret bindings; serving the values loaded before"),
        "{logged}"
    );
    assert!(logged.contains("storage unavailable"), "{logged}");
    // The retry succeeds: the new value is served.
    release.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = read().await;
        if value == "new-v4lue-B" {
            break;
        }
        assert_eq!(value, "old-v4lue-A");
        assert!(Instant::now() < deadline, "the refresh never landed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let logged = String::from_utf8(lock(&logs).clone()).unwrap();
    assert!(!logged.contains("v4lue"), "{logged}");
    assert!(!logged.contains(TOKEN), "{logged}");
}

#[tokio::test]
async fn a_failed_first_load_reads_directly() {
    let server = Responder::start(vec![error(500, 1501, "internal error"), text("direct")]);
    let env = cached_env(&server.url, Duration::from_secs(600));
    assert_eq!(
        env.secret("A").get().await.unwrap().expose_secret(),
        "direct"
    );
    assert_eq!(
        server.paths(),
        [
            "GET /runtime/v1/bindings HTTP/1.1",
            "GET /runtime/v1/bindings/A HTTP/1.1"
        ]
    );
}

#[tokio::test]
async fn the_refresh_task_stops_with_the_last_env() {
    let batch = || json(200, serde_json::json!({"A": "a"}));
    let ttl = Duration::from_millis(50);

    // Kept alive: it refreshes.
    let kept = Responder::start((0..50).map(|_| batch()).collect());
    let env = cached_env(&kept.url, ttl);
    env.secret("A").get().await.unwrap();
    kept.wait_for(3).await;

    // Dropped (with its clone) right after the first read: no refresh ever comes.
    let dropped = Responder::start((0..50).map(|_| batch()).collect());
    let gone = cached_env(&dropped.url, ttl);
    let clone = gone.clone();
    gone.secret("A").get().await.unwrap();
    drop(gone);
    drop(clone);
    tokio::time::sleep(ttl * 8).await;
    assert_eq!(dropped.count(), 1, "{:?}", dropped.paths());
    drop(env);
}

const BATCH: &str = "GET /runtime/v1/bindings HTTP/1.1";

/// A server whose first batch read answers `A` and `B`, and every later one `refusal`; direct
/// reads answer `B`'s rotated value and refuse `A` with `refusal`.
fn withdrawn(refusal: Refusal) -> Responder {
    let mut batches = 0;
    Responder::route(move |seen| match seen.request_line.as_str() {
        BATCH => {
            batches += 1;
            if batches == 1 {
                json(200, serde_json::json!({"A": "old-a", "B": "old-b"}))
            } else {
                refusal()
            }
        }
        "GET /runtime/v1/bindings/B HTTP/1.1" => text("rotated-b"),
        _ => refusal(),
    })
}

fn batches(server: &Responder) -> usize {
    server.paths().iter().filter(|p| *p == BATCH).count()
}

/// An answer refusing a read.
type Refusal = fn() -> Reply;

#[tokio::test]
async fn a_refused_refresh_drops_the_cache_and_reads_go_to_the_server() {
    let refusals: [(Refusal, &str); 5] = [
        (
            || error(401, 1100, "the token is revoked"),
            "Unauthenticated",
        ),
        (
            || error(403, 1103, "secret \"a\" does not carry the scope"),
            "ScopeDenied",
        ),
        (|| error(403, 1104, "not a service token"), "WrongTokenKind"),
        (|| error(403, 1101, "forbidden"), "Api"),
        (|| error(404, 1207, "Secret \"a\" not found"), "NotFound"),
    ];
    for (refusal, variant) in refusals {
        let server = withdrawn(refusal);
        let env = cached_env(&server.url, Duration::from_millis(50));
        assert_eq!(
            env.secret("A").get().await.unwrap().expose_secret(),
            "old-a"
        );
        // Two refused refreshes: the first one's answer has been handled.
        let deadline = Instant::now() + Duration::from_secs(10);
        while batches(&server) < 3 {
            assert!(Instant::now() < deadline, "{:?}", server.paths());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The withdrawn binding fails with the server's error, not the cached value...
        let err = env.secret("A").get().await.unwrap_err();
        assert!(
            format!("{err:?}").starts_with(variant),
            "{variant}: {err:?}"
        );
        assert_hides(&err, "old-a");
        // ...the other one is read directly and sees its rotated value...
        assert_eq!(
            env.secret("B").get().await.unwrap().expose_secret(),
            "rotated-b",
            "{variant}"
        );
        // ...and reading them all fails as the server does.
        let err = env.get_all().await.unwrap_err();
        assert!(
            format!("{err:?}").starts_with(variant),
            "{variant}: {err:?}"
        );
        let paths = server.paths();
        assert!(
            paths.contains(&"GET /runtime/v1/bindings/A HTTP/1.1".to_owned())
                && paths.contains(&"GET /runtime/v1/bindings/B HTTP/1.1".to_owned()),
            "{variant}: {paths:?}"
        );
    }
}

#[tokio::test]
async fn a_refresh_answered_429_keeps_serving_the_last_values() {
    let (logs, _guard) = capture_logs();
    let server = withdrawn(|| error(429, 1600, "too many requests"));
    let env = cached_env(&server.url, Duration::from_millis(50));
    assert_eq!(
        env.secret("B").get().await.unwrap().expose_secret(),
        "old-b"
    );
    server.wait_for(3).await;
    assert_eq!(
        env.secret("A").get().await.unwrap().expose_secret(),
        "old-a"
    );
    assert_eq!(
        env.secret("B").get().await.unwrap().expose_secret(),
        "old-b"
    );
    assert!(
        server.paths().iter().all(|p| p == BATCH),
        "{:?}",
        server.paths()
    );
    let logged = String::from_utf8(lock(&logs).clone()).unwrap();
    assert!(
        logged.contains("serving the values loaded before"),
        "{logged}"
    );
}

#[tokio::test]
async fn a_refresh_task_whose_runtime_shut_down_is_restarted_by_the_next_read() {
    let mut n = 0;
    let server = Responder::route(move |_| {
        n += 1;
        json(200, serde_json::json!({"A": format!("v{n}")}))
    });
    let env = cached_env(&server.url, Duration::from_millis(50));
    // The first read, and so the refresh task, on a runtime that then shuts down.
    let other = env.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let value = runtime.block_on(other.secret("A").get()).unwrap();
        assert_eq!(value.expose_secret(), "v1");
    })
    .join()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.count(), 1, "{:?}", server.paths());
    // The next read sees the task gone: it reloads, and the task runs again, here.
    assert_eq!(env.secret("A").get().await.unwrap().expose_secret(), "v2");
    server.wait_for(4).await;
    let value = env.secret("A").get().await.unwrap();
    assert_ne!(value.expose_secret(), "v2");
}

#[tokio::test]
async fn a_ca_certificate_is_read_when_building() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.pem");
    let err = Env::builder()
        .service_token(TOKEN)
        .ca_cert(&missing)
        .build()
        .unwrap_err();
    assert!(matches!(err, RuntimeError::CaCert { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("CA certificate {}: ", missing.display())),
        "{err}"
    );
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let err = Env::builder()
        .service_token(TOKEN)
        .ca_cert(&garbage)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "CA certificate {}: no PEM certificate found",
            garbage.display()
        )
    );
    // A PEM block that is not a certificate's base64.
    let err = Env::builder()
        .service_token(TOKEN)
        .ca_cert_pem("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
        .build()
        .unwrap_err();
    assert!(matches!(err, RuntimeError::CaCert { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("CA certificate (PEM given in memory): "),
        "{err}"
    );

    // COFFER_CA_CERT, as for the CLI; blank means unset.
    let vars = |ca: &'static str| {
        move |name: &str| match name {
            SERVICE_TOKEN_VAR => Some(TOKEN.into()),
            CA_CERT_VAR => Some(ca.into()),
            _ => None,
        }
    };
    let err = EnvBuilder::from_vars(vars("/nonexistent/coffer-ca.pem"))
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("CA certificate /nonexistent/coffer-ca.pem: "),
        "{err}"
    );
    assert!(format!("{:?}", EnvBuilder::from_vars(vars("/x/ca.pem"))).contains("/x/ca.pem"));
    EnvBuilder::from_vars(vars(" ")).build().unwrap();
}
