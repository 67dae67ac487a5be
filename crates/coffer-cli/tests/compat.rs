//! Compatibility tests: wrangler 4.85.0 and Cloudflare's Python and TypeScript SDKs, unchanged,
//! against a real `coffer server`.
//!
//! Each test starts a fresh server on a fresh data dir, runs one tool against it, and then checks
//! the server's state with plain HTTP requests. The tools are pinned in `compat/` and installed
//! with:
//!
//! ```sh
//! npm ci --prefix compat
//! python3 -m venv compat/.venv && compat/.venv/bin/pip install -r compat/requirements.txt
//! ```
//!
//! A missing tool skips its test with a printed reason, except when `CI=true`, where it fails:
//! CI must never pass by skipping. The Python interpreter is `$COFFER_COMPAT_PYTHON`, else
//! `compat/.venv/bin/python`, else `python3`, whichever first has the pinned SDK.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const PYTHON_SDK_VERSION: &str = "5.9.0";
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);
const WRANGLER_TIMEOUT: Duration = Duration::from_secs(120);
const SDK_SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
const INSTALL_HINT: &str = "install with `npm ci --prefix compat` and \
    `python3 -m venv compat/.venv && compat/.venv/bin/pip install -r compat/requirements.txt`";

// ---------------------------------------------------------------------------------------------
// Tool discovery: skip locally, fail in CI.

fn compat_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compat");
    dir.canonicalize().unwrap_or(dir)
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The tool, or `None` after printing why the test is skipped; in CI a missing tool panics.
fn require<T>(tool: &str, found: Result<T, String>) -> Option<T> {
    match found {
        Ok(t) => Some(t),
        Err(reason) if in_ci() => {
            panic!(
                "{tool} is not available and CI=true, so this test may not be skipped: {reason}; {INSTALL_HINT}"
            )
        }
        Err(reason) => {
            eprintln!("SKIPPED: {tool} is not available: {reason}; {INSTALL_HINT}");
            None
        }
    }
}

/// `node`, if it runs and is version 20 or newer.
fn find_node() -> Result<PathBuf, String> {
    let out = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run `node`: {e}"))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("unexpected `node --version` output {version:?}"))?;
    if major < 20 {
        return Err(format!("node {version} is too old (need 20 or newer)"));
    }
    Ok(PathBuf::from("node"))
}

fn find_node_package(package: &str, entry: &str) -> Result<(PathBuf, PathBuf), String> {
    let node = find_node()?;
    let path = compat_dir().join("node_modules").join(package).join(entry);
    if !path.is_file() {
        return Err(format!("{} does not exist", path.display()));
    }
    Ok((node, path))
}

fn find_python() -> Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("COFFER_COMPAT_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(compat_dir().join(".venv/bin/python"));
    candidates.push(PathBuf::from("python3"));
    let probe = format!(
        "import sys, cloudflare; sys.exit(0 if cloudflare.__version__ == '{PYTHON_SDK_VERSION}' else 3)"
    );
    let mut tried = Vec::new();
    for python in candidates {
        match Command::new(&python).args(["-c", &probe]).output() {
            Ok(out) if out.status.success() => return Ok(python),
            Ok(out) if out.status.code() == Some(3) => tried.push(format!(
                "{}: cloudflare is not version {PYTHON_SDK_VERSION}",
                python.display()
            )),
            Ok(_) => tried.push(format!("{}: cannot import cloudflare", python.display())),
            Err(e) => tried.push(format!("{}: {e}", python.display())),
        }
    }
    Err(format!(
        "no Python with cloudflare=={PYTHON_SDK_VERSION} ({})",
        tried.join("; ")
    ))
}

// ---------------------------------------------------------------------------------------------
// A coffer server on a fresh data dir.

struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    url: String,
    account_id: String,
    token: String,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let init = Command::new(env!("CARGO_BIN_EXE_coffer"))
            .arg("init")
            .arg("--data-dir")
            .arg(&data)
            .arg("--json")
            .stdin(Stdio::null())
            .output()
            .expect("run coffer init");
        assert!(
            init.status.success(),
            "coffer init failed ({}): {}",
            init.status,
            String::from_utf8_lossy(&init.stderr)
        );
        let creds: Value = serde_json::from_slice(&init.stdout).unwrap_or_else(|e| {
            panic!(
                "coffer init --json printed no JSON ({e}): {}",
                String::from_utf8_lossy(&init.stdout)
            )
        });
        let account_id = creds["account_id"]
            .as_str()
            .expect("account_id in init output")
            .to_owned();
        let token = creds["api_token"]
            .as_str()
            .expect("api_token in init output")
            .to_owned();

        let log = std::fs::File::create(dir.path().join("server.log")).expect("server log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
            .arg("server")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn coffer server");

        // Read stdout on a thread (and keep draining it) so the server never blocks on a full pipe.
        let stdout = child.stdout.take().expect("server stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.trim().strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(SERVER_START_TIMEOUT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log =
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                panic!(
                    "coffer server printed no `listening on` line within {SERVER_START_TIMEOUT:?}; log:\n{log}"
                );
            }
        };
        assert!(
            url.starts_with("http://"),
            "expected a plain HTTP address, got {url}"
        );
        let server = Server {
            child,
            url,
            account_id,
            token,
            dir,
        };
        let (status, _) = server.request("GET", "/healthz", None);
        assert_eq!(status, 200, "GET /healthz");
        server
    }

    fn api_base(&self) -> String {
        format!("{}/client/v4", self.url)
    }

    /// `/client/v4/accounts/{account}/secrets_store` + `rest`
    fn ss_path(&self, rest: &str) -> String {
        format!(
            "/client/v4/accounts/{}/secrets_store{rest}",
            self.account_id
        )
    }

    /// One authenticated request; the status and the body as JSON (`null` if it is not JSON).
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.request_as(&self.token, method, path, body)
    }

    /// [`Server::request`] with another API token.
    fn request_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let token = token.to_owned();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let client = reqwest::Client::new();
            let mut req = client
                .request(method, &url)
                .bearer_auth(token)
                .timeout(Duration::from_secs(30));
            if let Some(body) = body {
                req = req.json(&body);
            }
            let res = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("request to {url}: {e}"));
            let status = res.status().as_u16();
            let bytes = res.bytes().await.expect("response body");
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    /// `GET` of a Secrets Store path that must succeed; its `result`.
    fn get_ok(&self, rest: &str) -> Value {
        let (status, body) = self.request("GET", &self.ss_path(rest), None);
        assert_eq!(status, 200, "GET {rest}: {body}");
        assert_eq!(body["success"], true, "GET {rest}: {body}");
        body["result"].clone()
    }

    fn get_status(&self, rest: &str) -> u16 {
        self.request("GET", &self.ss_path(rest), None).0
    }

    fn store_ids(&self) -> Vec<String> {
        ids_of(&self.get_ok("/stores?per_page=100"))
    }

    fn secret_names(&self, store: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .get_ok(&format!("/stores/{store}/secrets?per_page=100"))
            .as_array()
            .expect("secrets array")
            .iter()
            .map(|s| s["name"].as_str().expect("name").to_owned())
            .collect();
        names.sort();
        names
    }

    /// Environment for a client: where the server is, who we are, and a sandbox (temp HOME and
    /// config dir, non-interactive, no telemetry, no update checks, no colours).
    fn client_command(&self, program: &Path) -> Command {
        let home = self.dir.path().join("home");
        let cwd = self.dir.path().join("work");
        std::fs::create_dir_all(home.join(".config")).expect("home dir");
        std::fs::create_dir_all(&cwd).expect("work dir");
        let mut cmd = Command::new(program);
        cmd.current_dir(&cwd);
        for var in [
            "CLOUDFLARE_API_KEY",
            "CLOUDFLARE_EMAIL",
            "CLOUDFLARE_API_USER_SERVICE_KEY",
            "CF_API_TOKEN",
            "CF_ACCOUNT_ID",
            "CF_API_BASE_URL",
            "CLOUDFLARE_CUSTOM_HEADERS",
            "CLOUDFLARE_COMPLIANCE_REGION",
            "WRANGLER_API_ENVIRONMENT",
            "NODE_OPTIONS",
            "PYTHONPATH",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("CLOUDFLARE_API_BASE_URL", self.api_base()) // wrangler
            .env("CLOUDFLARE_BASE_URL", self.api_base()) // the SDKs
            .env("CLOUDFLARE_API_TOKEN", &self.token)
            .env("CLOUDFLARE_ACCOUNT_ID", &self.account_id)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("CI", "true")
            .env("WRANGLER_SEND_METRICS", "false")
            .env("WRANGLER_SEND_ERROR_REPORTS", "false")
            // The banner is what triggers wrangler's npm update check.
            .env("WRANGLER_HIDE_BANNER", "true")
            // And should anything still ask the registry, it gets nowhere.
            .env("npm_config_registry", "http://127.0.0.1:9/")
            .env("NO_COLOR", "1")
            .env("FORCE_COLOR", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1");
        cmd
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "---- last lines of the coffer server log ----\n{}",
                self.log_tail()
            );
        }
    }
}

