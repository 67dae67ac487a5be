//! `--log-format text|json` on real `coffer server`, `dev` and `edge` processes: every line of
//! standard error is read back (JSON lines parsed with serde_json), the request lines carry
//! their fields as fields, and no value or token is ever written, in either format.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Map, Value};

/// The values written through the API; none may reach a log line.
const CREATED: &str = "created-v4lue-Qz81pL";
const UPDATED: &str = "updated-v4lue-Wm47xK";
/// Sent in requests that are refused (a bad name; a body that is not JSON).
const REFUSED: &str = "refused-v4lue-Tn63bV";
const MALFORMED: &str = "malformed-v4lue-Rk29dS";
/// A client's own request id, which the log must carry.
const CLIENT_REQUEST_ID: &str = "log-test-42";

/// A data dir with a store and a secret, a service bound to it, and the tokens involved.
struct Scenario {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    server: Option<Server>,
    conn: Conn,
    store: String,
    service_token: String,
}

/// A token's id: the part between its prefix and its secret (`coffer_ID_SECRET`).
fn token_id(token: &str) -> &str {
    token.split('_').nth(1).expect("a token has an id")
}

/// `coffer init`, then a server started with `flags` (and `RUST_LOG=debug`).
fn start(flags: &[&str]) -> Scenario {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let data = dir.join("data");
    let (account, token) = init(&data);
    let server = Server::start_with(&data, flags);
    let conn = Conn {
        url: server.url.clone(),
        token,
        account,
    };
    Scenario {
        _tmp: tmp,
        dir,
        server: Some(server),
        conn,
        store: String::new(),
        service_token: String::new(),
    }
}

/// One HTTP request; the status and the body.
fn send(
    method: reqwest::Method,
    url: &str,
    token: &str,
    request_id: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut req = client.request(method, url).bearer_auth(token);
        if let Some(id) = request_id {
            req = req.header("x-request-id", id);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let res = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = res.status().as_u16();
        (status, res.text().await.unwrap())
    })
}

