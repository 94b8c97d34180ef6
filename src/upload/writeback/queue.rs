//! The write-back queue's decisions, without I/O: which closed file uploads next, what a
//! newer close of the same name does to an older one, when a failed upload is tried again,
//! and what a name's pending version is.
//!
//! Invariants:
//! - Per name (scope, key) at most two items: the one uploading (front, `in_flight`) and the
//!   newest closed version behind it. A newer close replaces a waiting item (its staged file
//!   is deleted by the caller): only the newest content needs to reach the bucket, and it
//!   must reach it after any older version, so a name never has two uploads at once.
//! - An item leaves only by [`Queue::done`] (uploaded) or [`Queue::cancel`] (unlinked, or
//!   replaced); a failure keeps it, with a later `not_before` (exponential backoff).
//! - Order: urgent items (someone waits: `fsync`, a rename) first, then by close order.
//!
//! Choosing the next item scans the waiting fronts (O(pending) per upload started); fine for
//! the tens of thousands of small files a `cp -r` queues.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What a name belongs to (the tenant binding's id).
pub(crate) type Scope = u64;

/// One closed version of a file waiting for (or in) its upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    /// Identifies the staged file.
    pub(crate) id: u64,
    /// Bytes of content.
    pub(crate) size: u64,
    /// Close order.
    seq: u64,
    /// Failed attempts so far.
    pub(crate) attempts: u32,
    /// Not to be tried before this (after a failure).
    pub(crate) not_before: Option<Instant>,
    pub(crate) in_flight: bool,
    /// Someone waits for it: goes before the rest, and a backoff is cut short.
    urgent: bool,
    /// Why the last attempt failed.
    pub(crate) last_error: Option<String>,
}

/// Retry timing after failed uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// Wait after the first failure.
    pub(crate) base: Duration,
    /// Longest wait.
    pub(crate) max: Duration,
}

impl Backoff {
    /// Wait before attempt `attempts + 1`, after `attempts` failures: base, 2×base, 4×base, ...
    /// up to `max`. No jitter: items fail independently, at the times their uploads ended.
    pub(crate) fn delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }
}

/// The queue of one mount.
#[derive(Debug)]
pub(crate) struct Queue {
    names: BTreeMap<(Scope, String), VecDeque<Item>>,
    by_id: HashMap<u64, (Scope, String)>,
    next_seq: u64,
    backoff: Backoff,
}

impl Queue {
    pub(crate) fn new(backoff: Backoff) -> Self {
        Self {
            names: BTreeMap::new(),
            by_id: HashMap::new(),
            next_seq: 0,
            backoff,
        }
    }

    /// Queue version `id` (`size` bytes) of `key`; returns the ids of older versions it
    /// replaces (never the one uploading).
    pub(crate) fn push(&mut self, scope: Scope, key: &str, id: u64, size: u64) -> Vec<u64> {
        self.next_seq += 1;
        let item = Item {
            id,
            size,
            seq: self.next_seq,
            attempts: 0,
            not_before: None,
            in_flight: false,
            urgent: false,
            last_error: None,
        };
        let slot = self.names.entry((scope, key.to_owned())).or_default();
        let mut replaced = Vec::new();
        // Keep an in-flight front; drop every waiting version (at most one). A waiter on the
        // dropped version now waits on this one.
        let mut urgent = false;
        while slot.back().is_some_and(|i| !i.in_flight) {
            if let Some(old) = slot.pop_back() {
                urgent |= old.urgent;
                self.by_id.remove(&old.id);
                replaced.push(old.id);
            }
        }
        slot.push_back(Item { urgent, ..item });
        self.by_id.insert(id, (scope, key.to_owned()));
        replaced
    }

    /// The next item to upload (marked in flight), if one is ready at `now`.
    pub(crate) fn next(&mut self, now: Instant) -> Option<u64> {
        let best = self
            .names
            .values()
            .filter_map(VecDeque::front)
            .filter(|i| !i.in_flight && i.not_before.is_none_or(|t| t <= now))
            .min_by_key(|i| (!i.urgent, i.seq))
            .map(|i| i.id)?;
        let item = self.item_mut(best)?;
        item.in_flight = true;
        Some(best)
    }

