//! Record framing: encoding one record, decoding one at an offset, and
//! scanning a whole segment.
//!
//! A record is a 17-byte header and a payload, all little-endian:
//!
//! ```text
//! 0   u32  crc32 (IEEE) of bytes 4..17+len
//! 4   u32  len: payload length, at most MAX_RECORD_LEN
//! 8   u8   type: 1 entry, 2 hard state, 3 snapshot marker
//! 9   u64  synced: bytes of this segment durable when the record was encoded
//! 17  ..   payload
//! ```
//!
//! Everything here is pure: it reads and writes byte buffers, never a disk,
//! which is what lets the fuzzer drive [`scan_segment`] directly.

use super::{Entry, EntryKind, HardState, SnapshotMarker};
use crate::codec::{put_bytes, put_u32, put_u64, put_u8, DecodeError, Reader};
use bytes::Bytes;

/// Bytes in a record header.
pub const HEADER_LEN: u64 = 17;
/// The largest payload a record may have; a longer length is corruption.
pub const MAX_RECORD_LEN: u32 = 256 * 1024 * 1024;
/// Record type of a log entry.
pub const TYPE_ENTRY: u8 = 1;
/// Record type of a hard state.
pub const TYPE_HARD_STATE: u8 = 2;
/// Record type of a snapshot marker.
pub const TYPE_SNAPSHOT: u8 = 3;

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A log entry.
    Entry(Entry),
    /// A hard state.
    HardState(HardState),
    /// A snapshot marker.
    Snapshot(SnapshotMarker),
}

impl Record {
    fn type_byte(&self) -> u8 {
        match self {
            Record::Entry(_) => TYPE_ENTRY,
            Record::HardState(_) => TYPE_HARD_STATE,
            Record::Snapshot(_) => TYPE_SNAPSHOT,
        }
    }

    /// Appends this record's payload (no header) to `buf`.
    pub(crate) fn encode_payload(&self, buf: &mut Vec<u8>) {
        match self {
            Record::Entry(e) => {
                put_u64(buf, e.index);
                put_u64(buf, e.term);
                put_u8(buf, e.kind as u8);
                put_bytes(buf, &e.data);
                put_bytes(buf, &e.context);
            }
            Record::HardState(hs) => {
                put_u64(buf, hs.term);
                put_u64(buf, hs.vote);
                put_u64(buf, hs.commit);
            }
            Record::Snapshot(m) => {
                put_u64(buf, m.index);
                put_u64(buf, m.term);
            }
        }
    }

    fn decode_payload(kind: u8, payload: Bytes) -> Result<Record, DecodeError> {
        let mut r = Reader::new(payload);
        let record = match kind {
            TYPE_ENTRY => {
                let index = r.u64("entry payload truncated")?;
                let term = r.u64("entry payload truncated")?;
                let kind_byte = r.u8("entry payload truncated")?;
                let kind = EntryKind::from_u8(kind_byte).ok_or(r.error("unknown entry kind"))?;
                let data = r.bytes("entry data runs past payload")?;
                let context = r.bytes("entry context runs past payload")?;
                Record::Entry(Entry {
                    index,
                    term,
                    kind,
                    data,
                    context,
                })
            }
            TYPE_HARD_STATE => Record::HardState(HardState {
                term: r.u64("hard state payload truncated")?,
                vote: r.u64("hard state payload truncated")?,
                commit: r.u64("hard state payload truncated")?,
            }),
            TYPE_SNAPSHOT => Record::Snapshot(SnapshotMarker {
                index: r.u64("snapshot payload truncated")?,
                term: r.u64("snapshot payload truncated")?,
            }),
            _ => return Err(r.error("unknown record type")),
        };
        r.finish("trailing bytes after payload")?;
        Ok(record)
    }
}

/// Appends one framed record to `out`. `payload` is the record's encoded
/// payload (see [`Record::encode_payload`]), `synced` the durable length of
/// the segment it will land in.
///
/// # Panics
/// If the payload is longer than [`MAX_RECORD_LEN`]: the caller bounds
/// entry sizes long before this, so it is a programming error.
pub(crate) fn encode_frame(out: &mut Vec<u8>, record: &Record, synced: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&len| len <= MAX_RECORD_LEN)
        .unwrap_or_else(|| {
            panic!(
                "record payload of {} bytes is over the limit",
                payload.len()
            )
        });
    let mut head = Vec::with_capacity(13);
    put_u32(&mut head, len);
    put_u8(&mut head, record.type_byte());
    put_u64(&mut head, synced);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(payload);
    put_u32(out, crc.finalize());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
}

