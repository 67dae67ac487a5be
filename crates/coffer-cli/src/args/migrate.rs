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

The copy is then verified: the row count of every table, the change-log chain and every \
account's audit chain recomputed through the PostgreSQL backend, and their heads compared \
with the source's. If anything fails, nothing of the copy stays in the database.

Last, the data dir gets backend.toml (as `coffer init --database-url` leaves it), so \
`coffer server --data-dir DIR --database-url URL` serves the same accounts, tokens, \
services and values. coffer.db stays in the data dir unchanged: the rollback copy (remove \
backend.toml to serve it again, losing what was written on PostgreSQL since).

The password comes from the URL, --database-password-file, or PGPASSWORD; it is never \
printed.";

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The embedded data dir to move (stopped: no server may hold it)
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The empty PostgreSQL database: postgres://USER@HOST:PORT/DB (sslmode=... as for
    /// `coffer server --database-url`)
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// A file whose first line is the database password (when the URL has none)
    #[arg(long, value_name = "FILE")]
    pub database_password_file: Option<PathBuf>,
    /// Seconds connecting to the database may take
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub database_connect_timeout: u64,
    /// Print what was copied and verified as JSON
    #[arg(long)]
    pub json: bool,
}
