//! Read path of one open file: `(offset, len)` reads served from cached blocks, fetched with
//! block-aligned range GETs pinned to the version seen at open, with multi-stream read-ahead.
//!
//! - [`policy`]: the pure read-ahead state machine (streams, windows, what to fetch next).
//! - `prefetch`: spawned, deduplicated GETs and the in-flight table.
//! - [`ObjectReader`]: one per open file handle; ties the two together and assembles replies.
//!
//! Every GET carries `If-Match` with the ETag pinned at open (when known) and is length-checked,
//! so an object replaced mid-read yields [`ReadError::ObjectChanged`], never mixed bytes. Blocks
//! are cached under the pinned version ([`ObjectId`]), so other handles of the same version share
//! them and a new version never sees them.
//!
//! Depends only on [`crate::cache`] and the [`crate::backend`] trait and types.

pub mod policy;
mod prefetch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};

use self::policy::{PolicyParams, ReadAheadPolicy, StreamId};
use self::prefetch::{len_u64, to_usize, Fetcher, Spawned};
use crate::backend::{Backend, BackendError};
use crate::cache::{BlockCache, ObjectId};

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
}

impl Default for ReadConfig {
    fn default() -> Self {
        Self {
            initial_window: MIB,
            max_window: 64 * MIB,
            max_request: 8 * MIB,
            max_streams: 4,
            sequential_tolerance: 2 * MIB,
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
    /// Lock order: this, then the fetcher's in-flight table, then the cache.
    state: Mutex<State>,
}

impl ObjectReader {
    /// A reader of `id` (whose ETag, if any, is pinned on every GET), caching blocks in `cache`.
    pub fn new(backend: Arc<dyn Backend>, id: ObjectId, cache: Arc<BlockCache>, config: ReadConfig) -> Self {
        let block_size = cache.block_size();
        // Read-ahead beyond half the cache would evict itself before being read.
        let max_window = config.max_window.min((cache.budget_bytes() / 2).max(block_size));
        let params = PolicyParams {
            initial_window: config.initial_window,
            max_window,
            max_request: config.max_request,
            max_streams: config.max_streams,
            sequential_tolerance: config.sequential_tolerance,
            block_size,
        };
        let policy = ReadAheadPolicy::new(params, id.size());
        let fetcher = Arc::new(Fetcher::new(backend, id, cache, policy.params().max_request));
        Self {
            fetcher,
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
        let size = self.fetcher.id().size();
        let end = offset.saturating_add(u64::try_from(len).unwrap_or(u64::MAX)).min(size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let sources = self.schedule(offset, end);
        let blocks =
            futures::future::try_join_all(sources.into_iter().map(|(b, src)| self.fetcher.resolve(b, src))).await?;
        Ok(assemble(&blocks, offset, end, self.fetcher.block_size()))
    }

    /// Consult the policy, cancel read-ahead of a replaced stream, issue GETs, and return a
    /// source for each block of `[offset, end)`. Synchronous: locks are released on return.
    fn schedule(&self, offset: u64, end: u64) -> Vec<(u64, prefetch::BlockSource)> {
        let mut state = lock(&self.state);
        let plan = state.policy.on_read(offset, end);
        if let Some(old) = plan.replaced {
            if let Some(tasks) = state.tasks.remove(&old) {
                self.fetcher.cancel_unwatched(tasks);
            }
        }
        let (spawned, sources) = self.fetcher.plan(plan.prefetch, offset, end);
        let tasks = state.tasks.entry(plan.stream).or_default();
        tasks.retain(|t| !t.is_finished());
        tasks.extend(spawned);
        sources
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

/// Cut `[offset, end)` out of consecutive blocks starting at the block containing `offset`:
/// a zero-copy slice when one block holds the whole read.
fn assemble(blocks: &[Bytes], offset: u64, end: u64, block_size: u64) -> Bytes {
    let base = offset - offset % block_size;
    if let [only] = blocks {
        let lo = to_usize(offset - base).min(only.len());
        let hi = to_usize(end - base).min(only.len());
        return only.slice(lo..hi);
    }
    let mut out = BytesMut::with_capacity(to_usize(end - offset));
    let mut block_start = base;
    for block in blocks {
        let block_end = block_start + len_u64(block);
        let lo = offset.max(block_start) - block_start;
        let hi = end.min(block_end).saturating_sub(block_start);
        if lo < hi {
            out.extend_from_slice(&block[to_usize(lo)..to_usize(hi)]);
        }
        block_start += block_size;
    }
    out.freeze()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The policy and task lists stay consistent across any panic point, so poisoning is benign.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
