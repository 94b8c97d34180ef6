//! Fair shares of the mount-wide limits between tenants.
//!
//! Tenants share the mount's limits (requests in flight, stat-ahead HEADs, staging space). A
//! tenant whose storage hangs or trickles bytes holds every unit it takes until its requests
//! time out, so one shared pool lets it take all of them and stall every other tenant. Each
//! limit is therefore split the same way: one tenant holds at most its *share* of the global
//! limit ([`share_of`], 50 % by default), counted on its own counter *before* the global one,
//! so a tenant waiting for its share holds nothing the others need.
//!
//! [`Shares`] applies that rule with semaphores, for limits callers wait on. With
//! [`Shares::idle_first`], a tenant with nothing held does not wait for the global pool for
//! its first unit ([`needs_global`]): even when several tenants have filled it, an idle tenant
//! always gets one request through (the pool then runs over by at most one unit per tenant).
//! Work that belongs to no tenant (the root directory, answered from memory) takes nothing.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default share of every shared limit one tenant may hold, in percent.
pub(crate) const DEFAULT_SHARE_PERCENT: u8 = 50;

/// The most units one tenant may hold of a global limit of `global` units: `percent` of it,
/// at least one unit, at most all of them.
pub(crate) fn share_of(global: u64, percent: u8) -> u64 {
    let percent = u64::from(percent.clamp(1, 100));
    (global.saturating_mul(percent) / 100).clamp(1, global.max(1))
}

/// Whether a tenant already holding `held` units (before this request) must also take its
/// units from the global pool. Not for its first unit when `idle_first` is on: an idle tenant
/// then always gets through, however full the pool is.
pub(crate) fn needs_global(held: u64, idle_first: bool) -> bool {
    !(idle_first && held == 0)
}

/// Whether `want` more units fit for a tenant holding `held` of its `share`, with `used` of
/// the global `limit` in use (limits nobody waits on, such as staging space).
pub(crate) fn fits(want: u64, held: u64, share: u64, used: u64, limit: u64) -> bool {
    held.saturating_add(want) <= share && used.saturating_add(want) <= limit
}

/// A global limit of units with a per-tenant share inside it, for callers that wait.
#[derive(Debug)]
pub(crate) struct Shares<K> {
    global: Arc<Semaphore>,
    share: u32,
    idle_first: bool,
    /// One semaphore of `share` units per tenant seen; idle entries are pruned as it grows.
    tenants: Mutex<HashMap<K, Arc<Semaphore>>>,
}

/// Units held by one request; returned on drop.
#[derive(Debug)]
pub(crate) struct SharePermit {
    _tenant: Option<OwnedSemaphorePermit>,
    _global: Option<OwnedSemaphorePermit>,
}

impl SharePermit {
    /// A permit holding nothing (work of no tenant).
    pub(crate) fn none() -> Self {
        Self {
            _tenant: None,
            _global: None,
        }
    }
}

