//! The codec of access batches: an edge encodes the access events it counted, a relay names the
//! edge that served them, and the control plane decodes what it is delivered, checking every
//! field's shape (a delivering node is authenticated, not trusted to be well formed).

use std::str::FromStr;

use coffer_types::{
    AccessEvent, AccessOutcome, AccessRefusal, AccountId, AuditOutcome, IdError, NAME_MAX_LEN,
    NodeName, SecretId, SecretName, ServiceId, ServiceName, StoreId, Timestamp, TokenId,
};

use super::{AccessBatch, AccessEvent as WireEvent, ObservedBy};
use crate::ErrorCode;

/// Events per access batch at most (an edge sends one batch per interval, aggregated).
pub const MAX_EVENTS: usize = 100_000;

/// The node that served the reads of an access batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observer {
    pub node_id: TokenId,
    pub node_name: String,
}

/// Why a delivered batch is refused: the error code, the field (a JSON pointer) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    pub code: ErrorCode,
    pub pointer: Option<String>,
    pub message: String,
}

fn bad(pointer: String, message: impl Into<String>) -> BatchError {
    BatchError {
        code: ErrorCode::InvalidField,
        pointer: Some(pointer),
        message: message.into(),
    }
}

impl AccessBatch {
    /// The wire form of access events (what an edge sends).
    pub fn encode(batch_id: [u8; 16], events: &[AccessEvent]) -> AccessBatch {
        AccessBatch {
            batch_id: hex16(&batch_id),
            observed_by: None,
            events: events.iter().map(encode_event).collect(),
        }
    }

    /// Parses and bounds a delivered batch: every id well formed, every outcome and reason one
    /// that edges produce, names no longer than the API allows.
    pub fn decode(self) -> Result<([u8; 16], Vec<AccessEvent>), BatchError> {
        let batch_id = parse_hex16(&self.batch_id)
            .ok_or_else(|| bad("/batch_id".into(), "batch_id must be 32 hex characters"))?;
        if self.events.len() > MAX_EVENTS {
            return Err(BatchError {
                code: ErrorCode::InvalidBatch,
                pointer: None,
                message: format!("an access batch holds at most {MAX_EVENTS} events"),
            });
        }
        let events = self
            .events
            .into_iter()
            .enumerate()
            .map(|(i, e)| decode_event(i, e))
            .collect::<Result<_, _>>()?;
        Ok((batch_id, events))
    }

    /// The edge a forwarded batch names as having served its reads, checked for shape (`None`:
    /// the node delivering it served them).
    pub fn observer(&self) -> Result<Option<Observer>, BatchError> {
        let Some(o) = &self.observed_by else {
            return Ok(None);
        };
        let node_id = parse_id::<TokenId>(&o.node_id).ok_or_else(|| {
            bad(
                "/observed_by/node_id".into(),
                "node_id must be 32 hex characters",
            )
        })?;
        if let Err(e) = NodeName::parse(&o.node_name) {
            return Err(bad(
                "/observed_by/node_name".into(),
                format!("node_name: {e}"),
            ));
        }
        Ok(Some(Observer {
            node_id,
            node_name: o.node_name.clone(),
        }))
    }

    /// Names the edge that served the batch's reads (what a relay adds when it forwards it).
    pub fn set_observer(&mut self, observer: &Observer) {
        self.observed_by = Some(ObservedBy {
            node_id: observer.node_id.to_string(),
            node_name: observer.node_name.clone(),
        });
    }
}

fn encode_event(e: &AccessEvent) -> WireEvent {
    WireEvent {
        account_id: e.account.to_string(),
        service_id: e.service.map(|s| s.to_string()),
        service_name: e.service_name.clone(),
        token_id: e.token.map(|t| t.to_string()),
        binding: e.binding.clone(),
        store_id: e.store.map(|s| s.to_string()),
        secret_id: e.secret.map(|s| s.to_string()),
        secret_name: e.secret_name.clone(),
        outcome: e.outcome.audit_outcome().as_str().to_owned(),
        reason: match e.outcome {
            AccessOutcome::Refused(r) => Some(r.as_str().to_owned()),
            _ => None,
        },
        reads: e.reads,
        first_read_us: e.first.unix_micros(),
        last_read_us: e.last.unix_micros(),
    }
}

