//! The driver: carries out what the sans-I/O [`Follower`] asks (fetches, applies, installs)
//! and feeds it what happens (answers, failures, time).
//!
//! One request to the current upstream is in flight at a time, in its own task; a new request
//! aborts the previous one (dropping a half-received snapshot rolls its install back). Applies
//! and installs run here, one at a time and in order, so the local replica only ever moves
//! through positions of the root's log.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use coffer_replication::wire::unix_ms;
use coffer_replication::wire::{ClusterId, FeedAnswer, FeedBody};
use coffer_replication::{Config, Follower, Input, Output, Position, SwitchReason};
use coffer_storage::{SqliteStorage, Storage};
use coffer_types::TokenId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::status::EdgeStatus;
use crate::upstream::{FetchError, Staged, Upstreams, check_cluster};

/// The same alarm from the same upstream is logged again after this long at most.
const ALARM_LOG_EVERY: Duration = Duration::from_secs(60);

/// How often the follower is given the time.
const TICK: Duration = Duration::from_millis(100);

enum Msg {
    Feed {
        from: usize,
        answer: Result<FeedAnswer, FetchError>,
    },
    Snapshot {
        from: usize,
        /// Boxed: a staged snapshot (its install and seal) is much larger than the rest.
        staged: Result<Box<Staged>, FetchError>,
    },
    /// A snapshot is still streaming in.
    Progress { from: usize },
}

pub(crate) struct Driver {
    follower: Follower<usize>,
    /// This edge's node (its token's id): the feed's revocation of it stops the edge.
    node: TokenId,
    /// Per upstream: why it was lost and since when, while it is; so that losing and
    /// regaining it are logged once each, not every retry.
    lost: Vec<Option<(String, Instant)>>,
    config: Config,
    upstreams: Upstreams,
    storage: Arc<SqliteStorage>,
    status: Arc<EdgeStatus>,
    /// The cluster this replica belongs to (`None` until the first snapshot is installed).
    cluster: Option<ClusterId>,
    long_poll: Duration,
    request: Option<JoinHandle<()>>,
    staged: Option<Staged>,
    /// The last alarm logged and when (see `alarm_is_new`).
    last_alarm_logged: Option<(String, Instant)>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
}

