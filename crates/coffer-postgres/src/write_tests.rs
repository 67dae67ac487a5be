//! Tests of the write primitive (`write.rs`): lost commits, session settings, schema
//! versions, append-only tables, the read pool, one batch's audit heads, and the head row that
//! moves only onto an entry the log holds.

use coffer_storage::Storage as _;

use super::*;
use crate::testing::{TestDatabase, cluster_url};

#[tokio::test]
async fn a_lost_commit_is_resolved_from_the_log() {
    let Some(cluster) = cluster_url("a_lost_commit_is_resolved_from_the_log") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let s = db.storage().await;
    s.create_account(
        coffer_storage::AccountRecord {
            id: coffer_types::AccountId::from_bytes([1; 16]),
            name: "a".into(),
            created: Timestamp::from_unix_micros(1),
            secrets_quota: None,
        },
        &[],
    )
    .await
    .unwrap();
    let head = read_head(&s.client().await.unwrap()).await.unwrap();
    assert_eq!(head.seq, 1);
    assert_eq!(
        resolve_commit(&s.pool, head).await,
        CommitOutcome::Committed
    );
    let other = Head {
        hash: [7; 32],
        ..head
    };
    assert_eq!(
        resolve_commit(&s.pool, other).await,
        CommitOutcome::NotCommitted
    );
    let ahead = Head { seq: 2, ..head };
    assert_eq!(
        resolve_commit(&s.pool, ahead).await,
        CommitOutcome::NotCommitted
    );
    // While another session holds the writer lock, the answer is "unknown", in bounded time.
    let hold = s.hold_writer_lock().await;
    let started = Instant::now();
    let outcome = resolve_commit(&s.pool, head).await;
    assert!(matches!(outcome, CommitOutcome::Unknown(_)), "{outcome:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    hold.finish().await.unwrap();
}

/// One batch, three writes appending to one account's audit chain, the middle one
/// failing after its append: the batch reads the account's head once and keeps what it
/// appended, and a rolled-back write takes its entries back from that too, so the chain
/// stays gap-free and linked (its entry 2 is the third write's).
#[tokio::test]
async fn a_batch_keeps_each_accounts_audit_head_across_a_rolled_back_write() {
    let Some(cluster) =
        cluster_url("a_batch_keeps_each_accounts_audit_head_across_a_rolled_back_write")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let s = db.storage().await;
    let account = coffer_types::AccountId::from_bytes([3; 16]);
    let entry = move |action: &str| AuditEntry {
        account_id: account,
        at: Timestamp::from_unix_micros(1),
        action: action.into(),
        outcome: "ok".into(),
        actor_token: None,
        store_id: None,
        secret_id: None,
        payload: b"{}".to_vec(),
    };
    // The writer sits in a batch of its own; the three below queue behind it and are taken
    // together.
    let hold = s.hold_writer_lock().await;
    let first = s
        .queue_write(&[entry("first")], |_| Box::pin(async { Ok(()) }))
        .await
        .unwrap();
    let failing = s
        .queue_write(&[], move |w| {
            Box::pin(async move {
                w.audit(&[entry("undone")]).await?;
                Err::<(), _>(StorageError::Conflict)
            })
        })
        .await
        .unwrap();
    let third = s
        .queue_write(&[entry("third")], |_| Box::pin(async { Ok(()) }))
        .await
        .unwrap();
    let commits = s.write_stats().commits;
    hold.finish().await.unwrap();
    first.await.unwrap();
    assert!(matches!(failing.await, Err(StorageError::Conflict)));
    third.await.unwrap();
    assert_eq!(
        s.write_stats().commits,
        commits + 2,
        "the held batch, then the three writes in one"
    );
    let records = s.audit_entries(account, 0, 10).await.unwrap();
    let actions: Vec<&str> = records.iter().map(|r| r.entry.action.as_str()).collect();
    assert_eq!(actions, ["first", "third"]);
    assert_eq!(records[0].seq, 1);
    assert_eq!(
        records[0].prev_hash,
        coffer_storage::AuditRecord::GENESIS_HASH
    );
    assert_eq!(records[1].seq, 2);
    assert_eq!(records[1].prev_hash, records[0].hash);
    for r in &records {
        assert_eq!(
            r.hash,
            coffer_storage::AuditRecord::compute_hash(&r.prev_hash, r.seq, &r.entry)
        );
    }
}

/// Database defaults that would break the SQL (escapes, isolation) do not apply to
/// Coffer's sessions, and reads are bounded.
#[tokio::test]
async fn sessions_set_what_they_rely_on_whatever_the_database_defaults() {
    let Some(cluster) =
        cluster_url("sessions_set_what_they_rely_on_whatever_the_database_defaults")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let (admin, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {0} SET standard_conforming_strings = off;
             ALTER DATABASE {0} SET default_transaction_isolation = 'repeatable read'",
            db.name()
        ))
        .await
        .unwrap();
    // The migration's literals need standard_conforming_strings.
    let s = db.storage().await;
    let c = s.client().await.unwrap();
    let show = |name: &'static str| {
        let c = &c;
        async move {
            c.query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(show("standard_conforming_strings").await, "on");
    assert_eq!(show("statement_timeout").await, "1min");
    drop(c);
    let isolation = s
        .write(&[], |w| {
            Box::pin(async move {
                let row = w
                    .tx()
                    .query_one("SHOW transaction_isolation", &[])
                    .await
                    .db("show")?;
                Ok(row.get::<_, String>(0))
            })
        })
        .await
        .unwrap();
    assert_eq!(isolation, "read committed");
}

/// A rolling upgrade: once a newer build migrated the database, an older instance that
/// is still running refuses to write, naming both versions.
#[tokio::test]
async fn writes_stop_once_the_schema_is_newer_than_the_build() {
    let Some(cluster) = cluster_url("writes_stop_once_the_schema_is_newer_than_the_build") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let s = db.storage().await;
    let account = |n: u8| coffer_storage::AccountRecord {
        id: coffer_types::AccountId::from_bytes([n; 16]),
        name: format!("a{n}"),
        created: Timestamp::from_unix_micros(1),
        secrets_quota: None,
    };
    s.create_account(account(1), &[]).await.unwrap();
    let newer = crate::SCHEMA_VERSION + 1;
    s.client()
        .await
        .unwrap()
        .execute(
            "UPDATE coffer_schema_version SET version = $1 WHERE id = 1",
            &[&newer],
        )
        .await
        .unwrap();
    let e = s.create_account(account(2), &[]).await.unwrap_err();
    assert!(matches!(e, StorageError::Unavailable(_)), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&format!("version {newer}")), "{text}");
    assert!(
        text.contains(&format!("version {}", crate::SCHEMA_VERSION)),
        "{text}"
    );
    assert_eq!(s.change_head().await.unwrap(), 1);
}

