//! Edge nodes: the operator registers them, and each gets a node token (`coffernode_…`) that
//! may read the replication feed and nothing else.
//!
//! Who may do what: only the instance operator registers, lists, reads and revokes nodes
//! (`Principal::require_operator`); every other token is refused and the refusal is audited in
//! its own account. Nodes belong to the instance, not to an account, so the entries recording
//! their changes go to the operator's account, like the operator's other instance-level acts.
//! Entries hold ids and names only, never the token.
//!
//! Node tokens are hashed with their own instance key ("node-token-mac"), so a relay can check
//! the tokens of the nodes below it (their hashes are in the feed, `Change::NodePut`) without
//! holding the keys that check API or service tokens.
//!
//! Authentication reads node rows through a small cache that follows the runtime cache's rule
//! (see `runtime.rs`): an entry is used only while the change-log head it was read at is
//! unchanged, and every node write appends to the log before it is acknowledged, so a
//! revocation acts on the very next request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use coffer_crypto::{PresentedToken, Token, TokenHash, TokenKind, random_id};
use coffer_storage::NodeRecord;
use coffer_types::{AccountId, NodeName, Timestamp, TokenId};

use super::Coffer;
use super::audit::{Actor, Details, Event, Target};
use crate::{AuditAction, AuditOutcome};
use crate::{CoreError, NodeKeyRefusal, Principal, RequestContext, Resource};

const INVALID_NODE_TOKEN: &str = "invalid node token";

/// Rows kept at most; past it the cache is emptied (and refilled on demand). Only rows that
/// exist are cached, so this bounds nothing an unauthenticated caller controls.
const NODE_CACHE_CAPACITY: usize = 10_000;

#[derive(Debug, Default)]
struct NodeCacheInner {
    /// The change-log head every row below was read at (or after).
    head: u64,
    rows: HashMap<TokenId, NodeRecord>,
    /// When the oldest row was read and how long rows are served after that (a shared
    /// database; see `runtime.rs`'s `CacheInner`).
    since: Option<std::time::Instant>,
    max_age: Option<std::time::Duration>,
}

impl NodeCacheInner {
    fn expired(&self) -> bool {
        match (self.max_age, self.since) {
            (Some(max), Some(since)) => since.elapsed() >= max,
            _ => false,
        }
    }
}

/// Node rows by id for authentication; see the module comment.
#[derive(Debug, Default)]
pub(crate) struct NodeCache {
    inner: RwLock<NodeCacheInner>,
}

impl NodeCache {
    fn get(&self, head: u64, id: TokenId) -> Option<NodeRecord> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        if inner.head != head || inner.expired() {
            return None;
        }
        inner.rows.get(&id).cloned()
    }

    /// Serves rows for at most `max_age` after they were read; drops what was cached so far.
    pub(crate) fn set_max_age(&self, max_age: std::time::Duration) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.max_age = Some(max_age);
        inner.rows.clear();
        inner.since = None;
    }

    /// Keeps a row read from storage after observing `head`: not at all if the cache has moved
    /// past `head` (the row may be stale), after dropping everything older if `head` is newer.
    /// `read_at`: when the head was read, before the row.
    fn fill(&self, head: u64, read_at: std::time::Instant, row: NodeRecord) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if head < inner.head || inner.max_age.is_some_and(|max| read_at.elapsed() >= max) {
            return;
        }
        if head > inner.head || inner.rows.len() >= NODE_CACHE_CAPACITY || inner.expired() {
            inner.rows.clear();
            inner.since = None;
            inner.head = head;
        }
        inner.since = Some(inner.since.map_or(read_at, |since| since.min(read_at)));
        inner.rows.insert(row.id, row);
    }
}

impl Coffer {
    /// Registers an edge node (instance operator only) and returns it with its node token,
    /// which is shown here and never again. `NameTaken` if a node that is not revoked has the
    /// name.
    pub async fn create_node(
        &self,
        who: &Principal,
        name: NodeName,
    ) -> Result<(NodeRecord, Token), CoreError> {
        self.check_operator(
            who,
            None,
            AuditAction::Create,
            Target::node(None, Some(name.as_str())),
        )
        .await?;
        let id = TokenId::from_bytes(random_id());
        let token = Token::generate_kind(TokenKind::Node, id);
        let hash = self.keys.node_mac().hash_token(&token);
        let record = NodeRecord {
            id,
            name: name.into_string(),
            hash: hash.0,
            created: Timestamp::now(),
            revoked: None,
        };
        let entry = self.change_entry(
            who,
            who.account_id,
            AuditAction::Create,
            Target::node(Some(id), Some(&record.name)),
            Details::default(),
        )?;
        self.storage.create_node(record.clone(), &[entry]).await?;
        Ok((record, token))
    }

