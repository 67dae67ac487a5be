//! Key material of edge nodes: the replication key (RK) that wraps what the feed carries, the
//! node's own X25519 key pair, and grants (an RK version sealed to one node's public key).
//!
//! The control plane holds the KEK and the RK; an edge holds only its node key and the RK
//! versions granted to it. Formats (byte layouts in docs/envelope-format.md, "Replication-key
//! wraps and grants"):
//! - an **RK wrap** is a wrapped key in the KEK's format (docs/envelope-format.md) under the RK
//!   of its version, with the wrapped key's context as AAD but the purpose suffixed with
//!   `@rk<version>`, so a wrap cannot be moved to another key, account, purpose or RK version.
//!   Its `KekId` is `rk:<version>`, which is what the replica stores beside it.
//! - a **grant** is an ephemeral X25519 public key (32 bytes) and the RK wrapped (same format)
//!   under AES-256-GCM with a key from HKDF-SHA256 over the X25519 shared secret (salt
//!   [`GRANT_SALT`]; info: node id, RK version, ephemeral public key, node public key), with
//!   AAD naming the node (as the wrapped key's id) and the purpose `rk-grant@rk<version>`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::encoding::{AsBigEndian, Curve25519SeedBin};
use aws_lc_rs::hkdf;
use coffer_types::{DekId, TokenId};
use zeroize::Zeroizing;

use crate::envelope::{unwrap_key, wrap_key};
use crate::kek::io_error;
use crate::{CryptoError, DataKey, DekContext, KekId, KekProvider, WrappedDataKey};

/// Length of an X25519 public (and private) key.
pub const NODE_KEY_LEN: usize = 32;
/// The `KekId` prefix of RK wraps: `rk:<version>`.
pub const RK_KEK_ID_PREFIX: &str = "rk:";
/// HKDF salt of grants: names the scheme and its version.
pub const GRANT_SALT: &[u8] = b"coffer/node-grant/v1";
const GRANT_PURPOSE: &str = "rk-grant";

/// The `KekId` an RK wrap of `version` records.
pub fn rk_kek_id(version: u32) -> KekId {
    KekId(format!("{RK_KEK_ID_PREFIX}{version}"))
}

/// The RK version a `KekId` names, if it names one.
pub fn rk_version_of(kek_id: &str) -> Option<u32> {
    version_after(kek_id, RK_KEK_ID_PREFIX)
}

/// The decimal version after `prefix` in a `KekId` (`rk:3`, `ark:3`); `None` for another
/// prefix, no digits, a sign or anything else after them, or a version beyond `u32`.
pub(crate) fn version_after(kek_id: &str, prefix: &str) -> Option<u32> {
    let digits = kek_id.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The two kinds of replication key: the instance's (RK) and an account's own (ARK). Their
/// wraps and grants differ only in the suffix their purposes get (`@rk<n>`, `@ark<n>`), which
/// keeps a wrap from moving between versions or between the two kinds of key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReplicationKeyKind {
    Instance,
    Account,
}

impl ReplicationKeyKind {
    /// `purpose` bound to version `version` of this kind of key.
    pub(crate) fn purpose(self, purpose: &str, version: u32) -> String {
        match self {
            ReplicationKeyKind::Instance => format!("{purpose}@rk{version}"),
            ReplicationKeyKind::Account => format!("{purpose}@ark{version}"),
        }
    }

    /// `key`'s wrap (bound to `ctx`) under `wrapping`, version `version` of this kind.
    pub(crate) fn wrap(
        self,
        wrapping: &DataKey,
        version: u32,
        key: &DataKey,
        ctx: &DekContext<'_>,
    ) -> Result<Vec<u8>, CryptoError> {
        let purpose = self.purpose(ctx.purpose, version);
        let ctx = DekContext {
            purpose: &purpose,
            ..*ctx
        };
        wrap_key(wrapping.aead(), key, &ctx)
    }

    /// Opens a wrap [`ReplicationKeyKind::wrap`] made.
    pub(crate) fn unwrap(
        self,
        wrapping: &DataKey,
        version: u32,
        wrapped: &[u8],
        ctx: &DekContext<'_>,
    ) -> Result<DataKey, CryptoError> {
        let purpose = self.purpose(ctx.purpose, version);
        let ctx = DekContext {
            purpose: &purpose,
            ..*ctx
        };
        unwrap_key(wrapping.aead(), wrapped, &ctx)
    }
}

