//! End-to-end tests of the `coffer` binary against a real `coffer server` on a temp data dir
//! (helpers in `common`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use serde_json::Value;

use common::*;

#[test]
fn full_flow_with_json_never_shows_a_value() {
    let (_tmp, _data, server, conn) = setup();
    let create_value = "v4lue-at-create-Zq81x";
    let update_value = "v4lue-at-update-Pw27k";
    let literal_value = "v4lue-by-flag-Kk02m";
    let mut outputs: Vec<Out> = Vec::new();

    let store = create_store(&conn, "prod");

    let out = conn.run(&["store", "list", "--json"]).ok();
    let v = out.json();
    assert_eq!(v["result"].as_array().unwrap().len(), 1);
    assert_eq!(v["result"][0]["id"], store.as_str());
    assert_eq!(v["result_info"]["total_count"], 1);
    outputs.push(out);

    let out = conn
        .run(&["store", "get", "--store-id", &store, "--json"])
        .ok();
    assert_eq!(out.json()["name"], "prod");
    outputs.push(out);

    // Value from standard input, with the trailing newline `echo` adds.
    let out = conn
        .run_with_stdin(
            &[
                "secret",
                "create",
                &store,
                "--name",
                "openai-key",
                "--scopes",
                "workers, ai_gateway",
                "--comment",
                "prod key",
                "--json",
            ],
            &format!("{create_value}\n"),
        )
        .ok();
    let created = out.json();
    assert_eq!(created.as_array().unwrap().len(), 1);
    let secret = created[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(created[0]["name"], "openai-key");
    assert_eq!(created[0]["comment"], "prod key");
    assert!(created[0].get("value").is_none());
    let mut scopes: Vec<&str> = created[0]["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    scopes.sort();
    assert_eq!(scopes, ["ai_gateway", "workers"]);
    outputs.push(out);

    // A value given with --value works, with a warning on stderr.
    let out = conn
        .run(&[
            "secret",
            "create",
            "--store-id",
            &store,
            "--name",
            "by-flag",
            "--scopes",
            "workers",
            "--value",
            literal_value,
        ])
        .ok();
    assert!(out.stderr.contains("shell history"), "{out:#?}");
    assert!(out.stdout.contains("by-flag"), "{out:#?}");
    outputs.push(out);

    let out = conn
        .run(&["secret", "list", "--store-id", &store, "--json"])
        .ok();
    let v = out.json();
    assert_eq!(v["result_info"]["total_count"], 2);
    outputs.push(out);

    let out = conn
        .run(&["secret", "list", &store, "--search", "openai", "--json"])
        .ok();
    let v = out.json();
    assert_eq!(v["result"].as_array().unwrap().len(), 1);
    assert_eq!(v["result"][0]["id"], secret.as_str());
    outputs.push(out);

    let out = conn
        .run(&["secret", "list", &store, "--scopes", "ai_gateway", "--json"])
        .ok();
    let v = out.json();
    assert_eq!(v["result"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["result"][0]["id"], secret.as_str());
    outputs.push(out);

    let out = conn
        .run(&["secret", "get", &store, "--secret-id", &secret, "--json"])
        .ok();
    assert_eq!(out.json()["id"], secret.as_str());
    outputs.push(out);

    // `--value -` reads the new value from standard input.
    let out = conn
        .run_with_stdin(
            &[
                "secret",
                "update",
                &store,
                "--secret-id",
                &secret,
                "--value",
                "-",
                "--scopes",
                "workers",
                "--comment",
                "rotated",
                "--json",
            ],
            update_value,
        )
        .ok();
    let v = out.json();
    assert_eq!(v["comment"], "rotated");
    assert_eq!(v["scopes"], serde_json::json!(["workers"]));
    outputs.push(out);

    let out = conn
        .run(&[
            "secret",
            "duplicate",
            &store,
            "--secret-id",
            &secret,
            "--name",
            "openai-key-copy",
            "--scopes",
            "workers",
            "--json",
        ])
        .ok();
    let copy = out.json()["id"].as_str().unwrap().to_owned();
    assert_ne!(copy, secret);
    outputs.push(out);

    // Human output too.
    let out = conn.run(&["secret", "list", &store]).ok();
    assert!(out.stdout.starts_with("Name"), "{out:#?}");
    assert!(out.stdout.contains("openai-key-copy"));
    assert!(out.stdout.contains("3 secrets in all"), "{out:#?}");
    outputs.push(out);

    let out = conn.run(&["quota", "--json"]).ok();
    assert_eq!(out.json()["secrets"]["usage"], 3);
    outputs.push(out);

    // Bulk delete with a comma-separated list, then a single delete.
    let by_flag = {
        let v = conn
            .run(&["secret", "list", &store, "--search", "by-flag", "--json"])
            .ok()
            .json();
        v["result"][0]["id"].as_str().unwrap().to_owned()
    };
    let out = conn
        .run(&[
            "secret",
            "delete",
            &store,
            "--secret-id",
            &format!("{copy},{by_flag}"),
        ])
        .ok();
    assert!(out.stdout.contains("Deleted 2 secrets"), "{out:#?}");
    outputs.push(out);
    let out = conn
        .run(&["secret", "delete", &store, "--secret-id", &secret, "--json"])
        .ok();
    assert_eq!(out.json(), Value::Null);
    outputs.push(out);
    let out = conn.run(&["secret", "list", &store, "--json"]).ok();
    assert_eq!(out.json()["result_info"]["total_count"], 0);
    outputs.push(out);

    // A store with a secret needs --force.
    create_secret(&conn, &store, "last", "dex", create_value);
    let out = conn.run(&["store", "delete", &store]);
    let line = out.one_error_line(1);
    assert!(line.contains("1302 store_not_empty"), "{line}");
    assert!(line.contains("--force"), "{line}");
    outputs.push(out);
    let out = conn.run(&["store", "delete", &store, "--force"]).ok();
    assert!(out.stdout.contains("Deleted store"), "{out:#?}");
    outputs.push(out);
    let out = conn.run(&["store", "list", "--json"]).ok();
    assert_eq!(out.json()["result"], serde_json::json!([]));
    outputs.push(out);

    for out in &outputs {
        for value in [create_value, update_value] {
            assert!(!out.stdout.contains(value), "value on stdout: {out:#?}");
            assert!(!out.stderr.contains(value), "value on stderr: {out:#?}");
        }
    }
    let log = server.log();
    assert!(
        log.contains("/secrets"),
        "the server logged no requests: {log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log that is not a terminal"
    );
    for value in [create_value, update_value, literal_value] {
        assert!(!log.contains(value), "value in the server log");
    }
}

#[test]
fn empty_and_oversized_values_are_refused_before_any_request() {
    let (_tmp, _data, _server, conn) = setup();
    let store = create_store(&conn, "s");
    let create = |name: &str, stdin: &str| {
        conn.run_with_stdin(
            &[
                "secret", "create", &store, "--name", name, "--scopes", "workers",
            ],
            stdin,
        )
    };

    // Standard input less its one trailing newline: nothing left.
    for empty in ["", "\n", "\r\n"] {
        let out = create("empty", empty);
        assert_eq!(out.one_error_line(1), "error: the secret value is empty");
    }

    let out = create("big", &"x".repeat(65_537));
    let line = out.one_error_line(1);
    assert!(
        line.contains("65537 bytes") && line.contains("65536"),
        "{line}"
    );

    // Exactly at the limit is accepted; the trailing newline standard input drops does not
    // count, one that is kept does.
    create("at-limit", &format!("{}\n", "x".repeat(65_536))).ok();
    let out = conn.run_with_stdin(
        &[
            "secret",
            "create",
            &store,
            "--name",
            "kept",
            "--scopes",
            "workers",
            "--keep-trailing-newline",
        ],
        &format!("{}\n", "x".repeat(65_536)),
    );
    assert!(out.one_error_line(1).contains("65537 bytes"), "{out:#?}");

    let v = conn.run(&["secret", "list", &store, "--json"]).ok().json();
    let names: Vec<&str> = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["at-limit"]);
}

#[test]
fn server_errors_are_one_line_with_code_and_name() {
    let (_tmp, _data, _server, conn) = setup();
    let store = create_store(&conn, "s");
    create_secret(&conn, &store, "x", "workers", "v");

    let out = conn.run_with_stdin(
        &[
            "secret", "create", &store, "--name", "x", "--scopes", "workers",
        ],
        "v",
    );
    let line = out.one_error_line(1);
    assert!(
        line.starts_with("error: [1301 secret_name_taken] "),
        "{line}"
    );
    assert!(out.stdout.is_empty());

    let out = conn.run(&["store", "get", &"0".repeat(32)]);
    let line = out.one_error_line(1);
    assert!(line.starts_with("error: [1201 store_not_found] "), "{line}");

    // What is not an id is a name.
    let out = conn.run(&["store", "get", "not-an-id"]);
    let line = out.one_error_line(1);
    assert_eq!(line, "error: no store named \"not-an-id\"");

    let out = conn.run_with_stdin(
        &[
            "secret", "create", &store, "--name", "y", "--scopes", "bogus",
        ],
        "v",
    );
    let line = out.one_error_line(1);
    assert!(line.starts_with("error: [1006 invalid_scope] "), "{line}");

    // A wrong token.
    let bad = Conn {
        url: conn.url.clone(),
        token: format!("coffer_{}_{}", "0".repeat(32), "A".repeat(43)),
        account: conn.account.clone(),
    };
    let out = bad.run(&["store", "list"]);
    let line = out.one_error_line(1);
    assert!(line.starts_with("error: [1100 unauthenticated] "), "{line}");
    assert!(!line.contains(&bad.token), "{line}");
}

#[test]
fn the_operator_sets_and_clears_the_secrets_quota() {
    let (_tmp, data, server, conn) = setup();
    let quota_in_force = |conn: &Conn| -> Value {
        conn.run(&["quota", "--json"]).ok().json()["secrets"]["quota"].clone()
    };

    // A new account has no quota of its own.
    let v = conn.run(&["account", "get", "--json"]).ok().json();
    assert_eq!(v["id"], conn.account.as_str());
    assert_eq!(v["secrets_quota"], Value::Null, "{v}");
    assert_eq!(v.as_object().unwrap().len(), 4, "{v}");
    let out = conn.run(&["account", "get"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out:#?}");
    assert!(lines[0].starts_with("Name ") && lines[0].ends_with("Secrets quota"));
    assert!(
        lines[2].contains(&format!("  {}  ", conn.account)),
        "{out:#?}"
    );
    assert!(lines[2].ends_with(" default"), "{out:#?}");
    assert_eq!(quota_in_force(&conn), 10_000);

    // `quota set N`: the account object, as JSON or as a table.
    let v = conn.run(&["quota", "set", "3", "--json"]).ok().json();
    assert_eq!(v["id"], conn.account.as_str());
    assert_eq!(v["secrets_quota"], 3, "{v}");
    let out = conn.run(&["quota", "set", "3"]).ok();
    assert!(
        out.stdout.lines().nth(2).unwrap().ends_with(" 3"),
        "{out:#?}"
    );
    assert_eq!(quota_in_force(&conn), 3);
    let v = conn.run(&["account", "get", "--json"]).ok().json();
    assert_eq!(v["secrets_quota"], 3, "{v}");

    // The quota holds: a fourth secret is refused.
    let store = create_store(&conn, "s");
    let create = |name: &str| {
        conn.run_with_stdin(
            &[
                "secret", "create", &store, "--name", name, "--scopes", "workers",
            ],
            "v",
        )
    };
    for name in ["a", "b", "c"] {
        create(name).ok();
    }
    let out = create("d");
    let line = out.one_error_line(1);
    assert!(line.starts_with("error: [1400 quota_exceeded] "), "{line}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    let v = conn.run(&["quota", "--json"]).ok().json();
    assert_eq!(v["secrets"]["usage"], 3, "{v}");
    // `coffer quota` alone still prints the usage line.
    let out = conn.run(&["quota"]).ok();
    assert_eq!(out.stdout, "secrets: 3 used of 3 (0 left)\n");

    // Not a whole number: a usage error naming the argument, before any request.
    for bad in ["-1", "lots", "2.5", ""] {
        let out = conn.run(&["quota", "set", bad]);
        let line = out.one_error_line(2);
        assert!(
            line.contains("<N|default>") && line.contains(&format!("{bad:?}")),
            "{line}"
        );
        assert!(out.stdout.is_empty(), "{out:#?}");
    }
    assert_eq!(quota_in_force(&conn), 3);

    // `default` clears the override.
    let v = conn.run(&["quota", "set", "default", "--json"]).ok().json();
    assert_eq!(v["secrets_quota"], Value::Null, "{v}");
    assert_eq!(quota_in_force(&conn), 10_000);
    let v = conn.run(&["account", "get", "--json"]).ok().json();
    assert_eq!(v["secrets_quota"], Value::Null, "{v}");
    create("d").ok();

    // The override outlives a restart and beats the server's --secrets-quota; `default` then
    // means the server's.
    conn.run(&["quota", "set", "5"]).ok();
    server.kill_9();
    let server = Server::start_with(&data, &["--secrets-quota", "7"]);
    let conn = Conn {
        url: server.url.clone(),
        ..conn
    };
    assert_eq!(quota_in_force(&conn), 5);
    let out = conn.run(&["quota", "set", "default"]).ok();
    assert!(
        out.stdout.lines().nth(2).unwrap().ends_with(" default"),
        "{out:#?}"
    );
    assert_eq!(quota_in_force(&conn), 7);
}

#[test]
fn the_operator_creates_accounts_whose_tokens_are_scoped_and_revocable() {
    let (_tmp, _data, server, op) = setup();
    // Every output but a `token create`'s, which must hold no token value at all.
    let mut outputs: Vec<Out> = Vec::new();
    let mut values: Vec<String> = Vec::new();
    let error_line = |out: &Out, code: i32| out.one_error_line(code).to_owned();

    // `account create` acts on the instance: no account id needed.
    let instance = op.as_(&op.token, "");
    let out = instance
        .run(&["account", "create", "team-b", "--json"])
        .ok();
    let v = out.json();
    let b = v["account_id"].as_str().unwrap().to_owned();
    assert_eq!(b.len(), 32, "{v}");
    assert_eq!(v["id"], b.as_str());
    assert_eq!(v["name"], "team-b");
    assert_eq!(v["secrets_quota"], Value::Null);
    assert!(v["created"].is_string(), "{v}");
    outputs.push(out);

    // The human form: the id, and how to make the account's first super_admin.
    let out = instance.run(&["account", "create", "team-c"]).ok();
    let c = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Account ID:"))
        .unwrap_or_else(|| panic!("no id: {out:#?}"))
        .trim()
        .to_owned();
    assert!(
        out.stdout.contains(&format!(
            "COFFER_ACCOUNT_ID={c} coffer token create admin --role super_admin"
        )),
        "{out:#?}"
    );
    outputs.push(out);

    let out = op.run(&["account", "list", "--json"]).ok();
    let v = out.json();
    let mut ids: Vec<&str> = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected = vec![op.account.as_str(), b.as_str(), c.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    outputs.push(out);
    let out = op.run(&["account", "list"]).ok();
    assert!(out.stdout.starts_with("Name "), "{out:#?}");
    assert!(out.stdout.contains("team-b") && out.stdout.contains("team-c"));
    assert_eq!(out.stdout.lines().count(), 5, "{out:#?}");
    outputs.push(out);

    // The operator gives account b its first super_admin.
    let out = op.as_(&op.token, &b).run(&[
        "token",
        "create",
        "--name",
        "b-admin",
        "--role",
        "super_admin",
        "--json",
    ]);
    let v = out.ok().json();
    let admin_id = v["id"].as_str().unwrap().to_owned();
    let admin_value = v["value"].as_str().unwrap().to_owned();
    assert!(admin_value.starts_with("coffer_"), "{v}");
    assert_eq!(v["role"], "super_admin");
    assert_eq!(v["status"], "active");
    assert_eq!(v["expires_on"], Value::Null);
    values.push(admin_value.clone());

    let b_admin = op.as_(&admin_value, &b);
    let store = create_store(&b_admin, "s");
    let out = b_admin.run(&["token", "list", "--json"]).ok();
    let v = out.json();
    let listed: Vec<&str> = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [admin_id.as_str()], "only account b's tokens: {v}");
    assert!(v["result"][0].get("value").is_none(), "{v}");
    outputs.push(out);
    let out = b_admin.run(&["token", "list"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out:#?}");
    for column in ["Name", "ID", "Role", "Status", "Expires"] {
        assert!(lines[0].contains(column), "{out:#?}");
    }
    assert!(lines[2].starts_with("b-admin ") && lines[2].contains(&admin_id));
    assert!(lines[2].contains("super_admin"), "{out:#?}");
    outputs.push(out);

    // b's super_admin is not the operator: no accounts for it, and no view of the others.
    let out = b_admin.run(&["account", "create", "x"]);
    let line = error_line(&out, 1);
    assert!(line.starts_with("error: [1101 forbidden] "), "{line}");
    assert!(line.contains("instance:operator"), "{line}");
    outputs.push(out);
    let out = b_admin.run(&["account", "list", "--json"]).ok();
    let v = out.json();
    assert_eq!(v["result"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["result"][0]["id"], b.as_str());
    outputs.push(out);
    let out = b_admin.run(&["account", "delete", &c]);
    error_line(&out, 1);
    outputs.push(out);

    // Bad roles and expiries: one line each, nothing created.
    let out = b_admin.run(&["token", "create", "--name", "t", "--role", "reporter-typo"]);
    let line = error_line(&out, 1);
    assert!(line.starts_with("error: [1012 invalid_role] "), "{line}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    outputs.push(out);
    for bad in ["0d", "soon"] {
        let out = b_admin.run(&[
            "token",
            "create",
            "--name",
            "t",
            "--role",
            "super_admin",
            "--expires-in",
            bad,
        ]);
        let line = error_line(&out, 2);
        assert!(line.contains("--expires-in"), "{line}");
        assert!(out.stdout.is_empty(), "{out:#?}");
        outputs.push(out);
    }
    let v = b_admin.run(&["token", "list", "--json"]).ok().json();
    assert_eq!(v["result_info"]["total_count"], 1, "{v}");

    // A reporter that expires in 30 days: it may look, not change.
    let out = b_admin.run(&[
        "token",
        "create",
        "--name",
        "b-reporter",
        "--role",
        "secrets_store_reporter",
        "--expires-in",
        "30d",
        "--json",
    ]);
    let v = out.ok().json();
    let reporter_id = v["id"].as_str().unwrap().to_owned();
    let reporter_value = v["value"].as_str().unwrap().to_owned();
    values.push(reporter_value.clone());
    let at = |field: &str| {
        coffer_types::Timestamp::parse_rfc3339(v[field].as_str().unwrap())
            .unwrap_or_else(|| panic!("{field} is not RFC 3339: {v}"))
            .unix_micros()
    };
    let lifetime_secs = (at("expires_on") - at("issued_on")) / 1_000_000;
    assert!(
        (30 * 86_400 - 300..=30 * 86_400).contains(&lifetime_secs),
        "{lifetime_secs} s: {v}"
    );
    let reporter = op.as_(&reporter_value, &b);
    let out = reporter.run(&["store", "create", "--name", "nope"]);
    let line = error_line(&out, 1);
    assert!(line.starts_with("error: [1101 forbidden] "), "{line}");
    outputs.push(out);
    let out = reporter.run(&["store", "list", "--json"]).ok();
    assert_eq!(out.json()["result"][0]["id"], store.as_str());
    outputs.push(out);

    // The human form of `token create` shows the value once, with a warning.
    let out = b_admin
        .run(&[
            "token",
            "create",
            "--name",
            "b-deployer",
            "--role",
            "secrets_store_deployer",
        ])
        .ok();
    assert!(out.stdout.contains("shown only now"), "{out:#?}");
    let deployer_value = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("API token:"))
        .unwrap_or_else(|| panic!("no value: {out:#?}"))
        .trim()
        .to_owned();
    values.push(deployer_value.clone());
    op.as_(&deployer_value, &b)
        .run(&["store", "get", &store])
        .ok();

    // Revoked: refused from the next request on, and shown as revoked.
    let out = b_admin.run(&["token", "revoke", &reporter_id]).ok();
    assert!(out.stdout.starts_with("Revoked token"), "{out:#?}");
    outputs.push(out);
    let out = reporter.run(&["store", "list"]);
    let line = error_line(&out, 1);
    assert!(line.starts_with("error: [1100 unauthenticated] "), "{line}");
    outputs.push(out);
    let out = b_admin.run(&["token", "get", &reporter_id, "--json"]).ok();
    let v = out.json();
    assert_eq!(v["status"], "revoked", "{v}");
    assert!(v["revoked_on"].is_string(), "{v}");
    outputs.push(out);
    let out = b_admin.run(&["token", "get", &reporter_id]).ok();
    assert!(out.stdout.contains(" revoked "), "{out:#?}");
    outputs.push(out);
    let out = b_admin.run(&["token", "revoke", &reporter_id, "--json"]);
    let line = error_line(&out, 1);
    assert!(
        line.starts_with("error: [1304 token_already_revoked] "),
        "{line}"
    );
    outputs.push(out);

    // The operator deletes account b: its tokens die with it.
    let out = instance.run(&["account", "delete", &b]).ok();
    // Given by id, named by its name too.
    assert_eq!(
        out.stdout,
        format!("Deleted account team-b ({b}) with its stores, secrets and tokens.\n")
    );
    outputs.push(out);
    let out = b_admin.run(&["store", "list"]);
    let line = error_line(&out, 1);
    assert!(line.starts_with("error: [1100 unauthenticated] "), "{line}");
    outputs.push(out);
    let out = instance.run(&["account", "delete", &b, "--json"]);
    error_line(&out, 1);
    outputs.push(out);
    let out = op.run(&["account", "list", "--json"]).ok();
    let v = out.json();
    assert_eq!(v["result"].as_array().unwrap().len(), 2, "{v}");
    outputs.push(out);
    // The operator still works, in its own account.
    op.run(&["store", "list"]).ok();

    for out in &outputs {
        for value in &values {
            assert!(
                !out.stdout.contains(value.as_str()),
                "token on stdout: {out:#?}"
            );
            assert!(
                !out.stderr.contains(value.as_str()),
                "token on stderr: {out:#?}"
            );
        }
    }
    let log = server.log();
    assert!(log.contains("/tokens"), "the server logged no requests");
    for value in &values {
        assert!(!log.contains(value.as_str()), "token in the server log");
        // `coffer_<id>_<secret>`: the id may be logged, the secret part never.
        let secret_part = value.splitn(3, '_').nth(2).unwrap();
        assert!(secret_part.len() >= 40, "{secret_part}");
        assert!(!log.contains(secret_part), "token in the server log");
    }
}

#[test]
fn no_command_needs_an_account_id() {
    let mut cmd = coffer_cmd();
    cmd.args(["account", "list", "--api-url", "http://127.0.0.1:1"]);
    let line = run(cmd, None).one_error_line(2).to_owned();
    assert!(line.contains("COFFER_API_TOKEN"), "{line}");
    assert!(!line.contains("COFFER_ACCOUNT_ID"), "{line}");

    // Without one, the token's account is asked for (here, of a server that is not there).
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let mut cmd = coffer_cmd();
    cmd.args(["token", "list", "--api-url", &url])
        .env("COFFER_API_TOKEN", "coffer_x");
    let line = run(cmd, None).one_error_line(1).to_owned();
    assert_eq!(
        line,
        format!(
            "error: cannot find the API token's account (give one with --account-id or \
             COFFER_ACCOUNT_ID): cannot reach {url}: connection refused"
        )
    );

    // A bad --expires-in is reported before the connection settings are looked at.
    let mut cmd = coffer_cmd();
    cmd.args([
        "token",
        "create",
        "--name",
        "t",
        "--role",
        "super_admin",
        "--expires-in",
        "12w",
    ]);
    let line = run(cmd, None).one_error_line(2).to_owned();
    assert!(
        line.contains("--expires-in") && line.contains("\"12w\""),
        "{line}"
    );
}

#[test]
fn an_unreachable_server_is_named() {
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let conn = Conn {
        url: format!("{url}/"),
        token: "coffer_x".into(),
        account: "0".repeat(32),
    };
    let out = conn.run(&["store", "list"]);
    assert_eq!(
        out.one_error_line(1),
        format!("error: cannot reach {url}: connection refused")
    );
}

#[test]
fn missing_settings_name_the_flag_and_the_variable() {
    let mut cmd = coffer_cmd();
    cmd.args(["store", "list", "--api-url", "http://127.0.0.1:1"])
        .env("COFFER_ACCOUNT_ID", "0".repeat(32));
    let out = run(cmd, None);
    let line = out.one_error_line(2);
    assert!(
        line.contains("--api-token") && line.contains("COFFER_API_TOKEN"),
        "{line}"
    );
    assert!(!line.contains("--api-url"), "{line}");

    let out = run(
        {
            let mut c = coffer_cmd();
            c.arg("quota");
            c
        },
        None,
    );
    let line = out.one_error_line(2);
    for needle in ["COFFER_API_URL", "COFFER_API_TOKEN"] {
        assert!(line.contains(needle), "{line}");
    }
    // The account, when not given, is the token's.
    assert!(!line.contains("COFFER_ACCOUNT_ID"), "{line}");
}

#[test]
fn help_does_not_show_the_token_from_the_environment() {
    let mut cmd = coffer_cmd();
    cmd.args(["store", "list", "--help"])
        .env("COFFER_API_TOKEN", "coffer_envtoken_sentinel");
    let out = run(cmd, None).ok();
    assert!(out.stdout.contains("COFFER_API_TOKEN"), "{out:#?}");
    assert!(!out.stdout.contains("envtoken_sentinel"), "{out:#?}");
}

#[test]
fn init_refuses_an_existing_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, _token) = init(&data);
    assert_eq!(account.len(), 32);

    let mut cmd = coffer_cmd();
    cmd.arg("init").arg("--data-dir").arg(&data).arg("--json");
    let out = run(cmd, None);
    let line = out.one_error_line(1);
    assert!(line.contains(&data.display().to_string()), "{line}");
    assert!(out.stdout.is_empty(), "{out:#?}");

    // The human form says the token is shown once.
    let mut cmd = coffer_cmd();
    cmd.arg("init")
        .arg("--data-dir")
        .arg(tmp.path().join("other"));
    let out = run(cmd, None).ok();
    assert!(out.stdout.contains("shown only this once"), "{out:#?}");
}

#[test]
fn a_secret_survives_kill_9_and_restart() {
    let (_tmp, data, server, conn) = setup();
    let store = create_store(&conn, "durable");
    create_secret(&conn, &store, "kept", "workers", "v");
    server.kill_9();

    let server = Server::start(&data);
    let conn = Conn {
        url: server.url.clone(),
        ..conn
    };
    let v = conn.run(&["secret", "list", &store, "--json"]).ok().json();
    assert_eq!(v["result"][0]["name"], "kept", "{v}");
    assert_eq!(v["result_info"]["total_count"], 1);
}

/// Reads `coffer dev`'s banner up to its last line.
fn read_banner(server: &Server) -> String {
    let mut banner = String::new();
    loop {
        let line = server
            .lines
            .recv_timeout(START_TIMEOUT)
            .unwrap_or_else(|e| panic!("banner cut short ({e}): {banner}"));
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Press Ctrl-C") {
            return banner;
        }
    }
}

fn banner_field(banner: &str, label: &str) -> String {
    banner
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in {banner}"))
        .trim()
        .to_owned()
}

fn terminate(mut server: Server) -> ExitStatus {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    server.child.wait().unwrap()
}

#[test]
fn dev_initialises_once_saves_private_credentials_and_reuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let dev = || {
        let mut cmd = coffer_cmd();
        cmd.arg("dev")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"]);
        Server::spawn(cmd)
    };

    let server = dev();
    let banner = read_banner(&server);
    let account = banner_field(&banner, "Account ID:");
    let token = banner_field(&banner, "API token:");
    assert!(banner.contains(&format!(
        "COFFER_API_URL={} COFFER_API_TOKEN={token} COFFER_ACCOUNT_ID={account} coffer store \
         create --name my-store",
        server.url
    )));
    assert!(banner.contains(&format!("CLOUDFLARE_API_BASE_URL={}/client/v4", server.url)));

    let creds_path = data.join("dev-credentials.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&creds_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let creds: Value =
        serde_json::from_str(&std::fs::read_to_string(&creds_path).unwrap()).unwrap();
    assert_eq!(creds["account_id"], account.as_str());
    assert_eq!(creds["api_token"], token.as_str());

    // The printed command works.
    let conn = Conn {
        url: server.url.clone(),
        token: token.clone(),
        account: account.clone(),
    };
    let store = create_store(&conn, "my-store");

    // SIGTERM stops it cleanly.
    assert!(terminate(server).success());

    // The second start reuses the data dir and the credentials.
    let server = dev();
    let banner = read_banner(&server);
    assert_eq!(banner_field(&banner, "Account ID:"), account);
    assert_eq!(banner_field(&banner, "API token:"), token);
    let conn = Conn {
        url: server.url.clone(),
        ..conn
    };
    let v = conn.run(&["store", "get", &store, "--json"]).ok().json();
    assert_eq!(v["name"], "my-store");

    // An offline operator-token rotation puts the new token in the credentials file, so the
    // next start's banner shows a token that works.
    assert!(terminate(server).success());
    let mut cmd = coffer_cmd();
    cmd.args(["operator", "rotate", "--data-dir"]).arg(&data);
    let out = run(cmd, None).ok();
    assert!(
        out.stdout
            .contains("dev-credentials.json now holds this token"),
        "{out:#?}"
    );
    let rotated = banner_field(&out.stdout, "API token:");
    assert_ne!(rotated, token);
    let creds: Value =
        serde_json::from_str(&std::fs::read_to_string(&creds_path).unwrap()).unwrap();
    assert_eq!(creds["api_token"], rotated.as_str());
    assert_eq!(creds["account_id"], account.as_str());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&creds_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let server = dev();
    let banner = read_banner(&server);
    assert_eq!(banner_field(&banner, "API token:"), rotated);
    let conn = Conn {
        url: server.url.clone(),
        token: rotated,
        ..conn
    };
    let v = conn.run(&["store", "get", &store, "--json"]).ok().json();
    assert_eq!(v["name"], "my-store");
    let old = conn.as_(&token, &account).run(&["whoami"]);
    assert!(old.one_error_line(1).contains("revoked"), "{old:#?}");
}

#[test]
fn dev_refuses_a_data_dir_it_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    init(&data);
    let mut cmd = coffer_cmd();
    cmd.arg("dev")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"]);
    let out = run(cmd, None);
    let line = out.one_error_line(1);
    assert!(line.contains("not a `coffer dev` data dir"), "{line}");
}

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files in `dir`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("generate certificate");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

#[test]
fn serves_https_and_clients_verify_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, token) = init(&data);
    let (cert, key) = self_signed(tmp.path());
    let mut cmd = coffer_cmd();
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key);
    let server = Server::spawn(cmd);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let conn = Conn {
        url: server.url.clone(),
        token,
        account,
    };

    // Trusting the server's certificate: works end to end over TLS.
    let out = conn.run(&[
        "store",
        "create",
        "--name",
        "tls-store",
        "--json",
        "--ca-cert",
        cert.to_str().unwrap(),
    ]);
    let store = out.ok().json();
    assert_eq!(store["name"], "tls-store");

    // Not trusting it: refused, in one line, naming the URL.
    let out = conn.run(&["store", "list"]);
    let line = out.one_error_line(1).to_owned();
    assert!(
        line.contains(&server.url) || line.to_lowercase().contains("certificate"),
        "{line}"
    );
}

#[test]
fn plain_http_on_a_non_loopback_address_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    init(&data);
    let mut cmd = coffer_cmd();
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "0.0.0.0:0"]);
    let out = run(cmd, None);
    let line = out.one_error_line(1).to_owned();
    assert!(
        line.contains("refusing to serve plain HTTP on non-loopback address 0.0.0.0:0"),
        "{line}"
    );
    assert!(line.contains("--insecure-http"), "{line}");
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let (_tmp, data, _server, _conn) = setup();
    let mut cmd = coffer_cmd();
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"]);
    let out = run(cmd, None);
    let line = out.one_error_line(1).to_owned();
    assert!(line.contains("in use by another coffer process"), "{line}");
}