impl Scenario {
    /// Writes, updates and reads a value, and makes requests that are refused, some of them
    /// carrying a value.
    fn exercise(&mut self) {
        let conn = &self.conn;
        self.store = create_store(conn, "logs");
        let secret = create_secret(conn, &self.store, "api-key", "workers", CREATED);
        conn.run_with_stdin(
            &[
                "secret",
                "update",
                &self.store,
                "--secret-id",
                &secret,
                "--value",
                "-",
            ],
            UPDATED,
        )
        .ok();

        let config = self.dir.join("app.toml");
        std::fs::write(
            &config,
            format!(
                "name = \"app\"\nmain = \"src/index.js\"\n\n[[secrets_store_secrets]]\n\
                 binding = \"API_KEY\"\nstore_id = \"{}\"\nsecret_name = \"api-key\"\n",
                self.store
            ),
        )
        .unwrap();
        let deployed = conn
            .run(&["deploy", "--config", config.to_str().unwrap(), "--json"])
            .ok()
            .json();
        self.service_token = deployed["service_token"].as_str().unwrap().to_owned();

        let read = runtime_get(
            &conn.url,
            &self.service_token,
            "/runtime/v1/bindings/API_KEY",
        );
        assert_eq!(
            (read.status, read.body.as_slice()),
            (200, UPDATED.as_bytes())
        );
        let bad = runtime_get(
            &conn.url,
            "coffersvc_00000000000000000000000000000000_x",
            "/runtime/v1/bindings/API_KEY",
        );
        assert_eq!(bad.status, 401, "{bad:?}");

        let (status, _) = send(
            reqwest::Method::GET,
            &format!("{}/client/v4/user/tokens/verify", conn.url),
            &conn.token,
            Some(CLIENT_REQUEST_ID),
            None,
        );
        assert_eq!(status, 200);
        let (status, _) = send(
            reqwest::Method::GET,
            &format!("{}/no/such/route", conn.url),
            &conn.token,
            None,
            None,
        );
        assert_eq!(status, 404);
        let secrets = format!(
            "{}/client/v4/accounts/{}/secrets_store/stores/{}/secrets",
            conn.url, conn.account, self.store
        );
        let (status, body) = send(
            reqwest::Method::POST,
            &secrets,
            &conn.token,
            None,
            Some(&format!(
                r#"[{{"name":"bad name!","value":"{REFUSED}","scopes":["workers"]}}]"#
            )),
        );
        assert_eq!(status, 400, "{body}");
        let (status, body) = send(
            reqwest::Method::POST,
            &secrets,
            &conn.token,
            None,
            Some(&format!(r#"[{{"name":"ok","value":"{MALFORMED}""#)),
        );
        assert_eq!(status, 400, "{body}");
    }

    /// Requests with a token that does not verify (request ids `flood-N`) until the server
    /// answers 429: the request that uses up the address's budget logs a warning in its span.
    fn fail_authentication_until_refused(&self) {
        for n in 0..100 {
            let (status, body) = send(
                reqwest::Method::GET,
                &format!("{}/client/v4/user/tokens/verify", self.conn.url),
                "coffer_00000000000000000000000000000000_x",
                Some(&format!("flood-{n}")),
                None,
            );
            match status {
                401 => {}
                429 => return,
                other => panic!("{other}: {body}"),
            }
        }
        panic!("never refused with 429");
    }

    /// Stops the server with SIGTERM (so that every queued line is written); its whole log.
    fn stop(&mut self) -> String {
        let (status, log) = self.server.take().expect("running").terminate();
        assert!(status.success(), "{status:?}\n{log}");
        log
    }

    /// The strings that must never be logged: values and whole tokens (and their secret parts).
    fn forbidden(&self) -> Vec<String> {
        let mut all: Vec<String> = [CREATED, UPDATED, REFUSED, MALFORMED]
            .map(str::to_owned)
            .to_vec();
        for token in [&self.conn.token, &self.service_token] {
            all.push(token.clone());
            // PREFIX_ID_SECRET, where the secret may hold `_` too.
            all.push(token.splitn(3, '_').nth(2).unwrap().to_owned());
        }
        all
    }
}

/// Every line of `log`, parsed; fails on a line that is not one JSON object with the fields
/// every line has.
fn json_lines(log: &str) -> Vec<Map<String, Value>> {
    assert!(!log.trim().is_empty(), "nothing was logged");
    log.lines()
        .map(|line| {
            let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
                panic!("not a JSON object: {line:?}\nlog:\n{log}");
            };
            let time = obj["timestamp"]
                .as_str()
                .unwrap_or_else(|| panic!("{line}"));
            assert!(
                coffer_types::Timestamp::parse_rfc3339(time).is_some(),
                "timestamp not RFC 3339: {line}"
            );
            assert!(time.ends_with('Z'), "not UTC: {line}");
            assert!(
                ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                    .contains(&obj["level"].as_str().unwrap()),
                "{line}"
            );
            assert!(
                obj["target"].as_str().is_some_and(|t| !t.is_empty()),
                "{line}"
            );
            assert!(obj["message"].is_string(), "{line}");
            obj
        })
        .collect()
}

/// The request lines (`message: response`), each checked for the fields every request line
/// has.
fn request_lines(lines: &[Map<String, Value>]) -> Vec<&Map<String, Value>> {
    let found: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "response")
        .collect();
    for line in &found {
        for key in ["request_id", "method", "path"] {
            assert!(line[key].is_string(), "no {key}: {line:?}");
        }
        for key in ["status", "latency_us"] {
            assert!(line[key].is_u64(), "{key} is not a number: {line:?}");
        }
    }
    found
}

/// The one request line for `method path` with `status`.
fn the_line<'a>(
    lines: &[&'a Map<String, Value>],
    method: &str,
    path: &str,
    status: u64,
) -> &'a Map<String, Value> {
    let found: Vec<_> = lines
        .iter()
        .filter(|l| l["method"] == method && l["path"] == path && l["status"] == status)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{method} {path} {status}: {found:?}\nin {lines:#?}"
    );
    found[0]
}

