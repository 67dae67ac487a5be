//! Names wherever ids are taken, and the account from the token: `coffer` against a real
//! `coffer server` (helpers in `common`).

use std::io::{Read, Write};

use serde_json::Value;

use crate::common::*;

fn id_of(out: Out) -> String {
    out.ok().json()["id"].as_str().unwrap().to_owned()
}

#[test]
fn stores_and_secrets_by_name() {
    let (_tmp, _data, _server, conn) = setup();
    let prod = create_store(&conn, "prod");
    let staging = create_store(&conn, "staging");
    let value = "n4me-value-Qx71";
    let create = |store: &str| create_secret(&conn, store, "openai-key", "workers", value);
    let in_prod = create("prod");
    let in_staging = create("staging");
    assert_ne!(in_prod, in_staging);

    // A store by name, positionally or with --store-id; an id still works.
    for args in [
        &["store", "get", "prod", "--json"][..],
        &["store", "get", "--store-id", "prod", "--json"],
        &["store", "get", &prod, "--json"],
    ] {
        assert_eq!(id_of(conn.run(args)), prod, "{args:?}");
    }
    // A secret by name, in the store named.
    let out = conn.run(&[
        "secret",
        "get",
        "prod",
        "--secret-id",
        "openai-key",
        "--json",
    ]);
    assert_eq!(id_of(out), in_prod);
    let out = conn.run(&[
        "secret",
        "get",
        &staging,
        "--secret-id",
        "openai-key",
        "--json",
    ]);
    assert_eq!(id_of(out), in_staging);
    let out = conn.run(&[
        "secret",
        "update",
        "prod",
        "--secret-id",
        "openai-key",
        "--comment",
        "by name",
        "--json",
    ]);
    let v = out.ok().json();
    assert_eq!(
        (v["id"].as_str(), v["comment"].as_str()),
        (Some(in_prod.as_str()), Some("by name"))
    );
    let out = conn.run(&[
        "secret",
        "duplicate",
        "prod",
        "--secret-id",
        "openai-key",
        "--name",
        "copy",
        "--scopes",
        "workers",
        "--json",
    ]);
    let copy = id_of(out);
    let out = conn.run(&["secret", "list", "prod", "--json"]).ok();
    assert_eq!(out.json()["result_info"]["total_count"], 2);

    // Several by name: one request for all of them; the message names them.
    let out = conn
        .run(&["secret", "delete", "prod", "--secret-id", "copy,openai-key"])
        .ok();
    assert_eq!(
        out.stdout,
        format!("Deleted 2 secrets from store prod ({prod}).\n")
    );
    for id in [&copy, &in_prod] {
        let out = conn.run(&["secret", "get", "prod", "--secret-id", id]);
        assert!(
            out.one_error_line(1).contains("secret_not_found"),
            "{out:#?}"
        );
    }
    let out = conn
        .run(&["secret", "delete", "staging", "--secret-id", "openai-key"])
        .ok();
    assert_eq!(
        out.stdout,
        format!("Deleted secret openai-key ({in_staging}) from store staging ({staging}).\n")
    );

    // Names that match nothing: one line naming what was looked for, and where.
    let out = conn.run(&["store", "get", "nope"]);
    assert_eq!(out.one_error_line(1), "error: no store named \"nope\"");
    let out = conn.run(&["secret", "get", "prod", "--secret-id", "gone\u{1b}[2J"]);
    assert_eq!(
        out.one_error_line(1),
        "error: no secret named \"gone\\u{1b}[2J\" in store \"prod\""
    );
    let out = conn.run(&["secret", "delete", "nope", "--secret-id", "x"]);
    assert_eq!(out.one_error_line(1), "error: no store named \"nope\"");
    // An id-shaped argument is an id: the server says whether it exists.
    let out = conn.run(&["store", "get", &"0".repeat(32)]);
    assert!(
        out.one_error_line(1)
            .starts_with("error: [1201 store_not_found]"),
        "{out:#?}"
    );

    let out = conn.run(&["store", "delete", "staging"]).ok();
    assert_eq!(out.stdout, format!("Deleted store staging ({staging}).\n"));
    let v = conn.run(&["store", "list", "--json"]).ok().json();
    let names: Vec<&str> = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["prod"]);
}

