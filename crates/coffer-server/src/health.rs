//! The control plane's `GET /healthz`: what a load balancer asks before sending it traffic.
//!
//! On the embedded SQLite store it answers 200 `{"status":"ok"}` whenever the process serves
//! HTTP: the database is a file of the process, there is nothing apart to lose. On PostgreSQL
//! it covers the database too: 200 `{"status":"ok","database":"ok"}` while the database
//! answers, 503 `{"status":"unavailable","database":"unreachable"}` while it does not, and 200
//! again by itself once it does. The check is cheap for the database: one probe (a read of the
//! change log's head row, on a connection of the probe's own rather than the read pool's) at
//! most every [`PROBE_INTERVAL`], shared by every request that asks meanwhile, and given
//! [`PROBE_TIMEOUT`] to answer; no request waits longer than that.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use coffer_storage::Storage;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use tokio::time::Instant;

/// How long one probe's result is served before the next request probes again.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How long a probe may take before the database counts as unreachable (and the most a
/// `/healthz` request waits).
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One probe: `Err` says why the database did not answer (never a password).
type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The database's reachability, probed at most every [`PROBE_INTERVAL`].
pub(crate) struct DatabaseProbe {
    probe: Probe,
    /// [`PROBE_INTERVAL`] and [`PROBE_TIMEOUT`] (shorter in unit tests).
    interval: Duration,
    timeout: Duration,
    state: Arc<Mutex<ProbeState>>,
}

#[derive(Default)]
struct ProbeState {
    /// When the last probe ended and whether the database answered it.
    last: Option<(Instant, bool)>,
    /// The probe running now: every request arriving meanwhile waits for it rather than
    /// probing too. It runs as a task of its own, so a request that goes away does not end it.
    running: Option<Shared<BoxFuture<'static, bool>>>,
}

impl std::fmt::Debug for DatabaseProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseProbe").finish_non_exhaustive()
    }
}

impl DatabaseProbe {
    /// Probes `storage` with [`Storage::probe`]: on PostgreSQL a read of its change log's head
    /// (one indexed row) on a connection of the probe's own, never one of the read pool's, so
    /// that a flood of requests filling that pool does not turn `/healthz` to 503.
    pub(crate) fn new(storage: Arc<dyn Storage>) -> DatabaseProbe {
        DatabaseProbe::with(
            Arc::new(move || {
                let storage = Arc::clone(&storage);
                Box::pin(async move {
                    storage
                        .probe()
                        .await
                        // Storage errors name what failed, never the URL's password.
                        .map_err(|e| e.to_string())
                })
            }),
            PROBE_INTERVAL,
            PROBE_TIMEOUT,
        )
    }

    fn with(probe: Probe, interval: Duration, timeout: Duration) -> DatabaseProbe {
        DatabaseProbe {
            probe,
            interval,
            timeout,
            state: Arc::default(),
        }
    }

    /// Whether the database answered the latest probe, probing first if that one is older than
    /// [`PROBE_INTERVAL`]. Returns within [`PROBE_TIMEOUT`] (false if it could not tell by then).
    pub(crate) async fn reachable(&self) -> bool {
        let running = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, reachable)) = state.last
                && at.elapsed() < self.interval
            {
                return reachable;
            }
            state.running.get_or_insert_with(|| self.start()).clone()
        };
        running.await
    }

    /// Starts a probe, which records its result when it ends.
    fn start(&self) -> Shared<BoxFuture<'static, bool>> {
        let (probe, timeout, state) = (
            Arc::clone(&self.probe),
            self.timeout,
            Arc::clone(&self.state),
        );
        let task = tokio::spawn(async move {
            let outcome = tokio::time::timeout(timeout, probe()).await;
            let reachable = matches!(outcome, Ok(Ok(())));
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            // Logged when it changes, not at every probe: a load balancer asks every few
            // seconds.
            let was = state.last.map(|(_, r)| r);
            if was != Some(reachable) {
                match outcome {
                    Ok(Ok(())) if was.is_some() => {
                        tracing::info!("the database answers again; /healthz reports it ok");
                    }
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "the database does not answer; /healthz answers 503");
                    }
                    Err(_) => tracing::warn!(
                        timeout_ms = timeout.as_millis() as u64,
                        "the database did not answer in time; /healthz answers 503"
                    ),
                }
            }
            state.last = Some((Instant::now(), reachable));
            state.running = None;
            reachable
        });
        let state = Arc::clone(&self.state);
        async move {
            match task.await {
                Ok(reachable) => reachable,
                // The task panicked (or the runtime is going down) before it recorded anything:
                // it is no longer running, so the next request probes again rather than wait
                // for it forever.
                Err(e) => {
                    tracing::error!(error = %e, "the /healthz database probe failed; probing again at the next request");
                    state
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .running = None;
                    false
                }
            }
        }
        .boxed()
        .shared()
    }
}

