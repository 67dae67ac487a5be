//! `coffer backup`, `restore` and `verify` end to end: a backup taken while a server runs and
//! writes, restored into a new data dir that then serves the same value; and every kind of bad
//! input refused in one line, with nothing left behind.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use aws_lc_rs::digest;
use serde_json::Value;

use common::*;

const VALUE: &str = "backed-up-v4lue-Qm3";

fn coffer(args: &[&str]) -> Out {
    let mut cmd = coffer_cmd();
    cmd.args(args);
    run(cmd, None)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The header, manifest and database of a backup file (docs/storage-format.md).
fn split(bytes: &[u8]) -> (Value, Vec<u8>) {
    assert_eq!(&bytes[..8], b"COFFERBK");
    let len = u32::from_be_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let manifest = serde_json::from_slice(&bytes[16..16 + len]).unwrap();
    (manifest, bytes[16 + len + 32..].to_vec())
}

/// A backup file of `manifest` and `db`, with a correct manifest checksum.
fn assemble(manifest: &Value, db: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(manifest).unwrap();
    let mut out = b"COFFERBK".to_vec();
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    let sum = digest::digest(&digest::SHA256, &out);
    out.extend_from_slice(sum.as_ref());
    out.extend_from_slice(db);
    out
}

/// `db` with its length and SHA-256 in `manifest`.
fn reseal(mut manifest: Value, db: &[u8]) -> Vec<u8> {
    manifest["database"]["length"] = db.len().into();
    manifest["database"]["sha256"] = hex(digest::digest(&digest::SHA256, db).as_ref()).into();
    assemble(&manifest, db)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `db` after `sql` ran on it (in a scratch file), with every trigger `sql` dropped put back
/// as it was: the schema is this build's again, only the rows changed.
fn tampered(db: &[u8], sql: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scratch.db");
    std::fs::write(&path, db).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let triggers: Vec<(String, String)> = conn
        .prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    conn.execute_batch(sql).unwrap();
    for (name, sql) in triggers {
        let there: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'trigger' AND name = ?1",
                [&name],
                |r| r.get(0),
            )
            .unwrap();
        if !there {
            conn.execute_batch(&sql).unwrap();
        }
    }
    drop(conn);
    std::fs::read(&path).unwrap()
}

/// `db` after `sql` ran on it, the schema left as `sql` made it.
fn restructured(db: &[u8], sql: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scratch.db");
    std::fs::write(&path, db).unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
    std::fs::read(&path).unwrap()
}

/// A server on D with a store, a secret holding VALUE and a service `app` binding it as KEY.
/// A writer loop creates secrets through the CLI while `coffer backup` runs; the backup is
/// restored (with the KEK copied) into NEW, whose server serves VALUE to the same service
/// token, and whose change-log head is the manifest's.
#[test]
fn a_backup_taken_during_writes_restores_into_a_server_that_serves_the_same_value() {
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
    let read = |url: &str| runtime_get(url, &token, "/runtime/v1/bindings/KEY");
    let before = read(&server.url);
    assert_eq!(
        (before.status, before.body.as_slice()),
        (200, VALUE.as_bytes())
    );

    // The writer loop: one secret per CLI call, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, written) = (Arc::clone(&stop), Arc::clone(&written));
        let conn = conn.as_(&conn.token, &conn.account);
        let store = store.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{n}");
                let args = [
                    "secret", "create", &store, "--name", &name, "--scopes", "workers",
                ];
                conn.run_with_stdin(&args, "x").ok();
                n += 1;
                written.store(n, Ordering::Relaxed);
            }
        })
    };
    while written.load(Ordering::Relaxed) < 3 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let file = tmp.path().join("coffer.backup");
    let backup = coffer(&[
        "backup",
        "--data-dir",
        p(&data),
        "--out",
        p(&file),
        "--json",
    ])
    .ok();
    let at_backup = written.load(Ordering::Relaxed);
    // Writes go on after it, on the server that never stopped.
    while written.load(Ordering::Relaxed) < at_backup + 2 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let manifest = backup.json()["manifest"].clone();
    let head = manifest["change_log"]["head_seq"].as_u64().unwrap();
    assert!(head >= 3, "{manifest}");

    // Verify works on the running server; its head moved past the backup's.
    let live = coffer(&["verify", "--data-dir", p(&data), "--json"])
        .ok()
        .json();
    assert!(
        live["change_log"]["head_seq"].as_u64().unwrap() > head,
        "{live}"
    );
    assert_eq!(live["cluster_id"], manifest["cluster_id"]);

    // The file: mode 0600, the manifest's fields, and no byte of the KEK.
    let bytes = std::fs::read(&file).unwrap();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (inside, db) = split(&bytes);
    assert_eq!(inside, manifest);
    assert!(
        manifest.get("format").is_none(),
        "the header holds the version"
    );
    for key in ["created_at", "coffer_version", "cluster_id"] {
        assert!(!manifest[key].is_null(), "{key}: {manifest}");
    }
    assert_eq!(manifest["database"]["length"], db.len());
    assert!(!manifest["audit_heads"].as_array().unwrap().is_empty());
    let kek = std::fs::read(data.join("kek.key")).unwrap();
    assert_eq!(kek.len(), 32);
    assert!(
        !bytes.windows(kek.len()).any(|w| w == kek),
        "the KEK is in the backup"
    );
    assert!(!String::from_utf8_lossy(&bytes).contains(&hex(&kek)));
    assert!(
        !String::from_utf8_lossy(&bytes).contains(VALUE),
        "a value in clear"
    );

    // Restore, with the KEK copied from the old dir.
    let new = tmp.path().join("restored");
    let restored = coffer(&[
        "restore",
        "--from",
        p(&file),
        "--data-dir",
        p(&new),
        "--kek-from",
        p(&data),
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(restored["manifest"], manifest);
    assert_eq!(restored["kek_files"], serde_json::json!(["kek.key"]));
    let mode = std::fs::metadata(new.join("kek.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let verified = coffer(&["verify", "--data-dir", p(&new), "--json"])
        .ok()
        .json();
    assert_eq!(verified["change_log"], manifest["change_log"]);
    assert_eq!(verified["audit_heads"], manifest["audit_heads"]);

    // A server on the restored dir serves the value to the same service token.
    drop(server);
    let server = Server::start(&new);
    let after = read(&server.url);
    assert_eq!(
        (after.status, after.body.as_slice()),
        (200, VALUE.as_bytes())
    );
    // Secrets written after the backup are not there; those before it are.
    let listed = Conn {
        url: server.url.clone(),
        token: conn.token.clone(),
        account: conn.account.clone(),
    }
    .run(&["secret", "list", &store, "--json"])
    .ok()
    .json();
    let count = listed["result_info"]["total_count"].as_u64().unwrap() as usize;
    assert!(
        count > 1 && count < 1 + written.load(Ordering::Relaxed),
        "{count}"
    );
}

#[test]
fn bad_input_is_refused_in_one_line_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("data");
    init(&data);
    let file = t.join("b.backup");
    coffer(&["backup", "--data-dir", p(&data), "--out", p(&file)]).ok();
    let good = std::fs::read(&file).unwrap();
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(t)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let clean = listing();

    // Backup: a dir that is not initialised, an existing file, an unwritable destination.
    let empty = t.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = coffer(&["backup", "--data-dir", p(&empty), "--out", p(&t.join("x"))]);
    assert!(
        out.one_error_line(1)
            .contains("not an initialised Coffer data dir"),
        "{out:?}"
    );
    let out = coffer(&["backup", "--data-dir", p(&data), "--out", p(&file)]);
    assert!(
        out.one_error_line(1)
            .contains("exists; refusing to overwrite it (--force replaces it)"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), good, "untouched");
    let nowhere = t.join("no-such-dir").join("b.backup");
    let out = coffer(&["backup", "--data-dir", p(&data), "--out", p(&nowhere)]);
    let line = out.one_error_line(1);
    assert!(
        line.contains(&format!(
            "cannot write {}: its directory {} does not exist",
            nowhere.display(),
            nowhere.parent().unwrap().display()
        )),
        "{line}"
    );
    // A directory no one may create files in, whoever runs the test (root included).
    let out = coffer(&[
        "backup",
        "--data-dir",
        p(&data),
        "--out",
        "/proc/coffer.backup",
    ]);
    let line = out.one_error_line(1);
    assert!(
        line.contains("cannot write /proc/coffer.backup: cannot create a file in /proc"),
        "{line}"
    );
    let out = coffer(&["backup", "--data-dir", p(&data), "--out", p(t)]);
    assert!(
        out.one_error_line(1).contains("it is a directory"),
        "{out:?}"
    );
    std::fs::remove_dir(&empty).unwrap();
    assert_eq!(listing(), clean, "no temp file left");
    coffer(&[
        "backup",
        "--data-dir",
        p(&data),
        "--out",
        p(&file),
        "--force",
    ])
    .ok();

    // Restore: each damage names its check, and no data dir is left.
    let (manifest, db) = split(&good);
    let new = t.join("new");
    let refuse = |bytes: &[u8], expect: &str| {
        let bad = t.join("bad.backup");
        std::fs::write(&bad, bytes).unwrap();
        let out = coffer(&["restore", "--from", p(&bad), "--data-dir", p(&new)]);
        let line = out.one_error_line(1).to_owned();
        assert!(line.contains(expect), "expected {expect:?}: {line}");
        assert!(!new.exists(), "{line}: the new data dir is removed");
        std::fs::remove_file(&bad).unwrap();
        line
    };
    refuse(
        b"SQLite format 3\0 and more bytes",
        "not a Coffer backup file (wrong magic)",
    );
    let mut version = good.clone();
    version[11] = 9;
    refuse(
        &version,
        "backup format version 9; this build reads version 1",
    );
    let mut altered_manifest = good.clone();
    altered_manifest[40] ^= 0x01;
    refuse(&altered_manifest, "manifest checksum mismatch");
    refuse(&good[..10], "truncated file: it ends inside its header");
    refuse(&good[..100], "truncated file");
    let line = refuse(&good[..good.len() - 4096], "truncated file");
    assert!(line.contains("the database part is cut short"), "{line}");
    let mut long = good.clone();
    long.extend_from_slice(b"tail");
    refuse(&long, "4 bytes after the database part");
    let mut altered_db = good.clone();
    let at = good.len() - db.len() + 5000;
    altered_db[at] ^= 0x80;
    refuse(&altered_db, "database checksum mismatch");

    // Consistent checksums over a database whose chains are broken, or whose heads are not
    // the manifest's: the restored copy is opened and checked.
    let broken_log = tampered(
        &db,
        "DROP TRIGGER changes_no_update; UPDATE changes SET payload = CAST('{}' AS BLOB) WHERE seq = 1;",
    );
    refuse(
        &reseal(manifest.clone(), &broken_log),
        "the restored copy: change-log chain broken at seq 1",
    );
    let account = manifest["audit_heads"][0]["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let broken_audit = tampered(
        &db,
        "DROP TRIGGER audit_no_update; UPDATE audit SET outcome = 'forged' WHERE seq = 1;",
    );
    refuse(
        &reseal(manifest.clone(), &broken_audit),
        &format!("the restored copy: audit chain of account {account} broken at seq 1"),
    );
    let mut other_head = manifest.clone();
    other_head["change_log"]["head_seq"] = 99.into();
    refuse(
        &reseal(other_head, &db),
        "the restored copy does not match the backup's manifest: change log: manifest base seq 0 \
         head seq 99",
    );
    // A database with a schema of its own (a trigger that keeps DEKs from being destroyed, a
    // guard dropped) is refused before anything opens it read-write.
    let extra_trigger = restructured(
        &db,
        "CREATE TRIGGER keep_deks BEFORE DELETE ON deks BEGIN SELECT RAISE(IGNORE); END;",
    );
    let line = refuse(
        &reseal(manifest.clone(), &extra_trigger),
        "refused before opening it",
    );
    assert!(line.contains("unexpected trigger keep_deks"), "{line}");
    let dropped_guard = restructured(&db, "DROP TRIGGER audit_no_delete;");
    let line = refuse(
        &reseal(manifest.clone(), &dropped_guard),
        "refused before opening it",
    );
    assert!(line.contains("missing trigger audit_no_delete"), "{line}");
    assert_eq!(listing(), clean);

    // An existing empty dir is used, and left empty (and there) after a failure.
    std::fs::create_dir(&new).unwrap();
    let bad = t.join("bad.backup");
    std::fs::write(&bad, &altered_db).unwrap();
    coffer(&["restore", "--from", p(&bad), "--data-dir", p(&new)]).one_error_line(1);
    assert_eq!(std::fs::read_dir(&new).unwrap().count(), 0);
    // --kek-from a key file that is a symlink, or that others may read, is refused before
    // anything is written.
    let linked = t.join("linked");
    std::fs::create_dir(&linked).unwrap();
    std::os::unix::fs::symlink(data.join("kek.key"), linked.join("kek.key")).unwrap();
    let loose = t.join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::copy(data.join("kek.key"), loose.join("kek.key")).unwrap();
    std::fs::set_permissions(loose.join("kek.key"), PermissionsExt::from_mode(0o644)).unwrap();
    for (old, expect) in [(&linked, "is a symbolic link"), (&loose, "has mode 644")] {
        let out = coffer(&[
            "restore",
            "--from",
            p(&file),
            "--data-dir",
            p(&new),
            "--kek-from",
            p(old),
        ]);
        let line = out.one_error_line(1);
        assert!(line.contains(expect), "{line}");
        assert_eq!(std::fs::read_dir(&new).unwrap().count(), 0);
    }
    std::fs::remove_dir_all(&linked).unwrap();
    std::fs::remove_dir_all(&loose).unwrap();
    // --kek-from a dir without a KEK is refused before anything is written.
    let out = coffer(&[
        "restore",
        "--from",
        p(&file),
        "--data-dir",
        p(&new),
        "--kek-from",
        p(t),
    ]);
    assert!(
        out.one_error_line(1).contains("holds no KEK configuration"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_dir(&new).unwrap().count(), 0);
    // A non-empty dir is refused, by name.
    std::fs::write(new.join("keep-me"), b"x").unwrap();
    let out = coffer(&["restore", "--from", p(&file), "--data-dir", p(&new)]);
    let line = out.one_error_line(1);
    assert!(
        line.contains(&format!(
            "{}: already exists and is not empty; refusing to overwrite it",
            new.display()
        )),
        "{line}"
    );
    assert_eq!(std::fs::read(new.join("keep-me")).unwrap(), b"x");
    // Restored without --kek-from, it says what else the dir needs.
    let fresh = t.join("fresh");
    let out = coffer(&["restore", "--from", p(&file), "--data-dir", p(&fresh)]).ok();
    assert!(out.stdout.contains("needs the instance KEK"), "{out:?}");
    assert!(out.stdout.contains("run `coffer audit verify`"), "{out:?}");
    assert!(!fresh.join("kek.key").exists());
}

/// The unkeyed checks pass a database whose checkpoint was forged with its hashes right; with
/// the KEK at hand (--kek-from) restore checks the checkpoint's MAC and refuses it.
#[test]
fn kek_from_verifies_audit_checkpoint_macs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("data");
    let (account, _) = init(&data);
    let file = t.join("b.backup");
    coffer(&["backup", "--data-dir", p(&data), "--out", p(&file)]).ok();
    let (manifest, db) = split(&std::fs::read(&file).unwrap());
    let head = &manifest["audit_heads"][0];
    assert_eq!(head["account_id"], account.as_str());
    let forged = tampered(
        &db,
        &format!(
            "INSERT INTO audit_checkpoints (account_id, seq, hash, mac, at) SELECT account_id, \
             seq, hash, zeroblob(32), 0 FROM audit WHERE seq = {} AND hex(account_id) = \
             upper(replace('{account}', '-', ''));",
            head["seq"]
        ),
    );
    let bad = t.join("forged.backup");
    std::fs::write(&bad, reseal(manifest.clone(), &forged)).unwrap();

    let unkeyed = t.join("unkeyed");
    let out = coffer(&["restore", "--from", p(&bad), "--data-dir", p(&unkeyed)]).ok();
    assert!(out.stdout.contains("run `coffer audit verify`"), "{out:?}");

    let keyed = t.join("keyed");
    let out = coffer(&[
        "restore",
        "--from",
        p(&bad),
        "--data-dir",
        p(&keyed),
        "--kek-from",
        p(&data),
    ]);
    let line = out.one_error_line(1);
    assert!(
        line.contains(&format!(
            "keyed check of the restored copy: audit of account {account} at seq {}: checkpoint \
             signature is invalid",
            head["seq"]
        )),
        "{line}"
    );
    assert!(!keyed.exists(), "removed");

    // A DEK wrapped by a KEK the copied configuration does not hold: the server could not
    // decrypt it, so the restore is refused rather than told it can start.
    let foreign = tampered(
        &db,
        "INSERT INTO deks (id, account_id, kek_id, wrapped, created) SELECT randomblob(16), id, \
         'file:0000000000000000', x'00', 0 FROM accounts LIMIT 1;",
    );
    std::fs::write(&bad, reseal(manifest.clone(), &foreign)).unwrap();
    let out = coffer(&[
        "restore",
        "--from",
        p(&bad),
        "--data-dir",
        p(&keyed),
        "--kek-from",
        p(&data),
    ]);
    let line = out.one_error_line(1);
    assert!(
        line.contains(
            "keyed check of the restored copy: the restored dir does not open with the KEK copied"
        ) && line
            .contains("wrapped by KEK file:0000000000000000, which is not one of its versions"),
        "{line}"
    );
    assert!(!keyed.exists(), "removed");

    let good = t.join("good");
    let out = coffer(&[
        "restore",
        "--from",
        p(&file),
        "--data-dir",
        p(&good),
        "--kek-from",
        p(&data),
    ])
    .ok();
    assert!(
        out.stdout.contains("audit checkpoint MACs verified"),
        "{out:?}"
    );
}

/// A data dir named `file:...` (relative) is a file name, never an SQLite URI.
#[test]
fn a_relative_path_starting_with_file_is_a_file_name() {
    let tmp = tempfile::tempdir().unwrap();
    let in_tmp = |args: &[&str]| {
        let mut cmd = coffer_cmd();
        cmd.current_dir(tmp.path()).args(args);
        run(cmd, None)
    };
    in_tmp(&["init", "--data-dir", "file:d"]).ok();
    assert!(tmp.path().join("file:d").join("coffer.db").is_file());
    in_tmp(&["backup", "--data-dir", "file:d", "--out", "file:b"]).ok();
    in_tmp(&["verify", "--data-dir", "file:d"]).ok();
    in_tmp(&["restore", "--from", "file:b", "--data-dir", "file:n"]).ok();
    assert!(tmp.path().join("file:n").join("coffer.db").is_file());
    assert!(!tmp.path().join("d").exists() && !tmp.path().join("n").exists());
}

#[test]
fn verify_names_the_first_broken_link_of_a_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, _) = init(&data);
    let out = coffer(&["verify", "--data-dir", p(&data)]).ok();
    assert!(out.stdout.starts_with("ok: "), "{out:?}");
    assert!(out.stdout.contains("1 accounts' audit chains"), "{out:?}");

    rusqlite::Connection::open(data.join("coffer.db"))
        .unwrap()
        .execute_batch(
            "DROP TRIGGER audit_no_update; UPDATE audit SET action = 'forged' WHERE seq = 2;",
        )
        .unwrap();
    let out = coffer(&["verify", "--data-dir", p(&data)]);
    let line = out.one_error_line(1);
    assert!(
        line.contains(&format!("audit chain of account {account} broken at seq 2")),
        "{line}"
    );
    // And a backup of it is refused: it could not be restored.
    let file = tmp.path().join("b");
    let out = coffer(&["backup", "--data-dir", p(&data), "--out", p(&file)]);
    assert!(out.one_error_line(1).contains("nothing written"), "{out:?}");
    assert!(!file.exists());

    let out = coffer(&["verify", "--data-dir", p(&tmp.path().join("none"))]);
    assert!(
        out.one_error_line(1)
            .contains("not an initialised Coffer data dir"),
        "{out:?}"
    );
}

