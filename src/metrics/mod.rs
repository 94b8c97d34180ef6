//! Metrics as a facility: counted where the event happens, read by `byosfs status` and the
//! Prometheus endpoint ([`exporter`]).
//!
//! Names and help texts are in [`defs`] (one list). Storage is plain relaxed atomics:
//! - per tenant *name* ([`tenant`] returns its [`TenantMetrics`], so counters survive reloads
//!   that re-point or update the tenant): storage requests by operation and outcome, error
//!   classes, bytes fetched, served and uploaded, reads answered from memory or not,
//!   read-ahead never served, first-byte and part-upload latency;
//! - per process: FUSE requests by operation and errors by errno ([`fuse_request`],
//!   [`fuse_error`]), retries by backend type ([`retried`]);
//! - the mount's budgets (cache, write memory, staging) are read from their owners at scrape
//!   time, not mirrored here.
//!
//! A counter update is one uncontended atomic add on a structure the caller already holds;
//! a status or scrape is a snapshot of independent counters, never a consistent cut, which is
//! what a monitoring view needs. Only failures (rare) take a lock, to keep their class.

pub mod defs;
pub mod exporter;
pub mod histogram;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use defs::{BackendOp, FUSE_OPS};
pub use histogram::Histogram;

/// Backend types, as the `backend` label names them.
pub const BACKEND_TYPES: [&str; 6] = ["unknown", "s3", "local", "webdav", "azblob", "gcs"];

/// Successful and failed requests of one storage operation.
#[derive(Debug, Default)]
pub struct OpCounts {
    /// Answered (a not-found or a lost precondition is an answer).
    pub ok: AtomicU64,
    /// Failed.
    pub failed: AtomicU64,
}

/// One tenant's counters.
#[derive(Debug, Default)]
pub struct TenantMetrics {
    /// Requests sent to its storage (after its prefix, before retries).
    pub requests: AtomicU64,
    /// Of those, failed (not-found answers are not failures: a miss is an answer).
    pub failures: AtomicU64,
    /// Per operation, indexed like [`BackendOp::ALL`].
    pub ops: [OpCounts; 13],
    /// [`defs::BYTES_FETCHED`].
    pub bytes_fetched: AtomicU64,
    /// [`defs::BYTES_SERVED`].
    pub bytes_served: AtomicU64,
    /// [`defs::BYTES_UPLOADED`].
    pub bytes_uploaded: AtomicU64,
    /// [`defs::READAHEAD_WASTED`].
    pub readahead_wasted: AtomicU64,
    /// [`defs::CACHE_HITS`].
    pub cache_hits: AtomicU64,
    /// [`defs::CACHE_MISSES`].
    pub cache_misses: AtomicU64,
    /// [`defs::GET_FIRST_BYTE`].
    pub first_byte: Histogram,
    /// [`defs::PART_UPLOAD`].
    pub part_upload: Histogram,
    /// Index into [`BACKEND_TYPES`] of the storage it is on now.
    backend_type: AtomicU8,
    /// Unix time (ms) of the last successful request; 0: none yet.
    last_success_ms: AtomicU64,
    /// The last failure: when (unix ms) and its error class.
    last_failure: Mutex<Option<(u64, String)>>,
    /// Failures by error class.
    errors: Mutex<BTreeMap<String, u64>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn op_index(op: BackendOp) -> usize {
    BackendOp::ALL.iter().position(|&o| o == op).unwrap_or(0)
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
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(class.to_owned())
            .or_default() += 1;
    }

    /// Operation `op` was answered (`ok`) or failed with `class`.
    pub fn request(&self, op: BackendOp, outcome: Result<(), &str>) {
        let c = &self.ops[op_index(op)];
        match outcome {
            Ok(()) => {
                c.ok.fetch_add(1, Ordering::Relaxed);
                self.success();
            }
            Err(class) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                self.failure(class);
            }
        }
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

    /// Failures so far by error class.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The tenant's storage is of type `t` (one of [`BACKEND_TYPES`]) from now on.
    pub fn set_backend_type(&self, t: &str) {
        let idx = BACKEND_TYPES.iter().position(|&x| x == t).unwrap_or(0);
        self.backend_type
            .store(u8::try_from(idx).unwrap_or(0), Ordering::Relaxed);
    }

