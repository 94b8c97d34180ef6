//! Block cache: a byte-budgeted LRU of fixed-size blocks of object data, shared by every open
//! file of every tenant.
//!
//! Pure and synchronous: no IO and no `async`, so its lock is never held across an `.await`.
//! Entries are keyed by ([`ObjectId`], block index). An [`ObjectId`] includes the tenant and the
//! object *version* (the ETag when known, else size and Last-Modified), so a replaced object can
//! never be served blocks of its predecessor and two tenants never share an entry.
//!
//! Besides whole blocks, a block's *tail* (its bytes from some offset to its end) can be cached
//! under the same index ([`BlockCache::insert_tail`]): a stream that began with a small exact
//! read fetches only the rest of that block (see `read::prefetch`).
//!
//! Invariant: [`BlockCache::used_bytes`] never exceeds the budget. Least recently used blocks
//! are evicted *before* an insert; a block larger than the whole budget is not cached at all.
//!
//! With a tenant share ([`BlockCache::with_tenant_share`]), one tenant's blocks also never take
//! more than that share of the budget: a tenant over it evicts its own least recently used
//! blocks first, so one tenant streaming a large object cannot flush every other tenant's
//! blocks (see [`crate::fair`]).
//!
//! Below it, [`disk`] keeps whole blocks on local disk across remounts (the second tier).
//!
//! The budget can change while the cache is in use ([`BlockCache::set_budget`], a reload): a
//! smaller one evicts least recently used blocks at once, under the same lock as an insert.

pub mod disk;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use lru::LruCache;

use crate::backend::{ETag, ObjectMeta};

/// Recommended block size: 1 MiB, the size of the kernel's FUSE reads once byosfs has raised the
/// mount's read-ahead (`fuse::session`).
///
/// A sequential read is then exactly one block, and its reply a slice of it: with 128 KiB blocks
/// every 1 MiB reply was a join of eight blocks, a copy of every byte read (11 % of byosfs's CPU
/// in a cold 1 GiB read). Small reads do not pay for the size: a read that starts a stream and
/// is at most half a block GETs exactly its bytes (`read::policy`), so the first byte after a
/// seek and a random 4 KiB or 256 KiB read cost what they ask for. Kernel reads of 128 KiB (a
/// mount by a user who may not raise the read-ahead) are slices of a block, also without a
/// copy. A 512 MiB budget is 512 entries.
pub const DEFAULT_BLOCK_SIZE: u64 = 1024 * 1024;

/// Which version of an object the blocks belong to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Version {
    /// The ETag identifies the content; Last-Modified is deliberately left out, since a
    /// re-upload of identical bytes keeps the ETag and its cached blocks stay valid.
    ETag(ETag),
    /// No ETag reported: the best we have is Last-Modified (together with the size).
    Modified(Option<SystemTime>),
}

/// One version of one object of one tenant: the identity under which its blocks are cached.
///
/// Cheap to clone (two reference-count increments).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectId {
    tenant: u32,
    key: Arc<str>,
    size: u64,
    version: Version,
}

impl ObjectId {
    /// The identity of the object described by `meta`, as seen by `tenant`.
    pub fn new(tenant: u32, meta: &ObjectMeta) -> Self {
        let version = match &meta.etag {
            Some(etag) => Version::ETag(etag.clone()),
            None => Version::Modified(meta.last_modified),
        };
        Self {
            tenant,
            key: Arc::from(meta.key.as_str()),
            size: meta.size,
            version,
        }
    }

    /// The tenant the object belongs to.
    pub fn tenant(&self) -> u32 {
        self.tenant
    }

    /// The object's key within the tenant's backend.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The ETag pinned for this version, if the backend reported one.
    pub fn etag(&self) -> Option<&ETag> {
        match &self.version {
            Version::ETag(e) => Some(e),
            Version::Modified(_) => None,
        }
    }

    /// The object's size in bytes for this version.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// LRU state behind the cache's one lock.
#[derive(Debug)]
struct Inner {
    /// Key: object, block index, and whether the entry is the block's tail only.
    blocks: LruCache<(ObjectId, u64, bool), Bytes>,
    used: u64,
    /// Bytes cached per tenant; a tenant with nothing cached has no entry.
    by_tenant: HashMap<u32, u64>,
}

impl Inner {
    fn remove(&mut self, key: &(ObjectId, u64, bool)) {
        if let Some(old) = self.blocks.pop(key) {
            self.uncount(key.0.tenant, len_u64(&old));
        }
    }