#[test]
fn json_lines_carry_the_request_fields_and_nothing_secret() {
    let mut s = start(&["--log-format", "json", "--access-log"]);
    s.exercise();
    s.fail_authentication_until_refused();
    let log = s.stop();
    for forbidden in s.forbidden() {
        assert!(!log.contains(&forbidden), "{forbidden} in the log:\n{log}");
    }
    let lines = json_lines(&log);
    let requests = request_lines(&lines);
    let api_token = token_id(&s.conn.token);
    let service_token = token_id(&s.service_token);

    let stores = format!(
        "/client/v4/accounts/{}/secrets_store/stores",
        s.conn.account
    );
    let line = the_line(&requests, "POST", &stores, 200);
    assert_eq!(
        line["route"],
        "/client/v4/accounts/{account_id}/secrets_store/stores"
    );
    assert_eq!(line["token_id"], api_token, "{line:?}");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["target"], "coffer_server::request_log");
    let id = line["request_id"].as_str().unwrap();
    assert!(
        id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{line:?}"
    );

    // A runtime read names its service token's id, an event field rather than a span field:
    // both end up at the top level.
    let line = the_line(&requests, "GET", "/runtime/v1/bindings/API_KEY", 200);
    assert_eq!(line["route"], "/runtime/v1/bindings/{binding}");
    assert_eq!(line["token_id"], service_token, "{line:?}");
    let line = the_line(&requests, "GET", "/runtime/v1/bindings/API_KEY", 401);
    assert!(line.get("token_id").is_none(), "{line:?}");

    let line = the_line(&requests, "GET", "/client/v4/user/tokens/verify", 200);
    assert_eq!(line["request_id"], CLIENT_REQUEST_ID);
    assert_eq!(line["route"], "/client/v4/user/tokens/verify");
    assert_eq!(line["token_id"], api_token);

    let line = the_line(&requests, "GET", "/no/such/route", 404);
    assert!(line.get("route").is_none(), "no route matched: {line:?}");

    let secrets = format!("{stores}/{}/secrets", s.store);
    let refused: Vec<_> = requests
        .iter()
        .filter(|l| l["method"] == "POST" && l["path"] == secrets.as_str() && l["status"] == 400)
        .collect();
    assert_eq!(refused.len(), 2, "{requests:#?}");
    assert!(refused.iter().all(|l| l["route"]
        == "/client/v4/accounts/{account_id}/secrets_store/stores/{store_id}/secrets"));

    // Events logged while a request is handled carry its fields too: here, the warning of the
    // request that used up its address's failed-authentication budget.
    let warned: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("too many failed authentications"))
        })
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    let line = warned[0];
    assert_eq!(line["level"], "WARN", "{line:?}");
    assert_eq!(line["client"], "127.0.0.1", "{line:?}");
    assert_eq!(line["path"], "/client/v4/user/tokens/verify", "{line:?}");
    assert_eq!(line["route"], "/client/v4/user/tokens/verify", "{line:?}");
    let flood = &line["request_id"];
    assert!(flood.as_str().unwrap().starts_with("flood-"), "{line:?}");
    assert!(
        requests
            .iter()
            .any(|l| &l["request_id"] == flood && l["status"] == 401),
        "{requests:#?}"
    );
    // And the shutdown is logged like everything else.
    assert!(lines.iter().any(|l| l["message"] == "stopped"), "{log}");
}

#[test]
fn text_lines_carry_the_same_fields_and_nothing_secret() {
    let mut s = start(&["--access-log"]);
    s.exercise();
    let log = s.stop();
    for forbidden in s.forbidden() {
        assert!(!log.contains(&forbidden), "{forbidden} in the log:\n{log}");
    }
    assert!(
        !log.lines().any(|l| l.starts_with('{')),
        "JSON in the text log:\n{log}"
    );
    let read = log
        .lines()
        .find(|l| l.contains("path=/runtime/v1/bindings/API_KEY") && l.contains("status=200"))
        .unwrap_or_else(|| panic!("no line for the read:\n{log}"));
    assert!(
        read.contains("route=/runtime/v1/bindings/{binding}"),
        "{read}"
    );
    assert!(
        read.contains(&format!("token_id={}", token_id(&s.service_token))),
        "{read}"
    );
    assert!(read.contains("latency_us="), "{read}");
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("request_id={CLIENT_REQUEST_ID}"))),
        "{log}"
    );
    assert!(
        log.contains(&format!("token_id={}", token_id(&s.conn.token))),
        "{log}"
    );
}

