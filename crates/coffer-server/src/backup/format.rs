//! The backup file (docs/storage-format.md, "Backup file"):
//!
//! ```text
//! magic            8 bytes   "COFFERBK"
//! format version   4 bytes   big-endian, FORMAT_VERSION
//! manifest length  4 bytes   big-endian, at most MAX_MANIFEST
//! manifest         JSON      (`Manifest`)
//! manifest SHA-256 32 bytes  over every byte before it (magic to manifest)
//! database         `manifest.database.length` bytes: the SQLite file, whose SHA-256 is
//!                  `manifest.database.sha256`
//! ```
//!
//! Nothing follows the database. So a truncated file (it ends before its header, manifest,
//! checksum or database is complete), trailing bytes and an altered manifest or header (its
//! checksum) are told apart before anything is written; an altered database (its SHA-256) is
//! found while restore writes it, and what was written is then removed.
//!
//! These checksums are unkeyed: they detect damage, not someone who rewrites the file and
//! recomputes them (docs/operations.md, "What a restore proves").

use std::io::{self, Read, Write};

use aws_lc_rs::digest::{self, Digest};
use coffer_storage::{AuditHead, ChainReport};
use coffer_types::AccountId;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"COFFERBK";
const FORMAT_VERSION: u32 = 1;
/// Bounds what a damaged length field makes us read: a manifest lists one audit head per
/// account (about 150 bytes each).
const MAX_MANIFEST: u32 = 64 << 20;
const HEADER_LEN: u64 = 8 + 4 + 4;
const CHECKSUM_LEN: u64 = 32;

/// What the file says about the database it holds. The format version is the header's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// When the backup was taken (RFC 3339, UTC).
    pub created_at: String,
    /// The version of Coffer that took it.
    pub coffer_version: String,
    #[serde(flatten)]
    pub heads: Heads,
    pub database: DatabasePart,
}

/// The chains' heads of a store, as a chain check found them: what a backup records, what a
/// restore compares, what `coffer verify` prints. Hashes are hex in JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heads {
    /// The change log's cluster id, if the store has one.
    #[serde(with = "hex_opt16")]
    pub cluster_id: Option<[u8; 16]>,
    pub change_log: ChangeLog,
    /// Every account with audit entries, ordered by id.
    pub audit_heads: Vec<AuditHeadEntry>,
}

/// The change log from its base (after any compaction) to its head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeLog {
    pub base_seq: u64,
    #[serde(with = "hex32")]
    pub base_hash: [u8; 32],
    pub head_seq: u64,
    #[serde(with = "hex32")]
    pub head_hash: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHeadEntry {
    pub account_id: AccountId,
    pub seq: u64,
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabasePart {
    pub length: u64,
    #[serde(with = "hex32")]
    pub sha256: [u8; 32],
}

impl Heads {
    pub fn of(report: &ChainReport) -> Heads {
        let log = &report.log;
        Heads {
            cluster_id: log.cluster_id,
            change_log: ChangeLog {
                base_seq: log.base_seq,
                base_hash: log.base_hash,
                head_seq: log.head_seq,
                head_hash: log.head_hash,
            },
            audit_heads: report
                .audit_heads
                .iter()
                .map(|h: &AuditHead| AuditHeadEntry {
                    account_id: h.account,
                    seq: h.seq,
                    hash: h.hash,
                })
                .collect(),
        }
    }

    /// The first difference between these heads (the manifest's) and `restored`, as "WHAT:
    /// manifest X, restored Y"; `None` when they are equal.
    pub(crate) fn mismatch(&self, restored: &Heads) -> Option<String> {
        if self == restored {
            return None;
        }
        let hex_id = |id: &Option<[u8; 16]>| id.map_or_else(|| "none".to_owned(), hex::encode);
        if self.cluster_id != restored.cluster_id {
            return Some(format!(
                "cluster id: manifest {}, restored {}",
                hex_id(&self.cluster_id),
                hex_id(&restored.cluster_id)
            ));
        }
        let (m, r) = (&self.change_log, &restored.change_log);
        if m != r {
            return Some(format!(
                "change log: manifest base seq {} head seq {} hash {}, restored base seq {} head \
                 seq {} hash {}",
                m.base_seq,
                m.head_seq,
                hex::encode(m.head_hash),
                r.base_seq,
                r.head_seq,
                hex::encode(r.head_hash)
            ));
        }
        let show = |h: Option<&AuditHeadEntry>| {
            h.map_or_else(
                || "none".to_owned(),
                |h| format!("seq {} hash {}", h.seq, hex::encode(h.hash)),
            )
        };
        let accounts = self
            .audit_heads
            .iter()
            .chain(&restored.audit_heads)
            .map(|h| h.account_id);
        for account in accounts {
            let find =
                |heads: &[AuditHeadEntry]| heads.iter().find(|h| h.account_id == account).cloned();
            let (m, r) = (find(&self.audit_heads), find(&restored.audit_heads));
            if m != r {
                return Some(format!(
                    "audit head of account {account}: manifest {}, restored {}",
                    show(m.as_ref()),
                    show(r.as_ref())
                ));
            }
        }
        Some("the audit heads are listed in another order".to_owned())
    }
}

impl Manifest {
    /// The manifest of a database copy whose chains gave `report`.
    pub(crate) fn new(report: &ChainReport, length: u64, sha256: &Digest) -> Manifest {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(sha256.as_ref());
        Manifest {
            created_at: coffer_types::Timestamp::now().to_rfc3339(),
            coffer_version: env!("CARGO_PKG_VERSION").to_owned(),
            heads: Heads::of(report),
            database: DatabasePart {
                length,
                sha256: digest,
            },
        }
    }
}

/// `[u8; 32]` as 64 hex digits.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

/// `Option<[u8; 16]>` as 32 hex digits or null.
mod hex_opt16 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &Option<[u8; 16]>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 16]>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                let mut out = [0u8; 16];
                hex::decode_to_slice(&text, &mut out).map(|()| out)
            })
            .transpose()
            .map_err(D::Error::custom)
    }
}

