//! Writer behaviour that needs the internals: holding the writer to force jobs into one batch,
//! and failures (a rolled-back job, a failed COMMIT, a panic) in the middle of a batch.

use std::sync::Arc;
use std::time::Duration;

use coffer_types::{AccountId, Timestamp};
use tokio::task::JoinSet;

use super::SqliteStorage;
use super::codec::DbResultExt;
use crate::{AccountRecord, ChangeRecord, Entity, Storage, StorageError};

fn account(n: u8) -> AccountRecord {
    AccountRecord {
        id: AccountId::from_bytes([n; 16]),
        name: format!("account {n}"),
        created: Timestamp::from_unix_micros(i64::from(n)),
        secrets_quota: None,
    }
}

fn open() -> (tempfile::TempDir, Arc<SqliteStorage>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(&dir.path().join("db.sqlite")).unwrap();
    (dir, Arc::new(storage))
}

/// Holds the writer thread inside a job until the returned sender is used (or dropped), so
/// that whatever is submitted meanwhile is queued and then taken as one batch.
async fn hold_writer(
    s: &Arc<SqliteStorage>,
) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let s = Arc::clone(s);
    let held = tokio::spawn(async move {
        s.writer
            .run(move |_| {
                let _ = started_tx.send(());
                // Blocking is fine here: this runs on the writer thread, not the runtime.
                let _ = release_rx.recv();
                Ok(())
            })
            .await
            .unwrap();
    });
    started_rx.await.unwrap();
    (release_tx, held)
}

