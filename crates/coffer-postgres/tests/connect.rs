//! Connecting: migrations (once, concurrently, refusing a newer schema), and errors that say
//! what is wrong without the password.

use coffer_postgres::testing::{TestDatabase, cluster_url, with_database};
use coffer_postgres::{ConnectError, PgOptions, PgStorage, SCHEMA_VERSION};
use coffer_storage::Storage;

/// The password in `url` (`postgres://user:password@...`), if any.
fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    Some(userinfo.split_once(':')?.1.to_owned()).filter(|p| !p.is_empty())
}

async fn schema_version(url: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query_one(
            "SELECT version FROM coffer_schema_version WHERE id = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_starting_together_migrate_once() {
    let Some(cluster) = cluster_url("instances_starting_together_migrate_once") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let mut starting = Vec::new();
    for _ in 0..6 {
        let url = db.url().to_owned();
        starting.push(tokio::spawn(async move {
            PgStorage::connect(&url, PgOptions::default()).await
        }));
    }
    let mut instances = Vec::new();
    for s in starting {
        instances.push(s.await.unwrap().expect("every instance starts"));
    }
    assert_eq!(schema_version(db.url()).await, SCHEMA_VERSION);
    for s in &instances {
        assert_eq!(s.change_head().await.unwrap(), 0);
    }
    // Their sessions say whose they are.
    let (client, connection) = tokio_postgres::connect(&cluster, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let names: Vec<String> = client
        .query(
            "SELECT application_name FROM pg_stat_activity WHERE datname = $1",
            &[&db.name()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n == "coffer"),
        "{names:?}"
    );
    // A restart runs no migration again (it would fail: the tables exist).
    drop(instances);
    let again = db.storage().await;
    assert_eq!(again.change_head().await.unwrap(), 0);
}

#[tokio::test]
async fn a_newer_schema_is_refused_naming_both_versions() {
    let Some(cluster) = cluster_url("a_newer_schema_is_refused_naming_both_versions") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    drop(db.storage().await);
    let newer = SCHEMA_VERSION + 1;
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE coffer_schema_version SET version = $1 WHERE id = 1",
            &[&newer],
        )
        .await
        .unwrap();
    let e = PgStorage::connect(db.url(), PgOptions::default())
        .await
        .expect_err("a newer schema");
    assert!(matches!(e, ConnectError::Schema(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("version {newer}"))
            && text.contains(&format!("version {SCHEMA_VERSION}")),
        "{text}"
    );
    // Nothing was touched: the version stays.
    assert_eq!(schema_version(db.url()).await, newer);
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://coffer:hunter2-secret@127.0.0.1:{port}/coffer?sslmode=disable");
    let e = PgStorage::connect(&url, PgOptions::default())
        .await
        .expect_err("nobody listens");
    assert!(matches!(e, ConnectError::Unreachable { .. }), "{e:?}");
    assert!(e.is_transient(), "the network is worth retrying: {e:?}");
    let text = format!("{e} {e:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}/coffer")), "{text}");
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(!text.contains("hunter2-secret"), "{text}");
}

#[tokio::test]
async fn a_wrong_password_is_refused_without_printing_it() {
    let Some(cluster) = cluster_url("a_wrong_password_is_refused_without_printing_it") else {
        return;
    };
    let Some(password) = password_of(&cluster) else {
        assert!(
            !coffer_postgres::testing::under_ci(),
            "under CI the test cluster must take a password (scripts/pg-test-cluster's does)"
        );
        eprintln!("the test cluster takes no password; nothing to check");
        return;
    };
    let wrong = cluster.replacen(&format!(":{password}@"), ":not-the-password-42@", 1);
    let e = PgStorage::connect(&wrong, PgOptions::default())
        .await
        .expect_err("a wrong password");
    assert!(matches!(e, ConnectError::Unreachable { .. }), "{e:?}");
    assert!(!e.is_transient(), "a refused login is final: {e:?}");
    let text = format!("{e} {e:?}");
    assert!(text.contains("password authentication failed"), "{text}");
    // So is a database that does not exist (3D000), whatever the server's language.
    let missing = coffer_postgres::testing::with_database(&cluster, "no_such_database_42");
    let e = PgStorage::connect(&missing, PgOptions::default())
        .await
        .expect_err("no such database");
    assert!(!e.is_transient(), "a missing database is final: {e:?}");
    assert!(!text.contains("not-the-password-42"), "{text}");
    assert!(!text.contains(&password), "{text}");

    // The right one, from a password file instead of the URL; the storage's Debug names the
    // database, never the password.
    let db = TestDatabase::create(&cluster).await;
    let dir = std::env::temp_dir().join(format!("coffer-pg-connect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&file, {
        let mut p = std::fs::metadata(&file).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o600);
        p
    })
    .unwrap();
    let without = with_database(
        &cluster.replacen(&format!(":{password}@"), "@", 1),
        db.name(),
    );
    let mut options = PgOptions::default();
    options.password_file = Some(file);
    let storage = PgStorage::connect(&without, options).await.unwrap();
    let debug = format!("{storage:?}");
    assert!(debug.contains(db.name()), "{debug}");
    assert!(!debug.contains(&password), "{debug}");
    assert_eq!(storage.change_head().await.unwrap(), 0);
    drop(storage);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The test cluster's CA (scripts/pg-test-cluster makes one when openssl is there; its server