/// `COFFER_LOG_FORMAT` sets the format where the flag is absent (here on `coffer dev`), and the
/// flag wins over it.
#[test]
fn the_environment_sets_the_format_and_the_flag_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let dev = |flags: &[&str]| {
        let mut cmd = coffer_cmd();
        cmd.arg("dev")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            .env("COFFER_LOG_FORMAT", "json");
        let server = Server::spawn(cmd);
        let (status, _) = send(
            reqwest::Method::GET,
            &format!("{}/healthz", server.url),
            "x",
            None,
            None,
        );
        assert_eq!(status, 200);
        let (status, log) = server.terminate();
        assert!(status.success(), "{status:?}\n{log}");
        log
    };
    let log = dev(&[]);
    let lines = json_lines(&log);
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "created a development data dir"),
        "{log}"
    );
    let log = dev(&["--log-format", "text"]);
    assert!(!log.lines().any(|l| l.starts_with('{')), "{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
}

/// An edge logs JSON too, its runtime reads with their route and token id.
#[test]
fn an_edge_logs_json_lines_with_the_request_fields() {
    let mut s = start(&[]);
    s.exercise();
    let node = s
        .conn
        .run(&["node", "create", "edge-1", "--json"])
        .ok()
        .json();
    let node_token = node["node_token"].as_str().unwrap().to_owned();
    let mut cmd = coffer_cmd();
    for var in [
        "COFFER_NODE_TOKEN",
        "COFFER_UPSTREAM",
        "COFFER_DATA_DIR",
        "COFFER_LISTEN",
    ] {
        cmd.env_remove(var);
    }
    cmd.arg("edge")
        .args(["--upstream", &s.conn.url])
        .env("COFFER_NODE_TOKEN", &node_token)
        .arg("--data-dir")
        .arg(s.dir.join("edge"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--access-log",
        ])
        .env("RUST_LOG", "debug");
    let edge = Server::spawn(cmd);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let read = runtime_get(&edge.url, &s.service_token, "/runtime/v1/bindings/API_KEY");
        if read.status == 200 {
            assert_eq!(read.body, UPDATED.as_bytes());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edge never served:\n{}",
            edge.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, log) = edge.terminate();
    assert!(status.success(), "{status:?}\n{log}");
    for forbidden in s.forbidden().into_iter().chain([node_token.clone()]) {
        assert!(
            !log.contains(&forbidden),
            "{forbidden} in the edge's log:\n{log}"
        );
    }
    let lines = json_lines(&log);
    let requests = request_lines(&lines);
    let line = the_line(&requests, "GET", "/runtime/v1/bindings/API_KEY", 200);
    assert_eq!(line["route"], "/runtime/v1/bindings/{binding}");
    assert_eq!(line["token_id"], token_id(&s.service_token));
    assert!(
        lines
            .iter()
            .any(|l| l["target"].as_str().unwrap().starts_with("coffer_edge")),
        "no line of the edge's own:\n{log}"
    );
    // Records of the `log` crate (rustls and reqwest log through it at debug) keep their own
    // target, without tracing-log's `log.*` fields (whether there are any here depends on the
    // libraries; json_log's unit tests log one for certain).
    for line in &lines {
        assert_ne!(line["target"], "log", "{line:?}");
        assert!(line.keys().all(|k| !k.starts_with("log.")), "{line:?}");
    }
}

