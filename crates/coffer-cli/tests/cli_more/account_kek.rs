//! `coffer account set-kek` / `coffer account kek` against a running server: the key file made
//! in the data dir, one-line refusals of bad input, and the key destroyed with the account.

use crate::common::*;

#[test]
fn an_account_kek_is_set_shown_refused_when_bad_and_destroyed_with_the_account() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, token) = init(&data);
    let server = Server::start_with(&data, &[]);
    let op = Conn {
        url: server.url.clone(),
        token,
        account: account.clone(),
    };
    let b = op
        .run(&["account", "create", "team-b", "--json"])
        .ok()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Before: the instance KEK wraps the account.
    let v = op.run(&["account", "kek", "team-b", "--json"]).ok().json();
    assert_eq!(v["wrapped_by"], "instance", "{v}");

    // Bad input: one line naming the problem, non-zero exit, nothing made.
    for (kek, needle) in [
        ("nope", "[1002 invalid_field]"),
        ("file:relative.key", "absolute path"),
        // The instance KEK is a key file: no token for an account key to live in.
        ("pkcs11:token=t;object=o", "instance's KEK is a key file"),
        ("pkcs11", "instance's KEK is a key file"),
        ("file:/nonexistent/coffer.key", "/nonexistent/coffer.key"),
    ] {
        let out = op.run(&["account", "set-kek", "team-b", "--kek", kek]);
        let line = out.one_error_line(1);
        assert!(line.contains(needle), "{kek}: {line}");
    }
    assert!(!data.join(format!("account-keks/{b}.key")).exists());
    let out = op.run(&["account", "set-kek", "no-such-account", "--kek", "file"]);
    out.one_error_line(1);

    let v = op
        .run(&["account", "set-kek", "team-b", "--kek", "file", "--json"])
        .ok()
        .json();
    assert_eq!(v["wrapped_by"], "account", "{v}");
    assert_eq!(v["provider"], "file", "{v}");
    let key = data.join(format!("account-keks/{b}.key"));
    assert!(key.exists());
    let out = op.run(&["account", "kek", "team-b"]).ok();
    assert!(
        out.stdout.contains("has its own KEK")
            && out.stdout.contains(v["kek_id"].as_str().unwrap()),
        "{out:#?}"
    );
    let out = op.run(&["account", "set-kek", "team-b", "--kek", "file"]);
    let line = out.one_error_line(1);
    assert!(line.contains("[1312 account_kek_exists]"), "{line}");

    op.run(&["account", "delete", "team-b"]).ok();
    assert!(!key.exists(), "the key file is destroyed with the account");
    assert!(!data.join(format!("account-keks/{b}.toml")).exists());
}
