//! The systemd units in `dist/systemd/` start commands this CLI accepts: each `ExecStart=` line
//! is parsed with the command definitions themselves, so a renamed or removed flag fails here
//! rather than at a customer's `systemctl start`. (`tests/systemd.rs` runs
//! `systemd-analyze verify` on the same files.)

use super::tests::parse;
use super::{Cli, Command};

const SERVER_UNIT: &str = include_str!("../../../../dist/systemd/coffer.service");
const EDGE_UNIT: &str = include_str!("../../../../dist/systemd/coffer-edge.service");

/// The values of `key=` in `unit`'s `[Service]` section, continuation lines joined.
fn settings(unit: &str, key: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    let mut in_service = false;
    let mut found = Vec::new();
    for line in joined.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && let Some(value) = line.strip_prefix(&format!("{key}=")) {
            found.push(value.trim().to_owned());
        }
    }
    found
}

/// The unit's one `ExecStart=` command line, as the CLI would get it. systemd splits words
/// much like a shell; the test keeps the lines simple enough that splitting on whitespace is
/// exact (no quotes, no `$` or `%` expansions, no `-`/`@`/`+`/`!` prefixes).
fn exec_start(unit: &str) -> Vec<String> {
    let lines = settings(unit, "ExecStart");
    assert_eq!(lines.len(), 1, "one ExecStart= line: {lines:?}");
    let line = &lines[0];
    assert!(
        !line.contains(['"', '\'', '$', '%', '\\']),
        "keep ExecStart= free of quotes and expansions, or teach this test to split them: {line}"
    );
    let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    assert_eq!(words[0], "/usr/local/bin/coffer", "{line}");
    words
}

/// The unit's `ExecStart=` line parsed by the CLI's definitions.
fn try_parse_unit(unit: &str) -> Result<Cli, clap::Error> {
    let words = exec_start(unit);
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    parse(&args)
}

fn parse_unit(unit: &str) -> Cli {
    try_parse_unit(unit)
        .unwrap_or_else(|e| panic!("`{}` is refused:\n{e}", exec_start(unit).join(" ")))
}

#[test]
fn the_server_unit_starts_a_server_this_cli_accepts() {
    match parse_unit(SERVER_UNIT).command {
        Command::Server(args) => {
            assert_eq!(args.data_dir, std::path::Path::new("/var/lib/coffer"));
            assert!(args.tls_cert.is_some() && args.tls_key.is_some());
        }
        other => panic!("coffer.service does not run `coffer server`: {other:?}"),
    }
}

#[test]
fn the_edge_unit_starts_an_edge_this_cli_accepts() {
    match parse_unit(EDGE_UNIT).command {
        Command::Edge(args) => {
            assert_eq!(args.data_dir, std::path::Path::new("/var/lib/coffer-edge"));
            assert_eq!(args.upstreams.len(), 1);
            // The token comes from the environment file, never from the command line (where
            // every local user could read it).
            assert!(args.node_token.is_none());
        }
        other => panic!("coffer-edge.service does not run `coffer edge`: {other:?}"),
    }
}

/// The data dir is the state directory systemd makes and keeps writable; a reload is SIGHUP,
/// which reloads the TLS files.
#[test]
fn the_units_agree_with_themselves() {
    for (unit, state) in [(SERVER_UNIT, "coffer"), (EDGE_UNIT, "coffer-edge")] {
        assert_eq!(settings(unit, "StateDirectory"), [state]);
        let words = exec_start(unit);
        let at = words.iter().position(|w| w == "--data-dir").unwrap();
        assert_eq!(words[at + 1], format!("/var/lib/{state}"));
        assert_eq!(settings(unit, "ExecReload"), ["/bin/kill -HUP $MAINPID"]);
        assert_eq!(settings(unit, "User"), [state]);
        // `coffer server|edge` send READY=1 once listening (tests/systemd.rs).
        assert_eq!(settings(unit, "Type"), ["notify"]);
        // What the CLI exits with when restarting cannot help (a failed HSM login).
        assert_eq!(
            settings(unit, "RestartPreventExitStatus"),
            [crate::EXIT_HSM_LOGIN.to_string()]
        );
    }
}

/// The parsing above is not blind: a flag the CLI does not have is refused.
#[test]
fn an_unknown_flag_in_a_unit_is_caught() {
    let broken = SERVER_UNIT.replace("--tls-key", "--tls-private-key");
    let Err(err) = try_parse_unit(&broken) else {
        panic!("an unknown flag is accepted");
    };
    assert!(err.to_string().contains("--tls-private-key"), "{err}");
}
