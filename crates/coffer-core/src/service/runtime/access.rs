//! Access events: runtime reads aggregated in memory per (token, binding, secret, outcome) and
//! written to the audit log by the periodic flush (on an edge: handed upstream), so that no
//! read waits for an audit write.

use std::collections::HashMap as StdHashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use coffer_storage::AuditEntry;
use coffer_types::{AccountId, SecretId, ServiceId, StoreId, Timestamp, TokenId};
use hashbrown::Equivalent;

use super::NameMap;
use crate::service::audit::{Actor, Details, Event, Target};
use crate::{
    AccessEvent, AccessOutcome, AccessRefusal, AuditAction, Coffer, CoreError, TargetKind,
};

/// Distinct (token, binding, outcome) keys the access log aggregates between flushes at most;
/// reads past it are counted in the log's `dropped` counter and reported at the next flush.
const ACCESS_CAPACITY: usize = 100_000;

/// What the access log aggregates reads by. Hashes as its borrowed form ([`AccessKeyRef`]),
/// which is what a read notes: the names are copied only for the first read of an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AccessKey {
    account: AccountId,
    service: ServiceId,
    token: TokenId,
    /// As the service asked for it (a binding it may not have).
    binding: String,
    store: Option<StoreId>,
    secret: Option<SecretId>,
    secret_name: String,
    /// `None` for a read that was served; otherwise why it was refused.
    refused: Option<AccessRefusal>,
}

/// An [`AccessKey`] borrowing its names from the read that is noted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AccessKeyRef<'a> {
    pub(super) account: AccountId,
    pub(super) service: ServiceId,
    pub(super) token: TokenId,
    pub(super) binding: &'a str,
    pub(super) store: Option<StoreId>,
    pub(super) secret: Option<SecretId>,
    pub(super) secret_name: &'a str,
    pub(super) refused: Option<AccessRefusal>,
}

impl AccessKey {
    pub(super) fn borrowed(&self) -> AccessKeyRef<'_> {
        AccessKeyRef {
            account: self.account,
            service: self.service,
            token: self.token,
            binding: &self.binding,
            store: self.store,
            secret: self.secret,
            secret_name: &self.secret_name,
            refused: self.refused,
        }
    }
}

impl AccessKeyRef<'_> {
    pub(super) fn to_key(self) -> AccessKey {
        AccessKey {
            account: self.account,
            service: self.service,
            token: self.token,
            binding: self.binding.to_owned(),
            store: self.store,
            secret: self.secret,
            secret_name: self.secret_name.to_owned(),
            refused: self.refused,
        }
    }
}

impl Hash for AccessKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.borrowed().hash(state);
    }
}

/// The token, the names, the secret and the outcome: the account and the service follow from
/// the token, the store from the binding, so they add nothing to the hash (equality still
/// compares every field). Fewer bytes through SipHash on every read.
impl Hash for AccessKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.token.hash(state);
        self.binding.hash(state);
        self.secret.hash(state);
        self.secret_name.hash(state);
        self.refused.hash(state);
    }
}

impl Equivalent<AccessKey> for AccessKeyRef<'_> {
    fn equivalent(&self, key: &AccessKey) -> bool {
        *self == key.borrowed()
    }
}

#[derive(Debug, Clone)]
struct AccessCount {
    service_name: String,
    reads: u64,
    first: Timestamp,
    last: Timestamp,
}

/// Runtime reads noted since the last flush, aggregated per token, binding, secret and outcome.
#[derive(Debug, Default)]
pub(crate) struct AccessLog {
    inner: Mutex<AccessInner>,
    /// Reads noted since start, by outcome (for metrics; never reset).
    pub(super) served: AtomicU64,
    pub(super) denied: AtomicU64,
    pub(super) not_found: AtomicU64,
}

#[derive(Debug, Default)]
struct AccessInner {
    counts: NameMap<AccessKey, AccessCount>,
    /// Reads not aggregated because the map was full, per account.
    dropped: StdHashMap<AccountId, u64>,
}

impl AccessLog {
    pub(super) fn note(&self, key: AccessKeyRef<'_>, service_name: &str) {
        self.note_counted_as(key, service_name, key.refused);
    }

