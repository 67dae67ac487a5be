//! The wire form of access batches (what edges deliver and relays forward), checked for shape.

use coffer_api::replication::{AccessBatch, AccessEvent as WireEvent, ObservedBy};
use coffer_core::{AccessEvent, AccessOutcome, AccessRefusal, AuditOutcome};
use coffer_types::{AccountId, SecretId, ServiceId, StoreId, Timestamp, TokenId};

use super::Observer;
use crate::error::ApiError;
use coffer_api::ErrorCode;

/// Events per access batch at most (an edge sends one batch per interval, aggregated).
const MAX_EVENTS: usize = 100_000;

fn bad(pointer: String, message: impl Into<String>) -> ApiError {
    ApiError::at(ErrorCode::InvalidField, pointer, message)
}

/// The edge a forwarded batch names as having served its reads, checked for shape.
pub fn observer(batch: &AccessBatch) -> Result<Option<Observer>, ApiError> {
    let Some(o) = &batch.observed_by else {
        return Ok(None);
    };
    let node_id = parse_hex16(&o.node_id).ok_or_else(|| {
        bad(
            "/observed_by/node_id".into(),
            "node_id must be 32 hex characters",
        )
    })?;
    if o.node_name.is_empty() || o.node_name.len() > 63 {
        return Err(bad(
            "/observed_by/node_name".into(),
            "node_name must be 1 to 63 characters",
        ));
    }
    Ok(Some(Observer {
        node_id: TokenId::from_bytes(node_id),
        node_name: o.node_name.clone(),
    }))
}

/// Names the edge that served a batch's reads (what a relay adds when it forwards it).
pub fn set_observer(batch: &mut AccessBatch, observer: &Observer) {
    batch.observed_by = Some(ObservedBy {
        node_id: observer.node_id.to_string(),
        node_name: observer.node_name.clone(),
    });
}

/// Parses and bounds a delivered batch: every id well formed, every outcome and reason one
/// that edges produce, names no longer than the API allows.
pub fn decode_batch(batch: AccessBatch) -> Result<([u8; 16], Vec<AccessEvent>), ApiError> {
    let batch_id = parse_hex16(&batch.batch_id)
        .ok_or_else(|| bad("/batch_id".into(), "batch_id must be 32 hex characters"))?;
    if batch.events.len() > MAX_EVENTS {
        return Err(ApiError::new(
            ErrorCode::InvalidBatch,
            format!("an access batch holds at most {MAX_EVENTS} events"),
        ));
    }
    let mut events = Vec::with_capacity(batch.events.len());
    for (i, e) in batch.events.into_iter().enumerate() {
        let at = |field: &str| format!("/events/{i}/{field}");
        let id = |field: &str, v: &Option<String>| -> Result<Option<[u8; 16]>, ApiError> {
            v.as_deref()
                .map(|s| {
                    parse_hex16(s)
                        .ok_or_else(|| bad(at(field), format!("{field} must be 32 hex characters")))
                })
                .transpose()
        };
        let account = parse_hex16(&e.account_id)
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
            if v.len() > 255 {
                return Err(bad(at(field), format!("{field} is longer than 255 bytes")));
            }
        }
        if e.reads == 0 {
            return Err(bad(at("reads"), "reads must be at least 1"));
        }
        let service = id("service_id", &e.service_id)?.map(ServiceId::from_bytes);
        let token = id("token_id", &e.token_id)?.map(TokenId::from_bytes);
        if outcome != AccessOutcome::Unrecorded && (service.is_none() || token.is_none()) {
            return Err(bad(
                at("token_id"),
                "a success or denied event names its service and token",
            ));
        }
        events.push(AccessEvent {
            account: AccountId::from_bytes(account),
            service,
            service_name: e.service_name,
            token,
            binding: e.binding,
            store: id("store_id", &e.store_id)?.map(StoreId::from_bytes),
            secret: id("secret_id", &e.secret_id)?.map(SecretId::from_bytes),
            secret_name: e.secret_name,
            outcome,
            reads: e.reads,
            first: Timestamp::from_unix_micros(e.first_read_us),
            last: Timestamp::from_unix_micros(e.last_read_us.max(e.first_read_us)),
        });
    }
    Ok((batch_id, events))
}

/// The wire form of access events (what an edge sends).
pub fn encode_batch(batch_id: [u8; 16], events: &[AccessEvent]) -> AccessBatch {
    AccessBatch {
        batch_id: hex::encode(batch_id),
        observed_by: None,
        events: events
            .iter()
            .map(|e| WireEvent {
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
            })
            .collect(),
    }
}

fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    (s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(())?;
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
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
        let wire = encode_batch([9; 16], &events);
        let json = serde_json::to_vec(&wire).unwrap();
        let back: AccessBatch = serde_json::from_slice(&json).unwrap();
        assert_eq!(decode_batch(back).unwrap(), ([9; 16], events));
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
            (|b| b.events[0].token_id = None, "/events/0/token_id"),
            (
                |b| b.events[0].store_id = Some("1".into()),
                "/events/0/store_id",
            ),
        ];
        for (break_it, pointer) in cases {
            let mut b = encode_batch([9; 16], &[event()]);
            break_it(&mut b);
            let err = decode_batch(b).unwrap_err();
            assert_eq!(err.pointer.as_deref(), Some(pointer), "{}", err.message);
        }
    }

    #[test]
    fn a_forwarded_batch_keeps_naming_the_edge_that_served_it() {
        let mut b = encode_batch([9; 16], &[event()]);
        assert_eq!(observer(&b).unwrap(), None);
        let edge = Observer {
            node_id: TokenId::from_bytes([8; 16]),
            node_name: "edge-fra-1".into(),
        };
        set_observer(&mut b, &edge);
        let json = serde_json::to_vec(&b).unwrap();
        let back: AccessBatch = serde_json::from_slice(&json).unwrap();
        assert_eq!(observer(&back).unwrap(), Some(edge));
        let mut bad_id = back.clone();
        bad_id.observed_by.as_mut().unwrap().node_id = "zz".into();
        assert_eq!(
            observer(&bad_id).unwrap_err().pointer.as_deref(),
            Some("/observed_by/node_id")
        );
        let mut bad_name = back;
        bad_name.observed_by.as_mut().unwrap().node_name = String::new();
        assert_eq!(
            observer(&bad_name).unwrap_err().pointer.as_deref(),
            Some("/observed_by/node_name")
        );
    }
}
