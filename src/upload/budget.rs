//! Global accounting shared by all write sessions of a mount: the memory budget for part
//! buffers and the byte limit of the local staging area, each with a per-tenant share inside
//! it (see [`crate::fair`]): a tenant whose storage hangs holds its buffers until its requests
//! time out, and with one shared pool it would stall every other tenant's writes.
//!
//! Memory is held by two kinds of buffers:
//! - buffers on their way to the backend (read from staging or sealed from a fill buffer),
//!   released when the upload request finishes;
//! - *fill* buffers: the part a writer is filling, kept in memory so a sequential writer's
//!   bytes go to the network without a round trip through the staging disk. A fill buffer
//!   lives as long as its writer keeps the file open, so fill buffers are taken only without
//!   waiting ([`MemoryBudget::try_acquire_fill`]) and together never hold more than a quarter
//!   of the budget, nor a tenant's more than a quarter of its share.
//!
//! A writer waiting for memory ([`MemoryBudget::acquire`]) asks for at most the three
//! quarters fill buffers cannot hold, of the budget and of its tenant's share, and everything
//! else is held by requests that finish on their own (every request has a deadline): many files
//! open for writing can never deadlock the budget or make it grow. Units are taken from the
//! tenant's share first, so a writer waiting for its share holds nothing others need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::fair::{fits, share_of};

/// Granularity of the memory semaphore: permits are counted in 64 KiB units so that a
/// `u32` permit count covers any part size (up to 256 TiB).
const UNIT: u64 = 64 * 1024;

/// A byte budget that callers wait on (fairly, FIFO) when it is exhausted.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    sem: Arc<Semaphore>,
    total_units: u32,
    /// Most units fill buffers may hold together.
    fill_limit_units: u32,
    /// Units held by fill buffers now.
    fill_units: Arc<AtomicU64>,
    /// Most units one tenant may hold.
    tenant_units: u32,
    /// Each tenant's share, by tenant name; entries no session holds are dropped.
    tenants: Mutex<HashMap<String, Arc<TenantMemory>>>,
    in_use: Arc<AtomicU64>,
    high_water: Arc<AtomicU64>,
    /// Microseconds writers spent waiting for memory, for the metrics.
    wait_us: AtomicU64,
}

/// One tenant's share of the memory budget; a write session holds its tenant's.
#[derive(Debug)]
pub(crate) struct TenantMemory {
    sem: Arc<Semaphore>,
    /// Units held by this tenant's fill buffers now.
    fill_units: Arc<AtomicU64>,
}

/// Memory held by one buffer; returned to the budget on drop.
#[derive(Debug)]
pub(crate) struct MemoryPermit {
    // `None` only if the semaphore was closed, which never happens (see `acquire`).
    permit: Option<OwnedSemaphorePermit>,
    /// The same units, from the tenant's share.
    tenant: Option<OwnedSemaphorePermit>,
    bytes: u64,
    in_use: Arc<AtomicU64>,
    /// Set while the permit backs a fill buffer: the mount's fill counter and the tenant
    /// whose fill counter to return its units to.
    fill: Option<(Arc<AtomicU64>, Arc<TenantMemory>)>,
}

impl MemoryPermit {
    fn units(&self) -> u64 {
        self.permit.as_ref().map_or(0, |p| p.num_permits() as u64)
    }

    fn return_fill(&mut self) {
        if let Some((mount, tenant)) = self.fill.take() {
            mount.fetch_sub(self.units(), Ordering::Relaxed);
            tenant.fill_units.fetch_sub(self.units(), Ordering::Relaxed);
        }
    }

    /// The buffer stops being a fill buffer (it was sealed for upload): its memory now
    /// comes back on its own when the request finishes.
    pub(crate) fn into_in_flight(mut self) -> Self {
        self.return_fill();
        self
    }
}

