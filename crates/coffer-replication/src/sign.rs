//! Signed feeds: the control plane's Ed25519 feed-signing key, the public half an edge pins,
//! and what is signed.
//!
//! - A **checkpoint** ([`coffer_storage::checkpoint_message`]) names one log entry by cluster
//!   id, seq and chain hash. The control plane signs the last entry of every committed write
//!   batch; the chain makes one signature vouch for every entry up to it.
//! - A **snapshot** is signed over [`snapshot_message`]: cluster id, position, item count,
//!   digest and origin time (when the control plane started producing it), so that a recorded
//!   snapshot replayed later is recognisably old.
//! - A **freshness statement** ([`Freshness`], signed over [`freshness_message`]) says "at
//!   origin time T the head of this cluster's log was (seq, hash)". The control plane makes
//!   one at most about once a second (and whenever its head moved) and puts it on every feed
//!   answer; relays forward the newest one they verified unchanged. Edges measure staleness
//!   and learn the head only from these, so a relay or anyone on the path can withhold
//!   entries only by withholding statements too, which makes the edge go stale and fail over.
//!
//! Relays forward signatures unchanged and hold no key, so once a follower is given the key
//! (`Config::feed_key`) a relay, or anyone between it and its upstream, cannot make it apply
//! anything the control plane did not sign. Edges always pin it (`coffer edge --feed-key`, or
//! on first use; `coffer-edge`'s `feed_pin`).

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair};
use coffer_storage::{FeedSigner, SIGNATURE_LEN, checkpoint_message};

use crate::ClusterId;
use crate::Position;

/// Separates snapshot signatures from checkpoint and freshness signatures. Version 2 added
/// the origin time.
pub const SNAPSHOT_SIGNATURE_DOMAIN: &[u8] = b"coffer snapshot v2\0";

/// Separates freshness statements from checkpoint and snapshot signatures.
pub const FRESHNESS_SIGNATURE_DOMAIN: &[u8] = b"coffer feed freshness v1\0";

/// The bytes signed for a snapshot: the domain, the cluster id, the position (seq 8 bytes
/// big-endian, hash), the item count (8 bytes big-endian), the digest
/// ([`crate::Snapshot::digest_of`]) and the origin time (Unix ms, 8 bytes big-endian).
/// Fixed length.
pub fn snapshot_message(
    cluster_id: &ClusterId,
    position: Position,
    count: u64,
    digest: &[u8; 32],
    origin_ms: u64,
) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SNAPSHOT_SIGNATURE_DOMAIN.len() + 16 + 40 + 8 + 32 + 8);
    msg.extend_from_slice(SNAPSHOT_SIGNATURE_DOMAIN);
    msg.extend_from_slice(cluster_id);
    msg.extend_from_slice(&position.seq.to_be_bytes());
    msg.extend_from_slice(&position.hash);
    msg.extend_from_slice(&count.to_be_bytes());
    msg.extend_from_slice(digest);
    msg.extend_from_slice(&origin_ms.to_be_bytes());
    msg
}

/// The bytes signed for a freshness statement: the domain, the cluster id, the head (seq 8
/// bytes big-endian, hash 32 bytes) and the origin time (Unix ms of the control plane's
/// clock, 8 bytes big-endian). Fixed length.
pub fn freshness_message(cluster_id: &ClusterId, head: Position, origin_ms: u64) -> Vec<u8> {
    let mut msg = Vec::with_capacity(FRESHNESS_SIGNATURE_DOMAIN.len() + 16 + 40 + 8);
    msg.extend_from_slice(FRESHNESS_SIGNATURE_DOMAIN);
    msg.extend_from_slice(cluster_id);
    msg.extend_from_slice(&head.seq.to_be_bytes());
    msg.extend_from_slice(&head.hash);
    msg.extend_from_slice(&origin_ms.to_be_bytes());
    msg
}

/// The control plane's signed statement that at `origin_ms` its log's head was `head`. Only
/// the holder of the feed-signing key can make one; relays pass them on unchanged.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub cluster_id: ClusterId,
    pub head: Position,
    pub origin_ms: u64,
    pub signature: [u8; SIGNATURE_LEN],
}

