//! End-to-end tests of a KEK in a PKCS#11 token: `coffer init --kek pkcs11:…` and `coffer
//! server` against SoftHSM2. Each test makes its own token directory and hands it to the
//! `coffer` processes through `SOFTHSM2_CONF`; without SoftHSM the tests skip, except under
//! `CI=true`, where they fail.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coffer_hsm::testing::{OBJECT, SoftHsm, TOKEN, USER_PIN};
use common::*;
use serde_json::Value;

const VALUE_A: &str = "hsm-v4lue-of-account-a";
const VALUE_B: &str = "hsm-v4lue-of-account-b";

/// `coffer ARGS` pointed at `hsm`, with `pin` as COFFER_PKCS11_PIN (unset if `None`).
fn hsm_cmd(hsm: &SoftHsm, pin: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = coffer_cmd();
    hsm.configure(&mut cmd);
    cmd.env_remove("COFFER_PKCS11_PIN");
    if let Some(pin) = pin {
        cmd.env("COFFER_PKCS11_PIN", pin);
    }
    cmd.args(args);
    cmd
}

fn init_args<'a>(dir: &'a str, uri: &'a str) -> [&'a str; 6] {
    ["init", "--data-dir", dir, "--json", "--kek", uri]
}

/// `coffer init --json --kek URI` with the right PIN: (account, token).
fn init_hsm(hsm: &SoftHsm, data: &Path) -> (String, String) {
    let dir = data.to_str().unwrap();
    let uri = hsm.uri();
    let out = run(hsm_cmd(hsm, Some(USER_PIN), &init_args(dir, &uri)), None).ok();
    let v = out.json();
    let obj = v.as_object().unwrap();
    assert_eq!(
        obj.len(),
        3,
        "init --json: account_id, api_token and token: {v}"
    );
    assert_eq!(obj["token"], obj["api_token"], "{v}");
    (
        obj["account_id"].as_str().unwrap().to_owned(),
        obj["api_token"].as_str().unwrap().to_owned(),
    )
}

fn start_server(hsm: &SoftHsm, data: &Path) -> Server {
    let mut cmd = hsm_cmd(
        hsm,
        Some(USER_PIN),
        &["server", "--data-dir", data.to_str().unwrap()],
    );
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "debug");
    Server::spawn(cmd)
}

/// Runs a command that must exit by itself (a server that must refuse to start); fails the
/// test if it is still running after a minute.
fn run_to_exit(mut cmd: Command) -> Out {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + START_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the command did not exit: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    Out {
        status: output.status,
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `GET url` with a bearer token over plain HTTP/1.1: (status, body).
fn get(url: &str, token: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// A store with `secret` = `value` in `conn`'s account, and a service bound to it: the service
/// token.
fn bound_secret(conn: &Conn, dir: &Path, service: &str, value: &str) -> String {
    let store = create_store(conn, &format!("{service}-store"));
    conn.run_with_stdin(
        &[
            "secret", "create", &store, "--name", "key", "--scopes", "workers",
        ],
        value,
    )
    .ok();
    let config = dir.join(format!("{service}.toml"));
    std::fs::write(
        &config,
        format!(
            "name = \"{service}\"\n\n[[secrets_store_secrets]]\nbinding = \"KEY\"\n\
             store_id = \"{store}\"\nsecret_name = \"key\"\n"
        ),
    )
    .unwrap();
    let v = conn
        .run(&["deploy", "--config", config.to_str().unwrap(), "--json"])
        .ok()
        .json();
    v["service_token"].as_str().unwrap().to_owned()
}

/// A new account, and a connection as its first super_admin (the operator binds secrets only
/// in its own account).
fn account_admin(operator: &Conn, name: &str) -> Conn {
    let id = operator
        .as_(&operator.token, "")
        .run(&["account", "create", name, "--json"])
        .ok()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = operator
        .as_(&operator.token, &id)
        .run(&[
            "token",
            "create",
            "--name",
            "admin",
            "--role",
            "super_admin",
            "--json",
        ])
        .ok()
        .json();
    operator.as_(v["value"].as_str().unwrap(), &id)
}

fn read_binding(server: &Server, token: &str) -> (u16, String) {
    get(&format!("{}/runtime/v1/bindings/KEY", server.url), token)
}

#[test]
fn init_with_a_pkcs11_kek_then_serve_without_repeating_it() {
    let Some(hsm) = SoftHsm::new("init_with_a_pkcs11_kek_then_serve_without_repeating_it") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, token) = init_hsm(&hsm, &data);

    // The data dir names the KEK and holds neither it nor the PIN.
    assert!(!data.join("kek.key").exists());
    let config = std::fs::read_to_string(data.join("kek.toml")).unwrap();
    assert!(
        config.contains(&format!("uri = \"{}\"", hsm.uri())),
        "{config}"
    );
    assert!(config.contains("kek_id = \"pkcs11:"), "{config}");
    for entry in std::fs::read_dir(&data).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes
                .windows(USER_PIN.len())
                .any(|w| w == USER_PIN.as_bytes()),
            "the PIN is in the data dir"
        );
    }

    let server = start_server(&hsm, &data);
    let conn = Conn {
        url: server.url.clone(),
        token,
        account,
    };
    let svc = bound_secret(&conn, tmp.path(), "svc", VALUE_A);
    assert_eq!(read_binding(&server, &svc), (200, VALUE_A.to_owned()));
    let log = server.log();
    assert!(log.contains("the KEK is in a PKCS#11 token"), "{log}");
    assert!(!log.contains(USER_PIN) && !log.contains(VALUE_A), "{log}");
    drop(server);

    // A restart finds the KEK from the data dir alone and unwraps the DEK in the token again.
    let server = start_server(&hsm, &data);
    assert_eq!(read_binding(&server, &svc), (200, VALUE_A.to_owned()));

    // A second init with the same URI uses the key the first one generated.
    let other = tmp.path().join("other");
    let uri = hsm.uri();
    let out = run(
        hsm_cmd(
            &hsm,
            Some(USER_PIN),
            &["init", "--data-dir", other.to_str().unwrap(), "--kek", &uri],
        ),
        None,
    )
    .ok();
    assert!(
        out.stdout.contains(&format!(
            "KEK:         AES-256 key \"{OBJECT}\" found in PKCS#11 token \"{TOKEN}\""
        )),
        "{out:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(other.join("kek.toml")).unwrap(),
        config
    );
}

