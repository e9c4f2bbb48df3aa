//! The handoff wire format: length-prefixed binary frames.
//!
//! Every handoff body (pre-copy answers, transfer requests and answers, drain
//! pushes and their acknowledgements) is a sequence of frames, content type
//! [`CONTENT_TYPE`]. A frame is
//!
//! ```text
//! kind: u8 | length: u32 (big-endian) | payload: length bytes
//! ```
//!
//! and every payload that names a session starts with `key length: u16 | key`.
//! Integers are big-endian. The kinds:
//!
//! | kind | name | payload after the key |
//! |---|---|---|
//! | `0x01` | record | `version: u64`, `flags: u8` (bit 0 dirty, bit 1 final, bit 2 epoch), `epoch: u64` (if bit 2), the encoded state (the rest) |
//! | `0x02` | unchanged | `version: u64` |
//! | `0x03` | not resident | — |
//! | `0x04` | refused | `reason: u8` ([`Refusal`]), a UTF-8 message (the rest) |
//! | `0x05` | want | `has known: u8`, `known version: u64` |
//! | `0x06` | ack | `outcome: u8` ([`AckOutcome`]) |
//! | `0x7f` | end | `frames: u64` (no key) — the number of frames before it |
//!
//! A body is complete only if it ends with an `end` frame whose count matches:
//! a truncated stream (a pod that died mid-answer) is an error, never a
//! shorter answer. Records always carry their ownership epoch (flag bit 2): a
//! reader that predates it refuses the unknown flag rather than misread the
//! state, and a record without it is read as epoch 0. A reader refuses frames larger than its bound (the largest
//! session it accepts plus the key and header) before buffering them.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::store::SessionRecord;

/// Content type of every handoff body.
pub const CONTENT_TYPE: &str = "application/vnd.locus.handoff.v1";

/// Bytes of a frame header: kind and payload length.
pub const FRAME_HEADER_BYTES: usize = 5;

/// Longest key a frame can carry.
pub const MAX_WIRE_KEY: usize = u16::MAX as usize;

const RECORD: u8 = 0x01;
const UNCHANGED: u8 = 0x02;
const NOT_RESIDENT: u8 = 0x03;
const REFUSED: u8 = 0x04;
const WANT: u8 = 0x05;
const ACK: u8 = 0x06;
const END: u8 = 0x7f;

const FLAG_DIRTY: u8 = 1;
const FLAG_FINAL: u8 = 2;
const FLAG_EPOCH: u8 = 4;

/// Why a pod refused to hand over (or take) one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The asking pod is not the key's owner under the answering pod's ring.
    NotOwner = 1,
    /// The answering pod's ring is older than the asker's and did not catch up
    /// in time; ask again.
    RingBehind = 2,
    /// The session is busy or the store is full; ask again.
    Busy = 3,
    /// The store failed (codec, persistence); asking again may help.
    Failed = 4,
}

impl Refusal {
    fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::NotOwner,
            2 => Self::RingBehind,
            3 => Self::Busy,
            4 => Self::Failed,
            _ => return None,
        })
    }

    /// A short label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotOwner => "not_owner",
            Self::RingBehind => "ring_behind",
            Self::Busy => "busy",
            Self::Failed => "failed",
        }
    }
}

/// What a receiver did with one pushed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckOutcome {
    /// Installed in the receiver's store (it owns the key).
    Installed = 0,
    /// The receiver already held this version or a newer one.
    Stale = 1,
    /// The receiver does not own the key (yet): kept aside, installed when a
    /// ring makes it the owner with the sender as previous owner.
    Parked = 2,
    /// Refused (full, too large, ...); the sender keeps the record and may
    /// push it again.
    Refused = 3,
}

impl AckOutcome {
    fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Installed,
            1 => Self::Stale,
            2 => Self::Parked,
            3 => Self::Refused,
            _ => return None,
        })
    }

    /// True if the receiver took responsibility for the record.
    pub fn delivered(self) -> bool {
        !matches!(self, Self::Refused)
    }
}

