//! Types that hold secrets in memory.

/// A secret value in clear. Built from the request body, consumed by [`crate::seal`], produced by
/// [`crate::open`] only for a runtime read.
pub struct Plaintext(/* Zeroizing<Vec<u8>> */);

impl Plaintext {
    pub fn new(bytes: Vec<u8>) -> Plaintext {
        unimplemented!()
    }
    pub fn from_string(s: String) -> Plaintext {
        unimplemented!()
    }
    pub fn expose_secret(&self) -> &[u8] {
        unimplemented!()
    }
    pub fn len(&self) -> usize {
        unimplemented!()
    }
    pub fn is_empty(&self) -> bool {
        unimplemented!()
    }
}

/// A 256-bit data-encryption key, with its AES-256-GCM key schedule prepared once.
pub struct DataKey(/* Zeroizing<[u8; 32]>, aead::LessSafeKey */);

impl DataKey {
    /// A fresh key from the system CSPRNG.
    pub fn generate() -> DataKey {
        unimplemented!()
    }
    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        unimplemented!()
    }
    pub fn expose_secret(&self) -> &[u8; 32] {
        unimplemented!()
    }
}

/// An API token in clear, as the client sends it: `coffer_<32 hex token id>_<43 base64url chars
/// of 256 random bits>`. The id part lets the server find the stored hash without scanning.
pub struct ApiToken(/* Zeroizing<String> */);

impl ApiToken {
    /// A fresh token for `id`.
    pub fn generate(id: coffer_types::TokenId) -> ApiToken {
        unimplemented!()
    }
    /// Parses the shape (prefix, id, secret length and alphabet). Does not authenticate.
    pub fn parse(s: &str) -> Result<ApiToken, crate::CryptoError> {
        unimplemented!()
    }
    pub fn id(&self) -> coffer_types::TokenId {
        unimplemented!()
    }
    pub fn expose_secret(&self) -> &str {
        unimplemented!()
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}