/// A bad `--log-format` (or `COFFER_LOG_FORMAT`) is clap's error: its first line names the
/// flag and the value, and the values it takes follow.
#[test]
fn an_unknown_format_is_refused_by_clap_naming_the_flag_and_its_values() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for (command, flags, env) in [
        ("server", vec!["--log-format", "yaml"], None),
        ("edge", vec!["--log-format", "yaml"], None),
        ("dev", vec!["--log-format", "yaml"], None),
        ("server", vec![], Some("yaml")),
    ] {
        let mut cmd = coffer_cmd();
        cmd.arg(command).arg("--data-dir").arg(&data).args(&flags);
        if let Some(value) = env {
            cmd.env("COFFER_LOG_FORMAT", value);
        }
        let out = run(cmd, None);
        assert_eq!(out.status.code(), Some(2), "{out:#?}");
        let first = out.stderr.lines().next().unwrap_or_default();
        assert_eq!(
            first, "error: invalid value 'yaml' for '--log-format <FORMAT>'",
            "{out:#?}"
        );
        assert!(
            out.stderr.contains("[possible values: text, json]"),
            "{out:#?}"
        );
        assert!(!out.stderr.contains("panicked"), "{out:#?}");
        assert!(!data.exists(), "{command} did something");
    }
}

/// A log filter that does not parse, from the flag or from `RUST_LOG`, stops the command
/// before it starts, naming the flag.
#[test]
fn a_bad_log_level_is_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for (flags, env) in [
        (vec!["--log-level", "coffer=loud"], None),
        (vec![], Some("coffer=loud")),
    ] {
        let mut cmd = coffer_cmd();
        cmd.arg("dev").arg("--data-dir").arg(&data).args(&flags);
        if let Some(value) = env {
            cmd.env("RUST_LOG", value);
        }
        let out = run(cmd, None);
        assert_eq!(out.status.code(), Some(2), "{out:#?}");
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: invalid value 'coffer=loud' for '--log-level <FILTER>'"),
            "{out:#?}"
        );
        assert!(!data.exists(), "dev did something: {out:#?}");
    }
}

/// `coffer server|dev|edge --log-format json` that cannot start: standard error is JSON to its
/// last line, the fatal error included (text mode keeps its `error: ` line).
#[test]
fn a_fatal_error_is_a_json_line_too() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let missing_s = missing.to_str().unwrap();
    for (args, status, expect) in [
        (
            vec!["server", "--data-dir", missing_s],
            1,
            "not an initialised Coffer data dir",
        ),
        (
            vec!["edge", "--data-dir", missing_s],
            2,
            "missing connection settings: --upstream",
        ),
    ] {
        let mut cmd = coffer_cmd();
        cmd.env_remove("COFFER_UPSTREAM")
            .env_remove("COFFER_NODE_TOKEN")
            .env_remove("COFFER_NODE_TOKEN_FILE")
            .env("RUST_LOG", "debug")
            .args(&args)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"]);
        let out = run(cmd, None);
        assert_eq!(out.status.code(), Some(status), "{out:#?}");
        let lines = json_lines(&out.stderr);
        let last = lines.last().unwrap();
        assert_eq!(last["level"], "ERROR", "{out:#?}");
        assert_eq!(last["target"], "coffer", "{out:#?}");
        let message = last["message"].as_str().unwrap();
        assert!(message.contains(expect), "{out:#?}");
        assert!(!message.starts_with("error:"), "{out:#?}");
        assert_eq!(last.len(), 4, "timestamp, level, target, message: {last:?}");

        // The same in text: the `error: ` line.
        let mut cmd = coffer_cmd();
        cmd.env_remove("COFFER_UPSTREAM")
            .env_remove("COFFER_NODE_TOKEN")
            .env_remove("COFFER_NODE_TOKEN_FILE")
            .args(&args)
            .args(["--listen", "127.0.0.1:0"]);
        let out = run(cmd, None);
        let line = out.one_error_line(status);
        assert!(line.contains(expect), "{line}");
    }
}

/// At `trace`, the most verbose level, no value or token is written either (the other tests
/// read `debug`). Coffer and the libraries on this path write little more at trace than at
/// info today; the test is there for the line someone adds.
#[test]
fn nothing_secret_is_logged_even_at_trace() {
    let mut s = start(&["--log-level", "trace", "--access-log"]);
    s.exercise();
    let log = s.stop();
    assert!(log.contains("status=200"), "no request line:\n{log}");
    for forbidden in s.forbidden() {
        assert!(
            !log.contains(&forbidden),
            "{forbidden} in the log at trace: {}",
            log.lines()
                .filter(|l| l.contains(&forbidden))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