/// A session record on the wire, with the sender's verdict on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRecord {
    /// The session.
    pub record: SessionRecord,
    /// The sender handed the session off (it will not serve it again): the
    /// receiver's copy is authoritative. A pre-copy is never final.
    pub last: bool,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A session's state.
    Record(WireRecord),
    /// The session is at `version`, which the asker already holds.
    Unchanged {
        /// The key.
        key: Bytes,
        /// The version both hold.
        version: u64,
    },
    /// The session is not in the answering pod's memory.
    NotResident {
        /// The key.
        key: Bytes,
    },
    /// The answering pod refused this key.
    Refused {
        /// The key.
        key: Bytes,
        /// Why.
        reason: Refusal,
        /// A human-readable detail.
        message: String,
    },
    /// A transfer request for one key.
    Want {
        /// The key.
        key: Bytes,
        /// The version the asker holds (from pre-copy), if any.
        known: Option<u64>,
    },
    /// What the receiver of a push did with one key.
    Ack {
        /// The key.
        key: Bytes,
        /// What it did.
        outcome: AckOutcome,
    },
    /// The end of a body: `frames` frames came before it.
    End {
        /// Frames before this one.
        frames: u64,
    },
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame announced more bytes than the reader accepts.
    #[error("frame of {len} bytes exceeds the bound of {max} bytes")]
    FrameTooLarge {
        /// Announced payload length.
        len: usize,
        /// The reader's bound.
        max: usize,
    },
    /// Unknown frame kind.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// A payload shorter than its fields, or a bad enum value.
    #[error("malformed {kind} frame: {reason}")]
    Malformed {
        /// Frame kind name.
        kind: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The body ended without an `end` frame, or mid-frame.
    #[error("the body ended early (after {frames} frames)")]
    Truncated {
        /// Complete frames read.
        frames: u64,
    },
    /// The `end` frame's count does not match the frames read.
    #[error("end frame counts {claimed} frames but {read} were read")]
    CountMismatch {
        /// Count in the end frame.
        claimed: u64,
        /// Frames read.
        read: u64,
    },
    /// Bytes after the `end` frame.
    #[error("data after the end frame")]
    TrailingData,
    /// A key longer than a frame can carry.
    #[error("key of {0} bytes is longer than a frame can carry")]
    KeyTooLong(usize),
}

fn put_key(out: &mut BytesMut, key: &[u8]) -> Result<(), WireError> {
    let len = u16::try_from(key.len()).map_err(|_| WireError::KeyTooLong(key.len()))?;
    out.put_u16(len);
    out.put_slice(key);
    Ok(())
}

