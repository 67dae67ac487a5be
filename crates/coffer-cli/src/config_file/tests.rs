use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{ArgMatches, CommandFactory, ValueEnum};

use super::*;

/// Flags that have no key, and why (docs/configuration.md lists them too).
const NOT_IN_FILES: &[(&str, &str)] = &[
    ("config", "the file itself"),
    (
        "node_token",
        "a secret: node-token-file or COFFER_NODE_TOKEN instead",
    ),
    ("kek_file", "removed, hidden; kept as a flag only to say so"),
];

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `coffer ARGS` with the config file, parsed: the subcommand's matches, or the one line.
fn parse(args: &[&str]) -> Result<ArgMatches, String> {
    let args: Vec<OsString> = std::iter::once("coffer")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect();
    match matches(Cli::command(), &args) {
        Ok(m) => Ok(m.subcommand().unwrap().1.clone()),
        Err(Failure::File(line)) => Err(line),
        Err(Failure::Clap(e)) => Err(format!("clap: {}", first_line(&e))),
    }
}

fn check_text(kind: Kind, text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "c.toml", text);
    check(&path, kind).map_err(|e| {
        let prefix = format!("{}: ", path.display());
        assert!(e.starts_with(&prefix), "names the file: {e}");
        e[prefix.len()..].to_owned()
    })
}

#[test]
fn every_flag_has_a_key_and_every_key_a_flag() {
    let cli = Cli::command();
    for kind in Kind::value_variants() {
        let sub = cli.find_subcommand(kind.name()).unwrap();
        let keys = kind.keys();
        for key in &keys {
            assert!(
                key.arg(sub).is_some(),
                "key `{key}` of a {} file has no flag",
                kind.name()
            );
        }
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" || NOT_IN_FILES.iter().any(|(n, _)| *n == id) {
                continue;
            }
            let mapped: Vec<&Key> = keys
                .iter()
                .filter(|k| k.arg(sub).is_some_and(|a| a.get_id() == arg.get_id()))
                .collect();
            assert_eq!(
                mapped.len(),
                1,
                "--{} of `coffer {}` needs exactly one key in config_file/schema.rs (has {mapped:?})",
                arg.get_long().unwrap_or(id),
                kind.name()
            );
        }
    }
}

#[test]
fn keys_are_read_from_the_schema() {
    let keys: Vec<String> = Kind::Server.keys().iter().map(|k| k.to_string()).collect();
    for expected in [
        "data-dir",
        "listen",
        "trusted-proxy",
        "tls.cert",
        "tls.key",
        "kek.rewrap-rate",
        "kek.retire-grace",
        "limits.max-connections",
        "limits.snapshot-deadline",
        "log.access-log",
    ] {
        assert!(keys.iter().any(|k| k == expected), "{expected} in {keys:?}");
    }
    // Tables are not keys of their own.
    assert!(
        !keys.iter().any(|k| k == "tls" || k == "limits"),
        "{keys:?}"
    );
    let dev: Vec<String> = Kind::Dev.keys().iter().map(|k| k.to_string()).collect();
    assert_eq!(
        dev,
        [
            "data-dir",
            "listen",
            "log.level",
            "log.format",
            "log.access-log"
        ]
    );
}

#[test]
fn a_key_in_a_table_is_its_flag_less_the_tables_name() {
    let cli = Cli::command();
    let server = cli.find_subcommand("server").unwrap();
    let long = |k: Key| k.arg(server).and_then(|a| a.get_long()).map(str::to_owned);
    assert_eq!(
        long(Key::in_table("tls", "cert")).as_deref(),
        Some("tls-cert")
    );
    assert_eq!(
        long(Key::in_table("kek", "rewrap-rate")).as_deref(),
        Some("kek-rewrap-rate")
    );
    assert_eq!(
        long(Key::in_table("limits", "max-connections")).as_deref(),
        Some("max-connections")
    );
    assert_eq!(
        long(Key::in_table("log", "access-log")).as_deref(),
        Some("access-log")
    );
    assert_eq!(long(Key::top("nope")), None);
}

