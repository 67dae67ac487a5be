//! Versioned schema migrations, run at connect.
//!
//! `MIGRATIONS[i]` takes a database from version i to i + 1 (version 0: no Coffer tables).
//! Append only: a released migration is never edited, because databases in the field have run
//! it. The version is the one row of `coffer_schema_version`.
//!
//! The migration transaction first takes `pg_advisory_xact_lock(MIGRATION_LOCK)`, so when
//! several instances start at once the first migrates and the others, waiting on the lock,
//! then find the schema current. A failed migration rolls back whole: the previous version
//! stays intact. A migration also takes the writer lock, and every write reads the version
//! under that lock and refuses to write when it is newer than its build's: in a rolling
//! upgrade, old instances stop writing once a new one migrated (they keep reading).

use crate::ConnectError;

/// The SQL of each migration, in order.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_initial", include_str!("migrations/0001_initial.sql")),
    (
        "0002_truncate_guards",
        include_str!("migrations/0002_truncate_guards.sql"),
    ),
    (
        "0003_list_counts",
        include_str!("migrations/0003_list_counts.sql"),
    ),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock key of migrations ("coffer" + 1 in ASCII; any fixed value unlikely to be
/// used by another application on the same database).
const MIGRATION_LOCK: i64 = 0x636f_6666_6572_0001;

/// How long a migration waits for a table's lock before it gives up (see [`run`]).
const MIGRATION_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Checks, without writing anything, that the database holds a Coffer schema of exactly
/// [`SCHEMA_VERSION`] (a read-only connection, `PgOptions::read_only`, migrates nothing).
pub(crate) async fn check(client: &deadpool_postgres::Object) -> Result<(), ConnectError> {
    let failed = |e: tokio_postgres::Error| {
        ConnectError::Schema(format!(
            "reading the schema version: {}",
            crate::error_chain(&e)
        ))
    };
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('coffer_schema_version') IS NOT NULL",
            &[],
        )
        .await
        .map_err(failed)?
        .get(0);
    let version: i64 = if exists {
        client
            .query_opt(
                "SELECT version FROM coffer_schema_version WHERE id = 1",
                &[],
            )
            .await
            .map_err(failed)?
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(failed)?
            .unwrap_or(0)
    } else {
        0
    };
    match version {
        0 => Err(ConnectError::Schema(
            "the database holds no Coffer schema".into(),
        )),
        v if v == SCHEMA_VERSION => Ok(()),
        v => Err(ConnectError::Schema(format!(
            "the database's schema is version {v}, this build reads version {SCHEMA_VERSION} \
             (a server of this build migrates an older one when it starts; run a newer Coffer \
             for a newer one)"
        ))),
    }
}

/// Brings the schema to [`SCHEMA_VERSION`], or refuses a newer one.
pub(crate) async fn run(client: &mut deadpool_postgres::Object) -> Result<(), ConnectError> {
    run_to(client, MIGRATIONS.len()).await
}

/// [`run`], stopping at version `target` (at most [`SCHEMA_VERSION`]: a target past it is a
/// caller's mistake, and panics): tests leave a database at an older version, to migrate it
/// from there.
pub(crate) async fn run_to(
    client: &mut deadpool_postgres::Object,
    target: usize,
) -> Result<(), ConnectError> {
    assert!(
        target <= MIGRATIONS.len(),
        "no migration {target}: the last is {}",
        MIGRATIONS.len()
    );
    let failed = |what: &str, e: tokio_postgres::Error| {
        ConnectError::Schema(format!("{what}: {}", crate::error_chain(&e)))
    };
    let tx = client
        .transaction()
        .await
        .map_err(|e| failed("beginning the migration", e))?;
    // A migration may take long on a large database: not the read sessions' bound.
    tx.batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .map_err(|e| failed("beginning the migration", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| failed("taking the migration lock", e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS coffer_schema_version (
             id      SMALLINT PRIMARY KEY CHECK (id = 1),
             version BIGINT   NOT NULL CHECK (version >= 0)
         )",
    )
    .await
    .map_err(|e| failed("creating the schema version table", e))?;
    let current: i64 = tx
        .query_opt(
            "SELECT version FROM coffer_schema_version WHERE id = 1",
            &[],
        )
        .await
        .map_err(|e| failed("reading the schema version", e))?
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(|e| failed("reading the schema version", e))?
        .unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(ConnectError::Schema(format!(
            "the database's schema is version {current}, newer than this build's version \
             {SCHEMA_VERSION}: run a newer Coffer (or restore a backup from before the upgrade)"
        )));
    }
    let start = usize::try_from(current).map_err(|_| {
        ConnectError::Schema(format!(
            "the database's schema version {current} is invalid"
        ))
    })?;
    if start >= target {
        return Ok(());
    }
    // No write of a running instance (of this build or an older one) may interleave with the
    // migration; each checks the version under this lock before it writes.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&crate::tx::WRITER_LOCK],
    )
    .await
    .map_err(|e| failed("taking the writer lock", e))?;
    // A migration that alters a table waits for its exclusive lock behind every open read of
    // it (an edge streaming a snapshot holds one for minutes), and while it waits, new reads of
    // that table queue behind it on every instance. Bounded: past it the migration gives up,
    // rolls back (releasing everything) and this start fails, to be tried again.
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = {}",
        MIGRATION_LOCK_WAIT.as_millis()
    ))
    .await
    .map_err(|e| failed("beginning the migration", e))?;
    for (name, sql) in &MIGRATIONS[start..target] {
        tx.batch_execute(sql).await.map_err(|e| {
            let waited = e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE);
            ConnectError::Schema(format!(
                "migration {name}: {}{}",
                crate::error_chain(&e),
                if waited {
                    " (a long read holds a table it alters, such as an edge's snapshot                      stream: start again once it is done; nothing was changed)"
                } else {
                    ""
                }
            ))
        })?;
    }
    tx.execute(
        "INSERT INTO coffer_schema_version (id, version) VALUES (1, $1)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version",
        &[&(target as i64)],
    )
    .await
    .map_err(|e| failed("writing the schema version", e))?;
    tx.commit()
        .await
        .map_err(|e| failed("committing the migration", e))?;
    tracing::info!(from = current, to = target, "migrated the database schema");
    Ok(())
}

#[cfg(test)]
#[path = "migrate_tests.rs"]
mod tests;
