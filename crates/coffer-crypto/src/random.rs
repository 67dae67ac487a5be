//! The one source of randomness: aws-lc-rs's system CSPRNG.

/// Fills `dest` from the CSPRNG. Callers that hold secrets use this to fill a zeroizing buffer in
/// place, so the random bytes never exist in an unprotected temporary.
pub(crate) fn fill(dest: &mut [u8]) {
    if aws_lc_rs::rand::fill(dest).is_err() {
        // The OS CSPRNG failing means no key, nonce or token this process makes can be trusted
        // to be unpredictable. Returning an error would invite callers to retry or fall back
        // to something weaker, and a repeated GCM nonce would expose plaintext, so stopping the
        // process is the only safe outcome.
        panic!("the operating system's random number generator failed");
    }
}

/// `N` random bytes. Panics only if the operating system's CSPRNG fails, which leaves no safe
/// way to continue.
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill(&mut out);
    out
}

/// A fresh random 128-bit id of any kind (`AccountId::from_bytes(random_id())`).
pub fn random_id() -> [u8; 16] {
    random_array()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successive_values_differ() {
        // 2^-128 chance of a false failure; a stuck or zeroed generator fails every time.
        let a = random_id();
        let b = random_id();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 16]);
        let big: [u8; 64] = random_array();
        assert_ne!(big, [0u8; 64]);
    }
}
