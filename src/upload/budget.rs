//! Global accounting shared by all write sessions of a mount: the memory budget for part
//! buffers and the byte limit of the local staging area.
//!
//! Memory is held by two kinds of buffers:
//! - buffers on their way to the backend (read from staging or sealed from a fill buffer),
//!   released when the upload request finishes;
//! - *fill* buffers: the part a writer is filling, kept in memory so a sequential writer's
//!   bytes go to the network without a round trip through the staging disk. A fill buffer
//!   lives as long as its writer keeps the file open, so fill buffers are taken only without
//!   waiting ([`MemoryBudget::try_acquire_fill`]) and together never hold more than a quarter
//!   of the budget.
//!
//! A writer waiting for memory ([`MemoryBudget::acquire`]) asks for at most the three
//! quarters fill buffers cannot hold, and everything else is held by requests that finish on
//! their own: many files open for writing can never deadlock the budget or make it grow.
//!
//! Both limits can change while writers run (a reload, [`MemoryBudget::resize`],
//! [`StagingSpace::set_limit`]). Growing the memory budget adds permits at once. Shrinking it
//! removes free permits now and records the rest as a *debt*, paid from permits as they are
//! returned (in flight requests drain; nothing is revoked). The debt only ever takes permits
//! no waiter was handed (the semaphore gives returned permits to waiters first) and leaves
//! what fill buffers hold beyond the new fill share, so every waiter, including one that
//! asked under the old limit, is still served by requests finishing: shrinking cannot
//! deadlock. Until the debt is paid, memory in use may exceed the new limit.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Granularity of the memory semaphore: permits are counted in 64 KiB units so that a
/// `u32` permit count covers any part size (up to 256 TiB).
const UNIT: u64 = 64 * 1024;

/// A byte budget that callers wait on (fairly, FIFO) when it is exhausted.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    sem: Arc<Semaphore>,
    limits: Arc<Limits>,
    /// Units held by fill buffers now.
    fill_units: Arc<AtomicU64>,
    in_use: Arc<AtomicU64>,
    high_water: Arc<AtomicU64>,
    /// Microseconds writers spent waiting in [`MemoryBudget::acquire`], in total.
    wait_us: AtomicU64,
}

/// The budget's current size, shared with its permits (they pay a shrink's debt on drop).
#[derive(Debug)]
struct Limits {
    total_units: AtomicU32,
    /// Most units fill buffers may hold together (a quarter of the total).
    fill_limit_units: AtomicU32,
    /// Permits still to remove after a shrink (see the module docs).
    debt_units: AtomicU64,
}

impl Limits {
    /// Remove free permits towards the debt, leaving what fill buffers hold beyond their
    /// (new) share in circulation.
    fn settle(&self, sem: &Semaphore, fill_units: &AtomicU64) {
        let debt = self.debt_units.load(Ordering::Relaxed);
        if debt == 0 {
            return;
        }
        let excess = fill_units
            .load(Ordering::Relaxed)
            .saturating_sub(u64::from(self.fill_limit_units.load(Ordering::Relaxed)));
        let free = u64::try_from(sem.available_permits()).unwrap_or(u64::MAX);
        let want = debt.min(free.saturating_sub(excess));
        if want == 0 {
            return;
        }
        // Claim the share of the debt first, so two settling threads never forget twice.
        let Ok(prev) = self
            .debt_units
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| Some(d.saturating_sub(want)))
        else {
            return;
        };
        let claimed = prev.min(want);
        let forgot = u64::try_from(sem.forget_permits(usize::try_from(claimed).unwrap_or(usize::MAX))).unwrap_or(0);
        if forgot < claimed {
            self.debt_units.fetch_add(claimed - forgot, Ordering::Relaxed);
        }
    }
}

fn units_of(limit: u64) -> u32 {
    u32::try_from(limit / UNIT).unwrap_or(u32::MAX).max(1)
}

