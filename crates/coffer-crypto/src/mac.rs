//! Keyed hashes: of API tokens, and of audit-log checkpoints.
//!
//! Storage keeps HMAC-SHA256(instance MAC key, token) rather than the token, so a database dump
//! yields nothing that authenticates; and because the key is wrapped by the KEK, the hashes
//! cannot even be checked offline against guesses without the KEK. Tokens carry 256 random bits,
//! so no slow password hash is needed.

use std::fmt;

use aws_lc_rs::hmac;

use crate::{DataKey, PresentedToken, Token};

/// An HMAC-SHA256 key for hashing tokens. Kept wrapped by the KEK at rest like a DEK.
///
/// The key lives only inside aws-lc's HMAC context, which aws-lc cleanses when it is dropped.
/// That context is stored inline in `hmac::Key`, so it is boxed here: moving a `MacKey` then
/// moves a pointer instead of leaving uncleansed copies of the keyed state behind.
pub struct MacKey(Box<hmac::Key>);

/// HMAC-SHA256 of a token under the instance's [`MacKey`]. This is what storage holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl MacKey {
    /// The MAC key is stored and wrapped exactly like a DEK; this turns the unwrapped key into
    /// an HMAC key.
    pub fn from_data_key(key: &DataKey) -> MacKey {
        // `hmac::Key::new` panics only if aws-lc cannot set up an HMAC context, which for a
        // built-in digest means allocation failure, already fatal in Rust.
        MacKey(Box::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            key.expose_secret(),
        )))
    }

    pub fn hash_token(&self, token: &Token) -> TokenHash {
        let tag = hmac::sign(&self.0, token.expose_secret().as_bytes());
        let mut out = [0u8; 32];
        // Invariant: an HMAC-SHA256 tag is always 32 bytes, so this cannot panic.
        out.copy_from_slice(tag.as_ref());
        TokenHash(out)
    }

    /// Constant-time check that `token` hashes to `expected`.
    pub fn verify_token(&self, token: PresentedToken<'_>, expected: &TokenHash) -> bool {
        // `hmac::verify` recomputes the tag and compares in constant time, so the response
        // time reveals nothing about how many leading bytes of a guess were right.
        hmac::verify(&self.0, token.expose_secret().as_bytes(), &expected.0).is_ok()
    }
}

impl MacKey {
    /// HMAC-SHA256 of `message`, for authenticating records (audit checkpoints) that storage
    /// keeps but must not be able to forge. Use a separate key per purpose.
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.0, message);
        let mut out = [0u8; 32];
        // Invariant: an HMAC-SHA256 tag is always 32 bytes.
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Constant-time check of a tag made by [`MacKey::sign`].
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.0, message, tag).is_ok()
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use coffer_types::TokenId;

    use super::*;

    fn mac_key(byte: u8) -> MacKey {
        MacKey::from_data_key(&DataKey::from_bytes(&mut [byte; 32]))
    }

    fn token(secret_char: char) -> Token {
        let text = format!(
            "coffer_{}_{}",
            "01".repeat(16),
            secret_char.to_string().repeat(43)
        );
        Token::parse(&text).expect("well-formed test token")
    }

    #[test]
    fn sign_and_verify_messages() {
        let key = mac_key(7);
        let tag = key.sign(b"checkpoint 1");
        assert!(key.verify(b"checkpoint 1", &tag));
        assert!(!key.verify(b"checkpoint 2", &tag));
        assert!(!mac_key(8).verify(b"checkpoint 1", &tag));
        let mut bad = tag;
        bad[0] ^= 1;
        assert!(!key.verify(b"checkpoint 1", &bad));
        assert!(!key.verify(b"checkpoint 1", &tag[..31]));
    }

    #[test]
    fn known_answer() {
        // Computed independently with Python:
        //   hmac.new(bytes([7]) * 32, ("coffer_" + "01" * 16 + "_" + "A" * 43).encode(),
        //            hashlib.sha256).hexdigest()
        let hash = mac_key(7).hash_token(&token('A'));
        assert_eq!(
            hex::encode(hash.0),
            "c7e8a1ef2b6536e9dcea1be36bb37ca7c111dd32dd8cb135f46cab178bd9bc70"
        );
    }

    #[test]
    fn same_token_same_hash_different_token_different_hash() {
        let key = mac_key(7);
        assert_eq!(key.hash_token(&token('A')), key.hash_token(&token('A')));
        assert_ne!(key.hash_token(&token('A')), key.hash_token(&token('E')));
        // Same token under another instance's key.
        assert_ne!(
            key.hash_token(&token('A')),
            mac_key(8).hash_token(&token('A'))
        );
        let fresh = Token::generate(TokenId::from_bytes([1; 16]));
        assert_ne!(key.hash_token(&fresh), key.hash_token(&token('A')));
    }

    #[test]
    fn verify_accepts_only_the_matching_hash() {
        let key = mac_key(7);
        let good = token('A');
        let hash = key.hash_token(&good);
        assert!(key.verify_token(good.presented(), &hash));
        assert!(!key.verify_token(token('E').presented(), &hash));
        assert!(!mac_key(8).verify_token(good.presented(), &hash));
        for i in 0..32 {
            let mut tampered = hash.clone();
            tampered.0[i] ^= 1;
            assert!(!key.verify_token(good.presented(), &tampered));
        }
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", mac_key(7)), "[redacted]");
    }
}
