//! What the in-process benches share: a fresh data dir and the latency summary.

use std::time::Duration;

use coffer_core::{Coffer, Limits};
use coffer_server::{InitOutcome, init_data_dir, open_data_dir};

/// An initialised data dir, opened: the bootstrap account and its API token.
pub struct Fresh {
    pub init: InitOutcome,
    pub coffer: Coffer,
    /// Removed when dropped.
    pub _dir: tempfile::TempDir,
}

pub async fn fresh_data_dir() -> Fresh {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let init = init_data_dir(&data).await.expect("init");
    let coffer = open_data_dir(&data, Limits::default())
        .await
        .expect("open")
        .coffer;
    Fresh {
        init,
        coffer,
        _dir: dir,
    }
}

/// Mean, median and 99th percentile of `samples`, in microseconds.
pub fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    format!(
        "mean {:>6.2} us  p50 {:>6.2} us  p99 {:>6.2} us",
        mean.as_secs_f64() * 1e6,
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6
    )
}
