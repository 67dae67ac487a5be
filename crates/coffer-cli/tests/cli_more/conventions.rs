//! A CLI that reads well: tables that fit 100 columns (and `--wide`), one way to name what is
//! created, `coffer deploy` finding its file, the audit table, and one JSON name for every new
//! token. `coffer` against a real `coffer server` (helpers in `common`).

use std::path::Path;

use serde_json::Value;

use crate::common::*;

const WIDTH: usize = 100;

/// A command that succeeds with a table: every line within 100 columns (but the one that shows
/// a new token, which is never cut); its output.
#[track_caller]
fn fits(out: Out) -> String {
    let out = out.ok();
    assert!(!out.stdout.is_empty(), "{out:#?}");
    for line in out
        .stdout
        .lines()
        .filter(|l| !l.contains(" token:  coffer"))
    {
        let n = line.chars().count();
        assert!(n <= WIDTH, "{n} columns:\n{line}\nin:\n{}", out.stdout);
    }
    out.stdout
}

/// The header of the first table in `text`, split into column names.
fn header(text: &str, line: usize) -> Vec<String> {
    cells(text.lines().nth(line).unwrap())
}

fn wrangler_toml(dir: &Path, file: &str, store: &str) {
    std::fs::write(
        dir.join(file),
        format!(
            r#"name = "ai-gateway"
main = "src/index.js"

[[secrets_store_secrets]]
binding = "OPENAI_KEY"
store_id = "{store}"
secret_name = "openai-key"

[[secrets_store_stores]]
binding = "SHARED"
store_id = "{store}"
"#
        ),
    )
    .unwrap();
}

/// `coffer ARGS` run in `dir`.
fn run_in(conn: &Conn, dir: &Path, args: &[&str]) -> Out {
    let mut cmd = conn.cmd(args);
    cmd.current_dir(dir);
    run(cmd, None)
}