fn ids_of(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .expect("array result")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

// ---------------------------------------------------------------------------------------------
// Running a client with a timeout.

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Run {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        // Written on a thread, then closed, so a large input cannot deadlock against output.
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let read = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read(Box::new(child.stdout.take().expect("stdout")));
    let err = read(Box::new(child.stderr.take().expect("stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default(),
            );
            panic!(
                "timed out after {timeout:?}: {shown}\n--- stdout ---\n{o}\n--- stderr ---\n{e}"
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    Run {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// The 32-hex id that follows `marker` in `text`, e.g. `ID: ` in "Created store! (Name: x, ID: ...)".
fn id_after(text: &str, marker: &str) -> Option<String> {
    text.match_indices(marker).find_map(|(i, _)| {
        let rest = &text[i + marker.len()..];
        let id: String = rest.chars().take(32).collect();
        (id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
    })
}

// ---------------------------------------------------------------------------------------------
// wrangler

struct Wrangler<'a> {
    server: &'a Server,
    node: PathBuf,
    cli: PathBuf,
    /// Every value this test sent: none may ever appear in any output.
    values: Vec<String>,
    outputs: Vec<String>,
}

impl Wrangler<'_> {
    fn run(&mut self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = self.server.client_command(&self.node);
        cmd.arg(&self.cli).args(args);
        let out = run(cmd, stdin.map(str::as_bytes), WRANGLER_TIMEOUT);
        self.outputs.push(out.all());
        out
    }

    /// Runs `wrangler secrets-store ARGS --remote`, which must succeed.
    fn ok(&mut self, args: &[&str], stdin: Option<&str>) -> String {
        let mut full = vec!["secrets-store"];
        full.extend_from_slice(args);
        full.push("--remote");
        let out = self.run(&full, stdin);
        assert!(
            out.status.success(),
            "wrangler {} failed ({}):\n{}",
            full.join(" "),
            out.status,
            out.all()
        );
        out.all()
    }

    /// Runs `wrangler secrets-store ARGS --remote`, which must fail; its output.
    fn fails(&mut self, args: &[&str], stdin: Option<&str>) -> String {
        let mut full = vec!["secrets-store"];
        full.extend_from_slice(args);
        full.push("--remote");
        let out = self.run(&full, stdin);
        assert!(
            !out.status.success(),
            "wrangler {} should have failed:\n{}",
            full.join(" "),
            out.all()
        );
        out.all()
    }

    fn value(&mut self, v: &str) -> String {
        self.values.push(v.to_owned());
        v.to_owned()
    }
}

/// A `POST` that must succeed, as `token`; its `result`.
fn post_ok(server: &Server, token: &str, path: &str, body: Value) -> Value {
    let (status, answer) = server.request_as(token, "POST", path, Some(body));
    assert_eq!(status, 200, "POST {path}: {answer}");
    answer["result"].clone()
}

#[test]
fn wrangler_finds_the_account_from_the_token() {
    let Some((node, cli)) = require("wrangler", find_node_package("wrangler", "bin/wrangler.js"))
    else {
        return;
    };
    let server = Server::start();
    // A second account with a store and a reporter token of its own; the operator's account
    // has a store too. The operator acts on both but is a member of its own only.
    let b = post_ok(
        &server,
        &server.token,
        "/client/v4/accounts",
        serde_json::json!({"name": "team-b"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // (The operator makes only the account's first token, a super_admin; it makes the rest.)
    let b_admin = post_ok(
        &server,
        &server.token,
        &format!("/client/v4/accounts/{b}/tokens"),
        serde_json::json!({"name": "admin", "role": "super_admin"}),
    )["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_token = post_ok(
        &server,
        &b_admin,
        &format!("/client/v4/accounts/{b}/tokens"),
        serde_json::json!({"name": "wr", "role": "secrets_store_reporter"}),
    )["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = post_ok(
        &server,
        &b_admin,
        &format!("/client/v4/accounts/{b}/secrets_store/stores"),
        serde_json::json!({"name": "theirs"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = post_ok(
        &server,
        &server.token,
        &server.ss_path("/stores"),
        serde_json::json!({"name": "mine"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // wrangler caches the account it found (here, in a directory of the test's choosing).
    let cache_dir = server.dir.path().join("wrangler-cache");
    let cache = cache_dir.join("wrangler-account.json");
    for (token, account, store, other) in [
        (&server.token, &server.account_id, &mine, &theirs),
        (&b_token, &b, &theirs, &mine),
    ] {
        let _ = std::fs::remove_file(&cache);
        let mut cmd = server.client_command(&node);
        cmd.arg(&cli)
            .args(["secrets-store", "store", "list", "--remote"])
            .env("CLOUDFLARE_API_TOKEN", token)
            .env("WRANGLER_CACHE_DIR", &cache_dir)
            .env_remove("CLOUDFLARE_ACCOUNT_ID");
        let out = run(cmd, None, WRANGLER_TIMEOUT);
        assert!(
            out.status.success(),
            "wrangler store list without an account id failed ({}):\n{}",
            out.status,
            out.all()
        );
        assert!(out.stdout.contains(store.as_str()), "{}", out.all());
        assert!(!out.all().contains(other.as_str()), "{}", out.all());
        let cached: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap_or_else(|e| {
            panic!("no account cache {}: {e}\n{}", cache.display(), out.all())
        }))
        .unwrap();
        assert_eq!(cached["account"]["id"], account.as_str(), "{cached}");
        assert!(!out.all().contains(token.as_str()), "the token was printed");
    }
}

#[test]
fn wrangler_secrets_store_commands() {
    let Some((node, cli)) = require("wrangler", find_node_package("wrangler", "bin/wrangler.js"))
    else {
        return;
    };
    let server = Server::start();
    let mut w = Wrangler {
        server: &server,
        node,
        cli,
        values: Vec::new(),
        outputs: Vec::new(),
    };

    let version = w.run(&["--version"], None);
    assert!(
        version.stdout.contains("4.85.0"),
        "expected wrangler 4.85.0: {}",
        version.all()
    );

    // ---- store create / list ----
    let out = w.ok(&["store", "create", "wr-store"], None);
    let store = id_after(&out, "ID: ").unwrap_or_else(|| panic!("no store id in:\n{out}"));
    assert_eq!(
        server.get_ok(&format!("/stores/{store}"))["name"],
        "wr-store"
    );
    let out = w.ok(&["store", "list"], None);
    assert!(
        out.contains("wr-store") && out.contains(&store),
        "store list:\n{out}"
    );

    // ---- secret create: --value, then standard input ----
    let v1 = w.value("wr-value-one-5d1e");
    let out = w.ok(
        &[
            "secret",
            "create",
            &store,
            "--name",
            "WR_ONE",
            "--scopes",
            "workers,ai_gateway",
            "--value",
            &v1,
            "--comment",
            "first",
        ],
        None,
    );
    let one = id_after(&out, "Created secret! (ID: ")
        .unwrap_or_else(|| panic!("no secret id in:\n{out}"));
    assert!(
        out.contains("WR_ONE") && out.contains("workers, ai_gateway"),
        "secret create:\n{out}"
    );
    let s = server.get_ok(&format!("/stores/{store}/secrets/{one}"));
    assert_eq!(
        (s["name"].as_str(), s["comment"].as_str()),
        (Some("WR_ONE"), Some("first")),
        "{s}"
    );
    assert_eq!(
        s["scopes"],
        serde_json::json!(["workers", "ai_gateway"]),
        "{s}"
    );

    let v2 = w.value("wr-value-from-stdin-77aa");
    let out = w.ok(
        &[
            "secret", "create", &store, "--name", "WR_TWO", "--scopes", "workers",
        ],
        Some(&format!("{v2}\n")),
    );
    let two = id_after(&out, "Created secret! (ID: ")
        .unwrap_or_else(|| panic!("no secret id in:\n{out}"));

    // ---- list / get ----
    let out = w.ok(&["secret", "list", &store], None);
    for expected in ["WR_ONE", "WR_TWO", one.as_str(), two.as_str()] {
        assert!(
            out.contains(expected),
            "secret list lacks {expected}:\n{out}"
        );
    }
    let out = w.ok(
        &["secret", "list", &store, "--per-page", "1", "--page", "2"],
        None,
    );
    assert_eq!(
        ["WR_ONE", "WR_TWO"]
            .iter()
            .filter(|n| out.contains(**n))
            .count(),
        1,
        "one secret per page:\n{out}"
    );
    let out = w.ok(&["secret", "get", &store, "--secret-id", &one], None);
    assert!(
        out.contains("WR_ONE") && out.contains("first") && out.contains(&store),
        "secret get:\n{out}"
    );

    // ---- update: value + comment, then scopes only (standard input empty: value unchanged) ----
    let v1b = w.value("wr-value-one-updated-90c4");
    let out = w.ok(
        &[
            "secret",
            "update",
            &store,
            "--secret-id",
            &one,
            "--value",
            &v1b,
            "--comment",
            "second",
        ],
        None,
    );
    assert!(out.contains("second"), "secret update:\n{out}");
    assert_eq!(
        server.get_ok(&format!("/stores/{store}/secrets/{one}"))["comment"],
        "second"
    );
    w.ok(
        &[
            "secret",
            "update",
            &store,
            "--secret-id",
            &one,
            "--scopes",
            "workers",
        ],
        None,
    );
    let s = server.get_ok(&format!("/stores/{store}/secrets/{one}"));
    assert_eq!(
        (s["scopes"].clone(), s["comment"].as_str()),
        (serde_json::json!(["workers"]), Some("second")),
        "{s}"
    );

    // ---- duplicate ----
    let out = w.ok(
        &[
            "secret",
            "duplicate",
            &store,
            "--secret-id",
            &one,
            "--name",
            "WR_COPY",
            "--scopes",
            "workers,dex",
        ],
        None,
    );
    let copy =
        id_after(&out, "Duplicated secret! (ID: ").unwrap_or_else(|| panic!("no id in:\n{out}"));
    assert_ne!(copy, one);
    let s = server.get_ok(&format!("/stores/{store}/secrets/{copy}"));
    assert_eq!(
        (s["name"].as_str(), s["scopes"].clone()),
        (Some("WR_COPY"), serde_json::json!(["workers", "dex"])),
        "{s}"
    );

    // ---- errors: the server's code and message reach the user ----
    let v_dup = w.value("wr-value-duplicate-3b2f");
    let out = w.fails(
        &[
            "secret", "create", &store, "--name", "WR_ONE", "--scopes", "workers", "--value",
            &v_dup,
        ],
        None,
    );
    assert!(
        out.contains("[code: 1301]"),
        "duplicate name should report code 1301:\n{out}"
    );
    let big = "x".repeat(65_537);
    let out = w.fails(
        &[
            "secret", "create", &store, "--name", "WR_BIG", "--scopes", "workers",
        ],
        Some(&big),
    );
    assert!(
        out.contains("[code: 1007]"),
        "an oversized value should report code 1007:\n{out}"
    );
    let out = w.fails(
        &["secret", "get", &store, "--secret-id", &"0".repeat(32)],
        None,
    );
    assert!(
        out.contains("[code: 1202]"),
        "unknown secret should report code 1202:\n{out}"
    );
    let out = w.fails(&["store", "delete", &store], None);
    assert!(
        out.contains("[code: 1302]"),
        "deleting a non-empty store should report code 1302:\n{out}"
    );
    assert_eq!(server.secret_names(&store), ["WR_COPY", "WR_ONE", "WR_TWO"]);

    // ---- delete secrets, then the store ----
    for id in [&one, &two, &copy] {
        w.ok(&["secret", "delete", &store, "--secret-id", id], None);
        assert_eq!(
            server.get_status(&format!("/stores/{store}/secrets/{id}")),
            404
        );
    }
    let out = w.fails(&["secret", "list", &store], None);
    assert!(
        out.contains("List request returned no secrets."),
        "empty secret list:\n{out}"
    );
    w.ok(&["store", "delete", &store], None);
    assert_eq!(server.get_status(&format!("/stores/{store}")), 404);
    assert!(server.store_ids().is_empty());
    let out = w.fails(&["store", "list"], None);
    assert!(
        out.contains("List request returned no stores."),
        "empty store list:\n{out}"
    );

    // ---- no value ever appears in any output ----
    for out in &w.outputs {
        for v in &w.values {
            assert!(
                !out.contains(v.as_str()),
                "wrangler output contains a secret value:\n{out}"
            );
        }
        assert!(
            !out.contains(&big[..100]),
            "wrangler output contains the oversized value"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// SDK scripts

/// Checks the server against the summary line an SDK script printed last.
fn check_sdk_summary(server: &Server, run: &Run) {
    let summary: Value = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no JSON summary line in the script's output:\n{}",
                run.all()
            )
        });
    let kept = summary["kept_store_id"]
        .as_str()
        .expect("kept_store_id")
        .to_owned();
    assert_eq!(
        server.store_ids(),
        vec![kept.clone()],
        "stores left on the server"
    );
    let mut expected: Vec<String> = summary["kept_secret_names"]
        .as_array()
        .expect("kept_secret_names")
        .iter()
        .map(|v| v.as_str().expect("name").to_owned())
        .collect();
    expected.sort();
    assert_eq!(
        server.secret_names(&kept),
        expected,
        "secrets left on the server"
    );
    for gone in summary["deleted_store_ids"]
        .as_array()
        .expect("deleted_store_ids")
    {
        let gone = gone.as_str().expect("id");
        assert_eq!(
            server.get_status(&format!("/stores/{gone}")),
            404,
            "store {gone} should be gone"
        );
    }
    let quota = server.get_ok("/quota");
    assert_eq!(
        quota["secrets"]["usage"].as_u64(),
        Some(expected.len() as u64),
        "quota: {quota}"
    );
}

fn run_sdk_script(cmd: Command, what: &str) -> Run {
    let out = run(cmd, None, SDK_SCRIPT_TIMEOUT);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        out.all()
    );
    // Echo the step log, so a passing run still shows what it covered (visible with --nocapture).
    println!("{}", out.stdout);
    out
}

#[test]
fn python_sdk_secrets_store() {
    let Some(python) = require("Python cloudflare SDK", find_python()) else {
        return;
    };
    let server = Server::start();
    let mut cmd = server.client_command(&python);
    cmd.arg(compat_dir().join("sdk_python.py"));
    let out = run_sdk_script(cmd, "compat/sdk_python.py");
    check_sdk_summary(&server, &out);
}

fn typescript_sdk(package: &str) {
    let Some((node, _)) = require(
        &format!("TypeScript SDK ({package})"),
        find_node_package(package, "package.json"),
    ) else {
        return;
    };
    let server = Server::start();
    let mut cmd = server.client_command(&node);
    cmd.arg(compat_dir().join("sdk_ts.mjs"))
        .env("CF_TS_SDK", package);
    let out = run_sdk_script(cmd, &format!("compat/sdk_ts.mjs with {package}"));
    check_sdk_summary(&server, &out);
}

#[test]
fn typescript_sdk_5_secrets_store() {
    typescript_sdk("cloudflare");
}

#[test]
fn typescript_sdk_7_secrets_store() {
    typescript_sdk("cloudflare-v7");
}
