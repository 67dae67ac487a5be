//! The edge's own key material: no KEK, only the X25519 key pair it makes at its first start
//! (`node.key` in the data dir, mode 0600) and the replication-key versions granted to it in
//! the feed. The node registers its public key with its node token (`register`), retrying
//! until an upstream answers; the grant then arrives like any other feed entry, and DEKs are
//! unwrapped through [`GrantedKeys`] (see `coffer_crypto::node_key`).

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use coffer_api::replication::{NodeKeyReceipt, NodeKeyRegistration};
use coffer_crypto::{CryptoError, Grant, GrantedKeys, NodeKey};
use coffer_server::ApiError;
use coffer_server::replication::NodeKeyForward;
use coffer_storage::{SqliteStorage, Storage};
use coffer_types::TokenId;

use crate::upstream::{FetchError, Upstreams};
use crate::{DB_FILE, EdgeError, EdgeStatus, data_dir_error};

/// The node's key pair in the data dir.
pub(crate) const NODE_KEY_FILE: &str = "node.key";

/// Opens (or at first start makes) the node key. A data dir that holds a replica but no node
/// key was made by a version whose edges took the KEK (`--kek-file`): that replica's keys are
/// wrapped by the KEK, which this edge no longer has, so it is deleted and the edge resyncs
/// from a snapshot (docs/edges.md, "Upgrading from --kek-file").
pub(crate) fn open(dir: &Path) -> Result<NodeKey, EdgeError> {
    let path = dir.join(NODE_KEY_FILE);
    if !path.exists() && dir.join(DB_FILE).exists() {
        tracing::warn!(
            "the replica was made by an edge that held the KEK; deleting it and resyncing from a snapshot"
        );
        for name in [
            DB_FILE.to_owned(),
            format!("{DB_FILE}-wal"),
            format!("{DB_FILE}-shm"),
        ] {
            match std::fs::remove_file(dir.join(&name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(data_dir_error(dir, format!("cannot delete {name}: {e}"))),
            }
        }
    }
    let key = NodeKey::open_or_create(&path).map_err(|e| data_dir_error(dir, e))?;
    // Not secret, and what an operator compares with the control plane's record of the node
    // (a key put in its place on the way there would differ).
    tracing::info!(
        public_key = %hex::encode(key.public_key().as_bytes()),
        "this node's X25519 key"
    );
    Ok(key)
}

/// The KEK provider of this edge: RK versions opened from this node's grants in the replica.
pub(crate) fn provider(
    node: TokenId,
    key: Arc<NodeKey>,
    storage: Arc<SqliteStorage>,
) -> GrantedKeys {
    let find = move |version: u32| -> Result<Vec<(TokenId, Grant)>, CryptoError> {
        let grants = read_grants(storage.grants_of_version(version))?;
        Ok(grants
            .into_iter()
            .map(|g| {
                let grant = Grant {
                    ephemeral_public: g.ephemeral_public,
                    sealed: g.sealed,
                };
                (g.node_id, grant)
            })
            .collect())
    };
    GrantedKeys::new(node, key, Box::new(find))
}

/// Reads grants from the replica for a KEK provider's unwrap. That runs on tokio's blocking
/// pool (the keyring's unwrap), so waiting on the runtime from there is allowed.
pub(crate) fn read_grants<T>(
    read: impl Future<Output = coffer_storage::Result<T>>,
) -> Result<T, CryptoError> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| CryptoError::KeyUnavailable("no runtime to read grants with".into()))?;
    runtime
        .block_on(read)
        .map_err(|e| CryptoError::KeyUnavailable(format!("reading the grants: {e}")))
}

