//! Read-ahead policy: a pure state machine deciding, for each read on one open file, which
//! sequential *stream* it belongs to and which byte range should be fetched ahead of it.
//!
//! A handle keeps up to `max_streams` independent streams, each with the furthest offset read
//! (`next`), a window, and how far its read-ahead has been issued (`issued_to`). A read within
//! `sequential_tolerance` of a stream's `next` continues it: tolerance both ways absorbs the
//! kernel's parallel reads arriving out of order, and a read that advances the stream doubles its
//! window up to `max_window`. A read matching no stream starts a new one with the small initial
//! window, replacing the least recently used stream when all slots are taken. A new stream's
//! first read fetches only its own blocks: the window goes out with the read that continues the
//! stream, so the first byte after open or seek does not share the server with read-ahead that
//! a random reader never uses.
//!
//! Because each stream keeps its own window, two sequential readers interleaved on one handle
//! (audio and video of one file, an index at the end while the body streams) both keep large
//! windows instead of collapsing into small requests on every switch.
//!
//! No IO and no clock: the reader turns [`Plan`]s into GETs; tests drive the policy directly.

use crate::backend::ByteRange;

/// Identifies one stream of a [`ReadAheadPolicy`]; never reused within a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(u64);

/// Parameters of a [`ReadAheadPolicy`], already normalised by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyParams {
    /// Window of a new stream, in bytes.
    pub initial_window: u64,
    /// Largest window a stream grows to.
    pub max_window: u64,
    /// Largest single request; read-ahead is issued in steps of at most this size.
    pub max_request: u64,
    /// Number of streams kept per handle (at least 1).
    pub max_streams: usize,
    /// How far (either way) from a stream's position a read may start and still continue it.
    pub sequential_tolerance: u64,
    /// Block size: issued ranges end on block boundaries (or at the object's end) and start on
    /// one, except a stream's first range after an exact read (see [`Plan::prefetch`]).
    pub block_size: u64,
}

/// What the reader should do for one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The stream the read was assigned to.
    pub stream: StreamId,
    /// A stream evicted to make room for a new one; its read-ahead is no longer useful.
    pub replaced: Option<StreamId>,
    /// Bytes to fetch ahead (within the object, never overlapping a range issued earlier for
    /// the same stream). It covers the read itself when the read lies beyond what the stream
    /// had issued. Block-aligned, except the first range of a stream that began with an
    /// [`exact`](Plan::exact) read: it starts where that read ended, since the block's bytes
    /// before it were just fetched (the reader caches such a headless block as a tail).
    pub prefetch: Option<ByteRange>,
    /// The stream's window after this read.
    pub window: u64,
    /// Largest GET to split `prefetch` into: a quarter of the window (at least a block, at most
    /// `max_request`), so a ramping stream has several requests in flight instead of one. A
    /// single connection rarely carries a link's full bandwidth; S3 guidance is parallel ranges.
    pub request: u64,
    /// The read starts a stream and is at most half a block: fetch exactly its bytes, not
    /// whole blocks, and nothing ahead (`prefetch` is `None`). A lone small read (a database
    /// page, a probe after a seek) then costs what the application asked for; if the stream
    /// continues, the next read fetches the window from where this one ended.
    pub exact: bool,
    /// Blocks the stream has left behind by more than `sequential_tolerance`: whole blocks
    /// below its furthest read, each reported once. A continuing stream's kernel reads went
    /// through the page cache, so the reader may drop these from the block cache (a scan then
    /// does not flush blocks that random readers reuse).
    pub passed: Option<ByteRange>,
}

#[derive(Debug, Clone)]
struct Stream {
    id: StreamId,
    /// Furthest offset a read of this stream started at.
    head: u64,
    /// Furthest end of a read of this stream: where the next sequential read is expected.
    next: u64,
    window: u64,
    /// Where the stream was when its window last grew.
    grown_at: u64,
    /// Read-ahead has been issued for `[.., issued_to)`.
    issued_to: u64,
    /// Blocks below this were reported in [`Plan::passed`].
    passed_to: u64,
    last_used: u64,
}

