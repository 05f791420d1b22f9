//! The state container: what a snapshot's `data` holds.
//!
//! A snapshot carries the state of several components of the core (today the
//! MVCC store; later the lessor). Each goes in its own *section*, tagged with a
//! [`SectionKind`], so a new component can add a section without changing the
//! layout of the others. The same bytes are what raft ships to a lagging
//! follower as `Snapshot.data`, so the container has no checksum of its own:
//! on disk the snapshot file's CRC covers it, on the wire the transport does.
//!
//! # Layout (little-endian)
//!
//! ```text
//! u32 section count
//! repeated count times:
//!     u16 kind        (SectionKind: 1 = Mvcc, 2 = Lease, 3 = Members, 4 = Alarms)
//!     u64 length      (bytes that follow)
//!     length bytes    (the section's own encoding)
//! ```
//!
//! # Invariants
//!
//! - Each kind appears at most once. [`encode_sections`] asserts it;
//!   [`decode_sections`] rejects a duplicate.
//! - A kind this build does not know is an error, never skipped: skipping it
//!   would drop state (a newer node's lease table, say) without a word.
//! - Sections keep their order, so `encode(decode(x)) == x` for every `x`
//!   that decodes: the encoding is canonical, and the fuzz target checks it.
//! - Decoding copies nothing: every section is a [`Bytes`] slice of the input.

use crate::codec::{put_u16, put_u32, put_u64, DecodeError, Reader};
use bytes::Bytes;

/// Bytes a section takes besides its contents: kind and length.
const SECTION_HEADER_LEN: usize = 2 + 8;

/// What a section holds. The discriminant is the tag written on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u16)]
pub enum SectionKind {
    /// The MVCC store: key index, revisions, values.
    Mvcc = 1,
    /// The lessor's leases. Reserved: nothing writes it yet, but a reader
    /// accepts it so that adding leases is not a format break.
    Lease = 2,
    /// Members' published attributes (names, client URLs).
    Members = 3,
    /// The active alarms (NOSPACE, CORRUPT), as `cairnpb.AlarmList`.
    Alarms = 4,
}

impl SectionKind {
    /// The kind written as `tag`, if this build knows it.
    pub fn from_tag(tag: u16) -> Option<Self> {
        match tag {
            1 => Some(SectionKind::Mvcc),
            2 => Some(SectionKind::Lease),
            3 => Some(SectionKind::Members),
            4 => Some(SectionKind::Alarms),
            _ => None,
        }
    }

    /// The tag written on disk.
    pub fn tag(self) -> u16 {
        self as u16
    }
}

/// Encodes `sections` in the given order.
///
/// # Panics
/// If a kind appears twice: the caller builds this list, so that is a
/// programming error.
pub fn encode_sections(sections: &[(SectionKind, &[u8])]) -> Vec<u8> {
    let mut writers: Vec<SectionWriter<'_>> = sections
        .iter()
        .map(|(kind, data)| -> SectionWriter<'_> {
            (
                *kind,
                Box::new(move |buf: &mut Vec<u8>| buf.extend_from_slice(data)),
            )
        })
        .collect();
    encode_sections_with(&mut writers)
}

/// A section's kind and the code that writes its body.
pub type SectionWriter<'a> = (SectionKind, Box<dyn FnMut(&mut Vec<u8>) + 'a>);

/// Like [`encode_sections`], but each section writes its body straight into
/// the container, so a large section (the MVCC state) is not built apart and
/// copied: a snapshot holds one copy of the state, not two.
pub fn encode_sections_with(sections: &mut [SectionWriter<'_>]) -> Vec<u8> {
    for i in 0..sections.len() {
        let kind = sections[i].0;
        assert!(
            sections[..i].iter().all(|(k, _)| *k != kind),
            "section {kind:?} given twice"
        );
    }
    let mut buf = Vec::new();
    let count = u32::try_from(sections.len()).expect("fewer than 2^32 sections");
    put_u32(&mut buf, count);
    for (kind, write) in sections.iter_mut() {
        put_u16(&mut buf, kind.tag());
        let len_at = buf.len();
        put_u64(&mut buf, 0);
        write(&mut buf);
        let len = (buf.len() - len_at - 8) as u64;
        buf[len_at..len_at + 8].copy_from_slice(&len.to_le_bytes());
    }
    buf
}

/// Decodes a container written by [`encode_sections`]. Fails on an unknown or
/// repeated kind, a length past the end, or bytes left over.
pub fn decode_sections(data: Bytes) -> Result<Vec<(SectionKind, Bytes)>, DecodeError> {
    let mut r = Reader::new(data);
    let count = r.u32("section count")? as usize;
    // Every section takes at least its header, so a count larger than that
    // is a lie; checking first keeps hostile input from sizing our Vec.
    if count > r.remaining() / SECTION_HEADER_LEN {
        return Err(r.error("section count exceeds the data"));
    }
    let mut out: Vec<(SectionKind, Bytes)> = Vec::with_capacity(count);
    for _ in 0..count {
        let at = r.position();
        let tag = r.u16("section kind")?;
        let kind = SectionKind::from_tag(tag).ok_or(DecodeError {
            offset: at,
            what: "unknown section kind",
        })?;
        if out.iter().any(|(k, _)| *k == kind) {
            return Err(DecodeError {
                offset: at,
                what: "duplicate section kind",
            });
        }
        let len = r.u64("section length")?;
        let len = usize::try_from(len).map_err(|_| r.error("section length"))?;
        out.push((kind, r.take(len, "section data")?));
    }
    r.finish("bytes after the last section")?;
    Ok(out)
}