/// What lists trust (a store's and an account's secret count equal their rows; a secret's
/// account is its store's) is checked by restore on the untrusted file, by verify, and by
/// backup: a backup file whose database was edited with consistent checksums is refused
/// naming the check, with nothing left behind; a data dir edited the same way fails verify
/// and is not backed up.
#[test]
fn edited_counts_and_foreign_keys_are_refused_by_restore_verify_and_backup() {
    let (tmp, data, server, conn) = setup();
    let t = tmp.path();
    let store = create_store(&conn, "prod");
    create_secret(&conn, &store, "api-key", "workers", VALUE);
    let file = t.join("b.backup");
    coffer(&["backup", "--data-dir", p(&data), "--out", p(&file)]).ok();
    let (status, _) = server.terminate();
    assert!(status.success());
    let (manifest, db) = split(&std::fs::read(&file).unwrap());
    let new = t.join("new");
    // A drifted count stays refused, naming the repair of the source; a broken foreign key
    // names no repair.
    let repair_source = "(the data dir it was taken from can be repaired with `coffer repair \
                         --data-dir DIR`, which recounts secret counts, and backed up again)";
    let refuse = |db: &[u8], expect: &str| {
        let bad = t.join("bad.backup");
        std::fs::write(&bad, reseal(manifest.clone(), db)).unwrap();
        let out = coffer(&["restore", "--from", p(&bad), "--data-dir", p(&new)]);
        let line = out.one_error_line(1).to_owned();
        assert!(
            line.contains("refused before opening it") && line.contains(expect),
            "expected {expect:?}: {line}"
        );
        assert_eq!(
            line.ends_with(repair_source),
            expect.contains("secrets, holds"),
            "{line}"
        );
        assert!(!new.exists(), "{line}: the new data dir is removed");
        std::fs::remove_file(&bad).unwrap();
    };
    // The untouched file restores.
    coffer(&["restore", "--from", p(&file), "--data-dir", p(&new)]).ok();
    std::fs::remove_dir_all(&new).unwrap();

    let store_count = format!("UPDATE stores SET secret_count = 1000 WHERE id = X'{store}';");
    refuse(
        &tampered(&db, &store_count),
        &format!("integrity check failed: store {store} counts 1000 secrets, holds 1"),
    );
    let account = &conn.account;
    let account_count = format!("UPDATE accounts SET secret_count = 0 WHERE id = X'{account}';");
    refuse(
        &tampered(&db, &account_count),
        &format!("integrity check failed: account {account} counts 0 secrets, holds 1"),
    );
    // The secret moved into another account's store, its own account kept (the trigger that
    // keeps a secret's owner fixed dropped, then put back; foreign keys off, as SQLite has
    // them unless a connection turns them on): the lists of that store would show it.
    let (other_account, other_store) = (
        "0123456789abcdef0123456789abcdef",
        "fedcba98765432100123456789abcdef",
    );
    let repointed = format!(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO accounts (id, name, created) VALUES (X'{other_account}', 'other', 0);
         INSERT INTO stores (id, account_id, name, created, modified, secret_count)
             VALUES (X'{other_store}', X'{other_account}', 'theirs', 0, 0, 1);
         UPDATE stores SET secret_count = 0 WHERE id = X'{store}';
         DROP TRIGGER secrets_owner_fixed;
         UPDATE secrets SET store_id = X'{other_store}';"
    );
    let repointed = tampered(&db, &repointed);
    refuse(
        &repointed,
        "integrity check failed: secrets row 1 breaks its foreign key to stores",
    );

    // The same edits in the data dir: verify names them, and backup writes nothing.
    let edit = |sql: &str| {
        rusqlite::Connection::open(data.join("coffer.db"))
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    };
    let verify_fails = |expect: &str| {
        let out = coffer(&["verify", "--data-dir", p(&data)]);
        let line = out.one_error_line(1);
        let whole = format!(
            "data dir {}: integrity check failed: {expect}",
            data.display()
        );
        assert!(line.contains(&whole), "expected {whole:?}: {line}");
        let hint = format!(
            "(`coffer repair --data-dir {}` recounts secret counts)",
            data.display()
        );
        let count = expect.contains("secrets, holds");
        assert_eq!(line.ends_with(&hint), count, "{line}");
        let out = coffer(&["backup", "--data-dir", p(&data), "--out", p(&t.join("b2"))]);
        let line = out.one_error_line(1);
        assert!(
            line.contains("nothing written, the database does not pass its integrity check")
                && line.contains(expect),
            "{line}"
        );
        assert_eq!(line.ends_with(&hint), count, "{line}");
        assert!(!t.join("b2").exists());
    };
    edit(&store_count);
    verify_fails(&format!("store {store} counts 1000 secrets, holds 1"));
    edit(&format!(
        "UPDATE stores SET secret_count = 1 WHERE id = X'{store}'; {account_count}"
    ));
    verify_fails(&format!("account {account} counts 0 secrets, holds 1"));
    std::fs::write(data.join("coffer.db"), &repointed).unwrap();
    verify_fails("secrets row 1 breaks its foreign key to stores");
}

