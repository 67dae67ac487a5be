//! `--config FILE` on real processes: a server, a dev server and an edge started from a config
//! file alone; flags and environment variables over the file; every kind of bad file refused
//! with one line before anything starts; `coffer config check`. The parsing itself is
//! unit-tested in `src/config_file/tests.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

/// Variables that would give a setting these tests give in the file.
const SETTING_VARS: [&str; 9] = [
    "COFFER_CONFIG",
    "COFFER_LOG_FORMAT",
    "RUST_LOG",
    "COFFER_DATA_DIR",
    "COFFER_LISTEN",
    "COFFER_UPSTREAM",
    "COFFER_NODE_TOKEN",
    "COFFER_NODE_TOKEN_FILE",
    "COFFER_TRUSTED_PROXIES",
];

/// Writes a file that only its owner may change (0644, whatever the umask): config files that
/// others may write are refused.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    write_mode(dir, name, text, 0o644)
}

fn write_mode(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// `coffer SUBCOMMAND --config FILE`, with no setting from the environment.
fn with_config(subcommand: &str, config: &Path) -> Command {
    let mut cmd = coffer_cmd();
    for var in SETTING_VARS {
        cmd.env_remove(var);
    }
    cmd.arg(subcommand).arg("--config").arg(config);
    cmd
}

/// A data dir made by `coffer init` in `dir`, and the connection settings a server on it
/// will take (its URL filled in once it runs).
fn initialised(dir: &Path) -> Conn {
    let (account, token) = init(&dir.join("data"));
    Conn {
        url: String::new(),
        token,
        account,
    }
}

fn quota_in_force(conn: &Conn) -> u64 {
    conn.run(&["quota", "--json"]).ok().json()["secrets"]["quota"]
        .as_u64()
        .expect("a quota")
}

const SERVER_FILE: &str = "\
data-dir = \"data\"
listen = \"127.0.0.1:0\"
secrets-quota = 7
max-stores = 3

[kek]
retire-grace = 5

[limits]
header-timeout = 10
runtime-rate-limit = 100

[log]
access-log = true
";

#[test]
fn a_config_file_alone_starts_a_server_that_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let mut conn = initialised(tmp.path());
    let file = write(tmp.path(), "coffer.toml", SERVER_FILE);
    // From another working directory: data-dir is relative to the file.
    let mut cmd = with_config("server", &file);
    cmd.current_dir("/");
    let server = Server::spawn(cmd);
    conn.url = server.url.clone();
    assert_eq!(quota_in_force(&conn), 7, "secrets-quota came from the file");
    for name in ["s1", "s2", "s3"] {
        create_store(&conn, name);
    }
    let out = conn.run(&["store", "create", "--name", "s4"]);
    assert!(!out.status.success(), "max-stores = 3 holds: {out:#?}");
}

/// `[log] level` and `format` choose what is logged and how; a request line is at `info`.
#[test]
fn the_file_sets_the_log_level_and_format() {
    let tmp = tempfile::tempdir().unwrap();
    let mut conn = initialised(tmp.path());
    for (level, request_lines) in [("info", true), ("warn", false)] {
        let file = write(
            tmp.path(),
            "coffer.toml",
            &format!(
                "data-dir = \"data\"\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"{level}\"\nformat = \"json\"\n"
            ),
        );
        let server = Server::spawn(with_config("server", &file));
        conn.url = server.url.clone();
        conn.run(&["store", "list", "--json"]).ok();
        let (status, log) = server.terminate();
        assert!(status.success(), "{log}");
        let lines: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let responses = lines.iter().filter(|l| l["message"] == "response").count();
        assert_eq!(responses > 0, request_lines, "level {level}: {log}");
        if level == "warn" {
            assert!(
                lines.iter().all(|l| l["level"] != "INFO"),
                "level warn: {log}"
            );
        }
    }
}

