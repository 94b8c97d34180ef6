//! Pure part arithmetic: which bytes of a file belong to which multipart part.
//!
//! The layout is a function of the configured base part size only, never of the file's
//! final size, which is unknown while the writer streams: part `i` always covers the same
//! byte range, so a part uploaded early stays valid however large the file grows.
//!
//! To stay under S3's 10,000-part limit without making small files use huge parts, the part
//! size doubles every [`PARTS_PER_TIER`] parts: parts 0..1000 have the base size, parts
//! 1000..2000 twice that, and so on (capped at [`MAX_PART_SIZE`]). With the default 8 MiB
//! base the layout holds ~8 TiB (more than S3's 5 TiB object limit); with the 5 MiB minimum
//! it holds ~4.9 TiB. Every part but the last of a file is a full layout part, so each is
//! at least [`MIN_PART_SIZE`] as S3 requires.
//!
//! Part indices here are 0-based; S3 part numbers are `index + 1`.

use crate::backend::{ByteRange, MultipartLimits, MAX_PARTS, MAX_PART_SIZE, MIN_PART_SIZE};

/// Number of consecutive parts sharing one size before the size doubles.
///
/// 1000 keeps files up to `1000 × base` (7.8 GiB at 8 MiB) on the base size, and 10 tiers
/// exactly fill the 10,000-part limit.
pub const PARTS_PER_TIER: u32 = 1000;

/// The fixed mapping between byte offsets and parts for one base part size, within one
/// store's multipart limits (S3's unless [`PartLayout::for_store`] says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLayout {
    base: u64,
    max_part: u64,
    max_parts: u32,
}

impl PartLayout {
    /// A layout with `base`-sized first parts within S3's limits; `None` unless
    /// `MIN_PART_SIZE <= base <= MAX_PART_SIZE`.
    pub fn new(base: u64) -> Option<Self> {
        (MIN_PART_SIZE..=MAX_PART_SIZE).contains(&base).then_some(Self {
            base,
            max_part: MAX_PART_SIZE,
            max_parts: MAX_PARTS,
        })
    }

    /// This layout as a store with `limits` allows it: the base part size clamped into the
    /// store's part-size range, its largest part and part count. `None` (no multipart
    /// uploads) keeps the layout as is: its parts then only organise local staging, and the
    /// object is sent by one streamed PUT.
    pub fn for_store(&self, limits: Option<MultipartLimits>) -> Self {
        let Some(l) = limits else { return *self };
        let max_part = l.max_part.max(1);
        Self {
            base: self.base.clamp(l.min_part.min(max_part).max(1), max_part),
            max_part,
            max_parts: l.max_parts.max(1),
        }
    }

    /// The layout's base part size.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Parts per tier: [`PARTS_PER_TIER`], or the store's whole part count if smaller.
    fn per_tier(&self) -> u32 {
        PARTS_PER_TIER.min(self.max_parts)
    }

    /// Number of tiers the part limit allows.
    fn tiers(&self) -> u32 {
        self.max_parts / self.per_tier()
    }

    fn tier_part_size(&self, tier: u32) -> u64 {
        // Capped at 32 doublings: far past any store's largest part, and no shift overflow.
        self.base.saturating_mul(1u64 << tier.min(32)).min(self.max_part)
    }

    fn tier_bytes(&self, tier: u32) -> u64 {
        u64::from(self.per_tier()).saturating_mul(self.tier_part_size(tier))
    }

    /// Size of part `idx` when it is not the last part of the file.
    pub fn part_size(&self, idx: u32) -> u64 {
        self.tier_part_size(idx / self.per_tier())
    }

    /// First byte of part `idx`. For `idx == max_parts` this is [`Self::capacity`].
    pub fn part_start(&self, idx: u32) -> u64 {
        let per_tier = self.per_tier();
        let tier = idx / per_tier;
        let full: u64 = (0..tier).map(|t| self.tier_bytes(t)).sum();
        full + u64::from(idx % per_tier) * self.tier_part_size(tier)
    }

    /// The full byte range of part `idx`.
    pub fn part_range(&self, idx: u32) -> ByteRange {
        let start = self.part_start(idx);
        ByteRange::new(start, start + self.part_size(idx))
    }

    /// Length of part `idx` in a file of `file_size` bytes (0 if the part lies past the end).
    pub fn part_len(&self, idx: u32, file_size: u64) -> u64 {
        let r = self.part_range(idx);
        r.end.min(file_size).saturating_sub(r.start)
    }

    /// The part holding byte `offset`, or `None` if it lies beyond [`Self::capacity`].
    pub fn part_index(&self, offset: u64) -> Option<u32> {
        let mut tier_start = 0u64;
        for tier in 0..self.tiers() {
            let bytes = self.tier_bytes(tier);
            if offset < tier_start + bytes {
                let within = (offset - tier_start) / self.tier_part_size(tier);
                let within = u32::try_from(within).ok()?;
                return Some(tier * self.per_tier() + within);
            }
            tier_start += bytes;
        }
        None
    }

    /// Number of parts of a file of `size` bytes (0 for an empty file), or `None` if too large.
    pub fn part_count(&self, size: u64) -> Option<u32> {
        match size {
            0 => Some(0),
            n => self.part_index(n - 1).map(|i| i + 1),
        }
    }