/// Memory held by one buffer; returned to the budget on drop.
#[derive(Debug)]
pub(crate) struct MemoryPermit {
    // `None` only if the semaphore was closed, which never happens (see `acquire`).
    permit: Option<OwnedSemaphorePermit>,
    bytes: u64,
    in_use: Arc<AtomicU64>,
    /// Set while the permit backs a fill buffer: the fill counter to return its units to.
    fill: Option<Arc<AtomicU64>>,
    /// The budget's limits and fill counter, to pay a shrink's debt when this returns.
    limits: Arc<Limits>,
    fill_units: Arc<AtomicU64>,
}

impl MemoryPermit {
    fn units(&self) -> u64 {
        self.permit.as_ref().map_or(0, |p| p.num_permits() as u64)
    }

    /// The buffer stops being a fill buffer (it was sealed for upload): its memory now
    /// comes back on its own when the request finishes.
    pub(crate) fn into_in_flight(mut self) -> Self {
        if let Some(fill) = self.fill.take() {
            fill.fetch_sub(self.units(), Ordering::Relaxed);
        }
        self
    }
}

impl Drop for MemoryPermit {
    fn drop(&mut self) {
        self.in_use.fetch_sub(self.bytes, Ordering::Relaxed);
        if let Some(fill) = self.fill.take() {
            fill.fetch_sub(self.units(), Ordering::Relaxed);
        }
        if let Some(p) = self.permit.take() {
            let sem = p.semaphore().clone();
            // Returned first (to waiters, if any), then what is left may pay a debt.
            drop(p);
            self.limits.settle(&sem, &self.fill_units);
        }
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes (rounded down to 64 KiB units, at least one unit).
    pub(crate) fn new(limit: u64) -> Self {
        let total_units = units_of(limit);
        Self {
            sem: Arc::new(Semaphore::new(total_units as usize)),
            limits: Arc::new(Limits {
                total_units: AtomicU32::new(total_units),
                fill_limit_units: AtomicU32::new(total_units / 4),
                debt_units: AtomicU64::new(0),
            }),
            fill_units: Arc::new(AtomicU64::new(0)),
            in_use: Arc::new(AtomicU64::new(0)),
            high_water: Arc::new(AtomicU64::new(0)),
            wait_us: AtomicU64::new(0),
        }
    }

    /// Change the budget to `limit` bytes (see the module docs for a shrink).
    pub(crate) fn resize(&self, limit: u64) {
        let new = units_of(limit);
        let old = self.limits.total_units.swap(new, Ordering::Relaxed);
        self.limits.fill_limit_units.store(new / 4, Ordering::Relaxed);
        if new >= old {
            let grow = u64::from(new - old);
            let prev = self
                .limits
                .debt_units
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| Some(d.saturating_sub(grow)))
                .unwrap_or(0);
            let add = grow - prev.min(grow);
            self.sem.add_permits(usize::try_from(add).unwrap_or(0));
        } else {
            self.limits
                .debt_units
                .fetch_add(u64::from(old - new), Ordering::Relaxed);
            self.limits.settle(&self.sem, &self.fill_units);
        }
    }

    /// The budget in bytes.
    pub(crate) fn limit(&self) -> u64 {
        u64::from(self.limits.total_units.load(Ordering::Relaxed)) * UNIT
    }

    /// Microseconds writers have waited for memory, in total.
    pub(crate) fn wait_us(&self) -> u64 {
        self.wait_us.load(Ordering::Relaxed)
    }

    fn permit(&self, permit: Option<OwnedSemaphorePermit>, bytes: u64, fill: Option<Arc<AtomicU64>>) -> MemoryPermit {
        MemoryPermit {
            permit,
            bytes,
            in_use: self.in_use.clone(),
            fill,
            limits: self.limits.clone(),
            fill_units: self.fill_units.clone(),
        }
    }

