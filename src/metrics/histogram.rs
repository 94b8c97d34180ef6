//! A latency histogram of fixed buckets kept in relaxed atomics: recording is a short scan of
//! 13 bounds and three uncontended adds, with no lock and no allocation, so it can sit on the
//! read path. The buckets span what object storage answers in (1 ms on loopback to 10 s for a
//! stalled endpoint).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (Prometheus `le`); a last `+Inf` bucket is implied.
pub const BOUNDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The same bounds in microseconds, compared against on each record.
const BOUNDS_US: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// See the module docs.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; 14],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A copy of a histogram's state, cumulative as Prometheus writes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistogramSnapshot {
    /// Observations at or below each bound of [`BOUNDS`], then all of them (`+Inf`).
    pub cumulative: Vec<u64>,
    /// Sum of observations, in microseconds.
    pub sum_us: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Record one observation.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let idx = BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(BOUNDS_US.len());
        if let Some(b) = self.buckets.get(idx) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The current state (a snapshot of independent counters, as every metric here).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum_us: self.sum_us.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.record(Duration::from_micros(500));
        h.record(Duration::from_millis(1));
        h.record(Duration::from_millis(30));
        h.record(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.cumulative.len(), BOUNDS.len() + 1);
        assert_eq!(s.cumulative[0], 2, "0.5 ms and 1 ms are <= 1 ms");
        assert_eq!(s.cumulative[4], 2, "nothing else <= 25 ms");
        assert_eq!(s.cumulative[5], 3, "30 ms <= 50 ms");
        assert_eq!(s.cumulative[12], 3, "60 s is above 10 s");
        assert_eq!(s.cumulative[13], 4, "+Inf holds everything");
        assert_eq!(s.sum_us, 500 + 1_000 + 30_000 + 60_000_000);
    }
}