    /// Every node, revoked ones included, oldest first (instance operator only).
    pub async fn list_nodes(&self, who: &Principal) -> Result<Vec<NodeRecord>, CoreError> {
        self.check_operator(who, None, AuditAction::List, Target::node(None, None))
            .await?;
        Ok(self.storage.list_nodes().await?)
    }

    /// One node (instance operator only); `NotFound(Node)` for an unknown id.
    pub async fn get_node(&self, who: &Principal, id: TokenId) -> Result<NodeRecord, CoreError> {
        self.check_operator(who, None, AuditAction::Read, Target::node(Some(id), None))
            .await?;
        self.storage
            .get_node(id)
            .await?
            .ok_or(CoreError::NotFound(Resource::Node))
    }

    /// Revokes a node (instance operator only): its token stops working on the very next
    /// request, here and, once the revocation reaches them through the feed, on relays.
    /// `NotFound(Node)` for an unknown id, `AlreadyRevoked` for a revoked node.
    pub async fn revoke_node(&self, who: &Principal, id: TokenId) -> Result<NodeRecord, CoreError> {
        self.check_operator(who, None, AuditAction::Revoke, Target::node(Some(id), None))
            .await?;
        let existing = self.storage.get_node(id).await?;
        let name = existing.as_ref().map(|n| n.name.as_str());
        let entry = self.change_entry(
            who,
            who.account_id,
            AuditAction::Revoke,
            Target::node(Some(id), name),
            Details::default(),
        )?;
        // A node that registered a key also rotates the replication key, in the same
        // transaction (keyring/replication.rs). In a task of its own, which the request does
        // not cancel: a revocation dropped once storage has its commit queued would leave the
        // keyring on the replaced keys (every new DEK then refused) until a restart.
        let keys = Arc::clone(&self.keys);
        let revoked =
            tokio::spawn(async move { keys.revoke_node(id, Timestamp::now(), &[entry]).await })
                .await
                .map_err(|e| {
                    CoreError::Internal(format!("a node revocation's task failed: {e}"))
                })??;
        self.fleet.forget(id);
        Ok(revoked)
    }

    /// Records `public_key_hex` (64 hex digits: an X25519 public key) as the public key of
    /// `node` (authenticated by its node token) and grants the node the current replication
    /// key through the feed. `Ok(true)` when recorded, `Ok(false)` when the node had
    /// registered this very key before (nothing written). `InvalidNodeKey` for a malformed
    /// key, `NodeKeyConflict` if the node registered another one. Control plane only.
    pub async fn register_node_key(
        &self,
        node: &NodeRecord,
        public_key_hex: &str,
    ) -> Result<bool, CoreError> {
        let public = parse_public_key(
            public_key_hex,
            "public_key must be 64 hex digits: the X25519 public key the edge made (its data dir's node.key)",
        );
        let public = self.audited(node, None, None, public).await?;
        let registered = self.keys.register_node_key(node.id, &public, &[]).await;
        let fingerprint = public.fingerprint();
        let recorded = self
            .audited(node, None, Some(&fingerprint), registered)
            .await?;
        if recorded {
            tracing::info!(
                node = %node.id,
                name = %node.name,
                public_key = %public_key_hex,
                "node key registered; replication key granted"
            );
        }
        Ok(recorded)
    }

