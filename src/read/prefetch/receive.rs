//! The task of one fetch: blocks the disk tier holds are read from it; for each run of blocks
//! it lacks, a range GET's body is cut into blocks as it arrives, each block cached (in memory
//! and on disk) and published the moment it is complete, the pieces of the block being
//! received published as they come (for the read after a seek), and the fetch leaves the
//! in-flight table however the task ends (see the invariants in `prefetch.rs`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;

use super::{len_u64, lock, to_usize, Fetch, FetchError, Fetcher};
use crate::backend::ByteRange;
use crate::read::ReadError;

impl Fetcher {
    /// Bring the blocks of `fetch` in order: each from the disk tier if it has the block, the
    /// others with one GET per run of blocks it lacks.
    async fn stream(&self, fetch: &Fetch) -> Result<(), ReadError> {
        let range = fetch.range;
        let Some(disk) = &self.disk else {
            return self.stream_get(fetch, range).await;
        };
        let bs = self.block_size;
        let mut at = range.start;
        while at < range.end {
            let block = at / bs;
            if disk.contains(block) {
                if let Some(data) = self.disk_block(block).await {
                    // Cached whole by `disk_block`; a headless fetch publishes its part.
                    let piece = data.slice(to_usize(at - block * bs)..);
                    fetch.tx.send_modify(|p| p.blocks.push(piece));
                    at = ((block + 1) * bs).min(range.end);
                    continue;
                }
            }
            let mut end = block + 1;
            while end * bs < range.end && !disk.contains(end) {
                end += 1;
            }
            let end = (end * bs).min(range.end);
            self.stream_get(fetch, ByteRange::new(at, end)).await?;
            at = end;
        }
        Ok(())
    }

    /// Run the GET of `range` (whole blocks, but for a headless first one) for `fetch`,
    /// publishing each block as it completes (and caching it), and the pieces of the block
    /// being received as they arrive.
    async fn stream_get(&self, fetch: &Fetch, range: ByteRange) -> Result<(), ReadError> {
        tracing::debug!(key = self.id.key(), start = range.start, len = range.len(), "range GET");
        let mut body = self
            .backend
            .get_range_stream(self.id.key(), range, self.id.etag())
            .await
            .map_err(|e| self.failure(e))?;
        let first_block = range.start / self.block_size;
        let mut block = first_block;
        // Bytes of the block before the first one received: non-zero for a headless block.
        let mut skip = range.start % self.block_size;
        let mut block_len = self.block_len(block);
        let mut filled = skip;
        // The current block's pieces so far (also published in `partial`), kept here so the
        // block is assembled without holding the channel's lock.
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut received = 0;
        while let Some(piece) = body.next().await {
            let mut piece = piece.map_err(|e| self.failure(e))?;
            received += len_u64(&piece);
            if received > range.len() {
                tracing::debug!(key = self.id.key(), want = range.len(), "long GET body: object changed");
                return Err(self.changed());
            }
            while !piece.is_empty() {
                let take = (block_len - filled).min(len_u64(&piece));
                if take == 0 {
                    // Bytes beyond the size opened (only reachable if the size check above
                    // and the block arithmetic disagree): never loop on them.
                    return Err(self.changed());
                }
                let head = if take == len_u64(&piece) {
                    std::mem::take(&mut piece)
                } else {
                    piece.split_to(to_usize(take))
                };
                filled += take;
                if filled < block_len {
                    // Waiters are woken for partial bytes of the fetch's first block only: that
                    // is the block a read after a seek waits for. Later blocks arrive right
                    // behind it, and waking every waiter per piece (several per block) cost
                    // more CPU than the block's whole transfer.
                    pieces.push(head.clone());
                    fetch.tx.send_if_modified(|p| {
                        p.partial.push(head);
                        p.partial_len = filled;
                        block == first_block
                    });
                    continue;
                }
                // Always a fresh allocation of exactly the block: even a piece that is the whole
                // block is a slice of the client's read buffer, which can be several times
                // larger (1.3 GB resident for a 512 MiB cache under random 256 KiB reads when
                // such slices were kept), and the cache's byte budget would no longer bound
                // memory. Built before taking the channel's lock: the copy and the first touch
                // of fresh pages would otherwise stall every reader of this fetch.
                let mut buf = BytesMut::with_capacity(to_usize(block_len - skip));
                for part in pieces.drain(..).chain(std::iter::once(head)) {
                    buf.extend_from_slice(&part);
                }
                let complete = buf.freeze();
                fetch.tx.send_modify(|p| {
                    p.partial.clear();
                    p.blocks.push(complete.clone());
                    p.partial_len = 0;
                });
                // Outside the channel's lock; the fetch is still in flight, so no other reader
                // fetches this block meanwhile. A headless block is cached as a tail, for the
                // rest of its stream's reads.
                self.note_fetched(block, len_u64(&complete));
                if skip == 0 {
                    if let Some(disk) = &self.disk {
                        disk.put(block, complete.clone());
                    }
                    self.cache.insert(&self.id, block, complete);
                } else {
                    self.cache.insert_tail(&self.id, block, complete);
                }
                block += 1;
                block_len = self.block_len(block);
                skip = 0;
                filled = 0;
            }
        }
        if received != range.len() {
            // Without an ETag to pin, a short body is how a replaced object shows up.
            tracing::debug!(
                key = self.id.key(),
                want = range.len(),
                got = received,
                "short GET: object changed"
            );
            return Err(self.changed());
        }
        Ok(())
    }
}

/// Removes a fetch from the in-flight table when its task ends, however it ends; a fetch ending
/// without a result (aborted) tells its waiters so.
pub(super) struct InflightGuard {
    pub(super) fetcher: Arc<Fetcher>,
    pub(super) fetch: Arc<Fetch>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.fetch.tx.send_if_modified(|p| {
            let unset = p.end.is_none();
            if unset {
                p.end = Some(Err(FetchError::Cancelled));
            }
            unset
        });
        let bs = self.fetcher.block_size;
        let mut inflight = lock(&self.fetcher.inflight);
        for b in self.fetch.range.start / bs..self.fetch.range.end.div_ceil(bs) {
            if inflight.get(&b).is_some_and(|f| Arc::ptr_eq(f, &self.fetch)) {
                inflight.remove(&b);
            }
        }
    }
}

pub(super) async fn run_fetch(guard: InflightGuard) {
    let (fetcher, fetch) = (&guard.fetcher, &guard.fetch);
    let end = match fetcher.stream(fetch).await {
        Ok(()) => Ok(()),
        Err(ReadError::ObjectChanged { .. }) => Err(FetchError::Changed),
        Err(ReadError::Backend(e)) => {
            // Display is "<kind description>: <context and causes>"; keep the latter once.
            let full = e.to_string();
            let prefix = format!("{}: ", e.kind().describe());
            let message = full.strip_prefix(&prefix).unwrap_or(&full);
            Err(FetchError::Backend {
                kind: e.kind(),
                message: Arc::from(message),
            })
        }
    };
    fetch.tx.send_modify(|p| p.end = Some(end));
    drop(guard);
}