/// The answer to `GET /healthz` on a control plane; `probe` is set on PostgreSQL.
pub(crate) async fn healthz(probe: Option<&DatabaseProbe>) -> Response {
    let (status, body) = match probe {
        None => (StatusCode::OK, serde_json::json!({ "status": "ok" })),
        Some(p) if p.reachable().await => (
            StatusCode::OK,
            serde_json::json!({ "status": "ok", "database": "ok" }),
        ),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "unavailable", "database": "unreachable" }),
        ),
    };
    (
        status,
        [(header::CACHE_CONTROL, crate::static_headers::no_store())],
        axum::Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    const INTERVAL: Duration = Duration::from_millis(300);
    const TIMEOUT: Duration = Duration::from_millis(200);

    /// A probe that counts its calls, answers as `up` says, and hangs while `hang` is set.
    fn counting(up: Arc<AtomicBool>, hang: Arc<AtomicBool>) -> (DatabaseProbe, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let probe = DatabaseProbe::with(
            Arc::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let (up, hang) = (up.load(Ordering::SeqCst), hang.load(Ordering::SeqCst));
                Box::pin(async move {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    // A probe takes a little while: concurrent requests arrive during it.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if up { Ok(()) } else { Err("down".into()) }
                })
            }),
            INTERVAL,
            TIMEOUT,
        );
        (probe, calls)
    }

    #[tokio::test]
    async fn one_probe_an_interval_shared_by_concurrent_requests() {
        let up = Arc::new(AtomicBool::new(true));
        let hang = Arc::new(AtomicBool::new(false));
        let (probe, calls) = counting(up.clone(), hang);
        let answers = futures_util::future::join_all((0..50).map(|_| probe.reachable())).await;
        assert!(answers.iter().all(|&a| a));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "50 requests at once, one probe"
        );
        // Within the interval the result is served as it is, even if the database went away.
        up.store(false, Ordering::SeqCst);
        assert!(probe.reachable().await);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // After it, the next request probes again and sees the database gone...
        tokio::time::sleep(INTERVAL).await;
        assert!(!probe.reachable().await);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // ... and back, by itself.
        up.store(true, Ordering::SeqCst);
        tokio::time::sleep(INTERVAL).await;
        assert!(probe.reachable().await);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_probe_that_panicked_is_replaced_by_the_next_request() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let probe = DatabaseProbe::with(
            Arc::new(move || {
                let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
                Box::pin(async move {
                    assert!(!first, "the first probe panics");
                    Ok(())
                })
            }),
            INTERVAL,
            TIMEOUT,
        );
        assert!(!probe.reachable().await, "a panicked probe tells nothing");
        assert!(
            probe.state.lock().unwrap().running.is_none(),
            "nothing left running"
        );
        assert!(probe.reachable().await, "the next request probes again");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_database_that_does_not_answer_is_unreachable_within_the_timeout() {
        let up = Arc::new(AtomicBool::new(true));
        let hang = Arc::new(AtomicBool::new(true));
        let (probe, calls) = counting(up, hang.clone());
        let started = Instant::now();
        let answers = futures_util::future::join_all((0..10).map(|_| probe.reachable())).await;
        let waited = started.elapsed();
        assert!(answers.iter().all(|&a| !a), "a hung probe is a failed one");
        assert!(
            waited >= TIMEOUT && waited < TIMEOUT + Duration::from_millis(150),
            "no request waits past the timeout: {waited:?}"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the waiters share the hung probe"
        );
        // Its result is kept for the interval: a hung database is not probed more often.
        assert!(!probe.reachable().await);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        hang.store(false, Ordering::SeqCst);
        tokio::time::sleep(INTERVAL).await;
        assert!(probe.reachable().await);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
