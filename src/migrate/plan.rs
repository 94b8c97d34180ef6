//! What a run must do: the pure diff of the source listing, the target listing and the
//! journal of earlier runs.
//!
//! An object is *identical* in the target, and skipped, when the target holds the same size
//! and either (a) the journal says this very source version (size, ETag, Last-Modified) was
//! copied and verified to the target version now there (size, ETag), or (b) both ETags are
//! plain MD5s and equal. (a) covers targets whose ETags are not comparable with the source's
//! (multipart uploads, the local backend) and metadata-only changes: rewriting a source
//! object's mtime changes its Last-Modified, so the journal no longer matches and it is copied
//! again. Everything else in the source is copied (new, or changed); target objects absent
//! from the source are *extraneous*.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::backend::ObjectMeta;

use super::verify::is_plain_md5;

/// An object version as a listing shows it, in the journal's terms.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Version {
    /// Size in bytes.
    pub size: u64,
    /// ETag as listed (quotes included), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Last-Modified in ms since the epoch, if listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_ms: Option<u64>,
}

impl Version {
    /// The version `meta` describes.
    pub fn of(meta: &ObjectMeta) -> Self {
        Self {
            size: meta.size,
            etag: meta.etag.as_ref().map(|e| e.as_str().to_owned()),
            modified_ms: meta.last_modified.and_then(ms),
        }
    }

    /// Whether the target object `dst`, as listed, is still this version (recorded from a
    /// HEAD after the copy). By ETag where the listing has one; where it has none (s3s-fs),
    /// by Last-Modified to the second (a HEAD reports whole seconds, a listing milliseconds).
    pub fn same_target(&self, dst: &ObjectMeta) -> bool {
        let bare = |e: &str| e.trim_matches('"').to_owned();
        if self.size != dst.size {
            return false;
        }
        match (&self.etag, &dst.etag) {
            (Some(a), Some(b)) => bare(a) == bare(b.as_str()),
            (_, None) => {
                let listed = dst.last_modified.and_then(ms).map(|m| m / 1000);
                listed.is_some() && listed == self.modified_ms.map(|m| m / 1000)
            }
            (None, Some(_)) => false,
        }
    }
}

fn ms(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
}

/// A verified copy, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The source version that was copied.
    pub source: Version,
    /// The target version it became.
    pub target: Version,
}

/// Why an object is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Not in the target.
    New,
    /// In the target, but not known to be identical.
    Changed,
}

/// The decisions of one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Objects to copy, in key order.
    pub copy: Vec<(ObjectMeta, Reason)>,
    /// Objects identical in the target: `(key, size)`.
    pub skip: Vec<(String, u64)>,
    /// Target objects with no source object: `(key, size)`.
    pub extraneous: Vec<(String, u64)>,
}

impl Plan {
    /// Bytes to copy.
    pub fn copy_bytes(&self) -> u64 {
        self.copy.iter().map(|(m, _)| m.size).sum()
    }
}

/// Whether the target's `dst` is known to hold `src`'s version (see the module docs).
pub fn identical(src: &ObjectMeta, dst: &ObjectMeta, journal: Option<&Verified>) -> bool {
    if src.size != dst.size {
        return false;
    }
    if let Some(j) = journal {
        if j.source == Version::of(src) && j.target.same_target(dst) {
            return true;
        }
    }
    match (&src.etag, &dst.etag) {
        (Some(a), Some(b)) => {
            is_plain_md5(a.as_str())
                && is_plain_md5(b.as_str())
                && a.as_str()
                    .trim_matches('"')
                    .eq_ignore_ascii_case(b.as_str().trim_matches('"'))
        }
        _ => false,
    }
}

