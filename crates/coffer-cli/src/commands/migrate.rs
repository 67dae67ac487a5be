//! `coffer migrate` (the work is `coffer_server::migrate`'s): what was copied and verified, and
//! what to run next, as text or JSON. Nothing printed holds a key, a value or the password:
//! counts, hashes, and the database as `host:port/database`.

use serde_json::json;

use crate::args::MigrateArgs;
use crate::output;
use coffer_server::migrate;

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    // Other users can read a command line; the environment is the process's own.
    if crate::config_file::database_url_has_password(&args.to)
        && std::env::var("COFFER_DATABASE_URL").ok().as_deref() != Some(args.to.as_str())
    {
        return Err(crate::commands::UsageError(
            "--to: the URL holds a password, which the command line shows to every user of this machine: give it with --database-password-file or PGPASSWORD, or the whole URL in COFFER_DATABASE_URL".into(),
        )
        .into());
    }
    let done = migrate::migrate(&args.from, &args.database()).await?;
    if let Some(warning) = &done.warning {
        eprintln!(
            "warning: backend.toml is in place, but {warning}: check it is still there after a crash"
        );
    }
    let rows: u64 = done.counts.iter().map(|(_, n)| n).sum();
    let log = &done.report.log;
    let text = if args.json {
        output::json_text(&json!({
            "data_dir": args.from,
            "database": done.target,
            "cluster_id": hex::encode(done.cluster_id),
            "rows": done.counts.iter().map(|(t, n)| (t.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "change_log": {
                "base_seq": log.base_seq,
                "head_seq": log.head_seq,
                "head_hash": hex::encode(log.head_hash),
            },
            "changes_checked": done.report.changes_checked,
            "audit_chains": done.report.audit_heads.len(),
            "audit_entries_checked": done.report.audit_entries_checked,
            "rollback_copy": done.rollback,
        }))
    } else {
        format!(
            "migrated {} into {}: {rows} rows in {} tables copied as stored; verified: row \
             counts, change log from seq {} to {} ({} entries), {} audit chains ({} entries), \
             heads equal to the source's\n\
             {} now uses PostgreSQL (backend.toml, cluster id {}); start it with: coffer \
             server --data-dir {} --database-url URL\n\
             {} is kept as the rollback copy (see \"Moving to PostgreSQL\" in docs/operations.md before using it)\n",
            args.from.display(),
            done.target,
            done.counts.len(),
            log.base_seq,
            log.head_seq,
            done.report.changes_checked,
            done.report.audit_heads.len(),
            done.report.audit_entries_checked,
            args.from.display(),
            hex::encode(done.cluster_id),
            args.from.display(),
            done.rollback.display(),
        )
    };
    output::print(&text)?;
    Ok(())
}