/// Wraps `key` (bound to `ctx`) under the replication key `rk` of `version`. Only the control
/// plane wraps.
pub fn rk_wrap(
    rk: &DataKey,
    version: u32,
    key: &DataKey,
    ctx: &DekContext<'_>,
) -> Result<WrappedDataKey, CryptoError> {
    Ok(WrappedDataKey {
        kek_id: rk_kek_id(version),
        bytes: ReplicationKeyKind::Instance.wrap(rk, version, key, ctx)?,
    })
}

/// Opens an RK wrap of `version` made by [`rk_wrap`].
pub fn rk_unwrap(
    rk: &DataKey,
    version: u32,
    wrapped: &[u8],
    ctx: &DekContext<'_>,
) -> Result<DataKey, CryptoError> {
    ReplicationKeyKind::Instance.unwrap(rk, version, wrapped, ctx)
}

/// A node's X25519 public key, checked: 32 bytes, in its one canonical encoding, and usable
/// in an agreement (not a low-order point, whose shared secret would be all zeros). Not
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub struct NodePublicKey([u8; NODE_KEY_LEN]);

impl NodePublicKey {
    pub fn parse(bytes: &[u8]) -> Result<NodePublicKey, CryptoError> {
        let key: [u8; NODE_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| CryptoError::Malformed("node public key (not 32 bytes)"))?;
        // X25519 ignores the top bit and reduces u modulo p = 2^255 - 19, so one key has
        // several encodings. Only the canonical one is accepted: the checks that two
        // registered keys differ (a node's key and its per-account keys) compare bytes.
        if !is_canonical_u(&key) {
            return Err(CryptoError::Malformed(
                "node public key (not the canonical encoding of an X25519 key)",
            ));
        }
        // A trial agreement rejects the keys no grant could ever be sealed to.
        let probe = PrivateKey::generate(&X25519)
            .map_err(|_| CryptoError::KeyUnavailable("cannot make an X25519 key".into()))?;
        agreement::agree(
            &probe,
            UnparsedPublicKey::new(&X25519, &key[..]),
            CryptoError::Malformed("node public key (not a usable X25519 key)"),
            |_| Ok(()),
        )?;
        Ok(NodePublicKey(key))
    }

    pub fn as_bytes(&self) -> &[u8; NODE_KEY_LEN] {
        &self.0
    }

    /// A short name of the key for logs and audit entries: `sha256:` and the first 16 bytes
    /// of the SHA-256 of its 32 bytes, in hex. Enough to tell registered keys apart and to
    /// compare with an edge's own log, without recording the key itself.
    pub fn fingerprint(&self) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.0);
        format!("sha256:{}", hex::encode(&digest.as_ref()[..16]))
    }
}

/// Whether `u` (little-endian) is below p = 2^255 - 19 with its top bit clear: the one
/// encoding of its X25519 point. The values from p to 2^255 - 1 are 0x7f, thirty 0xff and a
/// first byte of at least 0xed, read from the last byte down.
fn is_canonical_u(u: &[u8; NODE_KEY_LEN]) -> bool {
    if u[31] & 0x80 != 0 {
        return false;
    }
    let at_least_p = u[31] == 0x7f && u[1..31].iter().all(|&b| b == 0xff) && u[0] >= 0xed;
    !at_least_p
}

impl fmt::Debug for NodePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodePublicKey({})", hex::encode(self.0))
    }
}

/// An RK version sealed to one node. Not secret: only the node's private key opens it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub ephemeral_public: [u8; NODE_KEY_LEN],
    pub sealed: Vec<u8>,
}

pub(crate) struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// The AES key of a grant, from the shared secret and everything the grant is for.
fn grant_key(
    shared: &[u8],
    node: TokenId,
    version: u32,
    ephemeral_public: &[u8],
    recipient: &[u8],
) -> Result<LessSafeKey, CryptoError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, GRANT_SALT).extract(shared);
    let version = version.to_be_bytes();
    let info = [
        node.as_bytes().as_slice(),
        &version[..],
        ephemeral_public,
        recipient,
    ];
    let mut key = Zeroizing::new([0u8; 32]);
    prk.expand(&info, Len32)
        .and_then(|okm| okm.fill(&mut key[..]))
        .map_err(|_| CryptoError::Opaque)?;
    let unbound = UnboundKey::new(&AES_256_GCM, &key[..]).map_err(|_| CryptoError::Opaque)?;
    Ok(LessSafeKey::new(unbound))
}

fn grant_context(node: TokenId, purpose: &str) -> DekContext<'_> {
    DekContext {
        account: None,
        dek: DekId::from_bytes(*node.as_bytes()),
        purpose,
    }
}

