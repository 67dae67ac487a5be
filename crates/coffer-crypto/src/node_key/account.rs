//! Account replication keys (ARKs) and account grants: the replication-key side of an account
//! that has a KEK of its own (docs/key-hierarchy.md, "Shredding an account").
//!
//! An ARK version is an AES-256 key that RK-wraps the account's DEKs in place of the instance
//! RK (`kek_id` `ark:<n>`), so that destroying the account's KEK (which alone wraps its ARK
//! versions on the control plane) and the per-account node keys (which alone open its grants
//! on edges) leaves nothing that opens the account's DEKs. Formats (docs/envelope-format.md,
//! "Account replication keys"):
//! - an **ARK wrap** is an RK wrap whose purpose is suffixed `@ark<n>` instead of `@rk<n>`; the
//!   wrapped key's context names the account (every DEK's does), so a wrap is bound to it;
//! - an ARK version's own **KEK wrap** (under the account's KEK) has the purpose
//!   `account-replication-key:<n>`, the account flag set and the ARK version's id;
//! - an **account grant** seals an ARK version to one node's *per-account* X25519 key, with
//!   its own HKDF salt ([`ACCOUNT_GRANT_SALT`]) and an info naming node, account and version,
//!   and the AAD purpose `ark-grant@ark<n>` with the account flag and id: one grant can pass
//!   neither for a node grant nor for another account's.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::hkdf;
use coffer_types::{AccountId, DekId, TokenId};
use zeroize::Zeroizing;

use super::{Grant, Len32, NODE_KEY_LEN, NodeKey, NodePublicKey};
use crate::envelope::{unwrap_key, wrap_key};
use crate::{CryptoError, DataKey, DekContext, KekId, WrappedDataKey};

/// The `KekId` prefix of ARK wraps: `ark:<version>`.
pub const ARK_KEK_ID_PREFIX: &str = "ark:";
/// HKDF salt of account grants: names the scheme and its version (not the node grants').
pub const ACCOUNT_GRANT_SALT: &[u8] = b"coffer/account-grant/v1";
/// The purpose prefix of an ARK version's KEK wrap: `account-replication-key:<n>`.
pub const ARK_PURPOSE_PREFIX: &str = "account-replication-key:";
const ACCOUNT_GRANT_PURPOSE: &str = "ark-grant";

/// The `KekId` an ARK wrap of `version` records.
pub fn ark_kek_id(version: u32) -> KekId {
    KekId(format!("{ARK_KEK_ID_PREFIX}{version}"))
}

/// The ARK version a `KekId` names, if it names one.
pub fn ark_version_of(kek_id: &str) -> Option<u32> {
    let digits = kek_id.strip_prefix(ARK_KEK_ID_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
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

fn suffixed(purpose: &str, version: u32) -> String {
    format!("{purpose}@ark{version}")
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
    let purpose = suffixed(ctx.purpose, version);
    let ctx = DekContext {
        purpose: &purpose,
        ..*ctx
    };
    Ok(WrappedDataKey {
        kek_id: ark_kek_id(version),
        bytes: wrap_key(ark.aead(), key, &ctx)?,
    })
}

/// Opens an ARK wrap of `version` made by [`ark_wrap`].
pub fn ark_unwrap(
    ark: &DataKey,
    version: u32,
    wrapped: &[u8],
    ctx: &DekContext<'_>,
) -> Result<DataKey, CryptoError> {
    let purpose = suffixed(ctx.purpose, version);
    let ctx = DekContext {
        purpose: &purpose,
        ..*ctx
    };
    unwrap_key(ark.aead(), wrapped, &ctx)
}

/// The 32 key bytes of an account grant, from the X25519 shared secret and everything the
/// grant is for (docs/envelope-format.md).
pub(super) fn account_grant_key_bytes(
    shared: &[u8],
    node: TokenId,
    account: AccountId,
    version: u32,
    ephemeral_public: &[u8],
    recipient: &[u8],
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, ACCOUNT_GRANT_SALT).extract(shared);
    let version = version.to_be_bytes();
    let info = [
        node.as_bytes().as_slice(),
        account.as_bytes().as_slice(),
        &version[..],
        ephemeral_public,
        recipient,
    ];
    let mut key = Zeroizing::new([0u8; 32]);
    prk.expand(&info, Len32)
        .and_then(|okm| okm.fill(&mut key[..]))
        .map_err(|_| CryptoError::Opaque)?;
    Ok(key)
}

fn account_grant_key(
    shared: &[u8],
    node: TokenId,
    account: AccountId,
    version: u32,
    ephemeral_public: &[u8],
    recipient: &[u8],
) -> Result<aws_lc_rs::aead::LessSafeKey, CryptoError> {
    let key = account_grant_key_bytes(shared, node, account, version, ephemeral_public, recipient)?;
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

/// Seals ARK `version` of `account` to `recipient`, the per-account key `node` registered for
/// that account.
pub fn seal_account_grant(
    recipient: &NodePublicKey,
    node: TokenId,
    account: AccountId,
    version: u32,
    ark: &DataKey,
) -> Result<Grant, CryptoError> {
    let ephemeral = PrivateKey::generate(&X25519)
        .map_err(|_| CryptoError::KeyUnavailable("cannot make an X25519 key".into()))?;
    seal_account_grant_with(&ephemeral, recipient, node, account, version, ark)
}

pub(super) fn seal_account_grant_with(
    ephemeral: &PrivateKey,
    recipient: &NodePublicKey,
    node: TokenId,
    account: AccountId,
    version: u32,
    ark: &DataKey,
) -> Result<Grant, CryptoError> {
    let public = ephemeral
        .compute_public_key()
        .map_err(|_| CryptoError::KeyUnavailable("cannot compute an X25519 public key".into()))?;
    let ephemeral_public: [u8; NODE_KEY_LEN] = public
        .as_ref()
        .try_into()
        .map_err(|_| CryptoError::Malformed("X25519 public key"))?;
    let key = agreement::agree(
        ephemeral,
        UnparsedPublicKey::new(&X25519, &recipient.0[..]),
        CryptoError::Opaque,
        |shared| {
            account_grant_key(
                shared,
                node,
                account,
                version,
                &ephemeral_public,
                &recipient.0,
            )
        },
    )?;
    let purpose = suffixed(ACCOUNT_GRANT_PURPOSE, version);
    let sealed = wrap_key(&key, ark, &account_grant_context(node, account, &purpose))?;
    Ok(Grant {
        ephemeral_public,
        sealed,
    })
}

impl NodeKey {
    /// Opens a grant of `account`'s ARK `version` made for `node` and sealed to this key (a
    /// per-account key of that node). A grant for another node, account, version or key, or a
    /// node grant, fails with [`CryptoError::Opaque`].
    pub fn open_account_grant(
        &self,
        node: TokenId,
        account: AccountId,
        version: u32,
        grant: &Grant,
    ) -> Result<DataKey, CryptoError> {
        let key = agreement::agree(
            &self.private,
            UnparsedPublicKey::new(&X25519, &grant.ephemeral_public[..]),
            CryptoError::Opaque,
            |shared| {
                account_grant_key(
                    shared,
                    node,
                    account,
                    version,
                    &grant.ephemeral_public,
                    &self.public.0,
                )
            },
        )?;
        let purpose = suffixed(ACCOUNT_GRANT_PURPOSE, version);
        unwrap_key(
            &key,
            &grant.sealed,
            &account_grant_context(node, account, &purpose),
        )
    }
}

#[cfg(test)]
mod tests;