/// `--kek-from` copies an account's own KEK too, and its record then names the copy: the old
/// data dir moved away, the restored server opens the account's key.
#[test]
fn kek_from_copies_account_keks_and_the_restored_dir_stands_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, token) = init(&data);
    let server = Server::start(&data);
    let op = Conn {
        url: server.url.clone(),
        token,
        account,
    };
    let b = op
        .run(&["account", "create", "team-b", "--json"])
        .ok()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    op.run(&["account", "set-kek", "team-b", "--kek", "file", "--json"])
        .ok();
    let file = tmp.path().join("b.backup");
    coffer(&["backup", "--data-dir", p(&data), "--out", p(&file)]).ok();
    let bytes = std::fs::read(&file).unwrap();
    let account_key = std::fs::read(data.join(format!("account-keks/{b}.key"))).unwrap();
    assert!(!bytes.windows(account_key.len()).any(|w| w == account_key));
    drop(server);

    let new = tmp.path().join("new");
    let out = coffer(&[
        "restore",
        "--from",
        p(&file),
        "--data-dir",
        p(&new),
        "--kek-from",
        p(&data),
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(
        out["kek_files"],
        serde_json::json!([
            "kek.key",
            format!("account-keks/{b}.key"),
            format!("account-keks/{b}.toml")
        ]),
    );
    let record = std::fs::read_to_string(new.join(format!("account-keks/{b}.toml"))).unwrap();
    let copied_key = std::path::absolute(&new)
        .unwrap()
        .join(format!("account-keks/{b}.key"));
    assert!(record.contains(copied_key.to_str().unwrap()), "{record}");
    assert_eq!(std::fs::read(&copied_key).unwrap(), account_key);

    let moved = tmp.path().join("old-moved-away");
    std::fs::rename(&data, &moved).unwrap();
    let server = Server::start(&new);
    let v = op.as_(&op.token, &op.account);
    let v = Conn {
        url: server.url.clone(),
        ..v
    }
    .run(&["account", "kek", "team-b", "--json"])
    .ok()
    .json();
    assert_eq!(
        (v["wrapped_by"].as_str(), v["state"].as_str()),
        (Some("account"), Some("available")),
        "{v}"
    );
}

/// Backup refuses what restore would refuse, not only what verify finds: a data dir whose
/// schema was edited (an extra trigger) is not backed up, naming the difference.
#[test]
fn backup_refuses_a_copy_restore_would_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    init(&data);
    rusqlite::Connection::open(data.join("coffer.db"))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER keep_deks BEFORE DELETE ON deks BEGIN SELECT RAISE(IGNORE); END;",
        )
        .unwrap();
    let file = tmp.path().join("b");
    let line = coffer(&["backup", "--data-dir", p(&data), "--out", p(&file)])
        .one_error_line(1)
        .to_owned();
    assert!(
        line.contains("nothing written, restore would refuse the copy")
            && line.contains("unexpected trigger keep_deks")
            && !line.contains("coffer repair"),
        "{line}"
    );
    assert!(!file.exists());
}
