//! Backup images: what the Snapshot RPC streams and `etcdctl snapshot save`
//! writes to a file, and what `cairn snapshot status|restore` read back.
//!
//! # Layout (little-endian)
//!
//! ```text
//! 8   magic, the ASCII bytes `CAIRNBAK`
//! 4   u32 format version, 1
//! 8   i64 revision of the store in the image
//! 8   u64 length L of the payload
//! L   payload: a state container (`sections`) with the Lease, Alarms and
//!     Mvcc sections, Mvcc last (members are the old cluster's: not kept)
//! P   zero bytes, so that 28 + L + P is a multiple of 512
//! 32  sha256 of everything before it
//! ```
//!
//! etcdctl 3.4 checks that a saved file's size is a multiple of 512 plus 32
//! (its test for the sha256 trailer a bbolt file gets: bbolt files are whole
//! pages), hence the padding; the trailer is etcd's own: the server streams
//! the image, then one message holding its sha256, and etcdctl appends both
//! to the file.
//!
//! An image is written in pieces ([`ImageSource::write`]) from a clone of the
//! store (keys and values are shared `Bytes`, so the clone holds the index,
//! not the data a second time): the whole image is never in memory, and the
//! member goes on applying writes while it streams.

use super::sections::SectionKind;
use crate::codec::{put_i64, put_u16, put_u32, put_u64, DecodeError, Reader};
use crate::mvcc::Store;
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// The first bytes of every image.
pub const IMAGE_MAGIC: &[u8; 8] = b"CAIRNBAK";
/// The image format version this build writes and reads.
pub const IMAGE_VERSION: u32 = 1;
/// Bytes of the sha256 trailer.
pub const SHA_LEN: usize = 32;
/// Bytes before the payload.
const HEADER_LEN: usize = 28;
/// The image (without its trailer) is padded to a multiple of this.
const PAD_TO: usize = 512;

/// What an image is written from: a point-in-time copy of a member's state.
#[derive(Debug, Clone)]
pub struct ImageSource {
    /// The store as of the point in time.
    pub store: Store,
    /// The lessor's snapshot section.
    pub leases: Vec<u8>,
    /// The alarms' snapshot section.
    pub alarms: Vec<u8>,
}

impl ImageSource {
    fn payload_len(&self) -> usize {
        4 + 3 * 10 + self.leases.len() + self.alarms.len() + self.store.encoded_len()
    }

    fn padding(&self) -> usize {
        (PAD_TO - (HEADER_LEN + self.payload_len()) % PAD_TO) % PAD_TO
    }

    /// Bytes of the image before its sha256 trailer.
    pub fn len(&self) -> u64 {
        (HEADER_LEN + self.payload_len() + self.padding()) as u64
    }

    /// Whether the image is empty (it never is: the header is always there).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Hands the image, without its trailer, to `emit` in pieces of about
    /// `piece_len` bytes.
    pub fn write(&self, piece_len: usize, mut emit: impl FnMut(&[u8])) {
        let mut head = Vec::new();
        head.extend_from_slice(IMAGE_MAGIC);
        put_u32(&mut head, IMAGE_VERSION);
        put_i64(&mut head, self.store.current_revision());
        put_u64(&mut head, self.payload_len() as u64);
        put_u32(&mut head, 3);
        for (kind, body) in [
            (SectionKind::Lease, &self.leases),
            (SectionKind::Alarms, &self.alarms),
        ] {
            put_u16(&mut head, kind.tag());
            put_u64(&mut head, body.len() as u64);
            head.extend_from_slice(body);
        }
        put_u16(&mut head, SectionKind::Mvcc.tag());
        put_u64(&mut head, self.store.encoded_len() as u64);
        emit(&head);
        self.store.encode_in_pieces(piece_len, &mut emit);
        let padding = vec![0u8; self.padding()];
        if !padding.is_empty() {
            emit(&padding);
        }
    }
}