/// Diff `source` against `target` (both keyed relative to their prefixes).
pub fn plan(source: &[ObjectMeta], target: &BTreeMap<String, ObjectMeta>, journal: &HashMap<String, Verified>) -> Plan {
    let mut out = Plan::default();
    let mut sorted: Vec<&ObjectMeta> = source.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    for src in sorted {
        match target.get(&src.key) {
            None => out.copy.push((src.clone(), Reason::New)),
            Some(dst) if identical(src, dst, journal.get(&src.key)) => out.skip.push((src.key.clone(), src.size)),
            Some(_) => out.copy.push((src.clone(), Reason::Changed)),
        }
    }
    let in_source: std::collections::HashSet<&str> = source.iter().map(|m| m.key.as_str()).collect();
    out.extraneous = target
        .values()
        .filter(|m| !in_source.contains(m.key.as_str()))
        .map(|m| (m.key.clone(), m.size))
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ETag;
    use std::time::Duration;

    fn obj(key: &str, size: u64, etag: &str, modified_s: u64) -> ObjectMeta {
        ObjectMeta::new(
            key,
            size,
            Some(UNIX_EPOCH + Duration::from_secs(modified_s)),
            Some(ETag::new(etag)),
        )
    }

    const MD5_A: &str = "\"0cc175b9c0f1b6a831c399e269772661\"";
    const MD5_B: &str = "\"92eb5ffee6ae2fec3ad71c777531578f\"";

    fn targets(v: &[ObjectMeta]) -> BTreeMap<String, ObjectMeta> {
        v.iter().map(|m| (m.key.clone(), m.clone())).collect()
    }

    #[test]
    fn new_identical_changed_and_extraneous() {
        let source = vec![
            obj("new", 1, MD5_A, 1),
            obj("same", 1, MD5_A, 1),
            obj("changed", 1, MD5_A, 1),
        ];
        let target = targets(&[
            obj("same", 1, MD5_A, 9),
            obj("changed", 1, MD5_B, 9),
            obj("old", 7, MD5_B, 9),
        ]);
        let p = plan(&source, &target, &HashMap::new());
        let copy: Vec<_> = p.copy.iter().map(|(m, r)| (m.key.as_str(), *r)).collect();
        assert_eq!(copy, vec![("changed", Reason::Changed), ("new", Reason::New)]);
        assert_eq!(p.skip, vec![("same".to_owned(), 1)]);
        assert_eq!(p.extraneous, vec![("old".to_owned(), 7)]);
        assert_eq!(p.copy_bytes(), 2);
    }

    #[test]
    fn incomparable_etags_are_identical_only_through_the_journal() {
        let src = obj("big", 10, "\"0cc175b9c0f1b6a831c399e269772661-2\"", 5);
        let dst = obj("big", 10, "\"a-b-c\"", 6); // local backend form
        assert!(!identical(&src, &dst, None));
        let j = Verified {
            source: Version::of(&src),
            target: Version::of(&dst),
        };
        assert!(identical(&src, &dst, Some(&j)));
        // The source was rewritten since (new Last-Modified, e.g. a touch): copy again.
        let touched = obj("big", 10, "\"0cc175b9c0f1b6a831c399e269772661-2\"", 7);
        assert!(!identical(&touched, &dst, Some(&j)));
        // The target was replaced since: copy again.
        let replaced = obj("big", 10, "\"a-b-d\"", 8);
        assert!(!identical(&src, &replaced, Some(&j)));
        // A listing without ETags: the recorded Last-Modified, to the second.
        let mut unlisted = dst.clone();
        unlisted.etag = None;
        unlisted.last_modified = Some(UNIX_EPOCH + Duration::from_millis(6_400));
        assert!(identical(&src, &unlisted, Some(&j)));
        unlisted.last_modified = Some(UNIX_EPOCH + Duration::from_millis(7_000));
        assert!(!identical(&src, &unlisted, Some(&j)));
        // Sizes differ: never identical.
        let mut shorter = dst.clone();
        shorter.size = 9;
        assert!(!identical(&src, &shorter, Some(&j)));
    }

    #[test]
    fn md5_etags_compare_without_quotes_or_case() {
        let a = obj("k", 1, MD5_A, 1);
        let b = obj("k", 1, &MD5_A.trim_matches('"').to_ascii_uppercase(), 2);
        assert!(identical(&a, &b, None));
    }
}