    /// Notes `key` in the access log, counted in the metrics as `counted` (what the caller
    /// was told, which may say less than the key: a store binding's scope miss is answered,
    /// and so counted, as not found).
    pub(super) fn note_counted_as(
        &self,
        key: AccessKeyRef<'_>,
        service_name: &str,
        counted: Option<AccessRefusal>,
    ) {
        let outcome = match counted {
            None => &self.served,
            Some(AccessRefusal::SecretNotFound) => &self.not_found,
            Some(AccessRefusal::NoSuchBinding | AccessRefusal::ScopeMissing) => &self.denied,
        };
        outcome.fetch_add(1, Ordering::Relaxed);
        let now = Timestamp::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = inner.counts.get_mut(&key) {
            c.reads += 1;
            c.last = now;
            return;
        }
        if inner.counts.len() >= ACCESS_CAPACITY {
            *inner.dropped.entry(key.account).or_default() += 1;
            return;
        }
        inner.counts.insert(
            key.to_key(),
            AccessCount {
                service_name: service_name.to_owned(),
                reads: 1,
                first: now,
                last: now,
            },
        );
    }

    fn take(&self) -> AccessInner {
        std::mem::take(&mut *self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Everything noted since the last take, as events.
    pub(super) fn take_events(&self) -> Vec<AccessEvent> {
        let inner = self.take();
        let mut events: Vec<AccessEvent> = inner
            .counts
            .into_iter()
            .map(|(key, count)| AccessEvent {
                account: key.account,
                service: Some(key.service),
                service_name: count.service_name,
                token: Some(key.token),
                binding: key.binding,
                store: key.store,
                secret: key.secret,
                secret_name: key.secret_name,
                outcome: key
                    .refused
                    .map_or(AccessOutcome::Served, AccessOutcome::Refused),
                reads: count.reads,
                first: count.first,
                last: count.last,
            })
            .collect();
        let now = Timestamp::now();
        events.extend(inner.dropped.into_iter().map(|(account, n)| AccessEvent {
            account,
            service: None,
            service_name: String::new(),
            token: None,
            binding: String::new(),
            store: None,
            secret: None,
            secret_name: String::new(),
            outcome: AccessOutcome::Unrecorded,
            reads: n,
            first: now,
            last: now,
        }));
        events
    }

    /// Puts back events that could not be delivered.
    pub(super) fn restore_events(&self, events: Vec<AccessEvent>) {
        let mut back = AccessInner::default();
        for e in events {
            let refused = match e.outcome {
                AccessOutcome::Served => None,
                AccessOutcome::Refused(r) => Some(r),
                AccessOutcome::Unrecorded => {
                    *back.dropped.entry(e.account).or_default() += e.reads;
                    continue;
                }
            };
            let (Some(service), Some(token)) = (e.service, e.token) else {
                continue;
            };
            back.counts.insert(
                AccessKey {
                    account: e.account,
                    service,
                    token,
                    binding: e.binding,
                    store: e.store,
                    secret: e.secret,
                    secret_name: e.secret_name,
                    refused,
                },
                AccessCount {
                    service_name: e.service_name,
                    reads: e.reads,
                    first: e.first,
                    last: e.last,
                },
            );
        }
        self.restore(back);
    }

    /// Puts back what could not be written, merging with reads noted meanwhile.
    fn restore(&self, back: AccessInner) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (key, count) in back.counts {
            match inner.counts.get_mut(&key) {
                Some(c) => {
                    c.reads += count.reads;
                    c.first = c.first.min(count.first);
                    c.last = c.last.max(count.last);
                }
                None => {
                    inner.counts.insert(key, count);
                }
            }
        }
        for (account, n) in back.dropped {
            *inner.dropped.entry(account).or_default() += n;
        }
    }
}

impl Coffer {
    /// Writes the access events aggregated since the last flush to the audit log: one `access`
    /// entry per (token, binding, secret, outcome) with the number of reads and the times of
    /// the first and last. The server calls this every few seconds and at shutdown; if the
    /// write fails the counts are kept for the next flush. A crash loses at most one interval.
    pub async fn flush_access_events(&self) -> Result<usize, CoreError> {
        let events = self.access_log.take_events();
        if events.is_empty() {
            return Ok(0);
        }
        let entries = self.access_entries(&events, None, None)?;
        // Entries of deleted accounts cannot be written; storage keeps chains per account, so
        // a failure for one would refuse the whole batch. Write them in one call and, on
        // failure, keep them for the next flush.
        let n = entries.len();
        match self.storage.append_audit(&entries).await {
            Ok(()) => Ok(n),
            Err(e) => {
                self.access_log.restore_events(events);
                Err(e.into())
            }
        }
    }