impl<K: Hash + Eq + Copy> Shares<K> {
    /// `global` units in all (at least 1), a tenant holding at most `percent` of them.
    pub(crate) fn new(global: u32, percent: u8) -> Self {
        let global = global.max(1);
        let share = u32::try_from(share_of(u64::from(global), percent)).unwrap_or(global);
        Self {
            global: Arc::new(Semaphore::new(global as usize)),
            share,
            idle_first: false,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// A tenant's first unit does not wait for the global pool (see the module docs).
    pub(crate) fn idle_first(mut self) -> Self {
        self.idle_first = true;
        self
    }

    /// Units one tenant may hold.
    #[cfg(test)]
    pub(crate) fn share(&self) -> u32 {
        self.share
    }

    fn tenant(&self, key: K) -> Arc<Semaphore> {
        // Only a map lookup under the lock; poisoning cannot leave it inconsistent.
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(&key) {
            return s.clone();
        }
        // Tenants removed by a reload leave their entry behind: drop idle ones now and then
        // (an idle entry is recreated on demand, so dropping it loses nothing).
        if map.len() >= 64 && map.len().is_power_of_two() {
            let share = self.share as usize;
            map.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < share);
        }
        map.entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.share as usize)))
            .clone()
    }

    /// Wait until `key` may hold `units` more (clamped to its share) and take them.
    pub(crate) async fn acquire(&self, key: K, units: u32) -> SharePermit {
        let units = units.clamp(1, self.share);
        let tenant = self.tenant(key);
        // The semaphores are never closed; if one were, running unaccounted beats hanging.
        let mine = tenant.clone().acquire_many_owned(units).await.ok();
        let free = u64::try_from(tenant.available_permits()).unwrap_or(u64::MAX);
        let held = u64::from(self.share)
            .saturating_sub(free)
            .saturating_sub(u64::from(units));
        let global = if needs_global(held, self.idle_first) {
            self.global.clone().acquire_many_owned(units).await.ok()
        } else {
            // The first unit of an idle tenant: take from the pool if it has room, else run
            // over it by this one unit.
            self.global.clone().try_acquire_many_owned(units).ok()
        };
        SharePermit {
            _tenant: mine,
            _global: global,
        }
    }

    /// Units `key` holds now.
    #[cfg(test)]
    pub(crate) fn held(&self, key: K) -> u32 {
        let free = self.tenant(key).available_permits();
        self.share - u32::try_from(free).unwrap_or(self.share)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn shares_are_a_percentage_within_bounds() {
        assert_eq!(share_of(1024, 50), 512);
        assert_eq!(share_of(1024, 100), 1024);
        assert_eq!(share_of(1024, 0), 10, "0 % is read as 1 %");
        assert_eq!(share_of(3, 10), 1, "at least one unit");
        assert_eq!(share_of(0, 50), 1);
        assert_eq!(share_of(u64::MAX, 50), u64::MAX / 100);
    }

    #[test]
    fn only_an_idle_tenants_first_unit_skips_the_pool() {
        assert!(!needs_global(0, true));
        assert!(needs_global(1, true));
        assert!(needs_global(0, false));
    }

    #[test]
    fn fits_checks_the_share_and_the_limit() {
        assert!(fits(10, 40, 50, 90, 100));
        assert!(!fits(11, 40, 50, 0, 100), "past the tenant's share");
        assert!(!fits(10, 0, 50, 95, 100), "past the global limit");
        assert!(!fits(u64::MAX, 1, u64::MAX - 1, 0, u64::MAX), "no overflow");
    }

    async fn quickly(f: impl std::future::Future<Output = SharePermit>) -> Option<SharePermit> {
        tokio::time::timeout(Duration::from_millis(200), f).await.ok()
    }

    #[tokio::test]
    async fn a_tenant_holding_its_share_leaves_the_rest_to_others() {
        let s = Shares::new(8, 50);
        let mut hung = Vec::new();
        for _ in 0..4 {
            hung.push(quickly(s.acquire(1u32, 1)).await.expect("within the share"));
        }
        assert_eq!(s.held(1), 4);
        // Tenant 1's fifth request waits on its own share, taking nothing from the pool.
        assert!(quickly(s.acquire(1, 1)).await.is_none());
        let mut others = Vec::new();
        for _ in 0..4 {
            others.push(quickly(s.acquire(2, 1)).await.expect("tenant 2 finds its slots"));
        }
        drop(hung.pop());
        assert!(
            quickly(s.acquire(1, 1)).await.is_some(),
            "a freed unit is tenant 1's again"
        );
    }

    #[tokio::test]
    async fn an_idle_tenant_gets_through_a_pool_others_filled() {
        let s = Shares::new(4, 50).idle_first();
        let mut held = Vec::new();
        for t in [1u32, 2] {
            for _ in 0..2 {
                held.push(quickly(s.acquire(t, 1)).await.unwrap());
            }
        }
        // The pool is full: tenant 3's first request runs over it, its second waits.
        let first = quickly(s.acquire(3, 1)).await.expect("an idle tenant is never starved");
        assert!(quickly(s.acquire(3, 1)).await.is_none());
        drop(first);
        // Without idle_first, the same tenant waits for the pool.
        let strict = Shares::new(2, 50);
        let _a = strict.acquire(1u32, 1).await;
        let _b = strict.acquire(2u32, 1).await;
        assert!(quickly(strict.acquire(3, 1)).await.is_none());
    }

    #[tokio::test]
    async fn requests_larger_than_a_share_are_clamped_not_stuck() {
        let s = Shares::new(16, 25);
        assert_eq!(s.share(), 4);
        let p = quickly(s.acquire(7u32, 100)).await.expect("clamped to the share");
        assert_eq!(s.held(7), 4);
        drop(p);
        assert_eq!(s.held(7), 0);
    }

    #[tokio::test]
    async fn idle_entries_of_departed_tenants_are_pruned() {
        let s = Shares::new(4, 50);
        for t in 0u32..200 {
            drop(s.acquire(t, 1).await);
        }
        let _busy = s.acquire(1000, 1).await;
        let n = s.tenants.lock().unwrap().len();
        assert!(n < 200, "{n} entries kept");
        assert_eq!(s.held(1000), 1, "a busy entry survives pruning");
    }
}