impl Frame {
    /// The key the frame is about, if any.
    pub fn key(&self) -> Option<&Bytes> {
        match self {
            Self::Record(r) => Some(&r.record.key),
            Self::Unchanged { key, .. }
            | Self::NotResident { key }
            | Self::Refused { key, .. }
            | Self::Want { key, .. }
            | Self::Ack { key, .. } => Some(key),
            Self::End { .. } => None,
        }
    }

    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        let key = self.key().map_or(0, |k| 2 + k.len());
        FRAME_HEADER_BYTES
            + key
            + match self {
                Self::Record(r) => 17 + r.record.value.len(),
                Self::Unchanged { .. } | Self::End { .. } => 8,
                Self::NotResident { .. } => 0,
                Self::Refused { message, .. } => 1 + message.len(),
                Self::Want { .. } => 9,
                Self::Ack { .. } => 1,
            }
    }

    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), WireError> {
        let len = self.encoded_len();
        out.reserve(len);
        let payload =
            u32::try_from(len - FRAME_HEADER_BYTES).map_err(|_| WireError::FrameTooLarge {
                len,
                max: u32::MAX as usize,
            })?;
        match self {
            Self::Record(WireRecord { record, last }) => {
                out.put_u8(RECORD);
                out.put_u32(payload);
                put_key(out, &record.key)?;
                out.put_u64(record.version);
                let mut flags = FLAG_EPOCH;
                if record.dirty {
                    flags |= FLAG_DIRTY;
                }
                if *last {
                    flags |= FLAG_FINAL;
                }
                out.put_u8(flags);
                out.put_u64(record.epoch);
                out.put_slice(&record.value);
            }
            Self::Unchanged { key, version } => {
                out.put_u8(UNCHANGED);
                out.put_u32(payload);
                put_key(out, key)?;
                out.put_u64(*version);
            }
            Self::NotResident { key } => {
                out.put_u8(NOT_RESIDENT);
                out.put_u32(payload);
                put_key(out, key)?;
            }
            Self::Refused {
                key,
                reason,
                message,
            } => {
                out.put_u8(REFUSED);
                out.put_u32(payload);
                put_key(out, key)?;
                out.put_u8(*reason as u8);
                out.put_slice(message.as_bytes());
            }
            Self::Want { key, known } => {
                out.put_u8(WANT);
                out.put_u32(payload);
                put_key(out, key)?;
                out.put_u8(u8::from(known.is_some()));
                out.put_u64(known.unwrap_or(0));
            }
            Self::Ack { key, outcome } => {
                out.put_u8(ACK);
                out.put_u32(payload);
                put_key(out, key)?;
                out.put_u8(*outcome as u8);
            }
            Self::End { frames } => {
                out.put_u8(END);
                out.put_u32(payload);
                out.put_u64(*frames);
            }
        }
        Ok(())
    }

    /// Decodes a record's payload after its key.
    fn decode_record(key: Bytes, mut p: Bytes) -> Result<Self, WireError> {
        let short = |reason| WireError::Malformed {
            kind: "record",
            reason,
        };
        if p.len() < 9 {
            return Err(short("no version and flags"));
        }
        let version = p.get_u64();
        let flags = p.get_u8();
        if flags & !(FLAG_DIRTY | FLAG_FINAL | FLAG_EPOCH) != 0 {
            return Err(short("unknown flags"));
        }
        let epoch = if flags & FLAG_EPOCH == 0 {
            0
        } else if p.len() < 8 {
            return Err(short("no epoch"));
        } else {
            p.get_u64()
        };
        Ok(Self::Record(WireRecord {
            record: SessionRecord {
                key,
                version,
                epoch,
                dirty: flags & FLAG_DIRTY != 0,
                value: p,
            },
            last: flags & FLAG_FINAL != 0,
        }))
    }

    /// Decodes one payload of `kind`.
    fn decode(kind: u8, mut p: Bytes) -> Result<Self, WireError> {
        let name = match kind {
            RECORD => "record",
            UNCHANGED => "unchanged",
            NOT_RESIDENT => "not resident",
            REFUSED => "refused",
            WANT => "want",
            ACK => "ack",
            END => "end",
            other => return Err(WireError::UnknownKind(other)),
        };
        let short = |reason| WireError::Malformed { kind: name, reason };
        if kind == END {
            if p.len() != 8 {
                return Err(short("end payload is not 8 bytes"));
            }
            return Ok(Self::End {
                frames: p.get_u64(),
            });
        }
        if p.len() < 2 {
            return Err(short("no key length"));
        }
        let key_len = usize::from(p.get_u16());
        if p.len() < key_len {
            return Err(short("key longer than the payload"));
        }
        let key = p.split_to(key_len);
        let frame = match kind {
            RECORD => Self::decode_record(key, p)?,
            UNCHANGED => {
                if p.len() != 8 {
                    return Err(short("version is not 8 bytes"));
                }
                Self::Unchanged {
                    key,
                    version: p.get_u64(),
                }
            }
            NOT_RESIDENT => {
                if !p.is_empty() {
                    return Err(short("bytes after the key"));
                }
                Self::NotResident { key }
            }
            REFUSED => {
                if p.is_empty() {
                    return Err(short("no reason"));
                }
                let reason = Refusal::from_u8(p.get_u8()).ok_or(short("unknown reason"))?;
                let message = String::from_utf8_lossy(&p).into_owned();
                Self::Refused {
                    key,
                    reason,
                    message,
                }
            }
            WANT => {
                if p.len() != 9 {
                    return Err(short("known version is not 9 bytes"));
                }
                let has = p.get_u8();
                let version = p.get_u64();
                let known = match has {
                    0 => None,
                    1 => Some(version),
                    _ => return Err(short("bad known flag")),
                };
                Self::Want { key, known }
            }
            _ => {
                if p.len() != 1 {
                    return Err(short("outcome is not 1 byte"));
                }
                let outcome = AckOutcome::from_u8(p.get_u8()).ok_or(short("unknown outcome"))?;
                Self::Ack { key, outcome }
            }
        };
        Ok(frame)
    }
}

