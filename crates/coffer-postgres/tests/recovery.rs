//! Connections the database ends (a restart, a failover, an administrator): the storage
//! recovers by itself, reads and writes work again with fresh connections, and the
//! connection that follows other instances' commits comes back.

use std::time::Duration;

use coffer_postgres::testing::{TestDatabase, cluster_url};
use coffer_storage::{AccountRecord, Storage};
use coffer_types::{AccountId, Timestamp};

fn account(n: u8) -> AccountRecord {
    AccountRecord {
        id: AccountId::from_bytes([n; 16]),
        name: format!("a{n}"),
        created: Timestamp::from_unix_micros(i64::from(n)),
        secrets_quota: None,
    }
}

/// Ends every connection to `db` but the caller's.
async fn terminate_all(admin: &tokio_postgres::Client, db: &str) -> i64 {
    admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .await
        .unwrap()
        .len() as i64
}

/// Retries `op` for up to 5 s: the first use of a connection the server ended may fail
/// (`Unavailable`), the next takes a fresh one.
async fn eventually<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = coffer_storage::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(
                    matches!(e, coffer_storage::StorageError::Unavailable(_)),
                    "{e:?}"
                );
                assert!(tokio::time::Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_recovers_when_the_database_ends_its_connections() {
    let Some(cluster) = cluster_url("the_storage_recovers_when_the_database_ends_its_connections")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let a = db.storage().await;
    let b = db.storage().await;
    a.create_account(account(1), &[]).await.unwrap();
    assert_eq!(
        b.get_account(account(1).id).await.unwrap(),
        Some(account(1))
    );

    let (admin, connection) = tokio_postgres::connect(&cluster, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let ended = terminate_all(&admin, db.name()).await;
    assert!(ended >= 4, "pools and listeners of both: {ended}");

    // Reads and writes come back on fresh connections.
    let got = eventually(|| a.get_account(account(1).id)).await;
    assert_eq!(got, Some(account(1)));
    eventually(|| {
        let a = &a;
        async move {
            match a.create_account(account(2), &[]).await {
                // A retry of a write that did commit.
                Err(coffer_storage::StorageError::AlreadyExists(_)) => Ok(()),
                other => other,
            }
        }
    })
    .await;

    // b's follower reconnects (with backoff) and catches up from the head row, then follows
    // new commits again.
    let mut head_b = b.subscribe_head();
    tokio::time::timeout(Duration::from_secs(3), head_b.wait_for(|seq| *seq >= 2))
        .await
        .expect("b catches up after reconnecting")
        .unwrap();
    a.create_account(account(3), &[]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), head_b.wait_for(|seq| *seq >= 3))
        .await
        .expect("b follows a's commits again")
        .unwrap();
    assert_eq!(b.committed_head(), 3);
}

/// An instance frozen in the middle of a write holds the writer lock only until the database
/// ends its idle transaction: the other instances' writes then go through, and the frozen
/// write fails rather than committing late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_frozen_mid_transaction_does_not_stop_the_other_instances() {
    let Some(cluster) =
        cluster_url("a_write_frozen_mid_transaction_does_not_stop_the_other_instances")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let mut options = coffer_postgres::PgOptions::default();
    options.write_idle_timeout = Duration::from_secs(1);
    let frozen = coffer_postgres::PgStorage::connect(db.url(), options)
        .await
        .unwrap();
    let other = db.storage().await;

    let hold = frozen.hold_writer_lock().await;
    tokio::time::timeout(
        Duration::from_secs(5),
        other.create_account(account(1), &[]),
    )
    .await
    .expect("the other instance's write is not blocked for good")
    .unwrap();
    assert!(
        hold.finish().await.is_err(),
        "the frozen write does not commit"
    );
    assert_eq!(other.change_head().await.unwrap(), 1);
    // The frozen instance recovers (a fresh connection) and writes again.
    eventually(|| frozen.create_account(account(2), &[])).await;
    assert_eq!(frozen.change_head().await.unwrap(), 2);
}
