//! `coffer migrate`: an embedded installation moved to PostgreSQL.

use std::path::PathBuf;

use clap::Args;

pub const MIGRATE_LONG_ABOUT: &str = "\
Copy a whole embedded installation (the SQLite database in a data dir) into an empty \
PostgreSQL database, then switch the data dir to it.

The data dir must be stopped: its lock is taken, and a server holding it makes migrate \
refuse. Its chains are verified first. Every row is copied as stored, in one PostgreSQL \
transaction: ciphertexts, wrapped keys, token hashes, signatures, audit records and \
checkpoints, the change log (from its base, after compaction) with its cluster id. Nothing is \
decrypted and no KEK is needed. A database that holds an instance or any row is refused, \
naming what it holds; its schema is made by the PostgreSQL backend's migrations.

Before its COMMIT the copy is verified in the same transaction: the row count of every \
table, the change-log chain and every account's audit chain recomputed from the copied rows, \
and their heads compared with the source's. If anything fails, the transaction is rolled \
back and nothing of the copy stays in the database.

Last, the data dir gets backend.toml (as `coffer init --database-url` leaves it), so \
`coffer server --data-dir DIR --database-url URL` serves the same accounts, tokens, \
services and values. coffer.db stays in the data dir as the rollback copy (upgraded first \
if an older Coffer made it): remove backend.toml to serve it again, only before anything was \
written on PostgreSQL (see \"Moving to PostgreSQL\" in docs/operations.md).

The password comes from --database-password-file, PGPASSWORD, or a URL in \
COFFER_DATABASE_URL (a password in a URL on the command line is refused); it is never \
printed.";

#[derive(Args)]
pub struct MigrateArgs {
    /// The embedded data dir to move (stopped: no server may hold it)
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The empty PostgreSQL database: postgres://USER@HOST[:PORT]/DB[?sslmode=...] as for
    /// `coffer server --database-url`. A password in a URL given on the command line is
    /// refused (other users can read the command line): use --database-password-file,
    /// PGPASSWORD, or give the URL in COFFER_DATABASE_URL
    #[arg(
        long,
        env = "COFFER_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub to: String,
    /// File holding the database password (mode 0600), used when the URL has none (before
    /// PGPASSWORD)
    #[arg(long, value_name = "FILE")]
    pub database_password_file: Option<PathBuf>,
    /// Seconds connecting keeps retrying an unreachable database (with backoff) before giving
    /// up, as for `coffer server`
    #[arg(long, value_name = "SECONDS", default_value_t = coffer_server::Database::DEFAULT_CONNECT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub database_connect_timeout: u64,
    /// Print what was copied and verified as JSON
    #[arg(long)]
    pub json: bool,
}

impl std::fmt::Debug for MigrateArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrateArgs")
            .field("from", &self.from)
            .field("to", &"<not shown>")
            .field("database_password_file", &self.database_password_file)
            .field("database_connect_timeout", &self.database_connect_timeout)
            .field("json", &self.json)
            .finish()
    }
}

impl MigrateArgs {
    /// The target database, as `coffer server --database-url` takes it.
    pub fn database(&self) -> coffer_server::Database {
        let mut db = coffer_server::Database::new(self.to.clone());
        db.password_file = self.database_password_file.clone();
        db.connect_timeout = std::time::Duration::from_secs(self.database_connect_timeout);
        db
    }
}
