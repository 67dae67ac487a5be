//! The feed's wire format: length-prefixed binary frames, shared by the control plane, relays
//! and edges.
//!
//! Every frame is `tag (1 byte) || length of the body (4 bytes, big-endian) || body`. Integers
//! are big-endian. A feed answer (`GET /replication/v1/feed?after=N`) is
//!
//! ```text
//! Hello, Freshness?, then either (Entry Signature?)* or Compacted, then End
//! ```
//!
//! and a snapshot (`GET /replication/v1/snapshot`) is
//!
//! ```text
//! SnapshotHeader, Item * count, SnapshotEnd
//! ```
//!
//! A `Signature` frame follows the entry it signs (same seq): the control plane's signature
//! over that entry's checkpoint (`crate::sign`), forwarded unchanged by relays. `SnapshotEnd`
//! carries the snapshot's digest and the control plane's signature over it (and over the
//! header's origin time). Version 2 of both media types added the signatures; version 3 added
//! the `Freshness` frame and signs the snapshot's origin time. An older peer is refused by its
//! content type rather than misparsed.
//!
//! `Hello` carries the cluster id (an edge refuses an upstream of another cluster), the
//! upstream's head and the origin time of its freshest heartbeat: every answer is a heartbeat.
//! Those two are unsigned, informational only. `Freshness` is the control plane's signed
//! statement of its head and clock (`crate::sign::Freshness`), forwarded unchanged by relays:
//! it is what a follower with a pinned key measures staleness and the head by.
//! The closing frame makes truncation visible: a body that stops early has no `End` (or
//! `SnapshotEnd`) and is refused as a whole. Entries travel byte for byte as the log holds
//! them (seq, time, hash, payload), so a relay's downstream sees the root's log exactly and
//! verifies the chain itself; frames only carry them.

use coffer_storage::{ChangeRecord, FeedSignature, SIGNATURE_LEN};
use coffer_types::Timestamp;

pub use crate::ClusterId;
use crate::Position;
use crate::sign::Freshness;

/// The media type of feed answers.
pub const FEED_CONTENT_TYPE: &str = "application/vnd.coffer.feed.v3";
/// The media type of snapshots.
pub const SNAPSHOT_CONTENT_TYPE: &str = "application/vnd.coffer.snapshot.v3";

/// Headers of a feed refusal for a position beyond the head (a 400 in the v4 envelope, not a
/// feed answer): the log's cluster id (32 hex digits) and its head, so that an edge can tell
/// an upstream of another cluster (refused) from one that is merely behind it.
pub const CLUSTER_HEADER: &str = "coffer-cluster-id";
/// See [`CLUSTER_HEADER`].
pub const HEAD_HEADER: &str = "coffer-log-head";

/// Unix milliseconds of the wall clock (0 if it is before 1970): the unit of every origin
/// time the feed carries.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The largest frame body a decoder accepts (a change payload is a few KiB at most; a
/// service with 256 bindings is the largest).
pub const MAX_FRAME: usize = 4 << 20;

const TAG_HELLO: u8 = 0x01;
const TAG_ENTRY: u8 = 0x02;
const TAG_COMPACTED: u8 = 0x03;
const TAG_END: u8 = 0x04;
const TAG_SIGNATURE: u8 = 0x05;
const TAG_FRESHNESS: u8 = 0x06;
/// cluster id, head seq, head hash, origin ms, signature.
const FRESHNESS_LEN: usize = 16 + 8 + 32 + 8 + SIGNATURE_LEN;
const TAG_SNAPSHOT_HEADER: u8 = 0x11;
const TAG_ITEM: u8 = 0x12;
const TAG_SNAPSHOT_END: u8 = 0x13;

/// One frame of a feed answer or a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// First frame of a feed answer: who answers, how far its log goes, and how fresh it is.
    Hello {
        cluster_id: ClusterId,
        head_seq: u64,
        /// When the root stamped the freshest heartbeat this upstream has seen (the root: now),
        /// Unix milliseconds.
        origin_ms: u64,
    },
    /// The control plane's signed statement of its head and clock, right after `Hello`.
    Freshness(Freshness),
    Entry(ChangeRecord),
    /// The signature of the entry just before it (same seq).
    Signature(FeedSignature),
    /// The entries after the asked position are no longer held: fetch a snapshot.
    Compacted {
        base_seq: u64,
    },
    /// The answer is complete.
    End,
    SnapshotHeader {
        cluster_id: ClusterId,
        position: Position,
        count: u64,
        origin_ms: u64,
    },
    Item(Vec<u8>),
    SnapshotEnd {
        digest: [u8; 32],
        /// The control plane's signature over the snapshot (`crate::sign::snapshot_message`);
        /// `None` from a producer without the key (tests, and what an edge refuses).
        signature: Option<[u8; SIGNATURE_LEN]>,
    },
}

