//! The change log: what every committed mutation appends, in the same transaction.

use aws_lc_rs::digest;
use coffer_types::{AccountId, DekId, SecretId, ServiceId, StoreId, Timestamp, TokenId};
use serde::{Deserialize, Serialize};

/// One change, as recorded in the log and (later) shipped to edges. It carries what an edge
/// needs to serve runtime reads: sealed values and wrapped keys, never plaintext. Byte fields are
/// hex in the JSON payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    AccountPut {
        account_id: AccountId,
        name: String,
    },
    /// A DEK wrapped by the replication key (`kek_id` is `rk:<version>`; entries written
    /// before replication keys existed carry the KEK's id and wrap). Appended when a DEK is
    /// made, and again, rewrapped, when a node's revocation rotates the replication key.
    DekPut {
        account_id: AccountId,
        dek_id: DekId,
        kek_id: String,
        wrapped_hex: String,
    },
    StorePut {
        account_id: AccountId,
        store_id: StoreId,
        name: String,
    },
    StoreDeleted {
        account_id: AccountId,
        store_id: StoreId,
    },
    /// A secret was created or changed; carries its full metadata and current sealed version.
    SecretPut {
        account_id: AccountId,
        store_id: StoreId,
        secret_id: SecretId,
        name: String,
        scopes: Vec<String>,
        version: u32,
        dek_id: DekId,
        sealed_hex: String,
    },
    SecretDeleted {
        account_id: AccountId,
        store_id: StoreId,
        secret_id: SecretId,
    },
    /// The account is gone, with everything it held. It comes after the `SecretDeleted`,
    /// `StoreDeleted` and `ServiceDeleted` entries of everything the account still held, in the
    /// same transaction; its DEKs have no entries of their own: this one tells an edge to drop
    /// them all.
    AccountDeleted {
        account_id: AccountId,
    },
    /// A service was created or changed; carries the whole service, so it replaces the
    /// service's bindings wholesale. `kind` is the scope's `as_str`.
    ServicePut {
        account_id: AccountId,
        service_id: ServiceId,
        name: String,
        kind: String,
        secrets: Vec<ChangeSecretBinding>,
        stores: Vec<ChangeStoreBinding>,
    },
    /// The service is gone, with its bindings and its tokens (which get no entries of their
    /// own).
    ServiceDeleted {
        account_id: AccountId,
        service_id: ServiceId,
    },
    /// A service token was created; carries its HMAC (never the token).
    ServiceTokenPut {
        account_id: AccountId,
        service_id: ServiceId,
        token_id: TokenId,
        hash_hex: String,
    },
    /// A service token was revoked; an edge refuses it from now on.
    ServiceTokenRevoked {
        account_id: AccountId,
        service_id: ServiceId,
        token_id: TokenId,
    },
    /// An edge node was registered; carries its token's HMAC under the "node-token-mac"
    /// instance key (never the token), so relays can authenticate the nodes below them.
    NodePut {
        node_id: TokenId,
        name: String,
        hash_hex: String,
    },
    /// A node was revoked: its token reads the feed nowhere from now on.
    NodeRevoked {
        node_id: TokenId,
    },
    /// A replication-key version sealed to one node's X25519 public key. Every edge stores
    /// every grant; only the node's private key opens it. Account grants have their own
    /// variant, [`Change::AccountKeyGrant`].
    NodeKeyGrant {
        node_id: TokenId,
        rk_version: u32,
        ephemeral_public_hex: String,
        sealed_hex: String,
    },
    /// Version `ark_version` of an account's replication key (ARK), sealed to the key `node_id`
    /// registered for that account together with the node's own key
    /// (docs/envelope-format.md, "Account replication keys and account grants"). A variant of
    /// its own rather than a `NodeKeyGrant` with an account: a replica built before account
    /// grants existed would read such an entry as the node's grant of RK `ark_version` (serde
    /// ignores the unknown field) and overwrite the node's real grant with it; an unknown
    /// variant is refused instead (the replica stops and says so).
    AccountKeyGrant {
        account_id: AccountId,
        node_id: TokenId,
        ark_version: u32,
        ephemeral_public_hex: String,
        sealed_hex: String,
    },
    /// An instance key an edge needs (the service- and node-token MAC keys), wrapped by the
    /// replication key (`kek_id` is `rk:<version>`), never by the KEK. Snapshots carry it, and
    /// the feed when a node's revocation rewraps it under the next replication key.
    InstanceKeyPut {
        purpose: String,
        key_id: DekId,
        kek_id: String,
        wrapped_hex: String,
    },
    /// The value of a secret's `version` was re-sealed under `dek_id` (the account's current
    /// DEK) by the control plane's re-seal job: same plaintext, same version, new ciphertext.
    /// It changes neither the version nor the secret's `modified`. A replica replaces the
    /// sealed bytes only if it holds that very version; otherwise (a later `SecretPut`, or a
    /// deletion, superseded it) it does nothing. The `DekPut` of `dek_id` comes before it.
    ValueResealed {
        account_id: AccountId,
        store_id: StoreId,
        secret_id: SecretId,
        version: u32,
        dek_id: DekId,
        sealed_hex: String,
    },
    /// The DEK is destroyed: no stored value references it any more. A replica deletes it
    /// (and an edge forgets any unwrapped copy). Every earlier entry that carried it (its
    /// `DekPut`, values sealed under it) is compacted away by the lifecycle job's next
    /// compaction (at most one per its minimum gap), so no feed or relay hands it out after
    /// that; snapshots never do.
    DekDestroyed {
        account_id: AccountId,
        dek_id: DekId,
    },
}

