//! The little binary codec used by every on-disk format (WAL records,
//! snapshots, the MVCC state).
//!
//! Integers are fixed-width little-endian; byte strings are a `u32` length
//! followed by the bytes. Writing appends to a `Vec<u8>`. Reading goes through
//! [`Reader`], which checks every length against what is left, so decoding
//! hostile input returns a [`DecodeError`] and never panics or reads out of
//! bounds. Byte strings come back as [`Bytes`] slices of the input: no copy.

use bytes::Bytes;

/// Why a buffer could not be decoded, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at offset {offset}")]
pub struct DecodeError {
    /// Offset from the start of the reader's buffer.
    pub offset: usize,
    /// What was being read, or what check failed.
    pub what: &'static str,
}

/// Appends `v` as one byte.
pub fn put_u8(buf: &mut Vec<u8>, v: u8) {
    buf.push(v);
}

/// Appends `v` little-endian.
pub fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Appends `v` little-endian.
pub fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Appends `v` little-endian.
pub fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Appends `v` little-endian (two's complement).
pub fn put_i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Appends a `u32` length and the bytes.
///
/// # Panics
/// If `v` is 4 GiB or longer: no record cairn writes comes near that, so it
/// is a programming error.
pub fn put_bytes(buf: &mut Vec<u8>, v: &[u8]) {
    let len = u32::try_from(v.len()).expect("byte string longer than 4 GiB");
    put_u32(buf, len);
    buf.extend_from_slice(v);
}

/// A bounds-checked cursor over a buffer.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    /// Reads `buf` from its start.
    pub fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// An error at the current position.
    pub fn error(&self, what: &'static str) -> DecodeError {
        DecodeError {
            offset: self.pos,
            what,
        }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        if n > self.remaining() {
            return Err(self.error(what));
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        if N > self.remaining() {
            return Err(self.error(what));
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// Reads a little-endian `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a little-endian `i64`.
    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    /// Reads a `u32`-length-prefixed byte string.
    pub fn bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.error(what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let mut buf = Vec::new();
        put_u8(&mut buf, 7);
        put_u16(&mut buf, 0xbeef);
        put_u32(&mut buf, 0xdead_beef);
        put_u64(&mut buf, u64::MAX - 1);
        put_i64(&mut buf, -5);
        put_bytes(&mut buf, b"hello");
        let mut r = Reader::new(Bytes::from(buf));
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u16("a2").unwrap(), 0xbeef);
        assert_eq!(r.u32("b").unwrap(), 0xdead_beef);
        assert_eq!(r.u64("c").unwrap(), u64::MAX - 1);
        assert_eq!(r.i64("d").unwrap(), -5);
        assert_eq!(&r.bytes("e").unwrap()[..], b"hello");
        r.finish("end").unwrap();
        assert_eq!(r.u8("past end").unwrap_err().offset, r.position());
    }

    #[test]
    fn length_past_end_is_an_error() {
        let mut buf = Vec::new();
        put_u32(&mut buf, 1000);
        buf.extend_from_slice(b"short");
        let err = Reader::new(Bytes::from(buf)).bytes("value").unwrap_err();
        assert_eq!(
            err,
            DecodeError {
                offset: 4,
                what: "value"
            }
        );
    }
}
