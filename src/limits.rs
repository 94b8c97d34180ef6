//! Per-tenant platform limits: largest file, allowed and denied extensions, and a byte quota.
//!
//! Decisions are plain functions over plain state (no I/O), like `read/policy.rs`; the
//! filesystem calls them and turns a [`LimitError`] into an errno in `fs/error.rs`. They
//! police what is written through this mount, not writers that reach the bucket directly.
//!
//! Quota accounting: [`Usage`] holds the bytes stored as last counted from a listing, plus
//! the changes this mount made since (writes, truncates, deletes; a rename moves bytes and
//! changes nothing). Bytes written but not committed yet are counted too, per write session
//! through [`Usage::resize`], so two files growing at once cannot both pass the quota. A
//! recount replaces the stored figure; changes made while the listing ran may be counted
//! twice or not at all until the next recount (documented, bounded by `quota_recount`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The rules of one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitRules {
    /// Largest file size.
    pub max_file_size: Option<u64>,
    /// Bytes the tenant may hold.
    pub quota: Option<u64>,
    /// Only these lower-case extensions may be created (`None`: any).
    pub allowed_extensions: Option<Vec<String>>,
    /// These lower-case extensions may not be created.
    pub denied_extensions: Vec<String>,
}

/// A limit refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The file would exceed `max_file_size`.
    #[error("file size {size} exceeds the tenant's max_file_size {max}")]
    TooLarge {
        /// Size asked for.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The tenant would exceed its quota.
    #[error("tenant quota exceeded: {used} bytes used + {more} more > quota {quota}")]
    OverQuota {
        /// Bytes counted now.
        used: u64,
        /// Bytes the operation adds.
        more: u64,
        /// The quota.
        quota: u64,
    },
    /// The name's extension is refused.
    #[error("{name}: refused by the tenant's {rule}")]
    Extension {
        /// The file name.
        name: String,
        /// The rule that refused it (`denied_extensions = [..]` or `allowed_extensions = [..]`).
        rule: String,
    },
}

impl LimitRules {
    /// Whether writes are checked at all (a size limit or a quota); extension rules apply
    /// only when a name is made.
    pub fn limits_size(&self) -> bool {
        self.max_file_size.is_some() || self.quota.is_some()
    }

    /// Whether a file named `name` may be created.
    pub fn check_name(&self, name: &str) -> Result<(), LimitError> {
        let ext = crate::key::extension(name);
        let refuse = |rule: String| {
            Err(LimitError::Extension {
                name: name.to_owned(),
                rule,
            })
        };
        if let Some(e) = &ext {
            if self.denied_extensions.contains(e) {
                return refuse(format!("denied_extensions (contains {e:?})"));
            }
        }
        if let Some(allowed) = &self.allowed_extensions {
            if !ext.as_ref().is_some_and(|e| allowed.contains(e)) {
                return refuse(format!("allowed_extensions ({allowed:?})"));
            }
        }
        Ok(())
    }

    /// Whether a file may become `size` bytes long.
    pub fn check_size(&self, size: u64) -> Result<(), LimitError> {
        match self.max_file_size {
            Some(max) if size > max => Err(LimitError::TooLarge { size, max }),
            _ => Ok(()),
        }
    }
}

/// Bytes a tenant holds, as far as this mount knows (see the module doc).
#[derive(Debug, Default)]
pub struct Usage {
    state: Mutex<UsageState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct UsageState {
    /// Bytes stored: last count plus this mount's changes since. Signed: deletes of objects
    /// counted before a recount may briefly take it below the true figure.
    stored: i128,
    /// Whether a count has finished (before that, only `max_file_size` applies).
    counted: bool,
    /// When the last count finished.
    last_count: Option<Instant>,
}

impl Usage {
    fn lock(&self) -> std::sync::MutexGuard<'_, UsageState> {
        // Updated in single statements: a poisoned lock holds a consistent value.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes used now (0 until the first count finished).
    pub fn used(&self) -> u64 {
        u64::try_from(self.lock().stored.max(0)).unwrap_or(u64::MAX)
    }

    /// Whether the first count has finished.
    pub fn is_counted(&self) -> bool {
        self.lock().counted
    }

    /// A listing found `total` bytes; `pending` is what open sessions hold beyond the stored
    /// objects (still to be counted on top).
    pub fn set_counted(&self, total: u64, pending: i128) {
        let mut s = self.lock();
        s.stored = i128::from(total) + pending;
        s.counted = true;
        s.last_count = Some(Instant::now());
    }

    /// Whether a count is due: none yet, or the last is `every` old.
    pub fn count_due(&self, every: Duration) -> bool {
        self.lock().last_count.is_none_or(|t| t.elapsed() >= every)
    }

    /// A file goes from `from` to `to` bytes. Growth is refused past `quota` (once counted);
    /// shrinking always passes.
    pub fn resize(&self, quota: Option<u64>, from: u64, to: u64) -> Result<(), LimitError> {
        let mut s = self.lock();
        if to > from {
            let more = to - from;
            if let Some(quota) = quota.filter(|_| s.counted) {
                let used = u64::try_from(s.stored.max(0)).unwrap_or(u64::MAX);
                if used.saturating_add(more) > quota {
                    return Err(LimitError::OverQuota { used, more, quota });
                }
            }
        }
        s.stored += i128::from(to) - i128::from(from);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> LimitRules {
        LimitRules {
            max_file_size: Some(100),
            quota: Some(1000),
            allowed_extensions: Some(vec!["mp4".into(), "jpg".into()]),
            denied_extensions: vec!["exe".into()],
        }
    }

    #[test]
    fn extension_rules_name_the_rule() {
        let r = rules();
        assert!(r.check_name("a.MP4").is_ok());
        let e = r.check_name("x.exe").unwrap_err().to_string();
        assert!(e.contains("denied_extensions"), "{e}");
        let e = r.check_name("notes.txt").unwrap_err().to_string();
        assert!(e.contains("allowed_extensions"), "{e}");
        assert!(r.check_name("Makefile").is_err(), "no extension is not an allowed one");
        assert!(LimitRules::default().check_name("Makefile").is_ok());
    }

    #[test]
    fn file_size_limit_is_inclusive() {
        assert!(rules().check_size(100).is_ok());
        assert_eq!(
            rules().check_size(101),
            Err(LimitError::TooLarge { size: 101, max: 100 })
        );
    }

    #[test]
    fn quota_counts_growth_and_shrinking_and_waits_for_the_first_count() {
        let u = Usage::default();
        let q = Some(1000);
        // Before the count, growth passes and is remembered.
        u.resize(q, 0, 5000).unwrap();
        u.set_counted(900, 0);
        assert_eq!(u.used(), 900);
        u.resize(q, 0, 100).unwrap();
        assert_eq!(
            u.resize(q, 0, 1),
            Err(LimitError::OverQuota {
                used: 1000,
                more: 1,
                quota: 1000
            })
        );
        // A rewrite that does not grow passes even at the quota; a delete frees.
        u.resize(q, 100, 50).unwrap();
        u.resize(q, 50, 0).unwrap();
        assert_eq!(u.used(), 900);
        u.resize(None, 0, 10_000).unwrap();
        assert_eq!(u.used(), 10_900);
    }
}
