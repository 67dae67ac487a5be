//! Values are stored byte for byte: what goes in with `--value`, `--value-file` or standard
//! input is exactly what a bound service reads back, through the runtime API and through
//! `coffer run`. Against a real `coffer server` (helpers in `common`).

use std::path::Path;

use crate::common::*;

/// How a test value is given to `secret create` / `secret update`.
enum How<'a> {
    Flag(&'a str),
    File(&'a Path),
    Stdin(&'a str),
    /// Standard input with `--keep-trailing-newline`.
    StdinKept(&'a str),
}

fn value_args(how: &How<'_>) -> (Vec<String>, Option<String>) {
    match how {
        How::Flag(v) => (vec!["--value".into(), (*v).to_owned()], None),
        How::File(p) => (
            vec!["--value-file".into(), p.to_str().unwrap().to_owned()],
            None,
        ),
        How::Stdin(s) => (vec![], Some((*s).to_owned())),
        How::StdinKept(s) => (
            vec!["--keep-trailing-newline".into()],
            Some((*s).to_owned()),
        ),
    }
}

fn create(conn: &Conn, store: &str, name: &str, how: &How<'_>) -> Out {
    let (extra, stdin) = value_args(how);
    let mut args = vec![
        "secret", "create", store, "--name", name, "--scopes", "workers", "--json",
    ];
    args.extend(extra.iter().map(String::as_str));
    run(conn.cmd(&args), stdin.as_deref().map(str::as_bytes))
}

fn update(conn: &Conn, store: &str, id: &str, how: &How<'_>) -> Out {
    let (mut extra, stdin) = value_args(how);
    if stdin.is_some() {
        extra.extend(["--value".to_owned(), "-".to_owned()]);
    }
    let mut args = vec!["secret", "update", store, "--secret-id", id, "--json"];
    args.extend(extra.iter().map(String::as_str));
    run(conn.cmd(&args), stdin.as_deref().map(str::as_bytes))
}

const PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEINotARealKeyJustBytesForTheTest0123456789ab\n\
                   -----END PRIVATE KEY-----\n";

/// Every binding's value as the service reads it: one GET per binding (the body's bytes), and
/// the variables `coffer run` gives a command (written to files by the command itself).
fn read_back(
    server: &Server,
    token: &str,
    dir: &Path,
    bindings: &[&str],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let script: String = bindings
        .iter()
        .map(|b| format!("printf %s \"${b}\" > '{}'; ", dir.join(b).display()))
        .collect();
    run(coffer_run(&server.url, token, &["sh", "-c", &script]), None).ok();
    bindings
        .iter()
        .map(|b| {
            let r = runtime_get(&server.url, token, &format!("/runtime/v1/bindings/{b}"));
            assert_eq!(r.status, 200, "{b}: {r:?}");
            (r.body, std::fs::read(dir.join(b)).unwrap())
        })
        .collect()
}

#[test]
fn values_are_read_back_through_a_binding_byte_for_byte() {
    let (tmp, _data, server, conn) = setup();
    let store = create_store(&conn, "prod");
    let pem_file = tmp.path().join("key.pem");
    std::fs::write(&pem_file, PEM).unwrap();
    let utf8 = "  naïve ✓ 日本語 🔑\u{a0}";
    let utf8_line = format!("{utf8}\n");

    // (binding, secret name, how it is given, what must be stored)
    let cases: Vec<(&str, &str, How<'_>, String)> = vec![
        (
            "PADDED",
            "padded",
            How::Flag("  padded  "),
            "  padded  ".into(),
        ),
        ("TABS", "tabs", How::Flag("\tx\ty\t"), "\tx\ty\t".into()),
        (
            "CRLF",
            "crlf",
            How::Flag("l1\r\nl2\r\n"),
            "l1\r\nl2\r\n".into(),
        ),
        ("PEM", "pem", How::File(&pem_file), PEM.into()),
        ("UTF8", "utf8", How::Flag(utf8), utf8.into()),
        // Standard input: exactly one trailing newline is dropped, and nothing else.
        (
            "STDIN_UTF8",
            "stdin-utf8",
            How::Stdin(&utf8_line),
            utf8.into(),
        ),
        (
            "STDIN_CRLF",
            "stdin-crlf",
            How::Stdin(" a b \r\n"),
            " a b ".into(),
        ),
        (
            "STDIN_TWO",
            "stdin-two",
            How::Stdin("two\n\n"),
            "two\n".into(),
        ),
        (
            "STDIN_KEPT",
            "stdin-kept",
            How::StdinKept("kept\r\n"),
            "kept\r\n".into(),
        ),
    ];
    for (_, name, how, _) in &cases {
        let out = create(&conn, &store, name, how).ok();
        assert_eq!(out.json()[0]["name"], *name, "{out:#?}");
    }
    let mut toml = "name = \"values\"\n".to_owned();
    for (binding, name, _, _) in &cases {
        toml.push_str(&format!(
            "[[secrets_store_secrets]]\nbinding = \"{binding}\"\nstore_id = \"{store}\"\n\
             secret_name = \"{name}\"\n"
        ));
    }
    let config = tmp.path().join("wrangler.toml");
    std::fs::write(&config, toml).unwrap();
    let deployed = conn
        .run(&["deploy", "--config", config.to_str().unwrap(), "--json"])
        .ok()
        .json();
    let token = deployed["service_token"].as_str().unwrap().to_owned();

    let bindings: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let got = read_back(&server, &token, tmp.path(), &bindings);
    for ((binding, _, _, want), (body, env)) in cases.iter().zip(&got) {
        assert_eq!(
            String::from_utf8_lossy(body),
            *want,
            "{binding} through the runtime API"
        );
        assert_eq!(
            String::from_utf8_lossy(env),
            *want,
            "{binding} through coffer run"
        );
    }

    // `secret update` stores exactly the new value the same ways.
    let ids: Vec<String> = {
        let list = conn
            .run(&["secret", "list", &store, "--per-page", "100", "--json"])
            .ok()
            .json();
        cases
            .iter()
            .map(|(_, name, _, _)| {
                list["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["name"] == *name)
                    .unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let new_pem = tmp.path().join("new.pem");
    let new_pem_text = format!("{PEM}\n");
    std::fs::write(&new_pem, &new_pem_text).unwrap();
    let updates: Vec<(usize, How<'_>, &str)> = vec![
        (0, How::Flag(" \tnew padded\t "), " \tnew padded\t "),
        (3, How::File(&new_pem), &new_pem_text),
        (5, How::Stdin("é\r\n"), "é"),
        (8, How::StdinKept("still kept\n"), "still kept\n"),
    ];
    for (i, how, _) in &updates {
        update(&conn, &store, &ids[*i], how).ok();
    }
    let updated: Vec<&str> = updates.iter().map(|(i, _, _)| cases[*i].0).collect();
    let got = read_back(&server, &token, tmp.path(), &updated);
    for ((i, _, want), (body, env)) in updates.iter().zip(&got) {
        assert_eq!(
            String::from_utf8_lossy(body),
            *want,
            "{} updated",
            cases[*i].0
        );
        assert_eq!(
            String::from_utf8_lossy(env),
            *want,
            "{} updated",
            cases[*i].0
        );
    }
    assert!(!server.log().contains("new padded"));
}

#[test]
fn bad_value_input_is_one_line_and_nothing_is_created() {
    let (tmp, _data, _server, conn) = setup();
    let store = create_store(&conn, "prod");
    let secret = |name: &str, extra: &[&str], stdin: Option<&str>| {
        let mut args = vec![
            "secret", "create", &store, "--name", name, "--scopes", "workers",
        ];
        args.extend(extra);
        run(conn.cmd(&args), stdin.map(str::as_bytes))
    };

    let missing = tmp.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let line = secret("a", &["--value-file", missing], None)
        .one_error_line(1)
        .to_owned();
    assert!(
        line.starts_with(&format!(
            "error: the value file {missing} cannot be read: No such file or directory"
        )),
        "{line}"
    );
    let dir = tmp.path().to_str().unwrap();
    assert_eq!(
        secret("a", &["--value-file", dir], None).one_error_line(1),
        format!("error: the value file {dir} is a directory")
    );
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.to_str().unwrap();
    assert_eq!(
        secret("a", &["--value-file", empty], None).one_error_line(1),
        format!("error: the value file {empty} is empty")
    );
    let latin1 = tmp.path().join("latin1");
    std::fs::write(&latin1, b"caf\xe9").unwrap();
    let latin1 = latin1.to_str().unwrap();
    assert_eq!(
        secret("a", &["--value-file", latin1], None).one_error_line(1),
        format!("error: the value file {latin1} is not valid UTF-8")
    );
    let big = tmp.path().join("big");
    std::fs::write(&big, "x".repeat(65_537)).unwrap();
    let big = big.to_str().unwrap();
    assert_eq!(
        secret("a", &["--value-file", big], None).one_error_line(1),
        format!(
            "error: the value file {big} holds 65537 bytes; the limit for a secret value is \
             65536 bytes"
        )
    );
    // Only the newline standard input ends with is dropped: a lone newline is an empty value.
    for stdin in ["", "\n", "\r\n"] {
        assert_eq!(
            secret("a", &[], Some(stdin)).one_error_line(1),
            "error: the secret value is empty"
        );
    }
    // Usage errors: exit status 2.
    let out = secret("a", &["--value", "x", "--value-file", empty], None);
    assert_eq!(out.status.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("cannot be used with"), "{out:#?}");
    let line = secret("a", &["--value", "x", "--keep-trailing-newline"], None)
        .one_error_line(2)
        .to_owned();
    assert!(
        line.starts_with(
            "error: --keep-trailing-newline applies to a value read from standard input"
        ),
        "{line}"
    );
    let out = secret(
        "a",
        &["--value-file", empty, "--keep-trailing-newline"],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{out:#?}");
    let out = conn.run(&[
        "secret",
        "update",
        &store,
        "--secret-id",
        &"0".repeat(32),
        "--keep-trailing-newline",
    ]);
    assert!(
        out.one_error_line(2).starts_with(
            "error: --keep-trailing-newline applies to a value read from standard input"
        ),
        "{out:#?}"
    );

    let list = conn.run(&["secret", "list", &store, "--json"]).ok().json();
    assert_eq!(list["result_info"]["total_count"], 0, "{list}");
}