#[test]
fn a_flag_overrides_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut conn = initialised(tmp.path());
    // The file's data dir does not exist; the flag's does, and is the one used.
    let file = write(
        tmp.path(),
        "coffer.toml",
        &SERVER_FILE.replace("data-dir = \"data\"", "data-dir = \"absent\""),
    );
    let out = run(with_config("server", &file), None);
    let line = out.one_error_line(2);
    assert!(line.contains("key `data-dir`: "), "{line}");
    assert!(line.ends_with("absent does not exist"), "{line}");

    let mut cmd = with_config("server", &file);
    cmd.arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["--secrets-quota", "9"]);
    let server = Server::spawn(cmd);
    conn.url = server.url.clone();
    assert_eq!(quota_in_force(&conn), 9, "the flag, not the file's 7");
}

#[test]
fn the_environment_overrides_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut conn = initialised(tmp.path());
    // Used, this file would be refused twice over: no such data dir, and plain HTTP on every
    // interface.
    let file = write(
        tmp.path(),
        "coffer.toml",
        "data-dir = \"absent\"\nlisten = \"0.0.0.0:0\"\nsecrets-quota = 7\n",
    );
    let mut cmd = coffer_cmd();
    for var in SETTING_VARS {
        cmd.env_remove(var);
    }
    // The file itself named by COFFER_CONFIG.
    cmd.arg("server")
        .env("COFFER_CONFIG", &file)
        .env("COFFER_DATA_DIR", tmp.path().join("data"))
        .env("COFFER_LISTEN", "127.0.0.1:0");
    let server = Server::spawn(cmd);
    conn.url = server.url.clone();
    assert_eq!(
        quota_in_force(&conn),
        7,
        "what the environment left to the file"
    );
}

/// Every kind of bad file, as `coffer server --config` and `coffer config check` see it.
/// The data dir is given as a flag (and is not one), so that a file wrongly accepted ends the
/// start anyway, with another message.
#[test]
fn bad_config_files_stop_the_start_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "cert.pem", "not a certificate");
    let cases: &[(&str, &str)] = &[
        ("listen = \n", "line 1, column 10: not TOML: "),
        (
            "lisen = \"127.0.0.1:0\"\n",
            "line 1, column 1: unknown key `lisen` in a server file; did you mean `listen`?",
        ),
        (
            "[limits]\nmax-conections = 5\n",
            "unknown key `limits.max-conections` in a server file; did you mean `limits.max-connections`?",
        ),
        (
            "[limits]\nmax-connections = \"many\"\n",
            "line 2, column 19: key `limits.max-connections`: invalid type: string \"many\", expected a non-negative integer",
        ),
        (
            "listen = \"localhost\"\n",
            "line 1, column 1: key `listen`: invalid value \"localhost\": invalid socket address syntax",
        ),
        (
            "[kek]\nretire-grace = \"30s\"\n",
            "key `kek.retire-grace`: invalid type: string \"30s\"",
        ),
        (
            "[limits]\nheader-timeout = 301\n",
            "line 2, column 1: key `limits.header-timeout`: invalid value \"301\": 301 is not in 1..=300",
        ),
        (
            "[tls]\ncert = \"missing.pem\"\nkey = \"cert.pem\"\n",
            "missing.pem does not exist",
        ),
        (
            "[tls]\ncert = \"cert.pem\"\n",
            "line 2, column 1: key `tls.cert` requires key `tls.key` (or --tls-key) too",
        ),
        (
            "insecure-http = true\n[tls]\ncert = \"cert.pem\"\nkey = \"cert.pem\"\n",
            "key `insecure-http` cannot be used with key `tls.cert`",
        ),
        (
            "listen = \"0.0.0.0:0\"\n",
            "key `listen`: refusing to serve plain HTTP on non-loopback address 0.0.0.0:0",
        ),
        (
            "[kek]\npin = \"1234\"\n",
            "key `kek.pin` is refused: secrets are never read",
        ),
        (
            "[log]\nlevel = \"coffer=loud\"\n",
            "line 2, column 1: key `log.level`: invalid value \"coffer=loud\": error parsing level filter",
        ),
        (
            "[log]\nformat = \"yaml\"\n",
            "line 2, column 1: key `log.format`: invalid value \"yaml\"",
        ),
        (
            "[tls]\ncert = \"cert.pem\"\nkey = \"\"\"-----BEGIN PRIVATE KEY-----\nMIIE1234\n-----END PRIVATE KEY-----\"\"\"\n",
            "line 3, column 7: key `tls.key`: its value looks like a PEM block",
        ),
        (
            "[tls]\ncert = \"cert.pem\"\nkey = \"1234-pasted-by-mistake\"\n",
            "line 3, column 1: key `tls.key`: names no file",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = write(tmp.path(), &format!("bad-{i}.toml"), text);
        let prefix = format!("error: {}: ", file.display());

        let mut cmd = with_config("server", &file);
        cmd.arg("--data-dir").arg(tmp.path());
        let out = run(cmd, None);
        let line = out.one_error_line(2);
        assert!(line.starts_with(&prefix), "names the file: {line}");
        assert!(line.contains(expected), "{text:?}: {line}");
        assert!(!line.contains("1234"), "no secret repeated: {line}");
        assert!(out.stdout.is_empty(), "nothing started: {out:#?}");

        let mut cmd = coffer_cmd();
        cmd.args(["config", "check", "--config"]).arg(&file);
        let out = run(cmd, None);
        let check_line = out.one_error_line(2);
        assert_eq!(check_line, line, "config check says what the start says");
    }
    let missing = tmp.path().join("nowhere.toml");
    let out = run(with_config("server", &missing), None);
    let line = out.one_error_line(2);
    assert!(
        line.starts_with(&format!("error: {}: cannot read it: ", missing.display())),
        "{line}"
    );
}

