//! Several instances on one database: writes serialised across them (the change log gap-free
//! and chained in commit order, each account's audit chain one chain, names unique and quotas
//! held), and each instance's `committed_head` following the others' commits.

use std::sync::Arc;
use std::time::Duration;

use coffer_postgres::testing::{TestDatabase, cluster_url};
use coffer_storage::{
    AccountRecord, AuditEntry, AuditRecord, ChangeRecord, DekRecord, NewSecret, SecretRecord,
    Storage, StorageError, StoreRecord, VersionRecord, WrappedKeyRecord,
};
use coffer_types::{
    AccountId, DekId, Scopes, SecretId, SecretName, StoreId, StoreName, Timestamp, Version,
};

fn account(n: u64) -> AccountRecord {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8] = 0xa5;
    AccountRecord {
        id: AccountId::from_bytes(id),
        name: format!("account {n}"),
        created: Timestamp::from_unix_micros(1_700_000_000_000_000 + n as i64),
        secrets_quota: None,
    }
}

fn entry(account: AccountId, n: u64) -> AuditEntry {
    AuditEntry {
        account_id: account,
        at: Timestamp::now(),
        action: "test".into(),
        outcome: "success".into(),
        actor_token: None,
        store_id: None,
        secret_id: None,
        payload: format!("{{\"n\":{n}}}").into_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_two_instances_keep_one_log_and_one_audit_chain() {
    let Some(cluster) =
        cluster_url("concurrent_writers_on_two_instances_keep_one_log_and_one_audit_chain")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let a: Arc<dyn Storage> = Arc::new(db.storage().await);
    let b: Arc<dyn Storage> = Arc::new(db.storage().await);
    let shared = AccountId::from_bytes([0x5a; 16]);

    const WRITERS: u64 = 8;
    const EACH: u64 = 10;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let storage = Arc::clone(if w % 2 == 0 { &a } else { &b });
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let n = w * EACH + i;
                // One change entry and one audit entry of the shared chain per write, plus
                // audit-only writes in between.
                storage
                    .create_account(account(n), &[entry(shared, n)])
                    .await
                    .unwrap();
                storage.append_audit(&[entry(shared, n)]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let total = WRITERS * EACH;
    // The log: seq 1..=total, each entry chained onto the one before, read from either.
    let log = a.changes_after(0, usize::MAX).await.unwrap();
    assert_eq!(log.len() as u64, total);
    let mut prev = ChangeRecord::GENESIS_HASH;
    for (i, record) in log.iter().enumerate() {
        assert_eq!(record.seq, i as u64 + 1);
        assert!(
            record.follows(&prev),
            "entry {} breaks the chain",
            record.seq
        );
        prev = record.hash;
    }
    assert_eq!(b.changes_after(0, usize::MAX).await.unwrap(), log);
    assert_eq!(a.change_head().await.unwrap(), total);
    assert_eq!(b.change_head().await.unwrap(), total);

    // The shared account's audit chain: 1..=2*total, gap-free, every hash right.
    let chain = b.audit_entries(shared, 0, usize::MAX).await.unwrap();
    assert_eq!(chain.len() as u64, 2 * total);
    let mut prev = AuditRecord::GENESIS_HASH;
    for (i, record) in chain.iter().enumerate() {
        assert_eq!(record.seq, i as u64 + 1);
        assert_eq!(record.prev_hash, prev, "audit entry {}", record.seq);
        assert!(record.hash_matches(), "audit entry {}", record.seq);
        prev = record.hash;
    }
    assert_eq!(a.audit_head(shared).await.unwrap(), Some((2 * total, prev)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_head_follows_another_instances_commits() {
    let Some(cluster) = cluster_url("committed_head_follows_another_instances_commits") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let a = db.storage().await;
    let b = db.storage().await;
    let mut head_b = b.subscribe_head();
    assert_eq!(b.committed_head(), 0);

    for n in 1..=3u64 {
        a.create_account(account(n), &[]).await.unwrap();
        assert_eq!(
            a.committed_head(),
            n,
            "the writer's own head moves before the ack"
        );
        tokio::time::timeout(Duration::from_secs(1), async {
            while *head_b.borrow_and_update() < n {
                head_b.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("instance b did not see seq {n} within 1 s"));
        assert_eq!(b.committed_head(), n);
    }

    // A write that appends nothing to the log announces nothing.
    a.set_account_quota(account(1).id, Some(5), &[])
        .await
        .unwrap();
    b.append_audit(&[entry(account(1).id, 0)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!head_b.has_changed().unwrap());
    assert_eq!(b.committed_head(), 3);

    // And the other way round.
    let mut head_a = a.subscribe_head();
    b.create_account(account(4), &[]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), head_a.wait_for(|seq| *seq >= 4))
        .await
        .expect("instance a sees b's commit within 1 s")
        .unwrap();
    assert_eq!(a.committed_head(), 4);
}

/// A notification is only a wake-up: a forged payload (any role that can connect can NOTIFY)
/// does not move `committed_head`, which keeps following the head row; and a head that moved
/// without a notification (one lost: a pooler, a half-open socket) is seen by the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_head_follows_the_head_row_not_notification_payloads() {
    let Some(cluster) =
        cluster_url("committed_head_follows_the_head_row_not_notification_payloads")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let a = db.storage().await;
    let b = db.storage().await;
    let (admin, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);

    admin
        .batch_execute("NOTIFY coffer_head, '18446744073709551615'; NOTIFY coffer_head, '1000'")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.committed_head(), 0, "a forged payload moved the head");

    // Real commits are still followed.
    a.create_account(account(1), &[]).await.unwrap();
    let mut head_b = b.subscribe_head();
    tokio::time::timeout(Duration::from_secs(2), head_b.wait_for(|seq| *seq >= 1))
        .await
        .expect("instance b sees a's commit")
        .unwrap();
    assert_eq!(b.committed_head(), 1);

    // The head row moves with no notification at all: the poll finds it.
    admin
        .batch_execute("UPDATE change_head SET seq = 7 WHERE id = 1")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(3), head_b.wait_for(|seq| *seq >= 7))
        .await
        .expect("instance b polls the head row without a notification")
        .unwrap();
    assert_eq!(b.committed_head(), 7);
}

/// Names stay unique and quotas hold when the creates race on different instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_and_quotas_hold_across_instances() {
    let Some(cluster) = cluster_url("names_and_quotas_hold_across_instances") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let a: Arc<dyn Storage> = Arc::new(db.storage().await);
    let b: Arc<dyn Storage> = Arc::new(db.storage().await);
    let acct = account(1);
    a.create_account(acct.clone(), &[]).await.unwrap();
    let dek = DekId::from_bytes([7; 16]);
    a.put_dek(DekRecord {
        account_id: acct.id,
        key: WrappedKeyRecord {
            id: dek,
            kek_id: "kek-1".into(),
            wrapped: vec![1; 40],
            created: Timestamp::from_unix_micros(1),
        },
        rk: None,
    })
    .await
    .unwrap();

    // One store name, created on both instances at once, many times over: one wins each time.
    let mut racers = Vec::new();
    for n in 0..8u8 {
        let storage = Arc::clone(if n % 2 == 0 { &a } else { &b });
        racers.push(tokio::spawn(async move {
            storage
                .create_store(
                    StoreRecord {
                        id: StoreId::from_bytes([n + 1; 16]),
                        account_id: acct.id,
                        name: StoreName::parse("shared").unwrap(),
                        created: Timestamp::from_unix_micros(10),
                        modified: Timestamp::from_unix_micros(10),
                    },
                    100,
                    &[],
                )
                .await
        }));
    }
    let mut won = Vec::new();
    for (n, r) in racers.into_iter().enumerate() {
        match r.await.unwrap() {
            Ok(()) => won.push(n),
            Err(StorageError::NameTaken { .. }) => {}
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one create of the name wins: {won:?}");
    let store = StoreId::from_bytes([won[0] as u8 + 1; 16]);

    // Secrets created on both instances against a quota of 10: never more than 10 stored.
    const QUOTA: u64 = 10;
    let mut creators = Vec::new();
    for n in 0..24u32 {
        let storage = Arc::clone(if n % 2 == 0 { &a } else { &b });
        creators.push(tokio::spawn(async move {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&n.to_be_bytes());
            id[15] = 0x51;
            let id = SecretId::from_bytes(id);
            let record = SecretRecord {
                id,
                store_id: store,
                account_id: acct.id,
                name: SecretName::parse(&format!("S{n}")).unwrap(),
                comment: String::new(),
                scopes: Scopes::default(),
                created: Timestamp::from_unix_micros(20),
                modified: Timestamp::from_unix_micros(20),
                version: Version::FIRST,
            };
            let value = VersionRecord {
                secret_id: id,
                version: Version::FIRST,
                dek_id: dek,
                sealed: b"sealed".to_vec(),
                created: Timestamp::from_unix_micros(20),
            };
            storage
                .create_secrets(
                    acct.id,
                    store,
                    vec![NewSecret {
                        record,
                        value,
                        dek: None,
                    }],
                    QUOTA,
                    &[],
                )
                .await
        }));
    }
    let mut created = 0;
    for c in creators {
        match c.await.unwrap() {
            Ok(()) => created += 1,
            Err(StorageError::QuotaExceeded { .. }) => {}
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!(created, QUOTA);
    assert_eq!(a.secret_count(acct.id).await.unwrap(), QUOTA);
    assert_eq!(b.secret_count(acct.id).await.unwrap(), QUOTA);
}
