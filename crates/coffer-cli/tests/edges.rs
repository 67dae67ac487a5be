//! Multi-process tests of edge replicas (`coffer edge`): real control planes (`coffer server`)
//! and edges, each a `coffer` process on `127.0.0.1:0` with its own temp data dir (helpers in
//! `common`). Every scenario is its own `#[test]`, so they run in parallel.
//!
//! Nothing here sleeps to assert: each wait polls with a deadline ([`WAIT`]) and fails with what
//! it last saw, and the healthz and log tail of the edges involved.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

/// How long a change may take to reach every edge (or an edge to get ready).
const WAIT: Duration = Duration::from_secs(30);
/// Between two probes of a wait.
const POLL: Duration = Duration::from_millis(100);
/// Log lines of each edge shown when a wait fails.
const LOG_TAIL: usize = 40;

// ---------------------------------------------------------------------------------------------
// HTTP

/// One HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resp {
    status: u16,
    content_type: String,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

thread_local! {
    /// A runtime and a client per test thread. No connection pooling: processes are killed
    /// and restarted under the tests' feet, and a pooled connection to a dead one would turn
    /// into a spurious error.
    static HTTP: (tokio::runtime::Runtime, reqwest::Client) = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = {
            let _guard = rt.enter();
            reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client")
        };
        (rt, client)
    };
}

/// `GET url` with an optional bearer token; `Err` if no answer came (connection refused...).
fn get(url: &str, token: Option<&str>) -> Result<Resp, String> {
    HTTP.with(|(rt, client)| {
        rt.block_on(async {
            let mut req = client.get(url);
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            let res = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
            let status = res.status().as_u16();
            let content_type = res
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let body = res
                .text()
                .await
                .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
            Ok(Resp {
                status,
                content_type,
                body,
            })
        })
    })
}

fn binding_path(binding: &str) -> String {
    format!("/runtime/v1/bindings/{binding}")
}