/// Seals RK `version` to `recipient`, the public key of `node`.
pub fn seal_grant(
    recipient: &NodePublicKey,
    node: TokenId,
    version: u32,
    rk: &DataKey,
) -> Result<Grant, CryptoError> {
    let ephemeral = PrivateKey::generate(&X25519)
        .map_err(|_| CryptoError::KeyUnavailable("cannot make an X25519 key".into()))?;
    let public = ephemeral
        .compute_public_key()
        .map_err(|_| CryptoError::KeyUnavailable("cannot compute an X25519 public key".into()))?;
    let ephemeral_public: [u8; NODE_KEY_LEN] = public
        .as_ref()
        .try_into()
        .map_err(|_| CryptoError::Malformed("X25519 public key"))?;
    let key = agreement::agree(
        &ephemeral,
        UnparsedPublicKey::new(&X25519, &recipient.0[..]),
        CryptoError::Opaque,
        |shared| grant_key(shared, node, version, &ephemeral_public, &recipient.0),
    )?;
    let purpose = ReplicationKeyKind::Instance.purpose(GRANT_PURPOSE, version);
    let sealed = wrap_key(&key, rk, &grant_context(node, &purpose))?;
    Ok(Grant {
        ephemeral_public,
        sealed,
    })
}

/// A node's X25519 key pair, kept in a file of the edge's data dir (mode 0600: the 32-byte
/// private key). The private key never leaves this type.
pub struct NodeKey {
    path: PathBuf,
    private: PrivateKey,
    public: NodePublicKey,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("path", &self.path)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// Opens the key at `path`, or makes one there (mode 0600, created exclusively) if there
    /// is no file.
    pub fn open_or_create(path: &Path) -> Result<NodeKey, CryptoError> {
        match NodeKey::open(path) {
            Err(CryptoError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                NodeKey::create(path)
            }
            other => other,
        }
    }

    /// Makes a new key pair at `path`; fails if the file exists.
    pub fn create(path: &Path) -> Result<NodeKey, CryptoError> {
        let private = PrivateKey::generate(&X25519)
            .map_err(|_| CryptoError::KeyUnavailable("cannot make an X25519 key".into()))?;
        let seed: Curve25519SeedBin<'static> = private
            .as_be_bytes()
            .map_err(|_| CryptoError::KeyUnavailable("cannot export an X25519 key".into()))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io_error(path, e))?;
        let written = file.write_all(seed.as_ref()).and_then(|()| file.sync_all());
        if let Err(e) = written {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(io_error(path, e));
        }
        NodeKey::from_private(path, private)
    }

    /// Opens an existing key file; refuses one that group or others can access, or of the
    /// wrong size.
    pub fn open(path: &Path) -> Result<NodeKey, CryptoError> {
        let bytes = crate::kek::read_key_file(path, "node key file")?;
        let private = PrivateKey::from_private_key(&X25519, &bytes[..]).map_err(|_| {
            CryptoError::KeyUnavailable(format!(
                "node key file {} holds no X25519 key",
                path.display()
            ))
        })?;
        NodeKey::from_private(path, private)
    }

    fn from_private(path: &Path, private: PrivateKey) -> Result<NodeKey, CryptoError> {
        let public = private.compute_public_key().map_err(|_| {
            CryptoError::KeyUnavailable("cannot compute an X25519 public key".into())
        })?;
        let public = NodePublicKey::parse(public.as_ref())?;
        Ok(NodeKey {
            path: path.to_owned(),
            private,
            public,
        })
    }

    pub fn public_key(&self) -> &NodePublicKey {
        &self.public
    }

    /// Opens a grant of RK `version` made for `node` (this key's node). A grant for another
    /// node, version or key fails with [`CryptoError::Opaque`].
    pub fn open_grant(
        &self,
        node: TokenId,
        version: u32,
        grant: &Grant,
    ) -> Result<DataKey, CryptoError> {
        let key = agreement::agree(
            &self.private,
            UnparsedPublicKey::new(&X25519, &grant.ephemeral_public[..]),
            CryptoError::Opaque,
            |shared| {
                grant_key(
                    shared,
                    node,
                    version,
                    &grant.ephemeral_public,
                    &self.public.0,
                )
            },
        )?;
        let purpose = ReplicationKeyKind::Instance.purpose(GRANT_PURPOSE, version);
        unwrap_key(&key, &grant.sealed, &grant_context(node, &purpose))
    }
}

/// The grants of an RK version held in the replica, with the node each names (the edge reads
/// them from its replica). Every grant of the version is offered: the key opens only those
/// sealed to it.
pub type GrantSource = dyn Fn(u32) -> Result<Vec<(TokenId, Grant)>, CryptoError> + Send + Sync;