impl Driver {
    pub(crate) async fn new(
        node: TokenId,
        upstreams: Upstreams,
        storage: Arc<SqliteStorage>,
        status: Arc<EdgeStatus>,
        config: Config,
        long_poll: Duration,
    ) -> Result<Driver, StartError> {
        let (follower, cluster) =
            follower_from(&storage, upstreams.urls.len(), config, false).await?;
        status.set_applied(follower.applied().seq);
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Driver {
            follower,
            node,
            lost: vec![None; upstreams.urls.len()],
            config,
            upstreams,
            storage,
            status,
            cluster,
            long_poll,
            request: None,
            staged: None,
            last_alarm_logged: None,
            tx,
            rx,
        })
    }

    /// Runs until the task is aborted, or until the edge learns that it was revoked.
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.status.is_revoked() {
            let inputs = tokio::select! {
                _ = tick.tick() => vec![Input::Tick],
                Some(msg) = self.rx.recv() => self.inputs_of(msg),
            };
            for input in inputs {
                let outputs = self.follower.handle(unix_ms(), input);
                self.carry_out(outputs).await;
            }
            // A staged snapshot the follower did not take is rolled back now.
            self.staged = None;
            self.publish_freshness();
            let current = *self.follower.current_upstream();
            if self.status.current.swap(current, Ordering::AcqRel) != current {
                self.status.failovers.fetch_add(1, Ordering::Relaxed);
            }
            self.status.set_phase(self.follower.phase());
        }
    }

    /// Tells `/healthz` (and, on a relay, the feed it serves) what the follower verified:
    /// the freshness of the applied state and the newest signed statement, which a relay
    /// forwards unchanged.
    fn publish_freshness(&mut self) {
        let as_of = self.follower.fresh_as_of_ms();
        self.status.set_fresh(as_of, self.follower.known_head());
        // Half the staleness without newer signed state applied (statements that stop
        // advancing, or name a head that is not delivered): said in `/healthz` (degraded)
        // before the edge counts as stale.
        if let Some(age) = as_of.map(|t| unix_ms().saturating_sub(t))
            && age > self.config.staleness_ms / 2
        {
            self.status.set_error(format!(
                "{}: no newer signed state for {} s (withheld, or the upstream is cut off from the root)",
                self.upstreams.urls[*self.follower.current_upstream()],
                age / 1_000
            ));
        }
        if let Some(latest) = self.follower.latest_freshness() {
            let mut shared = self
                .status
                .latest_freshness
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if shared.is_none_or(|s| s.origin_ms < latest.origin_ms) {
                *shared = Some(latest);
            }
        }
    }

    fn inputs_of(&mut self, msg: Msg) -> Vec<Input<usize>> {
        match msg {
            Msg::Progress { from } => vec![Input::Progress { from }],
            Msg::Feed { from, answer } => match answer {
                Err(e) => self.failed(from, &e),
                Ok(answer) => {
                    if let Err(e) = check_cluster(self.cluster, answer.cluster_id) {
                        return self.failed(from, &e);
                    }
                    self.answered(from);
                    let current = from == *self.follower.current_upstream();
                    if current {
                        self.status.heard();
                    }
                    // The unsigned head and origin only say the upstream is alive: with the
                    // key pinned, the follower goes by the signed statement alone.
                    let mut inputs = vec![Input::Heartbeat {
                        from,
                        head_seq: answer.head_seq,
                        origin_ms: answer.origin_ms,
                    }];
                    match answer.freshness {
                        Some(statement) => inputs.push(Input::Freshness { from, statement }),
                        None if current => self.status.set_error(format!(
                            "{}: the answer carries no signed freshness statement; the edge counts as fresh only as of the last one",
                            self.upstreams.urls[from]
                        )),
                        None => {}
                    }
                    let body = match answer.body {
                        FeedBody::Entries {
                            entries,
                            signatures,
                        } => {
                            if entries.is_empty()
                                && self.follower.applied().seq >= self.follower.known_head()
                            {
                                self.status.mark_synced();
                            }
                            Input::Entries {
                                from,
                                entries,
                                signatures,
                            }
                        }
                        FeedBody::Compacted { base_seq } => {
                            tracing::warn!(
                                upstream = %self.upstreams.urls[from],
                                base_seq,
                                "the upstream no longer holds the entries after our position; resyncing from a snapshot"
                            );
                            Input::NeedSnapshot { from }
                        }
                    };
                    inputs.push(body);
                    inputs
                }
            },
            Msg::Snapshot { from, staged } => match staged {
                Err(e) => self.failed(from, &e),
                Ok(staged) => {
                    if let Err(e) = check_cluster(self.cluster, staged.cluster_id) {
                        return self.failed(from, &e);
                    }
                    self.answered(from);
                    if from == *self.follower.current_upstream() {
                        self.status.heard();
                    }
                    let input = Input::StagedSnapshot {
                        from,
                        position: staged.position,
                        intact: staged.intact,
                        seal: staged.seal,
                    };
                    let heartbeat = Input::Heartbeat {
                        from,
                        head_seq: staged.position.seq,
                        origin_ms: staged.origin_ms,
                    };
                    self.staged = Some(*staged);
                    vec![heartbeat, input]
                }
            },
        }
    }

    /// An upstream gave a usable answer: if it was lost, say once that it is back.
    fn answered(&mut self, from: usize) {
        if let Some((_, since)) = self.lost[from].take() {
            tracing::info!(
                upstream = %self.upstreams.urls[from],
                after_seconds = since.elapsed().as_secs(),
                "upstream is back"
            );
        }
    }

    fn failed(&mut self, from: usize, e: &FetchError) -> Vec<Input<usize>> {
        let url = &self.upstreams.urls[from].clone();
        if e.is_revocation() {
            // Only the holder of the real node token is told this, by an upstream of this
            // edge's own cluster (its TLS certificate, when https). The edge stops serving
            // and discards its replica (see `EdgeStatus::revoke`).
            tracing::error!(upstream = %url, "this edge's node was revoked: it stops serving and discards its replica");
            self.status
                .revoke(format!("{url} refused the node token: {e}"));
            return Vec::new();
        }
        // An upstream refusing our position as beyond its head names its cluster and head:
        // another cluster is refused as such; one of ours is behind us (a relay catching up,
        // or a control plane restored from an older backup).
        let refined = match e {
            FetchError::Status {
                cluster: Some(theirs),
                head,
                ..
            } => match check_cluster(self.cluster, *theirs) {
                Err(other) => Some(other.to_string()),
                Ok(()) => Some(format!(
                    "is behind this edge (its head {}, our position {}); waiting for it or another upstream",
                    head.map_or_else(|| "?".to_owned(), |h| h.to_string()),
                    self.follower.verified().seq
                )),
            },
            _ => None,
        };
        match (e, &refined) {
            (FetchError::Wire(_) | FetchError::MediaType { .. }, _) => {
                // Bytes that are not a well-formed answer (truncated, malformed, or not of the
                // signed format): refused whole, nothing of it applied.
                let what = format!("{url}: {e}");
                if self.alarm_is_new(&what) {
                    tracing::error!(upstream = %url, error = %e, "REPLICATION ALARM: refused a malformed answer; nothing of it was applied");
                }
                self.status.alarm(what);
            }
            (FetchError::SnapshotTooLarge { .. }, _) => {
                let what = format!("{url}: {e}");
                if self.alarm_is_new(&what) {
                    tracing::error!(upstream = %url, error = %e, "REPLICATION ALARM: refused an oversized snapshot; nothing of it was installed");
                }
                self.status.alarm(what);
            }
            (FetchError::Storage(_), _) => {
                tracing::error!(upstream = %url, error = %e, "REPLICATION ALARM: a snapshot could not be applied locally; nothing of it was installed");
                self.status.alarm(format!("{url}: {e}"));
            }
            (FetchError::OtherCluster { .. }, _) => tracing::error!(upstream = %url, "{e}"),
            (_, Some(why)) if why.contains("refusing it") => {
                tracing::error!(upstream = %url, "{why}");
            }
            _ => {
                // Said once when the upstream is lost, not on every retry; a new cause while it
                // stays lost is worth a quieter line.
                let why = refined.clone().unwrap_or_else(|| e.to_string());
                match &mut self.lost[from] {
                    Some((was, _)) if *was == why => {
                        tracing::debug!(upstream = %url, error = %why, "upstream still unreachable");
                    }
                    Some((was, _)) => {
                        tracing::info!(upstream = %url, error = %why, "upstream still unreachable, now for another reason");
                        *was = why;
                    }
                    lost @ None => {
                        if self.cluster.is_some() {
                            tracing::warn!(upstream = %url, error = %why, "lost the upstream; serving from the local replica meanwhile, retrying with backoff");
                        } else {
                            tracing::warn!(upstream = %url, error = %why, "cannot reach the upstream for a first snapshot; retrying with backoff");
                        }
                        *lost = Some((why, Instant::now()));
                    }
                }
            }
        }
        self.status.set_error(format!(
            "{url}: {}",
            refined.unwrap_or_else(|| e.to_string())
        ));
        let retry_after_ms = e
            .retry_after()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        vec![Input::Failed {
            from,
            retry_after_ms,
        }]
    }

    async fn carry_out(&mut self, outputs: Vec<Output<usize>>) {
        let mut queue: VecDeque<Output<usize>> = outputs.into();
        while let Some(output) = queue.pop_front() {
            match output {
                Output::Apply {
                    entries,
                    signatures,
                } => {
                    let Some(last) = entries.last().map(|e| e.seq) else {
                        continue;
                    };
                    let n = entries.len();
                    // The signatures are kept with the entries: a relay serves both on.
                    match self.storage.apply_signed_entries(entries, signatures).await {
                        Ok(revoked) => {
                            tracing::debug!(last, n, "applied feed entries");
                            self.status.set_applied(last);
                            if revoked.contains(&self.node) {
                                tracing::error!(node = %self.node, "the feed revoked this edge's node: it stops serving and discards its replica");
                                self.status
                                    .revoke("the change feed revoked this node".to_owned());
                                return;
                            }
                            queue.extend(
                                self.follower
                                    .handle(unix_ms(), Input::Applied { seq: last }),
                            );
                        }
                        Err(e) => {
                            self.local_failure("applying feed entries", &e).await;
                            return;
                        }
                    }
                }
                Output::InstallStaged(position) => {
                    let Some(staged) = self.staged.take() else {
                        tracing::error!("the follower installs a snapshot that is not staged");
                        self.restart(false).await;
                        return;
                    };
                    let cluster = staged.cluster_id;
                    match staged.install.commit().await {
                        Ok(()) => {
                            tracing::info!(seq = position.seq, "installed a snapshot");
                            self.cluster = Some(cluster);
                            self.status.set_cluster(cluster);
                            self.status.set_applied(position.seq);
                            queue.extend(
                                self.follower
                                    .handle(unix_ms(), Input::Applied { seq: position.seq }),
                            );
                        }
                        Err(e) => {
                            self.local_failure("installing a snapshot", &e).await;
                            return;
                        }
                    }
                }
                Output::InstallSnapshot(_) => {
                    // Only answers to `Input::Snapshot`, which this driver never sends.
                    tracing::error!("unexpected in-memory snapshot install");
                }
                Output::Fetch { to, after } => self.fetch(to, Some(after)),
                Output::FetchSnapshot { to } => self.fetch(to, None),
                Output::Alarm(alarm) => {
                    let url = self.upstreams.urls[alarm.upstream].clone();
                    if self.alarm_is_new(&format!("{url}: {:?}", alarm.kind)) {
                        tracing::error!(
                            upstream = %url,
                            kind = ?alarm.kind,
                            detail = %alarm.detail,
                            "REPLICATION ALARM: refused what the upstream sent; nothing of it was applied; resyncing from a snapshot"
                        );
                    }
                    self.status.alarm(format!(
                        "{}: {:?}: {}",
                        self.upstreams.urls[alarm.upstream], alarm.kind, alarm.detail
                    ));
                }
                Output::Switched { from, to, why } => {
                    if matches!(why, SwitchReason::Stale | SwitchReason::NoProgress) {
                        // Withheld or cut off: said in `/healthz` (degraded) until a good
                        // answer.
                        self.status.set_error(format!(
                            "{}: no signed progress for longer than the staleness ({why:?}); switched upstream",
                            self.upstreams.urls[from]
                        ));
                    } else if why == SwitchReason::RepeatedSlowSnapshot {
                        self.status.set_error(format!(
                            "{}: sent a second slow snapshot within the compaction gap of one \
                             whose streaming time was credited ({why:?}); installed it, then \
                             switched upstream",
                            self.upstreams.urls[from]
                        ));
                    } else if why == SwitchReason::SnapshotDeadline {
                        self.status.set_error(format!(
                            "{}: its snapshot was still streaming at the snapshot deadline ({} s); switched upstream",
                            self.upstreams.urls[from],
                            self.config.snapshot_deadline_ms / 1_000
                        ));
                    }
                    tracing::warn!(
                        from = %self.upstreams.urls[from],
                        to = %self.upstreams.urls[to],
                        why = ?why,
                        "switched upstream"
                    );
                }
            }
        }
    }

    /// Whether an alarm of this kind from this upstream is worth a log line: the first one, or
    /// the first after [`ALARM_LOG_EVERY`] of the same. An upstream that keeps sending forged
    /// data is then said once a while, not on every retry (`/healthz` counts them all).
    fn alarm_is_new(&mut self, what: &str) -> bool {
        match &self.last_alarm_logged {
            Some((was, at)) if was == what && at.elapsed() < ALARM_LOG_EVERY => {
                tracing::debug!(alarm = %what, "the same alarm again");
                false
            }
            _ => {
                self.last_alarm_logged = Some((what.to_owned(), Instant::now()));
                true
            }
        }
    }

    /// Starts the one request in flight (aborting the previous one).
    fn fetch(&mut self, to: usize, after: Option<u64>) {
        if let Some(previous) = self.request.take() {
            previous.abort();
        }
        let upstreams = self.upstreams.clone();
        let tx = self.tx.clone();
        let handle = match after {
            Some(after) => {
                let wait = self.long_poll;
                tokio::spawn(async move {
                    let answer = upstreams.feed(to, after, wait).await;
                    let _ = tx.send(Msg::Feed { from: to, answer });
                })
            }
            None => {
                let storage = self.storage.clone();
                let expected = self.cluster;
                tokio::spawn(async move {
                    let progress = || {
                        let _ = tx.send(Msg::Progress { from: to });
                    };
                    let staged = upstreams
                        .snapshot(to, &storage, expected, progress)
                        .await
                        .map(Box::new);
                    let _ = tx.send(Msg::Snapshot { from: to, staged });
                })
            }
        };
        self.request = Some(handle);
    }

    /// The replica refused what the follower verified (data this build cannot apply, a full
    /// disk, a corrupted file): an alarm, then a resync from a snapshot, starting from what
    /// is durable. If the snapshot cannot be applied either, the alarms keep counting and
    /// `/healthz` says so, while the replica keeps serving what it has.
    async fn local_failure(&mut self, what: &str, e: &coffer_storage::StorageError) {
        tracing::error!(error = %e, "REPLICATION ALARM: {what} failed locally; resyncing from a snapshot");
        self.status.alarm(format!("{what} failed: {e}"));
        self.restart(true).await;
    }

    /// After a local failure: forget what is in flight and go on from what is durable
    /// (`resync`: from a snapshot rather than the feed).
    async fn restart(&mut self, resync: bool) {
        if let Some(previous) = self.request.take() {
            previous.abort();
        }
        self.staged = None;
        // Give a failing disk a moment rather than spinning on it.
        tokio::time::sleep(Duration::from_secs(1)).await;
        match follower_from(
            &self.storage,
            self.upstreams.urls.len(),
            self.config,
            resync,
        )
        .await
        {
            Ok((follower, cluster)) => {
                self.status.set_applied(follower.applied().seq);
                self.follower = follower;
                self.cluster = cluster;
            }
            Err(e) => tracing::error!(error = %e, "cannot restart replication; retrying"),
        }
    }
}

