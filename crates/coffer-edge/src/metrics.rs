//! What an edge reports at scrape time (`--metrics-listen`): its replication state from
//! [`EdgeStatus`], its replica's head, and, once it serves, the runtime reads of its `Coffer`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use coffer_metrics::{EdgeSample, Sample, Source};
use coffer_storage::{SqliteStorage, Storage};

use crate::serving::Serving;
use crate::status::EdgeStatus;

#[derive(Debug)]
pub(crate) struct EdgeSource {
    pub(crate) status: Arc<EdgeStatus>,
    pub(crate) storage: Arc<SqliteStorage>,
    pub(crate) serving: Arc<Serving>,
}

impl Source for EdgeSource {
    fn sample(&self) -> Sample {
        let status = &self.status;
        let coffer = self.serving.coffer();
        Sample {
            runtime: coffer.as_deref().map(coffer_server::runtime_sample),
            change_log_head: Some(self.storage.committed_head()),
            dek_cache_keys: coffer.as_deref().map(|c| c.dek_cache_keys() as u64),
            // An edge keeps no audit log.
            storage: None,
            edge: Some(EdgeSample {
                applied_seq: status.applied_seq(),
                lag_seconds: status.lag().as_secs_f64(),
                alarms: status.alarms.load(Ordering::Relaxed),
                upstream_index: status.current.load(Ordering::Relaxed) as u64,
                upstreams: status.upstreams.len() as u64,
                failovers: status.failovers.load(Ordering::Relaxed),
                serving: status.serves(),
            }),
        }
    }
}
