//! `coffer kek`: a rotation against a running server, interrupted by `kill -9` half-way, that
//! finishes after a restart with every value still readable and the old KEK version gone.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

/// Secrets made, each sealed under its own DEK (`--dek-max-seals 1`).
const N: usize = 40;
/// Status polls before giving up (a bound on waiting, not a speed check).
const POLLS: usize = 1200;

/// `POST {url}{path}` with the API token and a JSON body; the envelope's `result`.
fn api_post(conn: &Conn, path: &str, body: &Value) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let res = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("{}{path}", conn.url))
            .bearer_auth(&conn.token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let v: Value = res.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {v}");
        v["result"].clone()
    })
}

fn kek_status(conn: &Conn) -> Value {
    conn.run(&["kek", "status", "--json"]).ok().json()
}

#[test]
fn a_rotation_killed_half_way_finishes_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, token) = init(&data);
    // Slow enough to be caught half-way: 10 keys, then a second's pause.
    let slow = [
        "--dek-max-seals",
        "1",
        "--kek-rewrap-rate",
        "10",
        "--kek-retire-grace",
        "1",
    ];
    let server = Server::start_with(&data, &slow);
    let conn = Conn {
        url: server.url.clone(),
        token,
        account: account.clone(),
    };
    let store = create_store(&conn, "rot");
    let base = format!("/client/v4/accounts/{account}/secrets_store");
    let items: Vec<Value> = (0..N)
        .map(|i| json!({ "name": format!("s{i}"), "value": format!("value-{i}"), "scopes": ["workers"] }))
        .collect();
    api_post(
        &conn,
        &format!("{base}/stores/{store}/secrets"),
        &json!(items),
    );
    let bindings: Vec<Value> = (0..N)
        .map(|i| json!({ "binding": format!("B{i}"), "store_id": store, "secret_name": format!("s{i}") }))
        .collect();
    let svc = api_post(
        &conn,
        &format!("{base}/services"),
        &json!({ "name": "app", "secrets_store_secrets": bindings }),
    );
    let svc_token = svc["service_token"].as_str().unwrap().to_owned();
    let before = kek_status(&conn);
    assert_eq!(before["active_version"], 1, "{before}");
    let total = before["versions"][0]["deks"].as_u64().unwrap()
        + before["versions"][0]["instance_keys"].as_u64().unwrap();
    assert_eq!(before["versions"][0]["deks"], N as u64, "{before}");

    let started = conn.run(&["kek", "rotate", "--json"]).ok().json();
    assert_eq!(started["active_version"], 2, "{started}");
    assert_eq!(started["from_version"], 1, "{started}");
    // A second start while the first rewraps: one line, non-zero exit.
    let again = conn.run(&["kek", "rotate"]);
    let line = again.one_error_line(1);
    assert!(
        line.contains("kek_rotation_running") || line.contains("1310"),
        "{line}"
    );
    assert!(line.contains("still wraps keys"), "{line}");

    // Half-way: some keys rewrapped, some not.
    let mut mid = kek_status(&conn);
    for _ in 0..POLLS {
        let remaining = mid["rotation"]["remaining"].as_u64().unwrap_or(total);
        if remaining < total {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        mid = kek_status(&conn);
    }
    let remaining = mid["rotation"]["remaining"].as_u64().unwrap();
    assert!(remaining > 0 && remaining < total, "{mid}");
    assert_eq!(mid["rotation"]["state"], "running", "{mid}");
    server.kill_9();
    assert!(data.join("kek.key").exists(), "version 1 outlives the kill");
    assert!(data.join("kek-2.key").exists());

    // The restarted server finds the rotation unfinished and completes it.
    let server = Server::start_with(&data, &["--kek-retire-grace", "1"]);
    let conn = Conn {
        url: server.url.clone(),
        ..conn
    };
    let mut done = kek_status(&conn);
    for _ in 0..POLLS {
        if done["rotation"].is_null() {
            break;
        }
        assert_ne!(done["rotation"]["state"], "failed", "{done}");
        std::thread::sleep(Duration::from_millis(50));
        done = kek_status(&conn);
    }
    assert!(done["rotation"].is_null(), "{done}");
    assert_eq!(done["active_version"], 2, "{done}");
    let versions = done["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{done}");
    assert_eq!(versions[0]["deks"], N as u64, "{done}");
    assert!(!data.join("kek.key").exists(), "version 1's key is deleted");
    assert!(server.log().contains("resuming"), "{}", server.log());

    // Every value reads back, through DEKs that only version 2 now opens.
    for i in 0..N {
        let answer = runtime_get(&conn.url, &svc_token, &format!("/runtime/v1/bindings/B{i}"));
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body, format!("value-{i}").into_bytes());
    }
    // The table form names the one version.
    let table = conn.run(&["kek", "status"]).ok().stdout;
    assert!(table.starts_with("Active KEK version: 2\n"), "{table}");
    assert!(table.contains("No rotation under way."), "{table}");
    drop(server);
}