/// A record decoded at some offset, with its framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// The record.
    pub record: Record,
    /// Its `synced` header field.
    pub synced: u64,
    /// Offset of the first byte after it.
    pub end: u64,
}

/// The header fields of a candidate record, read without checking its CRC.
struct Header {
    crc: u32,
    len: u32,
    kind: u8,
    synced: u64,
}

fn read_header(buf: &Bytes, offset: u64) -> Result<Header, &'static str> {
    let start = usize::try_from(offset).map_err(|_| "offset past end of file")?;
    if start > buf.len() {
        return Err("offset past end of file");
    }
    let mut r = Reader::new(buf.slice(start..));
    let header = (|| {
        Ok::<_, DecodeError>(Header {
            crc: r.u32("short header")?,
            len: r.u32("short header")?,
            kind: r.u8("short header")?,
            synced: r.u64("short header")?,
        })
    })();
    header.map_err(|e| e.what)
}

/// Decodes the record starting at `offset` of `buf`, checking everything: the
/// header fits, the type is known, the length is in bounds, the CRC matches,
/// the payload decodes with nothing left over, and `synced` does not claim
/// bytes past the record's own start.
pub(crate) fn decode_at(buf: &Bytes, offset: u64) -> Result<Frame, &'static str> {
    let h = read_header(buf, offset)?;
    if !(TYPE_ENTRY..=TYPE_SNAPSHOT).contains(&h.kind) {
        return Err("unknown record type");
    }
    if h.len > MAX_RECORD_LEN {
        return Err("record length over the limit");
    }
    let payload_start = offset + HEADER_LEN;
    let end = payload_start + u64::from(h.len);
    if end > buf.len() as u64 {
        return Err("record runs past end of file");
    }
    // Both fit in usize: they are at most buf.len().
    let (start, end_usize) = (offset as usize, end as usize);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&buf[start + 4..end_usize]);
    if crc.finalize() != h.crc {
        return Err("crc mismatch");
    }
    if h.synced > offset {
        return Err("synced field claims bytes past the record");
    }
    let payload = buf.slice(payload_start as usize..end_usize);
    let record = Record::decode_payload(h.kind, payload).map_err(|e| e.what)?;
    Ok(Frame {
        record,
        synced: h.synced,
        end,
    })
}

/// A record that failed to decode: where, and which check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// Byte offset of the bad record's first byte in the segment.
    pub offset: u64,
    /// The check that failed.
    pub reason: &'static str,
}

/// What [`scan_segment`] found in one segment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SegmentScan {
    /// Every record before the first bad one, with its offset.
    pub records: Vec<(u64, Record)>,
    /// The first record that failed to decode, if any. Nothing after it is
    /// read.
    pub bad: Option<BadRecord>,
    /// Offset just past the last good record (the file's length if `bad` is
    /// `None`).
    pub good_len: u64,
}

/// Decodes one segment's bytes, record after record, and stops at the first
/// bad record, saying where and why. Never panics, whatever `buf` holds.
pub fn scan_segment(buf: Bytes) -> SegmentScan {
    let mut scan = SegmentScan::default();
    let len = buf.len() as u64;
    // Every record is at least HEADER_LEN bytes, so the loop runs at most
    // len / HEADER_LEN times.
    while scan.good_len < len {
        match decode_at(&buf, scan.good_len) {
            Ok(frame) => {
                assert!(frame.end > scan.good_len, "a record has positive length");
                scan.records.push((scan.good_len, frame.record));
                scan.good_len = frame.end;
            }
            Err(reason) => {
                scan.bad = Some(BadRecord {
                    offset: scan.good_len,
                    reason,
                });
                break;
            }
        }
    }
    scan
}