/// Per-handle read-ahead state. See the module docs.
#[derive(Debug, Clone)]
pub struct ReadAheadPolicy {
    params: PolicyParams,
    object_size: u64,
    streams: Vec<Stream>,
    clock: u64,
    next_id: u64,
}

impl ReadAheadPolicy {
    /// A policy for an object of `object_size` bytes. Zero sizes in `params` are raised to the
    /// smallest sensible value (one block, one stream).
    pub fn new(params: PolicyParams, object_size: u64) -> Self {
        let block_size = params.block_size.max(1);
        let max_window = params.max_window.max(block_size);
        let params = PolicyParams {
            initial_window: params.initial_window.clamp(1, max_window),
            max_window,
            max_request: params.max_request.max(block_size),
            max_streams: params.max_streams.max(1),
            sequential_tolerance: params.sequential_tolerance,
            block_size,
        };
        Self {
            params,
            object_size,
            streams: Vec::new(),
            clock: 0,
            next_id: 0,
        }
    }

    /// The normalised parameters.
    pub fn params(&self) -> &PolicyParams {
        &self.params
    }

    /// Record a read of `[offset, end)` and decide what to fetch.
    pub fn on_read(&mut self, offset: u64, end: u64) -> Plan {
        self.clock += 1;
        let end = end.max(offset);
        let mut passed = None;
        let (idx, replaced, fresh) = match self.find(offset) {
            Some(i) => {
                let p = self.params;
                let s = &mut self.streams[i];
                if end > s.next {
                    // Grow only once the reader has consumed half a window since the last
                    // growth: the kernel splits one large read into many 128 KiB requests, and
                    // doubling on each would turn a single random 1 MiB read into a 64 MiB
                    // read-ahead.
                    if end - s.grown_at >= s.window / 2 {
                        s.window = s.window.saturating_mul(2).min(p.max_window);
                        s.grown_at = end;
                    }
                    s.next = end;
                }
                s.head = s.head.max(offset);
                // After a forward skip, nothing below the read is worth fetching for this stream.
                s.issued_to = s.issued_to.max(align_down(offset, p.block_size));
                // Reads arrive out of order up to the tolerance around the head: keep that much.
                let keep_from = align_down(s.head.saturating_sub(p.sequential_tolerance), p.block_size);
                if keep_from > s.passed_to {
                    passed = Some(ByteRange::new(s.passed_to, keep_from));
                    s.passed_to = keep_from;
                }
                (i, None, false)
            }
            None => {
                let (i, replaced) = self.start_stream(offset, end);
                (i, replaced, true)
            }
        };
        self.streams[idx].last_used = self.clock;
        let exact = fresh && end - offset <= self.params.block_size / 2;
        // An exact read issues nothing; its continuation fetches from where it ended, not from
        // its block's start: with 1 MiB blocks, re-fetching the block's head would delay the
        // second read after a seek by up to a block's transfer.
        let prefetch = if exact {
            self.streams[idx].issued_to = end.min(self.object_size);
            None
        } else {
            self.issue(idx, end, fresh)
        };
        let s = &self.streams[idx];
        let p = &self.params;
        let request = align_up((s.window / 4).max(1), p.block_size).min(p.max_request);
        Plan {
            stream: s.id,
            replaced,
            prefetch,
            window: s.window,
            request,
            exact,
            passed,
        }
    }

    /// The window of stream `id`, if it is still tracked.
    pub fn window(&self, id: StreamId) -> Option<u64> {
        self.streams.iter().find(|s| s.id == id).map(|s| s.window)
    }

    /// Ids of the tracked streams.
    pub fn stream_ids(&self) -> Vec<StreamId> {
        self.streams.iter().map(|s| s.id).collect()
    }

    /// The closest stream the read continues, if any.
    fn find(&self, offset: u64) -> Option<usize> {
        let tol = self.params.sequential_tolerance;
        self.streams
            .iter()
            .enumerate()
            .map(|(i, s)| (i, offset.abs_diff(s.next)))
            .filter(|&(_, d)| d <= tol)
            .min_by_key(|&(_, d)| d)
            .map(|(i, _)| i)
    }

