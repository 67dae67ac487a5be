//! Edge nodes (`/client/v4/nodes`): Coffer's own, instance-level and operator-only. A node's
//! token lets it read the replication feed and nothing else.

use serde::{Deserialize, Serialize};

use crate::SecretValue;

/// A node's metadata. Its token is never part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The id of the node and of its token (the token's `coffernode_<id>_...` part).
    pub id: String,
    pub name: String,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339; `null` while the node is active.
    pub revoked: Option<String>,
    /// The node's last request for the feed to the instance that answers (each instance knows
    /// the edges that follow it); absent if it made none since that instance started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<NodeContact>,
}

/// Where a node stood at its last feed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeContact {
    /// RFC 3339.
    pub last_seen: String,
    /// The position it asked from: every entry up to it is applied.
    pub applied_seq: u64,
    /// The log's head then.
    pub head_seq: u64,
    /// Entries it had still to apply then (`head_seq - applied_seq`).
    pub lag: u64,
}

/// `POST /client/v4/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    pub name: String,
}

/// The create response: the node and, this once, its token.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedNode {
    #[serde(flatten)]
    pub node: Node,
    pub node_token: SecretValue,
    /// The control plane's feed-signing public key (64 hex digits): what the edge is to pin
    /// (`coffer edge --feed-key`). Absent from a server that does not sign its feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_public_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_node_is_flat_and_redacted_in_debug() {
        let created = CreatedNode {
            node: Node {
                id: "a".repeat(32),
                name: "edge-1".into(),
                created: "2025-01-01T00:00:00Z".into(),
                revoked: None,
                contact: None,
            },
            node_token: SecretValue::new("coffernode_hunter2".into()),
            feed_public_key: Some("b".repeat(64)),
        };
        let v = serde_json::to_value(&created).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "a".repeat(32),
                "name": "edge-1",
                "created": "2025-01-01T00:00:00Z",
                "revoked": null,
                "node_token": "coffernode_hunter2",
                "feed_public_key": "b".repeat(64),
            })
        );
        let back: CreatedNode = serde_json::from_value(v).unwrap();
        assert_eq!(back.node, created.node);
        assert_eq!(back.feed_public_key, created.feed_public_key);
        assert!(!format!("{created:?}").contains("hunter2"));
        assert!(serde_json::from_str::<CreateNode>(r#"{"name":"a","x":1}"#).is_err());
    }
}
