//! Per-tenant platform limits: largest file, allowed and denied extensions, and a byte quota.
//!
//! Decisions are plain functions over plain state (no I/O), like `read/policy.rs`; the
//! filesystem calls them and turns a [`LimitError`] into an errno in `fs/error.rs`. They
//! police what is written through this mount, not writers that reach the bucket directly.
//!
//! Quota accounting: [`Usage`] holds the bytes stored as last counted from a listing, plus
//! the changes this mount made since (writes, truncates, deletes; a rename moves bytes and
//! changes nothing). Bytes written but not committed yet are counted too, per write session
//! through [`Usage::resize`], so two files growing at once cannot both pass the quota.
//!
//! A recount is exact relative to this mount's own changes, including those made while its
//! listing runs ([`CountJournal`]). Listings come in key order, so at any moment the keys up
//! to the last one listed (the cursor) have been seen, the others not yet. Every change names
//! its key and is recorded *before* the bucket sees it: a change to a key the listing has
//! passed was not seen by it, and its delta is added to the count; a key the listing has not
//! reached yet (and every key held open when the count began: open writers, files queued for
//! write-back) counts, at the end, as what this mount holds for it, whatever the listing
//! found. Objects written by other clients are exact from the next count on.

use std::collections::HashMap;
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

/// This mount's changes while a count's listing runs, to reconcile the count with them (see
/// the module doc). A pure state machine: the filesystem feeds it listing pages and changes.
#[derive(Debug, Default, Clone)]
pub struct CountJournal {
    /// Bytes listed so far.
    listed: u64,
    /// The greatest key listed so far.
    cursor: Option<String>,
    /// Keys changed (or held open) before the listing reached them.
    ahead: HashMap<String, Ahead>,
    /// Net change to keys the listing had already passed (it saw them as before).
    behind: i128,
}

/// A key the listing had not reached when this mount changed it.
#[derive(Debug, Default, Clone, Copy)]
struct Ahead {
    /// Bytes the listing found under it (0: absent or not reached yet).
    listed: u64,
    /// Bytes this mount holds for it now.
    now: u64,
}

impl CountJournal {
    /// A count begins while this mount holds `open` (key, bytes counted for it): files open
    /// for writing and files queued for write-back, whose bytes the bucket may not have yet.
    pub fn new(open: impl IntoIterator<Item = (String, u64)>) -> Self {
        let mut j = Self::default();
        for (key, size) in open {
            j.hold(&key, size);
        }
        j
    }

    /// This mount holds `size` bytes for `key` (an open file), unless a change to it is
    /// already recorded (that one is newer).
    pub fn hold(&mut self, key: &str, size: u64) {
        if !self.ahead.contains_key(key) && !self.passed(key) {
            self.ahead.insert(key.to_owned(), Ahead { listed: 0, now: size });
        }
    }

    fn passed(&self, key: &str) -> bool {
        self.cursor.as_deref().is_some_and(|c| key <= c)
    }

    /// This mount is about to change `key` from `from` to `to` bytes (call before the bucket
    /// sees the change; `from == to` marks a key about to change, e.g. before a delete).
    pub fn change(&mut self, key: &str, from: u64, to: u64) {
        if let Some(a) = self.ahead.get_mut(key) {
            a.now = to;
        } else if self.passed(key) {
            self.behind += i128::from(to) - i128::from(from);
        } else {
            self.ahead.insert(key.to_owned(), Ahead { listed: 0, now: to });
        }
    }

    /// The next page of the listing: `(key, size)` in key order.
    pub fn page<'a>(&mut self, objects: impl IntoIterator<Item = (&'a str, u64)>) {
        for (key, size) in objects {
            self.listed = self.listed.saturating_add(size);
            if let Some(a) = self.ahead.get_mut(key) {
                a.listed = a.listed.saturating_add(size);
            }
            if !self.passed(key) {
                self.cursor = Some(key.to_owned());
            }
        }
    }

    /// The count, reconciled: listed bytes, with each key this mount changed ahead of the
    /// listing counted as it holds it now, plus the changes behind it.
    pub fn total(&self) -> i128 {
        reconcile(self.listed, self.behind, self.ahead.values().map(|a| (a.listed, a.now)))
    }
}

