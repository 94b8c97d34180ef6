//! Block fetches of one open file: range GETs of whole blocks run in spawned tasks,
//! deduplicated through an in-flight table, their blocks put in the shared [`BlockCache`]. The
//! one exception is the first block of a stream that began with an exact read: its GET starts
//! where that read ended (a *headless* block), and it is cached as that block's tail, serving
//! the reads it covers; a read needing the bytes before it fetches the whole block. The task
//! that receives a fetch's body is in `prefetch/receive.rs`.
//!
//! A GET's body is consumed as it arrives: each block is cached and published the moment its
//! last byte is in, and a read needing only part of the block being received is answered as
//! soon as those bytes are there. So a read after a seek costs one round trip plus its own
//! bytes' transfer, not a whole block, and a reader never waits for the rest of an 8 MiB
//! request to use its first block.
//!
//! Every block GET is a spawned task, whether it was issued as read-ahead or because a read
//! needed a block nobody had fetched: a read then only *waits*, so a read that is cancelled (the
//! kernel interrupts it) never cancels a fetch another read is waiting for. The one exception is
//! the exact GET of a lone small read (see `policy::Plan::exact`): nobody else waits for those
//! bytes and nothing caches them, so it runs in the read itself.
//!
//! Invariants:
//! - A block is in at most one in-flight fetch; a read needing it subscribes to that fetch
//!   instead of issuing its own GET.
//! - A finished fetch puts its blocks in the cache *before* leaving the in-flight table, so a
//!   block is never neither cached nor in flight while its fetch completes (no duplicate GET).
//! - Waiters receive the bytes through the fetch itself, not the cache: a cache too small for the
//!   window may evict blocks at once, and readers still get their data.
//! - Every byte is copied once in user space, from the body's pieces into its block.
//! - A fetch that ends without a result (its task was aborted) publishes
//!   [`FetchError::Cancelled`]; its waiters then fetch the block themselves.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio::task::AbortHandle;

mod receive;

use self::receive::{run_fetch, InflightGuard};
use super::ReadError;
use crate::backend::{Backend, BackendError, BackendErrorKind, ByteRange};
use crate::cache::disk::DiskObject;
use crate::cache::{BlockCache, ObjectId};
use crate::metrics::TenantMetrics;

/// Most GETs one read's own missing blocks are split into.
const OWN_GETS: u64 = 4;
/// Smallest GET a read's own blocks are split into. A split pays off by the transfer time it
/// overlaps, which for half a MiB is a few ms even at 100 MB/s per connection, against a
/// request's fixed cost (round trip, signing, a task, server overhead) paid once per piece:
/// so with 128 KiB blocks a 256 KiB read was one GET and a 1 MiB read two (with the default
/// 1 MiB blocks a block is already that big). With 128 KiB pieces (tuned when the
/// loopback server capped a single connection) random 256 KiB reads on loopback moved 108-135
/// MB/s at 127-168 MB per CPU second; with 512 KiB, 153-165 MB/s at 237-257 (1 MiB reads
/// 235-321 -> 311-347 MB/s).
const MIN_OWN_GET: u64 = 512 * 1024;

/// A cloneable summary of why a fetch failed (a [`BackendError`] is not `Clone`).
#[derive(Debug, Clone)]
pub(super) enum FetchError {
    /// The object is no longer the version pinned at open.
    Changed,
    /// The task was aborted before it produced a result.
    Cancelled,
    /// The backend failed; enough to rebuild a [`BackendError`] for each waiter.
    Backend { kind: BackendErrorKind, message: Arc<str> },
}

/// What one GET has delivered so far, shared with every reader waiting for it.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Complete blocks, in order from the fetch's first block.
    blocks: Vec<Bytes>,
    /// Pieces received of the block after `blocks`, and their total length.
    partial: Vec<Bytes>,
    partial_len: u64,
    /// Set when the fetch ends: `Ok` once every block of its range is in `blocks`.
    end: Option<Result<(), FetchError>>,
}

/// One GET in flight: a range of whole blocks (the first may be headless, see the module
/// docs) and the channel its progress is published on.
#[derive(Debug)]
pub(super) struct Fetch {
    range: ByteRange,
    tx: watch::Sender<Progress>,
}

