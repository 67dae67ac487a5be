//! The PostgreSQL side of keys, the DEK lifecycle and snapshots, beyond the conformance suite:
//! a snapshot taken while another instance writes is exactly the state at its header's log
//! position, and destroyed DEKs leave the log at the next compaction (the database finds the
//! entries that carry them).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coffer_postgres::testing::{TestDatabase, cluster_url};
use coffer_storage::{
    AccountRecord, Change, DekRecord, SnapshotPart, Storage, StorageError, WrappedKeyRecord,
};
use coffer_types::{AccountId, DekId, Timestamp};
use tokio::sync::mpsc;

fn account(byte: u8) -> AccountRecord {
    AccountRecord {
        id: AccountId::from_bytes([byte; 16]),
        name: format!("account {byte}"),
        created: Timestamp::from_unix_micros(1_700_000_000_000_000),
        secrets_quota: None,
    }
}

fn dek(account: AccountId, n: u64) -> DekRecord {
    let mut id = [0xd0; 16];
    id[8..].copy_from_slice(&n.to_be_bytes());
    DekRecord {
        account_id: account,
        key: WrappedKeyRecord {
            id: DekId::from_bytes(id),
            kek_id: "kek-1".into(),
            wrapped: vec![7; 40],
            created: Timestamp::from_unix_micros(1_700_000_000_000_000 + n as i64),
        },
        rk: None,
    }
}

/// The DEK ids the log's `DekPut` entries name, up to and including `through`.
async fn logged_deks(s: &dyn Storage, through: u64) -> BTreeSet<DekId> {
    let mut deks = BTreeSet::new();
    for record in s.changes_after(0, usize::MAX).await.unwrap() {
        if record.seq > through {
            break;
        }
        if let Change::DekPut { dek_id, .. } = serde_json::from_slice(&record.payload).unwrap() {
            deks.insert(dek_id);
        }
    }
    deks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_is_the_state_at_its_header_while_another_instance_writes() {
    let Some(cluster) = cluster_url("a_snapshot_is_the_state_at_its_header") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let reader: Arc<dyn Storage> = Arc::new(db.storage().await);
    let writer: Arc<dyn Storage> = Arc::new(db.storage().await);
    let owner = account(1);
    reader.create_account(owner.clone(), &[]).await.unwrap();
    reader.ensure_cluster_id().await.unwrap();
    for n in 0..20 {
        reader.put_dek(dek(owner.id, n)).await.unwrap();
    }

    // The other instance stores a DEK after another while the snapshots are read.
    let stop = Arc::new(AtomicBool::new(false));
    let writing = {
        let stop = Arc::clone(&stop);
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            let mut n = 1_000;
            while !stop.load(Ordering::Relaxed) {
                writer.put_dek(dek(owner.id, n)).await.unwrap();
                n += 1;
            }
            n - 1_000
        })
    };

    for _ in 0..4 {
        let (tx, mut rx) = mpsc::channel(1);
        let reading = {
            let reader = Arc::clone(&reader);
            tokio::spawn(async move { reader.snapshot(tx).await })
        };
        let Some(SnapshotPart::Header { seq, count, .. }) = rx.recv().await else {
            panic!("a snapshot starts with its header");
        };
        let mut items = Vec::new();
        while let Some(part) = rx.recv().await {
            let SnapshotPart::Item(payload) = part else {
                panic!("one header only");
            };
            items.push(serde_json::from_slice::<Change>(&payload).unwrap());
            // A slow receiver: the writes go on while the snapshot is read.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        reading.await.unwrap().unwrap();
        assert_eq!(
            items.len() as u64,
            count,
            "as many items as the header says"
        );
        let in_snapshot: BTreeSet<DekId> = items
            .iter()
            .filter_map(|c| match c {
                Change::DekPut { dek_id, .. } => Some(*dek_id),
                _ => None,
            })
            .collect();
        assert_eq!(
            in_snapshot,
            logged_deks(&*reader, seq).await,
            "the snapshot holds exactly the DEKs logged up to its header's seq"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let written = writing.await.unwrap();
    assert!(written > 0, "the other instance wrote meanwhile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroyed_deks_leave_the_log_at_the_next_compaction() {
    let Some(cluster) = cluster_url("destroyed_deks_leave_the_log") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let s = db.storage().await;
    let owner = account(2);
    s.create_account(owner.clone(), &[]).await.unwrap();
    let (gone_early, gone_late, kept) = (dek(owner.id, 1), dek(owner.id, 2), dek(owner.id, 3));
    for d in [&gone_early, &gone_late, &kept] {
        s.put_dek(d.clone()).await.unwrap();
    }
    let late_put = s.change_head().await.unwrap() - 1;
    // Nothing destroyed yet: nothing to compact.
    assert_eq!(s.compact_destroyed_deks().await.unwrap(), None);

    let destroyed = s
        .destroy_unreferenced_deks(vec![kept.key.id], 10)
        .await
        .unwrap();
    let ids: BTreeSet<DekId> = destroyed.iter().map(|d| d.dek_id).collect();
    assert_eq!(ids, BTreeSet::from([gone_early.key.id, gone_late.key.id]));
    let head = s.change_head().await.unwrap();

    // Through the newest entry carrying one of them (the later `DekPut`), not past the
    // `DekDestroyed`s, which carry only ids; a cluster id is made for it.
    assert_eq!(s.compact_destroyed_deks().await.unwrap(), Some(late_put));
    let state = s.log_state().await.unwrap();
    assert!(state.cluster_id.is_some());
    assert_eq!((state.base_seq, state.head_seq), (late_put, head));
    let left: Vec<Change> = s
        .changes_after(late_put, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect();
    assert!(
        left.iter().all(|c| matches!(
            c,
            Change::DekPut { dek_id, .. } if *dek_id == kept.key.id
        ) || matches!(c, Change::DekDestroyed { .. })),
        "only the kept DEK's put and the destructions remain: {left:?}"
    );
    // Compacted once: the next call has nothing to do.
    assert_eq!(s.compact_destroyed_deks().await.unwrap(), None);
    // Never stored again.
    assert!(matches!(
        s.put_dek(gone_late.clone()).await,
        Err(StorageError::Conflict)
    ));
    assert!(s.get_dek(gone_late.key.id).await.unwrap().is_none());
    assert!(s.get_dek(kept.key.id).await.unwrap().is_some());
}
