//! The one definition of a valid object key, relative to a tenant's prefix.
//!
//! A key is one or more *segments* joined by `/`, optionally ending in `/` (a directory
//! marker). A segment is never empty, `.` or `..`, and never holds NUL or `\` (some gateways and
//! path normalisers read a backslash as `/`). So no key can name anything outside the prefix it
//! is joined to, on any backend: the tenant jail (`backend::prefix`), the local backend (a key
//! is a path below its root) and the names shown in directories (`namespace::name`) all apply
//! these rules through [`ValidKey`] and [`is_valid_segment`] instead of keeping copies that
//! must agree.
//!
//! Not part of the rules: the length of a segment. Object stores accept long segments; only a
//! *name* shown by the kernel is limited to 255 bytes (`namespace::name::NAME_MAX`).

use std::fmt;

/// Why a string is not a valid key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The empty string, or only `/`.
    #[error("empty key")]
    Empty,
    /// Starts with `/`.
    #[error("absolute key")]
    Absolute,
    /// Holds an empty segment (`a//b`).
    #[error("empty segment")]
    EmptySegment,
    /// Holds a `.` or `..` segment.
    #[error("`.` or `..` segment")]
    DotSegment,
    /// Holds NUL or `\`.
    #[error("NUL or backslash")]
    Forbidden,
}

/// Why `seg` cannot be one segment of a key, if it cannot.
fn check_segment(seg: &str) -> Result<(), KeyError> {
    if seg.is_empty() {
        Err(KeyError::EmptySegment)
    } else if seg == "." || seg == ".." {
        Err(KeyError::DotSegment)
    } else if seg.contains(['\0', '\\']) {
        Err(KeyError::Forbidden)
    } else {
        Ok(())
    }
}

/// Whether `seg` can be one segment of a key (a `/` in it makes it two).
pub fn is_valid_segment(seg: &str) -> bool {
    !seg.contains('/') && check_segment(seg).is_ok()
}

/// The lower-case extension of the last segment of a key or name (`None` without one;
/// `.bashrc` has none). The one definition the extension rules and the Content-Type guess
/// share, so a name is never one type to the limits and another to the headers.
pub fn extension(key: &str) -> Option<String> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// A key that passed the rules of this module; only [`ValidKey::parse`] makes one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValidKey<'a>(&'a str);

impl<'a> ValidKey<'a> {
    /// Check `key` against the rules (see the module docs).
    pub fn parse(key: &'a str) -> Result<Self, KeyError> {
        if key.starts_with('/') {
            return Err(KeyError::Absolute);
        }
        let body = key.strip_suffix('/').unwrap_or(key);
        if body.is_empty() {
            return Err(KeyError::Empty);
        }
        body.split('/').try_for_each(check_segment)?;
        Ok(Self(key))
    }

    /// The key as given.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Its segments, in order (a directory marker's trailing `/` adds none).
    pub fn segments(&self) -> impl Iterator<Item = &'a str> {
        self.0.strip_suffix('/').unwrap_or(self.0).split('/')
    }

    /// Whether it is a directory marker (ends in `/`).
    pub fn is_dir_marker(&self) -> bool {
        self.0.ends_with('/')
    }
}

impl fmt::Debug for ValidKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Escaped, like every key in logs: a key holding a newline cannot forge a log line.
        write!(f, "ValidKey({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_that_could_leave_a_prefix_are_refused_with_their_reason() {
        for (k, why) in [
            ("", KeyError::Empty),
            ("/", KeyError::Absolute),
            ("/abs", KeyError::Absolute),
            ("..", KeyError::DotSegment),
            ("a/../b", KeyError::DotSegment),
            ("./a", KeyError::DotSegment),
            ("a/.", KeyError::DotSegment),
            ("a//b", KeyError::EmptySegment),
            ("a//", KeyError::EmptySegment),
            ("a\0b", KeyError::Forbidden),
            ("a\\..\\b", KeyError::Forbidden),
        ] {
            assert_eq!(ValidKey::parse(k), Err(why), "{k:?}");
        }
        for k in ["a", "a/b", "dir/", "...", "a/.b/c..", "x y/é", &"l".repeat(1000)] {
            assert_eq!(ValidKey::parse(k).map(|v| v.as_str()), Ok(k));
        }
        let k = ValidKey::parse("a/b/").unwrap();
        assert!(k.is_dir_marker());
        assert_eq!(k.segments().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(format!("{:?}", ValidKey::parse("a\nb").unwrap()), "ValidKey(\"a\\nb\")");
    }

    #[test]
    fn segments() {
        for s in ["", ".", "..", "a/b", "a\0b", "a\\b"] {
            assert!(!is_valid_segment(s), "{s:?}");
        }
        for s in ["a", "...", ".a", "a b"] {
            assert!(is_valid_segment(s), "{s:?}");
        }
    }

    proptest! {
        /// A key is valid exactly when each of its segments is, and joining valid segments
        /// always gives a valid key: the two rules cannot disagree.
        #[test]
        fn a_key_is_valid_iff_its_segments_are(segs in prop::collection::vec("[a-c./\\\\\0]{0,3}", 1..5), marker in any::<bool>()) {
            let mut key = segs.join("/");
            if marker {
                key.push('/');
            }
            let valid = !key.starts_with('/') && {
                let body = key.strip_suffix('/').unwrap_or(&key);
                !body.is_empty() && body.split('/').all(is_valid_segment)
            };
            prop_assert_eq!(ValidKey::parse(&key).is_ok(), valid);
            if let Ok(k) = ValidKey::parse(&key) {
                // Nothing a path normaliser would resolve upwards.
                prop_assert!(k.segments().all(|s| s != ".." && s != "." && !s.is_empty()));
            }
        }
    }
}