impl Freshness {
    /// A statement signed with `key`.
    pub fn sign(
        key: &FeedKeyPair,
        cluster_id: ClusterId,
        head: Position,
        origin_ms: u64,
    ) -> Freshness {
        Freshness {
            cluster_id,
            head,
            origin_ms,
            signature: key.sign_bytes(&freshness_message(&cluster_id, head, origin_ms)),
        }
    }

    /// Whether the signature verifies under `key`.
    pub fn verifies(&self, key: &FeedKey) -> bool {
        key.verify(
            &freshness_message(&self.cluster_id, self.head, self.origin_ms),
            &self.signature,
        )
    }
}

impl std::fmt::Debug for Freshness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Freshness")
            .field("head_seq", &self.head.seq)
            .field("origin_ms", &self.origin_ms)
            .finish_non_exhaustive()
    }
}

/// The public half of a feed-signing key: what an edge pins (`DIR/feed.pub`). Written as 64 lowercase hex
/// digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FeedKey([u8; 32]);

/// A feed key that cannot be pinned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadFeedKey {
    #[error("a feed key is 64 hex digits (32 bytes, as `coffer node create` prints it)")]
    NotHex,
    /// One of the [`SMALL_ORDER_KEYS`]: under such a key anyone can forge signatures (the
    /// all-zero key is one of them, so a placeholder cannot be pinned by mistake).
    #[error(
        "not a usable feed key: it is a point of small order (such as all zeros), under which anyone can forge signatures; give the key `coffer node create` printed"
    )]
    SmallOrder,
}

/// The eight canonical encodings of the Ed25519 points of small order (the identity, the
/// point of order 2, two of order 4 and four of order 8). aws-lc's verification accepts them
/// as public keys, and under each some signature (R the identity, S zero) verifies for a
/// fraction of all messages (all of them, for the identity), so the feed key parser refuses
/// them. Their non-canonical encodings (y at least p) are refused by aws-lc itself; the tests
/// check both.
pub const SMALL_ORDER_KEYS: [[u8; 32]; 8] = {
    const fn y(low: u8, high: u8) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[0] = low;
        out[31] = high;
        out
    }
    const fn order2() -> [u8; 32] {
        let mut out = [0xff; 32];
        out[0] = 0xec;
        out[31] = 0x7f;
        out
    }
    const ORDER8_A: [u8; 32] = [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ];
    const ORDER8_B: [u8; 32] = [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ];
    const fn negated(mut point: [u8; 32]) -> [u8; 32] {
        point[31] |= 0x80;
        point
    }
    [
        y(1, 0),
        order2(),
        y(0, 0),
        y(0, 0x80),
        ORDER8_A,
        negated(ORDER8_A),
        ORDER8_B,
        negated(ORDER8_B),
    ]
};

impl FeedKey {
    pub fn from_bytes(bytes: [u8; 32]) -> FeedKey {
        FeedKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits (either case; surrounding whitespace is ignored), refusing the
    /// [`SMALL_ORDER_KEYS`].
    pub fn parse(text: &str) -> Result<FeedKey, BadFeedKey> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut out).map_err(|_| BadFeedKey::NotHex)?;
        if SMALL_ORDER_KEYS.contains(&out) {
            return Err(BadFeedKey::SmallOrder);
        }
        Ok(FeedKey(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short name for logs: the first 8 bytes of the key's SHA-256, in hex.
    pub fn fingerprint(&self) -> String {
        let d = digest::digest(&digest::SHA256, &self.0);
        hex::encode(&d.as_ref()[..8])
    }

    fn verify(&self, message: &[u8], sig: &[u8; SIGNATURE_LEN]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(message, sig)
            .is_ok()
    }

    /// Whether `sig` signs the checkpoint (cluster, seq, hash) under this key.
    pub fn verifies_checkpoint(
        &self,
        cluster_id: &ClusterId,
        seq: u64,
        hash: &[u8; 32],
        sig: &[u8; SIGNATURE_LEN],
    ) -> bool {
        self.verify(&checkpoint_message(cluster_id, seq, hash), sig)
    }

    /// Whether `sig` signs the snapshot (cluster, position, count, digest, origin) under this
    /// key.
    pub fn verifies_snapshot(
        &self,
        cluster_id: &ClusterId,
        position: Position,
        count: u64,
        digest: &[u8; 32],
        origin_ms: u64,
        sig: &[u8; SIGNATURE_LEN],
    ) -> bool {
        self.verify(
            &snapshot_message(cluster_id, position, count, digest, origin_ms),
            sig,
        )
    }
}

impl std::fmt::Display for FeedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for FeedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FeedKey({})", self.fingerprint())
    }
}

