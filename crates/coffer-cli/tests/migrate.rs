//! `coffer migrate` end to end: a data dir served on SQLite (a store, a secret, a deployed
//! service) moved into an empty PostgreSQL database; the copy verifies with the source's
//! heads, the data dir gets `backend.toml` and keeps `coffer.db` as the rollback copy; then
//! `coffer server --data-dir D --database-url URL` serves the same value through the same
//! service token, a start without the URL is refused, and backup and verify refuse the moved
//! dir. A running server, a moved dir, a non-empty database, a password on the command line
//! and a bad URL are each refused in one line. Skips without COFFER_TEST_DATABASE_URL, fails
//! under CI=true.

mod common;

use std::path::Path;

use coffer_postgres::testing::{TestDatabase, cluster_url};
use coffer_postgres::{PgOptions, PgStorage};
use coffer_storage::{SqliteStorage, Storage, verify_chains};

use common::*;

const VALUE: &str = "m1grated-v4lue-Zq8";

fn coffer(args: &[&str]) -> Out {
    let mut cmd = coffer_cmd();
    cmd.args(args);
    run(cmd, None)
}

/// `coffer migrate --from DIR` with the URL (and its password) in COFFER_DATABASE_URL.
fn migrate_env(from: &Path, url: &str, extra: &[&str]) -> Out {
    let mut cmd = coffer_cmd();
    cmd.args(["migrate", "--from", p(from)])
        .args(extra)
        .env("COFFER_DATABASE_URL", url);
    run(cmd, None)
}