#[test]
fn a_name_that_is_another_objects_id_is_refused_as_ambiguous() {
    let (tmp, _data, _server, conn) = setup();
    // An attacker names a store after the id of another: deleting "by that name" must not
    // delete the other store.
    let prod = create_store(&conn, "prod");
    let decoy = create_store(&conn, &prod);
    let ambiguous = format!(
        "error: \"{prod}\" is ambiguous: it is the id of store \"prod\" and the name of store \
         {decoy}; give \"prod\" to mean the first, or the id of the store named \"{prod}\""
    );
    for args in [
        &["store", "delete", &prod, "--force"][..],
        &["store", "get", &prod],
        &["secret", "list", &prod],
    ] {
        assert_eq!(conn.run(args).one_error_line(1), ambiguous, "{args:?}");
    }
    // Both are still there, and each is reached without ambiguity.
    assert_eq!(id_of(conn.run(&["store", "get", "prod", "--json"])), prod);
    assert_eq!(id_of(conn.run(&["store", "get", &decoy, "--json"])), decoy);
    // An id names the object's real name in the confirmation.
    let out = conn.run(&["store", "delete", &decoy]).ok();
    assert_eq!(out.stdout, format!("Deleted store {prod} ({decoy}).\n"));
    // With the decoy gone, the id is the store's id again.
    assert_eq!(id_of(conn.run(&["store", "get", &prod, "--json"])), prod);

    // Secrets in a store, the same way; also a name that looks like an id nothing has.
    let secret = |name: &str| create_secret(&conn, &prod, name, "workers", "v");
    let key = secret("key");
    let decoy = secret(&key);
    let nobody = "f".repeat(32);
    let lone = secret(&nobody);
    let line = conn
        .run(&["secret", "delete", "prod", "--secret-id", &key])
        .one_error_line(1)
        .to_owned();
    assert_eq!(
        line,
        format!(
            "error: \"{key}\" is ambiguous in store \"prod\": it is the id of secret \"key\" and \
             the name of secret {decoy}; give \"key\" to mean the first, or the id of the secret \
             named \"{key}\""
        )
    );
    let line = conn
        .run(&["secret", "get", "prod", "--secret-id", &nobody])
        .one_error_line(1)
        .to_owned();
    assert_eq!(
        line,
        format!(
            "error: \"{nobody}\" is ambiguous in store \"prod\": no secret has that id, but it is \
             the name of secret {lone}; give the id of the secret named \"{nobody}\" to mean it"
        )
    );
    let out = conn
        .run(&["secret", "delete", "prod", "--secret-id", &decoy])
        .ok();
    assert_eq!(
        out.stdout,
        format!("Deleted secret {key} ({decoy}) from store prod ({prod}).\n")
    );
    let v = conn.run(&["secret", "list", "prod", "--json"]).ok().json();
    assert_eq!(v["result_info"]["total_count"], 2, "{v}");

    // Services (deployed by name from a file), tokens and nodes: one rule for all.
    let deploy = |name: &str| {
        let path = tmp.path().join("wrangler.toml");
        std::fs::write(&path, format!("name = \"{name}\"\n")).unwrap();
        let out = conn
            .run(&["deploy", "--config", path.to_str().unwrap(), "--json"])
            .ok();
        out.json()["id"].as_str().unwrap().to_owned()
    };
    let api = deploy("api");
    let decoy = deploy(&api);
    let line = conn
        .run(&["service", "delete", &api])
        .one_error_line(1)
        .to_owned();
    assert!(
        line.starts_with(&format!(
            "error: \"{api}\" is ambiguous: it is the id of service \"api\" and the name of \
             service {decoy}; "
        )),
        "{line}"
    );
    let out = conn.run(&["service", "get", &decoy, "--json"]).ok();
    assert_eq!(out.json()["name"], api.as_str());

    let token = |name: &str| {
        let out = conn
            .run(&[
                "token",
                "create",
                name,
                "--role",
                "secrets_store_reporter",
                "--json",
            ])
            .ok();
        out.json()["id"].as_str().unwrap().to_owned()
    };
    let ci = token("ci");
    let decoy = token(&ci);
    let line = conn
        .run(&["token", "revoke", &ci])
        .one_error_line(1)
        .to_owned();
    assert!(
        line.contains(&format!(
            "it is the id of token \"ci\" and the name of token {decoy}"
        )),
        "{line}"
    );
    let out = conn.run(&["token", "get", "ci", "--json"]).ok();
    assert_eq!(out.json()["status"], "active");

    let out = conn.run(&["node", "create", "edge-1", "--json"]).ok();
    let edge = out.json()["id"].as_str().unwrap().to_owned();
    let out = conn.run(&["node", "create", &edge, "--json"]).ok();
    let decoy = out.json()["id"].as_str().unwrap().to_owned();
    let line = conn
        .run(&["node", "revoke", &edge])
        .one_error_line(1)
        .to_owned();
    assert!(
        line.contains(&format!(
            "it is the id of node \"edge-1\" and the name of node {decoy}"
        )),
        "{line}"
    );
    // Revoked, the decoy still keeps its name: still refused.
    conn.run(&["node", "revoke", &decoy]).ok();
    conn.run(&["node", "revoke", &edge]).one_error_line(1);
    conn.run(&["node", "revoke", "edge-1"]).ok();
}

