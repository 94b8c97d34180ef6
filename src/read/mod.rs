//! Read path of one open file: `(offset, len)` reads served from cached blocks, fetched with
//! range GETs pinned to the version seen at open, with multi-stream read-ahead.
//!
//! - [`policy`]: the pure read-ahead state machine (streams, windows, what to fetch next).
//! - `prefetch`: spawned, deduplicated GETs and the in-flight table.
//! - [`ObjectReader`]: one per open file handle; ties the two together and joins the pieces of
//!   each reply.
//!
//! Every GET carries `If-Match` with the ETag pinned at open (when known) and is length-checked,
//! so an object replaced mid-read yields [`ReadError::ObjectChanged`], never mixed bytes. Blocks
//! are cached under the pinned version ([`ObjectId`]), so other handles of the same version share
//! them and a new version never sees them.
//!
//! Blocks missing from memory are looked for in the disk tier ([`crate::cache::disk`]), when
//! the mount has one, before they are fetched; blocks fetched whole are stored there.
//!
//! Depends only on [`crate::cache`], the [`crate::backend`] trait and types, and the tenant's
//! counters ([`crate::metrics`]).

pub mod policy;
mod prefetch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};

use self::policy::{PolicyParams, ReadAheadPolicy, StreamId};
use self::prefetch::{Fetcher, Spawned};
use crate::backend::{Backend, BackendError, ByteRange};
use crate::cache::disk::DiskObject;
use crate::cache::{BlockCache, ObjectId};
use crate::metrics::TenantMetrics;

const MIB: u64 = 1024 * 1024;

/// Read-ahead settings of an [`ObjectReader`]. Values are normalised at construction (a window is
/// at least one block, a request at least one block, at least one stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadConfig {
    /// Window of a new stream (after open or a seek). Default 1 MiB: one small GET, so the first
    /// byte after a seek costs one round trip plus ~1 MiB of transfer, and a random 4 KiB read
    /// wastes little.
    pub initial_window: u64,
    /// Largest window a sequential stream grows to. Default 64 MiB: at ~100 ms first-byte
    /// latency that keeps several hundred MB/s in flight per stream; it is further capped at half
    /// the cache budget so read-ahead does not evict itself before it is read.
    pub max_window: u64,
    /// Largest single GET. Default 8 MiB: the size S3 guidance recommends for full per-connection
    /// throughput; smaller requests pay per-request latency and cost, larger ones delay their
    /// first byte and waste more when read-ahead is cancelled.
    pub max_request: u64,
    /// Sequential streams tracked per handle. Default 4: a player reads video, audio, subtitles
    /// and an index from one file; more would let random access leave stale windows around.
    pub max_streams: usize,
    /// How far (either way) from a stream's expected offset a read may start and still continue
    /// it. Default 2 MiB: the kernel keeps up to 12 (`max_background`) reads of 128 KiB in flight
    /// and they arrive out of order, about 1.5 MiB around the true position.
    pub sequential_tolerance: u64,
    /// Drop blocks a sequential stream has read past from the block cache (see
    /// [`policy::Plan::passed`]). Default on; the opener turns it off when the kernel will not
    /// keep the file's pages (it then re-reads through the block cache). A one-pass read of a
    /// large file then neither flushes the cache nor holds it full of bytes the page cache
    /// already has, and its buffers are reused instead of growing the process to the budget.
    pub release_passed: bool,
}

impl Default for ReadConfig {
    fn default() -> Self {
        Self {
            initial_window: MIB,
            max_window: 64 * MIB,
            max_request: 8 * MIB,
            max_streams: 4,
            sequential_tolerance: 2 * MIB,
            release_passed: true,
        }
    }
}

/// Errors of the read path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The object was replaced or deleted since the handle was opened; serving further bytes
    /// would mix versions.
    #[error("object {key} changed since it was opened")]
    ObjectChanged {
        /// Key of the object.
        key: String,
    },
    /// The backend failed for another reason (see its kind for whether a retry may help).
    #[error("backend read failed: {0}")]
    Backend(#[source] BackendError),
}

/// Policy and read-ahead tasks, behind the reader's lock.
#[derive(Debug)]
struct State {
    policy: ReadAheadPolicy,
    /// Fetch tasks spawned on behalf of each stream, aborted when the stream is replaced.
    tasks: HashMap<StreamId, Vec<Spawned>>,
}