/// Version `n` of an account's replication key (ARK), opened by the edge from its grant to the
/// key this node made for that account (the edge keeps those keys and what they opened, so that
/// it can forget them when the account is deleted).
pub type ArkSource =
    dyn Fn(coffer_types::AccountId, u32) -> Result<Arc<DataKey>, CryptoError> + Send + Sync;

/// An edge's [`KekProvider`]: it opens RK wraps (`rk:<version>`) with the RK versions granted
/// to its node key, each opened once from its grant and then kept in memory (wiped on drop).
/// It tries its own node's grant first, then any other grant of the version (a data dir whose
/// replica was made under another node token, kept serving while the edge refuses another
/// cluster: the grant is still sealed to this key). It never wraps: an edge makes no keys.
pub struct GrantedKeys {
    node: TokenId,
    /// Shared with what opens the account grants, which need the node key too.
    key: Arc<NodeKey>,
    grants: Box<GrantSource>,
    /// Opens `ark:<n>` wraps; `None`: such wraps are refused.
    arks: Option<Box<ArkSource>>,
    opened: RwLock<BTreeMap<u32, Arc<DataKey>>>,
}

impl fmt::Debug for GrantedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let versions: Vec<u32> = self
            .opened
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        f.debug_struct("GrantedKeys")
            .field("node", &self.node)
            .field("versions", &versions)
            .finish_non_exhaustive()
    }
}

impl GrantedKeys {
    pub fn new(
        node: TokenId,
        key: impl Into<Arc<NodeKey>>,
        grants: Box<GrantSource>,
    ) -> GrantedKeys {
        GrantedKeys {
            node,
            key: key.into(),
            grants,
            arks: None,
            opened: RwLock::new(BTreeMap::new()),
        }
    }

    /// Opens `ark:<n>` wraps (DEKs of an account with a replication key of its own) with the
    /// ARK versions `arks` yields for the DEK's account.
    pub fn with_account_keys(mut self, arks: Box<ArkSource>) -> GrantedKeys {
        self.arks = Some(arks);
        self
    }

    /// RK `version`, opened from a grant sealed to this key (once).
    fn rk(&self, version: u32) -> Result<Arc<DataKey>, CryptoError> {
        if let Some(rk) = self
            .opened
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&version)
        {
            return Ok(rk.clone());
        }
        let mut grants = (self.grants)(version)?;
        if grants.is_empty() {
            return Err(CryptoError::KeyUnavailable(format!(
                "this node holds no grant of replication key version {version} (yet)"
            )));
        }
        // Its own node's first; the others only open if sealed to this key too.
        grants.sort_by_key(|(node, _)| *node != self.node);
        let rk = grants
            .iter()
            .find_map(|(node, grant)| self.key.open_grant(*node, version, grant).ok())
            .ok_or_else(|| {
                CryptoError::KeyUnavailable(format!(
                    "no grant of replication key version {version} opens with this node's key \
                     (was the node key file replaced?)"
                ))
            })?;
        let rk = Arc::new(rk);
        self.opened
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(version, rk.clone());
        Ok(rk)
    }
}

impl KekProvider for GrantedKeys {
    fn current_kek_id(&self) -> KekId {
        let newest = self
            .opened
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0);
        rk_kek_id(newest)
    }

    fn wrap(&self, _key: &DataKey, _ctx: &DekContext<'_>) -> Result<WrappedDataKey, CryptoError> {
        Err(CryptoError::KeyUnavailable(
            "an edge never wraps keys: they come wrapped from the control plane".into(),
        ))
    }

    fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        ctx: &DekContext<'_>,
    ) -> Result<DataKey, CryptoError> {
        if let Some(version) = account::ark_version_of(&wrapped.kek_id.0) {
            let (Some(arks), Some(account)) = (&self.arks, ctx.account) else {
                return Err(CryptoError::KeyUnavailable(format!(
                    "key is wrapped by {}, an account's replication key, which this node does \
                     not open",
                    wrapped.kek_id
                )));
            };
            let ark = arks(account, version)?;
            return account::ark_unwrap(&ark, version, &wrapped.bytes, ctx);
        }
        let version = rk_version_of(&wrapped.kek_id.0).ok_or_else(|| {
            CryptoError::KeyUnavailable(format!(
                "key is wrapped by {}, not by a replication key: the replica was made by an older \
                 version and must be resynced",
                wrapped.kek_id
            ))
        })?;
        let rk = self.rk(version)?;
        rk_unwrap(&rk, version, &wrapped.bytes, ctx)
    }
}

pub mod account;

#[cfg(test)]
mod tests;
