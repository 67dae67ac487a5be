//! The control plane's feed-signing key: Ed25519, derived from a 32-byte seed that is stored
//! like every instance key (a [`DataKey`] wrapped by the KEK), so any KEK provider (file or
//! HSM) protects it without a second wrapping format.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

use crate::{CryptoError, DataKey};

/// An Ed25519 signing key. Never printed (`[redacted]` but for its public half).
pub struct SigningKey(Ed25519KeyPair);

impl SigningKey {
    /// The key whose seed is `seed`'s bytes (RFC 8032: the 32-byte private key).
    pub fn from_data_key(seed: &DataKey) -> Result<SigningKey, CryptoError> {
        Ed25519KeyPair::from_seed_unchecked(seed.expose_secret())
            .map(SigningKey)
            .map_err(|_| CryptoError::Malformed("feed-signing key seed"))
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.public_key().as_ref());
        out
    }

    /// The 64-byte signature over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.0.sign(message).as_ref());
        out
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};

    use super::*;

    #[test]
    fn signatures_verify_under_the_public_key_and_the_seed_decides_the_key() {
        let seed = DataKey::generate();
        let key = SigningKey::from_data_key(&seed).unwrap();
        let sig = key.sign(b"checkpoint");
        let public = key.public_key();
        assert!(
            UnparsedPublicKey::new(&ED25519, &public)
                .verify(b"checkpoint", &sig)
                .is_ok()
        );
        assert!(
            UnparsedPublicKey::new(&ED25519, &public)
                .verify(b"another", &sig)
                .is_err()
        );
        let again = SigningKey::from_data_key(&seed).unwrap();
        assert_eq!(again.public_key(), public);
        let other = SigningKey::from_data_key(&DataKey::generate()).unwrap();
        assert_ne!(other.public_key(), public);
        assert_eq!(format!("{key:?}"), "SigningKey([redacted])");
    }
}
