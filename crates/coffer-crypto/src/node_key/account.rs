//! Account replication keys (ARKs) and account grants: the replication-key side of an account
//! that has a KEK of its own (docs/key-hierarchy.md, "Shredding an account").
//!
//! An ARK version is an AES-256 key that RK-wraps the account's DEKs in place of the instance
//! RK (`kek_id` `ark:<n>`), so that destroying the account's KEK (which alone wraps its ARK
//! versions on the control plane) and the per-node account keys (which alone open its grants
//! on edges) leaves nothing that opens the account's DEKs. Formats (docs/envelope-format.md,
//! "Account replication keys"):
//! - an **ARK wrap** is an RK wrap whose purpose is suffixed `@ark<n>` instead of `@rk<n>`; the
//!   wrapped key's context names the account (every DEK's does), so a wrap is bound to it;
//! - an ARK version's own **KEK wrap** (under the account's KEK) has the purpose
//!   `account-replication-key:<n>`, the account flag set and the ARK version's id;
//! - an **account grant** seals an ARK version to one node's *per-account* X25519 key and its
//!   node key together (scheme v2): one ephemeral key, agreed with both, and HKDF over both
//!   shared secrets (salt [`ACCOUNT_GRANT_SALT`], info naming node, account, version and the
//!   three public keys), with the AAD purpose `ark-grant@ark<n>` with the account flag and id:
//!   one grant can pass neither for a node grant nor for another account's, and opening it
//!   takes both private keys, so a node token alone (which can register a node account key)
//!   captures nothing.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::hkdf;
use coffer_types::{AccountId, DekId, TokenId};
use zeroize::Zeroizing;

use super::{
    Grant, Len32, NODE_KEY_LEN, NodeKey, NodePublicKey, ReplicationKeyKind, version_after,
};
use crate::envelope::{unwrap_key, wrap_key};
use crate::{CryptoError, DataKey, DekContext, KekId, WrappedDataKey};

/// The `KekId` prefix of ARK wraps: `ark:<version>`.
pub const ARK_KEK_ID_PREFIX: &str = "ark:";
/// HKDF salt of account grants: names the scheme and its version (not the node grants').
pub const ACCOUNT_GRANT_SALT: &[u8] = b"coffer/account-grant/v2";
/// The purpose prefix of an ARK version's KEK wrap: `account-replication-key:<n>`.
pub const ARK_PURPOSE_PREFIX: &str = "account-replication-key:";
const ACCOUNT_GRANT_PURPOSE: &str = "ark-grant";

/// The `KekId` an ARK wrap of `version` records.
pub fn ark_kek_id(version: u32) -> KekId {
    KekId(format!("{ARK_KEK_ID_PREFIX}{version}"))
}

/// The ARK version a `KekId` names, if it names one.
pub fn ark_version_of(kek_id: &str) -> Option<u32> {
    version_after(kek_id, ARK_KEK_ID_PREFIX)
}

/// The purpose an ARK version's KEK wrap is bound to.
pub fn ark_purpose(version: u32) -> String {
    format!("{ARK_PURPOSE_PREFIX}{version}")
}

/// The context of ARK `version`'s KEK wrap: the account's, with the ARK's own id.
pub fn ark_context<'a>(account: AccountId, id: DekId, purpose: &'a str) -> DekContext<'a> {
    DekContext {
        account: Some(account),
        dek: id,
        purpose,
    }
}

/// Wraps `key` (an account's DEK, bound to `ctx`) under ARK `version`. `ctx` must name the
/// account: an ARK wraps nothing of the instance.
pub fn ark_wrap(
    ark: &DataKey,
    version: u32,
    key: &DataKey,
    ctx: &DekContext<'_>,
) -> Result<WrappedDataKey, CryptoError> {
    if ctx.account.is_none() {
        return Err(CryptoError::Malformed(
            "an account replication key wraps only keys of its account",
        ));
    }
    Ok(WrappedDataKey {
        kek_id: ark_kek_id(version),
        bytes: ReplicationKeyKind::Account.wrap(ark, version, key, ctx)?,
    })
}

/// Opens an ARK wrap of `version` made by [`ark_wrap`].
pub fn ark_unwrap(
    ark: &DataKey,
    version: u32,
    wrapped: &[u8],
    ctx: &DekContext<'_>,
) -> Result<DataKey, CryptoError> {
    ReplicationKeyKind::Account.unwrap(ark, version, wrapped, ctx)
}

/// The two X25519 agreements an account grant is sealed under, concatenated: with the
/// node account key and with the node key. Needing both is the point of scheme v2: whoever
/// holds a node's token but not its private node key (a stolen token, a plain-HTTP path at
/// registration) can register a node account key of its own, but what is sealed to it also
/// needs the node key, which only the real edge holds.
type SharedSecrets = Zeroizing<[u8; 2 * NODE_KEY_LEN]>;

/// `X25519(private, peer)`, into `out` (32 bytes).
fn agree_into(private: &PrivateKey, peer: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
    agreement::agree(
        private,
        UnparsedPublicKey::new(&X25519, peer),
        CryptoError::Opaque,
        |shared| {
            if shared.len() != out.len() {
                return Err(CryptoError::Opaque);
            }
            out.copy_from_slice(shared);
            Ok(())
        },
    )
}

/// What an account grant is for; every field is bound into the derived key.
#[derive(Clone, Copy)]
struct GrantFor<'a> {
    node: TokenId,
    account: AccountId,
    version: u32,
    ephemeral_public: &'a [u8; NODE_KEY_LEN],
    account_public: &'a [u8; NODE_KEY_LEN],
    node_public: &'a [u8; NODE_KEY_LEN],
}