#[test]
fn the_file_gives_what_flags_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let file = write(
        dir.path(),
        "coffer.toml",
        "data-dir = \"data\"\nlisten = \"127.0.0.1:9001\"\nsecrets-quota = 7\n\
         trusted-proxy = [\"10.0.0.0/8\", \"192.168.0.0/16\"]\n\
         [limits]\nheader-timeout = 20\n[kek]\nretire-grace = 5\n[log]\naccess-log = true\n",
    );
    let file = file.to_str().unwrap();
    let m = parse(&["server", "--config", file]).unwrap();
    // Relative to the file's directory.
    assert_eq!(
        m.get_one::<PathBuf>("data_dir"),
        Some(&dir.path().join("data"))
    );
    assert_eq!(
        m.get_one::<SocketAddr>("listen"),
        Some(&"127.0.0.1:9001".parse().unwrap())
    );
    assert_eq!(m.get_one::<u64>("secrets_quota"), Some(&7));
    assert_eq!(m.get_one::<u64>("header_timeout"), Some(&20));
    assert_eq!(m.get_one::<u64>("kek_retire_grace"), Some(&5));
    assert!(m.get_flag("access_log"));
    assert_eq!(
        m.get_many::<coffer_server::IpNet>("trusted_proxies")
            .unwrap()
            .count(),
        2
    );
    // A flag wins over its key; other keys still apply.
    let m = parse(&[
        "server",
        "--config",
        file,
        "--listen",
        "127.0.0.1:9002",
        "--header-timeout",
        "30",
    ])
    .unwrap();
    assert_eq!(
        m.get_one::<SocketAddr>("listen"),
        Some(&"127.0.0.1:9002".parse().unwrap())
    );
    assert_eq!(m.get_one::<u64>("header_timeout"), Some(&30));
    assert_eq!(m.get_one::<u64>("secrets_quota"), Some(&7));
    // A key not set keeps the flag's default.
    assert_eq!(
        m.get_one::<u64>("max_stores"),
        Some(&coffer_server::ServeOptions::DEFAULT_MAX_STORES)
    );
}

#[test]
fn a_key_overridden_by_a_flag_is_not_used_nor_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "c.toml", "data-dir = \"absent\"\n");
    let file = file.to_str().unwrap();
    let err = parse(&["server", "--config", file]).unwrap_err();
    assert!(err.ends_with("absent does not exist"), "{err}");
    assert!(err.contains(": key `data-dir`: "), "{err}");
    let m = parse(&["server", "--config", file, "--data-dir", "elsewhere"]).unwrap();
    assert_eq!(
        m.get_one::<PathBuf>("data_dir"),
        Some(&PathBuf::from("elsewhere"))
    );
}

#[test]
fn pairs_may_be_split_between_the_file_and_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cert.pem", "x");
    write(dir.path(), "key.pem", "x");
    let file = write(
        dir.path(),
        "c.toml",
        "data-dir = \".\"\n[tls]\ncert = \"cert.pem\"\n",
    );
    let file = file.to_str().unwrap();
    let err = parse(&["server", "--config", file]).unwrap_err();
    assert!(
        err.ends_with("line 3, column 1: key `tls.cert` requires key `tls.key` (or --tls-key) too"),
        "{err}"
    );
    let key = dir.path().join("key.pem");
    let m = parse(&[
        "server",
        "--config",
        file,
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(
        m.get_one::<PathBuf>("tls_cert"),
        Some(&dir.path().join("cert.pem"))
    );
    // A conflict between the file and a flag names both.
    let err = parse(&[
        "server",
        "--config",
        file,
        "--tls-key",
        key.to_str().unwrap(),
        "--insecure-http",
    ])
    .unwrap_err();
    assert!(
        err.ends_with(": line 3, column 1: --insecure-http cannot be used with key `tls.cert`"),
        "{err}"
    );
}

#[test]
fn command_line_mistakes_stay_clap_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "c.toml", "data-dir = \".\"\n");
    let file = file.to_str().unwrap();
    let err = parse(&["server", "--config", file, "--listen", "nope"]).unwrap_err();
    assert!(
        err.starts_with("clap: invalid value 'nope' for '--listen"),
        "{err}"
    );
    let err = parse(&["server", "--config", file, "--bogus"]).unwrap_err();
    assert!(
        err.starts_with("clap: unexpected argument '--bogus'"),
        "{err}"
    );
}

#[test]
fn a_missing_required_setting_names_all_three_places() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "c.toml", "listen = \"127.0.0.1:0\"\n");
    let err = parse(&["server", "--config", file.to_str().unwrap()]).unwrap_err();
    assert!(
        err.ends_with("key `data-dir` is required (or --data-dir, or COFFER_DATA_DIR)"),
        "{err}"
    );
    // `config check` leaves it to the flags and the environment.
    assert_eq!(check(&file, Kind::Server), Ok(()));
}

