//! Helpers shared by the CLI's end-to-end tests: running `coffer`, and a real `coffer server`
//! on a temp data dir.
//!
//! The server listens on `127.0.0.1:0` and announces its address with a `listening on URL` line
//! on standard output; tests wait for that line (no fixed ports, no sleeps).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub const START_TIMEOUT: Duration = Duration::from_secs(60);
pub const CONN_VARS: [&str; 4] = [
    "COFFER_API_URL",
    "COFFER_API_TOKEN",
    "COFFER_ACCOUNT_ID",
    "COFFER_CA_CERT",
];

pub fn coffer_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
    for var in CONN_VARS {
        cmd.env_remove(var);
    }
    cmd.env_remove("RUST_LOG");
    cmd.env_remove("COFFER_LOG_FORMAT");
    cmd
}

/// What one command printed.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(self) -> Out {
        assert!(self.status.success(), "command failed: {self:#?}");
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Fails unless the command failed with exit status `code` and exactly one stderr line
    /// starting with `error: `; returns that line.
    pub fn one_error_line(&self, code: i32) -> &str {
        assert_eq!(self.status.code(), Some(code), "{self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one stderr line: {self:#?}");
        assert!(lines[0].starts_with("error: "), "{self:#?}");
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
        lines[0]
    }
}

pub fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Out {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn coffer");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    Out {
        status: output.status,
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `coffer init --json` on `dir`: (account id, token).
pub fn init(dir: &Path) -> (String, String) {
    let mut cmd = coffer_cmd();
    cmd.arg("init").arg("--data-dir").arg(dir).arg("--json");
    let out = run(cmd, None).ok();
    let v = out.json();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 3, "init --json has exactly three keys: {v}");
    // The token under its old name and under the name every new token has.
    assert_eq!(obj["token"], obj["api_token"], "{v}");
    (
        obj["account_id"].as_str().unwrap().to_owned(),
        obj["token"].as_str().unwrap().to_owned(),
    )
}

/// A running `coffer server` (or `coffer dev`), killed on drop.
pub struct Server {
    pub child: Child,
    pub url: String,
    /// Standard output lines after the `listening on` line.
    pub lines: Receiver<String>,
    /// Everything the server wrote to standard error.
    pub log: Arc<Mutex<String>>,
    /// The thread that copies standard error into `log`; it ends when the process's standard
    /// error closes.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(data: &Path) -> Server {
        Server::start_with(data, &[])
    }

    /// `start` with extra `coffer server` flags.
    pub fn start_with(data: &Path, extra: &[&str]) -> Server {
        let mut cmd = coffer_cmd();
        cmd.arg("server")
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            // Verbose, so that the check that values never reach the log has something to read.
            .env("RUST_LOG", "debug");
        Server::spawn(cmd)
    }

    pub fn spawn(mut cmd: Command) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn coffer server");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let url = loop {
            match lines.recv_timeout(START_TIMEOUT) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.to_owned();
                    }
                }
                Err(e) => panic!(
                    "no `listening on` line ({e}); server log:\n{}",
                    log.lock().unwrap()
                ),
            }
        };
        assert!(
            url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"),
            "{url}"
        );
        Server {
            child,
            url,
            lines,
            log,
            stderr_reader: Some(stderr_reader),
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once it holds `needle`: lines reach it through the server's writer thread and
    /// this test's reader, a little after the request that caused them was answered. Fails
    /// after 10 s, showing the log.
    pub fn log_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} in the log:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGTERM, as a service manager stops it: waits for the process to exit and for the last
    /// of its standard error to be read; its exit status and whole log.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().unwrap();
        }
        (status, self.log())
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connection settings for client commands.
pub struct Conn {
    pub url: String,
    pub token: String,
    pub account: String,
}

impl Conn {
    /// `coffer ARGS` with the connection settings in the environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = coffer_cmd();
        cmd.args(args)
            .env("COFFER_API_URL", &self.url)
            .env("COFFER_API_TOKEN", &self.token)
            .env("COFFER_ACCOUNT_ID", &self.account);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Out {
        run(self.cmd(args), None)
    }

    /// The same server with another token and account (`""`: no account set).
    pub fn as_(&self, token: &str, account: &str) -> Conn {
        Conn {
            url: self.url.clone(),
            token: token.to_owned(),
            account: account.to_owned(),
        }
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Out {
        run(self.cmd(args), Some(stdin.as_bytes()))
    }
}

/// A fresh data dir, a server on it, and the settings to reach it.
pub fn setup() -> (tempfile::TempDir, PathBuf, Server, Conn) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, token) = init(&data);
    let server = Server::start(&data);
    let conn = Conn {
        url: server.url.clone(),
        token,
        account,
    };
    (tmp, data, server, conn)
}

pub fn create_store(conn: &Conn, name: &str) -> String {
    let out = conn
        .run(&["store", "create", "--name", name, "--json"])
        .ok();
    let v = out.json();
    assert_eq!(v["name"], name);
    v["id"].as_str().unwrap().to_owned()
}

/// `coffer secret create STORE --name NAME --scopes SCOPES --json` with `value` on standard
/// input (less one trailing newline, if it has one); the new secret's id.
pub fn create_secret(conn: &Conn, store: &str, name: &str, scopes: &str, value: &str) -> String {
    let args = [
        "secret", "create", store, "--name", name, "--scopes", scopes, "--json",
    ];
    let out = conn.run_with_stdin(&args, value).ok();
    let v = out.json();
    assert_eq!(v[0]["name"], name, "{v}");
    v[0]["id"].as_str().unwrap().to_owned()
}

/// The cells of one line of a table: columns are two or more spaces apart (a cell may hold
/// single spaces).
pub fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The table in `text` whose header line starts with `header`, as rows of [`cells`]: the header,
/// then every line after the rule under it.
pub fn table_rows(text: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(header));
    let head = lines
        .next()
        .unwrap_or_else(|| panic!("no table headed {header:?} in:\n{text}"));
    std::iter::once(head)
        .chain(lines.skip(1))
        .map(cells)
        .collect()
}

/// `coffer run -- CMD...` against `url` with the service token in the environment.
pub fn coffer_run(url: &str, service_token: &str, cmd: &[&str]) -> Command {
    let mut c = coffer_cmd();
    c.env_remove("COFFER_SERVICE_TOKEN")
        .env("COFFER_SERVICE_TOKEN", service_token)
        .env("COFFER_API_URL", url)
        .arg("run")
        .arg("--")
        .args(cmd);
    c
}

/// A runtime API answer: status, headers and the body's bytes, exactly.
#[derive(Debug)]
pub struct RuntimeAnswer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl RuntimeAnswer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// `GET {url}{path}` with the service token (`/runtime/v1/bindings/NAME`, ...).
pub fn runtime_get(url: &str, service_token: &str, path: &str) -> RuntimeAnswer {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let res = client
            .get(format!("{url}{path}"))
            .bearer_auth(service_token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.bytes().await.expect("body").to_vec();
        RuntimeAnswer {
            status,
            headers,
            body,
        }
    })
}