/// Reads one version of one object for one open file handle. See the module docs.
///
/// `read` takes `&self`: the kernel issues parallel reads on one handle, and they proceed
/// concurrently (no lock is held across an `.await`). Dropping the reader aborts its read-ahead.
#[derive(Debug)]
pub struct ObjectReader {
    fetcher: Arc<Fetcher>,
    release_passed: bool,
    /// Lock order: this, then the fetcher's in-flight table, then the cache.
    state: Mutex<State>,
}

impl ObjectReader {
    /// A reader of `id` (whose ETag, if any, is pinned on every GET), caching blocks in `cache`;
    /// read-ahead it fetched and never served is counted into `metrics` when it goes.
    pub fn new(
        backend: Arc<dyn Backend>,
        id: ObjectId,
        cache: Arc<BlockCache>,
        config: ReadConfig,
        metrics: Arc<TenantMetrics>,
    ) -> Self {
        Self::with_disk(backend, id, cache, None, config, metrics)
    }

    /// [`ObjectReader::new`] with a disk tier: blocks missing from `cache` are looked for on
    /// `disk` before the network, and blocks fetched are stored there.
    pub fn with_disk(
        backend: Arc<dyn Backend>,
        id: ObjectId,
        cache: Arc<BlockCache>,
        disk: Option<DiskObject>,
        config: ReadConfig,
        metrics: Arc<TenantMetrics>,
    ) -> Self {
        let block_size = cache.block_size();
        // Read-ahead beyond half the cache (half the tenant's share of it) would evict itself
        // before being read.
        let max_window = config.max_window.min((cache.tenant_budget_bytes() / 2).max(block_size));
        let params = PolicyParams {
            initial_window: config.initial_window,
            max_window,
            max_request: config.max_request,
            max_streams: config.max_streams,
            sequential_tolerance: config.sequential_tolerance,
            block_size,
        };
        let policy = ReadAheadPolicy::new(params, id.size());
        let fetcher = Arc::new(Fetcher::new(
            backend,
            id,
            cache,
            disk,
            policy.params().max_request,
            metrics,
        ));
        Self {
            fetcher,
            release_passed: config.release_passed,
            state: Mutex::new(State {
                policy,
                tasks: HashMap::new(),
            }),
        }
    }

    /// The object version this reader serves.
    pub fn id(&self) -> &ObjectId {
        self.fetcher.id()
    }

    /// Up to `len` bytes at `offset`; shorter (or empty) at the end of the object.
    pub async fn read(&self, offset: u64, len: usize) -> Result<Bytes, ReadError> {
        match self.read_now(offset, len) {
            ReadNow::Ready(data) => Ok(data),
            ReadNow::Pending(p) => p.finish().await,
        }
    }

    /// Schedule a read without waiting: [`ReadNow::Ready`] when every byte of it is already in
    /// memory (cached, or received by a fetch in flight), so the caller can answer on the spot;
    /// otherwise a [`PendingRead`] to await. Issues read-ahead either way, so it must run
    /// within a tokio runtime context.
    pub fn read_now(&self, offset: u64, len: usize) -> ReadNow {
        let size = self.fetcher.id().size();
        let end = offset.saturating_add(u64::try_from(len).unwrap_or(u64::MAX)).min(size);
        if offset >= end {
            return ReadNow::Ready(Bytes::new());
        }
        let bs = self.fetcher.block_size();
        let Some(sources) = self.schedule(offset, end) else {
            return ReadNow::Pending(PendingRead {
                fetcher: self.fetcher.clone(),
                wait: Wait::Exact(ByteRange::new(offset, end)),
            });
        };
        let parts: Vec<_> = sources
            .into_iter()
            .map(|(b, src)| {
                let start = b * bs;
                (b, src, offset.max(start) - start, end.min(start + bs) - start)
            })
            .collect();
        let ready: Option<Vec<Bytes>> = parts
            .iter()
            .map(|(b, src, lo, hi)| self.fetcher.try_resolve(*b, src, *lo, *hi))
            .collect();
        match ready {
            Some(pieces) => ReadNow::Ready(concat(pieces)),
            None => ReadNow::Pending(PendingRead {
                fetcher: self.fetcher.clone(),
                wait: Wait::Blocks(parts),
            }),
        }
    }