#[test]
fn commands_without_a_config_file_parse_as_before() {
    let m = parse(&["server", "--data-dir", "d"]).unwrap();
    assert_eq!(m.get_one::<PathBuf>("data_dir"), Some(&PathBuf::from("d")));
    let err = parse(&["server"]).unwrap_err();
    assert!(
        err.starts_with("clap: the following required arguments"),
        "{err}"
    );
    assert!(parse(&["store", "list"]).is_ok());
}

#[test]
fn not_toml_is_refused_with_line_and_column() {
    let err = check_text(Kind::Server, "listen = \"127.0.0.1:0\"\nlisten =\n").unwrap_err();
    assert!(err.starts_with("line 2, column 9: not TOML: "), "{err}");
    let err = check_text(Kind::Server, "listen = 1\nlisten = 2\n").unwrap_err();
    assert!(err.starts_with("line 2, column 1: not TOML: "), "{err}");
}

#[test]
fn unknown_keys_get_the_nearest_one() {
    assert_eq!(
        check_text(Kind::Server, "lisen = \"x\"\n").unwrap_err(),
        "line 1, column 1: unknown key `lisen` in a server file; did you mean `listen`?"
    );
    assert_eq!(
        check_text(Kind::Server, "[tls]\ncertt = \"x\"\n").unwrap_err(),
        "line 2, column 1: unknown key `tls.certt` in a server file; did you mean `tls.cert`?"
    );
    assert_eq!(
        check_text(Kind::Server, "[limit]\n").unwrap_err(),
        "line 1, column 2: unknown key `limit` in a server file; did you mean `limits`?"
    );
    assert_eq!(
        check_text(Kind::Server, "max-connections = 5\n").unwrap_err(),
        "line 1, column 1: unknown key `max-connections` in a server file: `max-connections` belongs in [limits]"
    );
    // A key of edges only.
    let err = check_text(Kind::Server, "[tls]\nca-cert = \"x\"\n").unwrap_err();
    assert!(
        err.contains("unknown key `tls.ca-cert` in a server file"),
        "{err}"
    );
    let err = check_text(Kind::Dev, "zzz = 1\n").unwrap_err();
    assert!(
        err.ends_with(
            "unknown key `zzz` in a dev file (keys and tables at the top: data-dir, listen, log)"
        ),
        "{err}"
    );
}

#[test]
fn secrets_are_refused_with_what_to_use_instead() {
    let err = check_text(Kind::Edge, "node-token = \"coffernode_x\"\n").unwrap_err();
    assert!(err.contains("key `node-token` is refused"), "{err}");
    assert!(err.contains("node-token-file"), "{err}");
    assert!(
        !err.contains("coffernode_x"),
        "the value is not repeated: {err}"
    );
    let err = check_text(Kind::Server, "[kek]\npin = \"1234\"\n").unwrap_err();
    assert!(err.contains("key `kek.pin` is refused"), "{err}");
    assert!(err.contains("COFFER_PKCS11_PIN"), "{err}");
    assert!(!err.contains("1234"), "{err}");
}

#[test]
fn wrong_types_name_the_key_and_the_type_expected() {
    assert_eq!(
        check_text(Kind::Server, "[limits]\nmax-connections = \"ten\"\n").unwrap_err(),
        "line 2, column 19: key `limits.max-connections`: invalid type: string \"ten\", expected a non-negative integer"
    );
    let err = check_text(Kind::Server, "insecure-http = \"yes\"\n").unwrap_err();
    assert!(
        err.contains("key `insecure-http`: invalid type: string \"yes\", expected true or false"),
        "{err}"
    );
    let err = check_text(Kind::Edge, "upstream = \"https://cp\"\n").unwrap_err();
    assert!(
        err.contains("key `upstream`: invalid type: string \"https://cp\", expected an array"),
        "{err}"
    );
    let err = check_text(Kind::Server, "secrets-quota = -1\n").unwrap_err();
    assert!(
        err.contains("key `secrets-quota`: invalid value: integer `-1`"),
        "{err}"
    );
}