/// TRUNCATE fires no row trigger; the append-only tables refuse it all the same.
#[tokio::test]
async fn append_only_tables_refuse_truncate() {
    let Some(cluster) = cluster_url("append_only_tables_refuse_truncate") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let s = db.storage().await;
    let c = s.client().await.unwrap();
    for table in ["changes", "audit", "audit_checkpoints"] {
        let e = c
            .batch_execute(&format!("TRUNCATE {table}"))
            .await
            .expect_err(table);
        let text = crate::error_chain(&e);
        assert!(text.contains("append-only"), "{table}: {text}");
    }
}

#[tokio::test]
async fn reads_holding_every_pooled_connection_do_not_stop_writes() {
    let Some(cluster) = cluster_url("reads_holding_every_pooled_connection_do_not_stop_writes")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let s = db.storage().await;
    let mut held = Vec::new();
    while s.pool.status().available > 0 || s.pool.status().size < s.pool.status().max_size {
        held.push(s.client().await.unwrap());
    }
    let write = s.create_account(
        coffer_storage::AccountRecord {
            id: coffer_types::AccountId::from_bytes([2; 16]),
            name: "b".into(),
            created: Timestamp::from_unix_micros(1),
            secrets_quota: None,
        },
        &[],
    );
    tokio::time::timeout(std::time::Duration::from_secs(5), write)
        .await
        .expect("the write does not wait for a read connection")
        .unwrap();
    drop(held);
}

/// A write inserting account `n` and appending its `AccountPut`: staged and written, or (with
/// `written` false) staged and never written, as a forgetful operation would.
async fn account_put(w: &mut WriteTx<'_>, n: u8, written: bool) -> Result<()> {
    let id = coffer_types::AccountId::from_bytes([n; 16]);
    w.tx()
        .execute(
            "INSERT INTO accounts (id, name, created) VALUES ($1, $2, 1)",
            &[&id.as_bytes().as_slice(), &format!("a{n}")],
        )
        .await
        .db("insert account")?;
    let change = Change::AccountPut {
        account_id: id,
        name: format!("a{n}"),
    };
    let staged = w.stage(std::slice::from_ref(&change))?;
    if written {
        insert_changes(w.tx(), &staged).await?;
    }
    Ok(())
}

