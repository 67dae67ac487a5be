//! Test support: a database of its own per test, on the cluster that
//! `COFFER_TEST_DATABASE_URL` names (a superuser URL; `scripts/pg-test-cluster start DIR`
//! makes one and prints it).
//!
//! Without the variable a test skips (with a line on stderr), except under CI ([`under_ci`]),
//! where it fails: CI must run the PostgreSQL tests, never skip them.

use std::sync::Arc;

use coffer_storage::Storage;

use crate::{PgOptions, PgStorage};

/// The variable naming the test cluster.
pub const DATABASE_URL_VAR: &str = "COFFER_TEST_DATABASE_URL";

/// Whether this runs under CI: `CI` set to anything but empty, `false` or `0` (CI services
/// set `true`, `1`, `yes`, or their own name). Skipping a test there is a failure.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        let v = v.trim();
        !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
    })
}

/// The cluster's superuser URL, or `None` (after saying so) when tests should skip. Panics
/// under CI ([`under_ci`]) without one.
pub fn cluster_url(test: &str) -> Option<String> {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                !under_ci(),
                "{test}: {DATABASE_URL_VAR} is not set, and under CI the PostgreSQL \
                 tests must run (scripts/test starts a cluster when PostgreSQL is installed)"
            );
            eprintln!(
                "{test}: skipped: {DATABASE_URL_VAR} is not set (scripts/pg-test-cluster start DIR)"
            );
            None
        }
    }
}

/// The variable naming a hot standby of the test cluster (`scripts/pg-test-cluster start`
/// makes one): a database in recovery, for read-only use (`PgOptions::read_only`).
pub const STANDBY_URL_VAR: &str = "COFFER_TEST_STANDBY_URL";

/// The standby's superuser URL, or `None` (after saying so) when the test should skip. Panics
/// under CI ([`under_ci`]) without one.
pub fn standby_url(test: &str) -> Option<String> {
    match std::env::var(STANDBY_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                !under_ci(),
                "{test}: {STANDBY_URL_VAR} is not set, and under CI the PostgreSQL tests must \
                 run (scripts/pg-test-cluster start prints it)"
            );
            eprintln!(
                "{test}: skipped: {STANDBY_URL_VAR} is not set (scripts/pg-test-cluster start DIR)"
            );
            None
        }
    }
}

/// A database made for one test (`coffer_t_<random hex>`), dropped with this value (its
/// connections are ended first).
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database on the cluster at `cluster_url`.
    pub async fn create(cluster_url: &str) -> TestDatabase {
        Self::create_with(cluster_url, "").await
    }

    /// [`TestDatabase::create`] with `options` appended to `CREATE DATABASE name` (a test's
    /// own constant SQL, e.g. another default collation).
    pub async fn create_with(cluster_url: &str, options: &str) -> TestDatabase {
        let name = format!("coffer_t_{}", hex::encode(random_bytes()));
        let (client, connection) = tokio_postgres::connect(cluster_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!("connecting to the test cluster: {}", crate::error_chain(&e))
            });
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name} {options}"))
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {}", crate::error_chain(&e)));
        drop(client);
        let _ = driver.await;
        let url = with_database(cluster_url, &name);
        TestDatabase {
            admin_url: cluster_url.to_owned(),
            name,
            url,
        }
    }

    /// The database's URL (the cluster's, with this database).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A storage on this database.
    pub async fn storage(&self) -> PgStorage {
        PgStorage::connect(&self.url, PgOptions::default())
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.name))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot await: a thread with a runtime of its own drops the database, and this
        // waits for it so that the next test does not race a half-dropped one.
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(async move {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                else {
                    return;
                };
                let driver = tokio::spawn(connection);
                if let Err(e) = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                {
                    eprintln!("dropping test database {name}: {}", crate::error_chain(&e));
                }
                drop(client);
                let _ = driver.await;
            });
        });
        let _ = dropped.join();
    }
}

/// Makes fresh storages for the conformance suite, each on a database of its own, and drops
/// those databases when it goes (after the suite, or when a check panicked).
#[derive(Debug, Default)]
pub struct Databases {
    made: std::sync::Mutex<Vec<TestDatabase>>,
}

impl Databases {
    /// A storage on a new database.
    pub async fn fresh(&self, cluster_url: &str) -> Arc<dyn Storage> {
        self.fresh_with(cluster_url, "").await
    }

    /// A storage on a new database made with `options` (see [`TestDatabase::create_with`]).
    pub async fn fresh_with(&self, cluster_url: &str, options: &str) -> Arc<dyn Storage> {
        let db = TestDatabase::create_with(cluster_url, options).await;
        let storage = db.storage().await;
        self.made
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(db);
        Arc::new(storage)
    }
}

/// `url` with its database (the path) replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn random_bytes() -> [u8; 8] {
    // Unique enough for database names: time, process and a counter, hashed.
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish().to_be_bytes()
}

/// A write held open by [`PgStorage::hold_writer_lock`].
pub struct WriteHold {
    release: Option<tokio::sync::oneshot::Sender<()>>,
    done: coffer_storage::Pending<()>,
}

impl std::fmt::Debug for WriteHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHold").finish_non_exhaustive()
    }
}

impl WriteHold {
    /// Lets the held write go on, and returns how it ended.
    pub async fn finish(mut self) -> coffer_storage::Result<()> {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
        self.done.await
    }
}

impl PgStorage {
    /// Test support: how long this handle's holds of the DEK gate may sit idle before the
    /// database ends them (their keepalive runs every quarter of it; normally 20 s), so that a
    /// frozen holder is released without waiting that long.
    pub fn set_dek_gate_hold_idle(&mut self, idle: std::time::Duration) {
        self.gate.hold_idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
    }

    /// Test support: the longest this handle's holds of the DEK gate last, alive or not
    /// (normally two minutes), so that a stuck revocation is let go without waiting that long.
    pub fn set_dek_gate_max_hold(&mut self, max: std::time::Duration) {
        self.gate.max_hold = max;
    }

    /// Test support: how many writes are queued and not yet taken by the writer.
    pub fn queued_writes(&self) -> usize {
        self.writer.queued()
    }

    /// Test support: queues a write that takes the writer lock and then sits idle in its
    /// transaction until released (like a process frozen mid-write), holding up the writes
    /// queued behind it; returns once the lock is held.
    pub async fn hold_writer_lock(&self) -> WriteHold {
        self.hold_write(None).await
    }

    /// Test support: [`PgStorage::hold_writer_lock`] with a write that has inserted `dek` (a
    /// new DEK, so it holds the DEK gate shared) before it sits idle; returns once it has (the
    /// write fails if the insert is refused: see [`WriteHold::finish`]).
    pub async fn hold_dek_insert(&self, dek: coffer_storage::DekRecord) -> WriteHold {
        self.hold_write(Some(dek)).await
    }

    async fn hold_write(&self, dek: Option<coffer_storage::DekRecord>) -> WriteHold {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (held, holding) = tokio::sync::oneshot::channel::<()>();
        let done = self
            .queue_write(&[], move |w| {
                Box::pin(async move {
                    if let Some(dek) = &dek {
                        let inserted = crate::keys::insert_dek(w, dek).await;
                        let _ = held.send(());
                        inserted?;
                    } else {
                        let _ = held.send(());
                    }
                    let _ = released.await;
                    Ok(())
                })
            })
            .await
            .expect("queue the held write");
        let _ = holding.await;
        WriteHold {
            release: Some(release),
            done,
        }
    }
}