/// A spawned fetch task, kept by the reader so that it can abort read-ahead that is no longer
/// useful.
#[derive(Debug)]
pub(super) struct Spawned {
    abort: AbortHandle,
    fetch: Arc<Fetch>,
}

impl Spawned {
    /// Whether the task has ended.
    pub(super) fn is_finished(&self) -> bool {
        self.abort.is_finished()
    }

    /// Abort the task unconditionally.
    pub(super) fn abort(&self) {
        self.abort.abort();
    }
}

/// Where one block of a read comes from.
#[derive(Debug)]
pub(super) enum BlockSource {
    /// Already cached: the block from byte `skip` on (0 for a whole block, else its tail).
    Ready { data: Bytes, skip: u64 },
    /// Being fetched by the GET of `[start, ..)` publishing on `rx`.
    Pending { rx: watch::Receiver<Progress>, start: u64 },
}

/// What a waiter found in a fetch's progress.
enum Found {
    Data(Bytes),
    Failed(ReadError),
    /// The fetch ended without the block (aborted, or its sender vanished).
    Refetch,
}

/// The fetching state of one open file.
#[derive(Debug)]
pub(super) struct Fetcher {
    backend: Arc<dyn Backend>,
    id: ObjectId,
    cache: Arc<BlockCache>,
    /// The disk tier, tried before the network for whole blocks (see `receive`).
    disk: Option<DiskObject>,
    block_size: u64,
    /// Largest GET, in blocks (at least 1).
    max_request_blocks: u64,
    /// Block index → the fetch bringing it. Lock order: after the reader's state, before the
    /// cache's lock; never held across `.await`.
    inflight: Mutex<HashMap<u64, Arc<Fetch>>>,
    /// Per block: bytes this handle's fetches brought, and whether a read of this handle asked
    /// for it. What was fetched and never asked for is read-ahead wasted, counted when the
    /// fetcher goes (the handle closed and its fetches ended). Lock order: after `inflight`.
    usage: Mutex<HashMap<u64, (u64, bool)>>,
    metrics: Arc<TenantMetrics>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        let usage = self.usage.get_mut().unwrap_or_else(|e| e.into_inner());
        let wasted: u64 = usage.values().filter(|(_, asked)| !asked).map(|(n, _)| n).sum();
        self.metrics.readahead_wasted.fetch_add(wasted, Ordering::Relaxed);
    }
}