    /// Largest file size the layout can hold in its store's part count.
    pub fn capacity(&self) -> u64 {
        self.part_start(self.tiers() * self.per_tier())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use test_case::test_case;

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;
    const TIB: u64 = 1024 * GIB;

    #[test_case(MultipartLimits { min_part: MIB, max_part: 64 * MIB, max_parts: 50 } ; "few parts")]
    #[test_case(MultipartLimits { min_part: 16 * MIB, max_part: 4 * GIB, max_parts: 50_000 } ; "big minimum, many parts")]
    #[test_case(MultipartLimits { min_part: MIB, max_part: 6 * MIB, max_parts: 10_000 } ; "small maximum")]
    fn store_limits_bound_every_part(l: MultipartLimits) {
        let layout = PartLayout::new(8 * MIB).unwrap().for_store(Some(l));
        let count = layout.part_count(layout.capacity()).unwrap();
        assert!(count <= l.max_parts, "{count} parts");
        assert_eq!(layout.part_index(layout.capacity()), None);
        for idx in [0, 1, count / 2, count.saturating_sub(2), count - 1] {
            let size = layout.part_size(idx);
            assert!((l.min_part..=l.max_part).contains(&size), "part {idx}: {size}");
            assert_eq!(layout.part_index(layout.part_start(idx)), Some(idx));
        }
    }

    #[test]
    fn no_multipart_keeps_the_staging_layout() {
        let layout = PartLayout::new(8 * MIB).unwrap();
        assert_eq!(layout.for_store(None), layout);
        assert_eq!(layout.for_store(Some(MultipartLimits::S3)), layout);
    }

    #[test]
    fn rejects_out_of_range_base() {
        assert!(PartLayout::new(MIN_PART_SIZE - 1).is_none());
        assert!(PartLayout::new(MAX_PART_SIZE + 1).is_none());
        assert!(PartLayout::new(MIN_PART_SIZE).is_some());
    }

    #[test]
    fn first_tier_uses_base_size_then_doubles() {
        let l = PartLayout::new(8 * MIB).unwrap();
        assert_eq!(l.part_range(0), ByteRange::new(0, 8 * MIB));
        assert_eq!(l.part_size(999), 8 * MIB);
        assert_eq!(l.part_size(1000), 16 * MIB);
        assert_eq!(l.part_start(1000), 8000 * MIB);
        assert_eq!(l.part_size(2000), 32 * MIB);
        assert_eq!(l.part_index(8000 * MIB - 1), Some(999));
        assert_eq!(l.part_index(8000 * MIB), Some(1000));
        assert_eq!(l.part_index(8000 * MIB + 16 * MIB), Some(1001));
    }

    #[test]
    fn small_files_have_expected_part_counts() {
        let l = PartLayout::new(5 * MIB).unwrap();
        assert_eq!(l.part_count(0), Some(0));
        assert_eq!(l.part_count(1), Some(1));
        assert_eq!(l.part_count(5 * MIB), Some(1));
        assert_eq!(l.part_count(5 * MIB + 1), Some(2));
        assert_eq!(l.part_len(1, 5 * MIB + 1), 1);
        assert_eq!(l.part_len(2, 5 * MIB + 1), 0);
    }

    #[test]
    fn capacity_covers_s3_object_limit_with_default_size() {
        assert!(PartLayout::new(8 * MIB).unwrap().capacity() >= 5 * TIB);
        let min = PartLayout::new(MIN_PART_SIZE).unwrap();
        assert_eq!(min.capacity(), 1000 * 5 * MIB * 1023);
        assert_eq!(min.part_index(min.capacity()), None);
        assert_eq!(min.part_index(min.capacity() - 1), Some(MAX_PARTS - 1));
    }

    #[test_case(10 * GIB; "10 GiB")]
    #[test_case(100 * GIB; "100 GiB")]
    #[test_case(TIB; "1 TiB")]
    #[test_case(3 * TIB + 12345; "3 TiB odd")]
    #[test_case(5 * TIB; "5 TiB")]
    fn large_files_fit_in_part_limit(size: u64) {
        for base in [8 * MIB, 16 * MIB, 64 * MIB] {
            let l = PartLayout::new(base).unwrap();
            let n = l.part_count(size).unwrap();
            assert!((1..=MAX_PARTS).contains(&n), "{n} parts for {size}");
            // Parts tile the file exactly; every non-last part is a legal S3 part.
            let mut expect_start = 0;
            for i in 0..n {
                let r = l.part_range(i);
                assert_eq!(r.start, expect_start);
                assert!(r.len() >= MIN_PART_SIZE && r.len() <= MAX_PART_SIZE);
                expect_start = r.end;
            }
            assert!(expect_start >= size);
            assert!(l.part_len(n - 1, size) >= 1);
        }
    }

    proptest! {
        #[test]
        fn index_and_range_agree(base_mib in 5u64..200, offset in 0u64..(6 * TIB)) {
            let l = PartLayout::new(base_mib * MIB).unwrap();
            match l.part_index(offset) {
                Some(i) => {
                    let r = l.part_range(i);
                    prop_assert!(r.start <= offset && offset < r.end);
                }
                None => prop_assert!(offset >= l.capacity()),
            }
        }
    }
}
