//! The change log: reading it (`changes_after`, `feed_after`, `log_state`), the cluster id,
//! compaction, signing the head, and following other instances' commits.
//!
//! Every write moves the one `change_head` row and sends `NOTIFY coffer_head, '<seq>'` in its
//! transaction (see `write.rs`). [`follow`] keeps a connection of its own LISTENing on that
//! channel; a notification only wakes it (its payload is never trusted: any role that can
//! connect can send one), and it then reads the head row and moves this handle's
//! `committed_head` and head watch to it. It also reads the head row every [`POLL_EVERY`]
//! without a notification (notifications can be lost: a pooler in transaction mode, a
//! half-open socket), with a timeout that doubles as a liveness check, and its socket has TCP
//! keepalives and a user timeout. So caches keyed on `committed_head` see another instance's
//! writes within a notification's delay, and within about a second at worst. If that
//! connection fails it reconnects with backoff and reads the head row once back.

use std::sync::Arc;
use std::time::Duration;

use coffer_storage::{
    ChangeRecord, CompactionMatcher, FeedSignature, LogState, Result, StorageError,
};
use coffer_types::{AccountId, DekId, Timestamp};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::db::{DbResultExt, bytes_col, col, sql_limit, u64_col};
use crate::tx::TxFuture;
use crate::write::HEAD_CHANNEL;
use crate::{PgStorage, Shared};

/// The `replication` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Base {
    pub(crate) cluster_id: [u8; 16],
    pub(crate) seq: u64,
    pub(crate) hash: [u8; 32],
}

/// The `replication` row, if the database has one (it has once a cluster id exists).
pub(crate) async fn base(c: &impl GenericClient) -> Result<Option<Base>> {
    let stmt = c
        .prepare_cached("SELECT cluster_id, base_seq, base_hash FROM replication WHERE id = 1")
        .await
        .db("read log base")?;
    c.query_opt(&stmt, &[])
        .await
        .db("read log base")?
        .map(|row| {
            Ok(Base {
                cluster_id: bytes_col(&row, 0, "replication.cluster_id")?,
                seq: u64_col(&row, 1, "replication.base_seq")?,
                hash: bytes_col(&row, 2, "replication.base_hash")?,
            })
        })
        .transpose()
}

/// The base's seq and hash; seq 0 and the genesis hash without a `replication` row.
pub(crate) async fn base_position(c: &impl GenericClient) -> Result<(u64, [u8; 32])> {
    Ok(base(c)
        .await?
        .map_or((0, ChangeRecord::GENESIS_HASH), |b| (b.seq, b.hash)))
}

pub(crate) async fn change_head(s: &PgStorage) -> Result<u64> {
    let c = s.client().await?;
    Ok(crate::write::read_head(&c).await?.seq)
}

fn change_from_row(row: &Row) -> Result<ChangeRecord> {
    Ok(ChangeRecord {
        seq: u64_col(row, 0, "changes.seq")?,
        at: Timestamp::from_unix_micros(col(row, 1, "changes.at")?),
        hash: bytes_col(row, 2, "changes.hash")?,
        payload: col(row, 3, "changes.payload")?,
    })
}

pub(crate) async fn changes_after(
    s: &PgStorage,
    after: u64,
    limit: usize,
) -> Result<Vec<ChangeRecord>> {
    s.read_snapshot(move |tx| -> TxFuture<'_, _> {
        Box::pin(async move { read_changes(tx, after, limit).await })
    })
    .await
}

