//! The systemd units in `dist/systemd/` pass `systemd-analyze verify` without a single warning.
//! (That every flag their `ExecStart=` lines use is one `coffer server`/`coffer edge` accepts is
//! checked against the command definitions, in `src/args/systemd_units.rs`.)
//!
//! `verify` checks that the `ExecStart=` binary exists and that the `Documentation=` man pages
//! are installed, so the units are verified as copies naming the binary this build made, with
//! `MANPATH` pointing at the pages in `dist/man/`. Without `systemd-analyze` the test is skipped,
//! except under `CI=true`, where it fails.
//!
//! Their `Type=notify` is checked by standing in for systemd's notification socket.
//!
//! The units' `MemoryDenyWriteExecute=yes` is checked by running the server under the kernel's
//! own form of it, with a KEK in SoftHSM2. That needs Linux 6.3 or later, which CI's machines
//! have: under `CI=true` an older kernel fails the test rather than skipping it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use coffer_hsm::testing::{SoftHsm, USER_PIN};
use common::*;

const UNITS: [&str; 2] = ["coffer.service", "coffer-edge.service"];
const INSTALLED_BINARY: &str = "/usr/local/bin/coffer";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn systemd_analyze() -> Option<&'static str> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if found {
        return Some("systemd-analyze");
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "systemd-analyze is missing (Debian: apt-get install systemd); CI must verify the units"
    );
    eprintln!("skipped: no systemd-analyze");
    None
}

/// The units as copies that name the built binary, in a temp dir, and a man dir holding
/// `dist/man`'s pages.
fn staged(dir: &Path) -> (Vec<PathBuf>, PathBuf) {
    let binary = env!("CARGO_BIN_EXE_coffer");
    let units = UNITS
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(repo_root().join("dist/systemd").join(name))
                .unwrap_or_else(|e| panic!("dist/systemd/{name}: {e}"));
            assert!(
                text.contains(&format!("ExecStart={INSTALLED_BINARY} ")),
                "{name} does not start {INSTALLED_BINARY}"
            );
            let path = dir.join(name);
            std::fs::write(&path, text.replace(INSTALLED_BINARY, binary)).unwrap();
            path
        })
        .collect();
    let man = dir.join("man");
    std::fs::create_dir_all(man.join("man1")).unwrap();
    for entry in std::fs::read_dir(repo_root().join("dist/man")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), man.join("man1").join(entry.file_name())).unwrap();
    }
    (units, man)
}

/// `systemd-analyze verify` on the units: its exit status and everything it printed.
fn verify(tool: &str, units: &[PathBuf], man: &Path) -> (bool, String) {
    let out = Command::new(tool)
        .arg("verify")
        .args(units)
        .env("MANPATH", man)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn the_units_verify_without_a_warning() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (units, man) = staged(dir.path());
    let (ok, said) = verify(tool, &units, &man);
    // `verify` also loads the units ours depend on, and says what it thinks of them: only what
    // it says of ours counts.
    let ours: Vec<&str> = said
        .lines()
        .filter(|line| UNITS.iter().any(|unit| line.contains(unit)))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze verify:\n{}\n\n(everything it said:\n{said})",
        ours.join("\n")
    );
    // A failure that names neither unit must at least say whose it is.
    assert!(ok || !said.trim().is_empty(), "verify failed silently");
}

/// The check above is not blind: a unit with a misspelt setting, or naming a binary that does
/// not exist, is reported.
#[test]
fn verify_reports_what_is_wrong_with_a_unit() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (units, man) = staged(dir.path());
    let unit = &units[0];
    let good = std::fs::read_to_string(unit).unwrap();

    std::fs::write(unit, good.replace("PrivateTmp=yes", "PrivateTemp=yes")).unwrap();
    let (_, said) = verify(tool, std::slice::from_ref(unit), &man);
    assert!(said.contains("PrivateTemp"), "{said}");

    let missing = dir.path().join("no-such-coffer");
    std::fs::write(
        unit,
        good.replace(env!("CARGO_BIN_EXE_coffer"), missing.to_str().unwrap()),
    )
    .unwrap();
    let (ok, said) = verify(tool, std::slice::from_ref(unit), &man);
    assert!(!ok && said.contains("no-such-coffer"), "{said}");
}

