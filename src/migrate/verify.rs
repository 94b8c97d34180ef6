//! Deciding whether a copy holds the source's bytes and metadata: pure functions.
//!
//! S3 ETags are MD5s: of the whole object for a single PUT, and `md5(md5(part 1) ‖ … ‖
//! md5(part n))-n` for a multipart upload. A streamed copy hashes what it reads, part by part,
//! so it can predict the ETag the target must report for what it wrote and compare without
//! reading the object back. Where the target's ETag is not of that form (the local backend,
//! some providers with encryption) [`check`] asks for a read-back instead.
//!
//! Hashing is the largest CPU cost of a copy (~1.5 s per GiB), and often redundant: when the
//! source's ETag is a plain MD5 and the target has shown that its ETags are the MD5 of what
//! it stores, the target's ETag equal to the source's proves the copy byte for byte, as
//! `rclone` proves its copies. [`must_hash`] decides per object, [`shows_md5_etags`] is the
//! evidence that lets a run stop hashing: a hashed copy whose target ETag was its MD5.

use std::time::SystemTime;

use md5::{Digest, Md5};

use crate::backend::PosixAttrs;

/// An MD5 digest.
pub type Md5Sum = [u8; 16];

/// MD5 of `data`.
pub fn md5_of(data: &[u8]) -> Md5Sum {
    Md5::digest(data).into()
}

/// Lower-case hex of a digest.
pub fn hex(d: &Md5Sum) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The ETag without its quotes, lower-cased.
fn bare(etag: &str) -> String {
    etag.trim().trim_matches('"').to_ascii_lowercase()
}

