//! The DEK gate across instances: while a node's revocation on one instance holds it, new
//! DEKs from another are refused at once (`Conflict`) and that instance's wait for the gate is
//! bounded (`Unavailable`); closing it waits for the DEK inserts another instance has not
//! committed yet; and a hold never outlives its process (`kill -9`) or a frozen holder (the
//! idle timeout). The holder that gets killed is a child process: this test binary run again
//! with only `child_gate_holder` selected.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coffer_postgres::testing::{TestDatabase, cluster_url};
use coffer_postgres::{PgOptions, PgStorage};
use coffer_storage::{AccountRecord, DekRecord, Storage, StorageError, WrappedKeyRecord};
use coffer_types::{AccountId, DekId, Timestamp};

const CHILD_URL: &str = "COFFER_TEST_CHILD_DATABASE_URL";
const CHILD_HOLD_IDLE_MS: &str = "COFFER_TEST_CHILD_HOLD_IDLE_MS";

fn account() -> AccountRecord {
    AccountRecord {
        id: AccountId::from_bytes([0xac; 16]),
        name: "acme".into(),
        created: Timestamp::from_unix_micros(1),
        secrets_quota: None,
    }
}

fn dek(tag: u8) -> DekRecord {
    DekRecord {
        account_id: AccountId::from_bytes([0xac; 16]),
        key: WrappedKeyRecord {
            id: DekId::from_bytes([tag; 16]),
            kek_id: "kek-1".into(),
            wrapped: vec![tag; 40],
            created: Timestamp::from_unix_micros(i64::from(tag)),
        },
        rk: None,
    }
}

async fn connect(db: &TestDatabase, gate_wait: Duration, idle: Duration) -> PgStorage {
    let mut options = PgOptions::default();
    options.dek_gate_wait = gate_wait;
    options.write_idle_timeout = idle;
    PgStorage::connect(db.url(), options).await.unwrap()
}

/// A revocation's hold on A refuses B's new DEKs at once, lets B's writes under stored DEKs
/// through, bounds B's wait (`Unavailable`), and once dropped lets B wait and store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hold_on_one_instance_refuses_new_deks_of_another_and_bounds_its_wait() {
    let Some(cluster) =
        cluster_url("a_hold_on_one_instance_refuses_new_deks_of_another_and_bounds_its_wait")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let a = db.storage().await;
    let b = connect(&db, Duration::from_millis(300), Duration::from_secs(30)).await;
    b.create_account(account(), &[]).await.unwrap();
    b.put_dek(dek(1)).await.unwrap();

    let hold = a.close_dek_gate().await.unwrap();
    let started = Instant::now();
    assert!(
        matches!(b.put_dek(dek(2)).await, Err(StorageError::Conflict)),
        "a new DEK is refused while another instance's revocation holds the gate"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );
    assert_eq!(b.get_dek(dek(2).key.id).await.unwrap(), None);
    // Waiting is bounded: a retryable error, not a hang.
    let started = Instant::now();
    match b.wait_dek_gate().await {
        Err(StorageError::Unavailable(m)) => assert!(m.contains("DEK gate"), "{m}"),
        other => panic!("expected the wait to end Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // The holder's own handle is refused too (its process's in-memory gate keeps its writes
    // from getting there in the first place), but never waits for its own hold.
    assert!(matches!(
        a.put_dek(dek(3)).await,
        Err(StorageError::Conflict)
    ));
    let started = Instant::now();
    a.wait_dek_gate()
        .await
        .expect("the holding instance does not wait for itself");
    assert!(started.elapsed() < Duration::from_millis(200));

    drop(hold);
    tokio::time::timeout(Duration::from_secs(10), async {
        // The hold's connection is closing: the wait may time out once meanwhile.
        while b.wait_dek_gate().await.is_err() {}
    })
    .await
    .expect("the gate opens once the hold is dropped");
    b.put_dek(dek(2)).await.unwrap();
    a.put_dek(dek(3)).await.unwrap();
}

/// Closing the gate waits for a write on another instance that inserted a DEK and has not
/// committed: the revocation's listing, made after, sees that DEK.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_waits_for_another_instances_uncommitted_dek() {
    let Some(cluster) = cluster_url("closing_waits_for_another_instances_uncommitted_dek") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let a = db.storage().await;
    let b = db.storage().await;
    b.create_account(account(), &[]).await.unwrap();

    let in_flight = b.hold_dek_insert(dek(7)).await;
    let mut closing = std::pin::pin!(a.close_dek_gate());
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut closing)
            .await
            .is_err(),
        "closing waits while another instance's DEK insert is uncommitted"
    );
    in_flight.finish().await.unwrap();
    let hold = tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("closing goes on once that write committed")
        .unwrap();
    assert!(
        a.list_deks()
            .await
            .unwrap()
            .iter()
            .any(|d| d.key.id == dek(7).key.id),
        "the listing under the hold sees it"
    );
    drop(hold);
}

