//! Accounting and eviction policy of the disk cache, as a pure unit: which entries exist, in
//! what order they were used, how many bytes they hold on disk, and what must go for a new
//! entry to fit. No IO: the caller deletes the files [`DiskIndex::reserve`] returns (with the bytes each was charged)
//! and writes the new file after.
//!
//! Invariant: [`DiskIndex::used`] is never less than the bytes our files hold on disk, and
//! never more than the limit passed to the last [`DiskIndex::reserve`] that admitted an entry.
//! Entries being written (*pending*) count from the moment they are reserved, so a file in
//! the middle of its write is already paid for; they cannot be found by a lookup until
//! [`DiskIndex::commit`]. Anything that goes wrong (a failed unlink, an unknown size) is
//! settled by counting more, never less: over-counting only evicts early, under-counting
//! could pass the cap.

use std::collections::HashMap;

use lru::LruCache;

/// Name of one cache entry: the first 16 bytes of the SHA-256 of its identity (see `entry`).
pub(crate) type EntryName = [u8; 16];

/// Allocation unit an entry is charged in: a file of `n` bytes takes `n` rounded up to whole
/// 4 KiB filesystem blocks on the common Linux filesystems, so the cap holds for `du` too.
pub(crate) const CHARGE_UNIT: u64 = 4096;

/// How often (seconds) a hit refreshes the file's mtime, which orders entries for eviction
/// after a remount. Once a minute per entry at most: recency across remounts needs no finer
/// grain, and a hot entry is not written to on every read.
pub(crate) const TOUCH_INTERVAL_SECS: u64 = 60;

/// Bytes kept free on the cache's filesystem, for a filesystem of `total` bytes: 5 %, at
/// least 64 MiB and at most 1 GiB. The cache shares its disk with other users and must not be
/// what fills it; 1 GiB is enough headroom for the writes of a busy machine between two
/// inserts, and small disks keep a proportionate share.
pub(crate) fn free_margin(total: u64) -> u64 {
    (total / 20).clamp(64 << 20, 1 << 30)
}

/// The most the cache may hold now: the configured cap, and no more than what it holds plus
/// the filesystem's free space (`avail`) less the margin.
pub(crate) fn limit(cap: u64, used: u64, avail: u64, total: u64) -> u64 {
    cap.min(used.saturating_add(avail.saturating_sub(free_margin(total))))
}

/// Bytes a file of `len` bytes is charged.
pub(crate) fn charge(len: u64) -> u64 {
    len.div_ceil(CHARGE_UNIT).saturating_mul(CHARGE_UNIT)
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    charged: u64,
    /// Last time (seconds since the epoch) the file's mtime was set.
    stamp: u64,
}

/// Why [`DiskIndex::reserve`] refused an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The entry is already stored or being written.
    Present,
    /// The entry alone is larger than the limit.
    TooBig,
}

/// The index of one cache directory. See the module docs.
#[derive(Debug)]
pub(crate) struct DiskIndex {
    entries: LruCache<EntryName, Entry>,
    pending: HashMap<EntryName, u64>,
    /// Bytes of files that could not be deleted (see [`DiskIndex::leak`]).
    leaked: u64,
    used: u64,
}

impl Default for DiskIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl DiskIndex {
    pub(crate) fn new() -> Self {
        Self {
            entries: LruCache::unbounded(),
            pending: HashMap::new(),
            leaked: 0,
            used: 0,
        }
    }

    /// Bytes charged for committed and pending entries (and anything counted by
    /// [`DiskIndex::leak`]).
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Committed entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `name` is stored, without changing the order.
    pub(crate) fn contains(&self, name: &EntryName) -> bool {
        self.entries.contains(name)
    }

    /// Mark `name` used at `now` (seconds); `Some(true)` when its file's mtime should be
    /// refreshed (see [`TOUCH_INTERVAL_SECS`]), `None` when it is not stored.
    pub(crate) fn lookup(&mut self, name: &EntryName, now: u64) -> Option<bool> {
        let e = self.entries.get_mut(name)?;
        let touch = now.saturating_sub(e.stamp) >= TOUCH_INTERVAL_SECS;
        if touch {
            e.stamp = now;
        }
        Some(touch)
    }

    /// Make room for a new entry of `charged` bytes under `limit`: the least recently used
    /// entries to delete first (already uncounted), or why it cannot be stored. On success the
    /// entry is pending and counted.
    pub(crate) fn reserve(
        &mut self,
        name: EntryName,
        charged: u64,
        limit: u64,
    ) -> Result<Vec<(EntryName, u64)>, Refused> {
        if self.entries.contains(&name) || self.pending.contains_key(&name) {
            return Err(Refused::Present);
        }
        // Pending entries and leaked bytes cannot be evicted: check before evicting anything,
        // so a refused entry costs no stored one.
        let pinned: u64 = self.pending.values().sum::<u64>().saturating_add(self.leaked);
        if charged.saturating_add(pinned) > limit {
            return Err(Refused::TooBig);
        }
        let mut victims = Vec::new();
        while self.used.saturating_add(charged) > limit {
            match self.entries.pop_lru() {
                Some((victim, e)) => {
                    self.used = self.used.saturating_sub(e.charged);
                    victims.push((victim, e.charged));
                }
                // Unreachable while `used` is entries + pending + leaked (checked above).
                None => break,
            }
        }
        self.pending.insert(name, charged);
        self.used += charged;
        Ok(victims)
    }