/// What is wrong with received bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown frame tag {0:#04x}")]
    UnknownTag(u8),
    #[error("frame of {len} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge { len: usize },
    #[error("malformed {what} frame ({len} bytes)")]
    Malformed { what: &'static str, len: usize },
    #[error("the answer ends in the middle of a frame")]
    Truncated,
    #[error("the answer does not follow the protocol: {0}")]
    Protocol(&'static str),
}

impl Frame {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Hello {
                cluster_id,
                head_seq,
                origin_ms,
            } => {
                header(out, TAG_HELLO, 16 + 8 + 8);
                out.extend_from_slice(cluster_id);
                out.extend_from_slice(&head_seq.to_be_bytes());
                out.extend_from_slice(&origin_ms.to_be_bytes());
            }
            Frame::Freshness(f) => {
                header(out, TAG_FRESHNESS, FRESHNESS_LEN);
                out.extend_from_slice(&f.cluster_id);
                out.extend_from_slice(&f.head.seq.to_be_bytes());
                out.extend_from_slice(&f.head.hash);
                out.extend_from_slice(&f.origin_ms.to_be_bytes());
                out.extend_from_slice(&f.signature);
            }
            Frame::Entry(r) => {
                header(out, TAG_ENTRY, 8 + 8 + 32 + r.payload.len());
                out.extend_from_slice(&r.seq.to_be_bytes());
                out.extend_from_slice(&r.at.unix_micros().to_be_bytes());
                out.extend_from_slice(&r.hash);
                out.extend_from_slice(&r.payload);
            }
            Frame::Signature(s) => {
                header(out, TAG_SIGNATURE, 8 + SIGNATURE_LEN);
                out.extend_from_slice(&s.seq.to_be_bytes());
                out.extend_from_slice(&s.signature);
            }
            Frame::Compacted { base_seq } => {
                header(out, TAG_COMPACTED, 8);
                out.extend_from_slice(&base_seq.to_be_bytes());
            }
            Frame::End => header(out, TAG_END, 0),
            Frame::SnapshotHeader {
                cluster_id,
                position,
                count,
                origin_ms,
            } => {
                header(out, TAG_SNAPSHOT_HEADER, 16 + 8 + 32 + 8 + 8);
                out.extend_from_slice(cluster_id);
                out.extend_from_slice(&position.seq.to_be_bytes());
                out.extend_from_slice(&position.hash);
                out.extend_from_slice(&count.to_be_bytes());
                out.extend_from_slice(&origin_ms.to_be_bytes());
            }
            Frame::Item(item) => {
                header(out, TAG_ITEM, item.len());
                out.extend_from_slice(item);
            }
            Frame::SnapshotEnd { digest, signature } => {
                header(out, TAG_SNAPSHOT_END, 32 + signature.map_or(0, |s| s.len()));
                out.extend_from_slice(digest);
                if let Some(s) = signature {
                    out.extend_from_slice(s);
                }
            }
        }
    }

    /// The encoded frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    fn decode(tag: u8, body: &[u8]) -> Result<Frame, WireError> {
        let malformed = |what| WireError::Malformed {
            what,
            len: body.len(),
        };
        Ok(match tag {
            TAG_HELLO => {
                if body.len() != 32 {
                    return Err(malformed("hello"));
                }
                Frame::Hello {
                    cluster_id: array(&body[..16]),
                    head_seq: u64_at(body, 16),
                    origin_ms: u64_at(body, 24),
                }
            }
            TAG_FRESHNESS => {
                if body.len() != FRESHNESS_LEN {
                    return Err(malformed("freshness"));
                }
                Frame::Freshness(Freshness {
                    cluster_id: array(&body[..16]),
                    head: Position {
                        seq: u64_at(body, 16),
                        hash: array(&body[24..56]),
                    },
                    origin_ms: u64_at(body, 56),
                    signature: array(&body[64..]),
                })
            }
            TAG_ENTRY => {
                if body.len() < 48 {
                    return Err(malformed("entry"));
                }
                Frame::Entry(ChangeRecord {
                    seq: u64_at(body, 0),
                    at: Timestamp::from_unix_micros(i64::from_be_bytes(array(&body[8..16]))),
                    hash: array(&body[16..48]),
                    payload: body[48..].to_vec(),
                })
            }
            TAG_SIGNATURE => {
                if body.len() != 8 + SIGNATURE_LEN {
                    return Err(malformed("signature"));
                }
                Frame::Signature(FeedSignature {
                    seq: u64_at(body, 0),
                    signature: array(&body[8..]),
                })
            }
            TAG_COMPACTED => {
                if body.len() != 8 {
                    return Err(malformed("compacted"));
                }
                Frame::Compacted {
                    base_seq: u64_at(body, 0),
                }
            }
            TAG_END => {
                if !body.is_empty() {
                    return Err(malformed("end"));
                }
                Frame::End
            }
            TAG_SNAPSHOT_HEADER => {
                if body.len() != 72 {
                    return Err(malformed("snapshot header"));
                }
                Frame::SnapshotHeader {
                    cluster_id: array(&body[..16]),
                    position: Position {
                        seq: u64_at(body, 16),
                        hash: array(&body[24..56]),
                    },
                    count: u64_at(body, 56),
                    origin_ms: u64_at(body, 64),
                }
            }
            TAG_ITEM => Frame::Item(body.to_vec()),
            TAG_SNAPSHOT_END => match body.len() {
                32 => Frame::SnapshotEnd {
                    digest: array(body),
                    signature: None,
                },
                96 => Frame::SnapshotEnd {
                    digest: array(body),
                    signature: Some(array(&body[32..])),
                },
                _ => return Err(malformed("snapshot end")),
            },
            other => return Err(WireError::UnknownTag(other)),
        })
    }
}