impl Fetcher {
    pub(super) fn new(
        backend: Arc<dyn Backend>,
        id: ObjectId,
        cache: Arc<BlockCache>,
        disk: Option<DiskObject>,
        max_request: u64,
        metrics: Arc<TenantMetrics>,
    ) -> Self {
        let block_size = cache.block_size();
        Self {
            backend,
            id,
            cache,
            disk,
            block_size,
            max_request_blocks: (max_request / block_size).max(1),
            inflight: Mutex::new(HashMap::new()),
            usage: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// A fetch of this handle brought `bytes` of block `block`.
    pub(super) fn note_fetched(&self, block: u64, bytes: u64) {
        lock(&self.usage).entry(block).or_default().0 = bytes;
    }

    pub(super) fn id(&self) -> &ObjectId {
        &self.id
    }

    #[cfg(test)]
    pub(super) fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    pub(super) fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Issue GETs for the uncached, not yet requested blocks of `prefetch`, then find a source
    /// for every block of the read `[offset, end)`, issuing GETs for the blocks nobody fetches.
    /// Read-ahead goes out in GETs of at most `request` bytes. One lock hold, so no fetch can
    /// complete unseen in between. With `exact`, a read none of whose blocks is cached or in
    /// flight gets `None`: the caller GETs exactly its bytes ([`Fetcher::get`]), uncached.
    pub(super) fn plan(
        self: &Arc<Self>,
        prefetch: Option<ByteRange>,
        request: u64,
        offset: u64,
        end: u64,
        exact: bool,
    ) -> (Vec<Spawned>, Option<Vec<(u64, BlockSource)>>) {
        let bs = self.block_size;
        // A headless range (see `policy::Plan::prefetch`): its first block is fetched from
        // there, unless this read needs bytes of that block before it.
        let head = prefetch
            .map(|r| r.start)
            .filter(|&h| h % bs != 0 && (offset >= h || end <= h - h % bs));
        let mut spawned = Vec::new();
        let mut inflight = lock(&self.inflight);
        // The read's own blocks go out first, as their own GET: after a seek the caller waits
        // only for what it asked for, while the rest of the window streams in beside it.
        let (first, last) = (offset / bs, (end - 1) / bs);
        {
            let mut usage = lock(&self.usage);
            for b in first..=last {
                usage.entry(b).or_default().1 = true;
            }
        }
        // The cached tail of the read's first block, if it holds the bytes the read needs and
        // the whole block is not cached.
        let tail = if self.cache.contains(&self.id, first) {
            None
        } else {
            self.cached_tail(first, offset - first * bs)
        };
        let mut missing = Vec::new();
        for b in first..=last {
            let has_tail = b == first && tail.is_some();
            if !inflight.contains_key(&b) && !has_tail && !self.cache.contains(&self.id, b) {
                missing.push(b);
            }
        }
        if exact && missing.len() == to_usize(last - first + 1) {
            return (Vec::new(), None);
        }
        // A large read (the kernel sends up to 1 MiB at once) goes out as up to
        // `OWN_GETS` parallel GETs of at least `MIN_OWN_GET` bytes: one connection carries
        // about half of what several do, and the read waits for its slowest piece only.
        let min_blocks = (MIN_OWN_GET / bs).max(1);
        let own_per_get = (u64::try_from(missing.len()).unwrap_or(u64::MAX).div_ceil(OWN_GETS))
            .max(min_blocks)
            .min(self.max_request_blocks);
        self.spawn_runs(&mut inflight, &missing, own_per_get, head, &mut spawned);
        if let Some(r) = prefetch {
            // A headless range's first block is there if a cached tail already covers it.
            let tail_covers = |b: u64| b * bs < r.start && self.cached_tail(b, r.start - b * bs).is_some();
            let missing: Vec<u64> = (r.start / bs..r.end.div_ceil(bs))
                .filter(|&b| !inflight.contains_key(&b) && !self.cache.contains(&self.id, b) && !tail_covers(b))
                .collect();
            let per_get = (request / bs).clamp(1, self.max_request_blocks);
            self.spawn_runs(&mut inflight, &missing, per_get, head, &mut spawned);
        }
        let sources = (first..=last)
            .map(|b| {
                // Where the read starts within block `b`.
                let lo = if b == first { offset - b * bs } else { 0 };
                let in_flight = inflight.get(&b).filter(|f| {
                    // A headless fetch cannot serve the bytes before its start; a whole cached
                    // block (a read fetched it meanwhile) can.
                    let start = f.range.start;
                    !(start / bs == b && lo < start % bs && self.cache.contains(&self.id, b))
                });
                let src = match in_flight {
                    Some(f) => BlockSource::Pending {
                        rx: f.tx.subscribe(),
                        start: f.range.start,
                    },
                    // Not in flight, so cached a moment ago; `get` also marks it recently used.
                    None => match (self.cache.get(&self.id, b), &tail) {
                        (Some(data), _) => BlockSource::Ready { data, skip: 0 },
                        (None, Some((data, skip))) if b == first => BlockSource::Ready {
                            data: data.clone(),
                            skip: *skip,
                        },
                        // Evicted since the check above (only under a tiny budget): fetch it.
                        (None, _) => {
                            let fetch = self.spawn_fetch(&mut inflight, b, b + 1, None, &mut spawned);
                            BlockSource::Pending {
                                rx: fetch.tx.subscribe(),
                                start: fetch.range.start,
                            }
                        }
                    },
                };
                (b, src)
            })
            .collect();
        drop(inflight);
        // Spawn outside the lock: a task dropped unpolled (runtime shutting down) runs its
        // guard at once, and the guard takes the in-flight lock.
        let spawned = spawned.into_iter().map(|fetch| self.spawn(fetch)).collect();
        (spawned, Some(sources))
    }

    fn spawn(self: &Arc<Self>, fetch: Arc<Fetch>) -> Spawned {
        // The guard is created here, not inside the task, so that it also runs when the task is
        // aborted before its first poll.
        let guard = InflightGuard {
            fetcher: self.clone(),
            fetch: fetch.clone(),
        };
        let task = tokio::spawn(run_fetch(guard));
        Spawned {
            abort: task.abort_handle(),
            fetch,
        }
    }

    /// Abort the tasks nobody waits for; the others are left to finish for their waiters.
    pub(super) fn cancel_unwatched(&self, tasks: Vec<Spawned>) {
        // Waiters subscribe under the in-flight lock. One that subscribes after this check sees
        // `Cancelled` and fetches its block itself, so the race costs a GET, never a read.
        let unwatched: Vec<Spawned> = {
            let _inflight = lock(&self.inflight);
            tasks
                .into_iter()
                .filter(|t| t.fetch.tx.receiver_count() == 0 && !t.is_finished())
                .collect()
        };
        // Abort outside the lock: during runtime shutdown an abort may drop the task's future
        // in place, and its guard takes the in-flight lock.
        for t in unwatched {
            tracing::trace!(
                key = self.id.key(),
                start = t.fetch.range.start,
                "cancelling read-ahead"
            );
            t.abort();
        }
    }

    /// Bytes `[lo, hi)` of block `block` (offsets within the block, `hi` at most its length),
    /// as soon as its source has them.
    pub(super) async fn resolve(&self, block: u64, source: BlockSource, lo: u64, hi: u64) -> Result<Bytes, ReadError> {
        let found = match source {
            BlockSource::Ready { data, skip } => self.cached(block, data, skip, lo, hi),
            BlockSource::Pending { mut rx, start } => {
                let (idx, head) = self.position(block, start);
                let ready = |p: &Progress| {
                    lo < head
                        || p.blocks.len() > idx
                        || (p.blocks.len() == idx && p.partial_len >= hi)
                        || p.end.is_some()
                };
                match rx.wait_for(ready).await {
                    Ok(p) => self.found(&p, idx, head, lo, hi),
                    Err(_) => Found::Refetch,
                }
            }
        };
        match found {
            Found::Data(data) => Ok(data),
            Found::Failed(e) => Err(e),
            // Aborted (its stream was replaced as we subscribed), the sender vanished, or the
            // fetch starts after these bytes: fetch the block ourselves rather than fail.
            Found::Refetch => {
                let data = match self.cache.get(&self.id, block) {
                    Some(data) => data,
                    None => self.fetch_block(block).await?,
                };
                match self.cached(block, data, 0, lo, hi) {
                    Found::Data(data) => Ok(data),
                    _ => Err(self.changed()),
                }
            }
        }
    }

    /// Bytes `[lo, hi)` of block `block` if `source` already holds them; `None` when they are
    /// still to come or something is wrong (then [`Fetcher::resolve`] waits or reports it).
    pub(super) fn try_resolve(&self, block: u64, source: &BlockSource, lo: u64, hi: u64) -> Option<Bytes> {
        let found = match source {
            BlockSource::Ready { data, skip } => self.cached(block, data.clone(), *skip, lo, hi),
            BlockSource::Pending { rx, start } => {
                let (idx, head) = self.position(block, *start);
                self.found(&rx.borrow(), idx, head, lo, hi)
            }
        };
        match found {
            Found::Data(data) => Some(data),
            Found::Failed(_) | Found::Refetch => None,
        }
    }

    /// Where block `block` is in the fetch starting at `start`: its index among the fetch's
    /// blocks, and the first byte of it the fetch brings (non-zero for a headless block).
    fn position(&self, block: u64, start: u64) -> (usize, u64) {
        let first = start / self.block_size;
        let head = if block == first { start % self.block_size } else { 0 };
        (to_usize(block - first), head)
    }

    /// The cached tail of block `block` and where in the block it starts, if it starts at or
    /// before byte `from`.
    fn cached_tail(&self, block: u64, from: u64) -> Option<(Bytes, u64)> {
        let tail = self.cache.tail(&self.id, block)?;
        let skip = self.block_len(block).checked_sub(len_u64(&tail))?;
        (skip <= from).then_some((tail, skip))
    }

    /// Bytes `[lo, hi)` of block `block` from `data`, its bytes from `skip` on, checked for the
    /// block's length.
    fn cached(&self, block: u64, data: Bytes, skip: u64, lo: u64, hi: u64) -> Found {
        if lo < skip || len_u64(&data) + skip != self.block_len(block) {
            return Found::Failed(self.changed());
        }
        Found::Data(data.slice(to_usize(lo - skip)..to_usize(hi - skip)))
    }

    /// Bytes `[lo, hi)` of the fetch's block `idx`, which the fetch brings from byte `head`
    /// on, if `p` has them; else why not.
    fn found(&self, p: &Progress, idx: usize, head: u64, lo: u64, hi: u64) -> Found {
        if lo < head {
            return Found::Refetch;
        }
        if let Some(block) = p.blocks.get(idx) {
            // Complete blocks were length-checked by the fetch.
            return Found::Data(block.slice(to_usize(lo - head)..to_usize(hi - head)));
        }
        if p.blocks.len() == idx && p.partial_len >= hi {
            return Found::Data(copy_range(&p.partial, lo - head, hi - head));
        }
        match &p.end {
            Some(Err(FetchError::Changed)) => Found::Failed(self.changed()),
            Some(Err(FetchError::Backend { kind, message })) => {
                Found::Failed(ReadError::Backend(BackendError::new(*kind, message.to_string())))
            }
            // The body ended before this block: the object is shorter than the version opened.
            Some(Ok(())) => Found::Failed(self.changed()),
            Some(Err(FetchError::Cancelled)) | None => Found::Refetch,
        }
    }

    /// Drop the blocks of `range` (block-aligned) from the cache, except those still in flight.
    pub(super) fn release(&self, range: ByteRange) {
        let bs = self.block_size;
        let inflight = lock(&self.inflight);
        for b in range.start / bs..range.end / bs {
            if !inflight.contains_key(&b) {
                self.cache.remove(&self.id, b);
            }
        }
    }

    /// Expected length of block `block` (the last block of the object may be short).
    fn block_len(&self, block: u64) -> u64 {
        let start = block * self.block_size;
        self.id.size().saturating_sub(start).min(self.block_size)
    }

    /// Fetch one block directly, without the in-flight table (fallback path): from disk, else
    /// with a GET.
    async fn fetch_block(&self, block: u64) -> Result<Bytes, ReadError> {
        if let Some(data) = self.disk_block(block).await {
            return Ok(data);
        }
        let start = block * self.block_size;
        let range = ByteRange::new(start, start + self.block_len(block));
        let data = self.get(range).await?;
        self.cache.insert(&self.id, block, data.clone());
        if let Some(disk) = &self.disk {
            disk.put(block, data.clone());
        }
        Ok(data)
    }

    /// Block `block` from the disk tier, put in the memory cache; `None` if the disk does not
    /// have it (intact, in time).
    pub(super) async fn disk_block(&self, block: u64) -> Option<Bytes> {
        let disk = self.disk.as_ref()?;
        let data = disk.get(block, self.block_len(block)).await?;
        self.cache.insert(&self.id, block, data.clone());
        Some(data)
    }

    /// Bytes `range` for a read that GETs exactly its own bytes (`policy::Plan::exact`):
    /// sliced from the blocks on disk when the disk tier has them all, else a GET.
    pub(super) async fn get_exact(&self, range: ByteRange) -> Result<Bytes, ReadError> {
        let bs = self.block_size;
        let blocks = range.start / bs..range.end.div_ceil(bs);
        if self
            .disk
            .as_ref()
            .is_some_and(|d| blocks.clone().all(|b| d.contains(b)))
        {
            let mut pieces = Vec::new();
            for b in blocks {
                let Some(data) = self.disk_block(b).await else { break };
                let (lo, hi) = (range.start.max(b * bs) - b * bs, range.end.min((b + 1) * bs) - b * bs);
                pieces.push(data.slice(to_usize(lo)..to_usize(hi)));
            }
            if u64::try_from(pieces.iter().map(Bytes::len).sum::<usize>()).ok() == Some(range.len()) {
                return Ok(super::concat(pieces));
            }
        }
        self.get(range).await
    }

    /// A ranged GET pinned to the version opened, checked for the expected length.
    pub(super) async fn get(&self, range: ByteRange) -> Result<Bytes, ReadError> {
        tracing::debug!(key = self.id.key(), start = range.start, len = range.len(), "range GET");
        match self.backend.get_range(self.id.key(), range, self.id.etag()).await {
            Ok(data) if len_u64(&data) == range.len() => Ok(data),
            Ok(data) => {
                // Without an ETag to pin, a short body is how a replaced object shows up.
                tracing::debug!(
                    key = self.id.key(),
                    want = range.len(),
                    got = data.len(),
                    "short GET: object changed"
                );
                Err(self.changed())
            }
            Err(e) => Err(self.failure(e)),
        }
    }

    fn failure(&self, e: BackendError) -> ReadError {
        match e.kind() {
            // Deleted since open is as stale as replaced: either way this handle's version is gone.
            BackendErrorKind::PreconditionFailed | BackendErrorKind::NotFound => {
                tracing::debug!(key = self.id.key(), error = %e, "object changed since open");
                self.changed()
            }
            _ => ReadError::Backend(e),
        }
    }

    fn changed(&self) -> ReadError {
        ReadError::ObjectChanged {
            key: self.id.key().to_owned(),
        }
    }

    /// Spawn one GET per run of consecutive `blocks` (sorted), each at most `per_get` blocks;
    /// a run starting at `head`'s block starts at `head` (see [`Fetcher::spawn_fetch`]).
    fn spawn_runs(
        &self,
        inflight: &mut HashMap<u64, Arc<Fetch>>,
        blocks: &[u64],
        per_get: u64,
        head: Option<u64>,
        spawned: &mut Vec<Arc<Fetch>>,
    ) {
        let mut i = 0;
        while i < blocks.len() {
            let start = blocks[i];
            let mut end = start + 1;
            i += 1;
            while i < blocks.len() && blocks[i] == end && end - start < per_get {
                end += 1;
                i += 1;
            }
            self.spawn_fetch(inflight, start, end, head, spawned);
        }
    }

    /// Register the GET of blocks `[first, end)`, to be spawned once the lock is released. With
    /// a `head` inside block `first`, the GET starts there: the first block is then *headless*,
    /// served to the reads it covers and cached as the block's tail, never as the block.
    fn spawn_fetch(
        &self,
        inflight: &mut HashMap<u64, Arc<Fetch>>,
        first: u64,
        end: u64,
        head: Option<u64>,
        spawned: &mut Vec<Arc<Fetch>>,
    ) -> Arc<Fetch> {
        let start = head
            .filter(|h| h / self.block_size == first)
            .unwrap_or(first * self.block_size);
        let range = ByteRange::new(start, (end * self.block_size).min(self.id.size()));
        let (tx, _) = watch::channel(Progress::default());
        let fetch = Arc::new(Fetch { range, tx });
        for b in first..end {
            inflight.insert(b, fetch.clone());
        }
        spawned.push(fetch.clone());
        fetch
    }
}

/// Bytes `[lo, hi)` of the concatenation of `pieces` (which holds at least `hi` bytes).
fn copy_range(pieces: &[Bytes], lo: u64, hi: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(to_usize(hi - lo));
    let mut at = 0;
    for piece in pieces {
        let end = at + len_u64(piece);
        if end > lo && at < hi {
            let a = lo.max(at) - at;
            let b = hi.min(end) - at;
            out.extend_from_slice(&piece[to_usize(a)..to_usize(b)]);
        }
        at = end;
    }
    out.freeze()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the table consistent (single inserts/removes), so a
    // poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn len_u64(b: &Bytes) -> u64 {
    u64::try_from(b.len()).unwrap_or(u64::MAX)
}

/// For offsets within a buffer that exists in memory, so they always fit.
pub(super) fn to_usize(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_range_spans_pieces() {
        let pieces = [
            Bytes::from_static(b"012"),
            Bytes::from_static(b""),
            Bytes::from_static(b"3456"),
            Bytes::from_static(b"789"),
        ];
        assert_eq!(copy_range(&pieces, 0, 10), &b"0123456789"[..]);
        assert_eq!(copy_range(&pieces, 2, 8), &b"234567"[..]);
        assert_eq!(copy_range(&pieces, 3, 7), &b"3456"[..]);
        assert_eq!(copy_range(&pieces, 9, 10), &b"9"[..]);
        assert_eq!(copy_range(&pieces, 4, 4), &b""[..]);
    }
}