    /// Takes the access events aggregated since the last call, for an edge to send upstream
    /// (instead of [`Coffer::flush_access_events`]). Give back what could not be kept with
    /// [`Coffer::restore_access_events`].
    pub fn take_access_events(&self) -> Vec<AccessEvent> {
        self.access_log.take_events()
    }

    /// Merges events back into the access log (an edge that could not keep them).
    pub fn restore_access_events(&self, events: Vec<AccessEvent>) {
        self.access_log.restore_events(events);
    }

    /// Records access events an edge node delivered (on the control plane): one `access`
    /// entry per event in its account's audit log, naming the edge that served the reads
    /// (`observed_by`: the delivering node, or an edge behind a relay), all in one transaction
    /// and exactly once per `batch_id` (`Ok(false)`, nothing written, for a batch delivered
    /// before). Events of accounts this instance never had (no account, no audit chain) are
    /// dropped with a warning rather than starting a chain for an unknown id.
    pub async fn record_edge_access(
        &self,
        delivered_by: (TokenId, &str),
        observed_by: (TokenId, &str),
        batch_id: [u8; 16],
        events: Vec<AccessEvent>,
    ) -> Result<bool, CoreError> {
        let mut known: StdHashMap<AccountId, bool> = StdHashMap::new();
        let mut kept = Vec::with_capacity(events.len());
        for e in events {
            let is_known = match known.get(&e.account) {
                Some(k) => *k,
                None => {
                    let k = self.storage.get_account(e.account).await?.is_some()
                        || self.storage.audit_head(e.account).await?.is_some();
                    known.insert(e.account, k);
                    k
                }
            };
            if is_known {
                kept.push(e);
            } else {
                tracing::warn!(node = %observed_by.1, account = %e.account, "dropping access events of an unknown account");
            }
        }
        // Forwarded by a relay: say which too, since the relay vouches for the attribution.
        let relay = (delivered_by.0 != observed_by.0).then_some(delivered_by);
        let entries = self.access_entries(&kept, Some(observed_by), relay)?;
        Ok(self
            .storage
            .record_access_batch(batch_id, delivered_by.0, &entries)
            .await?)
    }

    /// The audit entries for access events; `edge` names the node that observed them (none:
    /// this process), `relay` the relay that forwarded them.
    pub(crate) fn access_entries(
        &self,
        events: &[AccessEvent],
        edge: Option<(TokenId, &str)>,
        relay: Option<(TokenId, &str)>,
    ) -> Result<Vec<AuditEntry>, CoreError> {
        let mut entries: Vec<AuditEntry> = Vec::with_capacity(events.len());
        for e in events {
            let (mut target, who) = match (e.outcome, e.service, e.token) {
                (AccessOutcome::Unrecorded, _, _) | (_, None, _) | (_, _, None) => {
                    (Target::of(TargetKind::Service), Actor::Instance)
                }
                (_, Some(_), Some(token_id)) => (
                    match e.store {
                        Some(store) => Target::secret(store, e.secret, Some(&e.secret_name)),
                        None => Target::of(TargetKind::Binding),
                    },
                    Actor::Service { token_id },
                ),
            };
            if e.outcome != AccessOutcome::Unrecorded {
                target.service_id = e.service;
                target.service_name = Some(e.service_name.clone());
                target.binding = (!e.binding.is_empty()).then(|| e.binding.clone());
            }
            let unrecorded = e.outcome == AccessOutcome::Unrecorded;
            let details = Details {
                reads: Some(e.reads),
                first_read: (!unrecorded).then(|| e.first.to_rfc3339()),
                last_read: (!unrecorded).then(|| e.last.to_rfc3339()),
                reason: match e.outcome {
                    AccessOutcome::Served => None,
                    AccessOutcome::Refused(r) => Some(r.as_str().to_owned()),
                    AccessOutcome::Unrecorded => {
                        Some("too many distinct reads in one interval to record each".into())
                    }
                },
                edge_node_id: edge.map(|(id, _)| id),
                edge_node: edge.map(|(_, name)| name.to_owned()),
                edge_relay_id: relay.map(|(id, _)| id),
                edge_relay: relay.map(|(_, name)| name.to_owned()),
                ..Details::default()
            };
            entries.push(self.audit_entry(
                e.account,
                Event {
                    action: AuditAction::Access,
                    outcome: e.outcome.audit_outcome(),
                    target,
                    details,
                    who,
                },
            )?);
        }
        Ok(entries)
    }
}