/// The 32 key bytes of an account grant (docs/envelope-format.md): HKDF-SHA256 over both
/// shared secrets, salt [`ACCOUNT_GRANT_SALT`], info naming node, account, version and the
/// three public keys.
fn account_grant_key_bytes(
    shared: &SharedSecrets,
    grant: GrantFor<'_>,
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, ACCOUNT_GRANT_SALT).extract(&shared[..]);
    let version = grant.version.to_be_bytes();
    let info = [
        grant.node.as_bytes().as_slice(),
        grant.account.as_bytes().as_slice(),
        &version[..],
        grant.ephemeral_public,
        grant.account_public,
        grant.node_public,
    ];
    let mut key = Zeroizing::new([0u8; 32]);
    prk.expand(&info, Len32)
        .and_then(|okm| okm.fill(&mut key[..]))
        .map_err(|_| CryptoError::Opaque)?;
    Ok(key)
}

fn account_grant_key(
    shared: &SharedSecrets,
    grant: GrantFor<'_>,
) -> Result<aws_lc_rs::aead::LessSafeKey, CryptoError> {
    let key = account_grant_key_bytes(shared, grant)?;
    let unbound = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, &key[..])
        .map_err(|_| CryptoError::Opaque)?;
    Ok(aws_lc_rs::aead::LessSafeKey::new(unbound))
}

fn account_grant_context(node: TokenId, account: AccountId, purpose: &str) -> DekContext<'_> {
    DekContext {
        account: Some(account),
        dek: DekId::from_bytes(*node.as_bytes()),
        purpose,
    }
}

/// The two public keys an account grant is sealed to: the key `node` registered for the
/// account, and the node's own key.
#[derive(Debug, Clone, Copy)]
pub struct AccountGrantRecipient<'a> {
    pub account_key: &'a NodePublicKey,
    pub node_key: &'a NodePublicKey,
}

/// Seals ARK `version` of `account` to `node`: to the key it registered for the account AND
/// its node key (one ephemeral key, both agreements in the derivation), so that opening it
/// needs both private keys.
pub fn seal_account_grant(
    to: AccountGrantRecipient<'_>,
    node: TokenId,
    account: AccountId,
    version: u32,
    ark: &DataKey,
) -> Result<Grant, CryptoError> {
    let ephemeral = PrivateKey::generate(&X25519)
        .map_err(|_| CryptoError::KeyUnavailable("cannot make an X25519 key".into()))?;
    seal_account_grant_with(&ephemeral, to, node, account, version, ark)
}

pub(super) fn seal_account_grant_with(
    ephemeral: &PrivateKey,
    to: AccountGrantRecipient<'_>,
    node: TokenId,
    account: AccountId,
    version: u32,
    ark: &DataKey,
) -> Result<Grant, CryptoError> {
    if to.account_key == to.node_key {
        // Both agreements would be one: the grant would need one private key only.
        return Err(CryptoError::Malformed(
            "an account grant needs a node account key that is not the node key",
        ));
    }
    let public = ephemeral
        .compute_public_key()
        .map_err(|_| CryptoError::KeyUnavailable("cannot compute an X25519 public key".into()))?;
    let ephemeral_public: [u8; NODE_KEY_LEN] = public
        .as_ref()
        .try_into()
        .map_err(|_| CryptoError::Malformed("X25519 public key"))?;
    let mut shared: SharedSecrets = Zeroizing::new([0; 2 * NODE_KEY_LEN]);
    let (with_account, with_node) = shared.split_at_mut(NODE_KEY_LEN);
    agree_into(ephemeral, to.account_key.as_bytes(), with_account)?;
    agree_into(ephemeral, to.node_key.as_bytes(), with_node)?;
    let key = account_grant_key(
        &shared,
        GrantFor {
            node,
            account,
            version,
            ephemeral_public: &ephemeral_public,
            account_public: to.account_key.as_bytes(),
            node_public: to.node_key.as_bytes(),
        },
    )?;
    let purpose = ReplicationKeyKind::Account.purpose(ACCOUNT_GRANT_PURPOSE, version);
    let sealed = wrap_key(&key, ark, &account_grant_context(node, account, &purpose))?;
    Ok(Grant {
        ephemeral_public,
        sealed,
    })
}

impl NodeKey {
    /// Opens a grant of `account`'s ARK `version` made for `node`, with this key (the key the
    /// node made for that account) and `node_key` (the node's own key): the grant opens only
    /// with both. A grant for another node, account, version or key pair, or a node grant,
    /// fails with [`CryptoError::Opaque`].
    pub fn open_account_grant(
        &self,
        node_key: &NodeKey,
        node: TokenId,
        account: AccountId,
        version: u32,
        grant: &Grant,
    ) -> Result<DataKey, CryptoError> {
        let mut shared: SharedSecrets = Zeroizing::new([0; 2 * NODE_KEY_LEN]);
        let (with_account, with_node) = shared.split_at_mut(NODE_KEY_LEN);
        agree_into(&self.private, &grant.ephemeral_public, with_account)?;
        agree_into(&node_key.private, &grant.ephemeral_public, with_node)?;
        let key = account_grant_key(
            &shared,
            GrantFor {
                node,
                account,
                version,
                ephemeral_public: &grant.ephemeral_public,
                account_public: self.public.as_bytes(),
                node_public: node_key.public.as_bytes(),
            },
        )?;
        let purpose = ReplicationKeyKind::Account.purpose(ACCOUNT_GRANT_PURPOSE, version);
        unwrap_key(
            &key,
            &grant.sealed,
            &account_grant_context(node, account, &purpose),
        )
    }
}

#[cfg(test)]
mod tests;
