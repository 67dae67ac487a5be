//! `coffer backup`, `restore` and `verify`: the embedded store's backups and chain checks.

use std::path::PathBuf;

use clap::Args;

pub const BACKUP_LONG_ABOUT: &str = "\
Write an online, consistent backup of a data dir's database into one file, while `coffer \
server` keeps serving (and writing) on it: no lock is taken and writes are not held up.

The file holds the database (ciphertexts and wrapped keys) and a manifest: format version, \
creation time, Coffer version, the change log's cluster id and head, every account's audit \
head, and the database's length and SHA-256, with a checksum over the manifest. It holds no \
key: never the KEK file, the KEK versions' keys, kek.toml, a PIN or an account KEK. Without \
the KEK it opens nothing, so back the KEK up too, apart from these files \
(docs/operations.md, \"Backup and restore\").

The copy is checked as restore will check it (its schema, SQLite's integrity and foreign key \
checks, secret counts, chains) before the file is written. A drifted secret count is refused \
naming `coffer repair`, which recounts it. The file is written beside FILE, \
synced, then put in place (mode 0600): FILE is never half-written.";

pub const RESTORE_LONG_ABOUT: &str = "\
Restore a backup file into a new data dir (absent or empty).

Before and while writing, the file is checked: its format, the manifest's checksum, its \
length, and the database's SHA-256. The restored database is then checked as an untrusted \
file (its schema must be exactly this build's, pass SQLite's integrity and foreign key \
checks, and every store's and account's secret count must equal the secrets it holds) before \
it is opened (a file with a drifted count stays refused: repair its source data dir with \
`coffer repair` and back it up again); its change-log chain (from its base) and every account's audit chain are \
recomputed, and their heads compared with the manifest's. Any failed check removes \
everything restore wrote and names the check.

These checks are unkeyed: they find damage, not someone who rewrote the file and recomputed \
its hashes. The keyed check is the audit checkpoints' MACs, made with a key the KEK wraps: \
with --kek-from, restore copies the KEK configuration the KEK versions file names \
(kek.key or kek.toml, kek-versions.toml, kek-N.key, account-keks/; key files must be \
private regular files), opens the restored dir with it and verifies every checkpoint's MAC. \
Without --kek-from, copy the KEK from its own backup and run `coffer audit verify` for every \
account before trusting the restored dir. A KEK in an HSM stays in the HSM (the PIN is read \
from COFFER_PKCS11_PIN, as for `coffer server`).";

pub const VERIFY_LONG_ABOUT: &str = "\
Check a store read-only, with or without a server running on it: a data dir's SQLite database \
(--data-dir), or a PostgreSQL database (--database-url: no data dir or KEK needed, nothing is \
migrated or written; its schema must be this build's). Exactly one of the two.

Recomputes the change-log chain (from its base) and every account's audit chain, compares \
every audit checkpoint with the entry it names, and prints the heads. Then checks what lists \
trust: every store's and account's secret count equals the secrets it holds, and every \
foreign key holds (SQLite enforces them on writes only, so every row is checked; PostgreSQL \
enforces them itself). Exits non-zero naming the first failed check; a drifted secret count \
is named with `coffer repair`, which recounts it.

These checks are unkeyed: they find damage, not a deliberate rewrite. The checkpoints' MACs \
(a key the KEK wraps) are checked by `coffer audit verify` through the server.

Run it on a database restored from pg_dump or by point-in-time recovery before pointing \
instances at it (docs/operations.md). The password comes from --database-password-file, \
PGPASSWORD, or a URL in COFFER_DATABASE_URL (a password in a URL on the command line is \
refused); it is never printed.";

pub const REPAIR_LONG_ABOUT: &str = "\
Set secret counts that drifted from their rows right again: a data dir's SQLite database \
(--data-dir, with its server stopped: the data dir's lock is taken) or a PostgreSQL database \
(--database-url, live: instances may keep serving it). Exactly one of the two.

Lists and quotas trust each store's and account's secret count, kept by the database on \
every write; `coffer verify`, `backup` and `restore` refuse a database where one is not the \
number of its secrets (manual SQL, a restored dump). Repair runs the same integrity check \
first; each drifted count is then set to its rows in one write, and printed (`store ID: \
1000 -> 10`). Nothing else is changed: no change-log entry (counts are not replicated: edges \
keep their own) and no audit entry (a log line is written instead).

A broken foreign key (a secret in another account's store) is not repairable here: repair \
refuses, naming it, and writes nothing; restore a backup.

The PostgreSQL schema must be this build's (it is checked, never migrated). The password \
comes from --database-password-file, PGPASSWORD, or a URL in COFFER_DATABASE_URL (a \
password in a URL on the command line is refused); it is never printed.";

/// `--database-url`'s help for `coffer repair`.
pub const REPAIR_DATABASE_URL_HELP: &str = "The PostgreSQL database to repair instead of a \
data dir: postgres://USER@HOST[:PORT]/DB[?sslmode=verify-full&sslrootcert=FILE], as for \
`coffer server`. Instances may keep serving it";

/// `--database-url`'s help for `coffer verify` (the flag is `coffer server`'s).
pub const VERIFY_DATABASE_URL_HELP: &str = "The PostgreSQL database to check instead of a data \
dir: postgres://USER@HOST[:PORT]/DB[?sslmode=verify-full&sslrootcert=FILE], as for `coffer \
server`. Read-only: nothing is migrated or written";

/// `--database-connect-timeout`'s help for `coffer verify`.
pub const VERIFY_CONNECT_TIMEOUT_HELP: &str =
    "Seconds connecting keeps retrying an unreachable database (with backoff) before giving up";

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The data dir to back up (a server may be running on it)
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The backup file to write (its directory must exist and be writable by no one else)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace FILE if it exists
    #[arg(long)]
    pub force: bool,
    /// Print the manifest (and the file's path) as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The data dir to restore into: absent, or an empty dir
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Copy the KEK configuration (kek.key or kek.toml, kek-versions.toml and the key files it
    /// names, account-keks/) from this data dir, e.g. the old one or a restored copy of its KEK
    /// backup, and verify the audit checkpoints' MACs with it; nothing is taken from an HSM
    #[arg(long, value_name = "OLD_DIR")]
    pub kek_from: Option<PathBuf>,
    /// Print what was restored as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    mut_arg("database_url", |a| a.help(VERIFY_DATABASE_URL_HELP)),
    mut_arg("database_connect_timeout", |a| a.help(VERIFY_CONNECT_TIMEOUT_HELP))
)]
pub struct VerifyArgs {
    /// The data dir to check (a server may be running on it). Not with --database-url (nor
    /// COFFER_DATABASE_URL)
    #[arg(long, value_name = "DIR", required_unless_present = "database_url")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub database: super::server::DatabaseArgs,
    /// Print the heads as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    mut_arg("database_url", |a| a.help(REPAIR_DATABASE_URL_HELP)),
    mut_arg("database_connect_timeout", |a| a.help(VERIFY_CONNECT_TIMEOUT_HELP))
)]
pub struct RepairArgs {
    /// The data dir whose database to repair (its server stopped: the lock is taken). Not with
    /// --database-url (nor COFFER_DATABASE_URL)
    #[arg(long, value_name = "DIR", required_unless_present = "database_url")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub database: super::server::DatabaseArgs,
    /// Print what was checked and set as JSON
    #[arg(long)]
    pub json: bool,
}