/// Whether `etag` is the MD5 of the whole object (32 hex digits, no part count).
pub fn is_plain_md5(etag: &str) -> bool {
    let e = bare(etag);
    e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `etag` has the multipart form `<32 hex>-<parts>`.
pub fn is_multipart_md5(etag: &str) -> bool {
    let e = bare(etag);
    match e.split_once('-') {
        Some((h, n)) => is_plain_md5(h) && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// The ETag S3 gives a multipart upload of parts with these MD5s (without quotes).
pub fn multipart_etag(parts: &[Md5Sum]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    let d: Md5Sum = h.finalize().into();
    format!("{}-{}", hex(&d), parts.len())
}

/// The MD5 a plain-MD5 ETag states (`None` for any other form).
pub fn etag_md5(etag: &str) -> Option<Md5Sum> {
    if !is_plain_md5(etag) {
        return None;
    }
    let e = bare(etag);
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(e.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether a copy written in one piece must hash the bytes it reads. Not when the source
/// states its MD5 (`source_md5`) and the target has shown its ETags are content MD5s
/// (`target_shows_md5`): [`check`] then compares the target's ETag with the source's. A
/// second attempt (`retry`) hashes, so its report tells a bad read from a bad write.
pub fn must_hash(source_md5: Option<&Md5Sum>, target_shows_md5: bool, retry: bool) -> bool {
    source_md5.is_none() || !target_shows_md5 || retry
}

/// Whether a verified copy shows that the target's ETags are the MD5 of what it stores: the
/// bytes were hashed here, and the target's ETag is that very digest.
pub fn shows_md5_etags(written: &Written, stored: &Stored, verdict: &Check) -> bool {
    written.hashed
        && *verdict == Check::Match
        && written.md5.is_some()
        && stored.etag.as_deref().and_then(etag_md5) == written.md5
}

/// What a copy wrote, as hashed while streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Bytes written.
    pub size: u64,
    /// MD5 of the whole object, when it was written in one piece: computed from the bytes
    /// copied, or (`hashed` false) the one the source's ETag states.
    pub md5: Option<Md5Sum>,
    /// Whether `md5` / `parts` were computed here from the bytes copied.
    pub hashed: bool,
    /// MD5 of each part, when it was written as a multipart upload.
    pub parts: Option<Vec<Md5Sum>>,
    /// Stored modification time given to the copy.
    pub mtime: Option<SystemTime>,
    /// POSIX attributes given to the copy.
    pub posix: PosixAttrs,
}

/// What the target reports about the copy (a HEAD after writing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Size.
    pub size: u64,
    /// ETag, if any.
    pub etag: Option<String>,
    /// Stored mtime, if any.
    pub mtime: Option<SystemTime>,
    /// Stored POSIX attributes (empty where the backend keeps none).
    pub posix: PosixAttrs,
}

/// The verdict on one copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Size, content and metadata match.
    Match,
    /// Something differs: the reason.
    Mismatch(String),
    /// Size and metadata match, but the target's ETag cannot prove the content: read it back
    /// and compare with [`Written`]'s digest (see [`check_read_back`]).
    NeedReadBack,
}

/// Compare what was written with what the target stores. `source_etag` is the ETag the
/// source reported for the bytes read: when it is a plain MD5 it must equal what was read,
/// which catches a source read that went wrong.
pub fn check(written: &Written, source_etag: Option<&str>, stored: &Stored) -> Check {
    if stored.size != written.size {
        return Check::Mismatch(format!("size {} in the target, {} copied", stored.size, written.size));
    }
    if let Some(want) = written.mtime {
        if stored.mtime != Some(want) {
            return Check::Mismatch("stored mtime differs".to_owned());
        }
    }
    // A backend that keeps no POSIX attributes (local) reports none: nothing to compare.
    if !stored.posix.is_empty() && stored.posix != written.posix {
        return Check::Mismatch("stored mode/uid/gid differ".to_owned());
    }
    if let (Some(src), Some(md5)) = (source_etag, written.md5) {
        if is_plain_md5(src) && bare(src) != hex(&md5) {
            return Check::Mismatch("bytes read differ from the source's ETag".to_owned());
        }
    }
    let Some(etag) = stored.etag.as_deref() else {
        return Check::NeedReadBack;
    };
    let expected = match (&written.md5, &written.parts) {
        (Some(d), _) if is_plain_md5(etag) => hex(d),
        (_, Some(parts)) if is_multipart_md5(etag) => multipart_etag(parts),
        _ => return Check::NeedReadBack,
    };
    if bare(etag) == expected {
        Check::Match
    } else {
        Check::Mismatch(format!("content differs (target ETag {etag}, expected \"{expected}\")"))
    }
}

/// The verdict after reading the copy back: its part digests against those of what was
/// written (or of the source, read the same way).
pub fn check_read_back(source: &[Md5Sum], target: &[Md5Sum]) -> Check {
    if source == target {
        Check::Match
    } else {
        Check::Mismatch("content differs (read back)".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn written(data: &[u8]) -> Written {
        Written {
            size: data.len() as u64,
            md5: Some(md5_of(data)),
            hashed: true,
            parts: None,
            mtime: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5)),
            posix: PosixAttrs::new(0o100644, 1000, 1000),
        }
    }

    fn stored(w: &Written, etag: Option<String>) -> Stored {
        Stored {
            size: w.size,
            etag,
            mtime: w.mtime,
            posix: w.posix,
        }
    }

    #[test]
    fn etag_forms() {
        assert!(is_plain_md5("\"d41d8cd98f00b204e9800998ecf8427e\""));
        assert!(is_plain_md5("D41D8CD98F00B204E9800998ECF8427E"));
        assert!(!is_plain_md5("\"d41d8cd98f00b204e9800998ecf8427e-2\""));
        assert!(!is_plain_md5("\"5-18c-2b3\"")); // local backend
        assert!(is_multipart_md5("\"d41d8cd98f00b204e9800998ecf8427e-12\""));
        assert!(!is_multipart_md5("\"d41d8cd98f00b204e9800998ecf8427e-\""));
        assert!(!is_multipart_md5("\"5-18c-2b3\""));
    }

    #[test]
    fn multipart_etag_is_md5_of_part_md5s() {
        // Known value: two parts "a" and "b".
        let parts = [md5_of(b"a"), md5_of(b"b")];
        let mut concat = Vec::new();
        concat.extend_from_slice(&parts[0]);
        concat.extend_from_slice(&parts[1]);
        assert_eq!(multipart_etag(&parts), format!("{}-2", hex(&md5_of(&concat))));
        assert_eq!(hex(&md5_of(b"")), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn single_put_matches_by_md5() {
        let w = written(b"hello");
        let good = stored(&w, Some(format!("\"{}\"", hex(&md5_of(b"hello")))));
        assert_eq!(check(&w, None, &good), Check::Match);
        let bad = stored(&w, Some(format!("\"{}\"", hex(&md5_of(b"hellp")))));
        assert!(matches!(check(&w, None, &bad), Check::Mismatch(m) if m.contains("content differs")));
    }

    #[test]
    fn multipart_matches_by_part_md5s() {
        let mut w = written(b"abc");
        w.md5 = None;
        w.parts = Some(vec![md5_of(b"ab"), md5_of(b"c")]);
        let etag = multipart_etag(&[md5_of(b"ab"), md5_of(b"c")]);
        assert_eq!(check(&w, None, &stored(&w, Some(format!("\"{etag}\"")))), Check::Match);
        let other = multipart_etag(&[md5_of(b"ab"), md5_of(b"d")]);
        assert!(matches!(check(&w, None, &stored(&w, Some(other))), Check::Mismatch(_)));
        // A plain ETag for a multipart write (a provider that re-hashes): read back.
        let plain = hex(&md5_of(b"abc"));
        assert_eq!(check(&w, None, &stored(&w, Some(plain))), Check::NeedReadBack);
    }

    #[test]
    fn unknown_etags_need_a_read_back() {
        let w = written(b"x");
        assert_eq!(
            check(&w, None, &stored(&w, Some("\"1-2-3\"".into()))),
            Check::NeedReadBack
        );
        assert_eq!(check(&w, None, &stored(&w, None)), Check::NeedReadBack);
        assert_eq!(check_read_back(&[md5_of(b"x")], &[md5_of(b"x")]), Check::Match);
        assert!(matches!(
            check_read_back(&[md5_of(b"x")], &[md5_of(b"y")]),
            Check::Mismatch(_)
        ));
    }

    #[test]
    fn size_and_metadata_are_checked_first() {
        let w = written(b"hello");
        let etag = Some(hex(&md5_of(b"hello")));
        let mut s = stored(&w, etag.clone());
        s.size = 4;
        assert!(matches!(check(&w, None, &s), Check::Mismatch(m) if m.contains("size")));
        let mut s = stored(&w, etag.clone());
        s.mtime = None;
        assert!(matches!(check(&w, None, &s), Check::Mismatch(m) if m.contains("mtime")));
        let mut s = stored(&w, etag.clone());
        s.posix = PosixAttrs::new(0o100600, 1000, 1000);
        assert!(matches!(check(&w, None, &s), Check::Mismatch(m) if m.contains("mode")));
        // A target that keeps no POSIX attributes is not a mismatch.
        let mut s = stored(&w, etag);
        s.posix = PosixAttrs::default();
        assert_eq!(check(&w, None, &s), Check::Match);
    }

    #[test]
    fn etag_md5_parses_plain_md5s_only() {
        let d = md5_of(b"hello");
        assert_eq!(etag_md5(&format!("\"{}\"", hex(&d).to_uppercase())), Some(d));
        assert_eq!(etag_md5(&format!("{}-2", hex(&d))), None);
        assert_eq!(etag_md5("\"5-18c-2b3\""), None);
    }

    #[test]
    fn hashing_stops_only_with_a_source_md5_and_a_target_shown_to_report_md5s() {
        let d = md5_of(b"x");
        assert!(must_hash(None, true, false), "nothing to compare the target with");
        assert!(must_hash(Some(&d), false, false), "target not shown to report MD5s yet");
        assert!(must_hash(Some(&d), true, true), "a second attempt hashes");
        assert!(!must_hash(Some(&d), true, false));
    }

    #[test]
    fn only_a_hashed_copy_matched_by_its_digest_shows_md5_etags() {
        let w = written(b"hello");
        let good = stored(&w, Some(format!("\"{}\"", hex(&md5_of(b"hello")))));
        assert!(shows_md5_etags(&w, &good, &Check::Match));
        assert!(!shows_md5_etags(&w, &good, &Check::NeedReadBack));
        // Matched by a read-back: the ETag is no MD5.
        let local = stored(&w, Some("\"5-18c-2b3\"".into()));
        assert!(!shows_md5_etags(&w, &local, &Check::Match));
        // Not hashed here: the ETag equal to the source's proves nothing about the form.
        let mut unhashed = w.clone();
        unhashed.hashed = false;
        assert!(!shows_md5_etags(&unhashed, &good, &Check::Match));
    }

    #[test]
    fn an_unhashed_copy_is_judged_by_the_source_md5() {
        // The source states MD5("hello"); the copy was not hashed here.
        let mut w = written(b"hello");
        w.hashed = false;
        let src = format!("\"{}\"", hex(&md5_of(b"hello")));
        let same = stored(&w, Some(src.clone()));
        assert_eq!(check(&w, Some(&src), &same), Check::Match);
        let other = stored(&w, Some(format!("\"{}\"", hex(&md5_of(b"hellp")))));
        assert!(matches!(check(&w, Some(&src), &other), Check::Mismatch(m) if m.contains("content differs")));
        // A target without MD5 ETags: read back, compared with the source's digest.
        assert_eq!(check(&w, Some(&src), &stored(&w, None)), Check::NeedReadBack);
    }

    #[test]
    fn a_bad_source_read_is_caught_by_the_source_etag() {
        let w = written(b"hello");
        let s = stored(&w, Some(hex(&md5_of(b"hello"))));
        let src = format!("\"{}\"", hex(&md5_of(b"HELLO")));
        assert!(matches!(check(&w, Some(&src), &s), Check::Mismatch(m) if m.contains("source")));
        // A multipart source ETag says nothing about the whole.
        assert_eq!(
            check(&w, Some("\"0123456789abcdef0123456789abcdef-3\""), &s),
            Check::Match
        );
    }
}
