//! Upload checksums: the header each PutObject and UploadPart carries so the service verifies
//! the body it received, the byte counts that let a multipart completion be checked against
//! what was sent, and byosfs's own check of what an UploadPart answer echoes.
//!
//! Not every server verifies a part's checksum header (s3s-fs and moto verify none on
//! UploadPart), so byosfs also compares what the answer carries with what it sent
//! ([`compare_part`]): an echoed `x-amz-checksum-crc32c` must be its own, and under `md5` the
//! part's ETag is compared with the MD5 of the body, but only where the ETag can be trusted
//! to be that MD5. It cannot on encrypted parts (SSE-KMS, SSE-C, and some servers' SSE-S3
//! answer other ETags), nor on services whose part ETags are something else entirely, which
//! look just like an MD5. So a differing ETag fails an upload only once the service has shown
//! MD5 part ETags (some part's ETag, on this backend, equalled its MD5: a chance match of 128
//! bits is impossible); until then it proves nothing and the upload goes on
//! ([`corrupted_part`]).
//!
//! CRC32C (`x-amz-checksum-crc32c`) is computed with the `crc32c` crate, which uses the CPU's
//! CRC instruction (SSE 4.2, ARMv8) when present: a few hundredths of a second per GiB.
//! Content-MD5 is the fallback every S3-compatible service has verified since the first S3
//! API, at ~1.5 s of CPU per GiB. Both are computed here, not by the SDK: the SDK's own
//! checksums use trailers (aws-chunked encoding) that several S3-compatible servers refuse.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The MD5 in lower-case hex (the form of an S3 ETag), with `md5`.
    pub(super) md5_hex: Option<String>,
}

impl UploadChecksum {
    /// The checksum header values of `data`.
    pub(super) fn of(self, data: &[u8]) -> BodyChecksum {
        match self {
            Self::None => BodyChecksum::default(),
            Self::Md5 => {
                let digest = Md5::digest(data);
                BodyChecksum {
                    md5: Some(base64_simd::STANDARD.encode_to_string(digest)),
                    crc32c: None,
                    md5_hex: Some(digest.iter().map(|b| format!("{b:02x}")).collect()),
                }
            }
            Self::Crc32c => BodyChecksum {
                md5: None,
                crc32c: Some(base64_simd::STANDARD.encode_to_string(crc32c::crc32c(data).to_be_bytes())),
                md5_hex: None,
            },
        }
    }

    /// [`UploadChecksum::of`], but with the body's MD5 given by the caller (a migration
    /// copying an object whose source ETag is its MD5) sent as Content-MD5 instead of a
    /// checksum computed here: the service checks the body against the source's own digest,
    /// and no byte is hashed twice. With [`UploadChecksum::None`] nothing is sent, as asked.
    pub(super) fn of_known(self, data: &[u8], md5: Option<&[u8; 16]>) -> BodyChecksum {
        match (self, md5) {
            (Self::None, _) | (_, None) => self.of(data),
            (_, Some(d)) => BodyChecksum {
                md5: Some(base64_simd::STANDARD.encode_to_string(d)),
                crc32c: None,
                md5_hex: Some(d.iter().map(|b| format!("{b:02x}")).collect()),
            },
        }
    }
}

/// Whether what an answer carries agrees with what was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Echo {
    /// Nothing to compare (no checksum computed, none echoed, or an ETag that need not be
    /// an MD5).
    #[default]
    Unknown,
    /// Equal.
    Same,
    /// Different.
    Differs,
}

/// What an UploadPart answer carried, as far as checking goes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PartAnswer<'a> {
    /// The part's ETag.
    pub(super) etag: Option<&'a str>,
    /// `x-amz-checksum-crc32c` of the answer.
    pub(super) crc32c: Option<&'a str>,
    /// The answer names a server-side encryption (`x-amz-server-side-encryption` or the
    /// SSE-C algorithm): its ETag need not be an MD5.
    pub(super) encrypted: bool,
}

