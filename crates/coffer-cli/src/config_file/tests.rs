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

/// Writes a file its owner alone may change (whatever the umask), as config files must be.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
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
            "metrics-listen",
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
            "unknown key `zzz` in a dev file (keys and tables at the top: data-dir, listen, metrics-listen, log)"
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
    write(dir.path(), "key.pem", "x");
    let file = write(
        dir.path(),
        "c.toml",
        "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
    );
    let err = check(&file, Kind::Server).unwrap_err();
    let cert = dir.path().join("cert.pem");
    assert!(
        err.ends_with(&format!(
            "line 2, column 1: key `tls.cert`: {} does not exist",
            cert.display()
        )),
        "{err}"
    );
    write(dir.path(), "cert.pem", "x");
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
}

#[test]
fn a_path_that_is_not_a_file_is_refused_before_conflicts() {
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
}

#[test]
fn a_node_token_file_that_exists_passes_the_check() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "token", "coffernode_x");
    let file = write(dir.path(), "t.toml", "node-token-file = \"token\"\n");
    assert_eq!(check(&file, Kind::Edge), Ok(()));
}

/// `text` with every commented-out key (`# key = value`) written in.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(key, _)| {
                    !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c == '-' || c == '.')
                }) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_files_show_every_key_and_the_docs_show_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let docs = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    for (kind, name) in [(Kind::Server, "coffer.toml"), (Kind::Edge, "edge.toml")] {
        let text = std::fs::read_to_string(root.join("dist/config").join(name)).unwrap();
        assert!(
            docs.contains(&text),
            "docs/configuration.md shows dist/config/{name} verbatim"
        );
        // As shipped, and with the keys it shows commented out written in.
        load::parse(kind, &text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let loaded =
            load::parse(kind, &uncommented(&text)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let shown: Vec<&Key> = loaded.entries.iter().map(|e| &e.key).collect();
        for key in kind.keys() {
            assert!(
                shown.contains(&&key),
                "dist/config/{name} shows `{key}`, set or as `# {} = ...`",
                key.name
            );
            assert!(
                docs.contains(&format!("`{key}`")),
                "docs/configuration.md documents `{key}`"
            );
        }
    }
}

#[test]
fn the_example_files_leave_risky_and_placeholder_keys_commented_out() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (kind, name, commented) in [
        (
            Kind::Server,
            "coffer.toml",
            &[
                "trusted-proxy",
                "client-ip-header",
                "limits.runtime-rate-limit",
            ][..],
        ),
        (
            Kind::Edge,
            "edge.toml",
            &[
                "feed-key",
                "max-staleness",
                "trusted-proxy",
                "client-ip-header",
                "limits.runtime-rate-limit",
            ][..],
        ),
    ] {
        let text = std::fs::read_to_string(root.join("dist/config").join(name)).unwrap();
        let set: Vec<String> = load::parse(kind, &text)
            .unwrap()
            .entries
            .iter()
            .map(|e| e.key.to_string())
            .collect();
        for key in commented {
            assert!(
                !set.iter().any(|k| k == key),
                "dist/config/{name} sets `{key}`: show it commented out"
            );
        }
    }
}

#[test]
fn a_commented_out_key_counts_as_shown() {
    let text = "# feed-key = \"abc\"\n# a comment = not a key\nlisten = \"x\"\n";
    assert_eq!(
        uncommented(text),
        "feed-key = \"abc\"\n# a comment = not a key\nlisten = \"x\""
    );
}

#[test]
fn an_all_zero_or_small_order_feed_key_is_refused() {
    let err = check_text(Kind::Edge, &format!("feed-key = \"{}\"\n", "0".repeat(64))).unwrap_err();
    assert!(
        err.starts_with("line 1, column 1: key `feed-key`: invalid value "),
        "{err}"
    );
    assert!(err.contains("small order"), "{err}");
    let identity = format!("01{}", "0".repeat(62));
    let err = check_text(Kind::Edge, &format!("feed-key = \"{identity}\"\n")).unwrap_err();
    assert!(err.contains("small order"), "{err}");
}