/// Event `i` of a delivered batch, checked.
fn decode_event(i: usize, e: WireEvent) -> Result<AccessEvent, BatchError> {
    let at = |field: &str| format!("/events/{i}/{field}");
    fn id<T: FromStr<Err = IdError>>(
        at: &dyn Fn(&str) -> String,
        field: &str,
        v: &Option<String>,
    ) -> Result<Option<T>, BatchError> {
        v.as_deref()
            .map(|s| {
                parse_id(s)
                    .ok_or_else(|| bad(at(field), format!("{field} must be 32 hex characters")))
            })
            .transpose()
    }
    let account = parse_id::<AccountId>(&e.account_id)
        .ok_or_else(|| bad(at("account_id"), "account_id must be 32 hex characters"))?;
    let outcome = match (AuditOutcome::parse(&e.outcome), e.reason.as_deref()) {
        (Some(AuditOutcome::Success), None) => AccessOutcome::Served,
        (Some(AuditOutcome::Denied), Some(r)) => AccessOutcome::Refused(
            AccessRefusal::parse(r)
                .ok_or_else(|| bad(at("reason"), "not a reason an edge records"))?,
        ),
        (Some(AuditOutcome::Unrecorded), _) => AccessOutcome::Unrecorded,
        _ => {
            return Err(bad(
                at("outcome"),
                "outcome must be success, denied (with a reason) or unrecorded",
            ));
        }
    };
    for (field, v) in [
        ("service_name", &e.service_name),
        ("binding", &e.binding),
        ("secret_name", &e.secret_name),
    ] {
        if v.len() > NAME_MAX_LEN {
            return Err(bad(
                at(field),
                format!("{field} is longer than {NAME_MAX_LEN} bytes"),
            ));
        }
    }
    // Names the audit log shows are names (empty where the edge did not record one): a node
    // cannot put line breaks or terminal escapes into another account's entries. The binding
    // is as the service asked for it, which may be no binding at all.
    if !e.service_name.is_empty()
        && let Err(err) = ServiceName::parse(&e.service_name)
    {
        return Err(bad(at("service_name"), format!("service_name: {err}")));
    }
    if !e.secret_name.is_empty()
        && let Err(err) = SecretName::parse(&e.secret_name)
    {
        return Err(bad(at("secret_name"), format!("secret_name: {err}")));
    }
    if e.reads == 0 {
        return Err(bad(at("reads"), "reads must be at least 1"));
    }
    let service: Option<ServiceId> = id(&at, "service_id", &e.service_id)?;
    let token: Option<TokenId> = id(&at, "token_id", &e.token_id)?;
    if outcome != AccessOutcome::Unrecorded && (service.is_none() || token.is_none()) {
        return Err(bad(
            at("token_id"),
            "a success or denied event names its service and token",
        ));
    }
    Ok(AccessEvent {
        account,
        service,
        service_name: e.service_name,
        token,
        binding: e.binding,
        store: id::<StoreId>(&at, "store_id", &e.store_id)?,
        secret: id::<SecretId>(&at, "secret_id", &e.secret_id)?,
        secret_name: e.secret_name,
        outcome,
        reads: e.reads,
        first: Timestamp::from_unix_micros(e.first_read_us),
        last: Timestamp::from_unix_micros(e.last_read_us.max(e.first_read_us)),
    })
}

/// An id in its 32 lowercase hex characters (what every id on the wire is).
fn parse_id<T: FromStr<Err = IdError>>(s: &str) -> Option<T> {
    s.parse().ok()
}

/// A batch id (16 random bytes, no id of any record) in the same 32 lowercase hex characters
/// as ids, parsed by the id types' rule.
fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    parse_id::<TokenId>(s).map(|id| *id.as_bytes())
}

