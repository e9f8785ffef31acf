//! How an input of the `artifact` fuzz target becomes the bytes handed to
//! the artifact reader, shared by the target and the seed generator.
//!
//! Mutating a compressed stream mostly breaks the compression, and a tar
//! header whose bytes changed mostly fails its checksum, so the reader's
//! own checks would rarely be reached. The first byte of an input says
//! what the rest is:
//!
//! - bit 0 clear: the artifact's bytes as they are (tar+zstd), for the
//!   zstd layer and the trailing-data rules;
//! - bit 0 set: the decompressed tar stream, compressed here with zstd
//!   before reading, and (unless bit 1 is set) with every header's
//!   checksum recomputed, so that mutations reach the entry checks.

/// The first byte of an input holding an artifact's bytes as they are.
pub const RAW: u8 = 0;
/// The first byte of an input holding a tar stream to compress.
pub const TAR: u8 = 1;
/// With [`TAR`]: keep the header checksums as they are.
pub const KEEP_CHECKSUMS: u8 = 2;

/// The artifact bytes an input stands for.
pub fn artifact_bytes(input: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = input.split_first() else {
        return Vec::new();
    };
    if mode & TAR == 0 {
        return rest.to_vec();
    }
    let mut tar = rest.to_vec();
    if mode & KEEP_CHECKSUMS == 0 {
        fix_checksums(&mut tar);
    }
    zstd::bulk::compress(&tar, 1).expect("compressing in memory does not fail")
}

/// Walks the headers of a tar stream as a reader would (each followed by
/// its data, rounded up to 512 bytes) and rewrites each one's checksum,
/// until an all-zero block or a size that does not parse.
pub fn fix_checksums(tar: &mut [u8]) {
    let mut at = 0usize;
    while let Some(header) = tar.get_mut(at..at + 512) {
        if header.iter().all(|&b| b == 0) {
            return;
        }
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:07o}\0").as_bytes());
        let Some(size) = header_size(&header[124..136]) else {
            return;
        };
        let Some(next) = size
            .checked_next_multiple_of(512)
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| (at + 512).checked_add(s))
        else {
            return;
        };
        at = next;
    }
}

/// A tar size field: octal digits (space or NUL padded), or base-256 when
/// the first byte has its high bit set.
fn header_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut n = 0u64;
        for &b in &field[4..] {
            n = (n << 8) | u64::from(b);
        }
        return Some(n);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// The input of the `artifact` target that stands for `artifact` with its
/// tar stream decompressed (mode [`TAR`]).
pub fn tar_input(artifact: &[u8]) -> Vec<u8> {
    let mut input = vec![TAR];
    input.extend(zstd::stream::decode_all(artifact).expect("a valid artifact decompresses"));
    input
}

/// The input of the `artifact` target holding `artifact` as it is.
pub fn raw_input(artifact: &[u8]) -> Vec<u8> {
    let mut input = vec![RAW];
    input.extend_from_slice(artifact);
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_those_tar_writes() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        builder.append_data(&mut h, "a/b", &b"abc"[..]).unwrap();
        let good = builder.into_inner().unwrap();
        let mut bad = good.clone();
        bad[148..156].copy_from_slice(b"0000000\0");
        fix_checksums(&mut bad);
        assert!(bad == good, "the checksums differ from those tar writes");
    }
}