    /// Consult the policy, cancel read-ahead of a replaced stream, issue GETs, and return a
    /// source for each block of `[offset, end)`, or `None` when the read should GET exactly
    /// its own bytes (see [`policy::Plan::exact`]). Synchronous: locks are released on return.
    fn schedule(&self, offset: u64, end: u64) -> Option<Vec<(u64, prefetch::BlockSource)>> {
        let mut state = lock(&self.state);
        let plan = state.policy.on_read(offset, end);
        if let Some(old) = plan.replaced {
            if let Some(tasks) = state.tasks.remove(&old) {
                self.fetcher.cancel_unwatched(tasks);
            }
        }
        if let Some(passed) = plan.passed.filter(|_| self.release_passed) {
            self.fetcher.release(passed);
        }
        let (spawned, sources) = self.fetcher.plan(plan.prefetch, plan.request, offset, end, plan.exact);
        let tasks = state.tasks.entry(plan.stream).or_default();
        tasks.retain(|t| !t.is_finished());
        tasks.extend(spawned);
        sources
    }
}

/// The outcome of [`ObjectReader::read_now`].
#[derive(Debug)]
pub enum ReadNow {
    /// All bytes were in memory.
    Ready(Bytes),
    /// Some bytes are still to arrive.
    Pending(PendingRead),
}

/// A scheduled read waiting for blocks in flight. Dropping it cancels nothing another read
/// waits for (see `prefetch`).
#[derive(Debug)]
pub struct PendingRead {
    fetcher: Arc<Fetcher>,
    wait: Wait,
}

/// What a [`PendingRead`] waits for.
#[derive(Debug)]
enum Wait {
    /// Per block: its source, and the byte range of it the read needs.
    Blocks(Vec<(u64, prefetch::BlockSource, u64, u64)>),
    /// A GET of exactly these bytes, uncached (see [`policy::Plan::exact`]).
    Exact(ByteRange),
}

impl PendingRead {
    /// The bytes, once every block has them.
    pub async fn finish(self) -> Result<Bytes, ReadError> {
        let fetcher = &self.fetcher;
        let parts = match self.wait {
            Wait::Exact(range) => return fetcher.get_exact(range).await,
            Wait::Blocks(parts) => parts,
        };
        let pieces = futures::future::try_join_all(
            parts
                .into_iter()
                .map(|(b, src, lo, hi)| fetcher.resolve(b, src, lo, hi)),
        )
        .await?;
        Ok(concat(pieces))
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        let tasks = std::mem::take(&mut lock(&self.state).tasks);
        // Nobody can wait on this reader's fetches any more: abort them all. Their guards clean
        // up the in-flight table; blocks already cached stay for other handles.
        for t in tasks.into_values().flatten() {
            t.abort();
        }
    }
}