impl Drop for MemoryPermit {
    fn drop(&mut self) {
        self.in_use.fetch_sub(self.bytes, Ordering::Relaxed);
        self.return_fill();
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes (rounded down to 64 KiB units, at least one unit), one tenant
    /// holding at most `tenant_share` percent of it.
    pub(crate) fn new(limit: u64, tenant_share: u8) -> Self {
        let total_units = u32::try_from(limit / UNIT).unwrap_or(u32::MAX).max(1);
        let tenant_units = u32::try_from(share_of(u64::from(total_units), tenant_share)).unwrap_or(total_units);
        Self {
            sem: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            fill_limit_units: total_units / 4,
            fill_units: Arc::new(AtomicU64::new(0)),
            tenant_units,
            tenants: Mutex::new(HashMap::new()),
            in_use: Arc::new(AtomicU64::new(0)),
            high_water: Arc::new(AtomicU64::new(0)),
            wait_us: AtomicU64::new(0),
        }
    }

    /// The budget in bytes.
    pub(crate) fn limit(&self) -> u64 {
        u64::from(self.total_units) * UNIT
    }

    /// Microseconds writers have waited for memory so far.
    pub(crate) fn wait_us(&self) -> u64 {
        self.wait_us.load(Ordering::Relaxed)
    }

    /// The share of tenant `name`, for its write sessions to hold.
    pub(crate) fn tenant(&self, name: &str) -> Arc<TenantMemory> {
        // A plain map updated in single statements: poisoning cannot leave it inconsistent.
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = map.get(name) {
            return t.clone();
        }
        // Shares of tenants no session holds any more (removed by a reload, or idle) go:
        // their units are all back, so a new entry loses nothing.
        map.retain(|_, t| Arc::strong_count(t) > 1);
        let t = Arc::new(TenantMemory {
            sem: Arc::new(Semaphore::new(self.tenant_units as usize)),
            fill_units: Arc::new(AtomicU64::new(0)),
        });
        map.insert(name.to_owned(), t.clone());
        t
    }

    /// Wait until `bytes` fit in the budget and in `tenant`'s share, and take them.
    ///
    /// A request larger than what fill buffers leave free (a grown part of a huge file)
    /// waits until it can take all of that, i.e. it runs alone (within its tenant's share);
    /// it is the only way memory exceeds the limit, by at most that one buffer.
    pub(crate) async fn acquire(&self, tenant: &TenantMemory, bytes: u64) -> MemoryPermit {
        let most = (self.total_units - self.fill_limit_units).min(self.tenant_units - self.tenant_units / 4);
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, most.max(1));
        // The semaphores are never closed; if one were, proceeding unaccounted beats hanging.
        // Timed only when it waits (the free path stays two atomic operations), and always
        // in the order tenant share, then mount: a writer waiting for its share holds nothing.
        let started = std::time::Instant::now();
        let (mine, permit, waited) = match tenant.sem.clone().try_acquire_many_owned(units) {
            Ok(m) => match self.sem.clone().try_acquire_many_owned(units) {
                Ok(p) => (Some(m), Some(p), false),
                Err(_) => (Some(m), self.sem.clone().acquire_many_owned(units).await.ok(), true),
            },
            Err(_) => {
                let m = tenant.sem.clone().acquire_many_owned(units).await.ok();
                (m, self.sem.clone().acquire_many_owned(units).await.ok(), true)
            }
        };
        if waited {
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.wait_us.fetch_add(us, Ordering::Relaxed);
        }
        self.charge(bytes);
        MemoryPermit {
            permit,
            tenant: mine,
            bytes,
            in_use: self.in_use.clone(),
            fill: None,
        }
    }

    fn charge(&self, bytes: u64) {
        let now = self.in_use.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.high_water.fetch_max(now, Ordering::Relaxed);
    }

    /// Take `bytes` for a fill buffer of `tenant` if they are free now and fill buffers stay
    /// within their share (of the mount and of the tenant); never waits.
    pub(crate) fn try_acquire_fill(&self, tenant: &Arc<TenantMemory>, bytes: u64) -> Option<MemoryPermit> {
        let mut permit = MemoryPermit {
            permit: None,
            tenant: None,
            bytes: 0,
            in_use: self.in_use.clone(),
            fill: Some((self.fill_units.clone(), tenant.clone())),
        };
        self.try_grow_fill(&mut permit, bytes).then_some(permit)
    }

