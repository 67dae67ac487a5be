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

The copy's chains are checked before the file is written. The file is written beside FILE, \
synced, then put in place (mode 0600): FILE is never half-written.";

pub const RESTORE_LONG_ABOUT: &str = "\
Restore a backup file into a new data dir (absent or empty).

Before and while writing, the file is checked: its format, the manifest's checksum, its \
length, and the database's SHA-256. The restored database is then opened, its change-log \
chain (from its base) and every account's audit chain are recomputed, and their heads \
compared with the manifest's. Any failed check removes everything restore wrote and names \
the check.

The restored dir still needs the instance's KEK before `coffer server` starts on it: \
--kek-from copies it from a data dir (kek.key or kek.toml, kek-versions.toml, kek-N.key, \
account-keks/); a KEK in an HSM stays in the HSM, which must hold the key objects kek.toml \
and kek-versions.toml name.";

pub const VERIFY_LONG_ABOUT: &str = "\
Recompute a data dir's change-log chain (from its base) and every account's audit chain, \
read-only, with or without a server running on it, and print their heads. Exits non-zero \
naming the first broken link. Audit checkpoints (signed with a key the KEK wraps) are \
checked by `coffer audit verify` through the server.";

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The data dir to back up (a server may be running on it)
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The backup file to write (its directory must exist)
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
    /// Copy the KEK configuration (kek.key or kek.toml, kek-versions.toml, kek-N.key,
    /// account-keks/) from this data dir, e.g. the old one or a restored copy of its KEK
    /// backup; nothing is taken from an HSM
    #[arg(long, value_name = "OLD_DIR")]
    pub kek_from: Option<PathBuf>,
    /// Print what was restored as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The data dir to check (a server may be running on it)
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Print the heads as JSON
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use crate::args::tests::parse;

    #[test]
    fn backup_restore_and_verify_parse() {
        match parse(&["backup", "--data-dir", "/d", "--out", "/b", "--force"])
            .unwrap()
            .command
        {
            Command::Backup(a) => {
                assert_eq!(
                    (a.data_dir, a.out, a.force),
                    ("/d".into(), "/b".into(), true)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&["backup", "--data-dir", "/d"]).is_err(),
            "--out is required"
        );
        match parse(&[
            "restore",
            "--from",
            "/b",
            "--data-dir",
            "/n",
            "--kek-from",
            "/o",
        ])
        .unwrap()
        .command
        {
            Command::Restore(a) => assert_eq!(a.kek_from, Some("/o".into())),
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&["restore", "--data-dir", "/n"]).is_err(),
            "--from is required"
        );
        assert!(matches!(
            parse(&["verify", "--data-dir", "/d", "--json"])
                .unwrap()
                .command,
            Command::Verify(VerifyArgs { json: true, .. })
        ));
        assert!(parse(&["verify"]).is_err());
    }
}
