//! [`Fill`]: the in-memory buffer of a part a writer is filling.
//!
//! Sequential writers (cp, dd, tar, ffmpeg's muxer) fill one part at a time. Their bytes go
//! into a fill buffer instead of the staging file; when the part is complete the buffer is
//! written to staging once, with `O_DIRECT` (no page-cache copy, no dirty pages competing
//! with the rest of the machine), and uploaded from the same memory: no read-back. Small
//! files never touch the staging disk at all: the commit assembles them from memory.
//!
//! The buffer's data starts at a [`DIRECT_ALIGN`]-aligned address so the sealed part can be
//! written with `O_DIRECT` as it is. Its memory is charged to the budget as it grows, so a
//! small file holds little.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use super::budget::{MemoryBudget, MemoryPermit, TenantMemory};

/// Alignment of `O_DIRECT` buffers, offsets and lengths (the largest logical block size in
/// common use).
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// Memory is charged in steps of this much, so a writer does not take the budget's lock
/// for every small write.
const GROW_STEP: u64 = 1024 * 1024;

/// Bytes `[start, start + len)` of one part, held in memory.
#[derive(Debug)]
pub(super) struct Fill {
    buf: BytesMut,
    /// Offset of the first byte within the part.
    start: u64,
    /// Most bytes the buffer may hold (to the end of the part); its capacity never changes,
    /// so the data never moves and stays aligned.
    cap: u64,
    permit: MemoryPermit,
}

impl Fill {
    /// A buffer for bytes from `start` to at most `end` of a part, holding `data` at
    /// `start`; `None` when the memory is not free right now.
    pub(super) fn start(
        budget: &MemoryBudget,
        tenant: &Arc<TenantMemory>,
        start: u64,
        end: u64,
        data: &[u8],
    ) -> Option<Self> {
        let cap = end.checked_sub(start)?;
        let len = u64::try_from(data.len()).ok().filter(|l| *l <= cap)?;
        let permit = budget.try_acquire_fill(tenant, charge_for(len, cap))?;
        let cap_usize = usize::try_from(cap).ok()?;
        // Capacity is reserved, not touched: pages are faulted in as bytes arrive.
        let mut buf = BytesMut::with_capacity(cap_usize + DIRECT_ALIGN);
        let pad = buf.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        buf.resize(pad, 0);
        buf.advance(pad);
        buf.extend_from_slice(data);
        Some(Self {
            buf,
            start,
            cap,
            permit,
        })
    }

    /// First byte held (offset within the part).
    pub(super) fn first(&self) -> u64 {
        self.start
    }

    /// One past the last byte held.
    #[cfg(test)]
    fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Write `data` at part offset `at`, which must lie within or right after the bytes
    /// held. `false` (nothing written) if it does not, or if the memory is not free now.
    pub(super) fn try_write(&mut self, budget: &MemoryBudget, at: u64, data: &[u8]) -> bool {
        let Some(rel) = at.checked_sub(self.start).filter(|r| *r <= self.buf.len() as u64) else {
            return false;
        };
        let new_end = rel.saturating_add(data.len() as u64);
        if new_end > self.cap {
            return false;
        }
        let len = self.buf.len() as u64;
        if new_end > len && !budget.try_grow_fill(&mut self.permit, charge_for(new_end, self.cap)) {
            return false;
        }
        // In range: checked against the buffer length above, which fits in usize.
        let rel = rel as usize;
        let overlap = (self.buf.len() - rel).min(data.len());
        let (inside, beyond) = data.split_at(overlap);
        self.buf[rel..rel + overlap].copy_from_slice(inside);
        self.buf.extend_from_slice(beyond);
        true
    }

    /// Drop every byte at or beyond part offset `len`; `false` if nothing is left.
    pub(super) fn truncate(&mut self, len: u64) -> bool {
        let keep = len.saturating_sub(self.start).min(self.buf.len() as u64);
        // Fits: at most the current length.
        self.buf.truncate(keep as usize);
        !self.buf.is_empty()
    }

    /// Copy of the bytes at part offsets `[a, b)` (within what is held).
    pub(super) fn copy_range(&self, a: u64, b: u64) -> Bytes {
        let lo = a.saturating_sub(self.start).min(self.buf.len() as u64) as usize;
        let hi = b.saturating_sub(self.start).min(self.buf.len() as u64) as usize;
        Bytes::copy_from_slice(&self.buf[lo..hi.max(lo)])
    }

    /// The bytes held, frozen for upload and staging (no copy), and their memory.
    pub(super) fn seal(self) -> (Bytes, MemoryPermit) {
        (self.buf.freeze(), self.permit)
    }

    /// Undo [`Fill::seal`] of a buffer that could not be sent (copies only if the bytes are
    /// still shared, which a finished request does not do).
    pub(super) fn unseal(data: Bytes, permit: MemoryPermit, start: u64, cap: u64) -> Self {
        let buf = data.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        Self {
            buf,
            start,
            cap,
            permit,
        }
    }

    /// Size the buffer may grow to.
    pub(super) fn cap(&self) -> u64 {
        self.cap
    }
}

/// Memory to charge for a buffer of `len` bytes: rounded up to [`GROW_STEP`], at most `cap`.
fn charge_for(len: u64, cap: u64) -> u64 {
    len.div_ceil(GROW_STEP).saturating_mul(GROW_STEP).min(cap).max(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_overwrites_in_place_and_stays_aligned() {
        let budget = MemoryBudget::new(64 * 1024 * 1024, 100);
        let t = budget.tenant("t");
        let mut f = Fill::start(&budget, &t, 100, 100 + 3 * 1024 * 1024, b"hello").unwrap();
        assert_eq!((f.first(), f.end()), (100, 105));
        assert!(f.try_write(&budget, 105, b" world"));
        assert!(f.try_write(&budget, 100, b"J"));
        assert!(f.try_write(&budget, 109, b"d!!!"), "overlaps the end and appends");
        assert_eq!(&f.copy_range(100, 113)[..], b"Jello word!!!");
        assert!(!f.try_write(&budget, 99, b"x"), "before the buffer");
        assert!(!f.try_write(&budget, 114, b"x"), "leaves a hole");
        assert!(!f.try_write(&budget, 100 + 3 * 1024 * 1024, b"x"), "past the part");
        assert_eq!(budget.in_use(), 1024 * 1024, "charged in steps");
        let big = vec![7u8; 2 * 1024 * 1024];
        assert!(f.try_write(&budget, f.end(), &big));
        assert_eq!(budget.in_use(), 3 * 1024 * 1024);
        assert!(f.truncate(102));
        assert_eq!(f.end(), 102);
        let (data, permit) = f.seal();
        assert_eq!(data.as_ptr() as usize % DIRECT_ALIGN, 0);
        assert_eq!(&data[..], b"Je");
        let f = Fill::unseal(data, permit, 100, 3 * 1024 * 1024);
        assert_eq!(&f.copy_range(100, 102)[..], b"Je");
        drop(f);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn refuses_when_the_fill_share_is_taken() {
        // A 4 MiB budget lets fill buffers hold 1 MiB.
        let budget = MemoryBudget::new(4 * 1024 * 1024, 100);
        let t = budget.tenant("t");
        let mut f = Fill::start(&budget, &t, 0, 8 * 1024 * 1024, &[1; 1000]).unwrap();
        assert!(Fill::start(&budget, &t, 0, 8 * 1024 * 1024, &[1; 10]).is_none());
        assert!(
            !f.try_write(&budget, 1000, &vec![0; 1024 * 1024]),
            "would exceed the share"
        );
        assert_eq!(f.end(), 1000, "a refused write changes nothing");
    }
}
