//! The `ai_gateway` example end to end: a real Coffer server in-process holds the key, the
//! example reads it through the SDK with a service token and sends it to a tiny local "gateway"
//! as `Authorization: Bearer <key>`.
//!
//! `cargo test` builds the package's examples before running its tests, into
//! `target/<profile>/examples/`, next to this test's own `deps/` directory.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::thread::JoinHandle;

use coffer_client::{Client, CreateSecret, DeployService, SecretBinding, SecretValue};

const VALUE: &str = "sk-proj-v4lue-Zq81xPw27k";

/// The example binary built by `cargo test`.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/examples/<name>
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: `cargo test -p coffer-client` builds it (a `--test` filter alone does \
         not; run `cargo build -p coffer-client --example {name}` first)",
        path.display()
    );
    path
}

/// What the gateway saw.
#[derive(Debug)]
struct Request {
    request_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// A one-request HTTP listener answering 200 with a small JSON body.
fn gateway() -> (String, JoinHandle<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/v1/ACCOUNT_TAG/openai/chat/completions",
        listener.local_addr().unwrap()
    );
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = conn.read(&mut chunk).unwrap();
            assert!(n > 0, "the client closed before sending headers");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
        while buf.len() < head_end + length {
            let n = conn.read(&mut chunk).unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        let answer = r#"{"choices":[{"message":{"content":"pun"}}]}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{answer}",
            answer.len()
        );
        conn.write_all(response.as_bytes()).unwrap();
        Request {
            request_line,
            headers,
            body: String::from_utf8(buf[head_end..].to_vec()).unwrap(),
        }
    });
    (url, handle)
}

async fn run_example(args: Vec<String>, envs: Vec<(&'static str, String)>) -> Output {
    let exe = example_binary("ai_gateway");
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env_remove("AI_GATEWAY_BINDING")
            .env_remove("COFFER_SERVICE_TOKEN")
            .env_remove("COFFER_API_URL");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_sends_the_bound_key_as_a_bearer_token() {
    // Fail early, before starting anything, if the example was not built.
    example_binary("ai_gateway");

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let init = coffer_server::init_data_dir(&data).await.unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = coffer_server::ServeOptions {
        data_dir: data,
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        insecure_http: false,
        dashboard_secure_cookies: Default::default(),
        secrets_quota: coffer_server::ServeOptions::DEFAULT_SECRETS_QUOTA,
        max_stores: coffer_server::ServeOptions::DEFAULT_MAX_STORES,
        feed_retention: coffer_server::ServeOptions::DEFAULT_FEED_RETENTION,
        trusted_proxies: Default::default(),
        http: Default::default(),
        snapshots: Default::default(),
        runtime_rate: None,
        keys: Default::default(),
        reload: Default::default(),
        metrics_listen: None,
    };
    let server = tokio::spawn(coffer_server::serve(
        options,
        move |addr| {
            let _ = ready_tx.send(addr);
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    let api_url = format!("http://{}", ready_rx.await.unwrap());

    let client = Client::new(
        &api_url,
        init.api_token.expose_secret(),
        &init.account_id.to_string(),
    )
    .unwrap();
    let store = client.create_store("prod").await.unwrap();
    client
        .create_secrets(
            &store.id,
            vec![CreateSecret {
                name: "openai-key".into(),
                value: SecretValue::new(VALUE.into()),
                scopes: vec!["workers".into()],
                comment: None,
            }],
        )
        .await
        .unwrap();
    let deployed = client
        .deploy_service(&DeployService {
            name: "ai-gateway".into(),
            kind: None,
            // The announcement's binding name.
            secrets_store_secrets: vec![SecretBinding {
                binding: "open_AI_key".into(),
                store_id: store.id.clone(),
                secret_name: "openai-key".into(),
            }],
            secrets_store_stores: vec![],
        })
        .await
        .unwrap();
    let token = deployed
        .service_token
        .expect("the first deploy shows the service token")
        .expose_secret()
        .to_owned();

    let (url, seen) = gateway();
    let out = run_example(
        vec!["--binding".into(), "open_AI_key".into(), url],
        vec![
            ("COFFER_SERVICE_TOKEN", token.clone()),
            ("COFFER_API_URL", api_url.clone()),
        ],
    )
    .await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout, "200 OK\n");
    assert!(
        !stdout.contains(VALUE) && !stderr.contains(VALUE),
        "{out:?}"
    );
    let request = seen.join().unwrap();
    assert_eq!(
        request.request_line,
        "POST /v1/ACCOUNT_TAG/openai/chat/completions HTTP/1.1"
    );
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        header("authorization"),
        Some(format!("Bearer {VALUE}").as_str())
    );
    assert_eq!(header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(body["model"], "gpt-3.5-turbo");
    assert_eq!(body["messages"][0]["role"], "user");

    // The binding name from the environment; an unbound name fails with the runtime's message
    // and nothing is sent.
    let (url, _never) = gateway();
    let out = run_example(
        vec![url],
        vec![
            ("COFFER_SERVICE_TOKEN", token.clone()),
            ("COFFER_API_URL", api_url.clone()),
            ("AI_GATEWAY_BINDING", "OPENAI_KEY".into()),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: binding \"OPENAI_KEY\" not found\n"
    );
    // No token: a clear message.
    let out = run_example(vec!["http://127.0.0.1:1/".into()], vec![]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("COFFER_SERVICE_TOKEN"),
        "{out:?}"
    );

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