/// An image read back, its checksum verified.
#[derive(Debug, Clone)]
pub struct Image {
    /// The store's revision.
    pub revision: i64,
    /// The payload's sections (Lease, Alarms, Mvcc).
    pub sections: Vec<(SectionKind, Bytes)>,
    /// The sha256 trailer, as stored.
    pub sha256: [u8; SHA_LEN],
}

impl Image {
    /// One section's bytes, if present.
    pub fn section(&self, kind: SectionKind) -> Option<Bytes> {
        (self.sections.iter())
            .find(|(k, _)| *k == kind)
            .map(|(_, b)| b.clone())
    }
}

/// Whether `data` starts like an image (rather than, say, an etcd database).
pub fn is_image(data: &[u8]) -> bool {
    data.starts_with(IMAGE_MAGIC)
}

/// Reads an image: checks the sha256 trailer first, then the header and the
/// sections. Never panics on any input.
pub fn read_image(data: Bytes) -> Result<Image, DecodeError> {
    let bad = |offset: usize, what| DecodeError { offset, what };
    if data.len() < HEADER_LEN + SHA_LEN {
        return Err(bad(0, "image shorter than its header and checksum"));
    }
    let body_len = data.len() - SHA_LEN;
    let digest = Sha256::digest(&data[..body_len]);
    let mut sha256 = [0u8; SHA_LEN];
    sha256.copy_from_slice(&data[body_len..]);
    if digest[..] != sha256 {
        return Err(bad(body_len, "sha256 checksum mismatch"));
    }
    let mut r = Reader::new(data.slice(..body_len));
    if r.take(8, "magic")?[..] != IMAGE_MAGIC[..] {
        return Err(bad(0, "not a cairn snapshot image"));
    }
    if r.u32("image version")? != IMAGE_VERSION {
        return Err(bad(8, "unknown image version"));
    }
    let revision = r.i64("revision")?;
    let len = usize::try_from(r.u64("payload length")?).map_err(|_| bad(20, "payload length"))?;
    let payload = r.take(len, "payload")?;
    let rest = r.take(r.remaining(), "padding")?;
    if rest.len() >= PAD_TO || rest.iter().any(|b| *b != 0) {
        return Err(bad(HEADER_LEN + len, "bytes after the payload"));
    }
    let sections = super::decode_sections(payload)?;
    Ok(Image {
        revision,
        sections,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::PutRequest;

    fn image_of(src: &ImageSource, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        src.write(piece, |p| out.extend_from_slice(p));
        let sha = Sha256::digest(&out);
        out.extend_from_slice(&sha);
        out
    }

    #[test]
    fn images_round_trip_in_any_piece_size_and_damage_is_caught() {
        let mut store = Store::new();
        for i in 0..50 {
            let req = PutRequest {
                key: format!("k{i:02}").into_bytes().into(),
                value: vec![b'v'; i * 7].into(),
                ..Default::default()
            };
            store.put(&req).unwrap();
        }
        let src = ImageSource {
            store: store.clone(),
            leases: vec![1, 2, 3],
            alarms: vec![],
        };
        let whole = image_of(&src, usize::MAX);
        assert_eq!(whole, image_of(&src, 100));
        assert_eq!(whole.len() as u64, src.len() + SHA_LEN as u64);
        assert_eq!(whole.len() % 512, 32, "etcdctl's checksum test");
        let img = read_image(whole.clone().into()).unwrap();
        assert_eq!(img.revision, 51);
        assert_eq!(img.section(SectionKind::Lease).unwrap()[..], [1, 2, 3]);
        let back = Store::decode(img.section(SectionKind::Mvcc).unwrap()).unwrap();
        assert_eq!(back, store);
        for at in [0, 9, 30, whole.len() / 2, whole.len() - 1] {
            let mut bad = whole.clone();
            bad[at] ^= 1;
            assert!(read_image(bad.into()).is_err(), "flip at {at}");
        }
        assert!(read_image(Bytes::from_static(b"short")).is_err());
    }
}
