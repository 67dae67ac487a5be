//! The control plane's `/healthz` on a real listener (`coffer_server::serve_on`): on
//! PostgreSQL it says when the database is gone (503, `database: unreachable`) and recovers by
//! itself; on SQLite it answers 200 without probing anything. How often it probes, and that no
//! request waits past the probe's timeout, is checked in `src/health.rs`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Backend, backend};
use crate::tcp::Server;

/// `GET /healthz`: its status, its JSON and how long it took.
async fn healthz(server: &Server) -> (u16, Value, Duration) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    let r = client.get(server.url("/healthz")).send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    (status, body, started.elapsed())
}

/// Asks `/healthz` every 100 ms until it answers `status` (for at most `within`); its JSON.
/// No answer may take longer than the probe's timeout (1 s) and a little.
async fn until(server: &Server, status: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (got, body, took) = healthz(server).await;
        assert!(took < Duration::from_millis(1500), "/healthz took {took:?}");
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz still answers {got} {body} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_says_when_the_database_is_gone_and_recovers() {
    let server = Server::start().await;
    let (status, body, _) = healthz(&server).await;
    assert_eq!(status, 200, "{body}");
    if backend() == Backend::Sqlite {
        assert_eq!(body, json!({ "status": "ok" }));
        server.stop().await;
        return;
    }
    assert_eq!(body, json!({ "status": "ok", "database": "ok" }));
    let name = server.backing.database_name().unwrap().to_owned();
    // The database refuses new connections and ends the open ones.
    server
        .backing
        .admin(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
        ))
        .await;
    let body = until(&server, 503, Duration::from_secs(5)).await;
    assert_eq!(
        body,
        json!({ "status": "unavailable", "database": "unreachable" })
    );
    // It stays so while the database is gone.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body, _) = healthz(&server).await;
    assert_eq!(status, 503, "{body}");
    // Back by itself once the database is.
    server
        .backing
        .admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true;"))
        .await;
    let body = until(&server, 200, Duration::from_secs(15)).await;
    assert_eq!(body, json!({ "status": "ok", "database": "ok" }));
    server.stop().await;
}
