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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    in_use: Arc<AtomicU64>,
    high_water: Arc<AtomicU64>,
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
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes (rounded down to 64 KiB units, at least one unit).
    pub(crate) fn new(limit: u64) -> Self {
        let total_units = u32::try_from(limit / UNIT).unwrap_or(u32::MAX).max(1);
        Self {
            sem: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            fill_limit_units: total_units / 4,
            fill_units: Arc::new(AtomicU64::new(0)),
            in_use: Arc::new(AtomicU64::new(0)),
            high_water: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Wait until `bytes` fit in the budget and take them.
    ///
    /// A request larger than what fill buffers leave free (a grown part of a huge file)
    /// waits until it can take all of that, i.e. it runs alone; it is the only way memory
    /// exceeds the limit, by at most that one buffer.
    pub(crate) async fn acquire(&self, bytes: u64) -> MemoryPermit {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, (self.total_units - self.fill_limit_units).max(1));
        // The semaphore is never closed; if it were, proceeding unaccounted beats hanging.
        let permit = self.sem.clone().acquire_many_owned(units).await.ok();
        self.charge(bytes);
        MemoryPermit {
            permit,
            bytes,
            in_use: self.in_use.clone(),
            fill: None,
        }
    }

    fn charge(&self, bytes: u64) {
        let now = self.in_use.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.high_water.fetch_max(now, Ordering::Relaxed);
    }

    /// Take `bytes` for a fill buffer if they are free now and fill buffers stay within
    /// their share; never waits.
    pub(crate) fn try_acquire_fill(&self, bytes: u64) -> Option<MemoryPermit> {
        let mut permit = MemoryPermit {
            permit: None,
            bytes: 0,
            in_use: self.in_use.clone(),
            fill: Some(self.fill_units.clone()),
        };
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
            let limit = u64::from(self.fill_limit_units);
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
    limit: u64,
    used: Mutex<u64>,
}

impl StagingSpace {
    /// A staging area of at most `limit` bytes.
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            used: Mutex::new(0),
        }
    }

    fn used(&self) -> std::sync::MutexGuard<'_, u64> {
        // The guarded value is a plain counter, always consistent: poisoning is harmless.
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserve `bytes` if they fit under the limit.
    pub(crate) fn try_reserve(&self, bytes: u64) -> bool {
        let mut used = self.used();
        if used.saturating_add(bytes) > self.limit {
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
