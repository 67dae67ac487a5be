//! What this process has seen of each edge node: when it last asked for the change feed, the
//! position it asked from (what it has applied) and where the log's head stood then. The
//! operator reads it with [`Coffer::fleet`] (the edges page, `GET /client/v4/nodes`).
//!
//! Kept in memory, per process: an edge follows one upstream at a time, so on a shared
//! PostgreSQL database each instance knows the edges that follow it, and an edge behind a relay
//! is known to the relay, not to the control plane. Entries exist only for nodes that
//! authenticated (so their number is bounded by the nodes the operator made), and a revoked
//! node's entry goes with its revocation.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use coffer_storage::NodeRecord;
use coffer_types::{Timestamp, TokenId};

use super::Coffer;
use crate::{CoreError, Principal};

/// A node's last request for the feed, as this process saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeContact {
    pub last_seen: Timestamp,
    /// The position the node asked from: every entry up to it is applied.
    pub applied_seq: u64,
    /// The log's head when it asked.
    pub head_seq: u64,
}

impl NodeContact {
    /// Entries the node had still to apply when it asked.
    pub fn lag(&self) -> u64 {
        self.head_seq.saturating_sub(self.applied_seq)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Fleet(Mutex<HashMap<TokenId, NodeContact>>);

impl Fleet {
    fn saw(&self, node: TokenId, contact: NodeContact) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, contact);
    }

    pub(crate) fn forget(&self, node: TokenId) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&node);
    }

    fn get(&self, node: TokenId) -> Option<NodeContact> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .copied()
    }
}

impl Coffer {
    /// Notes a feed request of `node` (authenticated by its node token) asking for what follows
    /// `applied_seq`, with the log's head at `head_seq`.
    pub fn note_feed_request(&self, node: TokenId, applied_seq: u64, head_seq: u64) {
        self.fleet.saw(
            node,
            NodeContact {
                last_seen: Timestamp::now(),
                applied_seq,
                head_seq,
            },
        );
    }

    /// Every node (as [`Coffer::list_nodes`]: instance operator only), each with its last feed
    /// request to this process, if it made one since this process started.
    pub async fn fleet(
        &self,
        who: &Principal,
    ) -> Result<Vec<(NodeRecord, Option<NodeContact>)>, CoreError> {
        let nodes = self.list_nodes(who).await?;
        Ok(nodes
            .into_iter()
            .map(|n| {
                let contact = self.fleet.get(n.id);
                (n, contact)
            })
            .collect())
    }

    /// One node (as [`Coffer::get_node`]) with its last feed request to this process.
    pub async fn node_in_fleet(
        &self,
        who: &Principal,
        id: TokenId,
    ) -> Result<(NodeRecord, Option<NodeContact>), CoreError> {
        let node = self.get_node(who, id).await?;
        Ok((node, self.fleet.get(id)))
    }
}
