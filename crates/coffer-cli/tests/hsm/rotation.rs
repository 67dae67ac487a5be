//! Rotating a PKCS#11 KEK against a running server: a new key object in the token, reads and
//! writes throughout, `kill -9` half-way, the old object destroyed in the token once nothing
//! needs it, and a token that lost a recorded version's object refused by name.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use super::*;

/// Secrets made before the rotation, each sealed under its own DEK (`--dek-max-seals 1`).
const N: usize = 30;
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

/// The labels of the secret-key objects in the token, as pkcs11-tool (not Coffer) sees them.
pub(super) fn token_labels(hsm: &SoftHsm) -> Vec<String> {
    let mut cmd = Command::new("pkcs11-tool");
    hsm.configure(&mut cmd);
    cmd.args(["--module", hsm.module().to_str().unwrap()])
        .args(["--token-label", TOKEN, "--login", "--pin", USER_PIN])
        .args(["--list-objects", "--type", "secrkey"]);
    let out = cmd.output().expect("run pkcs11-tool");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("label:"))
        .map(|l| l.trim().to_owned())
        .collect()
}

pub(super) fn delete_object(hsm: &SoftHsm, label: &str) {
    let mut cmd = Command::new("pkcs11-tool");
    hsm.configure(&mut cmd);
    cmd.args(["--module", hsm.module().to_str().unwrap()])
        .args(["--token-label", TOKEN, "--login", "--pin", USER_PIN])
        .args(["--delete-object", "--type", "secrkey", "--label", label]);
    let out = cmd.output().expect("run pkcs11-tool");
    assert!(out.status.success(), "{out:?}");
}

pub(super) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub(super) fn start_server_with(hsm: &SoftHsm, data: &Path, args: &[&str]) -> Server {
    let mut cmd = hsm_cmd(
        hsm,
        Some(USER_PIN),
        &["server", "--data-dir", data.to_str().unwrap()],
    );
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info");
    Server::spawn(cmd)
}

