//! IDX readers (the MNIST / Fashion-MNIST container), raw or gzip.
//!
//! Layout, all integers big-endian:
//! - images: magic 0x00000803, n, rows, cols (16-byte header), then n*rows*cols u8 pixels;
//! - labels: magic 0x00000801, n (8-byte header), then n u8 labels.
//!
//! The header is untrusted: every size it implies is checked against the bytes actually present
//! (or, for gzip, against a capped read of the decompressed stream) before anything of that size is
//! allocated, so a corrupt or hostile header cannot make the reader reserve gigabytes.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

/// Magic of an IDX file of unsigned bytes with 3 dimensions (images).
pub(crate) const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of an IDX file of unsigned bytes with 1 dimension (labels).
pub(crate) const LABELS_MAGIC: u32 = 0x0000_0801;

/// Largest payload (header-implied bytes) a reader accepts: 2 GiB. Full MNIST train images are
/// 47 MB; anything near this limit is a corrupt header, and as f32 it would be 8 GiB.
pub const MAX_PAYLOAD_BYTES: u64 = 2 << 30;

/// Deflate expands at most about 1032:1, so the compressed size bounds the decompressed size. Used
/// only to cap the up-front reservation: a 100-byte gzip whose header claims 2 GiB gets a small
/// buffer that grows only as real bytes arrive.
const MAX_DEFLATE_RATIO: usize = 1032;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// What distinguishes the two IDX kinds this crate reads.
struct Kind {
    name: &'static str,
    magic: u32,
    /// Number of u32 dimensions after the magic.
    ndims: usize,
}

const IMAGES: Kind = Kind { name: "images", magic: IMAGES_MAGIC, ndims: 3 };
const LABELS: Kind = Kind { name: "labels", magic: LABELS_MAGIC, ndims: 1 };

impl Kind {
    fn header_len(&self) -> usize {
        4 + 4 * self.ndims
    }

    /// The header in words, for error messages: "60000 images of 28x28" / "60000 labels".
    fn describe(&self, dims: &[u32]) -> String {
        match dims {
            [n, rows, cols] => format!("{n} images of {rows}x{cols}"),
            [n] => format!("{n} labels"),
            _ => format!("dims {dims:?}"),
        }
    }
}

/// True when `bytes` start with the gzip magic (0x1f 0x8b). Detection is by content, not file
/// name, because downloads are often renamed or decompressed by a browser without renaming.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Parses an IDX images file (raw or gzip) held in memory.
///
/// Returns `(n, rows, cols, pixels)` with `pixels.len() == n * rows * cols`, row-major per image.
/// `source` names the file in every error.
pub fn parse_idx_images(bytes: &[u8], source: &str) -> Result<(usize, usize, usize, Vec<u8>)> {
    let (dims, payload) = parse_idx(bytes, source, &IMAGES)?;
    match dims[..] {
        [n, rows, cols] => Ok((n as usize, rows as usize, cols as usize, payload)),
        // parse_idx returns exactly IMAGES.ndims dims; kept as an error rather than a panic.
        _ => Err(Error::Inconsistent {
            dataset: source.to_string(),
            detail: format!("internal: expected 3 dims, got {dims:?}"),
        }),
    }
}

/// Parses an IDX labels file (raw or gzip) held in memory. `source` names the file in errors.
pub fn parse_idx_labels(bytes: &[u8], source: &str) -> Result<Vec<u8>> {
    let (_dims, payload) = parse_idx(bytes, source, &LABELS)?;
    Ok(payload)
}

/// Reads and parses an IDX images file; see [`parse_idx_images`].
pub fn read_idx_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let (bytes, source) = read_file(path)?;
    parse_idx_images(&bytes, &source)
}

/// Reads and parses an IDX labels file; see [`parse_idx_labels`].
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let (bytes, source) = read_file(path)?;
    parse_idx_labels(&bytes, &source)
}

/// Reads a whole file. The allocation is the file's real size, never a header-implied one.
pub(crate) fn read_file(path: &Path) -> Result<(Vec<u8>, String)> {
    let source = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => Ok((bytes, source)),
        Err(e) => Err(Error::Io { file: source, source: e }),
    }
}

/// Shared body of the two parsers: header, checks, then the payload. Returns the dims as read.
fn parse_idx(bytes: &[u8], source: &str, kind: &Kind) -> Result<(Vec<u32>, Vec<u8>)> {
    if is_gzip(bytes) { parse_gzip(bytes, source, kind) } else { parse_raw(bytes, source, kind) }
}

fn parse_raw(bytes: &[u8], source: &str, kind: &Kind) -> Result<(Vec<u32>, Vec<u8>)> {
    let hlen = kind.header_len();
    let avail = bytes.len().min(hlen);
    let dims = check_header(bytes.get(..avail).unwrap_or(&[]), source, kind)?;
    let header = kind.describe(&dims);
    let expected = payload_bytes(&dims);
    let payload = bytes.get(hlen..).unwrap_or(&[]);
    // Short first: for a raw file "only N bytes follow" is the most useful thing to say, and it
    // costs no allocation whatever the header claims.
    if (payload.len() as u128) < expected {
        return Err(Error::PayloadTooShort {
            kind: kind.name,
            file: source.to_string(),
            header,
            expected,
            found: payload.len() as u64,
        });
    }
    let expected = check_limit(expected, source, kind, &header)?;
    if payload.len() as u64 > expected {
        return Err(Error::TrailingBytes {
            kind: kind.name,
            file: source.to_string(),
            header,
            expected,
            extra: Some(payload.len() as u64 - expected),
        });
    }
    Ok((dims, payload.to_vec()))
}