/// Registers this node's public key, trying the upstreams in turn until one answers (a
/// node that registered the same key before is answered as registered), starting from the
/// follower's current upstream but never moving it (that is the driver's). A revoked token
/// (401 `node_revoked`) ends the attempts: the driver hears of a revocation on its own. A token
/// the upstream does not know (401) is tried again with the same backoff as an unreachable
/// upstream: a relay that has not yet applied this node's creation knows it a moment later.
/// Another refusal (another key registered for this node, or this key for another node) is
/// logged and tried again every 30 s: the edge cannot open what the feed carries without a
/// grant, and the operator may resolve it.
pub(crate) async fn register(upstreams: Upstreams, status: Arc<EdgeStatus>, public_hex: String) {
    let registration = NodeKeyRegistration {
        public_key: public_hex,
    };
    let count = upstreams.urls.len().max(1);
    let mut upstream = status.current.load(Ordering::Acquire) % count;
    let mut wait = Duration::from_millis(200);
    loop {
        match upstreams
            .register_node_key(upstream, None, &registration)
            .await
        {
            Ok(receipt) => {
                tracing::info!(
                    new = receipt.registered,
                    "node key registered; the replication key is granted through the feed"
                );
                return;
            }
            Err(e) if e.is_revocation() => {
                tracing::error!(error = %e, "this node is revoked; not registering its key");
                return;
            }
            Err(e @ FetchError::Status { status: 401, .. }) => {
                tracing::warn!(
                    error = %e,
                    "the upstream does not know this node's token (yet: a relay behind its own \
                     upstream); retrying"
                );
                // Another upstream (the root, a relay that caught up) may know it already.
                upstream = (upstream + 1) % count;
            }
            Err(
                e @ FetchError::Status {
                    status: 400..=499, ..
                },
            ) => {
                tracing::error!(error = %e, "the upstream refused this node's key");
                wait = Duration::from_secs(30);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot register this node's key yet; retrying");
                upstream = (upstream + 1) % count;
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// A relay's forwarder of the registrations of the nodes below it: sent to this relay's
/// current upstream with the node's own token, answered as that upstream answered.
#[derive(Debug)]
pub(crate) struct RelayNodeKeys {
    pub upstreams: Upstreams,
    pub status: Arc<EdgeStatus>,
}

impl NodeKeyForward for RelayNodeKeys {
    fn forward<'a>(
        &'a self,
        bearer: &'a str,
        registration: NodeKeyRegistration,
    ) -> Pin<Box<dyn Future<Output = Result<NodeKeyReceipt, ApiError>> + Send + 'a>> {
        Box::pin(async move {
            let upstream = self.status.current.load(Ordering::Acquire);
            self.upstreams
                .register_node_key(upstream, Some(bearer), &registration)
                .await
                .map_err(RelayNodeKeys::refusal_or_unavailable)
        })
    }

    fn forward_account<'a>(
        &'a self,
        bearer: &'a str,
        account: coffer_types::AccountId,
        registration: NodeKeyRegistration,
    ) -> Pin<Box<dyn Future<Output = Result<NodeKeyReceipt, ApiError>> + Send + 'a>> {
        Box::pin(async move {
            let upstream = self.status.current.load(Ordering::Acquire);
            self.upstreams
                .register_account_key(upstream, Some(bearer), account, &registration)
                .await
                .map_err(RelayNodeKeys::refusal_or_unavailable)
        })
    }
}

impl RelayNodeKeys {
    /// The upstream's refusal (a 4xx, or the 503 of an account whose KEK is unavailable) with
    /// its code; anything else is this relay's 503 (the node retries).
    fn refusal_or_unavailable(e: FetchError) -> ApiError {
        match e {
            FetchError::Status {
                status: 400..=499,
                code,
                message,
                ..
            } => upstream_refusal(code, message),
            FetchError::Status {
                status: 503,
                code: Some(code),
                message,
                ..
            } if code == coffer_api::ErrorCode::AccountKekUnavailable.code() => {
                upstream_refusal(Some(code), message)
            }
            e => {
                tracing::warn!(error = %e, "cannot forward a key registration upstream");
                ApiError::new(
                    coffer_api::ErrorCode::Unavailable,
                    "cannot forward the registration upstream right now; retry later",
                )
            }
        }
    }
}

/// The upstream's refusal, passed down with its code (one not listed becomes `Unavailable`).
pub(crate) fn upstream_refusal(code: Option<u32>, message: String) -> ApiError {
    use coffer_api::ErrorCode as C;
    let known = [
        C::InvalidNodeKey,
        C::NodeKeyConflict,
        C::AccountNotFound,
        C::AccountKekUnavailable,
        C::NodeRevoked,
        C::Unauthenticated,
        C::WrongTokenKind,
        C::MalformedJson,
    ];
    let code = known
        .into_iter()
        .find(|c| Some(c.code()) == code)
        .unwrap_or(C::Unavailable);
    ApiError::new(code, message)
}

#[cfg(test)]
mod refusal_tests {
    use coffer_api::ErrorCode;

    use super::*;

    fn status(status: u16, code: ErrorCode) -> FetchError {
        FetchError::Status {
            status,
            message: "upstream says".into(),
            code: Some(code.code()),
            retry_after: None,
            cluster: None,
            head: None,
        }
    }

    #[test]
    fn a_relay_passes_the_upstreams_refusals_and_its_account_kek_503_down() {
        let passed =
            RelayNodeKeys::refusal_or_unavailable(status(503, ErrorCode::AccountKekUnavailable));
        assert_eq!(passed.code, ErrorCode::AccountKekUnavailable);
        assert_eq!(passed.message, "upstream says");
        let passed = RelayNodeKeys::refusal_or_unavailable(status(409, ErrorCode::NodeKeyConflict));
        assert_eq!(passed.code, ErrorCode::NodeKeyConflict);
        // Any other failure is the relay's own 503, not the upstream's words.
        let own = RelayNodeKeys::refusal_or_unavailable(status(503, ErrorCode::Unavailable));
        assert_eq!(own.code, ErrorCode::Unavailable);
        assert_ne!(own.message, "upstream says");
        let own =
            RelayNodeKeys::refusal_or_unavailable(status(500, ErrorCode::AccountKekUnavailable));
        assert_eq!(own.code, ErrorCode::Unavailable);
    }
}