/// How an UploadPart answer compares with `sent`: (the echoed CRC32C, the ETag as an MD5).
pub(super) fn compare_part(sent: &BodyChecksum, answer: &PartAnswer<'_>) -> (Echo, Echo) {
    let same = |eq: bool| if eq { Echo::Same } else { Echo::Differs };
    let crc = match (&sent.crc32c, answer.crc32c) {
        (Some(ours), Some(theirs)) => same(ours == theirs),
        _ => Echo::Unknown,
    };
    let etag = answer.etag.map(|e| e.trim_matches('"'));
    let md5 = match (&sent.md5_hex, etag) {
        // Multipart ETags (`…-N`), SHA-1s and other forms are not MD5s: no verdict.
        (Some(ours), Some(e)) if !answer.encrypted && e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit()) => {
            same(e.eq_ignore_ascii_case(ours))
        }
        _ => Echo::Unknown,
    };
    (crc, md5)
}

/// The part of an upload to refuse, given each part's ETag-as-MD5 verdict: one whose ETag
/// differs from its MD5, once the service is known to answer MD5 part ETags (`proven`, or
/// another part of this upload shows it). `None`: nothing to refuse.
pub(super) fn corrupted_part(parts: impl IntoIterator<Item = (u32, Echo)> + Clone, proven: bool) -> Option<u32> {
    let proven = proven || parts.clone().into_iter().any(|(_, e)| e == Echo::Same);
    if !proven {
        return None;
    }
    parts.into_iter().find(|&(_, e)| e == Echo::Differs).map(|(p, _)| p)
}

/// One part as sent.
#[derive(Debug, Clone, Copy)]
struct SentPart {
    len: u64,
    etag_md5: Echo,
}

/// What the parts of an upload came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PartsSent {
    /// Total bytes of the listed parts; `None` when a listed part was not seen here (an
    /// upload started by an earlier process), so the size cannot be checked.
    pub(super) total: Option<u64>,
    /// A listed part whose ETag shows it arrived altered (see [`corrupted_part`]).
    pub(super) corrupted: Option<u32>,
}

/// Bytes sent per part of each multipart upload in progress (and each part's ETag verdict),
/// so the completed object's size can be compared with them. Entries go when the upload is
/// completed or aborted.
#[derive(Debug, Default)]
pub(super) struct PartSizes {
    uploads: Mutex<HashMap<String, BTreeMap<u32, SentPart>>>,
    /// Some part's ETag on this backend equalled its MD5 (see the module doc).
    md5_etags: AtomicBool,
}

impl PartSizes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<u32, SentPart>>> {
        // Single-statement updates: poisoning cannot leave the map inconsistent.
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Part `part` of `upload` now holds `len` bytes (a re-upload replaces the count), and
    /// its ETag compared with its MD5 as `etag_md5`.
    pub(super) fn record(&self, upload: &str, part: u32, len: u64, etag_md5: Echo) {
        if etag_md5 == Echo::Same {
            self.md5_etags.store(true, Ordering::Relaxed);
        }
        self.lock()
            .entry(upload.to_owned())
            .or_default()
            .insert(part, SentPart { len, etag_md5 });
    }

    /// Whether the service has shown MD5 part ETags.
    pub(super) fn md5_etags_proven(&self) -> bool {
        self.md5_etags.load(Ordering::Relaxed)
    }

    /// What the listed `parts` of `upload` came to, forgetting the upload; `None` when
    /// nothing of it was seen here.
    pub(super) fn take(&self, upload: &str, parts: impl IntoIterator<Item = u32>) -> Option<PartsSent> {
        let sizes = self.lock().remove(upload)?;
        let listed: Vec<(u32, Option<SentPart>)> = parts.into_iter().map(|p| (p, sizes.get(&p).copied())).collect();
        let total = listed.iter().map(|(_, s)| s.map(|s| s.len)).sum();
        let verdicts = listed
            .iter()
            .map(|&(p, s)| (p, s.map_or(Echo::Unknown, |s| s.etag_md5)));
        Some(PartsSent {
            total,
            corrupted: corrupted_part(verdicts, self.md5_etags_proven()),
        })
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
        // A known MD5 is sent as given (it need not be the body's: the service judges).
        let known = [7u8; 16];
        let k = UploadChecksum::Crc32c.of_known(b"x", Some(&known));
        assert_eq!(k.md5, Some(base64_simd::STANDARD.encode_to_string(known)));
        assert_eq!(k.crc32c, None);
        assert_eq!(UploadChecksum::Md5.of_known(b"", None), UploadChecksum::Md5.of(b""));
        assert_eq!(
            UploadChecksum::None.of_known(b"x", Some(&known)),
            BodyChecksum::default()
        );
    }