#[test]
fn store_names_are_found_on_every_page() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, token) = init(&data);
    let server = Server::start_with(&data, &["--max-stores", "200"]);
    let conn = Conn {
        url: server.url.clone(),
        token,
        account,
    };
    // More stores than the largest page, the one looked for last.
    for i in 0..101 {
        create_store(&conn, &format!("s{i:03}"));
    }
    let last = create_store(&conn, "the-last");
    let out = conn.run(&["store", "get", "the-last", "--json"]);
    assert_eq!(id_of(out), last);
}

#[test]
fn tokens_nodes_and_accounts_by_name() {
    let (_tmp, _data, _server, conn) = setup();
    let token = |name: &str| {
        let out = conn
            .run(&[
                "token",
                "create",
                "--name",
                name,
                "--role",
                "secrets_store_reporter",
                "--json",
            ])
            .ok();
        out.json()["id"].as_str().unwrap().to_owned()
    };
    let ci1 = token("ci");
    let ci2 = token("ci");

    // Two tokens that work share the name: the error lists them.
    let out = conn.run(&["token", "revoke", "ci"]);
    let line = out.one_error_line(1);
    assert!(
        line.starts_with("error: 2 tokens are named \"ci\": "),
        "{line}"
    );
    assert!(line.contains(&ci1) && line.contains(&ci2), "{line}");
    assert!(line.ends_with("; give the id instead"), "{line}");

    // Once one is revoked, the name means the one that still works.
    conn.run(&["token", "revoke", &ci1]).ok();
    let out = conn.run(&["token", "get", "ci", "--json"]).ok();
    assert_eq!(out.json()["id"], ci2.as_str());
    let out = conn.run(&["token", "revoke", "ci", "--json"]).ok();
    let v = out.json();
    assert_eq!(
        (v["id"].as_str(), v["status"].as_str()),
        (Some(ci2.as_str()), Some("revoked"))
    );
    let out = conn.run(&["token", "get", "nope"]);
    assert_eq!(out.one_error_line(1), "error: no token named \"nope\"");

    // Nodes: a name is unique among the nodes not revoked, and means that one.
    let node = |name: &str| {
        let out = conn.run(&["node", "create", name, "--json"]).ok();
        out.json()["id"].as_str().unwrap().to_owned()
    };
    let first = node("edge-1.fra");
    let out = conn.run(&["node", "revoke", "edge-1.fra"]).ok();
    assert_eq!(
        out.stdout,
        format!("Revoked edge node edge-1.fra ({first}); its token no longer works.\n")
    );
    let second = node("edge-1.fra");
    let out = conn.run(&["node", "revoke", "edge-1.fra", "--json"]).ok();
    assert_eq!(out.json()["id"], second.as_str());
    // Now both are revoked: the name is ambiguous.
    let line = conn
        .run(&["node", "revoke", "edge-1.fra"])
        .one_error_line(1)
        .to_owned();
    assert!(line.contains(&first) && line.contains(&second), "{line}");
    let out = conn.run(&["node", "revoke", "edge-9"]);
    assert_eq!(out.one_error_line(1), "error: no node named \"edge-9\"");

    // Accounts (the operator's): by name too.
    let out = conn.run(&["account", "create", "team-x", "--json"]).ok();
    let team_x = out.json()["id"].as_str().unwrap().to_owned();
    let out = conn.run(&["account", "delete", "team-x"]).ok();
    assert_eq!(
        out.stdout,
        format!("Deleted account team-x ({team_x}) with its stores, secrets and tokens.\n")
    );
    let out = conn.run(&["account", "delete", "team-x"]);
    assert_eq!(out.one_error_line(1), "error: no account named \"team-x\"");
}