#[test]
fn config_check_says_ok_or_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "cert.pem", "x");
    write(tmp.path(), "key.pem", "x");
    write(tmp.path(), "ca.pem", "x");
    write_mode(tmp.path(), "token", "coffernode_x\n", 0o600);
    std::fs::create_dir(tmp.path().join("data")).unwrap();
    let server = write(
        tmp.path(),
        "coffer.toml",
        "data-dir = \"data\"\nlisten = \"0.0.0.0:8443\"\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
    );
    let edge = write(
        tmp.path(),
        "edge.toml",
        "upstream = [\"https://cp.example:8443\"]\nnode-token-file = \"token\"\n\
         data-dir = \"edge-data\"\nserve-feed = true\n[tls]\nca-cert = \"ca.pem\"\n",
    );
    let check = |file: &Path, extra: &[&str]| {
        let mut cmd = coffer_cmd();
        // The check ignores the environment: this would not reach it.
        cmd.env("COFFER_LISTEN", "nonsense");
        cmd.args(["config", "check", "--config"])
            .arg(file)
            .args(extra);
        run(cmd, None)
    };
    let out = check(&server, &[]).ok();
    assert_eq!(out.stdout, format!("ok: {}\n", server.display()));
    let out = check(&edge, &["--for", "edge"]).ok();
    assert_eq!(out.stdout, format!("ok: {}\n", edge.display()));
    // Each file is read for what it is said to be.
    let out = check(&edge, &[]);
    assert!(
        out.one_error_line(2)
            .contains("unknown key `upstream` in a server file"),
        "{out:#?}"
    );
    let out = check(&server, &["--for", "dev"]);
    assert!(
        out.one_error_line(2)
            .contains("unknown key `tls` in a dev file"),
        "{out:#?}"
    );
}

#[test]
fn dev_reads_a_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "dev.toml",
        "data-dir = \"dev-data\"\nlisten = \"127.0.0.1:0\"\n",
    );
    let server = Server::spawn(with_config("dev", &file));
    assert!(
        tmp.path().join("dev-data/dev-credentials.json").exists(),
        "the dev data dir is the file's: {}",
        server.log()
    );
}

