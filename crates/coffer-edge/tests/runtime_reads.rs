//! An edge answers `GET /runtime/v1/bindings/{binding}` before its router
//! (`coffer_server::EdgeApp`); the control plane routes the same read. Over the wire, an edge
//! answers every variant of the read (served, refused, not found, other methods, `HEAD`, a
//! trailing slash, a percent-encoded name) as the control plane does: same status, body and
//! headers (request id, `no-store`, content type and length).

use reqwest::Method;

mod common;
use common::*;

const VALUE: &str = "fast-path-value-2c9e";

/// What an answer says, minus what differs between any two answers (the date).
#[derive(Debug, PartialEq)]
struct Said {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn ask(base: &str, method: &Method, path: &str, token: Option<&str>) -> Said {
    let mut req = http()
        .request(method.clone(), format!("{base}{path}"))
        .header("x-request-id", "the-same-id");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let mut headers: Vec<(String, String)> = r
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    let body = r.bytes().await.unwrap().to_vec();
    Said {
        status,
        headers,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_answers_runtime_reads_as_the_control_plane_does() {
    let World { tmp, cp, b, token } = world(VALUE, "edge-fast").await;
    let edge = synced_edge(tmp.path(), &cp, &token).await;
    let unknown = format!("coffersvc_{}_{}", "0".repeat(32), "A".repeat(43));
    let mut statuses = std::collections::BTreeSet::new();
    for path in [
        "/runtime/v1/bindings/K",
        "/runtime/v1/bindings/K?v=1",
        "/runtime/v1/bindings/NOPE",
        "/runtime/v1/bindings/%4B",
        "/runtime/v1/bindings/%FF",
        "/runtime/v1/bindings/K/",
        "/runtime/v1/bindings/",
        "/runtime/v1/bindings/K/x",
    ] {
        for method in [Method::GET, Method::HEAD, Method::POST] {
            let at_edge = ask(&edge.url, &method, path, Some(&b.token)).await;
            let at_cp = ask(&cp.url, &method, path, Some(&b.token)).await;
            assert_eq!(at_edge, at_cp, "{method} {path}");
            statuses.insert(at_edge.status);
            if method == Method::GET && path == "/runtime/v1/bindings/K" {
                assert_eq!(at_edge.body, VALUE.as_bytes());
                let header = |name: &str| {
                    at_edge
                        .headers
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.as_str())
                };
                assert_eq!(header("cache-control"), Some("no-store"));
                assert_eq!(header("x-request-id"), Some("the-same-id"));
                assert_eq!(header("content-length"), Some("20"));
            }
        }
    }
    // Refused tokens, a few (each counts against the address's failed-authentication budget).
    for path in ["/runtime/v1/bindings/K", "/runtime/v1/bindings/NOPE"] {
        for t in [None, Some(unknown.as_str())] {
            let at_edge = ask(&edge.url, &Method::GET, path, t).await;
            let at_cp = ask(&cp.url, &Method::GET, path, t).await;
            assert_eq!(at_edge, at_cp, "GET {path} with {t:?}");
            statuses.insert(at_edge.status);
        }
    }
    for status in [200, 401, 404, 405] {
        assert!(
            statuses.contains(&status),
            "{status} not seen: {statuses:?}"
        );
    }
}
