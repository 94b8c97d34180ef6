//! Mapping between object keys and file names.
//!
//! A directory entry name is one key segment. Keys that cannot be shown as a name (empty,
//! `.`, `..`, containing NUL or `\`, longer than 255 bytes) are skipped by listings, never shown in
//! a mangled form, so no name can resolve to a different key than the one it came from.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Longest name Linux accepts for one path component.
pub const NAME_MAX: usize = 255;

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Longer than [`NAME_MAX`] bytes.
    #[error("name longer than 255 bytes")]
    TooLong,
    /// Empty, `.`, `..`, or containing `/`, `\`, NUL or invalid UTF-8.
    #[error("name cannot be stored as an object key")]
    Invalid,
}

/// Validate a name given by the kernel (create, mkdir, rename target, lookup).
pub fn validate_name(name: &OsStr) -> Result<&str, NameError> {
    if name.as_bytes().len() > NAME_MAX {
        return Err(NameError::TooLong);
    }
    let s = name.to_str().ok_or(NameError::Invalid)?;
    if is_valid_segment(s) {
        Ok(s)
    } else {
        Err(NameError::Invalid)
    }
}

/// Whether `s` can be shown as one directory entry: one valid key segment (the rules of
/// [`crate::key`], shared with the tenant jail, so a listed name can always be opened) that
/// the kernel accepts as a name (at most [`NAME_MAX`] bytes).
pub fn is_valid_segment(s: &str) -> bool {
    s.len() <= NAME_MAX && crate::key::is_valid_segment(s)
}

/// Key of child `name` under directory key `dir` (`""` is a tenant root).
pub fn child_key(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Listing prefix for the children of directory key `dir`.
pub fn dir_prefix(dir: &str) -> String {
    if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    }
}

/// The entry name a listed key or common prefix contributes under `prefix`, if any.
///
/// `rel` is the key with the listing prefix stripped. A common prefix `name/` yields `name`;
/// the directory's own marker (`rel` empty) and anything still containing `/` yield `None`.
pub fn entry_name(rel: &str) -> Option<&str> {
    let name = rel.strip_suffix('/').unwrap_or(rel);
    is_valid_segment(name).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_names_are_refused() {
        for n in ["", ".", "..", "a/b", "a\0b", "a\\b"] {
            assert_eq!(validate_name(OsStr::new(n)), Err(NameError::Invalid), "{n:?}");
        }
        assert_eq!(validate_name(OsStr::new(&"x".repeat(256))), Err(NameError::TooLong));
        assert_eq!(validate_name(OsStr::new(&"x".repeat(255))).map(str::len), Ok(255));
        assert_eq!(entry_name(""), None);
        assert_eq!(entry_name("/"), None);
        assert_eq!(entry_name("a/b"), None);
        assert_eq!(entry_name("d/"), Some("d"));
        assert_eq!(entry_name("..//"), None);
    }

    proptest! {
        /// Whatever a bucket holds, a shown name maps back to a key directly under the
        /// listed directory: never a parent, never a sibling tree.
        #[test]
        fn shown_names_round_trip(dir in "[a-z]{0,3}(/[a-z]{1,3}){0,2}", rel in "\\PC{0,12}") {
            if let Some(name) = entry_name(&rel) {
                let key = child_key(&dir, name);
                prop_assert!(key.starts_with(&dir_prefix(&dir)));
                prop_assert_eq!(&key[dir_prefix(&dir).len()..], name);
                prop_assert!(!name.contains('/') && name != ".." && name != ".");
            }
        }
    }
}
