//! Failed authentications, aggregated like access events: a failure costs a counter in memory,
//! not a durable audit write. Every interval (and at shutdown) the server writes one `login`
//! entry per (token, client address, reason) that failed in it, with the number of attempts and
//! the times of the first and last, all in one transaction; and one `rate_limited` entry per
//! address that used up its failed-authentication budget. A flood of failures from many
//! addresses therefore costs one row per address and interval, written together, rather than a
//! write and an fsync per failure.
//!
//! What the log says is unchanged: who (the token id, when it exists; never the token), from
//! where (the client address), when (first and last), how many, and why. Failures with a token
//! id that does not exist belong to no account and are not recorded, as before. The price, as
//! for access events: a crash loses at most one interval of counts, and the entries carry no
//! request id (one entry stands for many requests).

use std::collections::HashMap;
use std::sync::Mutex;

use coffer_storage::AuditEntry;
use coffer_types::{AccountId, Timestamp, TokenId};

use super::Coffer;
use super::audit::{Actor, Details, Event, Target};
use crate::{AuditAction, AuditOutcome, TargetKind};
use crate::{CoreError, RequestContext};

/// Distinct keys aggregated between flushes at most; failures past it are counted per account
/// and recorded as one `unrecorded` entry each. (Smaller in tests, to reach it.)
pub(crate) const CAPACITY: usize = if cfg!(test) { 1_000 } else { 100_000 };

/// What one entry will stand for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FailureKey {
    /// The log it goes to; `None`: the instance's own (the operator's account), looked up at the
    /// flush.
    account: Option<AccountId>,
    kind: FailureKind,
    client: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FailureKind {
    /// A failed login with the id of a token that exists, and why it failed.
    Login {
        token: TokenId,
        reason: &'static str,
    },
    /// An address used up its budget of `budget` failures a window.
    RateLimited { budget: u32 },
}

#[derive(Debug, Clone, Copy)]
struct FailureCount {
    attempts: u64,
    first: Timestamp,
    last: Timestamp,
}

#[derive(Debug, Default)]
struct Inner {
    counts: HashMap<FailureKey, FailureCount>,
    /// Failures not aggregated because the map was full, per log (`None`: the instance's).
    dropped: HashMap<Option<AccountId>, FailureCount>,
}

/// Failed authentications noted since the last flush.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    inner: Mutex<Inner>,
}

impl FailureLog {
    fn note(&self, key: FailureKey) {
        let now = Timestamp::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let bump = |c: &mut FailureCount| {
            c.attempts += 1;
            c.last = now;
        };
        if let Some(c) = inner.counts.get_mut(&key) {
            bump(c);
            return;
        }
        let fresh = FailureCount {
            attempts: 1,
            first: now,
            last: now,
        };
        if inner.counts.len() >= CAPACITY {
            match inner.dropped.get_mut(&key.account) {
                Some(c) => bump(c),
                None => {
                    inner.dropped.insert(key.account, fresh);
                }
            }
            return;
        }
        inner.counts.insert(key, fresh);
    }