    /// Records the node account key `node` made for `account` (an X25519 public key) and
    /// grants it the account's current replication key (ARK), if it has one (docs/edges.md,
    /// "Node account keys"). `Ok(false)`: this very key was registered before. First registration wins
    /// (`AlreadyExists(NodeKey)` for another key, or a key in use anywhere else).
    pub async fn register_node_account_key(
        &self,
        node: &NodeRecord,
        account: AccountId,
        public_key_hex: &str,
    ) -> Result<bool, CoreError> {
        let public = parse_public_key(
            public_key_hex,
            "public_key must be 64 hex digits: the X25519 public key the edge made for this account (its data dir's node-account-keys/<account>.key)",
        );
        let public = self.audited(node, Some(account), None, public).await?;
        // Audited (only when recorded) in the account's log, which shows every node holding a
        // key to it, and in the operator's: who registered which key, by fingerprint only.
        let fingerprint = public.fingerprint();
        let mut entries = Vec::new();
        let operator = self.operator_account().await?;
        for (log, in_other) in [(Some(account), false), (operator, true)] {
            let Some(log) = log.filter(|l| !in_other || *l != account) else {
                continue;
            };
            entries.push(self.audit_entry(
                log,
                Event {
                    action: AuditAction::RegisterKey,
                    outcome: AuditOutcome::Success,
                    target: Target {
                        account_id: in_other.then_some(account),
                        ..Target::node(Some(node.id), Some(&node.name))
                    },
                    details: Details {
                        key_fingerprint: Some(fingerprint.clone()),
                        ..Details::default()
                    },
                    who: Actor::Node {
                        id: node.id,
                        name: &node.name,
                    },
                },
            )?);
        }
        let registered = self
            .keys
            .register_node_account_key(node.id, account, &public, &entries)
            .await;
        let recorded = self
            .audited(node, Some(account), Some(&fingerprint), registered)
            .await?;
        if recorded {
            tracing::info!(
                node = %node.id,
                name = %node.name,
                account = %account,
                key = %fingerprint,
                "node account key registered"
            );
        }
        Ok(recorded)
    }

    /// `result` of a registration of `node`'s key (for `account`, when a node account key),
    /// its refusal audited first (see [`Coffer::audit_refused_key`]).
    async fn audited<T>(
        &self,
        node: &NodeRecord,
        account: Option<AccountId>,
        fingerprint: Option<&str>,
        result: Result<T, CoreError>,
    ) -> Result<T, CoreError> {
        if let Err(e) = &result {
            self.audit_refused_key(node, account, fingerprint, e).await;
        }
        result
    }