/// Why a backup file was refused before its database was written anywhere.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("truncated file: it ends inside its {0}")]
    Truncated(&'static str),
    #[error("not a Coffer backup file (wrong magic)")]
    Magic,
    #[error("backup format version {0}; this build reads version {FORMAT_VERSION}")]
    Version(u32),
    #[error("damaged header: a manifest of {0} bytes is more than a backup holds")]
    ManifestLength(u32),
    #[error("manifest checksum mismatch: the manifest or header is damaged")]
    ManifestChecksum,
    #[error("manifest does not parse: {0}")]
    Manifest(String),
    #[error(
        "truncated file: {actual} bytes, its manifest accounts for {expected} (the database part \
         is cut short)"
    )]
    DatabaseCutShort { actual: u64, expected: u128 },
    #[error(
        "{extra} bytes after the database part: the file was altered or is not one backup file"
    )]
    TooLong { extra: u64 },
    #[error("reading the backup file: {0}")]
    Io(#[from] io::Error),
}

/// Writes the header, `manifest` and its checksum.
pub(crate) fn write_head(out: &mut impl Write, manifest: &Manifest) -> io::Result<()> {
    let json = serde_json::to_vec(manifest).map_err(io::Error::other)?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|l| *l <= MAX_MANIFEST)
        .ok_or_else(|| io::Error::other("the manifest is too large for the format"))?;
    let mut head = Vec::with_capacity(json.len() + 48);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(&json);
    let sum = digest::digest(&digest::SHA256, &head);
    head.extend_from_slice(sum.as_ref());
    out.write_all(&head)
}

/// Reads and checks the header and manifest of a file of `file_len` bytes, leaving `input` at
/// the first byte of the database part, and checks that the file holds exactly the database
/// the manifest describes.
pub(crate) fn read_head(input: &mut impl Read, file_len: u64) -> Result<Manifest, FormatError> {
    let mut header = [0u8; HEADER_LEN as usize];
    read_exact(input, &mut header, "header")?;
    if &header[..8] != MAGIC {
        return Err(FormatError::Magic);
    }
    let [v0, v1, v2, v3, l0, l1, l2, l3] = header[8..16] else {
        unreachable!("the header is 16 bytes")
    };
    let version = u32::from_be_bytes([v0, v1, v2, v3]);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version(version));
    }
    let len = u32::from_be_bytes([l0, l1, l2, l3]);
    if len > MAX_MANIFEST {
        return Err(FormatError::ManifestLength(len));
    }
    if file_len < HEADER_LEN + u64::from(len) + CHECKSUM_LEN {
        // Said before reading, so a cut-off manifest is told as such, not as a bad checksum.
        return Err(FormatError::Truncated(
            "manifest or the manifest's checksum",
        ));
    }
    let mut json = vec![0u8; len as usize];
    read_exact(input, &mut json, "manifest")?;
    let mut sum = [0u8; CHECKSUM_LEN as usize];
    read_exact(input, &mut sum, "manifest's checksum")?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&header);
    ctx.update(&json);
    // A checksum against damage, not a secret: a plain comparison is fine.
    if ctx.finish().as_ref() != sum {
        return Err(FormatError::ManifestChecksum);
    }
    let manifest: Manifest =
        serde_json::from_slice(&json).map_err(|e| FormatError::Manifest(e.to_string()))?;
    // In u128: a damaged or crafted length (up to u64::MAX) cannot overflow the sum.
    let expected = u128::from(HEADER_LEN + u64::from(len) + CHECKSUM_LEN)
        + u128::from(manifest.database.length);
    let actual = u128::from(file_len);
    if actual < expected {
        return Err(FormatError::DatabaseCutShort {
            actual: file_len,
            expected,
        });
    }
    if actual > expected {
        return Err(FormatError::TooLong {
            extra: file_len - u64::try_from(expected).unwrap_or(file_len),
        });
    }
    Ok(manifest)
}