    fn take(&self) -> Inner {
        std::mem::take(&mut *self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts back what could not be written, merging with failures noted meanwhile.
    fn restore(&self, back: Inner) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let merge = |into: &mut FailureCount, c: FailureCount| {
            into.attempts += c.attempts;
            into.first = into.first.min(c.first);
            into.last = into.last.max(c.last);
        };
        for (key, c) in back.counts {
            match inner.counts.get_mut(&key) {
                Some(into) => merge(into, c),
                None => {
                    inner.counts.insert(key, c);
                }
            }
        }
        for (account, c) in back.dropped {
            match inner.dropped.get_mut(&account) {
                Some(into) => merge(into, c),
                None => {
                    inner.dropped.insert(account, c);
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counts
            .len()
    }
}

/// The client a failure is counted under: an IPv4 address as it is, an IPv6 address as its /64
/// (`2001:db8:1:2::/64`), which a client usually holds whole, like the failed-authentication
/// limit: otherwise one host with a /48 could write an entry per address into an account's log
/// every interval.
fn grouped(client: &str) -> String {
    match client.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
        _ => client.to_owned(),
    }
}

impl Coffer {
    /// Notes a failed login with the id of a token that exists (its account is known).
    pub(crate) fn note_failed_login(
        &self,
        account: AccountId,
        token: TokenId,
        context: &RequestContext,
        reason: &'static str,
    ) {
        self.auth_failures.note(FailureKey {
            account: Some(account),
            kind: FailureKind::Login { token, reason },
            client: context.client.as_deref().map(grouped),
        });
    }

    /// Records that an address used up its failed-authentication budget (`failures` a
    /// window). Guesses with unknown token ids belong to no account, so this goes to the
    /// instance's own log: the log of the account holding the operator token. Noted in memory
    /// and written with the next [`Coffer::flush_auth_failures`].
    pub async fn record_rate_limited(&self, client: &str, failures: u32) {
        if self.replica {
            // An edge keeps no audit log (and its replica holds no API tokens to find the
            // operator by); the warning in its log is the record.
            return;
        }
        self.auth_failures.note(FailureKey {
            account: None,
            kind: FailureKind::RateLimited { budget: failures },
            client: Some(grouped(client)),
        });
    }

    /// Writes the failed authentications noted since the last flush to the audit log, in one
    /// transaction: one entry per (token, address, reason) and per address that used up its
    /// budget, with the number of attempts and the first and last. The server calls this every
    /// few seconds and at shutdown; if the write fails the counts are kept for the next flush.
    pub async fn flush_auth_failures(&self) -> Result<usize, CoreError> {
        let noted = self.auth_failures.take();
        if noted.counts.is_empty() && noted.dropped.is_empty() {
            return Ok(0);
        }
        let result = match self.failure_entries(&noted).await {
            Ok(entries) => self
                .storage
                .append_audit(&entries)
                .await
                .map(|()| entries.len())
                .map_err(CoreError::from),
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.auth_failures.restore(noted);
        }
        result
    }

    async fn failure_entries(&self, noted: &Inner) -> Result<Vec<AuditEntry>, CoreError> {
        // The instance's own log, for rate limits (and for nothing, before `coffer init` made
        // the operator: such failures cannot exist).
        let needs_instance =
            noted.counts.keys().any(|k| k.account.is_none()) || noted.dropped.contains_key(&None);
        let instance = if needs_instance {
            self.operator_account().await?
        } else {
            None
        };
        let mut entries = Vec::with_capacity(noted.counts.len() + noted.dropped.len());
        let details = |c: &FailureCount, reason: String| Details {
            reason: Some(reason),
            attempts: Some(c.attempts),
            first_attempt: Some(c.first.to_rfc3339()),
            last_attempt: Some(c.last.to_rfc3339()),
            ..Details::default()
        };
        for (key, c) in &noted.counts {
            let Some(account) = key.account.or(instance) else {
                continue;
            };
            let context = RequestContext {
                request_id: String::new(),
                client: key.client.clone(),
            };
            let event = match key.kind {
                FailureKind::Login { token, reason } => Event {
                    action: AuditAction::Login,
                    outcome: AuditOutcome::Denied,
                    target: Target::token(Some(token), None),
                    details: details(c, reason.to_owned()),
                    who: Actor::Token {
                        id: token,
                        context: &context,
                    },
                },
                FailureKind::RateLimited { budget } => Event {
                    action: AuditAction::Login,
                    outcome: AuditOutcome::RateLimited,
                    target: instance_target(),
                    details: details(
                        c,
                        format!(
                            "{budget} failed authentications from this address within a minute"
                        ),
                    ),
                    who: Actor::Anonymous { context: &context },
                },
            };
            entries.push(self.audit_entry(account, event)?);
        }
        let nobody = RequestContext::default();
        for (account, c) in &noted.dropped {
            let Some(account) = account.or(instance) else {
                continue;
            };
            let event = Event {
                action: AuditAction::Login,
                outcome: AuditOutcome::Unrecorded,
                target: instance_target(),
                details: details(
                    c,
                    "too many distinct failed authentications in one interval to record each"
                        .to_owned(),
                ),
                who: Actor::Anonymous { context: &nobody },
            };
            entries.push(self.audit_entry(account, event)?);
        }
        Ok(entries)
    }
}

fn instance_target() -> Target {
    Target::of(TargetKind::Instance)
}