    fn start_stream(&mut self, offset: u64, end: u64) -> (usize, Option<StreamId>) {
        let stream = Stream {
            id: StreamId(self.next_id),
            head: offset,
            next: end,
            window: self.params.initial_window,
            grown_at: offset,
            issued_to: align_down(offset, self.params.block_size),
            passed_to: align_down(offset, self.params.block_size),
            last_used: self.clock,
        };
        self.next_id += 1;
        if self.streams.len() < self.params.max_streams {
            self.streams.push(stream);
            return (self.streams.len() - 1, None);
        }
        let lru = self
            .streams
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.last_used)
            .map_or(0, |(i, _)| i);
        let old = std::mem::replace(&mut self.streams[lru], stream);
        (lru, Some(old.id))
    }

    /// Extend stream `idx`'s issued read-ahead towards `head + window`, in steps big enough to
    /// be worth a request: at least half the window or one full request, unless the current read
    /// (ending at `end`) is not covered yet, which must be fetched now. A `fresh` stream fetches
    /// only the read itself.
    fn issue(&mut self, idx: usize, end: u64, fresh: bool) -> Option<ByteRange> {
        let p = self.params;
        let size = self.object_size;
        let s = &mut self.streams[idx];
        let reach = if fresh {
            s.next
        } else {
            s.next.max(s.head.saturating_add(s.window))
        };
        let target = align_up(reach, p.block_size).min(size);
        if target <= s.issued_to {
            return None;
        }
        let pending = target - s.issued_to;
        let step = (s.window / 2).min(p.max_request).max(1);
        if end > s.issued_to || pending >= step {
            let mut target = target;
            if target < size && pending > p.max_request {
                // Issue whole requests only; the remainder waits to join the next one instead of
                // going out as a small fragment. Counted from the block boundary, so that a
                // headless first range does not leave every later one unaligned.
                let base = align_down(s.issued_to, p.block_size);
                let whole = base + (target - base) / p.max_request * p.max_request;
                target = whole.max(align_up(end, p.block_size).min(size));
            }
            let range = ByteRange::new(s.issued_to, target);
            s.issued_to = target;
            Some(range)
        } else {
            None
        }
    }
}

fn align_down(x: u64, block: u64) -> u64 {
    x - x % block
}