#[test]
fn bad_values_are_refused_by_the_flags_parser() {
    assert_eq!(
        check_text(Kind::Server, "listen = \"nope\"\n").unwrap_err(),
        "line 1, column 1: key `listen`: invalid value \"nope\": invalid socket address syntax"
    );
    assert_eq!(
        check_text(Kind::Server, "[limits]\nheader-timeout = 0\n").unwrap_err(),
        "line 2, column 1: key `limits.header-timeout`: invalid value \"0\": 0 is not in 1..=300"
    );
    assert_eq!(
        check_text(Kind::Edge, "staleness = 1\n").unwrap_err(),
        "line 1, column 1: key `staleness`: invalid value \"1\": 1 is not in 2..=3600"
    );
    assert_eq!(
        check_text(Kind::Edge, "feed-key = \"abc\"\n").unwrap_err(),
        "line 1, column 1: key `feed-key`: invalid value \"abc\": not a feed key: 64 hex digits, as `coffer node create` printed it"
    );
    let good = format!("feed-key = \"{}\"\n", "ab".repeat(32));
    assert_eq!(check_text(Kind::Edge, &good), Ok(()));
    let err = check_text(
        Kind::Server,
        "trusted-proxy = [\"10.0.0.0/8\", \"nonsense\"]\n",
    )
    .unwrap_err();
    assert!(
        err.starts_with("line 1, column 1: key `trusted-proxy`: invalid value \"nonsense\""),
        "{err}"
    );
}

#[test]
fn paths_must_exist_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cert.pem", "x");
    let file = write(
        dir.path(),
        "c.toml",
        "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
    );
    let err = check(&file, Kind::Server).unwrap_err();
    let key = dir.path().join("key.pem");
    assert!(
        err.ends_with(&format!(
            "line 3, column 1: key `tls.key`: {} does not exist",
            key.display()
        )),
        "{err}"
    );
    write(dir.path(), "key.pem", "x");
    assert_eq!(check(&file, Kind::Server), Ok(()));
    // A directory is not a file, nor a file a data dir.
    let file = write(dir.path(), "d.toml", "data-dir = \"cert.pem\"\n");
    let err = check(&file, Kind::Server).unwrap_err();
    assert!(err.ends_with("cert.pem is not a directory"), "{err}");
    // An edge creates its data dir.
    let file = write(dir.path(), "e.toml", "data-dir = \"new\"\n");
    assert_eq!(check(&file, Kind::Edge), Ok(()));
}

#[test]
fn plain_http_off_loopback_needs_the_explicit_key() {
    let err = check_text(Kind::Server, "listen = \"0.0.0.0:8080\"\n").unwrap_err();
    assert!(
        err.starts_with(
            "line 1, column 1: key `listen`: refusing to serve plain HTTP on non-loopback address 0.0.0.0:8080"
        ),
        "{err}"
    );
    assert_eq!(
        check_text(
            Kind::Server,
            "listen = \"0.0.0.0:8080\"\ninsecure-http = true\n"
        ),
        Ok(())
    );
    let err = check_text(Kind::Dev, "listen = \"0.0.0.0:8080\"\n").unwrap_err();
    assert!(err.contains("refusing to serve plain HTTP"), "{err}");
    assert_eq!(
        check_text(
            Kind::Server,
            "insecure-http = true\n[tls]\ncert = \"/dev/null\"\nkey = \"/dev/null\"\n"
        )
        .unwrap_err(),
        "line 3, column 1: key `tls.cert`: /dev/null is not a file"
    );
}

#[test]
fn conflicting_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cert.pem", "x");
    write(dir.path(), "key.pem", "x");
    let file = write(
        dir.path(),
        "c.toml",
        "insecure-http = true\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
    );
    let err = check(&file, Kind::Server).unwrap_err();
    assert!(
        err.ends_with(": line 1, column 1: key `insecure-http` cannot be used with key `tls.cert`"),
        "{err}"
    );
    let file = write(dir.path(), "t.toml", "node-token-file = \"cert.pem\"\n");
    assert_eq!(check(&file, Kind::Edge), Ok(()));
}

#[test]
fn the_example_files_set_every_key_and_the_docs_show_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let docs = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    for (kind, name) in [(Kind::Server, "coffer.toml"), (Kind::Edge, "edge.toml")] {
        let text = std::fs::read_to_string(root.join("dist/config").join(name)).unwrap();
        assert!(
            docs.contains(&text),
            "docs/configuration.md shows dist/config/{name} verbatim"
        );
        let loaded = load::parse(kind, &text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let set: Vec<&Key> = loaded.entries.iter().map(|e| &e.key).collect();
        for key in kind.keys() {
            assert!(set.contains(&&key), "dist/config/{name} shows `{key}`");
            assert!(
                docs.contains(&format!("`{key}`")),
                "docs/configuration.md documents `{key}`"
            );
        }
    }
}