/// Why replication cannot start from the replica as stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("cannot read the replica's position: {0}")]
    Position(#[from] coffer_storage::StorageError),
    #[error(transparent)]
    Follower(#[from] coffer_replication::Error),
}

/// A follower for the replica as stored: bootstrapping if it holds nothing, else resuming from
/// its head (`resync`: fetching a snapshot first).
async fn follower_from(
    storage: &SqliteStorage,
    upstreams: usize,
    config: Config,
    resync: bool,
) -> Result<(Follower<usize>, Option<ClusterId>), StartError> {
    let state = storage.log_state().await?;
    let ids: Vec<usize> = (0..upstreams).collect();
    let position = Position {
        seq: state.head_seq,
        hash: state.head_hash,
    };
    let follower = match (state.cluster_id, resync) {
        (None, _) => Follower::new(ids, config, unix_ms())?,
        // Checkpoints are verified against the cluster the replica holds.
        (Some(c), false) => Follower::resume(ids, config, unix_ms(), position)?.with_cluster_id(c),
        (Some(c), true) => Follower::resync(ids, config, unix_ms(), position)?.with_cluster_id(c),
    }
    // Each node retries on its own schedule after failures it shares with others.
    .with_jitter_seed(u64::from_le_bytes(coffer_crypto::random_array()));
    Ok((follower, state.cluster_id))
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Dropping a JoinHandle detaches the task: abort it, so that a half-received snapshot
        // releases the storage writer now (shutdown waits for the writer).
        if let Some(request) = self.request.take() {
            request.abort();
        }
    }
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("upstreams", &self.upstreams.urls)
            .field("applied", &self.follower.applied().seq)
            .finish_non_exhaustive()
    }
}
