//! Which backend this test binary runs on, what runs on SQLite only, and where one instance
//! keeps its state beyond its data dir (`Backing`).

use std::path::Path;

use coffer_core::Limits;

/// The storage an instance of this test binary keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store (`coffer.db` in the data dir): the `api` target.
    Sqlite,
    /// A database of its own per instance on the test cluster: the `api_postgres` target.
    Postgres,
}

/// The backend of this test binary (the two targets compile the same modules), by the
/// target's name. A target of another name panics in every test rather than run one of the
/// two backends again unseen: a renamed target is named here too.
pub fn backend() -> Backend {
    match env!("CARGO_CRATE_NAME") {
        "api" => Backend::Sqlite,
        "api_postgres" => Backend::Postgres,
        other => panic!(
            "test target {other:?} is neither `api` (SQLite) nor `api_postgres` (PostgreSQL): \
             say which backend it runs in tests/api/support.rs (`backend`)"
        ),
    }
}

/// Why a test runs on SQLite only: the one list of what the PostgreSQL run leaves out. A test
/// starts with `if SqliteOnly::X.skip() { return; }`.
#[derive(Debug, Clone, Copy)]
pub enum SqliteOnly {
    /// It rotates the KEK or gives an account a KEK of its own: a database shared by
    /// instances refuses both with 409 `kek_rotation_unsupported` (docs/operations.md,
    /// "PostgreSQL"), which `on_a_shared_database_key_rotations_are_refused_and_change_nothing`
    /// checks.
    KeyRotation,
}

impl SqliteOnly {
    /// True when this binary runs on PostgreSQL, after saying why on stderr once per reason
    /// (straight to the terminal: what a test prints through `eprintln!` is captured and
    /// shown only when it fails).
    pub fn skip(self) -> bool {
        use std::io::Write as _;
        use std::sync::atomic::{AtomicBool, Ordering};
        static SAID: [AtomicBool; 1] = [AtomicBool::new(false)];
        if backend() == Backend::Sqlite {
            return false;
        }
        let why = match self {
            SqliteOnly::KeyRotation => "a shared database refuses KEK rotations (409)",
        };
        if !SAID[self as usize].swap(true, Ordering::Relaxed) {
            let _ = writeln!(
                std::io::stderr(),
                "api_postgres: tests skipped on PostgreSQL (SqliteOnly::{self:?}): {why}"
            );
        }
        true
    }
}

/// Where one instance keeps its state beyond its data dir: nothing on SQLite; on PostgreSQL a
/// database of its own on the test cluster, dropped with this value.
pub struct Backing {
    pub database: Option<coffer_server::Database>,
    test_db: Option<coffer_postgres::testing::TestDatabase>,
}

impl Backing {
    pub async fn new() -> Backing {
        match backend() {
            Backend::Sqlite => Backing {
                database: None,
                test_db: None,
            },
            Backend::Postgres => {
                let db = coffer_postgres::testing::TestDatabase::create(&cluster_url()).await;
                Backing {
                    database: Some(coffer_server::Database::new(db.url())),
                    test_db: Some(db),
                }
            }
        }
    }

    /// The test database's name (PostgreSQL only).
    pub fn database_name(&self) -> Option<&str> {
        self.test_db.as_ref().map(|db| db.name())
    }

    /// A superuser connection to this instance's database (PostgreSQL; `None` on SQLite). Its
    /// connection is driven by a task that ends when the client is dropped.
    pub async fn client(&self) -> Option<tokio_postgres::Client> {
        let db = self.test_db.as_ref()?;
        let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
            .await
            .expect("connecting to the test database");
        tokio::spawn(connection);
        Some(client)
    }

    /// A connection as the cluster's superuser to its `postgres` database (PostgreSQL only),
    /// driven by a task that ends when the client is dropped.
    pub async fn admin_client(&self) -> tokio_postgres::Client {
        let db = self.test_db.as_ref().expect("a PostgreSQL backing");
        let url = coffer_postgres::testing::with_database(db.url(), "postgres");
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connecting to the test cluster");
        tokio::spawn(connection);
        client
    }

    /// Runs `sql` as the cluster's superuser in its `postgres` database (PostgreSQL only).
    pub async fn admin(&self, sql: &str) {
        self.admin_client()
            .await
            .batch_execute(sql)
            .await
            .expect(sql);
    }

    /// `coffer init` of a data dir at `data_dir` with a file KEK, its state on this backing.
    pub async fn init(&self, data_dir: &Path) -> coffer_server::InitOutcome {
        coffer_server::init_data_dir_in(
            data_dir,
            coffer_server::KekChoice::File,
            Default::default(),
            self.database.as_ref(),
        )
        .await
        .expect("init data dir")
    }

    /// Opens the data dir at `data_dir` (made by [`Backing::init`]) as a server does.
    pub async fn open(
        &self,
        data_dir: &Path,
        limits: Limits,
        keys: coffer_server::KeyOptions,
    ) -> coffer_server::DataDir {
        coffer_server::open_data_dir_in(
            data_dir,
            limits,
            Default::default(),
            keys,
            self.database.as_ref(),
        )
        .await
        .expect("open data dir")
    }
}

/// The test cluster's URL. Without one, the PostgreSQL run is skipped as a whole: one line
/// says why and the binary exits with success, mid-run (a test cannot return from its
/// caller); under CI every test fails instead (`coffer_postgres::testing::cluster_url`).
fn cluster_url() -> String {
    static URL: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    match URL.get_or_init(|| {
        coffer_postgres::testing::cluster_url("the API suite on PostgreSQL (api_postgres)")
    }) {
        Some(url) => url.clone(),
        None => {
            use std::io::Write as _;
            // Straight to stderr: what a test prints is captured, and lost at the exit.
            let _ = writeln!(
                std::io::stderr(),
                "\napi_postgres: skipped: {} is not set (scripts/pg-test-cluster start DIR \
                 makes a cluster and prints it; scripts/test does both)",
                coffer_postgres::testing::DATABASE_URL_VAR
            );
            std::process::exit(0)
        }
    }
}
