//! What edge replication needs from storage beyond the change log itself: the log's identity
//! and base ([`LogState`]) and the parts of a streamed snapshot ([`SnapshotPart`]).
//!
//! The feed an edge follows is the change log ([`crate::ChangeRecord`]); a snapshot is the
//! replicated state at one log position, as one `*_put` [`crate::Change`] per live row, so an
//! edge applies snapshot items and feed entries with the same code.

/// The change log's identity, base and head, read in one snapshot.
///
/// Entries `base_seq + 1 ..= head_seq` are held; entries up to `base_seq` are not (compacted on
/// the control plane, covered by the installed snapshot on an edge). With no entry held,
/// `head_seq == base_seq` and `head_hash == base_hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogState {
    /// The cluster whose log this is: made by the control plane
    /// ([`crate::Storage::ensure_cluster_id`]), adopted by an edge from its first snapshot.
    /// `None` before either.
    pub cluster_id: Option<[u8; 16]>,
    /// The last entry no longer held (0 when the log starts at seq 1).
    pub base_seq: u64,
    /// The hash of entry `base_seq` ([`crate::ChangeRecord::GENESIS_HASH`] for 0): the first held
    /// entry chains onto it.
    pub base_hash: [u8; 32],
    /// The last entry's seq (`base_seq` when none is held).
    pub head_seq: u64,
    /// The last entry's hash (`base_hash` when none is held).
    pub head_hash: [u8; 32],
}

/// One message of a streamed snapshot ([`crate::Storage::snapshot`]): first one
/// [`SnapshotPart::Header`], then exactly `count` [`SnapshotPart::Item`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotPart {
    /// The log position the snapshot reflects (the head when its read began) and how many
    /// items follow.
    Header {
        cluster_id: [u8; 16],
        seq: u64,
        hash: [u8; 32],
        count: u64,
    },
    /// The JSON encoding of one [`crate::Change`], serialized exactly as the log serializes
    /// its payloads.
    Item(Vec<u8>),
}

/// The instance-key purposes a snapshot carries (as [`crate::Change::InstanceKeyPut`]) and a
/// replica accepts: the MAC keys of service tokens and of node tokens, which edges and relays
/// verify tokens with. No other instance key ever leaves the control plane.
pub const REPLICATED_KEY_PURPOSES: [&str; 2] = ["service-token-mac", "node-token-mac"];

/// The instance-key purpose of replication key `version` is this prefix and the version in
/// decimal; the highest version is the current one. Never replicated.
pub const REPLICATION_KEY_PURPOSE_PREFIX: &str = "replication-key:";

/// The key id an RK wrap of `version` carries in the feed and in an edge's replica (the same
/// form as `coffer_crypto::rk_kek_id`).
pub fn rk_kek_id(version: u32) -> String {
    format!("rk:{version}")
}

/// The prefix of the key id an ARK wrap carries: `ark:<version>`. Storage does not depend on
/// coffer-crypto, so this is the storage side of `coffer_crypto::ARK_KEK_ID_PREFIX` (core's
/// tests check the two agree); every `ark:` in storage's code and SQL comes from here.
pub const ARK_KEK_ID_PREFIX: &str = "ark:";

/// The key id an ARK wrap of `version` carries in the feed and in an edge's replica.
pub fn ark_kek_id(version: u32) -> String {
    format!("{ARK_KEK_ID_PREFIX}{version}")
}
