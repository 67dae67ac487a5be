//! The fleet these tests run: control planes and edges as `coffer` processes, HTTP reads of
//! them, and waits that poll with a deadline and say what they last saw.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// How long a change may take to reach every edge (or an edge to get ready).
pub const WAIT: Duration = Duration::from_secs(30);
/// Between two probes of a wait.
pub const POLL: Duration = Duration::from_millis(100);
/// Log lines of each edge shown when a wait fails.
pub const LOG_TAIL: usize = 40;

// ---------------------------------------------------------------------------------------------
// HTTP

/// One HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
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
pub fn get(url: &str, token: Option<&str>) -> Result<Resp, String> {
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

pub fn binding_path(binding: &str) -> String {
    format!("/runtime/v1/bindings/{binding}")
}

pub const ALL_BINDINGS: &str = "/runtime/v1/bindings";

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `probe` until it returns `Ok`, for up to `timeout`. On timeout, fails with `what`,
/// the last thing `probe` saw and `context()` (the edges' healthz and logs).
#[track_caller]
pub fn eventually<T>(
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
pub enum Want<'a> {
    /// 200, `text/plain`, this value.
    Value(&'a str),
    /// This status (404: the secret or binding is gone; 401: the token is refused).
    Status(u16),
}

pub fn check(resp: &Result<Resp, String>, want: Want<'_>) -> Result<(), String> {
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
pub struct Node {
    pub id: String,
    pub name: String,
    pub token: String,
}

/// A control plane on a temp data dir, with one store; everything else of the scenario (edge
/// data dirs, KEK copy, wrangler files) lives in the same temp dir.
pub struct ControlPlane {
    // Declared first, so that it is killed before its data dir goes.
    pub server: Option<Server>,
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub conn: Conn,
    pub store: String,
}

impl ControlPlane {
    pub fn start() -> ControlPlane {
        let (tmp, data, server, conn) = setup();
        let store = create_store(&conn, "edge-store");
        ControlPlane {
            tmp,
            data,
            server: Some(server),
            conn,
            store,
        }
    }

    pub fn url(&self) -> String {
        self.conn.url.clone()
    }

    /// A path in the scenario's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn log(&self) -> String {
        self.server.as_ref().map(Server::log).unwrap_or_default()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.server.take().expect("the control plane runs").kill_9();
    }

    /// Starts it again on the same data dir and the same address (the edges know it by it).
    pub fn restart(&mut self) {
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
    pub fn node(&self, name: &str) -> Node {
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
    pub fn create_secret(&self, name: &str, value: &str) -> String {
        create_secret(&self.conn, &self.store, name, "workers", value)
    }

    pub fn update_secret(&self, id: &str, value: &str) {
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

    pub fn delete_secret(&self, id: &str) {
        self.conn
            .run(&["secret", "delete", &self.store, "--secret-id", id])
            .ok();
    }

    /// Deploys service `name` (type workers) binding each `(BINDING, secret name)` and each
    /// store binding to the store; the service token on a first deploy.
    pub fn deploy(&self, name: &str, secrets: &[(&str, &str)], stores: &[&str]) -> Option<String> {
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
    pub fn get(&self, path: &str, token: &str) -> Resp {
        get(&format!("{}{path}", self.conn.url), Some(token))
            .unwrap_or_else(|e| panic!("{e}\ncontrol plane log:\n{}", tail(&self.log())))
    }

    /// The head of the control plane's log, as its feed names it when asked for entries after
    /// a position beyond it (a 400 naming `after` and the head).
    pub fn head(&self, node_token: &str) -> Result<u64, String> {
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
pub const DEAD_PROXY: &str = "http://127.0.0.1:9";

/// A `coffer edge` process and what it takes to start it again on the same data dir.
pub struct Edge {
    pub name: String,
    pub server: Option<Server>,
    pub url: String,
    pub dir: PathBuf,
    pub upstreams: Vec<String>,
    pub token: String,
    pub extra: Vec<String>,
    /// The logs of its previous runs.
    pub past_logs: String,
}

impl Edge {
    /// Starts an edge named `name` (for messages) with its data dir in the scenario's temp dir.
    pub fn start(
        cp: &ControlPlane,
        name: &str,
        upstreams: &[&str],
        node: &Node,
        extra: &[&str],
    ) -> Edge {
        Edge::start_in(&cp.path(name), name, upstreams, node, extra)
    }

    pub fn start_in(
        dir: &Path,
        name: &str,
        upstreams: &[&str],
        node: &Node,
        extra: &[&str],
    ) -> Edge {
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

    pub fn spawn(&mut self) {
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

    pub fn log(&self) -> String {
        let current = self.server.as_ref().map(Server::log).unwrap_or_default();
        format!("{}{current}", self.past_logs)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Result<Resp, String> {
        get(&format!("{}{path}", self.url), token)
    }

    pub fn read(&self, binding: &str, token: &str) -> Result<Resp, String> {
        self.get(&binding_path(binding), Some(token))
    }

    /// `GET /healthz`: its status and its JSON.
    pub fn healthz(&self) -> Result<(u16, Value), String> {
        let resp = self.get("/healthz", None)?;
        let v = serde_json::from_str(&resp.body)
            .map_err(|e| format!("healthz is not JSON ({e}): {resp:?}"))?;
        Ok((resp.status, v))
    }

    pub fn health(&self) -> Value {
        self.healthz()
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", self.name, self.diag()))
            .1
    }

    pub fn applied_seq(&self) -> u64 {
        let h = self.health();
        h["applied_seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no applied_seq in {h}", self.name))
    }

    /// Its healthz and the tail of its log.
    pub fn diag(&self) -> String {
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
    pub fn wait_ready(&self) -> Value {
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
    pub fn wait_read(&self, binding: &str, token: &str, want: Want<'_>) {
        eventually(
            &format!("edge {}: {binding} answers {want:?}", self.name),
            WAIT,
            || check(&self.read(binding, token), want),
            || self.diag(),
        );
    }

    /// Waits until `/healthz` names `url` as the current upstream.
    #[track_caller]
    pub fn wait_upstream(&self, url: &str) {
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
    pub fn kill_9(&mut self) {
        let server = self.server.take().expect("the edge runs");
        self.past_logs.push_str(&server.log());
        self.past_logs
            .push_str(&format!("--- (edge {} killed with SIGKILL)\n", self.name));
        server.kill_9();
    }

    /// SIGTERM, and its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
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
    pub fn restart(&mut self) {
        self.spawn();
    }
}

pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}

pub fn diag_all(edges: &[&Edge]) -> String {
    edges
        .iter()
        .map(|e| e.diag())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until every edge answers `want` for `binding` with `token`; how long it took.
#[track_caller]
pub fn all_read(edges: &[&Edge], binding: &str, token: &str, want: Want<'_>) -> Duration {
    let start = Instant::now();
    for edge in edges {
        edge.wait_read(binding, token, want);
    }
    start.elapsed()
}

/// Waits until every edge has applied the control plane's head (and the head no longer
/// moves); that head.
#[track_caller]
pub fn converge(cp: &ControlPlane, node: &Node, edges: &[&Edge]) -> u64 {
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

/// Runs `coffer ARGS` that should exit on its own within [`WAIT`].
pub fn run_briefly(mut cmd: Command) -> Out {
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
