//! The one source of randomness: aws-lc-rs's system CSPRNG.

/// `N` random bytes. Panics only if the operating system's CSPRNG fails, which leaves no safe
/// way to continue.
pub fn random_array<const N: usize>() -> [u8; N] {
    unimplemented!()
}

/// A fresh random 128-bit id of any kind (`AccountId::from_bytes(random_id())`).
pub fn random_id() -> [u8; 16] {
    random_array()
}