/// The reconciliation rule: `listed` bytes, plus `behind` (changes to keys already listed when
/// they were made), with every `(listed, now)` key reached after its change counted as `now`.
pub fn reconcile(listed: u64, behind: i128, ahead: impl IntoIterator<Item = (u64, u64)>) -> i128 {
    ahead.into_iter().fold(i128::from(listed) + behind, |n, (l, now)| {
        n - i128::from(l) + i128::from(now)
    })
}

/// Bytes a tenant holds, as far as this mount knows (see the module doc).
#[derive(Debug, Default)]
pub struct Usage {
    state: Mutex<UsageState>,
}

#[derive(Debug, Default, Clone)]
struct UsageState {
    /// Bytes stored: last count plus this mount's changes since. Signed: deletes of objects
    /// counted before a recount may briefly take it below the true figure.
    stored: i128,
    /// Whether a count has finished (before that, only `max_file_size` applies).
    counted: bool,
    /// When the last count finished.
    last_count: Option<Instant>,
    /// The count whose listing runs now.
    counting: Option<CountJournal>,
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
    /// objects (still to be counted on top). For a count that ran while nothing changed;
    /// otherwise see [`Usage::begin_count`].
    pub fn set_counted(&self, total: u64, pending: i128) {
        let mut s = self.lock();
        s.stored = i128::from(total) + pending;
        s.counted = true;
        s.last_count = Some(Instant::now());
        s.counting = None;
    }

    /// A count's listing begins, while this mount holds `open` (see [`CountJournal::new`]).
    /// Changes are recorded from here on, so `open` may be gathered after this call: a
    /// change recorded meanwhile wins over what was gathered (see [`CountJournal::hold`]).
    pub fn begin_count(&self, open: impl IntoIterator<Item = (String, u64)>) {
        self.lock().counting = Some(CountJournal::new(open));
    }

    /// During a count: this mount holds `size` bytes for `key` (see [`CountJournal::hold`]).
    pub fn hold(&self, key: &str, size: u64) {
        if let Some(j) = self.lock().counting.as_mut() {
            j.hold(key, size);
        }
    }