async fn scalar(s: &PgStorage, sql: &str) -> i64 {
    s.client()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

/// A write that stages change-log entries and never inserts them returns `Ok`, but the head
/// row refuses to move past the log: the batch is refused whole (its well-formed writes too),
/// nothing of it is committed, and the next write chains on from the old head with no gap.
/// Whether the entry never written is the batch's last or a later write's entries follow it,
/// and when one write leaves a gap between its own entries.
#[tokio::test]
async fn a_batch_whose_head_entry_was_never_written_is_refused_whole() {
    let Some(cluster) = cluster_url("a_batch_whose_head_entry_was_never_written_is_refused_whole")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let s = db.storage().await;
    account_put_alone(&s, 1).await;
    let head = s.change_head().await.unwrap();
    assert_eq!(head, 1);

    for case in [
        "alone",
        "after a good write",
        "before a good write",
        "a gap in one write",
    ] {
        let hold = s.hold_writer_lock().await;
        let mut queued = Vec::new();
        if case == "after a good write" {
            queued.push(queue(&s, |w| Box::pin(account_put(w, 2, true))).await);
        }
        if case != "a gap in one write" {
            queued.push(queue(&s, |w| Box::pin(account_put(w, 3, false))).await);
        }
        if case == "before a good write" {
            queued.push(queue(&s, |w| Box::pin(account_put(w, 4, true))).await);
        }
        if case == "a gap in one write" {
            queued.push(
                queue(&s, |w| {
                    Box::pin(async move {
                        account_put(w, 5, false).await?;
                        account_put(w, 6, true).await
                    })
                })
                .await,
            );
        }
        hold.finish().await.unwrap();
        for outcome in queued {
            let outcome = outcome.await;
            let e = outcome.expect_err("the batch is refused");
            let text = e.to_string();
            assert!(
                text.contains("not committed") && text.contains("which the log does not hold"),
                "{case}: {text}"
            );
        }
        assert_eq!(s.change_head().await.unwrap(), head, "{case}");
        assert_eq!(scalar(&s, "SELECT count(*) FROM changes").await, 1);
        assert_eq!(scalar(&s, "SELECT count(*) FROM accounts").await, 1);
        assert_eq!(
            scalar(&s, "SELECT seq FROM change_head WHERE id = 1").await,
            1
        );
    }

    // The writer goes on: the next entry is seq 2, chained onto entry 1.
    account_put_alone(&s, 7).await;
    let log = s.changes_after(0, 10).await.unwrap();
    assert_eq!(log.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        log[1].hash,
        ChangeRecord::chain_hash(&log[0].hash, 2, &log[1].payload)
    );
}

/// Queues a write (behind a held writer lock, it waits for the lock's release).
async fn queue<F>(s: &PgStorage, op: F) -> coffer_storage::Pending<()>
where
    F: for<'a, 'c> FnOnce(&'a mut WriteTx<'c>) -> crate::tx::TxFuture<'a, ()> + Send + 'static,
{
    s.queue_write(&[], op).await.unwrap()
}

async fn account_put_alone(s: &PgStorage, n: u8) {
    s.write(&[], move |w| Box::pin(account_put(w, n, true)))
        .await
        .unwrap();
}

/// The guard's other case: a batch whose later write compacts the log through the entry an
/// earlier write of the batch appended holds no entry at its head, which is then the log's base;
/// it commits.
#[tokio::test]
async fn a_batch_that_compacts_through_its_own_last_entry_commits() {
    let Some(cluster) = cluster_url("a_batch_that_compacts_through_its_own_last_entry_commits")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let s = db.storage().await;
    s.ensure_cluster_id().await.unwrap();
    account_put_alone(&s, 1).await;
    let hold = s.hold_writer_lock().await;
    let append = s
        .queue_write(&[], |w| Box::pin(account_put(w, 2, true)))
        .await
        .unwrap();
    let compact = s
        .queue_write(&[], |w| {
            Box::pin(async move {
                let (head, _) = w.head();
                crate::change_log::compact_through(w.tx(), head).await
            })
        })
        .await
        .unwrap();
    hold.finish().await.unwrap();
    append.await.unwrap();
    compact.await.unwrap();
    assert_eq!(s.change_head().await.unwrap(), 2);
    let state = s.log_state().await.unwrap();
    assert_eq!((state.base_seq, state.head_seq), (2, 2));
    assert_eq!(scalar(&s, "SELECT count(*) FROM changes").await, 0);
    account_put_alone(&s, 3).await;
    let log = s.changes_after(2, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].hash,
        ChangeRecord::chain_hash(&state.base_hash, 3, &log[0].payload)
    );
}