fn hex16(bytes: &[u8; 16]) -> String {
    TokenId::from_bytes(*bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AccessEvent {
        AccessEvent {
            account: AccountId::from_bytes([1; 16]),
            service: Some(ServiceId::from_bytes([2; 16])),
            service_name: "gateway".into(),
            token: Some(TokenId::from_bytes([3; 16])),
            binding: "OPENAI".into(),
            store: Some(StoreId::from_bytes([4; 16])),
            secret: Some(SecretId::from_bytes([5; 16])),
            secret_name: "openai".into(),
            outcome: AccessOutcome::Refused(AccessRefusal::ScopeMissing),
            reads: 7,
            first: Timestamp::from_unix_micros(10),
            last: Timestamp::from_unix_micros(20),
        }
    }

    #[test]
    fn access_batches_round_trip() {
        let events = vec![
            event(),
            AccessEvent {
                outcome: AccessOutcome::Served,
                ..event()
            },
        ];
        let wire = AccessBatch::encode([9; 16], &events);
        let json = serde_json::to_vec(&wire).unwrap();
        let back: AccessBatch = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.decode().unwrap(), ([9; 16], events));
    }

    #[test]
    fn malformed_access_batches_name_the_problem() {
        type Breaker = fn(&mut AccessBatch);
        let cases: Vec<(Breaker, &str)> = vec![
            (|b| b.batch_id = "xyz".into(), "/batch_id"),
            (
                |b| b.events[0].account_id = "ABC".into(),
                "/events/0/account_id",
            ),
            (
                |b| b.events[0].outcome = "maybe".into(),
                "/events/0/outcome",
            ),
            (
                |b| b.events[0].reason = Some("I said so".into()),
                "/events/0/reason",
            ),
            (|b| b.events[0].reads = 0, "/events/0/reads"),
            (
                |b| b.events[0].binding = "x".repeat(256),
                "/events/0/binding",
            ),
            (
                |b| b.events[0].service_name = "gate\nway".into(),
                "/events/0/service_name",
            ),
            (
                |b| b.events[0].secret_name = "open\u{1b}[2Jai".into(),
                "/events/0/secret_name",
            ),
            (|b| b.events[0].token_id = None, "/events/0/token_id"),
            (
                |b| b.events[0].store_id = Some("1".into()),
                "/events/0/store_id",
            ),
        ];
        for (break_it, pointer) in cases {
            let mut b = AccessBatch::encode([9; 16], &[event()]);
            break_it(&mut b);
            let err = b.decode().unwrap_err();
            assert_eq!(err.pointer.as_deref(), Some(pointer), "{}", err.message);
            assert_eq!(err.code, ErrorCode::InvalidField);
        }
        let too_many = AccessBatch::encode([9; 16], &vec![event(); MAX_EVENTS + 1]);
        let err = too_many.decode().unwrap_err();
        assert_eq!((err.code, err.pointer), (ErrorCode::InvalidBatch, None));
        let most = AccessBatch::encode([9; 16], &vec![event(); MAX_EVENTS]);
        assert_eq!(most.decode().unwrap().1.len(), MAX_EVENTS);
    }

    #[test]
    fn a_forwarded_batch_keeps_naming_the_edge_that_served_it() {
        let mut b = AccessBatch::encode([9; 16], &[event()]);
        assert_eq!(b.observer().unwrap(), None);
        let edge = Observer {
            node_id: TokenId::from_bytes([8; 16]),
            node_name: "edge-fra-1".into(),
        };
        b.set_observer(&edge);
        let json = serde_json::to_vec(&b).unwrap();
        let back: AccessBatch = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.observer().unwrap(), Some(edge));
        let mut bad_id = back.clone();
        bad_id.observed_by.as_mut().unwrap().node_id = "zz".into();
        assert_eq!(
            bad_id.observer().unwrap_err().pointer.as_deref(),
            Some("/observed_by/node_id")
        );
        for name in [String::new(), "edge\nfra".into(), "n".repeat(64)] {
            let mut bad_name = back.clone();
            bad_name.observed_by.as_mut().unwrap().node_name = name;
            assert_eq!(
                bad_name.observer().unwrap_err().pointer.as_deref(),
                Some("/observed_by/node_name")
            );
        }
    }
}
