//! Arbitrary bytes into the snapshot decoders: they must never panic, and
//! whatever decodes must re-encode to the very same bytes (both encodings are
//! canonical).
//!
//! Random bytes almost never carry a valid CRC, so each input is also tried
//! a second way: wrapped in a valid header and trailer (magic, version, the
//! input as the body, a correct CRC). That sends the fuzzer past the checksum
//! into the field parser, the part a CRC collision or a writer bug would reach.
#![no_main]
// `fuzz_target!` expands to a `File::create` (libfuzzer-sys's debug output);
// this is a test harness, not library code.
#![allow(clippy::disallowed_methods)]

use bytes::Bytes;
use cairn::snap::{
    decode_sections, decode_snapshot, encode_sections, encode_snapshot, FORMAT_VERSION, MAGIC,
};
use libfuzzer_sys::fuzz_target;

fn check_snapshot(buf: &[u8]) {
    if let Ok(s) = decode_snapshot(Bytes::copy_from_slice(buf)) {
        assert_eq!(encode_snapshot(&s), buf, "snapshot re-encodes differently");
        check_sections(&s.data);
    }
}

fn check_sections(buf: &[u8]) {
    if let Ok(sections) = decode_sections(Bytes::copy_from_slice(buf)) {
        let borrowed: Vec<_> = sections.iter().map(|(k, d)| (*k, &d[..])).collect();
        assert_eq!(
            encode_sections(&borrowed),
            buf,
            "sections re-encode differently"
        );
    }
}

/// CRC-32 (IEEE, reflected, as `crc32fast` computes it), bit by bit: the fuzz
/// crate does not depend on `crc32fast`, and speed does not matter here.
fn crc32_ieee(buf: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in buf {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fuzz_target!(|data: &[u8]| {
    check_snapshot(data);
    check_sections(data);

    let mut framed = Vec::with_capacity(data.len() + 16);
    framed.extend_from_slice(MAGIC);
    framed.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    framed.extend_from_slice(data);
    let crc = crc32_ieee(&framed);
    framed.extend_from_slice(&crc.to_le_bytes());
    check_snapshot(&framed);
});
