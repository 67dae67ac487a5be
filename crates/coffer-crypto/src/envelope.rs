//! The envelope format: values sealed under DEKs, DEKs wrapped under the KEK.

use coffer_types::{AccountId, DekId, SecretId, StoreId, Version};

use crate::{CryptoError, DataKey, Plaintext};

/// What a sealed value is bound to. Every field goes into the AAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueContext {
    pub account: AccountId,
    pub store: StoreId,
    pub secret: SecretId,
    pub version: Version,
    pub dek: DekId,
}

/// What a wrapped DEK is bound to. `account` is `None` for instance-level keys (for example the
/// token-hashing key); `purpose` separates key uses ("dek", "token-mac", ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DekContext<'a> {
    pub account: Option<AccountId>,
    pub dek: DekId,
    pub purpose: &'a str,
}

/// A sealed value as stored: format byte, nonce, ciphertext and tag. Not secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedValue(pub Vec<u8>);

/// A DEK (or other instance key) wrapped by a KEK, with the id of the KEK that wrapped it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedDataKey {
    pub kek_id: crate::KekId,
    pub bytes: Vec<u8>,
}

pub fn seal(
    key: &DataKey,
    ctx: &ValueContext,
    plaintext: &Plaintext,
) -> Result<SealedValue, CryptoError> {
    unimplemented!()
}

pub fn open(
    key: &DataKey,
    ctx: &ValueContext,
    sealed: &SealedValue,
) -> Result<Plaintext, CryptoError> {
    unimplemented!()
}
