//! What is read at scrape time: the plain counters of the crates below the server, gathered
//! into a [`Sample`] by the [`Source`] the server or edge installs.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use crate::{counter, gauge, labelled_counter};

/// Fills a [`Sample`] when `/metrics` is scraped. Implemented by the server and the edge over
/// what they hold (the domain service, storage, the edge's status); cheap: atomics and a
/// short lock or two.
pub trait Source: Send + Sync + fmt::Debug + 'static {
    fn sample(&self) -> Sample;
}

/// Runtime reads (core's counters). One read of a batch counts once per secret it returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeSample {
    pub served: u64,
    /// Refused: a binding the service lacks, or a secret without the service's scope.
    pub denied: u64,
    /// The bound secret does not exist (any more).
    pub not_found: u64,
    /// Look-ups (token, service, value) the runtime cache answered.
    pub cache_hits: u64,
    /// Look-ups that went to storage.
    pub cache_misses: u64,
}

/// The storage writer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageSample {
    /// Audit entries committed.
    pub audit_entries: u64,
    /// Audit entries that could not be written: refused by the database, or in a transaction
    /// that did not commit (the change they record was refused with them).
    pub audit_failures: u64,
}

/// An edge's replication state.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EdgeSample {
    /// The last change-log entry applied to the replica.
    pub applied_seq: u64,
    /// How old the replica's state is known to be, in seconds.
    pub lag_seconds: f64,
    /// Refused upstream data and local failures to apply.
    pub alarms: u64,
    /// The upstream in use: its position in `--upstream` (0 for the first).
    pub upstream_index: u64,
    /// How many upstreams are configured.
    pub upstreams: u64,
    /// Switches from one upstream to another.
    pub failovers: u64,
    /// Whether it serves the runtime API (synced, not revoked).
    pub serving: bool,
}

/// What a scrape reads from lower layers; each part is left out when the process has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub runtime: Option<RuntimeSample>,
    /// The change log's head: its last committed entry.
    pub change_log_head: Option<u64>,
    /// Unwrapped DEKs held in the keyring's cache.
    pub dek_cache_keys: Option<u64>,
    pub storage: Option<StorageSample>,
    pub edge: Option<EdgeSample>,
}

impl Sample {
    pub(crate) fn encode(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        if let Some(r) = self.runtime {
            labelled_counter(
                encoder,
                "coffer_runtime_reads",
                "Secrets read through the runtime API, by outcome: served, denied (a binding the service lacks, a secret without its scope) or not_found",
                "outcome",
                &[
                    ("served", r.served),
                    ("denied", r.denied),
                    ("not_found", r.not_found),
                ],
            )?;
            labelled_counter(
                encoder,
                "coffer_runtime_cache_lookups",
                "Look-ups of the runtime cache (token, service, value), by result: hit, or miss (read from storage)",
                "result",
                &[("hit", r.cache_hits), ("miss", r.cache_misses)],
            )?;
        }
        if let Some(head) = self.change_log_head {
            gauge(
                encoder,
                "coffer_change_log_head",
                "Sequence number of the change log's last committed entry (on an edge: of its replica)",
                head as i64,
            )?;
        }
        if let Some(keys) = self.dek_cache_keys {
            gauge(
                encoder,
                "coffer_dek_cache_keys",
                "Unwrapped data-encryption keys held in the keyring's cache",
                keys as i64,
            )?;
        }
        if let Some(s) = self.storage {
            counter(
                encoder,
                "coffer_audit_entries_written",
                "Audit entries committed to the audit log",
                s.audit_entries,
            )?;
            counter(
                encoder,
                "coffer_audit_write_failures",
                "Audit entries that could not be written (the changes they record were refused with them; aggregated entries are kept for the next round)",
                s.audit_failures,
            )?;
        }
        if let Some(e) = self.edge {
            gauge(
                encoder,
                "coffer_edge_applied_seq",
                "The last change-log entry applied to the edge's replica",
                e.applied_seq as i64,
            )?;
            gauge(
                encoder,
                "coffer_edge_lag_seconds",
                "How old the replica's state is known to be: seconds since the root signed the newest freshness statement whose head is applied",
                e.lag_seconds,
            )?;
            counter(
                encoder,
                "coffer_edge_alarms",
                "Replication alarms: refused upstream data (gap, hash, payload, signature, digest, truncation, media type) and local failures to apply verified data",
                e.alarms,
            )?;
            gauge(
                encoder,
                "coffer_edge_upstream_index",
                "The upstream in use, as its position among --upstream (0 for the first)",
                e.upstream_index as i64,
            )?;
            gauge(
                encoder,
                "coffer_edge_upstreams",
                "Upstreams configured",
                e.upstreams as i64,
            )?;
            counter(
                encoder,
                "coffer_edge_failovers",
                "Switches from one upstream to another",
                e.failovers,
            )?;
            gauge(
                encoder,
                "coffer_edge_serving",
                "1 while the edge serves the runtime API from its replica (synced, not revoked, not cut off past --max-staleness; as /healthz ready), else 0",
                i64::from(e.serving),
            )?;
        }
        Ok(())
    }
}
