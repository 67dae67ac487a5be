//! `coffer operator rotate` (offline on a stopped server's data dir, and online through the
//! running server), and `coffer completions`.

use serde_json::Value;

use crate::common::*;

/// `coffer operator rotate --data-dir DIR --json`.
fn rotate_offline(data: &std::path::Path) -> Out {
    let mut cmd = coffer_cmd();
    cmd.args(["operator", "rotate", "--json", "--data-dir"])
        .arg(data);
    run(cmd, None)
}

/// The `rotate` entries of the account's audit log, read with `token`.
fn rotations(conn: &Conn) -> Vec<Value> {
    let v = conn.run(&["audit", "list", "--json"]).ok().json();
    v["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "rotate")
        .cloned()
        .collect()
}

/// The first field named `key` anywhere in `v`.
fn find<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(map) => map
            .get(key)
            .or_else(|| map.values().find_map(|inner| find(inner, key))),
        Value::Array(items) => items.iter().find_map(|inner| find(inner, key)),
        _ => None,
    }
}

/// Fails unless `conn`'s token is refused by the server.
fn assert_refused(conn: &Conn) {
    let out = conn.run(&["whoami"]);
    let line = out.one_error_line(1);
    assert!(line.contains("revoked"), "{line}");
}

/// Fails unless the audit log verifies, read with `conn`.
fn assert_verifies(conn: &Conn) {
    let v = conn.run(&["audit", "verify", "--json"]).ok().json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["first_bad"], Value::Null, "{v}");
}

#[test]
fn offline_rotation_retires_the_old_token_and_audits_the_new_id() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, old) = init(&data);

    let out = rotate_offline(&data).ok();
    let v = out.json();
    let new = v["token"].as_str().unwrap().to_owned();
    let new_id = v["token_id"].as_str().unwrap().to_owned();
    assert!(new.starts_with("coffer_") && new != old, "{v}");
    assert_eq!(v["account_id"], account.as_str());
    assert!(out.stderr.is_empty(), "{out:#?}");

    let server = Server::start(&data);
    let conn = Conn {
        url: server.url.clone(),
        token: new.clone(),
        account: account.clone(),
    };
    assert_refused(&conn.as_(&old, &account));
    let me = conn.run(&["whoami", "--json"]).ok().json();
    assert_eq!(me["id"], new_id.as_str(), "{me}");
    assert_eq!(me["operator"], true, "{me}");
    // The operator's powers came with it.
    conn.run(&["account", "create", "second", "--json"]).ok();

    let entries = rotations(&conn);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let text = entries[0].to_string();
    assert!(text.contains(&new_id), "{text}");
    assert!(!text.contains(&new) && !text.contains(&old), "{text}");
    // Done offline, by the command itself, and naming the tokens it revoked.
    assert!(text.contains("coffer operator rotate"), "{text}");
    let revoked = find(&entries[0], "revoked_token_ids")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no revoked ids: {text}"));
    assert_eq!(revoked.len(), 1, "{text}");
    assert_ne!(revoked[0], new_id.as_str(), "{text}");
    assert_verifies(&conn);
    let listed = conn.run(&["audit", "list", "--json"]).ok();
    assert!(
        !listed.stdout.contains(&new),
        "a token value in the audit log"
    );
    assert!(
        !server.log().contains(&new),
        "the new token in the server's log"
    );
}

#[test]
fn online_rotation_is_the_operators_alone_and_stops_the_old_token_at_once() {
    let (_tmp, _data, server, conn) = setup();
    let v = conn
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
    let admin = conn.as_(v["value"].as_str().unwrap(), &conn.account);

    // A super_admin that is not the instance operator is refused, and nothing changes.
    let out = admin.run(&["operator", "rotate"]);
    let line = out.one_error_line(1);
    assert!(line.starts_with("error: [1101 forbidden] "), "{line}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    conn.run(&["whoami"]).ok();

    // The old token has just been used (cached): the rotation must still stop it at once.
    let old_id = conn.run(&["whoami", "--json"]).ok().json()["id"].clone();
    let out = conn.run(&["operator", "rotate", "--json"]).ok();
    let v = out.json();
    let new = v["token"].as_str().unwrap().to_owned();
    let new_id = v["token_id"].as_str().unwrap().to_owned();
    assert!(out.stderr.is_empty(), "{out:#?}");
    assert_refused(&conn);
    let next = conn.as_(&new, &conn.account);
    let me = next.run(&["whoami", "--json"]).ok().json();
    assert_eq!(
        (me["id"].as_str(), &me["operator"]),
        (Some(new_id.as_str()), &Value::Bool(true))
    );

    let entries: Vec<Value> = rotations(&next);
    let done: Vec<&Value> = entries
        .iter()
        .filter(|e| e["outcome"] == "success")
        .collect();
    assert_eq!(done.len(), 1, "{entries:?}");
    let text = done[0].to_string();
    assert!(text.contains(&new_id), "{text}");
    assert!(text.contains(old_id.as_str().unwrap()), "{text}");
    assert!(!text.contains(&new), "{text}");
    assert_eq!(
        entries.iter().filter(|e| e["outcome"] == "denied").count(),
        1,
        "the super_admin's attempt is recorded: {entries:?}"
    );
    assert_verifies(&next);
    assert!(
        !server.log().contains(&new),
        "the new token in the server's log"
    );

    // The human form prints the token once, with what happened.
    let out = next.run(&["operator", "rotate"]).ok();
    assert!(out.stdout.contains("shown only this once"), "{out:#?}");
    assert_refused(&next);
}

#[test]
fn offline_rotation_while_the_server_runs_says_so_and_changes_nothing() {
    let (_tmp, data, _server, conn) = setup();
    let out = rotate_offline(&data);
    let line = out.one_error_line(2);
    assert!(line.contains("in use by another coffer process"), "{line}");
    assert!(line.contains("`coffer operator rotate`"), "{line}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    let me = conn.run(&["whoami", "--json"]).ok().json();
    assert_eq!(me["operator"], true);
}

#[test]
fn offline_rotation_of_a_dir_that_is_not_a_data_dir_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = rotate_offline(&tmp.path().join("missing"));
    let line = out.one_error_line(1);
    assert!(
        line.contains("not an initialised Coffer data dir"),
        "{line}"
    );
    assert!(!tmp.path().join("missing").exists(), "nothing is created");
}

#[test]
fn completions_for_three_shells_and_a_clear_error_for_others() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef coffer"),
        ("fish", "complete -c coffer"),
    ] {
        let mut cmd = coffer_cmd();
        cmd.args(["completions", shell]);
        let out = run(cmd, None).ok();
        assert!(out.stdout.contains(marker), "{shell}: {}", out.stdout);
        for sub in ["store", "secret", "operator", "deploy", "completions"] {
            assert!(out.stdout.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let mut cmd = coffer_cmd();
    cmd.args(["completions", "powershell"]);
    let out = run(cmd, None);
    assert_eq!(out.status.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("powershell"), "{out:#?}");
    assert!(out.stdout.is_empty(), "{out:#?}");
}