/// certificate names `localhost` only).
fn cluster_ca(test: &str) -> Option<String> {
    match std::env::var("COFFER_TEST_DATABASE_CA") {
        Ok(ca) if !ca.is_empty() => Some(ca),
        _ => {
            assert!(
                !coffer_postgres::testing::under_ci(),
                "{test}: COFFER_TEST_DATABASE_CA is not set, and under CI the TLS tests \
                 must run (scripts/pg-test-cluster sets it up when openssl is installed)"
            );
            eprintln!("{test}: skipped: COFFER_TEST_DATABASE_CA is not set");
            None
        }
    }
}

/// Whether every connection to `db` is encrypted (and there is at least one).
async fn all_connections_encrypted(cluster: &str, db: &str) -> bool {
    let (client, connection) = tokio_postgres::connect(cluster, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = $1",
            &[&db],
        )
        .await
        .unwrap();
    !rows.is_empty() && rows.iter().all(|r| r.get::<_, bool>(0))
}

#[tokio::test]
async fn tls_modes_check_what_they_promise() {
    let Some(cluster) = cluster_url("tls_modes_check_what_they_promise") else {
        return;
    };
    let Some(ca) = cluster_ca("tls_modes_check_what_they_promise") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let by_ip = db.url().to_owned();
    let by_name = by_ip.replacen("@127.0.0.1:", "@localhost:", 1);
    let with = |url: &str, query: &str| format!("{url}?{query}");

    // require: encrypted, no certificate check (libpq's meaning).
    let s = PgStorage::connect(&with(&by_ip, "sslmode=require"), PgOptions::default())
        .await
        .unwrap();
    assert_eq!(s.change_head().await.unwrap(), 0);
    assert!(all_connections_encrypted(&cluster, db.name()).await);
    drop(s);

    // verify-full: chain and name. The certificate names `localhost`, not 127.0.0.1.
    let s = PgStorage::connect(
        &with(&by_name, &format!("sslmode=verify-full&sslrootcert={ca}")),
        PgOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(s.change_head().await.unwrap(), 0);
    assert!(all_connections_encrypted(&cluster, db.name()).await);
    drop(s);
    let e = PgStorage::connect(
        &with(&by_ip, &format!("sslmode=verify-full&sslrootcert={ca}")),
        PgOptions::default(),
    )
    .await
    .expect_err("the certificate does not name 127.0.0.1");
    assert!(matches!(e, ConnectError::Unreachable { .. }), "{e:?}");
    assert!(
        !e.is_transient(),
        "a certificate that does not verify is final: {e:?}"
    );
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    // verify-ca: the chain only, so the address is fine.
    let s = PgStorage::connect(
        &with(&by_ip, &format!("sslmode=verify-ca&sslrootcert={ca}")),
        PgOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(s.change_head().await.unwrap(), 0);
    drop(s);

    // A chain to a root we do not trust (the system's roots, not the test CA).
    let e = PgStorage::connect(&with(&by_name, "sslmode=verify-full"), PgOptions::default())
        .await
        .expect_err("the test CA is not a system root");
    let text = e.to_string();
    assert!(
        text.to_lowercase().contains("certificate") || text.contains("root"),
        "{text}"
    );
    if let Some(password) = password_of(&cluster) {
        assert!(!text.contains(&password), "{text}");
    }
}

/// The health probe has a connection of its own: reads that hold every connection of the read
/// pool (a flood of requests) do not make the database look unreachable.
#[tokio::test]
async fn the_probe_answers_while_reads_hold_the_whole_pool() {
    let Some(cluster) = cluster_url("the_probe_answers_while_reads_hold_the_whole_pool") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let mut options = PgOptions::default();
    options.max_connections = 2;
    let storage = std::sync::Arc::new(PgStorage::connect(db.url(), options).await.unwrap());
    // Another session locks `accounts`: every read of it waits, holding its pooled connection.
    let (locker, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let s = std::sync::Arc::clone(&storage);
            tokio::spawn(async move { s.list_accounts().await.map(|a| a.len()) })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        readers.iter().all(|r| !r.is_finished()),
        "the reads wait on the lock"
    );
    tokio::time::timeout(std::time::Duration::from_secs(2), storage.probe())
        .await
        .expect("the probe does not wait for the read pool")
        .expect("the database answers");
    locker.batch_execute("COMMIT").await.unwrap();
    for r in readers {
        assert_eq!(r.await.unwrap().unwrap(), 0);
    }
    drop(locker);
    let _ = driver.await;
}

/// A database whose search path puts another schema before `pg_catalog` (where an `=` of
/// someone's own would be taken for PostgreSQL's, in Coffer's queries and verify's checks
/// alike) is refused, read-write and read-only; a path naming only a schema of Coffer's own
/// (`pg_catalog` then implicitly first) is not.
#[tokio::test]
async fn a_search_path_ahead_of_pg_catalog_is_refused() {
    let Some(cluster) = cluster_url("a_search_path_ahead_of_pg_catalog_is_refused") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    drop(db.storage().await);
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let set_path =
        |path: &str| format!("ALTER DATABASE \"{}\" SET search_path = {path}", db.name());
    client
        .batch_execute(&format!(
            "CREATE SCHEMA evil; {}",
            set_path("evil, pg_catalog, public")
        ))
        .await
        .unwrap();
    for read_only in [false, true] {
        let mut options = PgOptions::default();
        options.read_only = read_only;
        let e = PgStorage::connect(db.url(), options)
            .await
            .expect_err("a search path ahead of pg_catalog");
        assert!(matches!(e, ConnectError::Schema(_)), "{e:?}");
        assert!(
            e.to_string().contains("schema evil before pg_catalog"),
            "{e}"
        );
    }
    client.batch_execute(&set_path("public")).await.unwrap();
    drop(db.storage().await);
}