    /// Audits a refused registration of `node`'s key, with fixed words by the kind of refusal
    /// and the key's fingerprint when it parsed, never the key; once per window for each node,
    /// kind and log (the rest are counted: [`Coffer::unaudited_key_refusals`]), so that a
    /// node token looping bad registrations cannot flood a log. In the operator's log; in the
    /// account's too only when the node already holds a key for that account (so neither an
    /// account the node has nothing to do with, nor whether it exists, shows). Errors that are
    /// not the key's refusal (storage unavailable, the account's KEK unavailable for now:
    /// transient, and retried by the edge) are not audited; a refusal that cannot be audited
    /// is logged.
    async fn audit_refused_key(
        &self,
        node: &NodeRecord,
        account: Option<AccountId>,
        fingerprint: Option<&str>,
        error: &CoreError,
    ) {
        let reason = match error {
            CoreError::InvalidNodeKey(refusal) => refusal.audit_reason(),
            CoreError::NodeKeyConflict => {
                "refused: another key is registered for this node, or this key is in use elsewhere"
            }
            _ => return,
        };
        // The account's log is a concern only where the node holds a key already.
        let account = match account {
            Some(account) => match self.storage.node_account_keys(account).await {
                Ok(keys) if keys.iter().any(|k| k.node_id == node.id) => Some(account),
                Ok(_) => None,
                Err(e) => {
                    tracing::error!(node = %node.id, error = %e, "cannot read node account keys to audit a refused node key");
                    None
                }
            },
            None => None,
        };
        if !self.key_refusals.admit(node.id, account, reason) {
            return;
        }
        let mut logs = Vec::new();
        if let Some(account) = account {
            logs.push((account, false));
        }
        match self.operator_account().await {
            Ok(Some(operator)) if Some(operator) != account => logs.push((operator, true)),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot find the operator's account to audit a refused node key")
            }
        }
        let mut entries = Vec::new();
        for (log, in_other) in logs {
            let entry = self.audit_entry(
                log,
                Event {
                    action: AuditAction::RegisterKey,
                    outcome: AuditOutcome::Failure,
                    target: Target {
                        account_id: account.filter(|_| in_other),
                        ..Target::node(Some(node.id), Some(&node.name))
                    },
                    details: Details {
                        key_fingerprint: fingerprint.map(str::to_owned),
                        reason: Some(reason.to_owned()),
                        ..Details::default()
                    },
                    who: Actor::Node {
                        id: node.id,
                        name: &node.name,
                    },
                },
            );
            match entry {
                Ok(entry) => entries.push(entry),
                Err(e) => tracing::error!(error = %e, "could not build an audit entry"),
            }
        }
        if let Err(e) = self.storage.append_audit(&entries).await {
            tracing::error!(node = %node.id, error = %e, "could not record a refused node key registration in the audit log");
        }
    }

    /// Refused node key registrations not audited since this process started: repeats of one
    /// audited within [`REFUSAL_AUDIT_WINDOW`].
    pub fn unaudited_key_refusals(&self) -> u64 {
        self.key_refusals.suppressed.load(Ordering::Relaxed)
    }

    /// Authenticates a node token: parsed, looked up by id, its keyed hash compared in
    /// constant time, refused if revoked (`NodeRevoked`, said only of a token that verifies).
    /// A valid token of another kind gets `WrongTokenKind` (and an invalid one the usual
    /// `Unauthenticated`), so a caller learns nothing about a token it cannot present. No
    /// message contains the token.
    pub async fn authenticate_node(
        &self,
        bearer: &str,
        context: RequestContext,
    ) -> Result<NodeRecord, CoreError> {
        let token = PresentedToken::parse(bearer)
            .map_err(|_| CoreError::Unauthenticated(INVALID_NODE_TOKEN))?;
        match token.kind() {
            TokenKind::Node => {}
            TokenKind::Api => {
                // Checked as on the control plane (a failed attempt with a real id is audited).
                self.authenticate(bearer, context).await?;
                return Err(CoreError::WrongTokenKind(
                    "API tokens cannot read the replication feed; an edge node reads it with its node token (coffernode_...)",
                ));
            }
            TokenKind::Service => {
                return Err(if self.is_service_token(&token).await? {
                    CoreError::WrongTokenKind(
                        "a service token can only read its service's bound secrets through /runtime/v1; the replication feed needs a node token (coffernode_...)",
                    )
                } else {
                    CoreError::Unauthenticated(INVALID_NODE_TOKEN)
                });
            }
        }
        let record = self.node_row(token.id()).await?;
        check_node_token(self, &token, record)
    }

    /// Whether `token` is a valid node token; for the other APIs, which refuse such tokens with
    /// a message that says what they are for.
    pub(crate) async fn is_node_token(
        &self,
        token: &PresentedToken<'_>,
    ) -> Result<bool, CoreError> {
        let record = self.node_row(token.id()).await?;
        Ok(check_node_token(self, token, record).is_ok())
    }

    async fn node_row(&self, id: TokenId) -> Result<Option<NodeRecord>, CoreError> {
        // The head is read before storage, so a row is never tagged newer than it is.
        let head = self.storage.committed_head();
        let read_at = std::time::Instant::now();
        if let Some(row) = self.node_cache.get(head, id) {
            return Ok(Some(row));
        }
        let row = self.storage.get_node(id).await?;
        if let Some(row) = &row {
            self.node_cache.fill(head, read_at, row.clone());
        }
        Ok(row)
    }
}

/// How long one refused key registration (by node, kind of refusal, and account when the node
/// holds a key there) is audited once: the edge retries every 10 s, and a node token can loop.
pub(crate) const REFUSAL_AUDIT_WINDOW: Duration = Duration::from_secs(3600);