fn parse_gzip(bytes: &[u8], source: &str, kind: &Kind) -> Result<(Vec<u32>, Vec<u8>)> {
    let decompress_err = |e: std::io::Error| Error::Decompress { kind: kind.name, file: source.to_string(), source: e };
    let mut decoder = MultiGzDecoder::new(bytes);
    let mut head = [0u8; 16];
    let hlen = kind.header_len();
    let head = head.get_mut(..hlen).unwrap_or(&mut []);
    let got = read_up_to(&mut decoder, head).map_err(decompress_err)?;
    let dims = check_header(head.get(..got).unwrap_or(&[]), source, kind)?;
    let header = kind.describe(&dims);
    // The decompressed size is unknown until read, so the limit is checked on the header first.
    let expected = check_limit(payload_bytes(&dims), source, kind, &header)?;
    let hint = (expected as usize).min(bytes.len().saturating_mul(MAX_DEFLATE_RATIO));
    let mut payload = Vec::with_capacity(hint);
    // Read at most one byte more than promised: enough to detect trailing data, never more, so a
    // gzip bomb behind a small header stops at the header's size.
    decoder.take(expected + 1).read_to_end(&mut payload).map_err(decompress_err)?;
    let found = payload.len() as u64;
    if found < expected {
        return Err(Error::PayloadTooShort {
            kind: kind.name,
            file: source.to_string(),
            header,
            expected: u128::from(expected),
            found,
        });
    }
    if found > expected {
        return Err(Error::TrailingBytes { kind: kind.name, file: source.to_string(), header, expected, extra: None });
    }
    Ok((dims, payload))
}

/// Checks magic, header length and dims on the first `header_len` bytes (fewer if truncated).
fn check_header(head: &[u8], source: &str, kind: &Kind) -> Result<Vec<u32>> {
    // Magic before length: a short file of the wrong kind is better reported as the wrong kind.
    if let Some(magic) = be_u32(head, 0)
        && magic != kind.magic
    {
        return Err(Error::BadMagic { kind: kind.name, file: source.to_string(), expected: kind.magic, found: magic });
    }
    if head.len() < kind.header_len() {
        return Err(Error::TruncatedHeader {
            kind: kind.name,
            file: source.to_string(),
            expected: kind.header_len(),
            found: head.len(),
        });
    }
    let dims: Vec<u32> = (0..kind.ndims).map(|d| be_u32(head, 4 + 4 * d).unwrap_or(0)).collect();
    if dims.contains(&0) {
        return Err(Error::ZeroDimension { kind: kind.name, file: source.to_string(), header: kind.describe(&dims) });
    }
    Ok(dims)
}

/// Payload size implied by the dims; u128 because three u32 factors can exceed u64.
fn payload_bytes(dims: &[u32]) -> u128 {
    dims.iter().map(|&d| u128::from(d)).product()
}

fn check_limit(expected: u128, source: &str, kind: &Kind, header: &str) -> Result<u64> {
    if expected > u128::from(MAX_PAYLOAD_BYTES) {
        return Err(Error::TooLarge {
            kind: kind.name,
            file: source.to_string(),
            header: header.to_string(),
            expected,
            limit: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(expected as u64)
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// Fills `buf` as far as the reader allows; returns how many bytes were read (short only at EOF).
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        match reader.read(rest) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images_header(n: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut v = IMAGES_MAGIC.to_be_bytes().to_vec();
        for d in [n, rows, cols] {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn dims_overflowing_u64_are_too_large_not_wrapped() {
        // 2^32-1 cubed is about 2^96: a u64 product would wrap to something small and pass.
        let mut bytes = images_header(u32::MAX, u32::MAX, u32::MAX);
        bytes.extend_from_slice(&[0u8; 8]);
        match parse_idx_images(&bytes, "x") {
            Err(Error::PayloadTooShort { expected, found, .. }) => {
                assert_eq!(expected, u128::from(u32::MAX).pow(3));
                assert_eq!(found, 8);
            }
            other => panic!("expected PayloadTooShort, got {other:?}"),
        }
    }

    #[test]
    fn magic_is_checked_before_truncation() {
        let bytes = LABELS_MAGIC.to_be_bytes();
        let err = parse_idx_images(&bytes, "short.idx").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::BadMagic { found: LABELS_MAGIC, .. }), "{msg}");
        assert!(msg.contains("this is an IDX labels file"), "{msg}");
    }

    #[test]
    fn three_bytes_is_a_truncated_header() {
        let err = parse_idx_labels(&[0, 0, 8], "tiny").unwrap_err();
        assert!(matches!(err, Error::TruncatedHeader { expected: 8, found: 3, .. }), "{err}");
    }

    #[test]
    fn read_up_to_stops_at_eof() {
        let mut src: &[u8] = &[1, 2, 3];
        let mut buf = [0u8; 8];
        assert_eq!(read_up_to(&mut src, &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], &[1, 2, 3]);
    }
}