impl Change {
    /// The account the change belongs to; `None` for instance-level changes (nodes, node
    /// grants, instance keys). An account grant belongs to its account.
    pub fn account_id(&self) -> Option<AccountId> {
        match self {
            Change::AccountPut { account_id, .. }
            | Change::DekPut { account_id, .. }
            | Change::StorePut { account_id, .. }
            | Change::StoreDeleted { account_id, .. }
            | Change::SecretPut { account_id, .. }
            | Change::SecretDeleted { account_id, .. }
            | Change::ServicePut { account_id, .. }
            | Change::ServiceDeleted { account_id, .. }
            | Change::ServiceTokenPut { account_id, .. }
            | Change::ServiceTokenRevoked { account_id, .. }
            | Change::ValueResealed { account_id, .. }
            | Change::DekDestroyed { account_id, .. }
            | Change::AccountKeyGrant { account_id, .. }
            | Change::AccountDeleted { account_id } => Some(*account_id),
            Change::NodePut { .. }
            | Change::NodeRevoked { .. }
            | Change::NodeKeyGrant { .. }
            | Change::InstanceKeyPut { .. } => None,
        }
    }
}

/// A secret binding of a service, as carried by [`Change::ServicePut`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSecretBinding {
    pub binding: String,
    pub store_id: StoreId,
    pub secret_name: String,
}

/// A store binding of a service, as carried by [`Change::ServicePut`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeStoreBinding {
    pub binding: String,
    pub store_id: StoreId,
}

/// A committed change log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRecord {
    /// Gap-free, starting at 1, in commit order.
    pub seq: u64,
    pub at: Timestamp,
    /// SHA-256 over (previous entry's hash, or 32 zero bytes for seq 1) || seq as 8 big-endian
    /// bytes || payload.
    pub hash: [u8; 32],
    /// The JSON encoding of a [`Change`], exactly as hashed.
    pub payload: Vec<u8>,
}

impl ChangeRecord {
    /// The "previous hash" of the first entry.
    pub const GENESIS_HASH: [u8; 32] = [0; 32];

    /// The hash an entry with this `seq` and `payload` must carry when it follows an entry
    /// whose hash is `prev` ([`Self::GENESIS_HASH`] for seq 1). Edges use it to check what they
    /// receive; storage uses it to append.
    pub fn chain_hash(prev: &[u8; 32], seq: u64, payload: &[u8]) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(prev);
        ctx.update(&seq.to_be_bytes());
        ctx.update(payload);
        let digest = ctx.finish();
        let mut out = [0u8; 32];
        // SHA-256 output is exactly 32 bytes, so the lengths always match.
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// Whether this entry's hash chains onto an entry whose hash is `prev`.
    pub fn follows(&self, prev: &[u8; 32]) -> bool {
        // Not secret material: a plain comparison is fine.
        Self::chain_hash(prev, self.seq, &self.payload) == self.hash
    }

