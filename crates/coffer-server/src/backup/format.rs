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
//! checksum or database is complete), trailing bytes, an altered manifest or header (its
//! checksum), and an altered database (its SHA-256) are each told apart before anything is
//! restored.

use std::io::{self, Read, Write};

use aws_lc_rs::digest::{self, Digest};
use coffer_storage::{AuditHead, ChainReport};
use coffer_types::AccountId;
use serde::{Deserialize, Serialize};

pub(crate) const MAGIC: &[u8; 8] = b"COFFERBK";
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Bounds what a damaged length field makes us read: a manifest lists one audit head per
/// account (about 150 bytes each).
const MAX_MANIFEST: u32 = 64 << 20;
const HEADER_LEN: u64 = 8 + 4 + 4;
const CHECKSUM_LEN: u64 = 32;

/// What the file says about the database it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The file's format version (also in the header).
    pub format: u32,
    /// When the backup was taken (RFC 3339, UTC).
    pub created_at: String,
    /// The version of Coffer that took it.
    pub coffer_version: String,
    /// The change log's cluster id (32 hex), if the store has one.
    pub cluster_id: Option<String>,
    pub change_log: LogHead,
    /// Every account with audit entries, ordered by id.
    pub audit_heads: Vec<AuditHeadEntry>,
    pub database: DatabasePart,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHead {
    pub base_seq: u64,
    /// 64 hex.
    pub base_hash: String,
    pub head_seq: u64,
    /// 64 hex.
    pub head_hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHeadEntry {
    pub account_id: AccountId,
    pub seq: u64,
    /// 64 hex.
    pub hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabasePart {
    pub length: u64,
    /// 64 hex.
    pub sha256: String,
}

impl Manifest {
    /// The manifest of a database copy whose chains gave `report`.
    pub(crate) fn new(report: &ChainReport, length: u64, sha256: &Digest) -> Manifest {
        let (cluster_id, change_log, audit_heads) = Manifest::heads_of(report);
        Manifest {
            format: FORMAT_VERSION,
            created_at: coffer_types::Timestamp::now().to_rfc3339(),
            coffer_version: env!("CARGO_PKG_VERSION").to_owned(),
            cluster_id,
            change_log,
            audit_heads,
            database: DatabasePart {
                length,
                sha256: hex::encode(sha256.as_ref()),
            },
        }
    }

    /// A chain check's cluster id and heads in the manifest's shapes (hex strings).
    pub fn heads_of(report: &ChainReport) -> (Option<String>, LogHead, Vec<AuditHeadEntry>) {
        let log = &report.log;
        (
            log.cluster_id.map(hex::encode),
            LogHead {
                base_seq: log.base_seq,
                base_hash: hex::encode(log.base_hash),
                head_seq: log.head_seq,
                head_hash: hex::encode(log.head_hash),
            },
            report.audit_heads.iter().map(AuditHeadEntry::of).collect(),
        )
    }

    /// The first difference between what this manifest recorded and what the restored copy's
    /// chains gave, as "WHAT: manifest X, restored Y".
    pub(crate) fn mismatch(&self, report: &ChainReport) -> Option<String> {
        let log = &report.log;
        let cluster = log.cluster_id.map(hex::encode);
        if self.cluster_id != cluster {
            return Some(format!(
                "cluster id: manifest {}, restored {}",
                self.cluster_id.as_deref().unwrap_or("none"),
                cluster.as_deref().unwrap_or("none")
            ));
        }
        let ours = (log.head_seq, hex::encode(log.head_hash));
        let theirs = (self.change_log.head_seq, self.change_log.head_hash.clone());
        if ours != theirs {
            return Some(format!(
                "change-log head: manifest seq {} hash {}, restored seq {} hash {}",
                theirs.0, theirs.1, ours.0, ours.1
            ));
        }
        if (log.base_seq, hex::encode(log.base_hash))
            != (self.change_log.base_seq, self.change_log.base_hash.clone())
        {
            return Some(format!(
                "change-log base: manifest seq {}, restored seq {}",
                self.change_log.base_seq, log.base_seq
            ));
        }
        let restored: Vec<AuditHeadEntry> =
            report.audit_heads.iter().map(AuditHeadEntry::of).collect();
        for want in &self.audit_heads {
            match restored.iter().find(|h| h.account_id == want.account_id) {
                None => {
                    return Some(format!(
                        "audit head of account {}: manifest seq {}, restored none",
                        want.account_id, want.seq
                    ));
                }
                Some(got) if got != want => {
                    return Some(format!(
                        "audit head of account {}: manifest seq {} hash {}, restored seq {} hash {}",
                        want.account_id, want.seq, want.hash, got.seq, got.hash
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = restored.iter().find(|h| {
            !self
                .audit_heads
                .iter()
                .any(|w| w.account_id == h.account_id)
        }) {
            return Some(format!(
                "audit head of account {}: manifest none, restored seq {}",
                extra.account_id, extra.seq
            ));
        }
        None
    }
}

impl AuditHeadEntry {
    fn of(head: &AuditHead) -> AuditHeadEntry {
        AuditHeadEntry {
            account_id: head.account,
            seq: head.seq,
            hash: hex::encode(head.hash),
        }
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
    #[error("manifest checksum mismatch: the manifest or header was altered or damaged")]
    ManifestChecksum,
    #[error("manifest does not parse: {0}")]
    Manifest(String),
    #[error(
        "truncated file: {actual} bytes, its manifest accounts for {expected} (the database part \
         is cut short)"
    )]
    TooShort { actual: u64, expected: u64 },
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
    if manifest.format != FORMAT_VERSION {
        return Err(FormatError::Manifest(format!(
            "it says format {}, the header {FORMAT_VERSION}",
            manifest.format
        )));
    }
    let expected = HEADER_LEN + u64::from(len) + CHECKSUM_LEN + manifest.database.length;
    if file_len < expected {
        return Err(FormatError::TooShort {
            actual: file_len,
            expected,
        });
    }
    if file_len > expected {
        return Err(FormatError::TooLong {
            extra: file_len - expected,
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
            Err(FormatError::TooShort { .. })
        ));
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            read(&long),
            Err(FormatError::TooLong { extra: 1 })
        ));
    }

    #[test]
    fn the_manifest_names_the_first_head_that_differs() {
        let m = manifest(b"x");
        let mut report = ChainReport {
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
        };
        assert_eq!(m.mismatch(&report), None);
        report.audit_heads[0].seq = 1;
        assert!(
            m.mismatch(&report)
                .unwrap()
                .starts_with("audit head of account 01010101"),
        );
        report.log.head_seq = 2;
        assert!(
            m.mismatch(&report)
                .unwrap()
                .starts_with("change-log head: manifest seq 3"),
        );
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
