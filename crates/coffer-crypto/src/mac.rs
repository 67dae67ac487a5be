//! Keyed hashes of API tokens.

use crate::{ApiToken, DataKey};

/// An HMAC-SHA256 key for hashing tokens. Kept wrapped by the KEK at rest like a DEK.
pub struct MacKey(/* aws_lc_rs::hmac::Key */);

/// HMAC-SHA256 of a token under the instance's [`MacKey`]. This is what storage holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl MacKey {
    /// The MAC key is stored and wrapped exactly like a DEK; this turns the unwrapped key into
    /// an HMAC key.
    pub fn from_data_key(key: &DataKey) -> MacKey {
        unimplemented!()
    }
    pub fn hash_token(&self, token: &ApiToken) -> TokenHash {
        unimplemented!()
    }
    /// Constant-time check that `token` hashes to `expected`.
    pub fn verify_token(&self, token: &ApiToken, expected: &TokenHash) -> bool {
        unimplemented!()
    }
}