/// The password in `url` (`scheme://user:password@host/...`).
fn password(url: &str) -> &str {
    let rest = url.split_once("://").unwrap().1;
    let userinfo = rest.split_once('@').unwrap().0;
    userinfo.split_once(':').unwrap().1
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_served_sqlite_dir_moves_to_an_empty_database_and_verifies() {
    let Some(cluster) = cluster_url("migrate") else {
        return;
    };
    let rt = runtime();
    let db = rt.block_on(TestDatabase::create(&cluster));
    let url = db.url().to_owned();

    let (tmp, data, server, conn) = setup();
    let store = create_store(&conn, "prod");
    create_secret(&conn, &store, "api-key", "workers", VALUE);
    let wrangler = tmp.path().join("app.toml");
    std::fs::write(
        &wrangler,
        format!(
            "name = \"app\"\n[[secrets_store_secrets]]\nbinding = \"KEY\"\n\
             store_id = \"{store}\"\nsecret_name = \"api-key\"\n"
        ),
    )
    .unwrap();
    let token = conn
        .run(&["deploy", "--config", p(&wrangler), "--json"])
        .ok()
        .json()["service_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = runtime_get(&server.url, &token, "/runtime/v1/bindings/KEY");
    assert_eq!(
        (before.status, before.body.as_slice()),
        (200, VALUE.as_bytes())
    );

    // A server holds the dir: refused, nothing copied.
    let line = migrate_env(&data, &url, &[]).one_error_line(1).to_owned();
    assert!(
        line.contains("in use") && line.contains("stop the server"),
        "{line}"
    );
    assert!(!data.join("backend.toml").exists());

    let (status, _) = server.terminate();
    assert!(status.success());
    let source = coffer(&["verify", "--data-dir", p(&data), "--json"])
        .ok()
        .json();

    // A password in a URL on the command line: refused before anything, not repeated.
    let secret = password(&url).to_owned();
    let refused = coffer(&["migrate", "--from", p(&data), "--to", &url]);
    let line = refused.one_error_line(2).to_owned();
    assert!(
        line.contains("password") && !line.contains(&secret),
        "{line}"
    );
    assert!(!data.join("backend.toml").exists());

    let out = migrate_env(&data, &url, &["--json"]).ok();
    let done = out.json();
    assert!(
        !out.stdout.contains(&secret) && !out.stderr.contains(&secret),
        "the password is never printed"
    );
    let target = done["database"].as_str().unwrap();
    assert!(target.ends_with(db.name()), "{target}");
    assert_eq!(
        done["change_log"]["head_seq"],
        source["change_log"]["head_seq"]
    );
    assert_eq!(
        done["change_log"]["head_hash"],
        source["change_log"]["head_hash"]
    );
    assert_eq!(
        done["audit_chains"].as_u64().unwrap() as usize,
        source["audit_heads"].as_array().unwrap().len()
    );
    assert_eq!(done["rows"]["versions"], 1);
    assert_eq!(done["rows"]["service_tokens"], 1);
    let cluster_id = done["cluster_id"].as_str().unwrap().to_owned();
    assert_eq!(
        std::fs::read_to_string(data.join("backend.toml")).unwrap(),
        format!("backend = \"postgresql\"\ncluster-id = \"{cluster_id}\"\n")
    );
    assert!(!data.join("backend.toml.tmp").exists());
    assert_eq!(
        done["rollback_copy"].as_str().unwrap(),
        p(&data.join("coffer.db"))
    );
    // The rollback copy is still the installation as it was.
    rt.block_on(async {
        let copy = SqliteStorage::open_read_only(&data.join("coffer.db")).unwrap();
        let report = verify_chains(&copy).await.unwrap();
        assert_eq!(
            hex::encode(report.log.head_hash),
            source["change_log"]["head_hash"].as_str().unwrap()
        );
        assert_eq!(
            report.audit_heads.len(),
            source["audit_heads"].as_array().unwrap().len()
        );
    });

    // The moved dir is not an embedded one any more: backup and verify say so.
    for args in [
        vec!["verify", "--data-dir", p(&data)],
        vec![
            "backup",
            "--data-dir",
            p(&data),
            "--out",
            p(&tmp.path().join("b.cbk")),
        ],
    ] {
        let line = coffer(&args).one_error_line(1).to_owned();
        assert!(line.contains("PostgreSQL"), "{args:?}: {line}");
    }
    assert!(!tmp.path().join("b.cbk").exists());

    // Served from PostgreSQL: the same value through the same service token.
    let mut cmd = coffer_cmd();
    cmd.args(["server", "--data-dir", p(&data), "--listen", "127.0.0.1:0"])
        .env("COFFER_DATABASE_URL", &url);
    let pg_server = Server::spawn(cmd);
    let after = runtime_get(&pg_server.url, &token, "/runtime/v1/bindings/KEY");
    assert_eq!(
        (after.status, after.body.as_slice()),
        (200, VALUE.as_bytes())
    );
    let (status, _) = pg_server.terminate();
    assert!(status.success());
    // Without the URL the dir is refused, not served from the rollback copy.
    let mut cmd = coffer_cmd();
    cmd.args(["server", "--data-dir", p(&data), "--listen", "127.0.0.1:0"])
        .env_remove("COFFER_DATABASE_URL");
    let line = run(cmd, None).one_error_line(1).to_owned();
    assert!(
        line.contains("PostgreSQL") && line.contains("--database-url"),
        "{line}"
    );

    // The database holds the same instance, chains and all.
    rt.block_on(async {
        let pg = PgStorage::connect(&url, PgOptions::default())
            .await
            .unwrap();
        let report = verify_chains(&pg).await.unwrap();
        assert_eq!(hex::encode(report.log.cluster_id.unwrap()), cluster_id);
        assert_eq!(
            hex::encode(report.log.head_hash),
            source["change_log"]["head_hash"].as_str().unwrap()
        );
        assert_eq!(pg.list_accounts().await.unwrap().len(), 1);
        pg.shutdown().await;
    });

    // Moved already: refused.
    let line = migrate_env(&data, &url, &[]).one_error_line(1).to_owned();
    assert!(line.contains("already moved"), "{line}");
    // As if the switch had not happened (a crash after the COMMIT): the database holding this
    // dir's own instance is named as such, with what to do.
    let marker = std::fs::read(data.join("backend.toml")).unwrap();
    std::fs::remove_file(data.join("backend.toml")).unwrap();
    let line = migrate_env(&data, &url, &[]).one_error_line(1).to_owned();
    assert!(
        line.contains(&cluster_id) && line.contains("this data dir's own instance"),
        "{line}"
    );
    assert!(!data.join("backend.toml").exists());
    std::fs::write(data.join("backend.toml"), marker).unwrap();

    // Another installation into the same (now full) database: refused, naming the instance.
    let other = tmp.path().join("other");
    init(&other);
    let line = migrate_env(&other, &url, &[]).one_error_line(1).to_owned();
    assert!(
        line.contains(&cluster_id) && line.contains("empty"),
        "{line}"
    );
    assert!(!other.join("backend.toml").exists());

    // A bad URL: one line, without the password.
    let line = coffer(&[
        "migrate",
        "--from",
        p(&other),
        "--to",
        "mysql://u:s3cr3t-pw@h/db",
    ])
    .one_error_line(1)
    .to_owned();
    assert!(
        line.contains("URL") && !line.contains("s3cr3t-pw"),
        "{line}"
    );

    // A dir that is not a data dir: one line, nothing made there.
    let missing = tmp.path().join("missing");
    let line = migrate_env(&missing, &url, &[])
        .one_error_line(1)
        .to_owned();
    assert!(line.contains("not an initialised"), "{line}");
    assert!(!missing.exists());
    drop(db);
}
