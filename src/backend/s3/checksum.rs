//! Upload checksums: the header each PutObject and UploadPart carries so the service verifies
//! the body it received, and the byte counts that let a multipart completion be checked
//! against what was sent.
//!
//! CRC32C (`x-amz-checksum-crc32c`) is computed with the `crc32c` crate, which uses the CPU's
//! CRC instruction (SSE 4.2, ARMv8) when present: a few hundredths of a second per GiB.
//! Content-MD5 is the fallback every S3-compatible service has verified since the first S3
//! API, at ~1.5 s of CPU per GiB. Both are computed here, not by the SDK: the SDK's own
//! checksums use trailers (aws-chunked encoding) that several S3-compatible servers refuse.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use md5::{Digest, Md5};

/// Which checksum uploads carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UploadChecksum {
    /// None: the body is protected by TLS, or by the SigV4 payload hash when payloads are signed.
    #[default]
    None,
    /// `Content-MD5`.
    Md5,
    /// `x-amz-checksum-crc32c`.
    Crc32c,
}

/// The header values for one body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct BodyChecksum {
    /// `Content-MD5`, base64.
    pub(super) md5: Option<String>,
    /// `x-amz-checksum-crc32c`, base64 of the big-endian CRC.
    pub(super) crc32c: Option<String>,
}

impl UploadChecksum {
    /// The checksum header values of `data`.
    pub(super) fn of(self, data: &[u8]) -> BodyChecksum {
        match self {
            Self::None => BodyChecksum::default(),
            Self::Md5 => BodyChecksum {
                md5: Some(base64_simd::STANDARD.encode_to_string(Md5::digest(data))),
                crc32c: None,
            },
            Self::Crc32c => BodyChecksum {
                md5: None,
                crc32c: Some(base64_simd::STANDARD.encode_to_string(crc32c::crc32c(data).to_be_bytes())),
            },
        }
    }
}

/// Bytes sent per part of each multipart upload in progress, so the completed object's size
/// can be compared with them. Entries go when the upload is completed or aborted.
#[derive(Debug, Default)]
pub(super) struct PartSizes {
    uploads: Mutex<HashMap<String, BTreeMap<u32, u64>>>,
}

impl PartSizes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<u32, u64>>> {
        // Single-statement updates: poisoning cannot leave the map inconsistent.
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Part `part` of `upload` now holds `len` bytes (a re-upload replaces the count).
    pub(super) fn record(&self, upload: &str, part: u32, len: u64) {
        self.lock().entry(upload.to_owned()).or_default().insert(part, len);
    }

    /// Total bytes of `parts` of `upload`, and forget the upload; `None` when a listed part
    /// was not seen here (an upload started by an earlier process), so nothing can be checked.
    pub(super) fn take_total(&self, upload: &str, parts: impl IntoIterator<Item = u32>) -> Option<u64> {
        let sizes = self.lock().remove(upload)?;
        parts.into_iter().map(|p| sizes.get(&p).copied()).sum()
    }

    /// Forget `upload`.
    pub(super) fn forget(&self, upload: &str) {
        self.lock().remove(upload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_match_known_digests() {
        // RFC 3720 B.4: CRC32C of 32 zero bytes is 0x8A9136AA.
        let c = UploadChecksum::Crc32c.of(&[0u8; 32]);
        assert_eq!(c.crc32c.as_deref(), Some("ipE2qg=="));
        assert_eq!(c.md5, None);
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e.
        let m = UploadChecksum::Md5.of(b"");
        assert_eq!(m.md5.as_deref(), Some("1B2M2Y8AsgTpgAmY7PhCfg=="));
        assert_eq!(UploadChecksum::None.of(b"x"), BodyChecksum::default());
    }

    #[test]
    fn part_sizes_total_only_what_is_listed_and_known() {
        let s = PartSizes::default();
        s.record("u", 1, 10);
        s.record("u", 2, 5);
        s.record("u", 2, 7); // re-uploaded part replaces its count
        s.record("u", 3, 100); // uploaded but not listed at completion
        assert_eq!(s.take_total("u", [1, 2]), Some(17));
        assert_eq!(s.take_total("u", [1, 2]), None, "forgotten after completion");
        s.record("v", 1, 1);
        assert_eq!(s.take_total("v", [1, 2]), None, "part 2 never seen here");
    }
}