#[test]
fn the_account_comes_from_the_token() {
    let (_tmp, _data, _server, conn) = setup();
    let operator = conn.as_(&conn.token, "");

    // The operator without an account id: its own account, and a note saying so, since it
    // acts on every account. With the account id, nothing is said.
    let out = operator.run(&["store", "create", "mine", "--json"]).ok();
    let mine = out.json()["id"].as_str().unwrap().to_owned();
    let note = format!(
        "note: the operator token acts on its own account default ({}); give another with \
         --account-id (or COFFER_ACCOUNT_ID)\n",
        conn.account
    );
    assert_eq!(out.stderr, note);
    let out = conn.run(&["store", "get", &mine, "--json"]).ok();
    assert_eq!(out.json()["account_id"], conn.account.as_str());
    assert_eq!(out.stderr, "");
    // A token created in the operator's own account for want of an account id.
    let out = operator
        .run(&[
            "token",
            "create",
            "admin",
            "--role",
            "super_admin",
            "--json",
        ])
        .ok();
    assert_eq!(out.stderr, note);
    let out = conn.run(&["token", "get", "admin", "--json"]).ok();
    assert_eq!(out.json()["role"], "super_admin");

    // A second account with a super_admin that expires.
    let out = operator
        .run(&["account", "create", "team-b", "--json"])
        .ok();
    let b = out.json()["id"].as_str().unwrap().to_owned();
    let out = conn
        .as_(&conn.token, &b)
        .run(&[
            "token",
            "create",
            "--name",
            "admin",
            "--role",
            "super_admin",
            "--expires-in",
            "30d",
            "--json",
        ])
        .ok();
    let v = out.json();
    let b_admin = conn.as_(v["token"].as_str().unwrap(), "");
    let b_admin_id = v["id"].as_str().unwrap().to_owned();
    let expires = v["expires_on"].as_str().unwrap().to_owned();

    let out = b_admin.run(&["store", "create", "theirs", "--json"]).ok();
    let theirs = out.json()["id"].as_str().unwrap().to_owned();
    // Not the operator: its account is the only one it can act on, nothing to say.
    assert_eq!(out.stderr, "");
    let out = b_admin.run(&["store", "list", "--json"]).ok();
    let v = out.json();
    let ids: Vec<&str> = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [theirs.as_str()]);
    // The operator reaches the account with its id, to administer it, not its contents.
    let out = conn
        .as_(&conn.token, &b)
        .run(&["token", "list", "--json"])
        .ok();
    assert!(out.stdout.contains(&b_admin_id), "{}", out.stdout);
    let out = conn
        .as_(&conn.token, &b)
        .run(&["store", "get", &theirs, "--json"]);
    let line = out.one_error_line(1);
    assert!(line.contains("1101 forbidden"), "{line}");

    // whoami: name, role, account, expiry, operator; table and --json.
    let out = b_admin.run(&["whoami", "--json"]).ok();
    let v = out.json();
    assert_eq!(v["id"], b_admin_id.as_str());
    assert_eq!(v["name"], "admin");
    assert_eq!(v["role"], "super_admin");
    assert_eq!(v["operator"], false);
    assert_eq!(v["account"]["id"], b.as_str());
    assert_eq!(v["account"]["name"], "team-b");
    assert_eq!(v["expires_on"], expires.as_str());
    let out = b_admin.run(&["whoami"]).ok();
    let secs = &expires[..19];
    assert_eq!(
        out.stdout,
        format!(
            "Token:      admin\n\
             Token ID:   {b_admin_id}\n\
             Role:       super_admin\n\
             Account:    team-b\n\
             Account ID: {b}\n\
             Expires:    {secs}Z\n\
             Operator:   no\n"
        )
    );
    let out = operator.run(&["whoami"]).ok();
    assert!(out.stdout.contains("Token:      init\n"), "{out:#?}");
    assert!(
        out.stdout
            .contains(&format!("Account ID: {}\n", conn.account)),
        "{out:#?}"
    );
    assert!(out.stdout.contains("Expires:    never\n"), "{out:#?}");
    assert!(
        out.stdout
            .ends_with("Operator:   yes (acts on every account)\n"),
        "{out:#?}"
    );

    // A token that no longer works cannot say which account it is in.
    conn.as_(&conn.token, &b)
        .run(&["token", "revoke", "admin"])
        .ok();
    let out = b_admin.run(&["store", "list"]);
    let line = out.one_error_line(1);
    assert!(
        line.starts_with("error: cannot find the API token's account (give one with --account-id or COFFER_ACCOUNT_ID): [1100 unauthenticated] API token has been revoked"),
        "{line}"
    );
    let out = b_admin.run(&["whoami"]);
    assert!(
        out.one_error_line(1).contains("unauthenticated"),
        "{out:#?}"
    );
    // And whoami needs the server and a token, nothing else.
    let mut cmd = coffer_cmd();
    cmd.arg("whoami");
    let line = run(cmd, None).one_error_line(2).to_owned();
    assert!(
        line.contains("COFFER_API_URL") && line.contains("COFFER_API_TOKEN"),
        "{line}"
    );
    assert!(!line.contains("COFFER_ACCOUNT_ID"), "{line}");
}