fn read_exact(
    input: &mut impl Read,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), FormatError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FormatError::Truncated(what),
        _ => FormatError::Io(e),
    })
}

/// Copies exactly `length` bytes from `input` to `out`, returning their SHA-256.
pub(crate) fn copy_hashing(
    input: &mut impl Read,
    out: &mut impl Write,
    length: u64,
) -> io::Result<Digest> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut left = length;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = input.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the database part ends early",
            ));
        }
        ctx.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(ctx.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_storage::LogState;

    fn manifest(db: &[u8]) -> Manifest {
        let report = ChainReport {
            log: LogState {
                cluster_id: Some([7; 16]),
                base_seq: 0,
                base_hash: [0; 32],
                head_seq: 3,
                head_hash: [3; 32],
            },
            changes_checked: 3,
            audit_heads: vec![AuditHead {
                account: AccountId::from_bytes([1; 16]),
                seq: 2,
                hash: [2; 32],
            }],
            audit_entries_checked: 2,
            audit_checkpoints_checked: 0,
        };
        Manifest::new(
            &report,
            db.len() as u64,
            &digest::digest(&digest::SHA256, db),
        )
    }

    fn file(db: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_head(&mut out, &manifest(db)).unwrap();
        out.extend_from_slice(db);
        out
    }

    fn read(bytes: &[u8]) -> Result<Manifest, FormatError> {
        read_head(&mut &bytes[..], bytes.len() as u64)
    }

    #[test]
    fn a_file_reads_back_and_every_damage_is_told_apart() {
        let db = b"SQLite format 3\0 and some pages".to_vec();
        let good = file(&db);
        let m = read(&good).unwrap();
        assert_eq!(m, manifest(&db).clone_with_time(&m.created_at));
        let db_start = good.len() - db.len();

        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(matches!(read(&magic), Err(FormatError::Magic)));

        let mut version = good.clone();
        version[11] = 2;
        assert_eq!(
            read(&version).unwrap_err().to_string(),
            "backup format version 2; this build reads version 1"
        );

        let mut manifest_byte = good.clone();
        manifest_byte[20] ^= 1;
        assert!(matches!(
            read(&manifest_byte),
            Err(FormatError::ManifestChecksum)
        ));

        for cut in [0, 5, 17, db_start - 10, db_start - 1] {
            assert!(
                matches!(read(&good[..cut]), Err(FormatError::Truncated(_))),
                "cut at {cut}: {:?}",
                read(&good[..cut])
            );
        }
        assert!(matches!(
            read(&good[..good.len() - 1]),
            Err(FormatError::DatabaseCutShort { .. })
        ));
        // A database length near u64::MAX (a crafted manifest with a right checksum) is a cut
        // short file, not an overflow.
        let mut huge = manifest(&db);
        huge.database.length = u64::MAX - 8;
        let mut crafted = Vec::new();
        write_head(&mut crafted, &huge).unwrap();
        crafted.extend_from_slice(&db);
        assert!(
            matches!(read(&crafted), Err(FormatError::DatabaseCutShort { .. })),
            "{:?}",
            read(&crafted)
        );
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            read(&long),
            Err(FormatError::TooLong { extra: 1 })
        ));
    }

    #[test]
    fn the_manifest_names_the_first_head_that_differs() {
        let m = manifest(b"x").heads;
        let mut restored = m.clone();
        assert_eq!(m.mismatch(&restored), None);
        restored.audit_heads[0].seq = 1;
        assert!(
            m.mismatch(&restored)
                .unwrap()
                .starts_with("audit head of account 01010101"),
        );
        restored.change_log.head_seq = 2;
        assert!(
            m.mismatch(&restored)
                .unwrap()
                .starts_with("change log: manifest base seq 0 head seq 3"),
        );
        restored.audit_heads.clear();
        restored.change_log.head_seq = 3;
        assert!(m.mismatch(&restored).unwrap().ends_with("restored none"),);
    }

    impl Manifest {
        fn clone_with_time(&self, at: &str) -> Manifest {
            Manifest {
                created_at: at.to_owned(),
                ..self.clone()
            }
        }
    }
}