    /// The `backend` label: the type of the tenant's storage.
    pub fn backend_type(&self) -> &'static str {
        BACKEND_TYPES
            .get(usize::from(self.backend_type.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or("unknown")
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

/// Every tenant that has counters (also tenants removed by a reload: their counters stay,
/// as Prometheus expects of a counter), in name order.
pub fn tenants() -> Vec<(String, Arc<TenantMetrics>)> {
    let mut v: Vec<_> = registry()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Milliseconds since the Unix epoch, as the `last_*` fields use.
pub fn unix_ms() -> u64 {
    now_ms()
}

/// Process-wide counters (FUSE requests have no tenant until they are resolved, and a
/// backend's retry layer is shared by its tenants).
#[derive(Debug)]
struct Global {
    fuse: [AtomicU64; FUSE_OPS.len()],
    /// (op, errno) → count.
    fuse_errors: Mutex<BTreeMap<(&'static str, i32), u64>>,
    /// Per [`BACKEND_TYPES`] entry.
    retries: [AtomicU64; 3],
}

fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(|| Global {
        fuse: std::array::from_fn(|_| AtomicU64::new(0)),
        fuse_errors: Mutex::new(BTreeMap::new()),
        retries: Default::default(),
    })
}

fn fuse_op_label(op: &str) -> &'static str {
    FUSE_OPS.iter().find(|&&o| o == op).copied().unwrap_or("other")
}

/// A FUSE request of operation `op` arrived.
pub fn fuse_request(op: &str) {
    let idx = FUSE_OPS.iter().position(|&o| o == op).unwrap_or(FUSE_OPS.len() - 1);
    if let Some(c) = global().fuse.get(idx) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A FUSE request of operation `op` was answered with `errno`.
pub fn fuse_error(op: &str, errno: i32) {
    *global()
        .fuse_errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((fuse_op_label(op), errno))
        .or_default() += 1;
}

/// FUSE requests so far, per entry of [`FUSE_OPS`].
pub fn fuse_requests() -> Vec<(&'static str, u64)> {
    FUSE_OPS
        .iter()
        .zip(&global().fuse)
        .map(|(&op, c)| (op, c.load(Ordering::Relaxed)))
        .collect()
}

/// FUSE errors so far by (operation, errno).
pub fn fuse_errors() -> BTreeMap<(&'static str, i32), u64> {
    global().fuse_errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A storage request of a backend of type `backend_type` is being retried.
pub fn retried(backend_type: &str) {
    let idx = BACKEND_TYPES.iter().position(|&x| x == backend_type).unwrap_or(0);
    if let Some(c) = global().retries.get(idx) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Retries so far by backend type.
pub fn retries() -> Vec<(&'static str, u64)> {
    BACKEND_TYPES
        .iter()
        .zip(&global().retries)
        .map(|(&t, c)| (t, c.load(Ordering::Relaxed)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_belong_to_a_name_and_keep_the_last_failure() {
        let a = tenant("metrics-test-a");
        a.success();
        a.request(BackendOp::Get, Err("Timeout"));
        TenantMetrics::add(&a.bytes_served, 10);
        let again = tenant("metrics-test-a");
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(again.requests.load(Ordering::Relaxed), 2);
        assert_eq!(again.failures.load(Ordering::Relaxed), 1);
        assert_eq!(again.ops[op_index(BackendOp::Get)].failed.load(Ordering::Relaxed), 1);
        assert_eq!(again.errors().get("Timeout"), Some(&1));
        assert_eq!(again.bytes_served.load(Ordering::Relaxed), 10);
        assert!(again.last_success_ms().is_some());
        assert_eq!(again.last_failure().map(|f| f.1).as_deref(), Some("Timeout"));
        assert!(tenant("metrics-test-b").last_failure().is_none());
        assert_eq!(again.backend_type(), "unknown");
        again.set_backend_type("s3");
        assert_eq!(a.backend_type(), "s3");
    }

    #[test]
    fn unknown_fuse_operations_count_as_other() {
        let before = fuse_requests();
        fuse_request("lookup");
        fuse_request("made-up");
        fuse_error("made-up", libc::ENOENT);
        let after = fuse_requests();
        let get = |v: &[(&str, u64)], op: &str| v.iter().find(|(o, _)| *o == op).map_or(0, |x| x.1);
        assert!(get(&after, "lookup") > get(&before, "lookup"));
        assert!(get(&after, "other") > get(&before, "other"));
        assert!(fuse_errors().get(&("other", libc::ENOENT)).is_some_and(|&n| n >= 1));
    }
}
