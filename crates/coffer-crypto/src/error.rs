/// Errors of the crypto layer. Deliberately coarse: callers must not be able to tell why a
/// ciphertext failed to open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A sealed value or wrapped key failed to open: wrong key, wrong context, tampered or
    /// truncated bytes. One error for all of them, so there is no oracle.
    #[error("decryption failed")]
    Opaque,
    /// The key-encryption key could not be used (missing key file, HSM unreachable, unknown
    /// KEK id). The string says which, and never contains key material.
    #[error("key unavailable: {0}")]
    KeyUnavailable(String),
    /// Reading or writing a key file failed.
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A serialized form (sealed value header, wrapped key, token string) is malformed.
    #[error("malformed {0}")]
    Malformed(&'static str),
}
