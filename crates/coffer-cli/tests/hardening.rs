//! The key-holding commands (`coffer server`, `coffer dev`, `coffer edge`) harden their
//! process at start: not dumpable, core files off, memory locked where that is safe.
//!
//! Each is started through `sh`, which first raises its core-file limit to the hard limit, so
//! that a limit of 0 afterwards is the process's own doing. Non-dumpability is read from
//! outside: the kernel makes a non-dumpable process's `/proc/PID/*` files owned by root, which
//! shows only for a process that does not run as root. So when the tests run as root they
//! start the commands as `nobody` (65534) in directories given to it.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const NOBODY: u32 = 65534;

fn running_as_root() -> bool {
    // `/proc/self` (a directory, which keeps its owner either way) belongs to our uid.
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// `coffer ARGS` through `sh`, with the soft core-file limit raised to the hard one; as
/// `nobody` (owning `dirs`, the first of which may receive a copy of the binary) when the
/// tests run as root.
fn hardened_cmd(args: &[&str], dirs: &[&Path]) -> Command {
    let binary = if running_as_root() {
        binary_for_others(dirs[0])
    } else {
        PathBuf::from(env!("CARGO_BIN_EXE_coffer"))
    };
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -S -c \"$(ulimit -H -c)\" && exec \"$0\" \"$@\"")
        .arg(binary)
        .args(args);
    for var in CONN_VARS {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info");
    if running_as_root() {
        for dir in dirs {
            give_to_nobody(dir);
        }
        cmd.uid(NOBODY).gid(NOBODY);
    }
    cmd
}

/// Where [`binary_for_others`] puts its link or copy; left to root by [`give_to_nobody`].
const BIN_DIR: &str = ".bin";

/// The `coffer` binary where another user can run it: where it is, if every directory above
/// it lets others through (a checkout under `/root` does not), else linked (or copied) into
/// `dir/.bin`, which stays root's and readable by all.
fn binary_for_others(dir: &Path) -> PathBuf {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_coffer"));
    let reachable = binary
        .ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if reachable {
        return binary;
    }
    let bin = dir.join(BIN_DIR);
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = bin.join("coffer");
    if !copy.exists() && std::fs::hard_link(&binary, &copy).is_err() {
        std::fs::copy(&binary, &copy).unwrap();
    }
    copy
}

/// `chown -R nobody:nobody path`, but for [`BIN_DIR`].
fn give_to_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != BIN_DIR {
                give_to_nobody(&entry.path());
            }
        }
    }
}

fn proc_file(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{name}")).unwrap()
}

/// The soft and hard values of one `/proc/PID/limits` line.
fn limit(limits: &str, name: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {limits}"));
    let fields: Vec<&str> = line[name.len()..].split_whitespace().collect();
    (fields[0].to_owned(), fields[1].to_owned())
}

/// The server's log once it holds its hardening report (logged as it starts serving, on
/// standard error, which is read by another thread than the `listening on` line).
fn hardening_report(server: &Server) -> String {
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    loop {
        let log = server.log();
        let reported = [
            "process hardened",
            "memory not locked",
            "stays dumpable",
            "core files stay possible",
        ];
        if reported.iter().any(|line| log.contains(line)) {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no hardening report in the log:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Fails unless `server` runs as a non-root user, is not dumpable and may not write core
/// files.
fn assert_hardened(server: &Server, what: &str) {
    let pid = server.child.id();
    let log = hardening_report(server);
    let status = proc_file(pid, "status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|uid| uid != "0"),
        "{what} must run as another user than root for this check: {uid_line}"
    );
    // Owned by root although the process is not: the kernel's mark of a non-dumpable process.
    let owner = std::fs::metadata(format!("/proc/{pid}/status"))
        .unwrap()
        .uid();
    assert_eq!(owner, 0, "{what} is dumpable ({uid_line}); log:\n{log}");

    let limits = proc_file(pid, "limits");
    assert_eq!(
        limit(&limits, "Max core file size"),
        ("0".to_owned(), "0".to_owned()),
        "{what}: {limits}"
    );
}

/// The hard core-file limit this test may give its children: if it is 0 already, a 0 in a
/// child proves nothing about the child.
fn core_limit_can_be_raised() -> bool {
    let (_, hard) = limit(
        &proc_file(std::process::id(), "limits"),
        "Max core file size",
    );
    if hard == "0" {
        eprintln!("note: the hard core-file limit is 0 here; the core limit check is vacuous");
    }
    hard != "0"
}

#[test]
fn server_and_dev_are_not_dumpable_and_write_no_core_files() {
    assert!(
        core_limit_can_be_raised() || !in_ci(),
        "CI must be able to raise the limit"
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    init(&data);
    let data_s = data.to_str().unwrap();
    let cmd = hardened_cmd(
        &["server", "--data-dir", data_s, "--listen", "127.0.0.1:0"],
        &[tmp.path()],
    );
    let server = Server::spawn(cmd);
    assert_hardened(&server, "coffer server");
    // The default RLIMIT_MEMLOCK (8 MiB on most systems) is finite: the server started anyway
    // and said why it did not lock its memory.
    let log = hardening_report(&server);
    if !log.contains("memory locked") {
        assert!(
            log.contains("memory not locked") && log.contains("RLIMIT_MEMLOCK"),
            "{log}"
        );
    }
    drop(server);

    let dev_tmp = tempfile::tempdir().unwrap();
    let dev_dir = dev_tmp.path().join("dev");
    let cmd = hardened_cmd(
        &[
            "dev",
            "--data-dir",
            dev_dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[dev_tmp.path()],
    );
    let dev = Server::spawn(cmd);
    assert_hardened(&dev, "coffer dev");
}

#[test]
fn an_edge_is_not_dumpable_and_writes_no_core_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("edge");
    std::fs::create_dir(&data).unwrap();
    // Nothing listens on the upstream: the edge serves /healthz (503) and keeps retrying.
    let upstream = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let token = format!("coffernode_{}_{}", "ab".repeat(16), "A".repeat(43));
    let mut cmd = hardened_cmd(
        &[
            "edge",
            "--upstream",
            &upstream,
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[tmp.path()],
    );
    cmd.env("COFFER_NODE_TOKEN", token);
    let edge = Server::spawn(cmd);
    assert_hardened(&edge, "coffer edge");
}

/// Where the process may lock memory without a limit (root has CAP_IPC_LOCK), it does.
#[test]
fn with_cap_ipc_lock_the_server_locks_its_memory() {
    let status = proc_file(std::process::id(), "status");
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    const CAP_IPC_LOCK: u64 = 1 << 14;
    if cap_eff & CAP_IPC_LOCK == 0 {
        // CI runs as root, which has it: there this test must not pass by skipping.
        assert!(
            !in_ci(),
            "no CAP_IPC_LOCK under CI: memory locking goes untested"
        );
        eprintln!("SKIPPED: no CAP_IPC_LOCK here (run as root to check memory locking)");
        return;
    }
    let (_tmp, _data, server, _conn) = setup();
    let status = proc_file(server.child.id(), "status");
    let locked_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(locked_kb > 0, "{status}");
    let log = hardening_report(&server);
    assert!(log.contains("memory locked"), "{log}");
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}