/// Encodes `frames` followed by the `end` frame: a complete body.
pub fn encode_body<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Result<Bytes, WireError> {
    let mut out = BytesMut::new();
    let mut count = 0u64;
    for frame in frames {
        frame.encode(&mut out)?;
        count += 1;
    }
    Frame::End { frames: count }.encode(&mut out)?;
    Ok(out.freeze())
}

/// An incremental decoder: feed it the body's chunks as they arrive, take
/// frames out as they complete.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    max_frame: usize,
    frames: u64,
    ended: bool,
}

impl FrameDecoder {
    /// A decoder refusing frames whose payload exceeds `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            max_frame,
            frames: 0,
            ended: false,
        }
    }

    /// Adds a chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), WireError> {
        if self.ended && !chunk.is_empty() {
            return Err(WireError::TrailingData);
        }
        self.buffer.extend_from_slice(chunk);
        Ok(())
    }

    /// The next complete frame, if one is buffered. The `end` frame is
    /// checked and consumed here, never returned.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if self.ended {
            if !self.buffer.is_empty() {
                return Err(WireError::TrailingData);
            }
            return Ok(None);
        }
        if self.buffer.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let kind = self.buffer[0];
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if len > self.max_frame {
            return Err(WireError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        if self.buffer.len() < FRAME_HEADER_BYTES + len {
            return Ok(None);
        }
        self.buffer.advance(FRAME_HEADER_BYTES);
        let payload = self.buffer.split_to(len).freeze();
        match Frame::decode(kind, payload)? {
            Frame::End { frames } => {
                if frames != self.frames {
                    return Err(WireError::CountMismatch {
                        claimed: frames,
                        read: self.frames,
                    });
                }
                self.ended = true;
                if !self.buffer.is_empty() {
                    return Err(WireError::TrailingData);
                }
                Ok(None)
            }
            frame => {
                self.frames += 1;
                Ok(Some(frame))
            }
        }
    }

    /// Call when the body is over: an error unless it ended properly.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.ended {
            Ok(())
        } else {
            Err(WireError::Truncated {
                frames: self.frames,
            })
        }
    }
}