    /// Grow a fill buffer's permit to cover `bytes`; `false` (permit unchanged) if the
    /// memory is not free now or fill buffers would exceed their share.
    pub(crate) fn try_grow_fill(&self, permit: &mut MemoryPermit, bytes: u64) -> bool {
        if bytes <= permit.bytes {
            return true;
        }
        let Some((fill, tenant)) = permit.fill.clone() else {
            return false;
        };
        let tenant_fill = &tenant.fill_units;
        let have = permit.units();
        let want = bytes.div_ceil(UNIT);
        let extra = want.saturating_sub(have);
        if extra > 0 {
            let held = fill.fetch_add(extra, Ordering::Relaxed);
            let tenant_held = tenant_fill.fetch_add(extra, Ordering::Relaxed);
            let tenant_fill_limit = u64::from(self.tenant_units / 4);
            let taken = u32::try_from(extra)
                .ok()
                .filter(|_| {
                    fits(
                        extra,
                        tenant_held,
                        tenant_fill_limit,
                        held,
                        u64::from(self.fill_limit_units),
                    )
                })
                .and_then(|n| Some((tenant.sem.clone().try_acquire_many_owned(n).ok()?, n)))
                .and_then(|(t, n)| Some((t, self.sem.clone().try_acquire_many_owned(n).ok()?)));
            let Some((t, g)) = taken else {
                fill.fetch_sub(extra, Ordering::Relaxed);
                tenant_fill.fetch_sub(extra, Ordering::Relaxed);
                return false;
            };
            match &mut permit.permit {
                Some(p) => p.merge(g),
                None => permit.permit = Some(g),
            }
            match &mut permit.tenant {
                Some(p) => p.merge(t),
                None => permit.tenant = Some(t),
            }
        }
        self.charge(bytes - permit.bytes);
        permit.bytes = bytes;
        true
    }

    /// Bytes currently held by buffers.
    pub(crate) fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// The most bytes ever held at once.
    pub(crate) fn high_water(&self) -> u64 {
        self.high_water.load(Ordering::Relaxed)
    }
}

/// Byte accounting of the staging area: a hard limit, no waiting (full means `ENOSPC`), and
/// a tenant holds at most its share of it.
#[derive(Debug)]
pub(crate) struct StagingSpace {
    tenant_share: u8,
    used: Mutex<Used>,
}

#[derive(Debug, Default)]
struct Used {
    /// The limits, changed together under the lock by [`StagingSpace::set_limit`].
    limit: u64,
    tenant_limit: u64,
    total: u64,
    /// By tenant name; a tenant holding nothing has no entry.
    by_tenant: HashMap<String, u64>,
}

impl StagingSpace {
    /// A staging area of at most `limit` bytes, one tenant holding at most `tenant_share`
    /// percent of them.
    pub(crate) fn new(limit: u64, tenant_share: u8) -> Self {
        Self {
            tenant_share,
            used: Mutex::new(Used {
                limit,
                tenant_limit: share_of(limit, tenant_share),
                ..Used::default()
            }),
        }
    }

    /// Change the limit (and each tenant's share of it). Below what is reserved, new
    /// reservations are refused until enough is released; nothing reserved is taken back.
    pub(crate) fn set_limit(&self, limit: u64) {
        let mut used = self.used();
        used.limit = limit;
        used.tenant_limit = share_of(limit, self.tenant_share);
    }

    /// The limit in bytes.
    pub(crate) fn limit(&self) -> u64 {
        self.used().limit
    }

    fn used(&self) -> std::sync::MutexGuard<'_, Used> {
        // Plain counters updated together under the lock: poisoning is harmless.
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserve `bytes` for `tenant` if they fit under the limit and its share.
    pub(crate) fn try_reserve(&self, tenant: &str, bytes: u64) -> bool {
        let mut used = self.used();
        let held = used.by_tenant.get(tenant).copied().unwrap_or(0);
        if !fits(bytes, held, used.tenant_limit, used.total, used.limit) {
            return false;
        }
        used.total += bytes;
        *used.by_tenant.entry(tenant.to_owned()).or_default() += bytes;
        true
    }

