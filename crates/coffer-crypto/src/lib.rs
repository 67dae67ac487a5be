//! Coffer's cryptography: the types that hold secrets in memory, the envelope format that seals
//! secret values under data-encryption keys (DEKs), and the providers of the key-encryption key
//! (KEK) that wraps DEKs.
//!
//! Every primitive comes from aws-lc-rs. Nothing in this crate performs I/O except
//! [`FileKek`], which reads or creates its key file.
//!
//! Invariants:
//! - secret-bearing types ([`Plaintext`], [`DataKey`], [`MacKey`], [`Token`]) zeroize on drop,
//!   print `[redacted]` under `Debug`, and implement neither `Display`, `Clone`, `Serialize` nor
//!   `Deref`; their bytes are reached only through `expose_secret()`;
//! - every ciphertext is bound by its AAD to the context it was sealed for, so a ciphertext moved
//!   to another row, account, version or key fails to open;
//! - a failure to open is one opaque error ([`CryptoError::Opaque`]), whatever the cause;
//! - nonces are always drawn from the system CSPRNG inside this crate; no public function takes
//!   one, so a caller cannot repeat a nonce under a key.
//!
//! The byte layout of sealed values and wrapped keys is specified in docs/envelope-format.md.

mod envelope;
mod error;
mod kek;
mod mac;
mod node_key;
mod random;
mod secret;
mod signing;

pub use envelope::{
    DekContext, ENVELOPE_OVERHEAD, SealedValue, ValueContext, WrappedDataKey, open, open_bytes,
    seal,
};
pub use error::CryptoError;
pub use kek::{FileKek, KekId, KekProvider};
pub use mac::{MacKey, TokenHash};
pub use node_key::account::{
    ACCOUNT_GRANT_SALT, ARK_KEK_ID_PREFIX, ARK_PURPOSE_PREFIX, AccountGrantRecipient, ark_context,
    ark_kek_id, ark_purpose, ark_unwrap, ark_version_of, ark_wrap, seal_account_grant,
};
pub use node_key::{
    ArkSource, GRANT_SALT, Grant, GrantSource, GrantedKeys, NODE_KEY_LEN, NodeKey, NodePublicKey,
    RK_KEK_ID_PREFIX, rk_kek_id, rk_unwrap, rk_version_of, rk_wrap, seal_grant,
};
pub use random::{random_array, random_id};
pub use secret::{DATA_KEY_LEN, DataKey, Plaintext, PresentedToken, Token, TokenKind};
pub use signing::SigningKey;
