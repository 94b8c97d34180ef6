//! Names known not to exist, and since when.
//!
//! Creating a file costs the kernel one or two lookups of its name before the create itself:
//! `open(O_CREAT|O_EXCL)` revalidates any negative dentry (FUSE ignores a cached negative
//! entry for exclusive creates) and asks again, after `cp a b` has already looked `b` up.
//! Each lookup of a missing name is a HEAD and a LIST on the backend. This map remembers, for
//! `negative_ttl` (the same trust the kernel gives a negative entry), which names the backend
//! said were absent, so the second lookup is free.
//!
//! Only facts the backend proved, or that follow from them, are kept, each with the instant
//! it was proven (not when it was stored): a name absent from a directory known to be
//! complete is absent as of the time the directory was known complete, never later.
//!
//! Bounded: at most [`MAX_ABSENT`] names; when full, expired names are dropped, and if that
//! is not enough, all of them (forgetting costs only lookups, never correctness).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Names remembered at most, per mount (about 100 bytes each).
pub(super) const MAX_ABSENT: usize = 65_536;

/// A name in a directory: (parent inode, name), the inode table's own child key, so one
/// allocation serves both maps.
pub(super) type NameKey = (u64, String);

/// (parent inode, name) → when the backend last proved the name absent.
#[derive(Debug, Default)]
pub(super) struct Absent {
    names: HashMap<NameKey, Instant>,
}

impl Absent {
    /// Remember that `key` did not exist at `since`. An older fact never replaces a newer
    /// one.
    pub(super) fn note(&mut self, key: NameKey, since: Instant, ttl: Duration) {
        if since.elapsed() >= ttl {
            return;
        }
        if self.names.len() >= MAX_ABSENT && !self.names.contains_key(&key) {
            self.names.retain(|_, t| t.elapsed() < ttl);
            if self.names.len() >= MAX_ABSENT {
                self.names.clear();
            }
        }
        let at = self.names.entry(key).or_insert(since);
        if *at < since {
            *at = since;
        }
    }

    /// When `key` was proven absent, if that is still within `ttl`.
    pub(super) fn since(&self, key: &NameKey, ttl: Duration) -> Option<Instant> {
        let at = *self.names.get(key)?;
        (at.elapsed() < ttl).then_some(at)
    }

    /// `key` exists now (created here, or found).
    pub(super) fn forget(&mut self, key: &NameKey) {
        self.names.remove(key);
    }

    /// Names held (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn key(parent: u64, name: &str) -> NameKey {
        (parent, name.to_owned())
    }

    #[test]
    fn remembers_within_ttl_and_keeps_the_newest_proof() {
        let mut a = Absent::default();
        let old = Instant::now() - Duration::from_secs(30);
        let new = Instant::now();
        a.note(key(1, "x"), new, TTL);
        a.note(key(1, "x"), old, TTL);
        assert_eq!(a.since(&key(1, "x"), TTL), Some(new));
        assert_eq!(a.since(&key(1, "y"), TTL), None);
        assert_eq!(a.since(&key(2, "x"), TTL), None);
        assert_eq!(a.since(&key(1, "x"), Duration::ZERO), None, "a zero ttl trusts nothing");
        a.forget(&key(1, "x"));
        assert_eq!(a.since(&key(1, "x"), TTL), None);
    }

    #[test]
    fn expired_proofs_are_neither_stored_nor_answered() {
        let mut a = Absent::default();
        let stale = Instant::now() - Duration::from_secs(61);
        a.note(key(1, "x"), stale, TTL);
        assert_eq!(a.len(), 0);
        a.note(key(1, "y"), Instant::now() - Duration::from_secs(59), TTL);
        assert!(a.since(&key(1, "y"), Duration::from_secs(10)).is_none());
    }

    #[test]
    fn stays_bounded_when_full() {
        let mut a = Absent::default();
        let now = Instant::now();
        for i in 0..MAX_ABSENT + 10 {
            a.note(key(1, &format!("n{i}")), now, TTL);
            assert!(a.len() <= MAX_ABSENT);
        }
        // Everything was fresh, so the map was cleared once and refilled.
        assert!(a.len() < MAX_ABSENT);
        assert!(a.since(&key(1, &format!("n{}", MAX_ABSENT + 9)), TTL).is_some());
    }
}
