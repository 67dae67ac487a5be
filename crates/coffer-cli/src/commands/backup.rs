//! `coffer backup`, `restore`, `verify` and `repair` (the work, and what restore says to do
//! next, are `coffer_server::backup`'s and `coffer_server::repair`'s): one summary line, or
//! JSON with `--json`. Nothing printed here holds a key or a value: the manifest and the
//! chains' heads are hashes and counts, repair's lines ids and counts.

use serde_json::json;

use crate::args::{BackupArgs, RepairArgs, RestoreArgs, VerifyArgs};
use crate::commands::init::kek_secrets;
use crate::output;
use coffer_server::backup;
use coffer_server::backup::ForeignKeys;

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let done = backup::backup(&args.data_dir, &args.out, args.force).await?;
    let m = &done.manifest;
    let text = if args.json {
        output::json_text(&json!({ "path": args.out, "manifest": m }))
    } else {
        format!(
            "backup written to {}: change log at seq {} ({} entries checked), {} audit chains \
             ({} entries checked), {} database bytes, sha256 {}; keep the KEK's backup apart \
             from it\n",
            args.out.display(),
            m.heads.change_log.head_seq,
            done.report.changes_checked,
            m.heads.audit_heads.len(),
            done.report.audit_entries_checked,
            m.database.length,
            hex::encode(m.database.sha256),
        )
    };
    output::print(&text)?;
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let done = backup::restore(
        &args.from,
        &args.data_dir,
        args.kek_from.as_deref(),
        kek_secrets(),
    )
    .await?;
    let text = if args.json {
        output::json_text(&json!({
            "data_dir": args.data_dir,
            "manifest": done.manifest,
            "changes_checked": done.report.changes_checked,
            "audit_entries_checked": done.report.audit_entries_checked,
            "audit_checkpoints_checked": done.report.audit_checkpoints_checked,
            "checkpoint_macs_checked": done.checkpoint_macs_checked,
            "kek_files": done.kek_files,
            "next": done.next,
        }))
    } else {
        format!(
            "restored {} into {}: checksums match, change log at seq {} and {} audit chains \
             recomputed and equal to the manifest's\n{}\n",
            args.from.display(),
            args.data_dir.display(),
            done.manifest.heads.change_log.head_seq,
            done.manifest.heads.audit_heads.len(),
            done.next,
        )
    };
    output::print(&text)?;
    Ok(())
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    // What was checked: its name in the text, and its key and value in the JSON (the
    // database as host:port/name, never the URL).
    let (place, key, name, v) = match (&args.data_dir, args.database.database()?) {
        (Some(dir), None) => {
            let v = backup::verify(dir).await?;
            (dir.display().to_string(), "data_dir", json!(dir), v)
        }
        (None, Some(db)) => {
            let (target, v) = backup::verify_database(&db).await?;
            (format!("database {target}"), "database", json!(target), v)
        }
        // clap requires one of the two; both is refused here, so that a URL that came from
        // the environment is named as such.
        _ => return Err(both("check").into()),
    };
    let text = if args.json {
        let mut value = serde_json::to_value(&v)?;
        value[key] = name;
        output::json_text(&value)
    } else {
        let log = &v.heads.change_log;
        let integrity = &v.integrity;
        format!(
            "ok: {place}: change log head seq {} hash {} (base seq {}, {} entries checked); {} \
             accounts' audit chains, {} entries and {} checkpoints checked (unkeyed: `coffer \
             audit verify` checks the checkpoints' MACs); secret counts of {} stores and {} \
             accounts equal their rows; foreign keys {}\n",
            log.head_seq,
            hex::encode(log.head_hash),
            log.base_seq,
            v.changes_checked,
            v.heads.audit_heads.len(),
            v.audit_entries_checked,
            v.audit_checkpoints_checked,
            integrity.stores_checked,
            integrity.accounts_checked,
            match integrity.foreign_keys {
                ForeignKeys::Checked => "checked row by row",
            },
        )
    };
    output::print(&text)?;
    Ok(())
}

/// Both a data dir and a database given: a usage error naming COFFER_DATABASE_URL when the URL
/// came from it. `what`: what would be done to the data dir.
fn both(what: &str) -> crate::commands::UsageError {
    let from_env = if std::env::var_os("COFFER_DATABASE_URL").is_some() {
        format!(" (COFFER_DATABASE_URL is set: unset it to {what} a data dir)")
    } else {
        String::new()
    };
    crate::commands::UsageError(format!(
        "give one of --data-dir and --database-url, not both{from_env}"
    ))
}

/// Counts printed one per line at most; `--json` lists every one.
const REPAIR_LINES: usize = 1000;

pub async fn repair(args: RepairArgs) -> anyhow::Result<()> {
    // The recount is not audited: its log line goes to standard error (RUST_LOG may ask for
    // more).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
    let (key, done) = match (&args.data_dir, args.database.database()?) {
        (Some(dir), None) => ("data_dir", coffer_server::repair::repair(dir).await),
        (None, Some(db)) => (
            "database",
            coffer_server::repair::repair_database(&db).await,
        ),
        _ => return Err(both("repair").into()),
    };
    let done = match done {
        Ok(done) => done,
        Err(coffer_server::repair::RepairError::InUse { path }) => {
            return Err(crate::commands::UsageError(format!(
                "data dir {} is in use by another coffer process (a running server?): stop it first; `coffer verify --data-dir` runs beside it",
                path.display()
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let place = match key {
        "data_dir" => format!("data dir {}", done.target),
        _ => format!("database {}", done.target),
    };
    let r = &done.recounted;
    let text = if args.json {
        let mut value = json!({
            "stores_checked": done.checked.stores_checked,
            "accounts_checked": done.checked.accounts_checked,
            "corrected": r.corrected(),
            "recounted": r,
        });
        value[key] = json!(done.target);
        output::json_text(&value)
    } else if r.corrected() == 0 {
        format!(
            "ok: {place}: secret counts of {} stores and {} accounts equal their rows; nothing to \
             repair\n",
            done.checked.stores_checked, done.checked.accounts_checked
        )
    } else {
        let mut text = format!(
            "repaired {place}: {} secret counts set to their rows ({} stores, {} accounts)\n",
            r.corrected(),
            r.stores.len(),
            r.accounts.len()
        );
        let lines = r
            .stores
            .iter()
            .map(|c| format!("store {}: {} -> {}\n", c.id, c.was, c.now))
            .chain(
                r.accounts
                    .iter()
                    .map(|c| format!("account {}: {} -> {}\n", c.id, c.was, c.now)),
            );
        for line in lines.take(REPAIR_LINES) {
            text.push_str(&line);
        }
        if r.corrected() > REPAIR_LINES {
            text.push_str(&format!(
                "... and {} more (--json lists every one)\n",
                r.corrected() - REPAIR_LINES
            ));
        }
        text
    };
    output::print(&text)?;
    Ok(())
}
