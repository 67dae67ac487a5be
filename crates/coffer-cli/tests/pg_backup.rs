//! PostgreSQL's backup and its verification step (docs/operations.md, "Backing up
//! PostgreSQL"): a served Coffer database pg_dump'ed while its server writes, pg_restore'd
//! into a fresh database, and `coffer verify --database-url` on the copy: it passes with the
//! source's heads; an audit row or a store's count altered with SQL is refused, naming the
//! check; nothing is migrated or written; the password is never printed. `coffer repair
//! --database-url` sets a drifted count right while the server serves. Runs on the test
//! cluster `COFFER_TEST_DATABASE_URL` names, with the cluster's pg_dump and pg_restore
//! (`PG_BIN`, else /usr/lib/postgresql/*/bin, else PATH). Skips without the variable, fails
//! under CI=true.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use coffer_postgres::testing::{TestDatabase, cluster_url};
use common::*;

const VALUE: &str = "pg-dump-v4lue-Rt5";

/// Where pg_dump and pg_restore are.
fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return dir.into();
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|d| d.join("pg_dump").is_file())
        .collect();
    // The newest major version (a dump is read by its own version or a later one).
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().unwrap_or_default()
}

/// `url` split into the URL without its password, and the password.
fn split_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap();
    (format!("{scheme}://{user}@{host}"), password.to_owned())
}

/// A PostgreSQL client tool (`pg_dump`, `pg_restore`) on the URL without its password, the
/// password in PGPASSWORD; it must succeed.
fn pg_tool(tool: &str, url: &str, args: &[&str]) {
    let (bare, password) = split_password(url);
    let out = Command::new(pg_bin().join(tool))
        .args(args)
        .arg(format!("--dbname={bare}"))
        .env("PGPASSWORD", password)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e} (set PG_BIN to where it is)"));
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `coffer verify --database-url` with the URL (and so its password) in COFFER_DATABASE_URL.
fn verify(url: &str, extra: &[&str]) -> Out {
    let mut cmd = coffer_cmd();
    cmd.args(["verify"])
        .args(extra)
        .env("COFFER_DATABASE_URL", url);
    run(cmd, None)
}

/// Runs `sql` on the database at `url` as the superuser, with triggers off
/// (`session_replication_role = replica`: the append-only guards do not fire).
fn tamper(rt: &tokio::runtime::Runtime, url: &str, sql: &str) {
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("SET session_replication_role = replica; {sql}"))
            .await
            .unwrap();
        drop(client);
        let _ = driver.await;
    });
}

fn schema_version(rt: &tokio::runtime::Runtime, url: &str) -> i64 {
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        let v = client
            .query_one("SELECT version FROM coffer_schema_version", &[])
            .await
            .unwrap()
            .get(0);
        drop(client);
        let _ = driver.await;
        v
    })
}

/// A fresh database holding `dump`, restored as docs/operations.md says.
fn restored(rt: &tokio::runtime::Runtime, cluster: &str, dump: &Path) -> TestDatabase {
    let db = rt.block_on(TestDatabase::create(cluster));
    pg_tool(
        "pg_restore",
        db.url(),
        &[
            "--exit-on-error",
            "--single-transaction",
            "--no-owner",
            dump.to_str().unwrap(),
        ],
    );
    db
}