#[test]
fn every_table_fits_100_columns_and_wide_shows_everything() {
    let (tmp, _data, _server, conn) = setup();
    // What a first week looks like: a store, secrets with comments and two scopes, tokens that
    // expire, a service with its bindings, an edge node, a second account.
    let out = fits(conn.run(&["store", "create", "production"]));
    assert_eq!(header(&out, 0), ["Name", "ID", "Created", "Modified"]);
    let created = conn.run_with_stdin(
        &[
            "secret",
            "create",
            "production",
            "openai-key",
            "--scopes",
            "workers,ai_gateway",
            "--comment",
            "OpenAI key of the gateway",
        ],
        "sk-v4lue",
    );
    let out = fits(created);
    assert_eq!(header(&out, 0), ["Name", "ID", "Comment", "Scopes"]);
    assert!(out.contains("OpenAI key of the gateway"), "{out}");
    assert!(out.contains("workers,ai_gateway"), "{out}");
    conn.run_with_stdin(
        &[
            "secret",
            "create",
            "production",
            "stripe-live-key",
            "--scopes",
            "workers",
            "--comment",
            "Stripe live mode, rotated quarterly by the payments team",
        ],
        "rk-v4lue",
    )
    .ok();
    fits(conn.run(&[
        "secret",
        "update",
        "production",
        "--secret-id",
        "openai-key",
        "--comment",
        "OpenAI key of the gateway (rotated)",
    ]));
    fits(conn.run(&[
        "secret",
        "duplicate",
        "production",
        "openai-key-staging",
        "--secret-id",
        "openai-key",
        "--scopes",
        "workers",
    ]));
    let out = fits(conn.run(&["secret", "list", "production"]));
    // The store is the one named: not repeated on every row. Times to the second.
    let store = conn
        .run(&["store", "get", "production", "--json"])
        .ok()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!out.contains(&store), "{out}");
    assert!(!out.contains(".000") && !out.contains('.'), "{out}");
    // A long comment is cut to fit, and whole with --wide.
    let out = fits(conn.run(&["secret", "get", "production", "--secret-id", "openai-key"]));
    assert!(out.contains("OpenAI key of the gateway (rotate…"), "{out}");
    let out = conn
        .run(&[
            "secret",
            "get",
            "production",
            "--secret-id",
            "openai-key",
            "--wide",
        ])
        .ok()
        .stdout;
    assert!(out.contains("OpenAI key of the gateway (rotated)"), "{out}");
    fits(conn.run(&["store", "list"]));
    fits(conn.run(&["store", "get", "production"]));

    conn.run(&[
        "token",
        "create",
        "ci-deploy",
        "--role",
        "secrets_store_deployer",
        "--expires-in",
        "30d",
    ])
    .ok();
    let out = fits(conn.run(&["token", "list"]));
    assert_eq!(header(&out, 0), ["Name", "ID", "Role", "Status", "Expires"]);
    assert!(out.contains("super_admin (operator)"), "{out}");
    fits(conn.run(&["token", "get", "ci-deploy"]));

    wrangler_toml(tmp.path(), "wrangler.toml", &store);
    fits(run_in(&conn, tmp.path(), &["deploy"]));
    let out = fits(conn.run(&["service", "list"]));
    assert_eq!(
        header(&out, 0),
        ["Name", "ID", "Type", "Bindings", "Modified"]
    );
    let out = fits(conn.run(&["service", "get", "ai-gateway"]));
    assert!(out.contains("(every secret with scope workers)"), "{out}");
    fits(conn.run(&["service", "token", "list", "ai-gateway"]));

    fits(conn.run(&["node", "create", "edge-1.fra"]));
    fits(conn.run(&["node", "list"]));
    fits(conn.run(&["account", "create", "team-payments"]));
    fits(conn.run(&["account", "list"]));
    fits(conn.run(&["account", "get"]));
    fits(conn.run(&["quota", "set", "500"]));
    fits(conn.run(&["quota"]));
    fits(conn.run(&["whoami"]));
    let out = fits(conn.run(&["audit", "list"]));
    assert_eq!(
        header(&out, 0),
        ["Time", "Actor", "Action", "Resource", "Detail"]
    );

    // --wide: every column, wrangler's for secrets, whole cells.
    let out = conn
        .run(&["secret", "list", "production", "--wide"])
        .ok()
        .stdout;
    assert_eq!(
        header(&out, 0),
        [
            "Name", "ID", "StoreID", "Comment", "Scopes", "Status", "Created", "Modified"
        ]
    );
    assert!(out.contains(&store), "{out}");
    assert!(
        out.contains("Stripe live mode, rotated quarterly by the payments team"),
        "{out}"
    );
    let out = conn.run(&["token", "list", "--wide"]).ok().stdout;
    assert_eq!(
        header(&out, 0),
        [
            "Name",
            "ID",
            "Role",
            "Status",
            "Issued",
            "Expires",
            "Last used",
            "Revoked"
        ]
    );
    let out = conn.run(&["audit", "list", "--wide"]).ok().stdout;
    assert_eq!(
        header(&out, 0),
        [
            "Seq", "Time", "Actor", "Action", "Outcome", "Resource", "Detail", "Request", "Client"
        ]
    );
    let out = conn.run(&["store", "list", "--wide"]).ok().stdout;
    assert!(header(&out, 0).contains(&"AccountID".to_owned()), "{out}");
    assert!(out.contains(&conn.account), "{out}");
}

#[test]
fn text_that_would_not_show_as_itself_is_escaped() {
    let (_tmp, _data, _server, conn) = setup();
    create_store(&conn, "prod");
    // A right-to-left override makes `report\u{202e}fdp.exe` read as `reportexe.pdf`.
    let comment = "report\u{202e}fdp.exe \u{200b}\u{feff}";
    conn.run_with_stdin(
        &[
            "secret",
            "create",
            "prod",
            "k",
            "--scopes",
            "workers",
            "--comment",
            comment,
        ],
        "v",
    )
    .ok();
    for args in [
        &["secret", "list", "prod"][..],
        &["secret", "list", "prod", "--wide"],
        &["secret", "get", "prod", "--secret-id", "k"],
    ] {
        let out = conn.run(args).ok().stdout;
        assert!(
            out.contains("report\\u{202e}fdp.exe \\u{200b}\\u{feff}"),
            "{args:?}: {out}"
        );
        for c in ['\u{202e}', '\u{200b}', '\u{feff}'] {
            assert!(!out.contains(c), "{args:?}: {c:?} in {out}");
        }
    }
    // --json is data: the comment as it is.
    let v = conn.run(&["secret", "list", "prod", "--json"]).ok().json();
    assert_eq!(v["result"][0]["comment"], comment);
}