/// Answers one HTTP request on a fresh loopback port with a v4 list of `accounts` as the
/// token's memberships; returns the URL.
fn memberships_stub(accounts: &[(&str, &str)]) -> (String, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let items: Vec<Value> = accounts
        .iter()
        .map(|(id, name)| {
            serde_json::json!({"id": "f".repeat(32), "status": "accepted", "roles": [],
                "permissions": {}, "account": {"id": id, "name": name, "type": "standard",
                "created_on": "2025-01-01T00:00:00Z"}})
        })
        .collect();
    let body = serde_json::json!({"success": true, "errors": [], "messages": [],
        "result": items, "result_info": {"page": 1, "per_page": 20, "count": items.len(),
        "total_count": items.len()}})
    .to_string();
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte).unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(answer.as_bytes()).unwrap();
        String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    (url, handle)
}

#[test]
fn a_token_without_exactly_one_account_is_a_clear_error() {
    let a = "a".repeat(32);
    let b = "b".repeat(32);
    for (accounts, expected) in [
        (
            vec![],
            "error: the API token is not a member of any account: give one with --account-id \
             (or COFFER_ACCOUNT_ID)"
                .to_owned(),
        ),
        (
            vec![(a.as_str(), "one"), (b.as_str(), "two")],
            format!(
                "error: the API token is a member of 2 accounts ({a} (one), {b} (two)): choose \
                 one with --account-id (or COFFER_ACCOUNT_ID)"
            ),
        ),
    ] {
        let (url, seen) = memberships_stub(&accounts);
        let conn = Conn {
            url,
            token: "coffer_x".into(),
            account: String::new(),
        };
        let out = conn.run(&["store", "list"]);
        assert_eq!(out.one_error_line(1), expected);
        assert_eq!(seen.join().unwrap(), "GET /client/v4/memberships HTTP/1.1");
    }
}