    #[test]
    fn part_sizes_total_only_what_is_listed_and_known() {
        let s = PartSizes::default();
        let u = Echo::Unknown;
        s.record("u", 1, 10, u);
        s.record("u", 2, 5, u);
        s.record("u", 2, 7, u); // re-uploaded part replaces its count
        s.record("u", 3, 100, u); // uploaded but not listed at completion
        let sent = |total| Some(PartsSent { total, corrupted: None });
        assert_eq!(s.take("u", [1, 2]), sent(Some(17)));
        assert_eq!(s.take("u", [1, 2]), None, "forgotten after completion");
        s.record("v", 1, 1, u);
        assert_eq!(s.take("v", [1, 2]), sent(None), "part 2 never seen here");
    }

    fn answer(etag: &str) -> PartAnswer<'_> {
        PartAnswer {
            etag: Some(etag),
            ..PartAnswer::default()
        }
    }

    #[test]
    fn part_answers_are_compared_only_where_they_mean_something() {
        use Echo::{Differs, Same, Unknown};
        let md5 = UploadChecksum::Md5.of(b"");
        let hex = "d41d8cd98f00b204e9800998ecf8427e";
        assert_eq!(compare_part(&md5, &answer(&format!("\"{hex}\""))), (Unknown, Same));
        assert_eq!(compare_part(&md5, &answer(&hex.to_uppercase())), (Unknown, Same));
        assert_eq!(
            compare_part(&md5, &answer("\"d41d8cd98f00b204e9800998ecf8427f\"")),
            (Unknown, Differs)
        );
        // Not an MD5's form, or encrypted: no verdict.
        for etag in [
            "\"abc\"",
            "\"d41d8cd98f00b204e9800998ecf8427e-2\"",
            "\"zz1d8cd98f00b204e9800998ecf8427e\"",
        ] {
            assert_eq!(compare_part(&md5, &answer(etag)), (Unknown, Unknown), "{etag}");
        }
        let encrypted = PartAnswer {
            encrypted: true,
            ..answer("\"00000000000000000000000000000000\"")
        };
        assert_eq!(compare_part(&md5, &encrypted), (Unknown, Unknown));
        // Without an MD5 computed, ETags are never compared.
        let crc = UploadChecksum::Crc32c.of(&[0u8; 32]);
        assert_eq!(compare_part(&crc, &answer(hex)), (Unknown, Unknown));
        // An echoed CRC32C must be ours; none echoed proves nothing.
        let echo = |c| PartAnswer {
            crc32c: Some(c),
            ..PartAnswer::default()
        };
        assert_eq!(compare_part(&crc, &echo("ipE2qg==")), (Same, Unknown));
        assert_eq!(compare_part(&crc, &echo("ipE2qQ==")), (Differs, Unknown));
        assert_eq!(compare_part(&crc, &PartAnswer::default()), (Unknown, Unknown));
        assert_eq!(compare_part(&md5, &echo("ipE2qg==")), (Unknown, Unknown));
    }

    #[test]
    fn a_differing_etag_fails_only_once_etags_are_shown_to_be_md5s() {
        use Echo::{Differs, Same, Unknown};
        assert_eq!(corrupted_part([(1, Same), (2, Differs), (3, Same)], false), Some(2));
        assert_eq!(corrupted_part([(1, Differs), (2, Unknown)], true), Some(1));
        // Every ETag differs: the service's ETags are not MD5s (or all parts were hit).
        assert_eq!(corrupted_part([(1, Differs), (2, Differs)], false), None);
        assert_eq!(corrupted_part([(1, Differs)], false), None);
        assert_eq!(corrupted_part([(1, Same), (2, Unknown)], true), None);
        assert_eq!(corrupted_part(Vec::<(u32, Echo)>::new(), true), None);
        // The proof outlives the upload that gave it.
        let s = PartSizes::default();
        s.record("a", 1, 5, Same);
        assert_eq!(s.take("a", [1]).unwrap().corrupted, None);
        s.record("b", 1, 5, Differs);
        assert_eq!(s.take("b", [1]).unwrap().corrupted, Some(1));
    }
}