/// The units are `Type=notify`: `coffer server` and `coffer edge` send `READY=1` to the socket
/// `NOTIFY_SOCKET` names once they listen, and nothing when they cannot start. The test is the
/// service manager: a datagram socket it binds.
#[test]
fn the_server_and_the_edge_tell_the_service_manager_once_they_listen() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(START_TIMEOUT)).unwrap();
    let told = || {
        let mut buf = [0u8; 512];
        let n = manager.recv(&mut buf).expect("no notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let nothing_more = || {
        manager.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        let more = manager.recv(&mut buf).map(|n| buf[..n].to_vec());
        manager.set_nonblocking(false).unwrap();
        assert_eq!(
            more.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock),
            "told more"
        );
    };

    // A server that cannot start says nothing.
    let data = tmp.path().join("data");
    let mut cmd = coffer_cmd();
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &path);
    run(cmd, None).one_error_line(1);
    nothing_more();

    let (account, token) = init(&data);
    let mut cmd = coffer_cmd();
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &path);
    let server = Server::spawn(cmd);
    assert_eq!(told(), "READY=1\n");
    nothing_more();

    let conn = Conn {
        url: server.url.clone(),
        token,
        account,
    };
    let node = conn
        .run(&["node", "create", "edge-1", "--json"])
        .ok()
        .json();
    let mut cmd = coffer_cmd();
    for var in [
        "COFFER_NODE_TOKEN_FILE",
        "COFFER_UPSTREAM",
        "COFFER_FEED_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd.arg("edge")
        .args(["--upstream", &conn.url, "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(tmp.path().join("edge"))
        .env("COFFER_NODE_TOKEN", node["node_token"].as_str().unwrap())
        .env("NOTIFY_SOCKET", &path);
    let edge = Server::spawn(cmd);
    assert_eq!(told(), "READY=1\n");
    nothing_more();
    let (status, log) = edge.terminate();
    assert!(status.success(), "{status:?}\n{log}");
    let (status, log) = server.terminate();
    assert!(status.success(), "{status:?}\n{log}");
}

/// Run by `python3 -c` before the command in its arguments: `prctl(PR_SET_MDWE,
/// PR_MDWE_REFUSE_EXEC_GAIN)` (Linux 6.3+), the rule `MemoryDenyWriteExecute=yes` sets with
/// seccomp: no mapping may be or become writable and executable. It is kept across `execve`.
/// Exits 3 if the kernel does not have it; checks that it is in force before running the
/// command.
const UNDER_MDWE: &str = r#"
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(3)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("PR_SET_MDWE is set but a writable, executable mapping was allowed")
except OSError:
    pass
os.execv(sys.argv[1], sys.argv[1:])
"#;

/// `coffer ARGS` under [`UNDER_MDWE`], pointed at `hsm`, with the environment of `coffer_cmd`.
fn coffer_under_mdwe(hsm: &SoftHsm, args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", UNDER_MDWE, env!("CARGO_BIN_EXE_coffer")])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("COFFER_LOG_FORMAT")
        .env_remove("COFFER_PKCS11_PIN");
    for var in CONN_VARS {
        cmd.env_remove(var);
    }
    hsm.configure(&mut cmd);
    cmd
}

/// The units set `MemoryDenyWriteExecute=yes`: neither Coffer, nor aws-lc, nor SoftHSM2 may
/// need memory that is writable and executable. `coffer init --kek pkcs11:…` and a server that
/// seals a value and rotates its KEK (a key generated in the token) run under the same rule.
/// The server takes its PIN as docs/operations.md suggests under systemd: from a private file
/// the KEK's URI names (where systemd puts a credential), not from the environment.
#[test]
fn the_server_runs_with_an_hsm_under_memory_deny_write_execute() {
    let Some(hsm) = SoftHsm::new("the_server_runs_with_an_hsm_under_memory_deny_write_execute")
    else {
        return;
    };
    let probe = Command::new("python3")
        .args(["-c", UNDER_MDWE, "/bin/true"])
        .status();
    match probe.map(|s| s.code()) {
        Ok(Some(0)) => {}
        Ok(Some(3)) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "this kernel has no PR_SET_MDWE (Linux 6.3+): CI must run this test"
            );
            eprintln!("skipped: this kernel has no PR_SET_MDWE (Linux 6.3+)");
            return;
        }
        other => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "python3 cannot run the MDWE wrapper: {other:?}"
            );
            eprintln!("skipped: no python3 ({other:?})");
            return;
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut init = coffer_under_mdwe(
        &hsm,
        &[
            "init",
            "--data-dir",
            data.to_str().unwrap(),
            "--json",
            "--kek",
            &hsm.uri(),
        ],
    );
    init.env("COFFER_PKCS11_PIN", USER_PIN);
    let out = run(init, None).ok();
    let created = out.json();

    // The PIN as systemd hands a credential over: a file readable by its owner alone, which
    // the URI recorded in kek.toml is edited to name.
    let pin = tmp.path().join("credentials/pkcs11-pin");
    std::fs::create_dir(pin.parent().unwrap()).unwrap();
    std::fs::write(&pin, format!("{USER_PIN}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    let kek_toml = data.join("kek.toml");
    let text = std::fs::read_to_string(&kek_toml).unwrap();
    let edited = text.replacen(
        "libsofthsm2.so\"",
        &format!("libsofthsm2.so&pin-source=file:{}\"", pin.display()),
        1,
    );
    assert_ne!(edited, text, "no uri line to edit in kek.toml:\n{text}");
    std::fs::write(&kek_toml, edited).unwrap();

    let mut server = coffer_under_mdwe(
        &hsm,
        &[
            "server",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    // Verbose, so that the check below that the PIN is not logged has something to read.
    server.env("RUST_LOG", "debug");
    let server = Server::spawn(server);
    let conn = Conn {
        url: server.url.clone(),
        token: created["token"].as_str().unwrap().to_owned(),
        account: created["account_id"].as_str().unwrap().to_owned(),
    };
    let store = create_store(&conn, "mdwe");
    create_secret(&conn, &store, "sealed", "workers", "mdwe-v4lue");
    conn.run(&["kek", "rotate"]).ok();
    let status = conn.run(&["kek", "status", "--json"]).ok().json();
    assert_eq!(status["active_version"], 2, "{status}");
    let (exit, log) = server.terminate();
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(!log.contains(USER_PIN), "{log}");
}