#[test]
fn an_edge_starts_from_a_config_file_with_its_token_in_a_file() {
    let (tmp, _data, cp, conn) = setup();
    let node = conn
        .run(&["node", "create", "edge-1", "--json"])
        .ok()
        .json();
    let token = node["node_token"].as_str().unwrap();
    write_mode(tmp.path(), "node-token", &format!("{token}\n"), 0o600);
    let file = write(
        tmp.path(),
        "edge.toml",
        &format!(
            "upstream = [\"{}\"]\nnode-token-file = \"node-token\"\ndata-dir = \"edge\"\n\
             listen = \"127.0.0.1:0\"\nstaleness = 10\n",
            cp.url
        ),
    );
    let edge = Server::spawn(with_config("edge", &file));
    let start = Instant::now();
    loop {
        let health = runtime_get(&edge.url, "", "/healthz");
        if health.status == 200 {
            assert_eq!(health.json()["ready"], true, "{:?}", health.json());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the edge never got ready: {}",
            edge.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(tmp.path().join("edge/node.key").exists(), "{}", edge.log());
    assert!(!edge.log().contains(token), "the node token is not logged");
}

#[test]
fn a_config_file_others_may_write_stops_the_start_and_the_check() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_mode(
        tmp.path(),
        "coffer.toml",
        "listen = \"127.0.0.1:0\"\n",
        0o664,
    );
    let mut cmd = with_config("server", &file);
    cmd.arg("--data-dir").arg(tmp.path());
    let line = run(cmd, None).one_error_line(2).to_owned();
    assert_eq!(
        line,
        format!(
            "error: {}: has mode 664, which lets group or others write it (and so redirect an edge's upstream and collect its token); restrict it with `chmod go-w {}`",
            file.display(),
            file.display()
        )
    );
    let mut cmd = coffer_cmd();
    cmd.args(["config", "check", "--config"]).arg(&file);
    assert_eq!(run(cmd, None).one_error_line(2), line);
}

#[test]
fn config_check_and_the_edge_agree_on_upstreams() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "edge.toml",
        "upstream = [\"http://192.0.2.1:8080\"]\ndata-dir = \"edge\"\n",
    );
    let mut cmd = coffer_cmd();
    cmd.args(["config", "check", "--for", "edge", "--config"])
        .arg(&file);
    let line = run(cmd, None).one_error_line(2).to_owned();
    assert!(
        line.ends_with("key `upstream`: upstream \"http://192.0.2.1:8080\" is plain HTTP to a non-loopback host: use https://, or give --insecure-http-upstream to allow it"),
        "{line}"
    );
    // The start says the same, before it needs a node token.
    let mut cmd = with_config("edge", &file);
    cmd.env("COFFER_NODE_TOKEN", "coffernode_x");
    assert_eq!(run(cmd, None).one_error_line(2), line);
}

#[test]
fn a_node_token_file_others_may_read_stops_the_edge() {
    let tmp = tempfile::tempdir().unwrap();
    let token = write_mode(tmp.path(), "node-token", "coffernode_s3cret\n", 0o644);
    let file = write(
        tmp.path(),
        "edge.toml",
        "upstream = [\"http://127.0.0.1:9\"]\nnode-token-file = \"node-token\"\ndata-dir = \"edge\"\n",
    );
    let line = run(with_config("edge", &file), None)
        .one_error_line(2)
        .to_owned();
    assert!(
        line.starts_with(&format!(
            "error: the node token file {} has mode 644",
            token.display()
        )),
        "{line}"
    );
    assert!(!line.contains("s3cret"), "{line}");
    std::fs::write(&token, "").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let line = run(with_config("edge", &file), None)
        .one_error_line(2)
        .to_owned();
    assert_eq!(
        line,
        format!("error: the node token file {} is empty", token.display())
    );
}
