//! The write path beyond the conformance suite: feed signatures (as SQLite's writer makes
//! them), group commit, what a write that fails leaves (nothing), and the writer's counters
//! and observer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coffer_postgres::testing::{TestDatabase, cluster_url};
use coffer_storage::{
    AccountRecord, AuditEntry, ChangeRecord, DekRecord, FeedSignature, FeedSigner, NewSecret,
    SecretRecord, Storage, StorageError, StoreRecord, VersionRecord, WriteObserver, WriteStats,
    checkpoint_message,
};
use coffer_types::{
    AccountId, DekId, Scopes, SecretId, SecretName, StoreId, StoreName, Timestamp, Version,
};

/// A stand-in signer: the "signature" is SHA-256 of the message, twice, so a test can tell
/// exactly what was signed.
#[derive(Debug)]
struct DigestSigner;

impl FeedSigner for DigestSigner {
    fn sign(&self, message: &[u8]) -> [u8; 64] {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(d.as_ref());
        out[32..].copy_from_slice(d.as_ref());
        out
    }
}

fn signed(cluster: &[u8; 16], e: &ChangeRecord) -> FeedSignature {
    FeedSignature {
        seq: e.seq,
        signature: DigestSigner.sign(&checkpoint_message(cluster, e.seq, &e.hash)),
    }
}

fn account(n: u8) -> AccountRecord {
    AccountRecord {
        id: AccountId::from_bytes([n; 16]),
        name: format!("a{n}"),
        created: Timestamp::from_unix_micros(i64::from(n)),
        secrets_quota: None,
    }
}

fn entry(account: AccountId) -> AuditEntry {
    AuditEntry {
        account_id: account,
        at: Timestamp::now(),
        action: "create".into(),
        outcome: "success".into(),
        actor_token: None,
        store_id: None,
        secret_id: None,
        payload: b"{}".to_vec(),
    }
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn each_write_signs_its_last_entry_and_sign_head_covers_older_ones() {
    let Some(cluster_url) =
        cluster_url("each_write_signs_its_last_entry_and_sign_head_covers_older_ones")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster_url).await;
    let s = db.storage().await;
    // Written before the signer and the cluster id exist (as `coffer init` does): unsigned.
    s.create_account(account(1), &[]).await.unwrap();
    let cluster = s.ensure_cluster_id().await.unwrap();
    assert_eq!(s.ensure_cluster_id().await.unwrap(), cluster, "made once");
    assert!(s.set_feed_signer(Arc::new(DigestSigner)));
    assert!(!s.set_feed_signer(Arc::new(DigestSigner)), "set once");
    let (entries, sigs) = s.feed_after(0, 100).await.unwrap();
    assert_eq!((entries.len(), sigs.len()), (1, 0));
    s.sign_head().await.unwrap();
    let (entries, sigs) = s.feed_after(0, 100).await.unwrap();
    assert_eq!(sigs, vec![signed(&cluster, &entries[0])]);
    assert_eq!(s.committed_head(), 1, "signing the head appends nothing");

    s.create_account(account(2), &[]).await.unwrap();
    s.create_account(account(3), &[]).await.unwrap();
    // A write that appends nothing signs nothing.
    s.set_account_quota(account(2).id, Some(3), &[])
        .await
        .unwrap();
    let (entries, sigs) = s.feed_after(0, 100).await.unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(
        sigs,
        entries
            .iter()
            .map(|e| signed(&cluster, e))
            .collect::<Vec<_>>()
    );
    // A page that ends on a signed entry is answered as it is.
    let (page, page_sigs) = s.feed_after(1, 1).await.unwrap();
    assert_eq!(page, vec![entries[1].clone()]);
    assert_eq!(page_sigs, vec![signed(&cluster, &entries[1])]);

    // Another instance with no signer: its writes are unsigned; the log stays one chain.
    let other = db.storage().await;
    other.create_account(account(4), &[]).await.unwrap();
    let (entries, sigs) = s.feed_after(0, 100).await.unwrap();
    assert_eq!(entries.len(), 4);
    assert!(entries[3].follows(&entries[2].hash));
    assert_eq!(sigs.len(), 3);

    // Compaction drops the signatures of the entries it drops.
    s.compact_log(2).await.unwrap();
    let (kept, kept_sigs) = s.feed_after(2, 100).await.unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept_sigs, vec![signed(&cluster, &entries[2])]);
    assert!(matches!(
        s.feed_after(1, 100).await,
        Err(StorageError::Compacted { base: 2 })
    ));
    let state = s.log_state().await.unwrap();
    assert_eq!(
        (
            state.base_seq,
            state.base_hash,
            state.head_seq,
            state.head_hash
        ),
        (2, entries[1].hash, 4, entries[3].hash)
    );
    let rows: i64 = admin(db.url())
        .await
        .query_one("SELECT count(*) FROM change_signatures", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn a_failed_write_leaves_nothing_and_an_unstorable_signature_fails_the_write() {
    let Some(cluster_url) =
        cluster_url("a_failed_write_leaves_nothing_and_an_unstorable_signature_fails_the_write")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster_url).await;
    let s = db.storage().await;
    s.ensure_cluster_id().await.unwrap();
    s.set_feed_signer(Arc::new(DigestSigner));
    let a = account(1);
    s.create_account(a.clone(), &[entry(a.id)]).await.unwrap();
    // A write that fails on its own (a duplicate) appends no entry, no audit, no signature.
    assert!(matches!(
        s.create_account(a.clone(), &[entry(a.id)]).await,
        Err(StorageError::AlreadyExists(_))
    ));
    let (entries, sigs) = s.feed_after(0, 100).await.unwrap();
    assert_eq!((entries.len(), sigs.len()), (1, 1));
    assert_eq!(s.audit_head(a.id).await.unwrap().unwrap().0, 1);

    // A signature the database refuses fails the whole write.
    admin(db.url())
        .await
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
             CREATE TRIGGER no_signatures BEFORE INSERT ON change_signatures
                 FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    let b = account(2);
    assert!(matches!(
        s.create_account(b.clone(), &[entry(b.id)]).await,
        Err(StorageError::Unavailable(_))
    ));
    assert!(s.get_account(b.id).await.unwrap().is_none());
    assert_eq!(s.feed_after(0, 100).await.unwrap().0.len(), 1);
    assert_eq!(s.change_head().await.unwrap(), 1);
    assert_eq!(s.committed_head(), 1);
    assert!(s.audit_head(b.id).await.unwrap().is_none());
    // The write path is not wedged: a write that needs no signature still goes through.
    s.append_audit(&[entry(b.id)]).await.unwrap();
    assert_eq!(s.audit_head(b.id).await.unwrap().unwrap().0, 1);
}