impl std::str::FromStr for FeedKey {
    type Err = BadFeedKey;
    fn from_str(s: &str) -> Result<FeedKey, BadFeedKey> {
        FeedKey::parse(s)
    }
}

/// The private feed-signing key (the control plane's only; never in a snapshot or on an edge).
pub struct FeedKeyPair(Ed25519KeyPair);

/// A feed-signing key document that does not parse (or a key that cannot be made).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the feed-signing key is unusable: {0}")]
pub struct BadKeyPair(String);

impl FeedKeyPair {
    /// A new key and its PKCS#8 v2 document (to be stored wrapped by the KEK). The document is
    /// the caller's to zeroize.
    pub fn generate() -> Result<(FeedKeyPair, Vec<u8>), BadKeyPair> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| BadKeyPair(e.to_string()))?;
        let bytes = doc.as_ref().to_vec();
        Ok((FeedKeyPair::from_pkcs8(&bytes)?, bytes))
    }

    /// The key in a PKCS#8 (v1 or v2) document.
    pub fn from_pkcs8(document: &[u8]) -> Result<FeedKeyPair, BadKeyPair> {
        Ed25519KeyPair::from_pkcs8(document)
            .map(FeedKeyPair)
            .map_err(|e| BadKeyPair(e.to_string()))
    }

    pub fn public_key(&self) -> FeedKey {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.public_key().as_ref());
        FeedKey(out)
    }

    fn sign_bytes(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.0.sign(message).as_ref());
        out
    }

    pub fn sign_checkpoint(
        &self,
        cluster_id: &ClusterId,
        seq: u64,
        hash: &[u8; 32],
    ) -> [u8; SIGNATURE_LEN] {
        self.sign_bytes(&checkpoint_message(cluster_id, seq, hash))
    }

    pub fn sign_snapshot(
        &self,
        cluster_id: &ClusterId,
        position: Position,
        count: u64,
        digest: &[u8; 32],
        origin_ms: u64,
    ) -> [u8; SIGNATURE_LEN] {
        self.sign_bytes(&snapshot_message(
            cluster_id, position, count, digest, origin_ms,
        ))
    }
}

impl FeedSigner for FeedKeyPair {
    fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.sign_bytes(message)
    }
}