const ALL_BINDINGS: &str = "/runtime/v1/bindings";

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `probe` until it returns `Ok`, for up to `timeout`. On timeout, fails with `what`,
/// the last thing `probe` saw and `context()` (the edges' healthz and logs).
#[track_caller]
fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
    context: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() >= timeout {
                    panic!(
                        "{what}: not within {timeout:?}\nlast seen: {last}\n{}",
                        context()
                    );
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// What a runtime read should answer.
#[derive(Debug, Clone, Copy)]
enum Want<'a> {
    /// 200, `text/plain`, this value.
    Value(&'a str),
    /// This status (404: the secret or binding is gone; 401: the token is refused).
    Status(u16),
}

fn check(resp: &Result<Resp, String>, want: Want<'_>) -> Result<(), String> {
    let resp = resp.as_ref().map_err(Clone::clone)?;
    let ok = match want {
        Want::Value(v) => {
            resp.status == 200 && resp.body == v && resp.content_type.starts_with("text/plain")
        }
        Want::Status(404) => resp.status == 404 && resp.body.contains("not found"),
        Want::Status(s) => resp.status == s,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{resp:?}, wanted {want:?}"))
    }
}

// ---------------------------------------------------------------------------------------------
// The control plane

/// A node registered with `coffer node create`.
#[derive(Debug, Clone)]
struct Node {
    id: String,
    name: String,
    token: String,
}

/// A control plane on a temp data dir, with one store; everything else of the scenario (edge
/// data dirs, KEK copy, wrangler files) lives in the same temp dir.
struct Cp {
    // Declared first, so that it is killed before its data dir goes.
    server: Option<Server>,
    tmp: tempfile::TempDir,
    data: PathBuf,
    conn: Conn,
    store: String,
}

impl Cp {
    fn start() -> Cp {
        let (tmp, data, server, conn) = setup();
        let store = create_store(&conn, "edge-store");
        Cp {
            tmp,
            data,
            server: Some(server),
            conn,
            store,
        }
    }

    fn url(&self) -> String {
        self.conn.url.clone()
    }

    /// A path in the scenario's temp dir.
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn log(&self) -> String {
        self.server.as_ref().map(Server::log).unwrap_or_default()
    }

    /// SIGKILL.
    fn kill(&mut self) {
        self.server.take().expect("the control plane runs").kill_9();
    }

    /// Starts it again on the same data dir and the same address (the edges know it by it).
    fn restart(&mut self) {
        assert!(self.server.is_none(), "the control plane still runs");
        let addr = self
            .conn
            .url
            .strip_prefix("http://")
            .expect("an http:// URL")
            .to_owned();
        let mut cmd = coffer_cmd();
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--listen", &addr])
            .env("RUST_LOG", "debug");
        let server = Server::spawn(cmd);
        assert_eq!(server.url, self.conn.url, "restarted on another address");
        self.server = Some(server);
    }

    /// `coffer node create NAME --json`.
    fn node(&self, name: &str) -> Node {
        let out = self.conn.run(&["node", "create", name, "--json"]).ok();
        let v = out.json();
        for key in ["id", "name", "created", "node_token"] {
            assert!(
                v.get(key).is_some(),
                "no {key} in `node create --json`: {v}"
            );
        }
        assert_eq!(v["name"], name, "{v}");
        let token = v["node_token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("coffernode_"), "{v}");
        Node {
            id: v["id"].as_str().expect("a string id").to_owned(),
            name: name.to_owned(),
            token,
        }
    }

    /// Creates a secret (scope workers) in the store; its id.
    fn create_secret(&self, name: &str, value: &str) -> String {
        create_secret(&self.conn, &self.store, name, "workers", value)
    }

    fn update_secret(&self, id: &str, value: &str) {
        self.conn
            .run_with_stdin(
                &[
                    "secret",
                    "update",
                    &self.store,
                    "--secret-id",
                    id,
                    "--value",
                    "-",
                ],
                value,
            )
            .ok();
    }

    fn delete_secret(&self, id: &str) {
        self.conn
            .run(&["secret", "delete", &self.store, "--secret-id", id])
            .ok();
    }

    /// Deploys service `name` (type workers) binding each `(BINDING, secret name)` and each
    /// store binding to the store; the service token on a first deploy.
    fn deploy(&self, name: &str, secrets: &[(&str, &str)], stores: &[&str]) -> Option<String> {
        let mut toml = format!("name = \"{name}\"\nmain = \"src/index.js\"\n");
        for (binding, secret) in secrets {
            toml.push_str(&format!(
                "\n[[secrets_store_secrets]]\nbinding = \"{binding}\"\nstore_id = \"{}\"\nsecret_name = \"{secret}\"\n",
                self.store
            ));
        }
        for binding in stores {
            toml.push_str(&format!(
                "\n[[secrets_store_stores]]\nbinding = \"{binding}\"\nstore_id = \"{}\"\n",
                self.store
            ));
        }
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        let v = self
            .conn
            .run(&["deploy", "--config", path.to_str().unwrap(), "--json"])
            .ok()
            .json();
        v.get("service_token").map(|t| {
            let t = t.as_str().unwrap().to_owned();
            assert!(t.starts_with("coffersvc_"), "{v}");
            t
        })
    }

    /// The control plane's own runtime API.
    fn get(&self, path: &str, token: &str) -> Resp {
        get(&format!("{}{path}", self.conn.url), Some(token))
            .unwrap_or_else(|e| panic!("{e}\ncontrol plane log:\n{}", tail(&self.log())))
    }

    /// The head of the control plane's log, as its feed names it when asked for entries after
    /// a position beyond it (a 400 naming `after` and the head).
    fn head(&self, node_token: &str) -> Result<u64, String> {
        let resp = get(
            &format!("{}/replication/v1/feed?after={}", self.conn.url, u64::MAX),
            Some(node_token),
        )?;
        if resp.status != 400 {
            return Err(format!("feed after u64::MAX: {resp:?}"));
        }
        let message = resp.json()["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        message
            .rsplit_once('(')
            .and_then(|(_, rest)| rest.split(')').next())
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("no head in the 400's message: {resp:?}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Edges

/// Where the edges' environment points HTTP proxies: nothing listens there.
const DEAD_PROXY: &str = "http://127.0.0.1:9";

/// A `coffer edge` process and what it takes to start it again on the same data dir.
struct Edge {
    name: String,
    server: Option<Server>,
    url: String,
    dir: PathBuf,
    upstreams: Vec<String>,
    token: String,
    extra: Vec<String>,
    /// The logs of its previous runs.
    past_logs: String,
}

impl Edge {
    /// Starts an edge named `name` (for messages) with its data dir in the scenario's temp dir.
    fn start(cp: &Cp, name: &str, upstreams: &[&str], node: &Node, extra: &[&str]) -> Edge {
        Edge::start_in(&cp.path(name), name, upstreams, node, extra)
    }

    fn start_in(dir: &Path, name: &str, upstreams: &[&str], node: &Node, extra: &[&str]) -> Edge {
        let mut edge = Edge {
            name: name.to_owned(),
            server: None,
            url: String::new(),
            dir: dir.to_owned(),
            upstreams: upstreams.iter().map(|s| (*s).to_owned()).collect(),
            token: node.token.clone(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            past_logs: String::new(),
        };
        edge.spawn();
        edge
    }

    fn spawn(&mut self) {
        assert!(self.server.is_none());
        let mut cmd = coffer_cmd();
        for var in [
            "COFFER_NODE_TOKEN",
            "COFFER_UPSTREAM",
            "COFFER_DATA_DIR",
            "COFFER_KEK_FILE",
            "COFFER_LISTEN",
        ] {
            cmd.env_remove(var);
        }
        cmd.arg("edge")
            .args(["--upstream", &self.upstreams.join(",")])
            .env("COFFER_NODE_TOKEN", &self.token)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.extra)
            // A proxy that answers nothing: an edge must not send its plain-HTTP upstream's
            // traffic (and node token) to a proxy named in its environment.
            .env("HTTP_PROXY", DEAD_PROXY)
            .env("http_proxy", DEAD_PROXY)
            .env("ALL_PROXY", DEAD_PROXY)
            .env("all_proxy", DEAD_PROXY)
            .env(
                "RUST_LOG",
                "info,coffer_edge=debug,coffer_replication=debug,coffer_server=debug",
            );
        let server = Server::spawn(cmd);
        self.url = server.url.clone();
        self.server = Some(server);
    }

    fn log(&self) -> String {
        let current = self.server.as_ref().map(Server::log).unwrap_or_default();
        format!("{}{current}", self.past_logs)
    }

    fn get(&self, path: &str, token: Option<&str>) -> Result<Resp, String> {
        get(&format!("{}{path}", self.url), token)
    }

    fn read(&self, binding: &str, token: &str) -> Result<Resp, String> {
        self.get(&binding_path(binding), Some(token))
    }

    /// `GET /healthz`: its status and its JSON.
    fn healthz(&self) -> Result<(u16, Value), String> {
        let resp = self.get("/healthz", None)?;
        let v = serde_json::from_str(&resp.body)
            .map_err(|e| format!("healthz is not JSON ({e}): {resp:?}"))?;
        Ok((resp.status, v))
    }

    fn health(&self) -> Value {
        self.healthz()
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", self.name, self.diag()))
            .1
    }

    fn applied_seq(&self) -> u64 {
        let h = self.health();
        h["applied_seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no applied_seq in {h}", self.name))
    }

    /// Its healthz and the tail of its log.
    fn diag(&self) -> String {
        let health = match self.healthz() {
            Ok((status, v)) => format!("{status} {v}"),
            Err(e) => e,
        };
        format!(
            "--- edge {} ({}): healthz {health}\n--- its log (tail):\n{}",
            self.name,
            self.url,
            tail(&self.log())
        )
    }

    /// Waits for `/healthz` to say 200 ready; its JSON.
    #[track_caller]
    fn wait_ready(&self) -> Value {
        eventually(
            &format!("edge {} ready", self.name),
            WAIT,
            || match self.healthz()? {
                (200, v) if v["ready"] == true => Ok(v),
                (status, v) => Err(format!("{status} {v}")),
            },
            || self.diag(),
        )
    }

    /// Waits until reading `binding` with `token` answers `want`.
    #[track_caller]
    fn wait_read(&self, binding: &str, token: &str, want: Want<'_>) {
        eventually(
            &format!("edge {}: {binding} answers {want:?}", self.name),
            WAIT,
            || check(&self.read(binding, token), want),
            || self.diag(),
        );
    }

    /// Waits until `/healthz` names `url` as the current upstream.
    #[track_caller]
    fn wait_upstream(&self, url: &str) {
        eventually(
            &format!("edge {} follows {url}", self.name),
            WAIT,
            || match self.healthz()? {
                (_, h) if h["upstream"] == url => Ok(()),
                (s, h) => Err(format!("{s} {h}")),
            },
            || self.diag(),
        );
    }

    /// SIGKILL: no shutdown code runs.
    fn kill_9(&mut self) {
        let server = self.server.take().expect("the edge runs");
        self.past_logs.push_str(&server.log());
        self.past_logs
            .push_str(&format!("--- (edge {} killed with SIGKILL)\n", self.name));
        server.kill_9();
    }

    /// SIGTERM, and its exit status.
    fn terminate(&mut self) -> ExitStatus {
        let mut server = self.server.take().expect("the edge runs");
        let status = Command::new("kill")
            .args(["-TERM", &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + WAIT;
        let exit = loop {
            if let Some(exit) = server.child.try_wait().unwrap() {
                break exit;
            }
            assert!(
                Instant::now() < deadline,
                "edge {} did not stop within {WAIT:?} of SIGTERM:\n{}",
                self.name,
                tail(&server.log())
            );
            std::thread::sleep(POLL);
        };
        self.past_logs.push_str(&server.log());
        self.past_logs
            .push_str(&format!("--- (edge {} stopped: {exit})\n", self.name));
        exit
    }

    /// Starts it again on the same data dir, with the same settings (on a new port).
    fn restart(&mut self) {
        self.spawn();
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}

fn diag_all(edges: &[&Edge]) -> String {
    edges
        .iter()
        .map(|e| e.diag())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until every edge answers `want` for `binding` with `token`; how long it took.
#[track_caller]
fn all_read(edges: &[&Edge], binding: &str, token: &str, want: Want<'_>) -> Duration {
    let start = Instant::now();
    for edge in edges {
        edge.wait_read(binding, token, want);
    }
    start.elapsed()
}

/// Waits until every edge has applied the control plane's head (and the head no longer
/// moves); that head.
#[track_caller]
fn converge(cp: &Cp, node: &Node, edges: &[&Edge]) -> u64 {
    eventually(
        "every edge at the control plane's head",
        WAIT,
        || {
            let head = cp.head(&node.token)?;
            let seqs = edges
                .iter()
                .map(|e| {
                    let (_, h) = e.healthz()?;
                    h["applied_seq"]
                        .as_u64()
                        .ok_or_else(|| format!("{}: no applied_seq in {h}", e.name))
                })
                .collect::<Result<Vec<u64>, String>>()?;
            if seqs.iter().all(|s| *s == head) && cp.head(&node.token)? == head {
                Ok(head)
            } else {
                Err(format!("head {head}, edges applied {seqs:?}"))
            }
        },
        || diag_all(edges),
    )
}

// ---------------------------------------------------------------------------------------------
// 1. A fleet: two edges on the control plane (one of them a relay) and one on the relay.

#[test]
fn a_fleet_of_edges_and_a_relay_follows_every_write() {
    let cp = Cp::start();
    let n1 = cp.node("fleet-e1");
    let n2 = cp.node("fleet-e2");
    let n3 = cp.node("fleet-e3");
    let secret = cp.create_secret("api-key", "value-1");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();

    let url = cp.url();
    let e1 = Edge::start(&cp, "e1-relay", &[&url], &n1, &["--serve-feed"]);
    let e2 = Edge::start(&cp, "e2", &[&url], &n2, &[]);
    let e3 = Edge::start(&cp, "e3-via-relay", &[&e1.url], &n3, &[]);
    let edges = [&e1, &e2, &e3];
    for edge in edges {
        let h = edge.wait_ready();
        assert_eq!(h["role"], "edge", "{h}");
        assert_eq!(h["status"], "ok", "{h}");
        assert!(h["cluster_id"].is_string(), "{h}");
    }
    let cluster = e1.health()["cluster_id"].clone();
    for edge in edges {
        assert_eq!(edge.health()["cluster_id"], cluster, "{}", edge.name);
    }
    assert_eq!(e3.health()["upstream"], e1.url.as_str());
    all_read(&edges, "API_KEY", &token, Want::Value("value-1"));

    // Update: the new value everywhere.
    cp.update_secret(&secret, "value-2");
    let took = all_read(&edges, "API_KEY", &token, Want::Value("value-2"));
    eprintln!("update reached every edge in {took:?}");

    // Delete: gone everywhere.
    cp.delete_secret(&secret);
    let took = all_read(&edges, "API_KEY", &token, Want::Status(404));
    eprintln!("delete reached every edge in {took:?}");

    // Re-create under the same name: the binding resolves again.
    cp.create_secret("api-key", "value-3");
    let took = all_read(&edges, "API_KEY", &token, Want::Value("value-3"));
    eprintln!("re-create reached every edge in {took:?}");
    // Nothing went back to an older state on the way.
    for edge in edges {
        check(&edge.read("API_KEY", &token), Want::Value("value-3"))
            .unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
    }

    // Rotate the service token: the old one is refused everywhere, the new one works.
    let rotated = cp
        .conn
        .run(&["service", "token", "rotate", "app", "--json"])
        .ok()
        .json();
    let new = rotated["service_token"].as_str().unwrap().to_owned();
    let took = all_read(&edges, "API_KEY", &token, Want::Status(401));
    eprintln!("token rotation reached every edge in {took:?}");
    all_read(&edges, "API_KEY", &new, Want::Value("value-3"));

    // Revoke every token of the service: refused everywhere.
    cp.conn.run(&["service", "token", "revoke", "app"]).ok();
    all_read(&edges, "API_KEY", &new, Want::Status(401));

    // A deleted service: its (new) token is refused everywhere.
    let token = cp.deploy("gone", &[("API_KEY", "api-key")], &[]).unwrap();
    all_read(&edges, "API_KEY", &token, Want::Value("value-3"));
    cp.conn.run(&["service", "delete", "gone"]).ok();
    all_read(&edges, "API_KEY", &token, Want::Status(401));

    // The relay's follower is where the relay is, which is where the control plane is.
    converge(&cp, &n1, &edges);
    for edge in edges {
        let h = edge.health();
        assert_eq!(h["alarms"], 0, "{}: {h}", edge.name);
        for value in ["value-1", "value-2", "value-3"] {
            assert!(
                !edge.log().contains(value),
                "a value in {}'s log",
                edge.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. kill -9 and restart

#[test]
fn an_edge_killed_with_sigkill_serves_at_once_after_restart_and_catches_up() {
    let cp = Cp::start();
    let n1 = cp.node("kill-e1");
    let n2 = cp.node("kill-e2");
    let api = cp.create_secret("api-key", "before-1");
    cp.create_secret("db-url", "db-before");
    let token = cp
        .deploy("app", &[("API_KEY", "api-key"), ("DB_URL", "db-url")], &[])
        .unwrap();
    let url = cp.url();
    let e1 = Edge::start(&cp, "e1", &[&url], &n1, &[]);
    let mut e2 = Edge::start(&cp, "e2", &[&url], &n2, &[]);
    for edge in [&e1, &e2] {
        edge.wait_ready();
    }
    all_read(&[&e1, &e2], "API_KEY", &token, Want::Value("before-1"));
    let cluster = e2.health()["cluster_id"].clone();

    e2.kill_9();
    // Writes while it is down: an update, a new secret and a new binding, a deleted one.
    cp.update_secret(&api, "after-2");
    cp.create_secret("new-secret", "new-value");
    cp.deploy(
        "app",
        &[("API_KEY", "api-key"), ("NEW_KEY", "new-secret")],
        &[],
    );
    e1.wait_read("API_KEY", &token, Want::Value("after-2"));
    e1.wait_read("NEW_KEY", &token, Want::Value("new-value"));
    e1.wait_read("DB_URL", &token, Want::Status(404));

    e2.restart();
    // It answers from its replica at once: no 503 while it catches up.
    let (status, h) = e2
        .healthz()
        .unwrap_or_else(|e| panic!("{e}\n{}", e2.diag()));
    assert_eq!(
        status,
        200,
        "not ready at once after a restart: {h}\n{}",
        e2.diag()
    );
    assert_eq!(h["ready"], true, "{h}");
    assert_eq!(h["cluster_id"], cluster, "{h}");
    let first = e2
        .read("API_KEY", &token)
        .unwrap_or_else(|e| panic!("{e}\n{}", e2.diag()));
    assert_eq!(first.status, 200, "{first:?}\n{}", e2.diag());
    assert!(
        first.body == "before-1" || first.body == "after-2",
        "neither the old nor the new value: {first:?}"
    );
    // And it catches up with what it missed.
    e2.wait_read("API_KEY", &token, Want::Value("after-2"));
    e2.wait_read("NEW_KEY", &token, Want::Value("new-value"));
    e2.wait_read("DB_URL", &token, Want::Status(404));
    let head = converge(&cp, &n1, &[&e1, &e2]);
    assert_eq!(e2.applied_seq(), e1.applied_seq());
    assert_eq!(e2.applied_seq(), head);
    assert_eq!(e2.health()["alarms"], 0, "{}", e2.diag());

    // Killed again right after a write, it still ends up with it.
    cp.update_secret(&api, "after-3");
    e2.kill_9();
    e2.restart();
    e2.wait_read("API_KEY", &token, Want::Value("after-3"));
    converge(&cp, &n1, &[&e1, &e2]);
}

// ---------------------------------------------------------------------------------------------
// 3. Static stability

/// Reads every probe on `edge`.
fn answers(edge: &Edge, probes: &[(String, String)]) -> Result<Vec<Resp>, String> {
    probes
        .iter()
        .map(|(path, token)| edge.get(path, Some(token)))
        .collect()
}

#[test]
fn edges_keep_serving_with_the_control_plane_down_and_resume_after() {
    let mut cp = Cp::start();
    let n1 = cp.node("static-e1");
    let n2 = cp.node("static-e2");
    let api = cp.create_secret("api-key", "static-api");
    cp.create_secret("db-url", "static-db");
    let gone = cp.create_secret("soon-gone", "static-gone");
    let t1 = cp
        .deploy(
            "app",
            &[
                ("API_KEY", "api-key"),
                ("DB_URL", "db-url"),
                ("GONE", "soon-gone"),
            ],
            &["ALL"],
        )
        .unwrap();
    let t2 = cp.deploy("other", &[("DB", "db-url")], &[]).unwrap();
    let revoked = cp.deploy("revoked", &[("DB", "db-url")], &[]).unwrap();
    cp.conn.run(&["service", "token", "revoke", "revoked"]).ok();
    cp.delete_secret(&gone);

    let url = cp.url();
    let mut e1 = Edge::start(&cp, "e1", &[&url], &n1, &[]);
    let mut e2 = Edge::start(&cp, "e2", &[&url], &n2, &[]);
    let probes: Vec<(String, String)> = [
        (binding_path("API_KEY"), &t1),
        (binding_path("DB_URL"), &t1),
        (binding_path("GONE"), &t1),
        (binding_path("NO_SUCH_BINDING"), &t1),
        ("/runtime/v1/stores/ALL/secrets/db-url".to_owned(), &t1),
        (ALL_BINDINGS.to_owned(), &t1),
        (binding_path("DB"), &t2),
        (ALL_BINDINGS.to_owned(), &t2),
        (binding_path("DB"), &revoked),
    ]
    .into_iter()
    .map(|(p, t)| (p, t.clone()))
    .collect();
    // What the control plane answers, once every edge has all of it.
    let expected: Vec<Resp> = probes.iter().map(|(p, t)| cp.get(p, t)).collect();
    let statuses: Vec<u16> = expected.iter().map(|r| r.status).collect();
    // (All the bindings of a service one of whose secrets is gone: 404.)
    assert_eq!(
        statuses,
        [200, 200, 404, 404, 200, 404, 200, 200, 401],
        "{expected:#?}"
    );
    assert_eq!(expected[7].json(), serde_json::json!({"DB": "static-db"}));
    converge(&cp, &n1, &[&e1, &e2]);
    // (Serving can lag /healthz's "ready" by a moment: see an_edge_that_says_ready_serves_reads.)
    all_read(&[&e1, &e2], "API_KEY", &t1, Want::Value("static-api"));
    // Each edge answers like the control plane (a refused token's message aside: an edge that
    // bootstrapped after a revocation has no record of the token at all, so it says "invalid"
    // where the control plane says "revoked").
    let before: Vec<Vec<Resp>> = [&e1, &e2]
        .iter()
        .map(|edge| {
            let got = answers(edge, &probes).unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
            for ((path, _), (g, w)) in probes.iter().zip(got.iter().zip(&expected)) {
                assert_eq!(g.status, w.status, "{path}: {g:?}\n{}", edge.diag());
                if w.status != 401 {
                    assert_eq!(g, w, "{path}\n{}", edge.diag());
                }
            }
            got
        })
        .collect();
    let cluster = e1.health()["cluster_id"].clone();
    let applied = e1.applied_seq();

    // The control plane dies. Once the edges have noticed, they answer exactly as before.
    cp.kill();
    for edge in [&e1, &e2] {
        eventually(
            &format!("edge {} notices the control plane is down", edge.name),
            WAIT,
            || match edge.healthz()? {
                (_, h) if h["last_error"].is_string() => Ok(()),
                (s, h) => Err(format!("{s} {h}")),
            },
            || edge.diag(),
        );
    }
    for round in 0..3 {
        for (edge, expected) in [&e1, &e2].into_iter().zip(&before) {
            let (status, h) = edge.healthz().unwrap();
            assert_eq!(status, 200, "round {round}: {h}\n{}", edge.diag());
            assert_eq!(h["ready"], true, "{h}");
            let got = answers(edge, &probes).unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
            assert_eq!(
                &got,
                expected,
                "round {round}, control plane down\n{}",
                edge.diag()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // An edge restarted while the control plane is down serves from its replica.
    e2.kill_9();
    e2.restart();
    let (status, h) = e2
        .healthz()
        .unwrap_or_else(|e| panic!("{e}\n{}", e2.diag()));
    assert_eq!(status, 200, "{h}\n{}", e2.diag());
    assert_eq!(h["ready"], true, "{h}");
    assert_eq!(h["cluster_id"], cluster, "{h}");
    assert_eq!(h["applied_seq"], applied, "{h}");
    let got = answers(&e2, &probes).unwrap_or_else(|e| panic!("{e}\n{}", e2.diag()));
    assert_eq!(
        got,
        before[1],
        "restarted with the control plane down\n{}",
        e2.diag()
    );
    // And one stopped cleanly, likewise.
    assert!(e1.terminate().success());
    e1.restart();
    let got = answers(&e1, &probes).unwrap_or_else(|e| panic!("{e}\n{}", e1.diag()));
    assert_eq!(
        got,
        before[0],
        "restarted with the control plane down\n{}",
        e1.diag()
    );

    // The control plane comes back (same data dir, same address): the edges follow again.
    cp.restart();
    cp.update_secret(&api, "static-api-2");
    all_read(&[&e1, &e2], "API_KEY", &t1, Want::Value("static-api-2"));
    converge(&cp, &n1, &[&e1, &e2]);
}

// ---------------------------------------------------------------------------------------------
// 4. Convergence

#[test]
fn after_a_burst_of_writes_every_edge_answers_like_the_control_plane() {
    let cp = Cp::start();
    let nr = cp.node("conv-relay");
    let nl = cp.node("conv-leaf");
    let nd = cp.node("conv-direct");
    let url = cp.url();
    let relay = Edge::start(&cp, "relay", &[&url], &nr, &["--serve-feed"]);
    let leaf = Edge::start(&cp, "leaf", &[&relay.url], &nl, &[]);
    let direct = Edge::start(&cp, "direct", &[&url], &nd, &[]);
    let edges = [&relay, &leaf, &direct];
    for edge in edges {
        edge.wait_ready();
    }

    // The writes, while the edges follow.
    let names = ["s0", "s1", "s2", "s3", "s4"];
    let mut ids: Vec<String> = names
        .iter()
        .map(|n| cp.create_secret(n, &format!("{n}-v0")))
        .collect();
    let app = cp
        .deploy(
            "app",
            &[("S0", "s0"), ("S1", "s1"), ("S2", "s2"), ("S3", "s3")],
            &["STORE"],
        )
        .unwrap();
    let mut other = cp
        .deploy("other", &[("S4", "s4"), ("S0", "s0")], &[])
        .unwrap();
    for round in 1..=4 {
        for (n, id) in names.iter().zip(&ids) {
            cp.update_secret(id, &format!("{n}-v{round}"));
        }
    }
    // Rebound: S3 goes, S5 comes; then S1's secret goes (a dangling binding) and S2's is
    // replaced by a new secret of the same name.
    cp.create_secret("s5", "s5-v0");
    cp.deploy(
        "app",
        &[("S0", "s0"), ("S1", "s1"), ("S2", "s2"), ("S5", "s5")],
        &["STORE"],
    );
    cp.delete_secret(&ids[1]);
    cp.delete_secret(&ids[2]);
    ids[2] = cp.create_secret("s2", "s2-recreated");
    let rotated = cp
        .conn
        .run(&[
            "service",
            "token",
            "rotate",
            "other",
            "--keep-previous",
            "--json",
        ])
        .ok()
        .json();
    let previous = std::mem::replace(
        &mut other,
        rotated["service_token"].as_str().unwrap().to_owned(),
    );
    cp.update_secret(&ids[0], "s0-last");

    let head = converge(&cp, &nd, &edges);
    all_read(&edges, "S0", &app, Want::Value("s0-last"));
    eprintln!("converged at seq {head}");
    let probes: Vec<(String, &String)> = vec![
        (ALL_BINDINGS.to_owned(), &app),
        (ALL_BINDINGS.to_owned(), &other),
        (ALL_BINDINGS.to_owned(), &previous),
        (binding_path("S0"), &app),
        (binding_path("S1"), &app),
        (binding_path("S2"), &app),
        (binding_path("S3"), &app),
        (binding_path("S5"), &app),
        (binding_path("S4"), &other),
        (binding_path("S0"), &previous),
        ("/runtime/v1/stores/STORE/secrets/s3".to_owned(), &app),
        ("/runtime/v1/stores/STORE/secrets/s1".to_owned(), &app),
        ("/runtime/v1/stores/STORE/secrets/s2".to_owned(), &app),
    ];
    let expected: Vec<Resp> = probes.iter().map(|(p, t)| cp.get(p, t)).collect();
    // The control plane's answers are the ones the writes call for.
    assert_eq!(expected[3].body, "s0-last", "{expected:#?}");
    assert_eq!(expected[4].status, 404, "{expected:#?}");
    assert_eq!(expected[5].body, "s2-recreated", "{expected:#?}");
    assert_eq!(
        expected[6].status, 404,
        "S3 is no longer bound: {expected:#?}"
    );
    assert_eq!(expected[8].body, "s4-v4", "{expected:#?}");
    assert_eq!(expected[9].body, "s0-last", "{expected:#?}");
    assert_eq!(expected[10].body, "s3-v4", "{expected:#?}");
    let all: Value = expected[1].json();
    assert_eq!(all["S4"], "s4-v4", "{all}");
    assert_eq!(all["S0"], "s0-last", "{all}");
    for edge in edges {
        for ((path, token), want) in probes.iter().zip(&expected) {
            let got = edge
                .get(path, Some(token))
                .unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
            if want.content_type.starts_with("application/json") && want.status == 200 {
                assert_eq!(got.status, 200, "{path}: {got:?}\n{}", edge.diag());
                assert_eq!(got.json(), want.json(), "{path}\n{}", edge.diag());
            } else {
                assert_eq!(
                    (got.status, &got.body),
                    (want.status, &want.body),
                    "{path} on edge {} differs from the control plane",
                    edge.name
                );
            }
        }
        assert_eq!(edge.health()["alarms"], 0, "{}", edge.diag());
    }
}

#[test]
fn an_edge_that_says_ready_serves_reads() {
    // /healthz is what a load balancer routes on: once it says 200, runtime reads must not
    // answer 503. Probed without pause, so a window between the two would be seen.
    let cp = Cp::start();
    cp.create_secret("api-key", "ready-value");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    for i in 0..3 {
        let node = cp.node(&format!("ready-{i}"));
        let edge = Edge::start(&cp, &format!("edge-{i}"), &[&cp.url()], &node, &[]);
        let start = Instant::now();
        loop {
            let (status, h) = edge
                .healthz()
                .unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
            if status == 200 {
                assert_eq!(h["ready"], true, "{h}");
                break;
            }
            assert!(start.elapsed() < WAIT, "never ready\n{}", edge.diag());
            std::thread::sleep(Duration::from_millis(5));
        }
        check(&edge.read("API_KEY", &token), Want::Value("ready-value")).unwrap_or_else(|e| {
            panic!(
                "healthz said ready, but a read right after got {e}\n{}",
                edge.diag()
            )
        });
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Failover

/// A URL nothing listens on.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn an_edge_whose_first_upstream_is_dead_syncs_from_the_next() {
    let cp = Cp::start();
    let node = cp.node("failover-dead-first");
    let secret = cp.create_secret("api-key", "fo-1");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let dead = dead_url();
    let url = cp.url();
    let edge = Edge::start(&cp, "edge", &[&dead, &url], &node, &[]);
    edge.wait_ready();
    edge.wait_read("API_KEY", &token, Want::Value("fo-1"));
    cp.update_secret(&secret, "fo-2");
    edge.wait_read("API_KEY", &token, Want::Value("fo-2"));
    assert_eq!(edge.health()["upstream"], url.as_str(), "{}", edge.diag());
    converge(&cp, &node, &[&edge]);
}

#[test]
fn an_edge_keeps_following_when_its_relay_dies() {
    let cp = Cp::start();
    let nr = cp.node("failover-relay");
    let nf = cp.node("failover-follower");
    let secret = cp.create_secret("api-key", "rel-1");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let url = cp.url();
    let mut relay = Edge::start(&cp, "relay", &[&url], &nr, &["--serve-feed"]);
    relay.wait_ready();
    let follower = Edge::start(
        &cp,
        "follower",
        &[&relay.url, &url],
        &nf,
        &["--staleness", "2"],
    );
    follower.wait_ready();
    follower.wait_read("API_KEY", &token, Want::Value("rel-1"));
    cp.update_secret(&secret, "rel-2");
    follower.wait_read("API_KEY", &token, Want::Value("rel-2"));

    relay.kill_9();
    cp.update_secret(&secret, "rel-3");
    follower.wait_read("API_KEY", &token, Want::Value("rel-3"));
    cp.update_secret(&secret, "rel-4");
    follower.wait_read("API_KEY", &token, Want::Value("rel-4"));
    follower.wait_upstream(&url);
    converge(&cp, &nf, &[&follower]);
}

#[test]
fn an_edge_leaves_a_relay_cut_off_from_the_control_plane() {
    // control plane <- r0 (relay) <- r1 (relay) <- follower (r1 first, then the control plane)
    let cp = Cp::start();
    let n0 = cp.node("stale-r0");
    let n1 = cp.node("stale-r1");
    let nf = cp.node("stale-follower");
    let secret = cp.create_secret("api-key", "stale-1");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let url = cp.url();
    let mut r0 = Edge::start(&cp, "r0", &[&url], &n0, &["--serve-feed"]);
    r0.wait_ready();
    let r1 = Edge::start(&cp, "r1", &[&r0.url], &n1, &["--serve-feed"]);
    r1.wait_ready();
    let follower = Edge::start(
        &cp,
        "follower",
        &[&r1.url, &url],
        &nf,
        &["--staleness", "2"],
    );
    follower.wait_ready();
    follower.wait_read("API_KEY", &token, Want::Value("stale-1"));

    // r1 stays up but hears nothing new: its heartbeats grow old.
    r0.kill_9();
    let r1_seq = r1.applied_seq();
    cp.update_secret(&secret, "stale-2");
    follower.wait_read("API_KEY", &token, Want::Value("stale-2"));
    follower.wait_upstream(&url);
    // r1 itself still serves what it has.
    r1.wait_read("API_KEY", &token, Want::Value("stale-1"));
    assert_eq!(r1.applied_seq(), r1_seq);
    assert!(follower.applied_seq() > r1_seq);
}

#[test]
fn a_healthy_relay_is_not_left_when_nothing_is_written() {
    // The relay and the control plane are both fine: with nothing written, the follower has
    // no reason to leave the relay, whatever --staleness it has.
    let cp = Cp::start();
    let nr = cp.node("quiet-relay");
    let nf = cp.node("quiet-follower");
    cp.create_secret("api-key", "quiet-1");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let url = cp.url();
    let relay = Edge::start(&cp, "relay", &[&url], &nr, &["--serve-feed"]);
    relay.wait_ready();
    let follower = Edge::start(
        &cp,
        "follower",
        &[&relay.url, &url],
        &nf,
        &["--staleness", "2"],
    );
    follower.wait_ready();
    follower.wait_read("API_KEY", &token, Want::Value("quiet-1"));
    // (It may have started on the control plane if the relay was not serving yet.)
    follower.wait_upstream(&relay.url);
    let switches = |edge: &Edge| edge.log().matches("switched upstream").count();
    let before = switches(&follower);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let h = follower.health();
        assert_eq!(
            h["upstream"],
            relay.url.as_str(),
            "left a healthy relay after {:?}\n{}",
            start.elapsed(),
            follower.diag()
        );
        std::thread::sleep(POLL);
    }
    assert_eq!(switches(&follower), before, "{}", follower.diag());
}

// ---------------------------------------------------------------------------------------------
// 6. Bad input

#[test]
fn the_feed_refuses_bad_credentials_and_positions() {
    let cp = Cp::start();
    let node = cp.node("feed-client");
    cp.create_secret("api-key", "feed-value");
    let svc = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let feed = |query: &str, token: Option<&str>| {
        get(&format!("{}/replication/v1/feed?{query}", cp.url()), token)
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&cp.log())))
    };
    let snapshot = |token: Option<&str>| {
        get(&format!("{}/replication/v1/snapshot", cp.url()), token)
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&cp.log())))
    };

    // Who may read the feed and the snapshot: node tokens only.
    for (who, token, status) in [
        ("no token", None, 401),
        ("garbage", Some("garbage"), 401),
        (
            "a made-up node token",
            Some("coffernode_0123456789abcdef"),
            401,
        ),
        ("an API token", Some(cp.conn.token.as_str()), 403),
        ("a service token", Some(svc.as_str()), 403),
    ] {
        let r = feed("after=0", token);
        assert_eq!(r.status, status, "feed, {who}: {r:?}");
        assert_eq!(r.json()["success"], false, "feed, {who}: {r:?}");
        let r = snapshot(token);
        assert_eq!(r.status, status, "snapshot, {who}: {r:?}");
    }
    let r = feed("after=0", Some(&node.token));
    assert_eq!(r.status, 200, "{r:?}");
    let r = snapshot(Some(&node.token));
    assert_eq!(r.status, 200, "{r:?}");
    // A node token is good for nothing else.
    let r = get(
        &format!(
            "{}/client/v4/accounts/{}/secrets_store/stores",
            cp.url(),
            cp.conn.account
        ),
        Some(&node.token),
    )
    .unwrap();
    assert!(r.status == 401 || r.status == 403, "{r:?}");
    let r = get(
        &format!("{}{}", cp.url(), binding_path("API_KEY")),
        Some(&node.token),
    )
    .unwrap();
    assert!(r.status == 401 || r.status == 403, "{r:?}");

    // Positions.
    let head = cp.head(&node.token).unwrap();
    let r = feed(&format!("after={}", head + 1_000), Some(&node.token));
    assert_eq!(r.status, 400, "{r:?}");
    let message = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("after"), "{message}");
    for bad in [
        "",
        "after=-1",
        "after=x",
        "after=0&wait=z",
        "after=0&bogus=1",
    ] {
        let r = feed(bad, Some(&node.token));
        assert_eq!(r.status, 400, "{bad:?}: {r:?}");
    }
    let r = feed(&format!("after={head}&wait=0"), Some(&node.token));
    assert_eq!(r.status, 200, "{r:?}");

    // The node in the list; revoked, its token no longer reads the feed.
    let list = cp.conn.run(&["node", "list", "--json"]).ok();
    assert!(list.stdout.contains(&node.id), "{list:#?}");
    assert!(list.stdout.contains(&node.name), "{list:#?}");
    assert!(
        !list.stdout.contains(&node.token),
        "a node token in the list: {list:#?}"
    );
    let human = cp.conn.run(&["node", "list"]).ok();
    assert!(human.stdout.contains(&node.name), "{human:#?}");
    cp.conn.run(&["node", "revoke", &node.id]).ok();
    let r = feed("after=0", Some(&node.token));
    assert_eq!(r.status, 401, "a revoked node token: {r:?}");
    let r = snapshot(Some(&node.token));
    assert_eq!(r.status, 401, "a revoked node token: {r:?}");

    // An edge with that token never gets a replica: it is told it is revoked, and answers 503
    // everywhere but /healthz, which says why.
    let edge = Edge::start(&cp, "revoked-edge", &[&cp.url()], &node, &[]);
    let h = eventually(
        "the edge with a revoked token reports the refusal",
        WAIT,
        || match edge.healthz()? {
            (503, h) if h["revoked"].as_str().is_some_and(|e| e.contains("401")) => Ok(h),
            (s, h) => Err(format!("{s} {h}")),
        },
        || edge.diag(),
    );
    assert_eq!(h["ready"], false, "{h}");
    assert_eq!(h["status"], "revoked", "{h}");
    assert_eq!(h["role"], "edge", "{h}");
    assert_eq!(h["cluster_id"], Value::Null, "{h}");
    for path in [
        binding_path("API_KEY"),
        ALL_BINDINGS.to_owned(),
        "/replication/v1/feed?after=0".to_owned(),
        "/no/such/route".to_owned(),
    ] {
        let r = edge.get(&path, Some(&svc)).unwrap();
        assert_eq!(r.status, 503, "{path}: {r:?}");
    }
}

#[test]
fn a_relay_refuses_what_the_control_plane_refuses() {
    let cp = Cp::start();
    let nr = cp.node("guard-relay");
    let leaf = cp.node("guard-leaf");
    let plain = cp.node("guard-plain");
    cp.create_secret("api-key", "guard-value");
    let svc = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let relay = Edge::start(&cp, "relay", &[&cp.url()], &nr, &["--serve-feed"]);
    let edge = Edge::start(&cp, "plain", &[&cp.url()], &plain, &[]);
    relay.wait_read("API_KEY", &svc, Want::Value("guard-value"));
    edge.wait_read("API_KEY", &svc, Want::Value("guard-value"));
    let feed = |at: &Edge, query: &str, token: Option<&str>| {
        at.get(&format!("/replication/v1/feed?{query}"), token)
            .unwrap_or_else(|e| panic!("{e}\n{}", at.diag()))
    };

    // The leaf's node token reads the relay's feed and snapshot; nothing else does.
    assert_eq!(
        feed(&relay, "after=0", Some(&leaf.token)).status,
        200,
        "{}",
        relay.diag()
    );
    let r = relay
        .get("/replication/v1/snapshot", Some(&leaf.token))
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    // (A relay has no API tokens: to it, one is just not a valid token.)
    for (who, token, statuses) in [
        ("no token", None, &[401][..]),
        ("garbage", Some("garbage"), &[401]),
        ("an API token", Some(cp.conn.token.as_str()), &[401, 403]),
        ("a service token", Some(svc.as_str()), &[403]),
    ] {
        let r = feed(&relay, "after=0", token);
        assert!(statuses.contains(&r.status), "relay feed, {who}: {r:?}");
        assert_eq!(r.json()["success"], false, "relay feed, {who}: {r:?}");
        let r = relay.get("/replication/v1/snapshot", token).unwrap();
        assert!(statuses.contains(&r.status), "relay snapshot, {who}: {r:?}");
    }
    let r = feed(&relay, "after=1000000", Some(&leaf.token));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.json()["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("after")),
        "{r:?}"
    );
    // A node token is no service token, at an edge either.
    let r = relay.read("API_KEY", &leaf.token).unwrap();
    assert!(r.status == 401 || r.status == 403, "{r:?}");
    // An edge that is not a relay serves no feed.
    let r = feed(&edge, "after=0", Some(&leaf.token));
    assert_eq!(r.status, 404, "{r:?}");

    // Revoked on the control plane, the leaf's token is refused by the relay too, once the
    // revocation has reached it.
    cp.conn.run(&["node", "revoke", &leaf.id]).ok();
    eventually(
        "the relay refuses a revoked node token",
        WAIT,
        || {
            let r = feed(&relay, "after=0", Some(&leaf.token));
            if r.status == 401 {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
        || relay.diag(),
    );
    let r = relay
        .get("/replication/v1/snapshot", Some(&leaf.token))
        .unwrap();
    assert_eq!(r.status, 401, "{r:?}");
}

/// Runs `coffer ARGS` that should exit on its own within [`WAIT`].
fn run_briefly(mut cmd: Command) -> Out {
    use std::io::Read;
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not exit within {WAIT:?}");
        }
        std::thread::sleep(POLL);
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Out {
        status,
        stdout,
        stderr,
    }
}

#[test]
fn edge_settings_that_cannot_work_are_refused_at_start() {
    let cp = Cp::start();
    let node = cp.node("settings");
    let edge_cmd = |token: &str, dir: &Path, upstream: &str| {
        let mut cmd = coffer_cmd();
        cmd.env_remove("COFFER_NODE_TOKEN")
            .arg("edge")
            .args(["--upstream", upstream])
            .env("COFFER_NODE_TOKEN", token)
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"]);
        cmd
    };
    // An API token is not a node token.
    let out = run_briefly(edge_cmd(&cp.conn.token, &cp.path("e"), &cp.url()));
    let line = out.one_error_line(1);
    assert!(line.contains("node token"), "{line}");
    // The control plane's own data dir is not an edge's.
    let out = run_briefly(edge_cmd(&node.token, &cp.data, &cp.url()));
    let line = out.one_error_line(1);
    assert!(line.contains("control plane"), "{line}");
    // An upstream that is not a URL.
    let out = run_briefly(edge_cmd(&node.token, &cp.path("e"), "127.0.0.1:1"));
    let line = out.one_error_line(1);
    assert!(line.contains("upstream"), "{line}");
    // Plain HTTP to an upstream off loopback, without --insecure-http-upstream.
    let out = run_briefly(edge_cmd(
        &node.token,
        &cp.path("e"),
        "http://192.0.2.1:8080",
    ));
    let line = out.one_error_line(1);
    assert!(
        line.contains("plain HTTP") && line.contains("--insecure-http-upstream"),
        "{line}"
    );
    // Two edges on one data dir.
    let first = Edge::start(&cp, "e", &[&cp.url()], &node, &[]);
    first.wait_ready();
    let out = run_briefly(edge_cmd(&node.token, &first.dir, &cp.url()));
    let line = out.one_error_line(1);
    assert!(line.contains("in use"), "{line}");
    // Edges take no KEK any more: the flag (or its variable) is refused, saying what to do,
    // before anything is made in the data dir.
    let mut cmd = edge_cmd(&node.token, &cp.path("with-kek"), &cp.url());
    cmd.arg("--kek-file").arg(cp.data.join("kek.key"));
    let out = run_briefly(cmd);
    let line = out.one_error_line(2);
    assert!(
        line.contains("edges no longer take a KEK file") && line.contains("docs/edges.md"),
        "{line}"
    );
    let mut cmd = edge_cmd(&node.token, &cp.path("with-kek"), &cp.url());
    cmd.env("COFFER_KEK_FILE", cp.data.join("kek.key"));
    let line = run_briefly(cmd).one_error_line(2).to_owned();
    assert!(line.contains("edges no longer take a KEK file"), "{line}");
    assert!(!cp.path("with-kek").join("node.key").exists());
}

#[test]
fn an_edge_never_applies_another_clusters_data() {
    // Cluster A, and an edge that holds a replica of it.
    let a = Cp::start();
    let na = a.node("edge-of-a");
    a.create_secret("api-key", "value-of-a");
    let ta = a.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let mut edge = Edge::start(&a, "edge", &[&a.url()], &na, &[]);
    edge.wait_ready();
    edge.wait_read("API_KEY", &ta, Want::Value("value-of-a"));
    let applied = converge(&a, &na, &[&edge]);
    let cluster_a = edge.health()["cluster_id"].clone();
    assert!(cluster_a.is_string(), "{cluster_a}");
    assert!(edge.terminate().success(), "{}", edge.diag());

    // Cluster B: another `coffer init`, with a longer log than A's, so that its feed answers
    // the edge's position with entries of its own rather than a 400.
    let b = Cp::start();
    let nb = b.node("edge-of-b");
    for i in 0..(applied + 3) {
        b.create_secret(&format!("b-{i}"), "value-of-b");
    }
    b.create_secret("api-key", "value-of-b");
    let tb = b.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let head_b = b.head(&nb.token).unwrap();
    assert!(
        head_b > applied,
        "B's head {head_b} is not past A's {applied}"
    );

    // The edge restarted against B (with B's node token): it refuses B and keeps A.
    edge.upstreams = vec![b.url()];
    edge.token = nb.token.clone();
    edge.restart();
    let (status, h) = edge.healthz().unwrap();
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["cluster_id"], cluster_a, "{h}");
    eventually(
        "the edge logs that it refuses the other cluster",
        WAIT,
        || {
            if edge.log().contains("refusing it") {
                Ok(())
            } else {
                Err("no \"refusing it\" in the log".into())
            }
        },
        || edge.diag(),
    );
    let h = edge.health();
    assert_eq!(h["cluster_id"], cluster_a, "{h}");
    assert_eq!(h["applied_seq"], applied, "{h}");
    assert!(
        h["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refusing it")),
        "{h}"
    );
    let line = edge
        .log()
        .lines()
        .find(|l| l.contains("refusing it"))
        .unwrap()
        .to_owned();
    assert!(line.contains("ERROR"), "{line}");
    // Still A's data, none of B's.
    check(&edge.read("API_KEY", &ta), Want::Value("value-of-a"))
        .unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
    check(&edge.read("API_KEY", &tb), Want::Status(401))
        .unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
    // An empty data dir on B is fine: the same settings work there.
    let nb2 = b.node("fresh-edge-of-b");
    let fresh = Edge::start(&b, "fresh", &[&b.url()], &nb2, &[]);
    fresh.wait_ready();
    fresh.wait_read("API_KEY", &tb, Want::Value("value-of-b"));
    assert_ne!(fresh.health()["cluster_id"], cluster_a);
    // And after all that, the first edge still has not moved.
    let h = edge.health();
    assert_eq!(h["cluster_id"], cluster_a, "{h}");
    assert_eq!(h["applied_seq"], applied, "{h}");
}

// ---------------------------------------------------------------------------------------------
// 7. Access events

/// The `access` entries of reads of `binding` served by edge node `node`.
fn access_entries(cp: &Cp, node: &str, binding: &str) -> Vec<Value> {
    let out = cp
        .conn
        .run(&[
            "audit",
            "list",
            "--action",
            "access",
            "--per-page",
            "100",
            "--json",
        ])
        .ok();
    let v = out.json();
    v["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .filter(|e| {
            e["action"] == "access"
                && e["outcome"] == "success"
                && e["edge_node"] == node
                && e["resource"]["binding"] == binding
        })
        .cloned()
        .collect()
}

fn reads_of(entries: &[Value]) -> u64 {
    entries
        .iter()
        .map(|e| e["reads"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn reads_at_an_edge_reach_the_audit_log_once() {
    let cp = Cp::start();
    let node = cp.node("audit-edge");
    cp.create_secret("api-key", "audited-value");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let mut edge = Edge::start(&cp, "edge", &[&cp.url()], &node, &[]);
    edge.wait_ready();
    // Only reads that were served count (a 503 before the replica serves is no read).
    let mut done = 0u64;
    eventually(
        "a first read at the edge",
        WAIT,
        || check(&edge.read("API_KEY", &token), Want::Value("audited-value")),
        || edge.diag(),
    );
    done += 1;
    for _ in 0..4 {
        check(&edge.read("API_KEY", &token), Want::Value("audited-value")).unwrap();
        done += 1;
    }
    // Reads at the control plane itself are not the edge's.
    for _ in 0..2 {
        assert_eq!(cp.get(&binding_path("API_KEY"), &token).status, 200);
    }

    let deadline = Duration::from_secs(40);
    let entries = eventually(
        "the edge's reads in the control plane's audit log",
        deadline,
        || {
            let entries = access_entries(&cp, &node.name, "API_KEY");
            if reads_of(&entries) == done {
                Ok(entries)
            } else {
                Err(format!(
                    "{} reads recorded of {done}: {entries:#?}",
                    reads_of(&entries)
                ))
            }
        },
        || edge.diag(),
    );
    for e in &entries {
        assert_eq!(e["edge_node_id"], node.id.as_str(), "{e}");
        assert_eq!(e["outcome"], "success", "{e}");
        assert_eq!(e["resource"]["secret_name"], "api-key", "{e}");
        assert_eq!(e["resource"]["service_name"], "app", "{e}");
    }
    assert!(
        !entries
            .iter()
            .any(|e| e.to_string().contains("audited-value"))
    );

    // Reads just before a clean stop reach the log too, once: they wait in the edge's outbox.
    for _ in 0..3 {
        check(&edge.read("API_KEY", &token), Want::Value("audited-value")).unwrap();
        done += 1;
    }
    assert!(edge.terminate().success(), "{}", edge.diag());
    edge.restart();
    edge.wait_ready();
    eventually(
        "the reads before the stop in the audit log",
        deadline,
        || {
            let entries = access_entries(&cp, &node.name, "API_KEY");
            if reads_of(&entries) == done {
                Ok(())
            } else {
                Err(format!(
                    "{} reads recorded of {done}: {entries:#?}",
                    reads_of(&entries)
                ))
            }
        },
        || edge.diag(),
    );

    // A restart (even a SIGKILL) sends nothing twice: across another delivery round, the
    // entries stay as they are.
    let before = access_entries(&cp, &node.name, "API_KEY");
    edge.kill_9();
    edge.restart();
    edge.wait_ready();
    std::thread::sleep(Duration::from_secs(12));
    let after = access_entries(&cp, &node.name, "API_KEY");
    assert_eq!(reads_of(&after), done, "{after:#?}\n{}", edge.diag());
    assert_eq!(after, before, "{}", edge.diag());
    // No batch recorded twice: every entry stands for its own reads.
    let mut spans: Vec<(String, String, u64)> = after
        .iter()
        .map(|e| {
            (
                e["first_read"].as_str().unwrap_or("").to_owned(),
                e["last_read"].as_str().unwrap_or("").to_owned(),
                e["reads"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let n = spans.len();
    spans.sort();
    spans.dedup();
    assert_eq!(spans.len(), n, "the same reads recorded twice: {after:#?}");
    cp.conn.run(&["audit", "verify"]).ok();
}

#[test]
fn reads_at_an_edge_behind_a_relay_are_recorded_as_its_own() {
    let cp = Cp::start();
    let nr = cp.node("audit-relay");
    let nl = cp.node("audit-leaf");
    cp.create_secret("api-key", "relayed-value");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let relay = Edge::start(&cp, "relay", &[&cp.url()], &nr, &["--serve-feed"]);
    // Reads at the relay itself, recorded as the relay's: this one and one more below.
    relay.wait_read("API_KEY", &token, Want::Value("relayed-value"));
    let leaf = Edge::start(&cp, "leaf", &[&relay.url], &nl, &[]);
    let mut done = 0u64;
    eventually(
        "a first read at the leaf",
        WAIT,
        || check(&leaf.read("API_KEY", &token), Want::Value("relayed-value")),
        || leaf.diag(),
    );
    done += 1;
    for _ in 0..3 {
        check(&leaf.read("API_KEY", &token), Want::Value("relayed-value")).unwrap();
        done += 1;
    }
    check(&relay.read("API_KEY", &token), Want::Value("relayed-value")).unwrap();

    // Two delivery rounds: the leaf's to the relay, the relay's to the control plane.
    let entries = eventually(
        "the leaf's reads in the control plane's audit log, as the leaf's",
        Duration::from_secs(45),
        || {
            let leaf_entries = access_entries(&cp, &nl.name, "API_KEY");
            let relay_entries = access_entries(&cp, &nr.name, "API_KEY");
            if reads_of(&leaf_entries) == done && reads_of(&relay_entries) == 2 {
                Ok(leaf_entries)
            } else {
                Err(format!(
                    "leaf: {} reads recorded of {done}, relay: {} of 2\nleaf's: {leaf_entries:#?}\nrelay's: {relay_entries:#?}",
                    reads_of(&leaf_entries),
                    reads_of(&relay_entries)
                ))
            }
        },
        || diag_all(&[&relay, &leaf]),
    );
    for e in &entries {
        assert_eq!(e["edge_node_id"], nl.id.as_str(), "{e}");
    }
}

#[test]
fn an_edge_never_applies_a_foreign_cluster_with_a_shorter_log() {
    // As an_edge_never_applies_another_clusters_data, but B's log is shorter than the edge's
    // replica of A: its feed answers the edge's position with a 400 rather than entries.
    let a = Cp::start();
    let na = a.node("long-a");
    for i in 0..8 {
        a.create_secret(&format!("a-{i}"), "filler-of-a");
    }
    a.create_secret("api-key", "value-of-a");
    let ta = a.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let mut edge = Edge::start(&a, "edge", &[&a.url()], &na, &[]);
    edge.wait_read("API_KEY", &ta, Want::Value("value-of-a"));
    let applied = converge(&a, &na, &[&edge]);
    let cluster_a = edge.health()["cluster_id"].clone();
    assert!(edge.terminate().success(), "{}", edge.diag());

    let b = Cp::start();
    let nb = b.node("short-b");
    b.create_secret("api-key", "value-of-b");
    let tb = b.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let head_b = b.head(&nb.token).unwrap();
    assert!(
        head_b < applied,
        "B's head {head_b} is not short of A's {applied}"
    );

    edge.upstreams = vec![b.url()];
    edge.token = nb.token.clone();
    edge.restart();
    eventually(
        "the edge logs that it refuses the other cluster",
        WAIT,
        || {
            if edge.log().contains("refusing it") {
                Ok(())
            } else {
                Err("no \"refusing it\" in the log".into())
            }
        },
        || edge.diag(),
    );
    let h = edge.health();
    assert_eq!(h["cluster_id"], cluster_a, "{h}");
    assert_eq!(h["applied_seq"], applied, "{h}");
    check(&edge.read("API_KEY", &ta), Want::Value("value-of-a"))
        .unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
    check(&edge.read("API_KEY", &tb), Want::Status(401))
        .unwrap_or_else(|e| panic!("{e}\n{}", edge.diag()));
}

// ---------------------------------------------------------------------------------------------
// Revocation, and failures that must not lock out anyone else.

/// A revoked edge stops: after `coffer node revoke`, its upstream tells it (or the feed does),
/// and it answers every read 503 `edge_revoked`, says `revoked` on `/healthz`, deletes its
/// replica, asks upstream nothing more, and refuses to start again from that data dir. Then a
/// burst of failed authentications from this test's address (the same 127.0.0.1 as the edge)
/// is refused once over the limit, while valid service and API tokens from that address are
/// served during and after it, a never-used one included.
#[test]
fn a_revoked_edge_stops_and_a_burst_of_failures_locks_out_no_valid_token() {
    let cp = Cp::start();
    let node = cp.node("rev-e1");
    cp.create_secret("api-key", "value-1");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let mut edge = Edge::start(&cp, "rev-e1", &[&cp.url()], &node, &[]);
    edge.wait_ready();
    edge.wait_read("API_KEY", &token, Want::Value("value-1"));

    cp.conn.run(&["node", "revoke", &node.id]).ok();
    let health = eventually(
        "the edge to count itself revoked",
        WAIT,
        || match edge.healthz()? {
            (503, h) if h["status"] == "revoked" => Ok(h),
            (s, h) => Err(format!("{s} {h}")),
        },
        || edge.diag(),
    );
    assert!(health["revoked"].is_string(), "{health}");
    let r = edge.read("API_KEY", &token).unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["errors"][0]["code"], 1502, "{r:?}");
    eventually(
        "the replica to be deleted",
        WAIT,
        || match edge.dir.join("replica.db").exists() {
            false => Ok(()),
            true => Err("replica.db is still there".to_owned()),
        },
        || edge.diag(),
    );
    // The control plane still serves the value to the service, and the service token's
    // revocation acts there as always.
    assert_eq!(cp.get(&binding_path("API_KEY"), &token).status, 200);

    // A burst of failures from this address (malformed tokens, unknown ids, forged secrets
    // of real ids) on both APIs; a valid token is served throughout.
    let forged = format!("{}{}", &token[..token.len() - 43], "A".repeat(43));
    let quota = format!(
        "/client/v4/accounts/{}/secrets_store/quota",
        cp.conn.account
    );
    let mut refused = 0;
    for i in 0..300 {
        let bad = match i % 3 {
            0 => "garbage".to_owned(),
            1 => format!("coffersvc_{}_{}", "ab".repeat(16), "Q".repeat(43)),
            _ => forged.clone(),
        };
        let path = if i % 2 == 0 {
            binding_path("API_KEY")
        } else {
            quota.clone()
        };
        let status = cp.get(&path, &bad).status;
        assert!(status == 401 || status == 429, "failure {i}: {status}");
        refused += usize::from(status == 429);
        if i % 25 == 0 {
            let r = cp.get(&binding_path("API_KEY"), &token);
            assert_eq!(
                (r.status, r.body.as_str()),
                (200, "value-1"),
                "during the burst ({i})"
            );
        }
    }
    assert!(
        refused > 200,
        "the limit engaged: {refused} of 300 refused with 429"
    );
    // After it: the same service token, the operator's API token, and a service deployed now
    // (its token never seen before) are all served from this address.
    assert_eq!(cp.get(&binding_path("API_KEY"), &forged).status, 429);
    let r = cp.get(&binding_path("API_KEY"), &token);
    assert_eq!((r.status, r.body.as_str()), (200, "value-1"));
    assert_eq!(cp.get(&quota, &cp.conn.token).status, 200);
    let fresh = cp.deploy("app-2", &[("API_KEY", "api-key")], &[]).unwrap();
    let r = cp.get(&binding_path("API_KEY"), &fresh);
    assert_eq!((r.status, r.body.as_str()), (200, "value-1"));

    // The revoked edge's data dir is refused at start, saying what to do.
    let status = edge.terminate();
    assert!(status.success(), "{status}");
    let mut cmd = coffer_cmd();
    cmd.env_remove("COFFER_NODE_TOKEN")
        .arg("edge")
        .args(["--upstream", &cp.url()])
        .env("COFFER_NODE_TOKEN", &node.token)
        .arg("--data-dir")
        .arg(&edge.dir)
        .args(["--listen", "127.0.0.1:0"]);
    let out = run_briefly(cmd);
    let line = out.one_error_line(1);
    assert!(
        line.contains("revoked") && line.contains("empty data dir"),
        "{line}"
    );
}

/// `/healthz` tells the truth while the control plane is down, and the log says so once: an
/// edge reports `degraded` once its requests fail, `stale` (still serving) past `--staleness`,
/// and stops serving past `--max-staleness`; it logs one line naming the cause when it loses its
/// upstream and one when it is back (not one per retry), and is `ok` and serving again after.
#[test]
fn an_edge_cut_off_says_degraded_then_stale_and_logs_the_loss_once() {
    let mut cp = Cp::start();
    let node = cp.node("health-e1");
    cp.create_secret("api-key", "value-1");
    let token = cp.deploy("app", &[("API_KEY", "api-key")], &[]).unwrap();
    let edge = Edge::start(
        &cp,
        "health-e1",
        &[&cp.url()],
        &node,
        &["--staleness", "2", "--max-staleness", "5"],
    );
    edge.wait_ready();
    edge.wait_read("API_KEY", &token, Want::Value("value-1"));
    let status_is = |want: &'static str, code: u16| {
        eventually(
            &format!("edge says {want} ({code})"),
            WAIT,
            || match edge.healthz()? {
                (s, h) if s == code && h["status"] == want => Ok(h),
                (s, h) => Err(format!("{s} {h}")),
            },
            || edge.diag(),
        )
    };
    status_is("ok", 200);

    cp.kill();
    status_is("degraded", 200);
    let h = status_is("stale", 200);
    assert!(h["lag_seconds"].as_f64().unwrap() > 2.0, "{h}");
    edge.wait_read("API_KEY", &token, Want::Value("value-1"));
    status_is("stale", 503);
    edge.wait_read("API_KEY", &token, Want::Status(503));

    cp.restart();
    status_is("ok", 200);
    edge.wait_read("API_KEY", &token, Want::Value("value-1"));
    let log = edge.log();
    let lost: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lost the upstream"))
        .collect();
    assert_eq!(lost.len(), 1, "one line for the loss:\n{}", tail(&log));
    assert!(
        lost[0].contains("error="),
        "the cause is named: {}",
        lost[0]
    );
    let back = log
        .lines()
        .filter(|l| l.contains("upstream is back"))
        .count();
    assert_eq!(back, 1, "one line for the return:\n{}", tail(&log));
}
