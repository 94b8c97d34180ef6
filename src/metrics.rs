//! Per-tenant counters: counted where the event happens, read by `byosfs status`.
//!
//! One registry per process ([`tenant`] returns the counters of a tenant *name*, so they
//! survive reloads that re-point or update the tenant). Counters are relaxed atomics: a
//! status is a snapshot of independent counters, never a consistent cut, which is what a
//! monitoring view needs and costs one uncontended add per event. Names of the quantities are
//! constants here so every reader (status, a future exporter) uses the same ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Requests sent to a tenant's storage (after its prefix, before retries).
pub const BACKEND_REQUESTS: &str = "backend_requests";
/// Of those, failed (not-found answers are not failures: a miss is an answer).
pub const BACKEND_FAILURES: &str = "backend_failures";
/// Object bytes received from storage (reads and read-ahead).
pub const BYTES_FETCHED: &str = "bytes_fetched";
/// Bytes handed to readers.
pub const BYTES_SERVED: &str = "bytes_served";
/// Bytes sent to storage (single PUTs and multipart parts).
pub const BYTES_UPLOADED: &str = "bytes_uploaded";

/// One tenant's counters.
#[derive(Debug, Default)]
pub struct TenantMetrics {
    /// [`BACKEND_REQUESTS`].
    pub requests: AtomicU64,
    /// [`BACKEND_FAILURES`].
    pub failures: AtomicU64,
    /// [`BYTES_FETCHED`].
    pub bytes_fetched: AtomicU64,
    /// [`BYTES_SERVED`].
    pub bytes_served: AtomicU64,
    /// [`BYTES_UPLOADED`].
    pub bytes_uploaded: AtomicU64,
    /// Unix time (ms) of the last successful request; 0: none yet.
    last_success_ms: AtomicU64,
    /// The last failure: when (unix ms) and its error class.
    last_failure: Mutex<Option<(u64, String)>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl TenantMetrics {
    /// A request answered.
    pub fn success(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.last_success_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A request failed with an error of class `class`.
    pub fn failure(&self, class: &str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some((now_ms(), class.to_owned()));
    }

    /// Add `n` to a byte counter.
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Unix time (ms) of the last success, if any.
    pub fn last_success_ms(&self) -> Option<u64> {
        Some(self.last_success_ms.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// The last failure (unix ms, class), if any.
    pub fn last_failure(&self) -> Option<(u64, String)> {
        self.last_failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn registry() -> &'static RwLock<HashMap<String, Arc<TenantMetrics>>> {
    static REGISTRY: OnceLock<RwLock<HashMap<String, Arc<TenantMetrics>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The counters of tenant `name` (created on first use).
pub fn tenant(name: &str) -> Arc<TenantMetrics> {
    if let Some(m) = registry().read().unwrap_or_else(|e| e.into_inner()).get(name) {
        return m.clone();
    }
    registry()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.to_owned())
        .or_default()
        .clone()
}

/// Milliseconds since the Unix epoch, as the `last_*` fields use.
pub fn unix_ms() -> u64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_belong_to_a_name_and_keep_the_last_failure() {
        let a = tenant("metrics-test-a");
        a.success();
        a.failure("Timeout");
        TenantMetrics::add(&a.bytes_served, 10);
        let again = tenant("metrics-test-a");
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(again.requests.load(Ordering::Relaxed), 2);
        assert_eq!(again.failures.load(Ordering::Relaxed), 1);
        assert_eq!(again.bytes_served.load(Ordering::Relaxed), 10);
        assert!(again.last_success_ms().is_some());
        assert_eq!(again.last_failure().map(|f| f.1).as_deref(), Some("Timeout"));
        assert!(tenant("metrics-test-b").last_failure().is_none());
    }
}
