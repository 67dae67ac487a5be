//! `coffer backup`, `restore` and `verify` (the work, and what restore says to do next, are
//! `coffer_server::backup`'s): one summary line, or JSON with `--json`. Nothing printed here
//! holds a key or a value: the manifest and the chains' heads are hashes and counts.

use serde_json::json;

use crate::args::{BackupArgs, RestoreArgs, VerifyArgs};
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
        _ => {
            let from_env = if std::env::var_os("COFFER_DATABASE_URL").is_some() {
                " (COFFER_DATABASE_URL is set: unset it to check a data dir)"
            } else {
                ""
            };
            return Err(crate::commands::UsageError(format!(
                "give one of --data-dir and --database-url, not both{from_env}"
            ))
            .into());
        }
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