/// The pieces of one read in order: zero-copy when one block held the whole read.
fn concat(mut pieces: Vec<Bytes>) -> Bytes {
    if pieces.len() == 1 {
        return pieces.pop().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
    for piece in &pieces {
        out.extend_from_slice(piece);
    }
    out.freeze()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The policy and task lists stay consistent across any panic point, so poisoning is benign.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::backend::memory::{InMemoryBackend, Op};
    use crate::backend::{BackendErrorKind, ObjectMeta};

    fn pattern(len: usize) -> Vec<u8> {
        // Period 251 (prime) so a misplaced block or off-by-one shows up as wrong bytes.
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    async fn setup(data: Vec<u8>, budget: u64, block: u64, config: ReadConfig) -> (Arc<InMemoryBackend>, ObjectReader) {
        let backend = Arc::new(InMemoryBackend::new());
        backend.insert("obj", data);
        let meta = backend.head("obj").await.unwrap();
        let cache = Arc::new(BlockCache::new(budget, block));
        let reader = ObjectReader::new(backend.clone(), ObjectId::new(1, &meta), cache, config, Arc::default());
        backend.reset_counts();
        (backend, reader)
    }

    fn small_config() -> ReadConfig {
        ReadConfig {
            initial_window: 64,
            max_window: 1024,
            max_request: 256,
            max_streams: 4,
            sequential_tolerance: 128,
            release_passed: true,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_reads_return_the_right_bytes(
            size in 0usize..3000,
            block in 1u64..64,
            budget in 0u64..2000,
            initial_window in 1u64..200,
            max_window in 1u64..2000,
            max_request in 1u64..500,
            max_streams in 1usize..5,
            sequential_tolerance in 0u64..300,
            release_passed in any::<bool>(),
            reads in prop::collection::vec((0u64..3200, 0usize..600), 1..40),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let config = ReadConfig { initial_window, max_window, max_request, max_streams, sequential_tolerance, release_passed };
            let data = pattern(size);
            rt.block_on(async {
                let (_backend, reader) = setup(data.clone(), budget, block, config).await;
                for (offset, len) in reads {
                    let got = reader.read(offset, len).await.unwrap();
                    let lo = usize::try_from(offset).unwrap().min(size);
                    let hi = (lo + len).min(size);
                    prop_assert_eq!(&got[..], &data[lo..hi], "read({}, {})", offset, len);
                }
                Ok(())
            })?;
        }
    }

    #[tokio::test]
    async fn a_seek_read_is_split_into_few_large_gets() {
        // Default policy, 128 KiB blocks: each piece of a read's own GETs carries at least
        // 512 KiB, so a request's fixed cost is paid twice for 1 MiB, not four times.
        const KIB: usize = 1024;
        let data = pattern(64 * 1024 * KIB);
        let (backend, reader) = setup(data.clone(), 64 << 20, 128 * 1024, ReadConfig::default()).await;
        let at = 40 * 1024 * KIB;
        assert_eq!(
            reader.read(at as u64, 1024 * KIB).await.unwrap(),
            &data[at..at + 1024 * KIB]
        );
        assert_eq!(backend.count(Op::Get), 2, "a 1 MiB read after a seek");
        backend.reset_counts();
        let at = 10 * 1024 * KIB;
        assert_eq!(
            reader.read(at as u64, 256 * KIB).await.unwrap(),
            &data[at..at + 256 * KIB]
        );
        assert_eq!(backend.count(Op::Get), 1, "a 256 KiB read after a seek");
    }

    #[tokio::test]
    async fn reads_past_eof_are_short_or_empty() {
        let (backend, reader) = setup(pattern(1000), 1 << 20, 64, small_config()).await;
        assert_eq!(reader.read(990, 100).await.unwrap(), &pattern(1000)[990..]);
        assert!(reader.read(1000, 10).await.unwrap().is_empty());
        assert!(reader.read(5000, 10).await.unwrap().is_empty());
        assert!(reader.read(10, 0).await.unwrap().is_empty());
        assert!(reader.read(u64::MAX, usize::MAX).await.unwrap().is_empty());
        // Empty reads do not touch the backend.
        let gets = backend.count(Op::Get);
        assert!(reader.read(2000, 10).await.unwrap().is_empty());
        assert_eq!(backend.count(Op::Get), gets);
    }

    #[tokio::test]
    async fn read_within_one_block_is_a_slice_of_the_cached_block() {
        let (_backend, reader) = setup(pattern(4096), 1 << 20, 1024, small_config()).await;
        // The first read may be answered from an exact-size GET; the block is cached by the
        // second.
        reader.read(1030, 100).await.unwrap();
        let a = reader.read(1030, 100).await.unwrap();
        let b = reader.read(1030, 100).await.unwrap();
        assert_eq!(a, &pattern(4096)[1030..1130]);
        // Both replies point into the same cached block: no copy was made.
        assert_eq!(a.as_ptr(), b.as_ptr());
    }

    #[tokio::test]
    async fn kernel_sized_sequential_reads_are_slices_of_one_cached_block() {
        // A root mount's kernel reads are 1 MiB (`fuse::session` raises the read-ahead): with
        // the default block size each is one cached block, answered without a join copy.
        let bs = crate::cache::DEFAULT_BLOCK_SIZE;
        let data = pattern(8 * MIB as usize);
        let config = ReadConfig {
            release_passed: false,
            ..ReadConfig::default()
        };
        let (_backend, reader) = setup(data.clone(), 64 * MIB, bs, config).await;
        for i in 0..8 {
            let got = reader.read(i * MIB, MIB as usize).await.unwrap();
            let at = (i * MIB) as usize;
            assert_eq!(got, &data[at..at + MIB as usize]);
            let block = reader.fetcher.cache().get(reader.id(), i * MIB / bs).unwrap();
            assert_eq!(got.as_ptr(), block.as_ptr(), "read {i} was copied");
        }
    }

    #[tokio::test]
    async fn a_headless_block_serves_its_stream_and_never_a_read_of_its_head() {
        let data = pattern(64 * 1024);
        let (backend, reader) = setup(data.clone(), 1 << 20, 1024, small_config()).await;
        // Exact (at most half a block), then continued: the window starts at 5100, inside
        // block 4, whose first 1004 bytes it does not fetch.
        assert_eq!(reader.read(5000, 100).await.unwrap(), &data[5000..5100]);
        assert_eq!(reader.read(5100, 200).await.unwrap(), &data[5100..5300]);
        let gets = backend.count(Op::Get);
        // A larger read elsewhere in block 4 needs bytes before the head: the whole block is
        // fetched for it (and cached as a whole block).
        assert_eq!(reader.read(4096, 600).await.unwrap(), &data[4096..4696]);
        assert!(backend.count(Op::Get) > gets);
        let cached = reader.fetcher.cache().get(reader.id(), 4).unwrap();
        assert_eq!(cached, &data[4096..5120]);
        for _ in 0..3 {
            assert_eq!(reader.read(5300, 900).await.unwrap(), &data[5300..6200]);
        }
    }

    #[tokio::test]
    async fn read_ahead_never_served_is_counted_as_wasted_when_the_reader_goes() {
        let backend = Arc::new(InMemoryBackend::new());
        backend.insert("obj", pattern(8192));
        let meta = backend.head("obj").await.unwrap();
        let cache = Arc::new(BlockCache::new(1 << 20, 256));
        let metrics: Arc<TenantMetrics> = Arc::default();
        let open = || {
            ObjectReader::new(
                backend.clone(),
                ObjectId::new(1, &meta),
                cache.clone(),
                small_config(),
                metrics.clone(),
            )
        };
        let wasted = || metrics.readahead_wasted.load(std::sync::atomic::Ordering::Relaxed);
        // A sequential reader that stops early: the window fetched past its last read is waste.
        let reader = open();
        for at in (0..1024).step_by(256) {
            reader.read(at, 256).await.unwrap();
        }
        // Let read-ahead land (bounded), then close.
        for _ in 0..100 {
            if backend.bytes_read() >= 1024 + 256 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let fetched = backend.bytes_read();
        drop(reader);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(fetched > 1024, "read-ahead went past the reads");
        assert_eq!(wasted(), fetched - 1024, "every fetched byte not read is waste");
        // A reader of the whole object wastes nothing (its blocks are cached now: no fetch).
        let before = wasted();
        let reader = open();
        reader.read(0, 8192).await.unwrap();
        drop(reader);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(wasted(), before);
    }

    #[tokio::test]
    async fn cached_blocks_are_not_fetched_again() {
        let (backend, reader) = setup(pattern(4096), 1 << 20, 256, small_config()).await;
        reader.read(0, 4096).await.unwrap();
        let (gets, bytes) = (backend.count(Op::Get), backend.bytes_read());
        assert_eq!(bytes, 4096);
        assert_eq!(reader.read(100, 3000).await.unwrap(), &pattern(4096)[100..3100]);
        assert_eq!(backend.count(Op::Get), gets);
    }

    #[tokio::test]
    async fn cache_too_small_for_the_window_still_serves_reads() {
        // Budget of one block, windows of many: read-ahead evicts itself, reads still get data.
        let config = ReadConfig {
            initial_window: 4096,
            max_window: 16384,
            max_request: 2048,
            ..small_config()
        };
        let data = pattern(64 * 1024);
        let (_backend, reader) = setup(data.clone(), 512, 512, config).await;
        let mut off = 0;
        while off < data.len() {
            let got = reader.read(u64::try_from(off).unwrap(), 1000).await.unwrap();
            assert_eq!(&got[..], &data[off..(off + 1000).min(data.len())]);
            off += 1000;
        }
    }

    #[tokio::test]
    async fn concurrent_reads_of_one_block_share_one_get() {
        // One block, so every read needs exactly the block the first read started fetching.
        // Reads over half a block: a smaller lone read would GET exactly its bytes.
        let (backend, reader) = setup(pattern(1024), 1 << 20, 1024, small_config()).await;
        backend.set_get_delay(Some(Duration::from_millis(50)));
        let reader = Arc::new(reader);
        let reads: Vec<_> = (0..8u64)
            .map(|i| {
                let r = reader.clone();
                tokio::spawn(async move { r.read(100 + i * 10, 600).await })
            })
            .collect();
        for (i, h) in (0u64..).zip(reads) {
            let start = usize::try_from(100 + i * 10).unwrap();
            assert_eq!(
                h.await.unwrap().unwrap(),
                &pattern(1024)[start..(start + 600).min(1024)]
            );
        }
        assert_eq!(backend.count(Op::Get), 1);
    }

    #[tokio::test]
    async fn replaced_object_is_object_changed() {
        let (backend, reader) = setup(pattern(10_000), 1 << 20, 100, small_config()).await;
        assert_eq!(reader.read(0, 100).await.unwrap(), &pattern(10_000)[..100]);
        backend.insert("obj", vec![7u8; 10_000]);
        let err = reader.read(5000, 100).await.unwrap_err();
        assert!(
            matches!(err, ReadError::ObjectChanged { ref key } if key == "obj"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn deleted_object_is_object_changed() {
        let (backend, reader) = setup(pattern(10_000), 1 << 20, 100, small_config()).await;
        backend.delete("obj").await.unwrap();
        let err = reader.read(5000, 100).await.unwrap_err();
        assert!(matches!(err, ReadError::ObjectChanged { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn without_etag_a_shrunk_object_is_object_changed() {
        let backend = Arc::new(InMemoryBackend::new());
        backend.insert("obj", pattern(10_000));
        let meta = ObjectMeta::new("obj", 10_000, None, None);
        let cache = Arc::new(BlockCache::new(1 << 20, 100));
        let reader = ObjectReader::new(
            backend.clone(),
            ObjectId::new(1, &meta),
            cache,
            small_config(),
            Arc::default(),
        );
        assert_eq!(reader.read(0, 100).await.unwrap(), &pattern(10_000)[..100]);
        backend.insert("obj", pattern(6000));
        let err = reader.read(9000, 100).await.unwrap_err();
        assert!(matches!(err, ReadError::ObjectChanged { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn backend_errors_reach_every_waiter_with_their_kind() {
        use crate::backend::fault::{FaultBackend, FaultRule};
        let mem = Arc::new(InMemoryBackend::new());
        mem.insert("obj", pattern(4096));
        let meta = mem.head("obj").await.unwrap();
        let fault = Arc::new(FaultBackend::new(mem.clone()));
        fault.set_rule(Some(FaultRule::always(&[Op::Get], BackendErrorKind::Throttled)));
        let cache = Arc::new(BlockCache::new(1 << 20, 256));
        let reader = ObjectReader::new(
            fault.clone(),
            ObjectId::new(1, &meta),
            cache,
            small_config(),
            Arc::default(),
        );
        let (a, b) = tokio::join!(reader.read(0, 10), reader.read(20, 10));
        for r in [a, b] {
            match r {
                Err(ReadError::Backend(e)) => {
                    assert_eq!(e.kind(), BackendErrorKind::Throttled);
                    assert!(e.to_string().contains("injected fault"), "{e}");
                }
                other => panic!("expected a backend error, got {other:?}"),
            }
        }
        // A failed fetch leaves nothing behind: once healed, the same read succeeds.
        fault.set_rule(None);
        assert_eq!(reader.read(0, 10).await.unwrap(), &pattern(4096)[..10]);
    }

    #[tokio::test]
    async fn dropping_the_reader_cancels_its_read_ahead() {
        let config = ReadConfig {
            initial_window: 1024,
            max_window: 64 * 1024,
            max_request: 4096,
            ..small_config()
        };
        let (backend, reader) = setup(pattern(1 << 20), 1 << 30, 1024, config).await;
        backend.set_get_delay(Some(Duration::from_millis(300)));
        // Over half a block, so it fetches the block (not exactly its bytes).
        reader.read(0, 600).await.unwrap();
        // Continues the stream: ramps the window and issues read-ahead beyond the first block.
        reader.read(600, 424).await.unwrap();
        // Let the spawned read-ahead start its GETs (they then sleep in the backend).
        tokio::time::sleep(Duration::from_millis(20)).await;
        let issued = backend.count(Op::Get);
        assert!(issued > 1, "read-ahead should be in flight");
        assert_eq!(backend.bytes_read(), 1024);
        drop(reader);
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Aborted before their delay ended: no read-ahead bytes were ever transferred.
        assert_eq!(backend.bytes_read(), 1024);
    }

    #[tokio::test]
    async fn replaced_stream_read_ahead_is_cancelled() {
        let config = ReadConfig {
            initial_window: 1024,
            max_window: 64 * 1024,
            max_request: 4096,
            max_streams: 1,
            sequential_tolerance: 4096,
            ..ReadConfig::default()
        };
        let (backend, reader) = setup(pattern(1 << 20), 1 << 30, 1024, config).await;
        backend.set_get_delay(Some(Duration::from_millis(300)));
        reader.read(0, 600).await.unwrap();
        reader.read(600, 424).await.unwrap();
        assert_eq!(backend.bytes_read(), 1024);
        // Far away: replaces the only stream, whose pending read-ahead nobody waits for.
        let far = 512 * 1024;
        assert_eq!(
            reader.read(far, 100).await.unwrap(),
            &pattern(1 << 20)[512 * 1024..512 * 1024 + 100]
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Only the far read's own bytes were transferred in addition (a lone small read).
        assert_eq!(backend.bytes_read(), 1024 + 100);
    }

    #[tokio::test]
    async fn replacing_a_stream_keeps_fetches_a_read_waits_for() {
        let config = ReadConfig {
            initial_window: 1024,
            max_streams: 1,
            ..small_config()
        };
        let (backend, reader) = setup(pattern(1 << 20), 1 << 30, 1024, config).await;
        backend.set_get_delay(Some(Duration::from_millis(300)));
        let reader = Arc::new(reader);
        let r = reader.clone();
        let waiting = tokio::spawn(async move { r.read(0, 600).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Replaces the stream whose only fetch the spawned read is waiting for.
        let far = reader.read(512 * 1024, 100).await.unwrap();
        assert_eq!(far, &pattern(1 << 20)[512 * 1024..512 * 1024 + 100]);
        assert_eq!(waiting.await.unwrap().unwrap(), &pattern(1 << 20)[..600]);
        // Not aborted and re-fetched: exactly one GET per stream (the far one exact).
        assert_eq!(backend.count(Op::Get), 2);
        assert_eq!(backend.bytes_read(), 1024 + 100);
    }

    #[test]
    fn concat_joins_pieces_and_passes_one_through() {
        let one = Bytes::from_static(b"0123");
        let joined = concat(vec![one.clone()]);
        assert_eq!(joined.as_ptr(), one.as_ptr(), "a single piece must not be copied");
        let pieces = vec![
            Bytes::from_static(b"23"),
            Bytes::from_static(b"4567"),
            Bytes::from_static(b"89"),
        ];
        assert_eq!(concat(pieces), &b"23456789"[..]);
    }

    #[test]
    fn config_defaults_are_the_documented_ones() {
        let c = ReadConfig::default();
        assert_eq!(c.initial_window, MIB);
        assert_eq!(c.max_window, 64 * MIB);
        assert_eq!(c.max_request, 8 * MIB);
        assert_eq!(c.max_streams, 4);
        assert_eq!(c.sequential_tolerance, 2 * MIB);
        assert!(c.release_passed);
    }

    #[tokio::test]
    async fn a_sequential_pass_releases_the_blocks_behind_it() {
        // 64 KiB object, 256-byte blocks, a budget that holds all of it.
        let data = pattern(64 * 1024);
        for release in [true, false] {
            let config = ReadConfig {
                release_passed: release,
                ..small_config()
            };
            let (backend, reader) = setup(data.clone(), 1 << 20, 256, config).await;
            let cache = reader.fetcher.cache().clone();
            let mut peak = 0;
            // Reads over half a block, so the first is not an exact (uncached) GET.
            for off in (0..data.len()).step_by(200) {
                let got = reader.read(u64::try_from(off).unwrap(), 200).await.unwrap();
                assert_eq!(&got[..], &data[off..(off + 200).min(data.len())]);
                peak = peak.max(cache.used_bytes());
            }
            // Every byte fetched once either way: nothing released was needed again.
            assert_eq!(backend.bytes_read(), 64 * 1024, "release_passed = {release}");
            if release {
                // What stays is at most the window ahead plus the tolerance behind, in blocks.
                assert!(peak <= 1024 + 128 + 2 * 256 + 256, "peak {peak} bytes cached");
                assert!(cache.used_bytes() <= 1024 + 128 + 512, "{} left", cache.used_bytes());
            } else {
                assert_eq!(cache.used_bytes(), 64 * 1024);
            }
        }
    }
}
