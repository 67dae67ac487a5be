//! Wire types of the replication API (`/replication/v1`), spoken between edge nodes and their
//! upstreams. Not part of Cloudflare's API; the feed and snapshots themselves are binary
//! (`coffer_replication::wire`), only access-event batches are JSON.

use serde::{Deserialize, Serialize};

mod access_batch;

pub use access_batch::{BatchError, MAX_EVENTS, Observer};

/// Path prefix of the replication API.
pub const REPLICATION_PREFIX: &str = "/replication/v1";

/// `GET /replication/v1/feed-key`: the control plane's feed-signing public key, which an edge
/// pins (a relay answers with the key it pinned itself: the root's, never one of its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedKeyInfo {
    /// 64 lowercase hex digits (an Ed25519 public key).
    pub public_key: String,
}

/// A batch of runtime reads observed at an edge, sent upstream until acknowledged. `batch_id`
/// (32 hex characters, random) makes a retried delivery a no-op. Made from access events with
/// [`AccessBatch::encode`], read back (checked for shape) with [`AccessBatch::decode`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessBatch {
    pub batch_id: String,
    pub events: Vec<AccessEvent>,
    /// The edge that served the reads, set by a relay that forwards another node's batch
    /// (absent: the node delivering the batch served them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_by: Option<ObservedBy>,
}

/// A node, as named in a forwarded [`AccessBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedBy {
    pub node_id: String,
    pub node_name: String,
}

/// The wire form of `coffer_types::AccessEvent` (what [`AccessBatch`] carries): reads
/// aggregated per (token, binding, secret, outcome), ids and names only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessEvent {
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    #[serde(default)]
    pub service_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(default)]
    pub binding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    #[serde(default)]
    pub secret_name: String,
    /// `success`, `denied` or `unrecorded`.
    pub outcome: String,
    /// Why a `denied` read was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub reads: u64,
    /// Unix microseconds of the first and last read.
    pub first_read_us: i64,
    pub last_read_us: i64,
}

/// The answer to a delivered batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessReceipt {
    /// `false` when the batch had been delivered before (nothing was recorded twice).
    pub recorded: bool,
}

/// `PUT /replication/v1/node-key`: the X25519 public key an edge made at its first start,
/// registered with its node token. The control plane answers with a grant of the replication
/// key in the feed (`NodeKeyGrant`); a relay forwards the request upstream unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeKeyRegistration {
    /// 64 hex digits.
    pub public_key: String,
}

/// The answer to a node-key registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeKeyReceipt {
    /// `false` when the node had registered this very key before (nothing was written).
    pub registered: bool,
}