#[test]
fn a_secret_pasted_into_a_key_naming_its_file_is_not_repeated() {
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n";
    let err = check_text(
        Kind::Server,
        &format!("[tls]\ncert = \"c.toml\"\nkey = \"\"\"{pem}\"\"\"\n"),
    )
    .unwrap_err();
    assert!(
        err.starts_with("line 3, column 7: key `tls.key`: its value looks like a PEM block"),
        "{err}"
    );
    assert!(!err.contains("MIIE") && !err.contains("BEGIN"), "{err}");
    let err = check_text(
        Kind::Edge,
        "node-token-file = \"coffernode_0123abcd_s3cret\"\n",
    )
    .unwrap_err();
    assert!(
        err.starts_with(
            "line 1, column 19: key `node-token-file`: its value looks like a Coffer token"
        ),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    // Not a token, but still never repeated: a key naming a secret file names no file.
    let err = check_text(Kind::Edge, "node-token-file = \"hunter2-not-a-path\"\n").unwrap_err();
    assert_eq!(
        err,
        "line 1, column 1: key `node-token-file`: names no file"
    );
    let err = check_text(
        Kind::Server,
        // The file itself is a file, which is all `tls.cert` is checked for here.
        "[tls]\ncert = \"c.toml\"\nkey = \"hunter2-not-a-path\"\n",
    )
    .unwrap_err();
    assert!(err.ends_with("key `tls.key`: names no file"), "{err}");
    let err = check_text(Kind::Edge, "node-token-file = \"/\"\n").unwrap_err();
    assert!(
        err.ends_with("key `node-token-file`: names something that is not a file"),
        "{err}"
    );
}

#[test]
fn a_secret_under_any_key_is_refused_without_being_repeated() {
    for (kind, text, key) in [
        (
            Kind::Server,
            "listen = \"coffer_0123abcd_s3cret\"\n",
            "listen",
        ),
        (
            Kind::Server,
            "trusted-proxy = [\"10.0.0.0/8\", \"coffersvc_0123abcd_s3cret\"]\n",
            "trusted-proxy",
        ),
        (
            Kind::Edge,
            "[limits]\nheader-timeout = \"-----BEGIN CERTIFICATE-----s3cret\"\n",
            "limits.header-timeout",
        ),
        (
            Kind::Edge,
            "unknown = \"coffernode_0123abcd_s3cret\"\n",
            "unknown",
        ),
    ] {
        let err = check_text(kind, text).unwrap_err();
        assert!(
            err.contains(&format!("key `{key}`: its value looks like")),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }
}

/// A path that merely begins like a token (`coffer_data`) is a path: a token's prefix is
/// followed by the hex of its id.
#[test]
fn a_path_named_like_a_token_prefix_is_not_a_secret() {
    assert_eq!(looks_like_secret("coffer_data"), None);
    assert_eq!(looks_like_secret("coffernode_keys/edge"), None);
    assert_eq!(
        looks_like_secret(&format!("coffer_{}_{}", "ab".repeat(16), "A".repeat(43))),
        Some("a Coffer token")
    );
}

#[test]
fn long_values_are_cut_short_in_messages() {
    let long = "x".repeat(5000);
    for (kind, text) in [
        (Kind::Server, format!("listen = \"{long}\"\n")),
        (Kind::Server, format!("data-dir = \"{long}\"\n")),
        (
            Kind::Server,
            format!("[limits]\nmax-connections = \"{long}\"\n"),
        ),
        (Kind::Edge, format!("feed-key = \"{long}\"\n")),
        (Kind::Edge, format!("upstream = [\"ftp://{long}\"]\n")),
        (
            Kind::Server,
            format!("[log]\nlevel = \"{long}=notalevel\"\n"),
        ),
    ] {
        let Err(err) = check_text(kind, &text) else {
            panic!("{} passes", &text[..40]);
        };
        assert!(err.len() < 500, "{} chars: {}", err.len(), &err[..600]);
        assert!(err.contains("xxxxx…"), "{err}");
    }
}

#[test]
fn a_config_file_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "c.toml", "listen = \"127.0.0.1:0\"\n");
    for mode in [0o664, 0o646, 0o666, 0o620] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = check(&file, Kind::Server).unwrap_err();
        assert!(
            err.starts_with(&format!("{}: has mode {mode:03o}", file.display())),
            "{err}"
        );
        assert!(
            err.ends_with(&format!("`chmod go-w {}`", file.display())),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }
    for mode in [0o644, 0o600, 0o400] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(check(&file, Kind::Server), Ok(()));
    }
}