fn header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    // Bodies are bounded well below 4 GiB (payloads are a few KiB); saturate rather than wrap
    // so that an impossible length is refused by the decoder instead of misframed.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(array(&bytes[at..at + 8]))
}

/// Splits a byte stream, arriving in chunks of any size, into frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed (compacted away lazily).
    start: usize,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 5 {
            return Ok(None);
        }
        let tag = avail[0];
        let len = u32::from_be_bytes(array(&avail[1..5])) as usize;
        if len > MAX_FRAME {
            return Err(WireError::TooLarge { len });
        }
        if avail.len() < 5 + len {
            return Ok(None);
        }
        let frame = Frame::decode(tag, &avail[5..5 + len])?;
        self.start += 5 + len;
        Ok(Some(frame))
    }

    /// Called once the stream has ended: an error if bytes of an unfinished frame are left.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.start < self.buf.len() {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }
}

/// A whole feed answer, decoded and checked for shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedAnswer {
    pub cluster_id: ClusterId,
    pub head_seq: u64,
    pub origin_ms: u64,
    /// The control plane's signed statement, if the upstream has one.
    pub freshness: Option<Freshness>,
    pub body: FeedBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedBody {
    /// Entries in order, and the signatures among them (each of an entry of the answer, in
    /// order; an honest upstream's last entry is always signed).
    Entries {
        entries: Vec<ChangeRecord>,
        signatures: Vec<FeedSignature>,
    },
    Compacted {
        base_seq: u64,
    },
}