#[test]
fn a_pg_dump_restores_into_a_fresh_database_that_verify_checks() {
    let Some(cluster) = cluster_url("pg_backup") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let source = rt.block_on(TestDatabase::create(&cluster));
    let url = source.url().to_owned();
    let (_, password) = split_password(&url);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut init = coffer_cmd();
    init.args(["init", "--json", "--data-dir"])
        .arg(&data)
        .env("COFFER_DATABASE_URL", &url);
    let v = run(init, None).ok().json();
    let conn = Conn {
        url: String::new(),
        token: v["token"].as_str().unwrap().to_owned(),
        account: v["account_id"].as_str().unwrap().to_owned(),
    };
    let mut serve = coffer_cmd();
    serve
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("COFFER_DATABASE_URL", &url);
    let server = Server::spawn(serve);
    let conn = Conn {
        url: server.url.clone(),
        ..conn
    };
    let store = create_store(&conn, "prod");
    create_secret(&conn, &store, "api-key", "workers", VALUE);

    // Dumped while the server serves.
    let dump = tmp.path().join("coffer.dump");
    pg_tool(
        "pg_dump",
        &url,
        &["--format=custom", "--file", dump.to_str().unwrap()],
    );
    let (status, _) = server.terminate();
    assert!(status.success());
    let source_heads = verify(&url, &["--json"]).ok().json();

    // The copy verifies, with the source's heads, read-only, the password never printed.
    let copy = restored(&rt, &cluster, &dump);
    let out = verify(copy.url(), &[]).ok();
    assert!(out.stdout.starts_with("ok: database 127.0.0.1:"), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("/{}: change log head seq", copy.name()))
            && out
                .stdout
                .contains("secret counts of 1 stores and 1 accounts equal their rows")
            && out.stdout.contains("foreign keys checked row by row"),
        "{out:?}"
    );
    let heads = verify(copy.url(), &["--json"]).ok().json();
    for key in ["cluster_id", "change_log", "audit_heads"] {
        assert_eq!(heads[key], source_heads[key], "{key}");
    }
    assert_eq!(heads["integrity"]["foreign_keys"], "checked");
    assert!(heads["database"].as_str().unwrap().ends_with(copy.name()));
    for out in [&out.stdout, &out.stderr] {
        assert!(!out.contains(&password), "the password is never printed");
    }

    // One audit row altered: refused, naming the chain and the seq.
    tamper(
        &rt,
        copy.url(),
        &format!(
            "UPDATE audit SET action = 'forged' WHERE account_id = '\\x{}' AND seq = 1",
            conn.account
        ),
    );
    let out = verify(copy.url(), &[]);
    let line = out.one_error_line(1);
    assert!(
        line.contains(&format!(
            "/{}: audit chain of account {} broken at seq 1",
            copy.name(),
            conn.account
        )),
        "{line}"
    );
    assert!(!line.contains(&password), "{line}");

    // A store's count altered (in another copy): refused, naming the store.
    let copy = restored(&rt, &cluster, &dump);
    verify(copy.url(), &[]).ok();
    tamper(
        &rt,
        copy.url(),
        &format!("UPDATE stores SET secret_count = 1000 WHERE id = '\\x{store}'"),
    );
    let line = verify(copy.url(), &[]).one_error_line(1).to_owned();
    assert!(
        line.contains(&format!(
            "integrity check failed: store {store} counts 1000 secrets, holds 1"
        )),
        "{line}"
    );

    // Read-only: a schema of an older version is refused, not migrated.
    tamper(
        &rt,
        copy.url(),
        "UPDATE coffer_schema_version SET version = version - 1",
    );
    let older = schema_version(&rt, copy.url());
    let line = verify(copy.url(), &[]).one_error_line(1).to_owned();
    assert!(
        line.contains(&format!("the database's schema is version {older}")),
        "{line}"
    );
    assert_eq!(schema_version(&rt, copy.url()), older, "nothing migrated");

    // A secret moved to a store that does not exist, foreign keys bypassed (in another copy):
    // refused, naming the row and the constraint.
    let copy = restored(&rt, &cluster, &dump);
    tamper(
        &rt,
        copy.url(),
        "UPDATE secrets SET store_id = '\\x77777777777777777777777777777777'",
    );
    let line = verify(copy.url(), &[]).one_error_line(1).to_owned();
    assert!(
        line.contains("integrity check failed: secrets row ")
            && line
                .contains(" breaks its foreign key to stores (secrets_store_id_account_id_fkey)"),
        "{line}"
    );
    // The constraint itself dropped (in another copy): refused, naming it.
    let copy = restored(&rt, &cluster, &dump);
    tamper(
        &rt,
        copy.url(),
        "ALTER TABLE secrets DROP CONSTRAINT secrets_store_id_account_id_fkey",
    );
    let line = verify(copy.url(), &[]).one_error_line(1).to_owned();
    assert!(
        line.contains(
            "integrity check failed: schema: constraint secrets_store_id_account_id_fkey on \
             secrets is missing"
        ),
        "{line}"
    );

    // An empty database, a wrong password (from PGPASSWORD), both targets at once.
    let empty = rt.block_on(TestDatabase::create(&cluster));
    let line = verify(empty.url(), &[]).one_error_line(1).to_owned();
    assert!(line.contains("holds no Coffer schema"), "{line}");
    let (bare, _) = split_password(source.url());
    let mut cmd = coffer_cmd();
    cmd.args(["verify", "--database-url", &bare])
        .env("PGPASSWORD", "not-the-password-Xq7");
    let out = run(cmd, None);
    let line = out.one_error_line(1);
    assert!(
        line.contains("cannot connect") && !line.contains("not-the-password-Xq7"),
        "{line}"
    );
    let line = verify(source.url(), &["--data-dir", data.to_str().unwrap()])
        .one_error_line(2)
        .to_owned();
    assert!(
        line.contains("give one of --data-dir and --database-url, not both")
            && line.contains("COFFER_DATABASE_URL is set"),
        "{line}"
    );
}