/// A live holder keeps its hold past the idle limit without any check (its keepalive renews
/// the session's idle clock), and a check after that finds it in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_holder_keeps_its_hold_past_the_idle_limit() {
    let Some(cluster) = cluster_url("a_live_holder_keeps_its_hold_past_the_idle_limit") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let mut a = connect(&db, Duration::from_secs(10), Duration::from_secs(1)).await;
    a.set_dek_gate_hold_idle(Duration::from_millis(800));
    let b = db.storage().await;
    b.create_account(account(), &[]).await.unwrap();
    let hold = a.close_dek_gate().await.unwrap();
    // Three idle limits without a check.
    tokio::time::sleep(Duration::from_millis(2_400)).await;
    assert!(
        matches!(b.put_dek(dek(4)).await, Err(StorageError::Conflict)),
        "the hold is still in force"
    );
    hold.check().await.expect("a live hold's check");
    drop(hold);
    tokio::time::timeout(Duration::from_secs(10), async {
        while b.wait_dek_gate().await.is_err() {}
    })
    .await
    .expect("the gate opens once the hold is dropped");
    b.put_dek(dek(4)).await.unwrap();
}

/// A hold that lasts past its longest (a revocation stuck, say, on a KEK call that does not
/// answer) is let go though its process is alive: other instances may insert DEKs again, and
/// the stuck revocation's check (before its commit) finds its hold lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hold_past_its_longest_is_let_go() {
    let Some(cluster) = cluster_url("a_hold_past_its_longest_is_let_go") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let mut a = connect(&db, Duration::from_secs(10), Duration::from_secs(1)).await;
    a.set_dek_gate_max_hold(Duration::from_millis(1_500));
    let b = db.storage().await;
    b.create_account(account(), &[]).await.unwrap();
    let hold = a.close_dek_gate().await.unwrap();
    assert!(matches!(
        b.put_dek(dek(5)).await,
        Err(StorageError::Conflict)
    ));
    hold.check().await.expect("in force before its longest");
    tokio::time::timeout(Duration::from_secs(15), async {
        while b.put_dek(dek(5)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the gate opens once the hold has lasted its longest");
    assert!(
        hold.check().await.is_err(),
        "the stuck holder learns its hold is lost"
    );
    drop(hold);
}

/// A hold whose session the database ended (here `pg_terminate_backend`, as an administrator
/// or a failover would) is found lost by the check a revocation makes before its commit, and
/// the gate opens for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hold_whose_session_ended_is_found_lost_before_the_commit() {
    let Some(cluster) = cluster_url("a_hold_whose_session_ended_is_found_lost_before_the_commit")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let a = connect(&db, Duration::from_secs(10), Duration::from_secs(1)).await;
    let b = db.storage().await;
    b.create_account(account(), &[]).await.unwrap();
    let hold = a.close_dek_gate().await.unwrap();
    hold.check().await.expect("in force");
    let (admin, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let ended: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks
              WHERE locktype = 'advisory' AND mode = 'ExclusiveLock' AND granted
                AND (classid::bigint << 32) | objid::bigint = $1
                -- This test's database only: other tests hold the same lock in theirs.
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&0x636f_6666_6572_0003_i64],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ended, 1, "the holding session, found by its lock");
    let lost = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if hold.check().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(lost.is_ok(), "the check finds the hold lost");
    tokio::time::timeout(Duration::from_secs(10), async {
        while b.put_dek(dek(6)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the gate opens with the session");
    drop(hold);
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid` with kill(1).
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A frozen holder (its process stopped with SIGSTOP, the hold never dropped, its keepalive
/// stopped with it) is ended by the database after the hold idle limit, which opens the gate
/// for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_holder_is_released_after_the_idle_limit() {
    let Some(cluster) = cluster_url("a_frozen_holder_is_released_after_the_idle_limit") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let b = db.storage().await;
    b.create_account(account(), &[]).await.unwrap();
    let mut child = spawn_holder(&db, Some(Duration::from_millis(1_500)));
    // Alive, it keeps the gate past its idle limit.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert!(
        matches!(b.put_dek(dek(4)).await, Err(StorageError::Conflict)),
        "a live holder keeps the gate closed"
    );
    signal(child.0.id(), "STOP");
    let stopped = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), async {
        while b.wait_dek_gate().await.is_err() {}
    })
    .await
    .expect("the frozen holder's hold is ended");
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "released within the idle limit and a poll ({:?})",
        stopped.elapsed()
    );
    b.put_dek(dek(4)).await.unwrap();
    signal(child.0.id(), "CONT");
    let _ = child.0.kill();
}

/// A process whose writes were refused by another instance's hold, and whose wait is under
/// way, then closes the gate itself (its own revocation): the wait under way ends at once
/// rather than poll until the gate wait runs out (it would meet its own hold), and a wait
/// while it holds the gate returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_under_way_ends_when_its_own_process_closes_the_gate() {
    let Some(cluster) = cluster_url("a_wait_under_way_ends_when_its_own_process_closes_the_gate")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let a = db.storage().await;
    let b =
        std::sync::Arc::new(connect(&db, Duration::from_secs(8), Duration::from_secs(30)).await);
    b.create_account(account(), &[]).await.unwrap();
    let hold_a = a.close_dek_gate().await.unwrap();
    assert!(matches!(
        b.put_dek(dek(2)).await,
        Err(StorageError::Conflict)
    ));
    let waiter = {
        let b = std::sync::Arc::clone(&b);
        tokio::spawn(async move { b.wait_dek_gate().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "B waits while A holds the gate");
    // B's revocation begins: it queues for the gate behind A's. From then on B's writes are
    // ordered by its own in-memory gate, and the wait under way ends.
    let closing = {
        let b = std::sync::Arc::clone(&b);
        tokio::spawn(async move { b.close_dek_gate().await })
    };
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(4), waiter)
        .await
        .expect("the wait under way does not wait for its own process's revocation")
        .unwrap()
        .expect("and ends without an error");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(hold_a);
    let hold_b = tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("B closes the gate once A's hold is gone")
        .unwrap()
        .unwrap();
    let started = Instant::now();
    b.wait_dek_gate().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(200));
    drop(hold_b);
}

/// Each waiter waits for the gate wait from when it came: a waiter that joins a wait under
/// way late does not inherit the first one's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_waiter_waits_its_own_gate_wait() {
    let Some(cluster) = cluster_url("each_waiter_waits_its_own_gate_wait") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let a = db.storage().await;
    let b = std::sync::Arc::new(
        connect(&db, Duration::from_millis(2_000), Duration::from_secs(30)).await,
    );
    b.create_account(account(), &[]).await.unwrap();
    let hold = a.close_dek_gate().await.unwrap();
    assert!(matches!(
        b.put_dek(dek(2)).await,
        Err(StorageError::Conflict)
    ));
    let spawn_waiter = || {
        let b = std::sync::Arc::clone(&b);
        tokio::spawn(async move {
            let started = Instant::now();
            (b.wait_dek_gate().await, started.elapsed())
        })
    };
    let first = spawn_waiter();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let late = spawn_waiter();
    let (outcome, took) = first.await.unwrap();
    assert!(
        matches!(outcome, Err(StorageError::Unavailable(_))),
        "the first waiter's wait ran out: {outcome:?}"
    );
    assert!(
        took >= Duration::from_millis(1_900) && took < Duration::from_millis(3_500),
        "after its own gate wait ({took:?})"
    );
    assert!(!late.is_finished(), "the late waiter still waits");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(hold);
    let (outcome, took) = late.await.unwrap();
    outcome.expect("the late waiter sees the gate open within its own wait");
    assert!(took < Duration::from_millis(2_000), "{took:?}");
}

/// The revocation's check of its hold is bounded on the client side too: a holding session
/// that does not answer (its backend stopped) fails the check within its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hold_check_that_gets_no_answer_fails_in_bounded_time() {
    let Some(cluster) = cluster_url("a_hold_check_that_gets_no_answer_fails_in_bounded_time")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let a = db.storage().await;
    let hold = a.close_dek_gate().await.unwrap();
    let (admin, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // The backend of the session holding the gate (exclusive: granted, mode ExclusiveLock).
    let row = admin
        .query_one(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
                 AND mode = 'ExclusiveLock' AND database = (SELECT oid FROM pg_database
                                                            WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap();
    let pid = u32::try_from(row.get::<_, i32>(0)).unwrap();
    signal(pid, "STOP");
    let started = Instant::now();
    // Bounded here too, so that a check without its own bound fails the test, not hangs it.
    let checked = tokio::time::timeout(Duration::from_secs(15), hold.check()).await;
    let took = started.elapsed();
    signal(pid, "CONT");
    let checked = checked.expect("the check ends by itself");
    match checked {
        Err(StorageError::Unavailable(m)) => assert!(m.contains("hold was lost"), "{m}"),
        other => panic!("a check without an answer: {other:?}"),
    }
    assert!(took < Duration::from_secs(8), "{took:?}");
    drop(hold);
}

/// Bounds near the top of PostgreSQL's range (a write idle timeout of i32::MAX ms makes the
/// close wait that long, and its statement's timeout more) are clamped, not refused by the
/// server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_timeouts_near_the_top_of_the_range_are_clamped() {
    let Some(cluster) = cluster_url("gate_timeouts_near_the_top_of_the_range_are_clamped") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let a = connect(
        &db,
        Duration::from_secs(10),
        Duration::from_millis(u64::from(i32::MAX.unsigned_abs())),
    )
    .await;
    let hold = a
        .close_dek_gate()
        .await
        .expect("closing with the longest waits");
    hold.check().await.unwrap();
    drop(hold);
    a.create_account(account(), &[]).await.unwrap();
}

/// Many writes of one instance refused by another's hold share one wait, which takes a
/// connection only for a moment now and then: reads on that instance still answer promptly,
/// a waiter that goes away does not end the wait of the others, and all of them go on once
/// the hold is dropped. A Conflict that was no refusal by the gate does not wait at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_writes_share_one_wait_that_leaves_the_pool_free() {
    let Some(cluster) = cluster_url("refused_writes_share_one_wait_that_leaves_the_pool_free")
    else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let a = db.storage().await;
    let mut options = PgOptions::default();
    options.max_connections = 2;
    options.dek_gate_wait = Duration::from_secs(20);
    let b = std::sync::Arc::new(PgStorage::connect(db.url(), options).await.unwrap());
    b.create_account(account(), &[]).await.unwrap();
    b.put_dek(dek(1)).await.unwrap();

    let hold = a.close_dek_gate().await.unwrap();
    // No refusal yet: a Conflict of b's (a lost race) does not wait, hold or not.
    let started = Instant::now();
    b.wait_dek_gate().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "no wait without a refusal"
    );

    assert!(matches!(
        b.put_dek(dek(2)).await,
        Err(StorageError::Conflict)
    ));
    let waiters: Vec<_> = (0..40)
        .map(|_| {
            let b = std::sync::Arc::clone(&b);
            tokio::spawn(async move { b.wait_dek_gate().await })
        })
        .collect();
    // One more waiter that goes away early.
    let _ = tokio::time::timeout(Duration::from_millis(100), b.wait_dek_gate()).await;
    for _ in 0..10 {
        let started = Instant::now();
        assert!(b.get_dek(dek(1).key.id).await.unwrap().is_some());
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "a read on the waiting instance answers promptly ({:?})",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "the waits go on while the hold is alive"
    );
    drop(hold);
    for waiter in waiters {
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("every waiter goes on once the hold is dropped")
            .unwrap()
            .unwrap();
    }
    b.put_dek(dek(2)).await.unwrap();
}

/// A child process killed (and reaped) when dropped, so that a failing test leaves none
/// behind holding the gate.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child: closes the gate, says so, and sits until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the tests that kill or stop a revoking instance"]
async fn child_gate_holder() {
    let url = std::env::var(CHILD_URL).expect("run by the parent test");
    let mut storage = PgStorage::connect(&url, PgOptions::default())
        .await
        .unwrap();
    if let Ok(ms) = std::env::var(CHILD_HOLD_IDLE_MS) {
        storage.set_dek_gate_hold_idle(Duration::from_millis(ms.parse().unwrap()));
    }
    let _hold = storage.close_dek_gate().await.unwrap();
    println!("HELD");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// Starts [`child_gate_holder`] on `db` (with this hold idle limit) and returns once it holds
/// the gate.
fn spawn_holder(db: &TestDatabase, hold_idle: Option<Duration>) -> KillOnDrop {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "child_gate_holder",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_URL, db.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(idle) = hold_idle {
        command.env(CHILD_HOLD_IDLE_MS, idle.as_millis().to_string());
    }
    let mut child = KillOnDrop(command.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let (said, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The first line printed shares the test harness's "test child_gate_holder ... ".
            if line.trim_end().ends_with("HELD") {
                let _ = said.send(());
            }
        }
    });
    heard
        .recv_timeout(Duration::from_secs(60))
        .expect("the child closes the gate");
    child
}

/// `kill -9` of an instance holding the gate (mid-revocation): the database ends its session
/// with it, the gate opens, and the other instance stores new DEKs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_revoking_instance_leaves_no_hold() {
    let Some(cluster) = cluster_url("kill_9_of_a_revoking_instance_leaves_no_hold") else {
        return;
    };
    let db = TestDatabase::create(&cluster).await;
    let b = db.storage().await;
    b.create_account(account(), &[]).await.unwrap();

    let mut child = spawn_holder(&db, None);
    assert!(matches!(
        b.put_dek(dek(5)).await,
        Err(StorageError::Conflict)
    ));

    // SIGKILL: no drop, no ROLLBACK; only the socket closing.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while b.wait_dek_gate().await.is_err() {}
    })
    .await
    .expect("the killed holder's hold is gone");
    b.put_dek(dek(5)).await.unwrap();
}