/// Looks for evidence that the bytes at `bad_offset` were once durable: a
/// valid record at any later offset whose `synced` field is above
/// `bad_offset`. Returns that record's offset.
///
/// Cheap checks come first (the `synced` window, the type, the length) so
/// the CRC runs only on plausible candidates.
pub(crate) fn find_durable_witness(buf: &Bytes, bad_offset: u64) -> Option<u64> {
    let len = buf.len() as u64;
    let mut offset = bad_offset + 1;
    while offset + HEADER_LEN <= len {
        if let Ok(h) = read_header(buf, offset) {
            let plausible = h.synced > bad_offset
                && h.synced <= offset
                && (TYPE_ENTRY..=TYPE_SNAPSHOT).contains(&h.kind)
                && h.len <= MAX_RECORD_LEN
                && u64::from(h.len) <= len - offset - HEADER_LEN;
            if plausible && decode_at(buf, offset).is_ok() {
                return Some(offset);
            }
        }
        offset += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(record: &Record, synced: u64) -> Vec<u8> {
        let mut payload = Vec::new();
        record.encode_payload(&mut payload);
        let mut out = Vec::new();
        encode_frame(&mut out, record, synced, &payload);
        out
    }

    fn entry(index: u64) -> Record {
        Record::Entry(Entry {
            index,
            term: 7,
            kind: EntryKind::ConfChangeV2,
            data: Bytes::from_static(b"data"),
            context: Bytes::from_static(b"ctx"),
        })
    }

    #[test]
    fn round_trip_every_type() {
        let records = [
            entry(5),
            Record::HardState(HardState {
                term: 1,
                vote: 2,
                commit: 3,
            }),
            Record::Snapshot(SnapshotMarker { index: 9, term: 4 }),
        ];
        let mut buf = Vec::new();
        let mut offsets = Vec::new();
        for r in &records {
            offsets.push(buf.len() as u64);
            buf.extend(frame(r, 0));
        }
        let scan = scan_segment(Bytes::from(buf.clone()));
        assert_eq!(scan.bad, None);
        assert_eq!(scan.good_len, buf.len() as u64);
        let got: Vec<_> = scan.records.into_iter().collect();
        let want: Vec<_> = offsets.into_iter().zip(records).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn header_layout_is_as_documented() {
        let buf = frame(&Record::Snapshot(SnapshotMarker { index: 1, term: 2 }), 0);
        assert_eq!(buf.len() as u64, HEADER_LEN + 16);
        assert_eq!(&buf[4..8], &16u32.to_le_bytes());
        assert_eq!(buf[8], TYPE_SNAPSHOT);
        assert_eq!(&buf[9..17], &0u64.to_le_bytes());
        assert_eq!(&buf[0..4], &crc32fast::hash(&buf[4..]).to_le_bytes());
    }

    #[test]
    fn each_check_reports_its_reason() {
        let good = frame(&entry(1), 0);
        let reason = |buf: Vec<u8>| scan_segment(Bytes::from(buf)).bad.map(|b| b.reason);
        assert_eq!(reason(good[..10].to_vec()), Some("short header"));
        assert_eq!(
            reason(good[..good.len() - 1].to_vec()),
            Some("record runs past end of file")
        );
        let mut bad_type = good.clone();
        bad_type[8] = 9;
        assert_eq!(reason(bad_type), Some("unknown record type"));
        let mut bad_crc = good.clone();
        bad_crc[20] ^= 1;
        assert_eq!(reason(bad_crc), Some("crc mismatch"));
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&(MAX_RECORD_LEN + 1).to_le_bytes());
        assert_eq!(reason(huge), Some("record length over the limit"));
        // A valid CRC over a record claiming it was durable past itself.
        assert_eq!(
            reason(frame(&entry(1), 1)),
            Some("synced field claims bytes past the record")
        );
    }

    #[test]
    fn witness_needs_synced_past_the_bad_offset() {
        let mut buf = frame(&entry(1), 0);
        let second = buf.len() as u64;
        buf.extend(frame(&entry(2), 0));
        let third = buf.len() as u64;
        buf.extend(frame(&entry(3), third));
        let buf = Bytes::from(buf);
        // The third record says the first `third` bytes were durable.
        assert_eq!(find_durable_witness(&buf, second), Some(third));
        assert_eq!(find_durable_witness(&buf, 0), Some(third));
        assert_eq!(find_durable_witness(&buf, third), None);
    }
}
