//! `kill -9` of an instance during concurrent writes: no acknowledged write is lost, the log
//! stays gap-free and chained, and the other instance keeps writing. The killed instance is a
//! child process: this test binary run again with only `child_writer` selected.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coffer_postgres::testing::{TestDatabase, cluster_url};
use coffer_postgres::{PgOptions, PgStorage};
use coffer_storage::{AccountRecord, ChangeRecord, Storage};
use coffer_types::{AccountId, Timestamp};

const CHILD_URL: &str = "COFFER_TEST_CHILD_DATABASE_URL";

fn account(tag: u8, n: u64) -> AccountRecord {
    let mut id = [tag; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    AccountRecord {
        id: AccountId::from_bytes(id),
        name: format!("{tag}-{n}"),
        created: Timestamp::from_unix_micros(1),
        secrets_quota: None,
    }
}

/// The child: writes accounts as fast as it can, printing `ACK n` once each write returned
/// `Ok`, until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of kill_9_of_an_instance_loses_no_acknowledged_write"]
async fn child_writer() {
    let url = std::env::var(CHILD_URL).expect("run by the parent test");
    let storage = PgStorage::connect(&url, PgOptions::default())
        .await
        .unwrap();
    for n in 0.. {
        storage.create_account(account(0xc1, n), &[]).await.unwrap();
        println!("ACK {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_instance_loses_no_acknowledged_write() {
    let Some(cluster) = cluster_url("kill_9_of_an_instance_loses_no_acknowledged_write") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let survivor = db.storage().await;

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_URL, db.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Acknowledgements read on a thread of their own, as they come.
    let (acks_tx, acks_rx) = std::sync::mpsc::channel::<u64>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("ACK ").and_then(|n| n.parse().ok()) {
                let _ = acks_tx.send(n);
            }
        }
    });

    // Both write at once until the child has had some acknowledged; then it is killed in the
    // middle of its writes.
    let started = Instant::now();
    let mut mine = 0u64;
    let mut acked = Vec::new();
    while acked.len() < 40 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child wrote nothing (acks: {})",
            acked.len()
        );
        survivor
            .create_account(account(0x5e, mine), &[])
            .await
            .unwrap();
        mine += 1;
        acked.extend(acks_rx.try_iter());
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    acked.extend(acks_rx.try_iter());

    // The survivor keeps writing.
    for _ in 0..5 {
        survivor
            .create_account(account(0x5e, mine), &[])
            .await
            .unwrap();
        mine += 1;
    }
    // Every acknowledged write of the child is there, and every one of the survivor.
    for n in &acked {
        assert!(
            survivor
                .get_account(account(0xc1, *n).id)
                .await
                .unwrap()
                .is_some(),
            "the child's acknowledged write {n} is lost"
        );
    }
    for n in 0..mine {
        assert!(
            survivor
                .get_account(account(0x5e, n).id)
                .await
                .unwrap()
                .is_some()
        );
    }
    // One log, gap-free and chained, holding exactly the committed accounts.
    let log = survivor.changes_after(0, usize::MAX).await.unwrap();
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
    let accounts = survivor.list_accounts().await.unwrap().len();
    assert_eq!(log.len(), accounts);
    assert!(accounts as u64 >= mine + acked.len() as u64);
}