#[test]
fn bad_kek_settings_fail_with_one_line_naming_the_setting() {
    let Some(hsm) = SoftHsm::new("bad_kek_settings_fail_with_one_line_naming_the_setting") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let dir_s = dir.to_str().unwrap();
    let module = hsm.module().display().to_string();
    let uri = hsm.uri();
    let with_pin_value = format!("{uri}&pin-value={USER_PIN}");
    let no_token = format!("pkcs11:object={OBJECT}?module-path={module}");
    let no_object = format!("pkcs11:token={TOKEN}?module-path={module}");
    let bad_module = format!(
        "pkcs11:token={TOKEN};object={OBJECT}?module-path={}",
        tmp.path().join("libnope.so").display()
    );
    let bad_token = hsm.uri_for("not-there", OBJECT);
    // A failed login, or a token that is not there, exits with 78 (EX_CONFIG), which the
    // systemd units never restart on; anything else with 1 (or 2 for a usage error).
    for (pin, uri, status, expect) in [
        (None, uri.as_str(), 78, "set COFFER_PKCS11_PIN"),
        (
            Some("wrong-pin"),
            &uri,
            78,
            "refused the user PIN (PinIncorrect); check COFFER_PKCS11_PIN",
        ),
        (Some(USER_PIN), &with_pin_value, 2, "`pin-value` is refused"),
        (Some(USER_PIN), &no_token, 2, "names no token: add token="),
        (
            Some(USER_PIN),
            &no_object,
            2,
            "names no key object: add object=",
        ),
        (Some(USER_PIN), &bad_module, 1, "check module-path"),
        (Some(USER_PIN), &bad_token, 78, "no token \"not-there\""),
        (
            Some(USER_PIN),
            "pkcs11:token=a;object=b?module-path=/x&pin-value=zz",
            2,
            "pin-value",
        ),
    ] {
        let out = run(hsm_cmd(&hsm, pin, &init_args(dir_s, uri)), None);
        let line = out.one_error_line(status);
        assert!(line.contains(expect), "{uri}: {line}");
        assert!(
            !line.contains(USER_PIN) && !line.contains("wrong-pin"),
            "{line}"
        );
        assert!(!dir.exists(), "a failed init left {}", dir.display());
    }

    // A server on a good data dir that cannot reach its KEK refuses to start, saying why.
    init_hsm(&hsm, &dir);
    let server = |pin| {
        run_to_exit(hsm_cmd(
            &hsm,
            pin,
            &["server", "--data-dir", dir_s, "--listen", "127.0.0.1:0"],
        ))
    };
    let out = server(Some("wrong-pin"));
    let line = out.one_error_line(78);
    assert!(
        line.contains("kek.toml") && line.contains("check COFFER_PKCS11_PIN"),
        "{line}"
    );
    let line = server(None).one_error_line(78).to_owned();
    assert!(line.contains("set COFFER_PKCS11_PIN"), "{line}");
    hsm.unplug();
    let out = server(Some(USER_PIN));
    let line = out.one_error_line(78);
    assert!(
        line.contains("no token \"coffer\"") && line.contains("HSM is connected"),
        "{line}"
    );
    hsm.plug();
    // And starts once the token is back.
    start_server(&hsm, &dir);
}