/// The entries of an `audit list --json` answer, after checking its shape.
fn audit_entries(out: &Out) -> Vec<Value> {
    let v = out.json();
    let entries = v["result"].as_array().unwrap().clone();
    assert_eq!(
        v["result_info"]["count"].as_u64(),
        Some(entries.len() as u64),
        "{v}"
    );
    entries
}

#[test]
fn the_audit_log_records_changes_verifies_and_is_for_super_admins_only() {
    let (_tmp, _data, _server, conn) = setup();
    let value = "v4lue-in-audit-Hq55t";
    let store = create_store(&conn, "audited");
    let secret = create_secret(&conn, &store, "db-pass", "workers", value);
    conn.run(&[
        "secret",
        "update",
        &store,
        "--secret-id",
        &secret,
        "--comment",
        "rotated",
    ])
    .ok();

    // Everything, newest first.
    let all = conn.run(&["audit", "list", "--json"]).ok();
    let entries = audit_entries(&all);
    let total = all.json()["result_info"]["total_count"].as_u64().unwrap();
    assert!(total >= 3, "{:#?}", all);
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    assert_eq!(entries[0]["action"], "update");
    assert_eq!(entries[0]["resource"]["secret_name"], "db-pass");
    assert_eq!(entries[0]["value_modified"], false);
    let find = |kind: &str| {
        entries
            .iter()
            .find(|e| e["action"] == "create" && e["resource"]["type"] == kind)
            .unwrap_or_else(|| panic!("no create entry for a {kind}: {entries:#?}"))
    };
    let created_store = find("store");
    assert_eq!(created_store["resource"]["store_name"], "audited");
    assert_eq!(created_store["resource"]["store_id"], store.as_str());
    assert_eq!(created_store["actor"]["token_name"], "init");
    assert_eq!(created_store["outcome"], "success");
    let created_secret = find("secret");
    assert_eq!(created_secret["resource"]["secret_name"], "db-pass");
    assert_eq!(created_secret["resource"]["secret_id"], secret.as_str());
    assert_eq!(created_secret["actor"]["token_name"], "init");
    for e in &entries {
        assert_eq!(e["hash"].as_str().unwrap().len(), 64, "{e}");
    }
    assert!(!all.stdout.contains(value), "a value reached the audit log");

    // Filters reach the server.
    let out = conn
        .run(&["audit", "list", "--action", "create", "--json"])
        .ok();
    let created = audit_entries(&out);
    assert!(created.len() >= 2, "{created:#?}");
    assert!(
        created.iter().all(|e| e["action"] == "create"),
        "{created:#?}"
    );
    let out = conn
        .run(&[
            "audit",
            "list",
            "--secret-id",
            &secret,
            "--direction",
            "asc",
            "--json",
        ])
        .ok();
    let actions: Vec<String> = audit_entries(&out)
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["create", "update"]);
    let out = conn
        .run(&["audit", "list", "--per-page", "1", "--page", "2", "--json"])
        .ok();
    let v = out.json();
    assert_eq!(v["result"][0]["seq"].as_u64(), Some(seqs[1]), "{v}");
    assert_eq!(v["result_info"]["total_count"].as_u64(), Some(total));

    // The table names the actor and the resource.
    let out = conn.run(&["audit", "list", "--action", "create"]).ok();
    let header = cells(out.stdout.lines().next().unwrap());
    assert_eq!(header, ["Time", "Actor", "Action", "Resource", "Detail"]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains(" init ") && l.contains(" store audited ")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(" secret db-pass "), "{}", out.stdout);
    assert!(out.stdout.contains(" entries in all)\n"), "{}", out.stdout);

    // A bad date is a usage error before any request.
    let out = conn.run(&["audit", "list", "--from", "yesterday"]);
    let line = out.one_error_line(2);
    assert!(line.contains("--from"), "{line}");

    // The chain checks out.
    let out = conn.run(&["audit", "verify"]).ok();
    let line = out.stdout.trim_end();
    assert_eq!(out.stdout.lines().count(), 1, "{out:#?}");
    assert!(
        line.starts_with(&format!("audit log OK: {total} entries, ")),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "head #{} {}",
            seqs[0],
            entries[0]["hash"].as_str().unwrap()
        )),
        "{line}"
    );
    assert!(out.stderr.is_empty(), "{out:#?}");
    let v = conn.run(&["audit", "verify", "--json"]).ok().json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["entries_checked"].as_u64(), Some(total));
    assert_eq!(v["head_seq"].as_u64(), Some(seqs[0]));
    assert_eq!(v["first_bad"], Value::Null);

    // A reporter may not read the log, and its attempt is recorded.
    let v = conn
        .run(&[
            "token",
            "create",
            "--name",
            "auditor-wannabe",
            "--role",
            "secrets_store_reporter",
            "--json",
        ])
        .ok()
        .json();
    let reporter_id = v["id"].as_str().unwrap().to_owned();
    let reporter = conn.as_(v["value"].as_str().unwrap(), &conn.account);
    for args in [&["audit", "list"][..], &["audit", "verify", "--json"]] {
        let out = reporter.run(args);
        let line = out.one_error_line(1);
        assert!(line.starts_with("error: [1101 forbidden] "), "{line}");
        assert!(out.stdout.is_empty(), "{out:#?}");
    }
    let out = conn
        .run(&[
            "audit",
            "list",
            "--outcome",
            "denied",
            "--actor",
            &reporter_id,
            "--json",
        ])
        .ok();
    let denied = audit_entries(&out);
    assert_eq!(denied.len(), 2, "{denied:#?}");
    assert!(
        denied
            .iter()
            .all(|e| e["actor"]["token_name"] == "auditor-wannabe")
    );
    conn.run(&["audit", "verify"]).ok();
}

