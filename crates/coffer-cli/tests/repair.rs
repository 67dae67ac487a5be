//! `coffer repair --data-dir`: secret counts that drifted (edited with SQL) are set to their
//! rows with the server stopped, after which verify passes and backup writes; verify, backup
//! and migrate name the repair for a count, and only for a count; a broken foreign key is
//! refused, naming it, with nothing written; a server holding the data dir makes it refuse.

mod common;

use std::path::Path;

use common::*;

fn coffer(args: &[&str]) -> Out {
    let mut cmd = coffer_cmd();
    cmd.args(args);
    run(cmd, None)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs `sql` on the data dir's database (the counting triggers are not involved: the counts
/// are set directly).
fn edit(data: &Path, sql: &str) {
    rusqlite::Connection::open(data.join("coffer.db"))
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

/// The stored count of the store or account `table` row `id`.
fn stored_count(data: &Path, table: &str, id: &str) -> i64 {
    rusqlite::Connection::open(data.join("coffer.db"))
        .unwrap()
        .query_row(
            &format!("SELECT secret_count FROM {table} WHERE id = X'{id}'"),
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn repair_recounts_drifted_counts_then_verify_and_backup_pass() {
    let (tmp, data, server, conn) = setup();
    let t = tmp.path();
    let store = create_store(&conn, "prod");
    create_secret(&conn, &store, "api-key", "workers", "v4lue-Zr8");
    let account = conn.account.clone();
    edit(
        &data,
        &format!(
            "UPDATE stores SET secret_count = 1000 WHERE id = X'{store}';
             UPDATE accounts SET secret_count = 0 WHERE id = X'{account}';"
        ),
    );
    // A list trusts the drifted count.
    let listed = conn.run(&["secret", "list", &store, "--json"]).ok();
    assert!(!listed.stdout.is_empty());

    // Verify and backup refuse it, naming the repair.
    let hint = format!(
        "(`coffer repair --data-dir {}` recounts secret counts)",
        data.display()
    );
    let line = coffer(&["verify", "--data-dir", p(&data)])
        .one_error_line(1)
        .to_owned();
    assert!(
        line.contains(&format!("store {store} counts 1000 secrets, holds 1"))
            && line.ends_with(&hint),
        "{line}"
    );
    let file = t.join("b.backup");
    let line = coffer(&["backup", "--data-dir", p(&data), "--out", p(&file)])
        .one_error_line(1)
        .to_owned();
    assert!(
        line.contains("nothing written, the database does not pass its integrity check")
            && line.ends_with(&hint),
        "{line}"
    );
    assert!(!file.exists());

    // Not while the server holds the data dir: nothing written.
    let line = coffer(&["repair", "--data-dir", p(&data)])
        .one_error_line(2)
        .to_owned();
    assert!(
        line.contains(&format!("data dir {} is in use", data.display()))
            && line.contains("stop it first"),
        "{line}"
    );
    assert_eq!(stored_count(&data, "stores", &store), 1000);
    let (status, _) = server.terminate();
    assert!(status.success());

    // Migrate names it too, before connecting anywhere.
    let line = coffer(&[
        "migrate",
        "--from",
        p(&data),
        "--to",
        "postgres://nobody@127.0.0.1:1/none",
    ])
    .one_error_line(1)
    .to_owned();
    assert!(
        line.contains("does not pass its integrity check, not migrating")
            && line.contains(&format!("store {store} counts 1000 secrets, holds 1"))
            && line.ends_with(&hint),
        "{line}"
    );

    let out = coffer(&["repair", "--data-dir", p(&data)]).ok();
    assert_eq!(
        out.stdout,
        format!(
            "repaired data dir {}: 2 secret counts set to their rows (1 stores, 1 accounts)\n\
             store {store}: 1000 -> 1\naccount {account}: 0 -> 1\n",
            data.display()
        ),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("drifted secret counts set to their rows"),
        "a log line: {out:?}"
    );
    assert_eq!(stored_count(&data, "stores", &store), 1);
    assert_eq!(stored_count(&data, "accounts", &account), 1);

    let out = coffer(&["verify", "--data-dir", p(&data)]).ok();
    assert!(out.stdout.starts_with("ok: "), "{out:?}");
    coffer(&["backup", "--data-dir", p(&data), "--out", p(&file)]).ok();
    let new = t.join("new");
    coffer(&["restore", "--from", p(&file), "--data-dir", p(&new)]).ok();

    // Again: nothing to repair, and JSON says so.
    let out = coffer(&["repair", "--data-dir", p(&data)]).ok();
    assert_eq!(
        out.stdout,
        format!(
            "ok: data dir {}: secret counts of 1 stores and 1 accounts equal their rows; \
             nothing to repair\n",
            data.display()
        )
    );
    edit(
        &data,
        &format!("UPDATE stores SET secret_count = 5 WHERE id = X'{store}';"),
    );
    let v = coffer(&["repair", "--data-dir", p(&data), "--json"])
        .ok()
        .json();
    assert_eq!(v["data_dir"], p(&data));
    assert_eq!(v["corrected"], 1);
    assert_eq!(
        v["recounted"],
        serde_json::json!({
            "stores": [{ "id": store, "was": 5, "now": 1 }],
            "accounts": [],
        })
    );
    assert_eq!(
        (v["stores_checked"].as_u64(), v["accounts_checked"].as_u64()),
        (Some(1), Some(1))
    );
}

/// A secret moved into another account's store (its own account kept): repair names the
/// broken foreign key, says to restore a backup, and writes nothing (not even a drifted count
/// beside it); verify and backup give no repair hint for it.
#[test]
fn repair_refuses_a_broken_foreign_key() {
    let (_tmp, data, server, conn) = setup();
    let store = create_store(&conn, "prod");
    create_secret(&conn, &store, "api-key", "workers", "v4lue-Zr8");
    drop(server);
    let (other_account, other_store) = (
        "0123456789abcdef0123456789abcdef",
        "fedcba98765432100123456789abcdef",
    );
    // The guard against moving a secret is dropped for the move and put back as it was (the
    // schema must be this version's, or that is what repair names).
    let guard: String = rusqlite::Connection::open(data.join("coffer.db"))
        .unwrap()
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'secrets_owner_fixed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    edit(
        &data,
        &format!(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO accounts (id, name, created) VALUES (X'{other_account}', 'other', 0);
             INSERT INTO stores (id, account_id, name, created, modified, secret_count)
                 VALUES (X'{other_store}', X'{other_account}', 'theirs', 0, 0, 1);
             UPDATE stores SET secret_count = 7 WHERE id = X'{store}';
             DROP TRIGGER secrets_owner_fixed;
             UPDATE secrets SET store_id = X'{other_store}';
             {guard};"
        ),
    );
    let line = coffer(&["repair", "--data-dir", p(&data)])
        .one_error_line(1)
        .to_owned();
    assert!(
        line.contains(&format!(
            "data dir {}: secrets row 1 breaks its foreign key to stores: not repairable by \
             `coffer repair`",
            data.display()
        )) && line.contains("nothing was written")
            && line.contains("restore the last good backup"),
        "{line}"
    );
    assert_eq!(stored_count(&data, "stores", &store), 7, "nothing written");
    let line = coffer(&["verify", "--data-dir", p(&data)])
        .one_error_line(1)
        .to_owned();
    assert!(
        line.contains("breaks its foreign key") && !line.contains("coffer repair"),
        "{line}"
    );

    // Neither flag, both, and a data dir moved to PostgreSQL.
    let out = coffer(&["repair"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let mut cmd = coffer_cmd();
    cmd.args(["repair", "--data-dir", p(&data)])
        .env("COFFER_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none");
    let line = run(cmd, None).one_error_line(2).to_owned();
    assert!(
        line.contains("give one of --data-dir and --database-url, not both")
            && line.contains("COFFER_DATABASE_URL is set: unset it to repair a data dir"),
        "{line}"
    );
    std::fs::write(
        data.join("backend.toml"),
        "backend = \"postgresql\"\ncluster-id = \"00000000000000000000000000000000\"\n",
    )
    .unwrap();
    let line = coffer(&["repair", "--data-dir", p(&data)])
        .one_error_line(1)
        .to_owned();
    assert!(
        line.contains("its state is in PostgreSQL")
            && line.contains("`coffer repair --database-url URL`"),
        "{line}"
    );
}