#[test]
fn an_edge_files_upstreams_are_checked_by_the_edges_own_rule() {
    let err = check_text(Kind::Edge, "upstream = [\"http://10.0.0.1:8080\"]\n").unwrap_err();
    assert!(
        err.starts_with(
            "line 1, column 1: key `upstream`: upstream \"http://10.0.0.1:8080\" is plain HTTP"
        ),
        "{err}"
    );
    assert_eq!(
        check_text(
            Kind::Edge,
            "upstream = [\"http://10.0.0.1:8080\"]\ninsecure-http-upstream = true\n"
        ),
        Ok(())
    );
    assert_eq!(
        check_text(Kind::Edge, "upstream = [\"http://127.0.0.1:8080\"]\n"),
        Ok(())
    );
    let err = check_text(
        Kind::Edge,
        "upstream = [\"https://edge:s3cret@cp.example:8443\"]\n",
    )
    .unwrap_err();
    assert!(err.contains("key `upstream`"), "{err}");
    assert!(err.contains("carries credentials"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    let err = check_text(Kind::Edge, "upstream = [\"cp.example:8443\"]\n").unwrap_err();
    assert!(err.contains("is not an http:// or https:// URL"), "{err}");
}

#[test]
fn a_flag_turns_a_files_switch_off_or_on() {
    let dir = tempfile::tempdir().unwrap();
    let on = write(
        dir.path(),
        "on.toml",
        "data-dir = \".\"\nserve-feed = true\ninsecure-http = true\ninsecure-http-upstream = true\n[log]\naccess-log = true\n",
    );
    let on = on.to_str().unwrap();
    let m = parse(&["edge", "--config", on]).unwrap();
    for id in [
        "serve_feed",
        "insecure_http",
        "insecure_http_upstream",
        "access_log",
    ] {
        assert_eq!(m.get_one::<bool>(id), Some(&true), "{id}");
    }
    let m = parse(&[
        "edge",
        "--config",
        on,
        "--serve-feed=false",
        "--insecure-http=false",
        "--insecure-http-upstream=false",
        "--access-log=false",
    ])
    .unwrap();
    for id in [
        "serve_feed",
        "insecure_http",
        "insecure_http_upstream",
        "access_log",
    ] {
        assert_eq!(m.get_one::<bool>(id), Some(&false), "{id}");
    }
    let off = write(
        dir.path(),
        "off.toml",
        "data-dir = \".\"\nserve-feed = false\n[log]\naccess-log = false\n",
    );
    let off = off.to_str().unwrap();
    let m = parse(&["edge", "--config", off, "--serve-feed", "--access-log=true"]).unwrap();
    assert_eq!(m.get_one::<bool>("serve_feed"), Some(&true));
    assert_eq!(m.get_one::<bool>("access_log"), Some(&true));
    let m = parse(&["edge", "--config", off]).unwrap();
    assert_eq!(m.get_one::<bool>("serve_feed"), Some(&false));
}

#[test]
fn insecure_http_conflicts_with_tls_only_when_true() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "cert.pem", "x");
    let key = write(dir.path(), "key.pem", "x");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let tls = ["--tls-cert", cert, "--tls-key", key];
    let server = |extra: &[&str]| {
        let mut args = vec!["server", "--data-dir", "d"];
        args.extend_from_slice(&tls);
        args.extend_from_slice(extra);
        parse(&args)
    };
    let err = server(&["--insecure-http"]).unwrap_err();
    assert_eq!(
        err,
        "clap: the argument '--insecure-http' cannot be used with '--tls-cert <FILE>'"
    );
    assert!(server(&["--insecure-http=true"]).is_err());
    assert!(server(&["--insecure-http=false"]).is_ok());
    assert!(server(&[]).is_ok());
    // The file's `insecure-http = true`, turned off by the flag so that TLS may be used.
    let file = write(
        dir.path(),
        "c.toml",
        "data-dir = \".\"\ninsecure-http = true\n",
    );
    let file = file.to_str().unwrap();
    let mut args = vec!["server", "--config", file];
    args.extend_from_slice(&tls);
    let err = parse(&args).unwrap_err();
    assert!(
        err.ends_with(": line 2, column 1: key `insecure-http` cannot be used with --tls-cert"),
        "{err}"
    );
    args.push("--insecure-http=false");
    assert!(parse(&args).is_ok());
    // And the file's `insecure-http = false` beside TLS is no conflict.
    let file = write(
        dir.path(),
        "d.toml",
        &format!(
            "data-dir = \".\"\ninsecure-http = false\n[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n"
        ),
    );
    assert_eq!(check(&file, Kind::Server), Ok(()));
}

