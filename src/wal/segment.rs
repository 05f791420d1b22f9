//! Segment file names: `{seq:016x}-{first_index:016x}.wal`.

/// The file name of segment `seq` whose first index is `first_index`.
pub fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

/// Parses a segment file name into `(seq, first_index)`. Anything else (other
/// files, upper-case hex, wrong widths) is `None`: not a segment.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, first) = stem.split_once('-')?;
    Some((parse_hex16(seq)?, parse_hex16(first)?))
}

fn parse_hex16(s: &str) -> Option<u64> {
    let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if s.len() != 16 || !s.chars().all(lower_hex) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let name = segment_name(3, 0x1234);
        assert_eq!(name, "0000000000000003-0000000000001234.wal");
        assert_eq!(parse_segment_name(&name), Some((3, 0x1234)));
        assert_eq!(
            parse_segment_name(&segment_name(u64::MAX, u64::MAX)),
            Some((u64::MAX, u64::MAX))
        );
    }

    #[test]
    fn other_files_are_not_segments() {
        for name in [
            "snap.db",
            "0000000000000003-0000000000001234.wal.tmp",
            "3-1234.wal",
            "000000000000000G-0000000000001234.wal",
            "000000000000000A-0000000000001234.wal",
            "+000000000000003-0000000000001234.wal",
            "00000000000000030000000000001234.wal",
        ] {
            assert_eq!(parse_segment_name(name), None, "{name}");
        }
    }
}