    /// The count's next listing page, `(key, size)` in key order.
    pub fn count_page<'a>(&self, objects: impl IntoIterator<Item = (&'a str, u64)>) {
        if let Some(j) = self.lock().counting.as_mut() {
            j.page(objects);
        }
    }

    /// The count's listing ended: the usage becomes the reconciled count. `None` when no
    /// count was running (another one replaced or dropped it).
    pub fn finish_count(&self) -> Option<u64> {
        let mut s = self.lock();
        let j = s.counting.take()?;
        s.stored = j.total();
        s.counted = true;
        s.last_count = Some(Instant::now());
        Some(u64::try_from(s.stored.max(0)).unwrap_or(u64::MAX))
    }

    /// The count's listing failed: forget it (the usage stays as it was).
    pub fn abandon_count(&self) {
        self.lock().counting = None;
    }

    /// Whether a count is due: none yet, or the last is `every` old.
    pub fn count_due(&self, every: Duration) -> bool {
        self.lock().last_count.is_none_or(|t| t.elapsed() >= every)
    }

    /// This mount is about to change `key` from `from` to `to` bytes without changing the
    /// usage (a rename moves bytes; `from == to` before a delete): only a running count needs
    /// to know. Call before the bucket sees the change.
    pub fn note(&self, key: &str, from: u64, to: u64) {
        if let Some(j) = self.lock().counting.as_mut() {
            j.change(key, from, to);
        }
    }

    /// The file `key` goes from `from` to `to` bytes. Growth is refused past `quota` (once
    /// counted); shrinking always passes.
    pub fn resize(&self, quota: Option<u64>, key: &str, from: u64, to: u64) -> Result<(), LimitError> {
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
        if let Some(j) = s.counting.as_mut() {
            j.change(key, from, to);
        }
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
        u.resize(q, "a", 0, 5000).unwrap();
        u.set_counted(900, 0);
        assert_eq!(u.used(), 900);
        u.resize(q, "b", 0, 100).unwrap();
        assert_eq!(
            u.resize(q, "c", 0, 1),
            Err(LimitError::OverQuota {
                used: 1000,
                more: 1,
                quota: 1000
            })
        );
        // A rewrite that does not grow passes even at the quota; a delete frees.
        u.resize(q, "b", 100, 50).unwrap();
        u.resize(q, "b", 50, 0).unwrap();
        assert_eq!(u.used(), 900);
        u.resize(None, "d", 0, 10_000).unwrap();
        assert_eq!(u.used(), 10_900);
    }

    #[test]
    fn reconciliation_counts_changed_keys_as_held_and_adds_changes_behind() {
        assert_eq!(reconcile(100, 0, []), 100);
        // Listed 100 of which key x 30; this mount holds 50 for x: 120. Behind: -10.
        assert_eq!(reconcile(100, -10, [(30, 50)]), 110);
        assert_eq!(reconcile(100, 0, [(0, 7), (40, 0)]), 67);
    }

    /// Bucket: a=10, c=20, e=30 (60). While the listing runs: `b` is written (7 bytes,
    /// before the listing reaches it: seen or not, it counts once), `a` is deleted after the
    /// listing passed it (subtracted), `e` is deleted before the listing reaches it (its
    /// page may or may not show it: either way it counts 0), and an open file `d` grew from
    /// 0 to 5 before the count began (not in the bucket yet: counted as held).
    #[test]
    fn a_count_is_exact_whatever_the_listing_saw_of_changes_made_while_it_ran() {
        for e_seen in [false, true] {
            for b_seen in [false, true] {
                let mut j = CountJournal::new([("d".to_owned(), 5)]);
                j.change("b", 0, 7);
                j.page([("a", 10)]);
                j.change("a", 10, 10); // marked before the delete...
                j.change("a", 10, 0); // ...and counted after it
                j.change("e", 30, 30);
                j.change("e", 30, 0);
                let mut page = vec![];
                if b_seen {
                    page.push(("b", 7));
                }
                page.push(("c", 20));
                if e_seen {
                    page.push(("e", 30));
                }
                j.page(page);
                assert_eq!(j.total(), 7 + 20 + 5, "b seen: {b_seen}, e seen: {e_seen}");
            }
        }
    }

    #[test]
    fn a_held_size_never_replaces_a_recorded_change() {
        let mut j = CountJournal::new([]);
        j.change("k", 10, 20);
        j.hold("k", 10); // gathered before the change, recorded after it
        j.hold("h", 3);
        assert_eq!(j.total(), 23);
    }

    #[test]
    fn usage_reconciles_a_count_and_keeps_counting_around_it() {
        let u = Usage::default();
        let q = Some(1000);
        u.resize(q, "open", 0, 50).unwrap(); // before the first count: remembered
        u.begin_count([("open".to_owned(), 50)]);
        u.count_page([("old", 100)]);
        u.resize(q, "new", 0, 30).unwrap(); // behind the listing: not seen by it
        u.note("old", 100, 100);
        u.resize(None, "old", 100, 0).unwrap(); // behind: deleted after being listed
        assert_eq!(u.finish_count(), Some(50 + 30));
        assert_eq!(u.used(), 80);
        assert!(u.is_counted());
        u.resize(q, "new", 30, 40).unwrap();
        assert_eq!(u.used(), 90);
        // A failed listing leaves the figure as it was.
        u.begin_count([]);
        u.count_page([("x", 999)]);
        u.abandon_count();
        assert_eq!(u.finish_count(), None);
        assert_eq!(u.used(), 90);
    }
}