    fn uncount(&mut self, tenant: u32, len: u64) {
        self.used -= len;
        if let Some(t) = self.by_tenant.get_mut(&tenant) {
            *t = t.saturating_sub(len);
            if *t == 0 {
                self.by_tenant.remove(&tenant);
            }
        }
    }

    /// Evict the least recently used entry of `tenant` (a walk from the LRU end, done only
    /// while that tenant is over its share); `false` if it has none.
    fn evict_lru_of(&mut self, tenant: u32) -> bool {
        let key = self
            .blocks
            .iter()
            .rev()
            .find(|(k, _)| k.0.tenant == tenant)
            .map(|(k, _)| k.clone());
        match key {
            Some(k) => {
                self.remove(&k);
                true
            }
            None => false,
        }
    }
}

/// A byte-budgeted LRU cache of fixed-size object blocks. See the module docs.
#[derive(Debug)]
pub struct BlockCache {
    /// Changed only under the `inner` lock (read without it for reporting).
    budget: AtomicU64,
    /// Percent of the budget one tenant's blocks may hold.
    tenant_share: u8,
    /// Most bytes one tenant's blocks may hold (`tenant_share` of `budget`); changed with it.
    tenant_budget: AtomicU64,
    block_size: u64,
    inner: Mutex<Inner>,
    /// Blocks evicted to make room, for the metrics.
    evictions: AtomicU64,
}

impl BlockCache {
    /// A cache holding at most `budget_bytes` of block data, for blocks of `block_size` bytes
    /// (a `block_size` of 0 is treated as 1).
    pub fn new(budget_bytes: u64, block_size: u64) -> Self {
        Self {
            budget: AtomicU64::new(budget_bytes),
            tenant_share: 100,
            tenant_budget: AtomicU64::new(budget_bytes),
            block_size: block_size.max(1),
            inner: Mutex::new(Inner {
                blocks: LruCache::unbounded(),
                used: 0,
                by_tenant: HashMap::new(),
            }),
            evictions: AtomicU64::new(0),
        }
    }

    /// One tenant's blocks hold at most `percent` of the budget (see the module docs).
    pub fn with_tenant_share(mut self, percent: u8) -> Self {
        self.tenant_share = percent;
        let budget = self.budget.load(Ordering::Relaxed);
        self.tenant_budget = AtomicU64::new(crate::fair::share_of(budget, percent));
        self
    }

    /// The most bytes one tenant's blocks may hold.
    pub fn tenant_budget_bytes(&self) -> u64 {
        self.tenant_budget.load(Ordering::Relaxed)
    }

    /// Change the budget (and each tenant's share of it); a smaller one evicts least recently
    /// used blocks until the cache fits. Readers opened before keep their read-ahead windows
    /// (sized from the old budget); new handles size theirs from this one.
    pub fn set_budget(&self, budget_bytes: u64) {
        let mut inner = self.lock();
        self.budget.store(budget_bytes, Ordering::Relaxed);
        self.tenant_budget.store(
            crate::fair::share_of(budget_bytes, self.tenant_share),
            Ordering::Relaxed,
        );
        self.evict_until(&mut inner, budget_bytes);
    }

