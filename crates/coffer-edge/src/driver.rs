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
use std::time::Duration;

use coffer_replication::wire::{ClusterId, FeedAnswer, FeedBody};
use coffer_replication::{Config, Follower, Input, Output, Position};
use coffer_server::replication::unix_ms;
use coffer_storage::{SqliteStorage, Storage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::status::EdgeStatus;
use crate::upstream::{FetchError, Staged, Upstreams, check_cluster};

/// How often the follower is given the time.
const TICK: Duration = Duration::from_millis(100);

enum Msg {
    Feed {
        from: usize,
        answer: Result<FeedAnswer, FetchError>,
    },
    Snapshot {
        from: usize,
        staged: Result<Staged, FetchError>,
    },
}

pub(crate) struct Driver {
    follower: Follower<usize>,
    config: Config,
    upstreams: Upstreams,
    storage: Arc<SqliteStorage>,
    status: Arc<EdgeStatus>,
    /// The cluster this replica belongs to (`None` until the first snapshot is installed).
    cluster: Option<ClusterId>,
    long_poll: Duration,
    request: Option<JoinHandle<()>>,
    staged: Option<Staged>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
}

impl Driver {
    pub(crate) async fn new(
        upstreams: Upstreams,
        storage: Arc<SqliteStorage>,
        status: Arc<EdgeStatus>,
        config: Config,
        long_poll: Duration,
    ) -> Result<Driver, String> {
        let state = storage
            .log_state()
            .await
            .map_err(|e| format!("cannot read the replica's position: {e}"))?;
        let n = upstreams.urls.len();
        let follower = match state.cluster_id {
            Some(_) => Follower::resume(
                (0..n).collect(),
                config,
                unix_ms(),
                Position {
                    seq: state.head_seq,
                    hash: state.head_hash,
                },
            ),
            None => Follower::new((0..n).collect(), config, unix_ms()),
        }
        .map_err(|e| e.to_string())?;
        status.set_applied(state.head_seq);
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Driver {
            follower,
            config,
            upstreams,
            storage,
            status,
            cluster: state.cluster_id,
            long_poll,
            request: None,
            staged: None,
            tx,
            rx,
        })
    }

    /// Runs until the task is aborted.
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
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
            if let Some(origin) = self.follower.freshest_origin_ms() {
                self.status
                    .freshest_origin
                    .fetch_max(origin, Ordering::AcqRel);
            }
            self.status
                .current
                .store(*self.follower.current_upstream(), Ordering::Release);
            self.status.set_phase(self.follower.phase());
        }
    }

    fn inputs_of(&mut self, msg: Msg) -> Vec<Input<usize>> {
        match msg {
            Msg::Feed { from, answer } => match answer {
                Err(e) => self.failed(from, &e),
                Ok(answer) => {
                    if let Err(e) = check_cluster(self.cluster, answer.cluster_id) {
                        return self.failed(from, &e);
                    }
                    if from == *self.follower.current_upstream() {
                        self.status.heard(answer.head_seq);
                    }
                    let heartbeat = Input::Heartbeat {
                        from,
                        head_seq: answer.head_seq,
                        origin_ms: answer.origin_ms,
                    };
                    let body = match answer.body {
                        FeedBody::Entries(entries) => {
                            if entries.is_empty() && self.follower.applied().seq >= answer.head_seq
                            {
                                self.status.mark_synced();
                            }
                            Input::Entries { from, entries }
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
                    vec![heartbeat, body]
                }
            },
            Msg::Snapshot { from, staged } => match staged {
                Err(e) => self.failed(from, &e),
                Ok(staged) => {
                    if let Err(e) = check_cluster(self.cluster, staged.cluster_id) {
                        return self.failed(from, &e);
                    }
                    if from == *self.follower.current_upstream() {
                        self.status.heard(staged.position.seq);
                    }
                    let input = Input::StagedSnapshot {
                        from,
                        position: staged.position,
                        intact: staged.intact,
                    };
                    let heartbeat = Input::Heartbeat {
                        from,
                        head_seq: staged.position.seq,
                        origin_ms: staged.origin_ms,
                    };
                    self.staged = Some(staged);
                    vec![heartbeat, input]
                }
            },
        }
    }

    fn failed(&self, from: usize, e: &FetchError) -> Vec<Input<usize>> {
        let url = &self.upstreams.urls[from];
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
            (FetchError::OtherCluster { .. }, _) => tracing::error!(upstream = %url, "{e}"),
            (_, Some(why)) if why.contains("refusing it") => {
                tracing::error!(upstream = %url, "{why}");
            }
            (_, Some(why)) => tracing::warn!(upstream = %url, "{why}"),
            _ => tracing::warn!(upstream = %url, error = %e, "upstream request failed"),
        }
        self.status.set_error(format!(
            "{url}: {}",
            refined.unwrap_or_else(|| e.to_string())
        ));
        vec![Input::Failed { from }]
    }

    async fn carry_out(&mut self, outputs: Vec<Output<usize>>) {
        let mut queue: VecDeque<Output<usize>> = outputs.into();
        while let Some(output) = queue.pop_front() {
            match output {
                Output::Apply(entries) => {
                    let Some(last) = entries.last().map(|e| e.seq) else {
                        continue;
                    };
                    let n = entries.len();
                    match self.storage.apply_entries(entries).await {
                        Ok(()) => {
                            tracing::debug!(last, n, "applied feed entries");
                            self.status.set_applied(last);
                            queue.extend(
                                self.follower
                                    .handle(unix_ms(), Input::Applied { seq: last }),
                            );
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "applying feed entries failed; restarting replication from the stored position");
                            self.restart().await;
                            return;
                        }
                    }
                }
                Output::InstallStaged(position) => {
                    let Some(staged) = self.staged.take() else {
                        tracing::error!("the follower installs a snapshot that is not staged");
                        self.restart().await;
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
                            tracing::error!(error = %e, "installing a snapshot failed; restarting replication from the stored position");
                            self.restart().await;
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
                    self.status.alarms.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        upstream = %self.upstreams.urls[alarm.upstream],
                        kind = ?alarm.kind,
                        detail = %alarm.detail,
                        "REPLICATION ALARM: refused what the upstream sent; nothing of it was applied; resyncing from a snapshot"
                    );
                    self.status.set_error(format!(
                        "{}: {:?}: {}",
                        self.upstreams.urls[alarm.upstream], alarm.kind, alarm.detail
                    ));
                }
                Output::Switched { from, to, why } => {
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
                    let staged = upstreams.snapshot(to, &storage, expected).await;
                    let _ = tx.send(Msg::Snapshot { from: to, staged });
                })
            }
        };
        self.request = Some(handle);
    }

    /// After a local failure: forget what is in flight and follow on from what is durable.
    async fn restart(&mut self) {
        if let Some(previous) = self.request.take() {
            previous.abort();
        }
        self.staged = None;
        // Give a failing disk a moment rather than spinning on it.
        tokio::time::sleep(Duration::from_secs(1)).await;
        match Driver::new(
            self.upstreams.clone(),
            self.storage.clone(),
            self.status.clone(),
            self.config,
            self.long_poll,
        )
        .await
        {
            Ok(fresh) => {
                self.follower = fresh.follower;
                self.cluster = fresh.cluster;
            }
            Err(e) => tracing::error!(error = %e, "cannot restart replication; retrying"),
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