#[derive(Debug, Default)]
struct Seen {
    committed: AtomicUsize,
    failed: AtomicUsize,
}

impl WriteObserver for Seen {
    fn committed(&self, jobs: usize, _took: Duration) {
        self.committed.fetch_add(jobs, Ordering::Relaxed);
    }
    fn failed(&self, jobs: usize) {
        self.failed.fetch_add(jobs, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn write_stats_and_the_observer_count_commits_and_audit_entries() {
    let Some(cluster_url) =
        cluster_url("write_stats_and_the_observer_count_commits_and_audit_entries")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster_url).await;
    let s = db.storage().await;
    let seen = Arc::new(Seen::default());
    assert!(s.set_write_observer(Arc::clone(&seen) as Arc<dyn WriteObserver>));
    assert!(!s.set_write_observer(Arc::new(Seen::default())), "set once");
    let a = account(1);
    s.create_account(a.clone(), &[entry(a.id), entry(a.id)])
        .await
        .unwrap();
    s.append_audit(&[entry(a.id)]).await.unwrap();
    // Refused by the operation itself: a job, not a commit, no audit written.
    assert!(s.create_account(a.clone(), &[entry(a.id)]).await.is_err());
    // Refused before anything is begun (an entry without an action).
    let mut bad = entry(a.id);
    bad.action.clear();
    assert!(matches!(
        s.append_audit(&[bad]).await,
        Err(StorageError::Invalid(_))
    ));
    assert_eq!(
        s.write_stats(),
        WriteStats {
            commits: 2,
            jobs: 3,
            audit_entries: 3,
            audit_failures: 0,
        }
    );
    assert_eq!(seen.committed.load(Ordering::Relaxed), 2);
    assert_eq!(seen.failed.load(Ordering::Relaxed), 0);

    // A write that cannot commit (the database refuses the head's move) is a failure the
    // observer hears of, with its audit entries counted as not written.
    admin(db.url())
        .await
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
             CREATE TRIGGER no_head BEFORE UPDATE ON change_head
                 FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    let b = account(2);
    assert!(s.create_account(b.clone(), &[entry(b.id)]).await.is_err());
    assert_eq!(seen.failed.load(Ordering::Relaxed), 1);
    assert_eq!(s.write_stats().audit_failures, 1);
    assert!(s.get_account(b.id).await.unwrap().is_none());

    // Entries a write's operation appends itself (append_audit), refused by the database, are
    // counted as not written too.
    admin(db.url())
        .await
        .batch_execute(
            "DROP TRIGGER no_head ON change_head;
             CREATE TRIGGER no_audit BEFORE INSERT ON audit
                 FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    assert!(s.append_audit(&[entry(a.id), entry(a.id)]).await.is_err());
    assert_eq!(s.write_stats().audit_failures, 3);
}

/// Writes queued while the writer is busy share one transaction (group commit): one COMMIT,
/// one signature over the batch's last entry; a write of the batch that fails is rolled back
/// alone and the others commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_writes_share_a_commit_and_fail_alone() {
    let Some(cluster_url) = cluster_url("queued_writes_share_a_commit_and_fail_alone") else {
        return;
    };
    let db = TestDatabase::create(&cluster_url).await;
    let s = Arc::new(db.storage().await);
    // Set first: the writer tells the observer after answering, so one set right after a
    // write may or may not hear of it.
    let seen = Arc::new(SeenSizes::default());
    s.set_write_observer(Arc::clone(&seen) as Arc<dyn WriteObserver>);
    let cluster = s.ensure_cluster_id().await.unwrap();
    s.set_feed_signer(Arc::new(DigestSigner));
    let a1 = account(1);
    s.create_account(a1.clone(), &[]).await.unwrap();
    let before = s.write_stats();

    let hold = s.hold_writer_lock().await;
    let mut writes = Vec::new();
    // In this order: 2, 3, a duplicate of 1 (fails alone), 4, 5, each with an audit entry.
    for n in [2u8, 3, 1, 4, 5] {
        let writer = Arc::clone(&s);
        let queued = s.queued_writes();
        writes.push(tokio::spawn(async move {
            let a = account(n);
            writer.create_account(a.clone(), &[entry(a.id)]).await
        }));
        wait_until_queued(&s, queued).await;
    }
    hold.finish().await.unwrap();
    let mut results = Vec::new();
    for w in writes {
        results.push(w.await.unwrap());
    }
    assert!(
        matches!(results[2], Err(StorageError::AlreadyExists(_))),
        "{results:?}"
    );
    assert!(
        results.iter().enumerate().all(|(i, r)| i == 2 || r.is_ok()),
        "{results:?}"
    );

    let after = s.write_stats();
    assert_eq!(
        after.commits - before.commits,
        2,
        "the hold's and the batch's"
    );
    assert_eq!(after.jobs - before.jobs, 6);
    assert_eq!(after.audit_entries - before.audit_entries, 4);
    // The cluster id's, a1's, the hold's and the batch's (told after the answers: wait).
    tokio::time::timeout(Duration::from_secs(5), async {
        while seen.committed.lock().unwrap().len() < 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the observer hears of every commit");
    assert_eq!(*seen.committed.lock().unwrap(), vec![1, 1, 1, 4]);

    let (entries, sigs) = s.feed_after(1, 100).await.unwrap();
    let names: Vec<String> = entries
        .iter()
        .map(|e| match e.change().unwrap() {
            coffer_storage::Change::AccountPut { name, .. } => name,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["a2", "a3", "a4", "a5"], "in the order queued");
    assert_eq!(
        sigs,
        vec![signed(&cluster, &entries[3])],
        "one signature per batch"
    );
    for n in [2u8, 3, 4, 5] {
        assert_eq!(s.audit_head(account(n).id).await.unwrap().unwrap().0, 1);
    }
    assert!(
        s.audit_head(a1.id).await.unwrap().is_none(),
        "the failed write's entry is gone"
    );
    assert_eq!(s.committed_head(), 5);
}

#[derive(Debug, Default)]
struct SeenSizes {
    committed: std::sync::Mutex<Vec<usize>>,
}

impl WriteObserver for SeenSizes {
    fn committed(&self, jobs: usize, _took: Duration) {
        self.committed.lock().unwrap().push(jobs);
    }
    fn failed(&self, _jobs: usize) {}
}

/// A batch that appends many entries is signed between its jobs too (every 256 entries), not
/// only at its end, so a feed answer never runs far past its budget for a signed entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_batch_is_signed_between_jobs_too() {
    let Some(cluster_url) = cluster_url("a_long_batch_is_signed_between_jobs_too") else {
        return;
    };
    let db = TestDatabase::create(&cluster_url).await;
    let s = Arc::new(db.storage().await);
    let cluster = s.ensure_cluster_id().await.unwrap();
    s.set_feed_signer(Arc::new(DigestSigner));
    let a = account(1);
    s.create_account(a.clone(), &[]).await.unwrap();
    let dek = DekId::from_bytes([9; 16]);
    s.put_dek(DekRecord {
        account_id: a.id,
        key: coffer_storage::WrappedKeyRecord {
            id: dek,
            kek_id: "kek-1".into(),
            wrapped: vec![1; 40],
            created: Timestamp::from_unix_micros(1),
        },
        rk: None,
    })
    .await
    .unwrap();
    let store = StoreId::from_bytes([8; 16]);
    s.create_store(
        StoreRecord {
            id: store,
            account_id: a.id,
            name: StoreName::parse("prod").unwrap(),
            created: Timestamp::from_unix_micros(2),
            modified: Timestamp::from_unix_micros(2),
        },
        10,
        &[],
    )
    .await
    .unwrap();
    let base = s.change_head().await.unwrap();

    let hold = s.hold_writer_lock().await;
    let mut writes = Vec::new();
    for job in 0..3u32 {
        let secrets: Vec<NewSecret> = (0..200u32)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&job.to_be_bytes());
                id[4..8].copy_from_slice(&i.to_be_bytes());
                id[15] = 1;
                let id = SecretId::from_bytes(id);
                NewSecret {
                    record: SecretRecord {
                        id,
                        store_id: store,
                        account_id: a.id,
                        name: SecretName::parse(&format!("S{job}_{i}")).unwrap(),
                        comment: String::new(),
                        scopes: Scopes::default(),
                        created: Timestamp::from_unix_micros(3),
                        modified: Timestamp::from_unix_micros(3),
                        version: Version::FIRST,
                    },
                    value: VersionRecord {
                        secret_id: id,
                        version: Version::FIRST,
                        dek_id: dek,
                        sealed: b"sealed".to_vec(),
                        created: Timestamp::from_unix_micros(3),
                    },
                    dek: None,
                }
            })
            .collect();
        let writer = Arc::clone(&s);
        let queued = s.queued_writes();
        writes.push(tokio::spawn(async move {
            writer
                .create_secrets(a.id, store, secrets, 10_000, &[])
                .await
        }));
        wait_until_queued(&s, queued).await;
    }
    hold.finish().await.unwrap();
    for w in writes {
        w.await.unwrap().unwrap();
    }
    let (entries, sigs) = s.feed_after(base, 1000).await.unwrap();
    assert_eq!(entries.len(), 600);
    assert_eq!(
        sigs.iter().map(|s| s.seq - base).collect::<Vec<_>>(),
        vec![400, 600],
        "between the jobs once 256 entries went by, and at the batch's end"
    );
    for sig in &sigs {
        let e = &entries[usize::try_from(sig.seq - base - 1).unwrap()];
        assert_eq!(*sig, signed(&cluster, e));
    }
}

/// Waits (at most 10 s) until the writer's queue holds more than `queued` writes.
async fn wait_until_queued(s: &coffer_postgres::PgStorage, queued: usize) {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while s.queued_writes() == queued {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the write is queued within 10 s");
}