#[test]
fn with_the_token_gone_cached_keys_still_serve_new_unwraps_answer_503_until_it_is_back() {
    let Some(hsm) = SoftHsm::new(
        "with_the_token_gone_cached_keys_still_serve_new_unwraps_answer_503_until_it_is_back",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, token) = init_hsm(&hsm, &data);
    let server = start_server(&hsm, &data);
    let conn = Conn {
        url: server.url.clone(),
        token: token.clone(),
        account,
    };
    // Two accounts, so two DEKs.
    let conn_b = account_admin(&conn, "team-b");
    let svc_a = bound_secret(&conn, tmp.path(), "svc-a", VALUE_A);
    let svc_b = bound_secret(&conn_b, tmp.path(), "svc-b", VALUE_B);
    drop(server);

    // After a restart no DEK is unwrapped yet; reading A's secret unwraps A's DEK only.
    let server = start_server(&hsm, &data);
    let conn = Conn {
        url: server.url.clone(),
        ..conn
    };
    assert_eq!(read_binding(&server, &svc_a), (200, VALUE_A.to_owned()));

    hsm.unplug();
    // A's DEK is cached: its reads go on without the token.
    assert_eq!(read_binding(&server, &svc_a), (200, VALUE_A.to_owned()));
    // B's needs the token: 503 in the v4 envelope, retryable.
    let (status, body) = read_binding(&server, &svc_b);
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["errors"][0]["code"], 1500, "{v}");
    assert!(!body.contains("PKCS") && !body.contains(VALUE_B), "{body}");
    // So does a write that needs a new DEK wrapped.
    let conn_c = account_admin(&conn, "team-c");
    let store_c = create_store(&conn_c, "c-store");
    let create = [
        "secret", "create", &store_c, "--name", "k", "--scopes", "workers",
    ];
    let out = conn_c.run_with_stdin(&create, "v");
    let line = out.one_error_line(1);
    assert!(line.starts_with("error: [1500 unavailable]"), "{line}");
    // And A keeps reading.
    assert_eq!(read_binding(&server, &svc_a), (200, VALUE_A.to_owned()));
    let log = server.log();
    assert!(log.contains("the PKCS#11 token is unavailable"), "{log}");

    // The token comes back: the next attempts reconnect (at most one a second) and B reads.
    hsm.plug();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = read_binding(&server, &svc_b);
        if status == 200 {
            assert_eq!(body, VALUE_B);
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "B never read again:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    conn_c.run_with_stdin(&create, "v").ok();
    server.log_with("the PKCS#11 token is back");
}

/// The break-glass procedure of docs/key-hierarchy.md: the HSM is lost, and the KEK comes back
/// from the HSM's own backup of the key object (here a copy of SoftHSM's token directory, as a
/// vendor backup restores the object under its label). A token that holds another key under the
/// label (a new key made in a hurry) is refused by its id, never used to wrap new DEKs.
#[test]
fn a_lost_hsm_is_restored_from_its_backup_and_no_other_key_is_taken_for_it() {
    let Some(hsm) =
        SoftHsm::new("a_lost_hsm_is_restored_from_its_backup_and_no_other_key_is_taken_for_it")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, token) = init_hsm(&hsm, &data);
    let backup = tmp.path().join("hsm-backup");
    let copy = |from: &Path, to: &Path| {
        let status = Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cp -a {} {}",
            from.display(),
            to.display()
        );
    };
    // The backup is taken once, after init made the key: values written later need nothing
    // more from it (DEKs live wrapped in the database).
    copy(&hsm.tokens_dir(), &backup);

    let server = start_server(&hsm, &data);
    let conn = Conn {
        url: server.url.clone(),
        token,
        account,
    };
    let svc = bound_secret(&conn, tmp.path(), "svc", VALUE_A);
    assert_eq!(read_binding(&server, &svc), (200, VALUE_A.to_owned()));
    drop(server);

    // The HSM is lost: the server refuses to start, naming the token.
    hsm.remove_tokens();
    let dir = data.to_str().unwrap();
    let start = || {
        run_to_exit(hsm_cmd(
            &hsm,
            Some(USER_PIN),
            &["server", "--data-dir", dir, "--listen", "127.0.0.1:0"],
        ))
    };
    let out = start();
    let line = out.one_error_line(78);
    assert!(line.contains("no token \"coffer\""), "{line}");

    // A new token with a new key under the same label is not the KEK: refused by its id.
    hsm.init_token(TOKEN);
    let uri = hsm.uri();
    run(
        hsm_cmd(
            &hsm,
            Some(USER_PIN),
            &[
                "init",
                "--data-dir",
                tmp.path().join("scratch").to_str().unwrap(),
                "--kek",
                &uri,
            ],
        ),
        None,
    )
    .ok();
    let out = start();
    let line = out.one_error_line(1);
    assert!(
        line.contains("kek.toml") && line.contains("but this data dir was initialised with KEK"),
        "{line}"
    );
    assert!(!line.contains(USER_PIN), "{line}");

    // The backup restored in its place: the server starts and opens what it sealed before.
    hsm.remove_tokens();
    for entry in std::fs::read_dir(&backup).unwrap() {
        let entry = entry.unwrap();
        copy(&entry.path(), &hsm.tokens_dir().join(entry.file_name()));
    }
    let server = start_server(&hsm, &data);
    assert_eq!(read_binding(&server, &svc), (200, VALUE_A.to_owned()));
}

#[path = "hsm/rotation.rs"]
mod rotation;

#[path = "hsm/account_kek.rs"]
mod account_kek;

#[path = "hsm/backup.rs"]
mod backup;
