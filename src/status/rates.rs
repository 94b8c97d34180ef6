//! Rates for `byosfs status`: the mount samples its counters once a second and reports the
//! change between the last two samples, so a single `status` call (and `--json`) already
//! carries requests per second and upload speeds, with no waiting in the client.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

/// How often the counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Named counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// When.
    pub at: Option<Instant>,
    /// Counter name (a tenant's requests, an upload's bytes) → value.
    pub values: HashMap<String, u64>,
}

/// The last two samples.
#[derive(Debug, Default)]
pub struct Rates {
    prev: Sample,
    last: Sample,
}

impl Rates {
    /// Take `sample` as the newest.
    pub fn push(&mut self, sample: Sample) {
        self.prev = std::mem::replace(&mut self.last, sample);
    }

    /// Change per second of counter `name` between the last two samples; `None` until both
    /// have it.
    pub fn per_second(&self, name: &str) -> Option<f64> {
        let (Some(t0), Some(t1)) = (self.prev.at, self.last.at) else {
            return None;
        };
        let (a, b) = (self.prev.values.get(name)?, self.last.values.get(name)?);
        let dt = t1.duration_since(t0).as_secs_f64();
        // Precision loss is irrelevant for a displayed rate.
        #[allow(clippy::cast_precision_loss)]
        let delta = b.saturating_sub(*a) as f64;
        (dt > 0.0).then(|| delta / dt)
    }
}

/// Something whose counters are sampled for rates.
pub trait Sampled: Send + Sync + 'static {
    /// Where the samples are kept.
    fn rates(&self) -> &Mutex<Rates>;
    /// The counters now, by name.
    fn sample(&self) -> HashMap<String, u64>;
}

/// Sample `owner` every [`SAMPLE_EVERY`] while it lives. Must run inside the tokio runtime.
pub fn spawn_sampler<T: Sampled>(owner: Weak<T>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(owner) = owner.upgrade() else { return };
            let sample = Sample {
                at: Some(Instant::now()),
                values: owner.sample(),
            };
            owner.rates().lock().unwrap_or_else(|e| e.into_inner()).push(sample);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_needs_two_samples_of_the_counter() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        let sample = |at: Instant, v: u64| Sample {
            at: Some(at),
            values: HashMap::from([("a".to_owned(), v)]),
        };
        r.push(sample(t0, 10));
        assert_eq!(r.per_second("a"), None);
        r.push(sample(t0 + Duration::from_secs(2), 30));
        assert_eq!(r.per_second("a"), Some(10.0));
        assert_eq!(r.per_second("b"), None);
    }
}
