//! `coffer backup`, `restore` and `verify` (the work is `coffer_server::backup`'s): one summary
//! line, or JSON with `--json`. Nothing printed here holds a key or a value: the manifest and
//! the chains' heads are hashes and counts.

use serde::Serialize;
use serde_json::json;

use crate::args::{BackupArgs, RestoreArgs, VerifyArgs};
use crate::output;
use coffer_server::backup::{self, Manifest};

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let done = backup::backup(&args.data_dir, &args.out, args.force).await?;
    let m = &done.manifest;
    let text = if args.json {
        output::json_text(&json!({ "path": done.path, "manifest": m }))
    } else {
        format!(
            "backup written to {}: change log at seq {} ({} entries checked), {} audit chains \
             ({} entries checked), {} database bytes, sha256 {}; keep the KEK's backup apart \
             from it\n",
            done.path.display(),
            m.change_log.head_seq,
            done.changes_checked,
            m.audit_heads.len(),
            done.audit_entries_checked,
            m.database.length,
            m.database.sha256,
        )
    };
    output::print(&text)?;
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let done = backup::restore(&args.from, &args.data_dir, args.kek_from.as_deref()).await?;
    let dir = args.data_dir.display();
    let next = if done.kek_files.is_empty() {
        format!(
            "before `coffer server --data-dir {dir}` starts, {dir} needs the instance KEK from its \
             own backup: kek.key (or kek.toml, with the HSM holding its key objects), \
             kek-versions.toml and every kek-N.key it names, and account-keks/ if accounts have \
             their own KEKs (or run restore again with --kek-from OLD_DIR)"
        )
    } else {
        format!(
            "copied {} from {}; `coffer server --data-dir {dir}` can start (a KEK in an HSM must \
             be reachable as kek.toml names it)",
            done.kek_files.join(", "),
            args.kek_from
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )
    };
    let text = if args.json {
        output::json_text(&json!({
            "data_dir": args.data_dir,
            "manifest": done.manifest,
            "changes_checked": done.report.changes_checked,
            "audit_entries_checked": done.report.audit_entries_checked,
            "kek_files": done.kek_files,
            "next": next,
        }))
    } else {
        format!(
            "restored {} into {dir}: checksums match, change log at seq {} and {} audit chains \
             verified and equal to the manifest's\n{next}\n",
            args.from.display(),
            done.manifest.change_log.head_seq,
            done.manifest.audit_heads.len(),
        )
    };
    output::print(&text)?;
    Ok(())
}

#[derive(Serialize)]
struct Verified<'a> {
    data_dir: &'a std::path::Path,
    cluster_id: Option<String>,
    change_log: backup::LogHead,
    changes_checked: u64,
    audit_heads: Vec<backup::AuditHeadEntry>,
    audit_entries_checked: u64,
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let report = backup::verify(&args.data_dir).await?;
    // The same shapes as a backup's manifest, so the two compare field by field.
    let (cluster_id, log, audit_heads) = Manifest::heads_of(&report);
    let text = if args.json {
        output::json_text(&Verified {
            data_dir: &args.data_dir,
            cluster_id,
            change_log: log,
            changes_checked: report.changes_checked,
            audit_heads,
            audit_entries_checked: report.audit_entries_checked,
        })
    } else {
        format!(
            "ok: {}: change log head seq {} hash {} (base seq {}, {} entries checked); {} \
             accounts' audit chains, {} entries checked\n",
            args.data_dir.display(),
            log.head_seq,
            log.head_hash,
            log.base_seq,
            report.changes_checked,
            report.audit_heads.len(),
            report.audit_entries_checked,
        )
    };
    output::print(&text)?;
    Ok(())
}