async fn wait_until_queued(s: &SqliteStorage, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while s.writer.queued() < n {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("jobs were not queued in time");
}

fn assert_chain(log: &[ChangeRecord]) {
    let mut prev = ChangeRecord::GENESIS_HASH;
    for (i, record) in log.iter().enumerate() {
        assert_eq!(record.seq, i as u64 + 1);
        assert!(
            record.follows(&prev),
            "change {} breaks the chain",
            record.seq
        );
        prev = record.hash;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_share_one_commit() {
    let (_dir, s) = open();
    let (release, held) = hold_writer(&s).await;
    let before = s.write_stats();
    let mut tasks = JoinSet::new();
    for n in 0..40 {
        let s = Arc::clone(&s);
        tasks.spawn(async move { s.create_account(account(n), &[]).await });
    }
    wait_until_queued(&s, 40).await;
    release.send(()).unwrap();
    held.await.unwrap();
    for result in tasks.join_all().await {
        result.unwrap();
    }
    let after = s.write_stats();
    // The holding job was counted when it started, before `before` was taken.
    assert_eq!(after.jobs - before.jobs, 40);
    assert_eq!(
        after.commits - before.commits,
        2,
        "one commit for the holding job, one for the 40 queued jobs"
    );
    let log = s.changes_after(0, 100).await.unwrap();
    assert_eq!(log.len(), 40);
    assert_chain(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_rolls_back_alone_within_its_batch() {
    let (_dir, s) = open();
    s.create_account(account(1), &[]).await.unwrap();
    let (release, held) = hold_writer(&s).await;
    // Submitted in order, so the batch is: new, duplicate (fails after nothing), new.
    let mut handles = Vec::new();
    for (i, n) in [2u8, 1, 3].into_iter().enumerate() {
        let s2 = Arc::clone(&s);
        handles.push(tokio::spawn(async move {
            s2.create_account(account(n), &[]).await
        }));
        wait_until_queued(&s, i + 1).await;
    }
    // A job that appends a change and then fails: its seq must be given back.
    let s2 = Arc::clone(&s);
    let appending = tokio::spawn(async move {
        s2.writer
            .run(|cx| {
                cx.append(&crate::Change::AccountPut {
                    account_id: AccountId::from_bytes([9; 16]),
                    name: "ghost".into(),
                })?;
                Err::<(), _>(StorageError::Conflict)
            })
            .await
    });
    wait_until_queued(&s, 4).await;
    let s2 = Arc::clone(&s);
    let last = tokio::spawn(async move { s2.create_account(account(4), &[]).await });
    wait_until_queued(&s, 5).await;
    let before = s.write_stats();
    release.send(()).unwrap();
    held.await.unwrap();

    let results: Vec<_> = futures_join(handles).await;
    assert!(results[0].is_ok());
    assert!(matches!(
        results[1],
        Err(StorageError::AlreadyExists(Entity::Account))
    ));
    assert!(results[2].is_ok());
    assert!(matches!(
        appending.await.unwrap(),
        Err(StorageError::Conflict)
    ));
    last.await.unwrap().unwrap();
    assert_eq!(
        s.write_stats().commits - before.commits,
        2,
        "the held job's, then one batch"
    );

    let log = s.changes_after(0, 100).await.unwrap();
    assert_chain(&log);
    let names: Vec<String> = log
        .iter()
        .map(|r| match r.change().unwrap() {
            crate::Change::AccountPut { name, .. } => name,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["account 1", "account 2", "account 3", "account 4"]);
}

async fn futures_join<T: Send + 'static>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_the_batch_and_keeps_the_head() {
    let (_dir, s) = open();
    s.create_account(account(1), &[]).await.unwrap();
    let (release, held) = hold_writer(&s).await;
    let s2 = Arc::clone(&s);
    let innocent = tokio::spawn(async move { s2.create_account(account(2), &[]).await });
    wait_until_queued(&s, 1).await;
    // A foreign-key violation deferred to COMMIT: the job itself succeeds, the COMMIT fails.
    let s2 = Arc::clone(&s);
    let poison = tokio::spawn(async move {
        s2.writer
            .run(|cx| {
                cx.conn
                    .execute_batch(
                        "PRAGMA defer_foreign_keys = ON;
                         INSERT INTO deks (id, account_id, kek_id, wrapped, created)
                         VALUES (zeroblob(16), x'ffffffffffffffffffffffffffffffff', 'k', x'00', 0);",
                    )
                    .db("test")
            })
            .await
    });
    wait_until_queued(&s, 2).await;
    release.send(()).unwrap();
    held.await.unwrap();

    let innocent = innocent.await.unwrap();
    let poison = poison.await.unwrap();
    assert!(
        matches!(innocent, Err(StorageError::Unavailable(_))),
        "{innocent:?}"
    );
    assert!(
        matches!(poison, Err(StorageError::Unavailable(_))),
        "{poison:?}"
    );
    assert_eq!(s.get_account(account(2).id).await.unwrap(), None);
    assert_eq!(
        s.change_head().await.unwrap(),
        1,
        "nothing of the failed batch is logged"
    );

    // The writer recovers: the next write gets seq 2, chained onto seq 1.
    s.create_account(account(2), &[]).await.unwrap();
    let log = s.changes_after(0, 100).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_chain(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_fails_alone_and_the_writer_lives_on() {
    let (_dir, s) = open();
    let result = s
        .writer
        .run(|cx| -> crate::Result<()> {
            cx.append(&crate::Change::AccountPut {
                account_id: AccountId::from_bytes([7; 16]),
                name: "half-done".into(),
            })?;
            panic!("bug in a write operation");
        })
        .await;
    assert!(
        matches!(result, Err(StorageError::Unavailable(_))),
        "{result:?}"
    );
    s.create_account(account(1), &[]).await.unwrap();
    let log = s.changes_after(0, 100).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_chain(&log);
}

/// Shutdown through a shared handle: writes queued before it all commit, it returns only once
/// the writer has stopped, and later writes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_through_a_shared_handle_drains_the_queue() {
    let (_dir, s) = open();
    let (release, held) = hold_writer(&s).await;
    let mut tasks = JoinSet::new();
    for n in 0..10 {
        let s = Arc::clone(&s);
        tasks.spawn(async move { s.create_account(account(n), &[]).await });
    }
    wait_until_queued(&s, 10).await;
    let storage: Arc<dyn Storage> = s.clone();
    let shutdown = tokio::spawn(async move { storage.shutdown().await });
    // The writer is held inside a job, so the shutdown cannot have finished.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!shutdown.is_finished(), "shutdown waits for the writer");
    release.send(()).unwrap();
    held.await.unwrap();
    shutdown.await.unwrap();
    for result in tasks.join_all().await {
        result.unwrap();
    }
    assert_eq!(s.writer.queued(), 0);
    let err = s.create_account(account(99), &[]).await.unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    // Reads have their own connections and go on working.
    assert_eq!(s.list_accounts().await.unwrap().len(), 10);
    assert_eq!(s.change_head().await.unwrap(), 10);
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_queued_writes() {
    let (_dir, s) = open();
    let mut tasks = JoinSet::new();
    for n in 0..20 {
        let s = Arc::clone(&s);
        tasks.spawn(async move { s.create_account(account(n), &[]).await });
    }
    for r in tasks.join_all().await {
        r.unwrap();
    }
    let path = s.path().to_owned();
    let s = Arc::into_inner(s).expect("no other handle is left");
    s.close().await;
    let s = SqliteStorage::open(&path).unwrap();
    assert_eq!(s.list_accounts().await.unwrap().len(), 20);
}

// ---- signed checkpoints ----

/// A stand-in signer: the "signature" is SHA-256 of the message, twice, so a test can tell
/// exactly what was signed.
#[derive(Debug)]
struct DigestSigner;

impl crate::FeedSigner for DigestSigner {
    fn sign(&self, message: &[u8]) -> [u8; 64] {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(d.as_ref());
        out[32..].copy_from_slice(d.as_ref());
        out
    }
}

fn signed_by_digest(cluster: &[u8; 16], e: &ChangeRecord) -> crate::FeedSignature {
    use crate::FeedSigner as _;
    crate::FeedSignature {
        seq: e.seq,
        signature: DigestSigner.sign(&crate::checkpoint_message(cluster, e.seq, &e.hash)),
    }
}

#[tokio::test]
async fn each_committed_batch_signs_its_last_entry_once() {
    let (_dir, s) = open();
    // Written before the signer and the cluster id exist (as `coffer init` does): unsigned.
    s.create_account(account(1), &[]).await.unwrap();
    let cluster = s.ensure_cluster_id().await.unwrap();
    assert!(s.set_feed_signer(Arc::new(DigestSigner)));
    assert!(!s.set_feed_signer(Arc::new(DigestSigner)), "set once");
    let (entries, sigs) = s.feed_after(0, 100).await.unwrap();
    assert_eq!((entries.len(), sigs.len()), (1, 0));
    // Signing the head at start covers it.
    s.sign_head().await.unwrap();
    let (entries, sigs) = s.feed_after(0, 100).await.unwrap();
    assert_eq!(sigs, vec![signed_by_digest(&cluster, &entries[0])]);

    // Three writes in one group commit: one signature, over the last of their entries.
    let (release, held) = hold_writer(&s).await;
    let mut tasks = JoinSet::new();
    for n in 2..=4 {
        let s = Arc::clone(&s);
        tasks.spawn(async move { s.create_account(account(n), &[]).await });
    }
    wait_until_queued(&s, 3).await;
    release.send(()).unwrap();
    held.await.unwrap();
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    // A write on its own: its own signature.
    s.create_account(account(5), &[]).await.unwrap();
    let (entries, sigs) = s.feed_after(0, 100).await.unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(
        sigs,
        vec![
            signed_by_digest(&cluster, &entries[0]),
            signed_by_digest(&cluster, &entries[3]),
            signed_by_digest(&cluster, &entries[4]),
        ]
    );
    // An answer cut inside the group commit goes on to its signed entry.
    let (cut, cut_sigs) = s.feed_after(1, 1).await.unwrap();
    assert_eq!(cut.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
    assert_eq!(cut_sigs, vec![signed_by_digest(&cluster, &entries[3])]);

    // Compaction drops the signatures of the entries it drops, and keeps the others.
    s.compact_log(4).await.unwrap();
    let (kept, kept_sigs) = s.feed_after(4, 100).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept_sigs, vec![signed_by_digest(&cluster, &entries[4])]);
    let rows: i64 = s
        .writer
        .run(|cx| {
            cx.conn
                .query_row("SELECT count(*) FROM change_signatures", [], |r| r.get(0))
                .db("count")
        })
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

/// A batch of many jobs gets a checkpoint every `SIGN_EVERY_ENTRIES` (4 in tests) entries
/// between jobs, and one at its end, so a feed answer never has to run far past its budget to
/// end on a signed entry.
#[tokio::test]
async fn a_long_batch_is_signed_between_jobs_too() {
    let (_dir, s) = open();
    s.create_account(account(1), &[]).await.unwrap();
    let cluster = s.ensure_cluster_id().await.unwrap();
    s.set_feed_signer(Arc::new(DigestSigner));
    s.sign_head().await.unwrap();
    let (release, held) = hold_writer(&s).await;
    let mut tasks = JoinSet::new();
    for n in 2..=11 {
        let writer = Arc::clone(&s);
        tasks.spawn(async move { writer.create_account(account(n), &[]).await });
        // One at a time into the queue, so that the batch runs them in this order.
        wait_until_queued(&s, usize::from(n - 1)).await;
    }
    release.send(()).unwrap();
    held.await.unwrap();
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let (entries, sigs) = s.feed_after(0, 100).await.unwrap();
    assert_eq!(entries.len(), 11);
    let signed: Vec<u64> = sigs.iter().map(|s| s.seq).collect();
    assert_eq!(
        signed,
        vec![1, 5, 9, 11],
        "the head at start, every 4 entries, the batch's end"
    );
    for s in &sigs {
        let e = &entries[usize::try_from(s.seq).unwrap() - 1];
        assert_eq!(*s, signed_by_digest(&cluster, e));
    }
}

#[tokio::test]
async fn a_write_whose_job_fails_signs_nothing_and_a_failed_signature_commits_nothing() {
    let (_dir, s) = open();
    s.ensure_cluster_id().await.unwrap();
    s.set_feed_signer(Arc::new(DigestSigner));
    s.create_account(account(1), &[]).await.unwrap();
    // A job that fails alone (a duplicate) appends nothing and adds no signature.
    assert!(s.create_account(account(1), &[]).await.is_err());
    let (entries, sigs) = s.feed_after(0, 100).await.unwrap();
    assert_eq!((entries.len(), sigs.len()), (1, 1));
    // A signature that cannot be stored (the table made to refuse it) fails the batch whole.
    s.writer
        .run(|cx| {
            cx.conn
                .execute_batch(
                    "CREATE TRIGGER no_signatures BEFORE INSERT ON change_signatures
                     BEGIN SELECT RAISE(ABORT, 'refused'); END;",
                )
                .db("trigger")
        })
        .await
        .unwrap();
    assert!(s.create_account(account(2), &[]).await.is_err());
    assert!(s.get_account(account(2).id).await.unwrap().is_none());
    assert_eq!(s.feed_after(0, 100).await.unwrap().0.len(), 1);
}

#[derive(Debug, Default)]
struct SeenCommits {
    committed: std::sync::Mutex<Vec<usize>>,
    failed: std::sync::atomic::AtomicUsize,
}

impl crate::WriteObserver for SeenCommits {
    fn committed(&self, jobs: usize, _took: Duration) {
        self.committed.lock().unwrap().push(jobs);
    }

    fn failed(&self, _jobs: usize) {
        self.failed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn audit_entry(action: &str) -> crate::AuditEntry {
    crate::AuditEntry {
        account_id: AccountId::from_bytes([7; 16]),
        at: Timestamp::from_unix_micros(1),
        action: action.to_owned(),
        outcome: "success".to_owned(),
        actor_token: None,
        store_id: None,
        secret_id: None,
        payload: b"{}".to_vec(),
    }
}

/// Audit entries are counted once committed; when the database refuses one, every entry of
/// that append is counted as a failure (and its write fails); the observer hears of every group commit.
#[tokio::test]
async fn audit_entries_and_commits_are_counted() {
    let (_dir, s) = open();
    let seen = Arc::new(SeenCommits::default());
    assert!(s.set_write_observer(seen.clone()));
    assert!(!s.set_write_observer(seen.clone()), "set once");

    s.append_audit(&[audit_entry("create"), audit_entry("update")])
        .await
        .unwrap();
    let stats = Storage::write_stats(&*s);
    assert_eq!((stats.audit_entries, stats.audit_failures), (2, 0));
    // The observer is told after the answers (on the writer thread): wait for it, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen.committed.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(*seen.committed.lock().unwrap(), vec![1]);

    // The database refuses the next insert (as a full disk would).
    s.writer
        .run(|cx| {
            cx.conn
                .execute_batch(
                    "CREATE TEMP TRIGGER refuse BEFORE INSERT ON audit
                     BEGIN SELECT RAISE(ABORT, 'refused'); END",
                )
                .db("trigger")
        })
        .await
        .unwrap();
    // Both entries of the refused append are lost, and counted.
    assert!(
        s.append_audit(&[audit_entry("delete"), audit_entry("purge")])
            .await
            .is_err()
    );
    let stats = Storage::write_stats(&*s);
    assert_eq!((stats.audit_entries, stats.audit_failures), (2, 2));
    s.writer
        .run(|cx| cx.conn.execute_batch("DROP TRIGGER refuse").db("trigger"))
        .await
        .unwrap();
    s.append_audit(&[audit_entry("delete")]).await.unwrap();
    assert_eq!(Storage::write_stats(&*s).audit_entries, 3);
    assert_eq!(seen.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
}