#[test]
fn a_pkcs11_kek_rotates_online_resumes_after_kill_9_and_destroys_the_old_object() {
    let Some(hsm) = SoftHsm::new(
        "a_pkcs11_kek_rotates_online_resumes_after_kill_9_and_destroys_the_old_object",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, token) = init_hsm(&hsm, &data);
    let v2_label = format!("{OBJECT}.v2");
    // Slow enough to be caught half-way: 5 keys, then a second's pause.
    let slow = [
        "--dek-max-seals",
        "1",
        "--kek-rewrap-rate",
        "5",
        "--kek-retire-grace",
        "1",
    ];
    let server = start_server_with(&hsm, &data, &slow);
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
    assert_eq!(before["versions"][0]["provider"], "pkcs11", "{before}");
    assert_eq!(before["versions"][0]["deks"], N as u64, "{before}");
    let total = before["versions"][0]["deks"].as_u64().unwrap()
        + before["versions"][0]["instance_keys"].as_u64().unwrap();
    assert_eq!(token_labels(&hsm), vec![OBJECT.to_owned()]);

    // Reads (fresh unwraps: a new server caches nothing yet) and writes run throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (url, svc_token, stop) = (conn.url.clone(), svc_token.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let i = reads % N;
                let answer = runtime_get(&url, &svc_token, &format!("/runtime/v1/bindings/B{i}"));
                assert_eq!(answer.status, 200, "{answer:?}");
                assert_eq!(answer.body, format!("value-{i}").into_bytes());
                reads += 1;
            }
            reads
        })
    };
    let writer = {
        let conn = Conn {
            url: conn.url.clone(),
            token: conn.token.clone(),
            account: conn.account.clone(),
        };
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{written}");
                conn.run_with_stdin(
                    &[
                        "secret", "create", &store, "--name", &name, "--scopes", "workers",
                    ],
                    &format!("written-{written}"),
                )
                .ok();
                written += 1;
            }
            written
        })
    };

    let started = conn.run(&["kek", "rotate", "--json"]).ok().json();
    assert_eq!(started["active_version"], 2, "{started}");
    assert_eq!(started["from_version"], 1, "{started}");
    // A second start while the first rewraps: one line, non-zero exit, nothing changed.
    let line = conn.run(&["kek", "rotate"]).one_error_line(1).to_owned();
    assert!(
        line.contains("kek_rotation_running") || line.contains("1310"),
        "{line}"
    );
    // The new version is an object of its own in the same token, recorded by URI (label and
    // CKA_ID), never with the PIN.
    let mut labels = token_labels(&hsm);
    labels.sort();
    assert_eq!(labels, vec![OBJECT.to_owned(), v2_label.clone()]);
    let record = std::fs::read_to_string(data.join("kek-versions.toml")).unwrap();
    assert!(
        record.contains(&format!("object={v2_label};id=")),
        "{record}"
    );
    assert!(!record.contains(USER_PIN), "{record}");

    // Half-way: some keys rewrapped, some not; then kill -9.
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
    let versions = mid["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{mid}");
    // A backup of the token taken mid-rotation holds both objects.
    let backup = tmp.path().join("token-backup");
    copy_dir(&hsm.tokens_dir(), &backup);
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    let written = writer.join().unwrap();
    assert!(reads > 0 && written > 0, "reads {reads}, writes {written}");
    server.kill_9();
    assert!(
        token_labels(&hsm).contains(&OBJECT.to_owned()),
        "version 1 outlives the kill"
    );

    // The restarted server finds the rotation unfinished and completes it.
    let server = start_server_with(&hsm, &data, &["--kek-retire-grace", "1"]);
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
    assert_eq!(versions[0]["provider"], "pkcs11", "{done}");
    assert!(
        versions[0]["deks"].as_u64().unwrap() >= (N + written) as u64,
        "{done}"
    );
    assert!(server.log().contains("resuming"), "{}", server.log());
    // Asked directly, the token no longer holds version 1's object.
    assert_eq!(token_labels(&hsm), vec![v2_label.clone()]);

    // Every value reads back, those written during the rotation too.
    for i in 0..N {
        let answer = runtime_get(&conn.url, &svc_token, &format!("/runtime/v1/bindings/B{i}"));
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body, format!("value-{i}").into_bytes());
    }
    let bindings: Vec<Value> = (0..written)
        .map(|i| json!({ "binding": format!("W{i}"), "store_id": store, "secret_name": format!("w{i}") }))
        .collect();
    let svc2 = api_post(
        &conn,
        &format!("{base}/services"),
        &json!({ "name": "writes", "secrets_store_secrets": bindings }),
    );
    let svc2_token = svc2["service_token"].as_str().unwrap().to_owned();
    for i in 0..written {
        let answer = runtime_get(
            &conn.url,
            &svc2_token,
            &format!("/runtime/v1/bindings/W{i}"),
        );
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body, format!("written-{i}").into_bytes());
    }
    drop(server);

    // The token restored from the mid-rotation backup holds version 1's object again, which the
    // record says is retired: the next start destroys it, and serves.
    std::fs::remove_dir_all(hsm.tokens_dir()).unwrap();
    copy_dir(&backup, &hsm.tokens_dir());
    let mut labels = token_labels(&hsm);
    labels.sort();
    assert_eq!(labels, vec![OBJECT.to_owned(), v2_label.clone()]);
    let server = start_server_with(&hsm, &data, &[]);
    assert_eq!(token_labels(&hsm), vec![v2_label.clone()]);
    assert!(
        server
            .log()
            .contains("destroyed the key object of a retired KEK version"),
        "{}",
        server.log()
    );
    let answer = runtime_get(&server.url, &svc_token, "/runtime/v1/bindings/B0");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, b"value-0".to_vec());
    drop(server);

    // A token that lost the active version's object: the server refuses to start, naming it.
    delete_object(&hsm, &v2_label);
    let out = run_to_exit(hsm_cmd(
        &hsm,
        Some(USER_PIN),
        &[
            "server",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    ));
    assert!(!out.status.success(), "{out:#?}");
    assert!(out.stderr.contains(&format!("\"{v2_label}\"")), "{out:#?}");
    assert!(out.stderr.contains("no key object"), "{out:#?}");
}
