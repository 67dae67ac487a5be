//! Signed checkpoints of the change log: what the control plane signs so that edges accept
//! only the log it wrote.
//!
//! A checkpoint names one entry (its seq and chain hash) in one cluster's log; because each
//! hash covers its predecessor, a valid signature over a checkpoint vouches for every entry up
//! to it. Storage builds the signed message and stores signatures as opaque bytes; the signing
//! itself is a [`FeedSigner`] handed in by the caller (storage does not depend on a crypto
//! crate), and verification is the replication crate's.

/// Separates checkpoint signatures from every other use of the signing key.
pub const CHECKPOINT_DOMAIN: &[u8] = b"coffer feed checkpoint v1\0";

/// The length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Entries after which a backend's writer signs a checkpoint between two writes of one batch,
/// not only at the batch's end: a rule of the feed every backend keeps alike. Feed answers
/// stop at about 4 MiB; a write's entries are at most a few MiB (a bulk create's body is
/// 1 MiB), so this keeps checkpoints within reach of every answer.
pub const SIGN_EVERY_ENTRIES: u64 = 256;

/// The bytes signed for a checkpoint: the domain, the cluster id, the seq (8 bytes big-endian)
/// and the entry's hash. Fixed length, so no two checkpoints encode alike.
pub fn checkpoint_message(cluster_id: &[u8; 16], seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 16 + 8 + 32);
    msg.extend_from_slice(CHECKPOINT_DOMAIN);
    msg.extend_from_slice(cluster_id);
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(hash);
    msg
}

/// Signs checkpoints with the instance's feed-signing key. Implemented outside storage (the
/// server holds the key, unwrapped by the KEK); only the control plane has one.
pub trait FeedSigner: Send + Sync + std::fmt::Debug {
    /// The signature over `message` (a [`checkpoint_message`]).
    fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN];
}

/// The signature of one log entry: it covers the checkpoint (cluster id, `seq`, the entry's
/// hash). Stored with the log and served with the entry, byte for byte, by relays.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FeedSignature {
    pub seq: u64,
    pub signature: [u8; SIGNATURE_LEN],
}

impl std::fmt::Debug for FeedSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Public, but 64 bytes of noise in every log line help nobody.
        f.debug_struct("FeedSignature")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_messages_differ_in_every_field() {
        let base = checkpoint_message(&[1; 16], 7, &[2; 32]);
        assert!(base.starts_with(CHECKPOINT_DOMAIN));
        assert_eq!(base.len(), CHECKPOINT_DOMAIN.len() + 56);
        assert_ne!(base, checkpoint_message(&[3; 16], 7, &[2; 32]));
        assert_ne!(base, checkpoint_message(&[1; 16], 8, &[2; 32]));
        assert_ne!(base, checkpoint_message(&[1; 16], 7, &[4; 32]));
    }
}