    /// Wait until `bytes` fit in the budget and take them.
    ///
    /// A request larger than what fill buffers leave free (a grown part of a huge file)
    /// waits until it can take all of that, i.e. it runs alone; it is the only way memory
    /// exceeds the limit, by at most that one buffer.
    pub(crate) async fn acquire(&self, bytes: u64) -> MemoryPermit {
        let total = self.limits.total_units.load(Ordering::Relaxed);
        let fill_limit = self.limits.fill_limit_units.load(Ordering::Relaxed);
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, total.saturating_sub(fill_limit).max(1));
        let permit = match self.sem.clone().try_acquire_many_owned(units) {
            Ok(p) => Some(p),
            Err(_) => {
                // Timed only when it waits: the free path stays one atomic operation.
                let started = std::time::Instant::now();
                // The semaphore is never closed; if it were, proceeding unaccounted beats hanging.
                let p = self.sem.clone().acquire_many_owned(units).await.ok();
                let waited = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.wait_us.fetch_add(waited, Ordering::Relaxed);
                p
            }
        };
        self.charge(bytes);
        self.permit(permit, bytes, None)
    }

    fn charge(&self, bytes: u64) {
        let now = self.in_use.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.high_water.fetch_max(now, Ordering::Relaxed);
    }

    /// Take `bytes` for a fill buffer if they are free now and fill buffers stay within
    /// their share; never waits.
    pub(crate) fn try_acquire_fill(&self, bytes: u64) -> Option<MemoryPermit> {
        let mut permit = self.permit(None, 0, Some(self.fill_units.clone()));
        self.try_grow_fill(&mut permit, bytes).then_some(permit)
    }

    /// Grow a fill buffer's permit to cover `bytes`; `false` (permit unchanged) if the
    /// memory is not free now or fill buffers would exceed their share.
    pub(crate) fn try_grow_fill(&self, permit: &mut MemoryPermit, bytes: u64) -> bool {
        if bytes <= permit.bytes {
            return true;
        }
        let Some(fill) = &permit.fill else { return false };
        let have = permit.units();
        let want = bytes.div_ceil(UNIT);
        let extra = want.saturating_sub(have);
        if extra > 0 {
            let limit = u64::from(self.limits.fill_limit_units.load(Ordering::Relaxed));
            let claimed = fill.fetch_add(extra, Ordering::Relaxed) + extra;
            let taken = u32::try_from(extra)
                .ok()
                .filter(|_| claimed <= limit)
                .and_then(|n| self.sem.clone().try_acquire_many_owned(n).ok());
            let Some(taken) = taken else {
                fill.fetch_sub(extra, Ordering::Relaxed);
                return false;
            };
            match &mut permit.permit {
                Some(p) => p.merge(taken),
                None => permit.permit = Some(taken),
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

/// Byte accounting of the staging area: a hard limit, no waiting (full means `ENOSPC`).
#[derive(Debug)]
pub(crate) struct StagingSpace {
    limit: AtomicU64,
    used: Mutex<u64>,
}

impl StagingSpace {
    /// A staging area of at most `limit` bytes.
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit: AtomicU64::new(limit),
            used: Mutex::new(0),
        }
    }

    /// Change the limit. Below what is reserved, new reservations are refused until enough
    /// is released; nothing reserved is taken back.
    pub(crate) fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// The limit in bytes.
    pub(crate) fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    fn used(&self) -> std::sync::MutexGuard<'_, u64> {
        // The guarded value is a plain counter, always consistent: poisoning is harmless.
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserve `bytes` if they fit under the limit.
    pub(crate) fn try_reserve(&self, bytes: u64) -> bool {
        let mut used = self.used();
        if used.saturating_add(bytes) > self.limit.load(Ordering::Relaxed) {
            return false;
        }
        *used += bytes;
        true
    }

    /// Return `bytes` reserved earlier.
    pub(crate) fn release(&self, bytes: u64) {
        let mut used = self.used();
        *used = used.saturating_sub(bytes);
    }

    /// Bytes currently reserved.
    pub(crate) fn in_use(&self) -> u64 {
        *self.used()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn acquire_waits_for_release() {
        let b = Arc::new(MemoryBudget::new(4 * UNIT));
        let p1 = b.acquire(3 * UNIT).await;
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire(2 * UNIT).await.bytes });
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
        let b = MemoryBudget::new(2 * UNIT);
        let p = b.acquire(10 * UNIT).await;
        assert_eq!(b.in_use(), 10 * UNIT);
        assert!(b.sem.available_permits() == 0);
        drop(p);
        assert_eq!(b.sem.available_permits(), 2);
    }

    #[tokio::test]
    async fn fill_buffers_keep_to_their_share_and_never_starve_a_waiter() {
        let b = Arc::new(MemoryBudget::new(16 * UNIT));
        // Fill buffers may hold a quarter: 4 units.
        let mut f1 = b.try_acquire_fill(UNIT).unwrap();
        assert!(b.try_grow_fill(&mut f1, 3 * UNIT));
        assert!(b.try_acquire_fill(2 * UNIT).is_none(), "past the fill share");
        let f2 = b.try_acquire_fill(UNIT).unwrap();
        assert!(!b.try_grow_fill(&mut f1, 4 * UNIT));
        assert_eq!(b.in_use(), 4 * UNIT);
        // Idle fill buffers hold 4 units; a waiter asking for everything is clamped to the
        // 12 units fill buffers can never hold, so it gets them.
        let whole = tokio::time::timeout(Duration::from_secs(5), b.acquire(16 * UNIT))
            .await
            .expect("waiter must not wait on idle fill buffers");
        assert_eq!(b.sem.available_permits(), 0);
        drop(whole);
        // A sealed fill buffer leaves the fill share at once; its memory stays held.
        let sealed = f1.into_in_flight();
        assert!(b.try_acquire_fill(3 * UNIT).is_some());
        drop((sealed, f2));
        assert_eq!(b.in_use(), 0);
        assert_eq!(b.sem.available_permits(), 16);
        assert_eq!(b.fill_units.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_grown_budget_wakes_a_waiter_and_a_shrunk_one_drains_without_deadlock() {
        let b = Arc::new(MemoryBudget::new(8 * UNIT));
        let held = b.acquire(6 * UNIT).await;
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire(4 * UNIT).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        b.resize(16 * UNIT);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("growing wakes the waiter")
            .unwrap();
        assert!(b.wait_us() > 0, "the wait was timed");
        assert_eq!(b.limit(), 16 * UNIT);

        // Shrink below what is held: nothing is revoked, the debt is paid as permits return.
        b.resize(4 * UNIT);
        assert_eq!(b.sem.available_permits(), 0, "free permits went at once");
        // A waiter that asks under the new limit is served once enough drained.
        let b3 = b.clone();
        let small = tokio::spawn(async move { b3.acquire(2 * UNIT).await });
        drop(held);
        drop(got);
        let small = tokio::time::timeout(Duration::from_secs(5), small)
            .await
            .expect("a shrink never deadlocks a waiter")
            .unwrap();
        drop(small);
        assert_eq!(b.sem.available_permits(), 4, "the budget settled at its new size");
        assert_eq!(b.limits.debt_units.load(Ordering::Relaxed), 0);
        // Growing again cancels no more than the debt and adds the rest.
        b.resize(6 * UNIT);
        assert_eq!(b.sem.available_permits(), 6);
    }

    #[tokio::test]
    async fn a_waiter_queued_under_the_old_limit_is_served_after_a_shrink() {
        let b = Arc::new(MemoryBudget::new(16 * UNIT));
        let held = b.acquire(12 * UNIT).await;
        let b2 = b.clone();
        // Asks 12 units, more than the whole budget after the shrink below.
        let big = tokio::spawn(async move { b2.acquire(12 * UNIT).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.resize(4 * UNIT);
        drop(held);
        let big = tokio::time::timeout(Duration::from_secs(5), big)
            .await
            .expect("the returned permits go to the waiter, not the debt")
            .unwrap();
        drop(big);
        assert_eq!(b.sem.available_permits(), 4);
    }

    #[test]
    fn staging_limit_changes_apply_to_new_reservations() {
        let s = StagingSpace::new(100);
        assert!(s.try_reserve(80));
        s.set_limit(50);
        assert!(!s.try_reserve(1), "over the new limit");
        s.release(60);
        assert!(s.try_reserve(30));
        assert_eq!(s.limit(), 50);
    }

    #[test]
    fn staging_refuses_past_limit() {
        let s = StagingSpace::new(100);
        assert!(s.try_reserve(60));
        assert!(!s.try_reserve(41));
        assert!(s.try_reserve(40));
        s.release(50);
        assert_eq!(s.in_use(), 50);
    }
}