    /// The pending entry `name` is written: it can be found from now on, as most recently
    /// used, stamped `now`.
    pub(crate) fn commit(&mut self, name: EntryName, now: u64) {
        if let Some(charged) = self.pending.remove(&name) {
            self.entries.push(name, Entry { charged, stamp: now });
        }
    }

    /// The pending entry `name` was not written (its file is gone): uncount it.
    pub(crate) fn abort(&mut self, name: &EntryName) {
        if let Some(charged) = self.pending.remove(name) {
            self.used = self.used.saturating_sub(charged);
        }
    }

    /// Forget the stored entry `name` (its file was found bad and deleted, or is missing).
    pub(crate) fn remove(&mut self, name: &EntryName) {
        if let Some(e) = self.entries.pop(name) {
            self.used = self.used.saturating_sub(e.charged);
        }
    }

    /// Count `bytes` that are on disk but belong to no entry (a file that could not be
    /// deleted), until the next start rescans the directory.
    pub(crate) fn leak(&mut self, bytes: u64) {
        self.leaked = self.leaked.saturating_add(bytes);
        self.used = self.used.saturating_add(bytes);
    }

    /// Fill an empty index from a scan of the directory: `(name, charged, mtime)` per file.
    /// The oldest are least recently used; entries beyond `limit` are dropped oldest first
    /// and returned, to be deleted.
    pub(crate) fn load(&mut self, mut found: Vec<(EntryName, u64, u64)>, limit: u64) -> Vec<(EntryName, u64)> {
        // Oldest first, so the newest end up most recently used; name breaks ties so the
        // order does not depend on readdir's.
        found.sort_by_key(|&(name, _, mtime)| (mtime, name));
        for (name, charged, stamp) in found {
            if let Some(old) = self.entries.put(name, Entry { charged, stamp }) {
                self.used = self.used.saturating_sub(old.charged);
            }
            self.used = self.used.saturating_add(charged);
        }
        let mut victims = Vec::new();
        while self.used > limit {
            match self.entries.pop_lru() {
                Some((victim, e)) => {
                    self.used = self.used.saturating_sub(e.charged);
                    victims.push((victim, e.charged));
                }
                None => break,
            }
        }
        victims
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn n(i: u8) -> EntryName {
        [i; 16]
    }

    /// Reserve and commit `name` at time `t`; the victims' names.
    fn put(ix: &mut DiskIndex, name: EntryName, charged: u64, limit: u64, t: u64) -> Vec<EntryName> {
        let v = ix.reserve(name, charged, limit).unwrap();
        ix.commit(name, t);
        v.into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn charges_whole_allocation_units() {
        assert_eq!(charge(0), 0);
        assert_eq!(charge(1), 4096);
        assert_eq!(charge(4096), 4096);
        assert_eq!(charge((1 << 20) + 100), (1 << 20) + 4096);
    }

    #[test]
    fn limit_is_the_cap_or_the_free_space_less_the_margin() {
        const GIB: u64 = 1 << 30;
        // Plenty of space: the cap.
        assert_eq!(limit(10 * GIB, 0, 500 * GIB, 1000 * GIB), 10 * GIB);
        // 3 GiB free on a 1 TB disk: keep 1 GiB free, so 2 GiB more than what is held.
        assert_eq!(limit(10 * GIB, 5 * GIB, 3 * GIB, 1000 * GIB), 7 * GIB);
        // Less free than the margin: no growth (what is held stays; it is not evicted).
        assert_eq!(limit(10 * GIB, 5 * GIB, GIB / 2, 1000 * GIB), 5 * GIB);
        // A small disk keeps 5 %, at least 64 MiB.
        assert_eq!(free_margin(GIB), 64 << 20);
        assert_eq!(free_margin(10 * GIB), GIB / 2);
        assert_eq!(free_margin(1000 * GIB), GIB);
    }

    #[test]
    fn evicts_least_recently_used_first_and_only_what_is_needed() {
        let mut ix = DiskIndex::new();
        for i in 0..4 {
            assert!(put(&mut ix, n(i), 100, 400, 0).is_empty());
        }
        assert_eq!(ix.lookup(&n(0), 0), Some(false), "touch 0: 1 is now the oldest");
        assert_eq!(put(&mut ix, n(9), 150, 400, 0), vec![n(1), n(2)]);
        assert_eq!(ix.used(), 350);
        assert!(ix.contains(&n(0)) && ix.contains(&n(3)) && ix.contains(&n(9)));
        assert!(!ix.contains(&n(1)));
    }

    #[test]
    fn pending_entries_are_counted_and_invisible_until_committed() {
        let mut ix = DiskIndex::new();
        assert_eq!(ix.reserve(n(1), 100, 1000), Ok(vec![]));
        assert_eq!(ix.used(), 100);
        assert!(!ix.contains(&n(1)));
        assert_eq!(ix.lookup(&n(1), 0), None);
        assert_eq!(ix.reserve(n(1), 100, 1000), Err(Refused::Present));
        ix.abort(&n(1));
        assert_eq!(ix.used(), 0);
        assert_eq!(ix.reserve(n(1), 100, 1000), Ok(vec![]));
        ix.commit(n(1), 5);
        assert!(ix.contains(&n(1)));
        assert_eq!(ix.reserve(n(1), 100, 1000), Err(Refused::Present));
        // A pending entry cannot be evicted for another.
        assert_eq!(ix.reserve(n(2), 800, 1000), Ok(vec![]));
        assert_eq!(ix.reserve(n(3), 300, 1000), Err(Refused::TooBig));
        assert!(ix.contains(&n(1)), "a refused entry evicts nothing");
    }

    #[test]
    fn too_big_and_leaked_bytes_are_refused_without_evicting() {
        let mut ix = DiskIndex::new();
        put(&mut ix, n(1), 100, 300, 0);
        assert_eq!(ix.reserve(n(2), 301, 300), Err(Refused::TooBig));
        ix.leak(250);
        assert_eq!(ix.reserve(n(2), 100, 300), Err(Refused::TooBig));
        assert!(ix.contains(&n(1)));
        assert_eq!(ix.used(), 350);
        assert_eq!(put(&mut ix, n(3), 50, 300, 0), vec![n(1)]);
        assert_eq!(ix.used(), 300);
    }

    #[test]
    fn touch_at_most_once_per_interval() {
        let mut ix = DiskIndex::new();
        put(&mut ix, n(1), 1, 10, 1000);
        assert_eq!(ix.lookup(&n(1), 1000 + TOUCH_INTERVAL_SECS - 1), Some(false));
        assert_eq!(ix.lookup(&n(1), 1000 + TOUCH_INTERVAL_SECS), Some(true));
        assert_eq!(ix.lookup(&n(1), 1000 + TOUCH_INTERVAL_SECS + 1), Some(false));
    }

    #[test]
    fn load_orders_by_mtime_and_trims_to_the_limit() {
        let mut ix = DiskIndex::new();
        let found = vec![(n(1), 100, 30), (n(2), 100, 10), (n(3), 100, 20), (n(4), 100, 40)];
        let victims: Vec<EntryName> = ix.load(found, 250).into_iter().map(|(n, _)| n).collect();
        assert_eq!(victims, vec![n(2), n(3)], "oldest first");
        assert_eq!(ix.used(), 200);
        // The newest is the most recently used: the next eviction takes n(1).
        assert_eq!(put(&mut ix, n(5), 100, 250, 50), vec![n(1)]);
    }

    proptest! {
        /// Whatever the sequence of inserts, lookups, failures and limit changes, the bytes
        /// counted are exactly the committed + pending (+ leaked) entries, and never above the
        /// limit of the last admitted insert.
        #[test]
        fn accounting_matches_and_never_passes_the_limit(
            ops in prop::collection::vec((0u8..4, 0u8..24, 0u64..5000, 1000u64..20_000), 1..300),
        ) {
            let mut ix = DiskIndex::new();
            let mut model: HashMap<EntryName, u64> = HashMap::new();
            for (op, name, size, limit) in ops {
                let name = n(name);
                let charged = charge(size);
                match op {
                    0 | 1 => match ix.reserve(name, charged, limit) {
                        Ok(victims) => {
                            for (v, c) in victims {
                                prop_assert_eq!(model.remove(&v), Some(c));
                            }
                            prop_assert!(ix.used() <= limit);
                            if op == 0 {
                                ix.commit(name, 0);
                                model.insert(name, charged);
                            } else {
                                ix.abort(&name);
                            }
                        }
                        Err(Refused::Present) => prop_assert!(model.contains_key(&name)),
                        Err(Refused::TooBig) => prop_assert!(charged > limit || ix.used() + charged > limit),
                    },
                    2 => {
                        ix.remove(&name);
                        model.remove(&name);
                    }
                    _ => {
                        prop_assert_eq!(ix.lookup(&name, 0).is_some(), model.contains_key(&name));
                    }
                }
                prop_assert_eq!(ix.used(), model.values().sum::<u64>());
                prop_assert_eq!(ix.len(), model.len());
            }
        }
    }
}