#[test]
fn the_operator_registers_lists_and_revokes_edge_nodes() {
    let (_tmp, _data, server, op) = setup();
    // Nodes belong to the instance: no account id needed.
    let instance = op.as_(&op.token, "");
    // Every output but the two `node create`s, which alone may hold a node token.
    let mut outputs: Vec<Out> = Vec::new();

    let out = instance.run(&["node", "create", "edge-1", "--json"]).ok();
    let v = out.json();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "created",
            "feed_public_key",
            "id",
            "name",
            "node_token",
            "revoked",
            "token"
        ],
        "{v}"
    );
    assert_eq!(v["token"], v["node_token"], "{v}");
    // The key an edge pins (`coffer edge --feed-key`): the control plane's, the same for
    // every node.
    let feed_key = v["feed_public_key"].as_str().unwrap().to_owned();
    assert!(
        feed_key.len() == 64 && feed_key.bytes().all(|b| b.is_ascii_hexdigit()),
        "{v}"
    );
    let edge1 = v["id"].as_str().unwrap().to_owned();
    assert_eq!(edge1.len(), 32);
    assert_eq!(v["name"], "edge-1");
    assert_eq!(v["revoked"], Value::Null);
    let token1 = v["node_token"].as_str().unwrap().to_owned();
    assert!(
        token1.starts_with(&format!("coffernode_{edge1}_")),
        "{token1}"
    );

    // The human form: the id, the token once, and a line saying to store it.
    let out = instance.run(&["node", "create", "edge-2.fra"]).ok();
    let field = |label: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label}: {out:#?}"))
            .trim()
            .to_owned()
    };
    let edge2 = field("Node ID:");
    let token2 = field("Node token:");
    assert!(
        token2.starts_with(&format!("coffernode_{edge2}_")),
        "{out:#?}"
    );
    assert_eq!(out.stdout.matches(&token2).count(), 1, "{out:#?}");
    assert!(out.stdout.contains("store it now"), "{out:#?}");
    assert_eq!(field("Feed key:"), feed_key, "{out:#?}");
    assert!(out.stdout.contains("--feed-key KEY"), "{out:#?}");
    assert!(out.stderr.is_empty(), "{out:#?}");

    // The list: a table with both, and the JSON list.
    let out = instance.run(&["node", "list"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{out:#?}");
    for column in ["ID", "Name", "Revoked", "Last seen", "Applied (lag)"] {
        assert!(lines[0].contains(column), "{out:#?}");
    }
    assert!(
        lines[2].starts_with("edge-1 ") && lines[2].contains(&edge1),
        "{out:#?}"
    );
    assert!(
        lines[3].starts_with("edge-2.fra ")
            && lines[3].contains(&edge2)
            && lines[3].trim_end().ends_with(" -"),
        "{out:#?}"
    );
    outputs.push(out);

    // Revoke: a confirmation; then the list shows when.
    let out = instance.run(&["node", "revoke", &edge1]).ok();
    assert_eq!(
        out.stdout,
        format!("Revoked edge node edge-1 ({edge1}); its token no longer works.\n")
    );
    outputs.push(out);
    let out = instance.run(&["node", "list", "--json"]).ok();
    let v = out.json();
    let items = v["result"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{v}");
    assert_eq!(items[0]["id"], edge1.as_str());
    assert!(items[0]["revoked"].is_string(), "{v}");
    assert_eq!(items[1]["revoked"], Value::Null, "{v}");
    assert_eq!(v["result_info"]["total_count"], 2);
    outputs.push(out);

    // Errors: one line each, exit status 1.
    let error_line = |out: &Out| out.one_error_line(1).to_owned();
    let out = instance.run(&["node", "revoke", &edge1, "--json"]);
    assert_eq!(
        error_line(&out),
        "error: [1304 token_already_revoked] the node is already revoked"
    );
    assert!(out.stdout.is_empty(), "{out:#?}");
    outputs.push(out);
    let out = instance.run(&["node", "create", "edge-2.fra"]);
    let line = error_line(&out);
    assert!(line.starts_with("error: [1306 node_name_taken] "), "{line}");
    assert!(line.contains("\"edge-2.fra\""), "{line}");
    outputs.push(out);
    let out = instance.run(&["node", "create", "a b"]);
    let line = error_line(&out);
    assert!(
        line.starts_with("error: [1005 invalid_name] /name: node name "),
        "{line}"
    );
    outputs.push(out);
    let out = instance.run(&["node", "revoke", "xyz"]);
    assert_eq!(error_line(&out), "error: no node named \"xyz\"");
    outputs.push(out);
    let out = instance.run(&["node", "revoke", &"0".repeat(32)]);
    assert_eq!(
        error_line(&out),
        "error: [1208 node_not_found] node not found"
    );
    outputs.push(out);

    // A revoked node's name can be used again.
    let out = instance.run(&["node", "create", "edge-1", "--json"]).ok();
    assert_ne!(out.json()["id"], edge1.as_str());

    // Not the operator: refused. A node token is no API token.
    let admin = op
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
        .json()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let as_admin = op.as_(&admin, &op.account);
    let out = as_admin.run(&["node", "list"]);
    let line = error_line(&out);
    assert!(line.starts_with("error: [1101 forbidden] "), "{line}");
    assert!(line.contains("instance:operator"), "{line}");
    outputs.push(out);
    let out = as_admin.run(&["node", "create", "sneaky"]);
    assert!(error_line(&out).starts_with("error: [1101 forbidden] "));
    outputs.push(out);
    let out = op.as_(&token2, &op.account).run(&["node", "list"]);
    let line = error_line(&out);
    assert!(
        line.starts_with("error: [1104 wrong_token_kind] "),
        "{line}"
    );
    outputs.push(out);

    // Missing settings are a usage error (exit status 2) naming them, before any request.
    let mut cmd = coffer_cmd();
    cmd.args(["node", "list", "--api-url", &server.url]);
    let line = run(cmd, None).one_error_line(2).to_owned();
    assert!(line.contains("COFFER_API_TOKEN"), "{line}");
    assert!(!line.contains("COFFER_ACCOUNT_ID"), "{line}");

    // The tokens appear nowhere else: not in other outputs, not in the server's log.
    for out in &outputs {
        for token in [&token1, &token2] {
            let secret = &token[token.len() - 43..];
            assert!(!out.stdout.contains(secret), "{out:#?}");
            assert!(!out.stderr.contains(secret), "{out:#?}");
        }
    }
    let log = server.log();
    for token in [&token1, &token2] {
        assert!(
            !log.contains(&token[token.len() - 43..]),
            "the server log holds a node token"
        );
    }
}

/// The limit flags reach the server: with `--runtime-rate-limit 1` a service token's second
/// read in a row is 429 `read_rate_limited` with `Retry-After`; with `--header-timeout 1` a
/// connection that sends nothing is closed well before the default 5 s; a value out of range
/// is refused naming the flag.
#[test]
fn limit_flags_reach_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, token) = init(&data);
    let server = Server::start_with(
        &data,
        &[
            "--runtime-rate-limit",
            "1",
            "--header-timeout",
            "1",
            "--max-connections",
            "64",
            "--snapshot-deadline",
            "60",
        ],
    );
    let conn = Conn {
        url: server.url.clone(),
        token,
        account,
    };
    let store = create_store(&conn, "s");
    conn.run(&[
        "secret", "create", &store, "--name", "k", "--scopes", "workers", "--value", "v4lue",
    ])
    .ok();
    let config = tmp.path().join("app.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"app\"\n[[secrets_store_secrets]]\nbinding = \"K\"\nstore_id = \"{store}\"\n\
             secret_name = \"k\"\n"
        ),
    )
    .unwrap();
    let deployed = conn
        .run(&["deploy", "--config", config.to_str().unwrap(), "--json"])
        .ok()
        .json();
    let svc = deployed["service_token"].as_str().unwrap();
    let first = runtime_get(&server.url, svc, "/runtime/v1/bindings/K");
    assert_eq!(first.status, 200, "{first:?}");
    let second = runtime_get(&server.url, svc, "/runtime/v1/bindings/K");
    assert_eq!(second.status, 429, "{second:?}");
    assert!(second.headers.contains_key("retry-after"), "{second:?}");
    assert_eq!(second.json()["errors"][0]["code"], 1106);

    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut silent = std::net::TcpStream::connect(&addr).unwrap();
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(4)))
        .unwrap();
    let mut buf = [0u8; 16];
    let read = std::io::Read::read(&mut silent, &mut buf);
    assert!(
        matches!(read, Ok(0))
            || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "a silent connection is closed at the 1 s header timeout: {read:?}"
    );

    let mut cmd = coffer_cmd();
    cmd.args(["server", "--data-dir"])
        .arg(&data)
        .args(["--max-connections", "0"]);
    let out = run(cmd, None);
    assert_eq!(out.status.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("--max-connections"), "{out:#?}");
}