    fn evict_until(&self, inner: &mut Inner, limit: u64) {
        while inner.used > limit {
            match inner.blocks.pop_lru() {
                Some((k, evicted)) => {
                    inner.uncount(k.0.tenant, len_u64(&evicted));
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
                // Unreachable while `used` is the sum of entry sizes; stop rather than spin.
                None => break,
            }
        }
    }

    /// Blocks evicted to make room so far.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Size of a block; block `i` of an object holds bytes `[i * block_size, (i + 1) * block_size)`
    /// (the last block of an object may be shorter).
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The byte budget (given at construction or by [`BlockCache::set_budget`]).
    pub fn budget_bytes(&self) -> u64 {
        self.budget.load(Ordering::Relaxed)
    }

    /// Block `block` of `id`, marking it most recently used.
    pub fn get(&self, id: &ObjectId, block: u64) -> Option<Bytes> {
        // The tuple key needs an owned ObjectId; cloning it is two refcount bumps.
        self.lock().blocks.get(&(id.clone(), block, false)).cloned()
    }

    /// Whether block `block` of `id` is cached, without changing the LRU order.
    pub fn contains(&self, id: &ObjectId, block: u64) -> bool {
        self.lock().blocks.contains(&(id.clone(), block, false))
    }

    /// Cache `data` as block `block` of `id`, replacing any previous entry and evicting least
    /// recently used blocks until it fits. Data larger than the whole budget is not cached.
    ///
    /// The cache keeps `data` alive as given: callers that cut blocks out of a larger buffer
    /// should copy them, or the whole buffer stays allocated behind a small accounted block.
    pub fn insert(&self, id: &ObjectId, block: u64, data: Bytes) {
        // The whole block makes its tail useless.
        self.drop_entry(&(id.clone(), block, true));
        self.put((id.clone(), block, false), data);
    }

    /// Cache `data` as the last `data.len()` bytes of block `block` of `id` (see the module
    /// docs), under the same budget and LRU order as whole blocks; nothing when the whole
    /// block is cached.
    pub fn insert_tail(&self, id: &ObjectId, block: u64, data: Bytes) {
        if !self.contains(id, block) {
            self.put((id.clone(), block, true), data);
        }
    }

    fn drop_entry(&self, key: &(ObjectId, u64, bool)) {
        self.lock().remove(key);
    }

    /// The cached tail of block `block` of `id`, marking it most recently used.
    pub fn tail(&self, id: &ObjectId, block: u64) -> Option<Bytes> {
        self.lock().blocks.get(&(id.clone(), block, true)).cloned()
    }

    fn put(&self, key: (ObjectId, u64, bool), data: Bytes) {
        let len = len_u64(&data);
        let tenant = key.0.tenant;
        let mut inner = self.lock();
        inner.remove(&key);
        let budget = self.budget.load(Ordering::Relaxed);
        let tenant_budget = self.tenant_budget.load(Ordering::Relaxed);
        if len > budget.min(tenant_budget) {
            return;
        }
        while inner.by_tenant.get(&tenant).copied().unwrap_or(0) + len > tenant_budget {
            if !inner.evict_lru_of(tenant) {
                break;
            }
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        self.evict_until(&mut inner, budget - len);
        inner.used += len;
        *inner.by_tenant.entry(tenant).or_default() += len;
        inner.blocks.push(key, data);
    }

    /// Drop block `block` of `id`, and its tail, if cached.
    pub fn remove(&self, id: &ObjectId, block: u64) {
        for tail in [false, true] {
            self.drop_entry(&(id.clone(), block, tail));
        }
    }

    /// Bytes of block data currently cached; never more than the budget.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used
    }

    /// Number of cache entries (whole blocks and tails).
    pub fn len(&self) -> usize {
        self.lock().blocks.len()
    }

    /// Whether no block is cached.
    pub fn is_empty(&self) -> bool {
        self.lock().blocks.is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update keeps `used` equal to the sum of entry sizes before anything that could
        // panic, so the state behind a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn len_u64(b: &Bytes) -> u64 {
    // usize is at most 64 bits on every supported target.
    u64::try_from(b.len()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(key: &str, size: u64, etag: Option<&str>) -> ObjectMeta {
        ObjectMeta::new(key, size, None, etag.map(ETag::new))
    }

    fn id(key: &str) -> ObjectId {
        ObjectId::new(1, &meta(key, 100, Some("\"e1\"")))
    }

    #[test]
    fn get_returns_inserted_block() {
        let cache = BlockCache::new(100, 10);
        let a = id("a");
        cache.insert(&a, 3, Bytes::from_static(b"0123456789"));
        assert_eq!(cache.get(&a, 3).as_deref(), Some(&b"0123456789"[..]));
        assert_eq!(cache.get(&a, 4), None);
        assert_eq!(cache.used_bytes(), 10);
    }

    #[test]
    fn a_tenant_streaming_a_large_object_evicts_its_own_blocks_not_the_others() {
        let cache = BlockCache::new(40, 10).with_tenant_share(50);
        assert_eq!(cache.tenant_budget_bytes(), 20);
        let quiet = ObjectId::new(2, &meta("q", 100, Some("\"q\"")));
        cache.insert(&quiet, 0, Bytes::from(vec![1u8; 10]));
        cache.insert(&quiet, 1, Bytes::from(vec![1u8; 10]));
        let loud = id("big");
        for b in 0..10 {
            cache.insert(&loud, b, Bytes::from(vec![0u8; 10]));
        }
        // The loud tenant keeps its 2 most recent blocks; the quiet one keeps both of its own
        // although they are the least recently used of the cache.
        assert!(cache.contains(&quiet, 0) && cache.contains(&quiet, 1));
        assert!(cache.contains(&loud, 9) && cache.contains(&loud, 8) && !cache.contains(&loud, 7));
        assert_eq!(cache.used_bytes(), 40);
        cache.remove(&quiet, 0);
        cache.remove(&quiet, 1);
        assert_eq!(cache.lock().by_tenant.get(&2), None, "an empty tenant leaves no entry");
        assert_eq!(cache.lock().by_tenant.get(&1), Some(&20));
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let cache = BlockCache::new(30, 10);
        let a = id("a");
        for b in 0..3 {
            cache.insert(&a, b, Bytes::from(vec![0u8; 10]));
        }
        // Touch block 0 so block 1 becomes the least recently used.
        assert!(cache.get(&a, 0).is_some());
        cache.insert(&a, 3, Bytes::from(vec![0u8; 10]));
        assert!(cache.contains(&a, 0));
        assert!(!cache.contains(&a, 1));
        assert!(cache.contains(&a, 2));
        assert!(cache.contains(&a, 3));
        assert_eq!(cache.used_bytes(), 30);
    }

    #[test]
    fn replacing_a_block_does_not_double_count() {
        let cache = BlockCache::new(30, 10);
        let a = id("a");
        cache.insert(&a, 0, Bytes::from(vec![1u8; 10]));
        cache.insert(&a, 0, Bytes::from(vec![2u8; 5]));
        assert_eq!(cache.used_bytes(), 5);
        assert_eq!(cache.get(&a, 0).as_deref(), Some(&[2u8; 5][..]));
    }

    #[test]
    fn tails_are_apart_from_blocks_share_the_budget_and_go_with_remove() {
        let cache = BlockCache::new(30, 10);
        let a = id("a");
        cache.insert_tail(&a, 2, Bytes::from(vec![7u8; 4]));
        assert_eq!(cache.get(&a, 2), None, "a tail is not the block");
        assert!(!cache.contains(&a, 2));
        assert_eq!(cache.tail(&a, 2).as_deref(), Some(&[7u8; 4][..]));
        cache.insert(&a, 3, Bytes::from(vec![1u8; 10]));
        assert_eq!(cache.used_bytes(), 14);
        // LRU order is shared: the tail, used least recently, goes first.
        cache.insert(&a, 4, Bytes::from(vec![1u8; 10]));
        cache.insert(&a, 5, Bytes::from(vec![1u8; 10]));
        assert_eq!(cache.tail(&a, 2), None);
        assert_eq!(cache.used_bytes(), 30);
        cache.insert_tail(&a, 6, Bytes::from(vec![7u8; 3]));
        cache.remove(&a, 6);
        assert_eq!(cache.tail(&a, 6), None);
        assert!(cache.used_bytes() <= 30);
        // The whole block replaces its tail, and a tail never joins its whole block.
        let b = id("b");
        let cache = BlockCache::new(30, 10);
        cache.insert_tail(&b, 1, Bytes::from(vec![7u8; 4]));
        cache.insert(&b, 1, Bytes::from(vec![1u8; 10]));
        assert_eq!(cache.tail(&b, 1), None);
        cache.insert_tail(&b, 1, Bytes::from(vec![7u8; 4]));
        assert_eq!(cache.tail(&b, 1), None);
        assert_eq!(cache.used_bytes(), 10);
    }

    #[test]
    fn a_smaller_budget_evicts_least_recently_used_at_once_and_a_larger_one_holds_more() {
        let cache = BlockCache::new(40, 10);
        let a = id("a");
        for b in 0..4 {
            cache.insert(&a, b, Bytes::from(vec![0u8; 10]));
        }
        assert!(cache.get(&a, 0).is_some());
        cache.set_budget(20);
        assert_eq!(cache.used_bytes(), 20);
        assert!(
            cache.contains(&a, 0) && cache.contains(&a, 3),
            "most recently used stay"
        );
        assert_eq!(cache.evictions(), 2);
        cache.set_budget(50);
        for b in 4..9 {
            cache.insert(&a, b, Bytes::from(vec![0u8; 10]));
        }
        assert_eq!(cache.used_bytes(), 50);
        assert_eq!(cache.budget_bytes(), 50);
    }

    #[test]
    fn block_larger_than_budget_is_not_cached() {
        let cache = BlockCache::new(8, 10);
        let a = id("a");
        cache.insert(&a, 0, Bytes::from(vec![0u8; 4]));
        cache.insert(&a, 1, Bytes::from(vec![0u8; 10]));
        assert!(!cache.contains(&a, 1));
        // The oversized insert must not have evicted what was there.
        assert!(cache.contains(&a, 0));
        assert_eq!(cache.used_bytes(), 4);
    }

    #[test]
    fn versions_do_not_share_blocks() {
        let cache = BlockCache::new(100, 10);
        let v1 = ObjectId::new(1, &meta("k", 10, Some("\"v1\"")));
        let v2 = ObjectId::new(1, &meta("k", 10, Some("\"v2\"")));
        cache.insert(&v1, 0, Bytes::from_static(b"old"));
        assert_eq!(cache.get(&v2, 0), None);
        assert!(cache.get(&v1, 0).is_some());
    }

    #[test]
    fn without_etag_size_and_mtime_are_the_version() {
        let t0 = SystemTime::UNIX_EPOCH;
        let t1 = t0 + std::time::Duration::from_secs(1);
        let a = ObjectId::new(1, &ObjectMeta::new("k", 10, Some(t0), None));
        let same = ObjectId::new(1, &ObjectMeta::new("k", 10, Some(t0), None));
        let newer = ObjectId::new(1, &ObjectMeta::new("k", 10, Some(t1), None));
        let longer = ObjectId::new(1, &ObjectMeta::new("k", 11, Some(t0), None));
        assert_eq!(a, same);
        assert_ne!(a, newer);
        assert_ne!(a, longer);
        assert_eq!(a.etag(), None);
        let cache = BlockCache::new(100, 10);
        cache.insert(&a, 0, Bytes::from_static(b"x"));
        assert!(cache.get(&same, 0).is_some());
        assert!(cache.get(&newer, 0).is_none());
        assert!(cache.get(&longer, 0).is_none());
    }

    #[test]
    fn tenants_do_not_share_blocks() {
        let cache = BlockCache::new(100, 10);
        let m = meta("same/key", 10, Some("\"same-etag\""));
        let t1 = ObjectId::new(1, &m);
        let t2 = ObjectId::new(2, &m);
        cache.insert(&t1, 0, Bytes::from_static(b"tenant one"));
        assert_eq!(cache.get(&t2, 0), None);
        assert_eq!(t1.key(), t2.key());
        assert_ne!(t1, t2);
    }

    #[test]
    fn accessors_report_meta() {
        let a = ObjectId::new(7, &meta("dir/f", 42, Some("\"x\"")));
        assert_eq!(a.tenant(), 7);
        assert_eq!(a.key(), "dir/f");
        assert_eq!(a.size(), 42);
        assert_eq!(a.etag().map(ETag::as_str), Some("\"x\""));
    }

    proptest! {
        #[test]
        fn budget_never_exceeded(
            budget in 0u64..200,
            ops in prop::collection::vec((0u32..3, 0u64..8, 0usize..64, any::<bool>()), 1..200),
        ) {
            let cache = BlockCache::new(budget, 16);
            let ids: Vec<ObjectId> = (0..3).map(|t| ObjectId::new(t, &meta("k", 1000, Some("\"e\"")))).collect();
            for (t, block, len, read) in ops {
                let oid = &ids[t as usize];
                if read {
                    if let Some(b) = cache.get(oid, block) {
                        prop_assert!(b.iter().all(|&x| x == block as u8));
                    }
                } else {
                    cache.insert(oid, block, Bytes::from(vec![block as u8; len]));
                    let fits = len as u64 <= budget;
                    prop_assert_eq!(cache.contains(oid, block), fits);
                }
                prop_assert!(cache.used_bytes() <= budget);
            }
        }
    }
}
