//! A set of byte ranges held locally for one part: which bytes the writer has written.
//!
//! Invariant: ranges are sorted, non-empty, and neither overlap nor touch (touching ranges
//! are merged), so sequential writes keep a single range and the covered length is exact.

/// Sorted, disjoint, non-adjacent half-open ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Extents {
    ranges: Vec<(u64, u64)>,
}

impl Extents {
    /// Total bytes covered.
    pub(crate) fn covered(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Whether no byte is covered.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Bytes of `[start, end)` not yet covered (what inserting it would add).
    pub(crate) fn uncovered_in(&self, start: u64, end: u64) -> u64 {
        let overlap: u64 = self.overlapping(start, end).map(|(s, e)| e - s).sum();
        end.saturating_sub(start) - overlap
    }

    /// Whether every byte of `[start, end)` is covered.
    pub(crate) fn covers(&self, start: u64, end: u64) -> bool {
        self.uncovered_in(start, end) == 0
    }

    /// Add `[start, end)`; returns the number of newly covered bytes.
    pub(crate) fn insert(&mut self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let added = self.uncovered_in(start, end);
        // Ranges that overlap or touch the new one are merged into it.
        let first = self.ranges.partition_point(|&(_, e)| e < start);
        let last = self.ranges.partition_point(|&(s, _)| s <= end);
        let mut merged = (start, end);
        if first < last {
            merged.0 = merged.0.min(self.ranges[first].0);
            merged.1 = merged.1.max(self.ranges[last - 1].1);
        }
        self.ranges.splice(first..last, [merged]);
        added
    }

    /// Drop everything at or beyond `len`; returns the number of bytes no longer covered.
    pub(crate) fn truncate(&mut self, len: u64) -> u64 {
        let before = self.covered();
        self.ranges.retain(|&(s, _)| s < len);
        if let Some(last) = self.ranges.last_mut() {
            last.1 = last.1.min(len);
        }
        before - self.covered()
    }

    /// The covered parts of `[start, end)`, clipped to it, in order.
    pub(crate) fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let first = self.ranges.partition_point(|&(_, e)| e <= start);
        self.ranges[first..]
            .iter()
            .take_while(move |&&(s, _)| s < end)
            .map(move |&(s, e)| (s.max(start), e.min(end)))
    }

    /// The smallest range containing every uncovered byte of `[start, end)`, if any.
    pub(crate) fn gap_hull(&self, start: u64, end: u64) -> Option<(u64, u64)> {
        let mut first_gap = None;
        let mut last_gap_end = start;
        let mut pos = start;
        for (s, e) in self.overlapping(start, end) {
            if s > pos {
                first_gap.get_or_insert(pos);
                last_gap_end = s;
            }
            pos = e;
        }
        if pos < end {
            first_gap.get_or_insert(pos);
            last_gap_end = end;
        }
        first_gap.map(|g| (g, last_gap_end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_touching_and_overlapping_ranges() {
        let mut x = Extents::default();
        assert_eq!(x.insert(0, 10), 10);
        assert_eq!(x.insert(10, 20), 10);
        assert_eq!(x.ranges, vec![(0, 20)]);
        assert_eq!(x.insert(30, 40), 10);
        assert_eq!(x.insert(15, 35), 10);
        assert_eq!(x.ranges, vec![(0, 40)]);
        assert!(x.covers(0, 40));
        assert_eq!(x.truncate(25), 15);
        assert_eq!(x.ranges, vec![(0, 25)]);
    }

    #[test]
    fn gap_hull_spans_first_to_last_gap() {
        let mut x = Extents::default();
        x.insert(10, 20);
        x.insert(30, 40);
        assert_eq!(x.gap_hull(0, 50), Some((0, 50)));
        assert_eq!(x.gap_hull(10, 40), Some((20, 30)));
        assert_eq!(x.gap_hull(12, 18), None);
        assert_eq!(x.gap_hull(15, 35), Some((20, 30)));
        assert_eq!(x.overlapping(15, 35).collect::<Vec<_>>(), vec![(15, 20), (30, 35)]);
    }

    proptest! {
        #[test]
        fn matches_a_bitmap(ops in proptest::collection::vec((0u64..200, 0u64..40), 1..40), cut in 0u64..260) {
            let mut x = Extents::default();
            let mut bits = vec![false; 260];
            for (s, n) in ops {
                let added = x.insert(s, s + n);
                let mut fresh = 0;
                for b in &mut bits[s as usize..(s + n) as usize] {
                    if !*b { fresh += 1; *b = true; }
                }
                prop_assert_eq!(added, fresh);
            }
            prop_assert_eq!(x.covered(), bits.iter().filter(|b| **b).count() as u64);
            for w in x.ranges.windows(2) {
                prop_assert!(w[0].1 < w[1].0);
            }
            x.truncate(cut);
            for b in &mut bits[cut as usize..] { *b = false; }
            prop_assert_eq!(x.covered(), bits.iter().filter(|b| **b).count() as u64);
            let hull = x.gap_hull(0, 260);
            let first = bits.iter().position(|b| !*b).map(|p| p as u64);
            prop_assert_eq!(hull.map(|h| h.0), first);
        }
    }
}