impl std::fmt::Debug for FeedKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FeedKeyPair({:?}, [redacted])", self.public_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_verify_only_under_their_key_cluster_seq_and_hash() {
        let (pair, doc) = FeedKeyPair::generate().unwrap();
        let key = pair.public_key();
        let sig = pair.sign_checkpoint(&[1; 16], 5, &[9; 32]);
        assert!(key.verifies_checkpoint(&[1; 16], 5, &[9; 32], &sig));
        assert!(
            !key.verifies_checkpoint(&[2; 16], 5, &[9; 32], &sig),
            "cluster"
        );
        assert!(!key.verifies_checkpoint(&[1; 16], 6, &[9; 32], &sig), "seq");
        assert!(
            !key.verifies_checkpoint(&[1; 16], 5, &[8; 32], &sig),
            "hash"
        );
        let (other, _) = FeedKeyPair::generate().unwrap();
        assert!(
            !other
                .public_key()
                .verifies_checkpoint(&[1; 16], 5, &[9; 32], &sig)
        );
        // The same key back from its document.
        assert_eq!(FeedKeyPair::from_pkcs8(&doc).unwrap().public_key(), key);
        assert!(FeedKeyPair::from_pkcs8(b"not a key").is_err());
        // A checkpoint signature is no snapshot signature, and the other way round.
        let pos = Position {
            seq: 5,
            hash: [9; 32],
        };
        assert!(!key.verifies_snapshot(&[1; 16], pos, 0, &[0; 32], 7, &sig));
        let snap = pair.sign_snapshot(&[1; 16], pos, 3, &[4; 32], 7);
        assert!(key.verifies_snapshot(&[1; 16], pos, 3, &[4; 32], 7, &snap));
        assert!(
            !key.verifies_snapshot(&[1; 16], pos, 4, &[4; 32], 7, &snap),
            "count"
        );
        assert!(
            !key.verifies_snapshot(&[1; 16], pos, 3, &[4; 32], 8, &snap),
            "origin"
        );
        assert!(!key.verifies_checkpoint(&[1; 16], 5, &[9; 32], &snap));
        // Freshness statements: their own domain, every field covered.
        let fresh = Freshness::sign(&pair, [1; 16], pos, 1_000);
        assert!(fresh.verifies(&key));
        assert!(
            !Freshness {
                origin_ms: 1_001,
                ..fresh
            }
            .verifies(&key),
            "origin"
        );
        assert!(
            !Freshness {
                head: Position { seq: 6, ..pos },
                ..fresh
            }
            .verifies(&key),
            "head"
        );
        assert!(
            !Freshness {
                cluster_id: [2; 16],
                ..fresh
            }
            .verifies(&key),
            "cluster"
        );
        assert!(
            !Freshness {
                signature: snap,
                ..fresh
            }
            .verifies(&key),
            "a snapshot signature"
        );
        assert!(!fresh.verifies(&other.public_key()), "another key");
    }

    #[test]
    fn feed_keys_parse_from_hex_and_never_print_the_private_half() {
        let (pair, _) = FeedKeyPair::generate().unwrap();
        let key = pair.public_key();
        assert_eq!(FeedKey::parse(&key.to_hex()).unwrap(), key);
        assert_eq!(
            FeedKey::parse(&format!(" {} \n", key.to_hex().to_uppercase())).unwrap(),
            key
        );
        assert_eq!(FeedKey::parse("abcd"), Err(BadFeedKey::NotHex));
        assert_eq!(FeedKey::parse(&"zz".repeat(32)), Err(BadFeedKey::NotHex));
        assert_eq!(key.fingerprint().len(), 16);
        let shown = format!("{pair:?}");
        assert!(shown.contains("[redacted]") && shown.contains(&key.fingerprint()));
    }

    /// A signature whose R is the identity and whose S is zero: it verifies under a key of
    /// small order A whenever H(R, A, message) times A is the identity.
    fn forged() -> [u8; SIGNATURE_LEN] {
        let mut sig = [0u8; SIGNATURE_LEN];
        sig[0] = 1;
        sig
    }

    fn forges(key: &[u8; 32]) -> bool {
        (0u32..64).any(|i| {
            signature::UnparsedPublicKey::new(&signature::ED25519, key)
                .verify(&i.to_be_bytes(), &forged())
                .is_ok()
        })
    }

    #[test]
    fn small_order_keys_are_refused_since_aws_lc_verifies_forgeries_under_them() {
        for key in SMALL_ORDER_KEYS {
            // What the parser protects against: aws-lc takes the key, and the forgery verifies.
            assert!(forges(&key), "{}", hex::encode(key));
            assert_eq!(
                FeedKey::parse(&hex::encode(key)),
                Err(BadFeedKey::SmallOrder),
                "{}",
                hex::encode(key)
            );
        }
        assert_eq!(
            FeedKey::parse(&"0".repeat(64)),
            Err(BadFeedKey::SmallOrder),
            "the all-zero placeholder"
        );
        let message = FeedKey::parse(&"0".repeat(64)).unwrap_err().to_string();
        assert!(message.contains("small order"), "{message}");
        // A real key forges nothing.
        let (pair, _) = FeedKeyPair::generate().unwrap();
        assert!(!forges(pair.public_key().as_bytes()));
    }

    #[test]
    fn aws_lc_refuses_non_canonical_small_order_encodings_itself() {
        // y = p and y = p + 1 (the order-4 point and the identity, written past the field),
        // with either sign, and the identity and order-2 point with the sign bit set.
        let mut non_canonical = Vec::new();
        for low in [0xed, 0xee] {
            for high in [0x7f, 0xff] {
                let mut key = [0xff; 32];
                key[0] = low;
                key[31] = high;
                non_canonical.push(key);
            }
        }
        let mut identity_negated = [0u8; 32];
        identity_negated[0] = 1;
        identity_negated[31] = 0x80;
        non_canonical.push(identity_negated);
        let mut order2_negated = [0xff; 32];
        order2_negated[0] = 0xec;
        non_canonical.push(order2_negated);
        for key in non_canonical {
            assert!(!forges(&key), "{}", hex::encode(key));
        }
    }
}
