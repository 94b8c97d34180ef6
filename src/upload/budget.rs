//! Global accounting shared by all write sessions of a mount: the memory budget for part
//! buffers and the byte limit of the local staging area.
//!
//! Memory is only held by part buffers on their way to the backend (filled from staging,
//! released when the upload request finishes), never by idle sessions, so a writer waiting
//! for memory always waits for in-flight requests that finish on their own: many files open
//! for writing can never deadlock the budget or make it grow.

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
    in_use: Arc<AtomicU64>,
    high_water: Arc<AtomicU64>,
}

/// Memory held by one buffer; returned to the budget on drop.
#[derive(Debug)]
pub(crate) struct MemoryPermit {
    // `None` only if the semaphore was closed, which never happens (see `acquire`).
    _permit: Option<OwnedSemaphorePermit>,
    bytes: u64,
    in_use: Arc<AtomicU64>,
}

impl Drop for MemoryPermit {
    fn drop(&mut self) {
        self.in_use.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes (rounded down to 64 KiB units, at least one unit).
    pub(crate) fn new(limit: u64) -> Self {
        let total_units = u32::try_from(limit / UNIT).unwrap_or(u32::MAX).max(1);
        Self {
            sem: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            in_use: Arc::new(AtomicU64::new(0)),
            high_water: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Wait until `bytes` fit in the budget and take them.
    ///
    /// A request larger than the whole budget (a grown part of a huge file) waits until it
    /// can take the entire budget, i.e. it runs alone; it is the only way memory exceeds the
    /// limit, by at most that one buffer.
    pub(crate) async fn acquire(&self, bytes: u64) -> MemoryPermit {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_units);
        // The semaphore is never closed; if it were, proceeding unaccounted beats hanging.
        let permit = self.sem.clone().acquire_many_owned(units).await.ok();
        let now = self.in_use.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.high_water.fetch_max(now, Ordering::Relaxed);
        MemoryPermit {
            _permit: permit,
            bytes,
            in_use: self.in_use.clone(),
        }
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
