//! End-to-end tests of Coffer on PostgreSQL: `coffer init --database-url` and `coffer server
//! --database-url`, real servers on loopback against the test cluster that
//! `COFFER_TEST_DATABASE_URL` names (`scripts/pg-test-cluster start DIR`), each test on a
//! database of its own. Without the variable they skip; under `CI=true` they fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coffer_postgres::testing::{TestDatabase, cluster_url};
use common::*;

const VALUE: &str = "pg-v4lue-Zx81";

/// A database of its own on the test cluster, with its URL without and with the password.
struct Db {
    db: TestDatabase,
    runtime: tokio::runtime::Runtime,
}

impl Db {
    fn new(test: &str) -> Option<Db> {
        let cluster = cluster_url(test)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let db = runtime.block_on(TestDatabase::create(&cluster));
        Some(Db { db, runtime })
    }

    fn url(&self) -> &str {
        self.db.url()
    }

    /// The URL without its password, and the password.
    fn url_and_password(&self) -> (String, String) {
        let url = self.url();
        let (scheme, rest) = url.split_once("://").unwrap();
        let (userinfo, host) = rest.split_once('@').unwrap();
        let (user, password) = userinfo.split_once(':').unwrap();
        (format!("{scheme}://{user}@{host}"), password.to_owned())
    }

    /// Runs `sql` on the cluster's `postgres` database as the superuser.
    fn admin(&self, sql: &str) {
        self.execute_in("postgres", sql);
    }

    /// Runs `sql` in `database` of the cluster as the superuser.
    fn execute_in(&self, database: &str, sql: &str) {
        let url = coffer_postgres::testing::with_database(self.url(), database);
        self.runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(connection);
            client.batch_execute(sql).await.unwrap();
            drop(client);
            let _ = driver.await;
        });
    }

    fn name(&self) -> &str {
        self.db.name()
    }
}