    /// When the earliest item held back by a backoff becomes ready.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.names
            .values()
            .filter_map(VecDeque::front)
            .filter(|i| !i.in_flight)
            .filter_map(|i| i.not_before)
            .min()
    }

    /// Upload `id` succeeded: it leaves the queue (a newer version of its name becomes ready).
    pub(crate) fn done(&mut self, id: u64) -> Option<Item> {
        let name = self.by_id.remove(&id)?;
        let slot = self.names.get_mut(&name)?;
        let pos = slot.iter().position(|i| i.id == id)?;
        let item = slot.remove(pos);
        if slot.is_empty() {
            self.names.remove(&name);
        }
        item
    }

    /// Upload `id` failed with `error` at `now`: it stays, tried again after the backoff
    /// (which is returned).
    pub(crate) fn failed(&mut self, id: u64, now: Instant, error: String) -> Option<Duration> {
        let backoff = self.backoff;
        let item = self.item_mut(id)?;
        item.in_flight = false;
        item.attempts = item.attempts.saturating_add(1);
        item.last_error = Some(error);
        let delay = backoff.delay(item.attempts);
        item.not_before = Some(now + delay);
        Some(delay)
    }

    /// Drop every version of `key` not uploading now (the file was unlinked); returns their
    /// ids, and whether a version is still uploading (the caller waits for it).
    pub(crate) fn cancel(&mut self, scope: Scope, key: &str) -> (Vec<u64>, bool) {
        let name = (scope, key.to_owned());
        let Some(slot) = self.names.get_mut(&name) else {
            return (Vec::new(), false);
        };
        let mut removed = Vec::new();
        slot.retain(|i| {
            if i.in_flight {
                true
            } else {
                removed.push(i.id);
                false
            }
        });
        let uploading = !slot.is_empty();
        if !uploading {
            self.names.remove(&name);
        }
        for id in &removed {
            self.by_id.remove(id);
        }
        (removed, uploading)
    }

    /// Someone waits for `key`: its versions go first, and a pending backoff ends now.
    pub(crate) fn urge(&mut self, scope: Scope, key: &str) {
        if let Some(slot) = self.names.get_mut(&(scope, key.to_owned())) {
            for i in slot.iter_mut() {
                i.urgent = true;
                i.not_before = None;
            }
        }
    }

    /// The newest version of `key`: what the file holds for readers of this mount.
    pub(crate) fn newest(&self, scope: Scope, key: &str) -> Option<&Item> {
        self.names.get(&(scope, key.to_owned())).and_then(VecDeque::back)
    }

    /// Every queued version of `key` (the uploading one first).
    pub(crate) fn versions(&self, scope: Scope, key: &str) -> impl Iterator<Item = &Item> {
        self.names.get(&(scope, key.to_owned())).into_iter().flatten()
    }

    /// The item `id`, if queued.
    pub(crate) fn item(&self, id: u64) -> Option<&Item> {
        let name = self.by_id.get(&id)?;
        self.names.get(name)?.iter().find(|i| i.id == id)
    }

    fn item_mut(&mut self, id: u64) -> Option<&mut Item> {
        let name = self.by_id.get(&id)?;
        self.names.get_mut(name)?.iter_mut().find(|i| i.id == id)
    }

    /// Keys of `scope` starting with `prefix`, with their newest version, in key order.
    pub(crate) fn under<'a>(&'a self, scope: Scope, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a Item)> + 'a {
        self.names
            .range((scope, prefix.to_owned())..)
            .take_while(move |((s, k), _)| *s == scope && k.starts_with(prefix))
            .filter_map(|((_, k), slot)| Some((k.as_str(), slot.back()?)))
    }

    /// Every queued item, with its name.
    pub(crate) fn items(&self) -> impl Iterator<Item = (Scope, &str, &Item)> {
        self.names
            .iter()
            .flat_map(|((s, k), slot)| slot.iter().map(move |i| (*s, k.as_str(), i)))
    }

    /// Items queued (all versions).
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Items uploading now.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.items().filter(|(_, _, i)| i.in_flight).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    #[test]
    fn uploads_in_close_order_one_per_name() {
        let mut q = Queue::new(B);
        let now = Instant::now();
        q.push(1, "a", 10, 5);
        q.push(1, "b", 11, 5);
        q.push(2, "a", 12, 5);
        assert_eq!(q.next(now), Some(10));
        assert_eq!(q.next(now), Some(11));
        assert_eq!(q.next(now), Some(12));
        assert_eq!(q.next(now), None);
        assert_eq!(q.in_flight(), 3);
        assert!(q.done(11).is_some());
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn a_newer_close_replaces_the_waiting_version_but_not_the_uploading_one() {
        let mut q = Queue::new(B);
        let now = Instant::now();
        q.push(1, "f", 1, 5);
        assert_eq!(q.push(1, "f", 2, 6), vec![1], "waiting version replaced");
        assert_eq!(q.newest(1, "f").map(|i| (i.id, i.size)), Some((2, 6)));
        assert_eq!(q.next(now), Some(2));
        // 2 uploads; 3 and then 4 wait behind it, 4 replacing 3.
        assert!(q.push(1, "f", 3, 7).is_empty());
        assert_eq!(q.push(1, "f", 4, 8), vec![3]);
        assert_eq!(q.next(now), None, "never two uploads of one name");
        assert_eq!(q.newest(1, "f").map(|i| i.id), Some(4), "readers see the newest");
        q.done(2);
        assert_eq!(q.next(now), Some(4));
        q.done(4);
        assert!(q.newest(1, "f").is_none());
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn failures_back_off_exponentially_and_are_never_dropped() {
        let mut q = Queue::new(B);
        let t0 = Instant::now();
        q.push(1, "f", 1, 5);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..9 {
            assert_eq!(q.next(now), Some(1));
            delays.push(q.failed(1, now, "503".into()).unwrap());
            assert_eq!(q.next(now), None, "held back until its backoff ends");
            now = q.next_wake().unwrap();
        }
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        let item = q.item(1).unwrap();
        assert_eq!((item.attempts, item.last_error.as_deref()), (9, Some("503")));
        assert_eq!(q.next(now), Some(1));
        assert!(q.done(1).is_some());
    }

    #[test]
    fn urgent_items_go_first_and_skip_their_backoff() {
        let mut q = Queue::new(B);
        let now = Instant::now();
        q.push(1, "a", 1, 1);
        q.push(1, "b", 2, 1);
        q.push(1, "c", 3, 1);
        assert_eq!(q.next(now), Some(1));
        q.failed(1, now, "x".into());
        q.urge(1, "c");
        assert_eq!(q.next(now), Some(3));
        q.urge(1, "a");
        assert_eq!(q.next(now), Some(1), "a waiter ends the backoff");
        assert_eq!(q.next(now), Some(2));
    }

    #[test]
    fn a_replacing_version_inherits_urgency() {
        let mut q = Queue::new(B);
        let now = Instant::now();
        q.push(1, "old", 1, 1);
        q.push(1, "f", 2, 1);
        q.urge(1, "f");
        q.push(1, "f", 3, 1);
        assert_eq!(q.next(now), Some(3));
    }

    #[test]
    fn cancel_drops_waiting_versions_and_reports_the_uploading_one() {
        let mut q = Queue::new(B);
        let now = Instant::now();
        q.push(1, "f", 1, 1);
        assert_eq!(q.cancel(1, "f"), (vec![1], false));
        assert_eq!(q.len(), 0);
        q.push(1, "f", 2, 1);
        q.next(now);
        q.push(1, "f", 3, 1);
        assert_eq!(q.cancel(1, "f"), (vec![3], true));
        assert_eq!(q.newest(1, "f").map(|i| i.id), Some(2));
        q.done(2);
        assert_eq!(q.cancel(1, "f"), (vec![], false));
        assert!(q.item(2).is_none() && q.item(3).is_none());
    }

    #[test]
    fn under_lists_a_prefix_of_one_scope() {
        let mut q = Queue::new(B);
        for (i, k) in ["d/a", "d/b/c", "d2/x", "e"].iter().enumerate() {
            q.push(1, k, i as u64, 1);
        }
        q.push(2, "d/z", 9, 1);
        let keys: Vec<&str> = q.under(1, "d/").map(|(k, _)| k).collect();
        assert_eq!(keys, ["d/a", "d/b/c"]);
        assert_eq!(q.under(1, "").count(), 4);
        assert_eq!(q.under(3, "").count(), 0);
    }
}