/// One refused key registration's kind: the node, the account whose log it goes to (`None`:
/// the operator's only), and the fixed reason.
type RefusalKey = (TokenId, Option<AccountId>, &'static str);

/// Refused key registrations audited lately (see [`Coffer::audit_refused_key`]). Bounded: its
/// keys are nodes (made by the operator), fixed reasons, and accounts where a node holds a
/// key; entries past the window are dropped at most once a minute once it holds many, and past
/// [`REFUSALS_HELD`] a new refusal is remembered by node and reason only.
#[derive(Debug, Default)]
pub(crate) struct KeyRefusals {
    audited: std::sync::Mutex<Refusals>,
    suppressed: AtomicU64,
}

#[derive(Debug, Default)]
struct Refusals {
    at: HashMap<RefusalKey, Instant>,
    pruned: Option<Instant>,
}

/// Refusals remembered at most (see [`KeyRefusals`]).
const REFUSALS_HELD: usize = 65_536;

impl KeyRefusals {
    /// Whether this refusal is audited: not if the same was within the window (then counted).
    fn admit(&self, node: TokenId, account: Option<AccountId>, reason: &'static str) -> bool {
        let now = Instant::now();
        let mut refusals = self.audited.lock().unwrap_or_else(PoisonError::into_inner);
        let Refusals { at, pruned } = &mut *refusals;
        if at.len() >= 1024 && pruned.is_none_or(|t| now.duration_since(t) >= PRUNE_EVERY) {
            at.retain(|_, seen| now.duration_since(*seen) < REFUSAL_AUDIT_WINDOW);
            *pruned = Some(now);
        }
        // Full: a new refusal is remembered per node and reason only (those are few: nodes
        // are the operator's, reasons fixed), so a node refused for many accounts cannot
        // flood the log once the map is full.
        let key = if at.len() < REFUSALS_HELD || at.contains_key(&(node, account, reason)) {
            (node, account, reason)
        } else {
            (node, None, reason)
        };
        match at.get_mut(&key) {
            Some(seen) if now.duration_since(*seen) < REFUSAL_AUDIT_WINDOW => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                false
            }
            Some(seen) => {
                *seen = now;
                true
            }
            None => {
                at.insert(key, now);
                true
            }
        }
    }
}

/// How often the remembered refusals are swept of those past the window, at most.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Parses `public_key_hex` (64 hex digits) as an X25519 public key; `malformed` is the
/// `InvalidNodeKey` message when it is not 64 hex digits (it names the key the edge should
/// send).
fn parse_public_key(
    public_key_hex: &str,
    malformed: &'static str,
) -> Result<coffer_crypto::NodePublicKey, CoreError> {
    let mut bytes = [0u8; coffer_crypto::NODE_KEY_LEN];
    hex::decode_to_slice(public_key_hex, &mut bytes)
        .map_err(|_| CoreError::InvalidNodeKey(NodeKeyRefusal::Malformed(malformed)))?;
    coffer_crypto::NodePublicKey::parse(&bytes)
        .map_err(|_| CoreError::InvalidNodeKey(NodeKeyRefusal::Unusable))
}

fn check_node_token(
    coffer: &Coffer,
    token: &PresentedToken<'_>,
    record: Option<NodeRecord>,
) -> Result<NodeRecord, CoreError> {
    let record = record.ok_or(CoreError::Unauthenticated(INVALID_NODE_TOKEN))?;
    // The lookup by id is not secret; the comparison of the keyed hash is constant-time.
    if !coffer
        .keys
        .node_mac()
        .verify_token(*token, &TokenHash(record.hash))
    {
        return Err(CoreError::Unauthenticated(INVALID_NODE_TOKEN));
    }
    if record.revoked.is_some() {
        return Err(CoreError::NodeRevoked);
    }
    Ok(record)
}

#[cfg(test)]
mod cache_tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// On a shared database a row is served at most `max_age` after it was read, though the
    /// head has not moved: a node revoked on another instance is refused here within that time.
    #[test]
    fn on_a_shared_database_rows_expire_although_the_head_stays() {
        let row = NodeRecord {
            id: TokenId::from_bytes([1; 16]),
            name: "edge".into(),
            hash: [0; 32],
            created: Timestamp::now(),
            revoked: None,
        };
        let cache = NodeCache::default();
        cache.set_max_age(Duration::from_millis(200));
        cache.fill(3, Instant::now(), row.clone());
        assert_eq!(cache.get(3, row.id), Some(row.clone()));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(cache.get(3, row.id), None, "served past its maximum age");
        cache.fill(3, Instant::now() - Duration::from_millis(250), row.clone());
        assert_eq!(cache.get(3, row.id), None);
        cache.fill(3, Instant::now(), row.clone());
        assert_eq!(cache.get(3, row.id), Some(row));
    }
}
