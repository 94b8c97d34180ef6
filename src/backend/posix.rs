//! POSIX attributes stored with an object, in the form s3fs writes and reads them.
//!
//! s3fs keeps a file's `st_mode` (file type bits included), owner and group in S3 user
//! metadata `x-amz-meta-mode`, `x-amz-meta-uid` and `x-amz-meta-gid`, next to
//! `x-amz-meta-mtime` (see [`super::mtime`]). It writes all three as decimal numbers and
//! reads the mode with `strtol(s, NULL, 0)`, so `0644`-style octal with a leading zero is
//! accepted too; we do the same, so a bucket written by either tool shows the same modes,
//! owners and symlinks through the other. Objects without these headers have no stored
//! attributes ([`PosixAttrs::default`]) and the filesystem applies its defaults.
//!
//! A symlink is an object whose body is the target and whose mode carries `S_IFLNK`; a FIFO
//! or a socket is an empty object whose mode carries `S_IFIFO` or `S_IFSOCK`.

use std::collections::HashMap;
use std::time::SystemTime;

use super::mtime::{format_mtime, parse_mtime, MTIME_METADATA_KEY};

/// User-metadata name (without `x-amz-meta-`) of the mode.
pub const MODE_METADATA_KEY: &str = "mode";
/// User-metadata name of the owner's uid.
pub const UID_METADATA_KEY: &str = "uid";
/// User-metadata name of the group's gid.
pub const GID_METADATA_KEY: &str = "gid";

/// Mode, owner and group stored with an object; `None` where nothing (valid) is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PosixAttrs {
    /// `st_mode`: file type bits (`S_IFMT`) and permission bits (`0o7777`).
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
}

impl PosixAttrs {
    /// All three set.
    pub fn new(mode: u32, uid: u32, gid: u32) -> Self {
        Self {
            mode: Some(mode),
            uid: Some(uid),
            gid: Some(gid),
        }
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.uid.is_none() && self.gid.is_none()
    }

    /// `self` with every field `other` sets replaced by `other`'s.
    pub fn overlaid(self, other: PosixAttrs) -> Self {
        Self {
            mode: other.mode.or(self.mode),
            uid: other.uid.or(self.uid),
            gid: other.gid.or(self.gid),
        }
    }

    /// The file type bits of the stored mode (`0` when none is stored).
    pub fn file_type(&self) -> u32 {
        self.mode.map_or(0, |m| m & libc::S_IFMT)
    }
}

/// A mode as s3fs parses it: decimal, or octal with a leading `0`, or hex with `0x`.
/// `None` for anything else or a value above 32 bits.
pub fn parse_mode(s: &str) -> Option<u32> {
    let s = s.trim();
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// A uid or gid: decimal only, as s3fs writes and reads them.
pub fn parse_id(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn find<'a>(metadata: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    // Header names are case-insensitive and servers differ in how they case them.
    metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The stored mtime and POSIX attributes in a user-metadata map (names without
/// `x-amz-meta-`). Foreign or corrupt values are ignored, field by field.
pub fn from_metadata(metadata: &HashMap<String, String>) -> (Option<SystemTime>, PosixAttrs) {
    let mtime = find(metadata, MTIME_METADATA_KEY).and_then(parse_mtime);
    let posix = PosixAttrs {
        mode: find(metadata, MODE_METADATA_KEY).and_then(parse_mode),
        uid: find(metadata, UID_METADATA_KEY).and_then(parse_id),
        gid: find(metadata, GID_METADATA_KEY).and_then(parse_id),
    };
    (mtime, posix)
}

/// Write `mtime` and the set fields of `posix` into `metadata`, replacing any stored value
/// of the same name in any case. Fields not given are left as they are.
pub fn merge_into(metadata: &mut HashMap<String, String>, mtime: Option<SystemTime>, posix: PosixAttrs) {
    let mut set = |name: &str, value: String| {
        metadata.retain(|k, _| !k.eq_ignore_ascii_case(name));
        metadata.insert(name.to_owned(), value);
    };
    if let Some(t) = mtime {
        set(MTIME_METADATA_KEY, format_mtime(t));
    }
    if let Some(m) = posix.mode {
        set(MODE_METADATA_KEY, m.to_string());
    }
    if let Some(u) = posix.uid {
        set(UID_METADATA_KEY, u.to_string());
    }
    if let Some(g) = posix.gid {
        set(GID_METADATA_KEY, g.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};
    use test_case::test_case;

    #[test_case("33188", Some(0o100644); "decimal as s3fs writes it")]
    #[test_case("0100755", Some(0o100755); "octal with a leading zero")]
    #[test_case("0x41ed", Some(0o40755); "hex")]
    #[test_case(" 41471 ", Some(0o120777); "symlink with spaces")]
    #[test_case("0", Some(0); "zero")]
    #[test_case("", None; "empty")]
    #[test_case("rwxr-xr-x", None; "symbolic")]
    #[test_case("099", None; "bad octal")]
    #[test_case("99999999999", None; "overflow")]
    fn modes(s: &str, want: Option<u32>) {
        assert_eq!(parse_mode(s), want);
    }

    #[test]
    fn ids_are_decimal() {
        assert_eq!(parse_id("1000"), Some(1000));
        assert_eq!(parse_id("-1"), None);
        assert_eq!(parse_id("0x10"), None);
        assert_eq!(parse_id("4294967296"), None);
    }

    #[test]
    fn metadata_round_trips_and_merges_in_any_case() {
        let t = UNIX_EPOCH + Duration::new(4_102_444_800, 5); // 2100, past 2038
        let mut m = HashMap::from([
            ("Mode".to_owned(), "1".to_owned()),
            ("content-note".to_owned(), "kept".to_owned()),
        ]);
        merge_into(&mut m, Some(t), PosixAttrs::new(0o100640, 1000, 100));
        assert_eq!(m.get("mode").map(String::as_str), Some("33184"));
        assert!(!m.contains_key("Mode"));
        assert_eq!(m.get("content-note").map(String::as_str), Some("kept"));
        let (mtime, posix) = from_metadata(&m);
        assert_eq!(mtime, Some(t));
        assert_eq!(posix, PosixAttrs::new(0o100640, 1000, 100));
        // A partial update keeps what it does not name.
        merge_into(
            &mut m,
            None,
            PosixAttrs {
                uid: Some(7),
                ..Default::default()
            },
        );
        assert_eq!(from_metadata(&m), (Some(t), PosixAttrs::new(0o100640, 7, 100)));
        // Nothing stored: nothing found.
        assert_eq!(from_metadata(&HashMap::new()), (None, PosixAttrs::default()));
    }
}