#[test]
fn every_switch_with_a_key_takes_true_or_false() {
    let cli = Cli::command();
    for kind in Kind::value_variants() {
        let sub = cli.find_subcommand(kind.name()).unwrap();
        for key in kind.keys() {
            let arg = key.arg(sub).unwrap();
            assert!(
                !matches!(
                    arg.get_action(),
                    clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
                ),
                "--{} is an on-only switch: a flag could not turn off the file's key",
                arg.get_long().unwrap()
            );
        }
    }
}

#[test]
fn the_path_keys_of_the_schema_are_the_flags_hinted_as_paths() {
    let cli = Cli::command();
    for kind in Kind::value_variants() {
        let sub = cli.find_subcommand(kind.name()).unwrap();
        let from_schema: Vec<String> = match kind {
            Kind::Server => keys::paths_of::<schema::ServerFile>(),
            Kind::Edge => keys::paths_of::<schema::EdgeFile>(),
            Kind::Dev => keys::paths_of::<schema::DevFile>(),
        }
        .iter()
        .map(Key::to_string)
        .collect();
        let hinted: Vec<String> = kind
            .keys()
            .into_iter()
            .filter(|k| {
                matches!(
                    k.arg(sub).unwrap().get_value_hint(),
                    clap::ValueHint::FilePath | clap::ValueHint::DirPath | clap::ValueHint::AnyPath
                )
            })
            .map(|k| k.to_string())
            .collect();
        assert!(!hinted.is_empty());
        assert_eq!(from_schema, hinted, "{}", kind.name());
    }
}

#[test]
fn a_required_setting_without_a_key_is_named_by_its_flag() {
    use clap::{Arg, Command};
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "c.toml", "listen = \"127.0.0.1:0\"\n");
    let command = Command::new("coffer")
        .subcommand(Command::new("edge"))
        .subcommand(Command::new("dev"))
        .subcommand(
            Command::new("server")
                .arg(
                    Arg::new("config")
                        .long("config")
                        .value_parser(clap::value_parser!(PathBuf)),
                )
                .arg(Arg::new("listen").long("listen"))
                .arg(
                    Arg::new("secret")
                        .long("secret")
                        .env("COFFER_TEST_SECRET_NEVER_SET")
                        .required(true),
                ),
        );
    let args: Vec<OsString> = ["coffer", "server", "--config", file.to_str().unwrap()]
        .into_iter()
        .map(OsString::from)
        .collect();
    let Err(Failure::File(err)) = matches(command, &args) else {
        panic!("a file failure");
    };
    assert_eq!(
        err,
        format!(
            "{}: --secret is required (or COFFER_TEST_SECRET_NEVER_SET)",
            file.display()
        )
    );
}