    /// Checks that `rows` are the entries right after seq `after`, in order, gap-free, the
    /// first chaining onto `prev` and each onto the one before (every backend's
    /// `changes_after` checks what it returns so). `Corrupted`, naming the entry, otherwise.
    pub fn check_chain(
        rows: &[ChangeRecord],
        after: u64,
        mut prev: [u8; 32],
    ) -> Result<(), crate::StorageError> {
        for (expected, record) in (after + 1..).zip(rows) {
            if record.seq != expected {
                return Err(crate::StorageError::Corrupted(format!(
                    "change {expected} is missing"
                )));
            }
            if !record.follows(&prev) {
                return Err(crate::StorageError::Corrupted(format!(
                    "change {} does not match the hash chain",
                    record.seq
                )));
            }
            prev = record.hash;
        }
        Ok(())
    }

    pub fn change(&self) -> Result<Change, crate::StorageError> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| crate::StorageError::Corrupted(format!("change {}: {e}", self.seq)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_chain_finds_gaps_and_broken_links() {
        let mut rows = Vec::new();
        let mut prev = [5u8; 32];
        for seq in 11..=13u64 {
            let payload = format!("{{\"n\":{seq}}}").into_bytes();
            let hash = ChangeRecord::chain_hash(&prev, seq, &payload);
            rows.push(ChangeRecord {
                seq,
                at: Timestamp::from_unix_micros(1),
                hash,
                payload,
            });
            prev = hash;
        }
        assert!(ChangeRecord::check_chain(&rows, 10, [5; 32]).is_ok());
        assert!(ChangeRecord::check_chain(&[], 10, [5; 32]).is_ok());
        let e = ChangeRecord::check_chain(&rows, 10, [6; 32]).unwrap_err();
        assert!(e.to_string().contains("change 11 does not match"), "{e}");
        let e = ChangeRecord::check_chain(&rows, 9, [5; 32]).unwrap_err();
        assert!(e.to_string().contains("change 10 is missing"), "{e}");
        let gap = [rows[0].clone(), rows[2].clone()];
        let e = ChangeRecord::check_chain(&gap, 10, [5; 32]).unwrap_err();
        assert!(e.to_string().contains("change 12 is missing"), "{e}");
    }

    #[test]
    fn a_node_grant_keeps_its_encoding_and_account_grants_have_their_own_variant() {
        let old = format!(
            r#"{{"type":"node_key_grant","node_id":"{}","rk_version":2,"ephemeral_public_hex":"aa","sealed_hex":"bb"}}"#,
            "01".repeat(16)
        );
        let parsed: Change = serde_json::from_str(&old).unwrap();
        let grant = Change::NodeKeyGrant {
            node_id: TokenId::from_bytes([1; 16]),
            rk_version: 2,
            ephemeral_public_hex: "aa".into(),
            sealed_hex: "bb".into(),
        };
        assert_eq!(parsed, grant);
        assert_eq!(serde_json::to_string(&grant).unwrap(), old);
        assert_eq!(grant.account_id(), None);

        let account = Change::AccountKeyGrant {
            account_id: AccountId::from_bytes([4; 16]),
            node_id: TokenId::from_bytes([1; 16]),
            ark_version: 2,
            ephemeral_public_hex: "aa".into(),
            sealed_hex: "bb".into(),
        };
        let text = serde_json::to_string(&account).unwrap();
        // Not a node grant's type: a replica that reads only node grants must not take it for
        // one (it would overwrite the node's grant of RK 2).
        assert!(
            text.starts_with(r#"{"type":"account_key_grant","#),
            "{text}"
        );
        assert!(
            !text.contains("node_key_grant") && !text.contains("\"rk_version\""),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), account);
        assert_eq!(account.account_id(), Some(AccountId::from_bytes([4; 16])));
    }
}
