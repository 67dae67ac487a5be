//! The metrics listener (`--metrics-listen`): plain HTTP on its own address, answering
//! `GET /metrics` and nothing else, never on the public port. Also what the control plane
//! reads at scrape time, and the storage writer's observer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use coffer_core::Coffer;
use coffer_metrics::{Metrics, RuntimeSample, Sample, Source, StorageSample};

use crate::listener::{HttpLimits, Listener, Peer, configure};
use crate::{DRAIN_TIMEOUT, ServerError};

/// Binds the metrics listener now, so that an address in use stops the start with one line
/// naming it. Warns when the address is not loopback: metrics hold no secret, but route
/// timings and counts are nobody else's business.
pub fn bind_metrics(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let error = |source| ServerError::MetricsBind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(error)?;
    listener.set_nonblocking(true).map_err(error)?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "--metrics-listen is not a loopback address: whoever reaches it reads the metrics (no secrets, but request counts and timings); keep it behind a firewall"
        );
    }
    Ok(listener)
}

/// What the metrics listener lets clients cost: a scraper needs a connection or two, so the
/// cap is small (a client that holds connections open cannot make the process run out of file
/// descriptors), and the header and idle timeouts are the public listener's.
pub const METRICS_LIMITS: HttpLimits = HttpLimits {
    max_connections: 16,
    max_connections_per_address: 16,
    header_timeout: HttpLimits::DEFAULT_HEADER_TIMEOUT,
    idle_timeout: HttpLimits::DEFAULT_IDLE_TIMEOUT,
};

/// Serves `GET /metrics` on `listener` until `shutdown` resolves, then drains for at most
/// [`DRAIN_TIMEOUT`]. Every other request is a plain 404 (405 for another method on
/// `/metrics`). Served through the capped [`Listener`] with [`METRICS_LIMITS`].
pub async fn serve_metrics(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::Other(format!("metrics listener: {e}")))?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|source| ServerError::MetricsBind { addr, source })?;
    let listener = Listener::new(listener, &METRICS_LIMITS);
    tracing::info!(%addr, "serving metrics on http://{addr}/metrics");
    let app = Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async { (StatusCode::NOT_FOUND, "only /metrics is served here\n") })
        .with_state(metrics);
    let handle = axum_server::Handle::<Peer>::new();
    let shutdown_handle = handle.clone();
    let stopping = tokio::spawn(async move {
        shutdown.await;
        shutdown_handle.graceful_shutdown(Some(DRAIN_TIMEOUT));
    });
    let service = axum::ServiceExt::<axum::http::Request<hyper::body::Incoming>>::into_make_service_with_connect_info::<SocketAddr>(app);
    let server = axum_server::Server::<Peer>::from_listener(listener);
    let served = configure(server, &METRICS_LIMITS)
        .handle(handle)
        .serve(service)
        .await;
    stopping.abort();
    served.map_err(|e| ServerError::Other(format!("metrics listener on {addr} failed: {e}")))
}

/// Waits for the metrics listener's task (told to stop already) for at most
/// [`DRAIN_TIMEOUT`], then aborts it: a client holding a scrape open must not keep the
/// process from shutting down.
pub async fn stop_metrics(task: tokio::task::JoinHandle<Result<(), ServerError>>) {
    let mut task = task;
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut task).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the metrics listener failed"),
        Ok(_) => {}
        Err(_) => {
            tracing::warn!("the metrics listener did not stop in time; closing it");
            task.abort();
            let _ = task.await;
        }
    }
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    scrape_answer(metrics.encode())
}

/// A scrape's answer: the text, or a 500 if it could not be encoded (never an empty 200,
/// which a Prometheus server would take for a target with no metrics).
fn scrape_answer(encoded: Result<String, std::fmt::Error>) -> Response {
    match encoded {
        Ok(text) => (
            [
                (header::CONTENT_TYPE, coffer_metrics::CONTENT_TYPE),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response(),
        Err(_) => {
            tracing::error!("the metrics could not be encoded");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CACHE_CONTROL, "no-store")],
                "the metrics could not be encoded\n",
            )
                .into_response()
        }
    }
}

/// Tells the metrics of every group commit of the storage writer.
#[derive(Debug)]
pub struct StorageObserver(pub Arc<Metrics>);

impl coffer_storage::WriteObserver for StorageObserver {
    fn committed(&self, jobs: usize, took: Duration) {
        self.0.committed(jobs, took);
    }

    fn failed(&self, _jobs: usize) {
        self.0.commit_failed();
    }
}

/// The runtime reads and cache look-ups of `coffer`, as metrics read them.
pub fn runtime_sample(coffer: &Coffer) -> RuntimeSample {
    let r = coffer.runtime_stats();
    RuntimeSample {
        served: r.served,
        denied: r.denied,
        not_found: r.not_found,
        cache_hits: r.cache_hits,
        cache_misses: r.cache_misses,
    }
}

/// What the control plane reports at scrape time.
#[derive(Debug)]
pub(crate) struct ControlPlane(pub(crate) Arc<Coffer>);

impl Source for ControlPlane {
    fn sample(&self) -> Sample {
        let coffer = &self.0;
        let storage = coffer.storage();
        let writes = storage.write_stats();
        Sample {
            runtime: Some(runtime_sample(coffer)),
            change_log_head: Some(storage.committed_head()),
            dek_cache_keys: Some(coffer.dek_cache_keys() as u64),
            storage: Some(StorageSample {
                audit_entries: writes.audit_entries,
                audit_failures: writes.audit_failures,
            }),
            edge: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scrape that cannot be encoded is a 500, not an empty 200.
    #[test]
    fn an_encoding_error_is_a_500() {
        assert_eq!(
            scrape_answer(Err(std::fmt::Error)).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let ok = scrape_answer(Ok("# EOF\n".into()));
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(
            ok.headers()[header::CONTENT_TYPE],
            coffer_metrics::CONTENT_TYPE
        );
    }
}