    /// Return `bytes` `tenant` reserved earlier.
    pub(crate) fn release(&self, tenant: &str, bytes: u64) {
        let mut used = self.used();
        used.total = used.total.saturating_sub(bytes);
        if let Some(held) = used.by_tenant.get_mut(tenant) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                used.by_tenant.remove(tenant);
            }
        }
    }

    /// Bytes currently reserved.
    pub(crate) fn in_use(&self) -> u64 {
        self.used().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn acquire_waits_for_release() {
        let b = Arc::new(MemoryBudget::new(4 * UNIT, 100));
        let t = b.tenant("t");
        let p1 = b.acquire(&t, 3 * UNIT).await;
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire(&b2.tenant("t"), 2 * UNIT).await.bytes });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        assert_eq!(b.in_use(), 3 * UNIT);
        drop(p1);
        assert_eq!(waiter.await.unwrap(), 2 * UNIT);
        assert_eq!(b.in_use(), 0);
        assert_eq!(b.high_water(), 3 * UNIT);
    }

    #[tokio::test]
    async fn oversized_request_runs_alone() {
        let b = MemoryBudget::new(2 * UNIT, 100);
        let p = b.acquire(&b.tenant("t"), 10 * UNIT).await;
        assert_eq!(b.in_use(), 10 * UNIT);
        assert!(b.sem.available_permits() == 0);
        drop(p);
        assert_eq!(b.sem.available_permits(), 2);
    }

    #[tokio::test]
    async fn fill_buffers_keep_to_their_share_and_never_starve_a_waiter() {
        let b = Arc::new(MemoryBudget::new(16 * UNIT, 100));
        let t = b.tenant("t");
        // Fill buffers may hold a quarter: 4 units.
        let mut f1 = b.try_acquire_fill(&t, UNIT).unwrap();
        assert!(b.try_grow_fill(&mut f1, 3 * UNIT));
        assert!(b.try_acquire_fill(&t, 2 * UNIT).is_none(), "past the fill share");
        let f2 = b.try_acquire_fill(&t, UNIT).unwrap();
        assert!(!b.try_grow_fill(&mut f1, 4 * UNIT));
        assert_eq!(b.in_use(), 4 * UNIT);
        // Idle fill buffers hold 4 units; a waiter asking for everything is clamped to the
        // 12 units fill buffers can never hold, so it gets them.
        let whole = tokio::time::timeout(Duration::from_secs(5), b.acquire(&t, 16 * UNIT))
            .await
            .expect("waiter must not wait on idle fill buffers");
        assert_eq!(b.sem.available_permits(), 0);
        drop(whole);
        // A sealed fill buffer leaves the fill share at once; its memory stays held.
        let sealed = f1.into_in_flight();
        assert!(b.try_acquire_fill(&t, 3 * UNIT).is_some());
        drop((sealed, f2));
        assert_eq!(b.in_use(), 0);
        assert_eq!(b.sem.available_permits(), 16);
        assert_eq!(b.fill_units.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn staging_refuses_past_limit() {
        let s = StagingSpace::new(100, 100);
        assert!(s.try_reserve("t", 60));
        assert!(!s.try_reserve("t", 41));
        assert!(s.try_reserve("t", 40));
        s.release("t", 50);
        assert_eq!(s.in_use(), 50);
    }

    #[test]
    fn a_tenant_holds_at_most_its_share_of_staging() {
        let s = StagingSpace::new(100, 50);
        assert!(s.try_reserve("a", 50));
        assert!(!s.try_reserve("a", 1), "past a's share");
        assert!(s.try_reserve("b", 50), "b finds its share free");
        assert!(!s.try_reserve("c", 1), "past the whole area");
        s.release("a", 50);
        assert!(s.try_reserve("c", 10));
        assert!(!s.used().by_tenant.contains_key("a"), "an empty tenant leaves no entry");
    }

    #[tokio::test]
    async fn a_tenant_holding_its_share_of_memory_leaves_the_rest_to_others() {
        let b = Arc::new(MemoryBudget::new(16 * UNIT, 50));
        let (hung, other) = (b.tenant("hung"), b.tenant("other"));
        // The hung tenant's uploads never finish: a request is clamped to the 6 units its
        // fill buffers cannot hold (of its 8), and its fill buffers take at most 2.
        let held = b.acquire(&hung, 16 * UNIT).await;
        assert_eq!(held.units(), 6);
        let fill = b
            .try_acquire_fill(&hung, 2 * UNIT)
            .expect("within the tenant's fill share");
        assert!(b.try_acquire_fill(&hung, UNIT).is_none(), "past its fill share");
        let more = b.clone();
        let h2 = hung.clone();
        let waiting = tokio::spawn(async move { more.acquire(&h2, UNIT).await.units() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the hung tenant waits on its own share");
        // The other tenant gets its whole share at once.
        let mine = tokio::time::timeout(Duration::from_secs(5), b.acquire(&other, 6 * UNIT))
            .await
            .expect("another tenant never waits behind a hung one");
        let f = b.try_acquire_fill(&other, 2 * UNIT).expect("and its fill buffers");
        drop((mine, f, fill));
        drop(held);
        assert_eq!(waiting.await.unwrap(), 1);
        assert_eq!(b.sem.available_permits(), 16);
    }
}