/// Entries after `after`, checked against the hash chain before they are handed out (the
/// entry at `after`, or the base when `after` is the base, is the anchor). Run in one
/// snapshot by the caller, so the entries and the base agree.
pub(crate) async fn read_changes(
    c: &impl GenericClient,
    after: u64,
    limit: usize,
) -> Result<Vec<ChangeRecord>> {
    let (base, base_hash) = base_position(c).await?;
    if after < base {
        return Err(StorageError::Compacted { base });
    }
    if limit == 0 {
        return Ok(Vec::new());
    }
    let Ok(after_sql) = i64::try_from(after) else {
        return Ok(Vec::new());
    };
    if after == base {
        // The anchor is the base, which `changes` no longer holds (for base 0: the genesis).
        let stmt = c
            .prepare_cached(
                "SELECT seq, at, hash, payload FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .await
            .db("read changes")?;
        let rows = c
            .query(&stmt, &[&after_sql, &sql_limit(limit)])
            .await
            .db("read changes")?
            .iter()
            .map(change_from_row)
            .collect::<Result<Vec<_>>>()?;
        return check_chain(rows, after, base_hash);
    }
    // One extra row for the anchor.
    let stmt = c
        .prepare_cached(
            "SELECT seq, at, hash, payload FROM changes WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .await
        .db("read changes")?;
    let mut rows = c
        .query(&stmt, &[&after_sql, &sql_limit(limit).saturating_add(1)])
        .await
        .db("read changes")?
        .iter()
        .map(change_from_row)
        .collect::<Result<Vec<_>>>()?;
    let prev = match rows.first() {
        None => return Ok(Vec::new()),
        Some(anchor) if anchor.seq == after => anchor.hash,
        Some(_) => {
            return Err(StorageError::Corrupted(format!(
                "change {after} is missing"
            )));
        }
    };
    rows.remove(0);
    rows.truncate(limit);
    check_chain(rows, after, prev)
}

/// `rows`, once checked to be the entries right after `after`, chaining onto `prev`.
fn check_chain(rows: Vec<ChangeRecord>, after: u64, prev: [u8; 32]) -> Result<Vec<ChangeRecord>> {
    ChangeRecord::check_chain(&rows, after, prev)?;
    Ok(rows)
}

pub(crate) async fn feed_after(
    s: &PgStorage,
    after: u64,
    limit: usize,
) -> Result<(Vec<ChangeRecord>, Vec<FeedSignature>)> {
    s.read_snapshot(move |tx| -> TxFuture<'_, _> {
        Box::pin(async move {
            let mut entries = read_changes(tx, after, limit).await?;
            let Some(last) = entries.last().map(|e| e.seq) else {
                return Ok((entries, Vec::new()));
            };
            let seq_sql = |seq: u64| {
                i64::try_from(seq).map_err(|_| StorageError::Corrupted("a seq beyond range".into()))
            };
            let stmt = tx
                .prepare_cached(
                    "SELECT seq FROM change_signatures WHERE seq >= $1 ORDER BY seq LIMIT 1",
                )
                .await
                .db("find next signature")?;
            let next_signed = tx
                .query_opt(&stmt, &[&seq_sql(last)?])
                .await
                .db("find next signature")?
                .map(|row| u64_col(&row, 0, "change_signatures.seq"))
                .transpose()?;
            if let Some(next) = next_signed
                && next > last
            {
                // Up to the next signed entry (one write at most), so the answer ends signed.
                let more = usize::try_from(next - last).unwrap_or(usize::MAX);
                entries.extend(read_changes(tx, last, more).await?);
            }
            let (first, last) = match (entries.first(), entries.last()) {
                (Some(f), Some(l)) => (f.seq, l.seq),
                _ => return Ok((entries, Vec::new())),
            };
            let stmt = tx
                .prepare_cached(
                    "SELECT seq, signature FROM change_signatures WHERE seq BETWEEN $1 AND $2
                     ORDER BY seq",
                )
                .await
                .db("read signatures")?;
            let signatures = tx
                .query(&stmt, &[&seq_sql(first)?, &seq_sql(last)?])
                .await
                .db("read signatures")?
                .iter()
                .map(|row| {
                    Ok(FeedSignature {
                        seq: u64_col(row, 0, "change_signatures.seq")?,
                        signature: bytes_col(row, 1, "change_signatures.signature")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((entries, signatures))
        })
    })
    .await
}

pub(crate) async fn sign_head(s: &PgStorage) -> Result<()> {
    s.write(&[], |w| {
        Box::pin(async move {
            w.sign_head();
            Ok(())
        })
    })
    .await
}

pub(crate) async fn log_state(s: &PgStorage) -> Result<LogState> {
    s.read_snapshot(|tx| -> TxFuture<'_, _> { Box::pin(async move { log_state_in(tx).await }) })
        .await
}

/// The log's state as `c` (one snapshot, or the import's transaction) sees it.
pub(crate) async fn log_state_in(c: &impl GenericClient) -> Result<LogState> {
    let base = base(c).await?;
    let head = crate::write::read_head(c).await?;
    let (base_seq, base_hash) = base.map_or((0, ChangeRecord::GENESIS_HASH), |b| (b.seq, b.hash));
    Ok(LogState {
        cluster_id: base.map(|b| b.cluster_id),
        base_seq,
        base_hash,
        head_seq: head.seq,
        head_hash: head.hash,
    })
}

pub(crate) async fn ensure_cluster_id(s: &PgStorage) -> Result<[u8; 16]> {
    s.write(&[], |w| {
        Box::pin(async move { ensure_cluster_id_in(w.tx()).await })
    })
    .await
}

/// The cluster id, made now if the database has none, in the caller's write (under the writer
/// lock: nobody can insert between the read and the insert).
pub(crate) async fn ensure_cluster_id_in(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<[u8; 16]> {
    if let Some(base) = base(tx).await? {
        return Ok(base.cluster_id);
    }
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id)
        .map_err(|_| StorageError::Unavailable("the random generator failed".into()))?;
    // The log may already hold entries: its base stays at 0, the head is untouched.
    tx.execute(
        "INSERT INTO replication (id, cluster_id, base_seq, base_hash, base_at)
         VALUES (1, $1, 0, $2, $3)",
        &[
            &id.as_slice(),
            &ChangeRecord::GENESIS_HASH.as_slice(),
            &Timestamp::now().unix_micros(),
        ],
    )
    .await
    .db("store cluster id")?;
    Ok(id)
}

pub(crate) async fn compact_log(s: &PgStorage, through: u64) -> Result<()> {
    s.write(&[], move |w| {
        Box::pin(async move {
            let Some(base) = base(w.tx()).await? else {
                return if through == 0 {
                    Ok(())
                } else {
                    Err(StorageError::Invalid(
                        "the log has no cluster id yet, so it cannot be compacted",
                    ))
                };
            };
            if through < base.seq {
                return Err(StorageError::Invalid(
                    "compaction cannot move the log's base backwards",
                ));
            }
            let (head, _) = w.head();
            if through > head {
                return Err(StorageError::Invalid(
                    "compaction cannot go beyond the log's head",
                ));
            }
            if through == base.seq {
                return Ok(());
            }
            compact_through(w.tx(), through).await
        })
    })
    .await
}

/// Moves the base to entry `through` (above the base, at most the head) and drops the entries
/// and signatures up to it, in the caller's write.
pub(crate) async fn compact_through(
    tx: &deadpool_postgres::Transaction<'_>,
    through: u64,
) -> Result<()> {
    let through_sql = i64::try_from(through)
        .map_err(|_| StorageError::Invalid("compaction point beyond storage's range"))?;
    let row = tx
        .query_opt(
            "SELECT hash, at FROM changes WHERE seq = $1",
            &[&through_sql],
        )
        .await
        .db("read compaction point")?
        .ok_or_else(|| StorageError::Corrupted(format!("change {through} is missing")))?;
    let hash: [u8; 32] = bytes_col(&row, 0, "changes.hash")?;
    let at: i64 = col(&row, 1, "changes.at")?;
    // The base first: the trigger `changes_no_delete` lets only entries at or below it go.
    tx.execute(
        "UPDATE replication SET base_seq = $1, base_hash = $2, base_at = $3 WHERE id = 1",
        &[&through_sql, &hash.as_slice(), &at],
    )
    .await
    .db("move log base")?;
    tx.execute(
        "DELETE FROM change_signatures WHERE seq <= $1",
        &[&through_sql],
    )
    .await
    .db("drop compacted signatures")?;
    tx.execute("DELETE FROM changes WHERE seq <= $1", &[&through_sql])
        .await
        .db("compact log")?;
    Ok(())
}

/// Compacts the log through the last entry before seq `before` that names one of `deks`
/// (their `DekPut`s, values sealed under them), so no retained entry carries them; returns
/// the new base if it moved. Entries are matched by the exact `"dek_id":"<hex>"` their JSON
/// holds; `DekDestroyed` entries, which carry only the id, are not.
pub(crate) async fn compact_past(
    tx: &deadpool_postgres::Transaction<'_>,
    deks: impl IntoIterator<Item = DekId>,
    before: u64,
) -> Result<Option<u64>> {
    compact_past_matching(tx, before, &CompactionMatcher::deks(deks)).await
}

/// [`compact_past`] for a deleted account: also past its account grants (which carry its
/// replication key sealed to the nodes' keys for it; see [`CompactionMatcher`]).
pub(crate) async fn compact_past_account(
    tx: &deadpool_postgres::Transaction<'_>,
    account: AccountId,
    deks: impl IntoIterator<Item = DekId>,
    before: u64,
) -> Result<Option<u64>> {
    compact_past_matching(tx, before, &CompactionMatcher::account(account, deks)).await
}

/// Entries read per page of the backward walk.
const COMPACTION_PAGE: i64 = 512;

/// Compacts the log through the newest entry before seq `before` that `matcher` says carries
/// what it looks for. One backward walk, in pages, stopping at the newest match. The database
/// returns only entries holding one of the matcher's prefilter texts (every match holds one),
/// so an entry that names nothing asked for never leaves it, and when nothing matches the
/// walk is one empty page.
async fn compact_past_matching(
    tx: &deadpool_postgres::Transaction<'_>,
    before: u64,
    matcher: &CompactionMatcher,
) -> Result<Option<u64>> {
    if matcher.is_empty() {
        return Ok(None);
    }
    let prefilter = matcher.prefilter();
    let (base, _) = base_position(tx).await?;
    let needles: Vec<&[u8]> = prefilter.iter().map(|n| n.as_bytes()).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT seq, payload FROM changes WHERE seq > $1 AND seq < $2
               AND EXISTS (SELECT 1 FROM unnest($4::bytea[]) AS n(needle)
                           WHERE position(n.needle IN payload) > 0)
             ORDER BY seq DESC LIMIT $3",
        )
        .await
        .db("find entries naming a dek")?;
    let base_sql = i64::try_from(base).unwrap_or(i64::MAX);
    let mut below = i64::try_from(before).unwrap_or(i64::MAX);
    let mut through = base;
    'walk: loop {
        let rows = tx
            .query(&stmt, &[&base_sql, &below, &COMPACTION_PAGE, &needles])
            .await
            .db("find entries naming a dek")?;
        let Some(last) = rows.last() else {
            break;
        };
        below = col(last, 0, "changes.seq")?;
        for row in &rows {
            let payload: &[u8] = col(row, 1, "changes.payload")?;
            if matcher.carries(payload) {
                through = u64_col(row, 0, "changes.seq")?;
                break 'walk;
            }
        }
    }
    if through > base {
        ensure_cluster_id_in(tx).await?;
        compact_through(tx, through).await?;
        return Ok(Some(through));
    }
    Ok(None)
}

/// How often the follower reads the head row without a notification: the bound on staleness
/// when notifications are lost (a connection pooler in transaction mode, a half-open socket).
pub(crate) const POLL_EVERY: Duration = Duration::from_secs(1);

/// How long reading the head row may take on the follower's connection before the connection
/// is taken for dead and replaced.
const HEAD_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts following other instances' commits (see the module doc). The first LISTEN is in
/// place before this returns, so a write another instance commits after `connect` is seen.
pub(crate) async fn follow(
    mut config: tokio_postgres::Config,
    tls: Option<rustls::ClientConfig>,
    shared: Arc<Shared>,
    target: &str,
) -> std::result::Result<tokio::task::JoinHandle<()>, crate::ConnectError> {
    // A half-open socket (a peer gone without a FIN) must not keep the follower waiting for
    // hours: probe an idle connection soon, and give up on unacknowledged data.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(30));
    let first =
        listen(&config, tls.as_ref())
            .await
            .map_err(|e| crate::ConnectError::Unreachable {
                target: target.to_owned(),
                detail: format!(
                    "listening for other instances' commits: {}",
                    crate::error_chain(&e)
                ),
                // The pool's connection was just made with the same settings: the network.
                refused: false,
            })?;
    let target = target.to_owned();
    Ok(tokio::spawn(async move {
        let mut current = first;
        loop {
            follow_until_lost(&current, &shared, &target).await;
            current.driver.abort();
            drop(current);
            if shared.closed.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            tracing::warn!(
                database = %target,
                "lost the connection that follows other instances' commits; reconnecting"
            );
            let mut delay = Duration::from_millis(100);
            current = loop {
                tokio::time::sleep(delay).await;
                match listen(&config, tls.as_ref()).await {
                    Ok(l) => break l,
                    Err(e) => {
                        tracing::warn!(
                            database = %target,
                            error = %crate::error_chain(&e),
                            "cannot follow other instances' commits yet"
                        );
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            };
        }
    }))
}

/// Reads the head row on every notification (coalesced) and every [`POLL_EVERY`], moving
/// `shared` to it, until the connection fails, a read times out, or the driver ends.
///
/// A notification is only a wake-up: its payload is never trusted (any role that can connect
/// can `NOTIFY coffer_head` with anything). The head row is the truth.
async fn follow_until_lost(l: &Listening, shared: &Shared, target: &str) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The first tick is immediate: notifications sent while (re)connecting are lost, the
        // head row is not.
        tokio::select! {
            _ = tick.tick() => {}
            _ = l.wake.notified() => {}
            _ = l.ended.notified() => return,
        }
        let read = async {
            let row = l
                .client
                .query_opt("SELECT seq FROM change_head WHERE id = 1", &[])
                .await
                .db("read change head")?
                .ok_or_else(|| {
                    StorageError::Corrupted("change_head: the head row is missing".into())
                })?;
            u64_col(&row, 0, "change_head.seq")
        };
        match tokio::time::timeout(HEAD_READ_TIMEOUT, read).await {
            Ok(Ok(seq)) => shared.advance(seq),
            Ok(Err(e)) => {
                tracing::warn!(
                    database = %target,
                    error = %e,
                    "cannot read the change head on the connection following other instances' commits"
                );
                return;
            }
            Err(_) => {
                tracing::warn!(
                    database = %target,
                    "reading the change head timed out on the connection following other instances' commits"
                );
                return;
            }
        }
    }
}

/// The follower's own connection (outside the pool), LISTENing on the head channel.
struct Listening {
    client: tokio_postgres::Client,
    /// Drives the connection; signals `wake` on each head notification, `ended` when done.
    driver: tokio::task::JoinHandle<()>,
    wake: Arc<tokio::sync::Notify>,
    ended: Arc<tokio::sync::Notify>,
}

/// Opens a connection of its own (outside the pool), LISTENs on the head channel, and drives
/// it on a task.
async fn listen(
    config: &tokio_postgres::Config,
    tls: Option<&rustls::ClientConfig>,
) -> std::result::Result<Listening, tokio_postgres::Error> {
    let wake = Arc::new(tokio::sync::Notify::new());
    let ended = Arc::new(tokio::sync::Notify::new());
    let (client, driver) = match tls {
        None => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            let d = drive(connection, Arc::clone(&wake), Arc::clone(&ended));
            (client, tokio::spawn(d))
        }
        Some(tls) => {
            let (client, connection) = config
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone()))
                .await?;
            let d = drive(connection, Arc::clone(&wake), Arc::clone(&ended));
            (client, tokio::spawn(d))
        }
    };
    let l = Listening {
        client,
        driver,
        wake,
        ended,
    };
    if let Err(e) = l
        .client
        .batch_execute(&format!("LISTEN {HEAD_CHANNEL}"))
        .await
    {
        l.driver.abort();
        return Err(e);
    }
    Ok(l)
}

/// Polls the connection, waking the follower on each head notification; signals `ended` and
/// returns when the connection ends.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    wake: Arc<tokio::sync::Notify>,
    ended: Arc<tokio::sync::Notify>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                if n.channel() == HEAD_CHANNEL {
                    // One stored permit: a burst of notifications is one read of the head.
                    wake.notify_one();
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(
                    error = %crate::error_chain(&e),
                    "the connection following other instances' commits failed"
                );
                break;
            }
            None => break,
        }
    }
    ended.notify_one();
}