/// Decodes a complete body at once.
pub fn decode_body(body: &[u8], max_frame: usize) -> Result<Vec<Frame>, WireError> {
    let mut decoder = FrameDecoder::new(max_frame);
    decoder.push(body)?;
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame()? {
        frames.push(frame);
    }
    decoder.finish()?;
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &'static [u8], version: u64, dirty: bool, last: bool) -> Frame {
        Frame::Record(WireRecord {
            record: SessionRecord {
                key: Bytes::from_static(key),
                version,
                epoch: version * 3 + 1,
                dirty,
                value: Bytes::from_static(b"{\"n\":1}"),
            },
            last,
        })
    }

    fn every_kind() -> Vec<Frame> {
        vec![
            record(b"a", 7, true, false),
            record(b"", 0, false, true),
            Frame::Unchanged {
                key: Bytes::from_static(b"b"),
                version: u64::MAX,
            },
            Frame::NotResident {
                key: Bytes::from_static(b"c"),
            },
            Frame::Refused {
                key: Bytes::from_static(b"d"),
                reason: Refusal::RingBehind,
                message: "ring 4 < 5".into(),
            },
            Frame::Want {
                key: Bytes::from_static(b"e"),
                known: Some(3),
            },
            Frame::Want {
                key: Bytes::from_static(b"f"),
                known: None,
            },
            Frame::Ack {
                key: Bytes::from_static(b"g"),
                outcome: AckOutcome::Parked,
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_and_lengths_are_exact() {
        let frames = every_kind();
        let body = encode_body(&frames).unwrap();
        let expected: usize = frames.iter().map(Frame::encoded_len).sum::<usize>() + 13;
        assert_eq!(body.len(), expected);
        assert_eq!(decode_body(&body, 1024).unwrap(), frames);
    }

    #[test]
    fn chunked_input_decodes_the_same() {
        let frames = every_kind();
        let body = encode_body(&frames).unwrap();
        for chunk in [1, 2, 3, 7, 64] {
            let mut decoder = FrameDecoder::new(1024);
            let mut out = Vec::new();
            for piece in body.chunks(chunk) {
                decoder.push(piece).unwrap();
                while let Some(frame) = decoder.next_frame().unwrap() {
                    out.push(frame);
                }
            }
            decoder.finish().unwrap();
            assert_eq!(out, frames, "chunk size {chunk}");
        }
    }

    #[test]
    fn truncation_count_and_size_are_detected() {
        let frames = every_kind();
        let body = encode_body(&frames).unwrap();
        // Any strict prefix is refused.
        for cut in [0, 4, 5, body.len() / 2, body.len() - 1] {
            assert!(
                decode_body(&body[..cut], 1024).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
        // An end frame claiming another count.
        let mut bad = BytesMut::new();
        frames[0].encode(&mut bad).unwrap();
        Frame::End { frames: 2 }.encode(&mut bad).unwrap();
        assert_eq!(
            decode_body(&bad, 1024),
            Err(WireError::CountMismatch {
                claimed: 2,
                read: 1
            })
        );
        // Trailing bytes.
        let mut trailing = BytesMut::from(&body[..]);
        trailing.put_u8(0);
        assert_eq!(decode_body(&trailing, 1024), Err(WireError::TrailingData));
        // A frame over the bound is refused from its header alone.
        let mut decoder = FrameDecoder::new(8);
        decoder.push(&body[..FRAME_HEADER_BYTES]).unwrap();
        assert!(matches!(
            decoder.next_frame(),
            Err(WireError::FrameTooLarge { max: 8, .. })
        ));
        // Unknown kind and bad enum values.
        assert_eq!(
            decode_body(&[0x42, 0, 0, 0, 0], 64),
            Err(WireError::UnknownKind(0x42))
        );
        let mut ack = BytesMut::new();
        Frame::Ack {
            key: Bytes::from_static(b"k"),
            outcome: AckOutcome::Stale,
        }
        .encode(&mut ack)
        .unwrap();
        let last = ack.len() - 1;
        ack[last] = 9;
        assert!(matches!(
            decode_body(&ack, 64),
            Err(WireError::Malformed { kind: "ack", .. })
        ));
    }

    /// The one frame of `bytes`.
    fn one(bytes: &[u8]) -> Result<Frame, WireError> {
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(bytes)?;
        Ok(decoder.next_frame()?.expect("a whole frame"))
    }

    /// A record frame for key `k` at version 7 with `flags`, then `rest`.
    fn raw_record(flags: u8, rest: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        out.put_u8(RECORD);
        out.put_u32(u32::try_from(3 + 9 + rest.len()).unwrap());
        out.put_u16(1);
        out.put_slice(b"k");
        out.put_u64(7);
        out.put_u8(flags);
        out.put_slice(rest);
        out
    }

    #[test]
    fn records_carry_their_epoch_and_older_records_read_as_epoch_zero() {
        let mut body = BytesMut::new();
        record(b"k", 7, true, true).encode(&mut body).unwrap();
        // kind, length, key (2 + 1), version (8), then the flags byte.
        let flags_at = FRAME_HEADER_BYTES + 3 + 8;
        assert_eq!(body[flags_at], FLAG_EPOCH | FLAG_DIRTY | FLAG_FINAL);
        assert_eq!(&body[flags_at + 1..flags_at + 9], &22u64.to_be_bytes());
        // The same record as a writer without epochs sends it.
        let old = raw_record(FLAG_DIRTY, b"{}");
        let Frame::Record(read) = one(&old).unwrap() else {
            panic!("not a record");
        };
        assert_eq!((read.record.version, read.record.epoch), (7, 0));
        assert_eq!(&read.record.value[..], b"{}");
        // A flag this reader does not know is refused, not guessed.
        let mut unknown = BytesMut::from(&body[..]);
        unknown[flags_at] |= 8;
        assert!(matches!(
            one(&unknown),
            Err(WireError::Malformed { kind: "record", .. })
        ));
        // The flag without the epoch's 8 bytes.
        let cut = raw_record(FLAG_EPOCH, &[0, 0, 0, 0]);
        assert!(matches!(
            one(&cut),
            Err(WireError::Malformed { kind: "record", .. })
        ));
    }

    #[test]
    fn keys_longer_than_a_frame_can_carry_are_refused() {
        let key = Bytes::from(vec![b'k'; MAX_WIRE_KEY + 1]);
        let frame = Frame::NotResident { key };
        assert!(matches!(
            frame.encode(&mut BytesMut::new()),
            Err(WireError::KeyTooLong(_))
        ));
    }
}