impl FeedAnswer {
    /// Encodes the answer (Hello, the body, End).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        Frame::Hello {
            cluster_id: self.cluster_id,
            head_seq: self.head_seq,
            origin_ms: self.origin_ms,
        }
        .encode(&mut out);
        if let Some(f) = &self.freshness {
            Frame::Freshness(*f).encode(&mut out);
        }
        match &self.body {
            FeedBody::Entries {
                entries,
                signatures,
            } => {
                let mut sigs = signatures.iter().peekable();
                for e in entries {
                    Frame::Entry(e.clone()).encode(&mut out);
                    while let Some(s) = sigs.next_if(|s| s.seq <= e.seq) {
                        if s.seq == e.seq {
                            Frame::Signature(*s).encode(&mut out);
                        }
                    }
                }
            }
            FeedBody::Compacted { base_seq } => Frame::Compacted {
                base_seq: *base_seq,
            }
            .encode(&mut out),
        }
        Frame::End.encode(&mut out);
        out
    }

    /// Decodes a complete answer. Anything but `Hello, (Entry* | Compacted), End` with no
    /// trailing bytes is an error: the answer is refused whole.
    pub fn decode(bytes: &[u8]) -> Result<FeedAnswer, WireError> {
        let mut dec = FrameDecoder::new();
        dec.push(bytes);
        let Some(Frame::Hello {
            cluster_id,
            head_seq,
            origin_ms,
        }) = dec.next_frame()?
        else {
            return Err(if bytes.len() < 5 {
                WireError::Truncated
            } else {
                WireError::Protocol("a feed answer starts with hello")
            });
        };
        let mut entries: Vec<ChangeRecord> = Vec::new();
        let mut signatures: Vec<FeedSignature> = Vec::new();
        let mut compacted = None;
        let mut freshness = None;
        let mut first = true;
        loop {
            let frame = dec.next_frame()?;
            let was_first = std::mem::replace(&mut first, false);
            match frame {
                None => return Err(WireError::Truncated),
                Some(Frame::Freshness(f)) if was_first => freshness = Some(f),
                Some(Frame::Entry(e)) if compacted.is_none() => entries.push(e),
                Some(Frame::Signature(s)) => {
                    // Right after the entry it signs, once.
                    let signs_last = entries.last().is_some_and(|e| e.seq == s.seq)
                        && signatures.last().is_none_or(|p| p.seq < s.seq);
                    if !signs_last {
                        return Err(WireError::Protocol(
                            "a signature frame does not follow the entry it signs",
                        ));
                    }
                    signatures.push(s);
                }
                Some(Frame::Compacted { base_seq })
                    if compacted.is_none() && entries.is_empty() =>
                {
                    compacted = Some(base_seq);
                }
                Some(Frame::End) => break,
                Some(_) => return Err(WireError::Protocol("unexpected frame in a feed answer")),
            }
        }
        if dec.start != dec.buf.len() {
            return Err(WireError::Protocol("bytes after the end of a feed answer"));
        }
        Ok(FeedAnswer {
            cluster_id,
            head_seq,
            origin_ms,
            freshness,
            body: match compacted {
                Some(base_seq) => FeedBody::Compacted { base_seq },
                None => FeedBody::Entries {
                    entries,
                    signatures,
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, payload: &[u8]) -> ChangeRecord {
        ChangeRecord {
            seq,
            at: Timestamp::from_unix_micros(1_700_000_000_000_000 + seq as i64),
            hash: [seq as u8; 32],
            payload: payload.to_vec(),
        }
    }

    fn sig(seq: u64) -> FeedSignature {
        FeedSignature {
            seq,
            signature: [seq as u8 ^ 0x5a; 64],
        }
    }

    fn answer() -> FeedAnswer {
        FeedAnswer {
            cluster_id: [7; 16],
            head_seq: 9,
            origin_ms: 1_700_000_000_123,
            freshness: Some(Freshness {
                cluster_id: [7; 16],
                head: Position {
                    seq: 9,
                    hash: [8; 32],
                },
                origin_ms: 1_700_000_000_100,
                signature: [6; 64],
            }),
            body: FeedBody::Entries {
                entries: vec![record(4, b"{\"a\":1}"), record(5, b"")],
                signatures: vec![sig(4), sig(5)],
            },
        }
    }

    #[test]
    fn feed_answers_round_trip_byte_for_byte() {
        let a = answer();
        let bytes = a.encode();
        assert_eq!(FeedAnswer::decode(&bytes).unwrap(), a);
        let c = FeedAnswer {
            body: FeedBody::Compacted { base_seq: 3 },
            ..answer()
        };
        assert_eq!(FeedAnswer::decode(&c.encode()).unwrap(), c);
        let bare = FeedAnswer {
            freshness: None,
            ..answer()
        };
        assert_eq!(FeedAnswer::decode(&bare.encode()).unwrap(), bare);
    }

    #[test]
    fn a_freshness_frame_comes_right_after_hello_or_not_at_all() {
        let f = answer().freshness.unwrap();
        let hello = Frame::Hello {
            cluster_id: [7; 16],
            head_seq: 9,
            origin_ms: 1,
        };
        let late: Vec<u8> = [
            hello,
            Frame::Entry(record(4, b"x")),
            Frame::Freshness(f),
            Frame::End,
        ]
        .iter()
        .flat_map(Frame::to_bytes)
        .collect();
        assert_eq!(
            FeedAnswer::decode(&late),
            Err(WireError::Protocol("unexpected frame in a feed answer"))
        );
        let mut short = vec![TAG_FRESHNESS];
        short.extend_from_slice(&10u32.to_be_bytes());
        short.extend_from_slice(&[0; 10]);
        let mut dec = FrameDecoder::new();
        dec.push(&short);
        assert!(matches!(
            dec.next_frame(),
            Err(WireError::Malformed {
                what: "freshness",
                ..
            })
        ));
    }

    #[test]
    fn every_truncation_of_an_answer_is_refused() {
        let bytes = answer().encode();
        for cut in 0..bytes.len() {
            assert!(
                FeedAnswer::decode(&bytes[..cut]).is_err(),
                "an answer cut at {cut} of {} bytes was accepted",
                bytes.len()
            );
        }
    }

    #[test]
    fn malformed_answers_are_refused() {
        let mut bytes = answer().encode();
        bytes.push(0);
        assert!(FeedAnswer::decode(&bytes).is_err(), "trailing bytes");
        // Entries with no hello in front.
        let mut no_hello = Vec::new();
        Frame::Entry(record(1, b"x")).encode(&mut no_hello);
        Frame::End.encode(&mut no_hello);
        assert_eq!(
            FeedAnswer::decode(&no_hello),
            Err(WireError::Protocol("a feed answer starts with hello"))
        );
        // An unknown tag, an oversized length, a short entry.
        assert_eq!(
            FeedAnswer::decode(&[0x7f, 0, 0, 0, 0]),
            Err(WireError::UnknownTag(0x7f))
        );
        let mut huge = vec![TAG_ENTRY];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut dec = FrameDecoder::new();
        dec.push(&huge);
        assert!(matches!(dec.next_frame(), Err(WireError::TooLarge { .. })));
        let mut short = vec![TAG_ENTRY];
        short.extend_from_slice(&10u32.to_be_bytes());
        short.extend_from_slice(&[0; 10]);
        let mut dec = FrameDecoder::new();
        dec.push(&short);
        assert!(matches!(
            dec.next_frame(),
            Err(WireError::Malformed { what: "entry", .. })
        ));
    }

    #[test]
    fn signatures_must_follow_the_entry_they_sign() {
        let hello = Frame::Hello {
            cluster_id: [7; 16],
            head_seq: 9,
            origin_ms: 1,
        };
        let bytes = |frames: &[Frame]| -> Vec<u8> {
            std::iter::once(&hello)
                .chain(frames)
                .chain(std::iter::once(&Frame::End))
                .flat_map(Frame::to_bytes)
                .collect()
        };
        let bad = WireError::Protocol("a signature frame does not follow the entry it signs");
        // Before any entry; after another entry; twice.
        assert_eq!(
            FeedAnswer::decode(&bytes(&[Frame::Signature(sig(4))])),
            Err(bad.clone())
        );
        assert_eq!(
            FeedAnswer::decode(&bytes(&[
                Frame::Entry(record(4, b"x")),
                Frame::Signature(sig(5))
            ])),
            Err(bad.clone())
        );
        assert_eq!(
            FeedAnswer::decode(&bytes(&[
                Frame::Entry(record(4, b"x")),
                Frame::Signature(sig(4)),
                Frame::Signature(sig(4))
            ])),
            Err(bad)
        );
        // An unsigned entry is well formed on the wire (the follower judges it).
        let unsigned = FeedAnswer::decode(&bytes(&[Frame::Entry(record(4, b"x"))])).unwrap();
        assert_eq!(
            unsigned.body,
            FeedBody::Entries {
                entries: vec![record(4, b"x")],
                signatures: vec![]
            }
        );
        // A short signature, and a snapshot end of the wrong length.
        let mut short = vec![TAG_SIGNATURE];
        short.extend_from_slice(&9u32.to_be_bytes());
        short.extend_from_slice(&[0; 9]);
        let mut dec = FrameDecoder::new();
        dec.push(&short);
        assert!(matches!(
            dec.next_frame(),
            Err(WireError::Malformed {
                what: "signature",
                ..
            })
        ));
        let mut end = vec![TAG_SNAPSHOT_END];
        end.extend_from_slice(&40u32.to_be_bytes());
        end.extend_from_slice(&[0; 40]);
        let mut dec = FrameDecoder::new();
        dec.push(&end);
        assert!(matches!(
            dec.next_frame(),
            Err(WireError::Malformed {
                what: "snapshot end",
                ..
            })
        ));
    }

    #[test]
    fn the_decoder_reassembles_frames_from_any_chunking() {
        let frames = vec![
            Frame::SnapshotHeader {
                cluster_id: [1; 16],
                position: Position {
                    seq: 42,
                    hash: [2; 32],
                },
                count: 2,
                origin_ms: 5,
            },
            Frame::Item(b"first".to_vec()),
            Frame::Item(Vec::new()),
            Frame::SnapshotEnd {
                digest: [3; 32],
                signature: Some([4; 64]),
            },
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::to_bytes).collect();
        for chunk in [1, 2, 3, 7, 64, bytes.len()] {
            let mut dec = FrameDecoder::new();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                dec.push(piece);
                while let Some(f) = dec.next_frame().unwrap() {
                    got.push(f);
                }
            }
            dec.finish().unwrap();
            assert_eq!(got, frames, "chunks of {chunk}");
        }
        let mut dec = FrameDecoder::new();
        dec.push(&bytes[..bytes.len() - 1]);
        while dec.next_frame().unwrap().is_some() {}
        assert_eq!(dec.finish(), Err(WireError::Truncated));
    }
}