/// `coffer repair --database-url`: a count drifted with SQL under a serving instance is set to
/// its rows live (verify names the repair before, passes after), the server serving on; a
/// second run finds nothing to repair.
#[test]
fn repair_recounts_a_served_database_live() {
    let Some(cluster) = cluster_url("pg_repair") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let source = rt.block_on(TestDatabase::create(&cluster));
    let url = source.url().to_owned();
    let (_, password) = split_password(&url);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut init = coffer_cmd();
    init.args(["init", "--json", "--data-dir"])
        .arg(&data)
        .env("COFFER_DATABASE_URL", &url);
    let v = run(init, None).ok().json();
    let mut serve = coffer_cmd();
    serve
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("COFFER_DATABASE_URL", &url);
    let server = Server::spawn(serve);
    let conn = Conn {
        url: server.url.clone(),
        token: v["token"].as_str().unwrap().to_owned(),
        account: v["account_id"].as_str().unwrap().to_owned(),
    };
    let store = create_store(&conn, "prod");
    create_secret(&conn, &store, "api-key", "workers", VALUE);
    tamper(
        &rt,
        &url,
        &format!("UPDATE stores SET secret_count = 1000 WHERE id = '\\x{store}'"),
    );
    let total = || {
        conn.run(&["secret", "list", &store, "--json"]).ok().json()["result_info"]["total_count"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(total(), 1000, "a list trusts the drifted count");
    let line = verify(&url, &[]).one_error_line(1).to_owned();
    assert!(
        line.contains(&format!("store {store} counts 1000 secrets, holds 1"))
            && line.ends_with("(`coffer repair --database-url URL` recounts secret counts)"),
        "{line}"
    );

    let repair = |extra: &[&str]| {
        let mut cmd = coffer_cmd();
        cmd.arg("repair")
            .args(extra)
            .env("COFFER_DATABASE_URL", &url);
        run(cmd, None).ok()
    };
    let out = repair(&[]);
    assert!(
        out.stdout.starts_with("repaired database 127.0.0.1:")
            && out.stdout.contains(&format!(
                "/{}: 1 secret counts set to their rows (1 stores, 0 accounts)\nstore {store}: \
                 1000 -> 1\n",
                source.name()
            )),
        "{out:?}"
    );
    for out in [&out.stdout, &out.stderr] {
        assert!(!out.contains(&password), "the password is never printed");
    }
    verify(&url, &[]).ok();
    // The server served on, and counts on from the right number.
    create_secret(&conn, &store, "second", "workers", VALUE);
    assert_eq!(total(), 2);
    verify(&url, &[]).ok();
    let v = repair(&["--json"]).json();
    assert_eq!(
        (v["corrected"].as_u64(), v["stores_checked"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    assert!(v["database"].as_str().unwrap().ends_with(source.name()));
    let (status, _) = server.terminate();
    assert!(status.success());
}