/// `coffer init --json --data-dir DIR --database-url URL`: (account, token).
fn init_pg(dir: &Path, url: &str) -> (String, String) {
    let mut cmd = coffer_cmd();
    cmd.arg("init")
        .arg("--data-dir")
        .arg(dir)
        .env("COFFER_DATABASE_URL", url)
        .arg("--json");
    let v = run(cmd, None).ok().json();
    (
        v["account_id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

/// The URL (which holds the password) goes in COFFER_DATABASE_URL: the command line refuses
/// a password.
fn start_pg(dir: &Path, url: &str) -> Server {
    start_pg_with(dir, url, &[])
}

fn start_pg_with(dir: &Path, url: &str, extra: &[&str]) -> Server {
    let mut cmd = coffer_cmd();
    cmd.arg("server")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("COFFER_DATABASE_URL", url)
        .env("RUST_LOG", "debug");
    Server::spawn(cmd)
}

fn conn(server: &Server, account: &str, token: &str) -> Conn {
    Conn {
        url: server.url.clone(),
        token: token.to_owned(),
        account: account.to_owned(),
    }
}

/// Deploys a service binding `KEY` to `secret` in `store`; its service token.
fn deploy(conn: &Conn, dir: &Path, store: &str, secret: &str) -> String {
    let config = dir.join("wrangler.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"svc\"\nmain = \"src/index.js\"\ncompatibility_date = \"2025-04-01\"\n\n\
             [[secrets_store_secrets]]\nbinding = \"KEY\"\nstore_id = \"{store}\"\nsecret_name = \"{secret}\"\n"
        ),
    )
    .unwrap();
    let v = conn
        .run(&["deploy", "--config", config.to_str().unwrap(), "--json"])
        .ok()
        .json();
    v["service_token"].as_str().unwrap().to_owned()
}

/// Polls `check` every 20 ms until it holds; the time it took. Fails after `within`.
fn within(within: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn init_server_write_and_runtime_read_on_postgres() {
    let Some(db) = Db::new("init_server_write_and_runtime_read_on_postgres") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    // The password through PGPASSWORD, the URL without it.
    let (bare_url, password) = db.url_and_password();
    let mut cmd = coffer_cmd();
    cmd.arg("init")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--database-url", &bare_url, "--json"])
        .env("PGPASSWORD", &password);
    let v = run(cmd, None).ok().json();
    let account = v["account_id"].as_str().unwrap().to_owned();
    let token = v["token"].as_str().unwrap().to_owned();
    // Only what is local stays in the data dir; nothing there holds the password or the URL.
    assert_eq!(entries(&dir), ["backend.toml", "kek.key", "lock"]);
    let backend = std::fs::read_to_string(dir.join("backend.toml")).unwrap();
    assert!(backend.contains("backend = \"postgresql\""), "{backend}");
    assert!(!backend.contains(&password) && !backend.contains("postgres://"));

    let mut cmd = coffer_cmd();
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("COFFER_DATABASE_URL", &bare_url)
        .env("PGPASSWORD", &password)
        .env("RUST_LOG", "debug");
    let server = Server::spawn(cmd);
    let admin = conn(&server, &account, &token);
    let store = create_store(&admin, "prod");
    create_secret(&admin, &store, "api-key", "workers", VALUE);
    let service_token = deploy(&admin, tmp.path(), &store, "api-key");
    let read = runtime_get(&server.url, &service_token, "/runtime/v1/bindings/KEY");
    assert_eq!((read.status, read.body.as_slice()), (200, VALUE.as_bytes()));

    // A second init on that database is refused, naming the instance there.
    let cluster_id = backend
        .lines()
        .find_map(|l| l.strip_prefix("cluster-id = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let mut cmd = coffer_cmd();
    cmd.arg("init")
        .arg("--data-dir")
        .arg(tmp.path().join("other"))
        .env("COFFER_DATABASE_URL", db.url());
    let out = run(cmd, None);
    let line = out.one_error_line(1);
    assert!(
        line.contains("already holds a Coffer instance") && line.contains(&cluster_id),
        "{line}"
    );
    assert!(!tmp.path().join("other").exists());

    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
    for secret in [password.as_str(), VALUE, token.as_str()] {
        assert!(!log.contains(secret), "a secret reached the log:\n{log}");
    }
}

#[test]
fn a_data_dir_and_a_database_of_another_kind_or_instance_are_refused() {
    let Some(db) = Db::new("a_data_dir_and_a_database_of_another_kind_or_instance_are_refused")
    else {
        return;
    };
    let Some(other) = Db::new("a_data_dir_and_a_database_of_another_kind_or_instance_are_refused")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pg_dir = tmp.path().join("pg");
    init_pg(&pg_dir, db.url());
    let sqlite_dir = tmp.path().join("sqlite");
    init(&sqlite_dir);
    let start = |dir: &PathBuf, url: Option<&str>| {
        let mut cmd = coffer_cmd();
        cmd.arg("server").arg("--data-dir").arg(dir).args([
            "--listen",
            "127.0.0.1:0",
            "--database-connect-timeout",
            "2",
        ]);
        if let Some(url) = url {
            cmd.env("COFFER_DATABASE_URL", url);
        }
        run(cmd, None)
    };
    let out = start(&pg_dir, None);
    let line = out.one_error_line(1);
    assert!(
        line.contains("instance on PostgreSQL") && line.contains("--database-url"),
        "{line}"
    );
    let out = start(&sqlite_dir, Some(db.url()));
    let line = out.one_error_line(1);
    assert!(line.contains("embedded SQLite instance"), "{line}");
    // Another database: it holds no instance, or another one.
    let out = start(&pg_dir, Some(other.url()));
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    let line = out.stderr.lines().last().unwrap();
    assert!(line.contains("holds no Coffer instance"), "{line}");
    // ... and nothing was migrated there (newcomer 5: the check comes first).
    let other_name = other.name().to_owned();
    other.execute_in(
        &other_name,
        "DO $$ BEGIN IF to_regclass('replication') IS NOT NULL \
         OR to_regclass('coffer_schema_version') IS NOT NULL \
         THEN RAISE EXCEPTION 'the schema was migrated into the wrong database'; END IF; END $$",
    );
    init_pg(&tmp.path().join("pg2"), other.url());
    let out = start(&pg_dir, Some(other.url()));
    let line = out.one_error_line(1);
    assert!(
        line.contains("holds the instance with cluster id"),
        "{line}"
    );
}

#[test]
fn bad_database_settings_get_one_line_without_the_password() {
    let Some(db) = Db::new("bad_database_settings_get_one_line_without_the_password") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    init_pg(&dir, db.url());
    let (bare, password) = db.url_and_password();
    let server = |url: &str, extra: &[&str]| {
        let mut cmd = coffer_cmd();
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", "127.0.0.1:0"])
            .env("COFFER_DATABASE_URL", url)
            .args(extra)
            .env_remove("PGPASSWORD");
        run(cmd, None)
    };
    // A password on the command line (other users see argv): refused, not printed.
    let mut cmd = coffer_cmd();
    cmd.arg("server").arg("--data-dir").arg(&dir).args([
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        db.url(),
    ]);
    let out = run(cmd, None);
    let line = out.one_error_line(2).to_owned();
    assert!(
        line.contains("--database-url") && line.contains("COFFER_DATABASE_URL"),
        "{line}"
    );
    assert!(!out.stderr.contains(&password) && !out.stdout.contains(&password));
    // A wrong password: refused at once (no retries), and never printed.
    let wrong = "wr0ng-pAssw0rd-9931";
    let url = bare.replacen("@", &format!(":{wrong}@"), 1);
    let started = Instant::now();
    let out = server(&url, &[]);
    let line = out.one_error_line(1);
    assert!(line.contains("password authentication failed"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!out.stderr.contains(wrong) && !out.stdout.contains(wrong));
    // The right one from a file that is readable by others: refused by the secret-file rules.
    let file = tmp.path().join("pw");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = server(&bare, &["--database-password-file", file.to_str().unwrap()]);
    let line = out.one_error_line(1);
    assert!(line.contains("password file"), "{line}");
    assert!(!out.stderr.contains(&password));
    // Private, it is read: the server starts.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = coffer_cmd();
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0", "--database-url", &bare])
        .arg("--database-password-file")
        .arg(&file)
        .env_remove("PGPASSWORD");
    let (status, log) = Server::spawn(cmd).terminate();
    assert!(status.success(), "{log}");
    assert!(!log.contains(&password));
    // Unreachable: retried (each failure logged), then one line naming the setting.
    let out = server(
        "postgres://postgres@127.0.0.1:1/x",
        &["--database-connect-timeout", "2"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("retrying"), "{out:#?}");
    let last = out.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: cannot connect to the database at 127.0.0.1:1/x")
            && last.contains("--database-connect-timeout"),
        "{last}"
    );
    assert!(!out.stderr.contains("panicked"));
    // A bad scheme, an unparseable part: named.
    let line = server("mysql://u@h/d", &[]).one_error_line(1).to_owned();
    assert!(line.contains("scheme must be postgres://"), "{line}");
    let line = server("postgres://u@h:notaport/d", &[])
        .one_error_line(1)
        .to_owned();
    assert!(
        line.contains("invalid database URL") && line.contains("port"),
        "{line}"
    );
}

#[test]
fn a_config_file_with_a_database_password_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("d")).unwrap();
    let config = tmp.path().join("coffer.toml");
    std::fs::write(
        &config,
        "data-dir = \"d\"\n[database]\nurl = \"postgres://coffer:s3cr3t-pw@db.example/coffer\"\n",
    )
    .unwrap();
    let mut cmd = coffer_cmd();
    cmd.args(["config", "check", "--config"]).arg(&config);
    let out = run(cmd, None);
    assert_ne!(out.status.code(), Some(0), "{out:#?}");
    assert!(!out.stderr.contains("s3cr3t-pw") && !out.stdout.contains("s3cr3t-pw"));
    assert!(out.stderr.contains("PGPASSWORD"), "{out:#?}");
    // Without the password the key is taken.
    std::fs::write(
        &config,
        "data-dir = \"d\"\n[database]\nurl = \"postgres://coffer@db.example/coffer\"\nconnect-timeout = 5\n",
    )
    .unwrap();
    let mut cmd = coffer_cmd();
    cmd.args(["config", "check", "--config"]).arg(&config);
    let out = run(cmd, None);
    assert!(out.status.success(), "{out:#?}");
}

#[test]
fn two_instances_see_each_others_writes_and_revocations_within_a_second() {
    let Some(db) = Db::new("two_instances_see_each_others_writes_and_revocations_within_a_second")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir_a = tmp.path().join("a");
    let (account, token) = init_pg(&dir_a, db.url());
    // A copy of the data dir on the same database is a second instance.
    let dir_b = tmp.path().join("b");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(&dir_a)
        .arg(&dir_b)
        .status()
        .unwrap();
    assert!(copied.success());
    let a = start_pg(&dir_a, db.url());
    let b = start_pg(&dir_b, db.url());
    let on_a = conn(&a, &account, &token);
    let on_b = conn(&b, &account, &token);
    let store = create_store(&on_a, "prod");
    create_secret(&on_a, &store, "api-key", "workers", "first");
    let service_token = deploy(&on_a, tmp.path(), &store, "api-key");
    // B serves what A wrote (and caches it).
    let read = runtime_get(&b.url, &service_token, "/runtime/v1/bindings/KEY");
    assert_eq!((read.status, read.body.as_slice()), (200, &b"first"[..]));

    // A write acknowledged by A is read through B within 1 s.
    on_a.run(&[
        "secret",
        "update",
        "--store-id",
        &store,
        "--secret-id",
        "api-key",
        "--value",
        VALUE,
    ])
    .ok();
    let took = within(Duration::from_secs(1), "B serves A's update", || {
        let read = runtime_get(&b.url, &service_token, "/runtime/v1/bindings/KEY");
        read.status == 200 && read.body == VALUE.as_bytes()
    });
    eprintln!("A's update seen through B after {took:?}");

    // A token used on B (and cached there), revoked on A: refused by B within 1 s.
    let created = on_a
        .run(&[
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "super_admin",
            "--json",
        ])
        .ok()
        .json();
    let ci = on_b.as_(created["value"].as_str().unwrap(), &account);
    ci.run(&["store", "list", "--json"]).ok();
    ci.run(&["store", "list", "--json"]).ok();
    on_a.run(&["token", "revoke", created["id"].as_str().unwrap()])
        .ok();
    let took = within(
        Duration::from_secs(1),
        "B refuses the revoked token",
        || {
            let out = ci.run(&["store", "list", "--json"]);
            out.status.code() == Some(1) && out.stderr.contains("API token has been revoked")
        },
    );
    eprintln!("A's revocation seen by B after {took:?}");

    // A service token (cached by B's runtime cache) revoked on A: refused by B within 1 s.
    on_a.run(&["service", "token", "revoke", "svc"]).ok();
    let took = within(
        Duration::from_secs(1),
        "B refuses the revoked service token",
        || runtime_get(&b.url, &service_token, "/runtime/v1/bindings/KEY").status == 401,
    );
    eprintln!("A's service token revocation seen by B after {took:?}");

    // Every connection of both instances ended (B's LISTEN among them): B reconnects, and
    // then serves A's next write, with no stale value in between.
    let service_token = on_a
        .run(&["service", "token", "rotate", "svc", "--json"])
        .ok()
        .json()["service_token"]
        .as_str()
        .map(str::to_owned)
        .expect("service token rotate --json shows the new token");
    {
        let read = runtime_get(&b.url, &service_token, "/runtime/v1/bindings/KEY");
        assert_eq!((read.status, read.body.as_slice()), (200, VALUE.as_bytes()));
        let name = db.name().to_owned();
        db.admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
        ));
        let after = "after-v4lue";
        within(Duration::from_secs(10), "A writes after the cut", || {
            on_a.run(&[
                "secret",
                "update",
                "--store-id",
                &store,
                "--secret-id",
                "api-key",
                "--value",
                after,
            ])
            .status
            .success()
        });
        let took = within(
            Duration::from_secs(10),
            "B serves A's write after the cut",
            || {
                let read = runtime_get(&b.url, &service_token, "/runtime/v1/bindings/KEY");
                read.status == 200 && read.body == after.as_bytes()
            },
        );
        eprintln!("A's write after the cut seen through B after {took:?}");
    }
    drop((a, b));
}

#[test]
fn kill_9_of_one_instance_during_writes_loses_no_acknowledged_write() {
    let Some(db) = Db::new("kill_9_of_one_instance_during_writes_loses_no_acknowledged_write")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir_a = tmp.path().join("a");
    let (account, token) = init_pg(&dir_a, db.url());
    let dir_b = tmp.path().join("b");
    assert!(
        Command::new("cp")
            .arg("-r")
            .arg(&dir_a)
            .arg(&dir_b)
            .status()
            .unwrap()
            .success()
    );
    let a = start_pg(&dir_a, db.url());
    let b = start_pg(&dir_b, db.url());
    let on_a = conn(&a, &account, &token);
    let on_b = conn(&b, &account, &token);
    let store = create_store(&on_a, "prod");
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (conn, store) = (conn(&a, &account, &token), store.clone());
            let (acknowledged, stop) = (Arc::clone(&acknowledged), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("w{w}-{i}");
                    let out = conn.run_with_stdin(
                        &[
                            "secret", "create", &store, "--name", &name, "--scopes", "workers",
                            "--json",
                        ],
                        "v",
                    );
                    if out.status.success() {
                        acknowledged.lock().unwrap().push(name);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    within(Duration::from_secs(60), "some writes acknowledged", || {
        acknowledged.lock().unwrap().len() >= 8
    });
    a.kill_9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    // Every page of the store's secrets (a page holds 100 at most).
    let mut names: Vec<String> = Vec::new();
    for page in 1.. {
        let listed = on_b
            .run(&[
                "secret",
                "list",
                &store,
                "--json",
                "--per-page",
                "100",
                "--page",
                &page.to_string(),
            ])
            .ok()
            .json();
        let items = listed["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{listed}"));
        names.extend(items.iter().map(|s| s["name"].as_str().unwrap().to_owned()));
        if items.len() < 100 {
            break;
        }
    }
    for name in &acknowledged {
        assert!(names.contains(name), "{name} was acknowledged but is lost");
    }
    // B keeps serving writes.
    create_secret(&on_b, &store, "after", "workers", "v");
}

#[test]
fn a_database_gone_while_serving_gets_503_and_recovers_by_itself() {
    let Some(db) = Db::new("a_database_gone_while_serving_gets_503_and_recovers_by_itself") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let (account, token) = init_pg(&dir, db.url());
    let server = start_pg(&dir, db.url());
    let admin = conn(&server, &account, &token);
    create_store(&admin, "prod");
    let name = db.name().to_owned();
    // No new connections, and the open ones ended.
    db.admin(&format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
    ));
    let out = admin.run(&["store", "list", "--json"]);
    let line = out.one_error_line(1);
    assert!(line.contains("unavailable"), "{line}");
    let raw = raw_get(
        &server.url,
        &token,
        &format!("/client/v4/accounts/{account}/secrets_store/stores"),
    );
    assert_eq!(raw.0, 503, "{raw:?}");
    let envelope: serde_json::Value = serde_json::from_str(&raw.1).unwrap();
    assert_eq!(envelope["success"], false, "{envelope}");
    assert!(envelope["errors"][0]["code"].is_number(), "{envelope}");
    db.admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true;"));
    within(Duration::from_secs(15), "the server recovers", || {
        admin.run(&["store", "list", "--json"]).status.success()
    });
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn a_schema_newer_than_the_binary_is_refused_naming_both_versions() {
    let Some(db) = Db::new("a_schema_newer_than_the_binary_is_refused_naming_both_versions") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    init_pg(&dir, db.url());
    let name = db.name().to_owned();
    db.execute_in(&name, "UPDATE coffer_schema_version SET version = 999");
    let mut cmd = coffer_cmd();
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("COFFER_DATABASE_URL", db.url());
    let out = run(cmd, None);
    let line = out.one_error_line(1);
    let ours = coffer_postgres::SCHEMA_VERSION.to_string();
    assert!(line.contains("999") && line.contains(&ours), "{line}");
}

/// An init that stopped part-way leaves keys wrapped by a KEK it removed again: a retry on
/// that database is refused, saying to recreate it, and leaves no data dir behind.
#[test]
fn init_on_the_leftovers_of_a_failed_init_names_the_fix() {
    let Some(db) = Db::new("init_on_the_leftovers_of_a_failed_init_names_the_fix") else {
        return;
    };
    db.runtime.block_on(async {
        let s = coffer_postgres::PgStorage::connect(db.url(), Default::default())
            .await
            .unwrap();
        drop(s);
    });
    let name = db.name().to_owned();
    db.execute_in(
        &name,
        "INSERT INTO instance_keys (purpose, key_id, kek_id, wrapped, created) \
         VALUES ('mac', decode('01010101010101010101010101010101', 'hex'), 'file:gone', \
         decode('00', 'hex'), 0)",
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let mut cmd = coffer_cmd();
    cmd.arg("init")
        .arg("--data-dir")
        .arg(&dir)
        .env("COFFER_DATABASE_URL", db.url())
        .arg("--json");
    let out = run(cmd, None);
    let line = out.one_error_line(1);
    assert!(
        line.contains("did not finish") && line.contains("recreate"),
        "{line}"
    );
    assert!(!dir.exists(), "the failed init left {dir:?}");
}

/// `--log-level debug` does not log tokio-postgres' statements and their parameters (token
/// hashes, sealed values) unless the filter names tokio_postgres itself (L3).
#[test]
fn debug_logging_keeps_sql_parameters_out() {
    let Some(db) = Db::new("debug_logging_keeps_sql_parameters_out") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let (account, token) = init_pg(&dir, db.url());
    let run = |level: &str| {
        let server = start_pg_with(&dir, db.url(), &["--log-level", level]);
        let c = conn(&server, &account, &token);
        create_store(&c, &format!("s{}", level.len()));
        let (status, log) = server.terminate();
        assert!(status.success(), "{log}");
        log
    };
    // Named, it is logged (so the check below can see it)...
    let log = run("debug,tokio_postgres=debug");
    assert!(log.contains("executing statement"), "{log}");
    // ... otherwise not.
    let log = run("debug");
    assert!(!log.contains("executing statement"), "{log}");
    assert!(!log.contains("tokio_postgres"), "{log}");
}

/// The operator token is recovered offline on a PostgreSQL data dir with its database (L7);
/// without the database the refusal names where to give it.
#[test]
fn operator_rotate_offline_on_postgres() {
    let Some(db) = Db::new("operator_rotate_offline_on_postgres") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let (account, old) = init_pg(&dir, db.url());
    let mut cmd = coffer_cmd();
    cmd.args(["operator", "rotate", "--json", "--data-dir"])
        .arg(&dir);
    let line = run(cmd, None).one_error_line(1).to_owned();
    assert!(line.contains("COFFER_DATABASE_URL"), "{line}");
    let mut cmd = coffer_cmd();
    cmd.args(["operator", "rotate", "--json", "--data-dir"])
        .arg(&dir)
        .env("COFFER_DATABASE_URL", db.url());
    let v = run(cmd, None).ok().json();
    let new = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_owned();
    assert_ne!(new, old);
    let server = start_pg(&dir, db.url());
    conn(&server, &account, &new)
        .run(&["store", "list", "--json"])
        .ok();
    let out = conn(&server, &account, &old).run(&["store", "list", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    server.terminate();
}

/// Keys are local, the database shared: a KEK id the database names that this data dir lacks
/// (a rotation or an account KEK made on another instance) refuses the start, naming it.
#[test]
fn a_kek_id_the_local_keys_lack_is_refused_at_start() {
    let Some(db) = Db::new("a_kek_id_the_local_keys_lack_is_refused_at_start") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let (account, token) = init_pg(&dir, db.url());
    // A KEK rotation and an account KEK would make such a key: refused while serving.
    let server = start_pg(&dir, db.url());
    let (status, body) = raw(
        reqwest::Method::POST,
        &server.url,
        &token,
        "/client/v4/kek/rotations",
        None,
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("\"code\":1311") && body.contains("shared"),
        "{body}"
    );
    let (status, body) = raw(
        reqwest::Method::PUT,
        &server.url,
        &token,
        &format!("/client/v4/accounts/{account}/kek"),
        Some(r#"{"kek":"file"}"#),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("\"code\":1311") && body.contains("account KEKs are not supported"),
        "{body}"
    );
    server.terminate();
    let name = db.name().to_owned();
    db.execute_in(
        &name,
        "INSERT INTO deks (id, account_id, kek_id, wrapped, created, rk_version, rk_wrapped) \
         SELECT decode('09090909090909090909090909090909', 'hex'), id, 'kek-made-elsewhere', \
         decode('00', 'hex'), 0, 1, decode('00', 'hex') FROM accounts LIMIT 1",
    );
    let mut cmd = coffer_cmd();
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("COFFER_DATABASE_URL", db.url());
    let out = run(cmd, None);
    let line = out.one_error_line(1);
    assert!(
        line.contains("kek-made-elsewhere") && line.contains("same KEK"),
        "{line}"
    );
}

fn raw_get(url: &str, token: &str, path: &str) -> (u16, String) {
    raw(reqwest::Method::GET, url, token, path, None)
}

fn raw(
    method: reqwest::Method,
    url: &str,
    token: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let res = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .request(method, format!("{url}{path}"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.unwrap_or_default().to_owned())
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    })
}