#[test]
fn the_audit_table_names_bindings_nodes_actors_and_reasons() {
    let (tmp, _data, _server, conn) = setup();
    let store = create_store(&conn, "prod");
    create_secret(&conn, "prod", "openai-key", "workers", "v");
    wrangler_toml(tmp.path(), "wrangler.toml", &store);
    run_in(&conn, tmp.path(), &["deploy"]).ok();
    conn.run(&["node", "create", "edge-1.fra"]).ok();
    let v = conn
        .run(&[
            "token",
            "create",
            "viewer",
            "--role",
            "secrets_store_reporter",
            "--json",
        ])
        .ok()
        .json();
    let viewer = conn.as_(v["token"].as_str().unwrap(), "");
    let out = viewer.run(&["store", "create", "nope"]);
    assert!(out.one_error_line(1).contains("forbidden"), "{out:#?}");

    // By default within 100 columns (long cells cut); every cell whole with --wide.
    let out = fits(conn.run(&["audit", "list", "--per-page", "100"]));
    assert!(out.contains("  create denied  "), "{out}");
    let wide = conn
        .run(&["audit", "list", "--per-page", "100", "--wide"])
        .ok()
        .stdout;
    // Actor, action, outcome, resource and detail of the row holding `needle`.
    let row = |text: &str, needle: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no row with {needle:?}:\n{text}"));
        cells(line)[2..7].to_vec()
    };
    // Actors by name and id (names are not unique), the operator marked.
    let init = conn.token.split('_').nth(1).unwrap();
    let init = format!("init ({init}, operator)");
    let viewer_id = v["id"].as_str().unwrap();
    let viewer_actor = format!("viewer ({viewer_id})");
    assert!(
        out.contains(&format!("viewer ({}…)", &viewer_id[..8])),
        "{out}"
    );
    assert_eq!(
        row(&wide, "binding ai-gateway.OPENAI_KEY"),
        [
            init.as_str(),
            "bind",
            "success",
            "secret openai-key",
            "binding ai-gateway.OPENAI_KEY"
        ]
    );
    assert_eq!(
        row(&wide, "binding ai-gateway.SHARED"),
        [
            init.as_str(),
            "bind",
            "success",
            &format!("store {store}"),
            "binding ai-gateway.SHARED"
        ]
    );
    assert_eq!(
        row(&wide, "node edge-1.fra"),
        [init.as_str(), "create", "success", "node edge-1.fra", "-"]
    );
    assert_eq!(
        row(&wide, "store nope"),
        [
            viewer_actor.as_str(),
            "create",
            "denied",
            "store nope",
            "missing permission secrets_store:edit"
        ]
    );

    // Filters: by name, and actions the log records (anything else is refused, listing them).
    let v = conn
        .run(&["audit", "list", "--actor", "viewer", "--json"])
        .ok()
        .json();
    let entries = v["result"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(
        entries.iter().all(|e| e["actor"]["token_name"] == "viewer"),
        "{v}"
    );
    let v = conn
        .run(&[
            "audit",
            "list",
            "--store-id",
            "prod",
            "--secret-id",
            "openai-key",
            "--action",
            "bind",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(v["result"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["result"][0]["resource"]["binding"], "OPENAI_KEY");
    assert_eq!(v["result"][0]["resource"]["secret_name"], "openai-key");
    let v = conn
        .run(&["audit", "list", "--outcome", "denied", "--json"])
        .ok()
        .json();
    assert_eq!(v["result"].as_array().unwrap().len(), 1, "{v}");

    let out = conn.run(&["audit", "list", "--action", "bogus"]);
    assert_eq!(out.status.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr
            .starts_with("error: invalid value 'bogus' for '--action <ACTION>'"),
        "{out:#?}"
    );
    assert!(
        out.stderr.contains(
            "[possible values: access, bind, create, delete, list, login, read, read_audit, \
             revoke, unbind, update, verify_audit]"
        ),
        "{out:#?}"
    );
    let out = conn.run(&["audit", "list", "--secret-id", "openai-key"]);
    assert_eq!(
        out.one_error_line(2),
        "error: --secret-id \"openai-key\" is not an id: give the secret's id, or its store with \
         --store-id"
    );
    let out = conn.run(&["audit", "list", "--actor", "nobody"]);
    assert_eq!(out.one_error_line(1), "error: no token named \"nobody\"");

    // --actor by name means every token of that name, revoked ones too: several is an error
    // listing them; the id says which.
    conn.run(&["token", "revoke", "viewer"]).ok();
    let again = conn
        .run(&[
            "token",
            "create",
            "viewer",
            "--role",
            "secrets_store_reporter",
            "--json",
        ])
        .ok()
        .json();
    let again = again["id"].as_str().unwrap();
    let out = conn.run(&["audit", "list", "--actor", "viewer"]);
    assert_eq!(
        out.one_error_line(1),
        format!("error: 2 tokens are named \"viewer\": {viewer_id}, {again}; give the id instead")
    );
    let v = conn
        .run(&["audit", "list", "--actor", viewer_id, "--json"])
        .ok()
        .json();
    let entries = v["result"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(
        entries.iter().all(|e| e["actor"]["token_id"] == viewer_id),
        "{v}"
    );
}

#[test]
fn deploy_reads_the_wrangler_file_in_the_current_directory() {
    let (tmp, _data, _server, conn) = setup();
    let store = create_store(&conn, "prod");
    create_secret(&conn, "prod", "openai-key", "workers", "v");
    let dir = tmp.path().join("app");
    std::fs::create_dir(&dir).unwrap();
    let shown = dir.display().to_string();

    let out = run_in(&conn, &dir, &["deploy"]);
    assert_eq!(
        out.one_error_line(2),
        format!(
            "error: no wrangler.toml, wrangler.jsonc or wrangler.json in {shown}: give the file \
             with --config"
        )
    );

    wrangler_toml(&dir, "wrangler.toml", &store);
    let v = run_in(&conn, &dir, &["deploy", "--json"]).ok().json();
    assert_eq!(
        (v["name"].as_str(), v["first_deploy"].as_bool()),
        (Some("ai-gateway"), Some(true))
    );

    // Two candidates: neither is guessed.
    std::fs::write(
        dir.join("wrangler.jsonc"),
        format!(
            r#"{{ "name": "other", "secrets_store_secrets": [
                {{ "binding": "K", "store_id": "{store}", "secret_name": "openai-key" }} ] }}"#
        ),
    )
    .unwrap();
    let out = run_in(&conn, &dir, &["deploy"]);
    assert_eq!(
        out.one_error_line(2),
        format!(
            "error: 2 configuration files in {shown}: wrangler.toml, wrangler.jsonc; say which \
             to deploy with --config"
        )
    );
    let v = run_in(
        &conn,
        &dir,
        &["deploy", "--config", "wrangler.jsonc", "--json"],
    )
    .ok()
    .json();
    assert_eq!(v["name"], "other");
    // A problem in the file found names it.
    std::fs::remove_file(dir.join("wrangler.jsonc")).unwrap();
    std::fs::write(dir.join("wrangler.toml"), "name = 3\n").unwrap();
    let out = run_in(&conn, &dir, &["deploy"]);
    assert!(
        out.one_error_line(1).starts_with("error: wrangler.toml: "),
        "{out:#?}"
    );
    // A wrangler.toml that is too large, or a link to a device: refused at once, in one line.
    std::fs::write(dir.join("wrangler.toml"), "#".repeat(1024 * 1024 + 1)).unwrap();
    let out = run_in(&conn, &dir, &["deploy"]);
    assert_eq!(
        out.one_error_line(1),
        "error: wrangler.toml: is larger than 1 MiB (1048576 bytes), the most a configuration \
         file may hold"
    );
    std::fs::remove_file(dir.join("wrangler.toml")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("wrangler.toml")).unwrap();
    let out = run_in(&conn, &dir, &["deploy"]);
    assert_eq!(
        out.one_error_line(1),
        "error: wrangler.toml: is not a regular file (a device, FIFO or socket): give the \
         configuration file itself"
    );
}

#[test]
fn names_are_given_the_same_way_when_creating_anything() {
    let (_tmp, _data, _server, conn) = setup();
    for args in [
        &["store", "create", "a-store", "--json"][..],
        &["store", "create", "--name", "b-store", "--json"],
        &[
            "token",
            "create",
            "a-token",
            "--role",
            "secrets_store_reporter",
            "--json",
        ],
        &[
            "token",
            "create",
            "--name",
            "b-token",
            "--role",
            "secrets_store_reporter",
            "--json",
        ],
        &["node", "create", "a-node", "--json"],
        &["node", "create", "--name", "b-node", "--json"],
        &["account", "create", "a-account", "--json"],
        &["account", "create", "--name", "b-account", "--json"],
    ] {
        let v = conn.run(args).ok().json();
        let want = args
            .iter()
            .find(|a| a.starts_with("a-") || a.starts_with("b-"))
            .unwrap();
        assert_eq!(v["name"], *want, "{args:?}");
    }
    for (args, name) in [
        (&["secret", "create", "a-store", "a-secret"][..], "a-secret"),
        (
            &["secret", "create", "a-store", "--name", "b-secret"],
            "b-secret",
        ),
        (
            &["secret", "create", "--store-id", "a-store", "c-secret"],
            "c-secret",
        ),
        (
            &[
                "secret",
                "create",
                "--name",
                "d-secret",
                "--store-id",
                "a-store",
            ],
            "d-secret",
        ),
    ] {
        let args = [args, &["--scopes", "workers", "--json"]].concat();
        let v = conn.run_with_stdin(&args, "v").ok().json();
        assert_eq!(v[0]["name"], name, "{args:?}");
    }
    let v = conn
        .run(&[
            "secret",
            "duplicate",
            "a-store",
            "e-secret",
            "--secret-id",
            "a-secret",
            "--scopes",
            "workers",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(v["name"], "e-secret");
    // Given twice: one line, before anything is read or sent.
    let out = conn.run_with_stdin(
        &[
            "secret", "create", "a-store", "x", "--name", "y", "--scopes", "workers",
        ],
        "v",
    );
    assert_eq!(
        out.one_error_line(2),
        "error: the name is given twice, as \"x\" and with --name: give one of them"
    );
}

/// The value of `key` in a `--json` result, which must equal its `token`.
#[track_caller]
fn token_named(v: &Value, key: &str) -> String {
    let token = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {v}"));
    assert_eq!(v[key], token, "{key} and token differ: {v}");
    token.to_owned()
}

#[test]
fn every_new_token_is_named_token_in_json() {
    let (tmp, _data, server, conn) = setup();
    let store = create_store(&conn, "prod");
    create_secret(&conn, "prod", "openai-key", "workers", "v");
    // An API token (and its old name, `value`).
    let v = conn
        .run(&[
            "token",
            "create",
            "ci",
            "--role",
            "secrets_store_reporter",
            "--json",
        ])
        .ok()
        .json();
    let api = token_named(&v, "value");
    assert!(api.starts_with("coffer_"), "{v}");
    // A service token, at the first deploy and at a rotation (`service_token`).
    wrangler_toml(tmp.path(), "wrangler.toml", &store);
    let v = run_in(&conn, tmp.path(), &["deploy", "--json"]).ok().json();
    assert!(token_named(&v, "service_token").starts_with("coffersvc_"));
    let v = run_in(&conn, tmp.path(), &["deploy", "--json"]).ok().json();
    assert!(
        v.get("token").is_none() && v.get("service_token").is_none(),
        "{v}"
    );
    let v = conn
        .run(&["service", "token", "rotate", "ai-gateway", "--json"])
        .ok()
        .json();
    assert!(token_named(&v, "service_token").starts_with("coffersvc_"));
    // A node token (`node_token`).
    let v = conn
        .run(&["node", "create", "edge-1", "--json"])
        .ok()
        .json();
    assert!(token_named(&v, "node_token").starts_with("coffernode_"));
    // The tokens work: the API token says who it is.
    let v = conn.as_(&api, "").run(&["whoami", "--json"]).ok().json();
    assert_eq!(v["name"], "ci");
    drop(server);
}