fn align_up(x: u64, block: u64) -> u64 {
    match x % block {
        0 => x,
        r => x.saturating_add(block - r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;

    fn params() -> PolicyParams {
        PolicyParams {
            initial_window: MIB,
            max_window: 64 * MIB,
            max_request: 8 * MIB,
            max_streams: 4,
            sequential_tolerance: 2 * MIB,
            block_size: MIB,
        }
    }

    fn policy() -> ReadAheadPolicy {
        ReadAheadPolicy::new(params(), 10 * 1024 * MIB)
    }

    /// [`policy`] with 128 KiB blocks (the default block size).
    fn policy_128k() -> ReadAheadPolicy {
        ReadAheadPolicy::new(
            PolicyParams {
                block_size: 128 * KIB,
                ..params()
            },
            10 * 1024 * MIB,
        )
    }

    #[test]
    fn one_large_random_read_does_not_ramp_the_window() {
        let mut p = policy();
        // The kernel splits a 1 MiB read into eight 128 KiB requests.
        let base = 300 * MIB;
        let mut issued = 0;
        for k in 0..8 {
            let plan = p.on_read(base + k * 128 * KIB, base + (k + 1) * 128 * KIB);
            issued += plan.prefetch.map_or(0, |r| r.len());
            assert!(
                plan.window <= 2 * MIB,
                "window {} after {} KiB",
                plan.window,
                (k + 1) * 128
            );
        }
        assert!(issued <= 3 * MIB, "{issued} bytes fetched for a 1 MiB read");
    }

    #[test]
    fn requests_are_a_quarter_window_between_a_block_and_max_request() {
        let mut p = policy();
        assert_eq!(p.on_read(0, 128 * KIB).request, MIB);
        let mut off = 128 * KIB;
        let mut last = None;
        while off < 200 * MIB {
            last = Some(p.on_read(off, off + 128 * KIB));
            off += 128 * KIB;
        }
        let last = last.unwrap();
        assert_eq!(last.window, 64 * MIB);
        assert_eq!(last.request, 8 * MIB, "capped at max_request");
        let mut q = ReadAheadPolicy::new(
            PolicyParams {
                initial_window: 4 * MIB,
                ..params()
            },
            10 * 1024 * MIB,
        );
        assert_eq!(q.on_read(0, 4096).request, MIB);
    }

    #[test]
    fn a_continuing_stream_reports_each_block_it_left_behind_once() {
        let mut p = policy_128k();
        let (tol, bs) = (2 * MIB, 128 * KIB);
        let start = 100 * MIB + 5 * KIB;
        let mut passed_to = None;
        let mut off = start;
        while off < start + 40 * MIB {
            let plan = p.on_read(off, off + bs);
            if off == start {
                assert_eq!(plan.passed, None, "a new stream has left nothing behind");
            }
            if let Some(r) = plan.passed {
                assert_eq!(r.start % bs, 0);
                assert_eq!(r.end % bs, 0);
                // Contiguous from the stream's first block, never overlapping.
                assert_eq!(r.start, passed_to.unwrap_or(start - start % bs), "{r:?}");
                assert!(r.end + tol <= off, "{r:?} is within the tolerance of {off}");
                passed_to = Some(r.end);
            }
            off += bs;
        }
        let head = off - bs;
        assert!(passed_to.unwrap() + tol + bs >= head, "{passed_to:?} lags {head}");
        // Random reads start new streams and leave nothing behind.
        let mut p = policy_128k();
        for k in 0..50u64 {
            let at = (k * 7919 % 97) * 37 * MIB;
            assert_eq!(p.on_read(at, at + 4 * KIB).passed, None);
        }
    }

    #[test]
    fn first_read_fetches_a_small_window() {
        let mut p = policy();
        let plan = p.on_read(0, MIB);
        assert_eq!(plan.replaced, None);
        assert_eq!(plan.window, MIB);
        assert_eq!(plan.prefetch, Some(ByteRange::new(0, MIB)));
    }

    #[test]
    fn a_new_stream_fetches_its_read_first_and_the_window_on_continuation() {
        let mut p = policy_128k();
        let at = 300 * MIB + 40 * KIB;
        let first = p.on_read(at, at + 96 * KIB);
        // Only the read's blocks: a random reader gets its bytes without read-ahead beside it.
        assert!(!first.exact);
        assert_eq!(first.prefetch, Some(ByteRange::new(300 * MIB, 300 * MIB + 256 * KIB)));
        let second = p.on_read(at + 96 * KIB, at + 224 * KIB);
        assert_eq!(second.stream, first.stream);
        let r = second.prefetch.unwrap();
        assert_eq!(r.start, 300 * MIB + 256 * KIB);
        assert!(r.end >= at + MIB, "the window goes out on the second read: {r:?}");
    }

    #[test]
    fn a_lone_small_read_is_exact_and_its_continuation_fetches_the_blocks() {
        let mut p = policy_128k();
        let at = 300 * MIB + 40 * KIB;
        let first = p.on_read(at, at + 4 * KIB);
        assert!(first.exact);
        assert_eq!(first.prefetch, None);
        // Up to half a block is exact; a larger first read is not.
        assert!(p.on_read(500 * MIB, 500 * MIB + 64 * KIB).exact);
        assert!(!p.on_read(700 * MIB, 700 * MIB + 68 * KIB).exact);
        let next = p.on_read(at + 4 * KIB, at + 8 * KIB);
        assert_eq!(next.stream, first.stream);
        assert!(!next.exact, "a continued stream is never exact");
        let r = next.prefetch.unwrap();
        assert_eq!(
            r.start,
            at + 4 * KIB,
            "the window starts where the lone read ended, not at its block: {r:?}"
        );
        assert!(r.end >= at + MIB);
        assert_eq!(r.end % (128 * KIB), 0, "and ends on a block boundary");
        // Later ranges are block-aligned again.
        let mut off = at + 8 * KIB;
        let mut issued = r.end;
        while off < at + 64 * MIB {
            let plan = p.on_read(off, off + 128 * KIB);
            if let Some(r) = plan.prefetch {
                assert_eq!(r.start, issued, "contiguous");
                assert_eq!(r.start % (128 * KIB), 0, "{r:?}");
                issued = r.end;
            }
            off += 128 * KIB;
        }
    }

    #[test]
    fn window_ramps_on_sequential_reads_up_to_max() {
        let mut p = policy();
        let first = p.on_read(0, 128 * KIB);
        let mut windows = vec![first.window];
        let mut off = 128 * KIB;
        let mut reached_max_at = None;
        for _ in 0..400 {
            let plan = p.on_read(off, off + 128 * KIB);
            assert_eq!(plan.stream, first.stream);
            if windows.last() != Some(&plan.window) {
                windows.push(plan.window);
            }
            off += 128 * KIB;
            if plan.window == 64 * MIB && reached_max_at.is_none() {
                reached_max_at = Some(off);
            }
        }
        // Doubles each time half a window has been consumed: 64 MiB after ~32 MiB read.
        assert_eq!(windows, [1, 2, 4, 8, 16, 32, 64].map(|w| w * MIB).to_vec());
        assert!(reached_max_at.unwrap() <= 32 * MIB, "{reached_max_at:?}");
    }

    #[test]
    fn sequential_prefetch_is_contiguous_grows_and_stays_ahead() {
        let mut p = policy();
        // The first 128 KiB read is exact (no prefetch); the second starts the window where
        // it ended.
        let mut issued = 128 * KIB;
        let mut sizes = Vec::new();
        let mut off = 0;
        // 256 MiB read in 128 KiB steps: bounded by the object walk itself.
        while off < 256 * MIB {
            let plan = p.on_read(off, off + 128 * KIB);
            if let Some(r) = plan.prefetch {
                assert_eq!(r.start, issued, "ranges must be contiguous and non-overlapping");
                issued = r.end;
                sizes.push(r.len());
            }
            assert!(
                plan.exact || issued >= off + 128 * KIB,
                "the read itself must be covered"
            );
            off += 128 * KIB;
        }
        // Ramp-up: request sizes never shrink until the window is at its maximum (after the
        // first, which also covers the exact first read's block).
        let ramp: Vec<u64> = sizes.iter().copied().skip(1).take(5).collect();
        assert!(ramp.windows(2).all(|w| w[0] <= w[1]), "{ramp:?}");
        // Steady state keeps roughly a full window in flight.
        assert!(issued >= off + 48 * MIB, "issued {issued} off {off}");
        // Few requests: about one per max_request after the ramp.
        assert!(sizes.len() < 60, "{} prefetches", sizes.len());
    }

    #[test]
    fn out_of_order_reads_within_tolerance_continue_the_stream() {
        let mut p = policy();
        let a = p.on_read(256 * KIB, 384 * KIB);
        let b = p.on_read(0, 128 * KIB);
        let c = p.on_read(128 * KIB, 256 * KIB);
        assert_eq!(a.stream, b.stream);
        assert_eq!(a.stream, c.stream);
        // Reads behind the stream's position do not grow or shrink the window.
        assert_eq!(c.window, MIB);
        assert_eq!(p.stream_ids().len(), 1);
    }

    #[test]
    fn seek_starts_a_new_small_stream() {
        let mut p = policy();
        let mut off = 0;
        let mut last = None;
        for _ in 0..300 {
            last = Some(p.on_read(off, off + 128 * KIB));
            off += 128 * KIB;
        }
        let seq = last.unwrap();
        assert_eq!(seq.window, 64 * MIB);
        let seek = p.on_read(5 * 1024 * MIB, 5 * 1024 * MIB + MIB);
        assert_ne!(seek.stream, seq.stream);
        assert_eq!(seek.window, MIB);
        assert_eq!(
            seek.prefetch,
            Some(ByteRange::new(5 * 1024 * MIB, 5 * 1024 * MIB + MIB))
        );
        // The old stream survives the seek and resumes with its large window.
        let resume = p.on_read(off, off + 128 * KIB);
        assert_eq!(resume.stream, seq.stream);
        assert_eq!(resume.window, 64 * MIB);
    }

    #[test]
    fn new_stream_replaces_least_recently_used() {
        let mut p = ReadAheadPolicy::new(
            PolicyParams {
                max_streams: 2,
                ..params()
            },
            10 * 1024 * MIB,
        );
        let a = p.on_read(0, 4 * KIB);
        let b = p.on_read(100 * MIB, 100 * MIB + 4 * KIB);
        // Touch `a` so `b` is the least recently used.
        let a2 = p.on_read(4 * KIB, 8 * KIB);
        assert_eq!(a2.stream, a.stream);
        let c = p.on_read(200 * MIB, 200 * MIB + 4 * KIB);
        assert_eq!(c.replaced, Some(b.stream));
        let mut ids = p.stream_ids();
        ids.sort();
        assert_eq!(ids, vec![a.stream, c.stream]);
        assert_eq!(p.window(b.stream), None);
    }

    #[test]
    fn interleaved_streams_both_keep_large_windows() {
        let mut p = policy();
        let (mut x, mut y) = (0, 2048 * MIB);
        let (mut sx, mut sy) = (None, None);
        for _ in 0..300 {
            let px = p.on_read(x, x + 128 * KIB);
            let py = p.on_read(y, y + 128 * KIB);
            assert_eq!(*sx.get_or_insert(px.stream), px.stream);
            assert_eq!(*sy.get_or_insert(py.stream), py.stream);
            x += 128 * KIB;
            y += 128 * KIB;
        }
        let (sx, sy) = (sx.unwrap(), sy.unwrap());
        assert_ne!(sx, sy);
        assert_eq!(p.window(sx), Some(64 * MIB));
        assert_eq!(p.window(sy), Some(64 * MIB));
    }

    #[test]
    fn prefetch_never_passes_end_of_object() {
        let mut p = ReadAheadPolicy::new(params(), 3 * MIB + 10);
        let mut max_end = 0;
        let mut off = 0;
        while off < 3 * MIB + 10 {
            if let Some(r) = p.on_read(off, (off + 128 * KIB).min(3 * MIB + 10)).prefetch {
                max_end = max_end.max(r.end);
            }
            off += 128 * KIB;
        }
        assert_eq!(max_end, 3 * MIB + 10);
    }

    #[test]
    fn forward_skip_within_tolerance_does_not_fetch_skipped_bytes() {
        let mut p = ReadAheadPolicy::new(
            PolicyParams {
                initial_window: 128 * KIB,
                block_size: 64 * KIB,
                ..params()
            },
            10 * 1024 * MIB,
        );
        let a = p.on_read(0, 64 * KIB);
        assert_eq!(a.prefetch, Some(ByteRange::new(0, 64 * KIB)));
        let b = p.on_read(MIB, MIB + 64 * KIB);
        assert_eq!(b.stream, a.stream);
        let r = b.prefetch.unwrap();
        assert_eq!(r.start, MIB);
        assert!(r.end >= MIB + 64 * KIB);
    }

    #[test]
    fn degenerate_params_are_normalised() {
        let p = ReadAheadPolicy::new(
            PolicyParams {
                initial_window: 0,
                max_window: 0,
                max_request: 0,
                max_streams: 0,
                sequential_tolerance: 0,
                block_size: 0,
            },
            100,
        );
        let n = p.params();
        assert_eq!((n.block_size, n.max_window, n.initial_window), (1, 1, 1));
        assert_eq!((n.max_request, n.max_streams), (1, 1));
    }
}
